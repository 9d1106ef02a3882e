// The demo chat page of `duplex serve` (native/src/serve/page.html), driven by
// two users in headless Chromium.
//
//   node demo_page.mjs http://127.0.0.1:PORT/ [--name NAME]
//
// Two browser contexts (separate storage, like two people) open the page as
// ?name=ann and ?name=ben, wait for `document.body.dataset.ready === "1"` and
// for the room of the #room input to be joined, then check, through the page's
// own elements:
//   - each sees both users in #members (li[data-client], named from presence);
//   - ben types in #text: ann's #typing names ben (ben's own does not), and
//     clears once ben stops typing (the page sends typing:false after 1.5 s);
//   - ben sends with Enter, ann with the Send button: both #log lists show
//     each message exactly once, and sending clears the typing indicator;
//   - window.duplex drives the same client: chat.clientId, ping() resolves to
//     a pong, room.publish() resolves to the message's seq, which ben's page
//     then shows and records;
//   - ben closes his page: ann's #members loses him and #log notes it.
// Any uncaught error on either page fails the run too. Prints
// `interop(NAME): ok ...`, or the first failure with both pages' state and
// exits 1. Bounded: every wait has a deadline and the whole run has one.
import { randomBytes } from 'node:crypto';
import { chromiumVersion, withBrowser } from './lib.mjs';

const STEP_TIMEOUT_MS = 10_000;
const TOTAL_TIMEOUT_MS = 60_000;
/** How long a message is watched for a duplicate after it first appears. */
const SETTLE_MS = 500;

function usage() {
  console.error('usage: node demo_page.mjs http://127.0.0.1:PORT/ [--name NAME]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: null, name: 'chromium-demo' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--name' && i + 1 < argv.length) {
      opts.name = argv[++i];
    } else if (!a.startsWith('--') && !opts.url) {
      opts.url = a;
    } else {
      usage();
    }
  }
  if (!opts.url || !/^https?:\/\//.test(opts.url)) usage();
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const NAME = `interop(${opts.name})`;
const nonce = randomBytes(4).toString('hex');

/** What a page shows, for failure reports. */
async function snapshot(user) {
  if (user.page.isClosed()) return `${user.name}: page closed`;
  try {
    const s = await user.page.evaluate(() => ({
      status: document.getElementById('status')?.textContent,
      members: [...document.querySelectorAll('#members li')].map((li) => `${li.textContent}=${li.dataset.client}`),
      typing: document.getElementById('typing')?.textContent,
      log: [...document.querySelectorAll('#log li')].map((li) => li.textContent),
    }));
    return `${user.name}: status '${s.status}', members [${s.members.join(', ')}], typing '${s.typing}', log ${JSON.stringify(s.log)}`;
  } catch (e) {
    return `${user.name}: cannot read the page (${e.message.split('\n')[0]})`;
  }
}

class Failure extends Error {}

let users = [];

async function fail(what) {
  const states = await Promise.all(users.map(snapshot));
  throw new Failure(`${what}\n  ${states.join('\n  ')}`);
}

/** Waits until `predicate(arg)` holds in the user's page; fails with `what` otherwise. */
async function waitFor(user, what, predicate, arg, timeoutMs = STEP_TIMEOUT_MS) {
  try {
    await user.page.waitForFunction(predicate, arg, { timeout: timeoutMs, polling: 50 });
  } catch (e) {
    if (e instanceof Failure) throw e;
    await fail(`${what}: not within ${timeoutMs / 1000}s (${e.message.split('\n')[0]})`);
  }
}

function check(condition, what) {
  if (!condition) return fail(what);
  return Promise.resolve();
}

async function open(browser, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const user = { name, context, page, errors: [], id: null };
  page.on('pageerror', (e) => user.errors.push(`uncaught: ${e.message}`));
  // A failed load is reported with its URL below; the console's copy of it has none.
  page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') &&
    user.errors.push(`console: ${m.text()}`));
  // The page links no icon, so Chromium asks for /favicon.ico, which `duplex serve` does not
  // serve: that 404 is not the page's failure; any other is.
  page.on('response', (r) => r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico' &&
    user.errors.push(`GET ${r.url()}: ${r.status()}`));
  page.on('requestfailed', (r) => user.errors.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  users.push(user);
  const url = new URL(opts.url);
  url.searchParams.set('name', name);
  const response = await page.goto(url.href, { timeout: STEP_TIMEOUT_MS });
  await check(response?.ok(), `${name}: GET ${url.href} answered ${response?.status()}`);
  return user;
}

/** Ready, connected, and joined to the room of the #room input. */
async function joined(user) {
  await waitFor(user, `${user.name}: document.body.dataset.ready === "1"`,
    () => document.body.dataset.ready === '1');
  // The page enables #text and lists its own client in #members once `joined` arrived.
  await waitFor(user, `${user.name}: joining the room of #room`, () => {
    const id = window.duplex?.chat?.clientId;
    return !document.getElementById('text').disabled && typeof id === 'string' &&
      [...document.querySelectorAll('#members li[data-client]')].some((li) => li.dataset.client === id);
  });
  const state = await user.page.evaluate(() => ({
    id: window.duplex.chat.clientId,
    room: document.getElementById('room').value,
    name: document.getElementById('name').value,
    status: document.getElementById('status').dataset.state,
    api: ['connect', 'Client', 'chat'].filter((k) => window.duplex[k] === undefined),
  }));
  await check(state.api.length === 0, `${user.name}: window.duplex lacks ${state.api.join(', ')}`);
  await check(typeof state.id === 'string' && state.id.length > 0,
    `${user.name}: window.duplex.chat.clientId is ${JSON.stringify(state.id)}, expected the id from welcome`);
  await check(state.name === user.name, `${user.name}: #name is '${state.name}', expected '${user.name}' from ?name=`);
  await check(state.status === 'open', `${user.name}: #status is '${state.status}', expected 'open'`);
  user.id = state.id;
  return state.room;
}

/** #members lists exactly `expected` (users), each by name with its client id. */
function membersAre(viewer, expected, what) {
  const want = expected.map((u) => ({ id: u.id, name: u.name }));
  return waitFor(viewer, `${viewer.name}: ${what}`, (want) => {
    const lis = [...document.querySelectorAll('#members li[data-client]')];
    return lis.length === want.length &&
      want.every((w) => lis.some((li) => li.dataset.client === w.id && li.textContent === w.name));
  }, want);
}

/** How many #log entries show `text` from `from` (the .from and .text spans). */
function countInLog(user, from, text) {
  return user.page.evaluate(({ from, text }) => [...document.querySelectorAll('#log li')]
    .filter((li) => li.querySelector('.from')?.textContent === from && li.querySelector('.text')?.textContent === text)
    .length, { from, text });
}

/**
 * `text` from `from` appears in every viewer's #log, and exactly once after SETTLE_MS.
 * Resolves with the milliseconds until every viewer showed it.
 */
async function deliveredOnce(viewers, from, text) {
  const started = Date.now();
  for (const v of viewers) {
    await waitFor(v, `${v.name}: #log shows '${text}' from ${from}`, ({ from, text }) =>
      [...document.querySelectorAll('#log li')].some((li) =>
        li.querySelector('.from')?.textContent === from && li.querySelector('.text')?.textContent === text),
    { from, text });
  }
  const shownMs = Date.now() - started;
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  for (const v of viewers) {
    const n = await countInLog(v, from, text);
    await check(n === 1, `${v.name}: #log shows '${text}' from ${from} ${n} times, expected once`);
  }
  return shownMs;
}

function typingText(user) {
  return user.page.evaluate(() => document.getElementById('typing').textContent);
}

async function scenario(browser) {
  const ann = await open(browser, 'ann');
  const ben = await open(browser, 'ben');
  const version = await chromiumVersion(ann.page);
  const room = await joined(ann);
  const benRoom = await joined(ben);
  await check(room === benRoom, `ann joined '${room}' but ben '${benRoom}'`);
  await check(ann.id !== ben.id, `ann and ben got the same client id '${ann.id}' (separate contexts must be separate clients)`);

  // Presence: each sees both.
  await membersAre(ann, [ann, ben], 'ann and ben in #members');
  await membersAre(ben, [ann, ben], 'ann and ben in #members');

  // Typing: ann sees ben typing; it clears after ben's idle timeout.
  const text1 = `hello ann (${nonce})`;
  const typedAt = Date.now();
  await ben.page.locator('#text').pressSequentially(text1.slice(0, 5), { delay: 20 });
  await waitFor(ann, 'ann: #typing names ben while he types', () =>
    /\bben\b/.test(document.getElementById('typing').textContent));
  const typingShownMs = Date.now() - typedAt;
  const ownTyping = await typingText(ben);
  await check(ownTyping === '', `ben: #typing shows '${ownTyping}' while ben types, expected nothing about himself`);
  await waitFor(ann, 'ann: #typing clears once ben stops typing (1.5 s idle)', () =>
    document.getElementById('typing').textContent === '');
  const typingClearedMs = Date.now() - typedAt;

  // ben finishes the message and sends it with Enter.
  await ben.page.locator('#text').pressSequentially(text1.slice(5), { delay: 5 });
  await waitFor(ann, 'ann: #typing names ben again', () =>
    /\bben\b/.test(document.getElementById('typing').textContent));
  await ben.page.locator('#text').press('Enter');
  const deliveredMs = await deliveredOnce([ann, ben], 'ben', text1);
  const left = await ben.page.locator('#text').inputValue();
  await check(left === '', `ben: #text still holds '${left}' after sending`);
  await waitFor(ann, 'ann: #typing clears when ben sends', () =>
    document.getElementById('typing').textContent === '');

  // ann answers with the Send button.
  const text2 = `hi ben (${nonce})`;
  await ann.page.locator('#text').fill(text2);
  await ann.page.locator('#send-button').click();
  await deliveredOnce([ann, ben], 'ann', text2);

  // The same client, programmatically.
  const pong = await ann.page.evaluate(() => window.duplex.chat.ping());
  await check(pong?.type === 'pong', `ann: window.duplex.chat.ping() resolved to ${JSON.stringify(pong)}, expected a pong`);
  const text3 = `through window.duplex (${nonce})`;
  const seq = await ann.page.evaluate(({ room, text }) =>
    window.duplex.chat.rooms.get(room).publish({ name: 'ann', text }), { room, text: text3 });
  await check(Number.isInteger(seq) && seq >= 3, `ann: room.publish() resolved to ${JSON.stringify(seq)}, expected the message's seq (3 or more)`);
  await deliveredOnce([ann, ben], 'ann', text3);
  const benView = await ben.page.evaluate((room) => {
    const r = window.duplex.chat.rooms.get(room);
    return { seq: r.seq, members: r.members.size };
  }, room);
  await check(benView.seq === seq, `ben: room.seq is ${benView.seq} after receiving seq ${seq}`);
  await check(benView.members === 2, `ben: room.members has ${benView.members} entries, expected 2`);

  // ben leaves by closing his page.
  await ben.page.close();
  await ben.context.close();
  users = [ann];
  await membersAre(ann, [ann], 'ben leaves #members once his page is closed');
  await waitFor(ann, 'ann: #log notes that ben left', (id) =>
    [...document.querySelectorAll('#log li .note')].some((n) => /left$/.test(n.textContent) &&
      (n.textContent.includes('ben') || n.textContent.includes(id))), ben.id);

  for (const u of [ann, ben]) {
    await check(u.errors.length === 0, `${u.name}: the page reported errors: ${u.errors.join('; ')}`);
  }
  await ann.context.close();
  return { version, room, ann: ann.id, ben: ben.id, seq, typingShownMs, typingClearedMs, deliveredMs };
}

try {
  const r = await withBrowser(scenario, { timeoutMs: TOTAL_TIMEOUT_MS });
  console.log(`${NAME}: ok (${r.version}: ${r.room}, ann=${r.ann}, ben=${r.ben}; typing shown after ${r.typingShownMs} ms, ` +
    `cleared after ${r.typingClearedMs} ms; a message on both pages ${r.deliveredMs} ms after Enter; ${r.seq} messages)`);
} catch (e) {
  const first = e instanceof Failure ? e.message : e.message.split('\n')[0];
  console.error(`${NAME}: FAIL: ${first}`);
  for (const u of users) for (const m of u.errors) console.error(`${NAME}: ${u.name}: page error: ${m}`);
  process.exit(1);
}
