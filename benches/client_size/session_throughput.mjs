// The channel session's throughput in a given build of the duplex-ws WebAssembly: a room of
// 2,000 members, then N `message` frames (and a `presence` every 7th) received and their events
// polled, as DuplexClient does. Compares allocators and wasm-opt levels of the browser build.
//
//   node benches/client_size/session_throughput.mjs GLUE.js WASM [N]
//   node benches/client_size/session_throughput.mjs wasm/js/dist/duplex_browser.js wasm/js/dist/duplex_browser_bg.wasm
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [glueFile, wasmFile, count = '30000'] = process.argv.slice(2);
if (!wasmFile) {
  console.error('usage: session_throughput.mjs GLUE.js WASM [N]');
  process.exit(2);
}
const glue = await import(pathToFileURL(resolve(glueFile)).href);
await glue.default({ module_or_path: await readFile(wasmFile) });

const session = new glue.ChannelSession(undefined, undefined, 100, 1000, 2, 100, 10000);
const drain = () => {
  while (session.poll_event() !== undefined);
};
drain();
session.connected(0);
session.poll_transmit();
session.receive(0, JSON.stringify({ type: 'welcome', client: 'me', heartbeat_ms: 0 }));
const id = session.join('app/room', undefined);
session.poll_transmit();
const members = Array.from({ length: 2000 }, (_, i) => ({ client: `c${i}`, presence: { name: `user ${i}`, n: i } }));
session.receive(0, JSON.stringify({ type: 'joined', id, room: 'app/room', epoch: 'e', seq: 0, members, recovered: false }));
drain();

const n = Number(count);
const started = performance.now();
for (let i = 1; i <= n; i++) {
  const from = `c${i % 2000}`;
  session.receive(0, JSON.stringify({ type: 'message', room: 'app/room', seq: i, from, data: { text: 'hello '.repeat(10), i } }));
  if (i % 7 === 0) {
    session.receive(0, JSON.stringify({ type: 'presence', room: 'app/room', client: from, presence: { name: 'x', i } }));
  }
  drain();
}
const ms = performance.now() - started;
console.log(`${wasmFile}: ${n} messages in ${ms.toFixed(0)} ms, ${Math.round((n / ms) * 1000)} messages/s`);
