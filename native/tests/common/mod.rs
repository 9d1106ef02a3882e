//! Helpers shared by the end-to-end test files (`e2e.rs`, `serve.rs`, `cli.rs`, `connect.rs`).
//!
//! Each test file is its own crate and uses only some of them.
#![allow(dead_code)]

pub mod raw_peer;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
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

/// One answer of the HTTP API.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

/// A client of `/api/` on one keep-alive connection.
pub struct ApiClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    key: Option<String>,
}

impl ApiClient {
    pub fn connect(addr: SocketAddr, key: Option<&str>) -> ApiClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        ApiClient {
            stream,
            buf: Vec::new(),
            key: key.map(str::to_string),
        }
    }

    /// The bytes of one request with this client's key.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        if let Some(key) = &self.key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        let body = body.unwrap_or("");
        if method == "POST" {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// One request and its answer on the kept-alive connection.
    pub fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> HttpReply {
        let body = body.map(Value::to_string);
        let request = self.request(method, path, body.as_deref());
        self.send_raw(&request);
        self.read_reply()
    }

    pub fn post(&mut self, path: &str, body: Value) -> HttpReply {
        self.call("POST", path, Some(&body))
    }

    pub fn get(&mut self, path: &str) -> HttpReply {
        self.call("GET", path, None)
    }

    /// The next answer on the connection (`Content-Length` framed).
    pub fn read_reply(&mut self) -> HttpReply {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status = lines
                    .next()
                    .unwrap()
                    .split(' ')
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                if status != 100 && self.buf.len() >= end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&self.buf[end + 4..end + 4 + length]).into_owned();
                    self.buf.drain(..end + 4 + length);
                    return HttpReply {
                        status,
                        headers,
                        body,
                    };
                }
                if status == 100 {
                    self.buf.drain(..end + 4);
                    continue;
                }
            }
            assert!(Instant::now() < deadline, "no complete answer");
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).expect("an answer");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server closed the connection (after what it sent).
    pub fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(self.stream.read(&mut chunk), Ok(0))
    }
}

/// A `redis-server` of a test: no persistence, 127.0.0.1 only, killed on drop.
pub struct Redis {
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut redis = Redis {
            port,
            extra,
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, empty) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; tests/setup.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.command("PING\r\n").as_deref() != Some("+PONG\r\n") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `DEBUG SLEEP secs` sent from a thread of its own: Redis answers nobody until then.
    /// Join the handle to wait for it to wake up.
    pub fn pause(&self, secs: u32) -> std::thread::JoinHandle<()> {
        let port = self.port;
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .write_all(format!("DEBUG SLEEP {secs}\r\n").as_bytes())
                .unwrap();
            let mut buf = [0u8; 16];
            let _ = stream.read(&mut buf);
        })
    }

    /// One inline command; its raw answer.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(line.as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HS256 JWT for `sub` (and namespaces `ns`), expiring `exp_from_now` seconds from now.
pub fn token(secret: &[u8], sub: &str, ns: Option<&[&str]>, exp_from_now: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = serde_json::json!({"sub": sub, "exp": now + exp_from_now});
    if let Some(ns) = ns {
        claims["ns"] = serde_json::json!(ns);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// A `duplex serve` ([`duplex::serve::ChannelServer`]) run by a test in this process on a free
/// port, shut down on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: duplex::server::ShutdownHandle,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub fn start(mut config: duplex::serve::ServeConfig) -> TestServer {
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        let server = duplex::serve::ChannelServer::bind(config).expect("bind");
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + WAIT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
