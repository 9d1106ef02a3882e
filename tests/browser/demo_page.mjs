// The demo chat page of `duplex serve` (native/src/serve/page.html), driven by
// two users in headless Chromium, with the client the server offers (it runs
// without --client-dir: the WASM client when it is embedded in the binary,
// the page's built-in client otherwise).
//
//   node demo_page.mjs http://127.0.0.1:PORT/ [--name NAME] [--impl builtin|wasm]
//
// Two browser contexts (separate storage, like two people) open the page as
// ?name=ann and ?name=ben, wait for `document.body.dataset.ready === "1"` and
// for the room of the #room input to be joined, then check, through the page's
// own elements (demo_lib.mjs):
//   - window.duplex.impl is --impl (default 'builtin');
//   - each sees both users in #members (li[data-client], named from presence);
//   - ben types in #text: ann's #typing names ben (ben's own does not), and
//     clears once ben stops typing (the page sends typing:false after 1.5 s);
//   - ben sends with Enter, ann with the Send button: both #log lists show
//     each message exactly once, and sending clears the typing indicator;
//   - window.duplex drives the same client: chat.clientId, ping() resolves to
//     a pong (built-in client), room.publish() resolves to the message's seq, which ben's page
//     then shows and records;
//   - ben closes his page: ann's #members loses him and #log notes it by name.
// Any uncaught error on either page fails the run too. Prints
// `interop(NAME): ok ...`, or the first failure with both pages' state and
// exits 1. Bounded: every wait has a deadline and the whole run has one.
import { Demo, parseArgs, report } from './demo_lib.mjs';
import { withBrowser } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 60_000;

const opts = parseArgs(process.argv.slice(2), 'node demo_page.mjs http://127.0.0.1:PORT/ [--name NAME] [--impl builtin|wasm]',
  { name: 'chromium-demo', impl: 'builtin' });
if (!['builtin', 'wasm'].includes(opts.impl)) {
  console.error(`demo_page.mjs: --impl ${opts.impl}: expected builtin or wasm`);
  process.exit(2);
}
const demo = new Demo(`interop(${opts.name})`, opts.url);

async function scenario(browser) {
  const { ann, ben, room, version } = await demo.pair(browser, opts.impl);

  const talk = await demo.converse(ann, ben);

  // The same client, programmatically.
  // (ping() is the built-in client's: DuplexClient heartbeats by itself.)
  if (opts.impl === 'builtin') {
    const pong = await ann.page.evaluate(() => window.duplex.chat.ping());
    await demo.check(pong?.type === 'pong', `ann: window.duplex.chat.ping() resolved to ${JSON.stringify(pong)}, expected a pong`);
  } else {
    const open = await ann.page.evaluate(() => window.duplex.chat.open);
    await demo.check(open === true, `ann: window.duplex.chat.open is ${JSON.stringify(open)}, expected true`);
  }
  const text3 = `through window.duplex (${demo.nonce})`;
  const seq = await ann.page.evaluate(({ room, text }) =>
    window.duplex.chat.rooms.get(room).publish({ name: 'ann', text }), { room, text: text3 });
  await demo.check(Number.isInteger(seq) && seq >= 3, `ann: room.publish() resolved to ${JSON.stringify(seq)}, expected the message's seq (3 or more)`);
  await demo.deliveredOnce([ann, ben], 'ann', text3);
  const benView = await ben.page.evaluate((room) => {
    const r = window.duplex.chat.rooms.get(room);
    return { seq: r.seq, members: r.members.size };
  }, room);
  await demo.check(benView.seq === seq, `ben: room.seq is ${benView.seq} after receiving seq ${seq}`);
  await demo.check(benView.members === 2, `ben: room.members has ${benView.members} entries, expected 2`);

  await demo.leaves(ann, ben);
  await demo.noErrors([ann, ben]);
  await ann.context.close();
  return { version, impl: opts.impl, room, ann: ann.id, ben: ben.id, seq, ...talk };
}

await report(demo, () => withBrowser(scenario, { timeoutMs: TOTAL_TIMEOUT_MS }), (r) =>
  `${r.version}, ${r.impl} client: ${r.room}, ann=${r.ann}, ben=${r.ben}; typing shown after ${r.typingShownMs} ms, ` +
  `cleared after ${r.typingClearedMs} ms; a message on both pages ${r.deliveredMs} ms after Enter; ${r.seq} messages`);
