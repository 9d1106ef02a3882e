// Fan-out to STOMP subscribers vs duplex.v1 members of one room of `duplex serve`, measured as
// the server's CPU per delivered message (from /proc/PID/task/*/schedstat, nanoseconds).
//
//   node stomp-fanout.mjs PORT SERVER_PID KIND SUBSCRIBERS MESSAGES
//
// KIND: `stomp` (SUBSCRIBE on /stomp) or `v1` (join on /ws). One duplex.v1 publisher sends
// MESSAGES publishes of a 60-byte JSON object, each after the previous one reached every
// subscriber (so the run measures deliveries, not queueing). Every subscriber must get every
// message once and in order, or the run fails. Prints one JSON line.
import { readFileSync, readdirSync } from 'node:fs';
import WebSocket from 'ws';

const [port, pid, kind, subscribersArg, messagesArg] = process.argv.slice(2);
const subscribers = Number(subscribersArg);
const messages = Number(messagesArg);
if (!port || !pid || !['stomp', 'v1'].includes(kind) || !(subscribers > 0) || !(messages > 0)) {
  console.error('usage: stomp-fanout.mjs PORT SERVER_PID stomp|v1 SUBSCRIBERS MESSAGES');
  process.exit(2);
}
setTimeout(() => {
  console.error('stomp-fanout: timed out');
  process.exit(1);
}, 300_000).unref();
const room = `bench/fanout-${kind}-${process.pid}`;

function cpuNs() {
  let total = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
  }
  return total;
}

function open(path, protocol) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, [protocol], { perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

let received = 0;
const expected = new Array(subscribers).fill(1);
let failure = null;
const waiters = [];
function bump() {
  received += 1;
  while (waiters.length && waiters[0].at <= received) waiters.shift().resolve();
}
const reach = (at) => new Promise((resolve) => waiters.push({ at, resolve }));

async function subscriber(i) {
  if (kind === 'stomp') {
    const ws = await open('/stomp', 'v12.stomp');
    let ready;
    const done = new Promise((resolve) => {
      ready = resolve;
    });
    ws.on('message', (data) => {
      const text = data.toString();
      if (text.startsWith('RECEIPT')) return ready();
      if (!text.startsWith('MESSAGE')) return;
      const n = JSON.parse(text.slice(text.indexOf('\n\n') + 2, -1)).n;
      if (n !== expected[i]) failure ??= `stomp subscriber ${i}: got ${n}, want ${expected[i]}`;
      expected[i] = n + 1;
      bump();
    });
    ws.send(`CONNECT\naccept-version:1.2\nlogin:s${i}\n\n\0`);
    ws.send(`SUBSCRIBE\nid:0\ndestination:/topic/${room}\nreceipt:r\n\n\0`);
    await done;
    return ws;
  }
  const ws = await open('/ws', 'duplex.v1');
  let ready;
  const done = new Promise((resolve) => {
    ready = resolve;
  });
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.type === 'joined') return ready();
    if (m.type !== 'message') return;
    if (m.data.n !== expected[i]) failure ??= `v1 subscriber ${i}: got ${m.data.n}, want ${expected[i]}`;
    expected[i] = m.data.n + 1;
    bump();
  });
  ws.send(JSON.stringify({ type: 'hello', client: `v${i}` }));
  ws.send(JSON.stringify({ type: 'join', id: 1, room }));
  await done;
  return ws;
}

const sockets = [];
for (let i = 0; i < subscribers; i += 50) {
  sockets.push(...(await Promise.all([...Array(Math.min(50, subscribers - i)).keys()].map((k) => subscriber(i + k)))));
}
const publisher = await open('/ws', 'duplex.v1');
publisher.send(JSON.stringify({ type: 'hello', client: `publisher-${process.pid}` }));
publisher.send(JSON.stringify({ type: 'join', id: 0, room }));
await new Promise((resolve) => {
  publisher.on('message', (data) => {
    if (JSON.parse(data.toString()).type === 'joined') resolve();
  });
});

const cpu0 = cpuNs();
const t0 = process.hrtime.bigint();
for (let n = 1; n <= messages; n += 1) {
  publisher.send(JSON.stringify({ type: 'publish', id: n, room, data: { n, text: 'a chat line of about sixty bytes' } }));
  await reach(n * subscribers);
  if (failure) break;
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = (cpuNs() - cpu0) / 1e9;
if (failure) {
  console.error(failure);
  process.exit(1);
}
console.log(
  JSON.stringify({
    kind,
    subscribers,
    messages,
    deliveries: received,
    seconds: Number(seconds.toFixed(3)),
    deliveries_per_s: Math.round(received / seconds),
    server_cpu_s: Number(cpu.toFixed(4)),
    cpu_us_per_delivery: Number(((cpu * 1e6) / received).toFixed(3)),
  }),
);
for (const ws of [...sockets, publisher]) ws.terminate();
process.exit(0);
