// Loads the full build of the WebAssembly (src/glue.js): ChannelSession and WsConnection, for
// the Node entry (index.js) and pages that load the package unbundled.
import { makeLoader } from './glue.js';

/**
 * The .wasm next to this package. Written as `new URL('<literal>', import.meta.url)` because
 * that is the form Vite, webpack 5 and Parcel recognise as an asset to copy into the build.
 */
export function defaultWasmUrl() {
  return new URL('../dist/duplex_wasm_bg.wasm', import.meta.url);
}

export const { init, initWith } = makeLoader(
  () => import('../dist/duplex_wasm.js'),
  'dist/duplex_wasm.js',
  defaultWasmUrl,
);
