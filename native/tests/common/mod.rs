//! Helpers shared by the end-to-end test files (`e2e.rs`, `serve.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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
