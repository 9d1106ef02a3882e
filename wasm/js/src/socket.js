// DuplexSocket: the WHATWG WebSocket API with the duplex-core protocol engine (in WebAssembly)
// over a byte stream: a Node `net.Socket` for ws://, a `tls.TLSSocket` for wss://, or whatever
// `options.createConnection` returns.
//
// The engine does the handshake, framing, masking, UTF-8 validation, permessage-deflate, the
// close handshake and the heartbeat. This file only moves bytes between the stream and the
// engine, feeds it `performance.now()`, arms one timer at the engine's next deadline, and
// turns the engine's events into DOM events.

import { CloseEvent, ErrorEvent } from './events.js';
import { EventKind, WsConnection, WsOptions } from './wasm.js';

const isNode = globalThis.process?.versions?.node !== undefined;
// Loaded only in Node; the comments keep bundlers from resolving them for a browser build.
const net = isNode ? await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:net') : null;
const tls = isNode ? await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:tls') : null;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** Longest close reason: a control frame holds 125 bytes, 2 of them the code. */
const MAX_CLOSE_REASON = 123;
/** Longest ping payload. */
const MAX_PING = 125;

const encoder = new TextEncoder();
const now = () => performance.now();

/**
 * A WebSocket client speaking RFC 6455 (and RFC 7692 compression) itself, with the API of the
 * browser's `WebSocket`. See README.md.
 */
export class DuplexSocket extends EventTarget {
  #url;
  #origin;
  #core;
  #stream = null;
  #readyState = CONNECTING;
  #protocol = '';
  #extensions = '';
  #binaryType = 'blob';
  #handlers = new Map();
  /** The timer armed at the engine's next deadline, and that deadline. */
  #timer = null;
  #timerAt = undefined;
  /** How the engine reported the end: `{ code, reason, wasClean }`. */
  #closed = null;
  /** Why the connection failed, when it did: fires `error` before `close`. */
  #failure = null;
  /** Bytes passed to send() once the socket was closing or closed; never sent (WHATWG). */
  #afterClose = 0;
  /** Sends waiting behind a Blob being read, so messages keep their order. */
  #queue = null;
  #queuedBytes = 0;
  /** Our side of the stream was ended, and the timer that destroys it if the peer lingers. */
  #ended = false;
  #linger = null;
  #closeTimeoutMs;
  /** Set while events are dispatched, so a send from a handler does not dispatch the next. */
  #draining = false;

  /**
   * @param {string | URL} url ws://, wss:// (or http://, https://, which mean the same).
   * @param {string | string[]} [protocols] Subprotocols to offer, most preferred first.
   * @param {object} [options] Heartbeat, limits, compression, headers, TLS; see README.md.
   */
  constructor(url, protocols, options = {}) {
    super();
    const parsed = parseUrl(url);
    const offered = parseProtocols(protocols);
    this.#url = parsed.href;
    this.#origin = parsed.origin;
    this.#closeTimeoutMs = positive(options.closeTimeout) ?? 5000;
    const settings = coreOptions(options);
    try {
      this.#core = new WsConnection(parsed.href, offered, settings, now());
    } catch (error) {
      throw new DOMException(`invalid WebSocket URL ${parsed.href}: ${error.message}`, 'SyntaxError');
    } finally {
      settings.free();
    }

    const secure = parsed.protocol === 'wss:';
    const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = parsed.port === '' ? (secure ? 443 : 80) : Number(parsed.port);
    const target = { url: parsed, host, port, secure };
    let stream;
    try {
      stream = options.createConnection
        ? options.createConnection(target)
        : openStream(target, options.tls);
    } catch (error) {
      // Reported like a refused connection: asynchronously, as error then close.
      this.#failure = error?.message ?? String(error);
      setTimeout(() => this.#onStreamClose(), 0);
      return;
    }
    this.#stream = stream;
    stream.on('data', (chunk) => this.#onData(chunk));
    stream.on('end', () => this.#onEnd());
    stream.on('error', (error) => this.#onStreamError(error));
    stream.on('close', () => this.#onStreamClose());
    stream.setNoDelay?.(true);
    // The upgrade request: a stream buffers what is written before it connects.
    this.#pump();
  }

  // ------------------------------------------------------------------ attributes

  get url() {
    return this.#url;
  }

  get readyState() {
    return this.#readyState;
  }

  /** The subprotocol the server selected ('' before open or when none). */
  get protocol() {
    return this.#protocol;
  }

  /** The server's `Sec-WebSocket-Extensions` answer, e.g. `permessage-deflate`. */
  get extensions() {
    return this.#extensions;
  }

  /**
   * Bytes given to send() and not yet handed to the operating system: frames (headers
   * included, compressed when permessage-deflate is on) still in the stream's write buffer,
   * Blobs being read, and everything sent after close().
   */
  get bufferedAmount() {
    let amount = this.#afterClose + this.#queuedBytes;
    if (this.#core) amount += this.#core.buffered_amount();
    if (this.#stream && this.#readyState !== CONNECTING) {
      amount += this.#stream.writableLength ?? 0;
    }
    return amount;
  }

  /** How binary messages are delivered: 'blob' (the WHATWG default) or 'arraybuffer'. */
  get binaryType() {
    return this.#binaryType;
  }

  set binaryType(value) {
    // WebIDL enumeration: other values are ignored.
    if (value === 'blob' || value === 'arraybuffer') this.#binaryType = value;
  }

  get onopen() {
    return this.#getHandler('open');
  }

  set onopen(fn) {
    this.#setHandler('open', fn);
  }

  get onmessage() {
    return this.#getHandler('message');
  }

  set onmessage(fn) {
    this.#setHandler('message', fn);
  }

  get onerror() {
    return this.#getHandler('error');
  }

  set onerror(fn) {
    this.#setHandler('error', fn);
  }

  get onclose() {
    return this.#getHandler('close');
  }

  set onclose(fn) {
    this.#setHandler('close', fn);
  }

  // ------------------------------------------------------------------ methods

  /**
   * Sends a text (string) or binary (ArrayBuffer, typed array, DataView, Blob) message.
   * Throws InvalidStateError while connecting; once closing or closed, the data is counted in
   * bufferedAmount and dropped, as WHATWG says.
   */
  send(data) {
    if (this.#readyState === CONNECTING) {
      throw new DOMException('send() while the WebSocket is still connecting', 'InvalidStateError');
    }
    const item = toPayload(data);
    if (this.#readyState !== OPEN) {
      this.#afterClose += payloadSize(item);
      return;
    }
    if (this.#queue !== null || item.blob !== undefined) {
      this.#enqueue(item);
      return;
    }
    this.#sendNow(item);
  }

  /**
   * Starts the close handshake. `code` must be 1000 or 3000–4999 (else InvalidAccessError),
   * `reason` at most 123 bytes of UTF-8 (else SyntaxError). While connecting, the connection
   * is abandoned instead: `error`, then `close` with 1006.
   */
  close(code, reason) {
    if (code !== undefined) {
      code = clampUint16(code);
      if (code !== 1000 && (code < 3000 || code > 4999)) {
        throw new DOMException(
          `close code must be 1000 or in 3000-4999, got ${code}`,
          'InvalidAccessError',
        );
      }
    }
    let text = '';
    if (reason !== undefined) {
      text = wellFormed(String(reason));
      if (utf8Length(text) > MAX_CLOSE_REASON) {
        throw new DOMException(
          `close reason must be at most ${MAX_CLOSE_REASON} bytes of UTF-8`,
          'SyntaxError',
        );
      }
    }
    if (this.#readyState === CLOSING || this.#readyState === CLOSED) return;
    if (this.#readyState === CONNECTING) {
      this.#readyState = CLOSING;
      this.#failure = 'the WebSocket was closed before the connection was established';
      if (this.#stream) this.#stream.destroy();
      return;
    }
    this.#readyState = CLOSING;
    // Without a code the close frame carries no status (WHATWG), which the engine sends for
    // 1005; the peer's answer then reports 1005, as in browsers.
    const item = { close: code ?? 1005, reason: code === undefined ? '' : text };
    if (this.#queue !== null) {
      this.#enqueue(item);
    } else {
      this.#sendNow(item);
    }
  }

  /**
   * Sends a ping (not part of the WHATWG API) with up to 125 bytes of payload; its answer
   * arrives as a `pong` event. Throws InvalidStateError unless open.
   */
  ping(data) {
    if (this.#readyState !== OPEN) {
      throw new DOMException('ping() needs an open WebSocket', 'InvalidStateError');
    }
    const item = data === undefined ? { bytes: new Uint8Array(0) } : toPayload(data);
    if (item.blob !== undefined) throw new TypeError('ping() takes a string or bytes, not a Blob');
    const bytes = item.bytes ?? encoder.encode(item.text);
    if (bytes.length > MAX_PING) {
      throw new RangeError(`ping payload of ${bytes.length} bytes (at most ${MAX_PING})`);
    }
    this.#core.ping(bytes);
    this.#pump();
  }

  // ------------------------------------------------------------------ sending

  #sendNow(item) {
    const core = this.#core;
    // The engine may have closed while this item waited behind a Blob.
    if (core === null || core.ready_state() !== OPEN) {
      if (item.close === undefined) this.#afterClose += payloadSize(item);
      return;
    }
    if (item.text !== undefined) {
      core.send_text(item.text);
    } else if (item.bytes !== undefined) {
      core.send_binary(item.bytes);
    } else {
      core.close(item.close, item.reason);
    }
    this.#pump();
  }

  #enqueue(item) {
    const size = payloadSize(item);
    item.size = size;
    this.#queuedBytes += size;
    if (this.#queue !== null) {
      this.#queue.push(item);
      return;
    }
    this.#queue = [item];
    this.#sendQueued().catch((error) => {
      this.#failure ??= `could not read a Blob to send: ${error?.message ?? error}`;
      this.#queue = null;
      this.#queuedBytes = 0;
      this.#stream?.destroy();
    });
  }

  async #sendQueued() {
    while (this.#queue !== null && this.#queue.length > 0) {
      const item = this.#queue[0];
      if (item.blob !== undefined) {
        item.bytes = new Uint8Array(await item.blob.arrayBuffer());
        item.blob = undefined;
      }
      if (this.#queue === null) return;
      this.#queue.shift();
      this.#queuedBytes -= item.size;
      this.#sendNow(item);
    }
    this.#queue = null;
  }

  // ------------------------------------------------------------------ the engine

  /** Dispatches the engine's events, writes its output, re-arms its timer. */
  #pump() {
    if (!this.#draining) {
      this.#draining = true;
      try {
        this.#drain();
      } finally {
        this.#draining = false;
      }
    }
    this.#flush();
    this.#schedule();
  }

  #drain() {
    for (;;) {
      const core = this.#core;
      if (core === null) return;
      switch (core.poll_event()) {
        case EventKind.None:
          return;
        case EventKind.Open:
          this.#readyState = OPEN;
          this.#protocol = core.protocol() ?? '';
          this.#extensions = core.extensions();
          this.dispatchEvent(new Event('open'));
          break;
        case EventKind.Text: {
          const text = core.event_text();
          if (this.#readyState === OPEN) this.#dispatchMessage('message', text);
          break;
        }
        case EventKind.Binary: {
          const bytes = core.event_data();
          if (this.#readyState === OPEN) {
            const data = this.#binaryType === 'blob' ? new Blob([bytes]) : arrayBuffer(bytes);
            this.#dispatchMessage('message', data);
          }
          break;
        }
        case EventKind.Ping:
          this.#dispatchMessage('ping', arrayBuffer(core.event_data()));
          break;
        case EventKind.Pong:
          this.#dispatchMessage('pong', arrayBuffer(core.event_data()));
          break;
        case EventKind.Error:
          this.#failure ??= core.event_error();
          break;
        case EventKind.Closed:
          this.#closed = {
            code: core.event_code(),
            reason: core.event_reason(),
            wasClean: core.event_clean(),
          };
          if (this.#readyState < CLOSING) this.#readyState = CLOSING;
          break;
        default:
          break;
      }
    }
  }

  #dispatchMessage(type, data) {
    this.dispatchEvent(new MessageEvent(type, { data, origin: this.#origin }));
  }

  /** Writes the engine's output; ends the stream once the engine is done with it. */
  #flush() {
    const core = this.#core;
    const stream = this.#stream;
    if (core === null || stream === null || this.#ended || stream.destroyed) return;
    const out = core.take_output();
    if (out.length > 0) stream.write(out);
    if (core.is_terminated()) {
      // A client lets the server close TCP first (RFC 6455 §7.1.1); the engine has already
      // waited for that when the close was clean. Ending our side now, the server's FIN (or
      // the linger bound) completes the close.
      this.#ended = true;
      stream.end();
      this.#linger = setTimeout(() => stream.destroy(), this.#closeTimeoutMs);
      this.#linger.unref?.();
    }
  }

  /**
   * Arms one timer at the engine's next deadline. A deadline that moved later (the engine's
   * buffers are kept until a second after the last frame, so each frame moves it) leaves the
   * armed timer as it is: it fires early, does nothing, and arms the next one.
   */
  #schedule() {
    const at = this.#core?.poll_timeout();
    if (at === this.#timerAt) return;
    if (at !== undefined && this.#timer !== null && this.#timerAt <= at) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = at;
    if (at === undefined) return;
    // One extra millisecond: the timer's clock and performance.now() may disagree by a hair,
    // and waking before the deadline only re-arms the timer.
    const delay = Math.max(0, Math.ceil(at - now())) + 1;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerAt = undefined;
      if (this.#core === null) return;
      this.#core.handle_timeout(now());
      this.#pump();
    }, delay);
    // The stream keeps the process alive while the connection matters.
    this.#timer.unref?.();
  }

  // ------------------------------------------------------------------ the stream

  #onData(chunk) {
    if (this.#core === null) return;
    this.#core.receive(now(), chunk);
    this.#pump();
  }

  #onEnd() {
    if (this.#core === null) return;
    this.#core.receive_eof(now());
    this.#pump();
  }

  #onStreamError(error) {
    if (this.#closed === null) this.#failure ??= error?.message ?? String(error);
    this.#onEnd();
  }

  #onStreamClose() {
    if (this.#readyState === CLOSED) return;
    const core = this.#core;
    if (core !== null && this.#closed === null) {
      core.receive_eof(now());
      this.#pump();
    }
    clearTimeout(this.#timer);
    clearTimeout(this.#linger);
    this.#timer = null;
    this.#linger = null;
    this.#readyState = CLOSED;
    if (this.#core !== null) {
      this.#core.free();
      this.#core = null;
    }
    this.#queue = null;
    this.#queuedBytes = 0;
    const closed = this.#closed ?? { code: 1006, reason: '', wasClean: false };
    if (this.#failure !== null) {
      const message = this.#failure;
      this.dispatchEvent(new ErrorEvent('error', { message, error: new Error(message) }));
    }
    this.dispatchEvent(new CloseEvent('close', closed));
  }

  // ------------------------------------------------------------------ event handlers

  #getHandler(type) {
    return this.#handlers.get(type) ?? null;
  }

  #setHandler(type, fn) {
    if (!this.#handlers.has(type)) {
      // The handler keeps the place of its first assignment among the listeners (WHATWG).
      this.addEventListener(type, (event) => {
        const handler = this.#handlers.get(type);
        if (typeof handler === 'function') handler.call(this, event);
      });
    }
    this.#handlers.set(type, typeof fn === 'function' ? fn : null);
  }
}

for (const [name, value] of Object.entries({ CONNECTING, OPEN, CLOSING, CLOSED })) {
  Object.defineProperty(DuplexSocket, name, { value, enumerable: true });
  Object.defineProperty(DuplexSocket.prototype, name, { value, enumerable: true });
}

// ------------------------------------------------------------------ helpers

function openStream({ host, port, secure }, tlsOptions) {
  if (net === null) {
    throw new Error('DuplexSocket needs Node (net, tls) or a createConnection option');
  }
  if (!secure) return net.connect({ host, port });
  return tls.connect({
    host,
    port,
    // SNI takes names only.
    servername: net.isIP(host) ? undefined : host,
    ...tlsOptions,
  });
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function parseUrl(url) {
  let parsed;
  try {
    parsed = new URL(String(url));
  } catch {
    throw new DOMException(`invalid URL: ${url}`, 'SyntaxError');
  }
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:';
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:';
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new DOMException(`URL scheme must be ws: or wss:, not ${parsed.protocol}`, 'SyntaxError');
  }
  if (parsed.hash !== '' || parsed.href.endsWith('#')) {
    throw new DOMException('a WebSocket URL may not have a fragment', 'SyntaxError');
  }
  return parsed;
}

function parseProtocols(protocols) {
  if (protocols === undefined) return [];
  const list =
    typeof protocols === 'object' && protocols !== null && Symbol.iterator in protocols
      ? Array.from(protocols, String)
      : [String(protocols)];
  const seen = new Set();
  for (const protocol of list) {
    if (!TOKEN.test(protocol)) {
      throw new DOMException(`invalid subprotocol ${JSON.stringify(protocol)}`, 'SyntaxError');
    }
    if (seen.has(protocol)) {
      throw new DOMException(`subprotocol ${JSON.stringify(protocol)} offered twice`, 'SyntaxError');
    }
    seen.add(protocol);
  }
  return list;
}

/** A positive number of milliseconds, or undefined. */
function positive(value) {
  if (value === undefined || value === null) return undefined;
  const ms = Number(value);
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`invalid duration ${value}`);
  return ms;
}

function coreOptions(options) {
  const settings = new WsOptions();
  const ms = (name, field) => {
    const value = positive(options[name]);
    if (value !== undefined) settings[field] = value;
  };
  ms('pingInterval', 'ping_interval_ms');
  ms('idleTimeout', 'idle_timeout_ms');
  ms('handshakeTimeout', 'handshake_timeout_ms');
  ms('closeTimeout', 'close_timeout_ms');
  if (options.maxMissedPongs !== undefined) {
    settings.max_missed_pongs = Math.max(1, Math.floor(Number(options.maxMissedPongs)));
  }
  if (options.maxMessageSize !== undefined) {
    settings.max_message_size = Math.max(0, Math.floor(Number(options.maxMessageSize)));
  }
  const deflate = options.perMessageDeflate ?? true;
  if (deflate === false) {
    settings.deflate = false;
  } else if (typeof deflate === 'object') {
    if (deflate.threshold !== undefined) settings.deflate_threshold = Number(deflate.threshold);
    if (deflate.level !== undefined) settings.deflate_level = Number(deflate.level);
    if (deflate.clientNoContextTakeover !== undefined) {
      settings.deflate_client_no_context_takeover = Boolean(deflate.clientNoContextTakeover);
    }
    if (deflate.serverNoContextTakeover !== undefined) {
      settings.deflate_server_no_context_takeover = Boolean(deflate.serverNoContextTakeover);
    }
  }
  if (options.origin !== undefined) settings.set_origin(String(options.origin));
  const headers = options.headers ?? {};
  const pairs =
    Symbol.iterator in headers ? Array.from(headers) : Object.entries(headers);
  for (const [name, value] of pairs) settings.add_header(String(name), String(value));
  return settings;
}

/** What send() was given: `{ text }`, `{ bytes }` or `{ blob }`. */
function toPayload(data) {
  if (typeof data === 'string') return { text: data };
  if (
    data instanceof ArrayBuffer ||
    (typeof SharedArrayBuffer !== 'undefined' && data instanceof SharedArrayBuffer)
  ) {
    return { bytes: new Uint8Array(data) };
  }
  if (ArrayBuffer.isView(data)) {
    return { bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  }
  if (typeof Blob !== 'undefined' && data instanceof Blob) return { blob: data };
  return { text: String(data) };
}

function payloadSize(item) {
  if (item.text !== undefined) return utf8Length(wellFormed(item.text));
  if (item.bytes !== undefined) return item.bytes.byteLength;
  if (item.blob !== undefined) return item.blob.size;
  return 0;
}

/** A USVString: lone surrogates become U+FFFD, as the UTF-8 encoding will make them. */
function wellFormed(text) {
  return typeof text.toWellFormed === 'function' ? text.toWellFormed() : text;
}

function utf8Length(text) {
  let length = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) length += 1;
    else if (unit < 0x800) length += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      // A surrogate pair: one 4-byte character.
      length += 4;
      i++;
    } else length += 3;
  }
  return length;
}

/** WebIDL `[Clamp] unsigned short`. */
function clampUint16(value) {
  const number = Number(value);
  if (Number.isNaN(number)) return 0;
  const clamped = Math.min(Math.max(number, 0), 0xffff);
  // Round half to even.
  const floor = Math.floor(clamped);
  const diff = clamped - floor;
  if (diff > 0.5 || (diff === 0.5 && floor % 2 === 1)) return floor + 1;
  return floor;
}

/** The ArrayBuffer behind a Uint8Array the engine returned (a fresh copy, whole). */
function arrayBuffer(bytes) {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) return bytes.buffer;
  return bytes.slice().buffer;
}
