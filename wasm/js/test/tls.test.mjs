// wss://: DuplexSocket over tls.connect against `duplex echo --tls-cert --tls-key`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { DuplexSocket } from '../index.js';
import { nextEvent, record, startEcho } from './helpers.mjs';

const T = { timeout: 15_000 };

/** A self-signed certificate for 127.0.0.1, made with the openssl command, in `dir`. */
function certificate(dir) {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1',
      '-keyout', key, '-out', cert,
    ],
    { stdio: 'ignore' },
  );
  return { key, cert };
}

let dir;
let files;
let echo;
let port;
let cert;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'duplex-ws-tls-'));
  files = certificate(dir);
  cert = readFileSync(files.cert);
  echo = await startEcho(['--tls-cert', files.cert, '--tls-key', files.key]);
  port = echo.port;
});

after(async () => {
  await echo?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
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

  test('a server shutdown over wss:// closes with 1001', T, async () => {
    const own = await startEcho(['--tls-cert', files.cert, '--tls-key', files.key]);
    const ws = new DuplexSocket(`wss://127.0.0.1:${own.port}/`, [], { tls: { ca: cert } });
    await nextEvent(ws, 'open');
    const closed = nextEvent(ws, 'close');
    await own.stop();
    const event = await closed;
    assert.equal(event.code, 1001);
    assert.equal(event.wasClean, true);
  });
});
