// Interop: headless Chromium's own WebSocket against `duplex echo`.
//
//   node deflate_echo.mjs ws://127.0.0.1:PORT/ [--expect deflate|plain]
//                         [--server-context-takeover] [--name NAME]
//
// From a page served on 127.0.0.1 (see tests/browser/lib.mjs for why), opens
// `new WebSocket(URL)` and checks what was negotiated: with `--expect deflate`
// (the default) `ws.extensions` must name permessage-deflate, with
// server_no_context_takeover unless `--server-context-takeover` says the
// server keeps its context; with `--expect plain` it must be empty. Then
// sends, all at once, text (small, small chat JSON, about 1 MiB of chat JSON,
// non-ASCII UTF-8, empty) and binary (random, compressible, tiny, empty)
// messages, checks every echo equals what was sent, type and bytes, in order,
// closes with 1000 and checks the close handshake ended cleanly with 1000.
// Prints `interop(NAME): ok ...`, or the first failure and exits 1. Bounded:
// every wait in the page has a deadline and the whole run has one.
import { chromiumVersion, withChromium } from './lib.mjs';

const STEP_TIMEOUT_MS = 15_000;
const TOTAL_TIMEOUT_MS = 60_000;

function usage() {
  console.error('usage: node deflate_echo.mjs ws://127.0.0.1:PORT/ [--expect deflate|plain] [--server-context-takeover] [--name NAME]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: null, expect: 'deflate', serverContextTakeover: false, name: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--expect') {
      opts.expect = argv[++i];
      if (opts.expect !== 'deflate' && opts.expect !== 'plain') usage();
    } else if (a === '--server-context-takeover') {
      opts.serverContextTakeover = true;
    } else if (a === '--name') {
      opts.name = argv[++i];
    } else if (!a.startsWith('--') && !opts.url) {
      opts.url = a;
    } else {
      usage();
    }
  }
  if (!opts.url) usage();
  opts.name ??= `chromium-${opts.expect}`;
  return opts;
}

// Runs in the page: everything it needs is inside it. Resolves with a
// summary, or rejects with the first failure.
async function echoInPage({ url, expect, serverContextTakeover, stepTimeoutMs }) {
  const encoder = new TextEncoder();

  // Chat traffic, deterministic: about 1 MiB of JSON in one text message.
  const words = ['deploy', 'merge', 'review', 'the', 'build', 'is', 'green', 'again', 'lunch?',
    'ship', 'it', 'café', 'naïve', 'ok', 'thanks', 'see', 'logs', 'at', 'https://example.com/x'];
  const history = [];
  let size = 0;
  for (let seq = 0; size < 1 << 20; seq++) {
    const text = Array.from({ length: 5 + (seq * 7) % 40 }, (_, k) => words[(seq * 31 + k * 17) % words.length]).join(' ');
    const m = { type: 'message', room: 'app/general', seq, from: `user-${seq % 23}`,
      data: { text, ts: 1732470000000 + seq * 1375, mentions: seq % 5 ? [] : [`user-${(seq * 3) % 23}`] } };
    size += JSON.stringify(m).length + 1;
    history.push(m);
  }
  const bigJson = JSON.stringify({ type: 'history', room: 'app/general', data: { messages: history } });
  const smallJson = JSON.stringify(history[42]);
  const nonAscii = 'héllo wörld — こんにちは世界 — Привет — 😀🎉🚀 — ½ € ∑ '.repeat(200);

  function randomBytes(n) {
    const b = new Uint8Array(n);
    for (let off = 0; off < n; off += 65536) crypto.getRandomValues(b.subarray(off, Math.min(n, off + 65536)));
    return b;
  }
  const pattern = encoder.encode('duplex compressible binary 0123456789 ');
  const compressible = new Uint8Array(512 * 1024).map((_, i) => pattern[i % pattern.length] ^ (i >> 12 & 1));

  const sent = [
    ['small text', 'hello from Chromium'],
    ['random binary (256 KiB)', randomBytes(256 * 1024)],
    ['small chat JSON', smallJson],
    ['empty text', ''],
    [`chat JSON (${bigJson.length} B)`, bigJson],
    ['compressible binary (512 KiB)', compressible],
    ['non-ASCII text', nonAscii],
    ['empty binary', new Uint8Array(0)],
    ['tiny binary', new Uint8Array([0, 1, 2, 255])],
    ['small text again', 'bye'],
  ];

  function describe(v) {
    return typeof v === 'string' ? `text of ${encoder.encode(v).length} bytes` : `binary of ${v.byteLength} bytes`;
  }
  function firstDifference(a, b) {
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    return i;
  }
  function compare(what, want, got) {
    if (typeof want === 'string') {
      if (typeof got !== 'string') throw new Error(`${what}: sent ${describe(want)}, received ${describe(new Uint8Array(got))}`);
      if (got !== want) {
        const i = firstDifference(want, got);
        throw new Error(`${what}: echo differs at UTF-16 index ${i} (sent ${want.length} code units, received ${got.length})`);
      }
      return;
    }
    if (!(got instanceof ArrayBuffer)) throw new Error(`${what}: sent ${describe(want)}, received ${describe(got)}`);
    const bytes = new Uint8Array(got);
    if (bytes.length !== want.length || firstDifference(want, bytes) !== want.length) {
      throw new Error(`${what}: echo differs at byte ${firstDifference(want, bytes)} (sent ${want.length} bytes, received ${bytes.length})`);
    }
  }

  // Every event of the socket, consumed in order by next().
  const queue = [];
  let wake = null;
  function push(ev) {
    queue.push(ev);
    if (wake) wake();
  }
  async function next(what) {
    const deadline = Date.now() + stepTimeoutMs;
    while (!queue.length) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: nothing happened within ${stepTimeoutMs / 1000}s`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        wake = () => { clearTimeout(t); resolve(); };
      });
      wake = null;
    }
    return queue.shift();
  }
  function explain(ev) {
    return ev.type === 'close' ? `close ${ev.code} (${ev.reason || 'no reason'}, clean: ${ev.wasClean})` : ev.type;
  }

  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => push({ type: 'open' });
  ws.onmessage = (e) => push({ type: 'message', data: e.data });
  ws.onerror = () => push({ type: 'error' });
  ws.onclose = (e) => push({ type: 'close', code: e.code, reason: e.reason, wasClean: e.wasClean });

  const opened = await next('opening');
  if (opened.type !== 'open') throw new Error(`opening ${url}: got ${explain(opened)}`);

  const extensions = ws.extensions;
  const offered = extensions.split(',').map((e) => e.split(';').map((p) => p.trim()));
  const deflate = offered.find((e) => e[0] === 'permessage-deflate');
  if (expect === 'deflate') {
    if (!deflate) throw new Error(`permessage-deflate was not negotiated (extensions: '${extensions}')`);
    const noTakeover = deflate.includes('server_no_context_takeover');
    if (noTakeover === serverContextTakeover) {
      throw new Error(`expected ${serverContextTakeover ? 'no ' : ''}server_no_context_takeover in '${extensions}'`);
    }
  } else if (extensions !== '') {
    throw new Error(`expected no extension, the server accepted '${extensions}'`);
  }

  let bytes = 0;
  for (const [, payload] of sent) {
    ws.send(payload);
    bytes += typeof payload === 'string' ? encoder.encode(payload).length : payload.byteLength;
  }
  for (const [what, payload] of sent) {
    const ev = await next(`echo of ${what}`);
    if (ev.type !== 'message') throw new Error(`echo of ${what}: got ${explain(ev)}`);
    compare(`echo of ${what}`, payload, ev.data);
  }

  ws.close(1000, 'done');
  const closed = await next('close handshake');
  if (closed.type !== 'close') throw new Error(`close handshake: got ${explain(closed)} before the close`);
  if (closed.code !== 1000 || !closed.wasClean) throw new Error(`close handshake: expected a clean 1000, got ${explain(closed)}`);
  return { extensions, messages: sent.length, bytes };
}

const opts = parseArgs(process.argv.slice(2));
const NAME = `interop(${opts.name})`;
try {
  const result = await withChromium(async (page) => {
    // What the page reports (e.g. why a connection failed), shown on failure.
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && pageErrors.push(m.text()));
    const version = await chromiumVersion(page);
    try {
      return { version, ...(await page.evaluate(echoInPage, { ...opts, stepTimeoutMs: STEP_TIMEOUT_MS })) };
    } catch (e) {
      for (const m of pageErrors) console.error(`${NAME}: page error: ${m}`);
      throw e;
    }
  }, { timeoutMs: TOTAL_TIMEOUT_MS });
  console.log(`${NAME}: ok (${result.version}: ${result.messages} messages, ${result.bytes} bytes echoed, extensions '${result.extensions}')`);
} catch (e) {
  // page.evaluate adds its name and the page's stack: the first line says it all.
  const reason = e.message.split('\n')[0].replace(/^page\.evaluate: (Error: )?/, '');
  console.error(`${NAME}: FAIL: ${reason}`);
  process.exit(1);
}
