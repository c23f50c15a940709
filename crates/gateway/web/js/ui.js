// Small DOM helpers: the app builds its screens from plain elements, no framework.
import { t, errorText } from './i18n.js';
import { session } from './api.js';

/** h('button', {class: 'big', onclick: f}, 'text', child, ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces what `el` holds. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let fieldSeq = 0;
/** A labelled input: the label is always visible and tied to the control. */
export function field(label, control, hint) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('small', {}, hint) : null);
}

export function input(name, attrs = {}) {
  return h('input', { name, ...attrs });
}

/** A <select> of [value, label] pairs. */
export function select(name, options, attrs = {}) {
  const el = h('select', { name, ...attrs });
  for (const [value, label] of options) el.append(h('option', { value }, label));
  if (attrs.value !== undefined) el.value = attrs.value;
  return el;
}

export function checkbox(name, label, checked = false) {
  const box = h('input', { type: 'checkbox', name, checked });
  return h('label', { class: 'check' }, box, ' ', label);
}

/** A table: columns are [header, row => cell] pairs; `rowClass` may highlight rows. */
export function table(columns, rows, rowClass) {
  if (!rows.length) return h('p', { class: 'empty' }, t('common.none'));
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, columns.map(([head]) => h('th', { scope: 'col' }, head)))),
      h('tbody', {}, rows.map(row => h('tr', { class: rowClass ? rowClass(row) : null },
        columns.map(([head, cell]) => h('td', { 'data-label': head }, cell(row))))))));
}

/** A message area that announces itself to screen readers. */
export function notice(kind, ...text) {
  return h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...text);
}

/** The error of a failed call, in plain words, with its stable code for support. */
export function errorNotice(err) {
  return notice('error', errorText(err), err.code ? h('small', { class: 'code' }, ` (${err.code})`) : null);
}

/**
 * Runs `work` while `button` shows progress (a spinner and the seconds elapsed, or `expected`
 * seconds counting down), then shows its outcome in `out`: long operations never look frozen.
 */
export async function busy(button, out, work, expected) {
  const label = button.textContent;
  const started = Date.now();
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  const progress = h('progress', expected ? { max: expected * 10, value: 0 } : {});
  const status = h('span', {}, t('common.working'));
  const shown = h('div', { class: 'progress', role: 'status' }, progress, status);
  if (out) fill(out, shown);
  const tick = setInterval(() => {
    const s = (Date.now() - started) / 1000;
    if (expected) progress.value = Math.min(s, expected) * 10;
    status.textContent = t('common.working_for', { s: Math.round(s) });
  }, 250);
  try {
    return await work();
  } catch (err) {
    if (out) fill(out, errorNotice(err));
    return undefined;
  } finally {
    clearInterval(tick);
    shown.remove();
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = label;
  }
}

/** The values of a form's named controls (numbers as numbers, checkboxes as booleans). */
export function values(form) {
  const out = {};
  for (const el of form.querySelectorAll('[name]')) {
    if (el.type === 'checkbox') out[el.name] = el.checked;
    else if (el.type === 'number') out[el.name] = el.value === '' ? null : Number(el.value);
    else out[el.name] = el.value.trim();
  }
  return out;
}

/** Today and other days as YYYY-MM-DD, in the collective's time zone (from /api/me), so that a
 * device set to another zone still asks for the platform's day. */
export function day(offset = 0) {
  const timeZone = session.me?.time_zone || undefined;
  return new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' })
    .format(new Date(Date.now() + offset * 86400000));
}

export function kg(grams) {
  return `${(grams / 1000).toLocaleString(undefined, { maximumFractionDigits: 1 })} kg`;
}

/** Saves text as a file the user downloads. */
export function download(name, blob) {
  const a = h('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

/** A random id (works on plain http too, where crypto.randomUUID is missing). */
export function uid(prefix = '') {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(b, x => x.toString(16).padStart(2, '0')).join('');
}

/** Tabs within a screen, as links (so each has its own address and works with the keyboard). */
export function tabs(current, list) {
  return h('nav', { class: 'tabs', 'aria-label': t('common.sections') },
    list.map(([href, label]) => h('a', { href, 'aria-current': href === current ? 'page' : null }, label)));
}
