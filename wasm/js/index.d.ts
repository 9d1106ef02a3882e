// Types of the duplex-ws package.

/** Deflate settings of `DuplexSocketOptions.perMessageDeflate`. */
export interface PerMessageDeflateOptions {
  /** Messages shorter than this many bytes are sent uncompressed (default 32). */
  threshold?: number;
  /** zlib level, 0..9 (default 6). */
  level?: number;
  /** Compress each of our messages on its own: less memory, larger output. */
  clientNoContextTakeover?: boolean;
  /** Ask the server to compress each of its messages on its own. */
  serverNoContextTakeover?: boolean;
}

/** What a `createConnection` function is given. */
export interface ConnectionTarget {
  url: URL;
  /** Host name or IP address (IPv6 without brackets). */
  host: string;
  port: number;
  /** True for wss://. */
  secure: boolean;
}

/**
 * The byte stream a DuplexSocket drives: the subset of a Node `Duplex` it uses. It may be
 * written to before it connects.
 */
export interface ByteStream {
  write(chunk: Uint8Array): unknown;
  end(): unknown;
  destroy(): unknown;
  on(event: 'data', listener: (chunk: Uint8Array) => void): unknown;
  on(event: 'end' | 'close', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  setNoDelay?(noDelay: boolean): unknown;
  readonly writableLength?: number;
}

/** The third constructor argument (not part of the WHATWG API). Durations in milliseconds. */
export interface DuplexSocketOptions {
  /** Ping the server this often while open (default: never). */
  pingInterval?: number;
  /** With pingInterval: fail the connection (1001) after this many unanswered pings (default 3). */
  maxMissedPongs?: number;
  /** Fail the connection (1001) when nothing arrives for this long (default: never). */
  idleTimeout?: number;
  /** From the constructor to the server's 101 response, TCP and TLS included (default 10000). */
  handshakeTimeout?: number;
  /** For the server to answer our close and then close TCP (default 5000). */
  closeTimeout?: number;
  /** Largest message accepted; larger ones fail the connection with 1009 (default 64 MiB). */
  maxMessageSize?: number;
  /** Offer permessage-deflate: true (default), false, or settings. */
  perMessageDeflate?: boolean | PerMessageDeflateOptions;
  /** Extra request headers. */
  headers?: Record<string, string> | Iterable<[string, string]>;
  /** The Origin header (none by default). */
  origin?: string;
  /** Options for `tls.connect` (wss://), e.g. `{ ca }` or `{ rejectUnauthorized: false }`. */
  tls?: Record<string, unknown>;
  /** Opens the byte stream instead of `net.connect` / `tls.connect`. */
  createConnection?: (target: ConnectionTarget) => ByteStream;
}

/** WHATWG `CloseEvent`. */
export class CloseEvent extends Event {
  constructor(type: string, init?: EventInit & { code?: number; reason?: string; wasClean?: boolean });
  readonly code: number;
  readonly reason: string;
  readonly wasClean: boolean;
}

/** The `error` event: why the connection failed. */
export class ErrorEvent extends Event {
  constructor(type: string, init?: EventInit & { message?: string; error?: unknown });
  readonly message: string;
  readonly error: unknown;
}

export interface DuplexSocketEventMap {
  open: Event;
  message: MessageEvent<string | ArrayBuffer | Blob>;
  error: ErrorEvent;
  close: CloseEvent;
  /** A ping arrived (its pong was sent already); `data` is its payload. */
  ping: MessageEvent<ArrayBuffer>;
  /** A pong arrived; `data` is its payload. */
  pong: MessageEvent<ArrayBuffer>;
}

/**
 * The WHATWG WebSocket API, with the protocol run by duplex-core in WebAssembly over a Node
 * `net`/`tls` socket (or `options.createConnection`).
 */
export class DuplexSocket extends EventTarget {
  constructor(url: string | URL, protocols?: string | string[], options?: DuplexSocketOptions);

  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSING: 2;
  readonly CLOSED: 3;

  readonly url: string;
  readonly readyState: 0 | 1 | 2 | 3;
  readonly protocol: string;
  readonly extensions: string;
  readonly bufferedAmount: number;
  /** 'blob' (default, as in browsers) or 'arraybuffer'; other values are ignored. */
  binaryType: 'blob' | 'arraybuffer';

  onopen: ((this: DuplexSocket, event: Event) => unknown) | null;
  onmessage: ((this: DuplexSocket, event: MessageEvent<string | ArrayBuffer | Blob>) => unknown) | null;
  onerror: ((this: DuplexSocket, event: ErrorEvent) => unknown) | null;
  onclose: ((this: DuplexSocket, event: CloseEvent) => unknown) | null;

  /** Throws InvalidStateError while CONNECTING. */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void;
  /** `code`: 1000 or 3000–4999 (InvalidAccessError); `reason`: at most 123 UTF-8 bytes (SyntaxError). */
  close(code?: number, reason?: string): void;
  /** Sends a ping (at most 125 bytes); throws InvalidStateError unless OPEN. */
  ping(data?: string | ArrayBufferLike | ArrayBufferView): void;

  addEventListener<K extends keyof DuplexSocketEventMap>(
    type: K,
    listener: (this: DuplexSocket, event: DuplexSocketEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof DuplexSocketEventMap>(
    type: K,
    listener: (this: DuplexSocket, event: DuplexSocketEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

// ------------------------------------------------------------------ DuplexClient (duplex.v1)

/** The subprotocol DuplexClient speaks: 'duplex.v1'. */
export const SUBPROTOCOL: 'duplex.v1';

/** A JSON value (presence, published data). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** An Error with the code of the server (`too_large`, `unauthorized`, ...) or of the client
 * (`bad_room`, `already_joined`, `not_joined`, `queue_full`, `closed`, `left`). */
export interface DuplexError extends Error {
  code: string;
}

/** Anything constructed like the browser's WebSocket. */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[], options?: any): {
    readonly readyState: number;
    readonly protocol: string;
    onopen: ((event: any) => unknown) | null;
    onmessage: ((event: { data: unknown }) => unknown) | null;
    onerror: ((event: any) => unknown) | null;
    onclose: ((event: any) => unknown) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
  };
}

/** Options of `new DuplexClient(url, options)`. Durations in milliseconds. */
export interface DuplexClientOptions {
  /** The client id of the first `hello` (default: the server assigns one). */
  clientId?: string;
  /** Sent in every `hello` (e.g. a JWT for `duplex serve --jwt-secret`). */
  token?: string;
  /** Upper bound of the first reconnect delay (default 500); delays are fully jittered. */
  initialBackoff?: number;
  /** Upper bound of any reconnect delay (default 30000). */
  maxBackoff?: number;
  /** Growth of the bound per failed attempt (default 2). */
  backoffMultiplier?: number;
  /** Publishes held while offline; past it `publish` rejects with `queue_full` (default 1000). */
  maxOfflinePublishes?: number;
  /** How long to wait for `welcome` after the socket opened (default 10000). */
  welcomeTimeout?: number;
  /**
   * How many times a publish or join refused with `unavailable` (a node that cannot reach its
   * broker) is retried before it rejects with `unavailable` (default 10; 0: at once).
   */
  unavailableRetries?: number;
  /** No retry once this long has passed since the first `unavailable` of it (default 60000). */
  unavailableTimeout?: number;
  /** The WebSocket class (default: the global WebSocket in browsers, DuplexSocket in Node). */
  WebSocket?: WebSocketConstructor;
  /** Third constructor argument of the WebSocket class, e.g. DuplexSocketOptions in Node. */
  socketOptions?: DuplexSocketOptions | Record<string, unknown>;
  /**
   * The transports to use, in order of preference (default `['websocket', 'sse', 'longpoll']`);
   * those this platform cannot run (no WebSocket class, no `fetch`, no `EventSource`) are left
   * out. See "Transports" in README.md.
   */
  transports?: Transport[];
  /** How long a transport may take to open before the next one is tried (default 3000). */
  openTimeout?: number;
  /** How often a client on a fallback transport tries a WebSocket again (default 300000). */
  probeInterval?: number;
  /** The fetch of the HTTP transports (default: the global fetch). */
  fetch?: typeof fetch;
  /** The EventSource class of the `sse` transport (default: the global one; in Node, e.g. the
   * `eventsource` npm package's). */
  EventSource?: EventSourceConstructor;
  /** Where the transport that worked is remembered (default: sessionStorage when there is one;
   * null: nowhere). */
  storage?: { getItem(key: string): string | null; setItem(key: string, value: string): void } | null;
}

/** How a DuplexClient reaches the server: a WebSocket, Server-Sent Events + POST, or long
 * polling + POST. */
export type Transport = 'websocket' | 'sse' | 'longpoll';

/** Anything constructed like the browser's EventSource. */
export interface EventSourceConstructor {
  new (url: string, init?: any): {
    readonly readyState: number;
    addEventListener(type: string, listener: (event: any) => unknown): void;
    close(): void;
  };
}

export interface DuplexClientEventMap {
  /** A connection was welcomed (the first one and every reconnect). */
  open: { clientId: string; heartbeatMs: number };
  /** A connection was lost (`final: false`, a reconnect follows) or close() was called. */
  /** `final` when nothing reconnects: after `close()` (`closed`) or when another connection took
   * this client id over (`taken_over`; pending joins and publishes reject with that code). */
  close: {
    reason: 'socket_closed' | 'heartbeat_timeout' | 'welcome_timeout' | 'closed' | 'taken_over';
    final: boolean;
  };
  /** Attempt `attempt` of a reconnect starts in `delay` ms. */
  reconnecting: { attempt: number; delay: number };
  /** A server error no call answers, a refused rejoin, an unreadable server message. */
  error: DuplexError;
  /** A message to this client alone (`send` of a client sharing a room, or `api`, the server's
   * HTTP API). */
  direct: { from: string; data: Json };
  /** A connection opened on another transport than the previous one (a fallback, or back to
   * WebSocket after a probe). */
  transport: { transport: Transport; previous: Transport };
}

export interface RoomEventMap {
  /** A message, once per seq, in seq order. */
  message: { seq: number; from: string; data: Json };
  /** Another client joined. */
  join: { client: string; presence: Json };
  /** Another client left (or its connection ended). */
  leave: { client: string };
  /** Another member's presence changed. */
  presence: { client: string; presence: Json };
  /** Messages were lost for good (history did not cover the gap, or the server restarted):
   * reload the room's state by other means; messages continue after the current seq. */
  resync: Record<string, never>;
  /** The server confirmed membership (first join and every rejoin). `membersTruncated`: the
   * server cut the member list to its size limit; the others are learned from later `join` and
   * `presence` events. */
  joined: { epoch: string; seq: number; recovered: boolean; membersTruncated: boolean };
}

/** A room joined through `DuplexClient.join`. */
export class Room {
  private constructor();
  readonly name: string;
  /** Members (this client included) and their presence, as the session keeps them. */
  readonly members: Map<string, Json>;
  /** True when the last `joined` carried a member list cut to the server's size limit. */
  readonly membersTruncated: boolean;
  /** The room's epoch and the last seq delivered here, or null before `joined`. */
  readonly position: { epoch: string; seq: number } | null;
  on<K extends keyof RoomEventMap>(type: K, listener: (event: RoomEventMap[K]) => unknown): this;
  off<K extends keyof RoomEventMap>(type: K, listener: (event: RoomEventMap[K]) => unknown): this;
  /** Resolves with the message's seq once acknowledged; survives reconnects. A refusal with
   * `unavailable` (a node without its broker) is retried with the same id after a jittered
   * backoff delay, ahead of the room's later publishes, up to 10 times within 60 s. Rejects with a
   * DuplexError: the server's refusal, `unavailable` past those retries, `queue_full` when
   * offline and full, `closed`. */
  publish(data: Json): Promise<number>;
  /** Sets this client's presence (sent now when online, and with every rejoin). */
  setPresence(presence: Json): void;
  /** Leaves the room; resolves once the server confirmed. */
  leave(): Promise<void>;
}

/**
 * The duplex.v1 channels client: rooms, presence, acknowledged publishes, reconnection with
 * backoff, recovery of missed messages, all run by duplex-core's client session in WebAssembly.
 */
export class DuplexClient {
  constructor(url: string | URL, options?: DuplexClientOptions);
  /** The configured id, then the server's from each `welcome`; null until known. */
  readonly clientId: string | null;
  /** The transport of the current connection (or of the next attempt). */
  readonly transport: Transport;
  /** Whether a connection is welcomed right now. */
  readonly connected: boolean;
  /** Publishes not yet acknowledged or refused. */
  readonly pendingPublishes: number;
  on<K extends keyof DuplexClientEventMap>(type: K, listener: (event: DuplexClientEventMap[K]) => unknown): this;
  off<K extends keyof DuplexClientEventMap>(type: K, listener: (event: DuplexClientEventMap[K]) => unknown): this;
  /** Resolves once the server confirmed membership; rejects with a DuplexError (a refusal with
   * `unavailable` only after the retries a publish gets). */
  join(room: string, options?: { presence?: Json }): Promise<Room>;
  /** Skips the rest of the current backoff delay. */
  reconnectNow(): void;
  /** Sends `data` to client `to`, which must share a room with this client (it gets a
   * `direct` event). Resolves once the server handed it over. Never queued nor resent: rejects
   * with a DuplexError `not_found` (no shared room, or no such client), `rate_limited`,
   * `too_large`, `unavailable`, `offline` (not connected), `disconnected` (the connection ended
   * before the answer: it may have arrived), `bad_client`, `closed`. */
  send(to: string, data: Json): Promise<void>;
  /** Replaces the token of the next `hello`. */
  setToken(token: string | null | undefined): void;
  /** Ends the client for good; pending joins and publishes reject with `closed`. */
  close(): void;
}

// ------------------------------------------------------------------ loading the WebAssembly

/** Where the .wasm comes from: its URL, a Response (or a promise of one), its bytes, or a
 * compiled module. */
export type WasmSource =
  | string
  | URL
  | Request
  | Response
  | Promise<Response>
  | BufferSource
  | WebAssembly.Module;

/**
 * Loads the WebAssembly (by default the .wasm next to the package); resolves once the classes
 * are usable. The Node entry has done it at import; in the browser entry, call it before
 * `new DuplexClient`. Later calls return the first call's promise; a failed load can be retried.
 */
export function init(source?: WasmSource): Promise<void>;
