// Driving the demo chat page of `duplex serve` (native/src/serve/page.html) as
// users in headless Chromium, through the page's own elements: shared by
// demo_page.mjs (the built-in client) and demo_reconnect.mjs (the WASM client,
// across a server restart).
//
//   const demo = new Demo('interop(NAME)', 'http://127.0.0.1:PORT/');
//   await withBrowser(async (browser) => {
//     const { ann, ben, room } = await demo.pair(browser, 'builtin'); ...
//   });
//
// Every wait has a deadline; a failed check throws a Failure whose message
// ends with what each page shows (status, members, typing, log).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

import { chromiumVersion } from './lib.mjs';

export const STEP_TIMEOUT_MS = 10_000;
/** How long a message is watched for a duplicate after it first appears. */
export const SETTLE_MS = 500;

export class Failure extends Error {}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The command line: an http:// URL (unless `url` is false) and `--FLAG VALUE` for each key of
 * `defaults` (e.g. `{ name: 'chromium-demo' }`). Prints `usage` and exits 2 on anything else.
 */
export function parseArgs(argv, usage, defaults, { url = true } = {}) {
  const opts = { url: null, ...defaults };
  const bad = () => {
    console.error(`usage: ${usage}`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const key = a.startsWith('--') ? a.slice(2) : null;
    if (key !== null && key in defaults && i + 1 < argv.length) {
      opts[key] = argv[++i];
    } else if (key === null && url && !opts.url) {
      opts.url = a;
    } else {
      bad();
    }
  }
  if (url && !/^https?:\/\//.test(opts.url ?? '')) bad();
  return opts;
}

/**
 * Runs `scenario()` and prints `NAME: ok (summary(result))`, or `NAME: FAIL: ...` with the pages'
 * errors, and exits 1.
 */
export async function report(demo, scenario, summary) {
  try {
    const r = await scenario();
    console.log(`${demo.name}: ok (${summary(r)})`);
  } catch (e) {
    const first = e instanceof Failure ? e.message : e.message.split('\n')[0];
    console.error(`${demo.name}: FAIL: ${first}`);
    for (const u of demo.users) for (const m of u.errors) console.error(`${demo.name}: ${u.name}: page error: ${m}`);
    process.exitCode = 1;
  }
}

export class Demo {
  /**
   * @param name    the prefix of every line printed, e.g. `interop(chromium-demo)`
   * @param url     the page, http://127.0.0.1:PORT/
   * @param query   extra query parameters for every page (e.g. the client's backoff)
   */
  constructor(name, url, { query = {} } = {}) {
    this.name = name;
    this.url = url;
    this.query = query;
    this.nonce = randomBytes(4).toString('hex');
    this.users = [];
    /** Console errors matching this are expected (e.g. failed reconnects while a server is down). */
    this.expectedConsole = null;
  }

  /** What a page shows, for failure reports. */
  async snapshot(user) {
    if (user.page.isClosed()) return `${user.name}: page closed`;
    try {
      const s = await user.page.evaluate(() => ({
        status: document.getElementById('status')?.textContent,
        members: [...document.querySelectorAll('#members li')].map((li) => `${li.textContent}=${li.dataset.client}`),
        transport: document.getElementById('transport')?.textContent,
        typing: document.getElementById('typing')?.textContent,
        log: [...document.querySelectorAll('#log li')].map((li) => li.textContent),
      }));
      // The last entries only: a long chat would drown the failure.
      const log = s.log.length > 12 ? [`(${s.log.length - 12} earlier entries)`, ...s.log.slice(-12)] : s.log;
      return `${user.name}: status '${s.status}', transport '${s.transport}', members [${s.members.join(', ')}], typing '${s.typing}', log ${JSON.stringify(log)}`;
    } catch (e) {
      return `${user.name}: cannot read the page (${e.message.split('\n')[0]})`;
    }
  }

  async fail(what) {
    const states = await Promise.all(this.users.map((u) => this.snapshot(u)));
    throw new Failure(`${what}\n  ${states.join('\n  ')}`);
  }

  check(condition, what) {
    if (!condition) return this.fail(what);
    return Promise.resolve();
  }

  /** Waits until `predicate(arg)` holds in the user's page; fails with `what` otherwise. */
  async waitFor(user, what, predicate, arg, timeoutMs = STEP_TIMEOUT_MS) {
    try {
      await user.page.waitForFunction(predicate, arg, { timeout: timeoutMs, polling: 50 });
    } catch (e) {
      if (e instanceof Failure) throw e;
      await this.fail(`${what}: not within ${timeoutMs / 1000}s (${e.message.split('\n')[0]})`);
    }
  }

  /** A new browser context (separate storage: another person) on the page as ?name=NAME. */
  async open(browser, name) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const user = { name, context, page, errors: [], id: null };
    page.on('pageerror', (e) => user.errors.push(`uncaught: ${e.message}`));
    // A failed load is reported with its URL below; the console's copy of it has none.
    page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') &&
      !this.expectedConsole?.test(m.text()) && user.errors.push(`console: ${m.text()}`));
    // The page links an empty icon (no /favicon.ico request) and imports the WASM client only
    // when the server names it: any failed request is the page's failure (a 404 for
    // /duplex-ws/index.js was one).
    const probe = (url) => new URL(url).pathname === '/favicon.ico';
    page.on('response', (r) => r.status() >= 400 && !probe(r.url()) &&
      user.errors.push(`GET ${r.url()}: ${r.status()}`));
    page.on('requestfailed', (r) => !probe(r.url()) &&
      user.errors.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    this.users.push(user);
    const url = new URL(this.url);
    for (const [k, v] of Object.entries(this.query)) url.searchParams.set(k, v);
    url.searchParams.set('name', name);
    const response = await page.goto(url.href, { timeout: STEP_TIMEOUT_MS });
    await this.check(response?.ok(), `${name}: GET ${url.href} answered ${response?.status()}`);
    return user;
  }

  /**
   * Opens the page as ann and ben, each in a context of its own, and waits until both joined
   * the same room with the client `impl` as two different clients. Resolves with
   * { ann, ben, room, version }.
   */
  async pair(browser, impl) {
    const ann = await this.open(browser, 'ann');
    const ben = await this.open(browser, 'ben');
    const version = await chromiumVersion(ann.page);
    const room = await this.joined(ann, impl);
    const benRoom = await this.joined(ben, impl);
    await this.check(room === benRoom, `ann joined '${room}' but ben '${benRoom}'`);
    await this.check(ann.id !== ben.id, `ann and ben got the same client id '${ann.id}' (separate contexts must be separate clients)`);
    return { ann, ben, room, version };
  }

  /** Closes the user's page and context; the user is no longer part of failure reports. */
  async close(user) {
    if (!user.page.isClosed()) await user.page.close();
    await user.context.close();
    this.users = this.users.filter((u) => u !== user);
  }

  /**
   * Ready, connected with the client `impl` ('builtin' or 'wasm'), and joined to the room of
   * the #room input. Resolves with the room's name.
   */
  async joined(user, impl) {
    await this.waitFor(user, `${user.name}: document.body.dataset.ready === "1"`,
      () => document.body.dataset.ready === '1');
    // The page enables #text and lists its own client in #members once `joined` arrived.
    await this.waitFor(user, `${user.name}: joining the room of #room`, () => {
      const id = window.duplex?.chat?.clientId;
      return !document.getElementById('text').disabled && typeof id === 'string' &&
        [...document.querySelectorAll('#members li[data-client]')].some((li) => li.dataset.client === id);
    });
    const state = await user.page.evaluate(() => ({
      id: window.duplex.chat.clientId,
      impl: window.duplex.impl,
      room: document.getElementById('room').value,
      name: document.getElementById('name').value,
      status: document.getElementById('status').dataset.state,
      api: ['connect', 'Client', 'chat', 'impl'].filter((k) => window.duplex[k] === undefined),
    }));
    await this.check(state.api.length === 0, `${user.name}: window.duplex lacks ${state.api.join(', ')}`);
    await this.check(state.impl === impl,
      `${user.name}: window.duplex.impl is ${JSON.stringify(state.impl)}, expected '${impl}'`);
    await this.check(typeof state.id === 'string' && state.id.length > 0,
      `${user.name}: window.duplex.chat.clientId is ${JSON.stringify(state.id)}, expected the id from welcome`);
    await this.check(state.name === user.name, `${user.name}: #name is '${state.name}', expected '${user.name}' from ?name=`);
    await this.check(state.status === 'open', `${user.name}: #status is '${state.status}', expected 'open'`);
    user.id = state.id;
    return state.room;
  }

  /**
   * #members lists exactly `expected` (users), each by name (.name) with its client id, the
   * viewer's own entry (and only it) marked "(you)".
   */
  membersAre(viewer, expected, what, timeoutMs) {
    const want = expected.map((u) => ({ id: u.id, name: u.name, you: u === viewer }));
    return this.waitFor(viewer, `${viewer.name}: ${what}`, (want) => {
      const lis = [...document.querySelectorAll('#members li[data-client]')];
      return lis.length === want.length &&
        want.every((w) => lis.some((li) => li.dataset.client === w.id &&
          li.querySelector('.name')?.textContent === w.name &&
          (li.querySelector('.you')?.textContent === '(you)') === w.you));
    }, want, timeoutMs);
  }

  /** The messages #log shows, in order: `{from, text}` (notes left out). */
  messages(user) {
    return user.page.evaluate(() => [...document.querySelectorAll('#log li')]
      .filter((li) => li.querySelector('.from'))
      .map((li) => ({ from: li.querySelector('.from').textContent, text: li.querySelector('.text')?.textContent })));
  }

  /** How many #log entries show `text` from `from` (the .from and .text spans). */
  async countInLog(user, from, text) {
    return (await this.messages(user)).filter((m) => m.from === from && m.text === text).length;
  }

  /**
   * Each of `messages` (`{from, text}`) appears in every viewer's #log, and exactly once after
   * SETTLE_MS. Resolves with the milliseconds until every viewer showed them all.
   */
  async deliveredAllOnce(viewers, messages, timeoutMs) {
    const started = Date.now();
    const deadline = started + (timeoutMs ?? STEP_TIMEOUT_MS);
    for (const v of viewers) {
      try {
        await v.page.waitForFunction((messages) => {
          const lis = [...document.querySelectorAll('#log li')];
          return messages.every(({ from, text }) => lis.some((li) =>
            li.querySelector('.from')?.textContent === from && li.querySelector('.text')?.textContent === text));
        }, messages, { timeout: Math.max(100, deadline - Date.now()), polling: 50 });
      } catch (e) {
        if (e instanceof Failure) throw e;
        const shown = await this.messages(v).catch(() => []);
        const missing = messages.filter((m) => !shown.some((s) => s.from === m.from && s.text === m.text));
        await this.fail(`${v.name}: #log does not show ${missing.map((m) => `'${m.text}' from ${m.from}`).join(', ')} ` +
          `within ${(deadline - started) / 1000}s (${e.message.split('\n')[0]})`);
      }
    }
    const shownMs = Date.now() - started;
    await sleep(SETTLE_MS);
    for (const v of viewers) {
      for (const { from, text } of messages) {
        const n = await this.countInLog(v, from, text);
        await this.check(n === 1, `${v.name}: #log shows '${text}' from ${from} ${n} times, expected once`);
      }
    }
    return shownMs;
  }

  /** deliveredAllOnce for one message. */
  deliveredOnce(viewers, from, text, timeoutMs) {
    return this.deliveredAllOnce(viewers, [{ from, text }], timeoutMs);
  }

  typingText(user) {
    return user.page.evaluate(() => document.getElementById('typing').textContent);
  }

  /** Sends `text` as the user would: typed into #text, then Enter or the Send button. */
  async send(user, text, how) {
    await user.page.locator('#text').fill(text);
    if (how === 'enter') await user.page.locator('#text').press('Enter');
    else await user.page.locator('#send-button').click();
  }

  /**
   * Two joined users chat: each sees both in #members; ben types and ann's #typing names him
   * (ben's own does not) until his 1.5 s idle timeout clears it; ben sends with Enter, ann answers
   * with the Send button, both #log lists show each message exactly once, and sending clears the
   * typing indicator and #text. Resolves with timings and the two messages sent.
   */
  async converse(ann, ben) {
    await this.membersAre(ann, [ann, ben], 'ann and ben in #members');
    await this.membersAre(ben, [ann, ben], 'ann and ben in #members');

    const text1 = `hello ann (${this.nonce})`;
    const typedAt = Date.now();
    await ben.page.locator('#text').pressSequentially(text1.slice(0, 5), { delay: 20 });
    await this.waitFor(ann, 'ann: #typing names ben while he types', () =>
      /\bben\b/.test(document.getElementById('typing').textContent));
    const typingShownMs = Date.now() - typedAt;
    const ownTyping = await this.typingText(ben);
    await this.check(ownTyping === '', `ben: #typing shows '${ownTyping}' while ben types, expected nothing about himself`);
    await this.waitFor(ann, 'ann: #typing clears once ben stops typing (1.5 s idle)', () =>
      document.getElementById('typing').textContent === '');
    const typingClearedMs = Date.now() - typedAt;

    // ben finishes the message and sends it with Enter.
    await ben.page.locator('#text').pressSequentially(text1.slice(5), { delay: 5 });
    await this.waitFor(ann, 'ann: #typing names ben again', () =>
      /\bben\b/.test(document.getElementById('typing').textContent));
    await ben.page.locator('#text').press('Enter');
    const deliveredMs = await this.deliveredOnce([ann, ben], 'ben', text1);
    const left = await ben.page.locator('#text').inputValue();
    await this.check(left === '', `ben: #text still holds '${left}' after sending`);
    await this.waitFor(ann, 'ann: #typing clears when ben sends', () =>
      document.getElementById('typing').textContent === '');

    // ann answers with the Send button.
    const text2 = `hi ben (${this.nonce})`;
    await this.send(ann, text2, 'button');
    await this.deliveredOnce([ann, ben], 'ann', text2);
    return { typingShownMs, typingClearedMs, deliveredMs, sent: [{ from: 'ben', text: text1 }, { from: 'ann', text: text2 }] };
  }

  /** ben closes his page: ann's #members loses him and her #log notes that he left, by name. */
  async leaves(ann, ben) {
    await this.close(ben);
    await this.membersAre(ann, [ann], 'ben leaves #members once his page is closed');
    await this.waitFor(ann, 'ann: #log notes that ben left', () =>
      [...document.querySelectorAll('#log li .note')].some((n) => n.textContent === 'ben left'));
  }

  /** No uncaught error, console error or failed request on any page opened. */
  async noErrors(users) {
    for (const u of users) {
      await this.check(u.errors.length === 0, `${u.name}: the page reported errors: ${u.errors.join('; ')}`);
    }
  }
}

/** `duplex serve` (the binary `bin`, serving the client of `clientDir`) on `port`, restartable;
 * its output is kept for failure reports. */
export class ServeProcess {
  constructor(bin, clientDir, port) {
    this.bin = bin;
    this.clientDir = clientDir;
    this.port = port;
    this.child = null;
    this.output = '';
    this.starts = 0;
  }

  /** Starts it and resolves once /healthz answers (or rejects after 10 s). */
  async start() {
    this.starts++;
    const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--threads', '2', '--client-dir', this.clientDir];
    const child = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const keep = (chunk) => {
      // eslint-disable-next-line no-control-regex
      const text = String(chunk).replace(/\x1b\[[0-9;]*m/g, '');
      this.output = (this.output + `[${this.starts}] ${text}`).slice(-4_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.exited = exited;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const gone = await Promise.race([exited, sleep(100).then(() => null)]);
      if (gone) throw new Error(`duplex serve exited at start (${gone.signal ?? gone.code}): ${this.output}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.port}/healthz`, { signal: AbortSignal.timeout(1_000) });
        if (r.ok) return;
      } catch {
        // not listening yet
      }
    }
    throw new Error(`duplex serve did not answer /healthz on port ${this.port} within 10 s: ${this.output}`);
  }

  /** SIGKILL, and wait until it is gone. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await child.exited;
  }

  /** Synchronous, for process exit paths. */
  killNow() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
