// duplex-ws: WebSocket clients built on the duplex-core protocol engine compiled to
// WebAssembly. Importing the package loads the engine (top-level await), so every export is
// ready to use.
export { CloseEvent, ErrorEvent } from './src/events.js';
export { DuplexSocket } from './src/socket.js';
export { DuplexClient, Room, SUBPROTOCOL } from './src/client.js';
