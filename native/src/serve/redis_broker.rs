//! `duplex serve --broker redis://HOST:PORT[/DB]`: the hub's broker (see
//! `duplex_core::channel::broker`) on Redis, so that several nodes serve one set of rooms.
//!
//! Two threads per node, neither of them the hub's:
//! - the command thread runs the hub's requests in order on one connection: one Lua script call
//!   per publish (dedup check on `(client, publish id)`, the room's next seq, history append
//!   with trim and expiry, PUBLISH to the room's channel) and one per join (the new member
//!   recorded and announced, then epoch, seq, the members and their count, and history after
//!   `since`, run after the node's subscription to the room is confirmed);
//! - the subscriber thread holds the pub/sub connection, subscribed to the rooms that have
//!   members on this node only, and hands their messages to the hub in the order Redis sent
//!   them (the room's seq order). It reconnects by itself and resubscribes; the hub then checks
//!   each room's position and tells members of a hole. What it hands the hub is bounded
//!   (`--broker-queue`, [`MAX_PUBSUB_QUEUE`] by default): beyond it room messages are dropped
//!   and the hub checks those rooms' positions ([`BrokerEvent::Missed`]) in the same way. A node
//!   that stops reading is cut by Redis's `client-output-buffer-limit pubsub` and reconnects.
//!
//! Keys, with the room in a hash tag (`{app/chat}`) so that a room's keys share a Cluster slot:
//! `dx:{R}:m` (hash: `e` epoch, `s` seq; expires a day after its last use), `dx:{R}:h` (stream,
//! entry id `seq-0`, fields `t` ms, `f` client, `d` data; trimmed to `--history-size`, expires
//! `--history-ttl` after the last publish, older entries skipped on read),
//! `dx:{R}:dd:{client}:{id}` (the seq and epoch a publish id got, for 5 minutes), `dx:{R}:p`
//! (hash of the members on every node, field `node/client`), `dx:{R}:pv` (the number of the
//! room's last member change, which orders the member counts nodes receive), `dx:{R}:pa`
//! (hash, field `node/client`: the number of the join attempt that recorded the member, while
//! nothing else changed it since), `dx:{R}:x:NODE/CLIENT:ATTEMPT` (a given-up join attempt's
//! tombstone, for 5 minutes). Channel: `dx:{R}:c`, payload `epoch seq client data`.
//!
//! A join's answer can be lost (no answer within 2 s: Redis paused, or the connection cut)
//! while Redis still runs its script later, after whatever the node sends next on its new
//! connection, the hub's `MemberLeft` for the refused member included. Left alone, that late
//! run would record and announce a member no node holds: a ghost every node lists until this
//! node dies and is reaped. So each join that records a member is a numbered attempt (per node
//! process), and when one fails the command thread keeps its compensation
//! (`COMPENSATE_SCRIPT`) and runs it as soon as Redis answers again (retried every
//! 250 ms at most, for 5 minutes, at most 65,536 waiting), and always
//! before a later join of the same client in the room on this node (that join is refused
//! `unavailable` until then). The compensation writes the attempt's tombstone, which the join
//! script checks before recording anything, and removes the member (with an `L`, numbered like
//! any member change) only if `dx:{R}:pa` shows that attempt recorded it and nothing changed it
//! since: a later join, a presence change or a re-announcement of the same client on this
//! node, or its leave, clears that mark. Either order of the late join and its compensation
//! in Redis thus ends with no member; a join that is answered costs one round trip as before.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use duplex_core::channel::{
    BrokerError, BrokerEvent, BrokerMessage, BrokerRequest, HubConfig, MemberChange, MemberCount,
    RoomState, Sequenced,
};
use redis::{ConnectionAddr, IntoConnectionInfo, Value};
use tracing::{debug, info, warn};

use super::api::{ApiCall, ApiResponse};
use super::hub_thread::{Command, HubConn};

/// How long a node waits for Redis to connect, answer a command or confirm a subscription
/// before the command gets `unavailable`.
const TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed connection, commands fail at once for this long instead of each waiting for
/// a connection of its own.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// Publishes queued behind one another go to Redis in one pipeline (one round trip) of at most
/// this many script calls.
const MAX_BATCH: usize = 256;
/// A room's epoch and seq are kept this long after the room was last used.
const META_TTL_SECS: u64 = 86_400;
/// A publish id is recognised this long after it was sequenced, from any node.
const DEDUP_TTL_SECS: u64 = 300;
/// A join attempt the node gave up keeps its tombstone this long (see [`COMPENSATE_SCRIPT`]):
/// far longer than Redis can hold a closed connection's script unread and still answer others.
const TOMBSTONE_TTL_SECS: u64 = 300;
/// A compensation Redis could not be reached for is retried (every [`RETRY_AFTER`] at most)
/// for this long, then given up with a warning.
const COMPENSATE_FOR: Duration = Duration::from_secs(TOMBSTONE_TTL_SECS);
/// At most this many compensations wait for Redis; beyond it the oldest is given up.
const MAX_COMPENSATIONS: usize = 65_536;
/// The subscriber pings Redis this often, and reconnects when no answer came in twice that.
const PING_EVERY: Duration = Duration::from_secs(2);
/// The default of `--broker-queue`: bytes of room messages (payload plus 160 bytes each) the
/// subscriber may have handed to the hub thread and the hub not yet handled. Above it, the node
/// drops room messages until the queue is down to half, and has the hub check the rooms'
/// positions (members get `gap` and recover from Redis's history): a node slower than the
/// cluster's traffic holds at most this much, never a growing queue.
pub const MAX_PUBSUB_QUEUE: usize = 16 << 20;
/// What one queued room message costs beyond its payload (the event and its strings).
const MESSAGE_OVERHEAD: usize = 160;

const PUBLISH_SCRIPT: &str = r#"
local d = redis.call('GET', KEYS[3])
if d then return {1, d} end
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', e)
end
local s = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('EXPIRE', KEYS[1], ARGV[6])
if s == 1 then redis.call('DEL', KEYS[2]) end
local size = tonumber(ARGV[4])
if size > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', size, s .. '-0', 't', now, 'f', ARGV[2], 'd', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', ARGV[7], e .. ' ' .. s .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
redis.call('SET', KEYS[3], s .. ' ' .. e, 'EX', ARGV[8])
return {0, s .. ' ' .. e}
"#;

/// Lua: `bump(key, ttl)`, the number of a room's next member change (`dx:{R}:pv`), as a
/// string. A missing counter (new, expired, or a Redis that came back empty) starts from Redis's
/// clock in microseconds, so that the numbers a node has seen stay below the new ones.
macro_rules! bump_lua {
    () => {
        r#"
local function bump(k, ttl)
  if redis.call('EXISTS', k) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', k, string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])))
  end
  local v = redis.call('INCR', k)
  redis.call('EXPIRE', k, ttl)
  return string.format('%d', v)
end
"#
    };
}

/// A join's one round trip (also a position read, without ARGV[7]): the room's epoch and seq
/// (created if new), the member recorded when ARGV[7] (node) is given, as [`MEMBER_SCRIPT`]
/// does for `J`, with the join's attempt number (ARGV[12]) in `dx:{R}:pa`, unless the node
/// gave this attempt up already (its tombstone KEYS[5] exists: see [`COMPENSATE_SCRIPT`]),
/// then the room's member count and the number of its last member change, its members (while
/// at most ARGV[6], `--presence-limit`), and the history after `since`.
const READ_SCRIPT: &str = concat!(
    bump_lua!(),
    r#"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', e, 's', 0)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
local s = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
if ARGV[7] ~= '' and redis.call('EXISTS', KEYS[5]) == 0 then
  local field = ARGV[7] .. '/' .. ARGV[8]
  redis.call('HSET', KEYS[3], field, ARGV[8] .. ' ' .. ARGV[9])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  redis.call('HSET', KEYS[6], field, ARGV[12])
  redis.call('EXPIRE', KEYS[6], ARGV[5])
  redis.call('SADD', 'dx:node:' .. ARGV[7] .. ':rooms', ARGV[11])
  local v = bump(KEYS[4], ARGV[5])
  local n = redis.call('HLEN', KEYS[3])
  redis.call('PUBLISH', ARGV[10], '! ' .. ARGV[7] .. ' J ' .. v .. ' ' .. n .. ' ' .. ARGV[8] .. ' ' .. ARGV[9])
end
local n = redis.call('HLEN', KEYS[3])
local out = {e, s, n, redis.call('GET', KEYS[4]) or '0'}
-- Members are listed while the room tracks presence (at most --presence-limit of them).
local members = {}
if n <= tonumber(ARGV[6]) then
  members = redis.call('HVALS', KEYS[3])
end
table.insert(out, #members)
for _, m in ipairs(members) do table.insert(out, m) end
local since = tonumber(ARGV[3])
if ARGV[2] == e and since < s then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local oldest = now - tonumber(ARGV[4])
  local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
  for _, en in ipairs(entries) do
    local f = en[2]
    if tonumber(f[2]) > oldest then
      local id = en[1]
      table.insert(out, string.sub(id, 1, string.find(id, '-') - 1))
      table.insert(out, f[4])
      table.insert(out, f[6])
    end
  end
end
return out
"#
);

/// A member joined (`J`), changed its presence (`P`) or left (`L`) on this node: recorded in the
/// room's presence hash (field `node/client`, value `client presence`), numbered (`dx:{R}:pv`)
/// and sent to every node on the room's channel as `! node kind number members client
/// [presence]` (`members`: the room's members on all nodes after the change). A leave of a
/// member the hash does not hold (reaped already) is not sent again. Either way the member's
/// join attempt (`dx:{R}:pa`, KEYS[3]) is forgotten: what the hash holds for it now is no
/// longer only that join's doing, and no [`COMPENSATE_SCRIPT`] removes it.
const MEMBER_SCRIPT: &str = concat!(
    bump_lua!(),
    r#"
local field = ARGV[1] .. '/' .. ARGV[2]
local head = '! ' .. ARGV[1] .. ' ' .. ARGV[3] .. ' '
redis.call('HDEL', KEYS[3], field)
if ARGV[3] == 'L' then
  if redis.call('HDEL', KEYS[1], field) == 0 then return 0 end
  local v = bump(KEYS[2], ARGV[7])
  redis.call('PUBLISH', ARGV[5], head .. v .. ' ' .. redis.call('HLEN', KEYS[1]) .. ' ' .. ARGV[2])
else
  redis.call('HSET', KEYS[1], field, ARGV[2] .. ' ' .. ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('SADD', 'dx:node:' .. ARGV[1] .. ':rooms', ARGV[6])
  local v = bump(KEYS[2], ARGV[7])
  local n = redis.call('HLEN', KEYS[1])
  redis.call('PUBLISH', ARGV[5], head .. v .. ' ' .. n .. ' ' .. ARGV[2] .. ' ' .. ARGV[4])
end
return 1
"#
);

/// A join that carried a member failed on the node's side (no answer within [`TIMEOUT`], or
/// the connection cut) after its script call was sent: Redis may have run it, or may still run
/// it later (it was paused, and reads the closed connection's script when it wakes up), after
/// anything the node sends on its next connection. Run by the node once Redis answers again,
/// before any later join of the same client in the room: writes the attempt's tombstone
/// (KEYS[3], `dx:{R}:x:NODE/CLIENT:ATTEMPT`, for ARGV[4] s), so that the join's script, if
/// it runs later, records nothing; and if the join's script ran already and what the hash
/// holds for `node/client` is still that attempt's doing (`dx:{R}:pa`, KEYS[4], holds its
/// number: no later join, presence change or leave since), removes the member and sends `L`
/// as [`MEMBER_SCRIPT`] does. Whatever the order Redis runs the two in, no member is left.
const COMPENSATE_SCRIPT: &str = concat!(
    bump_lua!(),
    r#"
redis.call('SET', KEYS[3], '1', 'EX', ARGV[4])
local field = ARGV[1] .. '/' .. ARGV[2]
if redis.call('HGET', KEYS[4], field) ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[4], field)
if redis.call('HDEL', KEYS[1], field) == 0 then return 0 end
local v = bump(KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[5], '! ' .. ARGV[1] .. ' L ' .. v .. ' ' .. redis.call('HLEN', KEYS[1]) .. ' ' .. ARGV[2])
return 1
"#
);

/// The node's heartbeat (`dx:nodes`, score = Redis time in ms), and the reaper: every node
/// whose heartbeat is older than ARGV[2] ms has its members removed from the rooms it held,
/// each with a `leave` to the remaining nodes, unless the same client is still a member of the
/// room through another node (it reconnected there before the reap; the other nodes then get
/// the room's new member count alone, `! node C number members`). Atomic, so one node reaps
/// each dead one.
const HEARTBEAT_SCRIPT: &str = concat!(
    bump_lua!(),
    r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', 'dx:nodes', now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', 'dx:nodes', '-inf', now - tonumber(ARGV[2]))
local reaped = 0
for _, node in ipairs(dead) do
  local rooms_key = 'dx:node:' .. node .. ':rooms'
  for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
    local p = 'dx:{' .. room .. '}:p'
    local fields = redis.call('HKEYS', p)
    for _, f in ipairs(fields) do
      if string.sub(f, 1, #node + 1) == node .. '/' then
        redis.call('HDEL', p, f)
        redis.call('HDEL', 'dx:{' .. room .. '}:pa', f)
        local client = string.sub(f, #node + 2)
        local elsewhere = false
        for _, g in ipairs(redis.call('HKEYS', p)) do
          local slash = string.find(g, '/', 1, true)
          if slash and string.sub(g, slash + 1) == client then elsewhere = true break end
        end
        local v = bump('dx:{' .. room .. '}:pv', ARGV[3])
        local n = redis.call('HLEN', p)
        local head = '! ' .. node .. ' '
        if elsewhere then
          redis.call('PUBLISH', 'dx:{' .. room .. '}:c', head .. 'C ' .. v .. ' ' .. n)
        else
          redis.call('PUBLISH', 'dx:{' .. room .. '}:c', head .. 'L ' .. v .. ' ' .. n .. ' ' .. client)
        end
        reaped = reaped + 1
      end
    end
  end
  redis.call('DEL', rooms_key)
  redis.call('ZREM', 'dx:nodes', node)
end
return reaped
"#
);

/// Claims a client id for node ARGV[1]; the node that held it before is told on its node
/// channel (`client serial`) to close its connection if its claim is older.
const CLAIM_SCRIPT: &str = r#"
local serial = redis.call('HINCRBY', KEYS[1], 'n', 1)
local previous = redis.call('HGET', KEYS[1], 'node')
redis.call('HSET', KEYS[1], 'node', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if previous and previous ~= ARGV[1] then
  redis.call('PUBLISH', 'dx:node:' .. previous, ARGV[3] .. ' ' .. serial)
end
return serial
"#;

/// A message to one client (`send`, or the HTTP API): handed to the node holding the client
/// id's latest claim (KEYS[1], `dx:cid:{client}`, field `node`) on its node channel as
/// `> from to data`, provided that, when ARGV[4] is `1`, the client is a member there of one of
/// the rooms ARGV[5..] (the sender's) as the rooms' presence hashes record it (every member,
/// whatever the room's size). Returns how many nodes got it (0 or 1).
const DIRECT_SCRIPT: &str = r#"
local node = redis.call('HGET', KEYS[1], 'node')
if not node then return 0 end
if ARGV[4] == '1' then
  local field = node .. '/' .. ARGV[2]
  local shared = false
  for i = 5, #ARGV do
    if redis.call('HEXISTS', 'dx:{' .. ARGV[i] .. '}:p', field) == 1 then
      shared = true
      break
    end
  end
  if not shared then return 0 end
end
return redis.call('PUBLISH', 'dx:node:' .. node, '> ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
"#;

/// The last connection of client KEYS[1] on node ARGV[1] ended: the node no longer holds it,
/// unless another node claimed it since.
const RELEASE_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'node')
end
return 1
"#;

/// A node whose heartbeat is older than this is dead: its members get `leave` everywhere.
/// With heartbeats every [`PING_EVERY`] (2 s), a killed node's members leave within 12 s.
const NODE_DEAD_MS: u64 = 10_000;

/// The channel on which a node hears that another node took one of its client ids over.
fn node_channel(node: &str) -> String {
    format!("dx:node:{node}")
}

/// Which node holds a client id (`node`), and its claims' serial (`n`).
fn client_key(client: &str) -> String {
    format!("dx:cid:{client}")
}

fn presence_key(room: &str) -> String {
    format!("dx:{{{room}}}:p")
}

/// The join attempt that recorded each member (field `node/client`) and nothing since.
fn attempt_key(room: &str) -> String {
    format!("dx:{{{room}}}:pa")
}

/// The tombstone of join attempt `attempt` of `client` on `node` (see [`COMPENSATE_SCRIPT`]).
fn tombstone_key(room: &str, node: &str, client: &str, attempt: u64) -> String {
    format!("dx:{{{room}}}:x:{node}/{client}:{attempt}")
}

/// The number of the room's last member change.
fn member_version_key(room: &str) -> String {
    format!("dx:{{{room}}}:pv")
}

fn meta_key(room: &str) -> String {
    format!("dx:{{{room}}}:m")
}
fn history_key(room: &str) -> String {
    format!("dx:{{{room}}}:h")
}
fn channel(room: &str) -> String {
    format!("dx:{{{room}}}:c")
}
/// The room of a channel name.
fn channel_room(channel: &str) -> Option<&str> {
    channel.strip_prefix("dx:{")?.strip_suffix("}:c")
}

/// The broker's state, for `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerStatus {
    /// The command connection answered its last command.
    pub commands_up: AtomicBool,
    /// The pub/sub connection is subscribed.
    pub subscriber_up: AtomicBool,
    /// Round trips to Redis on the command connection (script calls, a pipeline of publishes
    /// counting once), heartbeats included.
    pub round_trips: AtomicU64,
    /// Of those, the node's heartbeats (one every 2 s).
    pub heartbeats: AtomicU64,
    /// Microseconds spent waiting for script answers, in all.
    pub round_trip_micros: AtomicU64,
    /// Commands that failed (each answered `unavailable`).
    pub errors: AtomicU64,
    /// Connections (re)opened after a failure, both kinds.
    pub reconnects: AtomicU64,
    /// Requests queued for the command thread.
    pub backlog: AtomicU64,
    /// Bytes of room messages queued for the hub thread (see [`MAX_PUBSUB_QUEUE`]).
    pub pubsub_queue: AtomicUsize,
    /// Room messages dropped because that queue was full.
    pub pubsub_dropped: AtomicU64,
}

impl BrokerStatus {
    /// `up` when both connections are, `down` otherwise.
    pub fn state(&self) -> &'static str {
        if self.commands_up.load(Ordering::Relaxed) && self.subscriber_up.load(Ordering::Relaxed) {
            "up"
        } else {
            "down"
        }
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "# HELP duplex_broker_round_trips_total Round trips to Redis for commands (a pipeline \
             of publishes counts once), heartbeats included.\n\
             # TYPE duplex_broker_round_trips_total counter\nduplex_broker_round_trips_total {}\n\
             # HELP duplex_broker_heartbeats_total Of those, the node's heartbeats.\n\
             # TYPE duplex_broker_heartbeats_total counter\nduplex_broker_heartbeats_total {}\n\
             # HELP duplex_broker_round_trip_seconds_total Time spent waiting for Redis.\n\
             # TYPE duplex_broker_round_trip_seconds_total counter\n\
             duplex_broker_round_trip_seconds_total {:.6}\n\
             # HELP duplex_broker_errors_total Broker commands that failed (answered unavailable).\n\
             # TYPE duplex_broker_errors_total counter\nduplex_broker_errors_total {}\n\
             # HELP duplex_broker_reconnects_total Redis connections reopened after a failure.\n\
             # TYPE duplex_broker_reconnects_total counter\nduplex_broker_reconnects_total {}\n\
             # HELP duplex_broker_backlog Requests waiting for the Redis command connection.\n\
             # TYPE duplex_broker_backlog gauge\nduplex_broker_backlog {}\n\
             # HELP duplex_broker_pubsub_queue_bytes Room messages from Redis waiting for the hub.\n\
             # TYPE duplex_broker_pubsub_queue_bytes gauge\nduplex_broker_pubsub_queue_bytes {}\n\
             # HELP duplex_broker_pubsub_dropped_total Room messages from Redis dropped because \
             the queue to the hub was full (members got gap).\n\
             # TYPE duplex_broker_pubsub_dropped_total counter\nduplex_broker_pubsub_dropped_total {}\n",
            self.round_trips.load(Ordering::Relaxed),
            self.heartbeats.load(Ordering::Relaxed),
            self.round_trip_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.errors.load(Ordering::Relaxed),
            self.reconnects.load(Ordering::Relaxed),
            self.backlog.load(Ordering::Relaxed),
            self.pubsub_queue.load(Ordering::Relaxed),
            self.pubsub_dropped.load(Ordering::Relaxed),
        );
    }
}

/// A checked `redis://HOST:PORT[/DB]` address.
#[derive(Debug, Clone)]
pub struct BrokerUrl {
    url: String,
    info: redis::ConnectionInfo,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        if !url.starts_with("redis://") {
            return Err(format!(
                "--broker {url:?}: only redis://HOST:PORT[/DB] is supported"
            ));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| format!("--broker {url:?}: {e}"))?;
        if !matches!(info.addr(), ConnectionAddr::Tcp(..)) {
            return Err(format!("--broker {url:?}: a TCP address is required"));
        }
        Ok(BrokerUrl {
            url: url.into(),
            info,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// A client of this Redis (connections are opened by its users).
    pub(crate) fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.info.clone())
    }
}

/// The running broker of one node: hand it the hub's requests.
#[derive(Debug)]
pub(crate) struct RedisBroker {
    requests: Sender<BrokerRequest>,
    /// Reads of the HTTP API, answered from Redis by their own thread.
    api_reads: Sender<(HubConn, ApiCall, usize)>,
    subscriber: Arc<Subscriber>,
    status: Arc<BrokerStatus>,
}

impl RedisBroker {
    /// Starts the command and subscriber threads; the hub's events go to `hub`.
    pub fn start(
        url: &BrokerUrl,
        hub_config: &HubConfig,
        hub: Sender<Command>,
        status: Arc<BrokerStatus>,
        queue_cap: usize,
    ) -> std::io::Result<RedisBroker> {
        let client = redis::Client::open(url.info.clone())
            .map_err(|e| std::io::Error::other(format!("--broker: {e}")))?;
        let subscriber = Arc::new(Subscriber::default());
        let (requests, receiver) = mpsc::channel();
        let commands_hub = hub.clone();
        // A new id per process: a restarted node's old members are reaped, never taken over.
        let node = new_epoch();
        let node_id = node.clone();
        let commands = CommandThread {
            node: node.clone(),
            member: redis::Script::new(MEMBER_SCRIPT),
            compensate: redis::Script::new(COMPENSATE_SCRIPT),
            compensations: VecDeque::new(),
            attempts: 0,
            claim: redis::Script::new(CLAIM_SCRIPT),
            direct: redis::Script::new(DIRECT_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
            heartbeat: redis::Script::new(HEARTBEAT_SCRIPT),
            client,
            connection: None,
            failed_at: None,
            requests: receiver,
            hub: hub.clone(),
            subscriber: Arc::clone(&subscriber),
            status: Arc::clone(&status),
            publish: redis::Script::new(PUBLISH_SCRIPT),
            read: redis::Script::new(READ_SCRIPT),
            history_size: hub_config.history_size,
            presence_limit: hub_config.presence_limit,
            history_ttl_ms: u64::try_from(hub_config.history_ttl.as_millis()).unwrap_or(u64::MAX),
        };
        std::thread::Builder::new()
            .name("duplex-redis-cmd".into())
            .spawn(move || commands.run())?;
        let addr = match url.info.addr() {
            ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            _ => unreachable!("BrokerUrl::parse accepts TCP addresses only"),
        };
        let reader = SubscriberThread {
            node,
            addr,
            db: url.info.redis_settings().db(),
            password: url.info.redis_settings().password().map(String::from),
            subscriber: Arc::clone(&subscriber),
            hub,
            status: Arc::clone(&status),
            queue_cap,
        };
        std::thread::Builder::new()
            .name("duplex-redis-sub".into())
            .spawn(move || reader.run())?;
        let (api_reads, api_receiver) = mpsc::channel();
        let api_reader = ApiReader {
            client: redis::Client::open(url.info.clone())
                .map_err(|e| std::io::Error::other(format!("--broker: {e}")))?,
            connection: None,
            calls: api_receiver,
            hub: commands_hub,
            node: node_id,
            history_ttl_ms: u64::try_from(hub_config.history_ttl.as_millis()).unwrap_or(u64::MAX),
        };
        std::thread::Builder::new()
            .name("duplex-redis-api".into())
            .spawn(move || api_reader.run())?;
        Ok(RedisBroker {
            api_reads,
            requests,
            subscriber,
            status,
        })
    }

    /// Answers a read of the HTTP API (rooms, presence, history) for the whole cluster, from
    /// Redis, on the API reader's own connection.
    pub fn api_read(&self, conn: HubConn, call: ApiCall) {
        let _ = self.api_reads.send((conn, call, 0));
    }

    /// Tells the node holding `client`'s id (if another) to close its connection, after
    /// `local` connections were closed here; answered with [`Command::ApiClosed`].
    pub fn api_disconnect(
        &self,
        conn: HubConn,
        local: usize,
        client: String,
        code: u16,
        reason: String,
    ) {
        let call = ApiCall::Disconnect {
            client,
            code,
            reason,
        };
        let _ = self.api_reads.send((conn, call, local));
    }

    pub fn request(&self, request: BrokerRequest) {
        self.status.backlog.fetch_add(1, Ordering::Relaxed);
        let _ = self.requests.send(request);
    }

    /// The hub thread took `event` from its queue: a room message no longer counts against
    /// [`MAX_PUBSUB_QUEUE`].
    pub fn handled(&self, event: &BrokerEvent) {
        if let Some(cost) = queue_cost(event) {
            self.status.pubsub_queue.fetch_sub(cost, Ordering::Relaxed);
        }
    }
}

/// What a room message from the pub/sub connection counts against [`MAX_PUBSUB_QUEUE`];
/// `None` for other events (not counted, never dropped).
fn queue_cost(event: &BrokerEvent) -> Option<usize> {
    match event {
        BrokerEvent::Message {
            room,
            epoch,
            message,
        } => Some(
            room.len() + epoch.len() + message.from.len() + message.data.len() + MESSAGE_OVERHEAD,
        ),
        _ => None,
    }
}

/// The subscriber's side of [`MAX_PUBSUB_QUEUE`]: admits room messages while the queue has
/// room, drops them once it is full until it is down to half, and remembers the rooms that
/// lost messages until the hub can be told ([`BrokerEvent::Missed`]).
#[derive(Debug)]
struct QueueGate {
    cap: usize,
    dropping: bool,
    /// Rooms with dropped messages and no message queued since (at most the rooms this node
    /// is subscribed to).
    holes: BTreeSet<String>,
}

impl QueueGate {
    fn new(cap: usize) -> Self {
        QueueGate {
            cap,
            dropping: false,
            holes: BTreeSet::new(),
        }
    }

    /// Whether `event` may be queued for the hub; counts it if so, counts the drop if not.
    fn admit(&mut self, event: &BrokerEvent, status: &BrokerStatus) -> bool {
        let (Some(cost), BrokerEvent::Message { room, .. }) = (queue_cost(event), event) else {
            return true;
        };
        let queued = status.pubsub_queue.load(Ordering::Relaxed);
        if self.dropping && queued <= self.cap / 2 {
            self.dropping = false;
        }
        if !self.dropping && queued + cost > self.cap && queued > 0 {
            self.dropping = true;
        }
        if self.dropping {
            status.pubsub_dropped.fetch_add(1, Ordering::Relaxed);
            self.holes.insert(room.clone());
            return false;
        }
        // The hub sees this room's hole by the seq of this message.
        self.holes.remove(room.as_str());
        status.pubsub_queue.fetch_add(cost, Ordering::Relaxed);
        true
    }

    /// The rooms to report as [`BrokerEvent::Missed`] now that the queue drained to half.
    fn missed(&mut self, status: &BrokerStatus) -> Vec<String> {
        if self.holes.is_empty() || status.pubsub_queue.load(Ordering::Relaxed) > self.cap / 2 {
            return Vec::new();
        }
        self.dropping = false;
        std::mem::take(&mut self.holes).into_iter().collect()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.subscriber.stop();
    }
}

/// The pub/sub connection's shared state: the command thread subscribes (and waits for the
/// confirmation), the subscriber thread reads.
#[derive(Debug, Default)]
struct Subscriber {
    state: Mutex<SubState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct SubState {
    /// The write half of the current connection, once it is subscribed to `wanted`.
    writer: Option<TcpStream>,
    /// Rooms with members on this node.
    wanted: BTreeSet<String>,
    /// Rooms whose subscription Redis confirmed on the current connection.
    confirmed: BTreeSet<String>,
    /// When the current connection last sent something, and when it was last pinged.
    last_heard: Option<Instant>,
    last_ping: Option<Instant>,
    stopped: bool,
}

impl Subscriber {
    fn lock(&self) -> MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to `room` and waits until Redis confirmed it.
    fn subscribe(&self, room: &str) -> Result<(), BrokerError> {
        let mut state = self.lock();
        state.wanted.insert(room.into());
        if state.confirmed.contains(room) {
            return Ok(());
        }
        // A connection being (re)opened gets the time it takes, within the bound.
        let deadline = Instant::now() + TIMEOUT;
        while state.writer.is_none() && !state.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if state.confirmed.contains(room) {
            return Ok(());
        }
        let Some(writer) = state.writer.as_mut() else {
            return Err(BrokerError("the Redis pub/sub connection is down".into()));
        };
        let command = redis::cmd("SUBSCRIBE")
            .arg(channel(room))
            .get_packed_command();
        if let Err(e) = writer.write_all(&command) {
            let _ = writer.shutdown(Shutdown::Both);
            return Err(BrokerError(format!("Redis pub/sub: {e}")));
        }
        let deadline = Instant::now() + TIMEOUT;
        while !state.confirmed.contains(room) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.writer.is_none() {
                return Err(BrokerError("Redis did not confirm the subscription".into()));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    fn unsubscribe(&self, room: &str) {
        let mut state = self.lock();
        state.wanted.remove(room);
        state.confirmed.remove(room);
        if let Some(writer) = state.writer.as_mut() {
            let command = redis::cmd("UNSUBSCRIBE")
                .arg(channel(room))
                .get_packed_command();
            if writer.write_all(&command).is_err() {
                let _ = writer.shutdown(Shutdown::Both);
            }
        }
    }

    /// Pings the pub/sub connection every [`PING_EVERY`], and cuts it when Redis stayed silent
    /// for three of them (paused, or the connection silently dead): the subscriber thread then
    /// reconnects.
    fn keepalive(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        let silent = state
            .last_heard
            .is_some_and(|t| now.duration_since(t) > PING_EVERY * 3);
        let due = state
            .last_ping
            .is_none_or(|t| now.duration_since(t) >= PING_EVERY);
        let Some(writer) = state.writer.as_mut() else {
            return;
        };
        if silent {
            let _ = writer.shutdown(Shutdown::Both);
        } else if due {
            if writer
                .write_all(&redis::cmd("PING").get_packed_command())
                .is_err()
            {
                let _ = writer.shutdown(Shutdown::Both);
            }
            state.last_ping = Some(now);
        }
    }

    fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        if let Some(writer) = state.writer.take() {
            let _ = writer.shutdown(Shutdown::Both);
        }
    }
}

/// A publish request's fields: token, room, client, publish id, data.
type Publish = (u64, String, String, duplex_core::channel::Id, String);

/// A join attempt that carried a member and failed after its script may have been sent: its
/// [`COMPENSATE_SCRIPT`] is still to run.
#[derive(Debug)]
struct Compensation {
    room: String,
    client: String,
    attempt: u64,
    since: Instant,
}

struct CommandThread {
    /// This node's id in presence fields and heartbeats.
    node: String,
    member: redis::Script,
    /// See [`COMPENSATE_SCRIPT`].
    compensate: redis::Script,
    /// Failed join attempts whose compensation has not run yet, oldest first.
    compensations: VecDeque<Compensation>,
    /// The number of the last join attempt that carried a member.
    attempts: u64,
    claim: redis::Script,
    direct: redis::Script,
    release: redis::Script,
    heartbeat: redis::Script,
    client: redis::Client,
    connection: Option<redis::Connection>,
    /// When connecting last failed.
    failed_at: Option<Instant>,
    requests: Receiver<BrokerRequest>,
    hub: Sender<Command>,
    subscriber: Arc<Subscriber>,
    status: Arc<BrokerStatus>,
    publish: redis::Script,
    read: redis::Script,
    history_size: usize,
    history_ttl_ms: u64,
    presence_limit: usize,
}

impl CommandThread {
    fn run(mut self) {
        // Positions to read after a resubscribe that failed (Redis is back for pub/sub but the
        // command connection is not yet): retried until read.
        let mut positions: BTreeSet<String> = BTreeSet::new();
        let mut last_heartbeat: Option<Instant> = None;
        // A request taken from the queue while collecting a batch of publishes.
        let mut carried: Option<BrokerRequest> = None;
        loop {
            self.subscriber.keepalive();
            if last_heartbeat.is_none_or(|t| t.elapsed() >= PING_EVERY) {
                // Also checks the command connection (and reopens it after a failure), so that
                // /healthz tells the truth before the next publish.
                last_heartbeat = Some(Instant::now());
                let (node, script) = (self.node.clone(), self.heartbeat.clone());
                let reaped = self.call(|c| {
                    script
                        .arg(&node)
                        .arg(NODE_DEAD_MS)
                        .arg(META_TTL_SECS)
                        .invoke::<u64>(c)
                });
                self.status.heartbeats.fetch_add(1, Ordering::Relaxed);
                match reaped {
                    Ok(0) | Err(_) => {}
                    Ok(reaped) => info!(reaped, "members of dead nodes removed"),
                }
            }
            for room in std::mem::take(&mut positions) {
                match self.run_read(&room, None, None) {
                    Ok(state) => {
                        let event = BrokerEvent::Position {
                            room,
                            epoch: state.epoch,
                            seq: state.seq,
                        };
                        if self.hub.send(Command::Broker(event)).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        positions.insert(room);
                    }
                }
            }
            if !self.compensations.is_empty() {
                self.run_compensations();
            }
            let wait = if positions.is_empty() && self.compensations.is_empty() {
                PING_EVERY
            } else {
                RETRY_AFTER
            };
            let request = match carried.take() {
                Some(request) => request,
                None => match self.requests.recv_timeout(wait) {
                    Ok(request) => {
                        self.status.backlog.fetch_sub(1, Ordering::Relaxed);
                        request
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
            };
            let event = match request {
                BrokerRequest::Publish {
                    token,
                    room,
                    client,
                    id,
                    data,
                } => {
                    // The publishes queued behind this one go in the same round trip.
                    let mut batch = vec![(token, room, client, id, data)];
                    while batch.len() < MAX_BATCH {
                        match self.requests.try_recv() {
                            Ok(BrokerRequest::Publish {
                                token,
                                room,
                                client,
                                id,
                                data,
                            }) => {
                                self.status.backlog.fetch_sub(1, Ordering::Relaxed);
                                batch.push((token, room, client, id, data));
                            }
                            Ok(other) => {
                                self.status.backlog.fetch_sub(1, Ordering::Relaxed);
                                carried = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let results = self.run_publishes(&batch);
                    for ((token, ..), result) in batch.into_iter().zip(results) {
                        let event = BrokerEvent::Published { token, result };
                        if self.hub.send(Command::Broker(event)).is_err() {
                            return;
                        }
                    }
                    continue;
                }
                BrokerRequest::Join {
                    token,
                    room,
                    since,
                    member,
                } => {
                    // Subscribed first, read (and the member recorded) after, in one call.
                    let result = self.subscriber.subscribe(&room).and_then(|()| {
                        if let Some((client, _)) = &member {
                            self.settle(&room, client)?;
                        }
                        let since = since.as_ref().map(|s| (s.epoch.as_str(), s.seq));
                        self.run_read(&room, since, member.as_ref())
                    });
                    if let Err(BrokerError(e)) = &result {
                        debug!(room, "join not read from Redis: {e}");
                        self.status.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    BrokerEvent::Joined { token, result }
                }
                BrokerRequest::Position { room } => match self.run_read(&room, None, None) {
                    Ok(state) => BrokerEvent::Position {
                        room,
                        epoch: state.epoch,
                        seq: state.seq,
                    },
                    Err(_) => {
                        positions.insert(room);
                        continue;
                    }
                },
                BrokerRequest::Unsubscribe { room } => {
                    self.subscriber.unsubscribe(&room);
                    continue;
                }
                BrokerRequest::MemberJoined {
                    room,
                    client,
                    presence,
                } => {
                    self.run_member(&room, &client, "J", &presence);
                    continue;
                }
                BrokerRequest::MemberPresence {
                    room,
                    client,
                    presence,
                } => {
                    self.run_member(&room, &client, "P", &presence);
                    continue;
                }
                BrokerRequest::Claim { client } => {
                    let (node, script) = (self.node.clone(), self.claim.clone());
                    let claimed = self.call(|c| {
                        script
                            .key(client_key(&client))
                            .arg(&node)
                            .arg(META_TTL_SECS)
                            .arg(&client)
                            .invoke::<u64>(c)
                    });
                    match claimed {
                        Ok(serial) => BrokerEvent::Claimed { client, serial },
                        Err(BrokerError(e)) => {
                            debug!(client, "client id not claimed: {e}");
                            continue;
                        }
                    }
                }
                BrokerRequest::MemberLeft { room, client } => {
                    self.run_member(&room, &client, "L", "");
                    continue;
                }
                BrokerRequest::Direct {
                    token,
                    from,
                    to,
                    rooms,
                    data,
                } => {
                    let script = self.direct.clone();
                    let result = self.call(|c| {
                        let mut call = script.key(client_key(&to));
                        call.arg(&from).arg(&to).arg(&data).arg(if rooms.is_some() {
                            "1"
                        } else {
                            "0"
                        });
                        for room in rooms.iter().flatten() {
                            call.arg(room);
                        }
                        call.invoke::<u64>(c)
                    });
                    if let Err(BrokerError(e)) = &result {
                        debug!(to, "direct message not sent: {e}");
                    }
                    BrokerEvent::Sent { token, result }
                }
                BrokerRequest::Release { client } => {
                    let (node, script) = (self.node.clone(), self.release.clone());
                    let released =
                        self.call(|c| script.key(client_key(&client)).arg(&node).invoke::<i64>(c));
                    if let Err(BrokerError(e)) = released {
                        debug!(client, "client id not released: {e}");
                    }
                    continue;
                }
                _ => continue,
            };
            if self.hub.send(Command::Broker(event)).is_err() {
                return;
            }
        }
    }

    /// The command connection, (re)opened if needed; `None` fails fast for a while after a
    /// failed connection.
    fn connection(&mut self) -> Result<&mut redis::Connection, BrokerError> {
        if self.connection.is_none() {
            if self.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
                return Err(BrokerError("Redis is unreachable".into()));
            }
            let opened = open_connection(&self.client);
            match opened {
                Ok(c) => {
                    if self.failed_at.take().is_some() {
                        info!("Redis command connection restored");
                        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    self.connection = Some(c);
                }
                Err(e) => {
                    if self.failed_at.is_none() {
                        warn!("Redis command connection failed: {e}");
                    }
                    self.failed_at = Some(Instant::now());
                    self.status.commands_up.store(false, Ordering::Relaxed);
                    return Err(BrokerError(format!("Redis is unreachable: {e}")));
                }
            }
        }
        self.connection
            .as_mut()
            .ok_or_else(|| BrokerError("Redis is unreachable".into()))
    }

    /// Runs `f` on the command connection, timing it; a failure drops the connection (its
    /// answer could still arrive and be taken for the next one's).
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, BrokerError> {
        let started = Instant::now();
        let result = match self.connection() {
            Ok(connection) => f(connection).map_err(|e| BrokerError(format!("Redis: {e}"))),
            Err(e) => Err(e),
        };
        self.status.round_trips.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.status
            .round_trip_micros
            .fetch_add(micros, Ordering::Relaxed);
        match &result {
            Ok(_) => self.status.commands_up.store(true, Ordering::Relaxed),
            Err(_) => {
                self.status.errors.fetch_add(1, Ordering::Relaxed);
                if self.connection.take().is_some() {
                    self.status.commands_up.store(false, Ordering::Relaxed);
                    self.failed_at = Some(Instant::now());
                }
            }
        }
        result
    }

    /// One publish script call per publish, all in one pipeline. Each answer is its own; a
    /// failure of the round trip fails them all (some may have been sequenced: their retry
    /// with the same id is acked with the original seq).
    fn run_publishes(&mut self, batch: &[Publish]) -> Vec<Result<Sequenced, BrokerError>> {
        let (size, ttl) = (self.history_size, self.history_ttl_ms.max(1));
        let script = self.publish.clone();
        let pipeline = || {
            let mut pipe = redis::pipe();
            for (_, room, client, id, data) in batch {
                let id = serde_json::to_string(id).unwrap_or_default();
                pipe.cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(3)
                    .arg(meta_key(room))
                    .arg(history_key(room))
                    .arg(format!("dx:{{{room}}}:dd:{client}:{id}"))
                    .arg(new_epoch())
                    .arg(client)
                    .arg(data)
                    .arg(size)
                    .arg(ttl)
                    .arg(META_TTL_SECS)
                    .arg(channel(room))
                    .arg(DEDUP_TTL_SECS);
            }
            pipe
        };
        let answers: Result<Vec<(i64, String)>, BrokerError> = self.call(|c| {
            match pipeline().query(c) {
                // Not loaded yet (a new Redis, or SCRIPT FLUSH): nothing ran; load and resend.
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    script.load(c)?;
                    pipeline().query(c)
                }
                other => other,
            }
        });
        let answers = match answers {
            Ok(answers) if answers.len() == batch.len() => answers,
            Ok(_) => {
                let e = BrokerError("unexpected answer from Redis".into());
                return batch.iter().map(|_| Err(e.clone())).collect();
            }
            Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
        };
        answers
            .into_iter()
            .map(|(duplicate, answer)| {
                let (seq, epoch) = answer
                    .split_once(' ')
                    .and_then(|(seq, epoch)| Some((seq.parse().ok()?, epoch.to_string())))
                    .ok_or_else(|| {
                        BrokerError(format!("unexpected answer from Redis: {answer:?}"))
                    })?;
                Ok(Sequenced {
                    seq,
                    epoch,
                    duplicate: duplicate == 1,
                })
            })
            .collect()
    }

    /// Runs the compensations of failed join attempts, oldest first, until one fails (Redis is
    /// still unreachable: they are retried on the next turn of the command loop).
    fn run_compensations(&mut self) {
        while let Some(next) = self.compensations.front() {
            if next.since.elapsed() >= COMPENSATE_FOR {
                warn!(
                    room = next.room,
                    client = next.client,
                    "a failed join's compensation given up: Redis unreachable too long"
                );
                self.compensations.pop_front();
                continue;
            }
            let (room, client, attempt) = (next.room.clone(), next.client.clone(), next.attempt);
            let (node, script) = (self.node.clone(), self.compensate.clone());
            let result = self.call(|c| {
                compensate_call(&script, &node, &room, &client, attempt).invoke::<i64>(c)
            });
            match result {
                Ok(removed) => {
                    if removed == 1 {
                        info!(room, client, "member of a failed join removed");
                    }
                    self.compensations.pop_front();
                }
                Err(BrokerError(e)) => {
                    debug!(room, client, "failed join not compensated yet: {e}");
                    return;
                }
            }
        }
    }

    /// A join of `client` in `room` may run only after the compensations of its failed
    /// attempts did: one of those could otherwise still record the member after this join,
    /// and its compensation then remove a member this join recorded.
    fn settle(&mut self, room: &str, client: &str) -> Result<(), BrokerError> {
        let unsettled =
            |c: &VecDeque<Compensation>| c.iter().any(|c| c.room == room && c.client == client);
        if unsettled(&self.compensations) {
            self.run_compensations();
            if unsettled(&self.compensations) {
                return Err(BrokerError(
                    "an earlier join of this client is not settled in Redis yet".into(),
                ));
            }
        }
        Ok(())
    }

    /// Records a presence change and sends it to the other nodes. A failure loses the event
    /// (presence is not acked); the next resubscribe announces every member again.
    fn run_member(&mut self, room: &str, client: &str, kind: &str, presence: &str) {
        let (node, script) = (self.node.clone(), self.member.clone());
        let result = self
            .call(|c| member_call(&script, &node, room, client, kind, presence).invoke::<i64>(c));
        if let Err(BrokerError(e)) = result {
            debug!(room, client, "presence change not recorded: {e}");
        }
    }

    fn run_read(
        &mut self,
        room: &str,
        since: Option<(&str, u64)>,
        member: Option<&(String, String)>,
    ) -> Result<RoomState, BrokerError> {
        let (since_epoch, since_seq) = since.unwrap_or(("", 0));
        let node = if member.is_some() {
            self.node.as_str()
        } else {
            ""
        };
        let (client, presence) = member.map_or(("", ""), |(c, p)| (c.as_str(), p.as_str()));
        let node = node.to_string();
        // Each join that records a member is an attempt of its own (see COMPENSATE_SCRIPT).
        let attempt = if member.is_some() {
            self.attempts += 1;
            self.attempts
        } else {
            0
        };
        let ttl = self.history_ttl_ms.max(1);
        let presence_limit = self.presence_limit;
        let script = self.read.clone();
        let join = JoinCall {
            room,
            since_epoch,
            since_seq,
            node: &node,
            client,
            presence,
            attempt,
            history_ttl_ms: ttl,
            presence_limit,
        };
        let values: Result<Vec<Value>, BrokerError> =
            self.call(|c| join.prepare(&script).invoke(c));
        let values = match values {
            Ok(values) => values,
            Err(e) => {
                if member.is_some() {
                    // Sent, or maybe not: Redis may still run it, after anything sent next.
                    self.compensations.push_back(Compensation {
                        room: room.to_string(),
                        client: client.to_string(),
                        attempt,
                        since: Instant::now(),
                    });
                    if self.compensations.len() > MAX_COMPENSATIONS {
                        if let Some(dropped) = self.compensations.pop_front() {
                            warn!(
                                room = dropped.room,
                                client = dropped.client,
                                "a failed join's compensation given up: too many waiting"
                            );
                        }
                    }
                }
                return Err(e);
            }
        };
        parse_read(values).ok_or_else(|| BrokerError("unexpected answer from Redis".into()))
    }
}

/// The arguments of a [`READ_SCRIPT`] call: a join (`node`, `client` and `presence` given,
/// the member recorded as join `attempt`), or a position read (they are empty).
struct JoinCall<'a> {
    room: &'a str,
    since_epoch: &'a str,
    since_seq: u64,
    node: &'a str,
    client: &'a str,
    presence: &'a str,
    attempt: u64,
    history_ttl_ms: u64,
    presence_limit: usize,
}

impl JoinCall<'_> {
    fn prepare<'s>(&self, script: &'s redis::Script) -> redis::ScriptInvocation<'s> {
        let room = self.room;
        let mut call = script.prepare_invoke();
        call.key(meta_key(room))
            .key(history_key(room))
            .key(presence_key(room))
            .key(member_version_key(room))
            .key(tombstone_key(room, self.node, self.client, self.attempt))
            .key(attempt_key(room))
            .arg(new_epoch())
            .arg(self.since_epoch)
            .arg(self.since_seq)
            .arg(self.history_ttl_ms)
            .arg(META_TTL_SECS)
            .arg(self.presence_limit)
            .arg(self.node)
            .arg(self.client)
            .arg(self.presence)
            .arg(channel(room))
            .arg(room)
            .arg(self.attempt);
        call
    }
}

/// A [`MEMBER_SCRIPT`] call: `kind` (`J`, `P` or `L`) of `client` on `node` in `room`.
fn member_call<'s>(
    script: &'s redis::Script,
    node: &str,
    room: &str,
    client: &str,
    kind: &str,
    presence: &str,
) -> redis::ScriptInvocation<'s> {
    let mut call = script.prepare_invoke();
    call.key(presence_key(room))
        .key(member_version_key(room))
        .key(attempt_key(room))
        .arg(node)
        .arg(client)
        .arg(kind)
        .arg(presence)
        .arg(channel(room))
        .arg(room)
        .arg(META_TTL_SECS);
    call
}

/// A [`COMPENSATE_SCRIPT`] call: `node` gave up join `attempt` of `client` in `room`.
fn compensate_call<'s>(
    script: &'s redis::Script,
    node: &str,
    room: &str,
    client: &str,
    attempt: u64,
) -> redis::ScriptInvocation<'s> {
    let mut call = script.prepare_invoke();
    call.key(presence_key(room))
        .key(member_version_key(room))
        .key(tombstone_key(room, node, client, attempt))
        .key(attempt_key(room))
        .arg(node)
        .arg(client)
        .arg(attempt)
        .arg(TOMBSTONE_TTL_SECS)
        .arg(channel(room))
        .arg(META_TTL_SECS);
    call
}

fn parse_read(values: Vec<Value>) -> Option<RoomState> {
    let mut values = values.into_iter();
    let epoch: String = redis::from_redis_value(values.next()?).ok()?;
    let seq: u64 = redis::from_redis_value(values.next()?).ok()?;
    let member_count = MemberCount {
        members: redis::from_redis_value(values.next()?).ok()?,
        version: redis::from_redis_value(values.next()?).ok()?,
    };
    let count: usize = redis::from_redis_value(values.next()?).ok()?;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let member: String = redis::from_redis_value(values.next()?).ok()?;
        let (client, presence) = member.split_once(' ')?;
        members.push((client.to_string(), presence.to_string()));
    }
    let mut history = Vec::new();
    while let Some(seq) = values.next() {
        let seq: String = redis::from_redis_value(seq).ok()?;
        history.push(BrokerMessage {
            seq: seq.parse().ok()?,
            from: redis::from_redis_value(values.next()?).ok()?,
            data: redis::from_redis_value(values.next()?).ok()?,
        });
    }
    Some(RoomState {
        epoch,
        seq,
        history,
        members,
        member_count,
    })
}

/// A fresh room epoch: 16 random hex digits.
fn new_epoch() -> String {
    let mut bytes = [0u8; 8];
    crate::random_source()(&mut bytes);
    format!("{:016x}", u64::from_le_bytes(bytes))
}

struct SubscriberThread {
    /// This node's id: its own presence events are not handed back to it.
    node: String,
    addr: String,
    db: i64,
    password: Option<String>,
    subscriber: Arc<Subscriber>,
    hub: Sender<Command>,
    status: Arc<BrokerStatus>,
    /// See [`MAX_PUBSUB_QUEUE`].
    queue_cap: usize,
}

impl SubscriberThread {
    fn run(self) {
        let mut backoff = Duration::from_millis(50);
        let mut connected_before = false;
        loop {
            if self.subscriber.lock().stopped {
                return;
            }
            match self.session(connected_before) {
                Ok(()) => return, // stopped
                Err(e) => {
                    if self.status.subscriber_up.swap(false, Ordering::Relaxed) {
                        warn!("Redis pub/sub connection lost: {e}");
                        connected_before = true;
                        backoff = Duration::from_millis(50);
                    } else {
                        debug!("Redis pub/sub connection failed: {e}");
                    }
                }
            }
            {
                let mut state = self.subscriber.lock();
                state.writer = None;
                state.confirmed.clear();
                self.subscriber.changed.notify_all();
                if state.stopped {
                    return;
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One connection: subscribes to every wanted room, then reads until the connection fails
    /// (an error) or the broker is stopped (`Ok`).
    fn session(&self, reconnect: bool) -> Result<(), String> {
        let addr = self
            .addr
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        // Setup answers are awaited with a timeout; afterwards the reader blocks, and the
        // keepalive cuts a connection that went silent.
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut parser = redis::Parser::new();
        let mut setup = Vec::new();
        if let Some(password) = &self.password {
            setup.extend(redis::cmd("AUTH").arg(password).get_packed_command());
        }
        if self.db != 0 {
            setup.extend(redis::cmd("SELECT").arg(self.db).get_packed_command());
        }
        let setup_answers = usize::from(self.password.is_some()) + usize::from(self.db != 0);
        writer.write_all(&setup).map_err(|e| e.to_string())?;
        for _ in 0..setup_answers {
            match parser.parse_value(&mut reader).map_err(|e| e.to_string())? {
                Value::ServerError(e) => return Err(format!("{e:?}")),
                _ => continue,
            }
        }
        {
            let mut state = self.subscriber.lock();
            if state.stopped {
                return Ok(());
            }
            let mut channels: Vec<String> = state.wanted.iter().map(|r| channel(r)).collect();
            channels.push(node_channel(&self.node));
            let command = redis::cmd("SUBSCRIBE").arg(channels).get_packed_command();
            let mut command = command;
            // Answered after every subscription above is confirmed.
            command.extend(redis::cmd("PING").arg("ready").get_packed_command());
            writer.write_all(&command).map_err(|e| e.to_string())?;
            state.writer = Some(writer);
            self.subscriber.changed.notify_all();
            state.last_heard = Some(Instant::now());
            state.last_ping = Some(Instant::now());
        }
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| e.to_string())?;
        let mut ready = false;
        // Holes left on a previous connection are covered by the resubscribe's positions.
        let mut gate = QueueGate::new(self.queue_cap);
        loop {
            let value = match parser.parse_value(&mut reader) {
                Ok(value) => value,
                Err(e) => {
                    if self.subscriber.lock().stopped {
                        return Ok(());
                    }
                    return Err(e.to_string());
                }
            };
            self.subscriber.lock().last_heard = Some(Instant::now());
            // Checked on every read, pongs included (every PING_EVERY at least).
            for room in gate.missed(&self.status) {
                let event = BrokerEvent::Missed { room };
                if self.hub.send(Command::Broker(event)).is_err() {
                    return Ok(());
                }
            }
            let items = match value {
                Value::Array(items) => items,
                // `PING ready` before any subscription is answered outside pub/sub mode.
                Value::BulkString(_) | Value::SimpleString(_) if !ready => {
                    vec![Value::SimpleString("pong".into())]
                }
                _ => continue,
            };
            let mut items = items.into_iter();
            let kind: String = match items.next().map(redis::from_redis_value) {
                Some(Ok(kind)) => kind,
                _ => continue,
            };
            match kind.as_str() {
                "message" => {
                    let (Some(Ok(channel)), Some(Ok(payload))) = (
                        items.next().map(redis::from_redis_value::<String>),
                        items.next().map(redis::from_redis_value::<String>),
                    ) else {
                        continue;
                    };
                    if channel == node_channel(&self.node) {
                        if let Some(command) = parse_disconnect(&payload) {
                            if self.hub.send(command).is_err() {
                                return Ok(());
                            }
                            continue;
                        }
                        if let Some(event) = parse_direct(&payload) {
                            if self.hub.send(Command::Broker(event)).is_err() {
                                return Ok(());
                            }
                            continue;
                        }
                        let Some((client, serial)) = payload.split_once(' ') else {
                            continue;
                        };
                        let Ok(serial) = serial.parse() else {
                            continue;
                        };
                        let client = client.to_string();
                        let event = BrokerEvent::TakeOver { client, serial };
                        if self.hub.send(Command::Broker(event)).is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                    if let Some((node, count, member)) = parse_member(&channel, &payload) {
                        // This node's own changes count; their events were told here already.
                        let own = node == self.node;
                        for event in std::iter::once(count).chain(member.filter(|_| !own)) {
                            if self.hub.send(Command::Broker(event)).is_err() {
                                return Ok(());
                            }
                        }
                        continue;
                    }
                    if let Some(event) = parse_message(&channel, &payload) {
                        if !gate.admit(&event, &self.status) {
                            continue;
                        }
                        if self.hub.send(Command::Broker(event)).is_err() {
                            return Ok(());
                        }
                    }
                }
                "subscribe" => {
                    if let Some(Ok(channel)) = items.next().map(redis::from_redis_value::<String>) {
                        if let Some(room) = channel_room(&channel) {
                            let mut state = self.subscriber.lock();
                            if state.wanted.contains(room) {
                                state.confirmed.insert(room.into());
                            }
                            self.subscriber.changed.notify_all();
                        }
                    }
                }
                "pong" if !ready => {
                    ready = true;
                    self.status.subscriber_up.store(true, Ordering::Relaxed);
                    if reconnect {
                        info!("Redis pub/sub connection restored and resubscribed");
                        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
                        if self
                            .hub
                            .send(Command::Broker(BrokerEvent::Resubscribed))
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// A message to one client from a `> from to data` payload on the node channel (client ids
/// hold no space nor `>`, so a takeover's `client serial` never reads as one).
/// A command connection to Redis whose connect, reads and writes each give up after `TIMEOUT`.
fn open_connection(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let c = client.get_connection_with_timeout(TIMEOUT)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    c.set_write_timeout(Some(TIMEOUT))?;
    Ok(c)
}

fn parse_direct(payload: &str) -> Option<BrokerEvent> {
    let mut parts = payload.strip_prefix("> ")?.splitn(3, ' ');
    Some(BrokerEvent::Direct {
        from: parts.next()?.into(),
        to: parts.next()?.into(),
        data: parts.next()?.into(),
    })
}

/// `!disconnect CODE CLIENT REASON` on a node's channel: `POST /api/disconnect` on another
/// node, for a client whose id this node holds.
fn parse_disconnect(payload: &str) -> Option<Command> {
    let mut parts = payload.strip_prefix("!disconnect ")?.splitn(3, ' ');
    let code = parts.next()?.parse().ok()?;
    let client = parts.next()?.to_string();
    let reason = parts.next().unwrap_or_default().to_string();
    Some(Command::RemoteDisconnect {
        client,
        code,
        reason,
    })
}

/// A member change from its room's channel and its `! node kind number members [client
/// [presence]]` payload: the node it happened on, the room's member count after it, and the
/// change itself (none for kind `C`, a count alone).
fn parse_member<'a>(
    channel: &str,
    payload: &'a str,
) -> Option<(&'a str, BrokerEvent, Option<BrokerEvent>)> {
    let room = channel_room(channel)?;
    let mut parts = payload.strip_prefix("! ")?.splitn(6, ' ');
    let node = parts.next()?;
    let kind = parts.next()?;
    let count = MemberCount {
        version: parts.next()?.parse().ok()?,
        members: parts.next()?.parse().ok()?,
    };
    let change = match kind {
        "C" => None,
        _ => {
            let client = parts.next()?.to_string();
            let presence = parts.next().unwrap_or("null").to_string();
            Some(match kind {
                "J" => MemberChange::Joined { client, presence },
                "P" => MemberChange::Presence { client, presence },
                "L" => MemberChange::Left { client },
                _ => return None,
            })
        }
    };
    let member = change.map(|change| BrokerEvent::Member {
        room: room.into(),
        change,
    });
    let count = BrokerEvent::MemberCount {
        room: room.into(),
        count,
    };
    Some((node, count, member))
}

/// A room message from its channel and its `epoch seq client data` payload.
fn parse_message(channel: &str, payload: &str) -> Option<BrokerEvent> {
    let room = channel_room(channel)?;
    if payload.starts_with("! ") {
        return None;
    }
    let mut parts = payload.splitn(4, ' ');
    let epoch = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    let from = parts.next()?;
    let data = parts.next()?;
    Some(BrokerEvent::Message {
        room: room.into(),
        epoch: epoch.into(),
        message: BrokerMessage {
            seq,
            from: from.into(),
            data: data.into(),
        },
    })
}

/// The rooms with members on live nodes (from each node's room set and the rooms' presence
/// hashes), at most ARGV[1] of them: `room members epoch seq` for each. ARGV[2]: how old a
/// node's heartbeat may be (ms).
const API_ROOMS_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local nodes = redis.call('ZRANGEBYSCORE', 'dx:nodes', now - tonumber(ARGV[2]), '+inf')
local seen = {}
local out = {}
local scanned = 0
for _, node in ipairs(nodes) do
  for _, room in ipairs(redis.call('SMEMBERS', 'dx:node:' .. node .. ':rooms')) do
    scanned = scanned + 1
    if #out >= limit * 4 or scanned > limit * 10 then return out end
    if not seen[room] then
      seen[room] = true
      local members = redis.call('HLEN', 'dx:{' .. room .. '}:p')
      if members > 0 then
        local m = redis.call('HMGET', 'dx:{' .. room .. '}:m', 'e', 's')
        table.insert(out, room)
        table.insert(out, members)
        table.insert(out, m[1] or '')
        table.insert(out, tonumber(m[2] or '0'))
      end
    end
  end
end
return out
"#;

/// A room's epoch, seq and the stored messages after ARGV[2] (seq) when ARGV[1] (epoch; empty:
/// the room's) is the room's epoch and the history still holds them all: `{epoch, seq,
/// recovered, (seq, from, data)...}`. Reads only (a room never used has epoch "").
const API_HISTORY_SCRIPT: &str = r#"
local e = redis.call('HGET', KEYS[1], 'e')
local s = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
if not e then
  if ARGV[1] == '' and tonumber(ARGV[2]) == 0 then return {'', 0, 1} end
  return {'', 0, 0}
end
local since_e = ARGV[1]
if since_e == '' then since_e = e end
local since = tonumber(ARGV[2])
if since_e ~= e or since > s then return {e, s, 0} end
if since == s then return {e, s, 1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = now - tonumber(ARGV[3])
local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', tonumber(ARGV[4]))
local out = {e, s, 1}
local expect = since + 1
for _, en in ipairs(entries) do
  local f = en[2]
  local id = en[1]
  local seq = tonumber(string.sub(id, 1, string.find(id, '-') - 1))
  if tonumber(f[2]) <= oldest or seq ~= expect then return {e, s, 0} end
  expect = expect + 1
  table.insert(out, seq)
  table.insert(out, f[4])
  table.insert(out, f[6])
end
if #entries == 0 then return {e, s, 0} end
return out
"#;

/// Answers the HTTP API's reads from Redis, for the whole cluster, on a connection of its own
/// (a slow read does not hold the hub's publishes).
struct ApiReader {
    client: redis::Client,
    connection: Option<redis::Connection>,
    calls: Receiver<(HubConn, ApiCall, usize)>,
    hub: Sender<Command>,
    /// This node's id: a client held here was disconnected by the hub already.
    node: String,
    history_ttl_ms: u64,
}

impl ApiReader {
    fn run(mut self) {
        let rooms = redis::Script::new(API_ROOMS_SCRIPT);
        let history = redis::Script::new(API_HISTORY_SCRIPT);
        while let Ok((conn, call, local)) = self.calls.recv() {
            let answer = self.read(&call, &rooms, &history);
            if matches!(call, ApiCall::Disconnect { .. }) {
                let remote = answer.map(|v| v["closed"].as_u64().unwrap_or(0));
                if remote.is_err() {
                    self.connection = None;
                }
                let command = Command::ApiClosed {
                    conn,
                    local,
                    remote,
                };
                if self.hub.send(command).is_err() {
                    return;
                }
                continue;
            }
            let response = match answer {
                Ok(body) => ApiResponse::ok(body),
                Err(e) => {
                    self.connection = None;
                    super::api::unavailable(&format!("not read: {e}"))
                }
            };
            if self.hub.send(Command::ApiReply(conn, response)).is_err() {
                return;
            }
        }
    }

    fn read(
        &mut self,
        call: &ApiCall,
        rooms: &redis::Script,
        history: &redis::Script,
    ) -> Result<serde_json::Value, String> {
        use serde_json::{Value as Json, json};
        if self.connection.is_none() {
            let c =
                open_connection(&self.client).map_err(|e| format!("Redis is unreachable: {e}"))?;
            self.connection = Some(c);
        }
        let Some(c) = self.connection.as_mut() else {
            return Err("Redis is unreachable".into());
        };
        let error = |e: redis::RedisError| format!("Redis: {e}");
        if let ApiCall::Disconnect {
            client,
            code,
            reason,
        } = call
        {
            // The node that holds the client id (its last `hello`) closes its connection.
            let owner: Option<String> = redis::cmd("HGET")
                .arg(format!("dx:cid:{client}"))
                .arg("node")
                .query(c)
                .map_err(error)?;
            let told = match owner {
                Some(owner) if owner != self.node => {
                    let receivers: u64 = redis::cmd("PUBLISH")
                        .arg(node_channel(&owner))
                        .arg(format!("!disconnect {code} {client} {reason}"))
                        .query(c)
                        .map_err(error)?;
                    u64::from(receivers > 0)
                }
                _ => 0,
            };
            return Ok(json!({ "closed": told }));
        }
        let parse = |e: redis::ParsingError| format!("unexpected answer from Redis: {e}");
        match call {
            ApiCall::Rooms => {
                let values: Vec<Value> = rooms
                    .arg(super::MAX_API_ROOMS)
                    .arg(NODE_DEAD_MS)
                    .invoke(c)
                    .map_err(error)?;
                let mut list = Vec::new();
                for chunk in values.chunks(4) {
                    let [room, members, epoch, seq] = chunk else {
                        break;
                    };
                    let text = |v: &Value| redis::from_redis_value::<String>(v.clone()).ok();
                    let number = |v: &Value| redis::from_redis_value::<u64>(v.clone()).ok();
                    list.push(json!({
                        "room": text(room),
                        "members": number(members),
                        "epoch": text(epoch),
                        "seq": number(seq),
                    }));
                }
                list.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
                Ok(json!({ "rooms": list }))
            }
            ApiCall::Presence { room } => {
                let values: Vec<String> = redis::cmd("HVALS")
                    .arg(presence_key(room))
                    .query(c)
                    .map_err(error)?;
                let mut seen = BTreeSet::new();
                let mut members = Vec::new();
                for value in values {
                    let Some((client, presence)) = value.split_once(' ') else {
                        continue;
                    };
                    if seen.insert(client.to_string()) {
                        let presence: Json = serde_json::from_str(presence).unwrap_or(Json::Null);
                        members.push(json!({"client": client, "presence": presence}));
                    }
                }
                Ok(json!({"room": room, "members": members}))
            }
            ApiCall::History { room, since, limit } => {
                let (since_epoch, since_seq) = since
                    .as_ref()
                    .map_or(("", 0), |s| (s.epoch.as_str(), s.seq));
                let values: Vec<Value> = history
                    .key(meta_key(room))
                    .key(history_key(room))
                    .arg(since_epoch)
                    .arg(since_seq)
                    .arg(self.history_ttl_ms.max(1))
                    .arg(*limit)
                    .invoke(c)
                    .map_err(error)?;
                let mut values = values.into_iter();
                let mut next = || values.next().ok_or("unexpected answer from Redis");
                let epoch: String = redis::from_redis_value(next()?).map_err(parse)?;
                let seq: u64 = redis::from_redis_value(next()?).map_err(parse)?;
                let recovered: u64 = redis::from_redis_value(next()?).map_err(parse)?;
                let mut messages = Vec::new();
                while let Ok(value) = next() {
                    let seq: u64 = redis::from_redis_value(value).map_err(parse)?;
                    let from: String = redis::from_redis_value(next()?).map_err(parse)?;
                    let data: String = redis::from_redis_value(next()?).map_err(parse)?;
                    let data: Json = serde_json::from_str(&data).unwrap_or(Json::Null);
                    messages.push(json!({"seq": seq, "from": from, "data": data}));
                }
                Ok(json!({
                    "room": room,
                    "epoch": epoch,
                    "seq": seq,
                    "recovered": recovered == 1,
                    "messages": messages,
                }))
            }
            _ => Err("not a read".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pubsub_queue_is_bounded_and_reports_each_room_that_lost_messages() {
        let status = BrokerStatus::default();
        let message = |room: &str, seq: u64| BrokerEvent::Message {
            room: room.into(),
            epoch: "e".into(),
            message: duplex_core::channel::BrokerMessage {
                seq,
                from: "ada".into(),
                data: "x".repeat(40),
            },
        };
        let cost = queue_cost(&message("app/a", 1)).unwrap();
        let mut gate = QueueGate::new(cost * 4);
        let mut queued = Vec::new();
        for seq in 1..=10 {
            let event = message(if seq % 2 == 0 { "app/a" } else { "app/b" }, seq);
            if gate.admit(&event, &status) {
                queued.push(event);
            }
        }
        assert_eq!(queued.len(), 4, "the cap holds four");
        assert_eq!(status.pubsub_dropped.load(Ordering::Relaxed), 6);
        assert_eq!(status.pubsub_queue.load(Ordering::Relaxed), cost * 4);
        // Not below half yet: still dropping, nothing reported.
        let handled = |event: &BrokerEvent| {
            status
                .pubsub_queue
                .fetch_sub(queue_cost(event).unwrap(), Ordering::Relaxed);
        };
        handled(&queued[0]);
        assert!(gate.missed(&status).is_empty());
        assert!(!gate.admit(&message("app/a", 11), &status));
        handled(&queued[1]);
        // Other events are never counted nor dropped.
        assert!(gate.admit(&BrokerEvent::Resubscribed, &status));
        assert_eq!(
            gate.missed(&status),
            vec!["app/a".to_string(), "app/b".into()]
        );
        assert!(
            gate.missed(&status).is_empty(),
            "each hole is reported once"
        );
        // Below half: messages are queued again; a room whose next message is queued needs
        // no report (the hub sees the hole by its seq).
        assert!(!gate.dropping);
        assert!(gate.admit(&message("app/a", 12), &status));
        assert_eq!(status.pubsub_dropped.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn channel_names_round_trip() {
        assert_eq!(channel_room(&channel("app/chat")), Some("app/chat"));
        let event = parse_message(&channel("app/a"), r#"e1 7 ada {"text":"a b"}"#).unwrap();
        assert_eq!(
            event,
            BrokerEvent::Message {
                room: "app/a".into(),
                epoch: "e1".into(),
                message: BrokerMessage {
                    seq: 7,
                    from: "ada".into(),
                    data: r#"{"text":"a b"}"#.into(),
                },
            }
        );
        assert_eq!(
            parse_direct(r#"> ada bob {"sdp":"v=0 x"}"#),
            Some(BrokerEvent::Direct {
                from: "ada".into(),
                to: "bob".into(),
                data: r#"{"sdp":"v=0 x"}"#.into(),
            })
        );
        assert_eq!(parse_direct("ada 7"), None);
    }

    /// A `redis-server` of the test's own on a free port (Debian's package; tests/setup.sh
    /// installs it), killed on drop.
    struct TestRedis {
        child: std::process::Child,
        client: redis::Client,
    }

    impl TestRedis {
        fn start() -> TestRedis {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (tests/setup.sh installs it)");
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
            let redis = TestRedis { child, client };
            let deadline = Instant::now() + Duration::from_secs(10);
            while redis.client.get_connection().is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            redis
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    #[ignore = "needs redis-server: run by tests/run.sh cluster"]
    fn a_given_up_join_leaves_no_member_whatever_the_order_redis_runs_it_and_its_compensation() {
        let redis = TestRedis::start();
        let mut c = redis.client.get_connection().unwrap();
        let (read, member, compensate) = (
            redis::Script::new(READ_SCRIPT),
            redis::Script::new(MEMBER_SCRIPT),
            redis::Script::new(COMPENSATE_SCRIPT),
        );
        let join = |c: &mut redis::Connection, node: &str, room: &str, client: &str, attempt| {
            let call = JoinCall {
                room,
                since_epoch: "",
                since_seq: 0,
                node,
                client,
                presence: "null",
                attempt,
                history_ttl_ms: 60_000,
                presence_limit: 100,
            };
            let values: Vec<Value> = call.prepare(&read).invoke(c).unwrap();
            parse_read(values).unwrap()
        };
        let compensated = |c: &mut redis::Connection, node: &str, room: &str, client, attempt| {
            compensate_call(&compensate, node, room, client, attempt)
                .invoke::<i64>(c)
                .unwrap()
        };
        let changed = |c: &mut redis::Connection, node: &str, room: &str, client, kind| {
            member_call(&member, node, room, client, kind, "null")
                .invoke::<i64>(c)
                .unwrap()
        };
        let fields = |c: &mut redis::Connection, room: &str| {
            let mut fields: Vec<String> = redis::cmd("HKEYS")
                .arg(presence_key(room))
                .query(c)
                .unwrap();
            fields.sort();
            fields
        };
        let version = |c: &mut redis::Connection, room: &str| -> u64 {
            let v: Option<u64> = redis::cmd("GET")
                .arg(member_version_key(room))
                .query(c)
                .unwrap();
            v.unwrap_or(0)
        };

        // The compensation first: the join's late run records nothing, announces nothing.
        assert_eq!(compensated(&mut c, "n1", "app/a", "ada", 1), 0);
        let ttl: i64 = redis::cmd("TTL")
            .arg(tombstone_key("app/a", "n1", "ada", 1))
            .query(&mut c)
            .unwrap();
        assert!(ttl > 0 && ttl <= TOMBSTONE_TTL_SECS as i64, "{ttl}");
        let before = version(&mut c, "app/a");
        let state = join(&mut c, "n1", "app/a", "ada", 1);
        assert!(state.members.is_empty(), "{:?}", state.members);
        assert_eq!(fields(&mut c, "app/a"), Vec::<String>::new());
        assert_eq!(version(&mut c, "app/a"), before, "no member change");

        // The join first: its compensation removes the member, as a member change (`L`).
        join(&mut c, "n1", "app/b", "ada", 2);
        assert_eq!(fields(&mut c, "app/b"), vec!["n1/ada"]);
        let before = version(&mut c, "app/b");
        assert_eq!(compensated(&mut c, "n1", "app/b", "ada", 2), 1);
        assert_eq!(fields(&mut c, "app/b"), Vec::<String>::new());
        assert!(version(&mut c, "app/b") > before);

        // A later join of the same client on the same node succeeded meanwhile: its member
        // stays, and so does the same client's membership through another node.
        join(&mut c, "n1", "app/c", "ada", 3);
        join(&mut c, "n1", "app/c", "ada", 4);
        join(&mut c, "n2", "app/c", "ada", 1);
        assert_eq!(compensated(&mut c, "n1", "app/c", "ada", 3), 0);
        assert_eq!(compensated(&mut c, "n2", "app/c", "ada", 3), 0);
        assert_eq!(fields(&mut c, "app/c"), vec!["n1/ada", "n2/ada"]);

        // Announced again (a resubscribe's `J`) or changed (`P`) since: the member is no
        // longer that join's doing alone, and stays.
        join(&mut c, "n1", "app/d", "ada", 5);
        join(&mut c, "n1", "app/d", "bob", 6);
        assert_eq!(changed(&mut c, "n1", "app/d", "ada", "J"), 1);
        assert_eq!(changed(&mut c, "n1", "app/d", "bob", "P"), 1);
        assert_eq!(compensated(&mut c, "n1", "app/d", "ada", 5), 0);
        assert_eq!(compensated(&mut c, "n1", "app/d", "bob", 6), 0);
        assert_eq!(fields(&mut c, "app/d"), vec!["n1/ada", "n1/bob"]);

        // Left since: nothing to remove, and no second `L`.
        join(&mut c, "n1", "app/e", "ada", 7);
        assert_eq!(changed(&mut c, "n1", "app/e", "ada", "L"), 1);
        let before = version(&mut c, "app/e");
        assert_eq!(compensated(&mut c, "n1", "app/e", "ada", 7), 0);
        assert_eq!(version(&mut c, "app/e"), before);
        assert_eq!(fields(&mut c, "app/e"), Vec::<String>::new());
    }

    #[test]
    fn member_changes_carry_the_room_s_count() {
        let c = channel("app/a");
        let (node, count, member) = parse_member(&c, r#"! n1 J 17 3 ada {"a b":1}"#).unwrap();
        assert_eq!(node, "n1");
        assert_eq!(
            count,
            BrokerEvent::MemberCount {
                room: "app/a".into(),
                count: MemberCount {
                    version: 17,
                    members: 3
                },
            }
        );
        assert_eq!(
            member,
            Some(BrokerEvent::Member {
                room: "app/a".into(),
                change: MemberChange::Joined {
                    client: "ada".into(),
                    presence: r#"{"a b":1}"#.into()
                },
            })
        );
        let (_, _, member) = parse_member(&c, "! n1 L 18 2 ada").unwrap();
        assert!(matches!(
            member,
            Some(BrokerEvent::Member {
                change: MemberChange::Left { .. },
                ..
            })
        ));
        let (_, count, member) = parse_member(&c, "! n2 C 19 1").unwrap();
        assert!(matches!(count, BrokerEvent::MemberCount { .. }) && member.is_none());
        assert_eq!(parse_member(&c, "! n1 X 20 1 ada"), None);
        assert_eq!(parse_message(&c, "! n1 J 17 3 ada null"), None);
    }
}
