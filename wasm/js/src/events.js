// The event classes a WebSocket dispatches that Node 20 lacks as globals. Event and
// MessageEvent are Node's own.

/** WHATWG `CloseEvent`: how the connection ended. */
export class CloseEvent extends Event {
  #code;
  #reason;
  #wasClean;

  constructor(type, init = {}) {
    super(type, init);
    this.#code = init.code ?? 0;
    this.#reason = init.reason ?? '';
    this.#wasClean = init.wasClean ?? false;
  }

  get code() {
    return this.#code;
  }

  get reason() {
    return this.#reason;
  }

  get wasClean() {
    return this.#wasClean;
  }
}

/** The `error` event, with what a browser only logs to its console: the reason. */
export class ErrorEvent extends Event {
  #message;
  #error;

  constructor(type, init = {}) {
    super(type, init);
    this.#message = init.message ?? '';
    this.#error = init.error;
  }

  get message() {
    return this.#message;
  }

  get error() {
    return this.#error;
  }
}
