// The HTTP API, as the app uses it: bearer token, idempotency keys, stable error codes.
import { uid } from './ui.js';

const TOKEN = 'foodaid.token';

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const session = {
  get token() { return localStorage.getItem(TOKEN); },
  set token(v) { if (v) localStorage.setItem(TOKEN, v); else localStorage.removeItem(TOKEN); },
  me: null,
};

/** Sends one request; throws ApiError (code `network` when the network is down). */
export async function call(method, path, { body, key, occurredAt, params, raw } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  const headers = { Accept: raw ? '*/*' : 'application/json' };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['Idempotency-Key'] = key || uid('web-');
  if (occurredAt) headers['X-Occurred-At'] = occurredAt;
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', e.message);
  }
  if (!res.ok) {
    let err = { code: 'http_' + res.status, message: res.statusText };
    try { err = await res.json(); } catch { /* not JSON: keep the status */ }
    throw new ApiError(res.status, err.code, err.message, err.details);
  }
  return raw ? res.blob() : res.json();
}

export const get = (path, params) => call('GET', path, { params });
export const post = (path, body = {}, opts = {}) => call('POST', path, { ...opts, body });

/** `min_seq` for a query that must see a command's commit (read-your-writes). */
export const after = reply => (reply ? `${reply.stream}:${reply.seq}` : undefined);
