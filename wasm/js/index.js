// duplex-ws, the entry for Node (and pages that load the package unbundled): WebSocket clients
// built on the duplex-core protocol engine compiled to WebAssembly. Importing it loads the
// engine (top-level await), so every export is ready to use. Bundlers building for browsers
// get browser.js instead (package.json `exports`), which imports no Node module.
import { DuplexSocket } from './src/socket.js';
import { setDefaultWebSocket } from './src/client.js';

// DuplexClient's socket: DuplexSocket in Node, the browser's WebSocket in pages.
if (globalThis.process?.versions?.node !== undefined || typeof globalThis.WebSocket !== 'function') {
  setDefaultWebSocket(DuplexSocket);
}

export { CloseEvent, ErrorEvent } from './src/events.js';
export { DuplexSocket };
export { DuplexClient, Room, SUBPROTOCOL } from './src/client.js';
export { init } from './src/init.js';
