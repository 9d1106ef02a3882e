//! End-to-end tests of the HTTP transports (docs/PROTOCOL.md, "HTTP transports"): a
//! [`ChannelServer`] with two workers in this process, sessions driven over real TCP (raw
//! HTTP/1.1: `POST /ws/open`, an SSE stream or long polls down, `POST /ws/send` up) beside
//! `duplex.v1` WebSocket members. Consecutive connections land on alternate workers, so a
//! session's requests cross workers. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use duplex::client::{Client, ClientOptions};
use duplex::serve::{FallbackConfig, OriginPolicy, ServeConfig};
use duplex::server::ServerConfig;
use duplex_core::channel::HubConfig;
use duplex_core::limits::Config;
use serde_json::{Value, json};

mod common;
use common::TestServer;

const WAIT: Duration = Duration::from_secs(10);

impl TestServer {
    fn with_fallback(fallback: FallbackConfig) -> TestServer {
        TestServer::start(ServeConfig {
            fallback,
            ..config()
        })
    }

    fn member(&self, client: &str, room: &str) -> Peer {
        let url = format!("ws://{}/ws", self.addr);
        let ws = Client::connect(&url, ClientOptions::default().with_subprotocol("duplex.v1"))
            .expect("connect");
        let mut peer = Peer { ws };
        peer.send(json!({"type": "hello", "client": client}));
        peer.until("welcome");
        peer.send(json!({"type": "join", "id": 1, "room": room, "presence": {"name": client}}));
        peer.until("joined");
        peer
    }

    /// `POST /ws/open`: a new session's id.
    fn open(&self) -> String {
        let reply = request(self.addr, "POST", "/ws/open", &[], "");
        assert_eq!(reply.status, 200, "{reply:?}");
        let body = reply.json();
        assert!(body["poll_ms"].as_u64().is_some() && body["idle_ms"].as_u64().is_some());
        body["session"].as_str().unwrap().to_string()
    }

    /// A new session that said `hello` as `client` and joined `room` (POST seq 1).
    fn session_in(&self, client: &str, room: &str) -> String {
        let session = self.open();
        let hello = json!({"type": "hello", "client": client});
        let join = json!({"type": "join", "id": 1, "room": room});
        assert_eq!(self.send(&session, 1, &[hello, join]), 204);
        session
    }

    /// `POST /ws/send` with `commands`, one per line; its status.
    fn send(&self, session: &str, seq: u64, commands: &[Value]) -> u16 {
        let body: Vec<String> = commands.iter().map(Value::to_string).collect();
        let path = format!("/ws/send?session={session}&seq={seq}");
        request(self.addr, "POST", &path, &[], &body.join("\n")).status
    }

    /// `GET /ws/poll`: `(last, messages)`.
    fn poll(&self, session: &str, ack: u64) -> (u64, Vec<Value>, Value) {
        let path = format!("/ws/poll?session={session}&ack={ack}");
        let reply = request(self.addr, "GET", &path, &[], "");
        assert_eq!(reply.status, 200, "{reply:?}");
        let body = reply.json();
        let messages = body["messages"].as_array().unwrap().clone();
        (body["last"].as_u64().unwrap(), messages, body)
    }
}

fn config() -> ServeConfig {
    ServeConfig {
        server: ServerConfig {
            threads: 2,
            connection: Config::default().with_ping_interval(None),
            drain_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        },
        hub: HubConfig::default().with_presence_window(Duration::ZERO),
        ..ServeConfig::default()
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// One request on its own connection (`Connection: close`).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    let text = common::http(addr, &format!("{head}\r\n{body}"));
    let (headers, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = headers[9..12].parse().expect("a status");
    Reply {
        status,
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// An SSE stream being read.
struct Stream {
    reader: BufReader<TcpStream>,
    head: String,
}

/// One SSE event: `(event, id, data)`.
type Event = (String, Option<u64>, String);

impl Stream {
    fn open(addr: SocketAddr, session: &str, last: Option<u64>) -> Stream {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let last = last
            .map(|l| format!("Last-Event-ID: {l}\r\n"))
            .unwrap_or_default();
        write!(
            tcp,
            "GET /ws/sse?session={session} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{last}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(tcp);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        Stream { reader, head }
    }

    /// The next event (`None` at the end of the stream).
    fn event(&mut self) -> Option<Event> {
        let (mut event, mut id, mut data) = ("message".to_string(), None, String::new());
        let mut any = false;
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .expect("an event within the wait")
                == 0
            {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any && !data.is_empty() {
                    return Some((event, id, data));
                }
                continue;
            }
            any = true;
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v.to_string();
            }
        }
    }

    /// The next `message` event as `(index, JSON)`, skipping pings.
    fn message(&mut self) -> (u64, Value) {
        loop {
            let (event, id, data) = self.event().expect("a message, not the end");
            match event.as_str() {
                "message" => return (id.unwrap(), serde_json::from_str(&data).unwrap()),
                "ping" => {}
                other => panic!("{other} event: {data}"),
            }
        }
    }

    /// Messages until one of `kind`.
    fn until(&mut self, kind: &str) -> (u64, Value) {
        loop {
            let (index, message) = self.message();
            if message["type"] == kind {
                return (index, message);
            }
        }
    }
}

struct Peer {
    ws: Client,
}

impl Peer {
    fn send(&mut self, value: Value) {
        self.ws.send_text(&value.to_string()).expect("send");
    }

    fn until(&mut self, kind: &str) -> Value {
        loop {
            let message =
                common::recv_json_within(&mut self.ws, WAIT).expect("a message within the wait");
            if message["type"] == kind {
                return message;
            }
        }
    }
}

#[test]
fn an_sse_session_exchanges_messages_with_a_websocket_member_and_resumes_without_loss() {
    let server = TestServer::with_fallback(FallbackConfig::default());
    let mut ws = server.member("ws", "app/chat");
    let session = server.open();
    let mut stream = Stream::open(server.addr, &session, None);
    assert!(stream.head.starts_with("HTTP/1.1 200"), "{}", stream.head);
    for header in [
        "Content-Type: text/event-stream",
        "X-Accel-Buffering: no",
        "Cache-Control: no-cache, no-store",
    ] {
        assert!(stream.head.contains(header), "{header} in {}", stream.head);
    }
    let (event, _, data) = stream.event().unwrap();
    assert_eq!(event, "ready");
    assert_eq!(serde_json::from_str::<Value>(&data).unwrap()["last"], 0);
    let hello = json!({"type": "hello", "client": "sse"});
    let join = json!({"type": "join", "id": 1, "room": "app/chat", "presence": {"name": "sse"}});
    assert_eq!(server.send(&session, 1, &[hello, join]), 204);
    let (index, welcome) = stream.message();
    assert_eq!(
        (index, &welcome["type"], &welcome["client"]),
        (1, &json!("welcome"), &json!("sse"))
    );
    let (_, joined) = stream.until("joined");
    assert_eq!(joined["room"], "app/chat");
    assert_eq!(ws.until("join")["client"], "sse");

    // Up: a publish by POST reaches the WebSocket member and is acked down the stream.
    let publish = json!({"type": "publish", "id": 7, "room": "app/chat", "data": "from sse"});
    assert_eq!(
        server.send(&session, 2, std::slice::from_ref(&publish)),
        204
    );
    // The same seq again is a duplicate: ignored.
    assert_eq!(server.send(&session, 2, &[publish]), 204);
    let got = ws.until("message");
    assert_eq!(
        (got["from"].as_str(), got["data"].as_str()),
        (Some("sse"), Some("from sse"))
    );
    let (_, ack) = stream.until("ack");
    assert_eq!(ack["id"], 7);
    // A skipped seq is refused with the one expected.
    assert_eq!(server.send(&session, 9, &[]), 409);

    // Down: the member's publishes arrive in order with increasing indices.
    for i in 0..5 {
        ws.send(json!({"type": "publish", "id": 100 + i, "room": "app/chat", "data": i}));
    }
    let mut last = 0;
    let mut i = 0;
    while i < 5 {
        let (index, message) = stream.until("message");
        assert!(index > last);
        last = index;
        if message["data"] == "from sse" {
            continue; // its own publish, as every member gets it
        }
        assert_eq!(message["data"], i);
        i += 1;
    }

    // The stream is cut; meanwhile two more; a resume after `last - 2` gets the last two of the
    // five again and the new ones, each once.
    drop(stream);
    for i in 5..7 {
        ws.send(json!({"type": "publish", "id": 100 + i, "room": "app/chat", "data": i}));
        ws.until("ack");
    }
    let mut stream = Stream::open(server.addr, &session, Some(last - 2));
    let (event, _, data) = stream.event().unwrap();
    assert_eq!(
        (
            event.as_str(),
            serde_json::from_str::<Value>(&data).unwrap()["last"].as_u64()
        ),
        ("ready", Some(last - 2))
    );
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let (index, message) = stream.message();
        assert!(index > last - 2);
        if message["type"] == "message" {
            seen.push(message["data"].as_i64().unwrap());
        }
    }
    assert_eq!(seen, [3, 4, 5, 6]);

    // Metrics count the session and the stream.
    let metrics = common::get(server.addr, "/metrics");
    assert_eq!(common::metric_value(&metrics, "duplex_http_sessions"), 1);
    assert_eq!(common::metric_value(&metrics, "duplex_http_streams"), 1);

    // The session closed: its member leaves, its stream ends, it is unknown afterwards.
    let reply = request(
        server.addr,
        "POST",
        &format!("/ws/close?session={session}"),
        &[],
        "",
    );
    assert_eq!(reply.status, 204);
    assert_eq!(ws.until("leave")["client"], "sse");
    while stream.event().is_some() {}
    assert_eq!(server.send(&session, 3, &[]), 404);
    let reply = request(
        server.addr,
        "GET",
        &format!("/ws/poll?session={session}"),
        &[],
        "",
    );
    assert_eq!(
        (reply.status, reply.json()["code"].as_str()),
        (404, Some("unknown_session"))
    );
}

#[test]
fn long_polls_are_held_until_a_message_and_acks_drop_what_was_answered() {
    let server = TestServer::with_fallback(FallbackConfig {
        poll: Duration::from_millis(600),
        ..FallbackConfig::default()
    });
    let mut ws = server.member("ws", "app/chat");
    let session = server.session_in("lp", "app/chat");
    let mut ack = 0;
    let mut kinds = Vec::new();
    while !kinds.contains(&"joined".to_string()) {
        let (last, messages, _) = server.poll(&session, ack);
        assert_eq!(last, ack + messages.len() as u64);
        kinds.extend(
            messages
                .iter()
                .map(|m| m["type"].as_str().unwrap().to_string()),
        );
        ack = last;
    }
    assert_eq!(kinds[0], "welcome");

    // Nothing to answer: held for poll_ms, then answered empty.
    let started = Instant::now();
    let (last, messages, _) = server.poll(&session, ack);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((last, messages.len()), (ack, 0));

    // A held poll is answered as soon as a message comes.
    let addr = server.addr;
    let session2 = session.clone();
    let held = std::thread::spawn(move || {
        let path = format!("/ws/poll?session={session2}&ack={ack}");
        let started = Instant::now();
        let reply = request(addr, "GET", &path, &[], "");
        (reply, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(150));
    ws.send(json!({"type": "publish", "id": 2, "room": "app/chat", "data": "now"}));
    let (reply, took) = held.join().unwrap();
    let body = reply.json();
    assert_eq!(body["messages"][0]["data"], "now", "{body}");
    assert!(took < Duration::from_millis(550), "answered after {took:?}");

    // Not acknowledged: the same message again; acknowledged: gone.
    let (_, again, _) = server.poll(&session, ack);
    assert_eq!(again[0]["data"], "now");
    let acked = body["last"].as_u64().unwrap();
    let (last, messages, _) = server.poll(&session, acked);
    assert_eq!((last, messages.len()), (acked, 0));
    // An ack ahead of what was sent, or behind what was dropped: the session is gone.
    let reply = request(
        server.addr,
        "GET",
        &format!("/ws/poll?session={session}&ack=0"),
        &[],
        "",
    );
    assert_eq!(reply.status, 404);
    assert_eq!(ws.until("leave")["client"], "lp");
}

#[test]
fn an_idle_session_ends_and_its_member_leaves() {
    let server = TestServer::with_fallback(FallbackConfig {
        idle: Duration::from_millis(500),
        ..FallbackConfig::default()
    });
    let mut ws = server.member("ws", "app/chat");
    let session = server.session_in("gone", "app/chat");
    assert_eq!(ws.until("join")["client"], "gone");
    let started = Instant::now();
    assert_eq!(ws.until("leave")["client"], "gone");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "left after {took:?}");
    assert_eq!(server.send(&session, 2, &[]), 404);
    let metrics = common::get(server.addr, "/metrics");
    assert_eq!(
        common::metric_value(&metrics, "duplex_http_sessions_expired_total"),
        1
    );
    assert_eq!(common::metric_value(&metrics, "duplex_http_sessions"), 0);
}

#[test]
fn a_second_get_replaces_the_first_and_a_takeover_ends_the_session() {
    let server = TestServer::with_fallback(FallbackConfig::default());
    let session = server.open();
    assert_eq!(
        server.send(&session, 1, &[json!({"type": "hello", "client": "twice"})]),
        204
    );
    let mut first = Stream::open(server.addr, &session, None);
    assert_eq!(first.event().unwrap().0, "ready");
    assert_eq!(first.message().1["type"], "welcome");
    // A poll replaces the stream: the stream ends, the poll gets nothing new.
    let poller = {
        let addr = server.addr;
        let session = session.clone();
        std::thread::spawn(move || {
            request(
                addr,
                "GET",
                &format!("/ws/poll?session={session}&ack=1"),
                &[],
                "",
            )
        })
    };
    while let Some((event, _, _)) = first.event() {
        assert_eq!(event, "ping");
    }
    // A WebSocket hello with the same client id takes the session's id over.
    let url = format!("ws://{}/ws", server.addr);
    let mut ws = Peer {
        ws: Client::connect(&url, ClientOptions::default().with_subprotocol("duplex.v1")).unwrap(),
    };
    ws.send(json!({"type": "hello", "client": "twice"}));
    ws.until("welcome");
    // The session is told (`error taken_over`, then the close) and ends.
    let mut body = poller.join().unwrap().json();
    let mut kinds = Vec::new();
    while body["close"].is_null() {
        kinds.extend(
            body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["type"].clone()),
        );
        let (_, _, next) = server.poll(&session, body["last"].as_u64().unwrap());
        body = next;
    }
    kinds.extend(
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["type"].clone()),
    );
    assert_eq!(kinds, [json!("error")]);
    assert_eq!(body["close"]["code"], 1008, "{body}");
    assert_eq!(server.send(&session, 2, &[]), 404);
}

#[test]
fn origins_methods_and_limits_are_checked() {
    let server = TestServer::start(ServeConfig {
        origins: OriginPolicy::new(vec!["https://app.example".into()]),
        ..config()
    });
    let reply = request(
        server.addr,
        "POST",
        "/ws/open",
        &["Origin: https://evil.example"],
        "",
    );
    assert_eq!(
        (reply.status, reply.json()["code"].as_str()),
        (403, Some("origin"))
    );
    let reply = request(
        server.addr,
        "POST",
        "/ws/open",
        &["Origin: https://app.example"],
        "",
    );
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .contains("Access-Control-Allow-Origin: https://app.example"),
        "{}",
        reply.headers
    );
    assert!(
        reply
            .headers
            .contains("Access-Control-Allow-Credentials: true")
    );
    let session = reply.json()["session"].as_str().unwrap().to_string();
    let preflight = request(
        server.addr,
        "OPTIONS",
        "/ws/send",
        &["Origin: https://app.example"],
        "",
    );
    assert_eq!(preflight.status, 204);
    assert!(
        preflight
            .headers
            .contains("Access-Control-Allow-Methods: GET, POST, OPTIONS")
    );
    let reply = request(server.addr, "GET", "/ws/open", &[], "");
    assert_eq!(reply.status, 405);
    assert!(
        reply.headers.contains("Allow: POST, OPTIONS"),
        "{}",
        reply.headers
    );
    let reply = request(server.addr, "GET", "/ws/sse", &[], "");
    assert_eq!(
        (reply.status, reply.json()["code"].as_str()),
        (400, Some("bad_request"))
    );
    let reply = request(server.addr, "GET", "/ws/sse?session=0123abcd", &[], "");
    assert_eq!(reply.status, 404);
    // A body above 1 MiB is refused before it is read.
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "POST /ws/send?session={session}&seq=1 HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // A bad command gets its error down the session, like on a WebSocket.
    assert_eq!(
        server.send(&session, 1, &[json!({"type": "nonsense"})]),
        204
    );
    let (_, messages, _) = server.poll(&session, 0);
    assert_eq!(messages[0]["type"], "error", "{messages:?}");
}

fn node(redis: &common::Redis) -> common::DuplexProcess {
    common::DuplexProcess::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--broker",
        &redis.url(),
    ])
}

/// The node holding a session is reached through Redis from any other: three nodes behind no
/// sticky load balancer, each request of one session on the next node.
#[test]
#[ignore = "needs redis-server: run by tests/run.sh cluster"]
fn on_a_cluster_every_request_of_a_session_works_on_any_node() {
    let redis = common::Redis::start();
    let nodes = [node(&redis), node(&redis), node(&redis)];
    let addr = |i: usize| nodes[i % 3].addr;
    let member = |i: usize, client: &str| {
        let url = format!("ws://{}/ws", addr(i));
        let ws = Client::connect(&url, ClientOptions::default().with_subprotocol("duplex.v1"))
            .expect("connect");
        let mut peer = Peer { ws };
        peer.send(json!({"type": "hello", "client": client}));
        peer.until("welcome");
        peer.send(json!({"type": "join", "id": 1, "room": "app/lb"}));
        peer.until("joined");
        peer
    };
    let mut ws = member(0, "ws");
    let open = request(addr(1), "POST", "/ws/open", &[], "");
    let session = open.json()["session"].as_str().unwrap().to_string();
    let send = |i: usize, seq: u64, commands: &[Value]| {
        let body: Vec<String> = commands.iter().map(Value::to_string).collect();
        let path = format!("/ws/send?session={session}&seq={seq}");
        request(addr(i), "POST", &path, &[], &body.join("\n")).status
    };
    // Commands through the two other nodes, in seq order.
    assert_eq!(send(2, 1, &[json!({"type": "hello", "client": "lp"})]), 204);
    assert_eq!(
        send(0, 2, &[json!({"type": "join", "id": 1, "room": "app/lb"})]),
        204
    );
    assert_eq!(send(2, 2, &[]), 204, "a duplicate through another node");
    assert_eq!(send(0, 9, &[]), 409);
    assert_eq!(ws.until("join")["client"], "lp");

    // Long polls on every node in turn, acked as they go.
    let mut ack = 0;
    let mut got = Vec::new();
    for i in 0..6 {
        ws.send(json!({"type": "publish", "id": 10 + i, "room": "app/lb", "data": i}));
        let mut round = 0;
        while !got.contains(&json!(i)) {
            let path = format!("/ws/poll?session={session}&ack={ack}");
            let reply = request(addr(i as usize + round), "GET", &path, &[], "");
            assert_eq!(reply.status, 200, "{reply:?}");
            let body = reply.json();
            for m in body["messages"].as_array().unwrap() {
                if m["type"] == "message" {
                    got.push(m["data"].clone());
                }
            }
            ack = body["last"].as_u64().unwrap();
            round += 1;
            assert!(round < 10, "message {i} never came: {got:?}");
        }
    }
    assert_eq!(got, (0..6).map(|i| json!(i)).collect::<Vec<_>>());

    // A stream held by another node than the session's, then resumed on a third.
    let mut stream = Stream::open(addr(2), &session, Some(ack));
    assert!(stream.head.starts_with("HTTP/1.1 200"), "{}", stream.head);
    assert!(stream.head.contains("text/event-stream"));
    assert_eq!(stream.event().unwrap().0, "ready");
    let mut last = ack;
    for i in 6..9 {
        ws.send(json!({"type": "publish", "id": 10 + i, "room": "app/lb", "data": i}));
        let (index, message) = stream.until("message");
        assert_eq!(message["data"], i);
        last = index;
    }
    drop(stream);
    ws.send(json!({"type": "publish", "id": 20, "room": "app/lb", "data": 9}));
    let mut stream = Stream::open(addr(0), &session, Some(last));
    assert_eq!(stream.event().unwrap().0, "ready");
    assert_eq!(stream.until("message").1["data"], 9);
    // Closed through yet another node: the member sees it leave.
    let reply = request(
        addr(2),
        "POST",
        &format!("/ws/close?session={session}"),
        &[],
        "",
    );
    assert_eq!(reply.status, 204);
    assert_eq!(ws.until("leave")["client"], "lp");
    assert_eq!(send(1, 3, &[]), 404);
}

/// A session of a node that died is unknown on the others at once (no subscriber for its
/// relay), so the client opens a new one instead of waiting.
#[test]
#[ignore = "needs redis-server: run by tests/run.sh cluster"]
fn a_session_of_a_dead_node_is_unknown_elsewhere() {
    let redis = common::Redis::start();
    let mut a = node(&redis);
    let b = node(&redis);
    let open = request(a.addr, "POST", "/ws/open", &[], "");
    let session = open.json()["session"].as_str().unwrap().to_string();
    let path = format!("/ws/send?session={session}&seq=1");
    let hello = json!({"type": "hello", "client": "x"}).to_string();
    assert_eq!(request(b.addr, "POST", &path, &[], &hello).status, 204);
    let _ = a.child.kill();
    let _ = a.child.wait();
    let started = Instant::now();
    let reply = request(
        b.addr,
        "GET",
        &format!("/ws/poll?session={session}"),
        &[],
        "",
    );
    assert_eq!(
        (reply.status, reply.json()["code"].as_str()),
        (404, Some("unknown_session"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_session_that_reads_too_slowly_gets_a_gap_and_recovers_from_history() {
    let mut config = config();
    config.server.max_backlog = 4096;
    let server = TestServer::start(config);
    let mut ws = server.member("ws", "app/busy");
    let session = server.session_in("slow", "app/busy");
    let mut ack = 0;
    let epoch = loop {
        let (last, messages, _) = server.poll(&session, ack);
        ack = last;
        if let Some(joined) = messages.iter().find(|m| m["type"] == "joined") {
            break joined["epoch"].clone();
        }
    };
    // Nobody polls while 100 messages of ~200 bytes come: above the cap, room messages are
    // dropped.
    let payload = "x".repeat(200);
    for i in 0..100 {
        ws.send(json!({"type": "publish", "id": 10 + i, "room": "app/busy", "data": payload}));
    }
    for _ in 0..100 {
        ws.until("ack");
    }
    let mut seqs = Vec::new();
    let gap = loop {
        let (last, messages, _) = server.poll(&session, ack);
        ack = last;
        if let Some(gap) = messages.iter().find(|m| m["type"] == "gap") {
            break gap.clone();
        }
        seqs.extend(messages.iter().filter_map(|m| m["seq"].as_u64()));
        assert!(seqs.len() < 100, "no gap although messages were dropped");
    };
    assert_eq!(gap["room"], "app/busy");
    let (from, to) = (
        gap["from_seq"].as_u64().unwrap(),
        gap["to_seq"].as_u64().unwrap(),
    );
    assert_eq!(from, seqs.last().unwrap() + 1, "{gap} after {seqs:?}");
    assert_eq!(to, 100);
    let metrics = common::get(server.addr, "/metrics");
    assert_eq!(
        common::metric_value(&metrics, "duplex_http_slow_dropped_total"),
        to - from + 1
    );
    // The hole is in history: re-joins with `since` fill it, as a client does (a replay is
    // capped like anything else, so a client refills until `joined.seq` is reached).
    let mut replayed: Vec<u64> = Vec::new();
    let mut seq = 2;
    while replayed.last().copied().unwrap_or(from - 1) < to {
        let since = replayed.last().copied().unwrap_or(from - 1);
        let rejoin = json!({"type": "join", "id": seq, "room": "app/busy",
            "since": {"epoch": epoch, "seq": since}});
        assert_eq!(server.send(&session, seq, &[rejoin]), 204);
        seq += 1;
        assert!(seq < 50, "no progress: {replayed:?}");
        loop {
            let (last, messages, _) = server.poll(&session, ack);
            ack = last;
            for m in &messages {
                match m["type"].as_str() {
                    Some("message") => {
                        let s = m["seq"].as_u64().unwrap();
                        if s == replayed.last().copied().unwrap_or(from - 1) + 1 {
                            replayed.push(s);
                        }
                    }
                    Some("joined") => assert_eq!(m["recovered"], true, "{m}"),
                    _ => {}
                }
            }
            if messages.iter().any(|m| m["type"] == "joined") {
                break;
            }
        }
    }
    assert_eq!(replayed, (from..=to).collect::<Vec<_>>());
}

#[test]
fn with_tokens_a_session_needs_a_valid_hello_token_first() {
    let server = TestServer::start(ServeConfig {
        jwt_secret: Some(b"s3cret".to_vec()),
        ..config()
    });
    // Without a token: refused, the session ends with 1008.
    let session = server.open();
    assert_eq!(server.send(&session, 1, &[json!({"type": "hello"})]), 204);
    let (_, messages, body) = server.poll(&session, 0);
    assert_eq!(messages[0]["code"], "unauthorized", "{body}");
    let closed = if body["close"].is_null() {
        server.poll(&session, body["last"].as_u64().unwrap()).2
    } else {
        body
    };
    assert_eq!(closed["close"]["code"], 1008, "{closed}");
    // With one: the token's subject is the client id.
    let session = server.open();
    let join = json!({"type": "join", "id": 1, "room": "app/x"});
    let hello = json!({"type": "hello", "token": common::token(b"s3cret", "dana", None, 60)});
    assert_eq!(server.send(&session, 1, std::slice::from_ref(&join)), 204);
    assert_eq!(server.send(&session, 2, &[hello, join]), 204);
    let mut kinds = Vec::new();
    let mut ack = 0;
    while !kinds.iter().any(|k: &Value| k["type"] == "joined") {
        let (last, messages, _) = server.poll(&session, ack);
        ack = last;
        kinds.extend(messages);
    }
    assert_eq!(kinds[0]["code"], "hello_required", "{kinds:?}");
    assert_eq!(kinds[1]["type"], "welcome");
    assert_eq!(kinds[1]["client"], "dana");
}

#[test]
fn clients_short_poll_history_with_their_token_and_cors() {
    let server = TestServer::start(ServeConfig {
        jwt_secret: Some(b"s3cret".to_vec()),
        origins: OriginPolicy::new(vec!["https://app.example".into()]),
        ..config()
    });
    let url = format!("ws://{}/ws", server.addr);
    let ws = Client::connect(&url, ClientOptions::default().with_subprotocol("duplex.v1")).unwrap();
    let mut ws = Peer { ws };
    let hello = json!({"type": "hello", "token": common::token(b"s3cret", "pub", None, 60)});
    ws.send(hello);
    ws.until("welcome");
    ws.send(json!({"type": "join", "id": "j", "room": "app/news"}));
    ws.until("joined");
    for i in 0..3 {
        ws.send(json!({"type": "publish", "id": i, "room": "app/news", "data": i}));
        ws.until("ack");
    }
    let path = "/api/rooms/app/news/history";
    let origin = "Origin: https://app.example";
    // No token, a bad one, one for another namespace, a refused origin.
    let reply = request(server.addr, "GET", path, &[origin], "");
    assert_eq!(
        (reply.status, reply.json()["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert!(
        reply
            .headers
            .contains("Access-Control-Allow-Origin: https://app.example")
    );
    let bad = "Authorization: Bearer not.a.token";
    assert_eq!(
        request(server.addr, "GET", path, &[origin, bad], "").status,
        401
    );
    let other = format!(
        "Authorization: Bearer {}",
        common::token(b"s3cret", "reader", Some(&["admin"]), 60)
    );
    assert_eq!(
        request(server.addr, "GET", path, &[origin, &other], "").status,
        403
    );
    let good = format!(
        "Authorization: Bearer {}",
        common::token(b"s3cret", "reader", Some(&["app"]), 60)
    );
    let evil = "Origin: https://evil.example";
    assert_eq!(
        request(server.addr, "GET", path, &[evil, &good], "").status,
        403
    );
    // The preflight, then the read.
    let preflight = request(server.addr, "OPTIONS", path, &[origin], "");
    assert_eq!(preflight.status, 204);
    assert!(
        preflight
            .headers
            .contains("Access-Control-Allow-Headers: Authorization")
    );
    let reply = request(server.addr, "GET", path, &[origin, &good], "");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .headers
            .contains("Access-Control-Allow-Origin: https://app.example")
    );
    let body = reply.json();
    let data: Vec<Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, [json!(0), json!(1), json!(2)], "{body}");
    // Since the second: only the third.
    let epoch = body["epoch"].as_str().unwrap();
    let since = format!("{path}?since={epoch}:2");
    let body = request(server.addr, "GET", &since, &[origin, &good], "").json();
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
    // Other API calls still need an API key (none here: the API is off).
    assert_eq!(
        request(server.addr, "GET", "/api/rooms", &[&good], "").status,
        404
    );
}
