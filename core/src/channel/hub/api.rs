//! What the server HTTP API asks of the hub (see `channel::api`): publishes from a backend,
//! which are not members of the room, and reads of rooms, presence and history. A publish is
//! answered through [`Hub::poll_api`] under the driver's ticket, at once in-process or once the
//! external broker sequenced it.

use super::*;

/// Backends (distinct `from` names) whose recent publish ids are kept for dedup.
const MAX_API_SENDERS: usize = 1024;

/// A publish the API made: where it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPublished {
    pub room: String,
    pub epoch: String,
    pub seq: u64,
}

/// One room of [`Hub::api_rooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRoom {
    pub room: String,
    /// Members (connections) in the room.
    pub members: usize,
    pub epoch: String,
    pub seq: u64,
}

/// The answer to [`Hub::api_history`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApiHistory {
    pub epoch: String,
    pub seq: u64,
    /// Every message after `since` (or after seq 0 without it) is in `messages` (up to the
    /// limit), with the same all-or-nothing rule as `join` with `since`.
    pub recovered: bool,
    /// `(seq, from, data)`, oldest first.
    pub messages: Vec<(u64, String, Value)>,
}

/// The API's share of the hub's state.
#[derive(Debug, Default)]
pub(super) struct ApiState {
    /// Broker token → (ticket, room, from, id).
    pending: BTreeMap<u64, (u64, String, String, Option<Id>)>,
    answers: VecDeque<(u64, Result<ApiPublished, CommandError>)>,
    /// Per `from`: recent publish ids and where they landed.
    recent: BTreeMap<String, VecDeque<(Id, ApiPublished)>>,
    /// `from` names in the order first seen, to bound `recent`.
    senders: VecDeque<String>,
}

impl<C: Copy + Ord> Hub<C> {
    /// Publishes `data` (compact JSON) to `room` from a backend, as `from` (a client id name);
    /// members get the usual `message`. A publish with an `id` seen before from the same `from`
    /// is answered with the first one's seq and not delivered again. The answer comes out of
    /// [`Hub::poll_api`] with `ticket`.
    pub fn api_publish(
        &mut self,
        ticket: u64,
        room: String,
        from: String,
        id: Option<Id>,
        data: String,
        now: Duration,
    ) {
        let result = self.api_try_publish(ticket, room, from, id, data, now);
        match result {
            Ok(Some(published)) => self.api.answers.push_back((ticket, Ok(published))),
            Ok(None) => {} // awaiting the broker
            Err(error) => self.api.answers.push_back((ticket, Err(error))),
        }
    }

    fn api_try_publish(
        &mut self,
        ticket: u64,
        room: String,
        from: String,
        id: Option<Id>,
        data: String,
        now: Duration,
    ) -> Result<Option<ApiPublished>, CommandError> {
        protocol::validate_room(&room)
            .map_err(|m| CommandError::new(None, ErrorCode::BadRoom, m))?;
        if !protocol::is_name(&from) {
            return Err(CommandError::new(
                None,
                ErrorCode::BadMessage,
                "`from` is not a client id",
            ));
        }
        if data.len() > self.config.max_payload {
            let message = format!(
                "data is {} bytes, the limit is {}",
                data.len(),
                self.config.max_payload
            );
            return Err(CommandError::new(None, ErrorCode::TooLarge, message));
        }
        if let Some(id) = &id {
            let seen = self
                .api
                .recent
                .get(&from)
                .and_then(|r| r.iter().find(|(i, _)| i == id));
            if let Some((_, published)) = seen {
                return Ok(Some(published.clone()));
            }
        }
        if self.config.external_broker {
            let token = self.token();
            // The broker deduplicates on (client, id): a publish without one gets an id of its
            // own, unique across nodes and restarts.
            let broker_id = id
                .clone()
                .unwrap_or_else(|| Id::Text(format!("~{:016x}.{token}", self.seed)));
            self.api
                .pending
                .insert(token, (ticket, room.clone(), from.clone(), id));
            self.broker_out.push_back(BrokerRequest::Publish {
                token,
                room,
                client: from,
                id: broker_id,
                data,
            });
            return Ok(None);
        }
        if !self.rooms.contains_key(&room) && self.rooms.len() >= self.config.max_rooms {
            let message = format!("the server holds {} rooms, its limit", self.rooms.len());
            return Err(CommandError::new(None, ErrorCode::TooManyRooms, message));
        }
        self.prune(&room, now);
        let history_size = self.config.history_size;
        let state = local_room(&mut self.rooms, self.seed, &self.generations, &room);
        let epoch = state.epoch.clone();
        let (seq, message) = state.append(&room, from.clone(), data, now, history_size);
        self.stats.publishes += 1;
        self.stats.deliveries += self.broadcast(&room, &Delivery::Message(message), None);
        self.refresh_lifetime(&room);
        let published = ApiPublished { room, epoch, seq };
        if let Some(id) = id {
            self.api_remember(from, id, published.clone());
        }
        Ok(Some(published))
    }

    fn api_remember(&mut self, from: String, id: Id, published: ApiPublished) {
        if !self.api.recent.contains_key(&from) {
            if self.api.senders.len() >= MAX_API_SENDERS {
                if let Some(oldest) = self.api.senders.pop_front() {
                    self.api.recent.remove(&oldest);
                }
            }
            self.api.senders.push_back(from.clone());
        }
        let recent = self.api.recent.entry(from).or_default();
        recent.push_back((id, published));
        while recent.len() > self.config.dedup_window.max(1) {
            recent.pop_front();
        }
    }

    /// Takes the broker's answer to an API publish; gives back the answers of other requests.
    pub(super) fn api_published(
        &mut self,
        token: u64,
        result: Result<Sequenced, BrokerError>,
    ) -> Option<Result<Sequenced, BrokerError>> {
        let Some((ticket, room, from, id)) = self.api.pending.remove(&token) else {
            return Some(result);
        };
        let answer = match result {
            Ok(sequenced) => {
                if !sequenced.duplicate {
                    self.stats.publishes += 1;
                }
                let published = ApiPublished {
                    room,
                    epoch: sequenced.epoch,
                    seq: sequenced.seq,
                };
                if let Some(id) = id {
                    self.api_remember(from, id, published.clone());
                }
                Ok(published)
            }
            Err(BrokerError(reason)) => Err(CommandError::new(
                None,
                ErrorCode::Unavailable,
                format!("not published: {reason}"),
            )),
        };
        self.api.answers.push_back((ticket, answer));
        None
    }

    /// The next answer to an [`Hub::api_publish`], with its ticket.
    pub fn poll_api(&mut self) -> Option<(u64, Result<ApiPublished, CommandError>)> {
        self.api.answers.pop_front()
    }

    /// The rooms this hub holds (with members or history), at most `limit` of them, in name
    /// order. With an external broker, only the members on this node are counted.
    pub fn api_rooms(&self, limit: usize) -> Vec<ApiRoom> {
        self.rooms
            .iter()
            .filter(|(_, r)| r.known)
            .take(limit)
            .map(|(name, r)| ApiRoom {
                room: name.clone(),
                members: r.members.len(),
                epoch: r.epoch.clone(),
                seq: r.seq,
            })
            .collect()
    }

    /// The members of `room` here and their presence (empty for a room that does not exist).
    pub fn api_presence(&self, room: &str) -> Vec<(String, Value)> {
        self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.members
                .values()
                .map(|m| (m.client.clone(), m.presence.clone()))
                .collect()
        })
    }

    /// The stored messages of `room` after `since` (after seq 0 without it), at most `limit`,
    /// oldest first, or none with `recovered: false` when the history no longer holds them all
    /// (or `since` is of another epoch), as `join` with `since` decides.
    pub fn api_history(
        &mut self,
        room: &str,
        since: Option<Since>,
        limit: usize,
        now: Duration,
    ) -> ApiHistory {
        self.prune(room, now);
        let Some(state) = self.rooms.get(room) else {
            let epoch = epoch_for(self.seed, &self.generations, room);
            let recovered = since
                .as_ref()
                .is_none_or(|s| s.epoch == epoch && s.seq == 0);
            return ApiHistory {
                epoch,
                seq: 0,
                recovered,
                messages: Vec::new(),
            };
        };
        let (since_epoch, since_seq) = match &since {
            Some(s) => (s.epoch.as_str(), s.seq),
            None => (state.epoch.as_str(), 0),
        };
        let covered = since_epoch == state.epoch
            && since_seq <= state.seq
            && (since_seq == state.seq
                || state
                    .history
                    .front()
                    .is_some_and(|m| m.seq <= since_seq + 1));
        let mut messages = Vec::new();
        if covered {
            for stored in state
                .history
                .iter()
                .filter(|m| m.seq > since_seq)
                .take(limit)
            {
                let data = serde_json::from_str(&stored.message.data).unwrap_or(Value::Null);
                messages.push((stored.seq, stored.message.from.clone(), data));
            }
        }
        ApiHistory {
            epoch: state.epoch.clone(),
            seq: state.seq,
            recovered: covered,
            messages,
        }
    }

    /// The live connection of `client` here, if any (for `disconnect`: the driver closes it,
    /// and the hub hears of it as of any close).
    pub fn api_connections(&self, client: &str) -> Vec<C> {
        self.clients
            .get(client)
            .and_then(|c| c.conn)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_publish_with_an_external_broker_waits_for_its_answer() {
        let mut hub: Hub<u32> = Hub::new(HubConfig::default().with_external_broker(true), 1);
        let now = Duration::ZERO;
        let id = Some(Id::Text("o-1".into()));
        hub.api_publish(9, "a/b".into(), "shop".into(), id.clone(), "1".into(), now);
        assert!(hub.poll_api().is_none());
        let Some(BrokerRequest::Publish {
            token,
            client,
            id: sent,
            ..
        }) = hub.poll_broker()
        else {
            panic!("a publish for the broker");
        };
        assert_eq!((client.as_str(), Some(sent)), ("shop", id.clone()));
        let sequenced = Sequenced {
            seq: 4,
            epoch: "e".into(),
            duplicate: false,
        };
        hub.handle_broker(
            BrokerEvent::Published {
                token,
                result: Ok(sequenced),
            },
            now,
        );
        let (ticket, answer) = hub.poll_api().expect("answered");
        let published = answer.unwrap();
        assert_eq!(
            (ticket, published.seq, published.epoch.as_str()),
            (9, 4, "e")
        );
        // The retry is answered here, without the broker.
        hub.api_publish(10, "a/b".into(), "shop".into(), id, "1".into(), now);
        assert_eq!(hub.poll_api().unwrap().1.unwrap().seq, 4);
        assert!(hub.poll_broker().is_none());
        // A failed round trip is `unavailable`.
        hub.api_publish(11, "a/b".into(), "api".into(), None, "2".into(), now);
        let Some(BrokerRequest::Publish { token, .. }) = hub.poll_broker() else {
            panic!("a publish for the broker");
        };
        let failed = Err(BrokerError("down".into()));
        hub.handle_broker(
            BrokerEvent::Published {
                token,
                result: failed,
            },
            now,
        );
        let error = hub.poll_api().unwrap().1.unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable);
    }

    #[test]
    fn an_api_publish_in_process_needs_no_member_and_refuses_bad_input() {
        let mut hub: Hub<u32> = Hub::new(HubConfig::default().with_max_payload(4), 1);
        let now = Duration::ZERO;
        hub.api_publish(1, "a/b".into(), "api".into(), None, "12".into(), now);
        assert_eq!(hub.poll_api().unwrap().1.unwrap().seq, 1);
        hub.api_publish(2, "ab".into(), "api".into(), None, "1".into(), now);
        assert_eq!(
            hub.poll_api().unwrap().1.unwrap_err().code,
            ErrorCode::BadRoom
        );
        hub.api_publish(3, "a/b".into(), "a b".into(), None, "1".into(), now);
        assert_eq!(
            hub.poll_api().unwrap().1.unwrap_err().code,
            ErrorCode::BadMessage
        );
        hub.api_publish(4, "a/b".into(), "api".into(), None, "12345".into(), now);
        assert_eq!(
            hub.poll_api().unwrap().1.unwrap_err().code,
            ErrorCode::TooLarge
        );
        let history = hub.api_history("a/b", None, 10, now);
        assert_eq!(
            (history.seq, history.recovered, history.messages.len()),
            (1, true, 1)
        );
        assert_eq!(hub.api_rooms(10)[0].members, 0);
    }
}
