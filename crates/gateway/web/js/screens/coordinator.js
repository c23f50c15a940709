// The coordinator: the day's wave (parcels and why each line), route planning drawn as a sketch,
// recalls traced to households, reports with charts and CSV, donors' statements.
import { get, post, after, call } from '../api.js';
import { t, label, GROUPS } from '../i18n.js';
import { h, fill, field, input, select, table, notice, busy, day, kg, tabs, download, uid } from '../ui.js';
import { composition } from './association.js';

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const COLOURS = ['#0b6e4f', '#c2410c', '#1d4ed8', '#7e22ce', '#a16207', '#be123c', '#0e7490', '#4d7c0f', '#6b7280'];

export async function show(view, sub) {
  const [tab] = (sub || 'wave').split('/');
  const body = h('div');
  fill(view, tabs(`#/coordinator/${tab}`, [
    ['#/coordinator/wave', t('co.wave')],
    ['#/coordinator/routes', t('co.routes')],
    ['#/coordinator/recall', t('co.recall')],
    ['#/coordinator/reports', t('co.reports')],
    ['#/coordinator/statements', t('co.statements')],
    ['#/coordinator/platform', t('co.platform')],
  ]), body);
  const screens = { wave, routes, recall, reports, statements, platform };
  await (screens[tab] || wave)(body);
}

async function dayForm(body, title, button, run, extra = []) {
  const sites = await get('/api/sites');
  const site = select('site_id', sites.map(x => [x.site_id, x.name]));
  const date = input('date', { type: 'date', value: day(1), required: true });
  const go = h('button', { class: 'primary big', type: 'submit' }, button);
  const out = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'card', onsubmit: e => { e.preventDefault(); run(site.value, date.value, go, out, sites); } },
    h('h1', {}, title),
    h('div', { class: 'row' }, field(t('wh.site'), site), field(t('common.date'), date), ...extra),
    go);
  fill(body, form, out);
  return { site, date, out, sites };
}

// --- Wave ----------------------------------------------------------------------------------------

async function wave(body) {
  const { site, date, out } = await dayForm(body, t('co.wave_title'), t('co.compose'), async (siteId, date, go, out) => {
    const reply = await busy(go, out, () => post('/api/waves', { site_id: siteId, date }, { key: uid('wave-') }));
    if (reply) await review(out, date, reply);
  });
  site.addEventListener('change', () => review(out, date.value));
  date.addEventListener('change', () => review(out, date.value));
  await review(out, date.value);
}

/** The day's parcels as the wave composed them, each line with why it is there. */
async function review(out, date, reply) {
  const [parcels, lots, associations] = await Promise.all([
    get('/api/parcels', { date, min_seq: after(reply) }), get('/api/lots'), get('/api/associations')]);
  const lotOf = new Map(lots.map(l => [l.lot_id, l]));
  const names = new Map(associations.map(a => [a.association_id, a.name]));
  const count = st => parcels.filter(p => p.status === st).length;
  fill(out,
    reply ? notice('ok', t('co.composed', { n: reply.events.length })) : null,
    h('p', {}, t('co.day_parcels', { n: parcels.length, requested: count('requested'), composed: count('composed') })),
    parcels.map(p => h('details', { class: 'card parcel', 'data-parcel': p.parcel_id, open: parcels.length <= 5 },
      h('summary', {}, `${names.get(p.association_id) || p.association_id} · ${p.household_id} · ${label('parcel', p.status)}`,
        p.emergency ? ` · ${t('as.emergency')}` : '', p.short?.length ? ` · ${t('as.short')} ${p.short.map(g => label('group', g)).join(', ')}` : ''),
      p.people ? h('p', {}, composition(p.people)) : null,
      table([
        [t('wh.product'), l => lotOf.get(l.lot_id)?.product_name || l.product_id],
        [t('common.group'), l => label('group', l.food_group)],
        [t('wh.units'), l => String(l.units)],
        [t('wh.weight'), l => kg(l.grams)],
        [t('co.why'), l => t('co.why_line', { need: kg(l.need_g), group: label('group', l.food_group),
          date: l.date ? `${l.date_kind.toUpperCase()} ${l.date}` : t('co.no_date') })],
      ], p.lines))));
}

// --- Routes --------------------------------------------------------------------------------------

async function routes(body) {
  const seconds = input('seconds', { type: 'number', min: 0.5, max: 60, step: 0.5, value: 2 });
  const { site, date, out, sites } = await dayForm(body, t('co.routes_title'), t('co.plan'), async (siteId, date, go, out, sites) => {
    const secs = Number(seconds.value) || 2;
    const reply = await busy(go, out, () => post('/api/plans', { site_id: siteId, date, seconds: secs }, { key: uid('plan-') }), secs + 1);
    if (reply) await drawPlan(out, sites, siteId, date, reply);
  }, [field(t('co.seconds'), seconds)]);
  const load = () => drawPlan(out, sites, site.value, date.value);
  site.addEventListener('change', load);
  date.addEventListener('change', load);
  await load();
}

async function drawPlan(out, sites, siteId, date, reply) {
  let plan;
  try {
    plan = await get(`/api/plans/${siteId}/${date}`, { min_seq: after(reply) });
  } catch (err) {
    if (err.code === 'plan_not_found') return fill(out, notice('warn', t('co.no_plan')));
    throw err;
  }
  const jobs = await get('/api/jobs', { date, site_id: siteId });
  const site = sites.find(x => x.site_id === siteId);
  fill(out,
    notice('ok', t('co.plan_summary', { revision: plan.revision, routes: plan.routes.length,
      km: plan.routes.reduce((a, r) => a + r.km, 0).toFixed(1), left: plan.unplanned.length })),
    sketch(site, plan, jobs),
    plan.unplanned.length ? h('section', { class: 'card' }, h('h2', {}, t('co.unplanned')),
      h('ul', {}, plan.unplanned.map(u => h('li', {}, `${u.job_id}: ${label('unplanned', u.reason)}`)))) : null,
    plan.routes.map((r, i) => h('section', { class: 'card route', 'data-route': r.route_id },
      h('h2', {}, h('span', { class: 'swatch', 'data-colour': i % COLOURS.length }),
        `${r.vehicle_id} · ${r.driver_id} · ${r.departure.slice(0, 5)}–${r.back.slice(0, 5)} · ${r.km.toFixed(1)} km`),
      table([
        [t('drv.arrival'), x => x.arrival.slice(0, 5)],
        [t('drv.stop'), x => `${x.action === 'load' ? t('drv.load') : t('drv.unload')} · ${x.address}`],
        [t('drv.window'), x => `${x.opens.slice(0, 5)}–${x.closes.slice(0, 5)}`],
        ['kg', x => x.kg.toFixed(0)],
        [t('as.status'), x => label('stop', x.status)],
      ], r.stops))));
}

/** The plan as a sketch: stops placed by position, each route a coloured line from the site. */
function sketch(site, plan, jobs) {
  const points = [site.position, ...plan.routes.flatMap(r => r.stops.map(x => x.position)),
    ...jobs.filter(j => j.position).map(j => j.position)].filter(Boolean);
  if (!points.length) return null;
  const W = 600, H = 420, pad = 30;
  const lats = points.map(p => p.lat), lons = points.map(p => p.lon);
  const [minLat, maxLat, minLon, maxLon] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  const k = Math.cos((minLat + maxLat) / 2 * Math.PI / 180);
  const spanX = Math.max((maxLon - minLon) * k, 1e-3), spanY = Math.max(maxLat - minLat, 1e-3);
  const scale = Math.min((W - 2 * pad) / spanX, (H - 2 * pad) / spanY);
  const xy = p => [pad + (p.lon - minLon) * k * scale, H - pad - (p.lat - minLat) * scale];
  const [sx, sy] = xy(site.position);
  const planned = new Set(plan.routes.flatMap(r => r.stops.map(x => x.job_id)));
  return h('figure', { class: 'card sketch' },
    s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': t('co.sketch') },
      plan.routes.map((r, i) => s('polyline', {
        points: [[sx, sy], ...r.stops.map(x => xy(x.position)), [sx, sy]].map(p => p.join(',')).join(' '),
        fill: 'none', stroke: COLOURS[i % COLOURS.length], 'stroke-width': 3, 'stroke-linejoin': 'round' })),
      plan.routes.flatMap((r, i) => r.stops.map((x, n) => {
        const [x0, y0] = xy(x.position);
        return s('g', {}, s('circle', { cx: x0, cy: y0, r: 11, fill: '#fff', stroke: COLOURS[i % COLOURS.length], 'stroke-width': 3 }),
          s('text', { x: x0, y: y0 + 5, 'text-anchor': 'middle', 'font-size': 13 }, n + 1),
          s('title', {}, `${x.arrival.slice(0, 5)} ${x.address}`));
      })),
      jobs.filter(j => j.position && !planned.has(j.job_id) && !j.cancelled).map(j => {
        const [x0, y0] = xy(j.position);
        return s('g', {}, s('rect', { x: x0 - 8, y: y0 - 8, width: 16, height: 16, fill: '#fde68a', stroke: '#92400e' }),
          s('title', {}, `${t('co.unplanned')}: ${j.job_id}`));
      }),
      s('rect', { x: sx - 10, y: sy - 10, width: 20, height: 20, fill: '#111' }),
      s('text', { x: sx + 14, y: sy + 5, 'font-size': 14 }, site.name)),
    h('figcaption', {}, t('co.sketch_caption')));
}

// --- Recall --------------------------------------------------------------------------------------

async function recall(body) {
  const products = await get('/api/products');
  const product = select('product_id', products.map(p => [p.product_id, p.name]));
  const lots = input('lot_numbers', { placeholder: 'Y-4471, Y-4472', autocomplete: 'off' });
  const from = input('date_from', { type: 'date' });
  const to = input('date_to', { type: 'date' });
  const reason = input('reason', { required: true });
  const go = h('button', { class: 'danger big', type: 'submit' }, t('co.recall_go'));
  const out = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'card', onsubmit: async e => {
    e.preventDefault();
    const payload = { product_id: product.value, reason: reason.value.trim(),
      lot_numbers: lots.value.split(/[,;\s]+/).filter(Boolean) };
    if (from.value) payload.date_from = from.value;
    if (to.value) payload.date_to = to.value;
    const reply = await busy(go, out, () => post('/api/recalls', payload, { key: uid('recall-') }));
    if (reply) traceView(out, await get(`/api/recalls/${reply.aggregate_id}/trace`, { min_seq: after(reply) }));
  } },
  h('h1', {}, t('co.recall_title')),
  h('p', {}, t('co.recall_explain')),
  h('div', { class: 'row' }, field(t('wh.product'), product), field(t('co.lot_numbers'), lots)),
  h('div', { class: 'row' }, field(t('co.date_from'), from), field(t('co.date_to'), to)),
  field(t('co.reason'), reason),
  go);
  fill(body, form, out);
}

function traceView(out, trace) {
  fill(out, h('section', { class: 'card trace' },
    h('h2', {}, t('co.trace_title', { id: trace.recall.recall_id })),
    notice(trace.units_shipped ? 'warn' : 'ok', t('co.trace_summary', { received: trace.units_received, held: trace.units_held, shipped: trace.units_shipped })),
    h('h3', {}, t('co.trace_households')),
    table([
      [t('co.parcel'), x => x.reference],
      [t('as.association'), x => x.association_id || '—'],
      [t('as.relay_point'), x => x.relay_point_id || '—'],
      [t('as.household'), x => x.household || '—'],
      [t('wh.units'), x => String(x.quantity)],
      [t('co.shipped_at'), x => new Date(x.shipped_at).toLocaleString()],
      [t('co.returned'), x => (x.returned_at ? t('common.yes') : t('common.no'))],
    ], trace.shipments),
    h('h3', {}, t('co.trace_lots')),
    table([
      [t('wh.lot_number'), l => l.lot_number || l.lot_id],
      [t('wh.site'), l => l.site_id],
      [t('wh.status'), l => label('lot', l.status)],
      [t('wh.available'), l => String(l.on_hand)],
    ], trace.lots),
    h('p', {}, `${t('co.donors')}: ${trace.donors.join(', ') || '—'}`)));
}

// --- Reports -------------------------------------------------------------------------------------

async function reports(body) {
  const month = input('month', { type: 'month', value: day(0).slice(0, 7) });
  const out = h('div');
  const csv = h('button', { class: 'big', type: 'button', onclick: async () =>
    download(`foodaid-report-${month.value || 'all'}.csv`, await call('GET', '/api/reports/csv', { params: { month: month.value }, raw: true })) },
  t('co.csv'));
  const load = async () => {
    const [all, associations] = await Promise.all([get('/api/reports'), get('/api/associations')]);
    const names = new Map(associations.map(a => [a.association_id, a.name]));
    const rows = all.filter(r => !month.value || r.month === month.value);
    fill(out,
      h('section', { class: 'card' }, h('h2', {}, t('co.kg_by_group')), groupChart(all)),
      h('section', { class: 'card' }, h('h2', {}, t('co.coverage', { month: month.value || '' })), coverageChart(rows, names)),
      table([
        [t('common.month'), r => r.month],
        [t('as.association'), r => names.get(r.association_id) || r.association_id],
        [t('as.parcels'), r => String(r.parcels)],
        [t('co.households'), r => String(r.households)],
        ['kg', r => r.kg_total.toFixed(1)],
        [t('co.meals'), r => String(r.meals)],
        [t('co.need_coverage'), r => `${r.need_coverage_pct.toFixed(0)} %`],
      ], rows));
  };
  month.addEventListener('change', load);
  fill(body, h('div', { class: 'card' }, h('h1', {}, t('co.reports_title')),
    h('div', { class: 'row' }, field(t('common.month'), month), csv)), out);
  await load();
}

/** Stacked bars: kilograms handed over per food group, one bar per month. */
function groupChart(rows) {
  const months = [...new Set(rows.map(r => r.month))].sort();
  if (!months.length) return h('p', { class: 'empty' }, t('co.no_data'));
  const totals = months.map(m => {
    const by = {};
    for (const r of rows.filter(x => x.month === m)) for (const [g, v] of Object.entries(r.kg_by_group)) by[g] = (by[g] || 0) + v;
    return by;
  });
  const max = Math.max(1, ...totals.map(by => Object.values(by).reduce((a, b) => a + b, 0)));
  const W = 600, H = 260, left = 50, bw = Math.min(60, (W - left) / months.length - 10);
  return h('figure', { class: 'chart' },
    s('svg', { viewBox: `0 0 ${W} ${H + 30}`, role: 'img', 'aria-label': t('co.kg_by_group') },
      s('line', { x1: left, y1: H, x2: W, y2: H, stroke: '#333' }),
      s('text', { x: 0, y: 14, 'font-size': 12 }, `${max.toFixed(0)} kg`),
      months.map((m, i) => {
        let y = H;
        const x = left + 10 + i * (bw + 10);
        return s('g', {}, GROUPS.map((g, gi) => {
          const v = totals[i][g] || 0;
          const hgt = (v / max) * (H - 20);
          y -= hgt;
          return v ? s('rect', { x, y, width: bw, height: hgt, fill: COLOURS[gi % COLOURS.length] }, s('title', {}, `${label('group', g)}: ${v.toFixed(1)} kg`)) : null;
        }), s('text', { x: x + bw / 2, y: H + 18, 'text-anchor': 'middle', 'font-size': 12 }, m));
      })),
    h('figcaption', { class: 'legend-list' }, GROUPS.map((g, gi) =>
      h('span', {}, h('i', { class: 'swatch', 'data-colour': gi % COLOURS.length }), label('group', g)))));
}

/** Horizontal bars: how much of the households' needs the parcels covered, per association. */
function coverageChart(rows, names) {
  if (!rows.length) return h('p', { class: 'empty' }, t('co.no_data'));
  const by = new Map();
  for (const r of rows) {
    const a = by.get(r.association_id) || { sum: 0, n: 0 };
    a.sum += r.need_coverage_pct * r.parcels;
    a.n += r.parcels;
    by.set(r.association_id, a);
  }
  const list = [...by].map(([id, a]) => [names.get(id) || id, a.n ? a.sum / a.n : 0]);
  const W = 600, row = 34, left = 220;
  return s('svg', { viewBox: `0 0 ${W} ${list.length * row + 10}`, role: 'img', 'aria-label': t('co.coverage', { month: '' }) },
    list.map(([name, pct], i) => s('g', {},
      s('text', { x: 0, y: i * row + 22, 'font-size': 13 }, name.length > 30 ? name.slice(0, 29) + '…' : name),
      s('rect', { x: left, y: i * row + 6, width: ((W - left - 50) * pct) / 100, height: 22, fill: pct < 60 ? '#c2410c' : '#0b6e4f' }),
      s('text', { x: left + ((W - left - 50) * pct) / 100 + 6, y: i * row + 22, 'font-size': 13 }, `${pct.toFixed(0)} %`))));
}

// --- Donor statements ----------------------------------------------------------------------------

async function statements(body) {
  const donors = await get('/api/donors');
  const donor = select('donor_id', donors.map(d => [d.donor_id, d.name]));
  const year = input('year', { type: 'number', min: 2000, max: 2100, value: new Date().getFullYear() });
  const out = h('div', { 'aria-live': 'polite' });
  const path = () => `/api/donors/${donor.value}/statements/${year.value}`;
  const open = h('button', { class: 'primary big', type: 'button', onclick: async () => {
    const blob = await busy(open, out, () => call('GET', `${path()}/html`, { raw: true }));
    if (blob) window.open(URL.createObjectURL(blob), '_blank', 'noopener');
  } }, t('co.open_statement'));
  const csv = h('button', { class: 'big', type: 'button', onclick: async () => {
    const blob = await busy(csv, out, () => call('GET', `${path()}/csv`, { raw: true }));
    if (blob) download(`attestation-${donor.value}-${year.value}.csv`, blob);
  } }, t('co.csv'));
  const summary = async () => {
    const st = await get(path()).catch(() => null);
    fill(out, st ? notice('ok', t('co.statement_summary', { donations: st.donations, kg: st.total_kg.toFixed(1), meals: st.meals })) : null);
  };
  donor.addEventListener('change', summary);
  year.addEventListener('change', summary);
  fill(body, h('div', { class: 'card' }, h('h1', {}, t('co.statements_title')),
    h('div', { class: 'row' }, field(t('wh.donor'), donor), field(t('co.year'), year)),
    h('div', { class: 'row' }, open, csv), out));
  await summary();
}

// --- Platform: projections and their rebuild -------------------------------------------------------

async function platform(body) {
  const out = h('div', { 'aria-live': 'polite' });
  const progress = h('div', { 'aria-live': 'polite' });
  const lagOf = p => Object.values(p.lag).reduce((a, b) => a + b, 0);
  const draw = health => fill(out,
    notice(health.status === 'ok' ? 'ok' : 'error', t('co.platform_status', { status: label('health', health.status), nodes: health.nodes.join(', ') })),
    table([
      [t('co.node'), p => p.node],
      [t('co.projection'), p => p.name],
      [t('wh.status'), p => label('projection', p.state) + (p.stuck ? ` · ${p.stuck.stream}#${p.stuck.seq}: ${p.stuck.reason}` : '')],
      [t('co.lag'), p => String(lagOf(p))],
      [t('co.rebuild'), p => rebuildButton(p.name)],
    ], health.projections, p => (p.stuck ? 'held' : '')),
    h('div', { class: 'row' }, rebuildButton('all')));
  const rebuildButton = name => {
    const b = h('button', { type: 'button', class: name === 'all' ? 'danger big' : '', onclick: async () => {
      if (!confirm(t('co.rebuild_confirm', { name }))) return;
      const started = await busy(b, progress, async () => {
        const reply = await post('/api/replays', { projection: name });
        const names = new Set(reply.nodes.flatMap(n => n.started));
        const bar = h('progress', { max: 100, value: 0 });
        const text = h('span');
        fill(progress, h('div', { class: 'progress', role: 'status' }, bar, text));
        // Follow the rebuild on /health: what is left to record over what the streams hold.
        for (let first = true; ; first = false) {
          const health = await get('/health');
          const rebuilt = health.projections.filter(p => names.has(p.name));
          const total = rebuilt.reduce((a, p) => a + Object.keys(p.lag).reduce((x, st) => x + (health.streams[st] || 0), 0), 0);
          const left = rebuilt.reduce((a, p) => a + lagOf(p), 0);
          const pct = total ? Math.round((100 * (total - left)) / total) : 100;
          bar.value = pct;
          text.textContent = t('co.rebuild_progress', { done: total - left, total, pct });
          draw(health);
          if (rebuilt.some(p => p.stuck)) throw new Error(t('co.rebuild_stuck'));
          if (!first && left === 0 && rebuilt.every(p => p.state === 'running')) return reply;
          await new Promise(r => setTimeout(r, 400));
        }
      });
      if (started) fill(progress, notice('ok', t('co.rebuild_done', { name })));
    } }, name === 'all' ? t('co.rebuild_all') : t('co.rebuild'));
    return b;
  };
  fill(body, h('div', { class: 'card' }, h('h1', {}, t('co.platform_title')), h('p', {}, t('co.platform_explain')), progress), out);
  draw(await get('/health'));
}
