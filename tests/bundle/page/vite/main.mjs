// Vite: init() without arguments; Vite copies the .wasm the package names with
// `new URL('…wasm', import.meta.url)` into the build and rewrites the URL.
import { run } from '../app.mjs';

run();
