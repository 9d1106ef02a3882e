// wss://: DuplexSocket over tls.connect, through a TLS terminator in front of `duplex echo`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';

import { DuplexSocket } from '../index.js';
import { nextEvent, record, startEcho } from './helpers.mjs';

const T = { timeout: 15_000 };

/** A self-signed certificate for 127.0.0.1, made with the openssl command. */
function certificate() {
  const dir = mkdtempSync(path.join(tmpdir(), 'duplex-ws-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1',
        '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    return {
      key: readFileSync(path.join(dir, 'key.pem')),
      cert: readFileSync(path.join(dir, 'cert.pem')),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

let echo;
let terminator;
let port;
let cert;

before(async () => {
  echo = await startEcho();
  const pair = certificate();
  cert = pair.cert;
  terminator = tls.createServer(pair, (clear) => {
    const upstream = net.connect(echo.port, '127.0.0.1');
    clear.pipe(upstream).pipe(clear);
    clear.on('error', () => upstream.destroy());
    upstream.on('error', () => clear.destroy());
  });
  terminator.listen(0, '127.0.0.1');
  await once(terminator, 'listening');
  port = terminator.address().port;
});

after(async () => {
  terminator?.close();
  await echo?.stop();
});

describe('DuplexSocket over TLS', () => {
  test('wss:// echoes text and binary with a trusted certificate', T, async () => {
    const ws = new DuplexSocket(`wss://127.0.0.1:${port}/secure`, [], { tls: { ca: cert } });
    ws.binaryType = 'arraybuffer';
    await nextEvent(ws, 'open');
    assert.match(ws.extensions, /permessage-deflate/);
    const got = [];
    const done = new Promise((resolve) => {
      ws.onmessage = (e) => {
        got.push(e.data);
        if (got.length === 2) resolve();
      };
    });
    ws.send('över TLS');
    ws.send(new Uint8Array(100_000).fill(7));
    await done;
    assert.equal(got[0], 'över TLS');
    assert.equal(got[1].byteLength, 100_000);
    const closed = nextEvent(ws, 'close');
    ws.close(1000);
    assert.equal((await closed).wasClean, true);
  });

  test('an untrusted certificate: error, then close 1006', T, async () => {
    const ws = new DuplexSocket(`wss://127.0.0.1:${port}/`);
    const { log, closed } = record(ws);
    const event = await closed;
    assert.equal(event.code, 1006);
    assert.match(log[0], /^error: .*(self.signed|certificate)/i);
  });
});
