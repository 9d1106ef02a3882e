// Test servers for the duplex-ws suites, all on 127.0.0.1:
// - startEcho(): the real `duplex echo` server (DUPLEX_BIN, or target/release/duplex);
// - startRawServer(): a scripted WebSocket server written here, for what an echo server
//   cannot do (choose a subprotocol, refuse the upgrade, send invalid frames, never pong).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function duplexBin() {
  const bin =
    process.env.DUPLEX_BIN ??
    path.join(process.env.CARGO_TARGET_DIR ?? path.join(repoRoot, 'target'), 'release', 'duplex');
  if (!existsSync(bin)) {
    throw new Error(`${bin} not found: cargo build --release -p duplex (or set DUPLEX_BIN)`);
  }
  return bin;
}

/** Servers still running, killed if the test process exits without stopping them. */
const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/**
 * Starts `duplex COMMAND --listen 127.0.0.1:PORT ...args` (port 0: a free one) and waits for the
 * line announcing the port; resolves to { port, stop, kill }. Every such server is killed if the
 * test process exits without stopping it.
 */
export async function startDuplex(command, args = [], port = 0) {
  const child = spawn(duplexBin(), [command, '--listen', `127.0.0.1:${port}`, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const bound = await new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`duplex ${command} did not announce its port within 10 s: ${stderr}`));
    }, 10_000);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const match = /listening on (?:wss?|https?):\/\/127\.0\.0\.1:(\d+)\//.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`duplex ${command} exited with ${code} before listening: ${stderr.slice(-500)}`));
    });
  });
  return {
    port: bound,
    /** SIGTERM (a graceful drain), SIGKILL after 5 s. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
    /** SIGKILL: the server vanishes without closing anything. */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await once(child, 'exit');
    },
  };
}

/** Starts `duplex echo` on a free port; resolves to { url, port, stop }. */
export async function startEcho(args = []) {
  const server = await startDuplex('echo', ['--threads', '1', ...args]);
  return { port: server.port, url: `ws://127.0.0.1:${server.port}/`, stop: server.stop };
}

/** A port nothing listens on (bound, read, released). */
export async function unusedPort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** An unmasked server frame. */
export function frame(opcode, payload = Buffer.alloc(0), { fin = true } = {}) {
  const data = Buffer.from(payload);
  let header;
  if (data.length < 126) {
    header = Buffer.from([(fin ? 0x80 : 0) | opcode, data.length]);
  } else if (data.length < 65536) {
    header = Buffer.alloc(4);
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = 126;
    header.writeUInt16BE(data.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(data.length), 2);
  }
  return Buffer.concat([header, data]);
}

export function closePayload(code, reason = '') {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return payload;
}

/**
 * One accepted connection of the raw server: the request head, a frame reader for what the
 * client sends (masked frames, unmasked here), and the socket.
 */
class RawConnection {
  constructor(socket, head, rest) {
    this.socket = socket;
    this.head = head;
    this.buffer = rest;
    this.waiters = [];
    this.ended = false;
    socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.#wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.#wake();
    });
    socket.on('error', () => {
      this.ended = true;
      this.#wake();
    });
  }

  /** The request header `name` (lower case), or undefined. */
  header(name) {
    for (const line of this.head.split('\r\n').slice(1)) {
      const i = line.indexOf(':');
      if (i > 0 && line.slice(0, i).trim().toLowerCase() === name) return line.slice(i + 1).trim();
    }
    return undefined;
  }

  #wake() {
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** Resolves to the next client frame { fin, opcode, payload }, or null at EOF. */
  async readFrame(timeoutMs = 5_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const parsed = parseClientFrame(this.buffer);
      if (parsed) {
        this.buffer = this.buffer.subarray(parsed.length);
        return parsed.frame;
      }
      if (this.ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no frame from the client in time');
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  send(bytes) {
    this.socket.write(bytes);
  }
}

function parseClientFrame(buf) {
  if (buf.length < 2) return null;
  const fin = (buf[0] & 0x80) !== 0;
  const opcode = buf[0] & 0x0f;
  const masked = (buf[1] & 0x80) !== 0;
  let len = buf[1] & 0x7f;
  let offset = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    offset = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  const maskLen = masked ? 4 : 0;
  if (buf.length < offset + maskLen + len) return null;
  const mask = buf.subarray(offset, offset + maskLen);
  const payload = Buffer.from(buf.subarray(offset + maskLen, offset + maskLen + len));
  if (masked) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
  return { frame: { fin, opcode, masked, payload }, length: offset + maskLen + len };
}

/**
 * A scripted server. `respond(head)` returns the response head to send: use `accept(head,
 * extraHeaders)` for a 101, or any HTTP text. `onConnection(conn)` then scripts the rest.
 * Resolves to { url, port, connections, close }.
 */
export async function startRawServer({ respond = (head) => accept(head), onConnection = () => {} } = {}) {
  const connections = [];
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buffer = Buffer.alloc(0);
    const onData = (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      const head = buffer.subarray(0, end).toString('latin1');
      const rest = buffer.subarray(end + 4);
      const response = respond(head);
      if (response === null) return; // never answer
      socket.write(response);
      const conn = new RawConnection(socket, head, rest);
      connections.push(conn);
      onConnection(conn);
    };
    socket.on('data', onData);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  return {
    port,
    url: `ws://127.0.0.1:${port}/`,
    connections,
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

/** A valid 101 response to the request `head`, with extra header lines. */
export function accept(head, extra = []) {
  const key = /^sec-websocket-key:\s*(\S+)/im.exec(head)?.[1] ?? '';
  const digest = createHash('sha1').update(key + GUID).digest('base64');
  return [
    'HTTP/1.1 101 Switching Protocols',
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Accept: ${digest}`,
    ...extra,
    '',
    '',
  ].join('\r\n');
}

/** Resolves with the first event of `type` on `target`, or rejects after `ms`. */
export function nextEvent(target, type, ms = 5_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} event within ${ms} ms`)), ms);
    target.addEventListener(
      type,
      (event) => {
        clearTimeout(timer);
        resolve(event);
      },
      { once: true },
    );
  });
}

/**
 * Records every open/message/error/close event of a socket in order, as strings, and resolves
 * `closed` with the close event.
 */
export function record(ws) {
  const log = [];
  let resolveClosed;
  const closed = new Promise((resolve) => {
    resolveClosed = resolve;
  });
  ws.addEventListener('open', () => log.push('open'));
  ws.addEventListener('error', (e) => log.push(`error: ${e.message}`));
  ws.addEventListener('close', (e) => {
    log.push(`close ${e.code}`);
    resolveClosed(e);
  });
  return { log, closed };
}

/** Rejects if `promise` does not settle within `ms`. */
export function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Starts `duplex serve` (port 0: a free one); resolves to { port, url, kill, stop }. */
export async function startServe(args = [], port = 0) {
  const server = await startDuplex('serve', ['--threads', '2', ...args], port);
  return { ...server, url: `ws://127.0.0.1:${server.port}/ws` };
}

/** Restarts on `port`, retrying while the port is not yet free again. */
export async function restartServe(args, port) {
  for (let i = 0; ; i++) {
    try {
      return await startServe(args, port);
    } catch (error) {
      if (i >= 20) throw error;
      await sleep(100);
    }
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` until true, failing after `ms`. */
export async function waitFor(predicate, ms, what) {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await sleep(5);
  }
}

/** The next `type` event of a client or room, failing after `ms`. */
export function next(target, type, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.off(type, listener);
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const listener = (event) => {
      clearTimeout(timer);
      target.off(type, listener);
      resolve(event);
    };
    target.on(type, listener);
  });
}
