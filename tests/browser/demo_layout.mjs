// The demo chat page of `duplex serve` (native/src/serve/page.html) as people see it, at a
// desktop (1280x800) and a phone (390x844) width, in headless Chromium.
//
//   node demo_layout.mjs http://127.0.0.1:PORT/ [--name NAME] [--impl wasm|builtin] [--shots DIR]
//
// --impl wasm (default): the page must run the WASM client the server offers (embedded in the
// binary: the server runs without --client-dir); --impl builtin opens it with ?client=builtin,
// the fallback a binary built without wasm/js/dist runs. ann opens it at the desktop width, ben
// at the phone width (separate browser contexts), and, through the page's elements
// (demo_lib.mjs):
//   - both joined with the expected client; #members lists both by name, each page marking its
//     own entry, and only it, "(you)"; #status reads "connected as NAME" (not the client id)
//     and #transport names the client and the WebSocket (ws, host);
//   - 60 messages are sent through the form (Enter), alternately by ann and ben: both #log
//     lists show each once;
//   - layout, by element positions, on both pages, then again with the widths swapped: the
//     document does not scroll (scrollingElement.scrollHeight <= innerHeight, nor sideways, and
//     window.scrollTo moves nothing) while #log does (scrollHeight > clientHeight) and is at its
//     end (the last message inside its box); #status, #transport, #name, #room, the Join
//     button, #log, #typing, #text, the Send button and #people are inside the viewport and do
//     not overlap; at the phone width the member list is a strip (at most 12% of the height),
//     at the desktop width a column right of #log; a screenshot of each page at each width
//     goes to DIR (default tests/.cache/demo);
//   - names update live: ben types a new name and presses Enter, ann changes hers and clicks
//     Join (same room): each page shows the new names (its own with "(you)"), #status follows,
//     and the other's #log notes the rename;
//   - no page error, console error or failed request (a 404 for a client module included).
// Prints `demo-layout(NAME): ok ...` or the first failure with both pages' state, exit 1.
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Demo, parseArgs, report } from './demo_lib.mjs';
import { withBrowser } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 90_000;
const MESSAGES = 60;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const opts = parseArgs(process.argv.slice(2),
  'node demo_layout.mjs http://127.0.0.1:PORT/ [--name NAME] [--impl wasm|builtin] [--shots DIR]',
  { name: 'demo-layout', impl: 'wasm', shots: join(REPO_ROOT, 'tests/.cache/demo') });
if (!['builtin', 'wasm'].includes(opts.impl)) {
  console.error(`demo_layout.mjs: --impl ${opts.impl}: expected wasm or builtin`);
  process.exit(2);
}
mkdirSync(opts.shots, { recursive: true });
const demo = new Demo(`demo-layout(${opts.name})`, opts.url,
  { query: opts.impl === 'builtin' ? { client: 'builtin' } : {} });

/** What the layout checks read from a page: boxes, scroll sizes, the viewport. */
function measure() {
  const ids = ['status', 'transport', 'name', 'room', 'join-button', 'log', 'typing', 'text', 'send-button', 'people'];
  const box = (el) => {
    const r = el.getBoundingClientRect();
    return { left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height };
  };
  const se = document.scrollingElement;
  window.scrollTo(0, 100_000);
  const scrolledTo = { x: window.scrollX, y: window.scrollY };
  const log = document.getElementById('log');
  const last = log.lastElementChild;
  return {
    viewport: { width: innerWidth, height: innerHeight },
    doc: { scrollHeight: se.scrollHeight, scrollWidth: se.scrollWidth },
    scrolledTo,
    log: { scrollHeight: log.scrollHeight, clientHeight: log.clientHeight, scrollTop: log.scrollTop },
    last: last ? box(last) : null,
    boxes: Object.fromEntries(ids.map((id) => [id, box(document.getElementById(id))])),
  };
}

/** The layout checks for one page at its current size; a screenshot as `${label}.png`. */
async function layout(user, label, kind) {
  // Two frames: resize observers and layout have run after a viewport change.
  await user.page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const m = await user.page.evaluate(measure);
  const where = `${user.name} at ${m.viewport.width}x${m.viewport.height}`;
  await user.page.screenshot({ path: join(opts.shots, `${opts.impl}-${label}.png`) });
  await demo.check(m.doc.scrollHeight <= m.viewport.height,
    `${where}: the document scrolls (scrollHeight ${m.doc.scrollHeight} > innerHeight ${m.viewport.height})`);
  await demo.check(m.doc.scrollWidth <= m.viewport.width,
    `${where}: the document scrolls sideways (scrollWidth ${m.doc.scrollWidth} > innerWidth ${m.viewport.width})`);
  await demo.check(m.scrolledTo.x === 0 && m.scrolledTo.y === 0,
    `${where}: window.scrollTo moved the page to ${JSON.stringify(m.scrolledTo)}`);
  await demo.check(m.log.scrollHeight > m.log.clientHeight,
    `${where}: #log does not scroll after ${MESSAGES} messages (${JSON.stringify(m.log)})`);
  const lb = m.boxes.log;
  await demo.check(m.last && m.last.bottom <= lb.bottom + 1 && m.last.top >= lb.top - 1,
    `${where}: the last message ${JSON.stringify(m.last)} is not inside #log ${JSON.stringify(lb)}`);
  const eps = 0.5;
  for (const [id, b] of Object.entries(m.boxes)) {
    await demo.check(b.width > 0 && b.height > 0, `${where}: #${id} is not shown (${JSON.stringify(b)})`);
    await demo.check(b.left >= -eps && b.top >= -eps && b.right <= m.viewport.width + eps && b.bottom <= m.viewport.height + eps,
      `${where}: #${id} ${JSON.stringify(b)} is not inside the viewport`);
  }
  const entries = Object.entries(m.boxes);
  for (let i = 0; i < entries.length; i++) {
    for (let j = i + 1; j < entries.length; j++) {
      const [a, p] = entries[i], [b, q] = entries[j];
      const overlap = Math.min(p.right, q.right) - Math.max(p.left, q.left) > eps &&
        Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top) > eps;
      await demo.check(!overlap, `${where}: #${a} ${JSON.stringify(p)} overlaps #${b} ${JSON.stringify(q)}`);
    }
  }
  const people = m.boxes.people;
  if (kind === 'phone') {
    await demo.check(people.height <= 0.12 * m.viewport.height,
      `${where}: the member list is ${people.height}px high, more than 12% of the screen`);
    await demo.check(lb.height >= 0.5 * m.viewport.height,
      `${where}: #log is ${lb.height}px high, less than half the screen`);
  } else {
    await demo.check(people.left >= lb.right - eps && people.top <= lb.top + eps,
      `${where}: the member list ${JSON.stringify(people)} is not a column right of #log ${JSON.stringify(lb)}`);
  }
  return { log: Math.round(lb.height), people: Math.round(people.height) };
}

/** #status and #transport of a joined user. */
async function statusShows(user, name) {
  await demo.waitFor(user, `${user.name}: #status reads 'connected as ${name}'`,
    (name) => document.getElementById('status').textContent.startsWith(`connected as ${name}`), name);
  const s = await user.page.evaluate(() => ({
    status: document.getElementById('status').textContent,
    transport: document.getElementById('transport').textContent,
    id: window.duplex.chat.clientId,
  }));
  await demo.check(!s.status.includes(s.id), `${user.name}: #status '${s.status}' shows the client id`);
  const client = opts.impl === 'wasm' ? 'WebAssembly client' : 'built-in JS client';
  await demo.check(s.transport.includes(client) && /WebSocket ws\b/.test(s.transport) && s.transport.includes(new URL(opts.url).host),
    `${user.name}: #transport '${s.transport}' does not name the ${client}, ws and the host`);
}

/** The viewer's #members shows `entries` ({id, name, you}) exactly. */
function membersShow(viewer, entries, what) {
  return demo.waitFor(viewer, `${viewer.name}: ${what}`, (want) => {
    const lis = [...document.querySelectorAll('#members li[data-client]')];
    return lis.length === want.length && want.every((w) => lis.some((li) => li.dataset.client === w.id &&
      li.querySelector('.name')?.textContent === w.name && (li.querySelector('.you')?.textContent === '(you)') === w.you));
  }, entries);
}

async function scenario(browser) {
  const ann = await demo.open(browser, 'ann');
  await ann.page.setViewportSize(DESKTOP);
  const ben = await demo.open(browser, 'ben');
  await ben.page.setViewportSize(PHONE);
  const room = await demo.joined(ann, opts.impl);
  await demo.joined(ben, opts.impl);
  await demo.membersAre(ann, [ann, ben], 'ann and ben in #members, ann marked (you)');
  await demo.membersAre(ben, [ann, ben], 'ann and ben in #members, ben marked (you)');
  await statusShows(ann, 'ann');
  await statusShows(ben, 'ben');

  const sent = [];
  for (let i = 1; i <= MESSAGES; i++) {
    const user = i % 2 ? ann : ben;
    const text = `message ${i} of ${MESSAGES} (${demo.nonce})`;
    await demo.send(user, text, 'enter');
    sent.push({ from: user.name, text });
  }
  const deliveredMs = await demo.deliveredAllOnce([ann, ben], sent, 20_000);

  const sizes = {};
  sizes.annDesktop = await layout(ann, 'desktop-ann', 'desktop');
  sizes.benPhone = await layout(ben, 'phone-ben', 'phone');
  await ann.page.setViewportSize(PHONE);
  await ben.page.setViewportSize(DESKTOP);
  sizes.annPhone = await layout(ann, 'phone-ann', 'phone');
  sizes.benDesktop = await layout(ben, 'desktop-ben', 'desktop');

  // Names update live: ben with Enter in #name, ann with the Join button (same room).
  await ben.page.locator('#name').fill('benjamin');
  await ben.page.locator('#name').press('Enter');
  await ann.page.locator('#name').fill('anna');
  await ann.page.locator('#join-button').click();
  await membersShow(ann, [{ id: ann.id, name: 'anna', you: true }, { id: ben.id, name: 'benjamin', you: false }],
    '#members shows anna (you) and benjamin after both renamed');
  await membersShow(ben, [{ id: ann.id, name: 'anna', you: false }, { id: ben.id, name: 'benjamin', you: true }],
    '#members shows anna and benjamin (you) after both renamed');
  await statusShows(ann, 'anna');
  await statusShows(ben, 'benjamin');
  for (const [viewer, note] of [[ann, 'ben is now benjamin'], [ben, 'ann is now anna']]) {
    await demo.waitFor(viewer, `${viewer.name}: #log notes '${note}'`, (note) =>
      [...document.querySelectorAll('#log li .note')].some((n) => n.textContent === note), note);
  }
  // A message after the rename carries the new name.
  const after = `renamed (${demo.nonce})`;
  await demo.send(ben, after, 'button');
  await demo.deliveredOnce([ann, ben], 'benjamin', after);
  await layout(ben, 'desktop-ben-renamed', 'desktop');

  await demo.noErrors([ann, ben]);
  return { room, deliveredMs, sizes };
}

await report(demo, () => withBrowser(scenario, { timeoutMs: TOTAL_TIMEOUT_MS }), (r) =>
  `${opts.impl} client, ${r.room}: ${MESSAGES} messages on both pages after ${r.deliveredMs} ms; ` +
  `#log/#people heights: desktop ${r.sizes.annDesktop.log}/${r.sizes.annDesktop.people} px, ` +
  `phone ${r.sizes.benPhone.log}/${r.sizes.benPhone.people} px; screenshots in ${opts.shots}`);
