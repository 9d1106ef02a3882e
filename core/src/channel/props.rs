//! Property tests across the channel protocol.
//!
//! 1. The hub under any interleaving of commands from several connections (hello, join with and
//!    without `since`, leave, publish and retries, presence, takeover, slow-consumer drops,
//!    disconnects, time passing): every room's seqs are gapless per epoch, each member reads a
//!    room's messages in strictly increasing order with holes only where the driver dropped
//!    messages (each drop announced by one `gap`), and the hub's counters match what it queued.
//! 2. `ClientSession`s against a `Hub` over links that drop, stall, lose messages of slow
//!    consumers and reconnect: every application receives each message of its rooms exactly
//!    once, in order, and every publish is acknowledged exactly once.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::PollText;
use super::client::{ClientConfig, ClientEvent, ClientSession};
use super::hub::{Hub, HubConfig};
use super::protocol::{Id, ServerMessage, Since};

const ROOMS: [&str; 2] = ["app/a", "app/b"];

fn room_index(room: &str) -> usize {
    ROOMS
        .iter()
        .position(|r| *r == room)
        .unwrap_or_else(|| panic!("unexpected room {room}"))
}

// ---------------------------------------------------------------------------------------------
// 1. The hub alone.

#[derive(Debug, Clone)]
enum HubOp {
    Open,
    /// `slot` 3 says `hello` without a client id (the hub assigns one).
    Hello {
        conn: usize,
        slot: usize,
    },
    /// `since`: `(true, n)` uses the room's real epoch, `(false, n)` an unknown one; only sent
    /// when the connection is not a member (a member replaying what it has is the client's
    /// business, see part 2).
    Join {
        conn: usize,
        room: usize,
        since: Option<(bool, u64)>,
        presence: bool,
    },
    Leave {
        conn: usize,
        room: usize,
    },
    /// `retry`: resend an earlier publish id of the same client.
    Publish {
        conn: usize,
        room: usize,
        retry: Option<usize>,
    },
    Presence {
        conn: usize,
        room: usize,
        value: u8,
    },
    /// The driver drops up to `count` of the oldest unread messages of `room` (slow consumer).
    Drop {
        conn: usize,
        room: usize,
        count: usize,
    },
    /// The client reads everything delivered so far.
    Read {
        conn: usize,
    },
    Disconnect {
        conn: usize,
    },
    Advance {
        ms: u64,
    },
}

fn hub_op() -> impl Strategy<Value = HubOp> {
    let conn = 0usize..8;
    let room = 0usize..2;
    prop_oneof![
        1 => Just(HubOp::Open),
        2 => (conn.clone(), 0usize..4).prop_map(|(conn, slot)| HubOp::Hello { conn, slot }),
        4 => (conn.clone(), room.clone(), proptest::option::of((any::<bool>(), 0u64..12)), any::<bool>())
            .prop_map(|(conn, room, since, presence)| HubOp::Join { conn, room, since, presence }),
        2 => (conn.clone(), room.clone()).prop_map(|(conn, room)| HubOp::Leave { conn, room }),
        8 => (conn.clone(), room.clone(), proptest::option::weighted(0.25, 0usize..16))
            .prop_map(|(conn, room, retry)| HubOp::Publish { conn, room, retry }),
        2 => (conn.clone(), room.clone(), any::<u8>())
            .prop_map(|(conn, room, value)| HubOp::Presence { conn, room, value }),
        2 => (conn.clone(), room.clone(), 1usize..4)
            .prop_map(|(conn, room, count)| HubOp::Drop { conn, room, count }),
        3 => conn.clone().prop_map(|conn| HubOp::Read { conn }),
        1 => conn.prop_map(|conn| HubOp::Disconnect { conn }),
        2 => prop_oneof![0u64..200, 500u64..2500].prop_map(|ms| HubOp::Advance { ms }),
    ]
}

#[derive(Debug)]
enum Delivery {
    /// A message, and for `message` the room's epoch when it was queued.
    Server(ServerMessage, Option<String>),
    /// Another connection said `hello` with this connection's client id and took over.
    TakenOver,
}

#[derive(Debug, Default)]
struct ReaderRoom {
    member: bool,
    epoch: String,
    /// The last seq read as a member.
    cursor: u64,
    /// Joins sent and accepted, not yet answered by a `joined` the reader has read.
    joins: VecDeque<Option<Since>>,
    /// The last seq replayed for the oldest of `joins`.
    replay: Option<u64>,
}

#[derive(Debug)]
struct HubConn {
    id: u32,
    /// The hub's view: the client id from `welcome`, until taken over.
    client: Option<String>,
    /// The hub's view: rooms joined (by the `joined`/`left` queued so far).
    members: BTreeSet<usize>,
    inbox: VecDeque<Delivery>,
    reader: [ReaderRoom; 2],
    /// The reader's view: its client id, from the last `welcome` read.
    own: Option<String>,
    /// `(room, epoch, seq)` of every message the driver dropped.
    dropped: BTreeSet<(usize, String, u64)>,
    /// `dropped()` calls whose `gap` is still to be queued.
    gaps_due: VecDeque<(usize, u64, u64)>,
}

#[derive(Debug)]
struct Ledger {
    epoch: String,
    last: u64,
}

#[derive(Debug)]
struct Published {
    client: String,
    room: usize,
    seq: Option<u64>,
}

#[derive(Debug, Default)]
struct Counted {
    publishes: u64,
    messages: u64,
    gaps: u64,
    presence: u64,
}

struct HubHarness {
    hub: Hub<u32>,
    now: Duration,
    next_conn: u32,
    conns: Vec<HubConn>,
    ledger: [Option<Ledger>; 2],
    epochs: BTreeSet<String>,
    published: BTreeMap<u64, Published>,
    next_id: u64,
    counted: Counted,
}

impl HubHarness {
    fn new() -> Self {
        let config = HubConfig::default()
            .with_history_size(4)
            .with_history_ttl(Duration::from_secs(2))
            .with_presence_window(Duration::from_millis(50))
            .with_dedup_window(4)
            .with_client_ttl(Duration::from_secs(3));
        HubHarness {
            hub: Hub::new(config, 11),
            now: Duration::ZERO,
            next_conn: 0,
            conns: Vec::new(),
            ledger: [None, None],
            epochs: BTreeSet::new(),
            published: BTreeMap::new(),
            next_id: 0,
            counted: Counted::default(),
        }
    }

    fn open(&mut self) {
        let id = self.next_conn;
        self.next_conn += 1;
        self.hub.connect(id, self.now);
        self.conns.push(HubConn {
            id,
            client: None,
            members: BTreeSet::new(),
            inbox: VecDeque::new(),
            reader: Default::default(),
            own: None,
            dropped: BTreeSet::new(),
            gaps_due: VecDeque::new(),
        });
    }

    fn pick(&self, conn: usize) -> Option<usize> {
        (!self.conns.is_empty()).then(|| conn % self.conns.len())
    }

    fn apply(&mut self, op: HubOp) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            HubOp::Open => self.open(),
            HubOp::Advance { ms } => {
                self.now += Duration::from_millis(ms);
                if self.hub.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.hub.handle_timeout(self.now);
                }
                prop_assert!(
                    self.hub.poll_timeout().is_none_or(|t| t > self.now),
                    "a deadline at or before now survived handle_timeout"
                );
            }
            HubOp::Hello { conn, slot } => {
                let Some(c) = self.pick(conn) else {
                    return Ok(());
                };
                let text = if slot < 3 {
                    format!(r#"{{"type":"hello","client":"c{slot}"}}"#)
                } else {
                    String::from(r#"{"type":"hello"}"#)
                };
                let _ = self.hub.receive(self.conns[c].id, &text, now);
            }
            HubOp::Join {
                conn,
                room,
                since,
                presence,
            } => {
                let Some(c) = self.pick(conn) else {
                    return Ok(());
                };
                let since = match (since, &self.ledger[room]) {
                    _ if self.conns[c].members.contains(&room) => None,
                    (Some((true, seq)), Some(ledger)) => Some(Since {
                        epoch: ledger.epoch.clone(),
                        seq: seq % (ledger.last + 2),
                    }),
                    (Some((_, seq)), _) => Some(Since {
                        epoch: "0000".into(),
                        seq,
                    }),
                    (None, _) => None,
                };
                let mut command = json!({"type": "join", "id": 0, "room": ROOMS[room]});
                if presence {
                    command["presence"] = json!({"at": now.as_millis() as u64});
                }
                if let Some(since) = &since {
                    command["since"] = json!({"epoch": since.epoch, "seq": since.seq});
                }
                let conn = &mut self.conns[c];
                if self.hub.receive(conn.id, &command.to_string(), now).is_ok() {
                    conn.reader[room].joins.push_back(since);
                }
            }
            HubOp::Leave { conn, room } => {
                let Some(c) = self.pick(conn) else {
                    return Ok(());
                };
                let text = format!(r#"{{"type":"leave","id":0,"room":"{}"}}"#, ROOMS[room]);
                let _ = self.hub.receive(self.conns[c].id, &text, now);
            }
            HubOp::Publish { conn, room, retry } => {
                let Some(c) = self.pick(conn) else {
                    return Ok(());
                };
                let client = self.conns[c].client.clone();
                let earlier: Vec<(u64, usize)> = self
                    .published
                    .iter()
                    .filter(|(_, p)| Some(&p.client) == client.as_ref())
                    .map(|(id, p)| (*id, p.room))
                    .collect();
                let (id, room) = match retry {
                    Some(k) if !earlier.is_empty() => earlier[k % earlier.len()],
                    _ => {
                        self.next_id += 1;
                        if let Some(client) = client {
                            let entry = Published {
                                client,
                                room,
                                seq: None,
                            };
                            self.published.insert(self.next_id, entry);
                        }
                        (self.next_id, room)
                    }
                };
                let text = format!(
                    r#"{{"type":"publish","id":{id},"room":"{}","data":{{"id":{id}}}}}"#,
                    ROOMS[room]
                );
                let _ = self.hub.receive(self.conns[c].id, &text, now);
            }
            HubOp::Presence { conn, room, value } => {
                let Some(c) = self.pick(conn) else {
                    return Ok(());
                };
                let text = format!(
                    r#"{{"type":"presence","room":"{}","presence":{value}}}"#,
                    ROOMS[room]
                );
                let _ = self.hub.receive(self.conns[c].id, &text, now);
            }
            HubOp::Drop { conn, room, count } => {
                let Some(c) = self.pick(conn) else {
                    return Ok(());
                };
                self.drop_messages(c, room, count)?;
            }
            HubOp::Read { conn } => {
                let Some(c) = self.pick(conn) else {
                    return Ok(());
                };
                self.read(c)?;
            }
            HubOp::Disconnect { conn } => {
                let Some(c) = self.pick(conn) else {
                    return Ok(());
                };
                // The socket delivered everything it had before closing.
                self.read(c)?;
                prop_assert!(self.conns[c].gaps_due.is_empty());
                self.hub.disconnect(self.conns[c].id, now);
                self.conns.remove(c);
            }
        }
        self.drain()?;
        self.check_stats()
    }

    /// Removes a run of consecutive messages of `room`, oldest first, as a driver whose backlog
    /// is full would, and tells the hub.
    fn drop_messages(&mut self, c: usize, room: usize, count: usize) -> Result<(), TestCaseError> {
        let conn = &mut self.conns[c];
        let mut run: Vec<(usize, u64, String)> = Vec::new();
        for (at, delivery) in conn.inbox.iter().enumerate() {
            if let Delivery::Server(ServerMessage::Message { room: r, seq, .. }, Some(epoch)) =
                delivery
            {
                if room_index(r) != room {
                    continue;
                }
                match run.last() {
                    None => run.push((at, *seq, epoch.clone())),
                    Some((_, last, e)) if *seq == last + 1 && e == epoch => {
                        run.push((at, *seq, epoch.clone()))
                    }
                    Some(_) => break,
                }
                if run.len() == count {
                    break;
                }
            }
        }
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(());
        };
        let (from, to) = (first.1, last.1);
        for (at, seq, epoch) in run.iter().rev() {
            conn.inbox.remove(*at);
            conn.dropped.insert((room, epoch.clone(), *seq));
        }
        conn.gaps_due.push_back((room, from, to));
        self.hub.dropped(conn.id, ROOMS[room], from, to);
        Ok(())
    }

    /// Moves the hub's deliveries into the inboxes, checking what the hub decided.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        let mut batch = Vec::new();
        while let Some((to, text)) = self.hub.poll_text() {
            let message: ServerMessage = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            batch.push((to, message));
        }
        for at in 0..batch.len() {
            let (to, message) = batch[at].clone();
            let c = self.conns.iter().position(|c| c.id == to);
            let Some(c) = c else {
                return Err(TestCaseError::fail(format!(
                    "delivery to closed connection {to}"
                )));
            };
            let mut tag = None;
            match &message {
                ServerMessage::Welcome { client, .. } => {
                    for other in self.conns.iter_mut() {
                        if other.id != to && other.client.as_ref() == Some(client) {
                            other.client = None;
                            other.members.clear();
                            other.inbox.push_back(Delivery::TakenOver);
                        }
                    }
                    self.conns[c].client = Some(client.clone());
                }
                ServerMessage::Joined {
                    room, epoch, seq, ..
                } => {
                    let r = room_index(room);
                    match &self.ledger[r] {
                        Some(ledger) if ledger.epoch == *epoch => {
                            prop_assert_eq!(*seq, ledger.last, "joined.seq is the room's seq")
                        }
                        _ => {
                            prop_assert_eq!(*seq, 0, "a new epoch starts at seq 0");
                            prop_assert!(self.epochs.insert(epoch.clone()), "epoch reused");
                            self.ledger[r] = Some(Ledger {
                                epoch: epoch.clone(),
                                last: 0,
                            });
                        }
                    }
                    self.conns[c].members.insert(r);
                }
                ServerMessage::Left { room, .. } => {
                    self.conns[c].members.remove(&room_index(room));
                }
                ServerMessage::Ack { id, seq } => {
                    let Id::Number(id) = id else {
                        return Err(TestCaseError::fail("ack of an id never sent"));
                    };
                    let Some(publish) = self.published.get_mut(id) else {
                        return Err(TestCaseError::fail("ack of an unknown publish"));
                    };
                    let Some(ledger) = &mut self.ledger[publish.room] else {
                        return Err(TestCaseError::fail("ack in a room never joined"));
                    };
                    // Sequenced now (not a deduplicated retry) if its message follows.
                    let room = ROOMS[publish.room];
                    let fresh = batch[at + 1..].iter().any(|(c, m)| {
                        *c == to
                            && matches!(m, ServerMessage::Message { room: r, seq: s, .. }
                                if r == room && s == seq)
                    });
                    if fresh {
                        prop_assert_eq!(*seq, ledger.last + 1, "the next seq of the room");
                        ledger.last = *seq;
                        publish.seq = Some(*seq);
                        self.counted.publishes += 1;
                    } else {
                        prop_assert_eq!(Some(*seq), publish.seq, "a retry is acked as before");
                    }
                }
                ServerMessage::Message { room, seq, .. } => {
                    self.counted.messages += 1;
                    let Some(ledger) = &self.ledger[room_index(room)] else {
                        return Err(TestCaseError::fail("message in a room never joined"));
                    };
                    prop_assert!(*seq >= 1 && *seq <= ledger.last, "message seq {}", seq);
                    tag = Some(ledger.epoch.clone());
                }
                ServerMessage::Gap {
                    room,
                    from_seq,
                    to_seq,
                } => {
                    self.counted.gaps += 1;
                    let due = self.conns[c].gaps_due.pop_front();
                    prop_assert_eq!(due, Some((room_index(room), *from_seq, *to_seq)));
                }
                ServerMessage::Presence { .. } => self.counted.presence += 1,
                _ => {}
            }
            self.conns[c]
                .inbox
                .push_back(Delivery::Server(message, tag));
        }
        Ok(())
    }

    fn check_stats(&self) -> Result<(), TestCaseError> {
        let stats = self.hub.stats();
        let members: usize = ROOMS.iter().map(|r| self.hub.member_count(r)).sum();
        prop_assert_eq!(stats.members, members);
        let memberships: usize = self.conns.iter().map(|c| c.members.len()).sum();
        prop_assert_eq!(stats.members, memberships);
        prop_assert_eq!(stats.rooms, self.hub.room_count());
        prop_assert_eq!(stats.connections, self.conns.len());
        prop_assert_eq!(stats.publishes, self.counted.publishes);
        prop_assert_eq!(stats.deliveries + stats.replayed, self.counted.messages);
        prop_assert_eq!(stats.gaps, self.counted.gaps);
        prop_assert_eq!(stats.presence_updates, self.counted.presence);
        Ok(())
    }

    /// The client side: reads the inbox and checks order and holes.
    fn read(&mut self, c: usize) -> Result<(), TestCaseError> {
        let conn = &mut self.conns[c];
        while let Some(delivery) = conn.inbox.pop_front() {
            let (message, tag) = match delivery {
                Delivery::TakenOver => {
                    for room in conn.reader.iter_mut() {
                        room.member = false;
                    }
                    conn.own = None;
                    continue;
                }
                Delivery::Server(message, tag) => (message, tag),
            };
            match message {
                ServerMessage::Message { room, seq, .. } => {
                    let r = room_index(&room);
                    let epoch = tag.unwrap_or_default();
                    let state = &mut conn.reader[r];
                    if state.member {
                        prop_assert_eq!(&epoch, &state.epoch);
                        prop_assert!(
                            seq > state.cursor,
                            "member order: {} after {}",
                            seq,
                            state.cursor
                        );
                        holes(&conn.dropped, r, &epoch, state.cursor + 1, seq)?;
                        state.cursor = seq;
                    } else if let Some(Some(since)) = state.joins.front() {
                        // A replay before `joined`.
                        prop_assert_eq!(&epoch, &since.epoch);
                        let after = state.replay.unwrap_or(since.seq);
                        prop_assert!(seq > after, "replay order: {} after {}", seq, after);
                        holes(&conn.dropped, r, &epoch, after + 1, seq)?;
                        state.replay = Some(seq);
                    } else {
                        return Err(TestCaseError::fail(format!(
                            "message {seq} of {room} to a non-member"
                        )));
                    }
                }
                ServerMessage::Joined {
                    room,
                    epoch,
                    seq,
                    recovered,
                    ..
                } => {
                    let r = room_index(&room);
                    let state = &mut conn.reader[r];
                    let Some(since) = state.joins.pop_front() else {
                        return Err(TestCaseError::fail("joined without a join"));
                    };
                    let replay = state.replay.take();
                    if state.member {
                        prop_assert!(since.is_none());
                        prop_assert_eq!(&epoch, &state.epoch);
                        holes(&conn.dropped, r, &epoch, state.cursor + 1, seq + 1)?;
                    } else {
                        match since {
                            Some(since) if recovered => {
                                prop_assert_eq!(&since.epoch, &epoch);
                                let after = replay.unwrap_or(since.seq);
                                prop_assert!(after <= seq);
                                // Replayed: everything after `since.seq` up to `joined.seq`.
                                holes(&conn.dropped, r, &epoch, after + 1, seq + 1)?;
                            }
                            _ => {
                                prop_assert!(!recovered, "recovered without `since`");
                                prop_assert_eq!(replay, None, "replay without recovery");
                            }
                        }
                    }
                    state.member = true;
                    state.epoch = epoch;
                    state.cursor = seq;
                }
                ServerMessage::Left { room, .. } => conn.reader[room_index(&room)].member = false,
                ServerMessage::Welcome { client, .. } => conn.own = Some(client),
                ServerMessage::Join { room, client, .. }
                | ServerMessage::Leave { room, client }
                | ServerMessage::Presence { room, client, .. } => {
                    prop_assert!(
                        conn.reader[room_index(&room)].member,
                        "member event to a non-member"
                    );
                    prop_assert!(Some(&client) != conn.own.as_ref(), "own member event");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Every seq in `from..to` must have been dropped by the driver.
fn holes(
    dropped: &BTreeSet<(usize, String, u64)>,
    room: usize,
    epoch: &str,
    from: u64,
    to: u64,
) -> Result<(), TestCaseError> {
    for seq in from..to {
        prop_assert!(
            dropped.contains(&(room, String::from(epoch), seq)),
            "seq {} of room {} missing but never dropped",
            seq,
            room
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn hub_keeps_rooms_gapless_and_members_in_order_under_any_interleaving(
        ops in proptest::collection::vec(hub_op(), 1..120)
    ) {
        let mut harness = HubHarness::new();
        for slot in 0..3 {
            harness.open();
            harness.apply(HubOp::Hello { conn: slot, slot })?;
        }
        for op in ops {
            harness.apply(op)?;
        }
        for c in 0..harness.conns.len() {
            harness.read(c)?;
            prop_assert!(harness.conns[c].gaps_due.is_empty());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Client sessions against the hub.

#[derive(Debug, Clone)]
enum SimOp {
    Publish {
        peer: usize,
        room: usize,
    },
    Presence {
        peer: usize,
        room: usize,
        value: u8,
    },
    /// Carries up to `count` texts each way on the peer's socket.
    Flush {
        peer: usize,
        count: usize,
    },
    /// The peer's socket dies; the hub notices at once or only later.
    Kill {
        peer: usize,
        noticed: bool,
    },
    /// The server drops up to `count` of the oldest undelivered messages (slow consumer).
    Drop {
        peer: usize,
        count: usize,
    },
    /// Connection attempts fail while the network is down.
    Network {
        peer: usize,
        down: bool,
    },
    Advance {
        ms: u64,
    },
}

fn sim_op(peers: usize) -> impl Strategy<Value = SimOp> {
    let peer = 0..peers;
    let room = 0usize..2;
    prop_oneof![
        6 => (peer.clone(), room.clone()).prop_map(|(peer, room)| SimOp::Publish { peer, room }),
        1 => (peer.clone(), room, any::<u8>())
            .prop_map(|(peer, room, value)| SimOp::Presence { peer, room, value }),
        8 => (peer.clone(), 1usize..8).prop_map(|(peer, count)| SimOp::Flush { peer, count }),
        2 => (peer.clone(), any::<bool>()).prop_map(|(peer, noticed)| SimOp::Kill { peer, noticed }),
        2 => (peer.clone(), 1usize..4).prop_map(|(peer, count)| SimOp::Drop { peer, count }),
        1 => (peer, any::<bool>()).prop_map(|(peer, down)| SimOp::Network { peer, down }),
        3 => prop_oneof![0u64..300, 300u64..3000].prop_map(|ms| SimOp::Advance { ms }),
    ]
}

#[derive(Debug)]
struct Peer {
    session: ClientSession,
    conn: Option<u64>,
    up: VecDeque<String>,
    down: VecDeque<String>,
    network_down: bool,
    /// Application events, in order.
    log: Vec<ClientEvent>,
    /// Accepted publishes: id, room, payload.
    published: Vec<(Id, usize, Value)>,
}

struct Sim {
    hub: Hub<u64>,
    now: Duration,
    next_conn: u64,
    peers: Vec<Peer>,
    /// Connections whose socket died without the hub noticing yet.
    zombies: Vec<u64>,
    next_payload: u64,
}

impl Sim {
    fn new(peers: usize, seed: u64) -> Self {
        let config = HubConfig::default()
            .with_history_size(10_000)
            .with_history_ttl(Duration::from_secs(3600))
            .with_heartbeat(Duration::from_secs(1));
        let peers = (0..peers)
            .map(|i| {
                let mut config = ClientConfig::default();
                if i == 0 {
                    config = config.with_client("p0");
                }
                let mut session = ClientSession::new(config, seed.wrapping_add(i as u64));
                for room in ROOMS {
                    session.join(room, Some(json!({"peer": i}))).unwrap();
                }
                Peer {
                    session,
                    conn: None,
                    up: VecDeque::new(),
                    down: VecDeque::new(),
                    network_down: false,
                    log: Vec::new(),
                    published: Vec::new(),
                }
            })
            .collect();
        let mut sim = Sim {
            hub: Hub::new(config, seed ^ 0xabcd),
            now: Duration::ZERO,
            next_conn: 0,
            peers,
            zombies: Vec::new(),
            next_payload: 0,
        };
        sim.service();
        sim
    }

    fn apply(&mut self, op: SimOp) {
        let now = self.now;
        match op {
            SimOp::Publish { peer, room } => {
                self.next_payload += 1;
                let payload = json!({"peer": peer, "n": self.next_payload});
                let p = &mut self.peers[peer];
                if let Ok(id) = p.session.publish(ROOMS[room], payload.clone()) {
                    p.published.push((id, room, payload));
                }
            }
            SimOp::Presence { peer, room, value } => {
                let _ = self.peers[peer]
                    .session
                    .set_presence(ROOMS[room], json!(value));
            }
            SimOp::Flush { peer, count } => self.flush(peer, count),
            SimOp::Kill { peer, noticed } => {
                let p = &mut self.peers[peer];
                if let Some(conn) = p.conn.take() {
                    p.up.clear();
                    p.down.clear();
                    p.session.disconnected(now);
                    if noticed {
                        self.hub.disconnect(conn, now);
                    } else {
                        self.zombies.push(conn);
                    }
                }
            }
            SimOp::Drop { peer, count } => self.drop_messages(peer, count),
            SimOp::Network { peer, down } => self.peers[peer].network_down = down,
            SimOp::Advance { ms } => {
                // The server's own heartbeat eventually notices dead sockets.
                for conn in core::mem::take(&mut self.zombies) {
                    self.hub.disconnect(conn, now);
                }
                self.advance_to(now + Duration::from_millis(ms));
            }
        }
        self.service();
    }

    fn flush(&mut self, peer: usize, count: usize) {
        let now = self.now;
        let Some(conn) = self.peers[peer].conn else {
            return;
        };
        for _ in 0..count {
            let Some(text) = self.peers[peer].up.pop_front() else {
                break;
            };
            let _ = self.hub.receive(conn, &text, now);
        }
        self.route();
        for _ in 0..count {
            let Some(text) = self.peers[peer].down.pop_front() else {
                break;
            };
            self.peers[peer].session.receive(&text, now);
        }
    }

    fn drop_messages(&mut self, peer: usize, count: usize) {
        let p = &mut self.peers[peer];
        let Some(conn) = p.conn else {
            return;
        };
        let mut run: Vec<(usize, u64)> = Vec::new();
        let mut room = None;
        for (at, text) in p.down.iter().enumerate() {
            let Ok(ServerMessage::Message { room: r, seq, .. }) = serde_json::from_str(text) else {
                continue;
            };
            match (&room, run.last()) {
                (None, _) => {
                    room = Some(r);
                    run.push((at, seq));
                }
                (Some(name), Some((_, last))) if *name == r => {
                    if seq != last + 1 {
                        break;
                    }
                    run.push((at, seq));
                }
                _ => {}
            }
            if run.len() == count {
                break;
            }
        }
        let (Some(room), Some(first), Some(last)) = (room, run.first(), run.last()) else {
            return;
        };
        let (from, to) = (first.1, last.1);
        for (at, _) in run.iter().rev() {
            p.down.remove(*at);
        }
        self.hub.dropped(conn, &room, from, to);
        self.route();
    }

    /// Moves hub deliveries onto the sockets they are for; a dead socket's are lost.
    fn route(&mut self) {
        while let Some((conn, text)) = self.hub.poll_text() {
            if let Some(p) = self.peers.iter_mut().find(|p| p.conn == Some(conn)) {
                p.down.push_back(text);
            }
        }
    }

    /// Plays the driver: opens and closes sockets as told, collects what the sessions send.
    fn service(&mut self) {
        let now = self.now;
        loop {
            let mut busy = false;
            for p in self.peers.iter_mut() {
                while let Some(event) = p.session.poll_event() {
                    busy = true;
                    match event {
                        ClientEvent::Connect { .. } => {
                            if p.network_down {
                                p.session.disconnected(now);
                            } else {
                                let conn = self.next_conn;
                                self.next_conn += 1;
                                self.hub.connect(conn, now);
                                p.conn = Some(conn);
                                p.session.connected(now);
                            }
                        }
                        ClientEvent::CloseSocket { .. } => {
                            if let Some(conn) = p.conn.take() {
                                self.hub.disconnect(conn, now);
                            }
                            p.up.clear();
                            p.down.clear();
                        }
                        other => p.log.push(other),
                    }
                }
                while let Some(text) = p.session.poll_transmit() {
                    assert!(p.conn.is_some(), "text to send without a socket: {text}");
                    p.up.push_back(text);
                }
            }
            if !busy {
                break;
            }
        }
        self.route();
    }

    fn next_deadline(&self) -> Option<Duration> {
        self.peers
            .iter()
            .filter_map(|p| p.session.poll_timeout())
            .chain(self.hub.poll_timeout())
            .min()
    }

    /// Lets time pass, firing every deadline on the way.
    fn advance_to(&mut self, target: Duration) {
        while let Some(next) = self.next_deadline().filter(|t| *t <= target) {
            self.now = self.now.max(next);
            let now = self.now;
            for p in self.peers.iter_mut() {
                if p.session.poll_timeout().is_some_and(|t| t <= now) {
                    p.session.handle_timeout(now);
                }
            }
            if self.hub.poll_timeout().is_some_and(|t| t <= now) {
                self.hub.handle_timeout(now);
            }
            self.service();
        }
        self.now = self.now.max(target);
    }

    fn settled(&self) -> bool {
        self.zombies.is_empty()
            && self.peers.iter().all(|p| {
                p.session.is_open()
                    && p.session.pending_publishes() == 0
                    && ROOMS.iter().all(|r| p.session.is_joined(r))
                    && p.up.is_empty()
                    && p.down.is_empty()
            })
    }

    /// The network heals: runs until every session is online, in its rooms, with nothing
    /// pending.
    fn heal(&mut self) {
        for p in self.peers.iter_mut() {
            p.network_down = false;
        }
        let now = self.now;
        for conn in core::mem::take(&mut self.zombies) {
            self.hub.disconnect(conn, now);
        }
        for _ in 0..1000 {
            for _ in 0..100 {
                for peer in 0..self.peers.len() {
                    self.flush(peer, usize::MAX);
                    self.service();
                }
                if self
                    .peers
                    .iter()
                    .all(|p| p.up.is_empty() && p.down.is_empty())
                {
                    break;
                }
            }
            if self.settled() {
                return;
            }
            let next = self.next_deadline().unwrap_or(self.now);
            self.advance_to(next);
        }
        panic!("the sessions never settled");
    }
}

/// The end state after healing: exactly-once, in-order delivery and one ack per publish.
fn check_sim(sim: &Sim) -> Result<(), TestCaseError> {
    let mut clients = Vec::new();
    for p in &sim.peers {
        for event in &p.log {
            prop_assert!(
                !matches!(
                    event,
                    ClientEvent::Resync { .. }
                        | ClientEvent::PublishRejected { .. }
                        | ClientEvent::JoinRejected { .. }
                        | ClientEvent::ServerError { .. }
                        | ClientEvent::ProtocolError { .. }
                ),
                "unexpected {:?}",
                event
            );
        }
        clients.push(String::from(p.session.client_id().unwrap_or_default()));
    }
    for (r, room) in ROOMS.iter().enumerate() {
        // Every seq of the room, by whoever saw it; all copies must agree.
        let mut by_seq: BTreeMap<u64, (String, Value)> = BTreeMap::new();
        let mut last_seqs = BTreeSet::new();
        for p in &sim.peers {
            let mut first = None;
            let mut seqs = Vec::new();
            for event in &p.log {
                match event {
                    ClientEvent::Joined { room: n, seq, .. } if n == room && first.is_none() => {
                        first = Some(*seq)
                    }
                    ClientEvent::Message {
                        room: n,
                        seq,
                        from,
                        data,
                    } if n == room => {
                        seqs.push(*seq);
                        let copy = (from.clone(), data.clone());
                        if let Some(seen) = by_seq.insert(*seq, copy.clone()) {
                            prop_assert_eq!(seen, copy, "two different messages at one seq");
                        }
                    }
                    _ => {}
                }
            }
            let Some(first) = first else {
                return Err(TestCaseError::fail("a session never joined"));
            };
            let expected: Vec<u64> = (first + 1..=first + seqs.len() as u64).collect();
            prop_assert_eq!(&seqs, &expected, "each message once, in order");
            last_seqs.insert(seqs.last().copied().unwrap_or(first));
        }
        prop_assert!(
            last_seqs.len() <= 1,
            "sessions ended apart: {:?}",
            last_seqs
        );
        let end = last_seqs.into_iter().next().unwrap_or(0);
        prop_assert_eq!(
            by_seq.keys().copied().collect::<Vec<_>>(),
            (1..=end).collect::<Vec<_>>()
        );
        // One ack per publish, and each acked publish is the message at its seq; no other
        // message exists.
        let mut acked = BTreeSet::new();
        for (i, p) in sim.peers.iter().enumerate() {
            for (id, _, payload) in p.published.iter().filter(|x| x.1 == r) {
                let acks: Vec<u64> = p
                    .log
                    .iter()
                    .filter_map(|e| match e {
                        ClientEvent::Ack { id: a, seq, .. } if a == id => Some(*seq),
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(acks.len(), 1, "acks of {:?}: {:?}", id, acks);
                prop_assert_eq!(
                    by_seq.get(&acks[0]),
                    Some(&(clients[i].clone(), payload.clone()))
                );
                prop_assert!(acked.insert(acks[0]));
            }
        }
        prop_assert_eq!(acked.len() as u64, end, "a message nobody published");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn sessions_get_every_message_once_in_order_and_every_publish_acked_once(
        seed in any::<u64>(),
        ops in proptest::collection::vec(sim_op(3), 1..100)
    ) {
        let mut sim = Sim::new(3, seed);
        // Everyone in both rooms before the first publish, so that some session saw each seq.
        sim.heal();
        for op in ops {
            sim.apply(op);
        }
        sim.heal();
        check_sim(&sim)?;
    }
}

#[test]
fn sessions_recover_a_burst_missed_while_offline_and_dropped_while_slow() {
    let mut sim = Sim::new(2, 5);
    sim.heal();
    for _ in 0..3 {
        sim.apply(SimOp::Publish { peer: 0, room: 0 });
    }
    sim.heal();
    // Peer 1 goes away without the hub noticing; peer 0 publishes meanwhile.
    sim.apply(SimOp::Kill {
        peer: 1,
        noticed: false,
    });
    sim.apply(SimOp::Network {
        peer: 1,
        down: true,
    });
    for _ in 0..5 {
        sim.apply(SimOp::Publish { peer: 0, room: 0 });
        sim.apply(SimOp::Publish { peer: 1, room: 1 }); // queued offline
        sim.apply(SimOp::Flush {
            peer: 0,
            count: usize::MAX,
        });
    }
    sim.apply(SimOp::Advance { ms: 5000 });
    sim.heal();
    // Then it is slow: messages are dropped on their way and recovered from history.
    for _ in 0..6 {
        sim.apply(SimOp::Publish { peer: 0, room: 0 });
    }
    sim.apply(SimOp::Flush { peer: 0, count: 6 });
    sim.apply(SimOp::Drop { peer: 1, count: 3 });
    sim.heal();
    check_sim(&sim).unwrap();
    let delivered = sim.peers[1]
        .log
        .iter()
        .filter(|e| matches!(e, ClientEvent::Message { room, .. } if room == ROOMS[0]))
        .count();
    assert_eq!(delivered, 14);
    let reconnects = sim.peers[1]
        .log
        .iter()
        .filter(|e| {
            matches!(
                e,
                ClientEvent::Joined {
                    recovered: true,
                    ..
                }
            )
        })
        .count();
    assert!(reconnects >= 2, "{:?}", sim.peers[1].log);
}
