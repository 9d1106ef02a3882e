// uws-echo.mjs PORT [CERT KEY]: an echo server on uWebSockets.js (the
// @trufflesuite/uws-js-unofficial build), for side-by-side runs with duplex. Listens on
// 127.0.0.1, echoes text and binary with their type, compression disabled, messages up to
// 64 MiB, no idle timeout. With CERT and KEY (PEM files) it is an `SSLApp`: wss:// only.
//
// The package silently falls back to a JavaScript implementation when it has no binary for this
// Node; this script loads the native addon itself and refuses to run without it.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const addon = `@trufflesuite/uws-js-unofficial/binaries/uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
let uWS;
try {
  uWS = require(addon);
} catch (e) {
  console.error(`uws-echo: no native uWebSockets.js for this Node (${addon}): ${e.message}`);
  process.exit(1);
}

const port = Number(process.argv[2]);
const [cert, key] = process.argv.slice(3);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || (cert === undefined) !== (key === undefined)) {
  console.error("usage: node uws-echo.mjs PORT [CERT KEY]");
  process.exit(2);
}
const scheme = cert ? "wss" : "ws";

(cert ? uWS.SSLApp({ cert_file_name: cert, key_file_name: key }) : uWS.App())
  .ws("/*", {
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024 * 1024,
    maxBackpressure: 64 * 1024 * 1024,
    idleTimeout: 0,
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
  })
  .listen("127.0.0.1", port, (token) => {
    if (!token) {
      console.error(`uws-echo: cannot listen on 127.0.0.1:${port}`);
      process.exit(1);
    }
    console.log(`uws-echo listening on ${scheme}://127.0.0.1:${port}/`);
  });
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
