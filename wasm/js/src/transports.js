// The HTTP transports of `duplex.v1` (docs/PROTOCOL.md, "HTTP transports"), for networks where
// a WebSocket cannot open: server messages down a Server-Sent Events stream (SseTransport) or
// long polling (LongPollTransport), client commands up by POST. Each is shaped like the browser's
// WebSocket as far as DuplexClient uses one: `new T(url, protocol, options)`, `readyState`,
// `protocol`, `onopen`, `onmessage` (`{data}`: one server message as text), `onerror`,
// `onclose` (`{code, reason, wasClean}`), `send(text)`, `close()`. DuplexClient therefore drives
// them like a WebSocket; the session above (hello, rejoin with `since`, acks, resends) does not
// know which one it runs on.
//
// No Node module here: this file is part of the browser entry. `fetch` and `EventSource` come
// from the options (DuplexClient passes its own options' or the globals).

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** How long the first stream's `ready` event (or the `open` POST) may take (ms). */
export const OPEN_TIMEOUT_MS = 3_000;
/** Retries of a broken stream, poll or POST before the transport gives up (then onclose). */
const RETRIES = 4;
/** Delay before retry n (n >= 1; the first retry of a stream that ended goes at once). */
const retryDelay = (n) => Math.min(2_000, 250 * 2 ** (n - 1));
/** A POST body stays under the server's 1 MiB: at most this many UTF-16 units (3 bytes each at
 * most in UTF-8), but always at least one command. */
const MAX_BATCH_UNITS = 256 * 1024;

/**
 * The HTTP endpoints of a WebSocket URL: `ws://h:p/ws?x` → `http://h:p/ws` (`wss` → `https`,
 * http and https kept), the query and fragment left out; `/open`, `/sse`, ... go below it.
 */
export function httpBase(url) {
  const u = new URL(String(url));
  const protocol = u.protocol === 'wss:' || u.protocol === 'https:' ? 'https:' : 'http:';
  return `${protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
}

class TransportError extends Error {
  /** `failure`: why the transport could not open: see HttpTransport.failure. */
  constructor(message, failure) {
    super(message);
    this.failure = failure;
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (ms <= 0 || signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });

/** What a failed request says about the server: 5xx and network errors mean it is not there. */
const failureOf = (status) => (status >= 500 ? 'unreachable' : 'refused');

/**
 * What both HTTP transports share: the session (`POST open`), the commands (`POST send`, one in
 * flight, batched, resent with the same `seq` until answered), `close()` and the end of the
 * socket. Subclasses run the way down (`down()`), calling `deliver(index, text)` per message.
 */
class HttpTransport {
  /** `CONNECTING`, `OPEN`, `CLOSING`, `CLOSED`: the WebSocket's values. */
  readyState = CONNECTING;
  /** The requested subprotocol once open ('duplex.v1'), '' before. */
  protocol = '';
  onopen = null;
  onmessage = null;
  onerror = null;
  onclose = null;
  /**
   * Why the transport closed before it opened, for DuplexClient's choice of transport:
   * `unreachable` (the server could not be reached, or answered 5xx: a reason to retry, not to
   * change transport), `refused` (the endpoint answered otherwise, e.g. 404 on a server
   * without HTTP transports), `buffered` (the stream's `ready` event did not arrive within
   * openTimeout: a proxy holds the stream back), `timeout`. Null once open.
   */
  failure = null;
  /** The session id from `POST open`. */
  session = null;

  #requested;
  #fetch;
  #openTimeout;
  /** Aborted by close() and by the end of the transport: every request and wait stops. */
  #abort = new AbortController();
  /** Commands waiting for the next POST. */
  #queue = [];
  #sending = false;
  #seq = 1;
  /** The index of the last message delivered (the `ack` of every request). */
  last = 0;

  constructor(url, protocol, options = {}) {
    this.url = String(url);
    this.base = httpBase(url);
    this.#requested = Array.isArray(protocol) ? protocol[0] : protocol;
    const fetchFn = options.fetch ?? globalThis.fetch;
    if (typeof fetchFn !== 'function') throw new TypeError('no fetch here: pass one as options.fetch');
    // Called unbound: a browser's fetch refuses any `this` but the window.
    this.#fetch = (input, init) => fetchFn(input, init);
    this.#openTimeout = options.openTimeout ?? OPEN_TIMEOUT_MS;
    this.pollTimeout = 25_000;
    queueMicrotask(() => this.#start());
  }

  /** The signal every request of this transport carries. */
  get signal() {
    return this.#abort.signal;
  }

  get openTimeout() {
    return this.#openTimeout;
  }

  /** `fetch` of `path?query` below the base, aborted with the transport (and after `ms`). */
  async request(path, init = {}, ms = undefined) {
    const signals = [this.signal];
    if (ms !== undefined) signals.push(AbortSignal.timeout(ms));
    return this.#fetch(`${this.base}/${path}`, {
      cache: 'no-store',
      ...init,
      signal: signals.length === 1 ? signals[0] : AbortSignal.any(signals),
    });
  }

  async #start() {
    if (this.readyState !== CONNECTING) return;
    let response;
    try {
      response = await this.request('open', { method: 'POST' }, this.#openTimeout);
    } catch (error) {
      if (this.readyState !== CONNECTING) return;
      const timedOut = error?.name === 'TimeoutError';
      this.fail(timedOut ? 'timeout' : 'unreachable', `POST open: ${error?.message ?? error}`);
      return;
    }
    if (this.readyState !== CONNECTING) return;
    if (response.status !== 200) {
      response.body?.cancel().catch(() => {});
      this.fail(failureOf(response.status), `POST open answered ${response.status}`);
      return;
    }
    let answer;
    try {
      answer = await response.json();
    } catch (error) {
      if (this.readyState === CONNECTING) this.fail('refused', `POST open: ${error?.message ?? error}`);
      return;
    }
    if (this.readyState !== CONNECTING) return;
    if (typeof answer?.session !== 'string' || answer.session === '') {
      this.fail('refused', 'POST open answered no session');
      return;
    }
    this.session = answer.session;
    if (Number.isFinite(answer.poll_ms) && answer.poll_ms > 0) this.pollTimeout = answer.poll_ms;
    this.down();
  }

  /** Subclasses: the way down, started once the session exists. Calls opened() when live. */
  down() {}

  /** The way down is live: the socket opens. */
  opened() {
    if (this.readyState !== CONNECTING) return;
    this.readyState = OPEN;
    this.protocol = this.#requested ?? '';
    this.failure = null;
    this.onopen?.({ type: 'open' });
    this.#pumpSends();
  }

  /** One server message, by index: in order, each once (a replayed index is dropped). */
  deliver(index, text) {
    if (this.readyState !== OPEN || !(index > this.last)) return;
    this.last = index;
    this.onmessage?.({ type: 'message', data: text });
  }

  /** Queues one command (a `duplex.v1` client message as text). */
  send(text) {
    if (this.readyState === CONNECTING) {
      throw new DOMException('the transport is not open yet', 'InvalidStateError');
    }
    if (this.readyState !== OPEN) return;
    this.#queue.push(String(text));
    this.#pumpSends();
  }

  /** Commands that were queued and not yet answered (like a WebSocket's bufferedAmount). */
  get bufferedAmount() {
    return this.#queue.reduce((n, text) => n + text.length, 0);
  }

  async #pumpSends() {
    if (this.#sending || this.readyState !== OPEN || this.#queue.length === 0) return;
    this.#sending = true;
    try {
      while (this.readyState === OPEN && this.#queue.length > 0) {
        let count = 0;
        let units = 0;
        while (count < this.#queue.length && (count === 0 || units + this.#queue[count].length <= MAX_BATCH_UNITS)) {
          units += this.#queue[count].length + 1;
          count++;
        }
        const body = this.#queue.splice(0, count).join('\n');
        const seq = this.#seq++;
        if (!(await this.#post(body, seq))) return;
      }
    } finally {
      this.#sending = false;
    }
  }

  /** One POST, resent with the same seq until answered; false when the transport ended. */
  async #post(body, seq) {
    for (let attempt = 0; ; attempt++) {
      if (this.readyState !== OPEN) return false;
      let status;
      try {
        const response = await this.request(
          `send?session=${encodeURIComponent(this.session)}&seq=${seq}&ack=${this.last}`,
          { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body },
          // A POST the server does not answer is resent (the same seq is applied once).
          30_000,
        );
        status = response.status;
        response.body?.cancel().catch(() => {});
      } catch {
        status = 0; // network error or timeout
      }
      if (this.readyState !== OPEN) return false;
      if (status >= 200 && status < 300) return true;
      if (status === 404) {
        this.end(4404, 'unknown_session');
        return false;
      }
      if (status !== 0 && status < 500) {
        // 409 (a seq skipped), 400, 413: this session cannot go on.
        this.end(4000 + status, `POST send answered ${status}`);
        return false;
      }
      if (attempt >= RETRIES) {
        this.end(1006, 'POST send failed');
        return false;
      }
      await sleep(retryDelay(attempt + 1), this.signal);
    }
  }

  /** The transport failed before it opened: error, then close. */
  fail(failure, message) {
    if (this.readyState !== CONNECTING) return;
    this.failure = failure;
    this.#closeSession();
    this.#finish(1006, message, false, new TransportError(message, failure));
  }

  /**
   * The transport ended after it opened (the server ended the session: `wasClean`, or it could
   * not go on). A session the server still holds is closed with `POST close` (not when the
   * server said so or forgot it).
   */
  end(code, reason, wasClean = false) {
    if (this.readyState !== OPEN) return;
    if (!wasClean && code !== 4404) this.#closeSession();
    this.#finish(code, reason, wasClean, wasClean ? null : new TransportError(reason, null));
  }

  /** Ends the session (`POST close`, not awaited), then `onclose` with 1000. */
  close() {
    if (this.readyState === CLOSING || this.readyState === CLOSED) return;
    this.#closeSession();
    this.readyState = CLOSING;
    this.#abort.abort();
    this.stop();
    setTimeout(() => this.#finish(1000, '', true, null), 0);
  }

  /** Subclasses: stop the way down (close the stream). */
  stop() {}

  #closeSession() {
    if (this.session === null) return;
    const session = this.session;
    this.session = null;
    try {
      this.#fetch(`${this.base}/close?session=${encodeURIComponent(session)}`, {
        method: 'POST',
        keepalive: true,
        cache: 'no-store',
      }).then(
        (response) => response.body?.cancel().catch(() => {}),
        () => {},
      );
    } catch {
      // Best effort: the server ends idle sessions by itself.
    }
  }

  #finish(code, reason, wasClean, error) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.#abort.abort();
    this.stop();
    this.#queue.length = 0;
    if (error !== null) this.onerror?.({ type: 'error', error, message: error.message });
    this.onclose?.({ type: 'close', code, reason, wasClean });
  }
}

/**
 * Server messages down an EventSource (`GET …/sse?session=S`), commands up by POST. The stream's
 * `ready` event opens the socket; one that does not come within openTimeout (3 s) means a proxy
 * buffers the stream: the transport fails with `failure` `buffered`. A stream that breaks (or
 * ends by itself, every 50 s) is resumed after the last message seen (`&last=N`), up to 4
 * retries in a row; a stream the server refuses (404: the session is gone) closes the socket.
 * options: `EventSource` (default: the global one), `fetch`, `openTimeout`.
 */
export class SseTransport extends HttpTransport {
  #EventSource;
  #source = null;
  #timer = null;
  #retries = 0;

  constructor(url, protocol, options = {}) {
    super(url, protocol, options);
    this.#EventSource = options.EventSource ?? globalThis.EventSource;
    if (typeof this.#EventSource !== 'function') {
      throw new TypeError('no EventSource here: pass one as options.EventSource');
    }
  }

  down() {
    this.#stream();
  }

  #stream() {
    this.stop();
    const resume = this.readyState === OPEN ? `&last=${this.last}` : '';
    const source = new this.#EventSource(
      `${this.base}/sse?session=${encodeURIComponent(this.session)}${resume}`,
    );
    this.#source = source;
    const live = () => this.#source === source;
    this.#timer = setTimeout(() => {
      if (!live()) return;
      if (this.readyState === CONNECTING) this.fail('buffered', 'the stream sent no ready event in time');
      else this.#broken();
    }, this.openTimeout);
    // The server's `event: ready` (not the EventSource's own `open`, which a buffering proxy
    // lets through) proves the stream flows.
    source.addEventListener('ready', () => {
      if (!live()) return;
      clearTimeout(this.#timer);
      this.#timer = null;
      this.#retries = 0;
      this.opened();
    });
    source.addEventListener('message', (event) => {
      if (!live()) return;
      const index = Number(event.lastEventId);
      if (Number.isSafeInteger(index)) this.deliver(index, event.data);
    });
    source.addEventListener('close', (event) => {
      if (!live()) return;
      let close = {};
      try {
        close = JSON.parse(event.data) ?? {};
      } catch {
        // A close without a readable body is still the end.
      }
      this.stop();
      this.end(Number(close.code) || 1000, String(close.reason ?? ''), true);
    });
    source.addEventListener('error', (event) => {
      if (!live()) return;
      // CLOSED: the server answered something else than a stream (404: the session is gone);
      // CONNECTING: the stream broke or ended, and the EventSource would retry by itself.
      const refused = source.readyState === 2 || (event?.code !== undefined && event.code >= 400);
      const status = event?.code;
      this.stop();
      if (this.readyState === CONNECTING) {
        this.fail(refused ? failureOf(status ?? 400) : 'unreachable', `the stream failed${status ? ` (${status})` : ''}`);
      } else if (refused) {
        this.end(status === 404 || status === undefined ? 4404 : 1006, 'the stream was refused');
      } else {
        this.#broken();
      }
    });
  }

  /** The stream broke after it opened: resume it after the last message, bounded. */
  #broken() {
    this.stop();
    if (this.readyState !== OPEN) return;
    const retry = this.#retries++;
    if (retry >= RETRIES) {
      this.end(1006, 'the stream could not be resumed');
      return;
    }
    sleep(retry === 0 ? 0 : retryDelay(retry), this.signal).then(() => {
      if (this.readyState === OPEN && this.#source === null) this.#stream();
    });
  }

  stop() {
    clearTimeout(this.#timer);
    this.#timer = null;
    const source = this.#source;
    this.#source = null;
    source?.close();
  }
}

/**
 * Server messages by long polling (`GET …/poll?session=S&ack=N`, held by the server up to
 * `poll_ms`), commands up by POST. Opens once `POST open` answered. A poll that fails is retried
 * (4 times in a row at most); 404 (the session is gone) closes the socket.
 * options: `fetch`, `openTimeout`.
 */
export class LongPollTransport extends HttpTransport {
  down() {
    this.opened();
    this.#loop();
  }

  async #loop() {
    let retries = 0;
    while (this.readyState === OPEN) {
      let response;
      let answer;
      try {
        response = await this.request(
          `poll?session=${encodeURIComponent(this.session)}&ack=${this.last}`,
          {},
          this.pollTimeout + 10_000,
        );
        if (response.status === 200) answer = await response.json();
        else response.body?.cancel().catch(() => {});
      } catch {
        response = null;
      }
      if (this.readyState !== OPEN) return;
      if (response?.status === 404) {
        this.end(4404, 'unknown_session');
        return;
      }
      if (answer === undefined || !Array.isArray(answer?.messages)) {
        if (response !== null && response.status < 500 && response.status !== 200) {
          this.end(4000 + response.status, `poll answered ${response.status}`);
          return;
        }
        if (retries >= RETRIES) {
          this.end(1006, 'polling failed');
          return;
        }
        await sleep(retryDelay(++retries), this.signal);
        continue;
      }
      retries = 0;
      const { messages } = answer;
      const lastIndex = Number.isSafeInteger(answer.last) ? answer.last : this.last + messages.length;
      const first = lastIndex - messages.length + 1;
      for (let i = 0; i < messages.length && this.readyState === OPEN; i++) {
        const message = messages[i];
        this.deliver(first + i, typeof message === 'string' ? message : JSON.stringify(message));
      }
      if (this.readyState !== OPEN) return;
      if (lastIndex > this.last) this.last = lastIndex;
      if (answer.close) {
        this.end(Number(answer.close.code) || 1000, String(answer.close.reason ?? ''), true);
        return;
      }
    }
  }
}

export const TRANSPORT_STATES = { CONNECTING, OPEN, CLOSING, CLOSED };
