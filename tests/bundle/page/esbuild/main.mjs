// esbuild: the .wasm is imported through the package's `duplex-ws/duplex_ws.wasm` export, which
// `--loader:.wasm=file` turns into the URL of a copy in the output directory.
import wasmUrl from 'duplex-ws/duplex_ws.wasm';
import { run } from '../app.mjs';

run(wasmUrl);
