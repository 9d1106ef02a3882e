//! Helpers shared by the end-to-end test files (`e2e.rs`, `serve.rs`, `cli.rs`, `connect.rs`).
//!
//! Each test file is its own crate and uses only some of them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use duplex::client::{Client, ClientError, ClientEvent};
use duplex_core::message::Message;
use serde_json::Value;

/// How long a helper waits for the server before failing the test.
const WAIT: Duration = Duration::from_secs(10);

/// Sends a raw HTTP request and returns the whole response (the server closes after it).
pub fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("response then EOF");
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` with `Connection: close`; the whole response.
pub fn get(addr: SocketAddr, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
pub fn metric_value(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

/// A `duplex` process started by a test (`duplex ARGS`), killed on drop.
pub struct DuplexProcess {
    pub child: std::process::Child,
    /// The address from the line the server prints once it listens.
    pub addr: SocketAddr,
}

impl DuplexProcess {
    /// Starts `duplex ARGS` and waits, at most `WAIT`, for the line announcing its address
    /// (`... listening on ws://ADDR/` or `http://ADDR/ ...`).
    pub fn start(args: &[&str]) -> DuplexProcess {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn duplex");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_default();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://").or(w.strip_prefix("ws://")))
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("duplex {args:?} announced no address: {line:?}");
        };
        DuplexProcess { child, addr }
    }
}

impl Drop for DuplexProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next text message of `ws` as JSON, or `None` when nothing arrives within `wait`; pings
/// and pongs are skipped, a binary message or a close fails the test.
pub fn recv_json_within(ws: &mut Client, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match ws.recv_timeout(left) {
            Ok(ClientEvent::Message(Message::Text(text))) => {
                return Some(serde_json::from_str(text.as_str()).expect("JSON"));
            }
            Ok(ClientEvent::Message(other)) => panic!("binary message: {other:?}"),
            Ok(ClientEvent::Ping(_) | ClientEvent::Pong(_)) => {}
            Ok(ClientEvent::Closed(c)) => panic!("closed: {c:?}"),
            Err(ClientError::Timeout) => return None,
            Err(e) => panic!("recv: {e}"),
        }
    }
}
