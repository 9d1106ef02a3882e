//! Hub behaviour, one rule per test, driven through the wire format.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::PollText;
use super::hub::{Hub, HubConfig};
use super::protocol::{ErrorCode, Id, Member, ServerMessage, decode};

const T0: Duration = Duration::ZERO;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn hub() -> Hub<u32> {
    Hub::new(HubConfig::default(), 7)
}

/// Every queued delivery, decoded.
fn drain(hub: &mut Hub<u32>) -> Vec<(u32, ServerMessage)> {
    let mut out = Vec::new();
    while let Some((conn, text)) = hub.poll_text() {
        let message = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        out.push((conn, message));
    }
    out
}

fn to(out: &[(u32, ServerMessage)], conn: u32) -> Vec<ServerMessage> {
    out.iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, m)| m.clone())
        .collect()
}

fn hello(hub: &mut Hub<u32>, conn: u32, client: &str, now: Duration) {
    hub.connect(conn, now);
    let text = format!(r#"{{"type":"hello","client":"{client}"}}"#);
    hub.receive(conn, &text, now).unwrap();
}

fn join(hub: &mut Hub<u32>, conn: u32, room: &str, now: Duration) {
    hub.receive(
        conn,
        &format!(r#"{{"type":"join","id":0,"room":"{room}"}}"#),
        now,
    )
    .unwrap();
}

fn publish(hub: &mut Hub<u32>, conn: u32, id: &str, room: &str, data: &str, now: Duration) {
    let text = format!(r#"{{"type":"publish","id":"{id}","room":"{room}","data":{data}}}"#);
    hub.receive(conn, &text, now).unwrap();
}

fn message(room: &str, seq: u64, from: &str, data: Value) -> ServerMessage {
    ServerMessage::Message {
        room: room.into(),
        seq,
        from: from.into(),
        data,
    }
}

fn ack(id: &str, seq: u64) -> ServerMessage {
    ServerMessage::Ack {
        id: Id::Text(id.into()),
        seq,
    }
}

fn error_code(message: &ServerMessage) -> (Option<Id>, ErrorCode) {
    match message {
        ServerMessage::Error { id, code, .. } => (id.clone(), *code),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// `ada` on 1 and `bob` on 2, both in `app/chat`; deliveries drained.
fn two_members() -> Hub<u32> {
    let mut hub = hub();
    hello(&mut hub, 1, "ada", T0);
    hello(&mut hub, 2, "bob", T0);
    join(&mut hub, 1, "app/chat", T0);
    join(&mut hub, 2, "app/chat", T0);
    drain(&mut hub);
    hub
}

#[test]
fn hello_welcomes_with_the_given_or_an_assigned_id() {
    let mut hub = hub();
    hello(&mut hub, 1, "ada", T0);
    hub.connect(2, T0);
    hub.receive(2, r#"{"type":"hello"}"#, T0).unwrap();
    hub.connect(3, T0);
    hub.receive(3, r#"{"type":"hello","token":"t"}"#, T0)
        .unwrap();
    let out = drain(&mut hub);
    assert_eq!(
        to(&out, 1),
        [ServerMessage::Welcome {
            client: "ada".into(),
            heartbeat_ms: 30_000
        }]
    );
    let assigned = |conn| match &to(&out, conn)[..] {
        [ServerMessage::Welcome { client, .. }] => client.clone(),
        other => panic!("{other:?}"),
    };
    let (two, three) = (assigned(2), assigned(3));
    assert_ne!(two, three);
    assert!(super::protocol::is_name(&two), "{two}");
    assert_eq!(hub.client(2), Some(two.as_str()));

    // Another seed (another server instance) assigns other ids.
    let mut other = Hub::new(HubConfig::default(), 8);
    other.receive(2, r#"{"type":"hello"}"#, T0).unwrap();
    let out = drain(&mut other);
    assert!(!matches!(&out[0].1, ServerMessage::Welcome { client, .. } if *client == two));
}

#[test]
fn join_lists_members_and_tells_the_others() {
    let mut hub = hub();
    hello(&mut hub, 1, "ada", T0);
    hello(&mut hub, 2, "bob", T0);
    hub.receive(
        1,
        r#"{"type":"join","id":1,"room":"app/chat","presence":{"s":"on"}}"#,
        T0,
    )
    .unwrap();
    drain(&mut hub);
    hub.receive(2, r#"{"type":"join","id":"j","room":"app/chat"}"#, T0)
        .unwrap();
    let out = drain(&mut hub);
    assert_eq!(
        to(&out, 1),
        [ServerMessage::Join {
            room: "app/chat".into(),
            client: "bob".into(),
            presence: Value::Null
        }]
    );
    let [
        ServerMessage::Joined {
            id,
            room,
            seq,
            members,
            recovered,
            ..
        },
    ] = &to(&out, 2)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (id, room.as_str(), *seq, *recovered),
        (&Id::Text("j".into()), "app/chat", 0, false)
    );
    assert_eq!(
        members,
        &[
            Member {
                client: "ada".into(),
                presence: json!({"s": "on"})
            },
            Member {
                client: "bob".into(),
                presence: Value::Null
            },
        ]
    );
    assert_eq!(hub.member_count("app/chat"), 2);
}

#[test]
fn publish_is_acked_then_delivered_to_every_member_in_seq_order() {
    let mut hub = two_members();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        publish(&mut hub, 1, id, "app/chat", &i.to_string(), T0);
    }
    let out = drain(&mut hub);
    assert_eq!(
        to(&out, 1),
        [
            ack("a", 1),
            message("app/chat", 1, "ada", json!(0)),
            ack("b", 2),
            message("app/chat", 2, "ada", json!(1)),
            ack("c", 3),
            message("app/chat", 3, "ada", json!(2)),
        ]
    );
    assert_eq!(
        to(&out, 2),
        [
            message("app/chat", 1, "ada", json!(0)),
            message("app/chat", 2, "ada", json!(1)),
            message("app/chat", 3, "ada", json!(2)),
        ]
    );
    // Each room counts on its own; a later joiner sees the current seq.
    join(&mut hub, 1, "app/other", T0);
    publish(&mut hub, 1, "d", "app/other", "null", T0);
    let refused = hub.receive(3, r#"{"type":"join","id":0,"room":"app/chat"}"#, T0);
    assert_eq!(refused.unwrap_err().code, ErrorCode::HelloRequired);
    let out = drain(&mut hub);
    assert!(to(&out, 1).contains(&ack("d", 1)));
    assert_eq!(error_code(&to(&out, 3)[0]).1, ErrorCode::HelloRequired);
    hello(&mut hub, 3, "cy", T0);
    join(&mut hub, 3, "app/chat", T0);
    let out = drain(&mut hub);
    assert!(matches!(
        to(&out, 3)[1],
        ServerMessage::Joined { seq: 3, .. }
    ));
}

#[test]
fn namespaces_never_cross() {
    let mut hub = hub();
    hello(&mut hub, 1, "ada", T0);
    hello(&mut hub, 2, "bob", T0);
    join(&mut hub, 1, "app/chat", T0);
    join(&mut hub, 2, "admin/chat", T0);
    publish(&mut hub, 1, "a", "app/chat", "1", T0);
    publish(&mut hub, 2, "b", "admin/chat", "2", T0);
    hub.receive(
        1,
        r#"{"type":"presence","room":"app/chat","presence":1}"#,
        T0,
    )
    .unwrap();
    hub.handle_timeout(ms(1000));
    let out = drain(&mut hub);
    for (conn, message) in &out {
        let room = match message {
            ServerMessage::Joined { room, .. } | ServerMessage::Message { room, .. } => room,
            ServerMessage::Join { room, .. } | ServerMessage::Presence { room, .. } => room,
            _ => continue,
        };
        let expected = if *conn == 1 { "app/chat" } else { "admin/chat" };
        assert_eq!(room, expected);
    }
    assert!(
        to(&out, 2)
            .iter()
            .all(|m| !matches!(m, ServerMessage::Join { .. }))
    );
    // Both rooms are at seq 1: they are different rooms.
    assert!(to(&out, 1).contains(&ack("a", 1)) && to(&out, 2).contains(&ack("b", 1)));
}

#[test]
fn restricted_connections_cannot_join_other_namespaces() {
    let mut hub = hub();
    hello(&mut hub, 1, "ada", T0);
    hub.restrict(1, &["app"]);
    drain(&mut hub);
    let refused = hub
        .receive(1, r#"{"type":"join","id":4,"room":"admin/x"}"#, T0)
        .unwrap_err();
    assert_eq!(
        (refused.id, refused.code),
        (Some(Id::Number(4)), ErrorCode::Unauthorized)
    );
    join(&mut hub, 1, "app/x", T0);
    let out = drain(&mut hub);
    assert_eq!(
        error_code(&out[0].1),
        (Some(Id::Number(4)), ErrorCode::Unauthorized)
    );
    assert!(matches!(out[1].1, ServerMessage::Joined { .. }));
    assert_eq!(hub.member_count("admin/x"), 0);
}

#[test]
fn presence_updates_are_coalesced_over_the_window() {
    let mut hub = two_members();
    for (t, value) in [(0, "a"), (10, "b"), (50, "c")] {
        let text = format!(r#"{{"type":"presence","room":"app/chat","presence":"{value}"}}"#);
        hub.receive(1, &text, ms(t)).unwrap();
    }
    assert!(drain(&mut hub).is_empty());
    assert_eq!(hub.poll_timeout(), Some(ms(100)));
    hub.handle_timeout(ms(99));
    assert!(drain(&mut hub).is_empty());
    hub.handle_timeout(ms(100));
    let out = drain(&mut hub);
    let expected = ServerMessage::Presence {
        room: "app/chat".into(),
        client: "ada".into(),
        presence: json!("c"),
    };
    assert_eq!(out, [(2, expected)]);
    assert_eq!(hub.poll_timeout(), None);

    // A new window opens with the next update; a joiner sees the latest value at once.
    hub.receive(
        1,
        r#"{"type":"presence","room":"app/chat","presence":"d"}"#,
        ms(200),
    )
    .unwrap();
    assert_eq!(hub.poll_timeout(), Some(ms(300)));
    hello(&mut hub, 3, "cy", ms(210));
    join(&mut hub, 3, "app/chat", ms(210));
    let out = drain(&mut hub);
    let ServerMessage::Joined { members, .. } = &to(&out, 3)[1] else {
        panic!("{out:?}")
    };
    assert_eq!(
        members[0],
        Member {
            client: "ada".into(),
            presence: json!("d")
        }
    );
}

#[test]
fn presence_with_a_zero_window_is_broadcast_at_once() {
    let mut hub = Hub::new(HubConfig::default().with_presence_window(Duration::ZERO), 1);
    hello(&mut hub, 1, "ada", T0);
    hello(&mut hub, 2, "bob", T0);
    join(&mut hub, 1, "app/chat", T0);
    join(&mut hub, 2, "app/chat", T0);
    drain(&mut hub);
    hub.receive(
        2,
        r#"{"type":"presence","room":"app/chat","presence":1}"#,
        T0,
    )
    .unwrap();
    let out = drain(&mut hub);
    assert_eq!(
        out,
        [(
            1,
            ServerMessage::Presence {
                room: "app/chat".into(),
                client: "bob".into(),
                presence: json!(1)
            }
        )]
    );
    assert_eq!(hub.poll_timeout(), None);
}

#[test]
fn leave_replies_left_and_tells_the_others() {
    let mut hub = two_members();
    hub.receive(2, r#"{"type":"leave","id":5,"room":"app/chat"}"#, T0)
        .unwrap();
    let out = drain(&mut hub);
    assert_eq!(
        to(&out, 1),
        [ServerMessage::Leave {
            room: "app/chat".into(),
            client: "bob".into()
        }]
    );
    assert_eq!(
        to(&out, 2),
        [ServerMessage::Left {
            id: Id::Number(5),
            room: "app/chat".into()
        }]
    );
    publish(&mut hub, 1, "x", "app/chat", "1", T0);
    assert!(to(&drain(&mut hub), 2).is_empty());
}

#[test]
fn abrupt_disconnect_sends_leave_to_the_others() {
    let mut hub = two_members();
    publish(&mut hub, 1, "x", "app/chat", "1", T0); // queued for both, never sent to 2
    hub.disconnect(2, T0);
    let out = drain(&mut hub);
    assert!(to(&out, 2).is_empty());
    assert_eq!(
        to(&out, 1).last(),
        Some(&ServerMessage::Leave {
            room: "app/chat".into(),
            client: "bob".into()
        })
    );
    assert_eq!(hub.member_count("app/chat"), 1);
    hub.disconnect(1, T0);
    assert!(drain(&mut hub).is_empty());
}

#[test]
fn a_batch_of_disconnects_drops_their_queued_deliveries_and_a_reused_id_gets_only_its_own() {
    let mut hub = hub();
    for conn in 1..=50 {
        hello(&mut hub, conn, &format!("c{conn}"), T0);
        join(&mut hub, conn, "app/chat", T0);
    }
    drain(&mut hub);
    publish(&mut hub, 50, "x", "app/chat", "1", T0); // queued for all 50
    for conn in 1..=40 {
        hub.disconnect(conn, T0); // each also queues a leave for the members left
    }
    // Id 7 comes back before anything was taken: only what is queued from now on is its own.
    hello(&mut hub, 7, "again", T0);
    let out = drain(&mut hub);
    for conn in (1..=40).filter(|c| *c != 7) {
        assert!(
            to(&out, conn).is_empty(),
            "conn {conn} got {:?}",
            to(&out, conn)
        );
    }
    assert!(
        to(&out, 7).iter().all(|m| !matches!(
            m,
            ServerMessage::Message { .. } | ServerMessage::Leave { .. }
        )),
        "{:?}",
        to(&out, 7)
    );
    assert!(!to(&out, 7).is_empty(), "the new connection's welcome");
    for conn in 41..=50 {
        let leaves = to(&out, conn)
            .iter()
            .filter(|m| matches!(m, ServerMessage::Leave { .. }))
            .count();
        assert_eq!(leaves, 40, "conn {conn}");
    }
    assert_eq!(hub.member_count("app/chat"), 10);
}

#[test]
fn a_retried_publish_is_acked_again_but_delivered_once_even_across_reconnect() {
    let mut hub = two_members();
    publish(&mut hub, 1, "p1", "app/chat", r#""hi""#, T0);
    publish(&mut hub, 1, "p1", "app/chat", r#""hi""#, T0); // retry on the same connection
    let out = drain(&mut hub);
    assert_eq!(
        to(&out, 1),
        [
            ack("p1", 1),
            message("app/chat", 1, "ada", json!("hi")),
            ack("p1", 1)
        ]
    );
    assert_eq!(to(&out, 2).len(), 1);

    hub.disconnect(1, ms(5));
    hello(&mut hub, 3, "ada", ms(10));
    join(&mut hub, 3, "app/chat", ms(10));
    drain(&mut hub);
    publish(&mut hub, 3, "p1", "app/chat", r#""hi""#, ms(10));
    let out = drain(&mut hub);
    assert_eq!(out, [(3, ack("p1", 1))]);
    publish(&mut hub, 3, "p2", "app/chat", r#""again""#, ms(10));
    let out = drain(&mut hub);
    assert_eq!(to(&out, 2), [message("app/chat", 2, "ada", json!("again"))]);
}

#[test]
fn publish_ids_are_forgotten_after_the_client_ttl() {
    let config = HubConfig::default().with_client_ttl(Duration::from_secs(60));
    let mut hub = Hub::new(config, 3);
    hello(&mut hub, 1, "ada", T0);
    join(&mut hub, 1, "app/chat", T0);
    publish(&mut hub, 1, "p1", "app/chat", "1", T0);
    hub.disconnect(1, T0);
    assert!(
        hub.poll_timeout()
            .is_some_and(|t| t <= Duration::from_secs(60))
    );
    hub.handle_timeout(Duration::from_secs(60));
    hello(&mut hub, 2, "ada", Duration::from_secs(61));
    join(&mut hub, 2, "app/chat", Duration::from_secs(61));
    drain(&mut hub);
    publish(&mut hub, 2, "p1", "app/chat", "1", Duration::from_secs(61));
    assert_eq!(
        to(&drain(&mut hub), 2),
        [ack("p1", 2), message("app/chat", 2, "ada", json!(1))]
    );
}

#[test]
fn a_second_connection_with_the_same_client_id_takes_over() {
    let mut hub = two_members();
    hello(&mut hub, 3, "bob", T0);
    let out = drain(&mut hub);
    assert_eq!(
        to(&out, 1),
        [ServerMessage::Leave {
            room: "app/chat".into(),
            client: "bob".into()
        }]
    );
    assert_eq!(hub.client(2), None);
    assert_eq!(hub.member_count("app/chat"), 1);
}

fn epoch_of(hub: &mut Hub<u32>, conn: u32, room: &str) -> String {
    hub.receive(
        conn,
        &format!(r#"{{"type":"join","id":"e","room":"{room}"}}"#),
        T0,
    )
    .unwrap();
    let out = drain(hub);
    match to(&out, conn).last() {
        Some(ServerMessage::Joined { epoch, .. }) => epoch.clone(),
        other => panic!("{other:?}"),
    }
}

fn join_since(hub: &mut Hub<u32>, conn: u32, epoch: &str, seq: u64) -> Vec<ServerMessage> {
    let text = format!(
        r#"{{"type":"join","id":9,"room":"app/chat","since":{{"epoch":"{epoch}","seq":{seq}}}}}"#
    );
    hub.receive(conn, &text, T0).unwrap();
    to(&drain(hub), conn)
}

#[test]
fn recovery_inside_history_replays_the_missed_messages_in_order() {
    let mut hub = hub();
    hello(&mut hub, 1, "ada", T0);
    let epoch = epoch_of(&mut hub, 1, "app/chat");
    for i in 1..=5 {
        publish(
            &mut hub,
            1,
            &format!("m{i}"),
            "app/chat",
            &i.to_string(),
            T0,
        );
    }
    hello(&mut hub, 2, "bob", T0);
    drain(&mut hub);
    let got = join_since(&mut hub, 2, &epoch, 2);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[..3],
        [
            message("app/chat", 3, "ada", json!(3)),
            message("app/chat", 4, "ada", json!(4)),
            message("app/chat", 5, "ada", json!(5)),
        ]
    );
    assert!(matches!(
        &got[3],
        ServerMessage::Joined {
            seq: 5,
            recovered: true,
            ..
        }
    ));
    // Up to date: nothing to replay, still recovered.
    hello(&mut hub, 3, "cy", T0);
    drain(&mut hub);
    let got = join_since(&mut hub, 3, &epoch, 5);
    assert!(
        matches!(
            &got[..],
            [ServerMessage::Joined {
                recovered: true,
                ..
            }]
        ),
        "{got:?}"
    );
}

#[test]
fn recovery_outside_history_says_recovered_false_and_replays_nothing() {
    let mut hub = Hub::new(HubConfig::default().with_history_size(3), 7);
    hello(&mut hub, 1, "ada", T0);
    let epoch = epoch_of(&mut hub, 1, "app/chat");
    for i in 1..=6 {
        publish(&mut hub, 1, &format!("m{i}"), "app/chat", "0", T0);
    }
    drain(&mut hub);
    for (n, (epoch, seq)) in [
        (2, (epoch.as_str(), 2)),
        (3, ("other", 5)),
        (4, (epoch.as_str(), 9)),
    ] {
        hello(&mut hub, n, &format!("c{n}"), T0);
        drain(&mut hub);
        let got = join_since(&mut hub, n, epoch, seq);
        assert!(
            matches!(
                &got[..],
                [ServerMessage::Joined {
                    recovered: false,
                    ..
                }]
            ),
            "{got:?}"
        );
    }
    // The oldest message still held is seq 4: since 3 is covered.
    hello(&mut hub, 5, "c5", T0);
    drain(&mut hub);
    let got = join_since(&mut hub, 5, &epoch, 3);
    assert_eq!(got.len(), 4);
    assert!(matches!(
        &got[3],
        ServerMessage::Joined {
            recovered: true,
            ..
        }
    ));
}

#[test]
fn epochs_differ_between_hub_instances() {
    let mut first = hub();
    let mut second = Hub::new(HubConfig::default(), 8);
    hello(&mut first, 1, "ada", T0);
    hello(&mut second, 1, "ada", T0);
    assert_ne!(
        epoch_of(&mut first, 1, "app/chat"),
        epoch_of(&mut second, 1, "app/chat")
    );
}

#[test]
fn history_expires_after_the_ttl() {
    let config = HubConfig::default().with_history_ttl(Duration::from_secs(10));
    let mut hub = Hub::new(config, 7);
    hello(&mut hub, 1, "ada", T0);
    let epoch = epoch_of(&mut hub, 1, "app/chat");
    publish(&mut hub, 1, "a", "app/chat", "1", T0);
    publish(&mut hub, 1, "b", "app/chat", "2", Duration::from_secs(4));
    hub.receive(
        1,
        r#"{"type":"leave","id":1,"room":"app/chat"}"#,
        Duration::from_secs(4),
    )
    .unwrap();
    assert_eq!(hub.poll_timeout(), Some(Duration::from_secs(10)));
    hub.handle_timeout(Duration::from_secs(10));
    assert_eq!(hub.poll_timeout(), Some(Duration::from_secs(14)));
    hello(&mut hub, 2, "bob", Duration::from_secs(10));
    drain(&mut hub);
    // Message 1 is gone, message 2 is still there.
    let got = join_since(&mut hub, 2, &epoch, 0);
    assert!(
        matches!(
            &got[..],
            [ServerMessage::Joined {
                recovered: false,
                ..
            }]
        ),
        "{got:?}"
    );
    let got = join_since(&mut hub, 2, &epoch, 1);
    assert_eq!(got[0], message("app/chat", 2, "ada", json!(2)));
    // With no members and no history left, the room is forgotten at once, and a room that had
    // messages comes back with a new epoch.
    hub.receive(
        2,
        r#"{"type":"leave","id":1,"room":"app/chat"}"#,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(hub.room_count(), 1);
    hub.handle_timeout(Duration::from_secs(14));
    assert_eq!(hub.room_count(), 0);
    assert_eq!(hub.poll_timeout(), None);
    drain(&mut hub);
    assert_ne!(epoch_of(&mut hub, 2, "app/chat"), epoch);
}

#[test]
fn an_unused_room_is_forgotten_at_once_and_comes_back_with_its_epoch() {
    let config = HubConfig::default().with_history_ttl(Duration::from_secs(10));
    let mut hub = Hub::new(config, 7);
    hello(&mut hub, 1, "ada", T0);
    let epoch = epoch_of(&mut hub, 1, "app/chat");
    // Everyone drops before anything was published: the room costs nothing from then on, and a
    // return (however late) resumes the same epoch since nothing was missed.
    hub.disconnect(1, ms(100));
    assert_eq!(hub.room_count(), 0);
    hello(&mut hub, 2, "ada", ms(50_000));
    drain(&mut hub);
    let got = join_since(&mut hub, 2, &epoch, 0);
    assert!(
        matches!(&got[..], [ServerMessage::Joined { recovered: true, epoch: e, .. }] if *e == epoch),
        "{got:?}"
    );
    // Once it had messages and they expired, it comes back with a new epoch.
    publish(&mut hub, 2, "m1", "app/chat", "1", ms(50_000));
    hub.disconnect(2, ms(50_000));
    assert_eq!(hub.room_count(), 1);
    hub.handle_timeout(ms(60_000));
    assert_eq!(hub.room_count(), 0);
    hello(&mut hub, 3, "ada", ms(60_000));
    assert_ne!(epoch_of(&mut hub, 3, "app/chat"), epoch);

    // A zero TTL keeps nothing.
    let mut hub = Hub::new(HubConfig::default().with_history_ttl(Duration::ZERO), 7);
    hello(&mut hub, 1, "ada", T0);
    join(&mut hub, 1, "app/chat", T0);
    hub.disconnect(1, T0);
    assert_eq!(hub.room_count(), 0);
}

#[test]
fn stats_count_members_publishes_fan_out_gaps_and_presence() {
    let mut hub = Hub::new(HubConfig::default().with_presence_window(Duration::ZERO), 7);
    assert_eq!(hub.stats(), super::hub::HubStats::default());
    hello(&mut hub, 1, "ada", T0);
    hello(&mut hub, 2, "bob", T0);
    hello(&mut hub, 3, "cy", T0);
    for conn in 1..=3 {
        join(&mut hub, conn, "app/chat", T0);
    }
    join(&mut hub, 1, "app/other", T0);
    publish(&mut hub, 1, "p1", "app/chat", "1", T0);
    publish(&mut hub, 1, "p1", "app/chat", "1", T0); // a retry: not counted again
    publish(&mut hub, 2, "p2", "app/chat", "2", T0);
    hub.receive(
        3,
        r#"{"type":"presence","room":"app/chat","presence":1}"#,
        T0,
    )
    .unwrap();
    hub.dropped(2, "app/chat", 1, 1);
    let epoch = epoch_of(&mut hub, 3, "app/chat"); // a rejoin: no new member
    hello(&mut hub, 4, "dee", T0);
    let text = format!(
        r#"{{"type":"join","id":1,"room":"app/chat","since":{{"epoch":"{epoch}","seq":0}}}}"#
    );
    hub.receive(4, &text, T0).unwrap();
    let stats = hub.stats();
    assert_eq!(
        stats,
        super::hub::HubStats {
            connections: 4,
            rooms: 2,
            members: 5,
            publishes: 2,
            deliveries: 6,
            replayed: 2,
            gaps: 1,
            presence_updates: 2,
        }
    );
    hub.disconnect(1, T0);
    assert_eq!(hub.stats().members, 3);
    assert_eq!(hub.stats().connections, 3);
}

#[test]
fn every_error_code_echoes_the_id_and_the_connection_stays_usable() {
    let mut hub = Hub::new(HubConfig::default().with_max_payload(8), 7);
    hub.connect(1, T0);
    let e = hub
        .receive(1, r#"{"type":"join","id":1,"room":"app/a"}"#, T0)
        .unwrap_err();
    assert_eq!(
        (e.id, e.code),
        (Some(Id::Number(1)), ErrorCode::HelloRequired)
    );
    assert_eq!(
        error_code(&drain(&mut hub)[0].1),
        (Some(Id::Number(1)), ErrorCode::HelloRequired)
    );
    hello(&mut hub, 1, "ada", T0);
    hub.restrict(1, &["app"]);
    join(&mut hub, 1, "app/a", T0);
    drain(&mut hub);
    let cases: Vec<(&str, Option<Id>, ErrorCode)> = vec![
        ("not json", None, ErrorCode::BadJson),
        ("42", None, ErrorCode::BadJson),
        (r#"{"id":2}"#, Some(Id::Number(2)), ErrorCode::BadMessage),
        (
            r#"{"type":"publish","id":"p","room":"app/a"}"#,
            Some(Id::Text("p".into())),
            ErrorCode::BadMessage,
        ),
        (
            r#"{"type":"hello","client":"ada"}"#,
            None,
            ErrorCode::BadMessage,
        ),
        (
            r#"{"type":"shout","id":3}"#,
            Some(Id::Number(3)),
            ErrorCode::UnknownType,
        ),
        (
            r#"{"type":"join","id":4,"room":"no-slash"}"#,
            Some(Id::Number(4)),
            ErrorCode::BadRoom,
        ),
        (
            r#"{"type":"leave","id":5,"room":"app/b"}"#,
            Some(Id::Number(5)),
            ErrorCode::NotJoined,
        ),
        (
            r#"{"type":"publish","id":6,"room":"app/b","data":1}"#,
            Some(Id::Number(6)),
            ErrorCode::NotJoined,
        ),
        (
            r#"{"type":"presence","room":"app/b","presence":1}"#,
            None,
            ErrorCode::NotJoined,
        ),
        (
            r#"{"type":"publish","id":7,"room":"app/a","data":"123456789"}"#,
            Some(Id::Number(7)),
            ErrorCode::TooLarge,
        ),
        (
            r#"{"type":"join","id":8,"room":"admin/a"}"#,
            Some(Id::Number(8)),
            ErrorCode::Unauthorized,
        ),
    ];
    for (text, id, code) in cases {
        let e = hub.receive(1, text, T0).unwrap_err();
        assert_eq!((&e.id, e.code), (&id, code), "{text}");
        let out = drain(&mut hub);
        assert_eq!(out.len(), 1, "{text}");
        assert_eq!(error_code(&out[0].1), (id, code), "{text}");
        let ServerMessage::Error { message, .. } = &out[0].1 else {
            unreachable!()
        };
        assert!(!message.is_empty());
        hub.receive(1, r#"{"type":"ping","id":"after"}"#, T0)
            .unwrap();
        assert_eq!(
            drain(&mut hub),
            [(
                1,
                ServerMessage::Pong {
                    id: Id::Text("after".into())
                }
            )]
        );
    }
    let wire = r#"{"type":"error","id":6,"code":"not_joined","message":"not joined to `app/b`"}"#;
    hub.receive(
        1,
        r#"{"type":"publish","id":6,"room":"app/b","data":1}"#,
        T0,
    )
    .unwrap_err();
    assert_eq!(&*hub.poll_text().unwrap().1, wire);
}

#[test]
fn payload_limit_counts_compact_json_bytes_and_refusal_takes_no_seq() {
    let mut hub = Hub::new(HubConfig::default().with_max_payload(10), 7);
    hello(&mut hub, 1, "ada", T0);
    join(&mut hub, 1, "app/a", T0);
    drain(&mut hub);
    publish(&mut hub, 1, "a", "app/a", r#""12345678""#, T0); // exactly 10 bytes
    let text = r#"{"type":"publish","id":"b","room":"app/a","data":"123456789"}"#;
    assert_eq!(
        hub.receive(1, text, T0).unwrap_err().code,
        ErrorCode::TooLarge
    );
    publish(&mut hub, 1, "c", "app/a", r#"[1, 2,  3]"#, T0); // 7 bytes once compact
    let acks: Vec<_> = drain(&mut hub)
        .into_iter()
        .filter(|(_, m)| matches!(m, ServerMessage::Ack { .. }))
        .collect();
    assert_eq!(acks, [(1, ack("a", 1)), (1, ack("c", 2))]);
}

#[test]
fn ping_gets_pong_and_dropped_messages_become_a_gap() {
    let mut hub = two_members();
    hub.receive(2, r#"{"type":"ping","id":11}"#, T0).unwrap();
    hub.dropped(2, "app/chat", 4, 9);
    hub.dropped(99, "app/chat", 1, 1); // unknown connection: nothing
    assert_eq!(
        drain(&mut hub),
        [
            (2, ServerMessage::Pong { id: Id::Number(11) }),
            (
                2,
                ServerMessage::Gap {
                    room: "app/chat".into(),
                    from_seq: 4,
                    to_seq: 9
                }
            ),
        ]
    );
}

/// Texts close to commands, so that the hub gets past the JSON parser often.
fn command_text() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("hello"),
        Just("join"),
        Just("leave"),
        Just("publish"),
        Just("presence"),
        Just("ping"),
        Just("send"),
        Just("pong"),
        Just(""),
    ];
    let room = prop_oneof![
        Just("app/a"),
        Just("app/b"),
        Just("admin/a"),
        Just("bad"),
        Just("a/b/c")
    ];
    let value = prop_oneof![
        Just("1"),
        Just("\"x\""),
        Just("null"),
        Just("{\"k\":[1]}"),
        Just("-1")
    ];
    (kind, room, value, any::<u8>()).prop_map(|(kind, room, value, mask)| {
        let mut fields = vec![format!(r#""type":"{kind}""#)];
        let optional = [
            format!(r#""id":{value}"#),
            format!(r#""room":"{room}""#),
            format!(r#""data":{value}"#),
            format!(r#""presence":{value}"#),
            format!(r#""client":{value}"#),
            r#""since":{"epoch":"e","seq":1}"#.to_string(),
            r#""to":"ada""#.to_string(),
        ];
        for (bit, field) in optional.into_iter().enumerate() {
            if mask & (1 << bit) != 0 {
                fields.push(field);
            }
        }
        format!("{{{}}}", fields.join(","))
    })
}

proptest! {
    #[test]
    fn any_text_yields_deliveries_or_an_error(
        texts in proptest::collection::vec(prop_oneof![any::<String>(), command_text()], 1..20)
    ) {
        let mut hub = hub();
        hello(&mut hub, 1, "ada", T0);
        join(&mut hub, 1, "app/a", T0);
        drain(&mut hub);
        for text in texts {
            let result = hub.receive(1, &text, T0);
            let out = drain(&mut hub);
            match result {
                Err(e) => {
                    prop_assert_eq!(out.len(), 1);
                    prop_assert_eq!(error_code(&out[0].1), (e.id, e.code));
                }
                Ok(()) => {
                    let presence = matches!(
                        decode(&text),
                        Ok(super::protocol::ClientMessage::Presence { .. })
                    );
                    prop_assert!(presence || !out.is_empty());
                }
            }
            hub.handle_timeout(Duration::from_secs(1));
            drain(&mut hub);
        }
    }

    #[test]
    fn any_interleaving_keeps_seq_gapless_and_deliveries_in_order(
        ops in proptest::collection::vec((0u32..4, 0u8..6, 0usize..2), 1..80)
    ) {
        let rooms = ["app/a", "app/b"];
        let mut hub = Hub::new(HubConfig::default().with_history_size(5), 1);
        for conn in 0..4 {
            hello(&mut hub, conn, &format!("c{conn}"), T0);
        }
        let mut next_id = 0;
        let mut published: Vec<Vec<u64>> = vec![Vec::new(); 2];
        let mut seen: Vec<Vec<Vec<u64>>> = vec![vec![Vec::new(); 2]; 4];
        for (step, (conn, op, room)) in ops.into_iter().enumerate() {
            let now = ms(step as u64 * 30);
            let name = rooms[room];
            match op {
                0 | 1 => {
                    next_id += 1;
                    let text = format!(r#"{{"type":"publish","id":{next_id},"room":"{name}","data":1}}"#);
                    let _ = hub.receive(conn, &text, now);
                }
                2 => { let _ = hub.receive(conn, &format!(r#"{{"type":"join","id":0,"room":"{name}"}}"#), now); }
                3 => { let _ = hub.receive(conn, &format!(r#"{{"type":"leave","id":0,"room":"{name}"}}"#), now); }
                4 => {
                    let text = format!(r#"{{"type":"presence","room":"{name}","presence":{step}}}"#);
                    let _ = hub.receive(conn, &text, now);
                }
                _ => {
                    hub.disconnect(conn, now);
                    hello(&mut hub, conn, &format!("c{conn}"), now);
                    seen[conn as usize] = vec![Vec::new(); 2];
                }
            }
            hub.handle_timeout(now);
            for (to, message) in drain(&mut hub) {
                match message {
                    ServerMessage::Ack { seq, .. } => prop_assert!(seq >= 1),
                    ServerMessage::Message { room, seq, .. } => {
                        let r = rooms.iter().position(|n| *n == room).unwrap();
                        // The first delivery of each message: seqs of a room are 1, 2, 3…
                        if published[r].last() != Some(&seq) {
                            prop_assert_eq!(seq, published[r].len() as u64 + 1, "room seq gapless");
                            published[r].push(seq);
                        }
                        let mine = &mut seen[to as usize][r];
                        prop_assert!(mine.last().is_none_or(|last| *last < seq), "member order");
                        mine.push(seq);
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn rooms_beyond_the_presence_limit_stop_broadcasting_presence() {
    let mut hub = Hub::new(
        HubConfig::default()
            .with_presence_window(Duration::ZERO)
            .with_presence_limit(2),
        7,
    );
    for (conn, client) in [(1, "a"), (2, "b"), (3, "c")] {
        hello(&mut hub, conn, client, T0);
        join(&mut hub, conn, "app/big", T0);
    }
    let out = drain(&mut hub);
    // b's arrival is announced to a; c's (the third member) to nobody.
    let joins: Vec<(u32, String)> = out
        .iter()
        .filter_map(|(to, m)| match m {
            ServerMessage::Join { client, .. } => Some((*to, client.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(joins, vec![(1, "b".to_string())]);
    let ServerMessage::Joined { members, .. } = &to(&out, 3)[1] else {
        panic!("{out:?}");
    };
    assert!(members.is_empty(), "{members:?}");
    let ServerMessage::Joined { members, .. } = &to(&out, 2)[1] else {
        panic!("{out:?}");
    };
    assert_eq!(members.len(), 2);
    // Presence and leaves in the large room go nowhere; messages still reach everyone.
    hub.receive(
        1,
        r#"{"type":"presence","room":"app/big","presence":1}"#,
        T0,
    )
    .unwrap();
    publish(&mut hub, 2, "p", "app/big", "1", T0);
    hub.receive(3, r#"{"type":"leave","id":9,"room":"app/big"}"#, T0)
        .unwrap();
    let out = drain(&mut hub);
    assert!(
        out.iter().all(|(_, m)| matches!(
            m,
            ServerMessage::Message { .. } | ServerMessage::Ack { .. } | ServerMessage::Left { .. }
        )),
        "{out:?}"
    );
    assert_eq!(
        out.iter()
            .filter(|(_, m)| matches!(m, ServerMessage::Message { .. }))
            .count(),
        3
    );
    // Back within the limit: presence flows again.
    hub.receive(2, r#"{"type":"leave","id":9,"room":"app/big"}"#, T0)
        .unwrap();
    let out = drain(&mut hub);
    assert!(
        to(&out, 1)
            .iter()
            .any(|m| matches!(m, ServerMessage::Leave { client, .. } if client == "b")),
        "{out:?}"
    );
}

fn close_reasons(hub: &mut Hub<u32>) -> Vec<u32> {
    let mut closes = Vec::new();
    while let Some((conn, _reason)) = hub.poll_close() {
        closes.push(conn);
    }
    closes
}

fn codes(out: &[(u32, ServerMessage)], conn: u32) -> Vec<(Option<Id>, ErrorCode)> {
    to(out, conn)
        .iter()
        .filter(|m| matches!(m, ServerMessage::Error { .. }))
        .map(error_code)
        .collect()
}

#[test]
fn a_taken_over_connection_is_closed_and_cannot_say_hello_as_someone_else() {
    let mut hub = hub();
    hello(&mut hub, 1, "mallory", T0);
    hello(&mut hub, 2, "bob", T0);
    join(&mut hub, 2, "app/chat", T0);
    // A second connection of mallory takes over the first, which the driver must close.
    hello(&mut hub, 3, "mallory", T0);
    assert_eq!(close_reasons(&mut hub), vec![1]);
    // Told why before the close, so that its client does not reconnect.
    assert_eq!(
        codes(&drain(&mut hub), 1),
        vec![(None, ErrorCode::TakenOver)]
    );
    // Until it is closed, the old connection can do nothing: no new identity, no command.
    for text in [
        r#"{"type":"hello","client":"bob"}"#,
        r#"{"type":"hello"}"#,
        r#"{"type":"join","id":4,"room":"app/chat"}"#,
    ] {
        assert_eq!(
            hub.receive(1, text, T0).unwrap_err().code,
            ErrorCode::TakenOver
        );
    }
    let out = drain(&mut hub);
    assert_eq!(
        codes(&out, 1),
        vec![
            (None, ErrorCode::TakenOver),
            (None, ErrorCode::TakenOver),
            (Some(Id::Number(4)), ErrorCode::TakenOver)
        ]
    );
    // bob was never touched: still a member, still bound to connection 2.
    assert!(to(&out, 2).is_empty(), "{out:?}");
    assert_eq!(hub.member_count("app/chat"), 1);
    assert_eq!(hub.client(2), Some("bob"));
    assert_eq!(hub.client(1), None);
    // The driver closes it; bob's connection is unaffected, mallory's new one works.
    hub.disconnect(1, T0);
    assert_eq!(hub.client(3), Some("mallory"));
    assert!(hub.poll_close().is_none());
}

#[test]
fn a_connection_keeps_its_first_client_id() {
    let mut hub = hub();
    hello(&mut hub, 1, "ada", T0);
    hello(&mut hub, 2, "bob", T0);
    join(&mut hub, 2, "app/chat", T0);
    drain(&mut hub);
    for text in [
        r#"{"type":"hello","client":"bob"}"#,
        r#"{"type":"hello","client":"ada"}"#,
        r#"{"type":"hello"}"#,
    ] {
        assert_eq!(
            hub.receive(1, text, T0).unwrap_err().code,
            ErrorCode::BadMessage
        );
    }
    assert_eq!(hub.client(1), Some("ada"));
    assert_eq!(hub.client(2), Some("bob"));
    assert_eq!(hub.member_count("app/chat"), 1);
    assert!(close_reasons(&mut hub).is_empty());
    // Nor can a verified identity replace the first one.
    assert!(hub.authenticate(1, "bob".into(), None, T0).is_err());
    assert_eq!(hub.client(2), Some("bob"));
}

#[test]
fn with_external_identity_only_authenticate_sets_a_client_id() {
    let config = HubConfig::default().with_external_identity(true);
    let mut hub = Hub::new(config, 7);
    hub.connect(1, T0);
    let e = hub
        .receive(1, r#"{"type":"hello","client":"bob"}"#, T0)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert_eq!(hub.client(1), None);
    let e = hub
        .receive(1, r#"{"type":"ping","id":"p"}"#, T0)
        .unwrap_err();
    assert_eq!(
        (e.id, e.code),
        (Some(Id::Text("p".into())), ErrorCode::HelloRequired)
    );
    hub.authenticate(1, "dana".into(), Some(vec!["app".into()]), T0)
        .unwrap();
    assert_eq!(hub.client(1), Some("dana"));
    let e = hub
        .receive(1, r#"{"type":"join","id":1,"room":"admin/x"}"#, T0)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    // A taken-over connection cannot be given a new identity either.
    hub.connect(2, T0);
    hub.authenticate(2, "dana".into(), None, T0).unwrap();
    assert_eq!(close_reasons(&mut hub), vec![1]);
    let e = hub.authenticate(1, "eve".into(), None, T0).unwrap_err();
    assert_eq!(e.code, ErrorCode::TakenOver);
    assert_eq!(hub.client(1), None);
}

#[test]
fn commands_before_hello_keep_their_id() {
    let mut hub = hub();
    hub.connect(1, T0);
    for (text, id) in [
        (
            r#"{"type":"join","id":1,"room":"app/a"}"#,
            Some(Id::Number(1)),
        ),
        (
            r#"{"type":"publish","id":"p","room":"app/a","data":1}"#,
            Some(Id::Text("p".into())),
        ),
        (r#"{"type":"ping","id":3}"#, Some(Id::Number(3))),
        (
            r#"{"type":"leave","id":4,"room":"app/a"}"#,
            Some(Id::Number(4)),
        ),
        (r#"{"type":"presence","room":"app/a","presence":1}"#, None),
    ] {
        let e = hub.receive(1, text, T0).unwrap_err();
        assert_eq!((e.id, e.code), (id, ErrorCode::HelloRequired), "{text}");
    }
}

#[test]
fn rooms_are_capped_per_connection_and_in_total_and_empty_rooms_cost_nothing() {
    let config = HubConfig::default()
        .with_max_rooms_per_connection(3)
        .with_max_rooms(5);
    let mut hub = Hub::new(config, 7);
    hello(&mut hub, 1, "ada", T0);
    hello(&mut hub, 2, "bob", T0);
    for room in ["app/1", "app/2", "app/3"] {
        join(&mut hub, 1, room, T0);
    }
    let e = hub
        .receive(1, r#"{"type":"join","id":7,"room":"app/4"}"#, T0)
        .unwrap_err();
    assert_eq!(
        (e.id, e.code),
        (Some(Id::Number(7)), ErrorCode::TooManyRooms)
    );
    // Joining a room again is not a new room.
    join(&mut hub, 1, "app/1", T0);
    // The total cap: bob fills the hub up to 5 rooms; a sixth is refused to anyone.
    join(&mut hub, 2, "app/4", T0);
    join(&mut hub, 2, "app/5", T0);
    assert_eq!(hub.room_count(), 5);
    let e = hub
        .receive(2, r#"{"type":"join","id":8,"room":"app/6"}"#, T0)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TooManyRooms);
    // Existing rooms can still be joined.
    join(&mut hub, 2, "app/1", T0);
    // Leaving frees rooms without history at once, so churn never accumulates.
    for round in 0..100u32 {
        let conn = 10 + round;
        hello(&mut hub, conn, &format!("c{round}"), T0);
        hub.disconnect(1, T0);
        hub.disconnect(2, T0);
        for n in 0..3 {
            join(&mut hub, conn, &format!("x/{round}-{n}"), T0);
        }
        hub.disconnect(conn, T0);
        assert_eq!(hub.room_count(), 0);
    }
    assert_eq!(hub.stats().members, 0);
}

#[test]
fn presence_is_capped_and_the_member_list_is_cut_with_a_flag() {
    let config = HubConfig::default()
        .with_presence_window(Duration::ZERO)
        .with_max_presence(100)
        .with_max_member_list(1000);
    let mut hub = Hub::new(config, 7);
    hello(&mut hub, 1, "ada", T0);
    let big = "x".repeat(99);
    let e = hub
        .receive(
            1,
            &format!(r#"{{"type":"join","id":1,"room":"app/p","presence":"{big}"}}"#),
            T0,
        )
        .unwrap_err();
    assert_eq!((e.id, e.code), (Some(Id::Number(1)), ErrorCode::TooLarge));
    assert_eq!(hub.room_count(), 0);
    join(&mut hub, 1, "app/p", T0);
    let e = hub
        .receive(
            1,
            &format!(r#"{{"type":"presence","room":"app/p","presence":"{big}"}}"#),
            T0,
        )
        .unwrap_err();
    assert_eq!((e.id, e.code), (None, ErrorCode::TooLarge));
    // Presences of 98 bytes: about 8 fit in 1000 bytes of member list.
    let fits = "y".repeat(96);
    for conn in 2..=30u32 {
        hello(&mut hub, conn, &format!("m{conn}"), T0);
        hub.receive(
            conn,
            &format!(r#"{{"type":"join","id":1,"room":"app/p","presence":"{fits}"}}"#),
            T0,
        )
        .unwrap();
    }
    let out = drain(&mut hub);
    let Some(ServerMessage::Joined {
        members,
        members_truncated,
        ..
    }) = to(&out, 30).last().cloned()
    else {
        panic!("{out:?}");
    };
    assert!(members_truncated);
    assert!(members.iter().any(|m| m.client == "m30"), "{members:?}");
    let listed: usize = members
        .iter()
        .map(|m| m.client.len() + serde_json::to_string(&m.presence).unwrap().len() + 26)
        .sum();
    assert!(listed <= 1000 + 130, "{listed}");
    assert!(members.len() < 29 && members.len() > 5, "{}", members.len());
    // A small room lists everyone, without the flag on the wire.
    hello(&mut hub, 40, "solo", T0);
    hub.receive(40, r#"{"type":"join","id":1,"room":"app/solo"}"#, T0)
        .unwrap();
    let (_, text) = hub.poll_text().unwrap();
    assert!(!text.contains("members_truncated"), "{text}");
}

#[test]
fn oversized_deep_or_bushy_commands_are_refused_before_parsing() {
    let config = HubConfig::default()
        .with_max_payload(1000)
        .with_max_presence(100);
    let limits = config.decode_limits();
    assert_eq!(limits.max_len, 1000 + super::protocol::COMMAND_OVERHEAD);
    assert_eq!(
        HubConfig::default().decode_limits(),
        super::protocol::DecodeLimits::default()
    );
    let mut hub = Hub::new(config, 7);
    hello(&mut hub, 1, "ada", T0);
    join(&mut hub, 1, "app/a", T0);
    drain(&mut hub);
    let long = format!(
        r#"{{"type":"publish","id":1,"room":"app/a","data":"{}"}}"#,
        "z".repeat(limits.max_len)
    );
    let deep = format!(
        r#"{{"type":"publish","id":2,"room":"app/a","data":{}{}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    let bushy = format!(
        r#"{{"type":"publish","id":3,"room":"app/a","data":[{}0]}}"#,
        "[],".repeat(limits.max_nodes)
    );
    for text in [&long, &deep, &bushy] {
        let e = hub.receive(1, text, T0).unwrap_err();
        assert_eq!((e.id, e.code), (None, ErrorCode::TooLarge), "{}", e.message);
    }
    // Strings full of brackets are not structure.
    let quoted = format!(
        r#"{{"type":"publish","id":4,"room":"app/a","data":"{}\"\\"}}"#,
        "[{".repeat(400)
    );
    hub.receive(1, &quoted, T0).unwrap();
    // Still usable; within the limits a command of just under 64 levels goes through.
    let nested = format!(
        r#"{{"type":"publish","id":5,"room":"app/a","data":{}1{}}}"#,
        "[".repeat(60),
        "]".repeat(60)
    );
    hub.receive(1, &nested, T0).unwrap();
}

#[derive(Debug, Clone)]
enum Abuse {
    Hello {
        conn: u32,
        client: u8,
    },
    Join {
        conn: u32,
        room: u8,
        presence: usize,
    },
    Leave {
        conn: u32,
        room: u8,
    },
    Publish {
        conn: u32,
        room: u8,
        len: usize,
    },
    Presence {
        conn: u32,
        room: u8,
        len: usize,
    },
    Raw {
        conn: u32,
        depth: usize,
        width: usize,
    },
    Disconnect {
        conn: u32,
    },
    Advance {
        ms: u64,
    },
}

fn abuse() -> impl Strategy<Value = Abuse> {
    let conn = 1u32..4;
    prop_oneof![
        (conn.clone(), 0u8..4).prop_map(|(conn, client)| Abuse::Hello { conn, client }),
        (conn.clone(), 0u8..40, 0usize..200).prop_map(|(conn, room, presence)| Abuse::Join {
            conn,
            room,
            presence
        }),
        (conn.clone(), 0u8..40).prop_map(|(conn, room)| Abuse::Leave { conn, room }),
        (conn.clone(), 0u8..40, 0usize..300).prop_map(|(conn, room, len)| Abuse::Publish {
            conn,
            room,
            len
        }),
        (conn.clone(), 0u8..40, 0usize..200).prop_map(|(conn, room, len)| Abuse::Presence {
            conn,
            room,
            len
        }),
        (conn.clone(), 0usize..100, 0usize..300).prop_map(|(conn, depth, width)| Abuse::Raw {
            conn,
            depth,
            width
        }),
        conn.prop_map(|conn| Abuse::Disconnect { conn }),
        (0u64..200_000).prop_map(|ms| Abuse::Advance { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever commands clients send, what the hub holds per connection and in all stays under
    /// the configured caps, every reply is bounded, and nothing is kept once everyone is gone.
    #[test]
    fn hub_memory_per_connection_stays_bounded_whatever_clients_send(
        ops in proptest::collection::vec(abuse(), 1..300)
    ) {
        const ROOMS_PER_CONN: usize = 4;
        const ROOMS: usize = 12;
        const PRESENCE: usize = 64;
        const MEMBER_LIST: usize = 256;
        const PAYLOAD: usize = 128;
        let config = HubConfig::default()
            .with_max_rooms_per_connection(ROOMS_PER_CONN)
            .with_max_rooms(ROOMS)
            .with_max_presence(PRESENCE)
            .with_max_member_list(MEMBER_LIST)
            .with_max_payload(PAYLOAD)
            .with_history_size(3)
            .with_history_ttl(Duration::from_secs(60));
        let mut hub: Hub<u32> = Hub::new(config, 11);
        let mut now = T0;
        // The longest any delivery may be: a message, or a member list plus the joiner.
        let max_delivery = PAYLOAD.max(MEMBER_LIST + PRESENCE + 160) + 512;
        for op in ops {
            let (conn, text) = match op {
                Abuse::Hello { conn, client } => {
                    (conn, format!(r#"{{"type":"hello","client":"c{client}"}}"#))
                }
                Abuse::Join { conn, room, presence } => (
                    conn,
                    format!(
                        r#"{{"type":"join","id":1,"room":"r/{room}","presence":"{}"}}"#,
                        "p".repeat(presence)
                    ),
                ),
                Abuse::Leave { conn, room } => {
                    (conn, format!(r#"{{"type":"leave","id":2,"room":"r/{room}"}}"#))
                }
                Abuse::Publish { conn, room, len } => (
                    conn,
                    format!(
                        r#"{{"type":"publish","id":"{len}-{room}","room":"r/{room}","data":"{}"}}"#,
                        "d".repeat(len)
                    ),
                ),
                Abuse::Presence { conn, room, len } => (
                    conn,
                    format!(
                        r#"{{"type":"presence","room":"r/{room}","presence":"{}"}}"#,
                        "q".repeat(len)
                    ),
                ),
                Abuse::Raw { conn, depth, width } => (
                    conn,
                    format!(
                        r#"{{"type":"publish","id":3,"room":"r/0","data":{}{}{}}}"#,
                        "[".repeat(depth),
                        "[],".repeat(width) + "0",
                        "]".repeat(depth)
                    ),
                ),
                Abuse::Disconnect { conn } => {
                    hub.disconnect(conn, now);
                    continue;
                }
                Abuse::Advance { ms } => {
                    now += Duration::from_millis(ms);
                    hub.handle_timeout(now);
                    continue;
                }
            };
            let _ = hub.receive(conn, &text, now);
            while hub.poll_close().is_some() {}
            while let Some((_, text)) = hub.poll_text() {
                prop_assert!(text.len() <= max_delivery, "{} bytes: {}", text.len(), &text[..200]);
            }
            prop_assert!(hub.room_count() <= ROOMS);
            let mut members = 0;
            for c in 1..4 {
                if let Some(usage) = hub.connection_usage(c) {
                    prop_assert!(usage.rooms <= ROOMS_PER_CONN, "{usage:?}");
                    prop_assert!(usage.presence_bytes <= ROOMS_PER_CONN * PRESENCE, "{usage:?}");
                    members += usage.rooms;
                }
            }
            prop_assert_eq!(hub.stats().members, members);
        }
        for c in 1..4 {
            hub.disconnect(c, now);
        }
        hub.handle_timeout(now + Duration::from_secs(61));
        prop_assert_eq!(hub.room_count(), 0);
        prop_assert_eq!(hub.stats().members, 0);
    }
}

// --- with an external broker (several nodes): the hub asks, the broker answers -------------

mod external_broker {
    use super::*;
    use crate::channel::broker::{
        BrokerError, BrokerEvent, BrokerMessage, BrokerRequest, MemberChange, MemberCount,
        RoomState, Sequenced,
    };
    use crate::channel::protocol::Since;

    fn broker_hub() -> Hub<u32> {
        Hub::new(HubConfig::default().with_external_broker(true), 7)
    }

    /// The requests for the broker but the presence and client-id ones.
    fn requests(hub: &mut Hub<u32>) -> Vec<BrokerRequest> {
        core::iter::from_fn(|| hub.poll_broker())
            .filter(|r| {
                !matches!(
                    r,
                    BrokerRequest::MemberJoined { .. }
                        | BrokerRequest::MemberLeft { .. }
                        | BrokerRequest::MemberPresence { .. }
                        | BrokerRequest::Claim { .. }
                        | BrokerRequest::Release { .. }
                )
            })
            .collect()
    }

    fn join_token(hub: &mut Hub<u32>) -> (u64, Option<Since>) {
        match requests(hub).as_slice() {
            [BrokerRequest::Join { token, since, .. }] => (*token, since.clone()),
            other => panic!("expected one join request, got {other:?}"),
        }
    }

    fn answer_join(hub: &mut Hub<u32>, token: u64, epoch: &str, seq: u64, history: &[u64]) {
        let history = history
            .iter()
            .map(|&seq| BrokerMessage {
                seq,
                from: "bob".into(),
                data: format!("{seq}"),
            })
            .collect();
        let state = RoomState {
            epoch: epoch.into(),
            seq,
            history,
            members: Vec::new(),
            member_count: Default::default(),
        };
        hub.handle_broker(
            BrokerEvent::Joined {
                token,
                result: Ok(state),
            },
            T0,
        );
    }

    fn live(hub: &mut Hub<u32>, epoch: &str, seq: u64) {
        let event = BrokerEvent::Message {
            room: "app/chat".into(),
            epoch: epoch.into(),
            message: BrokerMessage {
                seq,
                from: "bob".into(),
                data: format!("{seq}"),
            },
        };
        hub.handle_broker(event, T0);
    }

    fn seqs(messages: &[ServerMessage]) -> Vec<u64> {
        messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Message { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn publishes_are_sequenced_by_the_broker_and_delivered_from_its_fan_out() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        drain(&mut hub);
        join(&mut hub, 1, "app/chat", T0);
        assert!(
            drain(&mut hub).is_empty(),
            "nothing before the broker answers"
        );
        let (token, since) = join_token(&mut hub);
        assert_eq!(since, None);
        answer_join(&mut hub, token, "e1", 5, &[]);
        let out = drain(&mut hub);
        assert!(
            matches!(&out[..], [(1, ServerMessage::Joined { epoch, seq: 5, .. })] if epoch == "e1")
        );

        publish(&mut hub, 1, "p1", "app/chat", r#""hi""#, T0);
        assert!(
            drain(&mut hub).is_empty(),
            "no ack before the broker's answer"
        );
        let token = match requests(&mut hub).as_slice() {
            [
                BrokerRequest::Publish {
                    token,
                    client,
                    id,
                    data,
                    ..
                },
            ] => {
                assert_eq!((client.as_str(), data.as_str()), ("ada", r#""hi""#));
                assert_eq!(*id, Id::Text("p1".into()));
                *token
            }
            other => panic!("expected a publish request, got {other:?}"),
        };
        let sequenced = Sequenced {
            seq: 6,
            epoch: "e1".into(),
            duplicate: false,
        };
        hub.handle_broker(
            BrokerEvent::Published {
                token,
                result: Ok(sequenced),
            },
            T0,
        );
        assert_eq!(to(&drain(&mut hub), 1), vec![ack("p1", 6)]);
        // The message itself comes from the broker's fan-out, like other nodes' messages.
        live(&mut hub, "e1", 6);
        assert_eq!(
            to(&drain(&mut hub), 1),
            vec![message("app/chat", 6, "bob", json!(6))]
        );
        assert_eq!(hub.stats().publishes, 1);
    }

    #[test]
    fn commands_sent_behind_a_join_wait_for_its_answer_and_keep_their_order() {
        // A reconnecting client sends `join` and its queued publishes at once: they must be
        // applied as a member, not refused `not_joined` because the broker has not answered yet.
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        drain(&mut hub);
        join(&mut hub, 1, "app/chat", T0);
        publish(&mut hub, 1, "p1", "app/chat", "1", T0);
        hub.receive(1, r#"{"type":"ping","id":9}"#, T0).unwrap();
        publish(&mut hub, 1, "p2", "app/chat", "2", T0);
        assert!(
            drain(&mut hub).is_empty(),
            "nothing before the join's answer"
        );
        let (token, _) = join_token(&mut hub);
        answer_join(&mut hub, token, "e1", 3, &[]);
        let out = to(&drain(&mut hub), 1);
        assert!(
            matches!(
                &out[..],
                [
                    ServerMessage::Joined { seq: 3, .. },
                    ServerMessage::Pong { .. }
                ]
            ),
            "joined, then the ping's pong in order: {out:?}"
        );
        let ids: Vec<Id> = requests(&mut hub)
            .into_iter()
            .map(|r| match r {
                BrokerRequest::Publish { id, .. } => id,
                other => panic!("expected publishes only, got {other:?}"),
            })
            .collect();
        assert_eq!(ids, vec![Id::Text("p1".into()), Id::Text("p2".into())]);

        // A refused join lets what followed it through, to be answered as on one node.
        join(&mut hub, 1, "app/other", T0);
        publish(&mut hub, 1, "p3", "app/other", "3", T0);
        let (token, _) = join_token(&mut hub);
        let result = Err(BrokerError("down".into()));
        hub.handle_broker(BrokerEvent::Joined { token, result }, T0);
        let out = to(&drain(&mut hub), 1);
        let codes: Vec<_> = out.iter().map(error_code).collect();
        assert_eq!(
            codes,
            vec![
                (Some(Id::Number(0)), ErrorCode::Unavailable),
                (Some(Id::Text("p3".into())), ErrorCode::NotJoined),
            ]
        );
    }

    #[test]
    fn commands_waiting_for_a_join_are_bounded() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        join(&mut hub, 1, "app/chat", T0);
        drain(&mut hub);
        for i in 0..1024 {
            publish(&mut hub, 1, &format!("p{i}"), "app/chat", "1", T0);
        }
        let text = r#"{"type":"publish","id":"over","room":"app/chat","data":1}"#;
        let error = hub.receive(1, text, T0).unwrap_err();
        let out = to(&drain(&mut hub), 1);
        assert_eq!(
            error_code(&out[0]),
            (Some(Id::Text("over".into())), ErrorCode::Unavailable),
            "{error:?}"
        );
        // A connection that goes away takes its waiting commands with it.
        hub.disconnect(1, T0);
        let (token, _) = join_token(&mut hub);
        answer_join(&mut hub, token, "e1", 0, &[]);
        assert!(drain(&mut hub).is_empty());
        let publishes = requests(&mut hub)
            .into_iter()
            .filter(|r| matches!(r, BrokerRequest::Publish { .. }))
            .count();
        assert_eq!(publishes, 0);
    }

    #[test]
    fn a_broker_failure_answers_unavailable_and_acks_nothing() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        join(&mut hub, 1, "app/chat", T0);
        let (token, _) = join_token(&mut hub);
        answer_join(&mut hub, token, "e1", 0, &[]);
        drain(&mut hub);
        publish(&mut hub, 1, "p1", "app/chat", "1", T0);
        let [BrokerRequest::Publish { token, .. }] = requests(&mut hub)[..] else {
            panic!("no publish request");
        };
        let result = Err(BrokerError("down".into()));
        hub.handle_broker(BrokerEvent::Published { token, result }, T0);
        let out = to(&drain(&mut hub), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(
            error_code(&out[0]),
            (Some(Id::Text("p1".into())), ErrorCode::Unavailable)
        );
        // A join the broker could not serve is refused the same way, and holds nothing.
        join(&mut hub, 1, "app/other", T0);
        let (token, _) = join_token(&mut hub);
        let result = Err(BrokerError("down".into()));
        hub.handle_broker(BrokerEvent::Joined { token, result }, T0);
        let out = to(&drain(&mut hub), 1);
        assert_eq!(error_code(&out[0]).1, ErrorCode::Unavailable);
        assert_eq!(
            requests(&mut hub),
            vec![BrokerRequest::Unsubscribe {
                room: "app/other".into()
            }]
        );
        assert_eq!(hub.member_count("app/other"), 0);
    }

    #[test]
    fn a_join_with_since_merges_history_and_live_messages_without_loss_or_repeat() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        drain(&mut hub);
        hub.receive(
            1,
            r#"{"type":"join","id":1,"room":"app/chat","since":{"epoch":"e1","seq":3}}"#,
            T0,
        )
        .unwrap();
        let (token, since) = join_token(&mut hub);
        assert_eq!(since.map(|s| s.seq), Some(3));
        // Published after the broker's read but fanned out before its answer reached the hub.
        live(&mut hub, "e1", 6);
        answer_join(&mut hub, token, "e1", 5, &[4, 5]);
        let out = to(&drain(&mut hub), 1);
        assert_eq!(seqs(&out), vec![4, 5, 6]);
        assert!(matches!(
            out.last(),
            Some(ServerMessage::Joined {
                seq: 6,
                recovered: true,
                ..
            })
        ));
        // A late copy of something read is dropped; a hole is reported before what follows.
        live(&mut hub, "e1", 5);
        live(&mut hub, "e1", 6);
        assert!(drain(&mut hub).is_empty());
        live(&mut hub, "e1", 8);
        assert_eq!(
            to(&drain(&mut hub), 1),
            vec![
                ServerMessage::Gap {
                    room: "app/chat".into(),
                    from_seq: 7,
                    to_seq: 7
                },
                message("app/chat", 8, "bob", json!(8)),
            ]
        );
    }

    #[test]
    fn a_new_member_is_not_sent_what_it_read_while_older_members_still_get_it() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        hello(&mut hub, 2, "cy", T0);
        join(&mut hub, 1, "app/chat", T0);
        let (token, _) = join_token(&mut hub);
        answer_join(&mut hub, token, "e1", 2, &[]);
        join(&mut hub, 2, "app/chat", T0);
        let (token, _) = join_token(&mut hub);
        // The second join read seq 4 before the fan-out of 3 and 4 reached this node.
        answer_join(&mut hub, token, "e1", 4, &[]);
        drain(&mut hub);
        live(&mut hub, "e1", 3);
        live(&mut hub, "e1", 4);
        live(&mut hub, "e1", 5);
        let out = drain(&mut hub);
        assert_eq!(seqs(&to(&out, 1)), vec![3, 4, 5]);
        assert_eq!(seqs(&to(&out, 2)), vec![5]);
    }

    #[test]
    fn messages_the_broker_dropped_are_reported_as_a_gap_once_and_in_order() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        join(&mut hub, 1, "app/chat", T0);
        let (token, _) = join_token(&mut hub);
        answer_join(&mut hub, token, "e1", 2, &[]);
        drain(&mut hub);
        live(&mut hub, "e1", 3);
        // 4 and 5 were dropped by the broker's full queue; unknown rooms are not asked about.
        hub.handle_broker(
            BrokerEvent::Missed {
                room: "app/other".into(),
            },
            T0,
        );
        hub.handle_broker(
            BrokerEvent::Missed {
                room: "app/chat".into(),
            },
            T0,
        );
        assert_eq!(
            requests(&mut hub),
            vec![BrokerRequest::Position {
                room: "app/chat".into()
            }]
        );
        let position = BrokerEvent::Position {
            room: "app/chat".into(),
            epoch: "e1".into(),
            seq: 5,
        };
        hub.handle_broker(position, T0);
        live(&mut hub, "e1", 5); // queued before the answer: not delivered twice
        live(&mut hub, "e1", 6);
        let out = to(&drain(&mut hub), 1);
        let gap = ServerMessage::Gap {
            room: "app/chat".into(),
            from_seq: 4,
            to_seq: 5,
        };
        assert_eq!(seqs(&out), vec![3, 6]);
        assert_eq!(out.iter().filter(|m| **m == gap).count(), 1, "{out:?}");
        // A dropped message shows by its seq too: 7 missing when 8 arrives.
        live(&mut hub, "e1", 8);
        let out = to(&drain(&mut hub), 1);
        let gap = ServerMessage::Gap {
            room: "app/chat".into(),
            from_seq: 7,
            to_seq: 7,
        };
        assert_eq!(out[0], gap);
        assert_eq!(seqs(&out), vec![8]);
    }

    #[test]
    fn the_last_member_leaving_unsubscribes_and_a_resubscribe_checks_positions() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        join(&mut hub, 1, "app/chat", T0);
        let (token, _) = join_token(&mut hub);
        answer_join(&mut hub, token, "e1", 2, &[]);
        drain(&mut hub);
        hub.handle_broker(BrokerEvent::Resubscribed, T0);
        assert_eq!(
            requests(&mut hub),
            vec![BrokerRequest::Position {
                room: "app/chat".into()
            }]
        );
        // Two messages were published while the fan-out was cut.
        let position = BrokerEvent::Position {
            room: "app/chat".into(),
            epoch: "e1".into(),
            seq: 4,
        };
        hub.handle_broker(position, T0);
        let gap = ServerMessage::Gap {
            room: "app/chat".into(),
            from_seq: 3,
            to_seq: 4,
        };
        assert_eq!(to(&drain(&mut hub), 1), vec![gap]);
        hub.disconnect(1, T0);
        assert_eq!(
            requests(&mut hub),
            vec![BrokerRequest::Unsubscribe {
                room: "app/chat".into()
            }]
        );
        assert_eq!(hub.room_count(), 0);
    }

    #[test]
    fn members_on_other_nodes_are_listed_and_their_events_delivered() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        drain(&mut hub);
        hub.receive(
            1,
            r#"{"type":"join","id":1,"room":"app/chat","presence":{"n":1}}"#,
            T0,
        )
        .unwrap();
        // The new member is recorded by the join's own round trip.
        let token = match &core::iter::from_fn(|| hub.poll_broker()).collect::<Vec<_>>()[..] {
            [
                BrokerRequest::Claim { .. },
                BrokerRequest::Join {
                    token,
                    member: Some(member),
                    ..
                },
            ] => {
                assert_eq!(member, &("ada".to_string(), r#"{"n":1}"#.to_string()));
                *token
            }
            other => panic!("expected one join carrying its member, got {other:?}"),
        };
        let state = RoomState {
            epoch: "e1".into(),
            seq: 0,
            history: Vec::new(),
            members: vec![("bob".into(), r#"{"n":2}"#.into())],
            member_count: Default::default(),
        };
        let result = Ok(state);
        hub.handle_broker(BrokerEvent::Joined { token, result }, T0);
        match &to(&drain(&mut hub), 1)[..] {
            [ServerMessage::Joined { members, .. }] => {
                let clients: Vec<&str> = members.iter().map(|m| m.client.as_str()).collect();
                assert_eq!(clients, vec!["ada", "bob"]);
                assert_eq!(members[1].presence, json!({"n": 2}));
            }
            other => panic!("expected joined, got {other:?}"),
        }
        assert_eq!(hub.poll_broker(), None, "no second round trip for the join");
        let change = MemberChange::Left {
            client: "bob".into(),
        };
        let room = "app/chat".into();
        hub.handle_broker(BrokerEvent::Member { room, change }, T0);
        let leave = ServerMessage::Leave {
            room: "app/chat".into(),
            client: "bob".into(),
        };
        assert_eq!(to(&drain(&mut hub), 1), vec![leave]);
        hub.disconnect(1, T0);
        assert_eq!(
            core::iter::from_fn(|| hub.poll_broker()).collect::<Vec<_>>(),
            vec![
                BrokerRequest::MemberLeft {
                    room: "app/chat".into(),
                    client: "ada".into()
                },
                BrokerRequest::Unsubscribe {
                    room: "app/chat".into()
                },
                BrokerRequest::Release {
                    client: "ada".into()
                }
            ]
        );
    }

    /// Joins `conn` (said `hello` already) to `app/chat` and answers the join with the broker's
    /// count of the room's members on every node (the joining one included).
    fn join_counted(hub: &mut Hub<u32>, conn: u32, members: u64, version: u64) {
        join(hub, conn, "app/chat", T0);
        let token = core::iter::from_fn(|| hub.poll_broker())
            .find_map(|r| match r {
                BrokerRequest::Join { token, .. } => Some(token),
                _ => None,
            })
            .unwrap();
        let state = RoomState {
            epoch: "e1".into(),
            seq: 0,
            history: Vec::new(),
            members: Vec::new(),
            member_count: MemberCount { version, members },
        };
        let result = Ok(state);
        hub.handle_broker(BrokerEvent::Joined { token, result }, T0);
    }

    fn count(hub: &mut Hub<u32>, version: u64, members: u64) {
        let count = MemberCount { version, members };
        let room = "app/chat".into();
        hub.handle_broker(BrokerEvent::MemberCount { room, count }, T0);
    }

    fn remote(hub: &mut Hub<u32>, change: MemberChange) {
        let room = "app/chat".into();
        hub.handle_broker(BrokerEvent::Member { room, change }, T0);
    }

    fn kinds(out: &[(u32, ServerMessage)]) -> Vec<(u32, &'static str)> {
        out.iter()
            .map(|(c, m)| {
                let kind = match m {
                    ServerMessage::Join { .. } => "join",
                    ServerMessage::Leave { .. } => "leave",
                    ServerMessage::Presence { .. } => "presence",
                    ServerMessage::Joined { .. } => "joined",
                    _ => "other",
                };
                (*c, kind)
            })
            .collect()
    }

    #[test]
    fn the_presence_limit_is_judged_on_the_members_of_every_node() {
        // Limit 3; two members here, the broker counts the room's members on all nodes.
        let mut hub = Hub::new(
            HubConfig::default()
                .with_external_broker(true)
                .with_presence_limit(3),
            7,
        );
        hello(&mut hub, 1, "ada", T0);
        hello(&mut hub, 2, "ben", T0);
        join_counted(&mut hub, 1, 2, 10); // one member elsewhere
        drain(&mut hub);
        join_counted(&mut hub, 2, 3, 11); // 3 in all: still told
        assert_eq!(kinds(&drain(&mut hub)), vec![(1, "join"), (2, "joined")]);
        // A fourth member on another node: beyond the limit, so nothing is told here (the
        // two members here alone would be well under it).
        count(&mut hub, 12, 4);
        let joined = MemberChange::Joined {
            client: "cy".into(),
            presence: "null".into(),
        };
        remote(&mut hub, joined.clone());
        let presence = MemberChange::Presence {
            client: "cy".into(),
            presence: "1".into(),
        };
        remote(&mut hub, presence.clone());
        assert_eq!(drain(&mut hub), vec![]);
        // A presence update here is not broadcast either (after the window).
        hub.receive(
            1,
            r#"{"type":"presence","room":"app/chat","presence":{"x":1}}"#,
            T0,
        )
        .unwrap();
        hub.handle_timeout(T0 + Duration::from_secs(5));
        assert_eq!(drain(&mut hub), vec![]);
        // A third member joining here is told no member list and tells nobody.
        hello(&mut hub, 3, "cat", T0);
        drain(&mut hub);
        join_counted(&mut hub, 3, 5, 13);
        match &to(&drain(&mut hub), 3)[..] {
            [ServerMessage::Joined { members, .. }] => assert!(members.is_empty()),
            other => panic!("expected joined, got {other:?}"),
        }
        // An older count arriving late changes nothing.
        count(&mut hub, 11, 2);
        remote(&mut hub, presence);
        assert_eq!(drain(&mut hub), vec![]);
        // Members leave elsewhere: at 3 in all the room is tracked again. The leave that
        // takes it from 4 to 3 is not told (its join was not).
        count(&mut hub, 14, 4);
        count(&mut hub, 15, 3);
        remote(
            &mut hub,
            MemberChange::Left {
                client: "cy".into(),
            },
        );
        assert_eq!(drain(&mut hub), vec![]);
        count(&mut hub, 16, 3);
        remote(&mut hub, joined);
        assert_eq!(
            kinds(&drain(&mut hub)),
            vec![(1, "join"), (2, "join"), (3, "join")]
        );
    }

    #[test]
    fn a_join_recorded_by_the_broker_but_not_admitted_is_forgotten_again() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        join(&mut hub, 1, "app/chat", T0);
        let token = core::iter::from_fn(|| hub.poll_broker())
            .find_map(|r| match r {
                BrokerRequest::Join { token, .. } => Some(token),
                _ => None,
            })
            .unwrap();
        hub.disconnect(1, T0);
        while hub.poll_broker().is_some() {}
        let state = RoomState {
            epoch: "e1".into(),
            seq: 0,
            history: Vec::new(),
            members: Vec::new(),
            member_count: MemberCount {
                version: 1,
                members: 1,
            },
        };
        let result = Ok(state);
        hub.handle_broker(BrokerEvent::Joined { token, result }, T0);
        assert!(core::iter::from_fn(|| hub.poll_broker()).any(|r| r
            == BrokerRequest::MemberLeft {
                room: "app/chat".into(),
                client: "ada".into()
            }));
    }

    #[test]
    fn a_claim_by_another_node_takes_over_only_an_older_claim() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        assert!(core::iter::from_fn(|| hub.poll_broker()).any(|r| r
            == BrokerRequest::Claim {
                client: "ada".into()
            }));
        // Another node's claim is heard before this node's own answer: the serials decide.
        let take_over = |serial| BrokerEvent::TakeOver {
            client: "ada".into(),
            serial,
        };
        hub.handle_broker(take_over(4), T0);
        assert_eq!(hub.poll_close(), None);
        let claimed = |serial| BrokerEvent::Claimed {
            client: "ada".into(),
            serial,
        };
        hub.handle_broker(claimed(5), T0);
        assert_eq!(hub.poll_close(), None, "this node's claim is the newer one");
        hub.handle_broker(take_over(6), T0);
        assert_eq!(
            hub.poll_close(),
            Some((1, "taken over by a newer connection"))
        );
        hub.receive(1, r#"{"type":"ping","id":1}"#, T0).unwrap_err();
        // A later connection here claims again, and an older claim elsewhere does not matter.
        hello(&mut hub, 2, "ada", T0);
        hub.handle_broker(take_over(3), T0);
        hub.handle_broker(claimed(7), T0);
        assert_eq!(hub.poll_close(), None);
    }

    #[test]
    fn a_member_rejoining_to_fill_a_gap_gets_each_message_once() {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        join(&mut hub, 1, "app/chat", T0);
        let (token, _) = join_token(&mut hub);
        answer_join(&mut hub, token, "e1", 3, &[]);
        live(&mut hub, "e1", 6); // 4 and 5 were lost: gap, then 6
        drain(&mut hub);
        hub.receive(
            1,
            r#"{"type":"join","id":2,"room":"app/chat","since":{"epoch":"e1","seq":3}}"#,
            T0,
        )
        .unwrap();
        let (token, _) = join_token(&mut hub);
        live(&mut hub, "e1", 7); // while the rejoin is read
        assert!(drain(&mut hub).is_empty());
        answer_join(&mut hub, token, "e1", 6, &[4, 5, 6]);
        live(&mut hub, "e1", 8);
        assert_eq!(seqs(&to(&drain(&mut hub), 1)), vec![4, 5, 6, 7, 8]);
    }
}

/// Messages to one client: `send` → `sent`, `direct` to the target.
mod direct {
    use super::*;
    use crate::channel::broker::{BrokerError, BrokerEvent, BrokerRequest};
    use crate::channel::hub::ApiDirect;

    fn send(hub: &mut Hub<u32>, conn: u32, id: u64, to: &str, data: &str, now: Duration) {
        let text = format!(r#"{{"type":"send","id":{id},"to":"{to}","data":{data}}}"#);
        let _ = hub.receive(conn, &text, now);
    }

    fn sent(id: u64) -> ServerMessage {
        ServerMessage::Sent { id: Id::Number(id) }
    }

    fn direct(from: &str, data: Value) -> ServerMessage {
        ServerMessage::Direct {
            from: from.into(),
            data,
        }
    }

    #[test]
    fn a_member_reaches_another_member_of_a_shared_room_in_order() {
        let mut hub = two_members();
        send(&mut hub, 1, 1, "bob", r#"{"sdp":"offer"}"#, T0);
        send(&mut hub, 1, 2, "bob", "2", T0);
        let out = drain(&mut hub);
        assert_eq!(to(&out, 1), vec![sent(1), sent(2)]);
        assert_eq!(
            to(&out, 2),
            vec![
                direct("ada", json!({"sdp": "offer"})),
                direct("ada", json!(2))
            ]
        );
        // The wire form.
        send(&mut hub, 2, 3, "ada", r#""hi""#, T0);
        let (conn, text) = hub.poll_text().unwrap();
        assert_eq!(
            (conn, &*text),
            (1, r#"{"type":"direct","from":"bob","data":"hi"}"#)
        );
        assert_eq!(
            hub.poll_text().map(|(c, t)| (c, String::from(&*t))),
            Some((2, r#"{"type":"sent","id":3}"#.to_string()))
        );
    }

    #[test]
    fn no_shared_room_and_no_such_client_are_the_same_not_found() {
        let mut hub = two_members();
        hello(&mut hub, 3, "cat", T0);
        join(&mut hub, 3, "app/other", T0);
        drain(&mut hub);
        // A sender in no room reaches no one, itself included.
        hello(&mut hub, 4, "dan", T0);
        drain(&mut hub);
        send(&mut hub, 1, 1, "cat", "1", T0);
        send(&mut hub, 1, 2, "nobody", "1", T0);
        send(&mut hub, 4, 3, "dan", "1", T0);
        let out = drain(&mut hub);
        let codes: Vec<_> = out.iter().map(|(c, m)| (*c, error_code(m))).collect();
        let nf = |id| (Some(Id::Number(id)), ErrorCode::NotFound);
        assert_eq!(codes, vec![(1, nf(1)), (1, nf(2)), (4, nf(3))]);
        match &to(&out, 1)[..] {
            [
                ServerMessage::Error { message: a, .. },
                ServerMessage::Error { message: b, .. },
            ] => {
                assert_eq!(a, b, "the two refusals must not tell the cases apart")
            }
            other => panic!("{other:?}"),
        }
        // After a leave the room no longer counts; a member may reach itself.
        hub.receive(2, r#"{"type":"leave","id":9,"room":"app/chat"}"#, T0)
            .unwrap();
        drain(&mut hub);
        send(&mut hub, 1, 4, "bob", "1", T0);
        send(&mut hub, 1, 5, "ada", "1", T0);
        let out = drain(&mut hub);
        assert_eq!(error_code(&out[0].1), nf(4));
        assert_eq!(&out[1..], &[(1, direct("ada", json!(1))), (1, sent(5))]);
    }

    #[test]
    fn shared_rooms_count_above_the_presence_limit() {
        let mut hub = Hub::new(HubConfig::default().with_presence_limit(1), 7);
        hello(&mut hub, 1, "ada", T0);
        hello(&mut hub, 2, "bob", T0);
        join(&mut hub, 1, "app/feed", T0);
        join(&mut hub, 2, "app/feed", T0);
        drain(&mut hub);
        send(&mut hub, 2, 1, "ada", "1", T0);
        let out = drain(&mut hub);
        assert_eq!(out, vec![(1, direct("bob", json!(1))), (2, sent(1))]);
    }

    #[test]
    fn sends_are_rate_limited_per_connection_and_capped_in_size() {
        let mut hub = Hub::new(
            HubConfig::default().with_send_rate(10).with_max_payload(9),
            7,
        );
        for (conn, client) in [(1, "ada"), (2, "bob"), (3, "cat")] {
            hello(&mut hub, conn, client, T0);
            join(&mut hub, conn, "app/chat", T0);
        }
        drain(&mut hub);
        // A burst of 10, then one per 100 ms.
        for id in 0..12 {
            send(&mut hub, 1, id, "bob", "1", T0);
        }
        let out = drain(&mut hub);
        let limited = |out: &[(u32, ServerMessage)]| {
            out.iter()
                .filter(|(_, m)| {
                    matches!(
                        m,
                        ServerMessage::Error {
                            code: ErrorCode::RateLimited,
                            ..
                        }
                    )
                })
                .count()
        };
        assert_eq!(to(&out, 2).len(), 10);
        assert_eq!(limited(&out), 2);
        assert_eq!(
            error_code(&out.last().unwrap().1),
            (Some(Id::Number(11)), ErrorCode::RateLimited)
        );
        // Another connection has its own budget.
        send(&mut hub, 3, 1, "bob", "1", T0);
        assert_eq!(to(&drain(&mut hub), 3), vec![sent(1)]);
        send(&mut hub, 1, 20, "bob", "1", ms(50));
        assert_eq!(limited(&drain(&mut hub)), 1);
        send(&mut hub, 1, 21, "bob", "1", ms(100));
        send(&mut hub, 1, 22, "bob", "1", ms(100));
        let out = drain(&mut hub);
        assert_eq!(to(&out, 1)[0], sent(21));
        assert_eq!(limited(&out), 1);
        // Payload cap, counted in compact JSON; the refusal comes before delivery.
        send(
            &mut hub,
            1,
            30,
            "bob",
            r#"[ 1, 2, 3, 4 ]"#,
            Duration::from_secs(5),
        );
        send(
            &mut hub,
            1,
            31,
            "bob",
            r#""123456789""#,
            Duration::from_secs(5),
        );
        let out = drain(&mut hub);
        assert_eq!(to(&out, 2), vec![direct("ada", json!([1, 2, 3, 4]))]);
        assert_eq!(
            error_code(&to(&out, 1)[1]),
            (Some(Id::Number(31)), ErrorCode::TooLarge)
        );
        // A connection's budget goes with it.
        hub.disconnect(1, Duration::from_secs(5));
        assert_eq!(hub.stats().connections, 2);
    }

    #[test]
    fn send_needs_hello_and_a_valid_target() {
        let mut hub = hub();
        hub.connect(1, T0);
        send(&mut hub, 1, 1, "bob", "1", T0);
        send(&mut hub, 1, 2, "b b", "1", T0);
        let out = drain(&mut hub);
        assert_eq!(
            error_code(&out[0].1),
            (Some(Id::Number(1)), ErrorCode::HelloRequired)
        );
        assert_eq!(
            error_code(&out[1].1),
            (Some(Id::Number(2)), ErrorCode::BadMessage)
        );
    }

    #[test]
    fn the_api_reaches_any_connected_client_without_a_shared_room() {
        let mut hub = hub();
        hello(&mut hub, 1, "ada", T0);
        drain(&mut hub);
        let result = hub.send_direct_from_api("ada", &json!({"k": 1})).unwrap();
        assert_eq!(
            result,
            ApiDirect {
                delivered: 1,
                pending: None
            }
        );
        assert_eq!(drain(&mut hub), vec![(1, direct("api", json!({"k": 1})))]);
        let none = hub.send_direct_from_api("bob", &json!(1)).unwrap();
        assert_eq!(none.delivered, 0);
        assert!(drain(&mut hub).is_empty());
        let bad = hub.send_direct_from_api("a b", &json!(1)).unwrap_err();
        assert_eq!(bad.code, ErrorCode::BadMessage);
        let big = json!("x".repeat(64 * 1024));
        let large = hub.send_direct_from_api("ada", &big).unwrap_err();
        assert_eq!((large.id, large.code), (None, ErrorCode::TooLarge));
        // Not rate-limited.
        for _ in 0..200 {
            assert_eq!(
                hub.send_direct_from_api("ada", &json!(0))
                    .unwrap()
                    .delivered,
                1
            );
        }
        hub.disconnect(1, T0);
        assert_eq!(
            hub.send_direct_from_api("ada", &json!(1))
                .unwrap()
                .delivered,
            0
        );
    }

    fn broker_hub() -> Hub<u32> {
        Hub::new(HubConfig::default().with_external_broker(true), 7)
    }

    /// `ada` on 1, a member of `app/chat` (joined through the broker); deliveries and broker
    /// requests drained.
    fn ada_on_a_node() -> Hub<u32> {
        let mut hub = broker_hub();
        hello(&mut hub, 1, "ada", T0);
        join(&mut hub, 1, "app/chat", T0);
        let token = core::iter::from_fn(|| hub.poll_broker())
            .find_map(|r| match r {
                BrokerRequest::Join { token, .. } => Some(token),
                _ => None,
            })
            .unwrap();
        let state = crate::channel::broker::RoomState {
            epoch: "e1".into(),
            seq: 0,
            history: Vec::new(),
            members: vec![("bob".into(), "null".into())],
            member_count: Default::default(),
        };
        let result = Ok(state);
        hub.handle_broker(BrokerEvent::Joined { token, result }, T0);
        while hub.poll_broker().is_some() {}
        drain(&mut hub);
        hub
    }

    fn direct_requests(hub: &mut Hub<u32>) -> Vec<BrokerRequest> {
        core::iter::from_fn(|| hub.poll_broker())
            .filter(|r| matches!(r, BrokerRequest::Direct { .. }))
            .collect()
    }

    #[test]
    fn with_a_broker_a_client_held_elsewhere_is_reached_through_it() {
        let mut hub = ada_on_a_node();
        send(&mut hub, 1, 1, "bob", r#"{"ice":1}"#, T0);
        send(&mut hub, 1, 2, "bob", "2", T0);
        send(&mut hub, 1, 3, "eve", "3", T0);
        assert!(drain(&mut hub).is_empty(), "answered when the broker is");
        let requests = direct_requests(&mut hub);
        let tokens: Vec<u64> = requests
            .iter()
            .map(|r| match r {
                BrokerRequest::Direct { token, .. } => *token,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            requests[0],
            BrokerRequest::Direct {
                token: tokens[0],
                from: "ada".into(),
                to: "bob".into(),
                rooms: Some(vec!["app/chat".into()]),
                data: r#"{"ice":1}"#.into(),
            }
        );
        let answer = |hub: &mut Hub<u32>, token, result| {
            hub.handle_broker(BrokerEvent::Sent { token, result }, T0);
        };
        answer(&mut hub, tokens[0], Ok(1));
        answer(&mut hub, tokens[1], Err(BrokerError("down".into())));
        answer(&mut hub, tokens[2], Ok(0));
        let out = drain(&mut hub);
        assert_eq!(out[0], (1, sent(1)));
        assert_eq!(
            error_code(&out[1].1),
            (Some(Id::Number(2)), ErrorCode::Unavailable)
        );
        assert_eq!(
            error_code(&out[2].1),
            (Some(Id::Number(3)), ErrorCode::NotFound)
        );
        // A message from another node for a client held here, whatever its rooms.
        let event = BrokerEvent::Direct {
            from: "bob".into(),
            to: "ada".into(),
            data: r#"{"answer":true}"#.into(),
        };
        hub.handle_broker(event, T0);
        let event = BrokerEvent::Direct {
            from: "bob".into(),
            to: "nobody".into(),
            data: "1".into(),
        };
        hub.handle_broker(event, T0);
        assert_eq!(
            drain(&mut hub),
            vec![(1, direct("bob", json!({"answer": true})))]
        );
        // An answer for a sender that is gone is dropped.
        send(&mut hub, 1, 4, "bob", "4", T0);
        let token = match &direct_requests(&mut hub)[..] {
            [BrokerRequest::Direct { token, .. }] => *token,
            other => panic!("{other:?}"),
        };
        hub.disconnect(1, T0);
        answer(&mut hub, token, Ok(1));
        assert!(drain(&mut hub).is_empty());
    }

    #[test]
    fn with_a_broker_a_client_held_here_is_reached_without_it() {
        let mut hub = ada_on_a_node();
        hello(&mut hub, 2, "cat", T0);
        join(&mut hub, 2, "app/chat", T0);
        let token = core::iter::from_fn(|| hub.poll_broker())
            .find_map(|r| match r {
                BrokerRequest::Join { token, .. } => Some(token),
                _ => None,
            })
            .unwrap();
        let state = crate::channel::broker::RoomState {
            epoch: "e1".into(),
            seq: 0,
            history: Vec::new(),
            members: Vec::new(),
            member_count: Default::default(),
        };
        let result = Ok(state);
        hub.handle_broker(BrokerEvent::Joined { token, result }, T0);
        drain(&mut hub);
        send(&mut hub, 1, 1, "cat", "1", T0);
        assert_eq!(
            drain(&mut hub),
            vec![(2, direct("ada", json!(1))), (1, sent(1))]
        );
        assert!(direct_requests(&mut hub).is_empty());
        // Held here but sharing no room: refused here too.
        hello(&mut hub, 3, "dan", T0);
        drain(&mut hub);
        while hub.poll_broker().is_some() {}
        send(&mut hub, 1, 2, "dan", "1", T0);
        assert_eq!(
            error_code(&drain(&mut hub)[0].1),
            (Some(Id::Number(2)), ErrorCode::NotFound)
        );
        assert!(direct_requests(&mut hub).is_empty());
    }

    #[test]
    fn with_a_broker_the_api_asks_the_other_nodes_and_a_leaving_client_is_released() {
        let mut hub = ada_on_a_node();
        assert_eq!(
            hub.send_direct_from_api("ada", &json!(1)).unwrap(),
            ApiDirect {
                delivered: 1,
                pending: None
            }
        );
        assert!(direct_requests(&mut hub).is_empty());
        let result = hub.send_direct_from_api("bob", &json!({"k": 2})).unwrap();
        assert_eq!(result.delivered, 0);
        let token = result.pending.unwrap();
        assert_eq!(
            direct_requests(&mut hub),
            vec![BrokerRequest::Direct {
                token,
                from: "api".into(),
                to: "bob".into(),
                rooms: None,
                data: r#"{"k":2}"#.into(),
            }]
        );
        assert_eq!(hub.poll_api_direct(), None);
        hub.handle_broker(
            BrokerEvent::Sent {
                token,
                result: Ok(1),
            },
            T0,
        );
        assert_eq!(hub.poll_api_direct(), Some((token, Ok(1))));
        assert_eq!(hub.poll_api_direct(), None);
        // ada's last connection here ends: the broker forgets this node holds her.
        hub.disconnect(1, T0);
        assert!(core::iter::from_fn(|| hub.poll_broker()).any(|r| r
            == BrokerRequest::Release {
                client: "ada".into()
            }));
        // A takeover here releases the old connection's hold before the new claim.
        hello(&mut hub, 2, "bob", T0);
        while hub.poll_broker().is_some() {}
        hello(&mut hub, 3, "bob", T0);
        let requests: Vec<_> = core::iter::from_fn(|| hub.poll_broker()).collect();
        assert_eq!(
            requests,
            vec![
                BrokerRequest::Release {
                    client: "bob".into()
                },
                BrokerRequest::Claim {
                    client: "bob".into()
                },
            ]
        );
    }
}
