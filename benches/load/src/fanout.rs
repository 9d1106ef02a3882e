//! Fanout mode: `--members` connections to a `duplex serve` `/ws` (subprotocol `duplex.v1`) say
//! `hello` and join one room; then one more connection, the publisher (also a member), publishes
//! `--messages` chat-like messages one at a time. Each broadcast is timed from the moment its
//! `publish` is written to the moment the last member read the `message` (and the median member);
//! the next publish waits until every member, the publisher included, has it and the publisher
//! has its `ack`.
//!
//! Every member checks that it gets each message exactly once and in order: message `n` of the
//! run (`data.n`, beside a per-run nonce in `data.run`) must follow message `n - 1` with the next
//! `seq`, and the first must carry the seq the server acknowledged to the publisher. A `gap`, an
//! `error`, a close, a duplicate, a message out of order, or one still missing after
//! [`BROADCAST_TIMEOUT`] fails the run. The other room events (`join`, `leave` and `presence` of
//! other members) are read and counted, not checked: a server may leave them out in large rooms.
//!
//! Members are spread over `--threads` event loops; the publisher runs on the main thread, which
//! the member threads wake (a mio `Waker`) when the last member has read a message.
//!
//! Several nodes of one cluster (`--url` repeated, e.g. `duplex serve --broker redis://` nodes):
//! member `i` connects to URL `i mod N`, the publisher to the first. With `--rate R` the publisher
//! sends a publish every `1/R` s without waiting for the previous one to be delivered (at most
//! `--window` publishes not yet read by every member); each is still timed from its publish to
//! the last member reading it. With `--server-pid` per URL, each node's CPU time over the
//! publishes is divided by the deliveries it made (its members' messages, the publisher's own
//! copy on the first node). With `--metrics`, each node's `/metrics` is read before the joins,
//! after them and after the publishes, for its `duplex_broker_round_trips_total`.
//!
//! `--protocol socketio` speaks Socket.IO 4 (Engine.IO v4 over WebSocket, the URL's path
//! `/socket.io/?EIO=4&transport=websocket`) to `benches/peers/node/socketio-room.mjs`: `40` to
//! connect, then the events `join` and `publish` with acks, answered with the same JSON objects
//! as duplex.v1 (`joined`, `ack`, `message` with `seq` and `data`), so every check is the same.
//!
//! `--protocol uws` loads a bare pub/sub server such as `benches/peers/node/uws-pubsub.mjs`
//! (uWebSockets.js: every connection subscribed to one topic when it opens, every text message a
//! connection sends published to the topic, the sender included): no subprotocol, no commands,
//! no envelope. A member counts as joined once its handshake is done; the publisher sends the
//! bare `data` object of each message, and every member (the publisher too, whose own copy stands
//! for the ack) must read those bytes' `run` and `n` exactly once and in order. The seqs checked
//! are then `n + 1`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use duplex_core::{Connection, Event, Message};
use mio::{Events, Poll, Registry, Token, Waker};
use serde::Deserialize;

use crate::client::{Client, Failure, Target};
use crate::pool::{self, READ_BUFFER};
use crate::procfs;
use crate::report::{number, quote};

/// The subprotocol requested on every connection.
pub const SUBPROTOCOL: &str = "duplex.v1";
/// How long a broadcast may take to reach every member.
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the publisher's own `hello` and `join` may take.
const PUBLISHER_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The publisher's poll token for wake-ups from the member threads.
const WAKE: Token = Token(usize::MAX);
/// How often a member thread looks at the shared stop flag.
const TICK: Duration = Duration::from_millis(50);
/// The command id of every `join`; publishes use `FIRST_PUBLISH_ID + n`.
const JOIN_ID: u64 = 1;
const FIRST_PUBLISH_ID: u64 = 2;

/// What a fanout run does.
#[derive(Debug, Clone)]
pub struct FanoutSpec {
    pub room: String,
    pub members: usize,
    pub messages: usize,
    pub threads: usize,
    /// A nonce in every message's `data.run`, so a message of another run is recognised.
    pub run: String,
    pub protocol: Protocol,
    /// Publishes per second; 0: the next publish waits for the previous one to be delivered.
    pub rate: f64,
    /// Publishes sent but not yet read by every member, at most.
    pub window: usize,
    /// How many servers (URLs) the members are spread over.
    pub nodes: usize,
    /// Read each node's `/metrics` for its Redis round trips.
    pub metrics: bool,
    /// Time between every member joined and the first publish, during which the members read
    /// the presence events of the joins (and the nodes finish recording them).
    pub settle: Duration,
}

/// The wire protocol of the servers under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `duplex serve`'s `/ws`, subprotocol `duplex.v1`.
    Duplex,
    /// Socket.IO 4 (Engine.IO v4 over WebSocket), with `benches/peers/node/socketio-room.mjs`.
    SocketIo,
    /// A bare pub/sub server (`benches/peers/node/uws-pubsub.mjs`): each text message is
    /// relayed as it is to every connection.
    Uws,
}

impl Protocol {
    /// The name in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Duplex => "duplex.v1",
            Protocol::SocketIo => "socket.io",
            Protocol::Uws => "uws",
        }
    }
}

/// Time allowed for every member to open its connection.
pub fn open_budget(members: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_millis(members as u64)
}

/// Time allowed, once its connections are open, for a thread's members to have joined.
fn join_budget(members: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_millis(2 * members as u64)
}

/// A room name as `duplex.v1` wants it: `namespace/name` of `[A-Za-z0-9_.:-]`, at most 128 bytes.
pub fn check_room(room: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    };
    match room.split_once('/') {
        Some((ns, name)) if room.len() <= 128 && part_ok(ns) && part_ok(name) => Ok(()),
        _ => Err(format!(
            "--room {room:?}: expected namespace/name of [A-Za-z0-9_.:-], at most 128 bytes"
        )),
    }
}

/// What the member threads and the publisher share.
#[derive(Debug)]
struct Shared {
    members: usize,
    /// How many members (the publisher not included) have read message `n`.
    arrivals: Vec<AtomicUsize>,
    /// The run is over (done, or failed somewhere): member threads close and return.
    stop: AtomicBool,
    waker: Waker,
}

impl Shared {
    fn arrived(&self, n: usize) {
        if self.arrivals[n].fetch_add(1, Ordering::AcqRel) + 1 == self.members {
            self.wake();
        }
    }

    fn arrivals(&self, n: usize) -> usize {
        self.arrivals[n].load(Ordering::Acquire)
    }

    fn wake(&self) {
        let _ = self.waker.wake();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }
}

/// The fields of a server message this mode reads; the others are skipped.
#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default)]
    to_seq: Option<u64>,
}

/// The part of `message.data` that identifies a message of this run.
#[derive(Debug, Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    run: Cow<'a, str>,
    n: usize,
}

/// The start of a message, for error reports.
fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// What a server message meant to the member that read it.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Nothing,
    Joined,
    Message(usize),
    Ack { id: u64, seq: u64 },
}

/// One member's view of the room.
#[derive(Debug)]
struct Member {
    /// Its number in the run (the publisher's is `members`).
    index: usize,
    joined_seq: Option<u64>,
    first_seq: Option<u64>,
    last_seq: u64,
    /// When message `n` was read, for every `n < times.len()`.
    times: Vec<Instant>,
    /// `join`, `leave` and `presence` events of other members.
    notices: u64,
    /// Socket.IO: the server accepted the namespace connection (`40`).
    connected: bool,
}

impl Member {
    fn new(index: usize, messages: usize) -> Member {
        Member {
            index,
            joined_seq: None,
            first_seq: None,
            last_seq: 0,
            times: Vec::with_capacity(messages),
            notices: 0,
            connected: false,
        }
    }

    /// Checks the handshake's subprotocol and queues `hello` and `join` (uws: nothing to send,
    /// the server subscribed the connection when it opened).
    fn start(&mut self, spec: &FanoutSpec, client: &mut Client) -> Result<(), Failure> {
        if spec.protocol == Protocol::Uws {
            self.joined_seq = Some(0);
            return Ok(());
        }
        if spec.protocol == Protocol::SocketIo {
            // The join waits for the server's `40`: an event sent before it may be dropped.
            return client
                .conn
                .send_text("40")
                .map_err(|e| Failure::Protocol(format!("cannot send: {e}")));
        }
        if client.conn.protocol() != Some(SUBPROTOCOL) {
            return Err(Failure::Protocol(format!(
                "the server did not accept the subprotocol {SUBPROTOCOL} (is the URL its /ws?)"
            )));
        }
        let join = format!(
            r#"{{"type":"join","id":{JOIN_ID},"room":"{}","presence":{{"name":"member-{}"}}}}"#,
            spec.room, self.index
        );
        for text in [r#"{"type":"hello"}"#, join.as_str()] {
            client
                .conn
                .send_text(text)
                .map_err(|e| Failure::Protocol(format!("cannot send: {e}")))?;
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        spec: &FanoutSpec,
        conn: &mut Connection,
        event: Event,
        t: Instant,
    ) -> Result<Got, Failure> {
        match event {
            Event::Message(Message::Text(text)) if spec.protocol == Protocol::SocketIo => {
                let mut reply = None;
                let got = self.on_socketio(spec, text.as_str(), t, &mut reply)?;
                if let Some(reply) = reply {
                    conn.send_text(&reply)
                        .map_err(|e| Failure::Protocol(format!("cannot send: {e}")))?;
                }
                Ok(got)
            }
            Event::Message(Message::Text(text)) if spec.protocol == Protocol::Uws => {
                self.on_bare(spec, text.as_str(), t)
            }
            Event::Message(Message::Text(text)) => self.on_text(spec, text.as_str(), t),
            Event::Message(Message::Binary(b)) => Err(Failure::Protocol(format!(
                "a binary message of {} bytes (duplex.v1 messages are JSON text)",
                b.len()
            ))),
            Event::Error(e) => Err(Failure::Protocol(format!("connection failed: {e}"))),
            Event::Closed(closed) => Err(Failure::Protocol(format!(
                "the server closed the connection: {} {:?}",
                closed.code, closed.reason
            ))),
            _ => Ok(Got::Nothing),
        }
    }

    /// An Engine.IO v4 packet: `0` open, `2` ping (answered `3`), `40` namespace connected (the
    /// join is sent then), `42["message",OBJ]` an event, `43<id>[OBJ]` an ack; `OBJ` is read as
    /// the duplex.v1 message it mirrors. What to send back goes in `reply`.
    fn on_socketio(
        &mut self,
        spec: &FanoutSpec,
        text: &str,
        t: Instant,
        reply: &mut Option<String>,
    ) -> Result<Got, Failure> {
        let unexpected = || Failure::Protocol(format!("unexpected {:?}", excerpt(text)));
        if text == "2" {
            *reply = Some("3".into());
            return Ok(Got::Nothing);
        }
        if text.starts_with('0') {
            return Ok(Got::Nothing);
        }
        if text.starts_with("40") {
            if self.connected {
                return Err(unexpected());
            }
            self.connected = true;
            *reply = Some(format!(
                r#"42{JOIN_ID}["join",{{"id":{JOIN_ID},"room":"{}"}}]"#,
                spec.room
            ));
            return Ok(Got::Nothing);
        }
        if let Some(rest) = text.strip_prefix(r#"42["message","#) {
            let inner = rest.strip_suffix(']').ok_or_else(unexpected)?;
            return self.on_text(spec, inner, t);
        }
        if let Some(rest) = text.strip_prefix("43") {
            let inner = rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or_else(unexpected)?;
            return self.on_text(spec, inner, t);
        }
        Err(unexpected())
    }

    /// A bare pub/sub message: the `data` object the publisher sent, as it is.
    fn on_bare(&mut self, spec: &FanoutSpec, text: &str, t: Instant) -> Result<Got, Failure> {
        let data: Data<'_> = serde_json::from_str(text)
            .map_err(|e| Failure::Protocol(format!("cannot read {:?}: {e}", excerpt(text))))?;
        let seq = data.n as u64 + 1;
        self.on_message(spec, seq, &data, text, t)
    }

    fn on_text(&mut self, spec: &FanoutSpec, text: &str, t: Instant) -> Result<Got, Failure> {
        let m: Incoming<'_> = serde_json::from_str(text)
            .map_err(|e| Failure::Protocol(format!("cannot read {:?}: {e}", excerpt(text))))?;
        let in_room = m.room.as_deref() == Some(spec.room.as_str());
        let missing = |field: &str| Failure::Protocol(format!("no {field} in {:?}", excerpt(text)));
        match m.kind.as_ref() {
            "welcome" | "pong" => Ok(Got::Nothing),
            "join" | "leave" | "presence" => {
                self.notices += 1;
                Ok(Got::Nothing)
            }
            "joined" if in_room && m.id == Some(JOIN_ID) => {
                self.joined_seq = Some(m.seq.ok_or_else(|| missing("seq"))?);
                Ok(Got::Joined)
            }
            "ack" => Ok(Got::Ack {
                id: m.id.ok_or_else(|| missing("id"))?,
                seq: m.seq.ok_or_else(|| missing("seq"))?,
            }),
            "message" if in_room => {
                let seq = m.seq.ok_or_else(|| missing("seq"))?;
                let data = m.data.as_ref().ok_or_else(|| missing("data"))?;
                self.on_message(spec, seq, data, text, t)
            }
            "gap" => Err(Failure::Delivery(format!(
                "the server dropped messages {}..={} of {} for this member (gap)",
                m.from_seq.unwrap_or(0),
                m.to_seq.unwrap_or(0),
                m.room.as_deref().unwrap_or("?")
            ))),
            "error" => Err(Failure::Protocol(format!(
                "the server refused a command: {} ({})",
                m.code.as_deref().unwrap_or("?"),
                m.message.as_deref().unwrap_or("")
            ))),
            _ => Err(Failure::Protocol(format!("unexpected {:?}", excerpt(text)))),
        }
    }

    fn on_message(
        &mut self,
        spec: &FanoutSpec,
        seq: u64,
        data: &Data<'_>,
        text: &str,
        t: Instant,
    ) -> Result<Got, Failure> {
        let Some(joined) = self.joined_seq else {
            return Err(Failure::Delivery(format!(
                "message seq {seq} before `joined`"
            )));
        };
        if data.run != spec.run {
            return Err(Failure::Delivery(format!(
                "seq {seq} was not published by this run (another publisher in {}?): {:?}",
                spec.room,
                excerpt(text)
            )));
        }
        let expected = self.times.len();
        let n = data.n;
        if n != expected {
            return Err(Failure::Delivery(if n < expected {
                format!(
                    "message {n} (seq {seq}) arrived again, after message {}",
                    expected - 1
                )
            } else {
                format!("message {n} (seq {seq}) arrived before message {expected}")
            }));
        }
        if n >= spec.messages {
            return Err(Failure::Delivery(format!(
                "message {n} (seq {seq}), but the run publishes {} messages",
                spec.messages
            )));
        }
        match self.first_seq {
            None if seq <= joined => {
                return Err(Failure::Delivery(format!(
                    "message {n} has seq {seq}, not after joined.seq {joined}"
                )));
            }
            None => self.first_seq = Some(seq),
            Some(_) if seq != self.last_seq + 1 => {
                return Err(Failure::Delivery(format!(
                    "message {n} has seq {seq} after seq {}",
                    self.last_seq
                )));
            }
            Some(_) => {}
        }
        self.last_seq = seq;
        self.times.push(t);
        Ok(Got::Message(n))
    }
}

fn member_error(index: usize, failure: &Failure) -> String {
    format!("member {index}: {failure}")
}

/// A member thread: opens the connections `indices`, joins them, reports ready, then reads
/// everything they receive until the run stops. A failure also stops the run.
fn worker(
    spec: &FanoutSpec,
    shared: &Shared,
    targets: &[Target],
    indices: &[usize],
    open_deadline: Instant,
    ready: &Sender<Result<(), String>>,
) -> Result<Vec<Member>, String> {
    let result = serve_members(spec, shared, targets, indices, open_deadline, ready);
    if result.is_err() {
        shared.stop();
    }
    result
}

fn serve_members(
    spec: &FanoutSpec,
    shared: &Shared,
    targets: &[Target],
    indices: &[usize],
    open_deadline: Instant,
    ready: &Sender<Result<(), String>>,
) -> Result<Vec<Member>, String> {
    let pool::Opened {
        mut poll,
        mut events,
        mut buf,
        mut clients,
    } = pool::open_for_worker(targets, indices, open_deadline, ready)?;
    let mut members: Vec<Member> = indices
        .iter()
        .map(|&index| Member::new(index, spec.messages))
        .collect();
    for (i, (client, member)) in clients.iter_mut().zip(&mut members).enumerate() {
        member
            .start(spec, client)
            .and_then(|()| client.flush(poll.registry(), Token(i)))
            .map_err(|e| member_error(member.index, &e))?;
    }
    let join_deadline = Instant::now() + join_budget(spec.members);
    let mut joined = members.iter().filter(|m| m.joined_seq.is_some()).count();
    let mut is_ready = false;
    while !shared.stopped() {
        if !is_ready && Instant::now() >= join_deadline {
            return Err(format!(
                "only {joined} of this thread's {} members joined {} within {:.0} s of opening",
                members.len(),
                spec.room,
                join_budget(spec.members).as_secs_f64()
            ));
        }
        pool::wait(&mut poll, &mut events, Some(TICK))?;
        for event in events.iter() {
            let i = event.token().0;
            let member = &mut members[i];
            let was_joined = member.joined_seq.is_some();
            clients[i]
                .service(
                    pool::target_of(targets, member.index),
                    poll.registry(),
                    event,
                    &mut buf,
                    |conn, event, t| match member.on_event(spec, conn, event, t)? {
                        Got::Message(n) => {
                            shared.arrived(n);
                            Ok(())
                        }
                        Got::Ack { id, .. } => Err(Failure::Protocol(format!(
                            "an ack for command {id}, which this member did not send"
                        ))),
                        Got::Joined | Got::Nothing => Ok(()),
                    },
                )
                .map_err(|e| member_error(member.index, &e))?;
            if !was_joined && member.joined_seq.is_some() {
                joined += 1;
            }
        }
        if !is_ready && joined == members.len() {
            is_ready = true;
            let _ = ready.send(Ok(()));
            shared.wake();
        }
    }
    pool::close_all(&mut poll, &mut events, &targets[0], clients, &mut buf);
    Ok(members)
}

/// The words of the publisher's chat lines.
const WORDS: [&str; 24] = [
    "deploy", "merge", "review", "the", "build", "is", "green", "again", "lunch?", "ship", "it",
    "café", "ok", "thanks", "see", "logs", "at", "standup", "in", "five", "minutes", "rollback",
    "done", "👍",
];

/// The `publish` command of message `n`: chat-like `data` of about 150 bytes.
fn publish_text(spec: &FanoutSpec, n: usize) -> (String, usize) {
    let words = 9 + (n * 7) % 8;
    let text: Vec<&str> = (0..words)
        .map(|k| WORDS[(n * 31 + k * 17) % WORDS.len()])
        .collect();
    let data = format!(
        r#"{{"run":"{}","n":{n},"name":"publisher","text":"{}","ts":{},"mentions":["member-{}"]}}"#,
        spec.run,
        text.join(" "),
        1_732_470_000_000u64 + n as u64 * 1375,
        (n * 7919) % spec.members.max(1)
    );
    let len = data.len();
    let id = FIRST_PUBLISH_ID + n as u64;
    let text = match spec.protocol {
        Protocol::Duplex => format!(
            r#"{{"type":"publish","id":{id},"room":"{}","data":{data}}}"#,
            spec.room
        ),
        Protocol::SocketIo => format!(
            r#"42{id}["publish",{{"id":{id},"room":"{}","data":{data}}}]"#,
            spec.room
        ),
        Protocol::Uws => data,
    };
    (text, len)
}

/// What the publisher measured.
#[derive(Debug)]
struct Published {
    /// When each publish was written.
    sent: Vec<Instant>,
    /// The seq of each publish, from its `ack`.
    acks: Vec<u64>,
    /// Bytes of each message's `data`.
    data_bytes: Vec<usize>,
    /// From starting the member threads to every member joined.
    join: Duration,
    /// From the first publish to the last member reading the last message.
    broadcast: Duration,
    /// Per node (URL), in order.
    nodes: Vec<NodeSample>,
    /// CPU over the publishes, in % of one core: this process's, and every other process's
    /// but the nodes' (the interference).
    load_cpu_percent: Option<f64>,
    other_cpu_percent: Option<f64>,
}

/// One server (node) of the run, around the publishes.
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    pub url: String,
    pub pid: Option<u32>,
    /// Connections to it: its members, and the publisher on the first node.
    pub connections: usize,
    /// The messages it delivered: `connections` × messages.
    pub deliveries: u64,
    /// utime + stime over the publishes (first publish to last delivery read).
    pub cpu_seconds: Option<f64>,
    /// ... of which stime (in the kernel).
    pub cpu_system_seconds: Option<f64>,
    pub rss_joined: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub hwm_bytes: Option<u64>,
    /// `duplex_broker_round_trips_total` gained during the hellos and joins.
    pub round_trips_join: Option<u64>,
    /// ... and during the publishes.
    pub round_trips_publish: Option<u64>,
}

impl NodeSample {
    /// Server CPU per delivered message, in microseconds.
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        self.cpu_seconds
            .filter(|_| self.deliveries > 0)
            .map(|s| s * 1e6 / self.deliveries as f64)
    }
}

/// How many of `members` (numbered from 0, member `i` on node `i mod nodes`) are on `node`.
fn members_on(members: usize, nodes: usize, node: usize) -> usize {
    members / nodes + usize::from(node < members % nodes)
}

/// `duplex_broker_round_trips_total` of the server at `addr` (`GET /metrics`) less its
/// `duplex_broker_heartbeats_total`; `None` when the server has no broker figures (single-node
/// mode).
pub fn broker_round_trips(addr: SocketAddr) -> Result<Option<u64>, String> {
    let fail = |e: std::io::Error| format!("GET http://{addr}/metrics: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(fail)?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut body = String::new();
    stream.read_to_string(&mut body).map_err(fail)?;
    if !body.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "GET http://{addr}/metrics: {:?}",
            excerpt(body.lines().next().unwrap_or(""))
        ));
    }
    let metric = |name: &str| {
        body.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
                .map(|v| v as u64)
        })
    };
    // The node's heartbeats (one every 2 s) are no work of the run's.
    let heartbeats = metric("duplex_broker_heartbeats_total").unwrap_or(0);
    Ok(metric("duplex_broker_round_trips_total").map(|trips| trips.saturating_sub(heartbeats)))
}

/// Every node's round trips so far (all `None` without `--metrics`).
fn all_round_trips(spec: &FanoutSpec, targets: &[Target]) -> Result<Vec<Option<u64>>, String> {
    targets
        .iter()
        .map(|t| {
            if spec.metrics {
                broker_round_trips(t.addr)
            } else {
                Ok(None)
            }
        })
        .collect()
}

/// The publisher: a member that also publishes, on the main thread's poll.
#[derive(Debug)]
struct Publisher<'a> {
    spec: &'a FanoutSpec,
    target: &'a Target,
    poll: Poll,
    events: Events,
    buf: Vec<u8>,
    client: Client,
    me: Member,
    acks: Vec<Option<u64>>,
}

impl Publisher<'_> {
    /// Reads the publisher's connection for at most `timeout` (less when something arrives or a
    /// member thread wakes it).
    fn poll_once(&mut self, timeout: Duration) -> Result<(), String> {
        pool::wait(&mut self.poll, &mut self.events, Some(timeout))?;
        let Publisher {
            spec,
            target,
            poll,
            events,
            buf,
            client,
            me,
            acks,
        } = self;
        let registry: &Registry = poll.registry();
        for event in events.iter() {
            if event.token() == WAKE {
                continue;
            }
            client
                .service(target, registry, event, buf, |conn, event, t| {
                    let got = me.on_event(spec, conn, event, t)?;
                    // A bare pub/sub server acknowledges nothing: the publisher's own copy
                    // tells that the server took the publish.
                    let got = match got {
                        Got::Message(n) if spec.protocol == Protocol::Uws => Got::Ack {
                            id: FIRST_PUBLISH_ID + n as u64,
                            seq: n as u64 + 1,
                        },
                        other => other,
                    };
                    if let Got::Ack { id, seq } = got {
                        let slot = id
                            .checked_sub(FIRST_PUBLISH_ID)
                            .and_then(|n| acks.get_mut(n as usize))
                            .ok_or_else(|| {
                                Failure::Protocol(format!("an ack for unknown command {id}"))
                            })?;
                        if slot.replace(seq).is_some() {
                            return Err(Failure::Delivery(format!(
                                "a second ack for command {id}"
                            )));
                        }
                    }
                    Ok(())
                })
                .map_err(|e| format!("the publisher: {e}"))?;
        }
        Ok(())
    }

    /// Waits (reading the publisher's connection meanwhile) until `done` holds; fails with
    /// `what()` at `deadline`, or when a member thread stopped the run.
    fn wait_until(
        &mut self,
        shared: Option<&Shared>,
        deadline: Instant,
        mut done: impl FnMut(&Self) -> Result<bool, String>,
        what: impl Fn(&Self) -> String,
    ) -> Result<(), String> {
        loop {
            if done(self)? {
                return Ok(());
            }
            if shared.is_some_and(Shared::stopped) {
                return Err("the run was stopped".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(what(self));
            }
            self.poll_once(deadline - now)?;
        }
    }

    /// `hello` and `join`, before the members start.
    fn join(&mut self) -> Result<(), String> {
        self.me
            .start(self.spec, &mut self.client)
            .and_then(|()| self.client.flush(self.poll.registry(), Token(0)))
            .map_err(|e| format!("the publisher: {e}"))?;
        self.wait_until(
            None,
            Instant::now() + PUBLISHER_JOIN_TIMEOUT,
            |p| Ok(p.me.joined_seq.is_some()),
            |p| {
                format!(
                    "the publisher did not join {} within {} s",
                    p.spec.room,
                    PUBLISHER_JOIN_TIMEOUT.as_secs()
                )
            },
        )
    }

    /// Message `n` has reached every member and the publisher, which has its ack.
    fn delivered(&self, shared: &Shared, n: usize) -> bool {
        shared.arrivals(n) >= shared.members && self.acks[n].is_some() && self.me.times.len() > n
    }

    fn timeout_report(&self, shared: &Shared, n: usize) -> String {
        let got = |yes: bool| if yes { "received" } else { "missing" };
        format!(
            "message {n}: {} of {} members read it within {} s (publisher: ack {}, own copy {})",
            shared.arrivals(n),
            shared.members,
            BROADCAST_TIMEOUT.as_secs(),
            got(self.acks[n].is_some()),
            got(self.me.times.len() > n),
        )
    }

    /// Waits for every member thread to be ready, then publishes the messages: one at a time, or
    /// at `spec.rate` with at most `spec.window` not yet delivered.
    fn run(
        &mut self,
        shared: &Shared,
        ready: &Receiver<Result<(), String>>,
        targets: &[Target],
        pids: &[u32],
        round_trips_start: &[Option<u64>],
        ready_deadline: Instant,
    ) -> Result<Published, String> {
        let spec = self.spec;
        let started = Instant::now();
        let mut ready_threads = 0;
        self.wait_until(
            Some(shared),
            ready_deadline,
            |_| loop {
                match ready.try_recv() {
                    Ok(Ok(())) => ready_threads += 1,
                    Ok(Err(e)) => return Err(e),
                    Err(TryRecvError::Empty) => return Ok(ready_threads == spec.threads),
                    Err(TryRecvError::Disconnected) => {
                        return Err("a member thread ended before its members joined".into());
                    }
                }
            },
            |_| format!("the members did not all join {} in time", spec.room),
        )?;
        let join = started.elapsed();
        let settled = Instant::now() + spec.settle;
        loop {
            let now = Instant::now();
            if now >= settled {
                break;
            }
            if shared.stopped() {
                return Err("the run was stopped".into());
            }
            self.poll_once(settled - now)?;
        }
        let round_trips_joined = all_round_trips(spec, targets)?;
        let sample = |pid: u32| -> Result<((u64, u64), procfs::Memory), String> {
            let describe = |e: std::io::Error| format!("cannot read /proc/{pid}: {e}");
            Ok((
                procfs::cpu_ticks_split(Some(pid)).map_err(describe)?,
                procfs::memory(Some(pid)).map_err(describe)?,
            ))
        };
        let before: Vec<((u64, u64), procfs::Memory)> = pids
            .iter()
            .map(|&pid| sample(pid))
            .collect::<Result<_, _>>()?;
        let machine_before = procfs::machine_busy_ticks().ok();
        let load_before = procfs::cpu_ticks(None).ok();

        let mut sent = Vec::with_capacity(spec.messages);
        let mut data_bytes = Vec::with_capacity(spec.messages);
        let interval = (spec.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / spec.rate));
        let first = Instant::now();
        let mut delivered = 0;
        while delivered < spec.messages {
            while delivered < sent.len() && self.delivered(shared, delivered) {
                delivered += 1;
            }
            if delivered == spec.messages {
                break;
            }
            if shared.stopped() {
                return Err("the run was stopped".into());
            }
            let now = Instant::now();
            let n = sent.len();
            let mut next_due = None;
            if n < spec.messages && n - delivered < spec.window {
                let due = interval.map_or(now, |i| first + i.mul_f64(n as f64));
                if now >= due {
                    let (text, len) = publish_text(spec, n);
                    data_bytes.push(len);
                    let t = Instant::now();
                    self.client
                        .conn
                        .send_text(&text)
                        .map_err(|e| format!("the publisher cannot send: {e}"))?;
                    self.client
                        .flush(self.poll.registry(), Token(0))
                        .map_err(|e| format!("the publisher: {e}"))?;
                    sent.push(t);
                    continue;
                }
                next_due = Some(due);
            }
            // The oldest publish not yet delivered, if any, bounds the wait.
            let deadline = sent.get(delivered).map(|&t| t + BROADCAST_TIMEOUT);
            if deadline.is_some_and(|d| now >= d) {
                return Err(self.timeout_report(shared, delivered));
            }
            let until = match (next_due, deadline) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => now + TICK,
            };
            self.poll_once(until.saturating_duration_since(now))?;
        }
        let broadcast = first.elapsed();
        let after: Vec<((u64, u64), procfs::Memory)> = pids
            .iter()
            .map(|&pid| sample(pid))
            .collect::<Result<_, _>>()?;
        let machine_after = procfs::machine_busy_ticks().ok();
        let load_after = procfs::cpu_ticks(None).ok();
        let round_trips_end = all_round_trips(spec, targets)?;
        let ticks = procfs::clock_ticks_per_second() as f64;
        let diff = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
        let percent = |t: u64| t as f64 / ticks * 100.0 / broadcast.as_secs_f64().max(1e-9);
        let load_ticks = diff(load_before, load_after);
        let server_ticks: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a.0.0 + a.0.1).saturating_sub(b.0.0 + b.0.1))
            .sum();
        let other_ticks = diff(machine_before, machine_after)
            .zip(load_ticks)
            .map(|(m, l)| m.saturating_sub(l + server_ticks));
        let nodes = (0..spec.nodes)
            .map(|k| {
                let connections = members_on(spec.members, spec.nodes, k) + usize::from(k == 0);
                let (b, a) = (before.get(k), after.get(k));
                NodeSample {
                    url: String::new(),
                    pid: pids.get(k).copied(),
                    connections,
                    deliveries: (connections * spec.messages) as u64,
                    cpu_seconds: b
                        .zip(a)
                        .map(|(b, a)| (a.0.0 + a.0.1).saturating_sub(b.0.0 + b.0.1) as f64 / ticks),
                    cpu_system_seconds: b
                        .zip(a)
                        .map(|(b, a)| a.0.1.saturating_sub(b.0.1) as f64 / ticks),
                    rss_joined: b.map(|b| b.1.rss),
                    rss_bytes: a.map(|a| a.1.rss),
                    hwm_bytes: a.map(|a| a.1.hwm),
                    round_trips_join: diff(round_trips_start[k], round_trips_joined[k]),
                    round_trips_publish: diff(round_trips_joined[k], round_trips_end[k]),
                }
            })
            .collect();
        Ok(Published {
            sent,
            acks: self.acks.iter().map(|a| a.unwrap_or(0)).collect(),
            data_bytes,
            join,
            broadcast,
            nodes,
            load_cpu_percent: load_ticks.map(percent),
            other_cpu_percent: other_ticks
                .filter(|_| pids.len() == spec.nodes)
                .map(percent),
        })
    }
}

/// Minimum, median, 99th percentile and maximum of some durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[Duration]) -> Spread {
        let mut v: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Spread::default();
        }
        // Nearest rank: the smallest value at or above 99 % of the values.
        let rank = (v.len() * 99).div_ceil(100).max(1);
        Spread {
            min: v[0],
            median: median(&v),
            p99: v[rank - 1],
            max: v[v.len() - 1],
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"min\":{},\"median\":{},\"p99\":{},\"max\":{}}}",
            number(self.min),
            number(self.median),
            number(self.p99),
            number(self.max)
        )
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The figures of a fanout run.
#[derive(Debug, Clone)]
pub struct FanoutSummary {
    pub label: String,
    pub url: String,
    pub room: String,
    pub protocol: Protocol,
    pub members: usize,
    pub messages: usize,
    pub threads: usize,
    /// Publishes per second asked for (0: one at a time) and the window.
    pub rate: f64,
    pub window: usize,
    /// Mean bytes of a message's `data`.
    pub data_bytes: f64,
    pub join: Duration,
    /// Per message: from the publish to the last member reading it.
    pub last: Vec<Duration>,
    /// Per message: from the publish to the median member reading it.
    pub median_member: Vec<Duration>,
    /// From the first publish to the last.
    pub publishing: Duration,
    pub broadcast: Duration,
    /// `join`, `leave` and `presence` events the members read.
    pub notices: u64,
    pub nodes: Vec<NodeSample>,
    /// This process's CPU over the publishes, in % of one core.
    pub load_cpu_percent: Option<f64>,
    /// Every other process's CPU over the publishes (the nodes' not included), in % of one
    /// core; only with every node's pid.
    pub other_cpu_percent: Option<f64>,
}

impl FanoutSummary {
    pub fn deliveries(&self) -> u64 {
        (self.members * self.messages) as u64
    }

    /// Deliveries per second of fan-out time (the sum, over the messages, of the time to reach
    /// the last member).
    pub fn deliveries_per_second(&self) -> f64 {
        let busy: f64 = self.last.iter().map(Duration::as_secs_f64).sum();
        if busy > 0.0 {
            self.deliveries() as f64 / busy
        } else {
            0.0
        }
    }

    /// Deliveries per second of the whole broadcast (first publish to last delivery read).
    pub fn deliveries_per_second_wall(&self) -> f64 {
        let s = self.broadcast.as_secs_f64();
        if s > 0.0 {
            self.deliveries() as f64 / s
        } else {
            0.0
        }
    }

    /// Publishes per second actually sent (first to last publish).
    pub fn publish_rate(&self) -> f64 {
        let s = self.publishing.as_secs_f64();
        if self.messages > 1 && s > 0.0 {
            (self.messages - 1) as f64 / s
        } else {
            0.0
        }
    }

    /// Server CPU seconds over all nodes, when every node's pid was given.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.nodes.iter().map(|n| n.cpu_seconds).sum()
    }

    /// Server CPU per delivered message over all nodes, in microseconds.
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        let deliveries: u64 = self.nodes.iter().map(|n| n.deliveries).sum();
        self.cpu_seconds()
            .filter(|_| deliveries > 0)
            .map(|s| s * 1e6 / deliveries as f64)
    }

    fn round_trips(&self, of: impl Fn(&NodeSample) -> Option<u64>) -> Option<u64> {
        self.nodes.iter().map(of).sum()
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", self.label)
        };
        let last = Spread::of(&self.last);
        let mid = Spread::of(&self.median_member);
        let pace = if self.rate > 0.0 {
            format!(
                "at {:.0}/s asked ({:.0}/s sent, window {})",
                self.rate,
                self.publish_rate(),
                if self.window == usize::MAX {
                    "unbounded".to_string()
                } else {
                    self.window.to_string()
                }
            )
        } else if self.window > 1 {
            format!("{} at a time", self.window)
        } else {
            "one at a time".to_string()
        };
        let _ = writeln!(
            out,
            "{label}fanout {}: {} members in {} over {} node(s), {} messages of {:.0} B (data), {pace}, {} thread(s)",
            self.url,
            self.members,
            self.room,
            self.nodes.len(),
            self.messages,
            self.data_bytes,
            self.threads
        );
        let _ = writeln!(
            out,
            "  joined in {:.2} s; join/leave/presence events read by the members: {}",
            self.join.as_secs_f64(),
            self.notices
        );
        let _ = writeln!(
            out,
            "  fan-out to the last member: min {:.2} ms, median {:.2} ms, p99 {:.2} ms, max {:.2} ms; to the median member: median {:.2} ms",
            last.min, last.median, last.p99, last.max, mid.median
        );
        if self.messages <= 100 {
            let per: Vec<String> = self
                .last
                .iter()
                .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
                .collect();
            let _ = writeln!(out, "  per broadcast (ms): {}", per.join(" "));
        }
        let _ = writeln!(
            out,
            "  deliveries: {}, all in order, exactly once ({:.0}/s of fan-out time; {:.0}/s over {:.2} s from the first publish to the last delivery)",
            self.deliveries(),
            self.deliveries_per_second(),
            self.deliveries_per_second_wall(),
            self.broadcast.as_secs_f64()
        );
        for (k, n) in self.nodes.iter().enumerate() {
            let mut line = format!(
                "  node {k} {}: {} connections, {} deliveries",
                n.url, n.connections, n.deliveries
            );
            if let (Some(cpu), Some(per)) = (n.cpu_seconds, n.cpu_us_per_delivery()) {
                let _ = write!(
                    line,
                    "; CPU {cpu:.2} s over the publishes ({:.2} s in the kernel), {per:.2} µs per delivery",
                    n.cpu_system_seconds.unwrap_or(0.0)
                );
            }
            if let (Some(joined), Some(rss), Some(hwm)) = (n.rss_joined, n.rss_bytes, n.hwm_bytes) {
                let _ = write!(
                    line,
                    "; RSS {:.1} MiB with all joined, {:.1} MiB after (peak {:.1} MiB)",
                    joined as f64 / 1048576.0,
                    rss as f64 / 1048576.0,
                    hwm as f64 / 1048576.0
                );
            }
            if let (Some(j), Some(p)) = (n.round_trips_join, n.round_trips_publish) {
                let _ = write!(
                    line,
                    "; Redis round trips: {j} over the joins, {p} over the publishes"
                );
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(per) = self.cpu_us_per_delivery() {
            let _ = writeln!(
                out,
                "  all nodes: {:.2} s of CPU, {per:.2} µs per delivery",
                self.cpu_seconds().unwrap_or(0.0)
            );
        }
        if let Some(load) = self.load_cpu_percent {
            let other = self
                .other_cpu_percent
                .map_or_else(String::new, |o| format!("; other processes {o:.0}%"));
            let _ = writeln!(
                out,
                "  over the publishes, in % of one core: load generator {load:.0}%{other}"
            );
        }
        if let (Some(j), Some(p)) = (
            self.round_trips(|n| n.round_trips_join),
            self.round_trips(|n| n.round_trips_publish),
        ) {
            let _ = writeln!(
                out,
                "  Redis round trips, all nodes: {:.2} per connection's hello + join, {:.2} per publish",
                j as f64 / (self.members + 1) as f64,
                p as f64 / self.messages as f64
            );
        }
        let _ = writeln!(
            out,
            "  | members | messages | fan-out min | median | p99 | max | median member | deliveries/s |"
        );
        let _ = writeln!(
            out,
            "  | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} |",
            self.members,
            self.messages,
            last.min,
            last.median,
            last.p99,
            last.max,
            mid.median,
            if self.rate > 0.0 || self.window > 1 {
                self.deliveries_per_second_wall()
            } else {
                self.deliveries_per_second()
            }
        );
        out
    }

    pub fn json(&self) -> String {
        let ms = |d: &Duration| number(d.as_secs_f64() * 1e3);
        let list = |v: &[Duration]| v.iter().map(ms).collect::<Vec<_>>().join(",");
        let opt_f = |v: Option<f64>| v.map_or_else(|| "null".into(), number);
        let opt_u = |v: Option<u64>| v.map_or_else(|| "null".into(), |v| v.to_string());
        let first = self.nodes.first();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{{\"url\":{},\"pid\":{},\"connections\":{},\"deliveries\":{},\"cpu_s\":{},\
                     \"cpu_system_s\":{},\
                     \"cpu_us_per_delivery\":{},\"rss_joined_bytes\":{},\"rss_bytes\":{},\
                     \"hwm_bytes\":{},\"round_trips_join\":{},\"round_trips_publish\":{}}}",
                    quote(&n.url),
                    opt_u(n.pid.map(u64::from)),
                    n.connections,
                    n.deliveries,
                    opt_f(n.cpu_seconds),
                    opt_f(n.cpu_system_seconds),
                    opt_f(n.cpu_us_per_delivery()),
                    opt_u(n.rss_joined),
                    opt_u(n.rss_bytes),
                    opt_u(n.hwm_bytes),
                    opt_u(n.round_trips_join),
                    opt_u(n.round_trips_publish),
                )
            })
            .collect();
        let protocol = self.protocol.name();
        format!(
            "{{\"mode\":\"fanout\",\"label\":{},\"url\":{},\"protocol\":\"{protocol}\",\"room\":{},\
             \"members\":{},\"messages\":{},\"threads\":{},\"rate\":{},\"window\":{},\
             \"publish_rate\":{},\"data_bytes\":{},\"join_s\":{},\"fanout_ms\":{},\
             \"median_member_ms\":{},\"per_message_ms\":[{}],\"deliveries\":{},\
             \"deliveries_per_s\":{},\"deliveries_per_s_wall\":{},\"broadcast_s\":{},\
             \"notices\":{},\"server_cpu_s\":{},\"cpu_us_per_delivery\":{},\
             \"round_trips_join\":{},\"round_trips_publish\":{},\"server_rss_joined_bytes\":{},\
             \"server_rss_bytes\":{},\"server_hwm_bytes\":{},\"load_cpu_percent\":{},\
             \"other_cpu_percent\":{},\"nodes\":[{}]}}",
            quote(&self.label),
            quote(&self.url),
            quote(&self.room),
            self.members,
            self.messages,
            self.threads,
            number(self.rate),
            self.window.min(u32::MAX as usize),
            number(self.publish_rate()),
            number(self.data_bytes),
            number(self.join.as_secs_f64()),
            Spread::of(&self.last).json(),
            Spread::of(&self.median_member).json(),
            list(&self.last),
            self.deliveries(),
            number(self.deliveries_per_second()),
            number(self.deliveries_per_second_wall()),
            number(self.broadcast.as_secs_f64()),
            self.notices,
            opt_f(self.cpu_seconds()),
            opt_f(self.cpu_us_per_delivery()),
            opt_u(self.round_trips(|n| n.round_trips_join)),
            opt_u(self.round_trips(|n| n.round_trips_publish)),
            opt_u(first.and_then(|n| n.rss_joined)),
            opt_u(first.and_then(|n| n.rss_bytes)),
            opt_u(first.and_then(|n| n.hwm_bytes)),
            opt_f(self.load_cpu_percent),
            opt_f(self.other_cpu_percent),
            nodes.join(","),
        )
    }
}

/// Checks what every member read against what was published, and computes the figures.
fn judge(
    spec: &FanoutSpec,
    published: &Published,
    members: &[Member],
    publisher: &Member,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let first = published.acks[0];
    for (n, &seq) in published.acks.iter().enumerate() {
        if seq != first + n as u64 {
            return Err(format!(
                "the publishes were given seqs {:?}, not consecutive (another publisher in {}?)",
                published.acks, spec.room
            ));
        }
    }
    if members.len() != spec.members {
        return Err(format!(
            "{} members reported, expected {}",
            members.len(),
            spec.members
        ));
    }
    for m in members.iter().chain([publisher]) {
        if m.times.len() != spec.messages {
            return Err(format!(
                "member {}: read {} of the {} messages",
                m.index,
                m.times.len(),
                spec.messages
            ));
        }
        if m.first_seq != Some(first) {
            return Err(format!(
                "member {}: its first message had seq {:?}, the publisher's ack says {first}",
                m.index, m.first_seq
            ));
        }
    }
    let mut last = Vec::with_capacity(spec.messages);
    let mut middle = Vec::with_capacity(spec.messages);
    let mut latencies = Vec::with_capacity(members.len());
    for (n, &sent) in published.sent.iter().enumerate() {
        latencies.clear();
        latencies.extend(
            members
                .iter()
                .map(|m| m.times[n].saturating_duration_since(sent)),
        );
        latencies.sort_unstable();
        last.push(latencies[latencies.len() - 1]);
        middle.push(latencies[(latencies.len() - 1) / 2]);
    }
    Ok((last, middle))
}

/// Runs a fanout measurement against `targets` (one per node; the duplex.v1 subprotocol is added
/// to their requests here): member `i` on `targets[i mod N]`, the publisher on the first.
/// `pids`: the nodes' process ids, in the same order (or none).
pub fn run(
    spec: &FanoutSpec,
    targets: &[Target],
    pids: &[u32],
    label: &str,
    urls: &[String],
) -> Result<FanoutSummary, String> {
    let targets: Vec<Target> = targets
        .iter()
        .map(|t| {
            let mut t = t.clone();
            if spec.protocol == Protocol::Duplex {
                t.request = t.request.clone().with_protocol(SUBPROTOCOL);
            }
            t
        })
        .collect();
    let targets = targets.as_slice();
    let round_trips_start = all_round_trips(spec, targets)?;
    let open_deadline = Instant::now() + open_budget(spec.members);

    // The publisher joins first, so it is in the room before any member.
    let mut poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUFFER];
    let client = pool::open_all(
        &mut poll,
        &mut events,
        &targets[..1],
        &[spec.members],
        &mut buf,
        open_deadline,
    )
    .map_err(|e| format!("the publisher: {e}"))?
    .pop()
    .ok_or("the publisher did not open")?;
    let waker = Waker::new(poll.registry(), WAKE).map_err(|e| format!("cannot wake: {e}"))?;
    let mut publisher = Publisher {
        spec,
        target: &targets[0],
        poll,
        events,
        buf,
        client,
        me: Member::new(spec.members, spec.messages),
        acks: vec![None; spec.messages],
    };
    publisher.join()?;

    let shared = Shared {
        members: spec.members,
        arrivals: (0..spec.messages).map(|_| AtomicUsize::new(0)).collect(),
        stop: AtomicBool::new(false),
        waker,
    };
    let ready_deadline = open_deadline + join_budget(spec.members) + Duration::from_secs(5);
    let (mut published, mut members) = std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut handles = Vec::with_capacity(spec.threads);
        for w in 0..spec.threads {
            let indices: Vec<usize> = (w..spec.members).step_by(spec.threads).collect();
            let ready = ready_tx.clone();
            let shared = &shared;
            let handle = std::thread::Builder::new()
                .name(format!("fanout-{w}"))
                .spawn_scoped(scope, move || {
                    worker(spec, shared, targets, &indices, open_deadline, &ready)
                });
            match handle {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.stop();
                    let _ = ready_tx.send(Err(format!("cannot start a member thread: {e}")));
                }
            }
        }
        drop(ready_tx);
        let published = publisher.run(
            &shared,
            &ready_rx,
            targets,
            pids,
            &round_trips_start,
            ready_deadline,
        );
        shared.stop();
        let mut members = Vec::with_capacity(spec.members);
        let mut error = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(m)) => members.extend(m),
                Ok(Err(e)) => {
                    error.get_or_insert(e);
                }
                Err(_) => {
                    error.get_or_insert_with(|| "a member thread panicked".to_string());
                }
            }
        }
        // A member's own failure says more than the publisher's wait that it ended.
        match (error, published) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(p)) => Ok((p, members)),
        }
    })?;
    let Publisher {
        mut poll,
        mut events,
        mut buf,
        client,
        me,
        ..
    } = publisher;
    pool::close_all(&mut poll, &mut events, &targets[0], vec![client], &mut buf);

    members.sort_unstable_by_key(|m| m.index);
    let (last, median_member) = judge(spec, &published, &members, &me)?;
    let data_bytes = published.data_bytes.iter().sum::<usize>() as f64
        / published.data_bytes.len().max(1) as f64;
    let publishing = match (published.sent.first(), published.sent.last()) {
        (Some(a), Some(b)) => b.saturating_duration_since(*a),
        _ => Duration::ZERO,
    };
    let mut nodes = std::mem::take(&mut published.nodes);
    for (node, url) in nodes.iter_mut().zip(urls) {
        node.url.clone_from(url);
    }
    Ok(FanoutSummary {
        label: label.to_string(),
        url: urls.join(" "),
        room: spec.room.clone(),
        protocol: spec.protocol,
        members: spec.members,
        messages: spec.messages,
        threads: spec.threads,
        rate: spec.rate,
        window: spec.window,
        data_bytes,
        join: published.join,
        last,
        median_member,
        publishing,
        broadcast: published.broadcast,
        notices: members.iter().map(|m| m.notices).sum(),
        nodes,
        load_cpu_percent: published.load_cpu_percent,
        other_cpu_percent: published.other_cpu_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FanoutSpec {
        FanoutSpec {
            room: "app/fanout".into(),
            members: 3,
            messages: 3,
            threads: 1,
            run: "r1".into(),
            protocol: Protocol::Duplex,
            rate: 0.0,
            window: 1,
            nodes: 1,
            metrics: false,
            settle: Duration::ZERO,
        }
    }

    fn message(seq: u64, run: &str, n: usize) -> String {
        format!(
            r#"{{"type":"message","room":"app/fanout","seq":{seq},"from":"p","data":{{"text":"hi \"x\"","n":{n},"run":"{run}"}}}}"#
        )
    }

    fn joined(seq: u64) -> String {
        format!(
            r#"{{"type":"joined","id":1,"room":"app/fanout","epoch":"e","seq":{seq},"members":[],"member_count":10001,"recovered":false}}"#
        )
    }

    #[test]
    fn messages_in_order_are_accepted_and_notices_counted() {
        let spec = spec();
        let mut m = Member::new(0, 3);
        let t = Instant::now();
        assert_eq!(m.on_text(&spec, &joined(4), t).unwrap(), Got::Joined);
        let join = r#"{"type":"join","room":"app/fanout","client":"c9","presence":{"name":"x"}}"#;
        assert_eq!(m.on_text(&spec, join, t).unwrap(), Got::Nothing);
        for n in 0..3 {
            let got = m
                .on_text(&spec, &message(5 + n as u64, "r1", n), t)
                .unwrap();
            assert_eq!(got, Got::Message(n));
        }
        assert_eq!(m.notices, 1);
        assert_eq!(m.first_seq, Some(5));
        assert_eq!(m.times.len(), 3);
    }

    #[test]
    fn loss_duplicates_and_disorder_fail() {
        let spec = spec();
        let t = Instant::now();
        let fresh = || {
            let mut m = Member::new(0, 3);
            m.on_text(&spec, &joined(0), t).unwrap();
            m
        };
        // A duplicate.
        let mut m = fresh();
        m.on_text(&spec, &message(1, "r1", 0), t).unwrap();
        assert!(m.on_text(&spec, &message(1, "r1", 0), t).is_err());
        // A message skipped.
        let mut m = fresh();
        m.on_text(&spec, &message(1, "r1", 0), t).unwrap();
        assert!(m.on_text(&spec, &message(3, "r1", 2), t).is_err());
        // The right message with a seq out of sequence.
        let mut m = fresh();
        m.on_text(&spec, &message(1, "r1", 0), t).unwrap();
        assert!(m.on_text(&spec, &message(3, "r1", 1), t).is_err());
        // Another run's message, a message before joined, a gap, an error.
        assert!(fresh().on_text(&spec, &message(1, "r2", 0), t).is_err());
        assert!(
            Member::new(0, 3)
                .on_text(&spec, &message(1, "r1", 0), t)
                .is_err()
        );
        let gap = r#"{"type":"gap","room":"app/fanout","from_seq":2,"to_seq":3}"#;
        assert!(fresh().on_text(&spec, gap, t).is_err());
        let error = r#"{"type":"error","id":2,"code":"not_joined","message":"no"}"#;
        assert!(fresh().on_text(&spec, error, t).is_err());
    }

    #[test]
    fn publishes_carry_chat_sized_data_and_parse_back() {
        let spec = spec();
        for n in 0..20 {
            let (text, len) = publish_text(&spec, n);
            assert!((100..=200).contains(&len), "{len} bytes: {text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], "publish");
            assert_eq!(v["data"]["n"], n);
            assert_eq!(v["data"]["run"], "r1");
        }
    }

    #[test]
    fn socketio_packets_are_read_as_duplex_messages() {
        let spec = FanoutSpec {
            protocol: Protocol::SocketIo,
            ..spec()
        };
        let mut reply = None;
        let mut m = Member::new(0, 3);
        let t = Instant::now();
        let open = r#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#;
        assert_eq!(
            m.on_socketio(&spec, open, t, &mut reply).unwrap(),
            Got::Nothing
        );
        assert_eq!(
            m.on_socketio(&spec, "2", t, &mut reply).unwrap(),
            Got::Nothing
        );
        assert_eq!(reply.take().as_deref(), Some("3"));
        assert_eq!(
            m.on_socketio(&spec, r#"40{"sid":"y"}"#, t, &mut reply)
                .unwrap(),
            Got::Nothing
        );
        assert!(m.connected);
        assert_eq!(
            reply.take().unwrap(),
            r#"421["join",{"id":1,"room":"app/fanout"}]"#
        );
        let joined = format!("431[{}]", joined(0));
        assert_eq!(
            m.on_socketio(&spec, &joined, t, &mut reply).unwrap(),
            Got::Joined
        );
        for n in 0..2 {
            let event = format!(r#"42["message",{}]"#, message(1 + n as u64, "r1", n));
            assert_eq!(
                m.on_socketio(&spec, &event, t, &mut reply).unwrap(),
                Got::Message(n)
            );
        }
        // A repeat is caught as in duplex.v1; so are a second connect and an unknown packet.
        let again = format!(r#"42["message",{}]"#, message(2, "r1", 1));
        assert!(m.on_socketio(&spec, &again, t, &mut reply).is_err());
        assert!(m.on_socketio(&spec, "40", t, &mut reply).is_err());
        assert!(
            m.on_socketio(&spec, r#"44{"message":"no"}"#, t, &mut reply)
                .is_err()
        );
        let ack = r#"433[{"type":"ack","id":3,"seq":9}]"#;
        assert_eq!(
            m.on_socketio(&spec, ack, t, &mut reply).unwrap(),
            Got::Ack { id: 3, seq: 9 }
        );
        let (text, _) = publish_text(&spec, 1);
        assert!(text.starts_with(r#"423["publish",{"id":3,"room":"app/fanout","data":{"#));
        let v: serde_json::Value = serde_json::from_str(&text[3..]).unwrap();
        assert_eq!(v[1]["data"]["n"], 1);
    }

    #[test]
    fn bare_pubsub_messages_are_the_publish_data() {
        let spec = FanoutSpec {
            protocol: Protocol::Uws,
            ..spec()
        };
        let (text, len) = publish_text(&spec, 0);
        assert_eq!(text.len(), len);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((v["n"].as_u64(), v["run"].as_str()), (Some(0), Some("r1")));

        let t = Instant::now();
        let mut m = Member::new(0, 3);
        // Subscribed on open: nothing to send, joined at once.
        m.joined_seq = None;
        let bare = |n: usize| publish_text(&spec, n).0;
        // A message before the member counts as joined is refused, as in duplex.v1.
        assert!(m.on_bare(&spec, &bare(0), t).is_err());
        m.joined_seq = Some(0);
        for n in 0..2 {
            assert_eq!(m.on_bare(&spec, &bare(n), t).unwrap(), Got::Message(n));
        }
        assert_eq!((m.first_seq, m.last_seq), (Some(1), 2));
        // A repeat, a skip, another run's message, and text that is not a publish fail.
        assert!(m.on_bare(&spec, &bare(1), t).is_err());
        let mut skip = Member::new(1, 3);
        skip.joined_seq = Some(0);
        assert!(skip.on_bare(&spec, &bare(1), t).is_err());
        let other = FanoutSpec {
            run: "r2".into(),
            ..spec.clone()
        };
        let mut m = Member::new(2, 3);
        m.joined_seq = Some(0);
        assert!(m.on_bare(&spec, &publish_text(&other, 0).0, t).is_err());
        assert!(m.on_bare(&spec, "hello", t).is_err());
    }

    #[test]
    fn members_are_spread_round_robin() {
        assert_eq!(
            (0..3).map(|k| members_on(1000, 3, k)).collect::<Vec<_>>(),
            [334, 333, 333]
        );
        assert_eq!(members_on(10, 1, 0), 10);
        assert_eq!(members_on(1, 2, 1), 0);
    }

    #[test]
    fn room_names_are_checked() {
        assert!(check_room("app/fanout").is_ok());
        assert!(check_room("app/fan out").is_err());
        assert!(check_room("fanout").is_err());
        assert!(check_room("a/b/c").is_err());
    }

    #[test]
    fn spreads_and_medians() {
        let ms = |v: u64| Duration::from_millis(v);
        let s = Spread::of(&[ms(4), ms(1), ms(3), ms(2)]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        let s = Spread::of(&[ms(5)]);
        assert_eq!((s.min, s.median, s.p99, s.max), (5.0, 5.0, 5.0, 5.0));
        let v: Vec<Duration> = (1..=200).map(ms).collect();
        assert_eq!(Spread::of(&v).p99, 198.0);
    }
}
