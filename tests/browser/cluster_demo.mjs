// The demo chat page (WASM client, DuplexClient with `since` recovery) on two pages through a
// load balancer in front of several `duplex serve --broker redis://` nodes, one node SIGKILLed
// mid-session. Run by tests/cluster_lb.sh, which starts Redis, the nodes and HAProxy.
//
//   node cluster_demo.mjs http://127.0.0.1:LB_PORT/ --nodes PORT:PID,PORT:PID,... [--name NAME]
//
// Each node is given by its own port (its /metrics is read directly, not through the balancer)
// and its pid (the one SIGKILLed). Checks, through the pages' own elements (demo_lib.mjs):
//   1. spread: a page opens 6 WebSockets to /ws through the balancer; each node's /metrics
//      (duplex_connections_open) must show them on more than one node (round-robin: 2 each);
//   2. ann, then ben open the page through the balancer (WASM client, short backoff) and join
//      one room; which node each landed on is read from the nodes' /metrics. cat opens the page
//      directly on the node to be killed (ben's), so that a member is certain to be lost with it;
//      all three see the three in #members;
//   3. ann and ben exchange messages: each once on both pages;
//   4. ben's node is SIGKILLed. ann and ben send more messages while ben reconnects (his are
//      queued by the client); ben's page (and ann's, if it was on the same node) is open again
//      through the balancer on another node within RECONNECT_MS;
//   5. every message, before and after the kill, shows exactly once on both pages, in one and the
//      same order on both, each sender's in the order sent;
//   6. cat (whose node is dead) leaves ann's and ben's #members within LEAVE_BOUND_MS of the kill
//      (README: a SIGKILLed node's members leave within 12 s), while ann and ben stay in each
//      other's #members, also after the dead node's members were reaped;
//   7. a message after all that reaches both pages once; no page error on ann's or ben's page.
// Prints `NAME: ok (...)` with the figures, or `NAME: FAIL: ...` with the pages' state; exits 1
// on failure. Bounded: every wait has a deadline, and the whole run has one.
import { Demo, parseArgs, report, sleep } from './demo_lib.mjs';
import { withBrowser } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 75_000;
const BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 1_000;
/** From the kill until the pages on the killed node are open again through the balancer. */
const RECONNECT_MS = 10_000;
/** The README's bound for the members of a SIGKILLed node to leave everywhere. */
const LEAVE_BOUND_MS = 12_000;
/** How long ann and ben must stay listed after the dead node's members left. */
const STAY_MS = 2_500;
const SPREAD_SOCKETS = 6;

const opts = parseArgs(process.argv.slice(2),
  'node cluster_demo.mjs http://127.0.0.1:LB_PORT/ --nodes PORT:PID,... [--name NAME]',
  { name: 'cluster-lb', nodes: '' });
const NAME = opts.name;
const nodes = opts.nodes.split(',').filter(Boolean).map((s) => {
  const [port, pid] = s.split(':').map(Number);
  return { port, pid, killed: false };
});
if (nodes.length < 2 || nodes.some((n) => !(n.port > 0 && n.pid > 0))) {
  console.error(`${NAME}: FAIL: --nodes '${opts.nodes}': expected PORT:PID for two nodes or more`);
  process.exit(2);
}
const nodeName = (n) => `node :${n.port}`;

const room = `app/cluster-lb-${Date.now().toString(36)}`;
const demo = new Demo(NAME, opts.url, { query: { room, backoff: BACKOFF_MS, maxBackoff: MAX_BACKOFF_MS } });
// Refused or failed reconnects while a node is dead (directly, or a 502/503 through the balancer).
demo.expectedConsole = /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/;

/** duplex_connections_open of each live node: [{node, open}]. */
async function openPerNode() {
  const out = [];
  for (const n of nodes.filter((x) => !x.killed)) {
    let text;
    try {
      const r = await fetch(`http://127.0.0.1:${n.port}/metrics`, { signal: AbortSignal.timeout(2_000) });
      text = await r.text();
    } catch (e) {
      throw new Error(`${nodeName(n)}: GET /metrics failed (${e.message})`);
    }
    const m = /^duplex_connections_open (\d+)$/m.exec(text);
    if (!m) throw new Error(`${nodeName(n)}: /metrics has no duplex_connections_open`);
    out.push({ node: n, open: Number(m[1]) });
  }
  return out;
}

const show = (counts) => counts.map((c) => `${nodeName(c.node)}=${c.open}`).join(' ');

/** Waits until the live nodes hold `total` WebSockets in all; resolves with the counts. */
async function waitTotal(total, what, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  let counts;
  for (;;) {
    counts = await openPerNode();
    if (counts.reduce((a, c) => a + c.open, 0) === total) return counts;
    if (Date.now() > deadline) return demo.fail(`${what}: the nodes hold ${show(counts)} WebSockets, expected ${total} in all`);
    await sleep(100);
  }
}

/** The node whose count grew from `before` to `after` by one (the one a new page landed on). */
async function landedOn(before, after, who) {
  const grown = after.filter((a) => a.open === (before.find((b) => b.node === a.node)?.open ?? 0) + 1);
  await demo.check(grown.length === 1, `${who}: cannot tell which node the page's WebSocket is on (${show(before)} -> ${show(after)})`);
  return grown[0].node;
}

async function spread(browser) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(new URL('/healthz', opts.url).href, { timeout: 10_000 });
    // One after the other, each open before the next: round-robin puts them on the nodes in turn.
    const opened = await page.evaluate(async (n) => {
      window.sockets = [];
      for (let i = 0; i < n; i++) {
        const ws = new WebSocket(new URL('/ws', location.href.replace(/^http/, 'ws')), 'duplex.v1');
        await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error(`socket ${i} failed`)); });
        window.sockets.push(ws);
      }
      return window.sockets.length;
    }, SPREAD_SOCKETS);
    const counts = await waitTotal(opened, `${SPREAD_SOCKETS} WebSockets through the balancer`);
    const used = counts.filter((c) => c.open > 0).length;
    await demo.check(used > 1, `the balancer put all ${SPREAD_SOCKETS} WebSockets on one node (${show(counts)})`);
    await page.evaluate(() => window.sockets.forEach((ws) => ws.close()));
    await waitTotal(0, 'the spread WebSockets closed');
    return show(counts);
  } finally {
    await context.close();
  }
}

/** Records the client's 'open' and 'close' events in the page (window.opens, window.closes). */
function record(user) {
  return user.page.evaluate(() => {
    window.opens = [];
    window.closes = [];
    window.duplex.chat.on('open', () => window.opens.push(Date.now()));
    window.duplex.chat.on('close', () => window.closes.push(Date.now()));
  });
}

async function scenario(browser) {
  const spreadShown = await spread(browser);

  // ann and ben through the balancer, one after the other, to see where each landed.
  const before = await waitTotal(0, 'before the pages');
  const ann = await demo.open(browser, 'ann');
  const joinedRoom = await demo.joined(ann, 'wasm');
  await demo.check(joinedRoom === room, `ann joined '${joinedRoom}', expected '${room}' from ?room=`);
  const withAnn = await waitTotal(1, 'ann connected');
  const annNode = await landedOn(before, withAnn, 'ann');
  const ben = await demo.open(browser, 'ben');
  await demo.joined(ben, 'wasm');
  const withBen = await waitTotal(2, 'ann and ben connected');
  const benNode = await landedOn(withAnn, withBen, 'ben');
  await demo.check(ann.id !== ben.id, `ann and ben got the same client id '${ann.id}'`);

  // cat directly on ben's node: certain to go down with it (its page keeps retrying that node).
  const victim = benNode;
  const catDemo = new Demo(NAME, `http://127.0.0.1:${victim.port}/`, { query: demo.query });
  catDemo.expectedConsole = demo.expectedConsole;
  const cat = await catDemo.open(browser, 'cat');
  await catDemo.joined(cat, 'wasm');
  demo.users.push(cat);
  for (const u of [ann, ben, cat]) await demo.membersAre(u, [ann, ben, cat], 'ann, ben and cat in #members');

  // Talk through the balancer across nodes.
  const sent = [];
  const say = async (user, text, how = 'enter') => {
    const t = `${text} (${demo.nonce})`;
    await demo.send(user, t, how);
    sent.push({ from: user.name, text: t });
  };
  await say(ben, 'hello ann');
  await say(ann, 'hi ben', 'button');
  await say(ben, 'how are you');
  await demo.deliveredAllOnce([ann, ben], sent);
  const beforeKill = sent.length;

  // ben's node dies.
  for (const u of [ann, ben]) await record(u);
  const onVictim = [ann, ben].filter((u) => (u === ann ? annNode : benNode) === victim);
  const killedAt = Date.now();
  process.kill(victim.pid, 'SIGKILL');
  victim.killed = true;
  // The client's 'close' event, not #status: the first reconnect can come sooner than a poll
  // of #status (its backoff is jittered from 0 ms, and the balancer answers at once).
  await demo.waitFor(ben, 'ben: the client reports the connection lost once his node is killed', () =>
    window.closes.length > 0, undefined, 5_000);
  // Both keep talking: ben's are queued until he is back, ann's go out at once (unless her node
  // died too).
  await say(ann, 'are you there');
  await say(ben, 'my node died');
  await say(ann, 'still here');
  await say(ben, 'queued 2');

  const reconnects = {};
  for (const u of onVictim) {
    await demo.waitFor(u, `${u.name}: #status 'open' again through the balancer within ${RECONNECT_MS / 1000}s of the kill`,
      () => document.getElementById('status').dataset.state === 'open', undefined,
      Math.max(100, killedAt + RECONNECT_MS - Date.now()));
    const opens = await u.page.evaluate(() => window.opens);
    await demo.check(opens.length > 0, `${u.name}: no 'open' event after the kill`);
    reconnects[u.name] = opens[0] - killedAt;
  }
  const after = await waitTotal(2, 'ann and ben connected again to the live nodes', 5_000);
  const where = show(after);

  await say(ann, 'welcome back');
  await say(ben, 'thanks');
  // Everything once on both pages.
  const recoveredMs = await demo.deliveredAllOnce([ann, ben], sent, 10_000);
  const orders = {};
  for (const u of [ann, ben]) {
    const shown = (await demo.messages(u)).filter((m) => m.text.endsWith(`(${demo.nonce})`));
    orders[u.name] = shown.map((m) => `${m.from}: ${m.text}`);
    for (const sender of ['ann', 'ben']) {
      const got = shown.filter((m) => m.from === sender).map((m) => m.text);
      const want = sent.filter((m) => m.from === sender).map((m) => m.text);
      await demo.check(JSON.stringify(got) === JSON.stringify(want),
        `${u.name}: #log shows ${sender}'s messages as ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    }
  }
  await demo.check(JSON.stringify(orders.ann) === JSON.stringify(orders.ben),
    `ann and ben show the messages in different orders: ann ${JSON.stringify(orders.ann)}, ben ${JSON.stringify(orders.ben)}`);

  // cat, on the dead node, leaves everywhere within the bound; ann and ben stay.
  let leftMs = 0;
  for (const u of [ann, ben]) {
    await demo.membersAre(u, [ann, ben], `cat (on the killed node) leaves #members within ${LEAVE_BOUND_MS / 1000}s of the kill`,
      Math.max(100, killedAt + LEAVE_BOUND_MS - Date.now()));
    leftMs = Math.max(leftMs, Date.now() - killedAt);
  }
  await catDemo.close(cat);
  demo.users = demo.users.filter((u) => u !== cat);
  // The dead node's members are reaped once: ben's old membership there must not take ben (now
  // on another node) out of anyone's list.
  const stayUntil = Date.now() + STAY_MS;
  while (Date.now() < stayUntil) {
    for (const u of [ann, ben]) {
      const ids = await u.page.evaluate(() => [...document.querySelectorAll('#members li[data-client]')].map((li) => li.dataset.client));
      await demo.check(ids.length === 2 && ids.includes(ann.id) && ids.includes(ben.id),
        `${u.name}: #members is [${ids}] ${Date.now() - killedAt} ms after the kill, expected ann and ben (${ann.id}, ${ben.id})`);
    }
    await sleep(200);
  }

  await say(ann, 'last one');
  await demo.deliveredAllOnce([ann, ben], sent.slice(-1));
  await demo.noErrors([ann, ben]);
  return {
    spreadShown, ann: nodeName(annNode), ben: nodeName(benNode), onVictim: onVictim.map((u) => u.name),
    reconnects, where, recoveredMs, leftMs, messages: sent.length, beforeKill,
  };
}

await report(demo, () => withBrowser(scenario, { timeoutMs: TOTAL_TIMEOUT_MS }), (r) =>
  `${room}: ${SPREAD_SOCKETS} WebSockets through the balancer spread as ${r.spreadShown}; ann on ${r.ann}, ben on ${r.ben}; ` +
  `that node SIGKILLed: ${Object.entries(r.reconnects).map(([u, ms]) => `${u} open again after ${ms} ms`).join(', ')} ` +
  `(now ${r.where}); ${r.messages} messages (${r.beforeKill} before the kill) once and in one order on both pages; ` +
  `cat left #members ${r.leftMs} ms after the kill, ann and ben stayed`);
