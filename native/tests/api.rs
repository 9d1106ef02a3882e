//! End-to-end tests of the server HTTP API (`/api/`, docs/API.md) on one node: a
//! [`ChannelServer`] in this process, API calls over real keep-alive TCP connections and
//! `duplex.v1` members from `duplex::client`. Every wait is bounded. The same calls across
//! nodes over Redis are in `cluster.rs`.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use duplex::client::{Client, ClientEvent, ClientOptions};
use duplex::serve::ServeConfig;
use duplex::server::ServerConfig;
use duplex_core::channel::HubConfig;
use duplex_core::limits::Config;
use duplex_core::message::Message;
use serde_json::{Value, json};

mod common;
use common::{ApiClient, TestServer, get};

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "test-key-1";

impl TestServer {
    fn api(&self) -> ApiClient {
        ApiClient::connect(self.addr, Some(KEY))
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
}

fn config(keys: &[&str]) -> ServeConfig {
    ServeConfig {
        server: ServerConfig {
            threads: 1,
            connection: Config::default().with_ping_interval(None),
            drain_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        },
        hub: HubConfig::default()
            .with_presence_window(Duration::ZERO)
            .with_max_payload(1000),
        api_keys: keys.iter().map(|k| k.to_string()).collect(),
        ..ServeConfig::default()
    }
}

struct Peer {
    ws: Client,
}

impl Peer {
    fn send(&mut self, value: Value) {
        self.ws.send_text(&value.to_string()).expect("send");
    }

    fn recv(&mut self) -> Value {
        common::recv_json_within(&mut self.ws, WAIT).expect("a message within the wait")
    }

    fn until(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv();
            if message["type"] == kind {
                return message;
            }
        }
    }

    fn silent(&mut self, wait: Duration) {
        if let Some(m) = common::recv_json_within(&mut self.ws, wait) {
            panic!("unexpected message: {m}");
        }
    }

    fn close_code(&mut self) -> u16 {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "not closed");
            match self.ws.recv_timeout(left) {
                Ok(ClientEvent::Closed(c)) => return c.code.as_u16(),
                Ok(ClientEvent::Message(Message::Text(_))) | Ok(_) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
}

#[test]
fn without_a_key_every_api_path_is_404() {
    let server = TestServer::start(config(&[]));
    for path in ["/api/publish", "/api/rooms", "/api/nope", "/api"] {
        let page = get(server.addr, path);
        assert!(page.starts_with("HTTP/1.1 404"), "{path}: {page}");
    }
    let mut api = server.api();
    let reply = api.post("/api/publish", json!({"room": "app/a", "data": 1}));
    assert_eq!(reply.status, 404);
}

#[test]
fn calls_need_one_of_the_keys_and_the_key_is_never_shown() {
    let server = TestServer::start(config(&[KEY, "next-key"]));
    let body = json!({"room": "app/a", "data": 1});
    let mut anonymous = ApiClient::connect(server.addr, None);
    let reply = anonymous.post("/api/publish", body.clone());
    assert_eq!((reply.status, reply.code().as_str()), (401, "unauthorized"));
    assert_eq!(reply.header("WWW-Authenticate"), Some("Bearer"));
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    for wrong in ["test-key-", "test-key-12", "", "TEST-KEY-1"] {
        let mut api = ApiClient::connect(server.addr, Some(wrong));
        assert_eq!(
            api.post("/api/publish", body.clone()).status,
            401,
            "{wrong:?}"
        );
    }
    // Unknown paths are not revealed without a key either.
    assert_eq!(anonymous.get("/api/nope").status, 401);
    let mut rotated = ApiClient::connect(server.addr, Some("next-key"));
    assert_eq!(rotated.post("/api/publish", body.clone()).status, 200);
    assert_eq!(server.api().post("/api/publish", body).json()["seq"], 2);
    let metrics = get(server.addr, "/metrics");
    assert!(!metrics.contains(KEY) && !metrics.contains("next-key"));
}

#[test]
fn a_publish_reaches_members_in_order_with_client_publishes_and_is_kept_in_history() {
    let server = TestServer::start(config(&[KEY]));
    let mut alice = server.member("alice", "app/orders");
    let mut bob = server.member("bob", "app/orders");
    alice.until("join");
    let mut api = server.api();
    let first = api.post(
        "/api/publish",
        json!({"room": "app/orders", "data": {"order": 42}}),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(
        (first["room"].as_str(), first["seq"].as_u64()),
        (Some("app/orders"), Some(1))
    );
    let epoch = first["epoch"].as_str().unwrap().to_string();
    alice.send(json!({"type": "publish", "id": 5, "room": "app/orders", "data": "hi"}));
    let second = api.post(
        "/api/publish",
        json!({"room": "app/orders", "data": [1, 2], "from": "billing"}),
    );
    let seqs: Vec<(u64, String, Value)> = (0..3)
        .map(|_| {
            let m = bob.until("message");
            (
                m["seq"].as_u64().unwrap(),
                m["from"].as_str().unwrap().into(),
                m["data"].clone(),
            )
        })
        .collect();
    assert_eq!(seqs[0], (1, "api".into(), json!({"order": 42})));
    assert_eq!(
        second.json()["seq"].as_u64(),
        Some(seqs.iter().find(|s| s.1 == "billing").unwrap().0)
    );
    assert_eq!(seqs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    // A member that missed them recovers them with `since`, as after a client publish.
    let mut carol = server.member("carol", "app/other");
    carol.send(
        json!({"type": "join", "id": 2, "room": "app/orders", "since": {"epoch": epoch, "seq": 0}}),
    );
    let replayed: Vec<u64> = (0..3)
        .map(|_| carol.until("message")["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, vec![1, 2, 3]);
    assert_eq!(carol.until("joined")["recovered"], true);
}

#[test]
fn a_retried_publish_id_gets_its_first_seq_and_is_delivered_once() {
    let server = TestServer::start(config(&[KEY]));
    let mut bob = server.member("bob", "app/a");
    let mut api = server.api();
    let body = json!({"room": "app/a", "data": "once", "id": "order-42-shipped", "from": "shop"});
    let first = api.post("/api/publish", body.clone()).json();
    let again = api.post("/api/publish", body.clone()).json();
    assert_eq!(first, again);
    // The same id from another sender is another publish.
    let other = api.post(
        "/api/publish",
        json!({"room": "app/a", "data": "x", "id": "order-42-shipped"}),
    );
    assert_eq!(other.json()["seq"], 2);
    assert_eq!(bob.until("message")["data"], "once");
    assert_eq!(bob.until("message")["data"], "x");
    bob.silent(Duration::from_millis(200));
}

#[test]
fn bad_requests_get_their_error_code() {
    let server = TestServer::start(config(&[KEY]));
    let mut api = server.api();
    let cases = [
        ("POST", "/api/publish", Some("{\"room\":"), 400, "bad_json"),
        ("POST", "/api/publish", Some("[1]"), 400, "bad_json"),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"nope","data":1}"#),
            400,
            "bad_room",
        ),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"app/a b","data":1}"#),
            400,
            "bad_room",
        ),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"app/a"}"#),
            400,
            "bad_message",
        ),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":1,"data":1}"#),
            400,
            "bad_message",
        ),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"app/a","data":1,"from":"a b"}"#),
            400,
            "bad_message",
        ),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"app/a","data":1,"id":-1}"#),
            400,
            "bad_message",
        ),
        (
            "POST",
            "/api/broadcast",
            Some(r#"{"rooms":"app/a","data":1}"#),
            400,
            "bad_message",
        ),
        (
            "POST",
            "/api/broadcast",
            Some(r#"{"rooms":["app/a","x"],"data":1}"#),
            400,
            "bad_room",
        ),
        (
            "POST",
            "/api/disconnect",
            Some(r#"{"client":"a","code":1006}"#),
            400,
            "bad_message",
        ),
        (
            "GET",
            "/api/rooms/app/a/history?since=nope",
            None,
            400,
            "bad_message",
        ),
        ("GET", "/api/nope", None, 404, "not_found"),
        ("GET", "/api/rooms/app/a/members", None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let request = api.request(method, path, body);
        api.send_raw(&request);
        let reply = api.read_reply();
        assert_eq!(
            (reply.status, reply.code()),
            (status, code.to_string()),
            "{method} {path} {body:?}"
        );
        assert_eq!(reply.header("Content-Type"), Some("application/json"));
    }
    for (method, path, allow) in [
        ("GET", "/api/publish", "POST"),
        ("DELETE", "/api/broadcast", "POST"),
        ("POST", "/api/rooms", "GET"),
        ("PUT", "/api/rooms/app/a/presence", "GET"),
    ] {
        let reply = api.call(method, path, None);
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.header("Allow"), Some(allow));
    }
    // `data` over --max-payload (1000 here), and a body far over it.
    let big = json!({"room": "app/a", "data": "x".repeat(1001)});
    let reply = api.post("/api/publish", big);
    assert_eq!((reply.status, reply.code().as_str()), (413, "too_large"));
    // Still the same connection, still usable.
    assert_eq!(
        api.post("/api/publish", json!({"room": "app/a", "data": 1}))
            .status,
        200
    );
    let mut huge = server.api();
    huge.send_raw(
        format!("POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100000000\r\n\r\n")
            .as_bytes(),
    );
    let reply = huge.read_reply();
    assert_eq!((reply.status, reply.code().as_str()), (413, "too_large"));
    assert!(
        huge.closed(),
        "a refused body is not read: the connection ends"
    );
    let mut chunked = server.api();
    chunked.send_raw(
        format!("POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(chunked.read_reply().status, 411);
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let server = TestServer::start(config(&[KEY]));
    let mut api = server.api();
    let mut batch = Vec::new();
    for i in 0..20 {
        let body = json!({"room": "app/p", "data": i}).to_string();
        batch.extend(api.request("POST", "/api/publish", Some(&body)));
        if i % 5 == 0 {
            batch.extend(api.request("GET", "/api/rooms/app/p/history?limit=1", None));
        }
    }
    api.send_raw(&batch);
    let mut seq = 0;
    for i in 0..20 {
        let reply = api.read_reply();
        assert_eq!(reply.status, 200);
        seq += 1;
        assert_eq!(reply.json()["seq"], seq, "publish {i}");
        assert_eq!(reply.header("Connection"), Some("keep-alive"));
        if i % 5 == 0 {
            let history = api.read_reply().json();
            assert_eq!(history["seq"], seq);
            assert_eq!(history["messages"][0]["data"], 0);
        }
    }
    // Expect: 100-continue (curl sends it before large bodies).
    let body = json!({"room": "app/p", "data": "late"}).to_string();
    api.send_raw(
        format!("POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(50));
    api.send_raw(body.as_bytes());
    assert_eq!(api.read_reply().json()["seq"], 21);
    // `Connection: close` is honoured.
    api.send_raw(format!("GET /api/rooms HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n").as_bytes());
    let reply = api.read_reply();
    assert_eq!(
        (reply.status, reply.header("Connection")),
        (200, Some("close"))
    );
    assert!(api.closed());
}

#[test]
fn a_slow_request_holds_no_worker_and_times_out() {
    let mut config = config(&[KEY]);
    config.server.connection = config
        .server
        .connection
        .with_handshake_timeout(Some(Duration::from_millis(500)));
    let server = TestServer::start(config);
    // One worker: a request whose body never completes must not stall it.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(
        format!("POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100\r\n\r\n{{\"room\"")
            .as_bytes(),
    )
    .unwrap();
    let started = Instant::now();
    let mut api = server.api();
    assert_eq!(
        api.post("/api/publish", json!({"room": "app/a", "data": 1}))
            .status,
        200
    );
    assert!(started.elapsed() < Duration::from_millis(400));
    // The slow one is dropped by the handshake timeout; the idle kept-alive one too, quietly.
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut rest);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(api.closed());
}

#[test]
fn broadcast_publishes_once_per_room() {
    let server = TestServer::start(config(&[KEY]));
    let mut a = server.member("a", "app/one");
    let mut b = server.member("b", "app/two");
    let mut api = server.api();
    api.post("/api/publish", json!({"room": "app/two", "data": 0}));
    let reply = api.post(
        "/api/broadcast",
        json!({"rooms": ["app/one", "app/two", "app/three"], "data": {"all": true}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let results = reply.json()["results"].as_array().unwrap().clone();
    let seqs: Vec<(String, u64)> = results
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().into(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seqs,
        vec![
            ("app/one".into(), 1),
            ("app/two".into(), 2),
            ("app/three".into(), 1)
        ]
    );
    assert!(results.iter().all(|r| r["epoch"].is_string()));
    assert_eq!(a.until("message")["data"], json!({"all": true}));
    assert_eq!(b.until("message")["seq"], 1);
    assert_eq!(b.until("message")["seq"], 2);
}

#[test]
fn rooms_presence_and_history_are_read() {
    let server = TestServer::start(config(&[KEY]));
    let _alice = server.member("alice", "app/room");
    let mut bob = server.member("bob", "app/room");
    bob.send(json!({"type": "presence", "room": "app/room", "presence": {"typing": true}}));
    let mut api = server.api();
    for i in 1..=5 {
        api.post("/api/publish", json!({"room": "app/room", "data": i}));
    }
    let rooms = api.get("/api/rooms").json();
    let room = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "app/room")
        .unwrap()
        .clone();
    assert_eq!(
        (room["members"].as_u64(), room["seq"].as_u64()),
        (Some(2), Some(5))
    );
    let epoch = room["epoch"].as_str().unwrap().to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let presence = api.get("/api/rooms/app/room/presence").json();
        let mut members: Vec<(String, Value)> = presence["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["client"].as_str().unwrap().into(), m["presence"].clone()))
            .collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        if members[1].1 == json!({"typing": true}) {
            assert_eq!(members[0], ("alice".into(), json!({"name": "alice"})));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence not updated: {members:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = api.get("/api/rooms/app/room/history").json();
    assert_eq!(
        (
            all["room"].as_str(),
            all["epoch"].as_str(),
            all["seq"].as_u64()
        ),
        (Some("app/room"), Some(epoch.as_str()), Some(5))
    );
    assert_eq!(all["recovered"], true);
    let seqs = |h: &Value| {
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        all["messages"][0],
        json!({"seq": 1, "from": "api", "data": 1})
    );
    let page = api
        .get(&format!(
            "/api/rooms/app/room/history?since={epoch}:2&limit=2"
        ))
        .json();
    assert_eq!(
        (seqs(&page), page["recovered"].as_bool()),
        (vec![3, 4], Some(true))
    );
    let other_epoch = api
        .get("/api/rooms/app/room/history?since=0123456789abcdef:2")
        .json();
    assert_eq!(
        (seqs(&other_epoch), other_epoch["recovered"].as_bool()),
        (vec![], Some(false))
    );
    let ahead = api
        .get(&format!("/api/rooms/app/room/history?since={epoch}:9"))
        .json();
    assert_eq!(ahead["recovered"], false);
    let empty = api.get("/api/rooms/app/never/history").json();
    assert_eq!((empty["seq"].as_u64(), seqs(&empty).len()), (Some(0), 0));
    assert_eq!(
        api.get("/api/rooms/app/never/presence").json()["members"],
        json!([])
    );
}

#[test]
fn history_beyond_what_is_kept_is_all_or_nothing() {
    let mut config = config(&[KEY]);
    config.hub = config.hub.with_history_size(3);
    let server = TestServer::start(config);
    let mut api = server.api();
    let mut epoch = String::new();
    for i in 1..=6 {
        epoch = api
            .post("/api/publish", json!({"room": "app/h", "data": i}))
            .json()["epoch"]
            .as_str()
            .unwrap()
            .into();
    }
    let lost = api
        .get(&format!("/api/rooms/app/h/history?since={epoch}:1"))
        .json();
    assert_eq!(
        (
            lost["recovered"].as_bool(),
            lost["messages"].as_array().unwrap().len()
        ),
        (Some(false), 0)
    );
    let kept = api
        .get(&format!("/api/rooms/app/h/history?since={epoch}:3"))
        .json();
    assert_eq!(
        (
            kept["recovered"].as_bool(),
            kept["messages"].as_array().unwrap().len()
        ),
        (Some(true), 3)
    );
    assert_eq!(
        api.get("/api/rooms/app/h/history").json()["recovered"],
        false
    );
}

#[test]
fn disconnect_closes_the_client_and_members_see_it_leave() {
    let server = TestServer::start(config(&[KEY]));
    let mut alice = server.member("alice", "app/d");
    let mut bob = server.member("bob", "app/d");
    alice.until("join");
    let mut api = server.api();
    let reply = api.post("/api/disconnect", json!({"client": "bob"}));
    assert_eq!(reply.json(), json!({"closed": 1}));
    assert_eq!(bob.close_code(), 1008);
    let leave = alice.until("leave");
    assert_eq!(leave["client"], "bob");
    let mut carol = server.member("carol", "app/d");
    let reply = api.post(
        "/api/disconnect",
        json!({"client": "carol", "code": 4001, "reason": "banned"}),
    );
    assert_eq!(reply.json()["closed"], 1);
    assert_eq!(carol.close_code(), 4001);
    assert_eq!(
        api.post("/api/disconnect", json!({"client": "nobody"}))
            .json()["closed"],
        0
    );
}

#[test]
fn send_reaches_every_connection_of_one_client_whatever_its_rooms() {
    let server = TestServer::start(config(&[KEY]));
    let mut alice = server.member("alice", "app/s");
    let mut bob = server.member("bob", "app/other");
    let mut api = server.api();
    let reply = api.post(
        "/api/send",
        json!({"client": "bob", "data": {"order": 42, "state": "shipped"}}),
    );
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"delivered": 1})),
        "{}",
        reply.body
    );
    assert_eq!(
        bob.until("direct"),
        json!({"type": "direct", "from": "api", "data": {"order": 42, "state": "shipped"}})
    );
    // Only bob got it; nobody is told about a client that is not connected.
    alice.silent(Duration::from_millis(200));
    let nobody = api.post("/api/send", json!({"client": "nobody", "data": 1}));
    assert_eq!(
        (nobody.status, nobody.json()),
        (200, json!({"delivered": 0}))
    );
    // The request's errors.
    let cases = [
        (json!({"data": 1}), 400, "bad_message"),
        (json!({"client": "bo b", "data": 1}), 400, "bad_message"),
        (json!({"client": "bob"}), 400, "bad_message"),
        (
            json!({"client": "bob", "data": 1, "x": 2}),
            400,
            "bad_message",
        ),
        (
            json!({"client": "bob", "data": "x".repeat(1200)}),
            413,
            "too_large",
        ),
    ];
    for (body, status, code) in cases {
        let reply = api.post("/api/send", body.clone());
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (status, code),
            "{body}"
        );
    }
    let get = api.get("/api/send");
    assert_eq!(get.status, 405);
    bob.silent(Duration::from_millis(200));
}

#[test]
fn with_keys_the_dashboard_asks_for_one_as_a_basic_password_or_a_bearer_token() {
    use base64::Engine as _;
    let mut with_dashboard = config(&[KEY]);
    with_dashboard.dashboard = true;
    let server = TestServer::start(with_dashboard);
    let page = |authorization: Option<String>| {
        let mut client = ApiClient::connect(server.addr, None);
        let mut request = String::from("GET /dashboard HTTP/1.1\r\nHost: test\r\n");
        if let Some(value) = authorization {
            request.push_str(&format!("Authorization: {value}\r\n"));
        }
        request.push_str("\r\n");
        client.send_raw(request.as_bytes());
        client.read_reply()
    };
    let basic = |text: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        Some(format!("Basic {encoded}"))
    };
    let refused = page(None);
    assert_eq!(refused.status, 401);
    assert!(
        refused
            .header("WWW-Authenticate")
            .is_some_and(|v| v.starts_with("Basic realm=")),
        "{:?}",
        refused.headers
    );
    assert_eq!(page(basic("ops:wrong")).status, 401);
    assert_eq!(page(Some("Bearer wrong".into())).status, 401);
    for authorization in [basic(&format!("ops:{KEY}")), Some(format!("Bearer {KEY}"))] {
        let reply = page(authorization);
        assert_eq!(reply.status, 200);
        assert!(
            reply.body.contains("<html"),
            "{}",
            &reply.body[..80.min(reply.body.len())]
        );
    }
    // Nothing else moved behind the keys.
    assert!(get(server.addr, "/healthz").starts_with("HTTP/1.1 200"));
}
