// The demo page of `duplex serve` (its WASM client, --client-dir wasm/js) behind proxies that
// block WebSocket, in headless Chromium: the client falls back to the HTTP transports by itself.
//
//   node fallback.mjs --server-port PORT --proxy URL --buffering URL
//
// Starts `$DUPLEX_BIN serve --listen 127.0.0.1:PORT --client-dir wasm/js` itself (and restarts it
// on the same port); tests/fallback.sh runs nginx in front of that port:
//   --proxy      nginx with `proxy_pass` alone (HTTP/1.0 upstream, no Upgrade forwarded: the
//                WebSocket cannot open; streams pass, the server sends X-Accel-Buffering: no);
//   --buffering  the same plus `proxy_ignore_headers X-Accel-Buffering` (streams are buffered).
// Three users, each in a browser context of its own, in one room:
//   - ann loads the page from the server directly: WebSocket;
//   - ben through --proxy: client.transport must become 'sse'; the fallback time (the page's
//     first WebSocket attempt → `welcome` over the fallback, the first server message) is
//     measured in the page and must be under 3 s;
//   - cat through --buffering: SSE's `ready` event never comes through, the client must end on
//     'longpoll' (its time is printed: the 3 s bound of the SSE stream is part of it);
//   - #transport names each transport; all three see each other in #members; a message from
//     each reaches every page exactly once;
//   - the server is SIGKILLed; each sends a message while it is down (queued); it restarts on
//     the same port: every page is 'open' again, on the same transport as before, and every
//     message sent while down shows up exactly once on every page; one more live message too.
// Prints `fallback: ok (...)` with the times, or the first failure with every page's state.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Demo, ServeProcess, report, sleep } from './demo_lib.mjs';
import { withBrowser } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 90_000;
const BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 1_000;
const DOWN_MS = 1_000;
/** The goal: a blocked WebSocket → the first message over the fallback within this. */
const FALLBACK_GOAL_MS = 3_000;
/** Through a buffering proxy: the SSE stream's 3 s bound, then long polling. */
const BUFFERED_BOUND_MS = 6_000;
/** After the restart, every page is open again within this. */
const REOPEN_MS = 10_000;

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DUPLEX_BIN = process.env.DUPLEX_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(REPO_ROOT, 'target'), 'release/duplex');
const CLIENT_DIR = join(REPO_ROOT, 'wasm/js');
const NAME = 'fallback';

const usage = () => {
  console.error('usage: node fallback.mjs --server-port PORT --proxy URL --buffering URL');
  process.exit(2);
};
const opts = {};
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i]?.replace(/^--/, '');
  if (!['server-port', 'proxy', 'buffering'].includes(key) || process.argv[i + 1] === undefined) usage();
  opts[key] = process.argv[i + 1];
}
if (!opts['server-port'] || !opts.proxy || !opts.buffering) usage();

for (const [path, how] of [[DUPLEX_BIN, 'cargo build --release -p duplex, or set DUPLEX_BIN'],
  [join(CLIENT_DIR, 'dist/duplex_browser_bg.wasm'), 'bash wasm/build.sh']]) {
  if (!existsSync(path)) {
    console.error(`${NAME}: FAIL: ${path} not found (${how})`);
    process.exit(1);
  }
}

const server = new ServeProcess(DUPLEX_BIN, CLIENT_DIR, Number(opts['server-port']));
process.on('exit', () => server.killNow());
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`${NAME}: FAIL: stopped by ${signal}`);
    process.exit(1);
  });
}

const direct = `http://127.0.0.1:${server.port}/`;
const demo = new Demo(NAME, direct, { query: { backoff: BACKOFF_MS, maxBackoff: MAX_BACKOFF_MS } });
demo.query.room = `app/fallback-${demo.nonce}`;
// Chromium logs each WebSocket that cannot open (through the proxies always, directly while the
// server is down).
demo.expectedConsole = /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/;

/**
 * Recorded in each page before its scripts run: when the first WebSocket was attempted and when
 * the client was first open (its `welcome`), both on the page's clock.
 */
const RECORD_TIMES = () => {
  const t = { ws: null, open: null };
  window.__fallback = t;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      if (t.ws === null) t.ws = performance.now();
      super(...args);
    }
  };
  const timer = setInterval(() => {
    if (window.duplex?.chat?.open) {
      t.open = performance.now();
      clearInterval(timer);
    }
  }, 2);
};

/** A browser whose new contexts record those times. */
const recording = (browser) => ({
  newContext: async (options) => {
    const context = await browser.newContext(options);
    await context.addInitScript(RECORD_TIMES);
    return context;
  },
});

/** Opens the page at `url` as `name` and waits until joined; resolves with the user. */
async function openVia(browser, url, name) {
  demo.url = url;
  const user = await demo.open(recording(browser), name);
  await demo.joined(user, 'wasm');
  return user;
}

const state = (user) => user.page.evaluate(() => ({
  transport: window.duplex.chat.client.transport,
  shown: document.getElementById('transport').dataset.transport,
  text: document.getElementById('transport').textContent,
  times: window.__fallback,
}));

async function expectTransport(user, want) {
  const s = await state(user);
  await demo.check(s.transport === want && s.shown === want,
    `${user.name}: client.transport is '${s.transport}' (#transport shows '${s.shown}': '${s.text}'), expected '${want}'`);
  const label = { websocket: /WebSocket ws\b/, sse: /\bSSE over http\b/, longpoll: /\blong polling over http\b/ }[want];
  await demo.check(label.test(s.text), `${user.name}: #transport '${s.text}' does not name ${want}`);
  return s;
}

/**
 * Errors a page may show here: requests of the transports while the server was down or just
 * restarted (502 from nginx, 404 for a session the new server does not know, refused or aborted
 * requests). Anything else (a 400, a 409, another URL) is a failure.
 */
const expectedError = (message) =>
  /^(GET|POST) http:\/\/127\.0\.0\.1:\d+\/ws\/(open|sse|poll|send|close)\?\S*: (502|404|net::ERR_[A-Z_]+)$/.test(message) ||
  /^(GET|POST) http:\/\/127\.0\.0\.1:\d+\/ws\/open: (502|net::ERR_[A-Z_]+)$/.test(message);

async function scenario(browser) {
  await server.start();
  const ann = await openVia(browser, direct, 'ann');
  await expectTransport(ann, 'websocket');

  const ben = await openVia(browser, opts.proxy, 'ben');
  const benState = await expectTransport(ben, 'sse');
  await demo.check(benState.times.ws !== null && benState.times.open !== null,
    `ben: no WebSocket attempt or no open recorded (${JSON.stringify(benState.times)})`);
  const fallbackMs = Math.round(benState.times.open - benState.times.ws);
  await demo.check(fallbackMs <= FALLBACK_GOAL_MS,
    `ben: blocked WebSocket → first message over SSE took ${fallbackMs} ms, goal ${FALLBACK_GOAL_MS} ms`);

  const cat = await openVia(browser, opts.buffering, 'cat');
  const catState = await expectTransport(cat, 'longpoll');
  const bufferedMs = Math.round(catState.times.open - catState.times.ws);
  await demo.check(bufferedMs <= BUFFERED_BOUND_MS,
    `cat: blocked WebSocket and buffered SSE → first message by long polling took ${bufferedMs} ms, bound ${BUFFERED_BOUND_MS} ms`);

  const users = [ann, ben, cat];
  for (const u of users) await demo.membersAre(u, users, 'ann, ben and cat in #members');

  // A message from each, on every page once.
  const live = [];
  for (const [u, how] of [[ann, 'enter'], [ben, 'button'], [cat, 'enter']]) {
    const text = `from ${u.name} over ${(await state(u)).transport} (${demo.nonce})`;
    await demo.send(u, text, how);
    live.push({ from: u.name, text });
  }
  const deliveredMs = await demo.deliveredAllOnce(users, live);

  // The server dies; each sends while it is down; it comes back on the same port.
  await server.kill();
  for (const u of users) {
    await demo.waitFor(u, `${u.name}: #status shows the connection lost once the server is killed`, () =>
      ['closed', 'reconnecting'].includes(document.getElementById('status').dataset.state), undefined, 10_000);
  }
  const offline = [];
  for (const [u, how] of [[ann, 'enter'], [ben, 'button'], [cat, 'enter'], [ben, 'enter']]) {
    const text = `offline ${offline.length + 1} from ${u.name} (${demo.nonce})`;
    await demo.send(u, text, how);
    offline.push({ from: u.name, text });
  }
  await sleep(DOWN_MS);
  const restartedAt = Date.now();
  await server.start();
  for (const u of users) {
    await demo.waitFor(u, `${u.name}: #status 'open' again after the restart`, () =>
      document.getElementById('status').dataset.state === 'open', undefined,
      Math.max(100, REOPEN_MS - (Date.now() - restartedAt)));
  }
  const reopenMs = Date.now() - restartedAt;
  const offlineMs = await demo.deliveredAllOnce(users, offline);
  for (const u of users) {
    const shown = await demo.messages(u);
    for (const m of live) {
      const n = shown.filter((s) => s.from === m.from && s.text === m.text).length;
      await demo.check(n === 1, `${u.name}: #log shows '${m.text}' ${n} times after the restart, expected once`);
    }
    const bens = shown.filter((m) => m.from === 'ben' && m.text.startsWith('offline ')).map((m) => m.text);
    const sent = offline.filter((m) => m.from === 'ben').map((m) => m.text);
    await demo.check(JSON.stringify(bens) === JSON.stringify(sent),
      `${u.name}: ben's offline messages shown as ${JSON.stringify(bens)}, expected ${JSON.stringify(sent)}`);
  }
  // Nobody changed transport: a server that is down is no reason to.
  await expectTransport(ann, 'websocket');
  await expectTransport(ben, 'sse');
  await expectTransport(cat, 'longpoll');
  for (const u of users) await demo.membersAre(u, users, 'ann, ben and cat in #members after the restart');

  const after = `back from cat (${demo.nonce})`;
  await demo.send(cat, after, 'enter');
  await demo.deliveredOnce(users, 'cat', after);

  const expected = users.reduce((n, u) => n + u.errors.filter(expectedError).length, 0);
  for (const u of users) u.errors = u.errors.filter((e) => !expectedError(e));
  await demo.noErrors(users);
  return { fallbackMs, bufferedMs, deliveredMs, reopenMs, offlineMs, expected };
}

await report(demo, async () => {
  try {
    return await withBrowser(scenario, { timeoutMs: TOTAL_TIMEOUT_MS });
  } catch (e) {
    e.message += `\n  server output (last lines): ${server.output.trim().split('\n').slice(-6).join('\n    ')}`;
    throw e;
  } finally {
    await server.kill();
  }
}, (r) => `blocked WebSocket → first message over SSE in ${r.fallbackMs} ms (goal ${FALLBACK_GOAL_MS} ms); ` +
  `through a buffering proxy → long polling in ${r.bufferedMs} ms; a message from each on all three pages in ` +
  `${r.deliveredMs} ms; server restarted: all open again in ${r.reopenMs} ms, the 4 messages sent while ` +
  `down shown once everywhere in ${r.offlineMs} ms more; ${r.expected} failed requests of the transports while ` +
  'the server was down or just restarted');
