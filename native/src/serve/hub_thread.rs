//! The thread that owns the `duplex.v1` [`Hub`]: every worker sends it the commands of its
//! connections over one channel, and it routes the hub's deliveries back into per-worker
//! inboxes, waking a worker only when its inbox goes from empty to non-empty.
//!
//! One hub for the whole process keeps rooms, seq numbers and history in one place whatever
//! worker a member's socket landed on; the workers keep all socket work (reads, framing,
//! compression, writes) in parallel. The hub's deliveries are typed
//! ([`duplex_core::channel::Delivery`]); a broadcast is one shared value, which each worker
//! encodes (with the connection's codec) and prepares once for all its members.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex_core::channel::protocol::{ClientMessage, CommandError};
use duplex_core::channel::{self, BrokerEvent, Hub};
use duplex_core::close::CloseCode;

use super::api::{ApiCall, ApiResponse};
use super::metrics::ChannelMetrics;
use super::redis_broker::RedisBroker;
use crate::server::{ConnId, WorkerWaker};

/// A connection as the hub knows it: its worker and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct HubConn {
    pub worker: usize,
    pub id: ConnId,
}

/// What workers tell the hub thread. Workers decode and validate every frame (and check
/// tokens) themselves, so the hub's work per command is bounded by the protocol's limits
/// whatever a client sends.
#[derive(Debug)]
pub(crate) enum Command {
    Open(HubConn),
    /// A decoded, valid command.
    Message(HubConn, ClientMessage),
    /// A command the worker refused; with `close`, the connection is closed with 1008 after the
    /// error (a refused token).
    Refused {
        conn: HubConn,
        error: CommandError,
        close: bool,
    },
    /// The connection presented a valid token: its client id and the namespaces it may join.
    Authenticated {
        conn: HubConn,
        client: String,
        namespaces: Option<Vec<String>>,
    },
    Closed(HubConn),
    /// The worker dropped messages `from..=to` of a room for a slow consumer.
    Dropped {
        conn: HubConn,
        room: String,
        from: u64,
        to: u64,
    },
    /// An answer or a room message from the broker (`--broker`).
    Broker(BrokerEvent),
    /// A call of the HTTP API from the (not upgraded) connection `conn`.
    Api {
        conn: HubConn,
        call: ApiCall,
    },
    /// The answer to an API call, read elsewhere (from Redis, on a cluster).
    ApiReply(HubConn, ApiResponse),
    /// `POST /api/disconnect` on another node, for a client whose id this node holds.
    RemoteDisconnect {
        client: String,
        code: u16,
        reason: String,
    },
    /// `POST /api/disconnect` closed this many connections here; the broker told the other
    /// nodes, which closed `remote`: the sum is the answer.
    ApiClosed {
        conn: HubConn,
        local: usize,
        remote: Result<u64, String>,
    },
    /// The server stopped: the broker's threads hold senders too, so the hub thread cannot
    /// wait for every sender to be dropped.
    Stop,
}

/// What the hub thread hands a worker for one of its connections.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A `duplex.v1` delivery of the hub, encoded by the worker.
    Channel(channel::Delivery),
    Close(CloseCode, &'static str),
    /// The answer to an API call of an HTTP connection.
    Http(ApiResponse),
    /// `POST /api/disconnect`: close with this code and reason.
    Disconnect(CloseCode, String),
    /// From another worker: the session of this worker's SSE stream or held poll has
    /// messages (or ended).
    Flush,
    /// The answer of another node to a request of the HTTP transports this worker relayed.
    Relayed(super::fallback::Answer),
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
    pub metrics: Arc<ChannelMetrics>,
    /// The shared broker; `None` with the in-process default.
    pub broker: Option<RedisBroker>,
    /// API calls awaiting the hub's (or the broker's) answer.
    pub api: ApiCalls,
}

/// API publishes in flight, by the ticket the hub answers them with.
#[derive(Debug, Default)]
pub(crate) struct ApiCalls {
    next_ticket: u64,
    /// Ticket → the connection asking, and its place in a broadcast (if it is one).
    tickets: HashMap<u64, (HubConn, Option<(u64, usize)>)>,
    /// Broadcasts in flight: their rooms' results so far and how many are missing.
    broadcasts: HashMap<u64, (HubConn, Vec<serde_json::Value>, usize)>,
    /// `POST /api/send` waiting for the other nodes: the hub's token → the connection asking
    /// and how many connections here got the message.
    sends: HashMap<u64, (HubConn, u64)>,
}

impl HubThread {
    /// Runs until every worker dropped its command sender (the server stopped).
    pub fn run(mut self) {
        let epoch = Instant::now();
        let mut outboxes: Vec<Vec<(ConnId, Delivery)>> =
            (0..self.inboxes.len()).map(|_| Vec::new()).collect();
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
                if matches!(c, Command::Stop) {
                    return;
                }
                self.handle(c, now, &mut outboxes);
                handled += 1;
                if handled < BATCH {
                    command = self.commands.try_recv().ok();
                }
            }
            self.hub.handle_timeout(now);
            if let Some(broker) = &self.broker {
                while let Some(request) = self.hub.poll_broker() {
                    broker.request(request);
                }
            }
            self.route(&mut outboxes);
        }
    }

    fn handle(
        &mut self,
        command: Command,
        now: Duration,
        outboxes: &mut [Vec<(ConnId, Delivery)>],
    ) {
        match command {
            Command::Open(conn) => self.hub.connect(conn, now),
            Command::Message(conn, message) => {
                let _ = self.hub.receive_message(conn, message, now);
            }
            Command::Refused { conn, error, close } => {
                self.hub.refuse(conn, &error);
                if close {
                    // The error goes out first, after whatever the hub had for the connection.
                    self.collect(outboxes);
                    outboxes[conn.worker]
                        .push((conn.id, Delivery::Close(CloseCode::Policy, "unauthorized")));
                }
            }
            Command::Authenticated {
                conn,
                client,
                namespaces,
            } => {
                let _ = self.hub.authenticate(conn, client, namespaces, now);
            }
            Command::Closed(conn) => self.hub.disconnect(conn, now),
            Command::Dropped {
                conn,
                room,
                from,
                to,
            } => self.hub.dropped(conn, &room, from, to),
            Command::Broker(event) => {
                if let Some(broker) = &self.broker {
                    broker.handled(&event);
                }
                self.hub.handle_broker(event, now);
            }
            Command::Api { conn, call } => self.api(conn, call, now, outboxes),
            Command::ApiReply(conn, response) => {
                outboxes[conn.worker].push((conn.id, Delivery::Http(response)));
            }
            Command::RemoteDisconnect {
                client,
                code,
                reason,
            } => {
                self.disconnect(&client, code, &reason, outboxes);
            }
            Command::ApiClosed {
                conn,
                local,
                remote,
            } => {
                let response = match remote {
                    Ok(remote) => {
                        ApiResponse::ok(serde_json::json!({"closed": local as u64 + remote}))
                    }
                    Err(e) => super::api::unavailable(&format!(
                        "closed {local} connection(s) on this node; the other nodes were not told: {e}"
                    )),
                };
                outboxes[conn.worker].push((conn.id, Delivery::Http(response)));
            }
            Command::Stop => {}
        }
    }

    /// Runs an API call: publishes get a ticket and are answered from [`Hub::poll_api`]; the
    /// rest is answered now (reads go to Redis on a cluster).
    fn api(
        &mut self,
        conn: HubConn,
        call: ApiCall,
        now: Duration,
        outboxes: &mut [Vec<(ConnId, Delivery)>],
    ) {
        use serde_json::json;
        let reply = |outboxes: &mut [Vec<(ConnId, Delivery)>], response| {
            outboxes[conn.worker].push((conn.id, Delivery::Http(response)));
        };
        match call {
            ApiCall::Publish(p) => {
                let ticket = self.api.ticket(conn, None);
                self.hub
                    .api_publish(ticket, p.room, p.from, p.id, p.data, now);
            }
            ApiCall::Broadcast { rooms, data, from } => {
                self.api.next_ticket += 1;
                let broadcast = self.api.next_ticket;
                let results = rooms.iter().map(|r| json!({"room": r})).collect();
                self.api
                    .broadcasts
                    .insert(broadcast, (conn, results, rooms.len()));
                for (index, room) in rooms.into_iter().enumerate() {
                    let ticket = self.api.ticket(conn, Some((broadcast, index)));
                    self.hub
                        .api_publish(ticket, room, from.clone(), None, data.clone(), now);
                }
            }
            ApiCall::Send { client, data } => {
                match self.hub.send_direct_json_from_api(&client, data) {
                    Ok(sent) => match sent.pending {
                        Some(token) => {
                            self.api.sends.insert(token, (conn, sent.delivered));
                        }
                        None => reply(
                            outboxes,
                            ApiResponse::ok(json!({"delivered": sent.delivered})),
                        ),
                    },
                    Err(e) => reply(
                        outboxes,
                        ApiResponse::error(&duplex_core::channel::api::from_command_error(&e)),
                    ),
                }
            }
            ApiCall::Disconnect {
                client,
                code,
                reason,
            } => {
                let local = self.disconnect(&client, code, &reason, outboxes);
                if let Some(broker) = &self.broker {
                    broker.api_disconnect(conn, local, client, code, reason);
                    return;
                }
                reply(outboxes, ApiResponse::ok(json!({"closed": local})));
            }
            call @ (ApiCall::Rooms | ApiCall::Presence { .. } | ApiCall::History { .. }) => {
                if let Some(broker) = &self.broker {
                    broker.api_read(conn, call);
                    return;
                }
                reply(outboxes, ApiResponse::ok(self.read(call, now)));
            }
        }
    }

    /// Closes the connections of `client` here; how many.
    fn disconnect(
        &mut self,
        client: &str,
        code: u16,
        reason: &str,
        outboxes: &mut [Vec<(ConnId, Delivery)>],
    ) -> usize {
        let conns = self.hub.api_connections(client);
        for target in &conns {
            outboxes[target.worker].push((
                target.id,
                Delivery::Disconnect(CloseCode::from_u16(code), reason.to_string()),
            ));
        }
        conns.len()
    }

    /// A read of the in-process hub.
    fn read(&mut self, call: ApiCall, now: Duration) -> serde_json::Value {
        use serde_json::json;
        match call {
            ApiCall::Rooms => {
                let rooms: Vec<_> = self
                    .hub
                    .api_rooms(super::MAX_API_ROOMS)
                    .into_iter()
                    .map(|r| json!({"room": r.room, "members": r.members, "epoch": r.epoch, "seq": r.seq}))
                    .collect();
                json!({ "rooms": rooms })
            }
            ApiCall::Presence { room } => {
                let members: Vec<_> = self
                    .hub
                    .api_presence(&room)
                    .into_iter()
                    .map(|(client, presence)| json!({"client": client, "presence": presence}))
                    .collect();
                json!({"room": room, "members": members})
            }
            ApiCall::History { room, since, limit } => {
                let history = self.hub.api_history(&room, since, limit, now);
                let messages: Vec<_> = history
                    .messages
                    .into_iter()
                    .map(|(seq, from, data)| json!({"seq": seq, "from": from, "data": data}))
                    .collect();
                json!({
                    "room": room,
                    "epoch": history.epoch,
                    "seq": history.seq,
                    "recovered": history.recovered,
                    "messages": messages,
                })
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Moves the hub's deliveries and closes (taken-over connections) into the outboxes, in
    /// the hub's order.
    fn collect(&mut self, outboxes: &mut [Vec<(ConnId, Delivery)>]) {
        while let Some((conn, delivery)) = self.hub.poll_delivery() {
            outboxes[conn.worker].push((conn.id, Delivery::Channel(delivery)));
        }
        while let Some((conn, reason)) = self.hub.poll_close() {
            outboxes[conn.worker].push((conn.id, Delivery::Close(CloseCode::Policy, reason)));
        }
        while let Some((token, result)) = self.hub.poll_api_direct() {
            let Some((conn, here)) = self.api.sends.remove(&token) else {
                continue;
            };
            let response = match result {
                Ok(there) => ApiResponse::ok(serde_json::json!({"delivered": here + there})),
                Err(e) => super::api::unavailable(&format!("not sent: {}", e.0)),
            };
            outboxes[conn.worker].push((conn.id, Delivery::Http(response)));
        }
        while let Some((ticket, result)) = self.hub.poll_api() {
            let Some((conn, broadcast)) = self.api.tickets.remove(&ticket) else {
                continue;
            };
            let result = result.map_err(|e| duplex_core::channel::api::from_command_error(&e));
            let Some((broadcast, index)) = broadcast else {
                let response = match &result {
                    Ok(_) => ApiResponse::ok(super::api::publish_result("", &result)),
                    Err(e) => ApiResponse::error(e),
                };
                outboxes[conn.worker].push((conn.id, Delivery::Http(response)));
                continue;
            };
            let Some((_, results, missing)) = self.api.broadcasts.get_mut(&broadcast) else {
                continue;
            };
            let room = results[index]["room"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            results[index] = super::api::publish_result(&room, &result);
            *missing -= 1;
            if *missing == 0
                && let Some((conn, results, _)) = self.api.broadcasts.remove(&broadcast)
            {
                let response = ApiResponse::ok(serde_json::json!({ "results": results }));
                outboxes[conn.worker].push((conn.id, Delivery::Http(response)));
            }
        }
    }

    /// Moves the hub's deliveries into the workers' inboxes and wakes the workers whose inbox
    /// was empty (the others have a wake pending already).
    fn route(&mut self, outboxes: &mut [Vec<(ConnId, Delivery)>]) {
        self.collect(outboxes);
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

impl ApiCalls {
    fn ticket(&mut self, conn: HubConn, broadcast: Option<(u64, usize)>) -> u64 {
        self.next_ticket += 1;
        self.tickets.insert(self.next_ticket, (conn, broadcast));
        self.next_ticket
    }
}
