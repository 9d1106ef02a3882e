// Loads the WebAssembly at import time (top-level await), for the Node entry (index.js): Node
// reads the file (its fetch has no file: URLs); an unbundled page fetches it.
import { defaultWasmUrl, glue, initWith } from './init.js';

if (globalThis.process?.versions?.node !== undefined) {
  const { readFile } = await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:fs/promises');
  await initWith(() => readFile(defaultWasmUrl()));
} else {
  await initWith(defaultWasmUrl);
}

export const { EventKind, WsConnection, WsOptions } = glue;
