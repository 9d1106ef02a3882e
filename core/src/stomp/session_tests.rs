//! A STOMP session on a real in-memory hub, beside a `duplex.v1` connection.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use serde_json::{Value, json};

use super::{Output, StompConfig, StompSession};
use crate::channel::hub::{Hub, HubConfig};
use crate::channel::protocol::{ClientMessage, Id, ServerMessage, Since};
use crate::stomp::{Command, Decoder, Frame, Item, Limits};

const STOMP: u32 = 1;
const V1: u32 = 2;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A hub, one STOMP session (connection 1) and what each side received.
struct World {
    hub: Hub<u32>,
    session: StompSession,
    /// Frames the STOMP client received, in order, and heart-beats as `None`.
    frames: Vec<Option<Frame>>,
    closed: Option<bool>,
    /// What the `duplex.v1` connection (2) received.
    v1: Vec<ServerMessage>,
    now: Duration,
}

impl World {
    fn new() -> World {
        World::with(StompConfig::default())
    }

    fn with(config: StompConfig) -> World {
        let mut world = World {
            hub: Hub::new(HubConfig::default(), 7),
            session: StompSession::new(config, None, Duration::ZERO),
            frames: Vec::new(),
            closed: None,
            v1: Vec::new(),
            now: Duration::ZERO,
        };
        world.v1_command(json!({"type": "hello", "client": "ada"}));
        world
    }

    /// The STOMP client sends these bytes; everything is pumped until quiet.
    fn stomp(&mut self, bytes: &[u8]) {
        self.session.receive(bytes, self.now);
        self.pump();
    }

    fn frame(&mut self, frame: Frame) {
        let bytes = frame.encode(self.session.version());
        self.stomp(&bytes);
    }

    fn v1_command(&mut self, command: Value) {
        let message: ClientMessage = serde_json::from_value(command).unwrap();
        let _ = self.hub.receive_message(V1, message, self.now);
        self.pump();
    }

    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(output) = self.session.poll_output() {
                busy = true;
                match output {
                    Output::Command(c) => {
                        let _ = self.hub.receive_message(STOMP, c, self.now);
                    }
                    Output::Send(bytes) => self.client_receives(&bytes),
                    Output::Close(clean) => self.closed = Some(clean),
                }
            }
            while let Some((conn, delivery)) = self.hub.poll_delivery() {
                busy = true;
                if conn == STOMP {
                    self.session.deliver_typed(&delivery, None, self.now);
                } else {
                    let text = crate::channel::codec::json::encode(&delivery);
                    self.v1.push(serde_json::from_str(&text).unwrap());
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn client_receives(&mut self, bytes: &[u8]) {
        let mut decoder = Decoder::new(Limits::default());
        decoder.set_version(self.session.version());
        decoder.push(bytes);
        let mut items = Vec::new();
        while let Some(item) = decoder.poll().unwrap() {
            items.push(item);
        }
        // Each WebSocket message holds one frame or one beat.
        assert_eq!(items.len(), 1, "{bytes:?}");
        match items.pop() {
            Some(Item::Frame(f)) => self.frames.push(Some(f)),
            _ => self.frames.push(None),
        }
    }

    /// The epoch of the room the `duplex.v1` connection joined.
    fn v1_epoch(&self) -> String {
        self.v1
            .iter()
            .find_map(|m| match m {
                ServerMessage::Joined { epoch, .. } => Some(epoch.clone()),
                _ => None,
            })
            .expect("the duplex.v1 connection joined")
    }

    /// The `message-id` of each frame received since the last `take`.
    fn message_ids(&mut self) -> Vec<String> {
        self.take()
            .iter()
            .map(|f| f.header("message-id").unwrap().to_string())
            .collect()
    }

    fn take(&mut self) -> Vec<Frame> {
        core::mem::take(&mut self.frames)
            .into_iter()
            .flatten()
            .collect()
    }

    fn connect(&mut self, headers: &[(&str, &str)]) -> Frame {
        let mut f = Frame::new(Command::Connect);
        for (n, v) in headers {
            f = f.with_header(*n, *v);
        }
        self.frame(f);
        let mut frames = self.take();
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames.remove(0)
    }
}

fn subscribe(id: &str, destination: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .with_header("id", id)
        .with_header("destination", destination)
}

fn send(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .with_header("destination", destination)
        .with_body(body.as_bytes())
}

#[test]
fn connect_answers_connected_with_version_beats_and_session() {
    let mut w = World::new();
    let connected = w.connect(&[
        ("accept-version", "1.2,1.1,1.0"),
        ("heart-beat", "10000,10000"),
        ("login", "bob"),
    ]);
    assert_eq!(connected.command, Command::Connected);
    assert_eq!(connected.header("version"), Some("1.2"));
    assert_eq!(connected.header("session"), Some("bob"));
    assert_eq!(connected.header("heart-beat"), Some("1000,10000"));
    assert!(connected.header("server").is_some());
    assert_eq!(w.session.client(), Some("bob"));
}

#[test]
fn a_client_that_offers_no_beats_is_promised_none() {
    let mut w = World::new();
    let connected = w.connect(&[("accept-version", "1.1")]);
    assert_eq!(connected.header("version"), Some("1.1"));
    assert_eq!(connected.header("heart-beat"), Some("0,0"));
    assert_eq!(w.session.poll_timeout(), None);
}

#[test]
fn the_subprotocol_caps_the_version() {
    let mut w = World::new();
    w.session.limit_version(crate::stomp::Version::V1_1);
    let connected = w.connect(&[("accept-version", "1.0,1.1,1.2")]);
    assert_eq!(connected.header("version"), Some("1.1"));
    let mut w = World::new();
    w.session.limit_version(crate::stomp::Version::V1_0);
    let error = w.connect(&[("accept-version", "1.1,1.2")]);
    assert_eq!(error.command, Command::Error);
}

#[test]
fn no_common_version_is_an_error_with_the_supported_ones() {
    let mut w = World::new();
    let error = w.connect(&[("accept-version", "2.0")]);
    assert_eq!(error.command, Command::Error);
    assert_eq!(error.header("version"), Some("1.2,1.1,1.0"));
    assert_eq!(w.closed, Some(false));
}

#[test]
fn stomp_and_duplex_v1_members_share_one_sequence() {
    let mut w = World::new();
    w.connect(&[("accept-version", "1.2"), ("login", "bob")]);
    w.v1_command(json!({"type": "join", "id": 1, "room": "app/chat"}));
    w.frame(subscribe("s0", "/topic/app/chat").with_header("receipt", "r-sub"));
    let frames = w.take();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].command, Command::Receipt);
    assert_eq!(frames[0].header("receipt-id"), Some("r-sub"));
    // The duplex.v1 member saw bob join.
    assert!(
        w.v1.iter()
            .any(|m| matches!(m, ServerMessage::Join { client, .. } if client == "bob"))
    );

    // duplex.v1 → STOMP: JSON data as JSON, string data as text.
    w.v1_command(json!({"type": "publish", "id": 2, "room": "app/chat", "data": {"text": "hi"}}));
    w.v1_command(json!({"type": "publish", "id": 3, "room": "app/chat", "data": "plain"}));
    let epoch = w.v1_epoch();
    let frames = w.take();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].command, Command::Message);
    assert_eq!(frames[0].header("destination"), Some("/topic/app/chat"));
    assert_eq!(frames[0].header("subscription"), Some("s0"));
    assert_eq!(
        frames[0].header("message-id"),
        Some(format!("{epoch}:1").as_str())
    );
    assert_eq!(frames[0].header("from"), Some("ada"));
    assert_eq!(frames[0].header("content-type"), Some("application/json"));
    assert_eq!(frames[0].body, br#"{"text":"hi"}"#);
    assert_eq!(
        frames[1].header("message-id"),
        Some(format!("{epoch}:2").as_str())
    );
    assert_eq!(frames[1].header("content-type"), Some("text/plain"));
    assert_eq!(frames[1].body, b"plain");
    assert_eq!(frames[0].header("ack"), None);

    // STOMP → duplex.v1: a JSON body is a JSON value, the receipt follows the ack.
    w.v1.clear();
    w.frame(
        send("/topic/app/chat", r#"{"n":3}"#)
            .with_header("content-type", "application/json")
            .with_header("receipt", "r-3"),
    );
    w.frame(send("/topic/app/chat", "just text"));
    let seen: Vec<(u64, String, Value)> =
        w.v1.iter()
            .filter_map(|m| match m {
                ServerMessage::Message {
                    seq, from, data, ..
                } => Some((*seq, from.clone(), data.clone())),
                _ => None,
            })
            .collect();
    assert_eq!(
        seen,
        [
            (3, "bob".to_string(), json!({"n": 3})),
            (4, "bob".to_string(), json!("just text"))
        ]
    );
    let frames = w.take();
    // bob's own messages come back to his subscription, and the receipt after the ack.
    let commands: Vec<Command> = frames.iter().map(|f| f.command).collect();
    assert!(commands.contains(&Command::Receipt), "{frames:?}");
    assert_eq!(
        frames
            .iter()
            .filter(|f| f.command == Command::Message)
            .count(),
        2
    );
}

#[test]
fn a_send_with_an_id_is_delivered_once_however_often_it_is_retried() {
    let mut w = World::new();
    w.connect(&[("accept-version", "1.2"), ("login", "bob")]);
    w.v1_command(json!({"type": "join", "id": 1, "room": "app/chat"}));
    for _ in 0..3 {
        w.frame(send("/topic/app/chat", "once").with_header("id", "m-1"));
    }
    let count =
        w.v1.iter()
            .filter(|m| matches!(m, ServerMessage::Message { .. }))
            .count();
    assert_eq!(count, 1);
    // No subscription: bob is a member that receives nothing.
    assert!(w.take().is_empty());
    assert_eq!(w.closed, None);
}

#[test]
fn client_ack_modes_carry_an_ack_header_and_accept_ack_and_nack() {
    let mut w = World::new();
    w.connect(&[("accept-version", "1.2")]);
    w.frame(subscribe("s1", "/topic/app/x").with_header("ack", "client-individual"));
    w.v1_command(json!({"type": "join", "id": 1, "room": "app/x"}));
    w.v1_command(json!({"type": "publish", "id": 2, "room": "app/x", "data": 1}));
    let frames = w.take();
    let ack = frames[0].header("ack").unwrap().to_string();
    assert_eq!(Some(ack.as_str()), frames[0].header("message-id"));
    w.frame(
        Frame::new(Command::Ack)
            .with_header("id", ack.as_str())
            .with_header("receipt", "a"),
    );
    w.frame(Frame::new(Command::Nack).with_header("id", ack.as_str()));
    let frames = w.take();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header("receipt-id"), Some("a"));
    assert_eq!(w.closed, None);
    // An ACK without its id header is an error.
    w.frame(Frame::new(Command::Ack).with_header("receipt", "b"));
    let frames = w.take();
    assert_eq!(frames[0].command, Command::Error);
    assert_eq!(frames[0].header("receipt-id"), Some("b"));
    assert_eq!(w.closed, Some(false));
}

#[test]
fn subscribe_with_since_replays_what_followed() {
    let mut w = World::new();
    w.v1_command(json!({"type": "join", "id": 1, "room": "app/h"}));
    for n in 1..=5 {
        w.v1_command(json!({"type": "publish", "id": n + 1, "room": "app/h", "data": n}));
    }
    let epoch = w.v1_epoch();
    w.connect(&[("accept-version", "1.2")]);
    let since = format!("{epoch}:3");
    w.frame(subscribe("s", "/topic/app/h").with_header("since", since.as_str()));
    let ids: Vec<String> = w.message_ids();
    assert_eq!(ids, [format!("{epoch}:4"), format!("{epoch}:5")]);
}

#[test]
fn a_hole_is_refilled_from_history_in_order_and_once() {
    let mut w = World::new();
    w.connect(&[("accept-version", "1.2")]);
    w.frame(subscribe("s", "/topic/app/g"));
    w.v1_command(json!({"type": "join", "id": 1, "room": "app/g"}));
    for n in 1..=12 {
        w.v1_command(json!({"type": "publish", "id": n + 1, "room": "app/g", "data": n}));
    }
    let got: Vec<Value> = w
        .take()
        .iter()
        .map(|f| serde_json::from_slice(&f.body).unwrap())
        .collect();
    assert_eq!(got, (1..=12).map(|n| json!(n)).collect::<Vec<_>>());
    let epoch = w.v1_epoch();
    let message = |seq: u64, n: u64| ServerMessage::Message {
        room: "app/g".into(),
        seq,
        from: "ada".into(),
        data: json!(n),
    };
    // Delivered by hand: 13 arrives before 12 is known, the gap follows.
    let now = w.now;
    w.session.deliver(&message(14, 14), now);
    w.session.deliver(
        &ServerMessage::Gap {
            room: "app/g".into(),
            from_seq: 13,
            to_seq: 13,
        },
        now,
    );
    // The session joins again with since = 12 (one refill, not two).
    let mut joins = Vec::new();
    while let Some(o) = w.session.poll_output() {
        match o {
            Output::Command(ClientMessage::Join { since, .. }) => joins.push(since),
            Output::Send(_) => panic!("nothing may be passed on before the hole is filled"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        joins,
        [Some(Since {
            epoch: epoch.clone(),
            seq: 12
        })]
    );
    // The replay: 13 and 14 (14 again), then joined; 14 goes out once.
    w.session.deliver(&message(13, 13), now);
    w.session.deliver(&message(14, 14), now);
    w.session.deliver(
        &ServerMessage::Joined {
            id: Id::Text("join:3".into()),
            room: "app/g".into(),
            epoch: epoch.clone(),
            seq: 14,
            members: Vec::new(),
            members_truncated: false,
            recovered: true,
        },
        now,
    );
    w.pump();
    let got: Vec<String> = w.message_ids();
    assert_eq!(got, [format!("{epoch}:13"), format!("{epoch}:14")]);
}

#[test]
fn bad_destinations_and_bodies_get_an_error_then_close() {
    for (frame, text) in [
        (send("/queue/x", "a"), "is not /topic/NAMESPACE/NAME"),
        (send("/topic/nonamespace", "a"), "namespace/name"),
        (
            send("/topic/a/b", "{nope").with_header("content-type", "application/json"),
            "not JSON",
        ),
        (
            subscribe("s", "/topic/a/b").with_header("ack", "sometimes"),
            "ack",
        ),
        (
            Frame::new(Command::Subscribe).with_header("id", "s"),
            "destination",
        ),
        (Frame::new(Command::Message), "server frame"),
    ] {
        let mut w = World::new();
        w.connect(&[("accept-version", "1.2")]);
        w.frame(frame.with_header("receipt", "r"));
        let frames = w.take();
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].command, Command::Error);
        let message = frames[0].header("message").unwrap();
        assert!(message.contains(text), "{message:?} lacks {text:?}");
        assert_eq!(frames[0].header("receipt-id"), Some("r"));
        assert_eq!(w.closed, Some(false));
        // Nothing more is read after the error.
        w.frame(send("/topic/a/b", "late"));
        assert!(w.take().is_empty());
    }
    // A frame before CONNECT, and a malformed frame.
    let mut w = World::new();
    w.frame(send("/topic/a/b", "x"));
    assert_eq!(w.take()[0].command, Command::Error);
    let mut w = World::new();
    w.connect(&[("accept-version", "1.2")]);
    w.stomp(b"FLY\n\n\0");
    let frames = w.take();
    assert!(
        frames[0]
            .header("message")
            .unwrap()
            .contains("unknown command")
    );
}

#[test]
fn transactions_hold_sends_until_commit_and_abort_drops_them() {
    let mut w = World::new();
    w.v1_command(json!({"type": "join", "id": 1, "room": "app/t"}));
    w.connect(&[("accept-version", "1.2")]);
    w.frame(Frame::new(Command::Begin).with_header("transaction", "tx1"));
    w.frame(send("/topic/app/t", "a").with_header("transaction", "tx1"));
    w.frame(send("/topic/app/t", "b").with_header("transaction", "tx1"));
    let published = |w: &World| {
        w.v1.iter()
            .filter_map(|m| match m {
                ServerMessage::Message { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(published(&w).is_empty());
    w.frame(Frame::new(Command::Commit).with_header("transaction", "tx1"));
    assert_eq!(published(&w), [json!("a"), json!("b")]);
    w.frame(Frame::new(Command::Begin).with_header("transaction", "tx2"));
    w.frame(send("/topic/app/t", "c").with_header("transaction", "tx2"));
    w.frame(Frame::new(Command::Abort).with_header("transaction", "tx2"));
    assert_eq!(published(&w).len(), 2);
    w.frame(send("/topic/app/t", "d").with_header("transaction", "nope"));
    assert!(w.take().iter().any(|f| f.command == Command::Error));
}

#[test]
fn disconnect_receipt_comes_after_every_earlier_send_is_acked_then_close() {
    let mut w = World::new();
    w.connect(&[("accept-version", "1.2")]);
    w.frame(send("/topic/app/d", "last words"));
    w.frame(Frame::new(Command::Disconnect).with_header("receipt", "bye"));
    let frames = w.take();
    assert_eq!(frames.last().unwrap().header("receipt-id"), Some("bye"));
    assert_eq!(w.closed, Some(true));
    assert!(w.session.is_done());
}

#[test]
fn heart_beats_go_out_as_agreed_and_a_silent_client_is_closed() {
    let mut w = World::new();
    // The client sends every 5 s and wants beats every 1 s: the server beats every second and
    // expects something every max(5, 10) = 10 s, closing after 20 s of silence.
    let connected = w.connect(&[("accept-version", "1.2"), ("heart-beat", "5000,1000")]);
    assert_eq!(connected.header("heart-beat"), Some("1000,10000"));
    assert_eq!(w.session.poll_timeout(), Some(ms(1000)));
    for s in 1..=3 {
        w.now = ms(1000 * s);
        w.session.handle_timeout(w.now);
        w.pump();
    }
    assert_eq!(w.frames, [None, None, None]);
    // Any inbound byte counts as life.
    w.now = ms(15_000);
    w.stomp(b"\n");
    w.frames.clear();
    let mut t = 15_000;
    while w.closed.is_none() {
        // An overdue beat (the clock jumped) is sent at once.
        let next = w.session.poll_timeout().unwrap().max(w.now);
        w.now = next;
        w.session.handle_timeout(next);
        w.pump();
        t = next.as_millis();
        assert!(t <= 35_000);
    }
    assert_eq!(t, 35_000);
    assert_eq!(w.closed, Some(false));
}

#[test]
fn a_refused_token_is_an_error_frame() {
    let mut w = World {
        hub: Hub::new(HubConfig::default().with_external_identity(true), 7),
        ..World::new()
    };
    let error = w.connect(&[("accept-version", "1.2"), ("passcode", "not-a-jwt")]);
    assert_eq!(error.command, Command::Error);
    assert_eq!(w.closed, Some(false));
    // The passcode went to the hub as the hello's token.
    let mut s = StompSession::new(
        StompConfig::default(),
        Some("upgrade".into()),
        Duration::ZERO,
    );
    s.receive(b"CONNECT\naccept-version:1.2\n\n\0", Duration::ZERO);
    assert_eq!(
        s.poll_output(),
        Some(Output::Command(ClientMessage::Hello {
            client: None,
            token: Some("upgrade".into())
        }))
    );
    let mut s = StompSession::new(StompConfig::default(), None, Duration::ZERO);
    s.receive(
        b"CONNECT\naccept-version:1.2\nAuthorization:Bearer abc\n\n\0",
        Duration::ZERO,
    );
    assert_eq!(
        s.poll_output(),
        Some(Output::Command(ClientMessage::Hello {
            client: None,
            token: Some("abc".into())
        }))
    );
}
