// Headless Chromium against `duplex serve --tls-cert ...`: the demo page over https and a
// wss:// echo from that page, with the server's key trusted by its SPKI hash; then the same
// page without the pin must fail with a certificate error (the browser really verifies).
//
//   node tests/browser/tls_page.mjs https://localhost:PORT/ SPKI_SHA256_BASE64
//
// Prints `tls(chromium): ok`, or the failure and exits 1. The whole run is bounded.

import { withBrowser } from './lib.mjs';

const [base, spki] = process.argv.slice(2);
if (!base || !spki) {
  console.error('usage: tls_page.mjs https://localhost:PORT/ SPKI_SHA256_BASE64');
  process.exit(2);
}
const wss = new URL('echo', base.replace(/^https:/, 'wss:')).href;

async function trusted(browser) {
  const page = await browser.newPage();
  const response = await page.goto(base, { timeout: 20_000 });
  if (!response || response.status() !== 200) {
    throw new Error(`${base}: status ${response && response.status()}`);
  }
  const security = await response.securityDetails();
  if (!security || !/^TLS 1\.[23]$/.test(security.protocol)) {
    throw new Error(`${base}: not served over TLS 1.2/1.3 (${JSON.stringify(security)})`);
  }
  // From the https page (a secure context) to wss:// on the same origin.
  const echoed = await page.evaluate((url) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const big = 'x'.repeat(100_000);
    const got = [];
    const timer = setTimeout(() => reject(new Error('no echo within 10 s')), 10_000);
    ws.onopen = () => { ws.send('hello over wss'); ws.send(big); };
    ws.onmessage = (e) => {
      got.push(e.data);
      if (got.length === 2) {
        clearTimeout(timer);
        ws.close(1000);
        resolve({ first: got[0], bigOk: got[1] === big });
      }
    };
    ws.onerror = () => reject(new Error(`WebSocket ${url} failed`));
  }), wss);
  if (echoed.first !== 'hello over wss' || !echoed.bigOk) {
    throw new Error(`wrong echo: ${JSON.stringify(echoed).slice(0, 200)}`);
  }
  return security.protocol;
}

async function untrusted(browser) {
  const page = await browser.newPage();
  try {
    await page.goto(base, { timeout: 20_000 });
  } catch (e) {
    if (/ERR_CERT_AUTHORITY_INVALID/.test(e.message)) return;
    throw new Error(`without the pin: expected ERR_CERT_AUTHORITY_INVALID, got ${e.message}`);
  }
  throw new Error('without the pin the page loaded: the certificate was not verified');
}

try {
  const protocol = await withBrowser(trusted, {
    timeoutMs: 60_000,
    args: [`--ignore-certificate-errors-spki-list=${spki}`],
  });
  await withBrowser(untrusted, { timeoutMs: 60_000 });
  console.log(`tls(chromium): ok (${protocol}, page and wss:// echo; refused without the pin)`);
} catch (e) {
  console.error(`tls(chromium): FAIL: ${e.message}`);
  process.exit(1);
}
