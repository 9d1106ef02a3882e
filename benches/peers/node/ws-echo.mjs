// ws-echo.mjs PORT [CERT KEY]: an echo server on the `ws` package, for side-by-side runs with
// duplex. Listens on 127.0.0.1, echoes text and binary with their type, no permessage-deflate,
// messages up to 64 MiB. `bufferutil` (installed beside it) is picked up by ws for masking,
// its recommended fast setup. With CERT and KEY (PEM files) ws runs on a Node `https` server:
// wss:// only.
import { readFileSync } from "node:fs";
import { createServer } from "node:https";
import { WebSocketServer } from "ws";

const port = Number(process.argv[2]);
const [cert, key] = process.argv.slice(3);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || (cert === undefined) !== (key === undefined)) {
  console.error("usage: node ws-echo.mjs PORT [CERT KEY]");
  process.exit(2);
}
const scheme = cert ? "wss" : "ws";

const options = {
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
  clientTracking: false,
};
let wss;
if (cert) {
  const server = createServer({ cert: readFileSync(cert), key: readFileSync(key) });
  wss = new WebSocketServer({ server, ...options });
  server.on("error", (e) => {
    console.error(`ws-echo: ${e.message}`);
    process.exit(1);
  });
  server.listen(port, "127.0.0.1", () => console.log(`ws-echo listening on ${scheme}://127.0.0.1:${port}/`));
} else {
  wss = new WebSocketServer({ host: "127.0.0.1", port, ...options });
  wss.on("listening", () => console.log(`ws-echo listening on ${scheme}://127.0.0.1:${port}/`));
}

wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", () => {});
});
wss.on("error", (e) => {
  console.error(`ws-echo: ${e.message}`);
  process.exit(1);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
