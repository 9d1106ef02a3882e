// Runs every case of an Autobahn fuzzing server (`kosoku -m fuzzingserver`) through
// DuplexSocket, echoing each message with its type, then asks the server to write its
// reports. The JavaScript twin of native/examples/autobahn_client.rs.
//
//   node wasm/js/examples/autobahn-client.mjs ws://127.0.0.1:9001 duplex-wasm
//
// Every connection is bounded by a timeout; a case that hangs fails the run.
import { DuplexSocket } from '../index.js';

const [base, agent] = process.argv.slice(2);
if (!base || !agent) {
  console.error('usage: node autobahn-client.mjs ws://HOST:PORT AGENT');
  process.exit(2);
}
const root = base.replace(/\/+$/, '');
const CASE_TIMEOUT_MS = 120_000;

// Autobahn sends messages up to 16 MiB (cases 9.*). Every message is compressed (threshold
// 0): the fuzzing server mishandles uncompressed text messages on a compressed connection
// (cases 12.*.1 and 13.*.1), although RFC 7692 allows them.
const OPTIONS = {
  perMessageDeflate: { threshold: 0 },
  maxMessageSize: 64 << 20,
};

// Opens `path`, calls `onMessage(ws, data)` for each message, and resolves with the close
// event once the connection is closed (rejects after CASE_TIMEOUT_MS).
function session(path, onMessage) {
  return new Promise((resolve, reject) => {
    const ws = new DuplexSocket(root + path, undefined, OPTIONS);
    ws.binaryType = 'arraybuffer';
    const timer = setTimeout(() => {
      reject(new Error(`${path}: no close within ${CASE_TIMEOUT_MS} ms`));
    }, CASE_TIMEOUT_MS);
    ws.onmessage = (event) => onMessage(ws, event.data);
    // Failing the connection is often the expected outcome of a case; `close` follows.
    ws.onerror = () => {};
    ws.onclose = (event) => {
      clearTimeout(timer);
      resolve(event);
    };
  });
}

let count = Number.NaN;
await session('/getCaseCount', (_ws, data) => {
  count = Number.parseInt(String(data), 10);
});
if (!Number.isInteger(count) || count <= 0) {
  console.error(`autobahn-client: bad case count ${count}`);
  process.exit(1);
}
console.error(`autobahn-client: ${count} cases as agent ${agent}`);

const q = encodeURIComponent(agent);
const started = performance.now();
for (let i = 1; i <= count; i++) {
  await session(`/runCase?case=${i}&agent=${q}`, (ws, data) => {
    // An echo after the socket started closing is dropped, as WHATWG says.
    if (ws.readyState === DuplexSocket.OPEN) ws.send(data);
  });
  if (i % 50 === 0) {
    const secs = ((performance.now() - started) / 1000).toFixed(0);
    console.error(`autobahn-client: ${i}/${count} cases (${secs} s)`);
  }
}
// Some fuzzing servers drop TCP right after writing the reports: any close will do.
await session(`/updateReports?agent=${q}`, () => {});
console.error('autobahn-client: done');
