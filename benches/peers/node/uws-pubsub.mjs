// uws-pubsub.mjs PORT [TOPIC]: uWebSockets.js's own pub/sub (the @trufflesuite/uws-js-unofficial
// build), the fan-out peer of `duplex serve` rooms for benches/fanout.sh, driven by
// `duplex-load --mode fanout --protocol uws`. Listens on 127.0.0.1, any path. Every connection is
// subscribed to TOPIC (default "fanout") when it opens (`ws.subscribe`); every message a
// connection sends is published to TOPIC as it is, with its type (`app.publish`), so it reaches
// every connection, the sender included. Compression disabled, messages up to 1 MiB, no idle
// timeout, 64 MiB of backpressure per connection (uWS drops a publish for a subscriber past it;
// duplex-load would report the loss).
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
  console.error(`uws-pubsub: no native uWebSockets.js for this Node (${addon}): ${e.message}`);
  process.exit(1);
}

const port = Number(process.argv[2]);
const topic = process.argv[3] ?? "fanout";
if (!Number.isInteger(port) || port <= 0 || port > 65535 || topic === "") {
  console.error("usage: node uws-pubsub.mjs PORT [TOPIC]");
  process.exit(2);
}

const app = uWS.App();
app
  .ws("/*", {
    compression: uWS.DISABLED,
    maxPayloadLength: 1024 * 1024,
    maxBackpressure: 64 * 1024 * 1024,
    idleTimeout: 0,
    open: (ws) => {
      ws.subscribe(topic);
    },
    message: (ws, message, isBinary) => {
      app.publish(topic, message, isBinary);
    },
  })
  .listen("127.0.0.1", port, (token) => {
    if (!token) {
      console.error(`uws-pubsub: cannot listen on 127.0.0.1:${port}`);
      process.exit(1);
    }
    console.log(`uws-pubsub listening on ws://127.0.0.1:${port}/ (topic ${topic})`);
  });
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
