// Runs inside a fresh folder where the packed duplex-ws was installed (`npm install
// ./duplex-ws-VERSION.tgz`; tests/bundle.sh copies this file there): imports the package by
// name and talks to real servers with it.
//
//   node packed.mjs ECHO_URL WS_URL
//
// ECHO_URL: a `duplex echo`; WS_URL: the /ws endpoint of a `duplex serve`. Exits non-zero,
// saying why, on the first failure.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as pkg from 'duplex-ws';

const [echoUrl, wsUrl] = process.argv.slice(2);
const STEP_TIMEOUT_MS = 10_000;

function within(promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

// Installed from the tarball, not linked to the checkout.
const installed = createRequire(import.meta.url).resolve('duplex-ws/package.json');
assert.match(installed, /node_modules\/duplex-ws\/package\.json$/);
for (const name of ['DuplexSocket', 'DuplexClient', 'Room', 'CloseEvent', 'ErrorEvent', 'init']) {
  assert.equal(typeof pkg[name], 'function', `export ${name}`);
}
assert.equal(pkg.SUBPROTOCOL, 'duplex.v1');
await pkg.init(); // already loaded by the import: resolves at once

// DuplexSocket against `duplex echo`: a text and a binary message come back, the close is clean.
{
  const ws = new pkg.DuplexSocket(echoUrl);
  ws.binaryType = 'arraybuffer';
  const received = [];
  const closed = new Promise((resolve, reject) => {
    ws.onerror = (event) => reject(new Error(`DuplexSocket failed: ${event.message}`));
    ws.onclose = resolve;
  });
  ws.onopen = () => {
    ws.send('hello from the packed package');
    ws.send(new Uint8Array([1, 2, 3, 250]));
  };
  ws.onmessage = (event) => {
    received.push(event.data);
    if (received.length === 2) ws.close(1000, 'done');
  };
  const event = await within(closed, 'DuplexSocket echo');
  assert.equal(received[0], 'hello from the packed package');
  assert.deepEqual([...new Uint8Array(received[1])], [1, 2, 3, 250]);
  assert.match(ws.extensions, /permessage-deflate/);
  assert.equal(event.code, 1000);
  assert.equal(event.wasClean, true);
  console.log(`packed.mjs: DuplexSocket echo ok (${ws.extensions})`);
}

// DuplexClient against `duplex serve`: B gets what A publishes, A gets its ack.
{
  const room = `packed/room-${process.pid}`;
  const a = new pkg.DuplexClient(wsUrl, { clientId: 'packed-a' });
  const b = new pkg.DuplexClient(wsUrl, { clientId: 'packed-b' });
  try {
    const roomB = await within(b.join(room), 'join of B');
    const got = new Promise((resolve) => roomB.on('message', resolve));
    const roomA = await within(a.join(room, { presence: { name: 'A' } }), 'join of A');
    const seq = await within(roomA.publish({ text: 'from A' }), 'publish of A');
    const message = await within(got, 'the message at B');
    assert.deepEqual(message, { seq, from: 'packed-a', data: { text: 'from A' } });
    console.log(`packed.mjs: DuplexClient ok (seq ${seq} from packed-a reached packed-b)`);
  } finally {
    a.close();
    b.close();
  }
}
