// The warehouse: reception of donations, stock by zone, pick lists, counts and adjustments.
import { get, post, after } from '../api.js';
import { t, label, GROUPS } from '../i18n.js';
import { h, fill, field, input, select, table, notice, errorNotice, busy, values, day, kg, uid, tabs } from '../ui.js';

const remember = (k, v) => (v === undefined ? localStorage.getItem('foodaid.' + k) : localStorage.setItem('foodaid.' + k, v));

export async function show(view, sub) {
  const here = `#/warehouse/${sub || 'reception'}`;
  const [tab] = (sub || 'reception').split('/');
  fill(view, tabs(here, [
    ['#/warehouse/reception', t('wh.reception')],
    ['#/warehouse/stock', t('wh.stock')],
    ['#/warehouse/picking', t('wh.picking')],
    ['#/warehouse/counts', t('wh.counts')],
    ['#/warehouse/transfers', t('wh.transfers')],
  ]));
  const body = h('div');
  view.append(body);
  const sites = await get('/api/sites');
  const screens = { reception, stock, picking, counts, transfers };
  await (screens[tab] || reception)(body, sites);
}

function siteSelect(sites) {
  const el = select('site_id', sites.map(s => [s.site_id, s.name]), { value: remember('site') || sites[0]?.site_id });
  el.addEventListener('change', () => remember('site', el.value));
  return el;
}

// --- Reception ---------------------------------------------------------------------------------

async function reception(body, sites) {
  const [donors, products] = await Promise.all([get('/api/donors'), get('/api/products')]);
  const donor = select('donor_id', [['', t('wh.choose_donor')], ...donors.map(d => [d.donor_id, d.name])],
    { required: true, value: remember('donor') || '' });
  donor.addEventListener('change', () => remember('donor', donor.value));
  // A long list of donors: typing part of the name keeps the matching ones, and picks the only one.
  const search = input('donor_search', { type: 'search', autocomplete: 'off', placeholder: t('wh.search_donor') });
  search.addEventListener('input', () => {
    const q = search.value.trim().toLowerCase();
    const shown = [...donor.options].filter(o => {
      o.hidden = !!o.value && !!q && !o.textContent.toLowerCase().includes(q);
      return o.value && !o.hidden;
    });
    if (shown.length === 1) { donor.value = shown[0].value; remember('donor', donor.value); }
  });
  const lines = h('div', { class: 'lines' });
  const out = h('div', { 'aria-live': 'polite' });
  // One key per donation being entered: sending it twice (a retry, a double tap) records it once.
  let key = uid('reception-');
  const submit = h('button', { class: 'primary big', type: 'submit' }, t('wh.record'));
  const form = h('form', { class: 'card', onsubmit: async e => {
    e.preventDefault();
    const payload = {
      donor_id: donor.value,
      site_id: form.querySelector('[name=site_id]').value,
      lines: [...lines.children].map(readLine).filter(Boolean),
    };
    if (!payload.donor_id) return fill(out, notice('error', t('wh.need_donor')));
    if (!payload.lines.length) return fill(out, notice('error', t('wh.need_line')));
    // A weight far from what the units weigh is most often a typing slip: ask once.
    const odd = payload.lines.filter(l => {
      const p = products.find(x => x.product_id === l.product_id || (l.gtin && x.gtin?.endsWith(l.gtin)));
      const expected = p?.unit_weight_g ? p.unit_weight_g * l.quantity : null;
      return expected && (l.weight_g > 2 * expected || l.weight_g < expected / 2);
    });
    if (odd.length && !confirm(t('wh.odd_weight', { n: odd.length }))) return;
    const reply = await busy(submit, out, () => post('/api/donations', payload, { key }));
    if (!reply) return;
    key = uid('reception-');
    const donation = await get(`/api/donations/${reply.aggregate_id}`, { min_seq: after(reply) });
    fill(out, outcome(donation));
    fill(lines, line(products));
    lines.querySelector('[name=gtin]').focus();
  } },
  h('h1', {}, t('wh.reception_title')),
  h('div', { class: 'row' }, field(t('wh.search_donor_label'), search), field(t('wh.donor'), donor), field(t('wh.site'), siteSelect(sites))),
  lines,
  h('div', { class: 'row' },
    h('button', { type: 'button', class: 'big', onclick: () => {
      const l = line(products);
      lines.append(l);
      l.querySelector('[name=gtin]').focus();
    } }, t('wh.add_line')),
    submit),
  out);
  lines.append(line(products));
  fill(body, form);
}

/** One line of a donation: scan or pick the product, then what came in. */
function line(products) {
  const gtin = input('gtin', { inputmode: 'numeric', autocomplete: 'off', placeholder: t('wh.scan'), pattern: '[0-9 ]{8,14}' });
  const product = select('product_id', [['', t('wh.choose_product')], ...products.map(p => [p.product_id, p.name])]);
  const found = h('p', { class: 'found', 'aria-live': 'polite' });
  const quantity = input('quantity', { type: 'number', min: 1, step: 1, required: true, inputmode: 'numeric' });
  const weight = input('weight_kg', { type: 'number', min: 0.001, step: 0.001, required: true, inputmode: 'decimal' });
  const date = input('date', { type: 'date' });
  const dateField = field(t('wh.date'), date);
  const temperature = input('temperature_c', { type: 'number', step: 0.1, inputmode: 'decimal' });
  const lot = input('lot_number', { autocomplete: 'off' });
  const value = input('value_eur', { type: 'number', min: 0, step: 0.01, inputmode: 'decimal' });
  let unit = null;
  const known = p => {
    unit = p;
    product.value = p.product_id;
    dateField.querySelector('label').textContent = p.date_kind === 'dlc' ? t('wh.date_dlc') : p.date_kind === 'ddm' ? t('wh.date_ddm') : t('wh.date');
    temperature.required = p.storage !== 'ambient';
    fill(found, `${p.name} · ${label('group', p.food_group)} · ${label('storage', p.storage)}`);
    suggest();
  };
  let looked = null;
  const lookup = async () => {
    const code = gtin.value.replace(/\s/g, '');
    // Enter and leaving the field both ask: once per code (a form being filled stays).
    if (!code || code === looked) return;
    looked = code;
    try {
      known(await get(`/api/gtin/${code}`));
      quantity.focus();
    } catch (err) {
      unit = null;
      if (err.code !== 'product_not_found') looked = null; // a lookup that failed may be tried again
      // A product never seen before: the volunteer describes it once, here.
      fill(found, errorNotice(err), err.code === 'product_not_found' ? newProduct(code, p => {
        products.push(p);
        product.append(h('option', { value: p.product_id }, p.name));
        known(p);
        quantity.focus();
      }) : null);
    }
  };
  // A barcode scanner types the digits then Enter: look the product up, do not send the form.
  gtin.addEventListener('keydown', e => { if (e.key === 'Enter') { e.preventDefault(); lookup(); } });
  gtin.addEventListener('change', lookup);
  product.addEventListener('change', () => {
    const p = products.find(x => x.product_id === product.value);
    if (p) { gtin.value = p.gtin || ''; looked = gtin.value; known(p); }
  });
  // The weight follows the quantity until the volunteer types one; a weight already there is
  // selected when its field is entered, so typing replaces it rather than adding to it.
  let weighed = false;
  function suggest() {
    if (!weighed && unit?.unit_weight_g && quantity.value) weight.value = (quantity.value * unit.unit_weight_g) / 1000;
  }
  quantity.addEventListener('input', suggest);
  quantity.addEventListener('change', suggest);
  weight.addEventListener('input', () => { weighed = true; });
  weight.addEventListener('focus', () => weight.select());
  const el = h('fieldset', { class: 'line' },
    h('legend', {}, t('wh.line')),
    h('div', { class: 'row' }, field(t('wh.gtin'), gtin), field(t('wh.product'), product)),
    found,
    h('div', { class: 'row' },
      field(t('wh.quantity'), quantity), field(t('wh.weight_kg'), weight), dateField,
      field(t('wh.temperature'), temperature), field(t('wh.lot_number'), lot), field(t('wh.value'), value)),
    h('button', { type: 'button', class: 'link', onclick: () => el.remove() }, t('wh.remove_line')));
  return el;
}

/** Describes a product a barcode names for the first time; `done` gets its row. */
function newProduct(gtin, done) {
  const out = h('div', { 'aria-live': 'polite' });
  const save = h('button', { class: 'primary', type: 'button' }, t('wh.define'));
  const box = h('div', { class: 'card new-product' },
    h('h3', {}, t('wh.new_product', { gtin })),
    h('div', { class: 'row' },
      field(t('wh.product_name'), input('name', { required: true, autocomplete: 'off' })),
      field(t('common.group'), select('food_group', GROUPS.map(g => [g, label('group', g)]))),
      field(t('wh.storage'), select('storage', ['ambient', 'chilled', 'frozen'].map(x => [x, label('storage', x)]))),
      field(t('wh.date_kind'), select('date_kind', ['ddm', 'dlc', 'none'].map(x => [x, label('date_kind', x)]))),
      field(t('wh.unit_weight'), input('unit_weight_g', { type: 'number', min: 1, step: 1, inputmode: 'numeric' }))),
    save, out);
  save.addEventListener('click', async () => {
    const v = values(box);
    if (!v.name) return fill(out, notice('error', t('wh.need_name')));
    const body = { gtin, name: v.name, food_group: v.food_group, storage: v.storage, date_kind: v.date_kind };
    if (v.unit_weight_g) body.unit_weight_g = v.unit_weight_g;
    const reply = await busy(save, out, () => post('/api/products', body, { key: `product-${gtin}` }));
    if (reply) done(await get(`/api/products/${reply.aggregate_id}`, { min_seq: after(reply) }));
  });
  return box;
}

function readLine(el) {
  const v = values(el);
  if (!v.product_id && !v.gtin) return null;
  const out = { quantity: v.quantity, weight_g: Math.round((v.weight_kg || 0) * 1000) };
  if (v.product_id) out.product_id = v.product_id; else out.gtin = v.gtin.replace(/\s/g, '');
  if (v.date) out.date = v.date;
  if (v.temperature_c !== null) out.temperature_c = v.temperature_c;
  if (v.lot_number) out.lot_number = v.lot_number;
  if (v.value_eur !== null) out.declared_value_cents = Math.round(v.value_eur * 100);
  return out;
}

/** What happened to each line: into stock, or refused and why, in plain words. */
function outcome(donation) {
  const refused = donation.lines.filter(l => !l.accepted).length;
  return h('div', { class: 'card' },
    notice(refused ? 'warn' : 'ok', t('wh.recorded', { n: donation.lines.length - refused, refused })),
    h('ul', { class: 'outcome' }, donation.lines.map(l => h('li', { class: l.accepted ? 'accepted' : 'refused' },
      h('strong', {}, l.accepted ? `✓ ${t('wh.accepted')}` : `✗ ${t('wh.refused')}`), ' ',
      `${l.product_name} · ${l.quantity} · ${kg(l.weight_g)}`,
      l.refusal ? h('p', { class: 'reason' }, label('refusal', l.refusal.code), ' — ', l.refusal.message) : null))));
}

// --- Stock ---------------------------------------------------------------------------------------

async function stock(body, sites) {
  const site = siteSelect(sites);
  const out = h('div');
  const load = async () => {
    const params = { site_id: site.value };
    const [lots, expiring, low] = await Promise.all([
      get('/api/lots', params), get('/api/stock/expiring', { ...params, days: 3 }), get('/api/stock/low', params)]);
    const soon = new Set(expiring.map(l => l.lot_id));
    const byZone = new Map();
    for (const l of lots) {
      const z = l.zone || t('wh.no_zone');
      if (!byZone.has(z)) byZone.set(z, []);
      byZone.get(z).push(l);
    }
    const zones = sites.find(s => s.site_id === site.value)?.zones || [];
    fill(out,
      h('h2', {}, t('wh.low_stock')),
      h('ul', { class: 'chips' }, low.map(g => h('li', { class: g.low ? 'low' : 'ok' },
        `${label('group', g.food_group)} ${g.available_kg.toFixed(0)} / ${g.minimum_kg.toFixed(0)} kg`))),
      h('p', {}, h('span', { class: 'legend soon' }, t('wh.legend_soon')), ' ', h('span', { class: 'legend held' }, t('wh.legend_held'))),
      [...byZone].map(([zone, list]) => h('section', {},
        h('h2', {}, `${t('wh.zone')} ${zone}`),
        table([
          [t('wh.product'), l => l.product_name],
          [t('wh.lot_number'), l => l.lot_number || '—'],
          [t('wh.date'), l => l.date ? `${l.date_kind.toUpperCase()} ${l.date}` : '—'],
          [t('wh.available'), l => `${l.available} / ${l.on_hand}`],
          [t('wh.status'), l => label('lot', l.status) + (l.inspection?.length ? ` · ${t('wh.inspect')}` : '')],
          [t('wh.put_away'), l => moveControl(l, zones, load)],
        ], list, l => [soon.has(l.lot_id) ? 'soon' : '', l.status !== 'available' ? 'held' : ''].join(' ')))));
  };
  site.addEventListener('change', load);
  fill(body, h('div', { class: 'card' }, h('h1', {}, t('wh.stock_title')), field(t('wh.site'), site)), out);
  await load();
}

function moveControl(lot, zones, reload) {
  const fitting = zones.filter(z => z.storage === lot.storage && z.code !== lot.zone);
  if (!fitting.length) return '';
  const to = select('zone', [['', '…'], ...fitting.map(z => [z.code, z.code])], { 'aria-label': t('wh.put_away') });
  to.addEventListener('change', async () => {
    if (!to.value) return;
    try { await post(`/api/lots/${lot.lot_id}/move`, { zone: to.value }); await reload(); } catch (err) { to.after(errorNotice(err)); }
  });
  return to;
}

// --- Pick lists ----------------------------------------------------------------------------------

async function picking(body) {
  const date = input('date', { type: 'date', value: day(1) });
  const out = h('div');
  const load = async () => {
    const [parcels, lots] = await Promise.all([get('/api/parcels', { date: date.value }), get('/api/lots')]);
    const lotOf = new Map(lots.map(l => [l.lot_id, l]));
    const open = parcels.filter(p => ['composed', 'picked'].includes(p.status));
    fill(out,
      h('p', {}, t('wh.pick_summary', { n: open.length, all: parcels.length })),
      open.map(p => h('article', { class: 'card parcel', 'data-parcel': p.parcel_id },
        h('h3', {}, `${p.parcel_id} · ${label('parcel', p.status)}`),
        table([
          [t('wh.product'), l => lotOf.get(l.lot_id)?.product_name || l.product_id],
          [t('wh.zone'), l => lotOf.get(l.lot_id)?.zone || '—'],
          [t('wh.lot_number'), l => lotOf.get(l.lot_id)?.lot_number || l.lot_id],
          [t('wh.units'), l => String(l.units)],
          [t('wh.weight'), l => kg(l.grams)],
        ], p.lines),
        h('div', { class: 'row' },
          p.status === 'composed' ? step(p, 'pick', t('wh.picked'), load) : null,
          p.status === 'picked' ? step(p, 'ship', t('wh.shipped'), load) : null))));
  };
  date.addEventListener('change', load);
  fill(body, h('div', { class: 'card' }, h('h1', {}, t('wh.picking_title')), field(t('common.date'), date)), out);
  await load();
}

function step(parcel, what, text, reload) {
  const out = h('div');
  const b = h('button', { class: 'primary big', type: 'button', onclick: async () => {
    const reply = await busy(b, out, () => post(`/api/parcels/${parcel.parcel_id}/${what}`, {}, { key: `${what}-${parcel.parcel_id}` }));
    if (reply) await reload();
  } }, text);
  return h('div', {}, b, out);
}

// --- Counts and adjustments ----------------------------------------------------------------------

async function counts(body, sites) {
  const site = siteSelect(sites);
  const zone = select('zone', []);
  const out = h('div');
  const zones = () => {
    const s = sites.find(x => x.site_id === site.value);
    fill(zone, (s?.zones || []).map(z => h('option', { value: z.code }, `${z.code} (${label('storage', z.storage)})`)));
  };
  const load = async () => {
    const lots = await get('/api/lots', { site_id: site.value, zone: zone.value });
    const result = h('div', { 'aria-live': 'polite' });
    const send = h('button', { class: 'primary big', type: 'submit' }, t('wh.record_count'));
    const form = h('form', { onsubmit: async e => {
      e.preventDefault();
      const counted = lots.map(l => ({ lot_id: l.lot_id, counted: Number(form.querySelector(`[name="c-${l.lot_id}"]`).value) }));
      const reply = await busy(send, result, () => post(`/api/sites/${site.value}/zones/${zone.value}/counts`, { counts: counted }));
      if (reply) fill(result, notice('ok', t('wh.count_recorded', { n: reply.events.length })));
    } },
    table([
      [t('wh.product'), l => l.product_name],
      [t('wh.lot_number'), l => l.lot_number || '—'],
      [t('wh.expected'), l => String(l.on_hand)],
      [t('wh.counted'), l => input(`c-${l.lot_id}`, { type: 'number', min: 0, value: l.on_hand, inputmode: 'numeric', 'aria-label': `${t('wh.counted')} ${l.product_name}` })],
      [t('wh.adjust'), l => adjustControl(l, load)],
    ], lots),
    lots.length ? send : null, result);
    fill(out, form);
  };
  site.addEventListener('change', () => { zones(); load(); });
  zone.addEventListener('change', load);
  zones();
  fill(body, h('div', { class: 'card' }, h('h1', {}, t('wh.counts_title')),
    h('div', { class: 'row' }, field(t('wh.site'), site), field(t('wh.zone'), zone))), out);
  await load();
}

function adjustControl(lot, reload) {
  const delta = input('delta', { type: 'number', step: 1, inputmode: 'numeric', 'aria-label': t('wh.delta') });
  const reason = select('reason', ['damage', 'spoilage', 'theft', 'correction'].map(r => [r, label('adjust', r)]), { 'aria-label': t('wh.reason') });
  const out = h('div');
  const go = h('button', { type: 'button', onclick: async () => {
    if (!delta.value) return;
    const reply = await busy(go, out, () => post(`/api/lots/${lot.lot_id}/adjustments`, { delta: Number(delta.value), reason: reason.value }));
    if (reply) await reload();
  } }, t('wh.adjust'));
  return h('div', { class: 'inline' }, delta, reason, go, out);
}


// --- Transfers between sites ----------------------------------------------------------------------

async function transfers(body, sites) {
  const site = siteSelect(sites);
  const out = h('div');
  const load = async reply => {
    const others = sites.filter(x => x.site_id !== site.value);
    const seen = { site_id: site.value, min_seq: after(reply) };
    const [list, stockLines, here] = await Promise.all([get('/api/transfers', seen), get('/api/stock', seen), get('/api/lots', seen)]);
    // A transfer taken in made lots here that name it.
    const received = new Set(here.filter(l => l.origin?.kind === 'transfer').map(l => l.origin.transfer_id));
    const names = new Map(sites.map(x => [x.site_id, x.name]));
    const products = stockLines.filter(l => l.available > 0);
    const lines = h('div');
    const addLine = () => lines.append(h('div', { class: 'row transfer-line' },
      field(t('wh.product'), select('product_id', products.map(p => [p.product_id, `${p.product_name} (${p.available})`]))),
      field(t('wh.quantity'), input('quantity', { type: 'number', min: 1, step: 1, required: true, inputmode: 'numeric' }))));
    addLine();
    const result = h('div', { 'aria-live': 'polite' });
    const send = h('button', { class: 'primary big', type: 'submit' }, t('wh.reserve_transfer'));
    const to = select('to_site', others.map(x => [x.site_id, x.name]));
    const key = uid('transfer-');
    const form = h('form', { class: 'card', onsubmit: async e => {
      e.preventDefault();
      const wanted = [...lines.children].map(values).map(v => ({ product_id: v.product_id, quantity: v.quantity }));
      const reserved = await busy(send, result, () => post('/api/reservations',
        { site_id: site.value, purpose: { kind: 'transfer', to_site: to.value }, lines: wanted }, { key }));
      if (reserved) await load(reserved);
    } },
    h('h2', {}, t('wh.new_transfer')),
    others.length ? field(t('wh.to_site'), to) : notice('warn', t('wh.one_site')),
    lines,
    h('button', { type: 'button', onclick: addLine }, t('wh.add_line')),
    send, result);
    fill(out,
      products.length && others.length ? form : null,
      h('h2', {}, t('wh.transfers_list')),
      table([
        [t('wh.transfer'), r => r.reservation_id],
        [t('wh.route'), r => `${names.get(r.site_id) || r.site_id} → ${names.get(r.purpose.to_site) || r.purpose.to_site}`],
        [t('wh.status'), r => (received.has(r.reservation_id) ? label('reservation', 'received') : label('reservation', r.status))],
        [t('wh.units'), r => r.lines.map(l => `${products.find(p => p.product_id === l.product_id)?.product_name || l.product_id} × ${l.quantity}`).join(', ')],
        [t('wh.next_step'), r => (received.has(r.reservation_id) ? '' : transferStep(r, site.value, load))],
      ], list));
  };
  site.addEventListener('change', () => load());
  fill(body, h('div', { class: 'card' }, h('h1', {}, t('wh.transfers_title')), field(t('wh.site'), site)), out);
  await load();
}

function transferStep(r, here, reload) {
  const step = r.site_id === here && ['confirmed', 'picked'].includes(r.status) ? ['dispatch', t('wh.dispatch')]
    : r.purpose.to_site === here && r.status === 'dispatched' ? ['receive', t('wh.receive')] : null;
  if (!step) return '';
  const out = h('div');
  const b = h('button', { type: 'button', class: 'primary', onclick: async () => {
    const reply = await busy(b, out, () => post(`/api/reservations/${r.reservation_id}/${step[0]}`, {}, { key: `${step[0]}-${r.reservation_id}` }));
    if (reply) await reload(reply);
  } }, step[1]);
  return h('div', {}, b, out);
}
