// "Send a file to a member" on the demo chat page of `duplex serve`
// (native/src/serve/page.html), in headless Chromium: two users on one server,
// the file peer to peer over an RTCDataChannel negotiated with `send`/`direct`.
//
//   node webrtc_file.mjs http://127.0.0.1:PORT/ [--name NAME] [--impl builtin|wasm] [--size BYTES]
//
// ann and ben (two browser contexts) join one room; ann clicks ben in #members
// and chooses a file of --size random bytes (default 1 MiB) in the file chooser.
// The pages exchange offer, answer and ICE candidates as `direct` messages (no
// STUN: host candidates, unobfuscated so that loopback works), then the file
// goes over the data channel. Checked:
//   - ben's #log shows the file (its name, a download link of the full size);
//   - the SHA-256 of the download link's content, computed in ben's page with
//     crypto.subtle, equals that of the bytes ann chose;
//   - ann's #log notes that ben received it;
//   - the server's /metrics byte counters (duplex_received_bytes_total and
//     duplex_sent_bytes_total) grew by less than 256 KiB over the transfer:
//     the file did not go through the server;
//   - no page error on either page.
// Prints `NAME: ok ...` or the first failure with both pages' state and exits
// 1. Bounded: every wait has a deadline and the whole run has one.
import { createHash, randomBytes } from 'node:crypto';

import { Demo, parseArgs, report } from './demo_lib.mjs';
import { withBrowser } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 90_000;
const TRANSFER_TIMEOUT_MS = 30_000;
const MAX_SERVER_BYTES = 256 * 1024;

const opts = parseArgs(process.argv.slice(2),
  'node webrtc_file.mjs http://127.0.0.1:PORT/ [--name NAME] [--impl builtin|wasm] [--size BYTES]',
  { name: 'webrtc-file', impl: 'wasm', size: String(1024 * 1024) });
if (!['builtin', 'wasm'].includes(opts.impl)) {
  console.error(`webrtc_file.mjs: --impl ${opts.impl}: expected builtin or wasm`);
  process.exit(2);
}
const size = Number(opts.size);
if (!Number.isInteger(size) || size < 1) {
  console.error(`webrtc_file.mjs: --size ${opts.size}: expected a positive integer`);
  process.exit(2);
}
const demo = new Demo(opts.name, opts.url);
// A room of this run only, so that nobody else is a member.
const room = `app/webrtc-${demo.nonce}`;

/** The server's byte counters from /metrics: { received, sent }. */
async function serverBytes() {
  const res = await fetch(new URL('/metrics', opts.url), { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
  const text = await res.text();
  const value = (name) => {
    const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+(?:\\.\\d+)?(?:e\\+?\\d+)?)$`, 'm'));
    if (!m) throw new Error(`/metrics has no ${name}`);
    return Number(m[1]);
  };
  return { received: value('duplex_received_bytes_total'), sent: value('duplex_sent_bytes_total') };
}

async function scenario(browser) {
  demo.query = { room, ...(opts.impl === 'builtin' ? { client: 'builtin' } : {}) };
  const { ann, ben, version } = await demo.pair(browser, opts.impl);
  await demo.membersAre(ann, [ann, ben], 'ann and ben in #members');
  await demo.membersAre(ben, [ann, ben], 'ann and ben in #members');

  const bytes = randomBytes(size);
  const sha = createHash('sha256').update(bytes).digest('hex');
  const fileName = `random-${demo.nonce}.bin`;
  const before = await serverBytes();

  // ann clicks ben in #members and chooses the file.
  const started = Date.now();
  const [chooser] = await Promise.all([
    ann.page.waitForEvent('filechooser', { timeout: 10_000 }),
    ann.page.locator(`#members li[data-client="${ben.id}"]`).click({ timeout: 10_000 }),
  ]);
  await chooser.setFiles({ name: fileName, mimeType: 'application/octet-stream', buffer: bytes });

  await demo.waitFor(ben, `ben: #log shows ${fileName} with a download link`, (name) =>
    [...document.querySelectorAll('#log li a[download]')].some((a) => a.download === name), fileName,
  TRANSFER_TIMEOUT_MS);
  const receivedMs = Date.now() - started;
  const got = await ben.page.evaluate(async (name) => {
    const a = [...document.querySelectorAll('#log li a[download]')].find((x) => x.download === name);
    const buf = await (await fetch(a.href)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', buf);
    return {
      size: buf.byteLength,
      sha: [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join(''),
      entry: a.closest('li').textContent,
    };
  }, fileName);
  await demo.check(got.size === size, `ben: the download link holds ${got.size} bytes, expected ${size}`);
  await demo.check(got.sha === sha, `ben: SHA-256 of the file received is ${got.sha}, ann sent ${sha}`);
  await demo.check(got.entry.includes('ann') && got.entry.includes(fileName),
    `ben: the #log entry '${got.entry}' does not name ann and the file`);
  await demo.waitFor(ann, 'ann: #log notes that ben received the file', () =>
    [...document.querySelectorAll('#log li .note')].some((n) => /received the file/.test(n.textContent)));

  const after = await serverBytes();
  const grew = { received: after.received - before.received, sent: after.sent - before.sent };
  await demo.check(grew.received < MAX_SERVER_BYTES && grew.sent < MAX_SERVER_BYTES,
    `the server's byte counters grew by ${grew.received} received and ${grew.sent} sent during the transfer, ` +
    `expected less than ${MAX_SERVER_BYTES} each: the file went through the server`);
  await demo.noErrors([ann, ben]);
  return { version, receivedMs, grew };
}

await report(demo, () => withBrowser(scenario, {
  timeoutMs: TOTAL_TIMEOUT_MS,
  // Host candidates as plain addresses, loopback included, rather than .local mDNS names: both
  // pages share one browser, which resolves its own names, but the run should not depend on it.
  args: ['--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection'],
}), (r) =>
  `${r.version}, ${opts.impl} client: ${size} bytes from ann to ben peer to peer in ${r.receivedMs} ms, ` +
  `SHA-256 equal; server counters grew by ${r.grew.received} B received, ${r.grew.sent} B sent`);
