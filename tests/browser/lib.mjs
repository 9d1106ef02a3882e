// Headless Chromium for Duplex's browser tests.
//
//   import { withChromium } from './lib.mjs';
//   const extensions = await withChromium(
//     (page) => page.evaluate((url) => new Promise((resolve, reject) => {
//       const ws = new WebSocket(url);
//       ws.onopen = () => resolve(ws.extensions);
//       ws.onerror = () => reject(new Error('no connection'));
//     }), 'ws://127.0.0.1:9001/'),
//     { timeoutMs: 60_000 },
//   );
//
// `withBrowser(fn, {timeoutMs})` hands `fn` the browser itself instead, for
// tests that need several contexts (users with separate storage), e.g.
// demo_page.mjs.
//
// It drives the system's Chromium (Debian's `chromium` package, installed by
// `tests/setup.sh browser`) through playwright-core, which downloads no
// browser of its own. Each run gets a fresh profile in a temporary
// directory, deleted afterwards, and is bounded as a whole: launching,
// the caller's function and closing together may not exceed `timeoutMs`.
//
// The page starts on a document served over HTTP from 127.0.0.1: Chromium's
// Local Network Access checks refuse ws://127.0.0.1 connections from pages
// that do not come from the loopback address space (about:blank, data: URLs,
// responses fulfilled by playwright's routing all count as public).

import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** The browser binary; `CHROMIUM` overrides it. */
export const CHROMIUM_PATH = process.env.CHROMIUM || '/usr/bin/chromium';

/**
 * Command-line switches: headless, no sandbox (tests run as root in
 * containers), no GPU, and none of the background traffic a first run or a
 * profile would cause (the tests talk to 127.0.0.1 only). /dev/shm is small
 * in containers, so shared memory goes to /tmp.
 */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** How long closing the browser may take before the run gives up on it. */
const CLOSE_TIMEOUT_MS = 10_000;

function timeout(ms, what) {
  let timer;
  const promise = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} exceeded ${ms / 1000}s`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * Serves `html` at every path of http://127.0.0.1:PORT/ (an ephemeral port).
 * Resolves with `{ url, close }`; `close()` stops the server.
 */
export async function serveOnLoopback(html) {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(html);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** The browser's version, e.g. `HeadlessChrome/156.0.8078.79` (the user agent hides the minor parts). */
export async function chromiumVersion(page) {
  const cdp = await page.context().newCDPSession(page);
  try {
    return (await cdp.send('Browser.getVersion')).product;
  } finally {
    await cdp.detach();
  }
}

const BLANK_PAGE = '<!doctype html><meta charset="utf-8"><title>duplex test</title>';

function requireChromium() {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`${CHROMIUM_PATH} not found: install Chromium (apt-get install chromium, or tests/setup.sh browser as root)`);
  }
}

/**
 * Launches Chromium and resolves with `await fn(browser)`, for tests that need
 * several browser contexts (separate cookies and storage, like two users):
 * `await browser.newContext()`, then `context.newPage()` and `page.goto(url)`
 * on a page served from 127.0.0.1. Contexts live in memory and playwright-core
 * deletes the browser's temporary profile when it closes. The browser is
 * closed however `fn` ends; rejects if `CHROMIUM_PATH` does not exist, or if
 * launching, `fn` and closing together take longer than `timeoutMs`
 * (default 60 s). `args` adds command-line switches to CHROMIUM_ARGS.
 */
export async function withBrowser(fn, { timeoutMs = 60_000, args = [] } = {}) {
  requireChromium();
  return runBounded(
    timeoutMs,
    () => chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [...CHROMIUM_ARGS, ...args],
      timeout: timeoutMs,
    }),
    fn,
  );
}

/**
 * Resolves with `await use(await open())` unless that takes longer than `timeoutMs`, then
 * closes what `open` returned (its `close()`, bounded too) however the run ended. An `open`
 * still under way when the deadline passed is waited for, so that what it opens is closed.
 */
async function runBounded(timeoutMs, open, use) {
  const started = Date.now();
  const limit = timeout(timeoutMs, 'the Chromium run');
  let opened = null;
  let run = null;
  try {
    run = (async () => {
      opened = await open();
      return use(opened);
    })();
    run.catch(() => {}); // a late rejection after the deadline won is not unhandled
    return await Promise.race([run, limit.promise]);
  } finally {
    limit.cancel();
    const left = Math.max(1_000, Math.min(CLOSE_TIMEOUT_MS, timeoutMs - (Date.now() - started)));
    const closing = timeout(left, 'closing Chromium');
    // If closing hangs, playwright-core still kills the browser when this process exits.
    await (async () => {
      if (!opened && run) await Promise.race([run.catch(() => {}), closing.promise]);
      if (opened) await Promise.race([opened.close(), closing.promise]);
    })().catch((e) => console.error(`lib.mjs: ${e.message}`));
    closing.cancel();
  }
}

/**
 * Launches Chromium with a fresh profile, opens a page on `html` (default: an
 * empty document) served from 127.0.0.1 and resolves with
 * `await fn(page, context)`. The browser is closed, the page's server stopped
 * and the profile deleted however `fn` ends. Rejects if `CHROMIUM_PATH` does
 * not exist, or if the whole run takes longer than `timeoutMs` (default 60 s).
 */
export async function withChromium(fn, { timeoutMs = 60_000, html = BLANK_PAGE } = {}) {
  requireChromium();
  const profile = await mkdtemp(join(tmpdir(), 'duplex-chromium-'));
  let site = null;
  let launched = false;
  try {
    return await runBounded(
      timeoutMs,
      async () => {
        site = await serveOnLoopback(html);
        const context = await chromium.launchPersistentContext(profile, {
          executablePath: CHROMIUM_PATH,
          headless: true,
          args: CHROMIUM_ARGS,
          timeout: timeoutMs,
        });
        launched = true;
        return context;
      },
      async (context) => {
        const page = context.pages()[0] ?? (await context.newPage());
        await page.goto(site.url, { timeout: timeoutMs });
        return fn(page, context);
      },
    );
  } finally {
    await site?.close();
    await rm(profile, { recursive: true, force: true });
    if (!launched) {
      // A launch that failed may leave a browser that writes its profile while being killed.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      await rm(profile, { recursive: true, force: true });
    }
  }
}
