// The demo chat page of `duplex serve` running the WASM client (duplex-ws's
// DuplexClient, served with --client-dir wasm/js), across a server restart.
//
//   node demo_reconnect.mjs [--name NAME]
//
// Starts `$DUPLEX_BIN serve --listen 127.0.0.1:PORT --threads 2 --client-dir
// wasm/js` itself (DUPLEX_BIN defaults to $CARGO_TARGET_DIR/release/duplex,
// as in tests/lib.sh; wasm/js/dist must be built: bash wasm/build.sh), then
// two browser contexts open the page as ann and ben with a short backoff
// (?backoff=200&maxBackoff=1000: full jitter, attempt n waits at most
// min(1000, 200 * 2^(n-1)) ms) and check, through the page's own elements
// (demo_lib.mjs):
//   - window.duplex.impl is 'wasm' on both pages;
//   - members, typing and messages as in demo_page.mjs;
//   - the server is SIGKILLed: both #status show the connection lost; ann
//     (Enter) and ben (Send button) send messages while it is down: #text
//     clears (they are queued) and #log does not show them yet;
//   - the server restarts on the same port about 1 s after the kill: both
//     pages reconnect (#status 'open') within the largest backoff delay
//     (plus slack) of the restart, every 'reconnecting' delay is within the
//     schedule and the attempts are few (no retry storm);
//   - every message sent while the server was down shows up exactly once on
//     both pages, each sender's in the order sent, with no duplicate of the
//     messages from before the restart; #log notes the resync (the restarted
//     server has a new history epoch) and both users are in #members again;
//   - a message sent after the restart arrives on both pages once; ben closes
//     his page and ann's #log notes that he left, by name.
// Prints `interop(NAME): ok ...` with the reconnect times, or the first
// failure with both pages' state (and the server's output) and exits 1.
// Bounded: every wait has a deadline, the whole run has one, and the server
// is killed however the run ends.
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Demo, ServeProcess, parseArgs, report, sleep } from './demo_lib.mjs';
import { withBrowser } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 60_000;
const BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 1_000;
/** How long the server stays down. */
const DOWN_MS = 1_000;
/** Added to the largest backoff delay for the reconnect itself (socket, welcome, rejoin). */
const RECONNECT_SLACK_MS = 1_500;
/** More attempts than this while the server is down would be a retry storm. */
const MAX_ATTEMPTS = 12;

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DUPLEX_BIN = process.env.DUPLEX_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(REPO_ROOT, 'target'), 'release/duplex');
const CLIENT_DIR = join(REPO_ROOT, 'wasm/js');

const opts = parseArgs(process.argv.slice(2), 'node demo_reconnect.mjs [--name NAME]',
  { name: 'chromium-demo-wasm' }, { url: false });
const NAME = `interop(${opts.name})`;

for (const [path, how] of [[DUPLEX_BIN, 'cargo build --release -p duplex, or set DUPLEX_BIN'],
  [join(CLIENT_DIR, 'dist/duplex_wasm_bg.wasm'), 'bash wasm/build.sh']]) {
  if (!existsSync(path)) {
    console.error(`${NAME}: FAIL: ${path} not found (${how})`);
    process.exit(1);
  }
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const server = new ServeProcess(DUPLEX_BIN, CLIENT_DIR, await freePort());
// A run stopped from outside (tests/interop.sh's timeout) still takes the server down.
process.on('exit', () => server.killNow());
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`${NAME}: FAIL: stopped by ${signal}`);
    process.exit(1);
  });
}

const demo = new Demo(NAME, `http://127.0.0.1:${server.port}/`,
  { query: { backoff: BACKOFF_MS, maxBackoff: MAX_BACKOFF_MS } });
// Chromium logs each refused reconnect attempt while the server is down.
demo.expectedConsole = /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/;

/** Records the client's 'reconnecting' and 'open' events in the page (window.reconnects). */
function record(user) {
  return user.page.evaluate(() => {
    const r = { attempts: [], opens: [], closes: [] };
    window.reconnects = r;
    const chat = window.duplex.chat;
    chat.on('reconnecting', (attempt, delay) => r.attempts.push({ attempt, delay, at: Date.now() }));
    chat.on('open', () => r.opens.push(Date.now()));
    chat.on('close', () => r.closes.push(Date.now()));
  });
}

/** The largest delay the schedule allows before attempt `n` (1-based). */
const bound = (n) => Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** (n - 1));

async function scenario(browser) {
  await server.start();
  const { ann, ben, room, version } = await demo.pair(browser, 'wasm');
  const talk = await demo.converse(ann, ben);
  const before = [...talk.sent];

  // The server dies without a word.
  for (const u of [ann, ben]) await record(u);
  const killedAt = Date.now();
  await server.kill();
  for (const u of [ann, ben]) {
    await demo.waitFor(u, `${u.name}: #status shows the connection lost once the server is killed`, () =>
      ['closed', 'reconnecting'].includes(document.getElementById('status').dataset.state), undefined, 5_000);
  }

  // Both send while it is down: the client queues, #text clears, nothing shows yet.
  const offline = [];
  for (const [user, i, how] of [[ann, 1, 'enter'], [ben, 1, 'button'], [ann, 2, 'enter'], [ben, 2, 'button'], [ann, 3, 'enter']]) {
    const text = `offline ${i} from ${user.name} (${demo.nonce})`;
    await demo.send(user, text, how);
    offline.push({ from: user.name, text });
    const left = await user.page.locator('#text').inputValue();
    await demo.check(left === '', `${user.name}: #text still holds '${left}' after sending while offline (expected it queued)`);
  }
  for (const u of [ann, ben]) {
    const shown = (await demo.messages(u)).filter((m) => m.text.startsWith('offline '));
    await demo.check(shown.length === 0, `${u.name}: #log shows ${JSON.stringify(shown)} while the server is down`);
    const pending = await u.page.evaluate(() => window.duplex.chat.client.pendingPublishes);
    const own = offline.filter((m) => m.from === u.name).length;
    await demo.check(pending === own, `${u.name}: ${pending} publishes pending while offline, expected ${own}`);
  }

  await sleep(Math.max(0, killedAt + DOWN_MS - Date.now()));
  const restartedAt = Date.now(); // the pages may reconnect before /healthz answers the test
  await server.start();
  const deadline = MAX_BACKOFF_MS + RECONNECT_SLACK_MS;
  for (const u of [ann, ben]) {
    await demo.waitFor(u, `${u.name}: #status 'open' again after the restart (within the largest backoff ` +
      `${MAX_BACKOFF_MS} ms + ${RECONNECT_SLACK_MS} ms)`, () =>
      document.getElementById('status').dataset.state === 'open', undefined,
      Math.max(100, deadline - (Date.now() - restartedAt)));
  }
  const timings = {};
  for (const u of [ann, ben]) {
    const r = await u.page.evaluate(() => window.reconnects);
    const opened = r.opens.find((t) => t >= restartedAt);
    await demo.check(opened !== undefined, `${u.name}: no 'open' event after the restart (opens at ${r.opens})`);
    await demo.check(r.attempts.length > 0, `${u.name}: no 'reconnecting' event while the server was down`);
    await demo.check(r.attempts.length <= MAX_ATTEMPTS,
      `${u.name}: ${r.attempts.length} reconnect attempts in ${restartedAt - killedAt} ms down, expected at most ${MAX_ATTEMPTS}`);
    for (const a of r.attempts) {
      await demo.check(a.delay >= 0 && a.delay <= bound(a.attempt) + 1,
        `${u.name}: attempt ${a.attempt} waited ${a.delay} ms, outside the schedule [0, ${bound(a.attempt)}]`);
    }
    timings[u.name] = { lostMs: r.closes[0] - killedAt, attempts: r.attempts.length, reconnectMs: opened - restartedAt };
  }

  // Every message sent while down, once on both pages, each sender's in order; the earlier
  // ones not again.
  const waitedFrom = Date.now();
  const offlineMs = waitedFrom - restartedAt + await demo.deliveredAllOnce([ann, ben], offline, 5_000);
  for (const u of [ann, ben]) {
    const shown = await demo.messages(u);
    for (const sender of ['ann', 'ben']) {
      const order = shown.filter((m) => m.from === sender && m.text.startsWith('offline ')).map((m) => m.text);
      const sent = offline.filter((m) => m.from === sender).map((m) => m.text);
      await demo.check(JSON.stringify(order) === JSON.stringify(sent),
        `${u.name}: #log shows ${sender}'s offline messages as ${JSON.stringify(order)}, expected ${JSON.stringify(sent)}`);
    }
    for (const m of before) {
      const n = shown.filter((s) => s.from === m.from && s.text === m.text).length;
      await demo.check(n === 1, `${u.name}: #log shows '${m.text}' from ${m.from} ${n} times after the restart, expected once`);
    }
    await demo.waitFor(u, `${u.name}: #log notes the resync (the restarted server's history is new)`, () =>
      [...document.querySelectorAll('#log li .note')].some((n) => n.textContent.startsWith('resync')));
    await demo.membersAre(u, [ann, ben], 'ann and ben in #members after the restart');
  }

  // Live again.
  const after = `back online (${demo.nonce})`;
  await demo.send(ben, after, 'enter');
  await demo.deliveredOnce([ann, ben], 'ben', after);

  await demo.leaves(ann, ben);
  await demo.noErrors([ann, ben]);
  await ann.context.close();
  return { version, room, ...talk, timings, offlineMs, offline: offline.length };
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
}, (r) => {
  const t = (u) => `${u} lost the connection after ${r.timings[u].lostMs} ms, ${r.timings[u].attempts} attempts, ` +
    `open ${r.timings[u].reconnectMs} ms after the restart`;
  return `${r.version}: ${r.room}; server down ${DOWN_MS} ms; ${t('ann')}; ${t('ben')}; ` +
    `${r.offline} offline messages on both pages within ${r.offlineMs} ms of the restart; ` +
    `typing shown after ${r.typingShownMs} ms, a message on both pages ${r.deliveredMs} ms after Enter`;
});
