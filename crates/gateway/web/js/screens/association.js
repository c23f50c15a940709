// An association: its households, their parcel requests and where the parcels are, the
// fair-share ledger.
import { get, post, after } from '../api.js';
import { t, label, ALLERGENS } from '../i18n.js';
import { h, fill, field, input, select, checkbox, table, notice, busy, values, day, tabs, uid, download } from '../ui.js';

export async function show(view, sub, me) {
  const [tab] = (sub || 'households').split('/');
  const associations = await get('/api/associations');
  // An association's token acts for it; a coordinator chooses which one.
  let current = me.role === 'association' ? me.scope : localStorage.getItem('foodaid.association') || associations[0]?.association_id;
  const body = h('div');
  const draw = async () => {
    const association = associations.find(a => a.association_id === current);
    if (!association) return fill(body, notice('error', t('as.unknown')));
    const screens = { households, parcels, fairshare, import: importer };
    await (screens[tab] || households)(body, association);
  };
  const chooser = me.role === 'association' ? null : (() => {
    const s = select('association', associations.map(a => [a.association_id, a.name]), { value: current });
    s.addEventListener('change', () => { current = s.value; localStorage.setItem('foodaid.association', current); draw(); });
    return field(t('as.association'), s);
  })();
  fill(view, tabs(`#/association/${tab}`, [
    ['#/association/households', t('as.households')],
    ['#/association/parcels', t('as.parcels')],
    ['#/association/fairshare', t('as.fairshare')],
    ['#/association/import', t('imp.tab')],
  ]), chooser, body);
  await draw();
}

const scoped = (a, params = {}) => ({ association_id: a.association_id, ...params });

// --- Households ----------------------------------------------------------------------------------

async function households(body, association, reply) {
  const list = await get('/api/households', scoped(association, { min_seq: after(reply) }));
  const relays = association.relay_points;
  const out = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { class: 'primary big', type: 'submit' }, t('as.register'));
  let key = uid('household-');
  const num = (name, value = 0) => input(name, { type: 'number', min: 0, max: 20, step: 1, value, inputmode: 'numeric', required: true });
  const form = h('form', { class: 'card', onsubmit: async e => {
    e.preventDefault();
    const v = values(form);
    const payload = {
      association_id: association.association_id,
      relay_point_id: v.relay_point_id,
      composition: { adults: v.adults, teens: v.teens, children: v.children, infants: v.infants },
      diet: {
        no_pork: v.no_pork, halal: v.halal, vegetarian: v.vegetarian, no_kitchen: v.no_kitchen,
        allergies: ALLERGENS.filter(a => v['allergy_' + a]),
      },
      consent: v.consent,
      personal: { first_name: v.first_name, last_name: v.last_name, birth_date: v.birth_date, phone: v.phone, address: v.address },
    };
    if (!payload.consent) return fill(out, notice('error', t('as.need_consent')));
    const registered = await busy(submit, out, () => post('/api/households', payload, { key }));
    if (!registered) return;
    const assessment = { resources_cents: Math.round(v.resources * 100), charges_cents: Math.round(v.charges * 100) };
    const assessed = await busy(submit, out, () =>
      post(`/api/households/${registered.aggregate_id}/assessments`, assessment, { key: `${key}-assessment` }));
    key = uid('household-');
    await households(body, association, assessed || registered);
  } },
  h('h2', {}, t('as.new_household')),
  h('fieldset', {}, h('legend', {}, t('as.person')),
    h('div', { class: 'row' },
      field(t('as.first_name'), input('first_name', { required: true, autocomplete: 'off' })),
      field(t('as.last_name'), input('last_name', { required: true, autocomplete: 'off' })),
      field(t('as.birth_date'), input('birth_date', { type: 'date', required: true })),
      field(t('as.phone'), input('phone', { type: 'tel', autocomplete: 'off' })),
      field(t('as.address'), input('address', { autocomplete: 'off' })))),
  h('fieldset', {}, h('legend', {}, t('as.composition')),
    h('div', { class: 'row' },
      field(t('as.adults'), num('adults', 1)), field(t('as.teens'), num('teens')),
      field(t('as.children'), num('children')), field(t('as.infants'), num('infants')))),
  h('fieldset', {}, h('legend', {}, t('as.diet')),
    h('div', { class: 'checks' },
      checkbox('no_pork', t('as.no_pork')), checkbox('halal', t('as.halal')),
      checkbox('vegetarian', t('as.vegetarian')), checkbox('no_kitchen', t('as.no_kitchen'))),
    h('details', {}, h('summary', {}, t('as.allergies')),
      h('div', { class: 'checks' }, ALLERGENS.map(a => checkbox('allergy_' + a, label('allergen', a)))))),
  h('fieldset', {}, h('legend', {}, t('as.eligibility')),
    h('div', { class: 'row' },
      field(t('as.resources'), input('resources', { type: 'number', min: 0, step: 0.01, required: true, inputmode: 'decimal' })),
      field(t('as.charges'), input('charges', { type: 'number', min: 0, step: 0.01, required: true, inputmode: 'decimal' })))),
  h('div', { class: 'row' },
    field(t('as.relay_point'), select('relay_point_id', relays.map(r => [r.relay_id, `${r.name} (${r.commune})`])))),
  checkbox('consent', t('as.consent')),
  submit, out);
  fill(body,
    h('h1', {}, t('as.households_of', { name: association.name })),
    table([
      [t('as.name'), x => x.personal ? `${x.personal.first_name} ${x.personal.last_name}` : t('as.erased')],
      [t('as.composition'), x => composition(x.composition)],
      [t('as.diet'), x => diet(x.diet) || '—'],
      [t('as.eligibility'), x => x.assessment
        ? `${x.assessment.eligible ? t('as.eligible') : t('as.not_eligible')} · ${t('as.until', { date: x.assessment.valid_until })}`
        : t('as.not_assessed')],
      [t('as.consent_short'), x => (x.consent ? t('common.yes') : t('common.no'))],
      [t('as.duplicates'), x => (x.possible_duplicates?.length ? `⚠ ${x.possible_duplicates.join(', ')}` : '')],
    ], list, x => (x.assessment?.eligible ? '' : 'held')),
    form);
}

export function composition(c) {
  return [['adults', c.adults], ['teens', c.teens], ['children', c.children], ['infants', c.infants]]
    .filter(([, n]) => n).map(([k, n]) => `${n} ${t('as.' + k)}`).join(', ');
}

function diet(d) {
  return [...['no_pork', 'halal', 'vegetarian', 'no_kitchen'].filter(k => d[k]).map(k => t('as.' + k)),
    ...(d.allergies || []).map(a => label('allergen', a))].join(', ');
}

// --- Parcels -------------------------------------------------------------------------------------

async function parcels(body, association, reply) {
  const [list, families] = await Promise.all([
    get('/api/parcels', scoped(association, { min_seq: after(reply) })),
    get('/api/households', scoped(association)),
  ]);
  const names = new Map(families.map(x => [x.household_id, x.personal ? `${x.personal.first_name} ${x.personal.last_name}` : x.household_id]));
  const eligible = families.filter(x => x.assessment?.eligible && !x.erased);
  const out = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { class: 'primary big', type: 'submit' }, t('as.request'));
  // One key per request being made: a double tap or a retry asks once.
  const key = uid('parcel-');
  const form = h('form', { class: 'card', onsubmit: async e => {
    e.preventDefault();
    const v = values(form);
    const payload = { household_id: v.household_id, date: v.date, emergency: v.emergency };
    if (v.relay_point_id) payload.relay_point_id = v.relay_point_id;
    const sent = await busy(submit, out, () => post('/api/parcels', payload, { key }));
    if (sent) await parcels(body, association, sent);
  } },
  h('h2', {}, t('as.new_request')),
  h('div', { class: 'row' },
    field(t('as.household'), select('household_id', eligible.map(x => [x.household_id, names.get(x.household_id)]), { required: true })),
    field(t('common.date'), input('date', { type: 'date', value: day(1), required: true })),
    field(t('as.relay_point'), select('relay_point_id', [['', t('as.own_relay')],
      ...association.relay_points.map(r => [r.relay_id, `${r.name} (${r.commune})`])]))),
  checkbox('emergency', t('as.emergency')),
  submit, out);
  const relayName = new Map(association.relay_points.map(r => [r.relay_id, r.name]));
  list.sort((a, b) => (a.date < b.date ? 1 : a.date > b.date ? -1 : 0));
  fill(body,
    h('h1', {}, t('as.parcels_of', { name: association.name })),
    eligible.length ? form : notice('warn', t('as.none_eligible')),
    table([
      [t('common.date'), p => p.date],
      [t('as.household'), p => names.get(p.household_id) || p.household_id],
      [t('as.relay_point'), p => relayName.get(p.relay_point_id) || p.relay_point_id],
      [t('as.status'), p => h('span', { class: `status ${p.status}`, 'data-parcel': p.parcel_id }, label('parcel', p.status))],
      [t('as.contents'), p => (p.lines.length ? t('as.lines', { n: p.lines.length }) : '—') + (p.short?.length ? ` · ${t('as.short')} ${p.short.map(g => label('group', g)).join(', ')}` : '')],
    ], list));
}

// --- Fair share ----------------------------------------------------------------------------------

async function fairshare(body) {
  const rows = await get('/api/fair-share');
  const associations = new Map((await get('/api/associations')).map(a => [a.association_id, a.name]));
  fill(body,
    h('h1', {}, t('as.fairshare_title')),
    h('p', {}, t('as.fairshare_explain')),
    table([
      [t('common.month'), r => r.month],
      [t('as.association'), r => associations.get(r.association_id) || r.association_id],
      [t('common.group'), r => label('group', r.food_group)],
      [t('as.parcels'), r => String(r.parcels)],
      [t('as.need'), r => `${(r.need_g / 1000).toFixed(1)} kg`],
      [t('as.given'), r => `${(r.given_g / 1000).toFixed(1)} kg`],
      [t('as.coverage'), r => `${r.coverage_pct.toFixed(0)} %`],
    ], rows, r => (r.coverage_pct < 50 ? 'soon' : '')));
}

// --- Import from a spreadsheet -------------------------------------------------------------------

const TEMPLATE = 'nom;prenom;date_de_naissance;telephone;adresse;point_relais;adultes;ados;enfants;bebes;' +
  'sans_porc;halal;vegetarien;sans_cuisine;allergies;ressources;charges;consentement\r\n' +
  'Diallo;Awa;14/03/1985;06 00 00 00 00;3 rue des Lilas;;2;0;1;0;oui;non;non;non;arachides;900;700;oui\r\n';

/** A spreadsheet's text: UTF-8, or the Windows encoding older spreadsheet programs still write. */
async function readText(file) {
  const bytes = await file.arrayBuffer();
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return new TextDecoder('windows-1252').decode(bytes);
  }
}

/** A short fingerprint of the file: the same file sent twice is the same import. */
function fingerprint(text) {
  let h1 = 0xdeadbeef, h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (h2 >>> 0).toString(16) + (h1 >>> 0).toString(16);
}

async function importer(body, association) {
  const file = input('file', { type: 'file', accept: '.csv,text/csv,text/plain' });
  const out = h('div', { 'aria-live': 'polite' });
  const go = h('button', { class: 'primary big', type: 'submit' }, t('imp.go'));
  const form = h('form', { class: 'card', onsubmit: async e => {
    e.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return fill(out, notice('error', t('imp.choose')));
    const csv = await readText(chosen);
    const rows = csv.split(/\r?\n/).slice(1).filter(l => l.replace(/[;,\s]/g, '')).length;
    const key = `import-${association.association_id}-${fingerprint(csv)}`;
    let failure = null;
    const reply = await busy(go, out, () => post('/api/households/import',
      { association_id: association.association_id, csv }, { key }).catch(err => { failure = err; throw err; }));
    if (failure?.details) {
      return fill(out, notice('error', t('imp.refused', { n: failure.details.length })),
        table([
          [t('imp.line'), x => String(x.line)],
          [t('imp.column'), x => x.column || '—'],
          [t('imp.problem'), x => t('imp.' + x.code, {}, x.message)],
        ], failure.details));
    }
    if (!reply) return;
    const registered = reply.events.filter(ev => ev.type === 'household_registered').length;
    fill(out, notice('ok', t('imp.done', { n: registered, skipped: Math.max(0, rows - registered) })),
      h('a', { href: '#/association/households' }, t('imp.see')));
  } },
  h('h1', {}, t('imp.title', { name: association.name })),
  h('p', {}, t('imp.explain')),
  h('p', {}, h('code', { class: 'columns' }, TEMPLATE.split('\r\n')[0])),
  h('button', { type: 'button', class: 'link', onclick: () =>
    download('foyers-modele.csv', new Blob(['\ufeff' + TEMPLATE], { type: 'text/csv' })) }, t('imp.template')),
  field(t('imp.file'), file),
  go, out);
  fill(body, form);
}
