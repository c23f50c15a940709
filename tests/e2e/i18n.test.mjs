// Every text the app names exists in French and in English, with the same placeholders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const WEB = path.resolve(import.meta.dirname, '../../crates/gateway/web/js');
globalThis.localStorage = { getItem: () => null, setItem: () => {} };
const { TEXT } = await import(path.join(WEB, 'i18n.js'));

function sources(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap(e =>
    e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.js') ? [path.join(dir, e.name)] : []);
}

test('every key the screens use has its two texts', () => {
  const missing = [];
  let used = 0;
  for (const file of sources(WEB)) {
    const text = fs.readFileSync(file, 'utf8');
    // Whole keys only: t('drv.reason_' + r) builds its key, and its texts are checked where drawn.
    for (const [, key] of text.matchAll(/\bt\('([a-z_]+\.[a-z_]+)'\s*[,)]/g)) {
      used++;
      if (!TEXT[key]) missing.push(`${path.basename(file)}: ${key}`);
    }
  }
  assert.ok(used > 100, `only ${used} texts found: the pattern no longer matches the code`);
  assert.deepEqual(missing, []);
});

test('French and English say the same placeholders', () => {
  const differ = [];
  for (const [key, pair] of Object.entries(TEXT)) {
    assert.equal(pair.length, 2, key);
    const names = s => [...s.matchAll(/\{(\w+)\}/g)].map(m => m[1]).sort().join(',');
    if (names(pair[0]) !== names(pair[1])) differ.push(key);
  }
  assert.deepEqual(differ, []);
});
