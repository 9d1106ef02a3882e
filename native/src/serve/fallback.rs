//! HTTP transports for clients whose WebSocket is blocked (`docs/PROTOCOL.md`, "HTTP
//! transports"): a session opened by `POST /ws/open` is one hub connection whose server messages
//! go down a Server-Sent Events stream (`GET /ws/sse`) or long polls (`GET /ws/poll`) and whose
//! commands come up by `POST /ws/send`.
//!
//! The sessions of a node live in one table shared by its workers, since each request of a
//! session may land on any worker. A session's hub connection is a detached [`ConnId`] of the
//! worker that opened it (its *home*): the hub thread hands that worker the session's
//! deliveries, which it encodes like a socket's and appends to the session's numbered outbox;
//! the worker holding the session's stream or poll (its *waiter*) writes them out, told by an
//! inbox entry when it is another worker. Commands are decoded by whichever worker takes the
//! POST and told to the hub under the table's lock, in `seq` order.
//!
//! Memory per session is bounded like a socket's output: messages not yet handed to a stream
//! or poll count against `--max-backlog` with the same slow-consumer policy, and messages handed
//! out but not acknowledged are kept for a resume up to `--max-backlog` bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use duplex_core::channel::{self, protocol};
use duplex_core::close::CloseCode;
use duplex_core::handshake::server::Request;
use tracing::debug;

use super::hub_thread::{Command, Delivery, HubConn, Inbox};
use super::relay::Request as SessionRequest;
use super::{SlowConsumer, Standing, TokenVerifier};
use crate::server::{BodyError, ConnId, Ctx, WorkerWaker};

/// Largest `POST /ws/send` body.
pub const MAX_POST_BODY: usize = 1 << 20;
/// Largest answer to one poll (at least one message is always answered).
const MAX_POLL_ANSWER: usize = 1 << 20;

/// The timings of the HTTP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackConfig {
    /// A session with no stream or poll attached for this long ends (`idle_ms`).
    pub idle: Duration,
    /// A poll with nothing to answer is held this long (`poll_ms`).
    pub poll: Duration,
    /// A stream ends itself after this long, before proxies cut it; the client resumes.
    pub stream_lifetime: Duration,
    /// A stream without a message for this long carries `event: ping`.
    pub ping: Duration,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            idle: Duration::from_secs(30),
            poll: Duration::from_secs(25),
            stream_lifetime: Duration::from_secs(50),
            ping: Duration::from_secs(15),
        }
    }
}

/// Counters of the HTTP transports, for `/metrics`.
#[derive(Debug, Default)]
pub struct FallbackMetrics {
    pub sessions: AtomicU64,
    pub streams: AtomicU64,
    pub polls: AtomicU64,
    pub sse_messages: AtomicU64,
    pub poll_messages: AtomicU64,
    pub posts: AtomicU64,
    pub sessions_expired: AtomicU64,
    /// Room messages not kept for a slow session (announced by a `gap`).
    pub dropped: AtomicU64,
}

impl FallbackMetrics {
    pub fn render(&self, out: &mut String) {
        let gauges = [
            (
                "sessions",
                "Open sessions of the HTTP transports (SSE and long polling).",
                &self.sessions,
            ),
            (
                "streams",
                "SSE streams attached to a session now.",
                &self.streams,
            ),
            ("held_polls", "Long polls held now.", &self.polls),
        ];
        for (name, help, value) in gauges {
            let _ = write!(
                out,
                "# HELP duplex_http_{name} {help}\n# TYPE duplex_http_{name} gauge\n\
                 duplex_http_{name} {}\n",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP duplex_http_messages_total Server messages written to HTTP transports.\n\
             # TYPE duplex_http_messages_total counter\n\
             duplex_http_messages_total{{transport=\"sse\"}} {}\n\
             duplex_http_messages_total{{transport=\"longpoll\"}} {}\n\
             # HELP duplex_http_posts_total Command POSTs applied.\n\
             # TYPE duplex_http_posts_total counter\nduplex_http_posts_total {}\n\
             # HELP duplex_http_sessions_expired_total Sessions ended after idle_ms without a \
             stream or poll.\n# TYPE duplex_http_sessions_expired_total counter\n\
             duplex_http_sessions_expired_total {}\n\
             # HELP duplex_http_slow_dropped_total Room messages not kept for a slow session \
             (announced by a `gap`).\n# TYPE duplex_http_slow_dropped_total counter\n\
             duplex_http_slow_dropped_total {}\n",
            self.sse_messages.load(Ordering::Relaxed),
            self.poll_messages.load(Ordering::Relaxed),
            self.posts.load(Ordering::Relaxed),
            self.sessions_expired.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sse,
    Poll,
    /// Only for a request relayed to the node holding its session: a command POST.
    Send,
    /// Likewise: `POST /ws/close`.
    Close,
}

/// Where the request a session's messages go out through is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// A connection of a worker of this node.
    Local { worker: usize, id: ConnId },
    /// A request held by another node, answered through the relay under `token`.
    Remote {
        node: String,
        token: u64,
        since: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiter {
    place: Place,
    kind: Kind,
}

impl Waiter {
    pub fn new(place: Place, kind: Kind) -> Waiter {
        Waiter { place, kind }
    }

    pub fn place(&self) -> &Place {
        &self.place
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
}

#[derive(Debug)]
struct Entry {
    index: u64,
    text: Arc<str>,
}

#[derive(Debug)]
struct Session {
    conn: HubConn,
    standing: Standing,
    /// Messages after `acked`, in order.
    outbox: VecDeque<Entry>,
    /// The index of the last message made.
    last: u64,
    /// Everything up to here is acknowledged (dropped from the outbox).
    acked: u64,
    /// Everything up to here was handed to a stream or a poll.
    written: u64,
    /// Bytes of messages after `written`.
    unsent: usize,
    /// Bytes of messages in `acked+1..=written`.
    retained: usize,
    waiter: Option<Waiter>,
    /// The `seq` the next command POST must carry.
    next_post: u64,
    /// Since when no stream or poll is attached.
    idle_since: Option<Instant>,
    /// The server ended the session: code and reason, told to the next stream or poll.
    closed: Option<(u16, String)>,
    /// Slow consumer: room → first and last seq dropped, reported once the session drains.
    dropping: BTreeMap<String, (u64, u64)>,
}

impl Session {
    fn new(conn: HubConn, standing: Standing, now: Instant) -> Session {
        Session {
            conn,
            standing,
            outbox: VecDeque::new(),
            last: 0,
            acked: 0,
            written: 0,
            unsent: 0,
            retained: 0,
            waiter: None,
            next_post: 1,
            idle_since: Some(now),
            closed: None,
            dropping: BTreeMap::new(),
        }
    }

    /// Drops the messages up to `ack` (at most what was handed out).
    fn acknowledge(&mut self, ack: u64) {
        let ack = ack.min(self.written);
        while let Some(entry) = self.outbox.front() {
            if entry.index > ack {
                break;
            }
            self.retained -= entry.text.len();
            self.outbox.pop_front();
        }
        self.acked = self.acked.max(ack);
    }

    /// Hands messages after `from` out again (a resume after a cut stream).
    fn rewind(&mut self, from: u64) {
        for entry in self
            .outbox
            .iter()
            .filter(|e| e.index > from && e.index <= self.written)
        {
            self.retained -= entry.text.len();
            self.unsent += entry.text.len();
        }
        self.written = self.written.min(from).max(self.acked);
    }

    /// Keeps at most `max` bytes of handed-out, unacknowledged messages.
    fn trim(&mut self, max: usize) {
        while self.retained > max {
            let Some(entry) = self.outbox.front() else {
                break;
            };
            if entry.index > self.written {
                break;
            }
            self.retained -= entry.text.len();
            self.acked = entry.index;
            self.outbox.pop_front();
        }
    }

    /// The messages after `written`, marking them handed out, up to `budget` bytes (at least one).
    fn take(&mut self, budget: usize) -> Vec<(u64, Arc<str>)> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in self.outbox.iter().filter(|e| e.index > self.written) {
            if !out.is_empty() && bytes + entry.text.len() > budget {
                break;
            }
            bytes += entry.text.len();
            out.push((entry.index, Arc::clone(&entry.text)));
        }
        if let Some((last, _)) = out.last() {
            self.written = *last;
            self.unsent -= bytes;
            self.retained += bytes;
        }
        out
    }

    fn has_unsent(&self) -> bool {
        self.written < self.last
    }

    /// The rooms it dropped messages of as a slow consumer, once it drained to half the cap.
    fn drained(&mut self, max: usize) -> BTreeMap<String, (u64, u64)> {
        if self.dropping.is_empty() || self.unsent > max / 2 {
            return BTreeMap::new();
        }
        std::mem::take(&mut self.dropping)
    }
}

#[derive(Debug)]
struct Table {
    sessions: HashMap<String, Session>,
    /// A session's detached connection → its id.
    by_conn: HashMap<ConnId, String>,
    next_sweep: Instant,
}

/// What a session has for its waiter now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Nothing yet (a poll stays held).
    Nothing,
    /// SSE events; with `end`, the session ended (its `close` event is in `bytes`).
    Stream {
        bytes: Vec<u8>,
        count: u64,
        end: bool,
    },
    /// A poll's answer (JSON).
    Answer { body: String, count: u64 },
    /// The waiter is no longer the session's (replaced, or the session is gone): a stream
    /// ends, a poll is answered with nothing new.
    Release { last: Option<u64> },
}

/// A refused request: status, code, message.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) struct Refusal(pub u16, pub &'static str, pub String);

impl Refusal {
    pub fn body(&self) -> String {
        serde_json::json!({"code": self.1, "message": self.2}).to_string()
    }
}

/// What the session operations need of the server: where commands go and the limits.
#[derive(Clone)]
pub(crate) struct Env {
    pub commands: std::sync::mpsc::Sender<Command>,
    pub limits: protocol::DecodeLimits,
    pub max_backlog: usize,
    pub slow_consumer: SlowConsumer,
    pub verifier: Option<TokenVerifier>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("max_backlog", &self.max_backlog)
            .finish_non_exhaustive()
    }
}

impl Env {
    fn tell(&self, command: Command) {
        if self.commands.send(command).is_err() {
            debug!("the hub thread is gone");
        }
    }

    fn dropped(&self, conn: HubConn, rooms: BTreeMap<String, (u64, u64)>) {
        for (room, (from, to)) in rooms {
            self.tell(Command::Dropped {
                conn,
                room,
                from,
                to,
            });
        }
    }
}

/// The sessions of one node, shared by its workers (and its relay on a cluster).
pub(crate) struct Sessions {
    table: Mutex<Table>,
    serial: AtomicU64,
    /// Every worker's inbox and waker: a worker tells the one holding a session's waiter that
    /// it has messages.
    peers: Vec<(Arc<Inbox>, WorkerWaker)>,
    pub config: FallbackConfig,
    pub metrics: FallbackMetrics,
    max_sessions: usize,
    /// On a cluster: carries requests for sessions of other nodes, and this node's answers.
    pub relay: OnceLock<super::relay::Relay>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(
        config: FallbackConfig,
        peers: Vec<(Arc<Inbox>, WorkerWaker)>,
        max_sessions: usize,
    ) -> Sessions {
        Sessions {
            table: Mutex::new(Table {
                sessions: HashMap::new(),
                by_conn: HashMap::new(),
                next_sweep: Instant::now(),
            }),
            serial: AtomicU64::new(0),
            peers,
            config,
            metrics: FallbackMetrics::default(),
            max_sessions,
            relay: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `delivery` for connection `id` to `worker`'s inbox.
    pub fn hand(&self, worker: usize, id: ConnId, delivery: Delivery) {
        let Some((inbox, waker)) = self.peers.get(worker) else {
            return;
        };
        let was_empty = {
            let mut inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = inbox.is_empty();
            inbox.push((id, delivery));
            was_empty
        };
        if was_empty {
            waker.wake();
        }
    }

    /// Tells whoever holds `waiter` that its session has output (or that it was replaced).
    fn notify(&self, session: &str, waiter: &Waiter) {
        match &waiter.place {
            Place::Local { worker, id } => self.hand(*worker, *id, Delivery::Flush),
            Place::Remote { .. } => {
                if let Some(relay) = self.relay.get() {
                    relay.flush(session, waiter.clone());
                }
            }
        }
    }

    /// The session id's node, when it is another node's (on a cluster).
    pub fn remote_owner<'a>(&self, session: &'a str) -> Option<&'a str> {
        let relay = self.relay.get()?;
        let (node, _) = session.split_once('-')?;
        (node != relay.node()).then_some(node)
    }

    /// `POST /ws/open`: a new session whose hub connection belongs to `worker`.
    pub fn open(&self, worker: usize, env: &Env) -> Result<String, Refusal> {
        let mut table = self.lock();
        if table.sessions.len() >= self.max_sessions {
            return Err(Refusal(
                503,
                "full",
                "too many sessions, retry later".into(),
            ));
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let conn = HubConn {
            worker,
            id: ConnId::detached(serial),
        };
        let mut id = new_session_id();
        if let Some(relay) = self.relay.get() {
            id = format!("{}-{id}", relay.node());
        }
        let standing = if env.verifier.is_some() {
            Standing::NeedsToken
        } else {
            Standing::Ready
        };
        let now = Instant::now();
        table
            .sessions
            .insert(id.clone(), Session::new(conn, standing, now));
        table.by_conn.insert(conn.id, id.clone());
        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        env.tell(Command::Open(conn));
        Ok(id)
    }

    /// `POST /ws/send`: applies the body's commands in `seq` order.
    pub fn send(
        &self,
        session: &str,
        seq: u64,
        ack: Option<u64>,
        body: &[u8],
        env: &Env,
    ) -> Result<(), Refusal> {
        let mut table = self.lock();
        let entry = table
            .sessions
            .get_mut(session)
            .filter(|e| e.closed.is_none())
            .ok_or_else(unknown_session)?;
        if seq == 0 || seq > entry.next_post {
            return Err(Refusal(
                409,
                "bad_seq",
                format!("expected seq {}", entry.next_post),
            ));
        }
        if seq == entry.next_post {
            let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
            entry.next_post += 1;
            let conn = entry.conn;
            for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
                let command = match protocol::decode_limited(line, &env.limits) {
                    Ok(message) => {
                        super::admit(env.verifier.as_ref(), conn, &mut entry.standing, message)
                    }
                    Err(error) => Command::Refused {
                        conn,
                        error,
                        close: false,
                    },
                };
                // Told under the lock: POSTs taken by other workers wait, so commands reach
                // the hub in `seq` order.
                env.tell(command);
            }
            self.metrics.posts.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ack) = ack {
            entry.acknowledge(ack);
            let rooms = entry.drained(env.max_backlog);
            env.dropped(entry.conn, rooms);
        }
        Ok(())
    }

    /// `POST /ws/close`: ends the session; returns its waiter.
    pub fn close(&self, session: &str, env: &Env) -> Result<Option<Waiter>, Refusal> {
        let mut table = self.lock();
        if !table.sessions.contains_key(session) {
            return Err(unknown_session());
        }
        Ok(self.end(&mut table, session, env).flatten())
    }

    /// A stream (`last`: where it resumes) or a poll (`last`: its ack) attaches to the session.
    /// Returns the `ready` event's data for a stream, and the waiter it replaced.
    pub fn attach(
        &self,
        session: &str,
        kind: Kind,
        last: Option<u64>,
        place: Place,
        env: &Env,
    ) -> Result<(Option<String>, Option<Waiter>), Refusal> {
        let mut table = self.lock();
        let entry = table
            .sessions
            .get_mut(session)
            .ok_or_else(unknown_session)?;
        let from = last.unwrap_or(entry.acked);
        if from < entry.acked || from > entry.last {
            // Asked for messages no longer kept (or never made): the client recovers from
            // history with a new session.
            let replaced = self.end(&mut table, session, env).flatten();
            if let Some(waiter) = replaced {
                self.notify(session, &waiter);
            }
            return Err(unknown_session());
        }
        entry.rewind(from);
        entry.acknowledge(from);
        let previous = entry.waiter.replace(Waiter { place, kind });
        entry.idle_since = None;
        let rooms = entry.drained(env.max_backlog);
        env.dropped(entry.conn, rooms);
        let open = (kind == Kind::Sse)
            .then(|| serde_json::json!({"session": session, "last": from}).to_string());
        Ok((open, previous))
    }

    /// What the session has for `waiter`: SSE events up to `budget` bytes (at least one
    /// message), or a poll's whole answer.
    pub fn output(&self, session: &str, waiter: &Waiter, budget: usize, env: &Env) -> Output {
        let mut table = self.lock();
        let Some(entry) = table.sessions.get_mut(session) else {
            return Output::Release { last: None };
        };
        if entry.waiter.as_ref() != Some(waiter) {
            return Output::Release {
                last: Some(entry.acked),
            };
        }
        let mut ended = false;
        let output = match waiter.kind {
            Kind::Sse => {
                let batch = entry.take(budget);
                let mut bytes = Vec::new();
                for (index, text) in &batch {
                    sse_event(&mut bytes, *index, text);
                }
                let closed = entry.closed.clone().filter(|_| !entry.has_unsent());
                if let Some((code, reason)) = &closed {
                    let _ = write!(
                        WriteVec(&mut bytes),
                        "event: close\ndata: {}\n\n",
                        close_json(*code, reason)
                    );
                }
                self.metrics
                    .sse_messages
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                ended = closed.is_some();
                Output::Stream {
                    bytes,
                    count: batch.len() as u64,
                    end: closed.is_some(),
                }
            }
            _ => {
                if !entry.has_unsent() && entry.closed.is_none() {
                    return Output::Nothing;
                }
                let batch = entry.take(budget);
                let mut body = format!("{{\"last\":{},\"messages\":[", entry.written);
                for (i, (_, text)) in batch.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(text);
                }
                body.push(']');
                let closed = entry.closed.clone().filter(|_| !entry.has_unsent());
                if let Some((code, reason)) = &closed {
                    let _ = write!(body, ",\"close\":{}", close_json(*code, reason));
                    ended = true;
                }
                body.push('}');
                self.metrics
                    .poll_messages
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                entry.waiter = None;
                entry.idle_since = Some(Instant::now());
                Output::Answer {
                    body,
                    count: batch.len() as u64,
                }
            }
        };
        entry.trim(env.max_backlog);
        let rooms = entry.drained(env.max_backlog);
        env.dropped(entry.conn, rooms);
        if ended {
            self.end(&mut table, session, env);
        }
        output
    }

    /// `waiter` is gone (its client left, or its request timed out): the session waits idle.
    pub fn detach(&self, session: &str, waiter: &Waiter) {
        let mut table = self.lock();
        if let Some(entry) = table.sessions.get_mut(session)
            && entry.waiter.as_ref() == Some(waiter)
        {
            entry.waiter = None;
            entry.idle_since = Some(Instant::now());
        }
    }

    /// A relayed waiter whose node stopped answering (`token` on `node`) is gone.
    pub fn detach_remote(&self, session: &str, node: &str, token: u64) {
        let mut table = self.lock();
        if let Some(entry) = table.sessions.get_mut(session)
            && matches!(&entry.waiter, Some(Waiter { place: Place::Remote { node: n, token: t, .. }, .. }) if n == node && *t == token)
        {
            entry.waiter = None;
            entry.idle_since = Some(Instant::now());
        }
    }

    /// A delivery of the hub for the session of connection `conn` (already encoded as
    /// `text`): appended to its outbox, or dropped for a slow consumer. Returns the session and
    /// its waiter to tell.
    fn push(
        &self,
        conn: ConnId,
        delivery: &channel::Delivery,
        text: &Arc<str>,
        env: &Env,
    ) -> Option<(String, Waiter)> {
        let mut table = self.lock();
        let session = table.by_conn.get(&conn)?.clone();
        let entry = table.sessions.get_mut(&session)?;
        if entry.closed.is_some() {
            return None;
        }
        let max = env.max_backlog;
        let after = entry.unsent.saturating_add(text.len());
        if !entry.dropping.is_empty() || (after > max && entry.unsent > 0) {
            let cut = match (env.slow_consumer, delivery.room_seq()) {
                (SlowConsumer::Gap, Some((room, seq))) => {
                    self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                    entry
                        .dropping
                        .entry(room.to_string())
                        .and_modify(|range| range.1 = seq)
                        .or_insert((seq, seq));
                    return None;
                }
                (SlowConsumer::Gap, None) => after > max.saturating_mul(2),
                (SlowConsumer::Close, _) => true,
            };
            if cut {
                debug!(%session, "slow consumer: ending the session");
                entry.closed = Some((CloseCode::Policy.as_u16(), "slow consumer".into()));
                env.tell(Command::Closed(entry.conn));
                return entry.waiter.clone().map(|w| (session, w));
            }
        }
        entry.last += 1;
        entry.unsent += text.len();
        entry.outbox.push_back(Entry {
            index: entry.last,
            text: Arc::clone(text),
        });
        entry.waiter.clone().map(|w| (session, w))
    }

    /// The hub closed the session of `conn` (takeover, `POST /api/disconnect`, a refused
    /// token). Returns the session and its waiter to tell.
    fn closed_by_hub(
        &self,
        conn: ConnId,
        code: CloseCode,
        reason: &str,
        env: &Env,
    ) -> Option<(String, Waiter)> {
        let mut table = self.lock();
        let session = table.by_conn.get(&conn)?.clone();
        let entry = table.sessions.get_mut(&session)?;
        if entry.closed.is_some() {
            return None;
        }
        entry.closed = Some((code.as_u16(), reason.to_string()));
        env.tell(Command::Closed(entry.conn));
        entry.waiter.clone().map(|w| (session, w))
    }

    /// Removes a session; the hub hears it closed (its members leave). Returns its waiter
    /// (`None` if there was no such session).
    fn end(&self, table: &mut Table, session: &str, env: &Env) -> Option<Option<Waiter>> {
        let entry = table.sessions.remove(session)?;
        table.by_conn.remove(&entry.conn.id);
        self.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
        if entry.closed.is_none() {
            env.tell(Command::Closed(entry.conn));
        }
        Some(entry.waiter)
    }

    /// Ends sessions idle for longer than `idle`, and forgets relayed waiters whose node went
    /// silent (at most once a second, by whichever worker comes first). Whether any session is
    /// left.
    fn sweep(&self, now: Instant, env: &Env) -> bool {
        let mut table = self.lock();
        if table.next_sweep > now {
            return !table.sessions.is_empty();
        }
        table.next_sweep = now + Duration::from_secs(1);
        let config = self.config;
        let relayed_bound = config.stream_lifetime.max(config.poll) + Duration::from_secs(10);
        let mut expired = Vec::new();
        for (id, s) in table.sessions.iter_mut() {
            if let Some(Waiter {
                place: Place::Remote { since, .. },
                ..
            }) = &s.waiter
                && now >= *since + relayed_bound
            {
                s.waiter = None;
                s.idle_since = Some(now);
            }
            if s.waiter.is_none() && s.idle_since.is_some_and(|t| now >= t + config.idle) {
                expired.push(id.clone());
            }
        }
        for session in expired {
            debug!(%session, "session idle: ending it");
            self.metrics
                .sessions_expired
                .fetch_add(1, Ordering::Relaxed);
            self.end(&mut table, &session, env);
        }
        !table.sessions.is_empty()
    }
}

/// A request of the HTTP transports, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Call {
    Preflight,
    Open,
    /// A request on a session (a command POST's body is filled in once read).
    Session(SessionRequest),
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(400, "bad_request", message.into())
}

pub(crate) fn unknown_session() -> Refusal {
    Refusal(
        404,
        "unknown_session",
        "no such session (it ended or expired): open a new one with POST /ws/open".into(),
    )
}

/// Whether `path` is one of the HTTP transports' endpoints.
pub fn is_fallback_path(path: &str) -> bool {
    matches!(
        path,
        "/ws/open" | "/ws/sse" | "/ws/poll" | "/ws/send" | "/ws/close"
    )
}

fn parse(request: &Request) -> Result<Call, Refusal> {
    let method = request.method();
    if method == "OPTIONS" {
        return Ok(Call::Preflight);
    }
    let path = request.path();
    let want = if is_get(path) { "GET" } else { "POST" };
    if method != want {
        return Err(Refusal(
            405,
            "method_not_allowed",
            format!("{path} takes {want}"),
        ));
    }
    let mut session = None;
    let mut last = None;
    let mut ack = None;
    let mut seq = None;
    for pair in request
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad(format!("`{name}` must be a non-negative integer")))
        };
        match name {
            "session" => {
                if value.is_empty()
                    || value.len() > 64
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(bad("`session` is not a session id"));
                }
                session = Some(value.to_string());
            }
            "last" => last = Some(number()?),
            "ack" => ack = Some(number()?),
            "seq" => seq = Some(number()?),
            _ => {}
        }
    }
    if path == "/ws/open" {
        return Ok(Call::Open);
    }
    let session = session.ok_or_else(|| bad("`session` is missing (from POST /ws/open)"))?;
    Ok(Call::Session(match path {
        "/ws/sse" => {
            let header = request
                .header_str("Last-Event-ID")
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| bad("Last-Event-ID must be a message index"))
                })
                .transpose()?;
            SessionRequest::Sse {
                session,
                last: header.or(last),
            }
        }
        "/ws/poll" => SessionRequest::Poll {
            session,
            ack: ack.unwrap_or(0),
        },
        "/ws/send" => SessionRequest::Send {
            session,
            seq: seq.ok_or_else(|| bad("`seq` is missing"))?,
            ack,
            body: String::new(),
        },
        _ => SessionRequest::Close { session },
    }))
}

/// One SSE event carrying message `index`.
fn sse_event(out: &mut Vec<u8>, index: u64, text: &str) {
    let _ = write!(WriteVec(out), "id: {index}\ndata: {text}\n\n");
}

struct WriteVec<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for WriteVec<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn close_json(code: u16, reason: &str) -> String {
    serde_json::json!({"code": code, "reason": reason}).to_string()
}

/// The first bytes of a stream: the reconnection delay and the `ready` event.
pub(crate) fn stream_head(open: &str) -> String {
    format!("retry: 1000\nevent: ready\ndata: {open}\n\n")
}

/// The headers of an SSE stream.
const STREAM_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache, no-store"),
    ("X-Accel-Buffering", "no"),
];

/// A poll's answer when nothing came.
pub(crate) fn empty_answer(last: Option<u64>) -> String {
    match last {
        Some(last) => format!("{{\"last\":{last},\"messages\":[]}}"),
        None => "{\"last\":null,\"messages\":[]}".into(),
    }
}

/// A request relayed to another node, awaiting its answer.
#[derive(Debug)]
struct Relayed {
    owner: String,
    token: u64,
    /// A stream whose head was written.
    started: bool,
    /// A poll's ack: its empty answer at the timeout.
    ack: u64,
}

/// A stream or held poll of this worker, with its timers.
#[derive(Debug)]
struct Attached {
    session: String,
    kind: Kind,
    /// Poll: answer empty; stream: end; relayed command: answer 503.
    ends_at: Instant,
    /// Stream: write `event: ping`.
    ping_at: Option<Instant>,
    /// The request waits for another node.
    relayed: Option<Relayed>,
    cors: Option<String>,
}

/// One worker's side of the HTTP transports.
#[derive(Debug)]
pub(crate) struct Fallback {
    pub sessions: Arc<Sessions>,
    worker: usize,
    env: Env,
    attached: HashMap<ConnId, Attached>,
    /// The earliest timer of `attached` and the sweep, kept as they change.
    next: Option<Instant>,
}

/// What answers to a relayed request look like when they come back.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The whole answer: status and JSON body (empty: no body).
    Reply { status: u16, body: String },
    /// More of a stream (the first piece opens it).
    Stream(String),
    /// The stream ends.
    End,
}

impl Fallback {
    pub fn new(sessions: Arc<Sessions>, worker: usize, env: Env) -> Fallback {
        Fallback {
            sessions,
            worker,
            env,
            attached: HashMap::new(),
            next: None,
        }
    }

    pub fn next_timer(&self) -> Option<Instant> {
        self.next
    }

    fn schedule(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    fn attach_local(&mut self, id: ConnId, attached: Attached) {
        let metrics = &self.sessions.metrics;
        match attached.kind {
            Kind::Sse => metrics.streams.fetch_add(1, Ordering::Relaxed),
            Kind::Poll => metrics.polls.fetch_add(1, Ordering::Relaxed),
            Kind::Send | Kind::Close => 0,
        };
        let at = attached
            .ping_at
            .map_or(attached.ends_at, |p| p.min(attached.ends_at));
        self.schedule(at);
        self.attached.insert(id, attached);
    }

    fn unattach(&mut self, id: ConnId) -> Option<Attached> {
        let attached = self.attached.remove(&id)?;
        let metrics = &self.sessions.metrics;
        match attached.kind {
            Kind::Sse => metrics.streams.fetch_sub(1, Ordering::Relaxed),
            Kind::Poll => metrics.polls.fetch_sub(1, Ordering::Relaxed),
            Kind::Send | Kind::Close => 0,
        };
        Some(attached)
    }

    /// Answers a request of the HTTP transports (`cors`: the allowed origin it came from).
    pub fn request(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        request: &Request,
        body: Result<&[u8], BodyError>,
        cors: Option<&str>,
    ) {
        let result = match parse(request) {
            Ok(Call::Preflight) => {
                let mut headers = cors_headers(cors);
                headers.push(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"));
                headers.push((
                    "Access-Control-Allow-Headers",
                    "Content-Type, Last-Event-ID",
                ));
                headers.push(("Access-Control-Max-Age", "600"));
                let _ = ctx.respond_http(id, 204, &headers, b"");
                return;
            }
            Ok(Call::Open) => self.open(ctx, id, cors),
            Ok(Call::Session(mut call)) => match body {
                Ok(body) => {
                    if let SessionRequest::Send { body: text, .. } = &mut call {
                        match std::str::from_utf8(body) {
                            Ok(body) => body.clone_into(text),
                            Err(_) => {
                                return respond_refusal(
                                    ctx,
                                    id,
                                    &bad("the body is not UTF-8"),
                                    cors,
                                );
                            }
                        }
                    }
                    match self.sessions.remote_owner(call.session()) {
                        Some(owner) => {
                            let owner = owner.to_string();
                            self.forward(ctx, id, call, owner, cors);
                            Ok(())
                        }
                        None => self.call(ctx, id, call, cors),
                    }
                }
                Err(BodyError::TooLarge { limit, .. }) => Err(Refusal(
                    413,
                    "too_large",
                    format!("the body is above {limit} bytes: send fewer commands per POST"),
                )),
                Err(BodyError::Chunked) => Err(Refusal(
                    411,
                    "length_required",
                    "send Content-Length (chunked bodies are not read)".into(),
                )),
                Err(BodyError::BadLength) => Err(bad("malformed Content-Length")),
            },
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = result {
            let mut headers = cors_headers(cors);
            headers.push(("Content-Type", "application/json"));
            headers.push(("Cache-Control", "no-store"));
            if refusal.0 == 405 {
                let allow = if is_get(request.path()) {
                    "GET, OPTIONS"
                } else {
                    "POST, OPTIONS"
                };
                headers.push(("Allow", allow));
            }
            let _ = ctx.respond_http(id, refusal.0, &headers, refusal.body().as_bytes());
        }
    }

    /// `POST /ws/open`.
    fn open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, cors: Option<&str>) -> Result<(), Refusal> {
        let session = self.sessions.open(self.worker, &self.env)?;
        self.schedule(Instant::now() + Duration::from_secs(1));
        let config = self.sessions.config;
        let answer = serde_json::json!({
            "session": session,
            "poll_ms": config.poll.as_millis() as u64,
            "idle_ms": config.idle.as_millis() as u64,
        })
        .to_string();
        respond_json(ctx, id, 200, &answer, cors);
        Ok(())
    }

    /// A request for a session of this node.
    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        call: SessionRequest,
        cors: Option<&str>,
    ) -> Result<(), Refusal> {
        let sessions = Arc::clone(&self.sessions);
        let now = Instant::now();
        match call {
            SessionRequest::Send {
                session,
                seq,
                ack,
                body,
            } => {
                sessions.send(&session, seq, ack, body.as_bytes(), &self.env)?;
                respond_empty(ctx, id, cors);
                Ok(())
            }
            SessionRequest::Close { session } => {
                let waiter = sessions.close(&session, &self.env)?;
                if let Some(waiter) = waiter {
                    self.wake(ctx, &session, &waiter);
                }
                respond_empty(ctx, id, cors);
                Ok(())
            }
            SessionRequest::Sse { session, last } => {
                let place = Place::Local {
                    worker: self.worker,
                    id,
                };
                let (open, previous) =
                    sessions.attach(&session, Kind::Sse, last, place, &self.env)?;
                let mut headers = cors_headers(cors);
                headers.extend(STREAM_HEADERS);
                let _ = ctx.respond_stream(id, 200, &headers);
                let _ = ctx.write_stream(id, stream_head(&open.unwrap_or_default()).as_bytes());
                let config = sessions.config;
                self.attach_local(
                    id,
                    Attached {
                        session: session.clone(),
                        kind: Kind::Sse,
                        ends_at: now + config.stream_lifetime,
                        ping_at: Some(now + config.ping),
                        relayed: None,
                        cors: None,
                    },
                );
                if let Some(previous) = previous {
                    self.wake(ctx, &session, &previous);
                }
                self.flush(ctx, id);
                Ok(())
            }
            SessionRequest::Poll { session, ack } => {
                let place = Place::Local {
                    worker: self.worker,
                    id,
                };
                let (_, previous) =
                    sessions.attach(&session, Kind::Poll, Some(ack), place, &self.env)?;
                let config = sessions.config;
                let _ = ctx.hold_http(id, config.poll + Duration::from_secs(5));
                self.attach_local(
                    id,
                    Attached {
                        session: session.clone(),
                        kind: Kind::Poll,
                        ends_at: now + config.poll,
                        ping_at: None,
                        relayed: None,
                        cors: cors.map(str::to_string),
                    },
                );
                if let Some(previous) = previous {
                    self.wake(ctx, &session, &previous);
                }
                self.flush(ctx, id);
                Ok(())
            }
        }
    }

    /// A request for a session of another node: relayed to it, answered when it answers.
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        call: SessionRequest,
        owner: String,
        cors: Option<&str>,
    ) {
        let Some(relay) = self.sessions.relay.get() else {
            return;
        };
        let now = Instant::now();
        let config = self.sessions.config;
        let token = relay.register(self.worker, id);
        let (kind, ack, ends_at) = match &call {
            SessionRequest::Poll { ack, .. } => (Kind::Poll, *ack, now + config.poll),
            SessionRequest::Sse { .. } => (Kind::Sse, 0, now + super::relay::ANSWER_WITHIN),
            SessionRequest::Close { .. } => (Kind::Close, 0, now + super::relay::ANSWER_WITHIN),
            SessionRequest::Send { .. } => (Kind::Send, 0, now + super::relay::ANSWER_WITHIN),
        };
        let session = call.session().to_string();
        let _ = ctx.hold_http(
            id,
            ends_at.saturating_duration_since(now) + Duration::from_secs(5),
        );
        relay.forward(&owner, token, call);
        self.attach_local(
            id,
            Attached {
                session,
                kind,
                ends_at,
                ping_at: None,
                relayed: Some(Relayed {
                    owner,
                    token,
                    started: false,
                    ack,
                }),
                cors: cors.map(str::to_string),
            },
        );
    }

    /// The answer of another node to the relayed request `id` of this worker.
    pub fn relayed(&mut self, ctx: &mut Ctx<'_>, id: ConnId, answer: Answer) {
        let Some(attached) = self.attached.get_mut(&id) else {
            return;
        };
        let Some(relayed) = attached.relayed.as_mut() else {
            return;
        };
        let cors = attached.cors.clone();
        match answer {
            Answer::Stream(data) => {
                if !relayed.started {
                    relayed.started = true;
                    let mut headers = cors_headers(cors.as_deref());
                    headers.extend(STREAM_HEADERS);
                    let _ = ctx.respond_stream(id, 200, &headers);
                    let now = Instant::now();
                    let config = self.sessions.config;
                    attached.ends_at = now + config.stream_lifetime;
                    attached.ping_at = Some(now + config.ping);
                    self.schedule(now + config.ping.min(config.stream_lifetime));
                }
                let _ = ctx.write_stream(id, data.as_bytes());
                if ctx.buffered_amount(id).unwrap_or(0) > self.env.max_backlog.saturating_mul(2) {
                    // The session's node does not wait for this reader: the stream ends, and
                    // the client resumes after what it got.
                    if let Some(attached) = self.forget(id) {
                        self.left(id, &attached);
                    }
                    let _ = ctx.end_stream(id);
                }
            }
            Answer::End => {
                self.forget(id);
                let _ = ctx.end_stream(id);
            }
            Answer::Reply { status, body } => {
                self.forget(id);
                if body.is_empty() {
                    respond_empty(ctx, id, cors.as_deref());
                } else {
                    respond_json(ctx, id, status, &body, cors.as_deref());
                }
            }
        }
    }

    /// Drops a relayed request of this worker from the relay's and this worker's tables.
    fn forget(&mut self, id: ConnId) -> Option<Attached> {
        let attached = self.unattach(id)?;
        if let (Some(relayed), Some(relay)) = (&attached.relayed, self.sessions.relay.get()) {
            relay.unregister(relayed.token);
        }
        Some(attached)
    }

    /// Tells whoever holds `waiter` of its session's news: this worker's own connection now,
    /// another worker or node through their queues.
    fn wake(&mut self, ctx: &mut Ctx<'_>, session: &str, waiter: &Waiter) {
        match waiter.place {
            Place::Local { worker, id } if worker == self.worker => self.flush(ctx, id),
            _ => self.sessions.notify(session, waiter),
        }
    }

    /// Writes out what the session of this worker's stream or poll `id` has for it.
    pub fn flush(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let Some(attached) = self.attached.get(&id) else {
            return;
        };
        if attached.relayed.is_some() {
            return;
        }
        let session = attached.session.clone();
        let waiter = Waiter {
            place: Place::Local {
                worker: self.worker,
                id,
            },
            kind: attached.kind,
        };
        let max = self.env.max_backlog;
        let mut wrote = false;
        loop {
            if waiter.kind == Kind::Sse && ctx.buffered_amount(id).unwrap_or(0) > max {
                ctx.watch_drain(id);
                break;
            }
            let budget = if waiter.kind == Kind::Sse {
                64 << 10
            } else {
                MAX_POLL_ANSWER
            };
            match self.sessions.output(&session, &waiter, budget, &self.env) {
                Output::Nothing => break,
                Output::Stream { bytes, count, end } => {
                    if bytes.is_empty() {
                        break;
                    }
                    wrote |= count > 0;
                    let _ = ctx.write_stream(id, &bytes);
                    if end {
                        self.unattach(id);
                        let _ = ctx.end_stream(id);
                        return;
                    }
                }
                Output::Answer { body, .. } => {
                    let cors = self.unattach(id).and_then(|a| a.cors);
                    respond_json(ctx, id, 200, &body, cors.as_deref());
                    return;
                }
                Output::Release { last } => {
                    let cors = self.unattach(id).and_then(|a| a.cors);
                    match waiter.kind {
                        Kind::Sse => {
                            let _ = ctx.end_stream(id);
                        }
                        _ => respond_json(ctx, id, 200, &empty_answer(last), cors.as_deref()),
                    }
                    return;
                }
            }
        }
        if wrote && let Some(attached) = self.attached.get_mut(&id) {
            attached.ping_at = Some(Instant::now() + self.sessions.config.ping);
        }
    }

    /// A session's delivery from the hub, for its home worker: `text` (encoded) goes into its
    /// outbox (or is dropped for a slow consumer), and its waiter is told.
    pub fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        delivery: &channel::Delivery,
        text: &Arc<str>,
    ) {
        if let Some((session, waiter)) = self.sessions.push(conn, delivery, text, &self.env) {
            self.wake(ctx, &session, &waiter);
        }
    }

    /// The hub closed a session's connection (takeover, `POST /api/disconnect`).
    pub fn close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, code: CloseCode, reason: &str) {
        if let Some((session, waiter)) = self.sessions.closed_by_hub(conn, code, reason, &self.env)
        {
            self.wake(ctx, &session, &waiter);
        }
    }

    /// `id` is a stream or held poll of this worker.
    pub fn is_attached(&self, id: ConnId) -> bool {
        self.attached.contains_key(&id)
    }

    /// The stream or poll `id` of this worker ended (client gone, or timed out).
    pub fn closed(&mut self, id: ConnId) -> bool {
        let Some(attached) = self.forget(id) else {
            return false;
        };
        self.left(id, &attached);
        true
    }

    /// The session of `attached` no longer has it as its waiter.
    fn left(&self, id: ConnId, attached: &Attached) {
        match &attached.relayed {
            Some(relayed) => {
                if matches!(attached.kind, Kind::Sse | Kind::Poll)
                    && let Some(relay) = self.sessions.relay.get()
                {
                    relay.detach(&relayed.owner, &attached.session, relayed.token);
                }
            }
            None => self.sessions.detach(
                &attached.session,
                &Waiter {
                    place: Place::Local {
                        worker: self.worker,
                        id,
                    },
                    kind: attached.kind,
                },
            ),
        }
    }

    /// Pings and ends streams, answers polls held long enough, ends idle sessions.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        let now = Instant::now();
        if self.next.is_none_or(|n| n > now) {
            return;
        }
        let due: Vec<ConnId> = self
            .attached
            .iter()
            .filter(|(_, a)| a.ends_at <= now || a.ping_at.is_some_and(|p| p <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(attached) = self.attached.get_mut(&id) else {
                continue;
            };
            if attached.ends_at > now {
                attached.ping_at = Some(now + self.sessions.config.ping);
                let _ = ctx.write_stream(id, b"event: ping\ndata: {}\n\n");
                continue;
            }
            let Some(attached) = self.forget(id) else {
                continue;
            };
            self.left(id, &attached);
            let cors = attached.cors.as_deref();
            match (attached.kind, &attached.relayed) {
                (Kind::Sse, Some(r)) if !r.started => {
                    respond_refusal(ctx, id, &relay_unavailable(), cors)
                }
                (Kind::Sse, _) => {
                    let _ = ctx.end_stream(id);
                }
                (Kind::Poll, Some(r)) => {
                    respond_json(ctx, id, 200, &empty_answer(Some(r.ack)), cors)
                }
                (Kind::Poll, None) => {
                    // Whatever came meanwhile was flushed already: nothing new.
                    let last = self
                        .sessions
                        .lock()
                        .sessions
                        .get(&attached.session)
                        .map(|s| s.written);
                    respond_json(ctx, id, 200, &empty_answer(last), cors);
                }
                (Kind::Send | Kind::Close, _) => {
                    respond_refusal(ctx, id, &relay_unavailable(), cors)
                }
            }
        }
        let any = self.sessions.sweep(now, &self.env);
        self.next = self
            .attached
            .values()
            .flat_map(|a| [Some(a.ends_at), a.ping_at])
            .flatten()
            .min();
        if any {
            self.schedule(now + Duration::from_secs(1));
        }
    }
}

/// The answer to a relayed request whose node did not answer in time.
pub(crate) fn relay_unavailable() -> Refusal {
    Refusal(
        503,
        "unavailable",
        "the node holding this session did not answer: retry".into(),
    )
}

fn is_get(path: &str) -> bool {
    matches!(path, "/ws/sse" | "/ws/poll")
}

fn cors_headers(origin: Option<&str>) -> Vec<(&str, &str)> {
    match origin {
        Some(origin) => vec![
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ],
        None => Vec::new(),
    }
}

fn respond_json(ctx: &mut Ctx<'_>, id: ConnId, status: u16, body: &str, cors: Option<&str>) {
    let mut headers = cors_headers(cors);
    headers.push(("Content-Type", "application/json"));
    headers.push(("Cache-Control", "no-store"));
    let _ = ctx.respond_http(id, status, &headers, body.as_bytes());
}

fn respond_refusal(ctx: &mut Ctx<'_>, id: ConnId, refusal: &Refusal, cors: Option<&str>) {
    respond_json(ctx, id, refusal.0, &refusal.body(), cors);
}

fn respond_empty(ctx: &mut Ctx<'_>, id: ConnId, cors: Option<&str>) {
    let mut headers = cors_headers(cors);
    headers.push(("Cache-Control", "no-store"));
    let _ = ctx.respond_http(id, 204, &headers, b"");
}

/// 128 random bits, hex.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    crate::random_source()(&mut bytes);
    let mut id = String::with_capacity(32);
    for b in bytes {
        let _ = write!(id, "{b:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(head: &str) -> Request {
        Request::parse(head.as_bytes()).unwrap()
    }

    #[test]
    fn requests_are_parsed_with_their_parameters() {
        let open = request("POST /ws/open HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&open), Ok(Call::Open));
        let sse = request("GET /ws/sse?session=ab12&last=7 HTTP/1.1\r\n\r\n");
        assert_eq!(
            parse(&sse),
            Ok(Call::Session(SessionRequest::Sse {
                session: "ab12".into(),
                last: Some(7)
            }))
        );
        let header =
            request("GET /ws/sse?session=ab12&last=7 HTTP/1.1\r\nLast-Event-ID: 9\r\n\r\n");
        assert!(matches!(
            parse(&header),
            Ok(Call::Session(SessionRequest::Sse { last: Some(9), .. }))
        ));
        let poll = request("GET /ws/poll?session=ab12 HTTP/1.1\r\n\r\n");
        assert!(matches!(
            parse(&poll),
            Ok(Call::Session(SessionRequest::Poll { ack: 0, .. }))
        ));
        let send = request("POST /ws/send?session=ab12&seq=3&ack=2 HTTP/1.1\r\n\r\n");
        assert!(matches!(
            parse(&send),
            Ok(Call::Session(SessionRequest::Send {
                seq: 3,
                ack: Some(2),
                ..
            }))
        ));
        let preflight = request("OPTIONS /ws/send HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&preflight), Ok(Call::Preflight));
    }

    #[test]
    fn bad_requests_say_what_to_fix() {
        let cases = [
            ("GET /ws/send?session=a&seq=1", 405),
            ("POST /ws/sse?session=a", 405),
            ("GET /ws/poll", 400),
            ("GET /ws/poll?session=a&ack=-1", 400),
            ("GET /ws/poll?session=a&ack=1x", 400),
            ("GET /ws/poll?session=a/b", 400),
            ("POST /ws/send?session=a", 400),
        ];
        for (line, status) in cases {
            let parsed = parse(&request(&format!("{line} HTTP/1.1\r\n\r\n")));
            assert!(
                matches!(&parsed, Err(Refusal(s, _, _)) if *s == status),
                "{line}: {parsed:?}"
            );
        }
        let header = request("GET /ws/sse?session=a HTTP/1.1\r\nLast-Event-ID: x\r\n\r\n");
        assert!(matches!(parse(&header), Err(Refusal(400, _, _))));
    }

    fn session() -> Session {
        let conn = HubConn {
            worker: 0,
            id: ConnId::detached(0),
        };
        Session::new(conn, Standing::Ready, Instant::now())
    }

    fn push(s: &mut Session, text: &str) {
        s.last += 1;
        s.unsent += text.len();
        s.outbox.push_back(Entry {
            index: s.last,
            text: Arc::from(text),
        });
    }

    #[test]
    fn the_outbox_counts_unsent_and_retained_bytes_through_takes_acks_and_rewinds() {
        let mut s = session();
        for text in ["a", "bb", "ccc", "dddd"] {
            push(&mut s, text);
        }
        assert_eq!((s.unsent, s.retained), (10, 0));
        let first = s.take(3);
        assert_eq!(first.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((s.written, s.unsent, s.retained), (2, 7, 3));
        // At least one message, whatever the budget.
        assert_eq!(s.take(0).len(), 1);
        assert_eq!((s.written, s.unsent, s.retained), (3, 4, 6));
        // A resume after 1: 2 and 3 go out again.
        s.rewind(1);
        s.acknowledge(1);
        assert_eq!((s.acked, s.written, s.unsent, s.retained), (1, 1, 9, 0));
        let again = s.take(100);
        assert_eq!(again.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!((s.unsent, s.retained), (0, 9));
        // An ack past what was handed out is cut to it.
        s.acknowledge(99);
        assert_eq!((s.acked, s.retained, s.outbox.len()), (4, 0, 0));
        // Retained bytes are trimmed oldest first.
        for text in ["xx", "yy", "zz"] {
            push(&mut s, text);
        }
        s.take(100);
        s.trim(3);
        assert_eq!((s.acked, s.retained, s.outbox.len()), (6, 2, 1));
        assert!(!s.has_unsent());
    }

    #[test]
    fn session_ids_are_128_random_bits() {
        let a = new_session_id();
        let b = new_session_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
