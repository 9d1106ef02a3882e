//! Messages to one client: `send {id, to, data}` → `sent {id}`, and `direct {from, data}` to
//! the live connection of client `to`; and the same from the server's HTTP API
//! ([`Hub::send_direct_from_api`]).
//!
//! The rule: a client may reach another only when both are members of at least one common
//! room (a signalling room scopes who may reach whom); otherwise `not_found`, whether or not
//! the target exists. Membership is what the hub knows for certain: every member of every room
//! of this node (whatever the room's size: the presence limit only stops presence events), and,
//! with an external broker, the members the broker records for every node (see
//! [`BrokerRequest::Direct`]). Nothing is stored: a target with no live connection does not get
//! the message later. One sender's messages to one target arrive in the order sent.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use serde_json::Value;

use super::Hub;
use crate::channel::broker::{BrokerError, BrokerRequest};
use crate::channel::codec::{Delivery, DirectMessage};
use crate::channel::protocol::{self, CommandError, ErrorCode, Id, ServerMessage};

/// The `from` of a direct message sent through the HTTP API.
const API_SENDER: &str = "api";

/// What the hub holds for direct messages.
#[derive(Debug)]
pub(super) struct Directs<C> {
    /// Per connection: when its next `send` is due under the rate (GCRA's theoretical arrival
    /// time); a send is allowed while that is at most a burst ahead of now.
    due: BTreeMap<C, Duration>,
    /// `send`s waiting for the broker's answer: token → sender connection and command id.
    pending: BTreeMap<u64, (C, Id)>,
    /// API sends waiting for the broker's answer, and the answers not yet taken.
    api_pending: BTreeSet<u64>,
    api_answers: VecDeque<(u64, Result<u64, BrokerError>)>,
}

impl<C> Default for Directs<C> {
    fn default() -> Self {
        Directs {
            due: BTreeMap::new(),
            pending: BTreeMap::new(),
            api_pending: BTreeSet::new(),
            api_answers: VecDeque::new(),
        }
    }
}

impl<C: Copy + Ord> Directs<C> {
    /// `conn` is gone: its rate state and unanswered sends go with it.
    pub(super) fn forget(&mut self, conn: C) {
        self.due.remove(&conn);
        self.pending.retain(|_, p| p.0 != conn);
    }
}

/// The result of [`Hub::send_direct_from_api`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiDirect {
    /// Connections on this node that were handed the message (0 or 1).
    pub delivered: u64,
    /// With an external broker, when the client has no connection here: the token of the
    /// [`BrokerRequest::Direct`] queued for the other nodes. Its answer comes from
    /// [`Hub::poll_api_direct`]; the total is `delivered` plus that answer.
    pub pending: Option<u64>,
}

/// The `direct` delivery. `from` is a valid client id (or `api`); `data` is compact JSON.
fn direct_message(from: &str, data: String) -> Delivery {
    Delivery::Direct(Arc::new(DirectMessage {
        from: from.into(),
        data,
    }))
}

impl<C: Copy + Ord> Hub<C> {
    /// `send {id, to, data}` from `conn` (said `hello` as `client`).
    pub(super) fn send_direct(
        &mut self,
        conn: C,
        client: String,
        id: Id,
        to: String,
        data: Value,
        now: Duration,
    ) -> Result<(), CommandError> {
        self.check_send_rate(conn, &id, now)?;
        let data = self.direct_data(Some(&id), &data)?;
        let target = self.clients.get(&to).and_then(|c| c.conn);
        if let Some(target) = target {
            // Held here: every room of the target is known here.
            let shared = match (self.conns.get(&conn), self.conns.get(&target)) {
                (Some(mine), Some(theirs)) => !mine.rooms.is_disjoint(&theirs.rooms),
                _ => false,
            };
            if !shared {
                return Err(not_found(id));
            }
            self.send(target, direct_message(&client, data));
            self.send(conn, ServerMessage::Sent { id }.into_delivery());
            return Ok(());
        }
        let rooms: Vec<String> = self
            .conns
            .get(&conn)
            .map_or_else(Vec::new, |c| c.rooms.iter().cloned().collect());
        if !self.config.external_broker || rooms.is_empty() {
            return Err(not_found(id));
        }
        let token = self.token();
        self.direct.pending.insert(token, (conn, id));
        self.broker_out.push_back(BrokerRequest::Direct {
            token,
            from: client,
            to,
            rooms: Some(rooms),
            data,
        });
        Ok(())
    }

    /// Sends `data` to client `client` from the server's HTTP API (`direct {from: "api",
    /// data}`), whatever rooms it is in. Refused with `bad_message` for an invalid client id and
    /// `too_large` for `data` over [`super::HubConfig::max_payload`]; not rate-limited.
    pub fn send_direct_from_api(
        &mut self,
        client: &str,
        data: &Value,
    ) -> Result<ApiDirect, CommandError> {
        if !protocol::is_name(client) {
            return Err(CommandError::new(
                None,
                ErrorCode::BadMessage,
                "`client` must be 1 to 128 bytes of [A-Za-z0-9_.:-]",
            ));
        }
        let data = self.direct_data(None, data)?;
        self.send_direct_json_from_api(client, data)
    }

    /// [`Hub::send_direct_from_api`] with `data` already compact JSON (the HTTP API's parser
    /// wrote it and checked its size).
    pub fn send_direct_json_from_api(
        &mut self,
        client: &str,
        data: String,
    ) -> Result<ApiDirect, CommandError> {
        if !protocol::is_name(client) {
            return Err(CommandError::new(
                None,
                ErrorCode::BadMessage,
                "`client` must be 1 to 128 bytes of [A-Za-z0-9_.:-]",
            ));
        }
        if let Some(target) = self.clients.get(client).and_then(|c| c.conn) {
            self.send(target, direct_message(API_SENDER, data));
            return Ok(ApiDirect {
                delivered: 1,
                pending: None,
            });
        }
        if !self.config.external_broker {
            return Ok(ApiDirect {
                delivered: 0,
                pending: None,
            });
        }
        let token = self.token();
        self.direct.api_pending.insert(token);
        self.broker_out.push_back(BrokerRequest::Direct {
            token,
            from: API_SENDER.into(),
            to: client.into(),
            rooms: None,
            data,
        });
        Ok(ApiDirect {
            delivered: 0,
            pending: Some(token),
        })
    }

    /// The broker's answer to an API send ([`ApiDirect::pending`]): the token and how many
    /// connections on other nodes were handed the message, or why the broker failed.
    pub fn poll_api_direct(&mut self) -> Option<(u64, Result<u64, BrokerError>)> {
        self.direct.api_answers.pop_front()
    }

    /// A message from another node for client `to`, if it is held here.
    pub(super) fn deliver_direct(&mut self, from: &str, to: &str, data: &str) {
        if let Some(target) = self.clients.get(to).and_then(|c| c.conn) {
            self.send(target, direct_message(from, data.into()));
        }
    }

    /// The broker's answer to a [`BrokerRequest::Direct`].
    pub(super) fn direct_sent(&mut self, token: u64, result: Result<u64, BrokerError>) {
        if self.direct.api_pending.remove(&token) {
            self.direct.api_answers.push_back((token, result));
            return;
        }
        let Some((conn, id)) = self.direct.pending.remove(&token) else {
            return;
        };
        match result {
            Ok(0) => {
                let error = CommandError::new(Some(id), ErrorCode::NotFound, NOT_FOUND);
                self.refuse(conn, &error);
            }
            Ok(_) => self.send(conn, ServerMessage::Sent { id }.into_delivery()),
            Err(BrokerError(reason)) => {
                let error = CommandError::new(
                    Some(id),
                    ErrorCode::Unavailable,
                    format!("not sent: {reason}"),
                );
                self.refuse(conn, &error);
            }
        }
    }

    /// Counts one `send` of `conn` against [`super::HubConfig::send_rate`].
    fn check_send_rate(&mut self, conn: C, id: &Id, now: Duration) -> Result<(), CommandError> {
        let rate = self.config.send_rate;
        if rate == 0 {
            return Ok(());
        }
        let interval = Duration::from_secs(1) / rate;
        // A burst of `rate` sends: the due time may run `rate - 1` intervals ahead of now.
        let tolerance = interval * (rate - 1);
        let due = self.direct.due.get(&conn).copied().unwrap_or(now).max(now);
        if due > now + tolerance {
            let message = format!("more than {rate} `send` per second");
            return Err(CommandError::new(
                Some(id.clone()),
                ErrorCode::RateLimited,
                message,
            ));
        }
        self.direct.due.insert(conn, due + interval);
        Ok(())
    }

    /// `data` as compact JSON, refused with `too_large` beyond the payload limit.
    fn direct_data(&self, id: Option<&Id>, data: &Value) -> Result<String, CommandError> {
        let data = serde_json::to_string(data).unwrap_or_default();
        if data.len() > self.config.max_payload {
            let message = format!(
                "data is {} bytes, the limit is {}",
                data.len(),
                self.config.max_payload
            );
            return Err(CommandError::new(id.cloned(), ErrorCode::TooLarge, message));
        }
        Ok(data)
    }
}

const NOT_FOUND: &str = "no such client in a room shared with this connection";

fn not_found(id: Id) -> CommandError {
    CommandError::new(Some(id), ErrorCode::NotFound, NOT_FOUND)
}
