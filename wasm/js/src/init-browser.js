// Loads the browser build of the WebAssembly (src/glue.js): ChannelSession alone, without the
// RFC 6455 engine and permessage-deflate the browser's own WebSocket replaces.
import { makeLoader } from './glue.js';

/**
 * The .wasm next to this package. Written as `new URL('<literal>', import.meta.url)` because
 * that is the form Vite, webpack 5 and Parcel recognise as an asset to copy into the build.
 */
export function defaultWasmUrl() {
  return new URL('../dist/duplex_browser_bg.wasm', import.meta.url);
}

export const { init, initWith } = makeLoader(
  () => import('../dist/duplex_browser.js'),
  'dist/duplex_browser.js',
  defaultWasmUrl,
);
