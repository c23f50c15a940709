// A driver's day: routes as lists of stops, each with its window, what to load or unload, a
// navigation link, and arrive / complete / fail buttons that work without network.
import { get } from '../api.js';
import { t, label } from '../i18n.js';
import { h, fill, field, input, select, notice, errorNotice, day, tabs } from '../ui.js';
import * as outbox from '../outbox.js';

let redraw = null;

export async function show(view, sub, me) {
  const date = /^\d{4}-\d{2}-\d{2}$/.test(sub) ? sub : day(0);
  const banner = h('div', { class: 'outbox', 'aria-live': 'polite' });
  const body = h('div');
  fill(view, tabs(`#/driver/${sub || day(0)}`, [
    [`#/driver/${day(0)}`, t('drv.today')],
    [`#/driver/${day(1)}`, t('drv.tomorrow')],
  ]), h('h1', {}, t('drv.title', { date: new Date(`${date}T12:00:00`).toLocaleDateString(undefined, { weekday: 'long', day: 'numeric', month: 'long' }) })),
  banner, body);
  const cacheKey = `foodaid.routes.${date}`;
  let routes = JSON.parse(localStorage.getItem(cacheKey) || 'null');
  let offline = false;
  // A refusal when reading the routes (the token revoked, ...): shown, the last copy kept.
  let failure = null;
  const refresh = async () => {
    try {
      routes = await get('/api/routes', { date });
      localStorage.setItem(cacheKey, JSON.stringify(routes));
      [offline, failure] = [false, null];
    } catch (err) {
      if (err.code === 'network') offline = true;
      else failure = err;
    }
  };
  const draw = () => {
    drawBanner(banner, offline, async () => { await outbox.flush(); await refresh(); draw(); });
    if (failure) banner.prepend(errorNotice(failure));
    if (!routes) return fill(body, notice('error', t('drv.no_copy')));
    if (!routes.length) return fill(body, notice('ok', t('drv.no_route', { date })));
    fill(body, routes.map(r => routeCard(r, me)));
  };
  // When the waiting actions are sent, show the platform's own state again.
  if (redraw) outbox.offChange(redraw);
  redraw = async () => {
    if (!view.isConnected) return outbox.offChange(redraw);
    if (!outbox.pending().length && !offline) await refresh();
    draw();
  };
  outbox.onChange(redraw);
  await refresh();
  draw();
  outbox.flush();
}

function drawBanner(banner, offline, retry) {
  const waiting = outbox.pending();
  const refused = outbox.failed();
  fill(banner,
    offline || !navigator.onLine ? notice('warn', t('drv.offline')) : null,
    waiting.length
      ? notice('warn', h('strong', { class: 'waiting' }, t('drv.waiting', { n: waiting.length })),
        h('ul', {}, waiting.map(a => h('li', {}, `${new Date(a.at).toLocaleTimeString()} · ${a.label}`))),
        h('button', { type: 'button', class: 'big', onclick: retry }, t('drv.send_now')))
      : notice('ok', h('span', { class: 'all-sent' }, t('drv.all_sent'))),
    refused.length
      ? notice('error', t('drv.refused', { n: refused.length }),
        h('ul', {}, refused.map(a => h('li', {}, `${a.label}: ${t('err.' + a.code, {}, a.message)}`))),
        h('button', { type: 'button', onclick: () => outbox.dismissFailed() }, t('drv.dismiss')))
      : null);
}

/** The stop's status as the driver last left it: the platform's, or what waits to be sent. */
function localStatus(route, stop) {
  let status = stop.status;
  for (const a of outbox.pending()) {
    if (!a.path.startsWith(`/api/routes/${route.route_id}/stops/${stop.job_id}/`)) continue;
    status = { arrive: 'arrived', complete: 'completed', fail: 'failed' }[a.path.split('/').pop()];
  }
  return status;
}

function routeStarted(route) {
  return route.started_at || outbox.pending().some(a => a.path === `/api/routes/${route.route_id}/start`);
}

function routeCard(route, me) {
  const mine = me.role === 'driver';
  const started = routeStarted(route);
  const ended = route.ended_at || outbox.pending().some(a => a.path === `/api/routes/${route.route_id}/end`);
  const act = (path, body, text) => outbox.enqueue(path, body, text);
  const allDone = route.stops.every(s => ['completed', 'failed'].includes(localStatus(route, s)));
  return h('article', { class: 'card route', 'data-route': route.route_id },
    h('h2', {}, t('drv.route', { vehicle: route.vehicle_id, from: hm(route.departure), to: hm(route.back) })),
    h('p', {}, `${route.km.toFixed(1)} km · ${route.stops.length} ${t('drv.stops')}${route.refrigerated ? ` · ❄ ${t('drv.refrigerated')}` : ''}`),
    mine && !started ? h('button', { class: 'primary big', type: 'button',
      onclick: () => act(`/api/routes/${route.route_id}/start`, {}, t('drv.started')) }, t('drv.start')) : null,
    h('ol', { class: 'stops' }, route.stops.map(s => stopItem(route, s, mine && started && !ended, act))),
    mine && started && !ended && allDone ? h('button', { class: 'primary big', type: 'button',
      onclick: () => act(`/api/routes/${route.route_id}/end`, {}, t('drv.ended')) }, t('drv.end')) : null,
    ended ? notice('ok', t('drv.route_ended')) : null);
}

const hm = time => String(time).slice(0, 5);

function stopItem(route, stop, active, act) {
  const status = localStatus(route, stop);
  const base = `/api/routes/${route.route_id}/stops/${stop.job_id}`;
  const [lat, lon] = [stop.position.lat, stop.position.lon];
  const verb = stop.action === 'load' ? t('drv.load') : t('drv.unload');
  const what = `${verb} ${stop.kg.toFixed(0)} kg${stop.chilled_kg ? ` (❄ ${stop.chilled_kg.toFixed(0)} kg)` : ''}${stop.parcels ? ` · ${stop.parcels} ${t('drv.parcels')}` : ''}`;
  const kgInput = input('kg', { type: 'number', min: 0, step: 0.1, value: stop.kg, inputmode: 'decimal' });
  const reason = select('reason', ['closed', 'absent', 'refused', 'vehicle', 'other'].map(r => [t('drv.reason_' + r), t('drv.reason_' + r)]));
  const out = h('div');
  let buttons = null;
  if (active && status === 'planned') {
    buttons = h('button', { class: 'primary big', type: 'button', onclick: () => act(`${base}/arrive`, {}, `${t('drv.arrived')} · ${stop.address}`) }, t('drv.arrive'));
  } else if (active && status === 'arrived') {
    buttons = h('div', { class: 'stop-actions' },
      h('div', { class: 'row' }, field(t('drv.actual_kg'), kgInput),
        h('button', { class: 'primary big', type: 'button', onclick: () =>
          act(`${base}/complete`, { kg: Number(kgInput.value) }, `${t('drv.completed')} · ${stop.address} · ${kgInput.value} kg`) }, t('drv.complete'))),
      h('div', { class: 'row' }, field(t('drv.reason'), reason),
        h('button', { class: 'danger big', type: 'button', onclick: () =>
          act(`${base}/fail`, { reason: reason.value }, `${t('drv.failed')} · ${stop.address} · ${reason.value}`) }, t('drv.fail'))));
  }
  return h('li', { class: `stop ${status}`, 'data-job': stop.job_id },
    h('div', { class: 'stop-head' },
      h('strong', {}, `${hm(stop.arrival)} · ${stop.address}`),
      h('span', { class: `status ${status}` }, label('stop', status),
        status !== stop.status ? ` · ${t('drv.unsent')}` : '')),
    h('p', {}, `${t('drv.window')} ${hm(stop.opens)}–${hm(stop.closes)} · ${what}`),
    stop.contact ? h('p', {}, `${t('drv.contact')} ${stop.contact}`) : null,
    h('p', { class: 'nav-links' },
      h('a', { href: stop.geo }, t('drv.navigate')), ' · ',
      h('a', { href: `https://www.openstreetmap.org/directions?to=${lat}%2C${lon}`, rel: 'noopener', target: '_blank' }, 'OpenStreetMap')),
    stop.fail_reason ? h('p', {}, `${t('drv.failed')}: ${stop.fail_reason}`) : null,
    stop.actual_kg != null ? h('p', {}, `${t('drv.done_kg')} ${stop.actual_kg} kg${stop.partial ? ` (${t('drv.partial')})` : ''}`) : null,
    buttons, out);
}

