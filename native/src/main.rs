//! The `duplex` command: `duplex serve` (the real-time `duplex.v1` server), `duplex echo` (the
//! echo server), `duplex connect` (a wscat-like client).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use duplex::connect::{self, ConnectArgs};
use duplex::serve::{BrokerUrl, ChannelServer, OriginPolicy, ServeConfig, SlowConsumer};
use duplex::server::{Echo, Server, ServerConfig, ShutdownHandle};
use duplex::tls::TlsAcceptor;
use duplex_core::channel::HubConfig;
use duplex_core::deflate::DeflateConfig;
use duplex_core::limits::Config;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(name = "duplex", version, about = "Duplex WebSocket server and client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The real-time server: `/ws` speaks duplex.v1 (rooms, presence, acks, history), `/echo`
    /// echoes, `/` serves a demo chat page, plus `/healthz`, `/metrics` and (--dashboard)
    /// `/dashboard`.
    Serve(Box<ServeArgs>),
    /// Echo every message back to its sender with the same type, on any path.
    Echo(ServerArgs),
    /// Connect to a WebSocket server: stdin lines are sent, messages are printed.
    Connect(ConnectArgs),
}

/// Options shared by every server mode.
#[derive(Args, Debug)]
struct ServerArgs {
    /// Address to listen on (port 0 picks a free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9001", value_name = "ADDR")]
    listen: SocketAddr,

    /// Worker threads, each with its own event loop [default: available cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// WebSocket connections held at most; beyond it upgrades get HTTP 503.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    max_connections: usize,

    /// Seconds a client has to complete its upgrade request (slowloris guard).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    handshake_timeout: f64,

    /// Close a connection that sent nothing for this many seconds (0: never).
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    idle_timeout: f64,

    /// Largest message (and frame) accepted, in bytes; larger ones close with 1009
    /// [default: 64 MiB for `duplex echo`; for `duplex serve`, the largest valid duplex.v1
    /// command: the larger of --max-payload and --max-presence, plus 16 KiB].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,

    /// Ping every connection this often, in seconds (0: never).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    ping_interval: f64,

    /// Close a connection after this many unanswered pings (with --ping-interval).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_missed_pongs: u32,

    /// Unsent bytes per connection above which it is not read until it drains.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    max_backlog: usize,

    /// Kernel send buffer (SO_SNDBUF) of each connection, in bytes [default: the kernel's
    /// auto-tuning]. Bounds the kernel memory a stalled peer holds beyond --max-backlog.
    #[arg(long, value_name = "BYTES")]
    socket_send_buffer: Option<usize>,

    /// permessage-deflate: accept compression offers (`on`) or decline them (`off`).
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = ["on", "off"])]
    deflate: String,

    /// Largest LZ77 window of the server's compressor, in bits (9..15).
    #[arg(long, default_value_t = 15, value_name = "BITS", value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_window_bits: u8,

    /// Largest window the server asks compressing clients to use, in bits (9..15).
    #[arg(long, default_value_t = 15, value_name = "BITS", value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_client_window_bits: u8,

    /// Keep the server's compression context between messages: smaller output for repetitive
    /// traffic, but ~300 KiB per connection for the connection's lifetime. Without it each
    /// message is compressed on its own and the compressor is released right after.
    #[arg(long)]
    deflate_context_takeover: bool,

    /// Ask clients to compress each message on its own (less server memory for inflating).
    #[arg(long)]
    deflate_client_no_context_takeover: bool,

    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = 32, value_name = "BYTES")]
    deflate_threshold: usize,

    /// zlib compression level (1 fastest .. 9 smallest).
    #[arg(long, default_value_t = 6, value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=9))]
    deflate_level: u8,

    /// Seconds a shutdown (SIGINT/SIGTERM) waits for peers to answer the 1001 close.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    drain_timeout: f64,

    /// PEM certificate chain (leaf first): the port then speaks only TLS (wss://, https://).
    /// SIGHUP reloads it and --tls-key for new connections.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, RSA or EC).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// `duplex serve` options: the server's, plus the channel hub's.
#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// Messages kept per room for recovery after a reconnect.
    #[arg(long, default_value_t = 100, value_name = "N")]
    history_size: usize,

    /// Seconds a message stays in a room's history.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    history_ttl: f64,

    /// Presence updates of one client within this many milliseconds are coalesced (last wins).
    #[arg(long, default_value_t = 100, value_name = "MS")]
    presence_window_ms: u64,

    /// Rooms with more members than this do not broadcast join/leave/presence events and
    /// answer `joined` with an empty member list (large live feeds).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    presence_limit: usize,

    /// Largest `publish.data`, in bytes of compact JSON.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    max_payload: usize,

    /// Largest presence value (`join.presence`, `presence.presence`), in bytes of compact JSON.
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    max_presence: usize,

    /// Rooms one connection may be in at once; more joins get `too_many_rooms`.
    #[arg(long, default_value_t = 100, value_name = "N")]
    max_rooms_per_connection: usize,

    /// Rooms the server holds at once (with members or history); joining a new room beyond it
    /// gets `too_many_rooms`.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    max_rooms: usize,

    /// Heartbeat announced to clients (`welcome.heartbeat_ms`); the server also pings every
    /// connection this often and drops one that misses two pongs (this replaces
    /// --ping-interval and --max-missed-pongs).
    #[arg(long, default_value_t = 30_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..))]
    heartbeat_ms: u64,

    /// `send` commands (messages to one client) a connection may make per second, and at once;
    /// beyond it they are refused with `rate_limited`.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    send_rate: u32,

    /// What to do with a member whose unsent output exceeds --max-backlog: `gap` drops its room
    /// messages and then tells it to recover them from history; `close` closes it with 1008.
    #[arg(long, default_value = "gap", value_name = "gap|close", value_parser = ["gap", "close"])]
    slow_consumer: String,

    /// Origins allowed to open /ws and /echo (repeat the flag; default: any). Requests without
    /// an Origin header (non-browser clients) are allowed.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,

    /// Require `hello.token`: an HS256 JWT signed with this secret (claims: `sub` = client id,
    /// `ns` = namespaces it may join, `exp`). Prefer the environment variable over the flag.
    #[arg(
        long,
        env = "DUPLEX_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,

    /// The duplex-ws package directory (wasm/js, built by wasm/build.sh), served under
    /// /duplex-ws/ instead of the copy embedded at build time; the demo page at / runs the WASM
    /// client from there.
    #[arg(long, value_name = "DIR")]
    client_dir: Option<std::path::PathBuf>,

    /// Serve /dashboard: a live view of /metrics (connections, messages/s, rooms, slow-consumer
    /// drops, broker). Like /metrics it has no authentication: enable it only where /metrics
    /// may be seen.
    #[arg(long)]
    dashboard: bool,
    /// Serve one set of rooms from several nodes: seq numbers, history, room epochs and
    /// publish ids live in this Redis (redis://HOST:PORT[/DB]) and every node subscribes to
    /// the rooms its members are in. Without it everything is in this process.
    #[arg(long, env = "DUPLEX_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// With --broker: bytes of room messages from Redis this node may queue for its hub
    /// thread. Beyond it the node drops room messages (its members get `gap` and recover from
    /// Redis's history) instead of growing.
    #[arg(long, default_value_t = duplex::serve::MAX_PUBSUB_QUEUE, value_name = "BYTES")]
    broker_queue: usize,

    /// Serve the HTTP API under /api/ (publish, broadcast, disconnect, rooms, presence,
    /// history; docs/API.md) to requests with `Authorization: Bearer KEY`. Repeat the flag (or
    /// separate keys with commas) to accept several keys while rotating them. Without it every
    /// /api/ path answers 404. Prefer the environment variable over the flag.
    #[arg(
        long = "api-key",
        env = "DUPLEX_API_KEY",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
}

impl ServeArgs {
    fn config(&self) -> Result<ServeConfig, String> {
        if self.max_presence == 0 {
            return Err("--max-presence must be at least 1".into());
        }
        if self.max_rooms_per_connection == 0 || self.max_rooms == 0 {
            return Err("--max-rooms-per-connection and --max-rooms must be at least 1".into());
        }
        let hub = HubConfig::default()
            .with_max_payload(self.max_payload)
            .with_max_presence(self.max_presence);
        // Frames larger than any valid command are refused while they arrive (1009), not
        // buffered and then refused.
        let mut server = self.server.config(hub.max_command())?;
        let heartbeat = Duration::from_millis(self.heartbeat_ms);
        server.connection = server
            .connection
            .with_ping_interval(Some(heartbeat))
            .with_max_missed_pongs(2);
        if self.history_size == 0 {
            return Err("--history-size must be at least 1".into());
        }
        if self.max_payload == 0 {
            return Err("--max-payload must be at least 1".into());
        }
        if self.jwt_secret.as_deref().is_some_and(str::is_empty) {
            return Err("--jwt-secret must not be empty".into());
        }
        for origin in &self.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "--allowed-origin {origin:?}: expected scheme://host[:port], e.g. https://app.example.com"
                ));
            }
        }
        let hub = hub
            .with_max_rooms_per_connection(self.max_rooms_per_connection)
            .with_max_rooms(self.max_rooms)
            .with_history_size(self.history_size)
            .with_history_ttl(seconds(self.history_ttl, "--history-ttl")?)
            .with_presence_window(Duration::from_millis(self.presence_window_ms))
            .with_max_payload(self.max_payload)
            .with_presence_limit(self.presence_limit)
            .with_send_rate(self.send_rate)
            .with_heartbeat(heartbeat);
        let broker = match &self.broker {
            Some(url) => Some(BrokerUrl::parse(url)?),
            None => None,
        };
        if self.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err("--api-key must not be empty".into());
        }
        if self.broker_queue == 0 {
            return Err("--broker-queue must be at least 1".into());
        }
        Ok(ServeConfig {
            api_keys: self.api_keys.iter().map(|k| k.trim().to_string()).collect(),
            broker,
            broker_queue: self.broker_queue,
            fallback: Default::default(),
            server,
            hub,
            slow_consumer: if self.slow_consumer == "close" {
                SlowConsumer::Close
            } else {
                SlowConsumer::Gap
            },
            origins: OriginPolicy::new(self.allowed_origins.clone()),
            jwt_secret: self.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            client_dir: match &self.client_dir {
                Some(dir) if !dir.join("index.js").is_file() => {
                    return Err(format!(
                        "--client-dir {}: no index.js there (expected the duplex-ws package, wasm/js)",
                        dir.display()
                    ));
                }
                dir => dir.clone(),
            },
            dashboard: self.dashboard,
        })
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a number of seconds >= 0, got {value}"))
}

fn optional_seconds(value: f64, flag: &str) -> Result<Option<Duration>, String> {
    Ok(Some(seconds(value, flag)?).filter(|d| !d.is_zero()))
}

impl ServerArgs {
    /// The server's configuration; `max_message_size` when --max-message-size is not given.
    fn config(&self, max_message_size: usize) -> Result<ServerConfig, String> {
        let max_message_size = self.max_message_size.unwrap_or(max_message_size);
        if max_message_size == 0 {
            return Err("--max-message-size must be at least 1".into());
        }
        if self.max_backlog == 0 {
            return Err("--max-backlog must be at least 1".into());
        }
        let handshake = seconds(self.handshake_timeout, "--handshake-timeout")?;
        if handshake.is_zero() {
            return Err("--handshake-timeout must be above 0".into());
        }
        let deflate = (self.deflate == "on").then_some(DeflateConfig {
            server_no_context_takeover: !self.deflate_context_takeover,
            client_no_context_takeover: self.deflate_client_no_context_takeover,
            server_max_window_bits: self.deflate_window_bits,
            client_max_window_bits: self.deflate_client_window_bits,
            level: self.deflate_level,
            threshold: self.deflate_threshold,
        });
        let connection = Config::default()
            .with_deflate(deflate)
            .with_max_message_size(max_message_size)
            .with_max_frame_size(max_message_size)
            .with_handshake_timeout(Some(handshake))
            .with_idle_timeout(optional_seconds(self.idle_timeout, "--idle-timeout")?)
            .with_ping_interval(optional_seconds(self.ping_interval, "--ping-interval")?)
            .with_max_missed_pongs(self.max_missed_pongs);
        let defaults = ServerConfig::default();
        Ok(ServerConfig {
            listen: self.listen,
            threads: self.threads.map_or(defaults.threads, usize::from),
            max_connections: self.max_connections,
            max_backlog: self.max_backlog,
            drain_timeout: seconds(self.drain_timeout, "--drain-timeout")?,
            send_buffer_size: self.socket_send_buffer,
            connection,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsAcceptor::from_files(cert, key)?),
                _ => None,
            },
        })
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// SIGINT/SIGTERM start a graceful shutdown; a second signal exits at once. SIGHUP reloads
/// the TLS certificate and key (new connections get them; a bad pair keeps the old one).
fn handle_signals(stop: ShutdownHandle, tls: Option<TlsAcceptor>) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGHUP {
                    match tls.as_ref().map(TlsAcceptor::reload) {
                        Some(Ok(())) => info!("SIGHUP: TLS certificate and key reloaded"),
                        Some(Err(e)) => {
                            error!("SIGHUP: TLS reload failed, keeping the old pair: {e}")
                        }
                        None => info!("SIGHUP ignored: no TLS certificate to reload"),
                    }
                    continue;
                }
                seen += 1;
                if seen > 1 {
                    error!("second signal {signal}: exiting now");
                    std::process::exit(1);
                }
                info!("signal {signal}: draining");
                stop.shutdown();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

fn run_echo(args: &ServerArgs) -> Result<(), String> {
    let config = args.config(64 << 20)?;
    let threads = config.threads;
    let server = Server::bind(config.clone())
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    handle_signals(server.shutdown_handle(), config.tls.clone())?;
    let addr = server.local_addr();
    info!(%addr, threads, "echo server listening");
    let ws = if config.tls.is_some() { "wss" } else { "ws" };
    println!("duplex echo listening on {ws}://{addr}/");
    server
        .run(|_| Echo)
        .map_err(|e| format!("server failed: {e}"))?;
    info!("stopped");
    Ok(())
}

fn run_serve(args: &ServeArgs) -> Result<(), String> {
    let config = args.config()?;
    let (threads, listen) = (config.server.threads, config.server.listen);
    let tls = config.server.tls.clone();
    let (http, ws) = if tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let server =
        ChannelServer::bind(config).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    handle_signals(server.shutdown_handle(), tls)?;
    let addr = server.local_addr();
    info!(%addr, threads, "duplex.v1 server listening");
    println!(
        "duplex serve listening on {http}://{addr}/ (WebSocket: {ws}://{addr}/ws, {ws}://{addr}/echo)"
    );
    server.run().map_err(|e| format!("server failed: {e}"))?;
    info!("stopped");
    Ok(())
}

/// Parses the command line, with the settings of a `--config` file under it.
fn parse_cli() -> Cli {
    let cmd = duplex::config_file::add_config_arg(Cli::command(), &["serve", "echo"]);
    let argv: Vec<_> = std::env::args_os().collect();
    let subcommand = argv.get(1).map(|s| s.to_string_lossy().into_owned());
    let argv = duplex::config_file::expand(&cmd, argv).unwrap_or_else(|message| {
        eprintln!("duplex {}: {message}", subcommand.unwrap_or_default());
        std::process::exit(2);
    });
    let matches = cmd.get_matches_from(argv);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli();
    match cli.command {
        Command::Serve(args) => {
            init_tracing();
            match run_serve(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("duplex serve: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Echo(args) => {
            init_tracing();
            match run_echo(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("duplex echo: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Connect(args) => ExitCode::from(connect::run(args) as u8),
    }
}
