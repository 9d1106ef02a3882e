// DuplexClient over the HTTP transports (docs/PROTOCOL.md, "HTTP transports") against a real
// `duplex serve` on 127.0.0.1: Server-Sent Events through the `eventsource` npm package (a real
// EventSource over Node's fetch), long polling and POSTs over Node's fetch. Clients forced onto
// `sse` and `longpoll` share one room with a WebSocket client: one sequence for all, acks,
// presence; a server restart with publishes made while it was down (each delivered once); streams
// and polls cut mid-way (resumed without loss or duplicate); the fallback from a WebSocket that
// cannot open, from a stream a proxy buffers, and the probe that moves back to WebSocket.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';

import { EventSource } from 'eventsource';

import { DuplexClient, DuplexSocket } from '../index.js';
import { httpBase } from '../src/transports.js';
import { next, restartServe, sleep, startServe, unusedPort, waitFor } from './helpers.mjs';


const FAST = { initialBackoff: 50, maxBackoff: 200, backoffMultiplier: 2 };

/** A sessionStorage stand-in (Node has none): the client's memory of its transport. */
class MemoryStorage {
  map = new Map();
  getItem(key) {
    return this.map.get(key) ?? null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
}

/** Options of a client on `transport` alone ('websocket', 'sse', 'longpoll'). */
function on(transport, extra = {}) {
  return { ...FAST, transports: [transport], EventSource, storage: null, ...extra };
}

/** A room's messages as `seq from text` lines. */
function lines(messages) {
  return messages.map((m) => `${m.seq} ${m.from} ${m.data.text}`);
}

test('httpBase: the endpoints hang below the WebSocket path, wss → https, no query', () => {
  assert.equal(httpBase('ws://127.0.0.1:9001/ws'), 'http://127.0.0.1:9001/ws');
  assert.equal(httpBase('wss://example.test/chat/ws/?token=x#f'), 'https://example.test/chat/ws');
  assert.equal(httpBase('http://h:1/ws'), 'http://h:1/ws');
  assert.equal(httpBase('ws://h/'), 'http://h');
});

test('options: unknown transports are refused; ones that cannot run here are left out', () => {
  assert.throws(() => new DuplexClient('ws://127.0.0.1:1/ws', { transports: ['carrier-pigeon'] }), TypeError);
  // Node has no global EventSource: ['sse'] alone cannot run without options.EventSource.
  if (typeof globalThis.EventSource !== 'function') {
    assert.throws(() => new DuplexClient('ws://127.0.0.1:1/ws', { transports: ['sse'] }), /EventSource/);
  }
  const client = new DuplexClient('ws://127.0.0.1:1/ws', { transports: ['longpoll', 'websocket'], storage: null });
  assert.equal(client.transport, 'longpoll');
  client.close();
});

test('sse and longpoll beside a WebSocket: one sequence, acks, presence and members', { timeout: 30_000 }, async () => {
  const server = await startServe();
  const ada = new DuplexClient(server.url, on('websocket', { clientId: 'ada' }));
  const bob = new DuplexClient(server.url, on('sse', { clientId: 'bob' }));
  // A fetch that refuses to be called as a method, like a browser's (`Illegal invocation`).
  const strictFetch = function (input, init) {
    if (this !== undefined && this !== globalThis) throw new TypeError('Illegal invocation');
    return fetch(input, init);
  };
  const cyd = new DuplexClient(server.url, on('longpoll', { clientId: 'cyd', fetch: strictFetch }));
  const clients = [ada, bob, cyd];
  try {
    const rooms = [];
    for (const client of clients) rooms.push(await client.join('app/mixed', { presence: { name: client.clientId } }));
    assert.deepEqual(clients.map((c) => c.transport), ['websocket', 'sse', 'longpoll']);
    assert.ok(clients.every((c) => c.connected));
    const logs = rooms.map((room) => {
      const log = { messages: [], presence: [] };
      room.on('message', (m) => log.messages.push(m));
      room.on('presence', (e) => log.presence.push(e));
      return log;
    });
    // Everyone knows everyone (members, then joins of the later ones).
    await waitFor(() => rooms.every((r) => r.members.size === 3), 5000, 'three members everywhere');
    assert.deepEqual(rooms[0].members.get('bob'), { name: 'bob' });

    // Interleaved publishes from all three: acks carry seqs, every member sees the same order.
    const acks = [];
    for (let i = 0; i < 10; i++) {
      for (const [k, client] of clients.entries()) {
        acks.push(rooms[k].publish({ text: `${client.clientId}-${i}` }));
      }
    }
    const seqs = await Promise.all(acks);
    assert.equal(new Set(seqs).size, 30, `30 distinct seqs: ${seqs}`);
    await waitFor(() => logs.every((l) => l.messages.length >= 30), 10_000, '30 messages everywhere');
    await sleep(200);
    const want = lines(logs[0].messages);
    assert.equal(want.length, 30);
    for (const [k, log] of logs.entries()) {
      assert.deepEqual(lines(log.messages), want, `${clients[k].clientId} saw another sequence`);
    }
    assert.deepEqual(logs[0].messages.map((m) => m.seq), [...seqs].sort((a, b) => a - b));
    // Each publisher's own messages in the order it sent them.
    for (const client of clients) {
      const own = logs[0].messages.filter((m) => m.from === client.clientId).map((m) => m.data.text);
      assert.deepEqual(own, [...Array(10).keys()].map((i) => `${client.clientId}-${i}`));
    }

    // Presence from the SSE client reaches the other two; the long-polling one's too.
    rooms[1].setPresence({ name: 'bob', typing: true });
    rooms[2].setPresence({ name: 'cyd', away: true });
    await waitFor(
      () =>
        logs[0].presence.some((e) => e.client === 'bob' && e.presence.typing) &&
        logs[2].presence.some((e) => e.client === 'bob' && e.presence.typing) &&
        logs[0].presence.some((e) => e.client === 'cyd' && e.presence.away) &&
        logs[1].presence.some((e) => e.client === 'cyd' && e.presence.away),
      5000,
      'presence everywhere',
    );

    // A direct message from the long-polling client to the SSE one.
    const direct = next(bob, 'direct');
    await cyd.send('bob', { hi: 'bob' });
    assert.deepEqual(await direct, { from: 'cyd', data: { hi: 'bob' } });

    // Leaving over SSE is seen by the others.
    const left = next(rooms[0], 'leave');
    bob.close();
    assert.equal((await left).client, 'bob');
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
});

test('server restart: sse and longpoll reconnect, offline publishes delivered once', { timeout: 40_000 }, async () => {
  let server = await startServe();
  const { port } = server;
  const ada = new DuplexClient(server.url, on('websocket', { clientId: 'ada' }));
  const bob = new DuplexClient(server.url, on('sse', { clientId: 'bob' }));
  const cyd = new DuplexClient(server.url, on('longpoll', { clientId: 'cyd' }));
  const clients = [ada, bob, cyd];
  try {
    const rooms = [];
    for (const client of clients) rooms.push(await client.join('app/restart'));
    const logs = rooms.map((room) => {
      const log = [];
      room.on('message', (m) => log.push(m));
      return log;
    });
    await rooms[1].publish({ text: 'bob-before' });
    await rooms[2].publish({ text: 'cyd-before' });
    await waitFor(() => logs.every((l) => l.length === 2), 5000, 'the first two messages');

    const lost = clients.map((c) => next(c, 'close', 10_000));
    await server.kill();
    await Promise.all(lost);
    // Published while the server is down: queued, sent after the reconnect, delivered once.
    const pending = [];
    for (let i = 0; i < 3; i++) {
      pending.push(rooms[1].publish({ text: `bob-offline-${i}` }));
      pending.push(rooms[2].publish({ text: `cyd-offline-${i}` }));
    }
    await sleep(500);
    const opened = clients.map((c) => next(c, 'open', 15_000));
    server = await restartServe([], port);
    await Promise.all(opened);
    await Promise.all(pending);
    await rooms[0].publish({ text: 'ada-after' });
    const texts = (log) => log.map((m) => m.data.text);
    await waitFor(() => logs.every((l) => texts(l).includes('ada-after')), 10_000, 'ada-after everywhere');
    await sleep(300);
    for (const [k, log] of logs.entries()) {
      const t = texts(log);
      for (let i = 0; i < 3; i++) {
        for (const who of ['bob', 'cyd']) {
          const text = `${who}-offline-${i}`;
          assert.equal(t.filter((x) => x === text).length, 1, `${clients[k].clientId}: ${text} not once in ${t}`);
        }
      }
      // The sender's order is kept.
      const bobs = t.filter((x) => x.startsWith('bob-offline'));
      assert.deepEqual(bobs, ['bob-offline-0', 'bob-offline-1', 'bob-offline-2']);
    }
    assert.deepEqual(clients.map((c) => c.transport), ['websocket', 'sse', 'longpoll']);
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
});

/**
 * A fetch that cuts responses: `cutSse` streams are errored after `afterBytes` bytes of body
 * (the connection dies mid-stream); every `everyPoll`-th poll answer is thrown away after the
 * server sent it (lost on the way). Counts what it did.
 */
function cuttingFetch({ afterBytes = 600, everyPoll = 3 } = {}) {
  const stats = { streams: 0, resumes: 0, cutStreams: 0, polls: 0, lostPolls: 0, urls: [] };
  const fetchFn = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    const response = await fetch(input, init);
    if (url.includes('/sse?')) {
      stats.streams++;
      if (url.includes('&last=')) stats.resumes++;
      stats.urls.push(url);
      if (!response.body) return response;
      let seen = 0;
      const reader = response.body.getReader();
      const body = new ReadableStream({
        async pull(controller) {
          const { done, value } = await reader.read();
          if (done) return controller.close();
          seen += value.length;
          controller.enqueue(value);
          if (seen > afterBytes) {
            stats.cutStreams++;
            reader.cancel().catch(() => {});
            controller.error(new TypeError('cut'));
          }
        },
        cancel: (reason) => reader.cancel(reason),
      });
      return new Response(body, { status: response.status, headers: response.headers });
    }
    if (url.includes('/poll?')) {
      stats.polls++;
      if (response.status === 200 && stats.polls % everyPoll === 0) {
        const answer = await response.json();
        if (answer.messages.length > 0) {
          stats.lostPolls++;
          throw new TypeError('cut');
        }
        return new Response(JSON.stringify(answer), { status: 200, headers: response.headers });
      }
    }
    return response;
  };
  return { fetch: fetchFn, stats };
}

test('streams and polls cut mid-way: resumed, nothing lost, nothing twice', { timeout: 40_000 }, async () => {
  const server = await startServe();
  const sseCuts = cuttingFetch({ afterBytes: 1500 });
  const pollCuts = cuttingFetch({ everyPoll: 2 });
  // The eventsource package takes the fetch it streams with as an option.
  const CutEventSource = class extends EventSource {
    constructor(url, init) {
      super(url, { ...init, fetch: sseCuts.fetch });
    }
  };
  const ada = new DuplexClient(server.url, on('websocket', { clientId: 'ada' }));
  const bob = new DuplexClient(server.url, on('sse', { clientId: 'bob', EventSource: CutEventSource }));
  const cyd = new DuplexClient(server.url, on('longpoll', { clientId: 'cyd', fetch: pollCuts.fetch }));
  const clients = [ada, bob, cyd];
  try {
    const rooms = [];
    for (const client of clients) rooms.push(await client.join('app/cuts'));
    const opens = clients.map(() => 0);
    clients.forEach((c, k) => c.on('open', () => opens[k]++));
    const logs = rooms.map((room) => {
      const log = [];
      room.on('message', (m) => log.push(m));
      return log;
    });
    const N = 120;
    for (let i = 0; i < N; i++) {
      await rooms[0].publish({ text: `m${i}`, pad: 'x'.repeat(40) });
      if (i % 10 === 9) await sleep(20);
    }
    await waitFor(() => logs.every((l) => l.length >= N), 20_000, () => `${N} messages everywhere (${logs.map((l) => l.length)}; ${JSON.stringify([sseCuts.stats.cutStreams, pollCuts.stats])})`);
    await sleep(300);
    const want = [...Array(N).keys()].map((i) => `m${i}`);
    for (const [k, log] of logs.entries()) {
      assert.deepEqual(log.map((m) => m.data.text), want, `${clients[k].clientId}: lost, repeated or reordered`);
    }
    // The cuts happened and were resumed by the transport itself (no new connection, no
    // second welcome): streams after the last message seen, polls with the same ack.
    assert.ok(sseCuts.stats.cutStreams >= 3, `only ${sseCuts.stats.cutStreams} streams cut`);
    assert.ok(sseCuts.stats.resumes >= sseCuts.stats.cutStreams, JSON.stringify(sseCuts.stats));
    assert.ok(pollCuts.stats.lostPolls >= 3, `only ${pollCuts.stats.lostPolls} polls lost`);
    assert.deepEqual(opens, [0, 0, 0], 'a cut caused a reconnect');
    assert.deepEqual(clients.map((c) => c.transport), ['websocket', 'sse', 'longpoll']);
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
});

test('fallback: a WebSocket that cannot open → sse (remembered); the probe moves back up', { timeout: 30_000 }, async () => {
  const server = await startServe();
  const deadPort = await unusedPort();
  // WebSocket blocked: every WebSocket goes to a port nothing listens on, until `blocked` clears.
  const net = { blocked: true };
  const Blockable = class extends DuplexSocket {
    constructor(url, protocols, options) {
      super(net.blocked ? `ws://127.0.0.1:${deadPort}/ws` : url, protocols, options);
    }
  };
  const storage = new MemoryStorage();
  const ada = new DuplexClient(server.url, on('websocket', { clientId: 'ada' }));
  const bob = new DuplexClient(server.url, {
    ...FAST,
    clientId: 'bob',
    WebSocket: Blockable,
    EventSource,
    storage,
    probeInterval: 1000,
  });
  const changes = [];
  bob.on('transport', (e) => changes.push(e));
  try {
    const started = performance.now();
    const roomB = await bob.join('app/fallback');
    const fallbackMs = performance.now() - started;
    assert.equal(bob.transport, 'sse');
    assert.deepEqual(changes, [{ transport: 'sse', previous: 'websocket' }]);
    assert.ok(fallbackMs < 3000, `fell back in ${fallbackMs} ms`);
    assert.equal(storage.getItem(`duplex-ws:transport:${server.url}`), 'sse');
    const roomA = await ada.join('app/fallback');
    const got = [];
    roomB.on('message', (m) => got.push(m.data.text));

    // A second client with the same storage starts on sse at once (the page's memory).
    const again = new DuplexClient(server.url, { ...FAST, clientId: 'bob2', WebSocket: Blockable, EventSource, storage, probeInterval: 60_000 });
    assert.equal(again.transport, 'sse');
    await next(again, 'open');
    assert.equal(again.transport, 'sse');
    again.close();

    // Messages flow while the probe fails (WebSocket still blocked)...
    await roomA.publish({ text: 'a1' });
    await sleep(1500);
    assert.equal(bob.transport, 'sse');
    // ...then the WebSocket works again: the next probe moves bob back, without a loss.
    net.blocked = false;
    const sending = (async () => {
      for (let i = 2; i <= 30; i++) {
        await roomA.publish({ text: `a${i}` });
        await sleep(40);
      }
    })();
    await waitFor(() => bob.transport === 'websocket', 5000, 'bob back on websocket');
    await sending;
    await waitFor(() => got.length >= 30, 5000, '30 messages for bob');
    await sleep(200);
    assert.deepEqual(got, [...Array(30).keys()].map((i) => `a${i + 1}`));
    assert.equal(storage.getItem(`duplex-ws:transport:${server.url}`), 'websocket');
    assert.deepEqual(changes.at(-1), { transport: 'websocket', previous: 'sse' });
  } finally {
    ada.close();
    bob.close();
    await server.stop();
  }
});

test('fallback: a stream a proxy buffers (no open event in time) → longpoll', { timeout: 30_000 }, async () => {
  const server = await startServe();
  // The stream's response never starts, as behind a proxy that buffers it whole.
  const Buffered = class extends EventSource {
    constructor(url, init) {
      super(url, {
        ...init,
        fetch: (input, options) =>
          new Promise((_, reject) => options?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')))),
      });
    }
  };
  const ada = new DuplexClient(server.url, on('websocket', { clientId: 'ada' }));
  const bob = new DuplexClient(server.url, {
    ...FAST,
    clientId: 'bob',
    transports: ['sse', 'longpoll'],
    EventSource: Buffered,
    storage: null,
    openTimeout: 500,
  });
  try {
    const roomB = await bob.join('app/buffered');
    assert.equal(bob.transport, 'longpoll');
    const roomA = await ada.join('app/buffered');
    const got = next(roomB, 'message');
    await roomA.publish({ text: 'through' });
    assert.equal((await got).data.text, 'through');
  } finally {
    ada.close();
    bob.close();
    await server.stop();
  }
});

test('a server that is down is no reason to change transport', { timeout: 30_000 }, async () => {
  let server = await startServe();
  const { port } = server;
  await server.kill();
  const storage = new MemoryStorage();
  const client = new DuplexClient(`ws://127.0.0.1:${port}/ws`, { ...FAST, EventSource, storage });
  const reconnecting = [];
  client.on('reconnecting', (e) => reconnecting.push(e));
  try {
    // The WebSocket fails, and so does POST open (connection refused): the attempt failed.
    await waitFor(() => reconnecting.length >= 3, 10_000, 'three failed attempts');
    assert.equal(client.transport, 'websocket');
    assert.equal(storage.getItem(`duplex-ws:transport:ws://127.0.0.1:${port}/ws`), null);
    const opened = next(client, 'open', 10_000);
    server = await restartServe([], port);
    await opened;
    assert.equal(client.transport, 'websocket');
  } finally {
    client.close();
    await server.stop();
  }
});

test('a WebSocket that worked and fails to reopen: an outage for 10 s, then the fallback', { timeout: 40_000 }, async () => {
  const server = await startServe();
  const deadPort = await unusedPort();
  const state = { blocked: false, sockets: new Set(), opens: 0 };
  // The network path of the WebSocket: cut (drop) and blocked (new ones go nowhere) at will.
  const Path = class extends DuplexSocket {
    constructor(url, protocols, options) {
      super(state.blocked ? `ws://127.0.0.1:${deadPort}/ws` : url, protocols, {
        ...options,
        createConnection: ({ host, port }) => {
          const socket = net.connect(port, host);
          state.sockets.add(socket);
          socket.on('close', () => state.sockets.delete(socket));
          return socket;
        },
      });
    }
  };
  const opens = [];
  const countingFetch = (input, init) => {
    if (String(input).endsWith('/open')) opens.push(performance.now());
    return fetch(input, init);
  };
  const client = new DuplexClient(server.url, {
    ...FAST,
    clientId: 'eve',
    WebSocket: Path,
    EventSource,
    fetch: countingFetch,
    storage: null,
  });
  try {
    await client.join('app/outage');
    assert.equal(client.transport, 'websocket');
    state.blocked = true;
    const cutAt = performance.now();
    for (const socket of state.sockets) socket.destroy();
    const reconnecting = [];
    client.on('reconnecting', (e) => reconnecting.push(e));
    await waitFor(() => reconnecting.length >= 4, 8_000, 'four failed attempts');
    assert.equal(opens.length, 0, 'the HTTP transports were tried during a short outage');
    assert.equal(client.transport, 'websocket');
    // Still failing after 10 s: now the client falls back (the server is up: SSE opens).
    await waitFor(() => client.transport === 'sse' && client.connected, 15_000, 'the fallback to sse');
    assert.ok(opens[0] - cutAt >= 10_000, `POST open ${opens[0] - cutAt} ms after the cut`);
  } finally {
    client.close();
    await server.stop();
  }
});
