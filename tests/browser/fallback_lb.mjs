// The HTTP transports on several `duplex serve --broker redis://` nodes behind a load balancer
// without sticky sessions (round-robin HAProxy), one node SIGKILLed. Run by
// tests/fallback_lb.sh, which starts Redis, the nodes and HAProxy (with a response header
// `X-Served-By: NODE` naming the node that answered each request).
//
//   node fallback_lb.mjs http://127.0.0.1:LB_PORT/ --nodes NAME:PORT:PID,... [--name NAME]
//
// Three users in headless Chromium, each in a browser context of its own, on a page of the
// balancer's origin that imports the WASM client the nodes serve (/duplex-ws/browser.js) and
// runs a DuplexClient on one transport alone: ann on `websocket`, ben on `sse` (Chromium's own
// EventSource), cat on `longpoll`; all three join one room. Checks:
//   1. each node's own session id prefix (POST /ws/open on each node directly): the node that
//      holds a session is read from its id (`NODE-HEX`, docs/PROTOCOL.md "Several nodes");
//   2. every message published (by each, interleaved) shows exactly once on every page, in one
//      order (the room's seq), each sender's in the order sent;
//   3. spread: ben's and cat's requests (POSTs, polls: the page's fetch records the
//      X-Served-By of each answer) were answered by more than one node, not only by the node
//      holding their session: the others relayed them;
//   4. the node holding ben's (SSE) session is SIGKILLed; each publishes while ben is cut off
//      (his are queued by the client); ben (and whoever else was on that node) opens a new
//      session on a live node within RECONNECT_MS, on the same transport, and every message
//      (before, during and after the kill, their own offline ones included) shows exactly once
//      on every page, in one order; each publish resolved once with a distinct seq;
//   5. one more round from each after the recovery; no page error before the kill, and after it
//      none but the transports' failed requests while the node was dying (502/503 from the balancer, 404 unknown_session,
//      aborted or refused), which are counted.
// Prints `NAME: ok (...)` with the figures, or `NAME: FAIL: ...` with the pages' state; exits 1
// on failure. Every wait has a deadline, and the whole run has one.
import { withBrowser } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 70_000;
const STEP_MS = 10_000;
/** From the kill until the clients on the killed node are connected again on another one. */
const RECONNECT_MS = 15_000;
/** How long a delivered message is watched for a duplicate. */
const SETTLE_MS = 500;
const ROUND = 4;

const argv = process.argv.slice(2);
const opts = { url: null, nodes: '', name: 'fallback_lb' };
for (let i = 0; i < argv.length; i++) {
  const key = argv[i].startsWith('--') ? argv[i].slice(2) : null;
  if (key && key in opts && key !== 'url' && i + 1 < argv.length) opts[key] = argv[++i];
  else if (!key && !opts.url) opts.url = argv[i];
  else opts.url = 'bad';
}
const nodes = opts.nodes.split(',').filter(Boolean).map((s) => {
  const [name, port, pid] = s.split(':');
  return { name, port: Number(port), pid: Number(pid), id: null, killed: false };
});
const NAME = opts.name;
if (!/^http:\/\//.test(opts.url ?? '') || nodes.length < 2 || nodes.some((n) => !n.name || !(n.port > 0 && n.pid > 0))) {
  console.error('usage: node fallback_lb.mjs http://127.0.0.1:LB_PORT/ --nodes NAME:PORT:PID,... [--name NAME]');
  process.exit(2);
}

class Failure extends Error {}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nonce = Math.random().toString(16).slice(2, 10);
const room = `app/fallback-lb-${nonce}`;
const users = [];

/** Runs in each page: loads the client, opens it on `transport` alone, joins `room`. */
const START = async ({ name, transport, room }) => {
  const t = { name, msgs: [], reqs: [], sessions: [], opens: 0, errors: [], acks: [] };
  window.t = t;
  const mod = await import('/duplex-ws/browser.js');
  if (typeof mod.init === 'function') await mod.init();
  const nativeFetch = window.fetch.bind(window);
  const fetch = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    const path = new URL(url).pathname;
    const started = performance.now();
    try {
      const r = await nativeFetch(input, init);
      t.reqs.push({
        path, status: r.status, node: r.headers.get('x-served-by'), session: new URL(url).searchParams.get('session'),
        at: Date.now(), ms: Math.round(performance.now() - started),
      });
      if (path.endsWith('/ws/open') && r.ok) t.sessions.push((await r.clone().json()).session);
      return r;
    } catch (e) {
      t.reqs.push({ path, error: e.message });
      throw e;
    }
  };
  const wsUrl = new URL('/ws', location.href.replace(/^http/, 'ws')).href;
  const client = new mod.DuplexClient(wsUrl, {
    clientId: name, transports: [transport], storage: null, fetch, initialBackoff: 200, maxBackoff: 1_000,
  });
  window.client = client;
  client.on('open', () => t.opens++);
  client.on('error', (e) => t.errors.push(`client error ${e.code}: ${e.message}`));
  const r = await client.join(room);
  window.room = r;
  r.on('message', (m) => t.msgs.push({ seq: m.seq, from: m.from, text: m.data.text }));
  r.on('resync', () => t.errors.push('resync'));
  return client.transport;
};

const state = (u) => u.page.evaluate(() => ({
  transport: window.client.transport, connected: window.client.connected, msgs: window.t.msgs,
  sessions: window.t.sessions, reqs: window.t.reqs, opens: window.t.opens, errors: window.t.errors,
  acks: window.t.acks,
}));

async function snapshot() {
  const out = [];
  for (const u of users) {
    try {
      const s = await state(u);
      out.push(`  ${u.name}: ${s.transport} connected=${s.connected} sessions=[${s.sessions}] ` +
        `msgs=${JSON.stringify(s.msgs.map((m) => `${m.seq} ${m.from} ${m.text}`))} errors=${JSON.stringify(s.errors)} ` +
        `last requests=${JSON.stringify(s.reqs.slice(-6))}`);
    } catch (e) {
      out.push(`  ${u.name}: (no state: ${e.message.split('\n')[0]})`);
    }
  }
  return out.join('\n');
}

async function check(ok, what) {
  if (!ok) throw new Failure(`${what}\n${await snapshot()}`);
}

async function waitUntil(what, predicate, timeoutMs = STEP_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) await check(false, `${what} (not within ${timeoutMs} ms)`);
    await sleep(50);
  }
}

/** Publishes `text` from `u` without waiting for its ack (recorded in the page). */
const publish = (u, text) => u.page.evaluate((text) => {
  window.room.publish({ text }).then((seq) => window.t.acks.push({ text, seq }),
    (e) => window.t.errors.push(`publish '${text}' refused: ${e.code} ${e.message}`));
}, text);

/** Waits until every page shows every message of `sent` once, in one order; checks the order. */
async function deliveredAllOnce(sent, timeoutMs = STEP_MS) {
  const texts = sent.map((m) => m.text);
  const started = Date.now();
  await waitUntil(`all ${sent.length} messages on every page`, async () => {
    for (const u of users) {
      const s = await state(u);
      if (!texts.every((x) => s.msgs.some((m) => m.text === x))) return false;
    }
    return true;
  }, timeoutMs);
  const ms = Date.now() - started;
  await sleep(SETTLE_MS);
  let first = null;
  for (const u of users) {
    const s = await state(u);
    const mine = s.msgs.filter((m) => m.text.endsWith(`(${nonce})`));
    for (const x of texts) {
      const n = mine.filter((m) => m.text === x).length;
      await check(n === 1, `${u.name}: '${x}' shown ${n} times, expected once`);
    }
    const seqs = mine.map((m) => m.seq);
    await check(seqs.every((q, i) => i === 0 || q > seqs[i - 1]), `${u.name}: messages not in seq order: ${seqs}`);
    await check(mine.length === texts.length, `${u.name}: ${mine.length} messages shown, ${texts.length} sent`);
    const order = mine.map((m) => `${m.seq} ${m.from} ${m.text}`);
    if (first === null) first = order;
    await check(JSON.stringify(order) === JSON.stringify(first),
      `${u.name} shows another sequence than ${users[0].name}: ${JSON.stringify(order)}`);
    for (const w of users) {
      const got = mine.filter((m) => m.from === w.name).map((m) => m.text);
      const want = sent.filter((m) => m.from === w.name).map((m) => m.text);
      await check(JSON.stringify(got) === JSON.stringify(want),
        `${u.name}: ${w.name}'s messages shown as ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    }
  }
  return ms;
}

/** Every node's session id prefix, from a session opened (and closed) on it directly. */
async function nodeIds() {
  for (const n of nodes) {
    const r = await fetch(`http://127.0.0.1:${n.port}/ws/open`, { method: 'POST', signal: AbortSignal.timeout(2_000) });
    const { session } = await r.json();
    await fetch(`http://127.0.0.1:${n.port}/ws/close?session=${encodeURIComponent(session)}`,
      { method: 'POST', signal: AbortSignal.timeout(2_000) });
    // Without a broker a session id has no node part: the checks below then fail on what the
    // clients get (no relaying), which is what --no-broker shows.
    n.id = /^(.+)-[0-9a-f]+$/.exec(session)?.[1] ?? null;
    if (n.id === null) console.error(`${NAME}: ${n.name}: session id '${session}' is not NODE-HEX (no --broker?)`);
  }
  const ids = nodes.map((n) => n.id).filter((id) => id !== null);
  await check(new Set(ids).size === ids.length, `two nodes share a session prefix: ${ids}`);
}

const holder = (session) => nodes.find((n) => n.id !== null && session?.startsWith(`${n.id}-`));

/** Per node, how many of `user`'s requests since `from` it answered. */
async function served(u, from = 0) {
  const s = await state(u);
  const count = {};
  for (const r of s.reqs.slice(from)) if (r.node) count[r.node] = (count[r.node] ?? 0) + 1;
  return { count, total: s.reqs.length };
}
const showCount = (c) => Object.entries(c).sort().map(([k, v]) => `${k}=${v}`).join(' ') || 'none';

async function open(browser, name, transport) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const u = { name, transport, context, page, pageErrors: [] };
  page.on('pageerror', (e) => u.pageErrors.push(`pageerror: ${e.message}`));
  // Chromium asks for /favicon.ico (the nodes answer 404): not the client's.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.location().url?.endsWith('/favicon.ico')) u.pageErrors.push(m.text());
  });
  page.on('requestfailed', (r) => u.pageErrors.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  users.push(u);
  await page.goto(new URL('/healthz', opts.url).href, { timeout: STEP_MS });
  const got = await Promise.race([
    page.evaluate(START, { name, transport, room }),
    sleep(STEP_MS).then(() => null),
  ]);
  await check(got === transport, `${name}: client.transport '${got}' after joining ${room}, expected '${transport}' (or no join within ${STEP_MS} ms)`);
  return u;
}

/**
 * Console lines a page may show while a node dies: the transports' requests answered 502/503
 * by the balancer or 404 unknown_session, or failed on the network, and WebSockets that cannot
 * open. Anything else is a failure.
 */
const expectedError = (m) =>
  /^Failed to load resource: (the server responded with a status of (404|502|503) |net::ERR_[A-Z_]+$)/.test(m) ||
  /^EventSource's response has a MIME type \("[^"]*"\) that is not "text\/event-stream"/.test(m) ||
  /^(GET|POST) http:\/\/127\.0\.0\.1:\d+\/ws\/(open|sse|poll|send|close)(\?\S*)?: (net::ERR_[A-Z_]+)$/.test(m) ||
  /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/.test(m);

async function scenario(browser) {
  await nodeIds();
  const ann = await open(browser, 'ann', 'websocket');
  const ben = await open(browser, 'ben', 'sse');
  const cat = await open(browser, 'cat', 'longpoll');

  // 1. Interleaved publishes from all three.
  const sent = [];
  const say = async (u, text) => {
    const t = `${text} (${nonce})`;
    await publish(u, t);
    sent.push({ from: u.name, text: t });
  };
  for (let i = 1; i <= ROUND; i++) for (const u of users) await say(u, `${u.name} ${i} over ${u.transport}`);
  const liveMs = await deliveredAllOnce(sent);

  // 2. The sessions' requests went to several nodes.
  const sessions = {};
  const spread = {};
  for (const u of [ben, cat]) {
    const s = await state(u);
    await check(s.sessions.length === 1, `${u.name}: ${s.sessions.length} sessions opened, expected 1`);
    sessions[u.name] = s.sessions[0];
    const h = holder(s.sessions[0]);
    await check(h !== undefined, `${u.name}: session '${s.sessions[0]}' belongs to no node (${nodes.map((n) => n.id)})`);
    u.holder = h;
    const { count } = await served(u);
    spread[u.name] = count;
    const others = Object.entries(count).filter(([k]) => k !== h.name);
    await check(others.length > 0,
      `${u.name}: every request of session ${s.sessions[0]} (held by ${h.name}) answered by ${showCount(count)}: no relaying seen`);
  }

  // Nothing failed so far: no request refused (a relay that did not work shows as a 404 or 503).
  for (const u of users) await check(u.pageErrors.length === 0, `${u.name}: page errors before the kill ${JSON.stringify(u.pageErrors)}`);

  // 3. ben's node dies; everyone publishes meanwhile.
  const victim = ben.holder;
  const before = {};
  for (const u of users) before[u.name] = await state(u);
  const killedAt = Date.now();
  process.kill(victim.pid, 'SIGKILL');
  victim.killed = true;
  const beforeKill = sent.length;
  for (let i = 1; i <= 2; i++) for (const u of [ben, ann, cat]) await say(u, `offline ${i} from ${u.name}`);

  // 4. ben (and whoever else held a session or socket there) is back on a live node.
  const reconnects = {};
  for (const u of users) {
    const moved = u === ben || u.holder === victim;
    await waitUntil(`${u.name}: connected again on ${u.transport} within ${RECONNECT_MS} ms of the kill`, async () => {
      const s = await state(u);
      if (!s.connected || s.transport !== u.transport) return false;
      if (u.transport !== 'websocket' && moved && s.sessions.length <= before[u.name].sessions.length) return false;
      return true;
    }, Math.max(100, killedAt + RECONNECT_MS - Date.now()));
    const s = await state(u);
    if (s.opens > before[u.name].opens) reconnects[u.name] = Date.now() - killedAt;
    if (u.transport !== 'websocket' && s.sessions.length > before[u.name].sessions.length) {
      const last = s.sessions[s.sessions.length - 1];
      const h = holder(last);
      await check(h !== undefined && !h.killed, `${u.name}: new session '${last}' not on a live node`);
      sessions[u.name] = `${sessions[u.name]} -> ${last}`;
      u.holder = h;
    }
  }
  await check(reconnects.ben !== undefined, `ben: no new 'open' after his node was killed`);
  // The slowest answer ben and cat got after the kill (a request the balancer sent to the dead
  // node is held while HAProxy retries it there, then answered 503).
  const slowest = {};
  for (const u of [ben, cat]) {
    const after = (await state(u)).reqs.filter((r) => r.at > killedAt && r.ms !== undefined);
    const worst = after.reduce((a, r) => (a === null || r.ms > a.ms ? r : a), null);
    slowest[u.name] = worst ? `${worst.ms} ms (${worst.path} ${worst.status})` : 'none';
  }
  const recoveredMs = await deliveredAllOnce(sent, RECONNECT_MS);

  // 5. One more round after the recovery.
  for (const u of users) await say(u, `after from ${u.name}`);
  await deliveredAllOnce(sent);

  // Every publish resolved once, with distinct seqs.
  const seqs = new Set();
  for (const u of users) {
    const s = await state(u);
    const own = sent.filter((m) => m.from === u.name).map((m) => m.text);
    await check(JSON.stringify(s.acks.map((a) => a.text).sort()) === JSON.stringify([...own].sort()),
      `${u.name}: publishes resolved ${JSON.stringify(s.acks)}, expected each of ${JSON.stringify(own)} once`);
    for (const a of s.acks) seqs.add(a.seq);
    await check(s.errors.length === 0, `${u.name}: client errors ${JSON.stringify(s.errors)}`);
  }
  await check(seqs.size === sent.length, `${seqs.size} distinct seqs acked for ${sent.length} publishes`);

  let expected = 0;
  for (const u of users) {
    expected += u.pageErrors.filter(expectedError).length;
    const bad = u.pageErrors.filter((m) => !expectedError(m));
    await check(bad.length === 0, `${u.name}: page errors ${JSON.stringify(bad)}`);
  }
  return { liveMs, spread, sessions, victim: victim.name, reconnects, slowest, recoveredMs, messages: sent.length, beforeKill, expected };
}

try {
  const r = await withBrowser(scenario, { timeoutMs: TOTAL_TIMEOUT_MS });
  console.log(`${NAME}: ok (${room}: ann websocket, ben sse, cat longpoll through round-robin; ` +
    `${r.beforeKill} messages once everywhere in ${r.liveMs} ms; requests answered per node: ` +
    `ben ${showCount(r.spread.ben)}, cat ${showCount(r.spread.cat)}; ben's session's node ${r.victim} SIGKILLed: ` +
    `${Object.entries(r.reconnects).map(([u, ms]) => `${u} open again after ${ms} ms`).join(', ')} ` +
    `(slowest answer after the kill: ben ${r.slowest.ben}, cat ${r.slowest.cat}); ` +
    `sessions ${Object.entries(r.sessions).map(([u, s]) => `${u} ${s}`).join(', ')}; all ${r.messages} messages ` +
    `(${r.messages - r.beforeKill} from the kill on) once and in one order on every page, ${r.recoveredMs} ms after ` +
    `reconnecting; ${r.expected} failed requests while the node died)`);
} catch (e) {
  console.error(`${NAME}: FAIL: ${e instanceof Failure ? e.message : e.stack}`);
  process.exitCode = 1;
}
