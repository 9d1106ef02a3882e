// Reference Autobahn client built on Node `ws`: the known-good peer used to
// validate `tests/autobahn.sh client` (what duplex's examples/autobahn_client
// does, in JavaScript).
//
//   node ws_autobahn_client.mjs ws://127.0.0.1:PORT AGENT
//
// Asks the fuzzing server for /getCaseCount, runs every case through
// /runCase?case=N&agent=AGENT echoing each message with its type, then calls
// /updateReports?agent=AGENT. Every connection is bounded by a timeout.
import WebSocket from 'ws';

const [base, agent] = process.argv.slice(2);
if (!base || !agent) {
  console.error('usage: node ws_autobahn_client.mjs ws://HOST:PORT AGENT');
  process.exit(2);
}
const root = base.replace(/\/+$/, '');
const CASE_TIMEOUT_MS = 120_000;

// Opens `path`, calls `onMessage(ws, data, isBinary)` for each message, and
// resolves when the connection closes (or rejects after CASE_TIMEOUT_MS).
function session(path, onMessage) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(root + path, { perMessageDeflate: false });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`${path}: no close within ${CASE_TIMEOUT_MS} ms`));
    }, CASE_TIMEOUT_MS);
    ws.on('message', (data, isBinary) => onMessage(ws, data, isBinary));
    // Protocol errors are expected in fuzzing cases; `ws` fails the
    // connection itself and 'close' follows.
    ws.on('error', () => {});
    ws.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

let count = NaN;
await session('/getCaseCount', (_ws, data) => {
  count = Number.parseInt(data.toString(), 10);
});
if (!Number.isInteger(count) || count <= 0) {
  console.error(`ws_autobahn_client: bad case count ${count}`);
  process.exit(1);
}
console.error(`ws_autobahn_client: running ${count} cases as agent ${agent}`);

const q = encodeURIComponent(agent);
for (let i = 1; i <= count; i++) {
  await session(`/runCase?case=${i}&agent=${q}`, (ws, data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
}
await session(`/updateReports?agent=${q}`, () => {});
console.error('ws_autobahn_client: done');
