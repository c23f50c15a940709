// The web app end to end, in Debian's headless Chromium driven by playwright-core, against a
// real `foodaid up --demo` (its own nats-server, sled, the gateway) started here on free ports.
//
// A warehouse volunteer records a donation with one refused line; an association registers a
// household and requests a parcel; the coordinator composes the wave; the warehouse picks and
// ships it; the coordinator plans the routes; the driver works the route with the network cut
// for one stop, then restored; the parcel shows at the relay point; a recall traces it.
// Every screen is photographed at phone and tablet width into target/e2e/screenshots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = process.env.FOODAID_BIN || path.join(ROOT, 'target/debug/foodaid');
const SHOTS = path.join(ROOT, 'target/e2e/screenshots');
const PHONE = { width: 360, height: 740 };
const TABLET = { width: 800, height: 1280 };

// The platform and the browsers live in a time zone where it is mid-morning now, so that
// today's routes are planned and driven within working hours whatever the hour of the run (a
// driver acts on a route on its day, in the collective's time zone, never before).
const ZONE = (() => {
  const hour = new Date().getUTCHours();
  let ahead = (((9 - hour) % 24) + 24) % 24;
  if (ahead > 14) ahead -= 24;
  return ahead === 0 ? 'Etc/UTC' : ahead > 0 ? `Etc/GMT-${ahead}` : `Etc/GMT+${-ahead}`;
})();

/** The date `offset` days from today in ZONE, as YYYY-MM-DD. */
const day = offset => new Intl.DateTimeFormat('en-CA', { timeZone: ZONE, year: 'numeric', month: '2-digit', day: '2-digit' })
  .format(new Date(Date.now() + offset * 86400000));

/** `foodaid up --demo` in a fresh directory; resolves once it says where it listens. */
async function startFoodaid() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'foodaid-e2e-'));
  const child = spawn(BIN, ['up', '--demo', '--data-dir', dir, '--http', '127.0.0.1:0'], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', NO_COLOR: '1', FOODAID__TIME_ZONE: ZONE },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', b => { log += b; });
  const base = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`foodaid did not start:\n${out}\n${log}`)), 60000);
    child.stdout.on('data', b => {
      out += b;
      const m = out.match(/foodaid is up: (http:\/\/[\d.:]+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', code => reject(new Error(`foodaid exited (${code}):\n${out}\n${log}`)));
  });
  const tokens = JSON.parse(fs.readFileSync(path.join(dir, 'demo-tokens.json'), 'utf8'));
  const token = (...args) => execFileSync(BIN, ['token', 'create', '--data-dir', dir, ...args], { encoding: 'utf8' }).trim();
  const stop = async () => {
    child.kill('SIGTERM');
    await new Promise(r => (child.exitCode !== null ? r() : child.on('exit', r)));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { base, tokens, token, stop, log: () => log };
}

/** The API as the test itself reads it (to wait for what the platform does on its own). */
function api(base, token) {
  return async (p) => {
    const res = await fetch(base + p, { headers: { Authorization: `Bearer ${token}` } });
    return res.json();
  };
}

async function eventually(what, f, seconds = 20) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise(r => setTimeout(r, 250));
  }
}

test('volunteers, associations, coordinators and drivers work a day through the web app', async t => {
  const foodaid = await startFoodaid();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  // This run's photographs only.
  fs.rmSync(SHOTS, { recursive: true, force: true });
  fs.mkdirSync(SHOTS, { recursive: true });
  const problems = [];
  const contexts = [];
  /** A person on a device: their own browser context (storage), signed in with their token. */
  async function person(name, token, viewport) {
    const context = await browser.newContext({ viewport, locale: 'fr-FR', timezoneId: ZONE, serviceWorkers: 'allow' });
    contexts.push(context);
    const page = await context.newPage();
    page.on('pageerror', e => problems.push(`${name}: ${e.message}`));
    page.on('console', m => { if (m.type() === 'error' && !/Failed to load resource|net::ERR_INTERNET_DISCONNECTED/.test(m.text())) problems.push(`${name}: ${m.text()}`); });
    await page.goto(`${foodaid.base}/#token=${token}`);
    await page.locator('header .who span').waitFor(); // the name shows once signed in
    return { page, context };
  }
  const shot = async (page, name) => {
    await page.waitForLoadState('networkidle');
    const text = await page.locator('body').innerText();
    assert.ok(!text.includes('⟦'), `${name}: a text is missing a translation:\n${text}`);
    const width = page.viewportSize().width;
    await page.screenshot({ path: path.join(SHOTS, `${name}-${width}.png`), fullPage: true });
  };
  const [today, tomorrow] = [day(0), day(1)];
  const admin = api(foodaid.base, foodaid.tokens.admin);

  try {
    await t.test('sign-in refuses a wrong token in plain words', async () => {
      for (const viewport of [PHONE, TABLET]) {
        const context = await browser.newContext({ viewport, locale: 'fr-FR', timezoneId: ZONE });
        contexts.push(context);
        const page = await context.newPage();
        await page.goto(foodaid.base);
        await page.getByLabel('Jeton').fill('fa_nothing_wrong');
        await page.getByRole('button', { name: 'Se connecter' }).click();
        await page.getByText('Ce jeton n’est pas (ou plus) valable.').waitFor();
        await shot(page, 'signin');
      }
    });

    const wh = await person('warehouse', foodaid.tokens.warehouse, TABLET);
    await t.test('a volunteer records a donation; the line too close to its use-by date is refused', async () => {
      const { page } = wh;
      await page.waitForURL(/#\/warehouse/);
      // Part of the donor's name is enough when only one donor has it.
      await page.getByLabel('Chercher le donateur').fill('carref');
      assert.equal(await page.getByLabel('Donateur', { exact: true }).inputValue(), 'donor-carrefour-venissieux');
      // A barcode scanner types the digits and Enter: the product fills in, the form stays.
      const line1 = page.locator('fieldset.line').nth(0);
      await line1.getByLabel('Code-barres (GTIN)').fill('3760012345014');
      await line1.getByLabel('Code-barres (GTIN)').press('Enter');
      await line1.locator('.found', { hasText: 'Pâtes complètes 500 g · féculents' }).waitFor();
      // The scanner's Enter moves on to the quantity: the next field to type in, without a tap.
      assert.equal(await page.evaluate(() => document.activeElement.name), 'quantity');
      await line1.getByLabel('Quantité (unités)').fill('40');
      await line1.getByLabel('Quantité (unités)').dispatchEvent('change');
      assert.equal(await line1.getByLabel('Poids total (kg)').inputValue(), '20');
      await line1.getByLabel('Date de durabilité minimale (DDM)').fill(day(200));
      await line1.getByLabel('N° de lot').fill('E2E-PATES');
      await line1.getByLabel('Valeur déclarée (€, pour le reçu fiscal)').fill('35.50');
      await page.getByRole('button', { name: '+ Ajouter une ligne' }).click();
      const line2 = page.locator('fieldset.line').nth(1);
      await line2.getByLabel('Code-barres (GTIN)').fill('3760012345021');
      await line2.getByLabel('Code-barres (GTIN)').press('Enter');
      await line2.locator('.found', { hasText: 'Yaourt nature x4' }).waitFor();
      await line2.getByLabel('Quantité (unités)').fill('12');
      await line2.getByLabel('Poids total (kg)').fill('6');
      await line2.getByLabel('Date limite de consommation (DLC)').fill(tomorrow);
      await line2.getByLabel('Température (°C)').fill('3.5');
      // A barcode never seen before: the volunteer describes the product once, on the spot.
      await page.getByRole('button', { name: '+ Ajouter une ligne' }).click();
      const line3 = page.locator('fieldset.line').nth(2);
      await line3.getByLabel('Code-barres (GTIN)').fill('3760012345069');
      await line3.getByLabel('Code-barres (GTIN)').press('Enter');
      await line3.getByText('Nouveau produit (code 3760012345069)').waitFor();
      await line3.getByLabel('Nom du produit (avec le poids)').fill('Compote de pommes 4 x 100 g');
      await line3.getByLabel('Groupe').selectOption({ label: 'sucré-salé' });
      await line3.getByLabel('Poids d’une unité (g)').fill('400');
      await line3.getByRole('button', { name: 'Enregistrer le produit' }).click();
      await line3.locator('.found', { hasText: 'Compote de pommes 4 x 100 g · sucré-salé · sec' }).waitFor();
      await line3.getByLabel('Quantité (unités)').fill('10');
      await line3.getByLabel('Quantité (unités)').dispatchEvent('change');
      assert.equal(await line3.getByLabel('Poids total (kg)').inputValue(), '4');
      await line3.getByLabel('Date de durabilité minimale (DDM)').fill(day(300));
      await shot(page, 'flow-1-donation-form');
      // A slip of the finger (200 kg of pasta for 40 packs of 500 g) is asked about first.
      await line1.getByLabel('Poids total (kg)').fill('200');
      let asked = null;
      page.once('dialog', d => { asked = d.message(); d.dismiss(); });
      await page.getByRole('button', { name: 'Enregistrer le don' }).click();
      await eventually('the question about the weight', () => asked);
      assert.match(asked, /1 ligne\(s\) ont un poids très différent/);
      assert.equal(await page.getByText(/Don enregistré/).count(), 0, 'nothing recorded when the volunteer says no');
      await line1.getByLabel('Poids total (kg)').fill('20');
      await page.getByRole('button', { name: 'Enregistrer le don' }).click();
      await page.getByText('Don enregistré : 2 ligne(s) en stock, 1 refusée(s).').waitFor();
      await page.getByText('DLC trop proche pour être distribuée à temps').waitFor();
      await page.getByText('Yaourt nature x4 · 12 · 6 kg').waitFor();
      const donations = await admin('/api/donations');
      const pasta = donations.flatMap(d => d.lines).find(l => l.lot_number === 'E2E-PATES');
      assert.equal(pasta.declared_value_cents, 3550, 'the declared value is recorded for the tax receipt');
      await shot(page, 'flow-1-donation-recorded');
    });

    await t.test('the warehouse sends tuna to the Givors épicerie, which takes it in', async () => {
      const { page } = wh;
      await page.goto(`${foodaid.base}/#/warehouse/transfers`);
      await page.getByLabel('Vers l’entrepôt').selectOption({ label: 'Épicerie solidaire de Givors' });
      await page.getByLabel('Produit').selectOption({ label: 'Thon au naturel 140 g (200)' });
      await page.getByLabel('Quantité (unités)').fill('24');
      await page.getByRole('button', { name: 'Réserver le transfert' }).click();
      const row = page.locator('tr', { hasText: 'Thon au naturel 140 g × 24' });
      await row.getByText('réservé').waitFor();
      await row.getByRole('button', { name: 'Expédier' }).click();
      await row.getByText('en route').waitFor();
      await page.getByLabel('Entrepôt', { exact: true }).selectOption({ label: 'Épicerie solidaire de Givors' });
      await page.locator('tr', { hasText: '× 24' }).getByRole('button', { name: 'Réceptionner' }).click();
      await page.locator('tr', { hasText: '× 24' }).getByText('reçu').waitFor();
      await shot(page, 'flow-1-transfer-received');
      const lots = await admin('/api/lots?site_id=site-givors');
      assert.equal(lots.reduce((n, l) => n + l.on_hand, 0), 24, 'the tuna is in stock at Givors');
      await page.getByLabel('Entrepôt', { exact: true }).selectOption({ label: 'Entrepôt de Gerland' });
    });

    const asso = await person('association', foodaid.tokens.association, PHONE);
    await t.test('an association registers a household and requests a parcel', async () => {
      const { page } = asso;
      await page.waitForURL(/#\/association/);
      await page.getByLabel('Prénom').fill('Awa');
      await page.getByLabel('Nom', { exact: true }).fill('Diallo');
      await page.getByLabel('Date de naissance').fill('1985-03-14');
      await page.getByLabel('adultes').fill('2');
      await page.getByLabel('enfants (3–13 ans)').fill('1');
      await page.getByLabel('Ressources mensuelles (€)').fill('900');
      await page.getByLabel('Charges fixes mensuelles (€)').fill('700');
      await page.getByLabel('Le foyer accepte').check();
      await page.getByRole('button', { name: 'Inscrire le foyer' }).click();
      await page.locator('td', { hasText: 'Awa Diallo' }).waitFor();
      await page.locator('td', { hasText: /^.*éligible · jusqu’au/ }).first().waitFor();
      await shot(page, 'flow-2-household-registered');
      await page.getByRole('link', { name: 'Colis' }).click();
      await page.getByLabel('Foyer', { exact: true }).selectOption({ label: 'Awa Diallo' });
      await page.getByLabel('Date').fill(today);
      await page.getByRole('button', { name: 'Demander le colis' }).click();
      await page.locator('.status.requested').first().waitFor();
      await shot(page, 'flow-2-parcel-requested');
    });

    await t.test('an association imports households from a spreadsheet, all or nothing', async () => {
      const { page } = asso;
      await page.goto(`${foodaid.base}/#/association/import`);
      const header = 'Nom;Prénom;Date de naissance;Adultes;Enfants;Ressources;Charges;Consentement';
      const file = lines => ({ name: 'foyers.csv', mimeType: 'text/csv', buffer: Buffer.from([header, ...lines].join('\r\n'), 'utf8') });
      await page.getByLabel('Fichier CSV').setInputFiles(file(['Martin;Luc;02/01/1970;1;0;;;oui', 'Nguyen;Lan;31/02/1990;2;2;800;600;oui']));
      await page.getByRole('button', { name: 'Vérifier et importer' }).click();
      await page.getByText('1 erreur(s) : rien n’a été importé.').waitFor();
      await page.locator('td', { hasText: 'date illisible : écrivez 14/03/1985' }).waitFor();
      await shot(page, 'flow-2-import-refused');
      await page.getByLabel('Fichier CSV').setInputFiles(file(['Martin;Luc;02/01/1970;1;0;;;oui', 'Nguyen;Lan;28/02/1990;2;2;800;600;oui']));
      await page.getByRole('button', { name: 'Vérifier et importer' }).click();
      await page.getByText('2 foyer(s) inscrit(s), 0 déjà inscrit(s)').waitFor();
      await page.getByRole('link', { name: 'Voir les foyers' }).click();
      await page.locator('td', { hasText: 'Lan Nguyen' }).waitFor();
      await page.locator('td', { hasText: 'Luc Martin' }).waitFor();
    });

    const co = await person('admin', foodaid.tokens.admin, TABLET);
    await t.test('the coordinator composes the wave and sees why each line is in the parcel', async () => {
      const { page } = co;
      await page.goto(`${foodaid.base}/#/coordinator/wave`);
      await page.getByLabel('Date').fill(today);
      await page.getByRole('button', { name: 'Composer la vague' }).click();
      await page.getByText(/Vague composée/).waitFor();
      await page.getByText(/besoin du foyer en féculents/).first().waitFor();
      await shot(page, 'flow-3-wave-composed');
    });

    await t.test('the warehouse picks and ships the parcel from its pick list', async () => {
      const { page } = wh;
      await page.goto(`${foodaid.base}/#/warehouse/picking`);
      await page.getByLabel('Date').fill(today);
      await page.getByLabel('Date').dispatchEvent('change');
      await page.getByRole('button', { name: 'Colis préparé' }).click();
      await page.getByRole('button', { name: 'Colis expédié' }).click();
      await page.getByText('0 colis à préparer ou expédier').waitFor();
      await shot(page, 'flow-4-parcel-shipped');
    });

    let route;
    await t.test('the coordinator plans the routes and sees them drawn', async () => {
      // Shipping makes the relay point's delivery job (a saga): wait for it, as a coordinator would.
      const delivery = await eventually('the delivery job', async () =>
        (await admin(`/api/jobs?date=${today}`)).find(j => j.kind === 'delivery' && j.parcels.length));
      const { page } = co;
      await page.goto(`${foodaid.base}/#/coordinator/routes`);
      await page.getByLabel('Date').fill(today);
      await page.getByLabel('Temps de recherche (s)').fill('1');
      await page.getByRole('button', { name: 'Planifier' }).click();
      await page.getByText(/Plan n° 1 :/).waitFor();
      assert.ok(await page.locator('.sketch svg polyline').count() >= 1, 'routes are drawn');
      await shot(page, 'flow-5-routes-planned');
      const plan = await admin(`/api/plans/site-gerland/${today}`);
      route = plan.routes.find(r => r.stops.some(s => s.job_id === delivery.job_id));
      assert.ok(route, `the delivery is planned: ${JSON.stringify(plan.unplanned)}`);
      route.delivery = delivery.job_id;
    });

    await t.test('the driver works the route, one stop with the network cut, then restored', async () => {
      const token = route.driver_id === 'drv-monique'
        ? foodaid.tokens.driver : foodaid.token('--role', 'driver', '--scope', route.driver_id);
      const drv = await person('driver', token, PHONE);
      const { page, context } = drv;
      await page.goto(`${foodaid.base}/#/driver/${today}`);
      const card = page.locator(`[data-route="${route.route_id}"]`);
      await card.getByRole('button', { name: 'Démarrer la tournée' }).click();
      await page.locator('.all-sent').waitFor({ timeout: 5000 }).catch(async e => {
        throw new Error(`${e.message}\n${await page.locator('body').innerText()}\n${foodaid.log().split('\n').filter(l => /route|WARN|ERROR/.test(l)).slice(-20).join('\n')}`);
      });
      for (const stop of route.stops) {
        const item = card.locator(`[data-job="${stop.job_id}"]`);
        const offline = stop.job_id === route.delivery;
        if (offline) await context.setOffline(true);
        await item.getByRole('button', { name: 'Je suis arrivé' }).click();
        await item.getByRole('button', { name: 'Terminé' }).click();
        if (offline) {
          await page.getByText('2 action(s) en attente d’envoi').waitFor();
          await page.getByText(/Hors ligne/).waitFor();
          await item.locator('.status.completed').waitFor();
          await shot(page, 'flow-6-driver-offline');
          await context.setOffline(false);
        }
        await page.locator('.all-sent').waitFor();
      }
      // The app opens without network too: its files from the service worker, the route from
      // the device, and what the platform recorded.
      assert.ok(await page.evaluate(() => navigator.serviceWorker.ready.then(r => !!r.active)), 'service worker active');
      await context.setOffline(true);
      await page.reload();
      await page.getByText(/Hors ligne/).waitFor();
      await card.locator('.status.completed').first().waitFor();
      await context.setOffline(false);
      await page.reload();
      await card.getByRole('button', { name: 'Terminer la tournée' }).click();
      await page.getByText('Tournée terminée. Merci !').waitFor();
      await page.locator('.all-sent').waitFor();
      await shot(page, 'flow-6-route-ended');
      const routes = await api(foodaid.base, token)(`/api/routes?date=${today}`);
      const done = routes.find(r => r.route_id === route.route_id);
      assert.ok(done.ended_at, 'the route ended on the platform');
      for (const s of done.stops) assert.equal(s.status, 'completed', `${s.job_id} completed on the platform`);
    });

    await t.test('the association sees its parcel at the relay point', async () => {
      const { page } = asso;
      await eventually('the parcel at the relay point', async () => {
        await page.goto(`${foodaid.base}/#/association/parcels`);
        await page.reload();
        return page.locator('.status.at_relay').first().isVisible({ timeout: 2000 }).catch(() => false);
      });
      await page.getByText('au point relais').first().waitFor();
      await shot(page, 'flow-7-parcel-at-relay');
    });

    await t.test('a recall of the pasta lot traces it to the household', async () => {
      const { page } = co;
      await page.goto(`${foodaid.base}/#/coordinator/recall`);
      await page.getByLabel('Produit').selectOption({ label: 'Pâtes complètes 500 g' });
      // Every pasta lot dated within two years, whichever the parcel took.
      await page.getByLabel('ou dates (DLC/DDM) du').fill(day(0));
      await page.getByLabel('au', { exact: true }).fill(day(730));
      await page.getByLabel('Motif').fill('Contamination possible (test)');
      await page.getByRole('button', { name: 'Lancer le rappel' }).click();
      await page.getByText(/Trace du rappel/).waitFor();
      await page.getByText(/distribué : [1-9]/).waitFor();
      await shot(page, 'flow-8-recall-traced');
    });

    await t.test('the coordinator rebuilds a projection from the streams and sees it progress', async () => {
      const { page } = co;
      const before = await admin('/api/lots');
      await page.goto(`${foodaid.base}/#/coordinator/platform`);
      page.once('dialog', d => d.accept());
      await page.locator('tr', { hasText: 'lots' }).getByRole('button', { name: 'Reconstruire' }).click();
      await page.getByText('« lots » reconstruit.').waitFor();
      await shot(page, 'flow-9-projection-rebuilt');
      assert.deepEqual(await admin('/api/lots'), before, 'a replay gives the same state');
    });

    await t.test('every screen reads at phone and tablet width, in French and in English', async () => {
      const screens = {
        warehouse: ['warehouse/reception', 'warehouse/stock', 'warehouse/picking', 'warehouse/counts', 'warehouse/transfers'],
        association: ['association/households', 'association/parcels', 'association/fairshare', 'association/import'],
        admin: ['coordinator/wave', 'coordinator/routes', 'coordinator/recall', 'coordinator/reports', 'coordinator/statements', 'coordinator/platform', `driver/${today}`],
      };
      for (const [who, list] of Object.entries(screens)) {
        for (const viewport of [PHONE, TABLET]) {
          const { page } = await person(who, foodaid.tokens[who], viewport);
          for (const screen of list) {
            await page.goto(`${foodaid.base}/#/${screen}`);
            await page.locator('main section.screen').waitFor();
            await page.locator('main .tabs').waitFor();
            await shot(page, screen.replace(/\//g, '-').replace(/-\d{4}-\d\d-\d\d$/, ''));
            // Nothing wider than the screen: no sideways scrolling on a phone.
            const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
            assert.ok(overflow <= 1, `${screen} at ${viewport.width}px overflows by ${overflow}px`);
          }
          await page.getByRole('button', { name: 'English' }).click();
          await page.locator('header').getByText('Sign out').waitFor();
          await shot(page, `${list[0].replace(/\//g, '-')}-en`);
        }
      }
    });

    await t.test('every screen passes the axe accessibility rules', async () => {
      const screens = {
        warehouse: ['warehouse/reception', 'warehouse/stock', 'warehouse/picking', 'warehouse/counts', 'warehouse/transfers'],
        association: ['association/households', 'association/parcels', 'association/fairshare', 'association/import'],
        admin: ['coordinator/wave', 'coordinator/routes', 'coordinator/recall', 'coordinator/reports',
          'coordinator/statements', 'coordinator/platform', `driver/${today}`],
      };
      const found = [];
      for (const [who, list] of Object.entries({ signin: [], ...screens })) {
        // axe is injected into the page, which the app's policy forbids: this context lets it in.
        const context = await browser.newContext({ viewport: PHONE, locale: 'fr-FR', bypassCSP: true });
        contexts.push(context);
        const page = await context.newPage();
        await page.goto(who === 'signin' ? foodaid.base : `${foodaid.base}/#token=${foodaid.tokens[who]}`);
        for (const screen of ['', ...list]) {
          if (screen) await page.goto(`${foodaid.base}/#/${screen}`);
          await page.locator(who === 'signin' ? 'main form' : 'main section.screen').waitFor();
          await page.waitForLoadState('networkidle');
          await page.addScriptTag({ path: AXE });
          const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
          for (const v of result.violations) {
            found.push(`${screen || who}: ${v.id} (${v.impact}) ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | ')}`);
          }
        }
      }
      assert.deepEqual(found, [], found.join('\n'));
    });

    assert.deepEqual(problems, [], 'no script errors in any page');
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    await browser.close();
    await foodaid.stop();
  }
});
