//! `ClientSession` behaviour, one rule per test, against a scripted server.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::client::{ClientConfig, ClientError, ClientEvent, ClientSession, DisconnectReason};
use super::protocol::{Id, Member};

const T0: Duration = Duration::ZERO;
const ROOM: &str = "app/chat";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn session() -> ClientSession {
    ClientSession::new(ClientConfig::default(), 1)
}

fn events(session: &mut ClientSession) -> Vec<ClientEvent> {
    let mut out = Vec::new();
    while let Some(event) = session.poll_event() {
        out.push(event);
    }
    out
}

/// Every queued text, as JSON.
fn sent(session: &mut ClientSession) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(text) = session.poll_transmit() {
        out.push(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")));
    }
    out
}

fn welcome(session: &mut ClientSession, heartbeat_ms: u64, now: Duration) {
    session.receive(
        &format!(r#"{{"type":"welcome","client":"me","heartbeat_ms":{heartbeat_ms}}}"#),
        now,
    );
}

/// Connected and welcomed (no heartbeat); queues drained.
fn online() -> ClientSession {
    let mut s = session();
    s.connected(T0);
    welcome(&mut s, 0, T0);
    events(&mut s);
    sent(&mut s);
    s
}

fn joined_text(id: &Value, epoch: &str, seq: u64, recovered: bool) -> String {
    format!(
        r#"{{"type":"joined","id":{id},"room":"{ROOM}","epoch":"{epoch}","seq":{seq},"members":[{{"client":"me","presence":null}}],"recovered":{recovered}}}"#
    )
}

fn message_text(seq: u64) -> String {
    format!(r#"{{"type":"message","room":"{ROOM}","seq":{seq},"from":"bob","data":{seq}}}"#)
}

fn message(seq: u64) -> ClientEvent {
    ClientEvent::Message {
        room: ROOM.into(),
        seq,
        from: "bob".into(),
        data: json!(seq),
    }
}

/// Online and joined to ROOM at `epoch`/`seq`; queues drained.
fn in_room(epoch: &str, seq: u64) -> ClientSession {
    let mut s = online();
    s.join(ROOM, None).unwrap();
    let join = sent(&mut s).remove(0);
    s.receive(&joined_text(&join["id"], epoch, seq, false), T0);
    events(&mut s);
    s
}

/// Drops the connection and comes back online; returns what the session sent after `welcome`.
fn reconnect(s: &mut ClientSession, now: Duration) -> Vec<Value> {
    s.disconnected(now);
    let deadline = s.poll_timeout().unwrap();
    s.handle_timeout(deadline);
    s.connected(deadline);
    sent(s);
    welcome(s, 0, deadline);
    events(s);
    sent(s)
}

fn id_of(value: &Value) -> Id {
    serde_json::from_value(value.clone()).unwrap()
}

#[test]
fn hello_carries_the_welcomed_client_id_on_every_reconnect() {
    let config = ClientConfig::default().with_token("t0");
    let mut s = ClientSession::new(config, 3);
    assert_eq!(events(&mut s), [ClientEvent::Connect { attempt: 0 }]);
    assert_eq!(s.poll_timeout(), None);
    s.connected(T0);
    assert_eq!(sent(&mut s), [json!({"type": "hello", "token": "t0"})]);
    s.receive(
        r#"{"type":"welcome","client":"c-9","heartbeat_ms":0}"#,
        ms(5),
    );
    assert!(s.is_open());
    assert_eq!(s.client_id(), Some("c-9"));
    assert_eq!(
        events(&mut s),
        [ClientEvent::Welcome {
            client: "c-9".into(),
            heartbeat: T0
        }]
    );

    s.set_token(Some("t1".into()));
    s.disconnected(ms(10));
    let got = events(&mut s);
    assert_eq!(
        got[0],
        ClientEvent::Disconnected {
            reason: DisconnectReason::SocketClosed
        }
    );
    let ClientEvent::Reconnecting { attempt: 1, delay } = got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(s.poll_timeout(), Some(ms(10) + delay));
    s.handle_timeout(ms(10) + delay);
    assert_eq!(events(&mut s), [ClientEvent::Connect { attempt: 1 }]);
    s.connected(ms(20) + delay);
    assert_eq!(
        sent(&mut s),
        [json!({"type": "hello", "client": "c-9", "token": "t1"})]
    );
}

/// The delay bounds of consecutive failed attempts, from a config.
fn observed_delays(config: ClientConfig, seed: u64, attempts: u32) -> Vec<(u32, Duration)> {
    let mut s = ClientSession::new(config, seed);
    events(&mut s);
    let mut now = T0;
    let mut out = Vec::new();
    for _ in 0..attempts {
        s.disconnected(now); // the socket could not be opened
        for event in events(&mut s) {
            if let ClientEvent::Reconnecting { attempt, delay } = event {
                out.push((attempt, delay));
                assert_eq!(s.poll_timeout(), Some(now + delay));
                // Not before the deadline.
                if !delay.is_zero() {
                    s.handle_timeout(now + delay - Duration::from_nanos(1));
                    assert!(events(&mut s).is_empty());
                }
                now += delay;
                s.handle_timeout(now);
                assert_eq!(events(&mut s), [ClientEvent::Connect { attempt }]);
            }
        }
    }
    out
}

#[test]
fn backoff_is_full_jitter_below_an_exponential_bound() {
    let mut all = Vec::new();
    for seed in 0..40 {
        let delays = observed_delays(ClientConfig::default(), seed, 10);
        assert_eq!(delays.len(), 10);
        for (n, (attempt, delay)) in delays.into_iter().enumerate() {
            assert_eq!(attempt as usize, n + 1);
            let bound = ms(500 * (1 << n)).min(Duration::from_secs(30));
            assert!(delay <= bound, "attempt {attempt}: {delay:?} > {bound:?}");
            all.push((attempt, delay, bound));
        }
    }
    // Jitter spreads over the whole range, not only near the bound.
    for attempt in [1, 4, 10] {
        let ratios: Vec<f64> = all
            .iter()
            .filter(|a| a.0 == attempt)
            .map(|a| a.1.as_secs_f64() / a.2.as_secs_f64())
            .collect();
        let low = ratios.iter().filter(|r| **r < 0.25).count();
        let high = ratios.iter().filter(|r| **r > 0.75).count();
        assert!(low > 0 && high > 0, "attempt {attempt}: {ratios:?}");
    }

    let config = ClientConfig::default().with_backoff(ms(100), ms(1000), 3.0);
    for seed in 0..20 {
        for (attempt, delay) in observed_delays(config.clone(), seed, 6) {
            let bound = ms(100 * 3u64.pow(attempt - 1)).min(ms(1000));
            assert!(delay <= bound, "attempt {attempt}: {delay:?} > {bound:?}");
        }
    }
    // Odd configurations stay bounded and never panic.
    for config in [
        ClientConfig::default().with_backoff(ms(100), ms(50), f64::NAN),
        ClientConfig::default().with_backoff(Duration::MAX, Duration::MAX, f64::INFINITY),
        ClientConfig::default().with_backoff(T0, T0, 2.0),
    ] {
        let max = config.max_backoff;
        for (_, delay) in observed_delays(config, 5, 70) {
            assert!(delay <= max);
        }
    }
}

#[test]
fn a_welcome_resets_the_attempt_count() {
    let mut s = session();
    events(&mut s);
    let mut now = T0;
    for expected in 1..=3 {
        s.disconnected(now);
        let got = events(&mut s);
        assert!(
            matches!(got[..], [ClientEvent::Reconnecting { attempt, .. }] if attempt == expected),
            "{got:?}"
        );
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        events(&mut s);
    }
    s.connected(now);
    welcome(&mut s, 0, now);
    s.disconnected(now);
    let got = events(&mut s);
    let Some(ClientEvent::Reconnecting { attempt, delay }) = got.last() else {
        panic!("{got:?}")
    };
    assert_eq!(*attempt, 1);
    assert!(*delay <= ms(500));
}

#[test]
fn close_stops_everything_for_good() {
    let mut s = online();
    s.join(ROOM, None).unwrap();
    s.close();
    assert_eq!(
        events(&mut s),
        [
            ClientEvent::CloseSocket {
                reason: DisconnectReason::Closed
            },
            ClientEvent::Closed
        ]
    );
    assert!(sent(&mut s).is_empty());
    assert!(s.is_closed());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.join("app/x", None), Err(ClientError::Closed));
    assert_eq!(s.publish(ROOM, json!(1)), Err(ClientError::Closed));
    assert_eq!(s.leave(ROOM), Err(ClientError::Closed));
    s.disconnected(ms(1));
    s.handle_timeout(Duration::from_secs(3600));
    s.receive(r#"{"type":"pong","id":1}"#, ms(2));
    assert!(events(&mut s).is_empty());
    // A socket that opens anyway is to be closed.
    s.connected(ms(3));
    assert_eq!(
        events(&mut s),
        [ClientEvent::CloseSocket {
            reason: DisconnectReason::Closed
        }]
    );
    assert!(sent(&mut s).is_empty());
    s.close();
    assert!(events(&mut s).is_empty());

    // Closing while backing off: no reconnect.
    let mut s = session();
    s.disconnected(T0);
    events(&mut s);
    s.close();
    assert_eq!(events(&mut s), [ClientEvent::Closed]);
    s.handle_timeout(Duration::from_secs(60));
    assert!(events(&mut s).is_empty());
}

#[test]
fn a_takeover_ends_the_session_for_good() {
    let mut s = in_room("e", 0);
    s.publish(ROOM, json!(1)).unwrap();
    sent(&mut s);
    s.receive(
        r#"{"type":"error","code":"taken_over","message":"taken over by a newer connection"}"#,
        ms(1),
    );
    assert_eq!(
        events(&mut s),
        [
            ClientEvent::ServerError {
                id: None,
                code: "taken_over".into(),
                message: "taken over by a newer connection".into()
            },
            ClientEvent::CloseSocket {
                reason: DisconnectReason::TakenOver
            },
            ClientEvent::Disconnected {
                reason: DisconnectReason::TakenOver
            },
            ClientEvent::Closed
        ]
    );
    assert!(s.is_closed());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.pending_publishes(), 0);
    // The server's 1008 close that follows brings no reconnect.
    s.disconnected(ms(2));
    s.handle_timeout(Duration::from_secs(3600));
    assert!(events(&mut s).is_empty());
    assert!(sent(&mut s).is_empty());
    assert_eq!(s.publish(ROOM, json!(2)), Err(ClientError::Closed));

    // The same when the takeover answers a command (the id is the command's).
    let mut s = online();
    s.receive(
        r#"{"type":"error","id":7,"code":"taken_over","message":"x"}"#,
        ms(1),
    );
    assert_eq!(events(&mut s).last(), Some(&ClientEvent::Closed));
    assert!(s.is_closed());
}

#[test]
fn a_cut_member_list_is_flagged() {
    let mut s = online();
    s.join(ROOM, None).unwrap();
    let join = sent(&mut s).remove(0);
    s.receive(
        &format!(
            r#"{{"type":"joined","id":{},"room":"{ROOM}","epoch":"e","seq":0,"members":[{{"client":"me","presence":null}}],"members_truncated":true,"recovered":false}}"#,
            join["id"]
        ),
        T0,
    );
    let got = events(&mut s);
    assert!(
        matches!(
            &got[0],
            ClientEvent::Joined {
                members_truncated: true,
                ..
            }
        ),
        "{got:?}"
    );
    assert!(got[0].to_json().contains(r#""members_truncated":true"#));
    // Without the field (a full list) it is false.
    let mut s = online();
    s.join(ROOM, None).unwrap();
    let join = sent(&mut s).remove(0);
    s.receive(&joined_text(&join["id"], "e", 0, false), T0);
    assert!(matches!(
        &events(&mut s)[0],
        ClientEvent::Joined {
            members_truncated: false,
            ..
        }
    ));
}

#[test]
fn offline_publishes_queue_up_to_the_bound_and_go_out_after_the_joins() {
    let mut s = ClientSession::new(ClientConfig::default().with_max_offline_publishes(3), 1);
    assert_eq!(s.publish(ROOM, json!(0)), Err(ClientError::NotJoined));
    let join = s.join(ROOM, Some(json!({"n": 1}))).unwrap();
    let ids: Vec<Id> = (0..3).map(|i| s.publish(ROOM, json!(i)).unwrap()).collect();
    assert_eq!(s.publish(ROOM, json!(3)), Err(ClientError::QueueFull));
    assert_eq!(s.pending_publishes(), 3);
    assert!(sent(&mut s).is_empty());

    s.connected(T0);
    assert_eq!(sent(&mut s).len(), 1); // hello only: commands wait for welcome
    assert_eq!(s.publish(ROOM, json!(3)), Err(ClientError::QueueFull));
    welcome(&mut s, 0, T0);
    let out = sent(&mut s);
    assert_eq!(
        out[0],
        json!({"type": "join", "id": serde_json::to_value(&join).unwrap(), "room": ROOM, "presence": {"n": 1}})
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            out[i + 1],
            json!({"type": "publish", "id": serde_json::to_value(id).unwrap(), "room": ROOM, "data": i})
        );
    }
    assert_eq!(out.len(), 4);
    // Online, the bound does not apply: publishes go out at once.
    s.publish(ROOM, json!(3)).unwrap();
    s.publish(ROOM, json!(4)).unwrap();
    assert_eq!(sent(&mut s).len(), 2);
    assert_eq!(s.pending_publishes(), 5);
}

#[test]
fn local_refusals() {
    let mut s = online();
    assert!(matches!(s.join("nope", None), Err(ClientError::BadRoom(_))));
    assert_eq!(s.leave(ROOM), Err(ClientError::NotJoined));
    assert_eq!(s.set_presence(ROOM, json!(1)), Err(ClientError::NotJoined));
    s.join(ROOM, None).unwrap();
    assert_eq!(s.join(ROOM, None), Err(ClientError::AlreadyJoined));
    assert_eq!(sent(&mut s).len(), 1);
    assert_eq!(ClientError::QueueFull.code(), "queue_full");
}

#[test]
fn acks_resolve_pending_publishes_once() {
    let mut s = in_room("e", 0);
    let a = s.publish(ROOM, json!("a")).unwrap();
    let b = s.publish(ROOM, json!("b")).unwrap();
    assert_ne!(a, b);
    sent(&mut s);
    let ack = |id: &Id, seq: u64| {
        format!(
            r#"{{"type":"ack","id":{},"seq":{seq}}}"#,
            serde_json::to_string(id).unwrap()
        )
    };
    s.receive(&ack(&b, 2), T0);
    s.receive(&ack(&b, 2), T0); // a duplicate: nothing
    s.receive(&ack(&a, 1), T0);
    assert_eq!(
        events(&mut s),
        [
            ClientEvent::Ack {
                id: b,
                room: ROOM.into(),
                seq: 2
            },
            ClientEvent::Ack {
                id: a.clone(),
                room: ROOM.into(),
                seq: 1
            },
        ]
    );
    assert_eq!(s.pending_publishes(), 0);

    // A refused publish is reported and dropped, not retried.
    let c = s.publish(ROOM, json!("c")).unwrap();
    let text = format!(
        r#"{{"type":"error","id":{},"code":"too_large","message":"big"}}"#,
        serde_json::to_string(&c).unwrap()
    );
    s.receive(&text, T0);
    assert_eq!(
        events(&mut s),
        [ClientEvent::PublishRejected {
            id: c,
            room: ROOM.into(),
            code: "too_large".into(),
            message: "big".into()
        }]
    );
    assert_eq!(s.pending_publishes(), 0);
    let out = reconnect(&mut s, ms(1));
    assert_eq!(out.len(), 1, "{out:?}"); // the rejoin; nothing to resend
}

#[test]
fn unacked_publishes_are_resent_with_the_same_id_after_the_rejoin() {
    let mut s = in_room("e", 4);
    let id = s.publish(ROOM, json!({"k": "v"})).unwrap();
    let first = sent(&mut s);
    let out = reconnect(&mut s, ms(1));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["type"], "join");
    assert_eq!(out[0]["since"], json!({"epoch": "e", "seq": 4}));
    assert_eq!(out[1], first[0]);
    assert_eq!(id_of(&out[1]["id"]), id);
    assert_eq!(s.pending_publishes(), 1);
}

#[test]
fn replayed_and_duplicate_messages_are_delivered_once_in_order() {
    let mut s = in_room("e", 0);
    s.receive(&message_text(1), T0);
    s.receive(&message_text(2), T0);
    s.receive(&message_text(2), T0);
    assert_eq!(events(&mut s), [message(1), message(2)]);
    assert_eq!(s.position(ROOM).unwrap().seq, 2);

    let out = reconnect(&mut s, ms(1));
    assert_eq!(out[0]["since"], json!({"epoch": "e", "seq": 2}));
    // The replay may overlap what was already seen; only the new ones come out.
    for seq in [2, 3, 3, 4] {
        s.receive(&message_text(seq), ms(2));
    }
    s.receive(&joined_text(&out[0]["id"], "e", 4, true), ms(2));
    s.receive(&message_text(4), ms(2));
    s.receive(&message_text(5), ms(2));
    let got = events(&mut s);
    assert_eq!(got[..2], [message(3), message(4)]);
    assert!(
        matches!(&got[2], ClientEvent::Joined { seq: 4, recovered: true, members, .. }
            if *members == [Member { client: "me".into(), presence: Value::Null }]),
        "{got:?}"
    );
    assert_eq!(got[3..], [message(5)]);
    assert!(s.is_joined(ROOM));
}

#[test]
fn recovered_false_means_resync() {
    let mut s = in_room("e", 7);
    let out = reconnect(&mut s, ms(1));
    s.receive(&joined_text(&out[0]["id"], "e", 30, false), ms(2));
    let got = events(&mut s);
    assert!(
        matches!(
            &got[0],
            ClientEvent::Joined {
                seq: 30,
                recovered: false,
                ..
            }
        ),
        "{got:?}"
    );
    assert_eq!(got[1], ClientEvent::Resync { room: ROOM.into() });
    assert_eq!(got.len(), 2);
    s.receive(&message_text(12), ms(3)); // older than the new position
    s.receive(&message_text(31), ms(3));
    assert_eq!(events(&mut s), [message(31)]);
}

#[test]
fn a_new_epoch_means_resync_and_counting_from_its_seq() {
    let mut s = in_room("e1", 7);
    let out = reconnect(&mut s, ms(1));
    // Even a server claiming recovery of another epoch is not trusted.
    s.receive(&joined_text(&out[0]["id"], "e2", 0, true), ms(2));
    let got = events(&mut s);
    assert_eq!(got.last(), Some(&ClientEvent::Resync { room: ROOM.into() }));
    s.receive(&message_text(1), ms(3));
    assert_eq!(events(&mut s), [message(1)]);
    let position = s.position(ROOM).unwrap();
    assert_eq!((position.epoch.as_str(), position.seq), ("e2", 1));
    let out = reconnect(&mut s, ms(4));
    assert_eq!(out[0]["since"], json!({"epoch": "e2", "seq": 1}));
}

#[test]
fn a_new_epoch_with_messages_is_fetched_from_its_start() {
    // The server restarted and others already published 3 messages in the new epoch.
    let mut s = in_room("e1", 7);
    let out = reconnect(&mut s, ms(1));
    s.receive(&joined_text(&out[0]["id"], "e2", 3, false), ms(2));
    let got = events(&mut s);
    assert_eq!(got.last(), Some(&ClientEvent::Resync { room: ROOM.into() }));
    let refill = sent(&mut s);
    assert_eq!(refill.len(), 1, "{refill:?}");
    assert_eq!(refill[0]["type"], "join");
    assert_eq!(refill[0]["since"], json!({"epoch": "e2", "seq": 0}));
    for seq in 1..=3 {
        s.receive(&message_text(seq), ms(3));
    }
    s.receive(&joined_text(&refill[0]["id"], "e2", 3, true), ms(3));
    assert_eq!(events(&mut s), [message(1), message(2), message(3)]);
}

#[test]
fn a_first_join_without_history_is_not_a_resync() {
    let mut s = online();
    let id = s.join(ROOM, None).unwrap();
    let join = sent(&mut s).remove(0);
    assert_eq!(id_of(&join["id"]), id);
    assert!(join.get("since").is_none());
    s.receive(&message_text(3), T0); // from no membership of ours: ignored
    s.receive(&joined_text(&join["id"], "e", 3, false), T0);
    let got = events(&mut s);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(matches!(&got[0], ClientEvent::Joined { id: i, .. } if *i == id));
}

#[test]
fn a_hole_or_a_gap_is_refilled_by_rejoining_from_the_last_seq() {
    let mut s = in_room("e", 0);
    s.join("app/other", None).unwrap();
    sent(&mut s);
    s.receive(&message_text(1), T0);
    s.receive(&message_text(2), T0);
    s.receive(&message_text(5), T0); // 3 and 4 were dropped
    assert_eq!(events(&mut s), [message(1), message(2)]);
    let out = sent(&mut s);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["type"], "join");
    assert_eq!(out[0]["room"], ROOM);
    assert_eq!(out[0]["since"], json!({"epoch": "e", "seq": 2}));
    assert!(out[0].get("presence").is_none());
    // The gap notice and further live messages while the refill is in flight: nothing more sent.
    s.receive(
        &format!(r#"{{"type":"gap","room":"{ROOM}","from_seq":3,"to_seq":4}}"#),
        T0,
    );
    s.receive(&message_text(6), T0);
    assert!(sent(&mut s).is_empty());
    for seq in 3..=6 {
        s.receive(&message_text(seq), T0); // the replay
    }
    s.receive(&joined_text(&out[0]["id"], "e", 6, true), T0);
    s.receive(&message_text(7), T0);
    // No `Joined` for a refill: membership never changed.
    assert_eq!(
        events(&mut s),
        [message(3), message(4), message(5), message(6), message(7)]
    );

    // A gap of the latest messages, with nothing after it to show the hole.
    s.receive(
        &format!(r#"{{"type":"gap","room":"{ROOM}","from_seq":8,"to_seq":9}}"#),
        T0,
    );
    let out = sent(&mut s);
    assert_eq!(out[0]["since"], json!({"epoch": "e", "seq": 7}));
    // History no longer has them: resync, then go on from the room's seq.
    s.receive(&joined_text(&out[0]["id"], "e", 9, false), T0);
    s.receive(&message_text(10), T0);
    assert_eq!(
        events(&mut s),
        [ClientEvent::Resync { room: ROOM.into() }, message(10)]
    );
    // A stale gap notice about messages already recovered: nothing.
    s.receive(
        &format!(r#"{{"type":"gap","room":"{ROOM}","from_seq":3,"to_seq":4}}"#),
        T0,
    );
    assert!(sent(&mut s).is_empty());
}

#[test]
fn a_replay_with_its_own_hole_is_refilled_again() {
    let mut s = in_room("e", 0);
    s.receive(&message_text(1), T0);
    s.receive(&message_text(4), T0);
    let first = sent(&mut s).remove(0);
    s.receive(&message_text(2), T0); // 3 dropped from the replay too
    s.receive(&message_text(4), T0);
    s.receive(&joined_text(&first["id"], "e", 4, true), T0);
    let second = sent(&mut s);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["since"], json!({"epoch": "e", "seq": 2}));
    s.receive(&message_text(3), T0);
    s.receive(&message_text(4), T0);
    s.receive(&joined_text(&second[0]["id"], "e", 4, true), T0);
    assert_eq!(
        events(&mut s),
        [message(1), message(2), message(3), message(4)]
    );
}

#[test]
fn heartbeat_pings_after_silence_and_gives_up_without_a_reply() {
    let mut s = session();
    s.connected(T0);
    welcome(&mut s, 1000, T0);
    events(&mut s);
    sent(&mut s);
    assert_eq!(s.poll_timeout(), Some(ms(1000)));
    s.handle_timeout(ms(999));
    assert!(sent(&mut s).is_empty());
    s.handle_timeout(ms(1000));
    let ping = sent(&mut s);
    assert_eq!(ping.len(), 1);
    assert_eq!(ping[0]["type"], "ping");
    // With a ping out, the deadline is one interval later.
    assert_eq!(s.poll_timeout(), Some(ms(2000)));
    s.receive(
        &format!(r#"{{"type":"pong","id":{}}}"#, ping[0]["id"]),
        ms(1500),
    );
    assert!(events(&mut s).is_empty());
    // Answered: the next ping is due an interval after the ping was sent.
    assert_eq!(s.poll_timeout(), Some(ms(2000)));
    // Any traffic counts, both ways: the ping is due an interval after the older of the last
    // text received and the last text sent.
    s.receive(r#"{"type":"pong","id":0}"#, ms(1900));
    assert_eq!(s.poll_timeout(), Some(ms(2000)));
    s.join(ROOM, None).unwrap();
    assert_eq!(s.poll_timeout(), Some(ms(2900)));
    s.handle_timeout(ms(2900));
    assert_eq!(sent(&mut s).last().unwrap()["type"], "ping");
    s.handle_timeout(ms(3899));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(ms(3900));
    let got = events(&mut s);
    assert_eq!(
        got[..2],
        [
            ClientEvent::CloseSocket {
                reason: DisconnectReason::HeartbeatTimeout
            },
            ClientEvent::Disconnected {
                reason: DisconnectReason::HeartbeatTimeout
            },
        ]
    );
    assert!(matches!(
        got[2],
        ClientEvent::Reconnecting { attempt: 1, .. }
    ));
    assert!(!s.is_open() && !s.is_joined(ROOM));
    // The old socket's late close changes nothing.
    s.disconnected(ms(3950));
    assert!(events(&mut s).is_empty());
    // A server without heartbeat: no deadline.
    let s = online();
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn no_welcome_in_time_gives_the_socket_up() {
    let mut s = ClientSession::new(ClientConfig::default().with_welcome_timeout(ms(300)), 1);
    events(&mut s);
    s.connected(ms(100));
    assert_eq!(s.poll_timeout(), Some(ms(400)));
    s.handle_timeout(ms(400));
    let got = events(&mut s);
    assert_eq!(
        got[0],
        ClientEvent::CloseSocket {
            reason: DisconnectReason::WelcomeTimeout
        }
    );
    assert!(matches!(got[2], ClientEvent::Reconnecting { .. }));
    welcome(&mut s, 0, ms(401)); // too late: that socket is gone
    assert!(!s.is_open());
}

#[test]
fn malformed_server_text_is_an_event_and_the_session_goes_on() {
    let mut s = in_room("e", 0);
    for text in [
        "",
        "not json",
        "[1,2]",
        "{}",
        r#"{"type":"bogus"}"#,
        r#"{"type":"message","room":1}"#,
        r#"{"type":"ack","id":-4,"seq":1}"#,
        r#"{"type":"joined","id":1}"#,
        "{\"type\":\"message\",\"room\":\"\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\"",
    ] {
        s.receive(text, T0);
        let got = events(&mut s);
        assert!(
            matches!(&got[..], [ClientEvent::ProtocolError { .. }]),
            "{text}: {got:?}"
        );
    }
    welcome(&mut s, 0, T0); // a second welcome on one connection
    assert!(matches!(
        &events(&mut s)[..],
        [ClientEvent::ProtocolError { .. }]
    ));
    s.receive(&message_text(1), T0);
    assert_eq!(events(&mut s), [message(1)]);
    assert!(s.is_open());
}

#[test]
fn server_errors_reach_the_application() {
    let mut s = online();
    let id = s.join(ROOM, None).unwrap();
    sent(&mut s);
    let text = format!(
        r#"{{"type":"error","id":{},"code":"unauthorized","message":"no"}}"#,
        serde_json::to_string(&id).unwrap()
    );
    s.receive(&text, T0);
    s.receive(
        r#"{"type":"error","code":"rate_limited","message":"slow down"}"#,
        T0,
    );
    assert_eq!(
        events(&mut s),
        [
            ClientEvent::JoinRejected {
                id,
                room: ROOM.into(),
                code: "unauthorized".into(),
                message: "no".into()
            },
            ClientEvent::ServerError {
                id: None,
                code: "rate_limited".into(),
                message: "slow down".into()
            },
        ]
    );
    assert_eq!(s.rooms().count(), 0);
    // A rejected room is not rejoined.
    assert!(reconnect(&mut s, ms(1)).is_empty());
}

#[test]
fn the_member_table_follows_joined_and_member_events() {
    let mut s = online();
    s.join(ROOM, Some(json!("here"))).unwrap();
    let join = sent(&mut s).remove(0);
    s.receive(
        &format!(
            r#"{{"type":"joined","id":{},"room":"{ROOM}","epoch":"e","seq":0,"members":[{{"client":"ada","presence":1}},{{"client":"me","presence":"here"}}],"recovered":false}}"#,
            join["id"]
        ),
        T0,
    );
    for text in [
        r#"{"type":"join","room":"app/chat","client":"bob","presence":null}"#,
        r#"{"type":"presence","room":"app/chat","client":"ada","presence":2}"#,
        r#"{"type":"leave","room":"app/chat","client":"bob"}"#,
        r#"{"type":"join","room":"app/else","client":"cy","presence":null}"#,
    ] {
        s.receive(text, T0);
    }
    let got = events(&mut s);
    assert_eq!(
        got[1..],
        [
            ClientEvent::MemberJoined {
                room: ROOM.into(),
                client: "bob".into(),
                presence: Value::Null
            },
            ClientEvent::Presence {
                room: ROOM.into(),
                client: "ada".into(),
                presence: json!(2)
            },
            ClientEvent::MemberLeft {
                room: ROOM.into(),
                client: "bob".into()
            },
        ]
    );
    s.set_presence(ROOM, json!("away")).unwrap();
    assert_eq!(
        sent(&mut s),
        [json!({"type": "presence", "room": ROOM, "presence": "away"})]
    );
    let members: Vec<(String, Value)> = s
        .members(ROOM)
        .map(|(c, p)| (c.to_string(), p.clone()))
        .collect();
    assert_eq!(
        members,
        [
            ("ada".to_string(), json!(2)),
            ("me".to_string(), json!("away"))
        ]
    );
    assert_eq!(s.members("app/else").count(), 0);
    // The latest presence goes with the rejoin.
    let out = reconnect(&mut s, ms(1));
    assert_eq!(out[0]["presence"], "away");
}

#[test]
fn leave_completes_on_left_or_at_once_when_offline() {
    let mut s = in_room("e", 0);
    let id = s.leave(ROOM).unwrap();
    let out = sent(&mut s);
    assert_eq!(
        out,
        [json!({"type": "leave", "id": serde_json::to_value(&id).unwrap(), "room": ROOM})]
    );
    s.receive(&message_text(1), T0); // in flight before the leave: ignored
    assert!(events(&mut s).is_empty());
    s.receive(
        &format!(r#"{{"type":"left","id":{},"room":"{ROOM}"}}"#, out[0]["id"]),
        T0,
    );
    assert_eq!(events(&mut s), [ClientEvent::Left { room: ROOM.into() }]);

    // A leave in flight when the connection drops is complete.
    s.join(ROOM, None).unwrap();
    s.leave(ROOM).unwrap();
    s.disconnected(ms(1));
    assert_eq!(events(&mut s)[0], ClientEvent::Left { room: ROOM.into() });
    // Offline: at once, and nothing is rejoined.
    s.join("app/x", None).unwrap();
    s.leave("app/x").unwrap();
    assert_eq!(
        events(&mut s),
        [ClientEvent::Left {
            room: "app/x".into()
        }]
    );
    let deadline = s.poll_timeout().unwrap();
    s.handle_timeout(deadline);
    s.connected(deadline);
    welcome(&mut s, 0, deadline);
    assert_eq!(sent(&mut s).len(), 1); // hello
}

#[test]
fn events_serialise_to_tagged_json() {
    let event = ClientEvent::Reconnecting {
        attempt: 2,
        delay: ms(1234),
    };
    assert_eq!(
        event.to_json(),
        r#"{"type":"reconnecting","attempt":2,"delay_ms":1234}"#
    );
    let event = ClientEvent::CloseSocket {
        reason: DisconnectReason::HeartbeatTimeout,
    };
    assert_eq!(
        event.to_json(),
        r#"{"type":"close_socket","reason":"heartbeat_timeout"}"#
    );
    let event = ClientEvent::Ack {
        id: Id::Number(7),
        room: ROOM.into(),
        seq: 3,
    };
    assert_eq!(
        event.to_json(),
        r#"{"type":"ack","id":7,"room":"app/chat","seq":3}"#
    );
}

#[test]
fn ids_are_unique_exact_in_javascript_and_differ_between_sessions() {
    let mut seen = Vec::new();
    for seed in 0..4 {
        let mut s = ClientSession::new(ClientConfig::default(), seed);
        s.join(ROOM, None).unwrap();
        for _ in 0..50 {
            match s.publish(ROOM, json!(0)).unwrap() {
                Id::Number(n) => {
                    assert!(n < 1 << 53);
                    seen.push(n);
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let count = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), count);
}

#[test]
fn a_new_socket_without_news_of_the_old_one_replaces_it() {
    let mut s = in_room("e", 3);
    s.connected(ms(5));
    let got = events(&mut s);
    assert_eq!(
        got,
        [ClientEvent::Disconnected {
            reason: DisconnectReason::SocketClosed
        }]
    );
    assert_eq!(sent(&mut s)[0]["type"], "hello");
    welcome(&mut s, 0, ms(6));
    let out = sent(&mut s);
    assert_eq!(out[0]["since"], json!({"epoch": "e", "seq": 3}));
}

#[test]
fn reconnect_now_skips_the_backoff() {
    let mut s = session();
    events(&mut s);
    s.reconnect_now(); // not backing off: nothing
    assert!(events(&mut s).is_empty());
    s.disconnected(T0);
    events(&mut s);
    s.reconnect_now();
    assert_eq!(events(&mut s), [ClientEvent::Connect { attempt: 1 }]);
    assert_eq!(s.poll_timeout(), None);
}

/// Texts close to server messages, so that decoding gets past the JSON parser often.
fn server_text() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("welcome"),
        Just("joined"),
        Just("left"),
        Just("ack"),
        Just("message"),
        Just("presence"),
        Just("join"),
        Just("leave"),
        Just("pong"),
        Just("gap"),
        Just("error"),
        Just("nope"),
    ];
    let value = prop_oneof![
        Just("1"),
        Just("0"),
        Just("\"e\""),
        Just("\"app/chat\""),
        Just("null"),
        Just("[]"),
        Just("18446744073709551615"),
        Just("-1"),
        Just("true"),
    ];
    let fields = [
        "id",
        "room",
        "seq",
        "epoch",
        "client",
        "heartbeat_ms",
        "members",
        "recovered",
        "from",
        "data",
        "presence",
        "from_seq",
        "to_seq",
        "code",
        "message",
    ];
    (
        kind,
        proptest::collection::vec((0..fields.len(), value), 0..8),
    )
        .prop_map(move |(kind, chosen)| {
            let mut parts = vec![format!(r#""type":"{kind}""#)];
            for (field, value) in chosen {
                parts.push(format!(r#""{}":{value}"#, fields[field]));
            }
            format!("{{{}}}", parts.join(","))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn any_server_text_never_panics_and_the_session_goes_on(
        texts in proptest::collection::vec(prop_oneof![any::<String>(), server_text()], 1..30),
        times in proptest::collection::vec(0u64..5000, 30),
    ) {
        let mut s = session();
        s.connected(T0);
        welcome(&mut s, 1000, T0);
        s.join(ROOM, None).unwrap();
        s.publish(ROOM, json!(1)).unwrap();
        let mut now = T0;
        for (text, dt) in texts.iter().zip(&times) {
            now += ms(*dt);
            s.receive(text, now);
            s.handle_timeout(now);
            while s.poll_event().is_some() {}
            while s.poll_transmit().is_some() {}
            let _ = s.poll_timeout();
        }
        // Whatever happened, the session still answers the next connection.
        let next = s.poll_timeout().unwrap_or(now).max(now);
        s.handle_timeout(next);
        s.disconnected(next);
        prop_assert!(!s.is_open());
        prop_assert!(s.poll_timeout().is_some());
    }
}

fn unavailable_text(id: &Id) -> String {
    format!(
        r#"{{"type":"error","id":{},"code":"unavailable","message":"broker down"}}"#,
        serde_json::to_string(id).unwrap()
    )
}

/// Fires every deadline up to `until`; returns what was sent and when.
fn run_until(s: &mut ClientSession, until: Duration) -> Vec<(Duration, Value)> {
    let mut out = Vec::new();
    while let Some(at) = s.poll_timeout().filter(|at| *at <= until) {
        s.handle_timeout(at);
        for text in sent(s) {
            out.push((at, text));
        }
    }
    out
}

#[test]
fn an_unavailable_publish_is_retried_with_the_same_id_after_a_jittered_delay() {
    for seed in 0..50 {
        let mut s = ClientSession::new(ClientConfig::default(), seed);
        s.connected(T0);
        welcome(&mut s, 0, T0);
        s.join(ROOM, None).unwrap();
        let join = sent(&mut s).remove(0);
        s.receive(&joined_text(&join["id"], "e", 0, false), T0);
        events(&mut s);
        let id = s.publish(ROOM, json!("a")).unwrap();
        let first = sent(&mut s).remove(0);
        s.receive(&unavailable_text(&id), ms(2000));
        assert_eq!(events(&mut s), [], "no rejection while retrying");
        assert_eq!(s.pending_publishes(), 1);
        let at = s.poll_timeout().unwrap();
        // The first retry waits within [0, initial_backoff].
        assert!(at >= ms(2000) && at <= ms(2500), "{at:?}");
        assert_eq!(run_until(&mut s, ms(2000) + ms(500)), [(at, first.clone())]);
        // The second retry's bound doubles.
        s.receive(&unavailable_text(&id), ms(3000));
        let at = s.poll_timeout().unwrap();
        assert!(at >= ms(3000) && at <= ms(4000), "{at:?}");
        assert_eq!(run_until(&mut s, ms(4000)), [(at, first)]);
        s.receive(
            &format!(r#"{{"type":"ack","id":{},"seq":1}}"#, json!(id)),
            ms(4100),
        );
        assert_eq!(
            events(&mut s),
            [ClientEvent::Ack {
                id,
                room: ROOM.into(),
                seq: 1
            }]
        );
        assert_eq!(s.poll_timeout(), None);
    }
}

#[test]
fn later_publishes_of_the_room_wait_behind_a_retried_one_and_go_out_in_order() {
    let mut s = in_room("e", 0);
    s.join("app/other", None).unwrap();
    let other = sent(&mut s).remove(0);
    s.receive(
        &format!(
            r#"{{"type":"joined","id":{},"room":"app/other","epoch":"e","seq":0,"members":[],"recovered":false}}"#,
            other["id"]
        ),
        T0,
    );
    events(&mut s);
    let a = s.publish(ROOM, json!("a")).unwrap();
    let b = s.publish(ROOM, json!("b")).unwrap();
    let ab = sent(&mut s);
    // `a` refused; `b` was in flight (and is refused too).
    s.receive(&unavailable_text(&a), ms(10));
    s.receive(&unavailable_text(&b), ms(10));
    // Published while held: not sent; another room is not held.
    let c = s.publish(ROOM, json!("c")).unwrap();
    let x = s.publish("app/other", json!("x")).unwrap();
    let out = sent(&mut s);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(id_of(&out[0]["id"]), x);
    // The retry sends `a` alone: nothing of the room may be sequenced before it.
    let resent: Vec<Value> = run_until(&mut s, ms(10_000))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(resent, ab[..1]);
    // Still down: `a` waits again, alone.
    s.receive(&unavailable_text(&a), ms(10_001));
    let resent: Vec<Value> = run_until(&mut s, ms(20_000))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(resent, ab[..1]);
    assert!(sent(&mut s).is_empty());
    // Its ack releases `b` (same id) and `c`, in order.
    s.receive(
        &format!(r#"{{"type":"ack","id":{},"seq":1}}"#, json!(a)),
        ms(20_001),
    );
    let out = sent(&mut s);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], ab[1]);
    assert_eq!(id_of(&out[0]["id"]), b);
    assert_eq!(id_of(&out[1]["id"]), c);
    assert_eq!(out[1]["data"], "c");
    assert!(matches!(&events(&mut s)[..], [ClientEvent::Ack { id, .. }] if *id == a));
    assert_eq!(s.pending_publishes(), 3);
    assert_eq!(s.poll_timeout(), None);
    // A publish while nothing is held goes out at once again.
    s.publish(ROOM, json!("d")).unwrap();
    assert_eq!(sent(&mut s).len(), 1);
}

#[test]
fn retries_are_bounded_then_the_publish_is_rejected_unavailable() {
    let config = ClientConfig::default().with_unavailable_retries(3, Duration::from_secs(60));
    let mut s = ClientSession::new(config, 9);
    s.connected(T0);
    welcome(&mut s, 0, T0);
    events(&mut s);
    s.join(ROOM, None).unwrap();
    sent(&mut s);
    let id = s.publish(ROOM, json!("a")).unwrap();
    sent(&mut s);
    let mut now = T0;
    for _ in 0..3 {
        s.receive(&unavailable_text(&id), now);
        assert_eq!(events(&mut s), []);
        now = s.poll_timeout().unwrap();
        assert_eq!(run_until(&mut s, now).len(), 1);
    }
    s.receive(&unavailable_text(&id), now);
    assert_eq!(
        events(&mut s),
        [ClientEvent::PublishRejected {
            id,
            room: ROOM.into(),
            code: "unavailable".into(),
            message: "broker down".into()
        }]
    );
    assert_eq!(s.pending_publishes(), 0);
    assert_eq!(s.poll_timeout(), None);

    // The time bound: an `unavailable` 60 s after the first is final.
    let mut s = in_room("e", 0);
    let id = s.publish(ROOM, json!("a")).unwrap();
    sent(&mut s);
    s.receive(&unavailable_text(&id), T0);
    run_until(&mut s, ms(30_000));
    s.receive(&unavailable_text(&id), ms(60_000));
    assert!(matches!(
        &events(&mut s)[..],
        [ClientEvent::PublishRejected { code, .. }] if code == "unavailable"
    ));

    // No retries at all: the first `unavailable` is final.
    let config = ClientConfig::default().with_unavailable_retries(0, Duration::from_secs(60));
    let mut s = ClientSession::new(config, 3);
    s.connected(T0);
    welcome(&mut s, 0, T0);
    events(&mut s);
    s.join(ROOM, None).unwrap();
    let id = s.publish(ROOM, json!("a")).unwrap();
    sent(&mut s);
    s.receive(&unavailable_text(&id), T0);
    assert_eq!(events(&mut s).len(), 1);
}

#[test]
fn an_unavailable_join_is_retried_with_its_publishes_behind_it() {
    let mut s = online();
    let join_id = s.join(ROOM, Some(json!({"name": "Ada"}))).unwrap();
    let p = s.publish(ROOM, json!("p")).unwrap();
    let first = sent(&mut s);
    assert_eq!(first.len(), 2);
    s.receive(&unavailable_text(&join_id), ms(5));
    // The publish behind it was refused for want of membership: it waits for the join.
    s.receive(
        &format!(
            r#"{{"type":"error","id":{},"code":"not_joined","message":"join first"}}"#,
            json!(p)
        ),
        ms(5),
    );
    assert_eq!(events(&mut s), []);
    assert_eq!(s.rooms().collect::<Vec<_>>(), [ROOM]);
    let resent: Vec<Value> = run_until(&mut s, ms(1000))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        resent, first,
        "the same join (same id, presence) then the publish"
    );
    s.receive(&joined_text(&first[0]["id"], "e", 0, false), ms(1000));
    assert!(matches!(&events(&mut s)[..], [ClientEvent::Joined { id, .. }] if *id == join_id));
    assert!(s.is_joined(ROOM));

    // Bounded like a publish: then the room is dropped.
    let config = ClientConfig::default().with_unavailable_retries(1, Duration::from_secs(60));
    let mut s = ClientSession::new(config, 5);
    s.connected(T0);
    welcome(&mut s, 0, T0);
    events(&mut s);
    let id = s.join(ROOM, None).unwrap();
    sent(&mut s);
    s.receive(&unavailable_text(&id), T0);
    assert_eq!(run_until(&mut s, ms(1000)).len(), 1);
    s.receive(&unavailable_text(&id), ms(1000));
    assert!(matches!(
        &events(&mut s)[..],
        [ClientEvent::JoinRejected { code, .. }] if code == "unavailable"
    ));
    assert_eq!(s.rooms().count(), 0);
}

#[test]
fn a_refill_refused_unavailable_is_retried_from_the_same_seq() {
    let mut s = in_room("e", 3);
    s.receive(&message_text(5), T0); // a hole: refill from 3
    let refill = sent(&mut s).remove(0);
    assert_eq!(refill["since"], json!({"epoch": "e", "seq": 3}));
    s.receive(&unavailable_text(&id_of(&refill["id"])), ms(1));
    assert_eq!(events(&mut s), []);
    assert!(s.is_joined(ROOM), "still a member meanwhile");
    s.receive(&message_text(6), ms(2)); // no second refill while one waits
    assert!(sent(&mut s).is_empty());
    let resent = run_until(&mut s, ms(1000));
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].1, refill);
}

#[test]
fn nothing_is_retried_after_close_or_across_a_reconnect_twice() {
    let mut s = in_room("e", 0);
    let id = s.publish(ROOM, json!("a")).unwrap();
    sent(&mut s);
    s.receive(&unavailable_text(&id), T0);
    s.close();
    events(&mut s);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(ms(60_000));
    assert!(sent(&mut s).is_empty());
    assert_eq!(events(&mut s), []);

    // Leaving the room sends its held publishes, to be answered `not_joined`.
    let mut s = in_room("e", 0);
    let a = s.publish(ROOM, json!("a")).unwrap();
    sent(&mut s);
    s.receive(&unavailable_text(&a), T0);
    let b = s.publish(ROOM, json!("b")).unwrap();
    assert!(sent(&mut s).is_empty());
    s.leave(ROOM).unwrap();
    let out = sent(&mut s);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0]["type"], "leave");
    assert_eq!(id_of(&out[1]["id"]), a);
    assert_eq!(id_of(&out[2]["id"]), b);

    // A reconnect resends the held publish once, after the rejoin; the hold is gone.
    let mut s = in_room("e", 0);
    let id = s.publish(ROOM, json!("a")).unwrap();
    sent(&mut s);
    s.receive(&unavailable_text(&id), T0);
    let out = reconnect(&mut s, ms(1));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["type"], "join");
    assert_eq!(id_of(&out[1]["id"]), id);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn send_is_answered_once_and_direct_messages_arrive_as_events() {
    let mut s = in_room("e1", 0);
    let id = s.send("bob", json!({"sdp": "offer"})).unwrap();
    let out = sent(&mut s);
    assert_eq!(
        out,
        [json!({"type": "send", "id": out[0]["id"], "to": "bob", "data": {"sdp": "offer"}})]
    );
    assert_eq!(id_of(&out[0]["id"]), id);
    s.receive(&format!(r#"{{"type":"sent","id":{}}}"#, out[0]["id"]), T0);
    // A second answer for the same id, or for an unknown one, is ignored.
    s.receive(&format!(r#"{{"type":"sent","id":{}}}"#, out[0]["id"]), T0);
    s.receive(
        r#"{"type":"direct","from":"bob","data":{"sdp":"answer"}}"#,
        T0,
    );
    assert_eq!(
        events(&mut s),
        [
            ClientEvent::Sent { id },
            ClientEvent::Direct {
                from: "bob".into(),
                data: json!({"sdp": "answer"})
            }
        ]
    );
    // Refusals carry the server's code.
    let refused = s.send("eve", json!(1)).unwrap();
    let limited = s.send("bob", json!(2)).unwrap();
    let out = sent(&mut s);
    for (text, code) in [(&out[0], "not_found"), (&out[1], "rate_limited")] {
        s.receive(
            &format!(
                r#"{{"type":"error","id":{},"code":"{code}","message":"m"}}"#,
                text["id"]
            ),
            T0,
        );
    }
    assert_eq!(
        events(&mut s),
        [
            ClientEvent::SendRejected {
                id: refused,
                code: "not_found".into(),
                message: "m".into()
            },
            ClientEvent::SendRejected {
                id: limited,
                code: "rate_limited".into(),
                message: "m".into()
            }
        ]
    );
    assert_eq!(s.send("a b", json!(1)), Err(ClientError::BadClient));
    assert_eq!(ClientError::BadClient.code(), "bad_client");
}

#[test]
fn sends_are_never_queued_nor_resent() {
    let mut s = in_room("e1", 0);
    let id = s.send("bob", json!(1)).unwrap();
    sent(&mut s);
    s.disconnected(ms(10));
    let evs = events(&mut s);
    assert!(
        evs.contains(&ClientEvent::SendRejected {
            id,
            code: "disconnected".into(),
            message: "no answer before the connection ended".into()
        }),
        "{evs:?}"
    );
    // Offline: refused at once, and nothing goes out after the reconnect.
    assert_eq!(s.send("bob", json!(2)), Err(ClientError::Offline));
    assert_eq!(ClientError::Offline.code(), "offline");
    let after = reconnect(&mut s, ms(10));
    assert!(after.iter().all(|m| m["type"] != "send"), "{after:?}");
    // Close rejects what is in flight.
    let id = s.send("bob", json!(3)).unwrap();
    s.close();
    let evs = events(&mut s);
    assert!(
        evs.iter().any(
            |e| matches!(e, ClientEvent::SendRejected { id: i, code, .. } if *i == id && code == "closed")
        ),
        "{evs:?}"
    );
    assert_eq!(s.send("bob", json!(4)), Err(ClientError::Closed));
}

#[test]
fn a_session_reaches_another_through_a_hub() {
    use super::PollText;
    use super::hub::{Hub, HubConfig};
    let mut hub: Hub<u32> = Hub::new(HubConfig::default(), 5);
    let mut a = ClientSession::new(ClientConfig::default().with_client("ada"), 1);
    let mut b = ClientSession::new(ClientConfig::default().with_client("bob"), 2);
    let pump = |hub: &mut Hub<u32>, a: &mut ClientSession, b: &mut ClientSession| {
        for _ in 0..4 {
            for (conn, s) in [(1u32, &mut *a), (2, &mut *b)] {
                while let Some(text) = s.poll_transmit() {
                    let _ = hub.receive(conn, &text, T0);
                }
            }
            while let Some((conn, text)) = hub.poll_text() {
                let s = if conn == 1 { &mut *a } else { &mut *b };
                s.receive(&text, T0);
            }
        }
    };
    for (conn, s) in [(1u32, &mut a), (2, &mut b)] {
        hub.connect(conn, T0);
        s.connected(T0);
        s.join(ROOM, None).unwrap();
    }
    pump(&mut hub, &mut a, &mut b);
    events(&mut a);
    events(&mut b);
    let id = a.send("bob", json!({"ice": "c1"})).unwrap();
    let lost = a.send("nobody", json!(1)).unwrap();
    pump(&mut hub, &mut a, &mut b);
    let a_events = events(&mut a);
    assert_eq!(a_events[0], ClientEvent::Sent { id });
    assert!(
        matches!(&a_events[1], ClientEvent::SendRejected { id, code, .. } if *id == lost && code == "not_found")
    );
    assert_eq!(
        events(&mut b),
        [ClientEvent::Direct {
            from: "ada".into(),
            data: json!({"ice": "c1"})
        }]
    );
}
