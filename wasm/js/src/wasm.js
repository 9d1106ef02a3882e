// Loads the full build of the WebAssembly at import time (top-level await), for the Node entry
// (index.js): Node reads the file (its fetch has no file: URLs); an unbundled page fetches it.
import { defaultWasmUrl, initWith } from './init.js';

const glue =
  globalThis.process?.versions?.node !== undefined
    ? await (async () => {
        const { readFile } = await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:fs/promises');
        return initWith(() => readFile(defaultWasmUrl()));
      })()
    : await initWith(defaultWasmUrl);

export const { EventKind, WsConnection, WsOptions } = glue;
