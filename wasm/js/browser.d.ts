// Types of duplex-ws's browser entry (browser.js): DuplexClient over the browser's WebSocket.
export { init, WasmSource, DuplexClient, Room, SUBPROTOCOL } from './index.js';
export type {
  Json,
  DuplexError,
  WebSocketConstructor,
  DuplexClientOptions,
  Transport,
  EventSourceConstructor,
  DuplexClientEventMap,
  RoomEventMap,
} from './index.js';
