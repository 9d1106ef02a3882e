// The generated glue of the WebAssembly, once loaded, for every class of the package.
//
// wasm/build.sh generates two builds into dist/ with `wasm-bindgen --target web` (ES modules
// whose init function takes the .wasm as a URL, a Response, bytes or a compiled module):
// - dist/duplex_wasm.js + dist/duplex_wasm_bg.wasm: the full build (ChannelSession and the
//   RFC 6455 engine with permessage-deflate, WsConnection), for the Node entry (src/init.js);
// - dist/duplex_browser.js + dist/duplex_browser_bg.wasm: ChannelSession alone, for the
//   browser entry (src/init-browser.js), where the browser's own WebSocket does the framing.
// Each entry's loader imports its glue dynamically, so that a checkout without dist/ fails with
// a message saying how to build it rather than with a bare "module not found".

/** The glue loaded first (its classes: ChannelSession, and WsConnection in the full build). */
export let glue = null;

/**
 * A loader of one build: `importGlue` imports its glue module, `file` names it for the error
 * of an unbuilt checkout, `defaultWasmUrl` is its .wasm next to the package.
 */
export function makeLoader(importGlue, file, defaultWasmUrl) {
  let loading = null;

  async function load(getSource) {
    let module;
    try {
      module = await importGlue();
    } catch (error) {
      if (error?.code === 'ERR_MODULE_NOT_FOUND' || String(error?.message).includes(file.slice(5))) {
        throw new Error(
          `duplex-ws is not built: ${file} is missing. Run \`bash wasm/build.sh\` ` +
            'from the Duplex repository (it generates wasm/js/dist/), or install a packed ' +
            'duplex-ws (npm pack), which includes dist/.',
          { cause: error },
        );
      }
      throw error;
    }
    await module.default({ module_or_path: await getSource() });
    glue ??= module;
    return module;
  }

  /**
   * Like init(), the source made only once the glue is there (Node reads the file then);
   * resolves to the glue module.
   */
  function initWith(getSource) {
    if (loading === null) {
      loading = load(getSource).catch((error) => {
        loading = null;
        throw error;
      });
    }
    return loading;
  }

  /**
   * Loads the WebAssembly: `source` is its URL (string or URL), a `Response` or a promise of
   * one, its bytes, or a `WebAssembly.Module`; by default the .wasm next to the package.
   * Resolves once every class is usable; later calls return the same promise. A failed load
   * can be retried.
   */
  function init(source) {
    return initWith(() => source ?? defaultWasmUrl());
  }

  return { init, initWith };
}

/** The glue, or a clear error when init() has not completed. */
export function loaded() {
  if (glue === null) {
    throw new Error(
      'duplex-ws: the WebAssembly is not loaded yet: `await init()` before using the classes ' +
        '(see "Bundlers" in the package README)',
    );
  }
  return glue;
}
