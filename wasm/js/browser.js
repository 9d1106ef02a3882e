// duplex-ws, the entry for browser bundles (package.json `exports`, condition `browser`):
// DuplexClient over the browser's WebSocket, with no Node module in its imports. The
// WebAssembly loads when the page calls `await init()` (optionally with the .wasm's URL, e.g.
// from esbuild's file loader); see "Bundlers" in README.md.
export { init } from './src/init-browser.js';
export { DuplexClient, Room, SUBPROTOCOL } from './src/client.js';
