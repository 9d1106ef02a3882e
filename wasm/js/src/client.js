// DuplexClient: rooms, presence and acknowledged publishes over `duplex.v1`, on any WebSocket.
//
// The protocol is the client session of duplex-core (`ClientSession`, in WebAssembly as
// `ChannelSession`): hello, rejoin with `since`, per-room ordering and deduplication, resends,
// the offline queue, backoff with jitter and the application heartbeat all happen there. This
// file owns one socket at a time and the clock: it opens a socket when the session says
// `connect`, closes it on `close_socket`, feeds it frames and time, sends what the session
// queues, arms one timer at the session's next deadline, and turns session events into
// callbacks and promises.

// No import of socket.js or Node modules here: this file is part of the browser entry. The Node
// entry (index.js) sets DuplexSocket as the default socket class.
//
// Transports: a connection is a WebSocket or, where none can open, one of the HTTP transports of
// transports.js (SSE or long polling), which look like a WebSocket to this file. See
// "Transports" in README.md for how one is chosen.
import { loaded } from './glue.js';
import { LongPollTransport, OPEN_TIMEOUT_MS, SseTransport } from './transports.js';

/** The subprotocol of the channels server (`duplex serve`, path `/ws`). */
export const SUBPROTOCOL = 'duplex.v1';

/** The socket class used when `options.WebSocket` is not given and no global one is. */
let fallbackSocket = null;

/** @internal Sets the default socket class (index.js: DuplexSocket in Node). */
export function setDefaultWebSocket(Socket) {
  fallbackSocket = Socket;
}
const OPEN = 1;
const now = () => performance.now();

/** The transports DuplexClient knows, in its default order of preference. */
export const TRANSPORTS = Object.freeze(['websocket', 'sse', 'longpoll']);
/** How often a client on a fallback transport tries a WebSocket again (ms). */
const PROBE_INTERVAL_MS = 5 * 60_000;
/**
 * Once a WebSocket has been welcomed, failures to open the next ones are taken for an outage (a
 * server restart, a network change) rather than a proxy blocking WebSocket: the client falls
 * back only when they have lasted this long (ms).
 */
const PROVEN_WEBSOCKET_MS = 10_000;
/** Connections in a row that die before `welcome` before the next transport is tried. */
const DEATHS_BEFORE_FALLBACK = 3;
/** The key of the remembered transport in sessionStorage (per endpoint URL). */
const storageKey = (url) => `duplex-ws:transport:${url}`;

/** sessionStorage when the page has one and may use it, else null. */
function defaultStorage() {
  try {
    const storage = globalThis.sessionStorage;
    return storage && typeof storage.getItem === 'function' ? storage : null;
  } catch {
    return null; // a sandboxed frame throws on access
  }
}

/** An Error with the `code` of the server or the session (`too_large`, `queue_full`, ...). */
function codeError(code, message) {
  const error = new Error(message ? `${code}: ${message}` : code);
  error.code = code;
  return error;
}

/** Turns an error thrown by the session (`code: explanation`) into a codeError. */
function sessionError(error) {
  const match = /^([a-z_]+): (.*)$/s.exec(error?.message ?? '');
  return match ? codeError(match[1], match[2]) : error;
}

function toJson(value) {
  return JSON.stringify(value) ?? 'null';
}

/** Listeners by event type; a throwing listener is reported like an EventTarget's. */
class Listeners {
  #map = new Map();

  on(type, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    let set = this.#map.get(type);
    if (set === undefined) this.#map.set(type, (set = new Set()));
    set.add(fn);
  }

  off(type, fn) {
    this.#map.get(type)?.delete(fn);
  }

  emit(type, event, self) {
    const set = this.#map.get(type);
    if (set === undefined) return;
    for (const fn of [...set]) {
      try {
        fn.call(self, event);
      } catch (error) {
        (globalThis.reportError ?? ((e) => setTimeout(() => { throw e; })))(error);
      }
    }
  }
}

/**
 * A room joined through a DuplexClient. Events: `message` `{seq, from, data}`, `join`
 * `{client, presence}`, `leave` `{client}`, `presence` `{client, presence}`, `resync` `{}`
 * (history could not cover a gap: reload the room's state), `joined`
 * `{epoch, seq, recovered, membersTruncated}` (every confirmation, rejoins included).
 */
export class Room {
  #name;
  #ops;
  #listeners = new Listeners();
  #membersTruncated = false;

  /** @internal Made by DuplexClient.join. */
  constructor(name, ops) {
    this.#name = name;
    this.#ops = ops;
  }

  get name() {
    return this.#name;
  }

  /** Members and their presence (this client included), as the session keeps them. */
  get members() {
    return this.#ops.members(this.#name);
  }

  /** True when the server cut the member list of the last `joined` to its size limit: members
   * beyond it are learned only from later `join` and `presence` events. */
  get membersTruncated() {
    return this.#membersTruncated;
  }

  /** Where this client's copy of the room stands: `{epoch, seq}`, or null before `joined`. */
  get position() {
    return this.#ops.position(this.#name);
  }

  on(type, fn) {
    this.#listeners.on(type, fn);
    return this;
  }

  off(type, fn) {
    this.#listeners.off(type, fn);
    return this;
  }

  /**
   * Publishes a JSON value. Resolves with its seq once acknowledged (resent after reconnects
   * until then); rejects with the server's refusal (`error.code`: `too_large`, ...), or at once
   * when offline with the offline queue full (`queue_full`), or when the client closes.
   */
  publish(data) {
    return this.#ops.publish(this.#name, data);
  }

  /** Sets this client's presence here (sent now when online, and with every rejoin). */
  setPresence(presence) {
    this.#ops.setPresence(this.#name, presence);
  }

  /** Leaves the room: no more events from it; resolves once the server confirmed. */
  leave() {
    return this.#ops.leave(this.#name);
  }

  /** @internal */
  emit(type, event) {
    if (type === 'joined') this.#membersTruncated = event.membersTruncated;
    this.#listeners.emit(type, event, this);
  }
}

/**
 * The `duplex.v1` channels client. Events: `open` `{clientId, heartbeatMs}` (each welcomed
 * connection), `close` `{reason, final}` (each lost connection; `final` after close() or
 * when another connection took this client id over, reason `taken_over`),
 * `reconnecting` `{attempt, delay}`, `error` (an Error with `code`, for server errors no call
 * answers and refused rejoins), `direct` `{from, data}` (a message to this client alone),
 * `transport` `{transport, previous}` (a connection opened on another transport than the last).
 */
export class DuplexClient {
  #url;
  #Socket;
  #socketOptions;
  /** The transports to use, in order of preference (those this platform can run). */
  #transports;
  /** What the HTTP transports are given: fetch, EventSource, openTimeout. */
  #httpOptions;
  #openTimeout;
  #probeInterval;
  #storage;
  /** Index in #transports where each connection attempt starts (the one that worked last). */
  #preferred = 0;
  /** Index of the transport of the current (or last) connection. */
  #using = 0;
  /** Whether the current connection opened, and whether it got its `welcome`. */
  #socketOpened = false;
  #welcomed = false;
  /** Connections in a row that opened and died without `welcome`. */
  #deaths = 0;
  /** Whether a WebSocket was welcomed in this client's life, and since when the WebSockets
   * fail to open (null: the last one opened). */
  #webSocketWorked = false;
  #webSocketFailingSince = null;
  #openTimer = null;
  #probeTimer = null;
  #probe = null;
  #session;
  #socket = null;
  #timer = null;
  #timerAt = undefined;
  #listeners = new Listeners();
  /** Room objects by name, for every room joined or being joined. */
  #rooms = new Map();
  /** First `joined` awaited, by room name: { room, resolve, reject }. */
  #joins = new Map();
  /** Unacknowledged publishes by id: { resolve, reject }. */
  #publishes = new Map();
  /** Unanswered sends by id: { resolve, reject }. */
  #sends = new Map();
  /** Leaves awaiting `left`, by room name: resolve functions. */
  #leaves = new Map();
  #ops;
  #pumping = false;
  #again = false;
  #closed = false;
  /** Why the session ended for good: `closed` (the application) or `taken_over`. */
  #endReason = 'closed';

  /**
   * @param {string | URL} url The server's channels endpoint, e.g. ws://127.0.0.1:9001/ws.
   * @param {object} [options] See README.md: clientId, token, initialBackoff, maxBackoff,
   *   backoffMultiplier, maxOfflinePublishes, welcomeTimeout (ms), unavailableRetries,
   *   unavailableTimeout (ms), WebSocket, socketOptions, transports, openTimeout (ms),
   *   probeInterval (ms), fetch, EventSource, storage.
   */
  constructor(url, options = {}) {
    const parsed = new URL(String(url));
    if (!['ws:', 'wss:', 'http:', 'https:'].includes(parsed.protocol)) {
      throw new SyntaxError(`not a WebSocket URL: ${parsed.href}`);
    }
    this.#url = parsed.href;
    this.#Socket = options.WebSocket ?? fallbackSocket ?? globalThis.WebSocket;
    this.#socketOptions = options.socketOptions;
    const fetchFn = options.fetch ?? globalThis.fetch;
    const EventSourceClass = options.EventSource ?? globalThis.EventSource;
    this.#openTimeout = ms(options.openTimeout, OPEN_TIMEOUT_MS);
    this.#probeInterval = ms(options.probeInterval, PROBE_INTERVAL_MS);
    this.#httpOptions = { fetch: fetchFn, EventSource: EventSourceClass, openTimeout: this.#openTimeout };
    const wanted = options.transports === undefined ? TRANSPORTS : [...options.transports].map(String);
    for (const name of wanted) {
      if (!TRANSPORTS.includes(name)) throw new TypeError(`unknown transport '${name}' (${TRANSPORTS.join(', ')})`);
    }
    // Those this platform can run: a WebSocket class, fetch (both HTTP transports), EventSource.
    const runs = {
      websocket: typeof this.#Socket === 'function',
      sse: typeof fetchFn === 'function' && typeof EventSourceClass === 'function',
      longpoll: typeof fetchFn === 'function',
    };
    this.#transports = [...new Set(wanted)].filter((name) => runs[name]);
    if (this.#transports.length === 0) {
      throw new TypeError(
        wanted.includes('websocket')
          ? 'no WebSocket class here: pass one as options.WebSocket'
          : `none of the transports ${wanted.join(', ')} can run here: pass options.fetch and options.EventSource`,
      );
    }
    this.#storage = options.storage === undefined ? defaultStorage() : options.storage;
    let remembered = null;
    try {
      remembered = this.#storage?.getItem(storageKey(this.#url)) ?? null;
    } catch {
      // Storage refused: start at the first transport.
    }
    const index = this.#transports.indexOf(remembered);
    this.#preferred = this.#using = index < 0 ? 0 : index;
    this.#session = new (loaded().ChannelSession)(
      options.clientId ?? undefined,
      options.token ?? undefined,
      ms(options.initialBackoff, 500),
      ms(options.maxBackoff, 30_000),
      Number(options.backoffMultiplier ?? 2),
      Math.max(0, Math.floor(Number(options.maxOfflinePublishes ?? 1000))),
      ms(options.welcomeTimeout, 10_000),
      Math.max(0, Math.floor(Number(options.unavailableRetries ?? 10))),
      ms(options.unavailableTimeout, 60_000),
    );
    this.#ops = {
      members: (name) => new Map(JSON.parse(this.#session.members(name))),
      position: (name) => {
        const json = this.#session.position(name);
        return json === undefined ? null : JSON.parse(json);
      },
      publish: (name, data) => this.#publish(name, data),
      setPresence: (name, presence) => this.#call(() => this.#session.set_presence(name, toJson(presence))),
      leave: (name) => this.#leave(name),
    };
    this.#pump();
  }

  /** This client's id: the configured one, then the server's from each `welcome`. */
  get clientId() {
    return this.#session.client_id() ?? null;
  }

  /** The transport of the current connection (or of the next attempt): `websocket`, `sse` or
   * `longpoll`. */
  get transport() {
    return this.#transports[this.#using];
  }

  /** Whether a connection is welcomed right now. */
  get connected() {
    return !this.#closed && this.#session.is_open();
  }

  /** Publishes not yet acknowledged or refused. */
  get pendingPublishes() {
    return this.#closed ? 0 : this.#session.pending_publishes();
  }

  on(type, fn) {
    this.#listeners.on(type, fn);
    return this;
  }

  off(type, fn) {
    this.#listeners.off(type, fn);
    return this;
  }

  /**
   * Joins `room` (`namespace/name`) with an optional `presence`. Resolves with a Room once the
   * server confirmed (joins wait for a connection); rejects with the server's refusal
   * (`error.code`) or a local one (`bad_room`, `already_joined`, `closed`).
   */
  join(name, options = {}) {
    name = String(name);
    const presence = options.presence === undefined ? undefined : toJson(options.presence);
    try {
      this.#session.join(name, presence);
    } catch (error) {
      return Promise.reject(sessionError(error));
    }
    const room = new Room(name, this.#ops);
    this.#rooms.set(name, room);
    const promise = new Promise((resolve, reject) => this.#joins.set(name, { room, resolve, reject }));
    this.#pump();
    return promise;
  }

  /** Skips the rest of the current backoff delay (e.g. the network is known to be back). */
  reconnectNow() {
    if (this.#closed) return;
    this.#session.reconnect_now();
    this.#pump();
  }

  /** Replaces the token sent with the next `hello`. */
  setToken(token) {
    if (!this.#closed) this.#session.set_token(token ?? undefined);
  }

  /**
   * Ends the client for good: the socket is closed, nothing reconnects, pending joins and
   * publishes reject with code `closed`, pending leaves resolve.
   */
  close() {
    if (this.#closed) return;
    this.#session.close();
    this.#pump();
  }

  // ------------------------------------------------------------------ rooms

  #publish(name, data) {
    let id;
    try {
      id = this.#session.publish(name, toJson(data));
    } catch (error) {
      return Promise.reject(sessionError(error));
    }
    const promise = new Promise((resolve, reject) => this.#publishes.set(id, { resolve, reject }));
    this.#pump();
    return promise;
  }

  /**
   * Sends a JSON value to client `to`, which must share a room with this client; it gets a
   * `direct` event `{from, data}`. Resolves once the server handed it over; rejects with
   * `error.code` `not_found` (no shared room, or no such client), `rate_limited`, `too_large`,
   * `offline` (not connected: never queued), `disconnected` (the connection ended first: it may
   * have arrived; never resent), `closed`.
   */
  send(to, data) {
    let id;
    try {
      id = this.#session.send(String(to), toJson(data));
    } catch (error) {
      return Promise.reject(sessionError(error));
    }
    const promise = new Promise((resolve, reject) => this.#sends.set(id, { resolve, reject }));
    this.#pump();
    return promise;
  }

  #leave(name) {
    try {
      this.#session.leave(name);
    } catch (error) {
      return Promise.reject(sessionError(error));
    }
    this.#rooms.delete(name);
    this.#joins.get(name)?.reject(codeError('left', `left ${name} before it was joined`));
    this.#joins.delete(name);
    const promise = new Promise((resolve) => {
      const waiting = this.#leaves.get(name) ?? [];
      waiting.push(resolve);
      this.#leaves.set(name, waiting);
    });
    this.#pump();
    return promise;
  }

  #call(fn) {
    try {
      fn();
    } catch (error) {
      throw sessionError(error);
    }
    this.#pump();
  }

  // ------------------------------------------------------------------ driving the session

  /** Sends what the session queued and handles its events, then re-arms the timer. */
  #pump() {
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#again = false;
        this.#flush();
        let json;
        while (!this.#closed && (json = this.#session.poll_event()) !== undefined) {
          this.#handle(JSON.parse(json));
          this.#flush();
        }
      } while (this.#again);
    } finally {
      this.#pumping = false;
    }
    this.#schedule();
  }

  #flush() {
    if (this.#closed) return;
    let text;
    while ((text = this.#session.poll_transmit()) !== undefined) {
      const socket = this.#socket;
      // The session only queues frames for an open socket; one that is closing already is
      // about to be reported, and the session resends what matters on the next one.
      if (socket !== null && socket.readyState === OPEN) socket.send(text);
    }
  }

  #schedule() {
    const at = this.#closed ? undefined : this.#session.poll_timeout();
    if (at === this.#timerAt && (at === undefined || this.#timer !== null)) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = at;
    if (at === undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerAt = undefined;
      if (this.#closed) return;
      this.#session.handle_timeout(now());
      this.#pump();
    }, Math.max(0, Math.ceil(at - now())));
  }

  /** A connection attempt: the preferred transport first, then the next ones (see #failed). */
  #openSocket() {
    this.#tryTransport(this.#preferred);
  }

  #makeSocket(name) {
    switch (name) {
      case 'websocket':
        return new this.#Socket(this.#url, SUBPROTOCOL, this.#socketOptions);
      case 'sse':
        return new SseTransport(this.#url, SUBPROTOCOL, this.#httpOptions);
      default:
        return new LongPollTransport(this.#url, SUBPROTOCOL, this.#httpOptions);
    }
  }

  #tryTransport(index) {
    let socket;
    try {
      socket = this.#makeSocket(this.#transports[index]);
    } catch (error) {
      this.#listeners.emit('error', error, this);
      this.#failed(index, 'refused');
      return;
    }
    this.#socket = socket;
    this.#welcomed = false;
    this.#socketOpened = false;
    let opened = false;
    const current = () => this.#socket === socket && !this.#closed;
    // Not open within openTimeout: the next transport (a proxy that holds the upgrade, a
    // buffered stream). The last one gets the welcome timeout's time instead.
    const last = index === this.#transports.length - 1;
    clearTimeout(this.#openTimer);
    this.#openTimer = last
      ? null
      : setTimeout(() => {
          this.#openTimer = null;
          if (!current() || opened) return;
          this.#dropSocket();
          this.#failed(index, socket.failure ?? 'timeout');
          this.#pump();
        }, this.#openTimeout);
    socket.onopen = () => {
      if (!current()) return;
      opened = this.#socketOpened = true;
      clearTimeout(this.#openTimer);
      this.#openTimer = null;
      if (socket.protocol !== SUBPROTOCOL) {
        this.#listeners.emit(
          'error',
          codeError('bad_subprotocol', `the server did not accept ${SUBPROTOCOL}`),
          this,
        );
        this.#dropSocket();
        this.#session.disconnected(now());
      } else {
        this.#use(index);
        this.#session.connected(now());
      }
      this.#pump();
    };
    socket.onmessage = (event) => {
      if (!current() || typeof event.data !== 'string') return;
      this.#session.receive(now(), event.data);
      this.#pump();
    };
    socket.onclose = () => {
      if (!current()) return;
      this.#socket = null;
      clearTimeout(this.#openTimer);
      this.#openTimer = null;
      if (!opened) {
        this.#failed(index, socket.failure ?? 'error');
      } else {
        this.#stopProbe();
        if (!this.#welcomed) this.#died();
        this.#session.disconnected(now());
      }
      this.#pump();
    };
    // `close` follows every `error`.
    socket.onerror = () => {};
  }

  /**
   * The transport at `index` could not open. Unless the server itself is out of reach (an HTTP
   * transport saw a network error or a 5xx: changing transport would not help), the next one is
   * tried at once, in the same attempt; when none is left, the attempt failed (backoff).
   */
  #failed(index, why) {
    if (this.#closed) return;
    if (this.#transports[index] === 'websocket' && this.#webSocketWorked) {
      // A WebSocket worked here before: an outage, unless it lasts (see PROVEN_WEBSOCKET_MS).
      this.#webSocketFailingSince ??= now();
      if (now() - this.#webSocketFailingSince < PROVEN_WEBSOCKET_MS) {
        this.#session.disconnected(now());
        return;
      }
    }
    if (why !== 'unreachable' && index + 1 < this.#transports.length) {
      this.#tryTransport(index + 1);
      return;
    }
    this.#session.disconnected(now());
  }

  /** The connection opened, then ended before `welcome`: three in a row, the next transport. */
  #died() {
    if (++this.#deaths < DEATHS_BEFORE_FALLBACK) return;
    this.#deaths = 0;
    if (this.#using + 1 < this.#transports.length) this.#prefer(this.#using + 1);
  }

  /** A connection opened on the transport at `index`. */
  #use(index) {
    const previous = this.#transports[this.#using];
    this.#using = index;
    const transport = this.#transports[index];
    if (transport !== previous) this.#listeners.emit('transport', { transport, previous }, this);
  }

  /** Connections start at the transport at `index` from now on (kept in sessionStorage). */
  #prefer(index) {
    this.#preferred = index;
    try {
      this.#storage?.setItem(storageKey(this.#url), this.#transports[index]);
    } catch {
      // Storage full or refused: the choice lasts as long as this client.
    }
  }

  /** A welcomed connection on a fallback: try a WebSocket again every probeInterval. */
  #scheduleProbe() {
    this.#stopProbe();
    if (this.#using === 0 || this.#transports[0] !== 'websocket' || this.#closed) return;
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = null;
      this.#runProbe();
    }, this.#probeInterval);
  }

  /**
   * Opens a WebSocket beside the connection in use. If it opens with the subprotocol, it is
   * closed and the client reconnects, WebSocket first: the rejoin with `since` recovers what
   * arrived meanwhile, as after any reconnect. Otherwise the next probe is scheduled.
   */
  #runProbe() {
    if (this.#closed || !this.#session.is_open()) return;
    let probe;
    try {
      probe = new this.#Socket(this.#url, SUBPROTOCOL, this.#socketOptions);
    } catch {
      this.#scheduleProbe();
      return;
    }
    this.#probe = probe;
    const settle = (works) => {
      if (this.#probe !== probe) return;
      this.#probe = null;
      clearTimeout(timer);
      probe.onopen = probe.onclose = probe.onerror = probe.onmessage = null;
      try {
        probe.close();
      } catch {
        // Already closing.
      }
      if (this.#closed) return;
      if (!works || !this.#session.is_open()) {
        this.#scheduleProbe();
        return;
      }
      this.#prefer(0);
      this.#dropSocket();
      this.#session.disconnected(now());
      this.#session.reconnect_now();
      this.#pump();
    };
    const timer = setTimeout(() => settle(false), this.#openTimeout);
    probe.onopen = () => settle(probe.protocol === SUBPROTOCOL);
    probe.onclose = () => settle(false);
    probe.onerror = () => {};
  }

  #stopProbe() {
    clearTimeout(this.#probeTimer);
    this.#probeTimer = null;
    const probe = this.#probe;
    this.#probe = null;
    if (probe !== null) {
      probe.onopen = probe.onclose = probe.onerror = probe.onmessage = null;
      try {
        probe.close();
      } catch {
        // Already closing.
      }
    }
  }

  /** Closes the current socket; nothing more of it is reported to the session. */
  #dropSocket() {
    clearTimeout(this.#openTimer);
    this.#openTimer = null;
    const socket = this.#socket;
    this.#socket = null;
    if (socket === null) return;
    try {
      socket.close();
    } catch {
      // Already closing.
    }
  }

  #handle(event) {
    switch (event.type) {
      case 'connect':
        this.#dropSocket();
        this.#openSocket();
        break;
      case 'close_socket':
        // The session gave up on the socket (no `welcome` in time, a missed heartbeat, close()).
        if (this.#socket !== null && this.#socketOpened && !this.#welcomed) this.#died();
        this.#stopProbe();
        this.#dropSocket();
        break;
      case 'reconnecting':
        this.#listeners.emit('reconnecting', { attempt: event.attempt, delay: event.delay_ms }, this);
        break;
      case 'welcome':
        this.#welcomed = true;
        this.#deaths = 0;
        if (this.#transports[this.#using] === 'websocket') {
          this.#webSocketWorked = true;
          this.#webSocketFailingSince = null;
        }
        if (this.#using !== this.#preferred) this.#prefer(this.#using);
        this.#scheduleProbe();
        this.#listeners.emit('open', { clientId: event.client, heartbeatMs: event.heartbeat_ms }, this);
        break;
      case 'disconnected':
        // A takeover ends the session: `closed` follows and reports it as final.
        if (event.reason === 'taken_over') this.#endReason = event.reason;
        else this.#listeners.emit('close', { reason: event.reason, final: false }, this);
        break;
      case 'closed':
        this.#finish();
        break;
      case 'joined': {
        const room = this.#rooms.get(event.room);
        const pending = this.#joins.get(event.room);
        this.#joins.delete(event.room);
        pending?.resolve(pending.room);
        room?.emit('joined', {
          epoch: event.epoch,
          seq: event.seq,
          recovered: event.recovered,
          membersTruncated: event.members_truncated,
        });
        break;
      }
      case 'join_rejected': {
        const error = codeError(event.code, event.message);
        const pending = this.#joins.get(event.room);
        this.#joins.delete(event.room);
        this.#rooms.delete(event.room);
        if (pending) pending.reject(error);
        else this.#listeners.emit('error', error, this);
        break;
      }
      case 'left': {
        const waiting = this.#leaves.get(event.room);
        waiting?.shift()?.();
        if (waiting?.length === 0) this.#leaves.delete(event.room);
        break;
      }
      case 'message':
        this.#rooms
          .get(event.room)
          ?.emit('message', { seq: event.seq, from: event.from, data: event.data });
        break;
      case 'member_joined':
        this.#rooms.get(event.room)?.emit('join', { client: event.client, presence: event.presence });
        break;
      case 'member_left':
        this.#rooms.get(event.room)?.emit('leave', { client: event.client });
        break;
      case 'presence':
        this.#rooms
          .get(event.room)
          ?.emit('presence', { client: event.client, presence: event.presence });
        break;
      case 'resync':
        this.#rooms.get(event.room)?.emit('resync', {});
        break;
      case 'ack': {
        const pending = this.#publishes.get(event.id);
        this.#publishes.delete(event.id);
        pending?.resolve(event.seq);
        break;
      }
      case 'publish_rejected': {
        const pending = this.#publishes.get(event.id);
        this.#publishes.delete(event.id);
        pending?.reject(codeError(event.code, event.message));
        break;
      }
      case 'sent':
        this.#sends.get(event.id)?.resolve();
        this.#sends.delete(event.id);
        break;
      case 'send_rejected':
        this.#sends.get(event.id)?.reject(codeError(event.code, event.message));
        this.#sends.delete(event.id);
        break;
      case 'direct':
        this.#listeners.emit('direct', { from: event.from, data: event.data }, this);
        break;
      case 'server_error':
        this.#listeners.emit('error', codeError(event.code, event.message), this);
        break;
      case 'protocol_error':
        this.#listeners.emit('error', codeError('protocol_error', event.message), this);
        break;
      default:
        break;
    }
  }

  /** The session closed: settle everything still waiting. */
  #finish() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = null;
    clearTimeout(this.#openTimer);
    this.#openTimer = null;
    this.#stopProbe();
    this.#dropSocket();
    const reason = this.#endReason;
    const closed = () =>
      reason === 'taken_over'
        ? codeError('taken_over', 'another connection took this client id over')
        : codeError('closed', 'the client was closed');
    for (const { reject } of this.#joins.values()) reject(closed());
    for (const { reject } of this.#publishes.values()) reject(closed());
    for (const { reject } of this.#sends.values()) reject(closed());
    this.#sends.clear();
    for (const waiting of this.#leaves.values()) for (const resolve of waiting) resolve();
    this.#joins.clear();
    this.#publishes.clear();
    this.#leaves.clear();
    this.#listeners.emit('close', { reason, final: true }, this);
  }
}

function ms(value, fallback) {
  if (value === undefined || value === null) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`invalid duration ${value}`);
  return n;
}
