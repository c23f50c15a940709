// Sign-in with an API token: pasted, or opened from a sign-in link a coordinator sends.
import { session, get } from '../api.js';
import { t } from '../i18n.js';
import { h, fill, field, errorNotice } from '../ui.js';

export function show(main, signedIn) {
  const token = h('input', { name: 'token', type: 'password', autocomplete: 'current-password', required: true,
    spellcheck: 'false', placeholder: 'fa_…' });
  const out = h('div');
  const form = h('form', { class: 'card narrow', onsubmit: async e => {
    e.preventDefault();
    session.token = token.value.trim();
    try {
      signedIn(await get('/api/me'));
    } catch (err) {
      session.token = null;
      fill(out, errorNotice(err));
    }
  } },
  h('h1', {}, t('signin.title')),
  h('p', {}, t('signin.explain')),
  field(t('signin.token'), token),
  h('button', { class: 'primary big', type: 'submit' }, t('signin.submit')),
  out);
  fill(main, form);
  token.focus();
}
