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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use duplex_core::channel::{self, protocol};
use duplex_core::close::CloseCode;
use duplex_core::handshake::server::Request;
use tracing::debug;

use super::hub_thread::{Command, Delivery, HubConn, Inbox};
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
             duplex_http_sessions_expired_total {}\n",
            self.sse_messages.load(Ordering::Relaxed),
            self.poll_messages.load(Ordering::Relaxed),
            self.posts.load(Ordering::Relaxed),
            self.sessions_expired.load(Ordering::Relaxed),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sse,
    Poll,
}

/// The request a session's messages go out through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    worker: usize,
    id: ConnId,
    kind: Kind,
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
}

#[derive(Debug)]
struct Table {
    sessions: HashMap<String, Session>,
    /// A session's detached connection → its id.
    by_conn: HashMap<ConnId, String>,
    next_sweep: Instant,
}

/// The sessions of one node, shared by its workers.
#[derive(Debug)]
pub(crate) struct Sessions {
    table: Mutex<Table>,
    serial: AtomicU64,
    /// Every worker's inbox and waker: a worker tells the one holding a session's waiter that
    /// it has messages.
    peers: Vec<(Arc<Inbox>, WorkerWaker)>,
    pub config: FallbackConfig,
    pub metrics: FallbackMetrics,
    max_sessions: usize,
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
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells `waiter`'s worker to write out its session's messages.
    fn notify(&self, waiter: Waiter) {
        let Some((inbox, waker)) = self.peers.get(waiter.worker) else {
            return;
        };
        let was_empty = {
            let mut inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = inbox.is_empty();
            inbox.push((waiter.id, Delivery::Flush));
            was_empty
        };
        if was_empty {
            waker.wake();
        }
    }
}

/// A request of the HTTP transports, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Call {
    Preflight,
    Open,
    Sse {
        session: String,
        last: Option<u64>,
    },
    Poll {
        session: String,
        ack: u64,
    },
    Send {
        session: String,
        seq: u64,
        ack: Option<u64>,
    },
    Close {
        session: String,
    },
}

/// A refused request: status, code, message.
#[derive(Debug, PartialEq, Eq)]
struct Refusal(u16, &'static str, String);

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(400, "bad_request", message.into())
}

fn unknown_session() -> Refusal {
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
    let method = request.method.as_str();
    if method == "OPTIONS" {
        return Ok(Call::Preflight);
    }
    let path = request.path();
    let want = match path {
        "/ws/sse" | "/ws/poll" => "GET",
        _ => "POST",
    };
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
    Ok(match path {
        "/ws/sse" => {
            let header = request
                .header_str("Last-Event-ID")
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| bad("Last-Event-ID must be a message index"))
                })
                .transpose()?;
            Call::Sse {
                session,
                last: header.or(last),
            }
        }
        "/ws/poll" => Call::Poll {
            session,
            ack: ack.unwrap_or(0),
        },
        "/ws/send" => Call::Send {
            session,
            seq: seq.ok_or_else(|| bad("`seq` is missing"))?,
            ack,
        },
        _ => Call::Close { session },
    })
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

/// A stream or held poll of this worker, with its timers.
#[derive(Debug)]
struct Attached {
    session: String,
    kind: Kind,
    /// Poll: answer empty; stream: end.
    ends_at: Instant,
    /// Stream: write `event: ping`.
    ping_at: Option<Instant>,
}

/// One worker's side of the HTTP transports.
#[derive(Debug)]
pub(crate) struct Fallback {
    pub sessions: Arc<Sessions>,
    worker: usize,
    attached: HashMap<ConnId, Attached>,
    /// The earliest timer of `attached` and the sweep, recomputed as they change.
    next: Option<Instant>,
}

/// What the serve handler needs from itself to run a session's commands.
pub(crate) struct Env<'a> {
    pub commands: &'a std::sync::mpsc::Sender<Command>,
    pub limits: &'a protocol::DecodeLimits,
    pub max_backlog: usize,
    pub slow_consumer: SlowConsumer,
    pub verifier: Option<&'a TokenVerifier>,
    pub standing: Standing,
    pub cors: Option<&'a str>,
}

impl Env<'_> {
    fn tell(&self, command: Command) {
        if self.commands.send(command).is_err() {
            debug!("the hub thread is gone");
        }
    }
}

impl Fallback {
    pub fn new(sessions: Arc<Sessions>, worker: usize) -> Fallback {
        Fallback {
            sessions,
            worker,
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

    /// Answers a request of the HTTP transports.
    pub fn request(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        request: &Request,
        body: Result<&[u8], BodyError>,
        env: &Env<'_>,
    ) {
        let now = Instant::now();
        let result = match parse(request) {
            Ok(Call::Preflight) => {
                let mut headers = cors_headers(env.cors);
                headers.push(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"));
                headers.push((
                    "Access-Control-Allow-Headers",
                    "Content-Type, Last-Event-ID",
                ));
                headers.push(("Access-Control-Max-Age", "600"));
                let _ = ctx.respond_http(id, 204, &headers, b"");
                return;
            }
            Ok(call) => match body {
                Ok(body) => self.call(ctx, id, call, body, env, now),
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
        if let Err(Refusal(status, code, message)) = result {
            let body = serde_json::json!({"error": code, "message": message}).to_string();
            let mut headers = cors_headers(env.cors);
            headers.push(("Content-Type", "application/json"));
            headers.push(("Cache-Control", "no-store"));
            if status == 405 {
                headers.push((
                    "Allow",
                    if is_get(request.path()) {
                        "GET, OPTIONS"
                    } else {
                        "POST, OPTIONS"
                    },
                ));
            }
            let _ = ctx.respond_http(id, status, &headers, body.as_bytes());
        }
    }

    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        call: Call,
        body: &[u8],
        env: &Env<'_>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let sessions = Arc::clone(&self.sessions);
        let mut table = sessions.lock();
        match call {
            Call::Preflight => Ok(()),
            Call::Open => {
                if table.sessions.len() >= sessions.max_sessions {
                    return Err(Refusal(
                        503,
                        "full",
                        "too many sessions, retry later".into(),
                    ));
                }
                let serial = sessions.serial.fetch_add(1, Ordering::Relaxed);
                let conn = HubConn {
                    worker: self.worker,
                    id: ConnId::detached(serial),
                };
                let session_id = new_session_id();
                table.sessions.insert(
                    session_id.clone(),
                    Session {
                        conn,
                        standing: env.standing,
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
                    },
                );
                table.by_conn.insert(conn.id, session_id.clone());
                sessions.metrics.sessions.fetch_add(1, Ordering::Relaxed);
                env.tell(Command::Open(conn));
                drop(table);
                self.schedule(now + Duration::from_secs(1));
                let config = sessions.config;
                let answer = serde_json::json!({
                    "session": session_id,
                    "poll_ms": config.poll.as_millis() as u64,
                    "idle_ms": config.idle.as_millis() as u64,
                })
                .to_string();
                respond_json(ctx, id, 200, &answer, env.cors);
                Ok(())
            }
            Call::Send { session, seq, ack } => {
                let entry = table
                    .sessions
                    .get_mut(&session)
                    .ok_or_else(unknown_session)?;
                if entry.closed.is_some() {
                    return Err(unknown_session());
                }
                if seq == 0 || seq > entry.next_post {
                    return Err(Refusal(
                        409,
                        "bad_seq",
                        format!("expected seq {}", entry.next_post),
                    ));
                }
                if seq == entry.next_post {
                    entry.next_post += 1;
                    let text =
                        std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
                    let conn = entry.conn;
                    for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
                        let command = match protocol::decode_limited(line, env.limits) {
                            Ok(message) => {
                                super::admit(env.verifier, conn, &mut entry.standing, message)
                            }
                            Err(error) => Command::Refused {
                                conn,
                                error,
                                close: false,
                            },
                        };
                        // Told under the lock: POSTs on other workers wait, so commands reach
                        // the hub in `seq` order.
                        env.tell(command);
                    }
                    sessions.metrics.posts.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(ack) = ack {
                    entry.acknowledge(ack);
                    let drained = drained(entry, env.max_backlog);
                    for (room, (from, to)) in drained {
                        env.tell(Command::Dropped {
                            conn: entry.conn,
                            room,
                            from,
                            to,
                        });
                    }
                }
                drop(table);
                respond_empty(ctx, id, env.cors);
                Ok(())
            }
            Call::Close { session } => {
                let entry = table
                    .sessions
                    .remove(&session)
                    .ok_or_else(unknown_session)?;
                table.by_conn.remove(&entry.conn.id);
                sessions.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
                if entry.closed.is_none() {
                    env.tell(Command::Closed(entry.conn));
                }
                drop(table);
                if let Some(waiter) = entry.waiter {
                    self.release(ctx, waiter, &sessions);
                }
                respond_empty(ctx, id, env.cors);
                Ok(())
            }
            Call::Sse { session, last } => {
                let entry = table
                    .sessions
                    .get_mut(&session)
                    .ok_or_else(unknown_session)?;
                if entry.closed.is_some()
                    && !entry.has_unsent()
                    && last.is_some_and(|l| l >= entry.last)
                {
                    return Err(unknown_session());
                }
                let from = last.unwrap_or(entry.acked);
                if from < entry.acked || from > entry.last {
                    // Asked for messages no longer kept (or never made): the client recovers
                    // from history with a new session.
                    let ended = end_session(&mut table, &session, &sessions, env);
                    drop(table);
                    if let Some(waiter) = ended {
                        self.release(ctx, waiter, &sessions);
                    }
                    return Err(unknown_session());
                }
                entry.rewind(from);
                entry.acknowledge(from);
                let previous = entry.waiter.replace(Waiter {
                    worker: self.worker,
                    id,
                    kind: Kind::Sse,
                });
                entry.idle_since = None;
                let mut headers = cors_headers(env.cors);
                headers.extend([
                    ("Content-Type", "text/event-stream"),
                    ("Cache-Control", "no-cache, no-store"),
                    ("X-Accel-Buffering", "no"),
                ]);
                if ctx.respond_stream(id, 200, &headers).is_err() {
                    entry.waiter = previous;
                    return Ok(());
                }
                let open = serde_json::json!({"session": session, "last": from}).to_string();
                let head = format!("retry: 1000\nevent: open\ndata: {open}\n\n");
                let _ = ctx.write_stream(id, head.as_bytes());
                sessions.metrics.streams.fetch_add(1, Ordering::Relaxed);
                let config = sessions.config;
                self.attached.insert(
                    id,
                    Attached {
                        session: session.clone(),
                        kind: Kind::Sse,
                        ends_at: now + config.stream_lifetime,
                        ping_at: Some(now + config.ping),
                    },
                );
                self.schedule(now + config.ping.min(config.stream_lifetime));
                drop(table);
                if let Some(previous) = previous {
                    self.release(ctx, previous, &sessions);
                }
                self.flush(ctx, id, env);
                Ok(())
            }
            Call::Poll { session, ack } => {
                let entry = table
                    .sessions
                    .get_mut(&session)
                    .ok_or_else(unknown_session)?;
                if ack < entry.acked || ack > entry.last {
                    let ended = end_session(&mut table, &session, &sessions, env);
                    drop(table);
                    if let Some(waiter) = ended {
                        self.release(ctx, waiter, &sessions);
                    }
                    return Err(unknown_session());
                }
                entry.rewind(ack);
                entry.acknowledge(ack);
                let previous = entry.waiter.replace(Waiter {
                    worker: self.worker,
                    id,
                    kind: Kind::Poll,
                });
                entry.idle_since = None;
                for (room, (from, to)) in drained(entry, env.max_backlog) {
                    env.tell(Command::Dropped {
                        conn: entry.conn,
                        room,
                        from,
                        to,
                    });
                }
                let config = sessions.config;
                let _ = ctx.hold_http(id, config.poll + Duration::from_secs(5));
                sessions.metrics.polls.fetch_add(1, Ordering::Relaxed);
                self.attached.insert(
                    id,
                    Attached {
                        session,
                        kind: Kind::Poll,
                        ends_at: now + config.poll,
                        ping_at: None,
                    },
                );
                self.schedule(now + config.poll);
                drop(table);
                if let Some(previous) = previous {
                    self.release(ctx, previous, &sessions);
                }
                self.flush(ctx, id, env);
                Ok(())
            }
        }
    }

    /// Ends a stream or answers a poll that is no longer its session's waiter (replaced, or the
    /// session ended): on this worker directly, on another through its inbox.
    fn release(&mut self, ctx: &mut Ctx<'_>, waiter: Waiter, sessions: &Sessions) {
        if waiter.worker == self.worker {
            self.detach(ctx, waiter.id, None);
        } else {
            sessions.notify(waiter);
        }
    }

    /// Ends the stream or answers the poll `id` of this worker (a poll with `answer`, or empty).
    fn detach(&mut self, ctx: &mut Ctx<'_>, id: ConnId, answer: Option<&str>) {
        let Some(attached) = self.attached.remove(&id) else {
            return;
        };
        let metrics = &self.sessions.metrics;
        match attached.kind {
            Kind::Sse => {
                metrics.streams.fetch_sub(1, Ordering::Relaxed);
                let _ = ctx.end_stream(id);
            }
            Kind::Poll => {
                metrics.polls.fetch_sub(1, Ordering::Relaxed);
                let _ = ctx.respond_http(
                    id,
                    200,
                    &[
                        ("Content-Type", "application/json"),
                        ("Cache-Control", "no-store"),
                    ],
                    answer
                        .unwrap_or("{\"last\":null,\"messages\":[]}")
                        .as_bytes(),
                );
            }
        }
    }

    /// Writes out what the session of this worker's stream or poll `id` has for it.
    pub fn flush(&mut self, ctx: &mut Ctx<'_>, id: ConnId, env: &Env<'_>) {
        let Some(attached) = self.attached.get(&id) else {
            return;
        };
        let sessions = Arc::clone(&self.sessions);
        let mut table = sessions.lock();
        let session_id = attached.session.clone();
        let kind = attached.kind;
        let Some(entry) = table.sessions.get_mut(&session_id) else {
            drop(table);
            return self.detach(ctx, id, None);
        };
        if entry
            .waiter
            .is_none_or(|w| w.id != id || w.worker != self.worker)
        {
            // Replaced by a newer request.
            let last = entry.acked;
            drop(table);
            let answer = format!("{{\"last\":{last},\"messages\":[]}}");
            return self.detach(ctx, id, Some(&answer));
        }
        match kind {
            Kind::Sse => {
                let mut bytes = Vec::new();
                let mut count = 0u64;
                while ctx.buffered_amount(id).unwrap_or(0) <= env.max_backlog {
                    let batch = entry.take(64 << 10);
                    if batch.is_empty() {
                        break;
                    }
                    bytes.clear();
                    for (index, text) in &batch {
                        sse_event(&mut bytes, *index, text);
                    }
                    count += batch.len() as u64;
                    if ctx.write_stream(id, &bytes).is_err() {
                        break;
                    }
                }
                if entry.has_unsent() {
                    ctx.watch_drain(id);
                }
                sessions
                    .metrics
                    .sse_messages
                    .fetch_add(count, Ordering::Relaxed);
                entry.trim(env.max_backlog);
                let closed = entry.closed.clone().filter(|_| !entry.has_unsent());
                let dropped = drained(entry, env.max_backlog);
                let conn = entry.conn;
                if closed.is_some() {
                    end_session(&mut table, &session_id, &sessions, env);
                }
                drop(table);
                for (room, (from, to)) in dropped {
                    env.tell(Command::Dropped {
                        conn,
                        room,
                        from,
                        to,
                    });
                }
                if count > 0
                    && let Some(attached) = self.attached.get_mut(&id)
                {
                    attached.ping_at = Some(Instant::now() + sessions.config.ping);
                }
                if let Some((code, reason)) = closed {
                    let event = format!("event: close\ndata: {}\n\n", close_json(code, &reason));
                    let _ = ctx.write_stream(id, event.as_bytes());
                    self.detach(ctx, id, None);
                }
            }
            Kind::Poll => {
                if !entry.has_unsent() && entry.closed.is_none() {
                    return;
                }
                let batch = entry.take(MAX_POLL_ANSWER);
                let mut answer = format!("{{\"last\":{},\"messages\":[", entry.written);
                for (i, (_, text)) in batch.iter().enumerate() {
                    if i > 0 {
                        answer.push(',');
                    }
                    answer.push_str(text);
                }
                answer.push(']');
                let closed = entry.closed.clone().filter(|_| !entry.has_unsent());
                if let Some((code, reason)) = &closed {
                    let _ = write!(answer, ",\"close\":{}", close_json(*code, reason));
                }
                answer.push('}');
                sessions
                    .metrics
                    .poll_messages
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                entry.trim(env.max_backlog);
                entry.waiter = None;
                entry.idle_since = Some(Instant::now());
                if closed.is_some() {
                    end_session(&mut table, &session_id, &sessions, env);
                }
                drop(table);
                self.detach(ctx, id, Some(&answer));
            }
        }
    }

    /// A session's delivery from the hub, for its home worker: encoded `text` is appended to
    /// its outbox (or dropped for a slow consumer), and its waiter told.
    pub fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        delivery: &channel::Delivery,
        text: &Arc<str>,
        env: &Env<'_>,
    ) {
        let sessions = Arc::clone(&self.sessions);
        let mut table = sessions.lock();
        let Some(session_id) = table.by_conn.get(&conn).cloned() else {
            return;
        };
        let Some(entry) = table.sessions.get_mut(&session_id) else {
            return;
        };
        if entry.closed.is_some() {
            return;
        }
        let max = env.max_backlog;
        let after = entry.unsent.saturating_add(text.len());
        let keep = entry.dropping.is_empty() && (after <= max || entry.unsent == 0);
        if !keep {
            let cut = match (env.slow_consumer, delivery.room_seq()) {
                (SlowConsumer::Gap, Some((room, seq))) => {
                    entry
                        .dropping
                        .entry(room.to_string())
                        .and_modify(|range| range.1 = seq)
                        .or_insert((seq, seq));
                    return;
                }
                (SlowConsumer::Gap, None) => after > max.saturating_mul(2),
                (SlowConsumer::Close, _) => true,
            };
            if cut {
                debug!(session = %session_id, "slow consumer: ending the session");
                entry.closed = Some((CloseCode::Policy.as_u16(), "slow consumer".into()));
                env.tell(Command::Closed(entry.conn));
                let waiter = entry.waiter;
                drop(table);
                if let Some(waiter) = waiter {
                    self.wake(ctx, waiter, env);
                }
                return;
            }
        }
        entry.last += 1;
        entry.unsent += text.len();
        entry.outbox.push_back(Entry {
            index: entry.last,
            text: Arc::clone(text),
        });
        let waiter = entry.waiter;
        drop(table);
        if let Some(waiter) = waiter {
            self.wake(ctx, waiter, env);
        }
    }

    /// The hub closed a session's connection (takeover, `POST /api/disconnect`).
    pub fn close(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        code: CloseCode,
        reason: &str,
        env: &Env<'_>,
    ) {
        let sessions = Arc::clone(&self.sessions);
        let mut table = sessions.lock();
        let Some(session_id) = table.by_conn.get(&conn).cloned() else {
            return;
        };
        let Some(entry) = table.sessions.get_mut(&session_id) else {
            return;
        };
        if entry.closed.is_some() {
            return;
        }
        entry.closed = Some((code.as_u16(), reason.to_string()));
        env.tell(Command::Closed(entry.conn));
        let waiter = entry.waiter;
        drop(table);
        if let Some(waiter) = waiter {
            self.wake(ctx, waiter, env);
        }
    }

    fn wake(&mut self, ctx: &mut Ctx<'_>, waiter: Waiter, env: &Env<'_>) {
        if waiter.worker == self.worker {
            self.flush(ctx, waiter.id, env);
        } else {
            self.sessions.notify(waiter);
        }
    }

    /// `id` is a stream or held poll of this worker.
    pub fn is_attached(&self, id: ConnId) -> bool {
        self.attached.contains_key(&id)
    }

    /// The stream or poll `id` of this worker ended (client gone, or timed out).
    pub fn closed(&mut self, id: ConnId) -> bool {
        let Some(attached) = self.attached.remove(&id) else {
            return false;
        };
        let metrics = &self.sessions.metrics;
        match attached.kind {
            Kind::Sse => metrics.streams.fetch_sub(1, Ordering::Relaxed),
            Kind::Poll => metrics.polls.fetch_sub(1, Ordering::Relaxed),
        };
        let mut table = self.sessions.lock();
        if let Some(entry) = table.sessions.get_mut(&attached.session)
            && entry
                .waiter
                .is_some_and(|w| w.id == id && w.worker == self.worker)
        {
            entry.waiter = None;
            entry.idle_since = Some(Instant::now());
        }
        true
    }

    /// Pings and ends streams, answers polls held long enough, ends idle sessions.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, env: &Env<'_>) {
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
            if attached.ends_at <= now {
                if attached.kind == Kind::Poll {
                    // Whatever came meanwhile, or an empty answer.
                    let session = attached.session.clone();
                    let last = {
                        let table = self.sessions.lock();
                        table.sessions.get(&session).map(|s| s.written)
                    };
                    match last {
                        Some(last) => {
                            let answer = format!("{{\"last\":{last},\"messages\":[]}}");
                            let mut table = self.sessions.lock();
                            if let Some(entry) = table.sessions.get_mut(&session)
                                && entry.waiter.is_some_and(|w| w.id == id)
                            {
                                entry.waiter = None;
                                entry.idle_since = Some(now);
                            }
                            drop(table);
                            self.detach(ctx, id, Some(&answer));
                        }
                        None => self.detach(ctx, id, None),
                    }
                } else {
                    self.closed_stream_end(ctx, id);
                }
            } else {
                attached.ping_at = Some(now + self.sessions.config.ping);
                let _ = ctx.write_stream(id, b"event: ping\ndata: {}\n\n");
            }
        }
        self.sweep(ctx, now, env);
        self.next = self
            .attached
            .values()
            .flat_map(|a| [Some(a.ends_at), a.ping_at])
            .flatten()
            .min();
        let table = self.sessions.lock();
        if !table.sessions.is_empty() {
            let sweep_at = table.next_sweep.max(now + Duration::from_millis(200));
            drop(table);
            self.schedule(sweep_at);
        }
    }

    /// A stream reached its lifetime: ended, its session waits for the client's resume.
    fn closed_stream_end(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.closed(id);
        let _ = ctx.end_stream(id);
    }

    /// Ends sessions idle for longer than `idle` (once a second, by whichever worker comes
    /// first).
    fn sweep(&mut self, ctx: &mut Ctx<'_>, now: Instant, env: &Env<'_>) {
        let sessions = Arc::clone(&self.sessions);
        let mut table = sessions.lock();
        if table.next_sweep > now {
            return;
        }
        table.next_sweep = now + Duration::from_secs(1);
        let idle = sessions.config.idle;
        let expired: Vec<String> = table
            .sessions
            .iter()
            .filter(|(_, s)| s.waiter.is_none() && s.idle_since.is_some_and(|t| now >= t + idle))
            .map(|(id, _)| id.clone())
            .collect();
        for session in expired {
            debug!(%session, "session idle: ending it");
            sessions
                .metrics
                .sessions_expired
                .fetch_add(1, Ordering::Relaxed);
            end_session(&mut table, &session, &sessions, env);
        }
        let _ = ctx;
    }
}

/// Removes a session; the hub hears it closed (its members leave). Returns its waiter.
fn end_session(
    table: &mut Table,
    session: &str,
    sessions: &Sessions,
    env: &Env<'_>,
) -> Option<Waiter> {
    let entry = table.sessions.remove(session)?;
    table.by_conn.remove(&entry.conn.id);
    sessions.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
    if entry.closed.is_none() {
        env.tell(Command::Closed(entry.conn));
    }
    entry.waiter
}

/// The rooms a slow session dropped messages of, once it drained to half the cap.
fn drained(entry: &mut Session, max: usize) -> BTreeMap<String, (u64, u64)> {
    if entry.dropping.is_empty() || entry.unsent > max / 2 {
        return BTreeMap::new();
    }
    std::mem::take(&mut entry.dropping)
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
            Ok(Call::Sse {
                session: "ab12".into(),
                last: Some(7)
            })
        );
        let header =
            request("GET /ws/sse?session=ab12&last=7 HTTP/1.1\r\nLast-Event-ID: 9\r\n\r\n");
        assert!(matches!(
            parse(&header),
            Ok(Call::Sse { last: Some(9), .. })
        ));
        let poll = request("GET /ws/poll?session=ab12 HTTP/1.1\r\n\r\n");
        assert!(matches!(parse(&poll), Ok(Call::Poll { ack: 0, .. })));
        let send = request("POST /ws/send?session=ab12&seq=3&ack=2 HTTP/1.1\r\n\r\n");
        assert!(matches!(
            parse(&send),
            Ok(Call::Send {
                seq: 3,
                ack: Some(2),
                ..
            })
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
        Session {
            conn: HubConn {
                worker: 0,
                id: ConnId::detached(0),
            },
            standing: Standing::Ready,
            outbox: VecDeque::new(),
            last: 0,
            acked: 0,
            written: 0,
            unsent: 0,
            retained: 0,
            waiter: None,
            next_post: 1,
            idle_since: None,
            closed: None,
            dropping: BTreeMap::new(),
        }
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
