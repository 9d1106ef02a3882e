//! Embeds the built `duplex-ws` package (the WASM client, `wasm/js` once `wasm/build.sh` has
//! generated `wasm/js/dist/`) into the binary, so that `duplex serve` serves it under
//! `/duplex-ws/` and its demo page runs on it without `--client-dir`.
//!
//! Writes `$OUT_DIR/embedded_client.rs`: `EMBEDDED_CLIENT`, a table of (path inside the package,
//! bytes). The table is empty, and the demo page falls back to its small built-in client, when
//! `dist/` holds no `.wasm` (at any depth) (a checkout where the WASM was never built, or the crate built from
//! its `.crate`, which has no `wasm/`), or when `DUPLEX_EMBED_CLIENT=0`. Which files: those a
//! browser loads (`.js`, `.mjs`, `.wasm`) outside `node_modules/`, `test/`, `examples/` and
//! hidden entries, whatever their names, so a change to the package's layout needs no change
//! here.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

const SKIPPED_DIRS: [&str; 3] = ["node_modules", "test", "examples"];
const EXTENSIONS: [&str; 3] = ["js", "mjs", "wasm"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=DUPLEX_EMBED_CLIENT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let package = manifest.join("../wasm/js");
    let mut files = Vec::new();
    if package.is_dir() {
        // The whole package directory: a new or rebuilt dist/ (or a package file changed)
        // rebuilds the table.
        println!("cargo::rerun-if-changed={}", package.display());
        let wanted = env::var("DUPLEX_EMBED_CLIENT").as_deref() != Ok("0");
        if wanted && has_wasm(&package.join("dist")) {
            collect(&package, &package, &mut files);
            files.sort();
        }
    }
    let mut out = String::from(
        "/// The built `duplex-ws` package, embedded at build time: (path inside it, bytes).\n\
         pub static EMBEDDED_CLIENT: &[(&str, &[u8])] = &[\n",
    );
    for (relative, absolute) in &files {
        let _ = writeln!(out, "    ({relative:?}, include_bytes!({absolute:?})),");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("embedded_client.rs");
    fs::write(&dest, out).expect("write embedded_client.rs");
}

/// A `.wasm` anywhere under `dir`.
fn has_wasm(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let path = e.path();
            if path.is_dir() {
                has_wasm(&path)
            } else {
                path.extension().is_some_and(|x| x == "wasm")
            }
        })
    })
}

/// Every wanted file under `dir`, as (path relative to `root` with `/`, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) {
                collect(root, &path, files);
            }
        } else if kind.is_file()
            && path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| EXTENSIONS.contains(&x))
        {
            let relative = path.strip_prefix(root).expect("under root");
            let relative = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let absolute = path.canonicalize().unwrap_or(path);
            files.push((relative, absolute.to_string_lossy().into_owned()));
        }
    }
}
