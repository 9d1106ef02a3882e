// Interop client: Node `ws` against an echo server.
//
//   node node_client.mjs ws://127.0.0.1:PORT/
//
// Echoes text and binary messages of 0, 125, 126, 65535, 65536 and 1 MiB
// bytes (the frame-length boundaries), a fragmented text message and a
// pipelined burst, checks each echo byte for byte and type for type, sends a
// ping and waits for its pong, then closes with 1000 and checks the peer
// echoed 1000. Prints `interop(node): ok`, or the first failure and exits 1.
// Every wait is bounded.
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';

const NAME = 'interop(node)';
const SIZES = [0, 125, 126, 65535, 65536, 1 << 20];
const STEP_TIMEOUT_MS = 10_000;
const TOTAL_TIMEOUT_MS = 30_000;

const url = process.argv[2];
if (!url) {
  console.error('usage: node node_client.mjs ws://HOST:PORT/');
  process.exit(2);
}

function fail(reason) {
  console.error(`${NAME}: FAIL: ${reason}`);
  process.exit(1);
}

setTimeout(() => fail(`run exceeded ${TOTAL_TIMEOUT_MS / 1000}s`), TOTAL_TIMEOUT_MS).unref();

// A string whose UTF-8 encoding is exactly `size` bytes, with 2-, 3- and
// 4-byte sequences.
function textOf(size) {
  const unit = 'aé€😀'; // 1 + 2 + 3 + 4 = 10 bytes
  let s = unit.repeat(Math.floor(size / 10));
  s += 'x'.repeat(size - Buffer.byteLength(s));
  return s;
}

// Incoming events, consumed in order by `next(kind)`.
const queue = [];
const waiters = [];
let closed = null;
function push(ev) {
  const w = waiters.shift();
  if (w) w(ev);
  else queue.push(ev);
}
function next(what) {
  if (queue.length) return Promise.resolve(queue.shift());
  if (closed) return Promise.reject(new Error(`${what}: connection closed (${closed.code})`));
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`${what}: nothing received within ${STEP_TIMEOUT_MS / 1000}s`)),
      STEP_TIMEOUT_MS,
    );
    waiters.push((ev) => {
      clearTimeout(t);
      resolve(ev);
    });
  });
}

function describe(isBinary, len) {
  return `${isBinary ? 'binary' : 'text'} of ${len} bytes`;
}

async function expectEcho(sent, isBinary, what) {
  const ev = await next(what);
  if (ev.type !== 'message') {
    throw new Error(`${what}: expected the echo, got ${ev.type}${ev.code ? ` ${ev.code}` : ''}`);
  }
  const want = Buffer.isBuffer(sent) ? sent : Buffer.from(sent, 'utf8');
  if (ev.isBinary !== isBinary) {
    throw new Error(`${what}: sent ${describe(isBinary, want.length)}, received ${describe(ev.isBinary, ev.data.length)}`);
  }
  if (!want.equals(ev.data)) {
    let i = 0;
    while (i < want.length && i < ev.data.length && want[i] === ev.data[i]) i++;
    throw new Error(`${what}: echo differs (first difference at byte ${i}, lengths ${want.length} and ${ev.data.length})`);
  }
}

// `--deflate`: offer permessage-deflate and require the server to accept it.
const deflate = process.argv.includes('--deflate');
const ws = new WebSocket(url, {
  perMessageDeflate: deflate ? { threshold: 0 } : false,
  maxPayload: 4 << 20,
  handshakeTimeout: STEP_TIMEOUT_MS,
});
ws.on('message', (data, isBinary) => push({ type: 'message', data, isBinary }));
ws.on('pong', (data) => push({ type: 'pong', data }));
ws.on('close', (code, reason) => {
  closed = { code, reason: reason.toString() };
  push({ type: 'close', code, reason: closed.reason });
});
ws.on('error', (err) => push({ type: 'error', code: 0, message: err.message }));

async function run() {
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', (err) => reject(new Error(`connect ${url}: ${err.message}`)));
  });
  if (deflate !== ws.extensions.includes('permessage-deflate')) {
    throw new Error(`negotiated extensions ${JSON.stringify(ws.extensions)} (deflate offered: ${deflate})`);
  }

  for (const size of SIZES) {
    const text = textOf(size);
    ws.send(text);
    await expectEcho(text, false, describe(false, size));
    const bin = randomBytes(size);
    ws.send(bin, { binary: true });
    await expectEcho(bin, true, describe(true, size));
  }

  // One message in several frames: the echo must be the whole message.
  const parts = ['frag', 'ment', 'é€😀', 'ed'];
  parts.forEach((p, i) => ws.send(p, { fin: i === parts.length - 1 }));
  await expectEcho(parts.join(''), false, 'fragmented text of 4 frames');

  // Pipelined: many messages in flight, echoes in order.
  const burst = Array.from({ length: 100 }, (_, i) => (i % 2 ? `burst ${i}` : randomBytes(i)));
  for (const m of burst) ws.send(m, { binary: Buffer.isBuffer(m) });
  for (let i = 0; i < burst.length; i++) {
    await expectEcho(burst[i], Buffer.isBuffer(burst[i]), `burst message ${i}`);
  }

  const payload = Buffer.from('duplex-interop');
  ws.ping(payload);
  const pong = await next('ping');
  if (pong.type !== 'pong') throw new Error(`expected a pong after a ping, got ${pong.type}`);
  if (!payload.equals(pong.data)) throw new Error('pong payload differs from the ping payload');

  ws.close(1000, 'interop done');
  const end = await next('close');
  if (end.type !== 'close') throw new Error(`expected the close, got ${end.type}`);
  if (end.code !== 1000) {
    throw new Error(`closed with 1000, peer answered ${end.code} ${JSON.stringify(end.reason)} (1005 = no code, 1006 = no close frame)`);
  }
}

run().then(
  () => {
    console.log(`${NAME}: ok`);
    process.exit(0);
  },
  (err) => fail(err.message),
);
