// ws-echo.mjs PORT: an echo server on the `ws` package, for side-by-side runs with duplex.
// Listens on 127.0.0.1, echoes text and binary with their type, no permessage-deflate,
// messages up to 64 MiB. `bufferutil` (installed beside it) is picked up by ws for masking,
// its recommended fast setup.
import { WebSocketServer } from "ws";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node ws-echo.mjs PORT");
  process.exit(2);
}

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
  clientTracking: false,
});

wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", () => {});
});
wss.on("listening", () => console.log(`ws-echo listening on ws://127.0.0.1:${port}/`));
wss.on("error", (e) => {
  console.error(`ws-echo: ${e.message}`);
  process.exit(1);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
