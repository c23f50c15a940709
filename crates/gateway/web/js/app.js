// The app's frame: sign-in, the menu each role sees, and the screen the address names.
import { session, get } from './api.js';
import { t, lang, setLang } from './i18n.js';
import { h, fill, notice, errorNotice } from './ui.js';
import * as signin from './screens/signin.js';
import * as warehouse from './screens/warehouse.js';
import * as association from './screens/association.js';
import * as driver from './screens/driver.js';
import * as coordinator from './screens/coordinator.js';

// Screens: address prefix, menu label, who sees it, module.
const SCREENS = [
  ['#/warehouse', 'nav.warehouse', ['admin', 'warehouse'], warehouse],
  ['#/association', 'nav.association', ['admin', 'association'], association],
  ['#/driver', 'nav.driver', ['admin', 'driver'], driver],
  ['#/coordinator', 'nav.coordinator', ['admin'], coordinator],
];

const main = document.getElementById('main');
const menu = document.getElementById('menu');

function allowed() {
  return SCREENS.filter(([, , roles]) => session.me && roles.includes(session.me.role));
}

function drawMenu() {
  const who = session.me;
  const here = location.hash || '#/';
  fill(menu,
    h('a', { class: 'brand', href: '#/' }, 'foodaid'),
    h('nav', { 'aria-label': t('nav.menu') },
      allowed().map(([href, label]) =>
        h('a', { href, 'aria-current': here.startsWith(href) ? 'page' : null }, t(label)))),
    h('div', { class: 'who' },
      who ? h('span', {}, `${who.name} · ${t('role.' + who.role)}`) : null,
      h('button', { class: 'link', type: 'button', onclick: () => { setLang(lang() === 'fr' ? 'en' : 'fr'); route(); } },
        lang() === 'fr' ? 'English' : 'Français'),
      who ? h('button', { class: 'link', type: 'button', onclick: signOut }, t('nav.sign_out')) : null));
}

function signOut() {
  session.token = null;
  session.me = null;
  localStorage.removeItem('foodaid.me');
  history.replaceState(null, '', location.pathname + '#/');
  route();
}

/** Who the stored token is; `null` when there is none or it was revoked. */
async function whoAmI() {
  if (!session.token) return null;
  try {
    return await get('/api/me');
  } catch (err) {
    if (err.code === 'unauthenticated') session.token = null;
    // Offline with a token: a driver keeps working from what the device holds.
    if (err.code === 'network') return JSON.parse(localStorage.getItem('foodaid.me') || 'null');
    return null;
  }
}

export async function route() {
  document.documentElement.lang = lang();
  document.title = 'foodaid';
  if (!session.me) {
    session.me = await whoAmI();
    if (session.me) localStorage.setItem('foodaid.me', JSON.stringify(session.me));
  }
  drawMenu();
  const hash = location.hash || '#/';
  if (!session.me) {
    return signin.show(main, async me => {
      session.me = me;
      localStorage.setItem('foodaid.me', JSON.stringify(me));
      const first = allowed()[0]?.[0];
      if (first && !location.hash.startsWith(first)) location.hash = first;
      else route();
    });
  }
  const screens = allowed();
  if (!screens.length) {
    fill(main, h('section', { class: 'screen' }, notice('error', t('nav.no_screen'))));
    return;
  }
  const screen = screens.find(([href]) => hash.startsWith(href));
  if (!screen) {
    location.replace(screens[0][0]);
    return;
  }
  const [href, label, , module] = screen;
  document.title = `${t(label)} · foodaid`;
  const view = h('section', { class: 'screen' });
  fill(main, view);
  try {
    await module.show(view, hash.slice(href.length).replace(/^\//, ''), session.me);
  } catch (err) {
    fill(view, errorNotice(err));
  }
  main.focus({ preventScroll: true });
}

// A sign-in link (`/#token=fa_...`) signs in and is then removed from the address bar.
const fromLink = location.hash.match(/^#token=(fa_[\w-]+)$/);
if (fromLink) {
  session.token = fromLink[1];
  session.me = null;
  history.replaceState(null, '', location.pathname + '#/');
}
window.addEventListener('hashchange', route);
route();

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => { /* plain http: no offline copy */ });
}
