//! The relay of the HTTP transports on a cluster (`--broker`): a request for a session held
//! by another node (round-robin load balancing, no sticky sessions) is sent to that node over
//! Redis pub/sub (channel `dx:relay:NODE`), run there as if it had arrived there, and answered
//! back the same way: a command POST's status, a poll's answer, a stream's events.
//!
//! Two threads per node, neither of them a worker's: a subscriber reading the node's channel,
//! and the relay thread, which runs relayed requests against the node's sessions and
//! publishes every answer (so no worker ever waits on Redis). A request whose node does not
//! answer within [`ANSWER_WITHIN`] gets `503 unavailable` (the client retries); one for a node
//! no longer subscribed (it died) gets `404 unknown_session` at once (the client opens a new
//! session and recovers from history). Pub/sub delivers at most once: a lost relayed answer
//! costs a retry or a resume, never a message, since a session keeps what was not
//! acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::fallback::{
    self, Answer, Env, Kind, Output, Place, Refusal, Sessions, Waiter, empty_answer, stream_head,
};
use super::hub_thread::Delivery;
use super::redis_broker::BrokerUrl;
use crate::server::ConnId;

/// How long a relayed command, close or stream opening waits for the session's node.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How long a connection to Redis may take to open or answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The most stream bytes in one relayed message.
const STREAM_PIECE: usize = 256 << 10;

/// A request relayed to the node holding its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
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
        body: String,
    },
    Close {
        session: String,
    },
}

impl Request {
    pub fn session(&self) -> &str {
        match self {
            Request::Sse { session, .. }
            | Request::Poll { session, .. }
            | Request::Send { session, .. }
            | Request::Close { session } => session,
        }
    }
}

/// What nodes tell each other on their relay channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    /// To the session's node: run `req`, answer `from` under token `k`.
    Request { from: String, k: u64, req: Request },
    /// To the session's node: the stream or poll `k` of node `from` is gone.
    Detach {
        from: String,
        k: u64,
        session: String,
    },
    /// Back: the whole answer to request `k` (an empty body: none).
    Reply { k: u64, status: u16, body: String },
    /// Back: more of the stream `k`.
    Stream { k: u64, data: String },
    /// Back: the stream `k` ends.
    End { k: u64 },
}

/// What to do when a published message reached no one (its node is gone) or Redis failed.
#[derive(Debug)]
enum Undelivered {
    /// A request of this node: answer it here.
    Request(u64),
    /// An answer to another node's waiter: the session forgets that waiter.
    Waiter {
        session: String,
        node: String,
        token: u64,
    },
    Nothing,
}

enum Job {
    Out {
        node: String,
        wire: Wire,
        undelivered: Undelivered,
    },
    /// A session of this node has output for its relayed waiter.
    Flush {
        session: String,
        waiter: Waiter,
    },
    In(Wire),
}

/// This node's end of the relay.
#[derive(Debug)]
pub(crate) struct Relay {
    node: String,
    jobs: Mutex<Sender<Job>>,
    next_token: AtomicU64,
    /// Requests of this node's workers waiting for another node: token → worker, connection.
    pending: Arc<Mutex<HashMap<u64, (usize, ConnId)>>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Out { node, wire, .. } => write!(f, "Out({node}, {wire:?})"),
            Job::Flush { session, .. } => write!(f, "Flush({session})"),
            Job::In(wire) => write!(f, "In({wire:?})"),
        }
    }
}

impl Relay {
    /// Starts the relay of `sessions` over the broker's Redis and installs it.
    pub fn start(url: &BrokerUrl, sessions: &Arc<Sessions>, env: Env) -> std::io::Result<()> {
        let client = url
            .client()
            .map_err(|e| std::io::Error::other(format!("--broker: {e}")))?;
        let mut bytes = [0u8; 8];
        crate::random_source()(&mut bytes);
        let node = format!("{:016x}", u64::from_le_bytes(bytes));
        let (jobs, receiver) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let (subscribed, on_subscribed) = mpsc::channel();
        let subscriber = SubscriberThread {
            client: client.clone(),
            channel: channel(&node),
            jobs: jobs.clone(),
            stop: Arc::clone(&stop),
            subscribed,
        };
        std::thread::Builder::new()
            .name("duplex-relay-sub".into())
            .spawn(move || subscriber.run())?;
        // The node serves once it hears its channel: an answer to a request it relays right
        // away would otherwise be published before it listens, and lost (a 503 after
        // ANSWER_WITHIN). With Redis down the node starts anyway and subscribes when it can.
        if on_subscribed.recv_timeout(TIMEOUT * 2).is_err() {
            warn!("relay: not subscribed to Redis yet; relayed requests wait until it is");
        }
        let thread = RelayThread {
            node: node.clone(),
            client,
            connection: None,
            jobs: receiver,
            sessions: Arc::clone(sessions),
            env,
            pending: Arc::clone(&pending),
            stop: Arc::clone(&stop),
        };
        std::thread::Builder::new()
            .name("duplex-relay".into())
            .spawn(move || thread.run())?;
        let relay = Relay {
            node,
            jobs: Mutex::new(jobs),
            next_token: AtomicU64::new(1),
            pending,
            stop,
        };
        if sessions.relay.set(relay).is_err() {
            return Err(std::io::Error::other("the relay is already running"));
        }
        Ok(())
    }

    /// This node's name (the prefix of its session ids).
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn job(&self, job: Job) {
        let _ = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
    }

    /// A token for request `id` of `worker`, under which the answer comes back.
    pub fn register(&self, worker: usize, id: ConnId) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, (worker, id));
        token
    }

    pub fn unregister(&self, token: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token);
    }

    /// Sends `request` to `owner`, the node holding its session.
    pub fn forward(&self, owner: &str, token: u64, request: Request) {
        self.job(Job::Out {
            node: owner.to_string(),
            wire: Wire::Request {
                from: self.node.clone(),
                k: token,
                req: request,
            },
            undelivered: Undelivered::Request(token),
        });
    }

    /// Tells `owner` that this node's stream or poll `token` for `session` is gone.
    pub fn detach(&self, owner: &str, session: &str, token: u64) {
        self.job(Job::Out {
            node: owner.to_string(),
            wire: Wire::Detach {
                from: self.node.clone(),
                k: token,
                session: session.to_string(),
            },
            undelivered: Undelivered::Nothing,
        });
    }

    /// `session` (of this node) has output for `waiter`, held by another node.
    pub fn flush(&self, session: &str, waiter: Waiter) {
        self.job(Job::Flush {
            session: session.to_string(),
            waiter,
        });
    }
}

fn channel(node: &str) -> String {
    format!("dx:relay:{node}")
}

struct SubscriberThread {
    client: redis::Client,
    channel: String,
    jobs: Sender<Job>,
    stop: Arc<AtomicBool>,
    /// Told each time the subscription is in place (`Relay::start` waits for the first).
    subscribed: Sender<()>,
}

impl SubscriberThread {
    fn run(self) {
        let mut backoff = Duration::from_millis(50);
        let mut was_up = false;
        while !self.stop.load(Ordering::Relaxed) {
            match self.session(&mut was_up) {
                Ok(()) => return,
                Err(e) => {
                    if was_up {
                        warn!("relay: Redis pub/sub connection lost: {e}");
                        was_up = false;
                        backoff = Duration::from_millis(50);
                    } else {
                        debug!("relay: Redis pub/sub connection failed: {e}");
                    }
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    fn session(&self, was_up: &mut bool) -> redis::RedisResult<()> {
        let mut connection = self.client.get_connection_with_timeout(TIMEOUT)?;
        connection.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut pubsub = connection.as_pubsub();
        pubsub.subscribe(&self.channel)?;
        *was_up = true;
        let _ = self.subscribed.send(());
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(e),
            };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            match serde_json::from_str::<Wire>(&payload) {
                Ok(wire) => {
                    if self.jobs.send(Job::In(wire)).is_err() {
                        return Ok(());
                    }
                }
                Err(e) => debug!("relay: unreadable message: {e}"),
            }
        }
    }
}

struct RelayThread {
    node: String,
    client: redis::Client,
    connection: Option<redis::Connection>,
    jobs: Receiver<Job>,
    sessions: Arc<Sessions>,
    env: Env,
    pending: Arc<Mutex<HashMap<u64, (usize, ConnId)>>>,
    stop: Arc<AtomicBool>,
}

impl RelayThread {
    fn run(mut self) {
        let mut failed_at: Option<Instant> = None;
        loop {
            let job = match self.jobs.recv_timeout(Duration::from_secs(1)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match job {
                Job::Out {
                    node,
                    wire,
                    undelivered,
                } => {
                    self.publish(&node, &wire, undelivered, &mut failed_at);
                }
                Job::Flush { session, waiter } => self.flush(&session, &waiter, &mut failed_at),
                Job::In(wire) => self.incoming(wire, &mut failed_at),
            }
        }
    }

    /// Publishes `wire` on `node`'s channel; acts on `undelivered` if no one got it.
    fn publish(
        &mut self,
        node: &str,
        wire: &Wire,
        undelivered: Undelivered,
        failed_at: &mut Option<Instant>,
    ) -> bool {
        let payload = serde_json::to_string(wire).unwrap_or_default();
        let result = self.connection(failed_at).and_then(|c| {
            redis::cmd("PUBLISH")
                .arg(channel(node))
                .arg(payload)
                .query::<i64>(c)
                .map_err(|e| e.to_string())
        });
        let refusal = match result {
            Ok(n) if n > 0 => return true,
            Ok(_) => fallback::unknown_session(),
            Err(e) => {
                debug!("relay: publish failed: {e}");
                self.connection = None;
                *failed_at = Some(Instant::now());
                fallback::relay_unavailable()
            }
        };
        match undelivered {
            Undelivered::Request(token) => self.answer_here(
                token,
                Answer::Reply {
                    status: refusal.0,
                    body: refusal.body(),
                },
            ),
            Undelivered::Waiter {
                session,
                node,
                token,
            } => self.sessions.detach_remote(&session, &node, token),
            Undelivered::Nothing => {}
        }
        false
    }

    fn connection(
        &mut self,
        failed_at: &mut Option<Instant>,
    ) -> Result<&mut redis::Connection, String> {
        if self.connection.is_none() {
            if failed_at.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) {
                return Err("Redis unreachable".into());
            }
            let connection = self
                .client
                .get_connection_with_timeout(TIMEOUT)
                .and_then(|c| {
                    c.set_read_timeout(Some(TIMEOUT))?;
                    c.set_write_timeout(Some(TIMEOUT))?;
                    Ok(c)
                })
                .map_err(|e| {
                    *failed_at = Some(Instant::now());
                    e.to_string()
                })?;
            *failed_at = None;
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| "no connection".into())
    }

    /// Hands the answer to a request of this node to the worker holding it.
    fn answer_here(&self, token: u64, answer: Answer) {
        let done = !matches!(answer, Answer::Stream(_));
        let target = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if done {
                pending.remove(&token)
            } else {
                pending.get(&token).copied()
            }
        };
        if let Some((worker, id)) = target {
            self.sessions.hand(worker, id, Delivery::Relayed(answer));
        }
    }

    fn incoming(&mut self, wire: Wire, failed_at: &mut Option<Instant>) {
        match wire {
            Wire::Reply { k, status, body } => self.answer_here(k, Answer::Reply { status, body }),
            Wire::Stream { k, data } => self.answer_here(k, Answer::Stream(data)),
            Wire::End { k } => self.answer_here(k, Answer::End),
            Wire::Detach { from, k, session } => self.sessions.detach_remote(&session, &from, k),
            Wire::Request { from, k, req } => self.run_request(from, k, req, failed_at),
        }
    }

    /// Runs a request another node relayed for a session of this one.
    fn run_request(&mut self, from: String, k: u64, req: Request, failed_at: &mut Option<Instant>) {
        let session = req.session().to_string();
        let reply = |status: u16, body: String| Wire::Reply { k, status, body };
        let place = Place::Remote {
            node: from.clone(),
            token: k,
            since: Instant::now(),
        };
        let result: Result<Option<Wire>, Refusal> = match req {
            Request::Send { seq, ack, body, .. } => self
                .sessions
                .send(&session, seq, ack, body.as_bytes(), &self.env)
                .map(|()| Some(reply(204, String::new()))),
            Request::Close { .. } => self.sessions.close(&session, &self.env).map(|waiter| {
                if let Some(waiter) = waiter {
                    self.tell_waiter(&session, waiter, failed_at);
                }
                Some(reply(204, String::new()))
            }),
            Request::Sse { last, .. } => self
                .sessions
                .attach(&session, Kind::Sse, last, place.clone(), &self.env)
                .map(|(open, previous)| {
                    let head = stream_head(&open.unwrap_or_default());
                    let opened = self.publish(
                        &from,
                        &Wire::Stream { k, data: head },
                        Undelivered::Waiter {
                            session: session.clone(),
                            node: from.clone(),
                            token: k,
                        },
                        failed_at,
                    );
                    if let Some(previous) = previous {
                        self.tell_waiter(&session, previous, failed_at);
                    }
                    if opened {
                        let waiter = Waiter::new(place.clone(), Kind::Sse);
                        self.flush(&session, &waiter, failed_at);
                    }
                    None
                }),
            Request::Poll { ack, .. } => self
                .sessions
                .attach(&session, Kind::Poll, Some(ack), place.clone(), &self.env)
                .map(|(_, previous)| {
                    if let Some(previous) = previous {
                        self.tell_waiter(&session, previous, failed_at);
                    }
                    let waiter = Waiter::new(place.clone(), Kind::Poll);
                    self.flush(&session, &waiter, failed_at);
                    None
                }),
        };
        let wire = match result {
            Ok(Some(wire)) => wire,
            Ok(None) => return,
            Err(refusal) => reply(refusal.0, refusal.body()),
        };
        self.publish(&from, &wire, Undelivered::Nothing, failed_at);
    }

    /// A waiter replaced or released by a relayed request: told where it is held.
    fn tell_waiter(&mut self, session: &str, waiter: Waiter, failed_at: &mut Option<Instant>) {
        match waiter.place() {
            Place::Local { worker, id } => self.sessions.hand(*worker, *id, Delivery::Flush),
            Place::Remote { node, .. } if node == &self.node => {}
            Place::Remote { .. } => self.flush(session, &waiter, failed_at),
        }
    }

    /// Publishes what `session` has for its relayed waiter.
    fn flush(&mut self, session: &str, waiter: &Waiter, failed_at: &mut Option<Instant>) {
        let Place::Remote { node, token, .. } = waiter.place() else {
            return;
        };
        let (node, k) = (node.clone(), *token);
        let undelivered = || Undelivered::Waiter {
            session: session.to_string(),
            node: node.clone(),
            token: k,
        };
        loop {
            let wire = match self
                .sessions
                .output(session, waiter, STREAM_PIECE, &self.env)
            {
                Output::Nothing => return,
                Output::Stream { bytes, end, .. } => {
                    if !bytes.is_empty() {
                        let data = String::from_utf8_lossy(&bytes).into_owned();
                        if !self.publish(&node, &Wire::Stream { k, data }, undelivered(), failed_at)
                        {
                            return;
                        }
                    }
                    if !end {
                        if bytes.is_empty() {
                            return;
                        }
                        continue;
                    }
                    Wire::End { k }
                }
                Output::Answer { body, .. } => Wire::Reply {
                    k,
                    status: 200,
                    body,
                },
                Output::Release { last } => match waiter.kind() {
                    Kind::Sse => Wire::End { k },
                    _ => Wire::Reply {
                        k,
                        status: 200,
                        body: empty_answer(last),
                    },
                },
            };
            self.publish(&node, &wire, Undelivered::Nothing, failed_at);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_messages_round_trip_as_json() {
        let wires = [
            Wire::Request {
                from: "a1".into(),
                k: 7,
                req: Request::Send {
                    session: "a1-ff".into(),
                    seq: 3,
                    ack: Some(2),
                    body: "{\"type\":\"ping\",\"id\":1}\n".into(),
                },
            },
            Wire::Request {
                from: "a1".into(),
                k: 8,
                req: Request::Sse {
                    session: "b2-00".into(),
                    last: None,
                },
            },
            Wire::Detach {
                from: "a1".into(),
                k: 8,
                session: "b2-00".into(),
            },
            Wire::Reply {
                k: 7,
                status: 204,
                body: String::new(),
            },
            Wire::Stream {
                k: 8,
                data: "id: 1\ndata: {}\n\n".into(),
            },
            Wire::End { k: 8 },
        ];
        for wire in wires {
            let text = serde_json::to_string(&wire).unwrap();
            assert_eq!(serde_json::from_str::<Wire>(&text).unwrap(), wire, "{text}");
        }
    }
}
