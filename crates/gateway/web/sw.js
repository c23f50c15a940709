// The app's offline copy: its own files, so a driver can open it without network. API calls
// are never cached here: the app keeps the day's routes and the actions waiting to be sent itself.
const CACHE = 'foodaid-v1';
const SHELL = [
  '/', '/app.css', '/manifest.webmanifest', '/icon.svg',
  '/js/app.js', '/js/api.js', '/js/i18n.js', '/js/ui.js', '/js/outbox.js',
  '/js/screens/signin.js', '/js/screens/warehouse.js', '/js/screens/association.js',
  '/js/screens/driver.js', '/js/screens/coordinator.js',
];

self.addEventListener('install', event => {
  event.waitUntil(caches.open(CACHE).then(c => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', event => {
  event.waitUntil(caches.keys()
    .then(keys => Promise.all(keys.filter(k => k !== CACHE).map(k => caches.delete(k))))
    .then(() => self.clients.claim()));
});

// The network first (a new version shows at once), the copy when there is none.
self.addEventListener('fetch', event => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== location.origin) return;
  if (url.pathname.startsWith('/api/') || url.pathname === '/health') return;
  event.respondWith(fetch(event.request)
    .then(res => {
      if (res.ok) {
        const copy = res.clone();
        caches.open(CACHE).then(c => c.put(url.pathname === '/index.html' ? '/' : event.request, copy));
      }
      return res;
    })
    .catch(() => caches.match(event.request, { ignoreSearch: true }).then(hit => hit || caches.match('/'))));
});
