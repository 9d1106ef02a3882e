// DuplexSocket against the real `duplex echo` server.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { CloseEvent, DuplexSocket } from '../index.js';
import { nextEvent, record, startEcho, unusedPort, within } from './helpers.mjs';

const T = { timeout: 15_000 };

let echo;
before(async () => {
  echo = await startEcho();
});
after(async () => {
  await echo?.stop();
});

/** Opens a socket to the echo server; resolves once open. */
async function connect(options, protocols) {
  const ws = new DuplexSocket(echo.url, protocols, options);
  ws.binaryType = 'arraybuffer';
  await nextEvent(ws, 'open');
  return ws;
}

/** Sends each item and resolves with the echoed data, in order. */
function echoAll(ws, items) {
  return new Promise((resolve, reject) => {
    const got = [];
    const onMessage = (event) => {
      got.push(event.data);
      if (got.length === items.length) {
        ws.removeEventListener('message', onMessage);
        resolve(got);
      }
    };
    ws.addEventListener('message', onMessage);
    ws.addEventListener('close', (e) => reject(new Error(`closed ${e.code} during echo`)), {
      once: true,
    });
    for (const item of items) ws.send(item);
  });
}

async function closeAndWait(ws, code, reason) {
  const closed = nextEvent(ws, 'close');
  ws.close(code, reason);
  return closed;
}

describe('DuplexSocket over duplex echo', () => {
  test('opens, reports url, readyState, extensions and no protocol', T, async () => {
    const ws = new DuplexSocket(echo.url.replace('ws://', 'http://') + 'chat?room=1');
    assert.equal(ws.url, `${echo.url}chat?room=1`);
    assert.equal(ws.readyState, DuplexSocket.CONNECTING);
    assert.equal(ws.protocol, '');
    assert.equal(ws.extensions, '');
    assert.equal(ws.binaryType, 'blob');
    const { log, closed } = record(ws);
    await nextEvent(ws, 'open');
    assert.equal(ws.readyState, DuplexSocket.OPEN);
    assert.equal(ws.protocol, '');
    assert.match(ws.extensions, /^permessage-deflate\b/);
    const event = await closeAndWait(ws);
    assert.ok(event instanceof CloseEvent);
    assert.equal(event.code, 1005, 'close() without a code: no status, as in browsers');
    assert.equal(event.wasClean, true);
    assert.equal(ws.readyState, DuplexSocket.CLOSED);
    await closed;
    assert.deepEqual(log, ['open', 'close 1005']);
  });

  test('constants are on the class and on instances', T, () => {
    for (const [name, value] of [
      ['CONNECTING', 0],
      ['OPEN', 1],
      ['CLOSING', 2],
      ['CLOSED', 3],
    ]) {
      assert.equal(DuplexSocket[name], value);
      assert.equal(DuplexSocket.prototype[name], value);
    }
  });

  test('echoes text, non-ASCII text and binary of every JS type', T, async () => {
    const ws = await connect();
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    const view = new Uint8Array([9, 8, 7, 6, 5, 4]).subarray(1, 4);
    const got = await echoAll(ws, [
      'hello',
      '',
      'héllo wörld — 日本語 🎉',
      bytes.buffer,
      bytes,
      view,
      new DataView(bytes.buffer, 1, 2),
      new Uint16Array([0x0102, 0x0304]),
      new Blob(['from a blob']),
      'after the blob',
    ]);
    assert.equal(got[0], 'hello');
    assert.equal(got[1], '');
    assert.equal(got[2], 'héllo wörld — 日本語 🎉');
    assert.deepEqual(new Uint8Array(got[3]), bytes);
    assert.deepEqual(new Uint8Array(got[4]), bytes);
    assert.deepEqual(new Uint8Array(got[5]), new Uint8Array([8, 7, 6]));
    assert.deepEqual(new Uint8Array(got[6]), new Uint8Array([1, 2]));
    assert.deepEqual(new Uint8Array(got[7]), new Uint8Array(new Uint16Array([0x0102, 0x0304]).buffer));
    assert.equal(new TextDecoder().decode(got[8]), 'from a blob');
    assert.equal(got[9], 'after the blob');
    for (const data of got.slice(3, 9)) assert.ok(data instanceof ArrayBuffer);
    await closeAndWait(ws);
  });

  test('binaryType blob delivers Blobs', T, async () => {
    const ws = await connect();
    ws.binaryType = 'blob';
    ws.binaryType = 'nodebuffer'; // not a WebIDL value: ignored
    assert.equal(ws.binaryType, 'blob');
    const [data] = await echoAll(ws, [new Uint8Array([1, 2, 3])]);
    assert.ok(data instanceof Blob);
    assert.deepEqual(new Uint8Array(await data.arrayBuffer()), new Uint8Array([1, 2, 3]));
    await closeAndWait(ws);
  });

  test('large messages: 8 MiB binary, 2 MiB of non-ASCII text', T, async () => {
    const ws = await connect();
    const big = new Uint8Array(8 << 20);
    for (let i = 0; i < big.length; i += 4096) big[i] = (i >> 12) & 0xff;
    const text = 'αβγδε🎉'.repeat(160_000);
    const got = await echoAll(ws, [big, text]);
    assert.equal(got[0].byteLength, big.length);
    assert.ok(Buffer.from(got[0]).equals(Buffer.from(big)));
    assert.equal(got[1], text);
    await closeAndWait(ws);
  });

  test('many small messages keep their order', T, async () => {
    const ws = await connect();
    const items = Array.from({ length: 500 }, (_, i) => `message ${i}`);
    assert.deepEqual(await echoAll(ws, items), items);
    await closeAndWait(ws);
  });

  test('without permessage-deflate no extension is negotiated', T, async () => {
    const ws = await connect({ perMessageDeflate: false });
    assert.equal(ws.extensions, '');
    assert.deepEqual(await echoAll(ws, ['plain']), ['plain']);
    await closeAndWait(ws);
  });

  test('deflate parameters are offered as configured', T, async () => {
    const ws = await connect({ perMessageDeflate: { serverNoContextTakeover: true, threshold: 0 } });
    assert.match(ws.extensions, /server_no_context_takeover/);
    assert.deepEqual(await echoAll(ws, ['x'.repeat(10_000)]), ['x'.repeat(10_000)]);
    await closeAndWait(ws);
  });

  test('close codes and reasons reach the close event', T, async () => {
    for (const [code, reason] of [
      [1000, 'done'],
      [3000, ''],
      [4999, 'é'.repeat(61)],
    ]) {
      const ws = await connect();
      const event = await closeAndWait(ws, code, reason);
      // The echo server answers with our code.
      assert.equal(event.code, code);
      assert.equal(event.wasClean, true);
    }
  });

  test('close() validation: InvalidAccessError and SyntaxError', T, async () => {
    const ws = await connect();
    for (const code of [0, 999, 1001, 1005, 1006, 2999, 5000, 65535, Number.NaN]) {
      assert.throws(() => ws.close(code), { name: 'InvalidAccessError' }, `code ${code}`);
    }
    // [Clamp]: 1000.4 is 1000, 70000 is 65535.
    assert.throws(() => ws.close(70000), { name: 'InvalidAccessError' });
    assert.throws(() => ws.close(1000, 'x'.repeat(124)), { name: 'SyntaxError' });
    // 62 two-byte characters: 124 bytes.
    assert.throws(() => ws.close(1000, 'é'.repeat(62)), { name: 'SyntaxError' });
    assert.equal(ws.readyState, DuplexSocket.OPEN, 'a refused close changes nothing');
    const event = await closeAndWait(ws, 1000.4, 'x'.repeat(123));
    assert.equal(event.code, 1000);
    // Validation still applies once closed.
    assert.throws(() => ws.close(1001), { name: 'InvalidAccessError' });
    ws.close(); // closed: no effect
  });

  test('send() while connecting throws InvalidStateError', T, async () => {
    const ws = new DuplexSocket(echo.url);
    assert.throws(() => ws.send('too early'), { name: 'InvalidStateError' });
    assert.throws(() => ws.ping(), { name: 'InvalidStateError' });
    await nextEvent(ws, 'open');
    await closeAndWait(ws);
  });

  test('bufferedAmount: grows with a large send, drains, counts sends after close', T, async () => {
    const ws = await connect({ perMessageDeflate: false });
    assert.equal(ws.bufferedAmount, 0);
    const payload = new Uint8Array(16 << 20);
    const echoed = nextEvent(ws, 'message', 10_000);
    ws.send(payload);
    assert.ok(ws.bufferedAmount > 0, 'a 16 MiB send cannot all be in the kernel at once');
    assert.equal((await echoed).data.byteLength, payload.length);
    const start = Date.now();
    while (ws.bufferedAmount > 0 && Date.now() - start < 10_000) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(ws.bufferedAmount, 0);
    ws.close();
    assert.equal(ws.readyState, DuplexSocket.CLOSING);
    ws.send('abc'); // not sent: counted
    ws.send(new Uint8Array(10));
    ws.send('é');
    assert.equal(ws.bufferedAmount, 3 + 10 + 2);
    const closed = await nextEvent(ws, 'close');
    assert.equal(closed.code, 1005, 'close() without a code sends no status, as browsers do');
    ws.send('x');
    assert.equal(ws.bufferedAmount, 16);
  });

  test('ping() gets a pong event with the payload', T, async () => {
    const ws = await connect();
    const pong = nextEvent(ws, 'pong');
    ws.ping('are you there');
    const event = await pong;
    assert.equal(new TextDecoder().decode(event.data), 'are you there');
    assert.throws(() => ws.ping('x'.repeat(126)), RangeError);
    await closeAndWait(ws);
  });

  test('heartbeat: pingInterval sends pings the server answers', T, async () => {
    const ws = await connect({ pingInterval: 50, maxMissedPongs: 2 });
    const started = performance.now();
    let pongs = 0;
    await within(
      new Promise((resolve) => {
        ws.addEventListener('pong', () => {
          if (++pongs === 4) resolve();
        });
      }),
      5_000,
      'four heartbeat pongs',
    );
    const took = performance.now() - started;
    // Four pings at a 50 ms interval: about 200 ms, not at once.
    assert.ok(took >= 150, `4 pongs after ${took} ms`);
    assert.equal(ws.readyState, DuplexSocket.OPEN);
    await closeAndWait(ws);
  });

  test('connection refused: error, then close 1006, readyState CLOSED', T, async () => {
    const port = await unusedPort();
    const ws = new DuplexSocket(`ws://127.0.0.1:${port}/`);
    const { log, closed } = record(ws);
    let errorEvent;
    ws.onerror = (e) => {
      errorEvent = e;
      assert.equal(ws.readyState, DuplexSocket.CLOSED);
    };
    const event = await within(closed, 5_000, 'close after ECONNREFUSED');
    assert.equal(event.code, 1006);
    assert.equal(event.wasClean, false);
    assert.equal(ws.readyState, DuplexSocket.CLOSED);
    assert.match(errorEvent.message, /ECONNREFUSED/);
    assert.deepEqual(log.map((l) => l.replace(/:.*/, '')), ['error', 'close 1006']);
  });

  test('close() while connecting: error, then close 1006', T, async () => {
    const ws = new DuplexSocket(echo.url);
    const { log, closed } = record(ws);
    ws.close();
    assert.equal(ws.readyState, DuplexSocket.CLOSING);
    const event = await within(closed, 5_000, 'close');
    assert.equal(event.code, 1006);
    assert.deepEqual(log.map((l) => l.replace(/:.*/, '')), ['error', 'close 1006']);
  });

  test('on* handlers: set, replace, clear; listeners removed stop firing', T, async () => {
    const ws = await connect();
    const seen = [];
    const listener = (e) => seen.push(`listener ${e.data}`);
    ws.onmessage = (e) => seen.push(`first ${e.data}`);
    ws.onmessage = (e) => seen.push(`handler ${e.data}`);
    ws.addEventListener('message', listener);
    assert.equal(typeof ws.onmessage, 'function');
    await echoAll(ws, ['a']);
    ws.removeEventListener('message', listener);
    ws.onmessage = null;
    assert.equal(ws.onmessage, null);
    await echoAll(ws, ['b']);
    assert.deepEqual(seen, ['handler a', 'listener a']);
    await closeAndWait(ws);
  });

  test('invalid URLs and subprotocols throw SyntaxError', T, () => {
    for (const url of ['not a url', 'ftp://127.0.0.1/', `${echo.url}#frag`, `${echo.url}#`]) {
      assert.throws(() => new DuplexSocket(url), { name: 'SyntaxError' }, url);
    }
    for (const protocols of [['a', 'a'], ['bad protocol'], [''], 'x,y']) {
      assert.throws(() => new DuplexSocket(echo.url, protocols), { name: 'SyntaxError' });
    }
  });
});
