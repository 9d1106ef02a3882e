// Fan-out of one room of `duplex serve` to subscribers on one transport: WebSocket (`ws`,
// duplex.v1), Server-Sent Events (`sse`: `POST /ws/open`, commands by `POST /ws/send`, a stream
// from `GET /ws/sse`) or long polling (`longpoll`: the same session, `GET /ws/poll` in a loop with
// `ack` on Node's keep-alive `http.Agent`; `longpoll-socket`: the same polls written by hand on
// one keep-alive socket per subscriber), as docs/PROTOCOL.md "HTTP transports" specifies them.
//
//   CLK_TCK=$(getconf CLK_TCK) node transport-fanout.mjs PORT SERVER_PID KIND SUBSCRIBERS MESSAGES RATE
//
// One duplex.v1 WebSocket publisher sends MESSAGES publishes at RATE per second (on a fixed
// schedule, not waiting for deliveries), each carrying its send time in `data.t`. Every
// subscriber must get every message once and in order (no gap, no close, no repeat), or the run
// fails. Measured between the first publish and the last delivery: the server's CPU
// (utime+stime of SERVER_PID from /proc/PID/stat, all its threads), deliveries/s, and the
// latency publish → receipt of every delivery (one clock: this process's). Prints one JSON line.
import http from 'node:http';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

const [port, pid, kind, subscribersArg, messagesArg, rateArg] = process.argv.slice(2);
const subscribers = Number(subscribersArg);
const messages = Number(messagesArg);
const rate = Number(rateArg);
const KINDS = ['ws', 'sse', 'longpoll', 'longpoll-socket'];
if (!port || !pid || !KINDS.includes(kind) || !(subscribers > 0) || !(messages > 0) || !(rate > 0)) {
  console.error('usage: transport-fanout.mjs PORT SERVER_PID ws|sse|longpoll|longpoll-socket SUBSCRIBERS MESSAGES RATE');
  process.exit(2);
}
const CLK_TCK = Number(process.env.CLK_TCK || 100);
setTimeout(() => {
  console.error(`transport-fanout ${kind}: timed out (${received} of ${subscribers * messages} deliveries)`);
  process.exit(1);
}, 300_000).unref();
const room = `bench/transports-${kind}-${process.pid}`;
const host = '127.0.0.1';

/** utime + stime of the server (every thread), in seconds. */
function serverCpu() {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

// --- deliveries, checked ---------------------------------------------------------------------

const expected = new Array(subscribers).fill(1);
const latencies = new Float64Array(subscribers * messages);
let received = 0;
let failure = null;
let lastAt = 0;
let finish;
const finished = new Promise((resolve) => {
  finish = resolve;
});

function fail(why) {
  if (!failure) {
    failure = why;
    finish();
  }
}

/** A server message `m` for subscriber `i`, received at `now`. */
function onMessage(i, m, now) {
  if (m.type === 'gap') return fail(`${kind} subscriber ${i}: gap ${JSON.stringify(m)}`);
  if (m.type === 'error') return fail(`${kind} subscriber ${i}: error ${JSON.stringify(m)}`);
  if (m.type !== 'message' || m.room !== room) return;
  const n = m.data.n;
  if (n !== expected[i]) return fail(`${kind} subscriber ${i}: got message ${n}, want ${expected[i]}`);
  expected[i] = n + 1;
  latencies[received] = now - m.data.t;
  received += 1;
  if (received === subscribers * messages) {
    lastAt = now;
    finish();
  }
}

// --- HTTP ------------------------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: subscribers + 16 });

/** One request on the keep-alive agent: `{status, body}`. */
function request(method, path, body = '', headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port, method, path, agent, headers: { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body), ...headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function openSession() {
  const reply = await request('POST', '/ws/open');
  if (reply.status !== 200) throw new Error(`POST /ws/open: ${reply.status} ${reply.body}`);
  return JSON.parse(reply.body).session;
}

/** `POST /ws/send` of `commands` as one body, one per line. */
async function post(session, seq, commands) {
  const body = commands.map((c) => JSON.stringify(c)).join('\n');
  const reply = await request('POST', `/ws/send?session=${session}&seq=${seq}`, body);
  if (reply.status !== 204) throw new Error(`POST /ws/send: ${reply.status} ${reply.body}`);
}

const sessions = [];
let done = false;
let polls = 0;
let streams = 0;

// --- subscribers -----------------------------------------------------------------------------

function waiter() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

function wsOpen() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${host}:${port}/ws`, ['duplex.v1'], { perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

async function wsSubscriber(i) {
  const ws = await wsOpen();
  const joined = waiter();
  ws.on('message', (data) => {
    const now = performance.now();
    const m = JSON.parse(data.toString());
    if (m.type === 'joined') return joined.resolve();
    onMessage(i, m, now);
  });
  ws.on('close', () => {
    if (!done) fail(`ws subscriber ${i}: closed`);
  });
  ws.send(JSON.stringify({ type: 'hello', client: `w${i}-${process.pid}` }));
  ws.send(JSON.stringify({ type: 'join', id: 1, room }));
  await joined.promise;
  return ws;
}

/**
 * An SSE stream of `session` from after message `last` (none: from the start), read from a
 * plain `http.request` without keep-alive; it reopens itself with `Last-Event-ID` when the
 * server ends it (after its lifetime). `opened` resolves at its `ready` event.
 */
function sseStream(i, session, state, opened) {
  const headers = { Accept: 'text/event-stream' };
  if (state.last > 0) headers['Last-Event-ID'] = String(state.last);
  streams += 1;
  const req = http.request({ host, port, method: 'GET', path: `/ws/sse?session=${session}`, agent: false, headers }, (res) => {
    if (res.statusCode !== 200) return fail(`sse subscriber ${i}: GET /ws/sse answered ${res.statusCode}`);
    let buffer = '';
    res.setEncoding('utf8');
    res.on('data', (chunk) => {
      const now = performance.now();
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        let id = null;
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('data: ')) data = line.slice(6);
          else if (line.startsWith('id: ')) id = Number(line.slice(4));
          else if (line.startsWith('event: ')) event = line.slice(7);
        }
        if (event === 'ready') {
          opened();
        } else if (event === 'close') {
          fail(`sse subscriber ${i}: the session was closed: ${data}`);
        } else if (event === 'message' && data) {
          if (!(id > state.last)) return fail(`sse subscriber ${i}: event ${id} after ${state.last}`);
          state.last = id;
          const m = JSON.parse(data);
          if (m.type === 'joined') state.joined();
          else onMessage(i, m, now);
        }
      }
    });
    res.on('end', () => {
      if (!done && !failure) sseStream(i, session, state, () => {});
    });
  });
  req.on('error', (e) => {
    if (!done) fail(`sse subscriber ${i}: ${e.message}`);
  });
  req.end();
}

async function sseSubscriber(i) {
  const session = await openSession();
  sessions.push(session);
  const opened = waiter();
  const joined = waiter();
  const state = { last: 0, joined: joined.resolve };
  sseStream(i, session, state, opened.resolve);
  await opened.promise;
  await post(session, 1, [
    { type: 'hello', client: `s${i}-${process.pid}` },
    { type: 'join', id: 1, room },
  ]);
  await joined.promise;
}

async function longpollSubscriber(i) {
  const session = await openSession();
  sessions.push(session);
  await post(session, 1, [
    { type: 'hello', client: `l${i}-${process.pid}` },
    { type: 'join', id: 1, room },
  ]);
  const joined = waiter();
  let ack = 0;
  (async () => {
    while (!done && !failure) {
      let reply;
      try {
        reply = await request('GET', `/ws/poll?session=${session}&ack=${ack}`);
      } catch (e) {
        if (!done) fail(`longpoll subscriber ${i}: ${e.message}`);
        return;
      }
      const now = performance.now();
      polls += 1;
      if (reply.status !== 200) return fail(`longpoll subscriber ${i}: GET /ws/poll answered ${reply.status} ${reply.body}`);
      const body = JSON.parse(reply.body);
      if (body.close) return fail(`longpoll subscriber ${i}: the session was closed: ${JSON.stringify(body.close)}`);
      for (const m of body.messages) {
        if (m.type === 'joined') joined.resolve();
        else onMessage(i, m, now);
      }
      if (body.last !== null) ack = body.last;
    }
  })();
  await joined.promise;
}

/**
 * Long polls on one keep-alive socket of this subscriber, HTTP/1.1 written and read by hand
 * (`longpoll-socket`): the same requests as `longpoll` at a fraction of `http.Agent`'s cost in
 * this process, so that its latency is the server's rather than the load generator's.
 */
function socketPoller(i, session) {
  const joined = waiter();
  const socket = net.connect({ host, port: Number(port) });
  socket.setNoDelay(true);
  let ack = 0;
  let buffer = Buffer.alloc(0);
  const poll = () => socket.write(`GET /ws/poll?session=${session}&ack=${ack} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  socket.on('connect', poll);
  socket.on('data', (chunk) => {
    const now = performance.now();
    buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
    for (;;) {
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buffer.toString('latin1', 0, end);
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1]);
      if (!(length >= 0)) return fail(`longpoll subscriber ${i}: an answer without Content-Length: ${head}`);
      if (buffer.length < end + 4 + length) return;
      const body = buffer.toString('utf8', end + 4, end + 4 + length);
      buffer = buffer.subarray(end + 4 + length);
      polls += 1;
      if (!head.startsWith('HTTP/1.1 200')) return fail(`longpoll subscriber ${i}: ${head.split('\r\n')[0]} ${body}`);
      const answer = JSON.parse(body);
      if (answer.close) return fail(`longpoll subscriber ${i}: the session was closed: ${JSON.stringify(answer.close)}`);
      for (const m of answer.messages) {
        if (m.type === 'joined') joined.resolve();
        else onMessage(i, m, now);
      }
      if (answer.last !== null) ack = answer.last;
      if (done || failure) return socket.destroy();
      poll();
    }
  });
  socket.on('error', (e) => {
    if (!done) fail(`longpoll subscriber ${i}: ${e.message}`);
  });
  socket.on('close', () => {
    if (!done) fail(`longpoll subscriber ${i}: the server closed the connection`);
  });
  return joined.promise;
}

async function socketLongpollSubscriber(i) {
  const session = await openSession();
  sessions.push(session);
  await post(session, 1, [
    { type: 'hello', client: `k${i}-${process.pid}` },
    { type: 'join', id: 1, room },
  ]);
  await socketPoller(i, session);
}

const subscribe = {
  ws: wsSubscriber,
  sse: sseSubscriber,
  longpoll: longpollSubscriber,
  'longpoll-socket': socketLongpollSubscriber,
}[kind];
const sockets = [];
for (let i = 0; i < subscribers; i += 50) {
  const batch = [...Array(Math.min(50, subscribers - i)).keys()].map((k) => subscribe(i + k));
  for (const ws of await Promise.all(batch)) if (ws) sockets.push(ws);
}

// --- the publisher ---------------------------------------------------------------------------

const publisher = await wsOpen();
sockets.push(publisher);
const publisherJoined = waiter();
publisher.on('message', (data) => {
  const m = JSON.parse(data.toString());
  if (m.type === 'joined') publisherJoined.resolve();
  else if (m.type === 'error') fail(`publisher: ${data}`);
});
publisher.send(JSON.stringify({ type: 'hello', client: `publisher-${process.pid}` }));
publisher.send(JSON.stringify({ type: 'join', id: 0, room }));
await publisherJoined.promise;
// Let the subscribers' joins and their first polls settle before the window opens.
await new Promise((resolve) => setTimeout(resolve, 500));
polls = 0;

const interval = 1000 / rate;
const cpu0 = serverCpu();
const load0 = process.cpuUsage();
const t0 = performance.now();
for (let n = 1; n <= messages && !failure; n += 1) {
  const due = t0 + (n - 1) * interval;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const t = performance.now();
  publisher.send(JSON.stringify({ type: 'publish', id: n, room, data: { n, t, text: 'a chat line of about sixty bytes' } }));
}
const sentIn = performance.now() - t0;
await finished;
if (failure) {
  console.error(failure);
  process.exit(1);
}
const cpu = serverCpu() - cpu0;
const load = process.cpuUsage(load0);
done = true;
const seconds = (lastAt - t0) / 1000;
const sorted = latencies.sort();
const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
console.log(
  JSON.stringify({
    kind,
    subscribers,
    messages,
    rate,
    sent_rate: Math.round((messages - 1) / (sentIn / 1000)),
    deliveries: received,
    seconds: Number(seconds.toFixed(3)),
    deliveries_per_s: Math.round(received / seconds),
    server_cpu_s: Number(cpu.toFixed(2)),
    cpu_us_per_delivery: Number(((cpu * 1e6) / received).toFixed(2)),
    p50_ms: Number(pct(50).toFixed(2)),
    p99_ms: Number(pct(99).toFixed(2)),
    max_ms: Number(sorted[sorted.length - 1].toFixed(2)),
    load_cpu: Number(((load.user + load.system) / 1e6 / seconds).toFixed(2)),
    ...(kind.startsWith('longpoll') ? { polls, messages_per_poll: Number((received / polls).toFixed(2)) } : {}),
    ...(kind === 'sse' ? { streams } : {}),
  }),
);

// Sessions end now rather than at their idle timeout, in the next kind's window.
await Promise.race([
  Promise.all(sessions.map((s) => request('POST', `/ws/close?session=${s}`).catch(() => {}))),
  new Promise((resolve) => setTimeout(resolve, 10_000)),
]);
for (const ws of sockets) ws.terminate();
process.exit(0);
