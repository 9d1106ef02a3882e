//! `duplex serve`: the real-time server. `/ws` speaks `duplex.v1` (rooms, presence, acks,
//! history; see `docs/PROTOCOL.md`), `/echo` echoes, `/` serves a demo chat page
//! (on the WASM client under `/duplex-ws/` when there is one, see `files`), `/dashboard` a live
//! view of `/metrics` when enabled, and the event loop answers `/healthz` and `/metrics`.
//!
//! ```text
//!  worker 0 ─┐  decoded commands (open, command,         ┌─ hub thread: Hub<HubConn>
//!            │   refused, authenticated, closed, dropped)│
//!  worker 1 ─┼──────────────── mpsc ───────────────────▶│  rooms, seq, history, presence
//!  worker N ─┘◀── per-worker inbox + mio Waker ──────────┘  typed deliveries, shared
//! ```
//!
//! Each worker decodes and validates the frames of its own connections (bounded by the
//! protocol's size, depth and value limits) and checks their tokens, so the single hub thread
//! only ever gets typed commands and one client's large frames cost its own worker, not
//! everyone's latency. Each worker frames and writes the deliveries of its own connections. A
//! member whose output
//! is above `max_backlog` is a slow consumer: with [`SlowConsumer::Gap`] its room messages are
//! dropped until its output drains to half the cap, then it gets `gap {room, from_seq, to_seq}`
//! and recovers from history; with [`SlowConsumer::Close`] it is closed with 1008. Either way a
//! stalled member holds at most its cap and never delays the others.

mod api;
mod auth;
mod fallback;
mod files;
mod hub_thread;
mod metrics;
pub mod redis_broker;
mod relay;
mod stomp;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use duplex_core::channel::protocol::{self, ClientMessage, CommandError, DecodeLimits, ErrorCode};
use duplex_core::channel::{self, Hub, HubConfig, codec};
use duplex_core::close::CloseCode;
use duplex_core::handshake::server::{Accept, Request};
use duplex_core::message::{Closed, Message, PreparedMessage};
use duplex_core::stomp::{MessageBody, StompConfig};
use tracing::{debug, warn};

pub use auth::{Claims, OriginPolicy, TokenError, TokenVerifier};
pub use fallback::FallbackConfig;
pub use metrics::{BrokerState, ChannelMetrics};
pub use redis_broker::{BrokerStatus, BrokerUrl, MAX_PUBSUB_QUEUE};

use self::api::{ApiKeys, ApiResponse};
use self::hub_thread::{Command, Delivery, HubConn, HubThread, Inbox};
use crate::server::{
    BodyError, ConnId, Ctx, Decision, Handler, HttpResponse, Server, ServerConfig, ShutdownHandle,
};
use duplex_core::channel::api::{ApiError, ApiLimits};

/// Rooms `GET /api/rooms` lists at most.
pub const MAX_API_ROOMS: usize = 10_000;

/// The subprotocol `/ws` requires.
pub const PROTOCOL: &str = "duplex.v1";

const DEMO_PAGE: &str = include_str!("page.html");
const DASHBOARD_PAGE: &str = include_str!("dashboard.html");
/// The element of the demo page that tells it which client module to import.
const CLIENT_META: &str = r#"<meta name="duplex-client" content="">"#;

/// The demo page, telling it where the WASM client is (`entry`, from `source`), if anywhere.
fn demo_page(client: &files::ClientFiles) -> Vec<u8> {
    let meta = match (client.entry(), client.source()) {
        (Some(entry), Some(source)) => format!(
            r#"<meta name="duplex-client" content="{}{entry}" data-source="{source}">"#,
            files::PREFIX
        ),
        _ => CLIENT_META.to_string(),
    };
    DEMO_PAGE.replacen(CLIENT_META, &meta, 1).into_bytes()
}

/// What happens to a member whose unsent output exceeds `max_backlog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumer {
    /// Drop its room messages until it drains, then send `gap` so it recovers from history.
    #[default]
    Gap,
    /// Close it with 1008.
    Close,
}

/// Everything `duplex serve` runs with.
#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    pub server: ServerConfig,
    pub hub: HubConfig,
    pub slow_consumer: SlowConsumer,
    pub origins: OriginPolicy,
    /// Require `hello.token`, an HS256 JWT signed with this secret.
    pub jwt_secret: Option<Vec<u8>>,
    /// The `duplex-ws` package directory (`wasm/js`), served under `/duplex-ws/` instead of the
    /// copy embedded at build time (if any); the demo page runs the WASM client from there.
    pub client_dir: Option<std::path::PathBuf>,
    /// Serve `/dashboard`, a live view of `/metrics`: behind the API keys when there are any
    /// (a key as the HTTP Basic password, or as a Bearer token), open otherwise.
    pub dashboard: bool,
    /// Share rooms with other nodes through this Redis (`--broker`); `None`: in-process.
    pub broker: Option<BrokerUrl>,
    /// With a broker: bytes of room messages from Redis queued for the hub thread at most
    /// (`--broker-queue`; 0, as in `ServeConfig::default()`, means [`MAX_PUBSUB_QUEUE`]).
    pub broker_queue: usize,
    /// Keys of the HTTP API (`--api-key`); none: every `/api/` path answers 404.
    pub api_keys: Vec<String>,
    /// Timings of the HTTP transports (SSE, long polling) for clients without WebSocket.
    pub fallback: FallbackConfig,
}

/// A bound `duplex serve`, ready to [`ChannelServer::run`].
#[derive(Debug)]
pub struct ChannelServer {
    server: Server,
    config: ServeConfig,
    metrics: Arc<ChannelMetrics>,
}

impl ChannelServer {
    pub fn bind(config: ServeConfig) -> io::Result<ChannelServer> {
        let server = Server::bind(config.server.clone())?;
        Ok(ChannelServer {
            server,
            config,
            metrics: Arc::new(ChannelMetrics::default()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.server.shutdown_handle()
    }

    pub fn channel_metrics(&self) -> Arc<ChannelMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs the workers and the hub thread until a shutdown completes.
    pub fn run(self) -> io::Result<()> {
        let ChannelServer {
            server,
            config,
            metrics,
        } = self;
        let wakers = server.worker_wakers();
        let inboxes: Vec<Arc<Inbox>> = wakers
            .iter()
            .map(|_| Arc::new(Mutex::new(Vec::new())))
            .collect();
        let (commands, receiver) = mpsc::channel();
        let verifier = config.jwt_secret.as_deref().map(TokenVerifier::hs256);
        // With tokens, the hub takes client ids from verified tokens only.
        let hub_config = config
            .hub
            .clone()
            .with_external_identity(verifier.is_some())
            .with_external_broker(config.broker.is_some());
        let broker_status = config
            .broker
            .as_ref()
            .map(|_| Arc::new(BrokerStatus::default()));
        let broker = match (&config.broker, &broker_status) {
            (Some(url), Some(status)) => Some(redis_broker::RedisBroker::start(
                url,
                &hub_config,
                commands.clone(),
                Arc::clone(status),
                match config.broker_queue {
                    0 => MAX_PUBSUB_QUEUE,
                    cap => cap,
                },
            )?),
            _ => None,
        };
        let sessions = Arc::new(fallback::Sessions::new(
            config.fallback,
            inboxes
                .iter()
                .cloned()
                .zip(wakers.iter().cloned())
                .collect(),
            config.server.max_connections,
        ));
        let hub = HubThread {
            hub: Hub::new(hub_config, random_seed()),
            commands: receiver,
            inboxes: inboxes.clone(),
            wakers,
            metrics: Arc::clone(&metrics),
            broker,
            api: Default::default(),
        };
        let hub_thread = std::thread::Builder::new()
            .name("duplex-hub".into())
            .spawn(move || hub.run())?;
        let client = files::ClientFiles::new(config.client_dir.as_deref());
        let shared = Shared {
            page: Arc::from(demo_page(&client)),
            client,
            dashboard: config.dashboard,
            origins: config.origins.clone(),
            slow_consumer: config.slow_consumer,
            max_backlog: config.server.max_backlog,
            limits: config.hub.decode_limits(),
            verifier,
            metrics,
            broker: broker_status,
            api: ApiKeys::new(&config.api_keys),
            api_limits: ApiLimits::for_payload(config.hub.max_payload, &config.hub.decode_limits()),
        };
        let env = fallback::Env {
            commands: commands.clone(),
            limits: shared.limits,
            max_backlog: shared.max_backlog,
            slow_consumer: shared.slow_consumer,
            verifier: shared.verifier.clone(),
        };
        if let Some(url) = &config.broker {
            relay::Relay::start(url, &sessions, env.clone())?;
        }
        let commands = Mutex::new(commands);
        let result = server.run(|worker| ServeHandler {
            worker,
            commands: commands
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            inbox: Arc::clone(&inboxes[worker]),
            shared: shared.clone(),
            channel_conns: HashMap::new(),
            dropping: HashMap::new(),
            taken: Vec::new(),
            stomp: stomp::StompConns::new(StompConfig {
                server: concat!("duplex/", env!("CARGO_PKG_VERSION")).into(),
                ..StompConfig::default()
            }),
            fallback: fallback::Fallback::new(Arc::clone(&sessions), worker, env.clone()),
            api_cors: HashMap::new(),
        });
        if let Some(relay) = sessions.relay.get() {
            relay.stop();
        }
        // The workers' senders are gone (the broker's threads may still hold some).
        let _ = commands
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(Command::Stop);
        drop(commands);
        if hub_thread.join().is_err() {
            return Err(io::Error::other("the hub thread panicked"));
        }
        result
    }
}

fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    crate::random_source()(&mut seed);
    u64::from_le_bytes(seed)
}

/// What the hub is told of one decoded command of a hub connection (a socket, a STOMP
/// connection or a session of the HTTP transports): with tokens required, only `hello {token}`
/// with a valid token goes through until one did.
fn admit(
    verifier: Option<&TokenVerifier>,
    conn: HubConn,
    standing: &mut Standing,
    message: ClientMessage,
) -> Command {
    let (Standing::NeedsToken, Some(verifier)) = (*standing, verifier) else {
        return Command::Message(conn, message);
    };
    let refused = |code, message: String, close| Command::Refused {
        conn,
        error: CommandError::new(None, code, message),
        close,
    };
    match message {
        ClientMessage::Hello {
            token: Some(token), ..
        } => match verifier.verify(&token) {
            Ok(claims) => {
                *standing = Standing::Ready;
                Command::Authenticated {
                    conn,
                    client: claims.sub,
                    namespaces: claims.ns,
                }
            }
            Err(e) => {
                debug!(?conn, "token refused: {e}");
                refused(ErrorCode::Unauthorized, e.to_string(), true)
            }
        },
        ClientMessage::Hello { token: None, .. } => refused(
            ErrorCode::Unauthorized,
            "this server requires `hello.token` (an HS256 JWT)".into(),
            true,
        ),
        other => Command::Refused {
            conn,
            error: CommandError::new(
                other.id().cloned(),
                ErrorCode::HelloRequired,
                "send `hello` with a token first",
            ),
            close: false,
        },
    }
}

#[derive(Debug, Clone)]
struct Shared {
    /// Where `/duplex-ws/` comes from.
    client: files::ClientFiles,
    /// The demo page, pointing at the client of `client`.
    page: Arc<[u8]>,
    /// `/dashboard` is served.
    dashboard: bool,
    origins: OriginPolicy,
    slow_consumer: SlowConsumer,
    max_backlog: usize,
    limits: DecodeLimits,
    /// Checks `hello.token` when `--jwt-secret` is set.
    verifier: Option<TokenVerifier>,
    metrics: Arc<ChannelMetrics>,
    /// The state of `--broker`, for /healthz and /metrics.
    broker: Option<Arc<BrokerStatus>>,
    /// `--api-key`: the HTTP API is served.
    api: Option<ApiKeys>,
    api_limits: ApiLimits,
}

/// Where a `duplex.v1` connection of a worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Tokens are required and none was accepted yet: only `hello {token}` is forwarded.
    NeedsToken,
    /// Every valid command goes to the hub (which refuses a second `hello`).
    Ready,
}

/// One worker's side of `duplex serve`.
struct ServeHandler {
    worker: usize,
    commands: Sender<Command>,
    inbox: Arc<Inbox>,
    shared: Shared,
    /// Connections of this worker speaking `duplex.v1` (the others echo).
    channel_conns: HashMap<ConnId, Standing>,
    /// Slow consumers: room → (first, last) seq dropped, reported once the output drains.
    dropping: HashMap<ConnId, BTreeMap<String, (u64, u64)>>,
    /// The inbox's contents, swapped out under the lock and handled without it.
    taken: Vec<(ConnId, Delivery)>,
    /// Connections of this worker speaking STOMP (also in `channel_conns`: they are hub
    /// connections).
    stomp: stomp::StompConns,
    /// Streams and polls of the HTTP transports held by this worker, and the node's sessions.
    fallback: fallback::Fallback,
    /// History reads of clients from another (allowed) origin, awaiting the hub's answer.
    api_cors: HashMap<ConnId, String>,
}

impl ServeHandler {
    fn conn(&self, id: ConnId) -> HubConn {
        HubConn {
            worker: self.worker,
            id,
        }
    }

    /// Decodes one frame of a `duplex.v1` connection and tells the hub what it is.
    fn command(&mut self, id: ConnId, text: &str) {
        let conn = self.conn(id);
        let message = match protocol::decode_limited(text, &self.shared.limits) {
            Ok(message) => message,
            Err(error) => {
                return self.tell(Command::Refused {
                    conn,
                    error,
                    close: false,
                });
            }
        };
        self.command_message(id, message);
    }

    /// Tells the hub one decoded command of a hub connection (`duplex.v1` or STOMP), checking
    /// `hello.token` first when tokens are required.
    fn command_message(&mut self, id: ConnId, message: ClientMessage) {
        let conn = self.conn(id);
        let Some(standing) = self.channel_conns.get_mut(&id) else {
            return;
        };
        let command = admit(self.shared.verifier.as_ref(), conn, standing, message);
        self.tell(command);
    }

    fn tell(&self, command: Command) {
        if self.commands.send(command).is_err() {
            warn!("the hub thread is gone");
        }
    }

    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        delivery: &channel::Delivery,
        len: usize,
        prepared: &mut PreparedMessage,
    ) {
        let Some(buffered) = ctx.buffered_amount(id) else {
            return; // closed meanwhile: the hub hears of it through `Closed`
        };
        let max = self.shared.max_backlog;
        let dropping = self.dropping.contains_key(&id);
        // Counted with the delivery itself, so that no kind of output, however large, takes a
        // member past its cap (room messages) or twice its cap (everything else). A member with
        // nothing buffered always gets its delivery, so a message above the cap still goes out.
        let after = buffered.saturating_add(len);
        if !dropping && (after <= max || buffered == 0) {
            if let Err(e) = ctx.send_prepared(id, prepared) {
                debug!(?id, "delivery not sent: {e}");
            }
            return;
        }
        match self.shared.slow_consumer {
            SlowConsumer::Close => self.cut_off(ctx, id, after),
            SlowConsumer::Gap => match delivery.room_seq() {
                Some((room, seq)) => {
                    self.shared
                        .metrics
                        .dropped_messages
                        .fetch_add(1, Ordering::Relaxed);
                    let rooms = self.dropping.entry(id).or_default();
                    if rooms.is_empty() {
                        ctx.watch_drain(id);
                    }
                    rooms
                        .entry(room.to_string())
                        .and_modify(|range| range.1 = seq)
                        .or_insert((seq, seq));
                }
                // Replies, acks and presence are small and cannot be recovered from history:
                // they are kept up to twice the cap, beyond which the member is cut off.
                None if after <= max.saturating_mul(2) => {
                    if let Err(e) = ctx.send_prepared(id, prepared) {
                        debug!(?id, "delivery not sent: {e}");
                    }
                }
                None => self.cut_off(ctx, id, after),
            },
        }
    }

    /// A hub delivery to a STOMP connection: its session turns it into frames. A STOMP reader
    /// with more than twice `--max-backlog` unsent is closed as a slow consumer (STOMP has no
    /// `gap`; the client resubscribes with `since`).
    /// `body` holds the STOMP body of the last room message, shared by the consecutive
    /// deliveries of a broadcast.
    fn deliver_stomp(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        delivery: &channel::Delivery,
        body: &mut Option<(channel::Delivery, MessageBody)>,
    ) {
        let Some(buffered) = ctx.buffered_amount(id) else {
            return;
        };
        if buffered > self.shared.max_backlog.saturating_mul(2) {
            return self.cut_off(ctx, id, buffered);
        }
        let shared = match (delivery, &*body) {
            (channel::Delivery::Message(_), Some((last, made))) if last.same(delivery) => {
                Some(made)
            }
            (channel::Delivery::Message(m), _) => {
                let made = MessageBody::of_json(&m.data);
                Some(&body.insert((delivery.clone(), made)).1)
            }
            _ => None,
        };
        for command in self.stomp.deliver(ctx, id, delivery, shared) {
            self.command_message(id, command);
        }
    }

    /// A delivery of the hub for a session of the HTTP transports (a detached id), or a
    /// worker's word that a session of this worker's stream or poll `id` has messages.
    fn session_delivery(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        delivery: Delivery,
        text: &mut Option<(channel::Delivery, Arc<str>)>,
    ) {
        match delivery {
            Delivery::Channel(delivery) => {
                let made = match &*text {
                    Some((last, made)) if last.same(&delivery) => Arc::clone(made),
                    _ => {
                        let made: Arc<str> = Arc::from(codec::json::encode(&delivery));
                        *text = Some((delivery.clone(), Arc::clone(&made)));
                        made
                    }
                };
                self.fallback.deliver(ctx, id, &delivery, &made);
            }
            Delivery::Close(code, reason) => self.fallback.close(ctx, id, code, reason),
            Delivery::Disconnect(code, reason) => self.fallback.close(ctx, id, code, &reason),
            Delivery::Flush => self.fallback.flush(ctx, id),
            Delivery::Relayed(answer) => self.fallback.relayed(ctx, id, answer),
            Delivery::Http(_) => {}
        }
    }

    /// Closes a slow consumer with 1008 (counted once: later deliveries find it closing).
    fn cut_off(&mut self, ctx: &mut Ctx<'_>, id: ConnId, buffered: usize) {
        if ctx.close(id, CloseCode::Policy, "slow consumer").is_ok() {
            debug!(?id, buffered, "slow consumer: closing");
            self.shared
                .metrics
                .slow_consumer_closes
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ServeHandler {
    /// Checks the key and parses an API request.
    fn api_call(
        &self,
        request: &Request,
        body: Result<&[u8], BodyError>,
    ) -> Result<api::ApiCall, ApiError> {
        let Some(keys) = &self.shared.api else {
            return Err(ApiError::new(404, "not_found", "the API is off"));
        };
        if !keys.verify(request.header("Authorization")) {
            return Err(ApiError::new(
                401,
                "unauthorized",
                "send `Authorization: Bearer KEY` with a key of --api-key",
            ));
        }
        let body = body.map_err(|e| match e {
            BodyError::TooLarge { length, limit } => ApiError::new(
                413,
                "too_large",
                format!("the body is {length} bytes, the limit is {limit}"),
            ),
            BodyError::BadLength => ApiError::new(400, "bad_message", "malformed Content-Length"),
            BodyError::Chunked => ApiError::new(
                411,
                "length_required",
                "send the body with Content-Length, not Transfer-Encoding",
            ),
        })?;
        duplex_core::channel::api::parse_request(
            request.method(),
            request.target(),
            body,
            &self.shared.api_limits,
        )
    }
}

/// `GET /api/rooms/NS/NAME/history` (short polling).
fn is_history_path(path: &str) -> bool {
    path.starts_with("/api/rooms/") && path.ends_with("/history")
}

impl ServeHandler {
    /// Short polling: a room's history read by a client (a browser, from an allowed origin),
    /// with a client token when tokens are required (its namespaces apply), not an API key.
    fn history_for_client(&mut self, ctx: &mut Ctx<'_>, id: ConnId, request: &Request) {
        let origin = request.origin().map(str::to_string);
        let cors = origin.as_deref();
        let refuse = |ctx: &mut Ctx<'_>, status, code: &'static str, message: &str| {
            let error = ApiError::new(status, code, message);
            respond_api(ctx, id, &ApiResponse::error(&error), cors);
        };
        if !self.shared.origins.allows(cors) {
            let message = format!(
                "origin {:?} is not allowed (see --allowed-origin)",
                cors.unwrap_or_default()
            );
            return refuse(ctx, 403, "origin", &message);
        }
        if request.method() == "OPTIONS" {
            let mut headers = vec![
                ("Access-Control-Allow-Methods", "GET, OPTIONS"),
                ("Access-Control-Allow-Headers", "Authorization"),
                ("Access-Control-Max-Age", "600"),
            ];
            if let Some(origin) = cors {
                headers.extend([
                    ("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Credentials", "true"),
                    ("Vary", "Origin"),
                ]);
            }
            let _ = ctx.respond_http(id, 204, &headers, b"");
            return;
        }
        let call = match duplex_core::channel::api::parse_request(
            request.method(),
            request.target(),
            b"",
            &self.shared.api_limits,
        ) {
            Ok(call) => call,
            Err(error) => return respond_api(ctx, id, &ApiResponse::error(&error), cors),
        };
        if let Some(verifier) = &self.shared.verifier {
            let token = request
                .header_str("Authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let Some(token) = token else {
                return refuse(
                    ctx,
                    401,
                    "unauthorized",
                    "send `Authorization: Bearer TOKEN` with a client token (as in hello.token)",
                );
            };
            let claims = match verifier.verify(token) {
                Ok(claims) => claims,
                Err(e) => return refuse(ctx, 401, "unauthorized", &e.to_string()),
            };
            let namespace = match &call {
                api::ApiCall::History { room, .. } => room.split('/').next().unwrap_or_default(),
                _ => "",
            };
            if claims
                .ns
                .as_ref()
                .is_some_and(|ns| !ns.iter().any(|n| n == namespace))
            {
                let message = format!("the token does not allow the namespace {namespace:?}");
                return refuse(ctx, 403, "unauthorized", &message);
            }
        }
        if let Some(origin) = origin {
            self.api_cors.insert(id, origin);
        }
        self.tell(Command::Api {
            conn: self.conn(id),
            call,
        });
    }
}

/// Writes an API answer (JSON) on its HTTP connection.
impl ServeHandler {
    /// `/dashboard` when API keys are set: for a key as a Bearer token or as the password of
    /// HTTP Basic authentication (which browsers ask for themselves on the 401's challenge).
    fn dashboard_with_key(&mut self, ctx: &mut Ctx<'_>, id: ConnId, request: &Request) {
        let allowed = self
            .shared
            .api
            .as_ref()
            .is_some_and(|keys| keys.verify_page(request.header("Authorization")));
        let result = if allowed {
            ctx.respond_http(
                id,
                200,
                &[("Content-Type", "text/html; charset=utf-8")],
                DASHBOARD_PAGE.as_bytes(),
            )
        } else {
            ctx.respond_http(
                id,
                401,
                &[
                    ("Content-Type", "text/plain; charset=utf-8"),
                    (
                        "WWW-Authenticate",
                        "Basic realm=\"duplex dashboard\", charset=\"UTF-8\"",
                    ),
                ],
                b"the dashboard needs a key of --api-key: as the password (any user name), or as `Authorization: Bearer KEY`\n",
            )
        };
        if let Err(e) = result {
            debug!(?id, "dashboard answer not sent: {e}");
        }
    }
}

fn respond_api(ctx: &mut Ctx<'_>, id: ConnId, response: &ApiResponse, cors: Option<&str>) {
    let mut headers = vec![("Content-Type", "application/json")];
    match response.allow {
        Some(allow) => headers.push(("Allow", allow)),
        None if response.status == 401 => headers.push(("WWW-Authenticate", "Bearer")),
        None => {}
    }
    if let Some(origin) = cors {
        headers.extend([
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]);
    }
    let result = ctx.respond_http(id, response.status, &headers, response.body.as_bytes());
    if let Err(e) = result {
        debug!(?id, "API answer not sent: {e}");
    }
}

impl Handler for ServeHandler {
    fn on_upgrade(&mut self, request: &Request) -> Decision {
        if !self.shared.origins.allows(request.origin()) {
            return Decision::Reject(
                403,
                format!(
                    "origin {:?} is not allowed (see --allowed-origin)\n",
                    request.origin().unwrap_or_default()
                ),
            );
        }
        match request.path() {
            "/ws" => {
                let offered = request.subprotocols();
                if offered.iter().any(|p| p == PROTOCOL) {
                    Decision::Accept(Accept::default().with_protocol(PROTOCOL))
                } else if let Some(version) = stomp::subprotocol(&offered) {
                    self.stomp.accepting(request);
                    Decision::Accept(Accept::default().with_protocol(version))
                } else {
                    Decision::Reject(
                        400,
                        format!(
                            "/ws requires the subprotocol {PROTOCOL}, or v12.stomp, v11.stomp or \
                             v10.stomp (Sec-WebSocket-Protocol)\n"
                        ),
                    )
                }
            }
            "/stomp" => {
                self.stomp.accepting(request);
                match stomp::subprotocol(&request.subprotocols()) {
                    Some(version) => Decision::Accept(Accept::default().with_protocol(version)),
                    None => Decision::Accept(Accept::default()),
                }
            }
            "/echo" => Decision::Accept(Accept::default()),
            other => Decision::Reject(
                404,
                format!(
                    "no WebSocket endpoint at {other}: use /ws ({PROTOCOL}), /stomp (STOMP) or \
                     /echo\n"
                ),
            ),
        }
    }

    fn on_http(&mut self, request: &Request) -> Option<HttpResponse> {
        match request.path() {
            "/" | "/index.html" => Some(HttpResponse {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: self.shared.page.to_vec(),
            }),
            "/dashboard" if self.shared.dashboard => Some(HttpResponse {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: DASHBOARD_PAGE.as_bytes().to_vec(),
            }),
            path if path.starts_with(files::PREFIX) => self.shared.client.serve(path),
            _ => None,
        }
    }

    fn http_body_limit(&mut self, request: &Request) -> Option<usize> {
        if fallback::is_fallback_path(request.path()) {
            return Some(fallback::MAX_POST_BODY);
        }
        if is_history_path(request.path()) {
            // Short polling by clients, with or without API keys.
            return Some(self.shared.api_limits.max_body);
        }
        self.shared.api.as_ref()?;
        if self.shared.dashboard && request.path() == "/dashboard" {
            // Behind the API keys: answered by `on_http_request`.
            return Some(0);
        }
        duplex_core::channel::api::is_api_path(request.path())
            .then_some(self.shared.api_limits.max_body)
    }

    fn on_http_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        request: &Request,
        body: Result<&[u8], BodyError>,
    ) {
        if request.path() == "/dashboard" {
            return self.dashboard_with_key(ctx, id, request);
        }
        if fallback::is_fallback_path(request.path()) {
            let origin = request.origin();
            if !self.shared.origins.allows(origin) {
                let body = serde_json::json!({
                    "code": "origin",
                    "message": format!(
                        "origin {:?} is not allowed (see --allowed-origin)",
                        origin.unwrap_or_default()
                    ),
                })
                .to_string();
                let _ = ctx.respond_http(
                    id,
                    403,
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                );
                return;
            }
            return self.fallback.request(ctx, id, request, body, origin);
        }
        let with_key = self
            .shared
            .api
            .as_ref()
            .is_some_and(|keys| keys.verify(request.header("Authorization")));
        if is_history_path(request.path()) && !with_key {
            return self.history_for_client(ctx, id, request);
        }
        match self.api_call(request, body) {
            Ok(call) => self.tell(Command::Api {
                conn: self.conn(id),
                call,
            }),
            Err(error) => respond_api(ctx, id, &ApiResponse::error(&error), None),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let stomp = self.stomp.upgrading.take();
        let is_stomp = stomp.is_some();
        if let Some(token) = stomp {
            self.stomp.open(id, ctx.protocol(id).as_deref(), token);
        }
        if is_stomp || ctx.protocol(id).as_deref() == Some(PROTOCOL) {
            let standing = if self.shared.verifier.is_some() {
                Standing::NeedsToken
            } else {
                Standing::Ready
            };
            self.channel_conns.insert(id, standing);
            self.tell(Command::Open(self.conn(id)));
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message) {
        if self.stomp.contains(id) {
            let bytes: &[u8] = match &message {
                Message::Text(text) => text.as_bytes(),
                Message::Binary(bytes) => bytes,
            };
            for command in self.stomp.receive(ctx, id, bytes) {
                self.command_message(id, command);
            }
            return;
        }
        if !self.channel_conns.contains_key(&id) {
            if let Err(e) = ctx.send(id, &message) {
                debug!(?id, "echo not sent: {e}");
            }
            return;
        }
        match message {
            Message::Text(text) => self.command(id, text.as_str()),
            Message::Binary(_) => {
                let _ = ctx.close(
                    id,
                    CloseCode::Unsupported,
                    "duplex.v1 messages are JSON text frames",
                );
            }
        }
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _closed: &Closed) {
        self.dropping.remove(&id);
        self.stomp.closed(id);
        if self.channel_conns.remove(&id).is_some() {
            self.tell(Command::Closed(self.conn(id)));
        }
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        {
            let mut inbox = self
                .inbox
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::swap(&mut *inbox, &mut self.taken);
        }
        let mut taken = std::mem::take(&mut self.taken);
        // A broadcast reaches this worker as consecutive deliveries of one shared value: it is
        // encoded, prepared (and compressed) once for all of them.
        let mut current: Option<(channel::Delivery, usize, PreparedMessage)> = None;
        // Likewise, the STOMP body of a room message is made once.
        let mut body: Option<(channel::Delivery, MessageBody)> = None;
        // And the text of a broadcast for the sessions of the HTTP transports.
        let mut session_text: Option<(channel::Delivery, Arc<str>)> = None;
        for (id, delivery) in taken.drain(..) {
            if id.is_detached() || matches!(delivery, Delivery::Flush | Delivery::Relayed(_)) {
                self.session_delivery(ctx, id, delivery, &mut session_text);
                continue;
            }
            match delivery {
                Delivery::Channel(delivery) if self.stomp.contains(id) => {
                    self.deliver_stomp(ctx, id, &delivery, &mut body)
                }
                Delivery::Channel(delivery) => {
                    let (len, prepared) = match &mut current {
                        Some((shared, len, prepared)) if shared.same(&delivery) => (*len, prepared),
                        _ => {
                            let text = codec::json::encode(&delivery);
                            let len = text.len();
                            let prepared = PreparedMessage::text(text);
                            let entry = current.insert((delivery.clone(), len, prepared));
                            (entry.1, &mut entry.2)
                        }
                    };
                    self.deliver(ctx, id, &delivery, len, prepared);
                }
                Delivery::Close(code, reason) => {
                    let _ = ctx.close(id, code, reason);
                }
                Delivery::Http(response) => {
                    let cors = self.api_cors.remove(&id);
                    respond_api(ctx, id, &response, cors.as_deref())
                }
                Delivery::Disconnect(code, reason) => {
                    let _ = ctx.close(id, code, &reason);
                }
                Delivery::Flush | Delivery::Relayed(_) => {}
            }
        }
        self.taken = taken;
    }

    fn on_http_closed(&mut self, _ctx: &mut Ctx<'_>, id: ConnId) {
        self.api_cors.remove(&id);
        self.fallback.closed(id);
    }

    fn next_timer(&self) -> Option<std::time::Instant> {
        match (self.stomp.next_timer(), self.fallback.next_timer()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _now: std::time::Instant) {
        for (id, command) in self.stomp.on_timer(ctx) {
            self.command_message(id, command);
        }
        self.fallback.on_timer(ctx);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if self.fallback.is_attached(id) {
            return self.fallback.flush(ctx, id);
        }
        let Some(rooms) = self.dropping.remove(&id) else {
            return;
        };
        for (room, (from, to)) in rooms {
            self.tell(Command::Dropped {
                conn: self.conn(id),
                room,
                from,
                to,
            });
        }
    }

    fn render_health(&self, out: &mut String) {
        if let Some(broker) = &self.shared.broker {
            out.push_str("broker: redis ");
            out.push_str(broker.state());
            out.push('\n');
        }
    }

    fn render_metrics(&self, out: &mut String) {
        self.fallback.sessions.metrics.render(out);
        if let Some(broker) = &self.shared.broker {
            self.shared.metrics.set_broker(BrokerState {
                kind: "redis",
                up: broker.state() == "up",
            });
        }
        self.shared.metrics.render(out);
        if let Some(broker) = &self.shared.broker {
            broker.render(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_core::channel::protocol::ServerMessage;

    #[test]
    fn deliveries_name_room_and_seq_of_messages_only() {
        let message = channel::Delivery::Message(Arc::new(channel::RoomMessage {
            room: "app/a".into(),
            epoch: "e".into(),
            seq: 7,
            from: "c1".into(),
            data: r#"{"seq":99,"room":"x"}"#.into(),
        }));
        assert_eq!(message.room_seq(), Some(("app/a", 7)));
        let ack = channel::Delivery::reply(ServerMessage::Ack {
            id: duplex_core::channel::protocol::Id::Number(3),
            seq: 4,
        });
        assert_eq!(ack.room_seq(), None);
    }
}
