// DuplexClient against a real `duplex serve` on 127.0.0.1: rooms, ordered delivery, acks,
// presence, server refusals, the offline queue, and recovery after a dropped socket and after
// a server restart on the same port.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';

import { DuplexClient, DuplexSocket } from '../index.js';
import { accept, frame, next, restartServe, sleep, startRawServer, startServe, unusedPort, waitFor } from './helpers.mjs';

/** Records a room's events. */
function record(room) {
  const log = { messages: [], resyncs: 0, joined: [], joins: [], leaves: [], presence: [] };
  room.on('message', (m) => log.messages.push(m));
  room.on('resync', () => log.resyncs++);
  room.on('joined', (j) => log.joined.push(j));
  room.on('join', (e) => log.joins.push(e));
  room.on('leave', (e) => log.leaves.push(e));
  room.on('presence', (e) => log.presence.push(e));
  return log;
}

/**
 * A WebSocket constructor for DuplexClient's `WebSocket` option whose network the test
 * controls: `down` sends new connections to a port nothing listens on, `drop()` destroys the
 * TCP connections (no close handshake, as when a network path dies).
 */
async function controlledNetwork() {
  const deadPort = await unusedPort();
  const state = { down: false, sockets: new Set(), opened: 0 };
  state.drop = () => {
    for (const socket of state.sockets) socket.destroy();
  };
  state.WebSocket = class extends DuplexSocket {
    constructor(url, protocols, options) {
      const target = state.down ? `ws://127.0.0.1:${deadPort}/ws` : url;
      super(target, protocols, {
        ...options,
        createConnection: ({ host, port }) => {
          const socket = net.connect(port, host);
          state.sockets.add(socket);
          socket.on('close', () => state.sockets.delete(socket));
          return socket;
        },
      });
      this.addEventListener('open', () => state.opened++);
    }
  };
  return state;
}

const FAST = { initialBackoff: 50, maxBackoff: 200, backoffMultiplier: 2 };

/** Checks every `reconnecting` delay against the configured schedule. */
function checkSchedule(client, options = FAST) {
  const delays = [];
  client.on('reconnecting', ({ attempt, delay }) => {
    delays.push(delay);
    const bound = Math.min(
      options.maxBackoff,
      options.initialBackoff * options.backoffMultiplier ** (attempt - 1),
    );
    assert.ok(attempt >= 1, `attempt ${attempt}`);
    assert.ok(delay >= 0 && delay <= bound, `attempt ${attempt}: delay ${delay} > ${bound}`);
  });
  return delays;
}

test('two clients: ordered messages, acks with seq, presence and members', { timeout: 20_000 }, async () => {
  const server = await startServe();
  const ada = new DuplexClient(server.url, { clientId: 'ada' });
  const bob = new DuplexClient(server.url, { clientId: 'bob' });
  try {
    const adaOpen = next(ada, 'open');
    const roomA = await ada.join('app/doc-42', { presence: { name: 'Ada' } });
    assert.deepEqual(await adaOpen, { clientId: 'ada', heartbeatMs: 30000 });
    assert.equal(ada.clientId, 'ada');
    assert.equal(ada.connected, true);
    const logA = record(roomA);
    assert.deepEqual([...roomA.members], [['ada', { name: 'Ada' }]]);

    const roomB = await bob.join('app/doc-42', { presence: { name: 'Bob' } });
    const logB = record(roomB);
    await waitFor(() => logA.joins.length === 1, 5000, "ada to see bob's join");
    assert.deepEqual(logA.joins, [{ client: 'bob', presence: { name: 'Bob' } }]);
    assert.deepEqual(roomA.members, new Map([['ada', { name: 'Ada' }], ['bob', { name: 'Bob' }]]));
    assert.deepEqual(roomB.members, roomA.members);

    // Interleaved publishes from both, without waiting in between.
    const acksA = [];
    const acksB = [];
    for (let i = 0; i < 10; i++) {
      acksA.push(roomA.publish({ from: 'ada', i }));
      acksB.push(roomB.publish({ from: 'bob', i }));
    }
    const seqA = await Promise.all(acksA);
    const seqB = await Promise.all(acksB);
    for (const seqs of [seqA, seqB]) {
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `acks in order: ${seqs}`);
    }
    assert.deepEqual([...seqA, ...seqB].sort((x, y) => x - y), [...Array(20).keys()].map((i) => i + 1));
    await waitFor(() => logA.messages.length === 20 && logB.messages.length === 20, 5000, 'all messages');
    assert.deepEqual(logA.messages, logB.messages);
    assert.deepEqual(
      logA.messages.map((m) => m.seq),
      [...Array(20).keys()].map((i) => i + 1),
    );
    for (const m of logA.messages) {
      const seqs = m.from === 'ada' ? seqA : seqB;
      assert.equal(seqs[m.data.i], m.seq, 'each ack carries the seq its message was delivered at');
      assert.equal(m.data.from, m.from);
    }

    roomB.setPresence({ name: 'Bob', typing: true });
    assert.deepEqual(roomB.members.get('bob'), { name: 'Bob', typing: true });
    await waitFor(() => logA.presence.length === 1, 5000, "ada to see bob's presence");
    assert.deepEqual(logA.presence, [{ client: 'bob', presence: { name: 'Bob', typing: true } }]);
    assert.deepEqual(roomA.members.get('bob'), { name: 'Bob', typing: true });

    await roomB.leave();
    await waitFor(() => logA.leaves.length === 1, 5000, "ada to see bob's leave");
    assert.deepEqual(logA.leaves, [{ client: 'bob' }]);
    assert.deepEqual([...roomA.members.keys()], ['ada']);
    await assert.rejects(roomB.publish('after leave'), { code: 'not_joined' });

    // No configured id: the server assigns one.
    const anon = new DuplexClient(server.url);
    try {
      const { clientId } = await next(anon, 'open');
      assert.match(clientId, /^[A-Za-z0-9_.:-]+$/);
      assert.equal(anon.clientId, clientId);
    } finally {
      anon.close();
    }
  } finally {
    ada.close();
    bob.close();
    await server.kill();
  }
});

test('refusals: the server rejects a publish with its code; local errors have codes', { timeout: 20_000 }, async () => {
  const server = await startServe(['--max-payload', '64']);
  const client = new DuplexClient(server.url);
  const errors = [];
  client.on('error', (e) => errors.push(e));
  try {
    const room = await client.join('app/limits');
    await assert.rejects(room.publish('x'.repeat(100)), (error) => {
      assert.equal(error.code, 'too_large');
      assert.ok(error instanceof Error);
      return true;
    });
    assert.equal(await room.publish('small'), 1, 'the connection stays usable');
    await assert.rejects(client.join('no-slash'), { code: 'bad_room' });
    await assert.rejects(client.join('app/limits'), { code: 'already_joined' });
    assert.equal(client.pendingPublishes, 0);
    assert.deepEqual(errors, []);
  } finally {
    client.close();
    await server.kill();
  }
});

test('takeover: a second client with the same id ends the first for good; a cut member list is flagged', { timeout: 30_000 }, async () => {
  const server = await startServe();
  const first = new DuplexClient(server.url, { ...FAST, clientId: 'twin' });
  const closes = [];
  first.on('close', (e) => closes.push(e));
  const crowd = [];
  let second;
  try {
    const room = await first.join('app/takeover');
    assert.equal(await room.publish('before'), 1);
    second = new DuplexClient(server.url, { ...FAST, clientId: 'twin' });
    const taken = second.join('app/takeover');
    await waitFor(() => closes.length > 0, 5000, 'the first client to be taken over');
    assert.deepEqual(closes, [{ reason: 'taken_over', final: true }]);
    await assert.rejects(room.publish('after'), { code: 'closed' });
    const kept = await taken;
    // The first client does not come back to take the id over in turn.
    await sleep(500);
    assert.equal(first.connected, false);
    assert.equal(second.connected, true);
    assert.deepEqual(closes.length, 1);
    assert.equal(await kept.publish('still mine'), 2);

    // 20 members with 4,000-byte presences exceed the 64 KiB member list of `joined`.
    const presence = { name: 'p'.repeat(4000) };
    for (let i = 0; i < 20; i++) {
      const client = new DuplexClient(server.url, { ...FAST, clientId: `crowd-${i}` });
      crowd.push(client);
      await client.join('app/crowd', { presence });
    }
    const late = new DuplexClient(server.url, { ...FAST, clientId: 'late' });
    crowd.push(late);
    const lateRoom = await late.join('app/crowd');
    assert.equal(lateRoom.membersTruncated, true);
    assert.ok(lateRoom.members.size < 21, `members listed: ${lateRoom.members.size}`);
    assert.ok(lateRoom.members.has('late'), 'the joining client is always listed');
    const small = await crowd[0].join('app/small');
    assert.equal(small.membersTruncated, false);
  } finally {
    first.close();
    second?.close();
    for (const client of crowd) client.close();
    await server.kill();
  }
});

test('offline: publishes queue up to the bound, then reject; close settles everything', { timeout: 20_000 }, async () => {
  const server = await startServe();
  const network = await controlledNetwork();
  const client = new DuplexClient(server.url, {
    ...FAST,
    maxOfflinePublishes: 2,
    WebSocket: network.WebSocket,
    // The network down is the WebSocket's alone: no fallback to the HTTP transports here.
    transports: ['websocket'],
  });
  const delays = checkSchedule(client);
  const closes = [];
  client.on('close', (e) => closes.push(e));
  try {
    const room = await client.join('app/offline');
    assert.equal(await room.publish('online'), 1);
    network.down = true;
    network.drop();
    await waitFor(() => closes.length === 1, 5000, 'the connection to be lost');
    assert.deepEqual(closes, [{ reason: 'socket_closed', final: false }]);
    assert.equal(client.connected, false);
    const first = room.publish('offline 1');
    const second = room.publish('offline 2');
    first.catch(() => {});
    second.catch(() => {});
    await assert.rejects(room.publish('offline 3'), { code: 'queue_full' });
    assert.equal(client.pendingPublishes, 2);
    await sleep(400);
    assert.ok(delays.length >= 2, `retries while the server is unreachable: ${delays}`);
    assert.ok(delays.length < 40, `no retry storm: ${delays.length} attempts in 400 ms`);
    // Never joined: its promise settles on close too.
    const never = client.join('app/never');
    client.close();
    await assert.rejects(first, { code: 'closed' });
    await assert.rejects(second, { code: 'closed' });
    await assert.rejects(never, { code: 'closed' });
    assert.deepEqual(closes.at(-1), { reason: 'closed', final: true });
    await assert.rejects(room.publish('after close'), { code: 'closed' });
    const attempts = delays.length;
    await sleep(300);
    assert.equal(delays.length, attempts, 'no reconnects after close()');
  } finally {
    client.close();
    await server.kill();
  }
});

test('dropped socket, server up: missed messages recovered with since, once, in order', { timeout: 30_000 }, async () => {
  const server = await startServe();
  const network = await controlledNetwork();
  const ada = new DuplexClient(server.url, { ...FAST, clientId: 'ada', WebSocket: network.WebSocket, transports: ['websocket'] });
  const bob = new DuplexClient(server.url, { ...FAST, clientId: 'bob' });
  checkSchedule(ada);
  try {
    const roomA = await ada.join('app/recover', { presence: { name: 'Ada' } });
    const logA = record(roomA);
    const roomB = await bob.join('app/recover');
    const logB = record(roomB);
    assert.equal(await roomB.publish('m1'), 1);
    await waitFor(() => logA.messages.length === 1, 5000, 'm1 at ada');

    network.down = true;
    network.drop();
    await next(ada, 'close');
    await waitFor(() => logB.leaves.length === 1, 5000, "bob to see ada's connection end");
    // Published while ada is away: bob's are sequenced now, ada's wait in her queue.
    const bobAcks = await Promise.all(['m2', 'm3', 'm4'].map((m) => roomB.publish(m)));
    assert.deepEqual(bobAcks, [2, 3, 4]);
    const adaAck = roomA.publish('a1');
    await sleep(150); // a few failed attempts against the unreachable address

    const reconnectedAt = performance.now();
    network.down = false;
    const opened = next(ada, 'open', 5000);
    await opened;
    assert.ok(
      performance.now() - reconnectedAt < FAST.maxBackoff + 1500,
      'reconnected within the backoff bound',
    );
    assert.equal(await adaAck, 5, "ada's offline publish sequenced after the recovered ones");
    await waitFor(() => logA.messages.length >= 5 && logB.messages.length >= 5, 5000, 'all messages');
    await sleep(200); // room for a duplicate to show up
    const expected = [
      [1, 'bob', 'm1'],
      [2, 'bob', 'm2'],
      [3, 'bob', 'm3'],
      [4, 'bob', 'm4'],
      [5, 'ada', 'a1'],
    ];
    assert.deepEqual(logA.messages.map((m) => [m.seq, m.from, m.data]), expected);
    assert.deepEqual(logB.messages.map((m) => [m.seq, m.from, m.data]), expected);
    assert.equal(logA.resyncs, 0, 'history covered the gap: no resync');
    assert.equal(logA.joined.length, 1, 'one rejoin');
    assert.equal(logA.joined[0].recovered, true);
    assert.deepEqual(roomA.position, { epoch: roomB.position.epoch, seq: 5 });
    await waitFor(() => logB.joins.length === 1, 5000, "bob to see ada back");
    assert.deepEqual(logB.joins, [{ client: 'ada', presence: { name: 'Ada' } }]);
    assert.deepEqual([...roomA.members.keys()], ['ada', 'bob']);
  } finally {
    ada.close();
    bob.close();
    await server.kill();
  }
});

test('server killed and restarted on the same port: reconnect, resync, queued publishes once', { timeout: 30_000 }, async () => {
  let server = await startServe();
  const { port } = server;
  const network = await controlledNetwork();
  const ada = new DuplexClient(server.url, { ...FAST, clientId: 'ada', WebSocket: network.WebSocket, transports: ['websocket'] });
  const bob = new DuplexClient(server.url, { ...FAST, clientId: 'bob' });
  const delaysA = checkSchedule(ada);
  const delaysB = checkSchedule(bob);
  try {
    const roomA = await ada.join('app/restart');
    const logA = record(roomA);
    const roomB = await bob.join('app/restart');
    const logB = record(roomB);
    assert.equal(await roomA.publish('before'), 1);
    await waitFor(() => logB.messages.length === 1, 5000, "'before' at bob");
    const epoch = roomB.position.epoch;

    // Ada stays offline until bob is back, so that bob's rejoin precedes her publishes.
    network.down = true;
    const closedA = next(ada, 'close');
    const closedB = next(bob, 'close');
    await server.kill();
    await Promise.all([closedA, closedB]);
    const acks = ['o1', 'o2', 'o3'].map((m) => roomA.publish(m));
    await sleep(500);
    const downAttempts = delaysB.length;
    assert.ok(downAttempts >= 2, `bob retried while the server was down: ${delaysB}`);
    assert.ok(downAttempts < 50, `no retry storm: ${downAttempts} attempts in 500 ms`);

    server = await restartServe([], port);
    const restartedAt = performance.now();
    const bobBack = await next(bob, 'open', 5000);
    assert.equal(bobBack.clientId, 'bob');
    const bobDelay = performance.now() - restartedAt;
    assert.ok(bobDelay < FAST.maxBackoff + 1500, `bob reconnected ${bobDelay} ms after the restart`);
    await waitFor(() => logB.resyncs === 1, 5000, 'resync at bob: the new server has no history');
    assert.notEqual(roomB.position.epoch, epoch, 'a new epoch');

    const openedAt = performance.now();
    network.down = false;
    await next(ada, 'open', 5000);
    assert.ok(performance.now() - openedAt < FAST.maxBackoff + 1500, 'ada reconnected within the bound');
    assert.deepEqual(await Promise.all(acks), [1, 2, 3]);
    await waitFor(() => logA.messages.length >= 4 && logB.messages.length >= 4, 5000, 'o1..o3');
    await sleep(200); // room for a duplicate to show up
    const expected = [
      [1, 'before'],
      [1, 'o1'],
      [2, 'o2'],
      [3, 'o3'],
    ];
    assert.deepEqual(logA.messages.map((m) => [m.seq, m.data]), expected);
    assert.deepEqual(logB.messages.map((m) => [m.seq, m.data]), expected);
    assert.equal(logA.resyncs, 1);
    assert.equal(logB.resyncs, 1);
    assert.equal(logA.joined.at(-1).recovered, false);
    assert.ok(delaysA.length >= 1 && delaysB.length >= 1);
  } finally {
    ada.close();
    bob.close();
    await server.kill();
  }
});

test('app-level heartbeat: a server that goes silent is detected within heartbeat_ms', { timeout: 20_000 }, async () => {
  // The socket stays open but the server never answers again: only the `ping` command can tell.
  const HEARTBEAT_MS = 300;
  let welcomedAt = 0;
  const commands = [];
  const server = await startRawServer({
    respond: (head) => accept(head, ['Sec-WebSocket-Protocol: duplex.v1']),
    onConnection: async (conn) => {
      const hello = await conn.readFrame();
      commands.push(JSON.parse(hello.payload.toString()).type);
      conn.socket.write(frame(0x1, Buffer.from(JSON.stringify({ type: 'welcome', client: 'c1', heartbeat_ms: HEARTBEAT_MS }))));
      welcomedAt = Date.now();
      for (;;) {
        const f = await conn.readFrame(10_000).catch(() => null);
        if (!f) return;
        if (f.opcode === 0x1) commands.push(JSON.parse(f.payload.toString()).type);
      }
    },
  });
  const client = new DuplexClient(server.url, {
    initialBackoff: 50,
    maxBackoff: 100,
    socketOptions: { perMessageDeflate: false },
  });
  try {
    const closed = new Promise((resolve) => client.on('close', resolve));
    const event = await closed;
    const after = Date.now() - welcomedAt;
    assert.match(String(event.reason), /heartbeat/, JSON.stringify(event));
    assert.equal(event.final, false, 'a lost connection is retried, not final');
    assert.ok(commands.includes('ping'), `a ping was sent: ${commands}`);
    // Silence for one interval triggers the ping; one more interval without an answer ends it.
    assert.ok(after >= 2 * HEARTBEAT_MS - 50, `detected after ${after} ms`);
    assert.ok(after <= 2 * HEARTBEAT_MS + 700, `detected after ${after} ms`);
  } finally {
    client.close();
    await server.close();
  }
});

test('unavailable: a publish is retried with the same id and in order, bounded; a join is retried', { timeout: 20_000 }, async () => {
  // A scripted server standing for a node whose broker is down: the first join and the first
  // three publish commands get `unavailable`, and so does every publish of `{ forever: true }`.
  const publishes = []; // [id, data.n] of every publish frame, in arrival order
  const server = await startRawServer({
    respond: (head) => accept(head, ['Sec-WebSocket-Protocol: duplex.v1']),
    onConnection: async (conn) => {
      const send = (message) => conn.socket.write(frame(0x1, Buffer.from(JSON.stringify(message))));
      await conn.readFrame();
      send({ type: 'welcome', client: 'c1', heartbeat_ms: 0 });
      const seqs = new Map();
      let joinDown = 1;
      let publishDown = 3;
      for (;;) {
        const f = await conn.readFrame(10_000).catch(() => null);
        if (!f) return;
        if (f.opcode !== 0x1) continue;
        const command = JSON.parse(f.payload.toString());
        const refuse = () =>
          send({ type: 'error', id: command.id, code: 'unavailable', message: 'broker down' });
        if (command.type === 'join') {
          if (joinDown-- > 0) refuse();
          else send({ type: 'joined', id: command.id, room: command.room, epoch: 'e', seq: 0, members: [], recovered: false });
        } else if (command.type === 'publish') {
          publishes.push([command.id, command.data.n]);
          if (command.data.forever || publishDown-- > 0) refuse();
          else {
            // Deduplicated by id, as the server does.
            if (!seqs.has(command.id)) seqs.set(command.id, seqs.size + 1);
            send({ type: 'ack', id: command.id, seq: seqs.get(command.id) });
          }
        }
      }
    },
  });
  const client = new DuplexClient(server.url, {
    initialBackoff: 20,
    maxBackoff: 50,
    socketOptions: { perMessageDeflate: false },
  });
  const errors = [];
  client.on('error', (error) => errors.push(error));
  try {
    const room = await client.join('app/chat'); // refused once, then joined
    const first = room.publish({ n: 1 });
    const second = room.publish({ n: 2 });
    assert.deepEqual(await Promise.all([first, second]), [1, 2]);
    // Both went out, both were refused; publish 1 was retried alone (same id) until acked, and
    // publish 2 only after it. (How often publish 1 went out depends on when the stale refusal
    // of publish 2 arrived.)
    const ns = publishes.map(([, n]) => n);
    assert.deepEqual(ns.slice(0, 2), [1, 2], JSON.stringify(ns));
    const retries = ns.slice(2);
    assert.ok(retries.filter((n) => n === 1).length >= 2, JSON.stringify(ns));
    assert.deepEqual(retries.filter((n) => n === 2), [2], JSON.stringify(ns));
    assert.ok(retries.lastIndexOf(1) < retries.indexOf(2), JSON.stringify(ns));
    assert.equal(new Set(publishes.filter(([, n]) => n === 1).map(([id]) => id)).size, 1);
    assert.equal(new Set(publishes.filter(([, n]) => n === 2).map(([id]) => id)).size, 1);
    // Bounded: 10 retries (the default), then the publish rejects with `unavailable`.
    const started = publishes.length;
    await assert.rejects(room.publish({ n: 3, forever: true }), (error) => error.code === 'unavailable');
    assert.equal(publishes.length - started, 11);
    assert.deepEqual(errors, []);
  } finally {
    client.close();
  }
  // The bound is an option: 2 retries, then final.
  const two = new DuplexClient(server.url, {
    initialBackoff: 20,
    maxBackoff: 50,
    unavailableRetries: 2,
    socketOptions: { perMessageDeflate: false },
  });
  try {
    const room = await two.join('app/chat'); // refused once, retried once
    const started = publishes.length;
    await assert.rejects(room.publish({ n: 4, forever: true }), (error) => error.code === 'unavailable');
    assert.equal(publishes.length - started, 3);
  } finally {
    two.close();
  }
  // 0 retries: the first `unavailable` is final, here the join's.
  const none = new DuplexClient(server.url, { unavailableRetries: 0, socketOptions: { perMessageDeflate: false } });
  try {
    await assert.rejects(none.join('app/chat'), (error) => error.code === 'unavailable');
  } finally {
    none.close();
    await server.close();
  }
});

test('send: a direct message to a member of a shared room; not_found, rate_limited, offline', { timeout: 20_000 }, async () => {
  const server = await startServe(['--send-rate', '5']);
  const ada = new DuplexClient(server.url, { clientId: 'ada' });
  const bob = new DuplexClient(server.url, { clientId: 'bob' });
  const cat = new DuplexClient(server.url, { clientId: 'cat' });
  try {
    await assert.rejects(ada.send('bob', 1), { code: 'offline' }, 'not queued while offline');
    await ada.join('app/call');
    await bob.join('app/call');
    await cat.join('app/other');
    const directs = [];
    bob.on('direct', (event) => directs.push(event));
    const catDirects = [];
    cat.on('direct', (event) => catDirects.push(event));
    assert.equal(await ada.send('bob', { sdp: 'offer' }), undefined);
    assert.equal(await ada.send('bob', 2), undefined);
    await waitFor(() => directs.length === 2, 5000, 'two direct messages');
    assert.deepEqual(directs, [
      { from: 'ada', data: { sdp: 'offer' } },
      { from: 'ada', data: 2 },
    ]);
    // No shared room and no such client: the same refusal.
    await assert.rejects(ada.send('cat', 1), (error) => {
      assert.equal(error.code, 'not_found');
      assert.ok(error instanceof Error);
      return true;
    });
    await assert.rejects(ada.send('nobody', 1), { code: 'not_found' });
    await assert.rejects(ada.send('b b', 1), { code: 'bad_client' });
    // 4 of the burst of 5 spent: of 6 more at once, at most 2 pass (one refilled meanwhile).
    const results = await Promise.allSettled([1, 2, 3, 4, 5, 6].map((n) => ada.send('bob', n)));
    const limited = results.filter((r) => r.status === 'rejected');
    assert.ok(limited.length >= 4, `${limited.length} refused`);
    for (const r of limited) assert.equal(r.reason.code, 'rate_limited');
    // And back.
    const got = next(ada, 'direct');
    await bob.send('ada', { sdp: 'answer' });
    assert.deepEqual(await got, { from: 'bob', data: { sdp: 'answer' } });
    assert.deepEqual(catDirects, []);
    // Close rejects what is still unanswered.
    const pending = ada.send('bob', 'late');
    ada.close();
    await assert.rejects(pending, { code: 'closed' });
  } finally {
    ada.close();
    bob.close();
    cat.close();
    await server.kill();
  }
});
