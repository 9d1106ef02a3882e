//! STOMP connections of one worker: each runs the core's [`StompSession`], which turns the
//! client's frames into `duplex.v1` commands for the hub and the hub's deliveries into STOMP
//! frames; this module moves bytes, closes, and runs the sessions' heart-beat timers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use duplex_core::channel::Delivery;
use duplex_core::channel::protocol::ClientMessage;
use duplex_core::close::CloseCode;
use duplex_core::handshake::server::Request;
use duplex_core::message::Message;
use duplex_core::stomp::{MessageBody, Output, StompConfig, StompSession, Version};
use tracing::debug;

use crate::server::{ConnId, Ctx};

/// The STOMP subprotocol to answer for an upgrade offering `offered`, if any is STOMP.
pub(super) fn subprotocol(offered: &[String]) -> Option<&'static str> {
    Version::best_subprotocol(offered.iter().map(String::as_str)).map(Version::subprotocol)
}

/// One STOMP connection.
#[derive(Debug)]
struct Conn {
    session: StompSession,
    /// The deadline this connection has in the timer heap (the earliest of its entries).
    scheduled: Option<Duration>,
}

/// The STOMP connections of a worker.
#[derive(Debug)]
pub(super) struct StompConns {
    epoch: Instant,
    config: StompConfig,
    conns: HashMap<ConnId, Conn>,
    timers: BinaryHeap<Reverse<(Duration, ConnId)>>,
    /// An upgrade to STOMP was just accepted, with the bearer token of its `Authorization`
    /// header if any: the next `on_open` of this worker is that connection (the core reports
    /// `Open` right after the accept, before any other event).
    pub(super) upgrading: Option<Option<String>>,
}

impl StompConns {
    pub(super) fn new(config: StompConfig) -> StompConns {
        StompConns {
            epoch: Instant::now(),
            config,
            conns: HashMap::new(),
            timers: BinaryHeap::new(),
            upgrading: None,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(super) fn contains(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    /// Notes an accepted STOMP upgrade (see `upgrading`).
    pub(super) fn accepting(&mut self, request: &Request) {
        let token = request
            .header_values("Authorization")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.trim().strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        self.upgrading = Some(token);
    }

    /// A STOMP connection opened with `protocol` (its subprotocol, if any) and the upgrade's
    /// bearer token.
    pub(super) fn open(&mut self, id: ConnId, protocol: Option<&str>, token: Option<String>) {
        let mut session = StompSession::new(self.config.clone(), token, self.now());
        if let Some(version) = protocol.and_then(Version::from_subprotocol) {
            session.limit_version(version);
        }
        self.conns.insert(
            id,
            Conn {
                session,
                scheduled: None,
            },
        );
    }

    pub(super) fn closed(&mut self, id: ConnId) -> bool {
        self.conns.remove(&id).is_some()
    }

    /// A WebSocket message from the client; returns the commands for the hub.
    pub(super) fn receive(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        bytes: &[u8],
    ) -> Vec<ClientMessage> {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&id) else {
            return Vec::new();
        };
        conn.session.receive(bytes, now);
        self.flush(ctx, id)
    }

    /// A delivery of the hub to the connection (`body`: a room message's STOMP body, made once
    /// for its whole fan-out); returns the commands it leads to.
    pub(super) fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        delivery: &Delivery,
        body: Option<&MessageBody>,
    ) -> Vec<ClientMessage> {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&id) else {
            return Vec::new();
        };
        conn.session.deliver_typed(delivery, body, now);
        self.flush(ctx, id)
    }

    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| self.epoch + *at)
    }

    /// Runs the sessions whose heart-beat deadline passed; returns the commands they lead to.
    pub(super) fn on_timer(&mut self, ctx: &mut Ctx<'_>) -> Vec<(ConnId, ClientMessage)> {
        let now = self.now();
        let mut commands = Vec::new();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.scheduled != Some(at) {
                continue; // stale: an earlier entry replaced it
            }
            conn.scheduled = None;
            conn.session.handle_timeout(now);
            commands.extend(self.flush(ctx, id).into_iter().map(|c| (id, c)));
        }
        commands
    }

    /// Carries out a session's outputs and schedules its next deadline.
    fn flush(&mut self, ctx: &mut Ctx<'_>, id: ConnId) -> Vec<ClientMessage> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        while let Some(output) = conn.session.poll_output() {
            match output {
                Output::Command(command) => commands.push(command),
                Output::Send(bytes) => {
                    let message = match String::from_utf8(bytes) {
                        Ok(text) => Message::text(text),
                        Err(e) => Message::binary(e.into_bytes()),
                    };
                    if let Err(e) = ctx.send(id, &message) {
                        debug!(?id, "STOMP frame not sent: {e}");
                    }
                }
                Output::Close(clean) => {
                    let (code, reason) = if clean {
                        (CloseCode::Normal, "DISCONNECT")
                    } else {
                        (CloseCode::Protocol, "STOMP error")
                    };
                    let _ = ctx.close(id, code, reason);
                }
            }
        }
        if let Some(deadline) = conn.session.poll_timeout()
            && conn.scheduled.is_none_or(|s| deadline < s)
        {
            conn.scheduled = Some(deadline);
            self.timers.push(Reverse((deadline, id)));
        }
        if self.timers.len() > 64 && self.timers.len() > self.conns.len() * 4 {
            // Stale entries outnumber live ones: keep each connection's current one.
            let live: Vec<_> = self
                .conns
                .iter()
                .filter_map(|(id, c)| c.scheduled.map(|at| Reverse((at, *id))))
                .collect();
            self.timers = live.into();
        }
        commands
    }
}
