// @stomp/stompjs in headless Chromium against `duplex serve`, beside a duplex.v1 client on the
// same page (the browser's own WebSocket): they share a room both ways.
//
//   node tests/browser/stomp_page.mjs http://127.0.0.1:PORT/
//
// The stompjs browser bundle comes from tests/interop/node_modules (tests/setup.sh node).
// Prints `stomp(chromium): ok ...`, or the failure and exits 1. The whole run is bounded.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { withBrowser } from './lib.mjs';

const [base] = process.argv.slice(2);
if (!base) {
  console.error('usage: stomp_page.mjs http://127.0.0.1:PORT/');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const bundle = readFileSync(
  join(here, '../interop/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js'),
  'utf8',
);
const ws = new URL('/', base.replace(/^http:/, 'ws:')).href;

try {
  const result = await withBrowser(
    async (browser) => {
      const page = await browser.newPage();
      const response = await page.goto(base, { timeout: 20_000 });
      if (!response || response.status() !== 200) throw new Error(`${base}: ${response && response.status()}`);
      await page.addScriptTag({ content: bundle });
      return page.evaluate(
        (ws) =>
          new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('no exchange within 20 s')), 20_000);
            const fail = (why) => {
              clearTimeout(timer);
              reject(new Error(why));
            };
            // The duplex.v1 member.
            const v1 = new WebSocket(`${ws}ws`, 'duplex.v1');
            const v1Got = [];
            let epoch;
            v1.onmessage = (event) => {
              const m = JSON.parse(event.data);
              if (m.type === 'joined') epoch = m.epoch;
              if (m.type === 'message') v1Got.push(m);
              if (m.type === 'joined') startStomp();
            };
            v1.onopen = () => {
              v1.send(JSON.stringify({ type: 'hello', client: 'page-v1' }));
              v1.send(JSON.stringify({ type: 'join', id: 1, room: 'app/browser' }));
            };
            v1.onerror = () => fail('duplex.v1 socket failed');
            // The STOMP member, with the browser's WebSocket and the subprotocols stompjs offers.
            function startStomp() {
              const stompGot = [];
              const client = new StompJs.Client({
                brokerURL: `${ws}stomp`,
                connectHeaders: { login: 'page-stomp' },
                reconnectDelay: 0,
                heartbeatIncoming: 1000,
                heartbeatOutgoing: 1000,
                onStompError: (frame) => fail(`STOMP ERROR: ${frame.headers.message}`),
                onWebSocketClose: () => {
                  if (stompGot.length < 2) fail('the STOMP socket closed early');
                },
              });
              client.onConnect = (connected) => {
                client.watchForReceipt('sub', () => {
                  client.publish({
                    destination: '/topic/app/browser',
                    body: JSON.stringify({ from: 'stomp' }),
                    headers: { 'content-type': 'application/json' },
                  });
                });
                client.subscribe(
                  '/topic/app/browser',
                  (message) => {
                    stompGot.push({ id: message.headers['message-id'], type: message.headers['content-type'], body: message.body });
                    if (stompGot.length === 1) {
                      // Its own message came back: now the duplex.v1 member answers.
                      v1.send(JSON.stringify({ type: 'publish', id: 2, room: 'app/browser', data: 'from v1' }));
                    }
                    if (stompGot.length === 2) {
                      const check = setInterval(() => {
                        if (v1Got.length < 2) return;
                        clearInterval(check);
                        clearTimeout(timer);
                        const protocol = client.webSocket.protocol;
                        client.deactivate().then(() =>
                          resolve({ version: connected.headers.version, protocol, epoch, stompGot, v1Got }),
                        );
                      }, 20);
                    }
                  },
                  { receipt: 'sub' },
                );
              };
              client.activate();
            }
          }),
        ws,
      );
    },
    { timeoutMs: 60_000 },
  );
  const { version, protocol, epoch, stompGot, v1Got } = result;
  const want = JSON.stringify([
    { id: `${epoch}:1`, type: 'application/json', body: '{"from":"stomp"}' },
    { id: `${epoch}:2`, type: 'text/plain', body: 'from v1' },
  ]);
  if (version !== '1.2' || protocol !== 'v12.stomp') throw new Error(`version ${version}, subprotocol ${protocol}`);
  if (JSON.stringify(stompGot) !== want) throw new Error(`STOMP got ${JSON.stringify(stompGot)}, want ${want}`);
  const v1Seen = JSON.stringify(v1Got.map((m) => [m.seq, m.from, m.data]));
  if (v1Seen !== JSON.stringify([[1, 'page-stomp', { from: 'stomp' }], [2, 'page-v1', 'from v1']])) {
    throw new Error(`duplex.v1 got ${v1Seen}`);
  }
  console.log(`stomp(chromium): ok (STOMP ${version} over ${protocol}; one sequence of 2 on both clients)`);
} catch (e) {
  console.error(`stomp(chromium): ${e.message}`);
  process.exit(1);
}
