//! End-to-end tests of `duplex serve` over 127.0.0.1: a [`ChannelServer`] in this process,
//! clients from `duplex::client` speaking `duplex.v1`. Every wait is bounded.

use std::time::{Duration, Instant};

use duplex::client::{Client, ClientError, ClientEvent, ClientOptions};
use duplex::serve::{OriginPolicy, ServeConfig, SlowConsumer};
use duplex::server::ServerConfig;
use duplex_core::channel::HubConfig;
use duplex_core::limits::Config;
use duplex_core::message::Message;
use serde_json::{Value, json};

mod common;
use common::{DuplexProcess, TestServer, get, metric_value, token};

const WAIT: Duration = Duration::from_secs(10);

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A client that said `hello` (as `client` when given) and got its `welcome`.
    fn client(&self, client: Option<&str>) -> Peer {
        let mut peer = Peer::connect(&self.url("/ws"));
        let mut hello = json!({"type": "hello"});
        if let Some(id) = client {
            hello["client"] = json!(id);
        }
        peer.send(hello);
        let welcome = peer.expect("welcome");
        if let Some(id) = client {
            assert_eq!(welcome["client"], id);
        }
        peer.id = welcome["client"].as_str().unwrap().to_owned();
        peer
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

struct Peer {
    ws: Client,
    id: String,
}

impl Peer {
    fn connect(url: &str) -> Peer {
        Peer::connect_with(url, ClientOptions::default()).expect("connect")
    }

    fn connect_with(url: &str, options: ClientOptions) -> Result<Peer, ClientError> {
        let ws = Client::connect(url, options.with_subprotocol("duplex.v1"))?;
        Ok(Peer {
            ws,
            id: String::new(),
        })
    }

    fn send(&mut self, value: Value) {
        self.ws.send_text(&value.to_string()).expect("send");
    }

    /// The next JSON message, or `None` when nothing arrives within `wait`.
    fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        common::recv_json_within(&mut self.ws, wait)
    }

    fn recv(&mut self) -> Value {
        self.recv_within(WAIT).expect("a message within the wait")
    }

    /// The next message, which must be of type `kind`.
    fn expect(&mut self, kind: &str) -> Value {
        let message = self.recv();
        assert_eq!(message["type"], kind, "expected {kind}, got {message}");
        message
    }

    /// Skips messages until one of type `kind`.
    fn until(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv();
            if message["type"] == kind {
                return message;
            }
        }
    }

    fn join(&mut self, room: &str, id: u64) -> Value {
        self.send(json!({"type": "join", "id": id, "room": room}));
        let joined = self.until("joined");
        assert_eq!(joined["id"], id);
        joined
    }

    /// Reads until the server closes; the close code and reason. Messages before it are
    /// returned too.
    fn closed(&mut self) -> (u16, String, Vec<Value>) {
        let mut before = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "not closed; got {before:?}");
            match self.ws.recv_timeout(left) {
                Ok(ClientEvent::Closed(c)) => {
                    return (c.code.as_u16(), c.reason.to_string(), before);
                }
                Ok(ClientEvent::Message(Message::Text(text))) => {
                    before.push(serde_json::from_str(text.as_str()).expect("JSON"));
                }
                Ok(_) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    fn silent(&mut self, wait: Duration) {
        if let Some(message) = self.recv_within(wait) {
            panic!("unexpected message: {message}");
        }
    }
}

#[test]
fn publish_fans_out_in_order_and_is_acked() {
    let server = TestServer::start(config());
    let mut a = server.client(Some("alice"));
    let mut b = server.client(Some("bob"));
    a.join("app/chat", 1);
    b.join("app/chat", 1);
    assert_eq!(a.expect("join")["client"], "bob");
    for i in 0..5 {
        a.send(json!({"type": "publish", "id": 10 + i, "room": "app/chat", "data": {"n": i}}));
    }
    let mut acks = Vec::new();
    let mut seen = Vec::new();
    while acks.len() < 5 || seen.len() < 5 {
        let m = a.recv();
        match m["type"].as_str() {
            Some("ack") => acks.push((m["id"].as_u64().unwrap(), m["seq"].as_u64().unwrap())),
            Some("message") => seen.push(m["seq"].as_u64().unwrap()),
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(acks, (0..5).map(|i| (10 + i, i + 1)).collect::<Vec<_>>());
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    for i in 0..5u64 {
        let m = b.expect("message");
        assert_eq!(m["room"], "app/chat");
        assert_eq!(m["seq"], i + 1);
        assert_eq!(m["from"], "alice");
        assert_eq!(m["data"], json!({"n": i}));
    }
}

#[test]
fn retried_publish_is_acked_again_but_delivered_once() {
    let server = TestServer::start(config());
    let mut b = server.client(Some("bob"));
    b.join("app/r", 1);
    {
        let mut a = server.client(Some("alice"));
        a.join("app/r", 1);
        a.send(json!({"type": "publish", "id": "p-1", "room": "app/r", "data": "hi"}));
        assert_eq!(a.until("ack")["seq"], 1);
        // alice's connection dies before she saw the ack, say; she reconnects and retries.
    }
    assert_eq!(b.until("message")["seq"], 1);
    assert_eq!(b.until("leave")["client"], "alice");
    let mut a = server.client(Some("alice"));
    a.join("app/r", 2);
    a.send(json!({"type": "publish", "id": "p-1", "room": "app/r", "data": "hi"}));
    let ack = a.until("ack");
    assert_eq!(
        (ack["id"].as_str(), ack["seq"].as_u64()),
        (Some("p-1"), Some(1))
    );
    assert_eq!(b.expect("join")["client"], "alice");
    b.silent(Duration::from_millis(300));
}

#[test]
fn presence_join_leave_and_abrupt_disconnect() {
    let server = TestServer::start(config());
    let mut a = server.client(Some("alice"));
    a.send(json!({"type": "join", "id": 1, "room": "app/p", "presence": {"status": "here"}}));
    let joined = a.expect("joined");
    assert_eq!(
        joined["members"],
        json!([{"client": "alice", "presence": {"status": "here"}}])
    );
    let mut b = server.client(Some("bob"));
    b.send(json!({"type": "join", "id": 1, "room": "app/p", "presence": {"status": "away"}}));
    let members = b.expect("joined")["members"].clone();
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    let join = a.expect("join");
    assert_eq!(
        (join["client"].as_str(), &join["presence"]),
        (Some("bob"), &json!({"status": "away"}))
    );
    b.send(json!({"type": "presence", "room": "app/p", "presence": {"typing": true}}));
    let p = a.expect("presence");
    assert_eq!(
        (p["client"].as_str(), &p["presence"]),
        (Some("bob"), &json!({"typing": true}))
    );
    b.send(json!({"type": "leave", "id": 2, "room": "app/p"}));
    assert_eq!(b.expect("left")["room"], "app/p");
    assert_eq!(a.expect("leave")["client"], "bob");
    // An abrupt disconnect (no close handshake) is a leave too.
    let mut c = server.client(Some("carol"));
    c.join("app/p", 1);
    assert_eq!(a.expect("join")["client"], "carol");
    drop(c);
    assert_eq!(a.expect("leave")["client"], "carol");
}

#[test]
fn heartbeat_timeout_removes_a_silent_member() {
    let mut cfg = config();
    cfg.server.connection = Config::default()
        .with_ping_interval(Some(Duration::from_millis(200)))
        .with_max_missed_pongs(2);
    let server = TestServer::start(cfg);
    let mut a = server.client(Some("alice"));
    a.join("app/hb", 1);
    let mut ghost = server.client(Some("ghost"));
    ghost.join("app/hb", 1);
    assert_eq!(a.expect("join")["client"], "ghost");
    // The ghost stops reading: it never answers the server's pings. Alice keeps reading, so
    // her client answers them and she stays.
    let started = Instant::now();
    let leave = a.until("leave");
    assert_eq!(leave["client"], "ghost");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "ghost removed after {took:?}"
    );
    drop(ghost);
}

#[test]
fn presence_updates_are_coalesced_within_the_window() {
    let mut cfg = config();
    cfg.hub = HubConfig::default().with_presence_window(Duration::from_millis(300));
    let server = TestServer::start(cfg);
    let mut a = server.client(Some("alice"));
    let mut b = server.client(Some("bob"));
    a.join("app/d", 1);
    b.join("app/d", 1);
    a.expect("join");
    for i in 0..10 {
        b.send(json!({"type": "presence", "room": "app/d", "presence": {"typing": i}}));
    }
    let p = a.expect("presence");
    assert_eq!(p["presence"], json!({"typing": 9}));
    a.silent(Duration::from_millis(500));
}

#[test]
fn rejoin_with_since_recovers_missed_messages_or_says_it_cannot() {
    let mut cfg = config();
    cfg.hub = HubConfig::default()
        .with_presence_window(Duration::ZERO)
        .with_history_size(5);
    let server = TestServer::start(cfg);
    let mut a = server.client(Some("alice"));
    let joined = a.join("app/h", 1);
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let publish = |a: &mut Peer, n: u64| {
        a.send(json!({"type": "publish", "id": n, "room": "app/h", "data": n}));
        a.until("ack");
    };
    let mut b = server.client(Some("bob"));
    b.join("app/h", 1);
    publish(&mut a, 1);
    assert_eq!(b.until("message")["seq"], 1);
    drop(b);
    for n in 2..=4 {
        publish(&mut a, n);
    }
    // Back within history: messages 2..=4 are replayed before `joined`.
    let mut b = server.client(Some("bob"));
    b.send(json!({"type": "join", "id": 2, "room": "app/h", "since": {"epoch": epoch, "seq": 1}}));
    let replayed: Vec<u64> = (0..3)
        .map(|_| b.expect("message")["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, vec![2, 3, 4]);
    let joined = b.expect("joined");
    assert_eq!(
        (joined["recovered"].as_bool(), joined["seq"].as_u64()),
        (Some(true), Some(4))
    );
    drop(b);
    // Away longer than history covers: nothing replayed, `recovered: false`.
    for n in 5..=12 {
        publish(&mut a, n);
    }
    let mut b = server.client(Some("bob"));
    b.send(json!({"type": "join", "id": 3, "room": "app/h", "since": {"epoch": epoch, "seq": 4}}));
    let joined = b.expect("joined");
    assert_eq!(
        (joined["recovered"].as_bool(), joined["seq"].as_u64()),
        (Some(false), Some(12))
    );
}

#[test]
fn namespaces_are_isolated() {
    let server = TestServer::start(config());
    let mut a = server.client(Some("alice"));
    let mut b = server.client(Some("bob"));
    a.join("app/x", 1);
    b.join("admin/x", 1);
    a.send(json!({"type": "publish", "id": 2, "room": "app/x", "data": 1}));
    a.until("message");
    b.silent(Duration::from_millis(300));
    b.send(json!({"type": "publish", "id": 2, "room": "admin/x", "data": 2}));
    let m = b.until("message");
    assert_eq!(
        (m["room"].as_str(), m["seq"].as_u64()),
        (Some("admin/x"), Some(1))
    );
    a.silent(Duration::from_millis(300));
}

#[test]
fn every_refused_command_gets_its_error_code_and_the_connection_stays_usable() {
    let mut cfg = config();
    cfg.hub = HubConfig::default().with_max_payload(64);
    let server = TestServer::start(cfg);
    let mut p = Peer::connect(&server.url("/ws"));
    let check = |p: &mut Peer, text: &str, code: &str| {
        p.ws.send_text(text).unwrap();
        let e = p.expect("error");
        assert_eq!(e["code"], code, "{text} → {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    };
    check(
        &mut p,
        r#"{"type":"join","id":1,"room":"app/a"}"#,
        "hello_required",
    );
    p.send(json!({"type": "hello"}));
    p.expect("welcome");
    check(&mut p, "{nope", "bad_json");
    check(&mut p, r#"{"type":"join","room":"app/a"}"#, "bad_message");
    check(&mut p, r#"{"type":"dance","id":1}"#, "unknown_type");
    check(
        &mut p,
        r#"{"type":"join","id":1,"room":"no-namespace"}"#,
        "bad_room",
    );
    check(
        &mut p,
        r#"{"type":"join","id":1,"room":"app/white space"}"#,
        "bad_room",
    );
    check(
        &mut p,
        r#"{"type":"publish","id":1,"room":"app/a","data":1}"#,
        "not_joined",
    );
    p.join("app/a", 2);
    let big = format!(
        r#"{{"type":"publish","id":3,"room":"app/a","data":"{}"}}"#,
        "x".repeat(100)
    );
    check(&mut p, &big, "too_large");
    // Still usable.
    p.send(json!({"type": "ping", "id": 9}));
    assert_eq!(p.expect("pong")["id"], 9);
}

#[test]
fn ws_requires_the_subprotocol_and_echo_echoes() {
    let server = TestServer::start(config());
    let err = Client::connect(&server.url("/ws"), ClientOptions::default()).unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    let mut echo = Client::connect(&server.url("/echo"), ClientOptions::default()).unwrap();
    echo.send_text("hello").unwrap();
    match echo.recv_timeout(WAIT).unwrap() {
        ClientEvent::Message(Message::Text(t)) => assert_eq!(t.as_str(), "hello"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn origins_outside_the_allow_list_are_refused() {
    let mut cfg = config();
    cfg.origins = OriginPolicy::new(vec!["https://app.example".into()]);
    let server = TestServer::start(cfg);
    let evil = ClientOptions::default().with_origin("https://evil.example");
    let err = Peer::connect_with(&server.url("/ws"), evil)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("403"), "{err}");
    let good = ClientOptions::default().with_origin("https://app.example");
    assert!(Peer::connect_with(&server.url("/ws"), good).is_ok());
}

#[test]
fn tokens_set_the_client_id_and_namespaces_and_bad_ones_are_refused_with_1008() {
    let mut cfg = config();
    cfg.jwt_secret = Some(b"s3cret".to_vec());
    let server = TestServer::start(cfg);
    let mut ok = Peer::connect(&server.url("/ws"));
    ok.send(json!({"type": "hello", "token": token(b"s3cret", "dana", Some(&["app"]), 60)}));
    assert_eq!(ok.expect("welcome")["client"], "dana");
    ok.join("app/a", 1);
    ok.send(json!({"type": "join", "id": 2, "room": "admin/a"}));
    let e = ok.expect("error");
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("unauthorized"), Some(2))
    );

    for bad in [
        json!({"type": "hello"}),
        json!({"type": "hello", "token": token(b"wrong", "dana", None, 60)}),
        json!({"type": "hello", "token": token(b"s3cret", "dana", None, -3600)}),
    ] {
        let mut p = Peer::connect(&server.url("/ws"));
        p.send(bad.clone());
        assert_eq!(p.expect("error")["code"], "unauthorized", "{bad}");
        loop {
            match p.ws.recv_timeout(WAIT) {
                Ok(ClientEvent::Closed(c)) => {
                    assert_eq!(c.code.as_u16(), 1008);
                    break;
                }
                Ok(ClientEvent::Message(m)) => panic!("{m:?} after unauthorized"),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[test]
fn metrics_show_rooms_members_and_publishes() {
    let server = TestServer::start(config());
    let mut a = server.client(Some("alice"));
    a.join("app/m", 1);
    a.send(json!({"type": "publish", "id": 2, "room": "app/m", "data": 1}));
    a.until("ack");
    let text = get(server.addr, "/metrics");
    for line in [
        "duplex_rooms 1\n",
        "duplex_room_members 1\n",
        "duplex_publishes_total 1\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let page = get(server.addr, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("dataset.ready"), "{page}");
}

/// Publishes in lock step: each publish (ids `ids`, never reused, since the hub answers a
/// repeated id without publishing again) waits for its own message and ack, so the publisher
/// is never slow itself.
fn publish_in_lock_step(a: &mut Peer, room: &str, payload: &str, ids: std::ops::Range<u64>) {
    for i in ids {
        a.send(json!({"type": "publish", "id": i, "room": room, "data": payload}));
        let (mut acked, mut echoed) = (false, false);
        while !(acked && echoed) {
            let m = a.recv();
            match m["type"].as_str() {
                Some("ack") => acked = true,
                Some("message") => echoed = true,
                _ => {}
            }
        }
    }
}

#[test]
fn slow_consumer_close_policy_closes_with_1008() {
    let mut cfg = config();
    cfg.slow_consumer = SlowConsumer::Close;
    cfg.server.max_backlog = 64 * 1024;
    cfg.server.connection = cfg
        .server
        .connection
        .with_close_timeout(Duration::from_secs(1));
    cfg.hub = HubConfig::default().with_max_payload(1 << 20);
    let server = TestServer::start(cfg);
    let mut a = server.client(Some("alice"));
    a.join("app/s", 1);
    let mut slow = server.client(Some("slow"));
    slow.join("app/s", 1);
    a.expect("join");
    let payload = "y".repeat(32 * 1024);
    // Enough to fill the slow member's kernel buffers and then its 64 KiB cap, however fast
    // the publishes go: published in batches until the server counts the cut-off.
    let mut sent = 0;
    while metric_value(
        &get(server.addr, "/metrics"),
        "duplex_slow_consumer_closes_total",
    ) == 0
    {
        assert!(sent < 4000, "the slow member was never cut off");
        publish_in_lock_step(&mut a, "app/s", &payload, sent..sent + 50);
        sent += 50;
    }
    // Its close frame waits behind output it does not read, so it leaves at the close timeout.
    let leave = a.until("leave");
    assert_eq!(leave["client"], "slow", "{leave}");
    let text = get(server.addr, "/metrics");
    assert!(
        text.contains("duplex_slow_consumer_closes_total 1\n"),
        "{text}"
    );
    drop(slow);
}

/// Reads a group of members round-robin until each saw `total` messages in order; publishes
/// its progress (the lowest seq every member of the group reached) in `progress`.
fn read_group(
    mut members: Vec<Peer>,
    total: u64,
    progress: &std::sync::atomic::AtomicU64,
) -> Vec<Peer> {
    use std::sync::atomic::Ordering;
    let mut last = vec![0u64; members.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while last.iter().any(|&s| s < total) {
        assert!(
            Instant::now() < deadline,
            "readers stuck at {:?}",
            last.iter().min()
        );
        for (member, last) in members.iter_mut().zip(last.iter_mut()) {
            while let Ok(Some(event)) = member.ws.try_recv() {
                let ClientEvent::Message(Message::Text(text)) = event else {
                    continue;
                };
                let m: Value = serde_json::from_str(text.as_str()).unwrap();
                match m["type"].as_str() {
                    Some("message") => {
                        let seq = m["seq"].as_u64().unwrap();
                        assert_eq!(seq, *last + 1, "{} out of order", member.id);
                        *last = seq;
                    }
                    Some("gap") => panic!("{} is not slow but got {m}", member.id),
                    _ => {}
                }
            }
        }
        progress.store(*last.iter().min().unwrap(), Ordering::Release);
        std::thread::sleep(Duration::from_millis(1));
    }
    progress.store(total, Ordering::Release);
    members
}

/// Text that permessage-deflate cannot shrink much, so bytes on the wire match the payload.
fn incompressible(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            CHARS[(x % CHARS.len() as u64) as usize] as char
        })
        .collect()
}

#[test]
fn a_stalled_member_of_1000_gets_a_gap_and_recovers_while_the_others_get_everything() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const MEMBERS: usize = 1000;
    const TOTAL: u64 = 200;
    const CAP: usize = 64 * 1024;
    let mut cfg = config();
    cfg.server.max_backlog = CAP;
    // Small kernel buffers on both ends, so the server's own queue fills after a few messages.
    cfg.server.send_buffer_size = Some(16 * 1024);
    cfg.hub = HubConfig::default()
        .with_presence_window(Duration::ZERO)
        .with_history_size(1000);
    let server = TestServer::start(cfg);
    let room = "app/crowd";
    let mut publisher = server.client(Some("publisher"));
    let epoch = publisher.join(room, 1)["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut readers = Vec::new();
    for i in 0..MEMBERS - 2 {
        let mut p = server.client(Some(&format!("r{i}")));
        p.join(room, 1);
        readers.push(p);
    }
    // The stalled member joins last and then stops reading; a 4 KiB receive buffer makes the
    // server's output queue up after a few messages instead of in the kernel.
    let mut slow = Peer::connect_with(
        &server.url("/ws"),
        ClientOptions::default().with_recv_buffer_size(4096),
    )
    .unwrap();
    slow.send(json!({"type": "hello", "client": "slow"}));
    slow.expect("welcome");
    slow.join(room, 1);

    let half = readers.split_off(readers.len() / 2);
    let progress: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let threads: Vec<_> = [readers, half]
        .into_iter()
        .zip(progress.clone())
        .map(|(group, p)| std::thread::spawn(move || read_group(group, TOTAL, &p)))
        .collect();
    let payload = incompressible(1024);
    let started = Instant::now();
    for i in 1..=TOTAL {
        // At most a few messages in flight to the readers, so that none of them is slow. Two
        // threads read 1,000 sockets: on a machine busy with other work they may fall behind
        // by seconds without anything being wrong, hence a longer bound than WAIT.
        let deadline = Instant::now() + 3 * WAIT;
        while progress.iter().any(|p| p.load(Ordering::Acquire) + 4 < i) {
            assert!(Instant::now() < deadline, "readers stalled at message {i}");
            assert!(!threads.iter().any(|t| t.is_finished()), "a reader failed");
            std::thread::sleep(Duration::from_millis(1));
        }
        publisher.send(json!({"type": "publish", "id": i, "room": room, "data": payload}));
        let (mut acked, mut echoed) = (false, false);
        while !(acked && echoed) {
            match publisher.recv()["type"].as_str() {
                Some("ack") => acked = true,
                Some("message") => echoed = true,
                _ => {}
            }
        }
    }
    let readers: Vec<Peer> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    eprintln!(
        "{TOTAL} messages to {MEMBERS} members in {:?}",
        started.elapsed()
    );

    // The stalled member holds at most its cap (plus the message that crossed it) on the server.
    let metrics = get(server.addr, "/metrics");
    let buffered = metric_value(&metrics, "duplex_output_buffered_bytes");
    assert!(buffered <= (CAP + 2048) as u64, "{buffered} bytes buffered");
    assert!(
        metric_value(&metrics, "duplex_slow_consumer_dropped_total") > 0,
        "{metrics}"
    );

    // It reads again: what was sent, then a gap covering the rest, then recovery from history.
    let mut got = Vec::new();
    let gap = loop {
        let m = slow.recv();
        match m["type"].as_str() {
            Some("message") => got.push(m["seq"].as_u64().unwrap()),
            Some("gap") => break m,
            _ => {}
        }
    };
    let (from, to) = (
        gap["from_seq"].as_u64().unwrap(),
        gap["to_seq"].as_u64().unwrap(),
    );
    assert_eq!(got, (1..from).collect::<Vec<_>>());
    assert_eq!(to, TOTAL);
    // Rejoining with `since` replays the rest; a replay larger than the cap is cut by another
    // gap, so the client repeats until it has everything (each round makes progress).
    let mut rounds = 0;
    while got.last() != Some(&TOTAL) {
        rounds += 1;
        assert!(rounds <= 10, "no progress: {got:?}");
        let since = got.last().copied().unwrap_or(0);
        slow.send(json!({"type": "join", "id": 100 + rounds, "room": room, "since": {"epoch": epoch, "seq": since}}));
        loop {
            let m = slow.recv();
            match m["type"].as_str() {
                Some("message") => got.push(m["seq"].as_u64().unwrap()),
                Some("joined") => assert_eq!(m["recovered"], true),
                Some("gap") => break,
                _ => {}
            }
            if got.last() == Some(&TOTAL) {
                break;
            }
        }
    }
    assert_eq!(got, (1..=TOTAL).collect::<Vec<_>>());
    drop(readers);
}

fn token_hello(sub: &str) -> Value {
    json!({"type": "hello", "token": token(b"s3cret", sub, None, 60)})
}

#[test]
fn with_tokens_a_taken_over_connection_is_closed_and_never_becomes_someone_else() {
    let mut cfg = config();
    cfg.jwt_secret = Some(b"s3cret".to_vec());
    let server = TestServer::start(cfg);
    let mut bob = Peer::connect(&server.url("/ws"));
    bob.send(token_hello("bob"));
    assert_eq!(bob.expect("welcome")["client"], "bob");
    bob.join("app/chat", 1);

    let mut first = Peer::connect(&server.url("/ws"));
    first.send(token_hello("mallory"));
    assert_eq!(first.expect("welcome")["client"], "mallory");
    // A repeated hello is refused, with or without a (valid) token for someone else.
    for hello in [
        token_hello("bob"),
        token_hello("mallory"),
        json!({"type": "hello", "client": "bob"}),
    ] {
        first.send(hello.clone());
        assert_eq!(first.expect("error")["code"], "bad_message", "{hello}");
    }
    first.join("app/chat", 2);
    assert_eq!(bob.expect("join")["client"], "mallory");
    first.send(json!({"type": "publish", "id": 3, "room": "app/chat", "data": "x"}));
    assert_eq!(bob.expect("message")["from"], "mallory");

    // A second connection with mallory's token takes over; the first one is closed, and what it
    // sends meanwhile (a hello as bob without a token) gets it nothing.
    let mut second = Peer::connect(&server.url("/ws"));
    second.send(token_hello("mallory"));
    assert_eq!(second.expect("welcome")["client"], "mallory");
    let _ = first
        .ws
        .send_text(&json!({"type": "hello", "client": "bob"}).to_string());
    let (code, reason, before) = first.closed();
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("taken over"), "{reason}");
    assert!(before.iter().all(|m| m["type"] != "welcome"), "{before:?}");
    assert_eq!(bob.expect("leave")["client"], "mallory");
    // bob is untouched: still a member, still the only bob.
    bob.send(json!({"type": "publish", "id": 4, "room": "app/chat", "data": "still me"}));
    let m = bob.until("message");
    assert_eq!(
        (m["from"].as_str(), &m["data"]),
        (Some("bob"), &json!("still me"))
    );
    second.join("app/chat", 1);
    assert_eq!(bob.expect("join")["client"], "mallory");

    // A reconnect with bob's own token takes over bob's connection the same way.
    let mut bob2 = Peer::connect(&server.url("/ws"));
    bob2.send(token_hello("bob"));
    assert_eq!(bob2.expect("welcome")["client"], "bob");
    let (code, _, _) = bob.closed();
    assert_eq!(code, 1008);
    assert_eq!(second.until("leave")["client"], "bob");
}

#[test]
fn without_tokens_a_connection_keeps_its_first_id_and_a_taken_over_one_is_closed() {
    let server = TestServer::start(config());
    let mut bob = server.client(Some("bob"));
    bob.join("app/chat", 1);
    let mut first = server.client(Some("alice"));
    first.send(json!({"type": "hello", "client": "bob"}));
    assert_eq!(first.expect("error")["code"], "bad_message");
    first.join("app/chat", 2);
    assert_eq!(bob.expect("join")["client"], "alice");
    let _second = server.client(Some("alice"));
    let (code, reason, _) = first.closed();
    assert_eq!(
        (code, reason.contains("taken over")),
        (1008, true),
        "{reason}"
    );
    assert_eq!(bob.expect("leave")["client"], "alice");
    bob.send(json!({"type": "ping", "id": 5}));
    assert_eq!(bob.expect("pong")["id"], 5);
}

#[test]
fn with_tokens_commands_before_hello_are_refused_with_their_id() {
    let mut cfg = config();
    cfg.jwt_secret = Some(b"s3cret".to_vec());
    let server = TestServer::start(cfg);
    let mut p = Peer::connect(&server.url("/ws"));
    for (command, id) in [
        (json!({"type": "join", "id": 1, "room": "app/a"}), json!(1)),
        (
            json!({"type": "publish", "id": "p-2", "room": "app/a", "data": 0}),
            json!("p-2"),
        ),
        (json!({"type": "ping", "id": 3}), json!(3)),
    ] {
        p.send(command.clone());
        let e = p.expect("error");
        assert_eq!(
            (&e["code"], &e["id"]),
            (&json!("hello_required"), &id),
            "{command}"
        );
    }
    p.send(token_hello("dana"));
    assert_eq!(p.expect("welcome")["client"], "dana");
}

#[test]
fn rooms_are_capped_and_unused_rooms_are_freed_at_once() {
    let mut cfg = config();
    cfg.hub = HubConfig::default()
        .with_presence_window(Duration::ZERO)
        .with_max_rooms_per_connection(3)
        .with_max_rooms(4);
    let server = TestServer::start(cfg);
    let mut a = server.client(Some("alice"));
    for n in 1..=3 {
        a.join(&format!("app/{n}"), n);
    }
    a.send(json!({"type": "join", "id": 9, "room": "app/4"}));
    let e = a.expect("error");
    assert_eq!(
        (&e["code"], &e["id"]),
        (&json!("too_many_rooms"), &json!(9))
    );
    let mut b = server.client(Some("bob"));
    b.join("app/4", 1);
    b.send(json!({"type": "join", "id": 2, "room": "app/5"}));
    assert_eq!(b.expect("error")["code"], "too_many_rooms");
    drop(a);
    drop(b);
    // Rooms with neither members nor history are gone as soon as their members are.
    let deadline = Instant::now() + WAIT;
    loop {
        let rooms = metric_value(&get(server.addr, "/metrics"), "duplex_rooms");
        if rooms == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{rooms} rooms left");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = server.client(Some("carol"));
    c.join("app/5", 1);
}

#[test]
fn large_presence_and_oversized_or_deep_commands_get_too_large() {
    let mut cfg = config();
    cfg.hub = HubConfig::default()
        .with_max_payload(1024)
        .with_max_presence(256);
    let server = TestServer::start(cfg);
    let mut p = server.client(Some("alice"));
    let big = "p".repeat(300);
    p.send(json!({"type": "join", "id": 1, "room": "app/a", "presence": big}));
    let e = p.expect("error");
    assert_eq!((&e["code"], &e["id"]), (&json!("too_large"), &json!(1)));
    p.join("app/a", 2);
    p.send(json!({"type": "presence", "room": "app/a", "presence": big}));
    assert_eq!(p.expect("error")["code"], "too_large");
    // Longer than any valid command, or nested too deep: refused without being parsed.
    let long = format!(
        r#"{{"type":"publish","id":3,"room":"app/a","data":[{}0]}}"#,
        "[],".repeat(20_000)
    );
    p.ws.send_text(&long).unwrap();
    let e = p.expect("error");
    assert_eq!(
        (e["code"].as_str(), e.get("id")),
        (Some("too_large"), None),
        "{e}"
    );
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    p.ws.send_text(&deep).unwrap();
    assert_eq!(p.expect("error")["code"], "too_large");
    p.send(json!({"type": "ping", "id": 4}));
    assert_eq!(p.expect("pong")["id"], 4);
}

#[test]
fn client_dir_symlinks_leading_outside_are_not_served() {
    let dir = std::env::temp_dir().join(format!("duplex-serve-files-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.js"), "export {}").unwrap();
    let outside = dir.with_extension("outside");
    std::fs::write(&outside, "root:x:0:0").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("leak.js")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.js")).unwrap();
    let mut cfg = config();
    cfg.client_dir = Some(dir.clone());
    let server = TestServer::start(cfg);
    let ok = get(server.addr, "/duplex-ws/index.js");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    for path in ["/duplex-ws/leak.js", "/duplex-ws/passwd.js"] {
        let page = get(server.addr, path);
        assert!(page.starts_with("HTTP/1.1 404"), "{path}: {page}");
        assert!(!page.contains("root:x:0"), "{page}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&outside).unwrap();
}

#[test]
fn the_dashboard_is_served_only_when_enabled() {
    let server = TestServer::start(config());
    let page = get(server.addr, "/dashboard");
    assert!(page.starts_with("HTTP/1.1 404"), "{page}");
    let mut cfg = config();
    cfg.dashboard = true;
    let server = TestServer::start(cfg);
    let page = get(server.addr, "/dashboard");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<title>Duplex dashboard</title>"), "{page}");
    // It draws from /metrics, which names the broker.
    let metrics = get(server.addr, "/metrics");
    assert!(
        metrics.contains("\nduplex_broker_up{kind=\"in-process\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn the_demo_page_names_the_client_it_may_import() {
    // With --client-dir: that directory's entry (here the package's main entry only).
    let dir = std::env::temp_dir().join(format!("duplex-serve-meta-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.js"), "export {}").unwrap();
    let mut cfg = config();
    cfg.client_dir = Some(dir.clone());
    let server = TestServer::start(cfg);
    let page = get(server.addr, "/");
    assert!(
        page.contains(
            r#"<meta name="duplex-client" content="/duplex-ws/index.js" data-source="directory">"#
        ),
        "{page}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // Without: the embedded package's browser entry when the binary has one, else nothing to
    // import (the page then runs its built-in client and asks for no /duplex-ws/ file).
    let server = TestServer::start(config());
    let page = get(server.addr, "/");
    let entry = get(server.addr, "/duplex-ws/browser.js");
    if entry.starts_with("HTTP/1.1 200") {
        assert!(
            page.contains(
                r#"<meta name="duplex-client" content="/duplex-ws/browser.js" data-source="embedded">"#
            ),
            "{page}"
        );
    } else {
        assert!(entry.starts_with("HTTP/1.1 404"), "{entry}");
        assert!(
            page.contains(r#"<meta name="duplex-client" content="">"#),
            "{page}"
        );
    }
}

/// `duplex serve ARGS` as a binary on a free port, one worker thread, killed when dropped.
fn serve_process(args: &[&str]) -> DuplexProcess {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--threads", "1"];
    all.extend_from_slice(args);
    DuplexProcess::start(&all)
}

#[test]
fn the_binary_refuses_frames_larger_than_any_valid_command_while_they_arrive() {
    let server = serve_process(&["--max-payload", "4096", "--max-presence", "1024"]);
    let url = format!("ws://{}/ws", server.addr);
    // 4 KiB + 16 KiB is the largest valid command: a 64 KiB frame is refused with 1009.
    let mut p = Peer::connect(&url);
    p.send(json!({"type": "hello", "client": "ada"}));
    p.expect("welcome");
    let _ = p.ws.send_text(&format!(
        r#"{{"type":"publish","id":1,"room":"app/a","data":"{}"}}"#,
        "x".repeat(64 * 1024)
    ));
    let (code, _, _) = p.closed();
    assert_eq!(code, 1009);
    // Within it, the hub's limits answer with errors and the connection stays.
    let mut p = Peer::connect(&url);
    p.send(json!({"type": "hello", "client": "ada"}));
    p.expect("welcome");
    p.send(json!({"type": "join", "id": 1, "room": "app/a", "presence": "y".repeat(2000)}));
    assert_eq!(p.expect("error")["code"], "too_large");
    for n in 0..100 {
        p.join(&format!("app/{n}"), n);
    }
    p.send(json!({"type": "join", "id": 100, "room": "app/100"}));
    assert_eq!(p.expect("error")["code"], "too_many_rooms");
}

#[test]
fn send_reaches_a_member_of_a_shared_room_and_refuses_the_rest() {
    let mut config = config();
    config.hub = config.hub.with_send_rate(5).with_max_payload(1024);
    let server = TestServer::start(config);
    let mut a = server.client(Some("alice"));
    let mut b = server.client(Some("bob"));
    let mut c = server.client(Some("carol"));
    a.join("app/call", 1);
    b.join("app/call", 1);
    c.join("app/other", 1);
    assert_eq!(a.expect("join")["client"], "bob");
    let offer = json!({"sdp": "v=0", "kind": "offer"});
    a.send(json!({"type": "send", "id": 1, "to": "bob", "data": offer}));
    assert_eq!(a.expect("sent")["id"], 1);
    let direct = b.expect("direct");
    assert_eq!(
        direct,
        json!({"type": "direct", "from": "alice", "data": offer})
    );
    // No shared room, or no such client: the same answer.
    a.send(json!({"type": "send", "id": 2, "to": "carol", "data": 1}));
    a.send(json!({"type": "send", "id": 3, "to": "nobody", "data": 1}));
    for id in [2, 3] {
        let error = a.expect("error");
        assert_eq!(
            (error["id"].as_u64(), error["code"].as_str()),
            (Some(id), Some("not_found"))
        );
    }
    c.silent(Duration::from_millis(100));
    // Too large, then the rate: 5 at once (three spent above), the rest refused.
    let big = "x".repeat(1024);
    a.send(json!({"type": "send", "id": 4, "to": "bob", "data": big}));
    assert_eq!(a.expect("error")["code"], "too_large");
    for id in 5..15 {
        a.send(json!({"type": "send", "id": id, "to": "bob", "data": id}));
    }
    let mut sent = Vec::new();
    let mut limited = 0;
    for _ in 5..15 {
        let reply = a.recv();
        match reply["type"].as_str() {
            Some("sent") => sent.push(reply["id"].as_u64().unwrap()),
            Some("error") if reply["code"] == "rate_limited" => limited += 1,
            _ => panic!("unexpected {reply}"),
        }
    }
    // One token left of the burst, and at most a few refilled meanwhile.
    assert!((1..=3).contains(&sent.len()), "{sent:?}");
    assert_eq!(sent.len() + limited, 10);
    for id in &sent {
        assert_eq!(b.expect("direct")["data"], *id);
    }
    b.silent(Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(450));
    // The budget refills at 5 per second; order per sender is kept.
    for id in 20..22 {
        a.send(json!({"type": "send", "id": id, "to": "bob", "data": id}));
    }
    assert_eq!(a.expect("sent")["id"], 20);
    assert_eq!(a.expect("sent")["id"], 21);
    assert_eq!(b.expect("direct")["data"], 20);
    assert_eq!(b.expect("direct")["data"], 21);
}
