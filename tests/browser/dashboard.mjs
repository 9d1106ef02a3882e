// The /dashboard page of `duplex serve --dashboard` in headless Chromium, while traffic runs.
//
//   node dashboard.mjs http://127.0.0.1:PORT/ [--name NAME] [--shots DIR]
//
// The server must run with --dashboard and a small --max-backlog (e.g. 65536) and
// --socket-send-buffer (e.g. 8192), so that a stalled member becomes a slow consumer quickly.
// Opens /dashboard?interval=250 at 1280x800, waits for its first samples, then makes traffic:
//   - a stalled member: a raw TCP WebSocket client (node:net) that says hello, joins app/slow and
//     then never reads again;
//   - from a second page (Chromium's WebSocket): 6 duplex.v1 connections in 3 rooms, each
//     publishing small messages for a few seconds, one of them also a member of app/slow and
//     publishing 200 messages of 32 KiB of random text there;
// and checks what the dashboard shows (#v-*, from /metrics): connections up by at least 7,
// messages/s in and out above 0, rooms up by at least 4, slow-consumer drops above the start,
// broker "in-process · up"; each chart has drawn its line (pixels of the series colour); the
// page does not scroll sideways; then the traffic stops and the connections figure falls back.
// A screenshot goes to DIR/dashboard.png (default tests/.cache/demo). Prints
// `dashboard(NAME): ok ...` or the failure, exit 1.
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, sleep } from './demo_lib.mjs';
import { chromiumVersion, withBrowser } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 60_000;
const WAIT_MS = 10_000;
const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const opts = parseArgs(process.argv.slice(2), 'node dashboard.mjs http://127.0.0.1:PORT/ [--name NAME] [--shots DIR]',
  { name: 'dashboard', shots: join(REPO_ROOT, 'tests/.cache/demo') });
const NAME = `dashboard(${opts.name})`;
mkdirSync(opts.shots, { recursive: true });
const base = new URL(opts.url);

class Failure extends Error {}
const check = (ok, what) => {
  if (!ok) throw new Failure(what);
};

/** One masked client text frame (payload < 64 KiB). */
function frame(text) {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const head = payload.length < 126
    ? Buffer.from([0x81, 0x80 | payload.length])
    : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([head, mask, body]);
}

/**
 * A member that joins `room` and then stops reading: resolves once `joined` arrived, with the
 * socket (paused).
 */
function stalledMember(room) {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: base.hostname, port: Number(base.port) });
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`the stalled member got no 'joined': ${seen.slice(0, 300)}`)), WAIT_MS);
    socket.on('error', reject);
    socket.on('connect', () => {
      socket.write(`GET /ws HTTP/1.1\r\nHost: ${base.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
        'Sec-WebSocket-Protocol: duplex.v1\r\n\r\n');
      socket.write(frame(JSON.stringify({ type: 'hello' })));
      socket.write(frame(JSON.stringify({ type: 'join', id: 1, room })));
    });
    socket.on('data', (chunk) => {
      seen += chunk.toString('latin1');
      if (seen.includes('"type":"joined"')) {
        clearTimeout(timer);
        socket.pause(); // never reads again: its kernel buffers fill, then its server backlog
        resolve(socket);
      }
    });
  });
}

/** The figures the dashboard shows. */
const figures = (page) => page.evaluate(() => {
  const n = (id) => Number(document.getElementById(id).textContent.replace(/,/g, ''));
  return {
    connections: n('v-connections'), in: n('v-in'), out: n('v-out'), rooms: n('v-rooms'),
    drops: n('v-drops'), broker: document.getElementById('v-broker').textContent,
    polls: window.dashboard.polls, errors: window.dashboard.errors,
    state: document.getElementById('state').dataset.state,
  };
});

/** Waits until `test(figures)` holds; fails with `what` and the last figures. */
async function until(page, what, test) {
  const deadline = Date.now() + WAIT_MS;
  let f;
  for (;;) {
    f = await figures(page);
    if (test(f)) return f;
    if (Date.now() > deadline) throw new Failure(`${what}: not within ${WAIT_MS / 1000}s (the dashboard shows ${JSON.stringify(f)})`);
    await sleep(100);
  }
}

/** Pixels of each chart in its first series' colour (the line drawn). */
const linePixels = (page) => page.evaluate(() => {
  const out = {};
  const probe = document.createElement('canvas').getContext('2d');
  probe.fillStyle = getComputedStyle(document.documentElement).getPropertyValue('--a').trim();
  probe.fillRect(0, 0, 1, 1);
  const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
  for (const c of document.querySelectorAll('canvas')) {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 200 && Math.abs(d[i] - r) < 40 && Math.abs(d[i + 1] - g) < 40 && Math.abs(d[i + 2] - b) < 40) n++;
    }
    out[c.id] = n;
  }
  return out;
});

async function scenario(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
  page.on('response', (r) => r.status() >= 400 && errors.push(`GET ${r.url()}: ${r.status()}`));
  const version = await chromiumVersion(page);
  const response = await page.goto(new URL('/dashboard?interval=250&window=60', base).href);
  check(response?.ok(), `GET /dashboard answered ${response?.status()} (is the server running with --dashboard?)`);
  const start = await until(page, 'the dashboard polls /metrics', (f) => f.polls >= 3 && f.state === 'ok');
  check(start.broker === 'in-process · up', `the broker shows '${start.broker}', expected 'in-process · up'`);

  const stalled = await stalledMember('app/slow');
  const traffic = await context.newPage();
  await traffic.goto(new URL('/healthz', base).href);
  const wsUrl = new URL('/ws', base).href.replace(/^http/, 'ws');
  // Six members in three rooms chat for a while; one of them floods app/slow.
  const running = traffic.evaluate(async (url) => {
    const open = (i) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url, 'duplex.v1');
      ws.onerror = () => reject(new Error(`connection ${i} failed`));
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'welcome') ws.send(JSON.stringify({ type: 'join', id: 1, room: `app/dash-${i % 3}` }));
        // The flooder is a member of app/slow too.
        if (m.type === 'joined' && m.id === 1 && i === 0) ws.send(JSON.stringify({ type: 'join', id: 2, room: 'app/slow' }));
        if (m.type === 'joined' && m.id === (i === 0 ? 2 : 1)) resolve(ws);
      };
      ws.onopen = () => ws.send(JSON.stringify({ type: 'hello' }));
    });
    window.sockets = await Promise.all([0, 1, 2, 3, 4, 5].map(open));
    const chunk = () => Array.from(crypto.getRandomValues(new Uint8Array(24 * 1024)), (b) => b.toString(36)).join('').slice(0, 32 * 1024);
    let id = 10;
    for (let i = 0; i < 200; i++) {
      window.sockets[0].send(JSON.stringify({ type: 'publish', id: id++, room: 'app/slow', data: { flood: i, text: chunk() } }));
      if (i % 20 === 0) await new Promise((r) => setTimeout(r, 10));
    }
    const until = Date.now() + 4_000;
    let n = 0;
    while (Date.now() < until) {
      for (const [i, ws] of window.sockets.entries()) {
        ws.send(JSON.stringify({ type: 'publish', id: id++, room: `app/dash-${i % 3}`, data: { n: n++ } }));
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return n;
  }, wsUrl);
  const busy = await until(page, 'connections +7, messages/s in and out > 0, rooms +4 while the traffic runs',
    (f) => f.connections >= start.connections + 7 && f.in > 0 && f.out > 0 && f.rooms >= start.rooms + 4);
  const dropped = await until(page, 'slow-consumer drops counted for the stalled member', (f) => f.drops > start.drops);
  const published = await running;
  const pixels = await linePixels(page);
  for (const [id, n] of Object.entries(pixels)) check(n >= 20, `#${id} drew ${n} pixels of its line, expected a line`);
  const wide = await page.evaluate(() => document.scrollingElement.scrollWidth <= innerWidth);
  check(wide, 'the dashboard scrolls sideways at 1280 px');
  await page.screenshot({ path: join(opts.shots, 'dashboard.png'), fullPage: true });

  await traffic.evaluate(() => { for (const ws of window.sockets) ws.close(1000); });
  await traffic.close();
  stalled.destroy();
  const after = await until(page, 'the connections figure falls back once the traffic stops',
    (f) => f.connections <= start.connections);
  check(errors.length === 0, `the dashboard reported errors: ${errors.join('; ')}`);
  await context.close();
  return { version, start, busy, dropped, after, published, pixels };
}

try {
  const r = await withBrowser(scenario, { timeoutMs: TOTAL_TIMEOUT_MS });
  console.log(`${NAME}: ok (${r.version}: connections ${r.start.connections} -> ${r.busy.connections} -> ` +
    `${r.after.connections}, messages/s in ${r.busy.in} out ${r.busy.out}, rooms ${r.start.rooms} -> ${r.busy.rooms}, ` +
    `slow-consumer drops ${r.start.drops} -> ${r.dropped.drops}, broker '${r.busy.broker}', ${r.published} small ` +
    `publishes; screenshot ${join(opts.shots, 'dashboard.png')})`);
} catch (e) {
  console.error(`${NAME}: FAIL: ${e instanceof Failure ? e.message : e.stack}`);
  process.exitCode = 1;
}
