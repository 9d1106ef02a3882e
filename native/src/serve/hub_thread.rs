//! The thread that owns the `duplex.v1` [`Hub`]: every worker sends it the commands of its
//! connections over one channel, and it routes the hub's deliveries back into per-worker
//! inboxes, waking a worker only when its inbox goes from empty to non-empty.
//!
//! One hub for the whole process keeps rooms, seq numbers and history in one place whatever
//! worker a member's socket landed on; the workers keep all socket work (reads, framing,
//! compression, writes) in parallel. A broadcast is encoded to JSON once by the hub and shared
//! (`Arc<str>`) by every delivery.

use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex_core::channel::Hub;
use duplex_core::channel::protocol::{self, ClientMessage, CommandError, ErrorCode};
use duplex_core::close::CloseCode;
use duplex_core::message::Utf8Bytes;
use tracing::debug;

use super::auth::TokenVerifier;
use super::metrics::ChannelMetrics;
use crate::server::{ConnId, WorkerWaker};

/// A connection as the hub knows it: its worker and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct HubConn {
    pub worker: usize,
    pub id: ConnId,
}

/// What workers tell the hub thread.
#[derive(Debug)]
pub(crate) enum Command {
    Open(HubConn),
    Text(HubConn, Utf8Bytes),
    Closed(HubConn),
    /// The worker dropped messages `from..=to` of a room for a slow consumer.
    Dropped {
        conn: HubConn,
        room: String,
        from: u64,
        to: u64,
    },
}

/// What the hub thread hands a worker for one of its connections.
#[derive(Debug)]
pub(crate) enum Delivery {
    Text(Arc<str>),
    Close(CloseCode, &'static str),
}

/// Deliveries waiting for one worker.
pub(crate) type Inbox = Mutex<Vec<(ConnId, Delivery)>>;

/// Commands handled before deliveries are handed out, so one wake carries many deliveries
/// without making a busy hub slow to answer.
const BATCH: usize = 4096;

pub(crate) struct HubThread {
    pub hub: Hub<HubConn>,
    pub commands: Receiver<Command>,
    pub inboxes: Vec<Arc<Inbox>>,
    pub wakers: Vec<WorkerWaker>,
    pub verifier: Option<TokenVerifier>,
    pub metrics: Arc<ChannelMetrics>,
}

impl HubThread {
    /// Runs until every worker dropped its command sender (the server stopped).
    pub fn run(mut self) {
        let epoch = Instant::now();
        let mut outboxes: Vec<Vec<(ConnId, Delivery)>> =
            (0..self.inboxes.len()).map(|_| Vec::new()).collect();
        // Connections that still have to present a valid token in `hello`.
        let mut unauthenticated: BTreeSet<HubConn> = BTreeSet::new();
        loop {
            let now = epoch.elapsed();
            let first = match self.hub.poll_timeout() {
                Some(at) => match self.commands.recv_timeout(at.saturating_sub(now)) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match self.commands.recv() {
                    Ok(command) => Some(command),
                    Err(_) => return,
                },
            };
            let now = epoch.elapsed();
            let mut command = first;
            let mut handled = 0;
            while let Some(c) = command.take() {
                self.handle(c, now, &mut unauthenticated, &mut outboxes);
                handled += 1;
                if handled < BATCH {
                    command = self.commands.try_recv().ok();
                }
            }
            self.hub.handle_timeout(now);
            self.route(&mut outboxes);
        }
    }

    fn handle(
        &mut self,
        command: Command,
        now: Duration,
        unauthenticated: &mut BTreeSet<HubConn>,
        outboxes: &mut [Vec<(ConnId, Delivery)>],
    ) {
        match command {
            Command::Open(conn) => {
                self.hub.connect(conn, now);
                if self.verifier.is_some() {
                    unauthenticated.insert(conn);
                }
            }
            Command::Text(conn, text) => {
                if unauthenticated.contains(&conn) {
                    match self.authenticate(conn, text.as_str(), now) {
                        Ok(()) => {
                            unauthenticated.remove(&conn);
                        }
                        Err(error) => {
                            let reply: Arc<str> = error.to_message().to_text().into();
                            let outbox = &mut outboxes[conn.worker];
                            outbox.push((conn.id, Delivery::Text(reply)));
                            if error.code == ErrorCode::Unauthorized {
                                debug!(?conn, "token refused: {}", error.message);
                                outbox.push((
                                    conn.id,
                                    Delivery::Close(CloseCode::Policy, "unauthorized"),
                                ));
                            }
                        }
                    }
                    return;
                }
                let _ = self.hub.receive(conn, text.as_str(), now);
            }
            Command::Closed(conn) => {
                unauthenticated.remove(&conn);
                self.hub.disconnect(conn, now);
            }
            Command::Dropped {
                conn,
                room,
                from,
                to,
            } => self.hub.dropped(conn, &room, from, to),
        }
    }

    /// The first command of a connection when tokens are required: a `hello` whose token
    /// verifies. Its claims set the client id (`sub`) and the namespaces it may join (`ns`).
    fn authenticate(
        &mut self,
        conn: HubConn,
        text: &str,
        now: Duration,
    ) -> Result<(), CommandError> {
        let Some(verifier) = &self.verifier else {
            return Ok(());
        };
        let token = match protocol::decode(text)? {
            ClientMessage::Hello { token: Some(t), .. } => t,
            ClientMessage::Hello { token: None, .. } => {
                return Err(CommandError::new(
                    None,
                    ErrorCode::Unauthorized,
                    "this server requires `hello.token` (an HS256 JWT)",
                ));
            }
            _ => {
                return Err(CommandError::new(
                    None,
                    ErrorCode::HelloRequired,
                    "send `hello` first",
                ));
            }
        };
        let claims = verifier
            .verify(&token)
            .map_err(|e| CommandError::new(None, ErrorCode::Unauthorized, e.to_string()))?;
        if let Some(namespaces) = &claims.ns {
            let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
            self.hub.restrict(conn, &namespaces);
        }
        let hello = ClientMessage::Hello {
            client: Some(claims.sub),
            token: None,
        };
        let hello = serde_json::to_string(&hello)
            .map_err(|e| CommandError::new(None, ErrorCode::BadMessage, e.to_string()))?;
        self.hub.receive(conn, &hello, now)
    }

    /// Moves the hub's deliveries into the workers' inboxes and wakes the workers whose inbox
    /// was empty (the others have a wake pending already).
    fn route(&mut self, outboxes: &mut [Vec<(ConnId, Delivery)>]) {
        while let Some((conn, text)) = self.hub.poll_delivery() {
            outboxes[conn.worker].push((conn.id, Delivery::Text(text)));
        }
        self.metrics.observe(&self.hub);
        for (worker, outbox) in outboxes.iter_mut().enumerate() {
            if outbox.is_empty() {
                continue;
            }
            let was_empty = {
                let mut inbox = self.inboxes[worker]
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let was_empty = inbox.is_empty();
                if was_empty {
                    std::mem::swap(&mut *inbox, outbox);
                } else {
                    inbox.append(outbox);
                }
                was_empty
            };
            if was_empty {
                self.wakers[worker].wake();
            }
        }
    }
}
