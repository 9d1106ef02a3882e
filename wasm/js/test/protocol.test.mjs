// DuplexSocket against a scripted server: what an echo server cannot show.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { DuplexSocket } from '../index.js';
import {
  accept,
  closePayload,
  frame,
  nextEvent,
  record,
  startRawServer,
  within,
} from './helpers.mjs';

const T = { timeout: 15_000 };
const TEXT = 0x1;
const BINARY = 0x2;
const CLOSE = 0x8;
const PING = 0x9;
const PONG = 0xa;

/** Runs `body(server)` with a raw server, closing it afterwards. */
async function withServer(options, body) {
  const server = await startRawServer(options);
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

/** Resolves with the first connection the server accepts. */
function firstConnection(server) {
  return within(
    (async () => {
      while (server.connections.length === 0) await new Promise((r) => setTimeout(r, 5));
      return server.connections[0];
    })(),
    5_000,
    'connection',
  );
}

describe('DuplexSocket against a scripted server', () => {
  test('the subprotocol the server selects is reported', T, async () => {
    await withServer(
      { respond: (head) => accept(head, ['Sec-WebSocket-Protocol: chat.v1']) },
      async (server) => {
        const ws = new DuplexSocket(server.url, ['chat.v2', 'chat.v1']);
        await nextEvent(ws, 'open');
        assert.equal(ws.protocol, 'chat.v1');
        assert.equal(ws.extensions, '');
        const conn = await firstConnection(server);
        assert.equal(conn.header('sec-websocket-protocol'), 'chat.v2, chat.v1');
        assert.equal(conn.header('sec-websocket-version'), '13');
        assert.match(conn.header('sec-websocket-extensions'), /^permessage-deflate/);
        const closed = nextEvent(ws, 'close');
        ws.close(1000);
        assert.deepEqual((await conn.readFrame()).payload, closePayload(1000));
        conn.send(frame(CLOSE, closePayload(1000)));
        conn.socket.end();
        const event = await closed;
        assert.equal(event.code, 1000);
        assert.equal(event.wasClean, true);
      },
    );
  });

  test('a protocol the client did not offer fails the handshake', T, async () => {
    await withServer(
      { respond: (head) => accept(head, ['Sec-WebSocket-Protocol: other']) },
      async (server) => {
        const ws = new DuplexSocket(server.url, ['chat']);
        const { log, closed } = record(ws);
        const event = await closed;
        assert.equal(event.code, 1006);
        assert.equal(log.length, 2);
        assert.match(log[0], /^error: .*other/);
      },
    );
  });

  test('a refused upgrade (HTTP 403): error, then close 1006', T, async () => {
    const respond = () => 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';
    await withServer({ respond }, async (server) => {
      const ws = new DuplexSocket(server.url);
      const { log, closed } = record(ws);
      const event = await closed;
      assert.equal(event.code, 1006);
      assert.equal(event.wasClean, false);
      assert.match(log[0], /^error: .*403/);
      assert.equal(log[1], 'close 1006');
    });
  });

  test('headers and origin options are sent', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url + 'path?q=1', [], {
        headers: { Authorization: 'Bearer token', 'X-Trace': '42' },
        origin: 'https://app.example',
      });
      await nextEvent(ws, 'open');
      const conn = await firstConnection(server);
      assert.match(conn.head, /^GET \/path\?q=1 HTTP\/1\.1\r\n/);
      assert.equal(conn.header('authorization'), 'Bearer token');
      assert.equal(conn.header('x-trace'), '42');
      assert.equal(conn.header('origin'), 'https://app.example');
      ws.close();
    });
  });

  test('client frames are masked; server pings are answered and reported', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url, [], { perMessageDeflate: false });
      ws.binaryType = 'arraybuffer';
      await nextEvent(ws, 'open');
      const conn = await firstConnection(server);
      ws.send('hi');
      const sent = await conn.readFrame();
      assert.deepEqual([sent.opcode, sent.masked, sent.payload.toString()], [TEXT, true, 'hi']);

      const ping = nextEvent(ws, 'ping');
      conn.send(frame(PING, Buffer.from('beat')));
      assert.equal(new TextDecoder().decode((await ping).data), 'beat');
      const pong = await conn.readFrame();
      assert.deepEqual([pong.opcode, pong.payload.toString()], [PONG, 'beat']);

      // A fragmented binary message arrives whole.
      const message = nextEvent(ws, 'message');
      conn.send(frame(BINARY, Buffer.from([1, 2]), { fin: false }));
      conn.send(frame(0x0, Buffer.from([3]), { fin: true }));
      assert.deepEqual(new Uint8Array((await message).data), new Uint8Array([1, 2, 3]));
      ws.close();
    });
  });

  test('invalid UTF-8 from the server: close 1007 sent, error, close event', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url, [], { perMessageDeflate: false });
      const { log, closed } = record(ws);
      await nextEvent(ws, 'open');
      const conn = await firstConnection(server);
      conn.send(frame(TEXT, Buffer.from([0x68, 0xff])));
      const close = await conn.readFrame();
      assert.equal(close.opcode, CLOSE);
      assert.equal(close.payload.readUInt16BE(0), 1007);
      conn.socket.end();
      const event = await closed;
      assert.equal(event.code, 1007);
      assert.equal(event.wasClean, false);
      assert.equal(log[0], 'open');
      assert.match(log[1], /^error: .*UTF-8/);
      assert.equal(log[2], 'close 1007');
    });
  });

  test('a server-initiated close is echoed and reported clean', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url);
      const { log, closed } = record(ws);
      await nextEvent(ws, 'open');
      const conn = await firstConnection(server);
      conn.send(frame(CLOSE, closePayload(4001, 'bye now')));
      const reply = await conn.readFrame();
      assert.equal(reply.opcode, CLOSE);
      assert.equal(reply.payload.readUInt16BE(0), 4001);
      assert.equal(ws.readyState, DuplexSocket.CLOSING);
      // The client waits for the server to close TCP.
      assert.equal(log.includes('close 4001'), false);
      conn.socket.end();
      const event = await closed;
      assert.deepEqual([event.code, event.reason, event.wasClean], [4001, 'bye now', true]);
      assert.deepEqual(log, ['open', 'close 4001']);
    });
  });

  test('the server never closes TCP: the close timeout ends the wait', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url, [], { closeTimeout: 200 });
      await nextEvent(ws, 'open');
      const conn = await firstConnection(server);
      const started = performance.now();
      ws.close(1000);
      await conn.readFrame();
      conn.send(frame(CLOSE, closePayload(1000)));
      // No FIN from the server.
      const event = await nextEvent(ws, 'close');
      const took = performance.now() - started;
      assert.equal(event.code, 1000);
      assert.equal(event.wasClean, true);
      assert.ok(took >= 150 && took < 2_000, `closed after ${took} ms`);
    });
  });

  test('a dropped connection (no close frame): error, then close 1006', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url);
      const { log, closed } = record(ws);
      await nextEvent(ws, 'open');
      (await firstConnection(server)).socket.destroy();
      const event = await closed;
      assert.equal(event.code, 1006);
      assert.equal(event.wasClean, false);
      assert.equal(log.length, 3);
      assert.match(log[1], /^error: /);
    });
  });

  test('heartbeat: a server that never pongs fails the connection with 1001', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url, [], { pingInterval: 50, maxMissedPongs: 2 });
      const { log, closed } = record(ws);
      await nextEvent(ws, 'open');
      const conn = await firstConnection(server);
      const started = performance.now();
      const first = await conn.readFrame();
      assert.equal(first.opcode, PING);
      const event = await within(closed, 5_000, 'heartbeat failure');
      const took = performance.now() - started;
      assert.equal(event.code, 1001);
      assert.equal(event.wasClean, false);
      assert.match(log[1], /^error: .*pong/);
      assert.ok(took < 3_000, `failed after ${took} ms`);
      // The server was told why.
      let frameSeen;
      while ((frameSeen = await conn.readFrame()) !== null && frameSeen.opcode !== CLOSE);
      assert.equal(frameSeen?.payload.readUInt16BE(0), 1001);
    });
  });

  test('handshake timeout: a server that never answers', T, async () => {
    await withServer({ respond: () => null }, async (server) => {
      const ws = new DuplexSocket(server.url, [], { handshakeTimeout: 150 });
      const { log, closed } = record(ws);
      const event = await within(closed, 5_000, 'handshake timeout');
      assert.equal(event.code, 1006);
      assert.match(log[0], /^error: .*handshake/);
      assert.equal(log.includes('open'), false);
    });
  });

  test('idle timeout: nothing received for idleTimeout closes with 1001', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url, [], { idleTimeout: 150 });
      const { closed } = record(ws);
      await nextEvent(ws, 'open');
      const event = await within(closed, 5_000, 'idle timeout');
      assert.equal(event.code, 1001);
    });
  });

  test('messages received after close() are not delivered (WHATWG)', T, async () => {
    await withServer({}, async (server) => {
      const ws = new DuplexSocket(server.url, [], { perMessageDeflate: false });
      await nextEvent(ws, 'open');
      const conn = await firstConnection(server);
      const messages = [];
      ws.onmessage = (e) => messages.push(e.data);
      conn.send(frame(TEXT, Buffer.from('before')));
      await within(
        new Promise((resolve) => ws.addEventListener('message', resolve, { once: true })),
        5_000,
        'first message',
      );
      ws.close();
      conn.send(frame(TEXT, Buffer.from('after')));
      conn.send(frame(CLOSE, closePayload(1000)));
      conn.socket.end();
      await nextEvent(ws, 'close');
      assert.deepEqual(messages, ['before']);
    });
  });
});
