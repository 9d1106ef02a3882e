// Reference echo server built on Node `ws`: the known-good peer used to
// validate the Autobahn harness and to test `duplex connect`.
//
//   node ws_echo_server.mjs PORT
//
// Listens on 127.0.0.1:PORT, echoes every message back with the same type
// (text stays text, binary stays binary), on any path. Compression is off
// unless `--deflate` follows the port; each connection's negotiated
// extensions are logged on stderr.
import { WebSocketServer } from 'ws';

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node ws_echo_server.mjs PORT');
  process.exit(2);
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: process.argv.includes('--deflate') ? { threshold: 0 } : false,
  maxPayload: 64 * 1024 * 1024,
});

wss.on('listening', () => {
  console.error(`ws_echo_server: listening on ws://127.0.0.1:${port}/`);
});

wss.on('error', (err) => {
  console.error(`ws_echo_server: ${err.message}`);
  process.exit(1);
});

wss.on('connection', (ws) => {
  console.error(`ws_echo_server: connection, extensions=${JSON.stringify(ws.extensions)}`);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  // Protocol errors from misbehaving peers (the fuzzer sends many) are
  // reported here; `ws` has already failed the connection with the right code.
  ws.on('error', () => {});
});

const stop = () => {
  for (const client of wss.clients) client.terminate();
  wss.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
