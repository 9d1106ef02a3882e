// @stomp/stompjs (over the `ws` package) against `duplex serve`, beside a duplex.v1 client.
//
//   node tests/interop/stomp_node.mjs PORT JWT_PORT JWT_SECRET [NODE_A_PORT NODE_B_PORT]
//
// PORT: `duplex serve` without tokens; JWT_PORT: the same with `--jwt-secret JWT_SECRET`;
// NODE_A_PORT, NODE_B_PORT: two `duplex serve --broker redis://…` nodes of one cluster.
// Every check throws on failure; the script exits 0 only when all passed, and stops itself.
import { createHmac } from 'node:crypto';
import assert from 'node:assert/strict';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

const [port, jwtPort, jwtSecret, nodeA, nodeB] = process.argv.slice(2);
if (!port || !jwtPort || !jwtSecret) {
  console.error('usage: stomp_node.mjs PORT JWT_PORT JWT_SECRET');
  process.exit(2);
}
setTimeout(() => {
  console.error('stomp_node: timed out');
  process.exit(1);
}, 60_000).unref();

const STOMP_PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves when `check()` is true, polling; rejects after `ms`. */
async function until(check, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A stompjs client, connected; `frames` collects ERROR frames, `closes` close events. */
async function stomp(url, options = {}, protocols = STOMP_PROTOCOLS) {
  const errors = [];
  const closes = [];
  let connected;
  const client = new Client({
    webSocketFactory: () => new WebSocket(url, protocols),
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    ...options,
    onConnect: (frame) => {
      connected = frame;
    },
    onStompError: (frame) => errors.push(frame),
    onWebSocketClose: (event) => closes.push(event),
  });
  client.activate();
  await until(() => connected || errors.length || closes.length, `${url} to connect`);
  return { client, connected, errors, closes };
}

/** A raw duplex.v1 client. */
async function duplexV1(url, clientId) {
  const ws = new WebSocket(url, ['duplex.v1']);
  const inbox = [];
  ws.on('message', (data) => inbox.push(JSON.parse(data.toString())));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const send = (message) => ws.send(JSON.stringify(message));
  send({ type: 'hello', client: clientId });
  await until(() => inbox.some((m) => m.type === 'welcome'), 'welcome');
  return { ws, inbox, send };
}

function jwt(sub, secret) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

const base = `ws://127.0.0.1:${port}`;
let checks = 0;
async function check(name, fn) {
  const started = Date.now();
  await fn();
  checks += 1;
  console.log(`ok - ${name} (${Date.now() - started} ms)`);
}

await check('stompjs and duplex.v1 share a room: one sequence, bodies, message-ids, receipts', async () => {
  const ada = await duplexV1(`${base}/ws`, 'ada');
  ada.send({ type: 'join', id: 1, room: 'app/chat' });
  await until(() => ada.inbox.some((m) => m.type === 'joined'), 'ada joined');
  const epoch = ada.inbox.find((m) => m.type === 'joined').epoch;

  const { client, connected } = await stomp(`${base}/stomp`, { connectHeaders: { login: 'bob' } });
  assert.equal(connected.command, 'CONNECTED');
  assert.equal(connected.headers.version, '1.2');
  assert.equal(connected.headers.session, 'bob');
  const got = [];
  let subscribed = false;
  client.watchForReceipt('sub-1', () => {
    subscribed = true;
  });
  client.subscribe('/topic/app/chat', (message) => got.push(message), { receipt: 'sub-1' });
  await until(() => subscribed, 'the SUBSCRIBE receipt');
  await until(() => ada.inbox.some((m) => m.type === 'join' && m.client === 'bob'), 'ada to see bob join');

  ada.send({ type: 'publish', id: 2, room: 'app/chat', data: { text: 'hi bob' } });
  ada.send({ type: 'publish', id: 3, room: 'app/chat', data: 'plain text' });
  await until(() => got.length === 2, 'two MESSAGE frames');
  assert.equal(got[0].headers.destination, '/topic/app/chat');
  assert.equal(got[0].headers['message-id'], `${epoch}:1`);
  assert.equal(got[0].headers.from, 'ada');
  assert.equal(got[0].headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(got[0].body), { text: 'hi bob' });
  assert.equal(got[1].headers['message-id'], `${epoch}:2`);
  assert.equal(got[1].headers['content-type'], 'text/plain');
  assert.equal(got[1].body, 'plain text');

  let acked = false;
  client.watchForReceipt('send-1', () => {
    acked = true;
  });
  client.publish({
    destination: '/topic/app/chat',
    body: JSON.stringify({ n: 3, text: 'from stomp' }),
    headers: { 'content-type': 'application/json', receipt: 'send-1' },
  });
  client.publish({ destination: '/topic/app/chat', body: 'just text' });
  await until(() => acked, 'the SEND receipt');
  await until(() => ada.inbox.filter((m) => m.type === 'message').length === 4, 'ada to get 4 messages');
  const seen = ada.inbox.filter((m) => m.type === 'message').map((m) => [m.seq, m.from, m.data]);
  assert.deepEqual(seen, [
    [1, 'ada', { text: 'hi bob' }],
    [2, 'ada', 'plain text'],
    [3, 'bob', { n: 3, text: 'from stomp' }],
    [4, 'bob', 'just text'],
  ]);
  await until(() => got.length === 4, 'bob to get his own messages');
  assert.deepEqual(got.map((m) => m.headers['message-id']), [1, 2, 3, 4].map((s) => `${epoch}:${s}`));

  // A SEND with an id header is delivered once however often it is retried.
  for (let i = 0; i < 3; i += 1) {
    client.publish({ destination: '/topic/app/chat', body: 'once', headers: { id: 'retry-1' } });
  }
  await sleep(300);
  assert.equal(ada.inbox.filter((m) => m.type === 'message' && m.data === 'once').length, 1);

  // deactivate() sends DISCONNECT with a receipt and resolves once the socket closed.
  await client.deactivate();
  await until(() => ada.inbox.some((m) => m.type === 'leave' && m.client === 'bob'), 'ada to see bob leave');
  ada.ws.close();
});

await check('/ws with a STOMP subprotocol is STOMP; the highest offered version is chosen', async () => {
  const { client, connected } = await stomp(`${base}/ws`, {}, ['v10.stomp', 'v11.stomp']);
  assert.equal(connected.headers.version, '1.1');
  await client.deactivate();
  // /stomp without any subprotocol (stomp.py offers none).
  const plain = await stomp(`${base}/stomp`, {}, []);
  assert.equal(plain.connected.headers.version, '1.2');
  await plain.client.deactivate();
});

await check('SUBSCRIBE with since replays what followed; client ack mode carries ack ids', async () => {
  const ada = await duplexV1(`${base}/ws`, 'ada2');
  ada.send({ type: 'join', id: 1, room: 'app/history' });
  for (let n = 1; n <= 5; n += 1) ada.send({ type: 'publish', id: n + 1, room: 'app/history', data: n });
  await until(() => ada.inbox.filter((m) => m.type === 'ack').length === 5, 'five acks');
  const epoch = ada.inbox.find((m) => m.type === 'joined').epoch;
  const { client } = await stomp(`${base}/stomp`);
  const got = [];
  client.subscribe('/topic/app/history', (m) => got.push(m), { since: `${epoch}:2`, ack: 'client-individual' });
  await until(() => got.length === 3, 'the replay of 3..5');
  assert.deepEqual(got.map((m) => m.body), ['3', '4', '5']);
  assert.equal(got[0].headers.ack, `${epoch}:3`);
  for (const m of got) m.ack();
  await sleep(100);
  await client.deactivate();
  ada.ws.close();
});

await check('heart-beats: the server beats every second when asked and the client stays connected', async () => {
  const { client, connected, closes } = await stomp(`${base}/stomp`, {
    heartbeatIncoming: 1000,
    heartbeatOutgoing: 1000,
  });
  assert.equal(connected.headers['heart-beat'], '1000,10000');
  let beats = 0;
  const ws = client.webSocket;
  ws.addEventListener('message', (event) => {
    if (String(event.data) === '\n') beats += 1;
  });
  await sleep(3500);
  assert.equal(closes.length, 0, 'stompjs dropped the connection: no heart-beats within 2 s');
  assert.ok(beats >= 2, `${beats} beats in 3.5 s`);
  await client.deactivate();
});

await check('a bad destination gets an ERROR frame with a message, then close', async () => {
  const { client, errors, closes } = await stomp(`${base}/stomp`);
  client.publish({ destination: '/queue/orders', body: 'x' });
  await until(() => errors.length === 1 && closes.length === 1, 'ERROR then close');
  assert.match(errors[0].headers.message, /is not \/topic\/NAMESPACE\/NAME/);
  await client.deactivate();
});

await check('with --jwt-secret: the token in passcode is the identity; a bad one gets ERROR', async () => {
  const good = await stomp(`ws://127.0.0.1:${jwtPort}/stomp`, {
    connectHeaders: { passcode: jwt('carol', jwtSecret) },
  });
  assert.equal(good.connected?.headers.session, 'carol');
  await good.client.deactivate();
  const bad = await stomp(`ws://127.0.0.1:${jwtPort}/stomp`, {
    connectHeaders: { passcode: jwt('carol', 'not-the-secret') },
  });
  await until(() => bad.errors.length === 1, 'ERROR');
  assert.equal(bad.connected, undefined);
  assert.match(bad.errors[0].headers.message, /unauthorized/);
  await bad.client.deactivate();
});

/** A raw STOMP socket: `frames` collects what the server sent (beats excluded). */
async function rawStomp(url) {
  const ws = new WebSocket(url, ['v12.stomp']);
  const frames = [];
  let closed = null;
  ws.on('message', (data) => {
    const text = data.toString();
    if (text !== '\n') frames.push(text);
  });
  ws.on('close', (code) => {
    closed = code;
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return { ws, frames, closed: () => closed };
}

await check('frames split over messages and batched in one; a bad frame gets ERROR, others go on', async () => {
  const a = await rawStomp(`${base}/stomp`);
  // CONNECT split in three messages, then SUBSCRIBE and SEND batched in one.
  a.ws.send('CONNECT\naccept-');
  a.ws.send('version:1.2\nlogin:raw\n');
  a.ws.send('\n\0');
  await until(() => a.frames.length === 1, 'CONNECTED');
  assert.match(a.frames[0], /^CONNECTED\n/);
  a.ws.send(
    'SUBSCRIBE\nid:0\ndestination:/topic/app/raw\nreceipt:s\n\n\0\n' +
      'SEND\ndestination:/topic/app/raw\ncontent-length:9\n\nwith\0nul!\0',
  );
  await until(() => a.frames.length === 3, 'RECEIPT and MESSAGE');
  assert.match(a.frames[1], /^RECEIPT\nreceipt-id:s\n/);
  assert.match(a.frames[2], /^MESSAGE\n/);
  assert.ok(a.frames[2].endsWith('\n\nwith\0nul!\0'), JSON.stringify(a.frames[2]));

  const b = await rawStomp(`${base}/stomp`);
  b.ws.send('CONNECT\naccept-version:1.2\n\n\0');
  await until(() => b.frames.length === 1, 'CONNECTED');
  b.ws.send('SEND\ndestination:/topic/app/raw\nbad-escape:\\t\n\nx\0');
  await until(() => b.frames.length === 2 && b.closed() !== null, 'ERROR then close');
  assert.match(b.frames[1], /^ERROR\n/);
  assert.match(b.frames[1], /undefined escape sequence/);
  // The first client is still served.
  a.ws.send('SEND\ndestination:/topic/app/raw\n\nstill here\0');
  await until(() => a.frames.length === 4, 'the next MESSAGE');
  assert.ok(a.frames[3].endsWith('\n\nstill here\0'));
  a.ws.close();
});

await check('with --jwt-secret: a bearer token on the WebSocket upgrade is used when CONNECT has none', async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${jwtPort}/stomp`, ['v12.stomp'], {
    headers: { Authorization: `Bearer ${jwt('dave', jwtSecret)}` },
  });
  const frames = [];
  ws.on('message', (data) => frames.push(data.toString()));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send('CONNECT\naccept-version:1.2\n\n\0');
  await until(() => frames.length === 1, 'CONNECTED');
  assert.match(frames[0], /\nsession:dave\n/);
  ws.close();
});

if (nodeA && nodeB) {
  await check('two nodes over Redis: STOMP on one node, duplex.v1 on the other, one sequence', async () => {
    const ada = await duplexV1(`ws://127.0.0.1:${nodeB}/ws`, 'ada-b');
    ada.send({ type: 'join', id: 1, room: 'app/nodes' });
    await until(() => ada.inbox.some((m) => m.type === 'joined'), 'ada joined on node B');
    const epoch = ada.inbox.find((m) => m.type === 'joined').epoch;
    const { client } = await stomp(`ws://127.0.0.1:${nodeA}/stomp`, { connectHeaders: { login: 'bob-a' } });
    const got = [];
    let subscribed = false;
    client.watchForReceipt('sub', () => {
      subscribed = true;
    });
    client.subscribe('/topic/app/nodes', (m) => got.push(m), { receipt: 'sub' });
    await until(() => subscribed, 'the SUBSCRIBE receipt');
    await until(() => ada.inbox.some((m) => m.type === 'join' && m.client === 'bob-a'), 'ada to see bob join across nodes');
    for (let n = 1; n <= 5; n += 1) {
      client.publish({ destination: '/topic/app/nodes', body: `s${n}` });
      ada.send({ type: 'publish', id: n + 1, room: 'app/nodes', data: `v${n}` });
    }
    await until(() => got.length === 10 && ada.inbox.filter((m) => m.type === 'message').length === 10, '10 messages on both');
    const stompSeq = got.map((m) => [m.headers['message-id'], m.body]);
    const v1Seq = ada.inbox.filter((m) => m.type === 'message').map((m) => [`${epoch}:${m.seq}`, m.data]);
    assert.deepEqual(stompSeq, v1Seq);
    assert.deepEqual(v1Seq.map(([id]) => id), [...Array(10).keys()].map((i) => `${epoch}:${i + 1}`));
    await client.deactivate();
    ada.ws.close();
  });
}

console.log(`stomp_node: ${checks} checks passed`);
process.exit(0);
