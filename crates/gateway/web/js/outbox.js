// What a driver did while the network was down: kept on the device, in order, with the time it
// happened, and sent when the network returns. Each action keeps one idempotency key, so an
// action sent twice (the answer was lost) is recorded once.
import { call } from './api.js';
import { uid } from './ui.js';

const KEY = 'foodaid.outbox';
const FAILED = 'foodaid.outbox.failed';
const listeners = new Set();
let flushing = null;

const load = k => JSON.parse(localStorage.getItem(k) || '[]');
const save = (k, v) => localStorage.setItem(k, JSON.stringify(v));

export const pending = () => load(KEY);
export const failed = () => load(FAILED);
export const onChange = f => listeners.add(f);
export const offChange = f => listeners.delete(f);
const changed = () => listeners.forEach(f => f());

/** Keeps an action (a POST to `path`) and tries to send it at once. */
export function enqueue(path, body, label) {
  save(KEY, [...pending(), { id: uid('drv-'), path, body, label, at: new Date().toISOString() }]);
  changed();
  return flush();
}

/** Sends what is waiting, oldest first; stops at the first network failure. */
export function flush() {
  flushing ??= send().finally(() => {
    flushing = null;
    changed();
  });
  return flushing;
}

async function send() {
  let sent = 0;
  for (let item = pending()[0]; item; item = pending()[0]) {
    try {
      await call('POST', item.path, { body: item.body, key: item.id, occurredAt: item.at });
      sent++;
    } catch (err) {
      if (err.code === 'network' || err.status >= 500) return sent;
      // Refused (the route was re-planned, ...): set aside with the reason, for the driver to see.
      save(FAILED, [...failed(), { ...item, code: err.code, message: err.message }]);
    }
    save(KEY, pending().filter(x => x.id !== item.id));
    changed();
  }
  return sent;
}

export function dismissFailed() {
  save(FAILED, []);
  changed();
}

window.addEventListener('online', () => flush());
setInterval(() => { if (pending().length) flush(); }, 15000);
