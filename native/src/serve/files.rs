//! `/duplex-ws/...`: the files of the `duplex-ws` npm package (the WASM client), so that the
//! demo page loads the client from the same origin. They come from the directory given with
//! `--client-dir` when there is one (only plain files strictly inside it are served), otherwise
//! from the copy embedded at build time (`build.rs`: the built `wasm/js`, when `dist/` was
//! there), otherwise there are none and the page runs its built-in client.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::server::HttpResponse;

include!(concat!(env!("OUT_DIR"), "/embedded_client.rs"));

/// The URL prefix of the package's files.
pub const PREFIX: &str = "/duplex-ws/";

/// Where the package's files come from.
#[derive(Debug, Clone)]
pub enum ClientFiles {
    /// `--client-dir`.
    Dir(Arc<Path>),
    /// Embedded in the binary at build time ([`EMBEDDED_CLIENT`], possibly empty).
    Embedded,
}

impl ClientFiles {
    pub fn new(dir: Option<&Path>) -> ClientFiles {
        dir.map_or(ClientFiles::Embedded, |d| ClientFiles::Dir(Arc::from(d)))
    }

    /// The module the page imports: the browser entry when the package has one, else the
    /// package's main entry; `None` when there is no package (the page's built-in client).
    pub fn entry(&self) -> Option<&'static str> {
        ["browser.js", "index.js"]
            .into_iter()
            .find(|name| match self {
                ClientFiles::Dir(dir) => dir.join(name).is_file(),
                ClientFiles::Embedded => EMBEDDED_CLIENT.iter().any(|(path, _)| path == name),
            })
    }

    /// "directory" or "embedded" (for the page's transport line), `None` without a package.
    pub fn source(&self) -> Option<&'static str> {
        self.entry()?;
        Some(match self {
            ClientFiles::Dir(_) => "directory",
            ClientFiles::Embedded => "embedded",
        })
    }

    /// The response for `path` (which starts with [`PREFIX`]), or `None` for 404.
    pub fn serve(&self, path: &str) -> Option<HttpResponse> {
        match self {
            ClientFiles::Dir(root) => serve(root, path),
            ClientFiles::Embedded => {
                let relative = path.strip_prefix(PREFIX)?;
                let (name, body) = EMBEDDED_CLIENT.iter().find(|(name, _)| *name == relative)?;
                Some(HttpResponse {
                    status: 200,
                    content_type: content_type(Path::new(name)),
                    body: body.to_vec(),
                })
            }
        }
    }
}

/// The response for `path` (which starts with [`PREFIX`]) from the directory `root`, or `None`
/// for 404.
pub fn serve(root: &Path, path: &str) -> Option<HttpResponse> {
    let relative = path.strip_prefix(PREFIX)?;
    let file = resolve(root, relative)?;
    let body = std::fs::read(&file).ok()?;
    Some(HttpResponse {
        status: 200,
        content_type: content_type(&file),
        body,
    })
}

/// `root/relative`, resolved, if every component is a plain name (no `..`, no absolute path, no
/// hidden file) and the result is a regular file whose real path (symlinks resolved) is inside
/// the real path of `root`.
fn resolve(root: &Path, relative: &str) -> Option<PathBuf> {
    let relative = Path::new(relative);
    let plain = relative.components().all(|c| match c {
        Component::Normal(name) => !name.to_string_lossy().starts_with('.'),
        _ => false,
    });
    if !plain || relative.as_os_str().is_empty() {
        return None;
    }
    // Symlinks are followed only when where they lead stays inside the directory: a link to
    // /etc/passwd must not be served.
    let root = root.canonicalize().ok()?;
    let file = root.join(relative).canonicalize().ok()?;
    (file.starts_with(&root) && file != root && file.is_file()).then_some(file)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("ts") => "text/plain; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("md") => "text/markdown; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_files_inside_the_directory_only() {
        let dir = std::env::temp_dir().join(format!("duplex-files-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(dir.join("dist")).unwrap();
        std::fs::write(dir.join("index.js"), "export {}").unwrap();
        std::fs::write(dir.join("dist/x.wasm"), [0, 97, 115, 109]).unwrap();
        std::fs::write(dir.join(".secret"), "no").unwrap();
        let ok = serve(&dir, "/duplex-ws/index.js").unwrap();
        assert_eq!(
            (ok.status, ok.content_type),
            (200, "text/javascript; charset=utf-8")
        );
        assert_eq!(ok.body, b"export {}");
        let wasm = serve(&dir, "/duplex-ws/dist/x.wasm").unwrap();
        assert_eq!(wasm.content_type, "application/wasm");
        // Symlinks: one to a file outside the directory is refused, one inside it is served.
        let outside = std::env::temp_dir().join(format!("duplex-outside-{}", std::process::id()));
        std::fs::write(&outside, "secret").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("leak.js")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
        std::os::unix::fs::symlink(dir.join("index.js"), dir.join("alias.js")).unwrap();
        assert_eq!(
            serve(&dir, "/duplex-ws/alias.js").unwrap().body,
            b"export {}"
        );
        for bad in [
            "/duplex-ws/leak.js",
            "/duplex-ws/etc/passwd",
            "/duplex-ws/../Cargo.toml",
            "/duplex-ws/dist/../../etc/passwd",
            "/duplex-ws//etc/passwd",
            "/duplex-ws/.secret",
            "/duplex-ws/",
            "/duplex-ws/dist",
            "/duplex-ws/missing.js",
            "/other/index.js",
        ] {
            assert!(serve(&dir, bad).is_none(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&outside).unwrap();
    }

    #[test]
    fn the_embedded_package_is_served_whole_or_not_at_all() {
        let files = ClientFiles::Embedded;
        if EMBEDDED_CLIENT.is_empty() {
            assert_eq!(files.entry(), None);
            assert!(files.serve("/duplex-ws/index.js").is_none());
            return;
        }
        // Built with wasm/js/dist: the entry, the glue and the .wasm are all there.
        assert_eq!(files.entry(), Some("browser.js"));
        let wasm = EMBEDDED_CLIENT
            .iter()
            .find(|(name, _)| name.starts_with("dist/") && name.ends_with(".wasm"))
            .expect("a .wasm under dist/");
        let served = files.serve(&format!("{PREFIX}{}", wasm.0)).unwrap();
        assert_eq!(served.content_type, "application/wasm");
        assert_eq!(&served.body[..4], b"\0asm");
        let entry = files.serve("/duplex-ws/browser.js").unwrap();
        assert_eq!(entry.content_type, "text/javascript; charset=utf-8");
        for bad in [
            "/duplex-ws/test/x.test.mjs",
            "/duplex-ws/package.json",
            "/duplex-ws/",
        ] {
            assert!(files.serve(bad).is_none(), "{bad}");
        }
    }
}
