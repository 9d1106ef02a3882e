//! The `duplex` command line as a user meets it: the README's usage block against `--help`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn duplex_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duplex"))
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The long flags (`--name`) that appear in `text`.
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for (start, _) in text.match_indices("--") {
        let name: String = text[start + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.len() > 1 {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

/// The flags `duplex SUBCOMMAND --help` lists, `--help` itself aside.
fn help_flags(subcommand: &str) -> BTreeSet<String> {
    let out = duplex_bin().args([subcommand, "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let options: String = help
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut flags = long_flags(&options);
    flags.remove("--help");
    assert!(flags.len() > 10, "too few flags parsed from\n{help}");
    flags
}

/// The first ```sh block after `heading` in the README.
fn readme_usage(heading: &str) -> String {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} not in README"))..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    block[..block.find("```").unwrap()].to_string()
}

#[test]
fn the_readme_serve_usage_lists_every_flag() {
    let usage = readme_usage("## The real-time server: `duplex serve`");
    let listed = long_flags(&usage);
    let missing: Vec<_> = help_flags("serve").difference(&listed).cloned().collect();
    assert!(
        missing.is_empty(),
        "README's `duplex serve` usage lacks {missing:?}"
    );
    let unknown: Vec<_> = listed.difference(&help_flags("serve")).cloned().collect();
    assert!(
        unknown.is_empty(),
        "README lists flags that do not exist: {unknown:?}"
    );
}

#[test]
fn the_license_files_the_manifests_name_are_shipped() {
    let manifest = std::fs::read_to_string(repo_file("Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"license = "MIT OR Apache-2.0""#));
    let mit = std::fs::read_to_string(repo_file("LICENSE-MIT")).unwrap();
    assert!(mit.starts_with("MIT License") && mit.contains("The Duplex developers"));
    let apache = std::fs::read_to_string(repo_file("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
}

#[test]
fn the_readme_cites_no_ignored_files() {
    // `reports/` is git-ignored: a reader of a fresh clone cannot open what is cited there.
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let ignore = std::fs::read_to_string(repo_file(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "/reports"));
    assert!(
        !readme.contains("reports/"),
        "README cites a file under reports/"
    );
}

// ----------------------------------------------------------------------- --config FILE

use std::time::Duration;

use duplex::client::{Client, ClientError, ClientEvent, ClientOptions};
use duplex_core::message::Message;

mod common;
use common::DuplexProcess;

const WAIT: Duration = Duration::from_secs(10);

/// A scratch directory of this test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("duplex-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `duplex` server process, killed on drop.
struct Running(DuplexProcess);

impl Running {
    fn start(args: &[&str]) -> Running {
        Running(DuplexProcess::start(args))
    }

    /// Opens /ws with `origin`, says hello, returns the `welcome`.
    fn welcome(&self, origin: Option<&str>) -> Result<serde_json::Value, ClientError> {
        let mut options = ClientOptions::default().with_subprotocol("duplex.v1");
        options.origin = origin.map(str::to_owned);
        let mut client = Client::connect(&format!("ws://{}/ws", self.0.addr), options)?;
        client.send_text(r#"{"type":"hello"}"#)?;
        match client.recv_timeout(WAIT)? {
            ClientEvent::Message(Message::Text(text)) => {
                Ok(serde_json::from_str(text.as_str()).unwrap())
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

/// Runs a command that must fail at start; its exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = duplex_bin().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_config_file_sets_what_the_command_line_does_not() {
    let dir = Scratch::new("precedence");
    let file = dir.write(
        "duplex.toml",
        "listen = \"127.0.0.1:0\"\nheartbeat_ms = 5000\nallowed_origin = [\"https://a.example\"]\n",
    );

    // The file over the defaults (30000 ms, any origin).
    let server = Running::start(&["serve", "--config", &file]);
    assert_eq!(
        server.welcome(Some("https://a.example")).unwrap()["heartbeat_ms"],
        5000
    );
    let err = server.welcome(Some("https://b.example")).unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    drop(server);

    // The command line over the file, for a single value and for a list (which replaces).
    let server = Running::start(&[
        "serve",
        "--heartbeat-ms",
        "7000",
        "--config",
        &file,
        "--allowed-origin",
        "https://b.example",
    ]);
    assert_eq!(
        server.welcome(Some("https://b.example")).unwrap()["heartbeat_ms"],
        7000
    );
    let err = server.welcome(Some("https://a.example")).unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

#[test]
fn echo_takes_a_config_file_too() {
    let dir = Scratch::new("echo");
    let file = dir.write("echo.toml", "listen = \"127.0.0.1:0\"\nthreads = 1\n");
    let server = Running::start(&["echo", "--config", &file]);
    let mut client = Client::connect(
        &format!("ws://{}/", server.0.addr),
        ClientOptions::default(),
    )
    .expect("echo server listening on the file's address");
    client.send_text("hi").unwrap();
    assert!(matches!(
        client.recv_timeout(WAIT).unwrap(),
        ClientEvent::Message(Message::Text(t)) if t.as_str() == "hi"
    ));
    // A serve-only key is unknown to echo.
    let file = dir.write("serve.toml", "history_size = 10\n");
    let (code, stderr) = refused(&["echo", "--config", &file]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("line 1: unknown key `history_size`"),
        "{stderr}"
    );
}

#[test]
fn config_file_mistakes_are_refused_with_their_line() {
    let dir = Scratch::new("mistakes");
    let cases = [
        (
            "# comment\nhistory_size = 10\nhistroy_ttl = 5\n",
            "line 3: unknown key `histroy_ttl` (the keys are the long flags of `duplex serve --help`",
        ),
        (
            "\nhistory_size = \"100\"\n",
            "line 2: `history_size`: expected an integer, found a string",
        ),
        (
            "history_ttl = true\n",
            "line 1: `history_ttl`: expected a number, found a boolean",
        ),
        (
            "deflate_context_takeover = \"yes\"\n",
            "line 1: `deflate_context_takeover`: expected a boolean (true or false), found a string",
        ),
        (
            "allowed_origin = \"https://a.example\"\n",
            "line 1: `allowed_origin`: expected an array of strings, found a string",
        ),
        (
            "listen = \"127.0.0.1:0\"\n\n\nthreads = 0\n",
            "line 4: `threads`: invalid value '0' for '--threads <N>': 0 is not in 1..=1024",
        ),
        ("[server]\nlisten = 1\n", "line 1: unknown key `server`"),
        ("help = true\n", "line 1: unknown key `help`"),
        ("config = \"other.toml\"\n", "line 1: unknown key `config`"),
        ("history_size = = 1\n", "line 1: "),
    ];
    for (text, expected) in cases {
        let file = dir.write("bad.toml", text);
        let (code, stderr) = refused(&["serve", "--config", &file, "--listen", "127.0.0.1:0"]);
        assert_eq!(code, Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("duplex serve: {file}: {expected}")),
            "{text:?}: {stderr}"
        );
    }
    let (code, stderr) = refused(&["serve", "--config", "/nonexistent/duplex.toml"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--config /nonexistent/duplex.toml: No such file"),
        "{stderr}"
    );
}

#[test]
fn the_example_config_loads_and_names_every_flag() {
    let example = repo_file("docs/duplex.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    // Every flag is there, set or commented out, so the example cannot fall behind.
    let keys: BTreeSet<String> = text
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .filter_map(|l| l.split_once(" = "))
        .filter(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(|(k, _)| format!("--{}", k.replace('_', "-")))
        .collect();
    let mut flags = help_flags("serve");
    flags.remove("--config");
    let missing: Vec<_> = flags.difference(&keys).collect();
    assert!(
        missing.is_empty(),
        "docs/duplex.example.toml lacks {missing:?}"
    );

    let server = Running::start(&[
        "serve",
        "--config",
        example.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let welcome = server.welcome(Some("https://any.example")).unwrap();
    assert_eq!(welcome["heartbeat_ms"], 30000);
}

#[test]
fn api_keys_come_from_the_flag_the_environment_or_the_config_file() {
    let status = |addr: std::net::SocketAddr, key: &str| {
        let reply = common::http(
            addr,
            &format!(
                "GET /api/rooms HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
            ),
        );
        reply[9..12].to_string()
    };
    let dir = Scratch::new("api-keys");
    let list = dir.write(
        "list.toml",
        "listen = \"127.0.0.1:0\"\napi_key = [\"k1\", \"k2\"]\n",
    );
    let server = Running::start(&["serve", "--config", &list]);
    assert_eq!(status(server.0.addr, "k2"), "200");
    assert_eq!(status(server.0.addr, "k3"), "401");
    drop(server);
    let one = dir.write("one.toml", "listen = \"127.0.0.1:0\"\napi_key = \"k3\"\n");
    let server = Running::start(&["serve", "--config", &one]);
    assert_eq!(status(server.0.addr, "k3"), "200");
    assert_eq!(status(server.0.addr, "k1"), "401");
    drop(server);
    let server = Running::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        "a1",
        "--api-key",
        "a2,a3",
    ]);
    for key in ["a1", "a2", "a3"] {
        assert_eq!(status(server.0.addr, key), "200", "{key}");
    }
    drop(server);
    let (code, stderr) = refused(&["serve", "--api-key", ""]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--api-key must not be empty"), "{stderr}");
    // Without a key the API is not there at all.
    let server = Running::start(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(status(server.0.addr, "k1"), "404");
}
