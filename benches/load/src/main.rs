//! `duplex-load`: a load generator for WebSocket echo servers on this machine.
//!
//! ```text
//! duplex-load --url ws://127.0.0.1:9001/ --connections 100 --size 1024 --in-flight 1 \
//!             --duration 5 --warmup 1 --server-pid "$PID" --json
//! ```
//!
//! Modes (`--mode`):
//! - `echo` (default): every connection keeps `--in-flight` messages outstanding, checks each
//!   echo byte for byte (a mismatch ends the run with a non-zero exit) and records its round
//!   trip. Reports messages per second and latency percentiles.
//! - `connect`: `--connections` slots each open a connection, complete the handshake, close
//!   and start over. Reports handshakes per second and handshake latency.
//! - `idle`: open `--connections` connections and hold them without traffic; with
//!   `--server-pid`, reports the server's resident-memory growth per connection.
//! - `fanout`: against `duplex serve` (`--url ws://127.0.0.1:PORT/ws`, subprotocol
//!   `duplex.v1`): `--members` connections join `--room`, then a publisher sends `--messages`
//!   chat messages one at a time. Reports the time from each publish to the last (and the
//!   median) member reading it, and fails on any message lost, repeated or out of order.
//!   Several nodes of one cluster: `--url` once per node (members spread round-robin, the
//!   publisher on the first), `--server-pid` once per node in the same order; `--rate` paces the
//!   publishes instead of waiting for each to be delivered; `--metrics` reads each node's Redis
//!   round trips; `--protocol socketio` loads the Socket.IO peer
//!   (`benches/peers/node/socketio-room.mjs`) with the same checks; `--protocol uws` a bare
//!   pub/sub server (`benches/peers/node/uws-pubsub.mjs`: members subscribed on open, each
//!   message relayed as it is), the publish number in the payload.
//!
//! `wss://` URLs are loaded over TLS (rustls, the `ring` provider, TLS 1.3 or 1.2): `--ca PEM`
//! names the certificate to trust (the server's self-signed certificate or its CA); the
//! certificate must carry the URL's host (e.g. an IP address entry 127.0.0.1). Every connection
//! makes a full handshake (no session resumption), so `connect` measures the whole TLS cost.
//!
//! With `--server-pid` every mode also reports the server's CPU time over the measured window
//! (per round trip or handshake) and its current and peak RSS. Clients are `duplex-core`
//! connections on mio, one event loop per `--threads` (default 1).

mod client;
mod echo;
mod fanout;
mod handshake;
mod idle;
mod pool;
mod procfs;
mod report;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use duplex_core::{ClientRequest, Config};

use crate::client::{Target, TlsTarget};
use crate::echo::EchoSpec;
use crate::pool::{Control, Tally, Window};
use crate::report::{Latency, ServerFigures, Summary};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Send, wait for the echo, verify it, record the round trip, send the next.
    Echo,
    /// Open, complete the handshake, close, repeat.
    Connect,
    /// Open the connections and hold them idle.
    Idle,
    /// Members join a duplex.v1 room; one publisher broadcasts to them, one message at a time.
    Fanout,
}

#[derive(Parser, Debug)]
#[command(
    name = "duplex-load",
    version,
    about = "Load generator for WebSocket echo servers on 127.0.0.1"
)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,

    /// Server URL: ws:// or wss:// to 127.0.0.1 (or localhost). Fanout: once per node of a
    /// cluster; members are spread over them round-robin, the publisher is on the first.
    #[arg(long, value_name = "URL", required = true)]
    url: Vec<String>,

    /// wss://: trust this PEM certificate (the server's, or the CA that signed it).
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,

    /// Connections (echo, idle) or concurrent connect cycles (connect).
    #[arg(long, default_value_t = 1, value_name = "N")]
    connections: usize,

    /// Message size in bytes (echo).
    #[arg(long, default_value_t = 20, value_name = "BYTES")]
    size: usize,

    /// Send binary messages (the default).
    #[arg(long, conflicts_with = "text")]
    binary: bool,

    /// Send text messages.
    #[arg(long)]
    text: bool,

    /// Offer permessage-deflate (not in fanout mode) with duplex-core's default client
    /// settings (window 15, zlib level 6, messages of 32 bytes and more compressed, the
    /// context-takeover mode the server picks), so the server's figures include compressing and
    /// inflating. Off by default: the comparisons run without compression.
    #[arg(long)]
    deflate: bool,

    /// Messages outstanding per connection (echo).
    #[arg(long, default_value_t = 1, value_name = "K")]
    in_flight: usize,

    /// Length of the measured window, in seconds (idle: how long connections are held).
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    duration: f64,

    /// Load applied before the measured window, in seconds (not used by idle).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    warmup: f64,

    /// The server's process id, to report its CPU time and memory (fanout: once per --url, in
    /// the same order).
    #[arg(long, value_name = "PID")]
    server_pid: Vec<u32>,

    /// Event-loop threads; connections are spread over them.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,

    /// Print one JSON line with every figure on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,

    /// A name for the server under test, repeated in the output.
    #[arg(long, default_value = "", value_name = "NAME")]
    label: String,

    /// Room members, besides the publisher (fanout).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    members: usize,

    /// Messages published, one at a time (fanout).
    #[arg(long, default_value_t = 20, value_name = "K")]
    messages: usize,

    /// The room the members join (fanout).
    #[arg(long, default_value = "app/fanout", value_name = "ROOM")]
    room: String,

    /// Publishes per second (fanout); 0: each publish waits until the previous one reached
    /// every member.
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    rate: f64,

    /// Publishes not yet read by every member, at most (fanout; default: 1, or unbounded with
    /// --rate).
    #[arg(long, value_name = "K")]
    window: Option<usize>,

    /// Read each node's /metrics (duplex_broker_round_trips_total) before the joins, after them
    /// and after the publishes (fanout).
    #[arg(long)]
    metrics: bool,

    /// Seconds between every member joined and the first publish (fanout): the members read
    /// the join events meanwhile, and --metrics counts the joins' round trips at its end.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    settle: f64,

    /// The servers' protocol (fanout): duplex.v1, Socket.IO 4 over WebSocket
    /// (URL ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket), or a bare pub/sub
    /// server (uws: each connection subscribed when it opens, each text message relayed as it is
    /// to every connection).
    #[arg(long, value_enum, default_value_t = WireProtocol::Duplex)]
    protocol: WireProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WireProtocol {
    /// duplex.v1 (`duplex serve`'s /ws).
    Duplex,
    /// Socket.IO 4: Engine.IO v4 over WebSocket (benches/peers/node/socketio-room.mjs).
    Socketio,
    /// Bare pub/sub, no envelope (benches/peers/node/uws-pubsub.mjs, uWebSockets.js).
    Uws,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Connect => "connect",
            Mode::Idle => "idle",
            Mode::Fanout => "fanout",
        }
    }
}

/// Parses the URL and refuses anything but a server on 127.0.0.1; wss:// needs `ca`.
fn target(url: &str, size: usize, ca: Option<&Path>, deflate: bool) -> Result<Target, String> {
    let request = ClientRequest::from_url(url).map_err(|e| format!("--url {url}: {e}"))?;
    let tls = match (request.secure, ca) {
        (true, Some(ca)) => Some(tls_target(ca, &request.hostname)?),
        (true, None) => {
            return Err("--url: wss:// needs --ca PEM (the server's certificate or its CA)".into());
        }
        (false, Some(_)) => return Err("--ca is for wss:// URLs".into()),
        (false, None) => None,
    };
    match request.hostname.as_str() {
        "127.0.0.1" | "localhost" => {}
        other => {
            return Err(format!(
                "--url: refusing to connect to {other}: duplex-load only loads servers on this \
                 machine, at 127.0.0.1"
            ));
        }
    }
    let limit = size.saturating_add(1024).max(64 << 20);
    let config = Config::default()
        .with_max_message_size(limit)
        .with_max_frame_size(limit)
        .with_handshake_timeout(Some(Duration::from_secs(30)))
        .with_close_timeout(Duration::from_secs(2))
        .with_deflate(deflate.then(duplex_core::deflate::DeflateConfig::default));
    Ok(Target {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, request.port)),
        request,
        config: Arc::new(config),
        epoch: Instant::now(),
        tls,
    })
}

/// A client configuration trusting only the certificates of `ca`, ALPN http/1.1, no session
/// resumption (each connection pays for a full handshake, as a new visitor does).
fn tls_target(ca: &Path, host: &str) -> Result<TlsTarget, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--ca {}: no PEM certificate in the file",
            ca.display()
        ));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("--ca {}: not a usable certificate: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("--url: {host:?} is not a valid TLS server name"))?;
    Ok(TlsTarget {
        config: Arc::new(config),
        name,
        negotiated: Arc::new(OnceLock::new()),
    })
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.mode != Mode::Fanout && (args.url.len() != 1 || args.server_pid.len() > 1) {
        return Err("--url and --server-pid are given once, except in fanout mode".into());
    }
    if args.mode == Mode::Fanout
        && !args.server_pid.is_empty()
        && args.server_pid.len() != args.url.len()
    {
        return Err("fanout: give --server-pid once per --url, in the same order".into());
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err("--rate must be a number of publishes per second >= 0".into());
    }
    if !(args.settle.is_finite() && (0.0..=60.0).contains(&args.settle)) {
        return Err("--settle must be a number of seconds from 0 to 60".into());
    }
    if args.window == Some(0) {
        return Err("--window must be at least 1".into());
    }
    let connections = if args.mode == Mode::Fanout {
        if args.members == 0 || args.messages == 0 {
            return Err("--members and --messages must be at least 1".into());
        }
        fanout::check_room(&args.room)?;
        args.members + 1
    } else {
        args.connections
    };
    if connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if args.mode == Mode::Echo && args.in_flight == 0 {
        return Err("--in-flight must be at least 1".into());
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a number of seconds above 0".into());
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err("--warmup must be a number of seconds >= 0".into());
    }
    let needed = connections as u64 + 64;
    if let Some(limit) = procfs::open_files_limit()
        && needed > limit
    {
        return Err(format!(
            "{connections} connections need about {needed} open files but `ulimit -n` is \
             {limit}: raise it (ulimit -n {needed}) or open fewer"
        ));
    }
    Ok(())
}

/// Sleeps until `t`, or until a worker has failed.
fn sleep_until(t: Instant, failed: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= t || failed.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((t - now).min(Duration::from_millis(20)));
    }
}

fn read_pid(pid: u32) -> Result<(u64, procfs::Memory), String> {
    let describe = |e: std::io::Error| format!("cannot read /proc/{pid} (--server-pid): {e}");
    Ok((
        procfs::cpu_ticks(Some(pid)).map_err(describe)?,
        procfs::memory(Some(pid)).map_err(describe)?,
    ))
}

fn run(args: &Args) -> Result<Summary, String> {
    check_args(args)?;
    let mode = args.mode;
    let threads = args.threads.min(args.connections);
    let target = target(&args.url[0], args.size, args.ca.as_deref(), args.deflate)?;
    let ticks_per_second = procfs::clock_ticks_per_second() as f64;
    let server = args.server_pid.first().copied();
    let mut figures = match server {
        Some(pid) => {
            let (_, memory) = read_pid(pid)?;
            Some(ServerFigures {
                rss_before: (mode == Mode::Idle).then_some(memory.rss),
                ..ServerFigures::default()
            })
        }
        None => None,
    };
    let spec = EchoSpec::new(args.size, args.text, args.in_flight);
    let open_deadline =
        Instant::now() + Duration::from_secs(10) + Duration::from_millis(args.connections as u64);
    let failed = AtomicBool::new(false);
    let warmup = if mode == Mode::Idle { 0.0 } else { args.warmup };
    let duration = Duration::from_secs_f64(args.duration);

    let (tally, client_ticks, other_ticks) = std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut window_txs = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        let (spec, target, failed) = (&spec, &target, &failed);
        for w in 0..threads {
            let indices: Vec<usize> = (w..args.connections).step_by(threads).collect();
            let (window_tx, window_rx) = mpsc::channel();
            window_txs.push(window_tx);
            let control = Control {
                ready: ready_tx.clone(),
                window: window_rx,
            };
            let handle = std::thread::Builder::new()
                .name(format!("load-{w}"))
                .spawn_scoped(scope, move || {
                    let result = match mode {
                        Mode::Echo => echo::worker(spec, target, &indices, open_deadline, control),
                        Mode::Connect => handshake::worker(target, &indices, control),
                        Mode::Idle => idle::worker(target, &indices, open_deadline, control),
                        Mode::Fanout => unreachable!("fanout runs in run_fanout"),
                    };
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    result
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
            handles.push(handle);
        }
        drop(ready_tx);
        let join = |handles: Vec<std::thread::ScopedJoinHandle<'_, Result<Tally, String>>>| {
            let mut total = Tally::new();
            let mut error = None;
            for handle in handles {
                match handle.join() {
                    Ok(Ok(tally)) => total.merge(tally),
                    Ok(Err(e)) => {
                        error.get_or_insert(e);
                    }
                    Err(_) => {
                        error.get_or_insert_with(|| "a worker thread panicked".to_string());
                    }
                }
            }
            error.map_or(Ok(total), Err)
        };

        for _ in 0..threads {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    // Dropping the window senders calls the other workers off.
                    drop(window_txs);
                    join(handles)?;
                    return Err("a worker stopped before the run started".to_string());
                }
            }
        }
        if let (Some(pid), Some(f)) = (server, figures.as_mut())
            && mode == Mode::Idle
        {
            std::thread::sleep(Duration::from_secs(1));
            f.rss_after_open = Some(read_pid(pid)?.1.rss);
        }
        let start = Instant::now() + Duration::from_secs_f64(warmup);
        let window = Window {
            start,
            end: start + duration,
        };
        for tx in &window_txs {
            let _ = tx.send(window);
        }
        sleep_until(window.start, failed);
        let server_start = server.map(read_pid).transpose()?;
        let client_start = procfs::cpu_ticks(None).unwrap_or(0);
        let machine_start = procfs::machine_busy_ticks().unwrap_or(0);
        sleep_until(window.end, failed);
        let server_end = server.map(read_pid).transpose()?;
        let client_end = procfs::cpu_ticks(None).unwrap_or(0);
        let machine_end = procfs::machine_busy_ticks().unwrap_or(0);
        let tally = join(handles)?;
        let server_ticks = match (server_start, server_end) {
            (Some((t0, _)), Some((t1, _))) => t1.saturating_sub(t0),
            _ => 0,
        };
        let client_ticks = client_end.saturating_sub(client_start);
        let other_ticks = machine_end
            .saturating_sub(machine_start)
            .saturating_sub(client_ticks + server_ticks);
        if let (Some(f), Some((t0, _)), Some((t1, memory))) =
            (figures.as_mut(), server_start, server_end)
        {
            f.cpu_seconds = t1.saturating_sub(t0) as f64 / ticks_per_second;
            f.rss_bytes = memory.rss;
            f.hwm_bytes = memory.hwm;
        }
        Ok((tally, client_ticks, other_ticks))
    })?;
    let percent = |ticks: u64| ticks as f64 / ticks_per_second * 100.0 / args.duration;

    Ok(Summary {
        mode: mode.name(),
        label: args.label.clone(),
        url: args.url[0].clone(),
        connections: args.connections,
        size: args.size,
        text: args.text,
        in_flight: args.in_flight,
        threads,
        duration: args.duration,
        warmup,
        ops: tally.ops,
        errors: tally.errors,
        first_error: tally.first_error.clone(),
        latency: Latency::from_histogram(&tally.latency),
        server: figures,
        client_cpu_percent: percent(client_ticks),
        other_cpu_percent: percent(other_ticks),
        tls: target
            .tls
            .as_ref()
            .map(|t| t.negotiated.get().cloned().unwrap_or_default()),
    })
}

fn run_fanout(args: &Args) -> Result<fanout::FanoutSummary, String> {
    check_args(args)?;
    let spec = fanout::FanoutSpec {
        room: args.room.clone(),
        members: args.members,
        messages: args.messages,
        threads: args.threads.min(args.members),
        run: format!("{:016x}", client::seed(usize::MAX)),
        protocol: match args.protocol {
            WireProtocol::Duplex => fanout::Protocol::Duplex,
            WireProtocol::Socketio => fanout::Protocol::SocketIo,
            WireProtocol::Uws => fanout::Protocol::Uws,
        },
        rate: args.rate,
        window: args
            .window
            .unwrap_or(if args.rate > 0.0 { usize::MAX } else { 1 }),
        nodes: args.url.len(),
        metrics: args.metrics,
        settle: Duration::from_secs_f64(args.settle),
    };
    let mut targets = Vec::with_capacity(args.url.len());
    for url in &args.url {
        let mut t = target(url, 64 << 10, args.ca.as_deref(), false)?;
        // One origin of time for every node's connections.
        if let Some(first) = targets.first() {
            let first: &client::Target = first;
            t.epoch = first.epoch;
        }
        targets.push(t);
    }
    for &pid in &args.server_pid {
        read_pid(pid)?;
    }
    fanout::run(&spec, &targets, &args.server_pid, &args.label, &args.url)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.mode == Mode::Fanout {
        return match run_fanout(&args) {
            Ok(summary) => {
                if args.json {
                    eprint!("{}", summary.human());
                    println!("{}", summary.json());
                } else {
                    print!("{}", summary.human());
                }
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("duplex-load: fanout: {message}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(summary) => {
            if args.json {
                eprint!("{}", summary.human());
                println!("{}", summary.json());
            } else {
                print!("{}", summary.human());
            }
            if summary.mode == "connect" && summary.ops == 0 {
                eprintln!("duplex-load: no handshake completed");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("duplex-load: {message}");
            ExitCode::FAILURE
        }
    }
}
