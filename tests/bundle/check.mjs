// Opens the pages tests/bundle.sh built (one per bundler) in headless Chromium and checks that
// each joined a room of a real `duplex serve`, got its published message back, and loaded the
// .wasm from where the page is served.
//
//   node tests/bundle/check.mjs OUT_DIR WS_URL PAGE...
//
// A PAGE `NAME` is OUT_DIR/NAME/index.html, served from 127.0.0.1 by a static server here; a
// PAGE `NAME=URL` is URL/index.html, served by someone else (the Vite dev server). WS_URL is the
// server's /ws endpoint. Exits non-zero, saying why, if any page fails.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { withBrowser } from '../browser/lib.mjs';

const PAGE_TIMEOUT_MS = 30_000;
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
};

const [outDir, wsUrl, ...pages] = process.argv.slice(2);
if (!outDir || !wsUrl || pages.length === 0) {
  console.error('usage: node tests/bundle/check.mjs OUT_DIR WS_URL NAME[=URL]...');
  process.exit(2);
}
const root = path.resolve(outDir);

/** Serves the files under root (nothing outside it), 404 otherwise. */
async function serveStatic() {
  const server = createServer(async (req, res) => {
    const pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.resolve(root, `.${pathname}`);
    if (!file.startsWith(root + path.sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return { base: `http://127.0.0.1:${server.address().port}`, server };
}

/** `dir`: the URL of the page's directory, ending in '/'. */
async function checkPage(browser, bundler, dir) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  const wasm = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`));
  page.on('response', (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()} for ${response.url()}`);
    if (new URL(response.url()).pathname.endsWith('.wasm')) {
      wasm.push({ url: response.url(), status: response.status(), type: response.headers()['content-type'] });
    }
  });
  const room = `bundle/${bundler}-${process.pid}`;
  const url = `${dir}index.html?ws=${encodeURIComponent(wsUrl)}&room=${encodeURIComponent(room)}`;
  let result;
  const fail = (why) => {
    throw new Error(`${bundler}: ${why}\n  result: ${JSON.stringify(result)}\n  ${problems.join('\n  ')}`);
  };
  try {
    await page.goto(url, { timeout: PAGE_TIMEOUT_MS });
    await page.waitForFunction(() => window.bundleResult !== undefined, null, { timeout: PAGE_TIMEOUT_MS });
    result = await page.evaluate(() => window.bundleResult);
  } catch (error) {
    const status = await page.textContent('#status').catch(() => '(none)');
    fail(`no result from the page (${error.message.split('\n')[0]}); its status: ${status}`);
  } finally {
    await context.close();
  }
  if (!result.ok) fail('the page failed');
  if (problems.length > 0) fail('the page reported errors');
  const got = result.received;
  if (got?.data?.text !== result.sent) fail(`the message that came back is not the one published`);
  if (got.seq !== result.seq || got.from !== result.clientId) {
    fail(`expected seq ${result.seq} from ${result.clientId}, got seq ${got.seq} from ${got.from}`);
  }
  if (!result.members.includes(result.clientId)) fail('the page is not among the room members');
  if (wasm.length !== 1 || wasm[0].status !== 200 || wasm[0].type !== 'application/wasm') {
    fail(`expected one .wasm loaded from the bundle, got ${JSON.stringify(wasm)}`);
  }
  if (!wasm[0].url.startsWith(dir)) fail(`the .wasm came from ${wasm[0].url}`);
  console.log(
    `check.mjs: ${bundler}: ok (client ${result.clientId}, seq ${result.seq} back in ${result.ms} ms, ` +
      `wasm ${new URL(wasm[0].url).pathname})`,
  );
}

const { base, server } = await serveStatic();
try {
  await withBrowser(
    async (browser) => {
      for (const page of pages) {
        const [name, url] = page.split(/=(.*)/s);
        await checkPage(browser, name, url ? new URL('./', url).href : `${base}/${name}/`);
      }
    },
    { timeoutMs: 40_000 * pages.length },
  );
} finally {
  server.closeAllConnections();
  server.close();
}
