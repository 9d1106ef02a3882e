//! The server event loop: one mio `Poll` per worker thread, each with its own SO_REUSEPORT
//! listener, connection slab and timer heap.
//!
//! Per connection the loop is edge-triggered and keeps its own readiness flags:
//!
//! 1. **read** until `WouldBlock` (or, on a plain socket, a read shorter than asked for),
//!    into the worker's scratch buffer or, for the rest of a large frame, straight into the
//!    core's receive buffer (`recv_buf` + `commit`), unless the connection is paused by
//!    backpressure;
//! 2. **dispatch** the core's events to the [`Handler`] (upgrade decisions, messages, closes)
//!    and answer plain HTTP (`/healthz`, `/metrics`);
//! 3. **write** the core's output until `WouldBlock`; WRITABLE interest is registered only
//!    while output is pending;
//! 4. **settle**: resume a paused connection once its backlog drained, drop the socket once the
//!    core says the connection is over, and reschedule the connection's `poll_timeout()` in the
//!    worker's [`TimerHeap`].
//!
//! An idle server blocks in `epoll_wait` with the earliest timer as its timeout and uses no CPU.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use duplex_core::close::CloseCode;
use duplex_core::deflate::DeflateConfig;
use duplex_core::error::{Error as CoreError, SendError};
use duplex_core::handshake::server::{Accept, Request};
use duplex_core::limits::Config;
use duplex_core::message::{Closed, Event, Message, PreparedMessage};
use duplex_core::{Connection, ConnectionState};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use socket2::{Domain, Socket, Type};
use tracing::{debug, error, info, warn};

use crate::metrics::{Metrics, WorkerMetrics};
use crate::timer::{Deadline, TimerHeap};
use crate::tls::{TlsAcceptor, Transport};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Output written per read batch before reading more, so a fast sender cannot make one
/// connection's output grow while the loop keeps reading.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Work on one connection before the worker turns to its other connections: bytes read plus
/// bytes of messages handed to the application (decompressed), so that a client that sends
/// without pause (large frames back to back, or small compressed frames that inflate to large
/// messages) gets its turn like everyone else instead of holding the worker until its socket
/// runs dry. Messages already received wait in the core; the rest is read on the next pass.
const READ_BUDGET: usize = 256 * 1024;

/// Pieces of output written by one vectored write at most.
const MAX_PIECES: usize = 16;

/// Size of each worker's read buffer.
const SCRATCH_SIZE: usize = 64 * 1024;

/// A frame missing at least this many bytes is read straight into the core's buffer.
const LEND_THRESHOLD: usize = SCRATCH_SIZE / 2;

/// Everything the event loop needs to know besides the application.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (all workers share it).
    pub listen: SocketAddr,
    /// Worker threads, each with its own listener (SO_REUSEPORT) and `Poll`.
    pub threads: usize,
    /// WebSocket connections held at most (all workers together). Requests beyond it are
    /// answered with HTTP 503 before the upgrade.
    pub max_connections: usize,
    /// Unsent output per connection above which the server stops reading that connection until
    /// it drains below half of it.
    pub max_backlog: usize,
    /// How long a graceful shutdown waits for peers to answer the 1001 close.
    pub drain_timeout: Duration,
    /// `SO_SNDBUF` of accepted sockets; `None` keeps the kernel's auto-tuning, which can let a
    /// stalled peer hold megabytes of kernel memory on top of `max_backlog`.
    pub send_buffer_size: Option<usize>,
    /// Limits and timers of each connection (handshake timeout, message size, heartbeat...).
    /// The handshake timeout covers the TLS handshake too.
    pub connection: Config,
    /// Speak TLS only (wss://, https://) with this certificate; `None`: plaintext only.
    pub tls: Option<TlsAcceptor>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 100_000,
            max_backlog: 4 << 20,
            drain_timeout: Duration::from_secs(5),
            send_buffer_size: None,
            tls: None,
            connection: Config::default()
                .with_deflate(Some(DeflateConfig::default()))
                .with_ping_interval(Some(Duration::from_secs(30)))
                .with_max_missed_pongs(3),
        }
    }
}

/// Identifies a connection within its worker. Ids are never reused while the worker runs, so a
/// stale id held by an application addresses nothing rather than another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    key: usize,
    serial: u64,
}

impl ConnId {
    /// An id that names no connection of any worker: an application's own endpoint beside
    /// them (e.g. a session of HTTP requests), distinct for each `serial`. Sending to it fails.
    pub fn detached(serial: u64) -> ConnId {
        ConnId {
            key: usize::MAX,
            serial,
        }
    }

    /// Made by [`ConnId::detached`].
    pub fn is_detached(&self) -> bool {
        self.key == usize::MAX
    }
}

/// What the application answers to an upgrade request.
#[derive(Debug)]
pub enum Decision {
    /// Complete the handshake (choose a subprotocol, add headers).
    Accept(Accept),
    /// Refuse with an HTTP status and a body that says why.
    Reject(u16, String),
}

/// A plain HTTP response for a request that is not an upgrade.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Why the body of a request taken with [`Handler::http_body_limit`] was not read; the
/// connection is closed after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// `Content-Length` is above the limit.
    TooLarge { length: u64, limit: usize },
    /// `Content-Length` is malformed, or given twice with different values.
    BadLength,
    /// `Transfer-Encoding` (chunked bodies are not read): send `Content-Length`.
    Chunked,
}

/// The application run by the event loop; one instance per worker thread.
pub trait Handler {
    /// An upgrade request arrived (already validated against RFC 6455).
    fn on_upgrade(&mut self, request: &Request) -> Decision {
        let _ = request;
        Decision::Accept(Accept::default())
    }

    /// A plain HTTP request other than `/healthz` and `/metrics`; `None` answers 404.
    fn on_http(&mut self, request: &Request) -> Option<HttpResponse> {
        let _ = request;
        None
    }

    /// A plain HTTP request the application answers itself, with its body: `Some(limit)` (the
    /// largest body it reads) has the request and its body handed to
    /// [`Handler::on_http_request`] once the body arrived. The request is answered, then or
    /// later, with [`Ctx::respond_http`]; the connection is kept alive for the next request
    /// (pipelined or not) unless the client asked otherwise. `None` (the default): answered by
    /// [`Handler::on_http`].
    fn http_body_limit(&mut self, request: &Request) -> Option<usize> {
        let _ = request;
        None
    }

    /// A request taken with [`Handler::http_body_limit`] is complete (or its body cannot be
    /// read). Answer it with [`Ctx::respond_http`]; until then the connection reads nothing
    /// more than one further request head, and the handshake timeout bounds the wait.
    fn on_http_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        request: &Request,
        body: Result<&[u8], BodyError>,
    ) {
        let _ = (request, body);
        let _ = ctx.respond_http(
            id,
            404,
            &[("Content-Type", "text/plain; charset=utf-8")],
            b"not found\n",
        );
    }

    /// A plain HTTP connection the handler still had a hold on ended: a response started with
    /// [`Ctx::respond_stream`], or a request taken with [`Handler::http_body_limit`] whose
    /// answer was still due (the client left, or the wait timed out). `id` is dead afterwards.
    fn on_http_closed(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = (ctx, id);
    }

    /// The handshake completed.
    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = (ctx, id);
    }

    /// A complete message arrived.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message);

    /// The connection ended (reported once per opened connection); `id` is dead afterwards.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, closed: &Closed) {
        let _ = (ctx, id, closed);
    }

    /// Another thread called [`WorkerWaker::wake`] for this worker (e.g. deliveries from a
    /// shared hub are waiting in a queue the handler owns).
    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// The output of a connection watched with [`Ctx::watch_drain`] fell to half of
    /// `max_backlog` or less. The watch is removed; watch again to hear of the next drain.
    fn on_drained(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = (ctx, id);
    }

    /// The earliest moment the handler wants [`Handler::on_timer`] (timers of a protocol it
    /// runs above WebSocket, e.g. STOMP heart-beats). Asked after every turn of the event loop.
    fn next_timer(&self) -> Option<Instant> {
        None
    }

    /// [`Handler::next_timer`] is reached.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let _ = (ctx, now);
    }

    /// Appends lines to the `/healthz` page (after `ok`), e.g. the state of a dependency.
    fn render_health(&self, out: &mut String) {
        let _ = out;
    }

    /// Appends application metrics (Prometheus text format) to the `/metrics` page.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

/// The echo application: every message goes back to its sender with the same type.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message) {
        if let Err(e) = ctx.send_owned(id, message) {
            debug!(?id, "echo not sent: {e}");
        }
    }
}

struct Conn {
    stream: Transport,
    core: Connection,
    serial: u64,
    /// The earliest entry this connection has in the timer heap.
    scheduled: Option<Deadline>,
    /// After the core terminated with output still pending, or while it lingers: drop the
    /// socket by then anyway.
    kill_at: Option<Deadline>,
    /// The socket may have bytes to read (edge-triggered: cleared on `WouldBlock`/EOF, or on
    /// a plain socket's short read, see [`Worker::read`]).
    readable: bool,
    paused: bool,
    eof: bool,
    write_failed: bool,
    opened: bool,
    in_dirty: bool,
    /// In the worker's `unfinished` list: its read budget ran out with bytes still to read.
    unfinished: bool,
    /// The flags read less often, in one byte (memory per idle connection is a goal).
    flags: Flags,
    /// Output counted in the worker's `output_buffered` gauge.
    counted_output: usize,
    /// A plain HTTP request taken by [`Handler::http_body_limit`], not answered yet.
    http: Option<Box<HttpWait>>,
}

/// A connection's flags that are read less often than once per read, one bit each.
#[derive(Debug, Clone, Copy, Default)]
struct Flags(u8);

impl Flags {
    /// The peer's FIN or an error was reported: read until `WouldBlock` or EOF, since no
    /// further edge will announce them.
    const READ_TO_BLOCK: u8 = 1;
    /// Registered for WRITABLE as well as READABLE.
    const WRITABLE_INTEREST: u8 = 1 << 1;
    /// Ended on a failure (a protocol error, a refused request) or a close handshake: the peer
    /// may still be sending, so the socket lingers (see [`Worker::settle`]) instead of closing
    /// at once.
    const LINGER: u8 = 1 << 2;
    /// Lingering: the FIN is sent and input is read and discarded until the peer's FIN.
    const LINGERING: u8 = 1 << 3;
    /// Accepted above `--max-connections`: an upgrade is refused with 503.
    const OVER_LIMIT: u8 = 1 << 4;
    /// Report [`Handler::on_drained`] once the output falls to half of `max_backlog`.
    const DRAIN_WATCH: u8 = 1 << 5;
    /// Answered with [`Ctx::respond_stream`]: the handler hears of its end.
    const STREAMING: u8 = 1 << 6;

    fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }
}

/// A request whose body is awaited, or whose answer is.
struct HttpWait {
    request: Request,
    /// The body's length.
    length: usize,
    /// The body arrived and was handed to the handler.
    delivered: bool,
    /// After the answer, wait for the next request on the connection.
    keep_alive: bool,
}

/// Access to the worker's connections from inside [`Handler`] callbacks.
pub struct Ctx<'a> {
    conns: &'a mut Slab<Conn>,
    dirty: &'a mut Vec<usize>,
    metrics: &'a WorkerMetrics,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl Ctx<'_> {
    fn conn(&mut self, id: ConnId) -> Result<&mut Conn, SendError> {
        match self.conns.get_mut(id.key) {
            Some(c) if c.serial == id.serial => Ok(c),
            _ => Err(SendError::NotOpen),
        }
    }

    fn mark(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id.key)
            && !c.in_dirty
        {
            c.in_dirty = true;
            self.dirty.push(id.key);
        }
    }

    /// Counts a queued message of `len` payload bytes and schedules the connection's write.
    fn queued(&mut self, id: ConnId, len: usize) {
        WorkerMetrics::add(&self.metrics.messages_out, 1);
        WorkerMetrics::add(&self.metrics.bytes_out, len as u64);
        self.mark(id);
    }

    /// Queues a message to a connection of this worker.
    pub fn send(&mut self, id: ConnId, message: &Message) -> Result<(), SendError> {
        self.conn(id)?.core.send(message)?;
        self.queued(id, message.len());
        Ok(())
    }

    /// Queues a message given away: a large payload goes out as it is, without a copy (see
    /// [`Connection::send_owned`]).
    pub fn send_owned(&mut self, id: ConnId, message: Message) -> Result<(), SendError> {
        let len = message.len();
        self.conn(id)?.core.send_owned(message)?;
        self.queued(id, len);
        Ok(())
    }

    /// Queues a message prepared once for many connections (see
    /// [`Connection::send_prepared`]): a broadcast is compressed once per compressor setting
    /// instead of once per connection.
    pub fn send_prepared(
        &mut self,
        id: ConnId,
        message: &mut PreparedMessage,
    ) -> Result<(), SendError> {
        self.conn(id)?.core.send_prepared(message)?;
        self.queued(id, message.len());
        Ok(())
    }

    /// Asks for one [`Handler::on_drained`] call once the connection's output falls to half of
    /// `max_backlog` or less.
    pub fn watch_drain(&mut self, id: ConnId) {
        if let Ok(conn) = self.conn(id) {
            conn.flags.set(Flags::DRAIN_WATCH, true);
            self.mark(id);
        }
    }

    /// Answers the request handed to [`Handler::on_http_request`] (a body of its own, with
    /// `Content-Length`).
    pub fn respond_http(
        &mut self,
        id: ConnId,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), SendError> {
        let conn = self.conn(id)?;
        let wait = conn.http.take().ok_or(SendError::NotOpen)?;
        if wait.keep_alive && wait.delivered {
            conn.core
                .respond_and_continue(status, headers, body, wait.length)?;
        } else {
            conn.core.respond(status, headers, body)?;
        }
        self.mark(id);
        Ok(())
    }

    /// Answers the request handed to [`Handler::on_http_request`] with a body written over
    /// time by [`Ctx::write_stream`] (no `Content-Length`; the connection ends with the body,
    /// by [`Ctx::end_stream`] or when the client leaves, reported by
    /// [`Handler::on_http_closed`]). Its output counts against `max_backlog` like a
    /// WebSocket's ([`Ctx::buffered_amount`], [`Ctx::watch_drain`]).
    pub fn respond_stream(
        &mut self,
        id: ConnId,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Result<(), SendError> {
        let conn = self.conn(id)?;
        if conn.http.is_none() {
            return Err(SendError::NotOpen);
        }
        conn.core.respond_streaming(status, headers)?;
        conn.http = None;
        conn.flags.set(Flags::STREAMING, true);
        self.mark(id);
        Ok(())
    }

    /// Queues more of a body started by [`Ctx::respond_stream`].
    pub fn write_stream(&mut self, id: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.conn(id)?.core.send_body(data)?;
        self.queued(id, data.len());
        Ok(())
    }

    /// Ends a body started by [`Ctx::respond_stream`] (the connection closes once it is
    /// written; [`Handler::on_http_closed`] follows).
    pub fn end_stream(&mut self, id: ConnId) -> Result<(), SendError> {
        self.conn(id)?.core.end_body()?;
        self.mark(id);
        Ok(())
    }

    /// Lets the request handed to [`Handler::on_http_request`] wait up to `timeout` from now
    /// for its answer instead of the handshake timeout (a held long poll).
    pub fn hold_http(&mut self, id: ConnId, timeout: Duration) -> Result<(), SendError> {
        let conn = self.conn(id)?;
        if conn.http.is_none() {
            return Err(SendError::NotOpen);
        }
        conn.core.hold_request(timeout)?;
        self.mark(id);
        Ok(())
    }

    /// Starts the close handshake with a connection.
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.conn(id)?.core.close(code, reason)?;
        self.mark(id);
        Ok(())
    }

    /// Output queued for a connection and not yet taken by its socket.
    pub fn buffered_amount(&mut self, id: ConnId) -> Option<usize> {
        self.conn(id).ok().map(|c| c.core.buffered_amount())
    }

    /// The negotiated subprotocol of a connection.
    pub fn protocol(&mut self, id: ConnId) -> Option<String> {
        self.conn(id).ok()?.core.protocol().map(str::to_owned)
    }
}

/// Stops a running server from another thread (signal handler, test).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    wakers: Arc<Vec<Waker>>,
}

impl ShutdownHandle {
    /// Stops accepting, closes every connection with 1001 and lets `run` return once they are
    /// gone or the drain timeout passed.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        for waker in self.wakers.iter() {
            if let Err(e) = waker.wake() {
                error!("cannot wake a worker for shutdown: {e}");
            }
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Wakes one worker's event loop from another thread; see [`Server::worker_wakers`].
#[derive(Clone, Debug)]
pub struct WorkerWaker {
    wakers: Arc<Vec<Waker>>,
    index: usize,
}

impl WorkerWaker {
    pub fn wake(&self) {
        if let Err(e) = self.wakers[self.index].wake() {
            error!(worker = self.index, "cannot wake a worker: {e}");
        }
    }
}

/// A bound server, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    local_addr: SocketAddr,
    workers: Vec<(Poll, TcpListener)>,
    metrics: Arc<Metrics>,
    shutdown: ShutdownHandle,
}

/// `send` flags for the last bytes before the FIN: `MSG_MORE` holds a short segment back until
/// `close` appends the FIN to it (Linux); `MSG_NOSIGNAL` as for every write.
#[cfg(target_os = "linux")]
const SEND_LAST_FLAGS: libc::c_int = libc::MSG_MORE | libc::MSG_NOSIGNAL;
#[cfg(not(target_os = "linux"))]
const SEND_LAST_FLAGS: libc::c_int = 0;

/// Linux copies a listening socket's `TCP_NODELAY` and `SO_SNDBUF` to every socket it
/// accepts, so they are set once here instead of with two `setsockopt` calls per connection.
const OPTIONS_INHERITED: bool = cfg!(target_os = "linux");

fn bind_listener(addr: SocketAddr, send_buffer_size: Option<usize>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if OPTIONS_INHERITED {
        socket.set_tcp_nodelay(true)?;
        if let Some(bytes) = send_buffer_size {
            socket.set_send_buffer_size(bytes)?;
        }
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Server {
    /// Binds one listener per worker (all on the same port) and prepares their `Poll`s.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        let threads = config.threads.max(1);
        let mut workers = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        let mut addr = config.listen;
        for _ in 0..threads {
            let listener = bind_listener(addr, config.send_buffer_size)?;
            // With port 0 the first bind picks the port; the others join it.
            addr = listener.local_addr()?;
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKER)?);
            workers.push((poll, listener));
        }
        Ok(Server {
            metrics: Arc::new(Metrics::new(threads)),
            local_addr: addr,
            config,
            workers,
            shutdown: ShutdownHandle {
                flag: Arc::new(AtomicBool::new(false)),
                wakers: Arc::new(wakers),
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// One waker per worker, in worker order: another thread calls [`WorkerWaker::wake`] to
    /// have [`Handler::on_wake`] run on that worker.
    pub fn worker_wakers(&self) -> Vec<WorkerWaker> {
        (0..self.shutdown.wakers.len())
            .map(|index| WorkerWaker {
                wakers: Arc::clone(&self.shutdown.wakers),
                index,
            })
            .collect()
    }

    /// Runs the workers until a shutdown completes. `make_handler(i)` builds worker `i`'s
    /// application.
    pub fn run<H, F>(self, make_handler: F) -> io::Result<()>
    where
        H: Handler,
        F: Fn(usize) -> H + Sync,
    {
        let Server {
            config,
            workers,
            metrics,
            shutdown,
            ..
        } = self;
        let config = Arc::new(config);
        let core_config = Arc::new(config.connection.clone());
        let epoch = Instant::now();
        std::thread::scope(|scope| {
            let mut handles = Vec::new();
            let make_handler = &make_handler;
            for (index, (poll, listener)) in workers.into_iter().enumerate() {
                let (config, core_config) = (Arc::clone(&config), Arc::clone(&core_config));
                let (metrics, shutdown) = (Arc::clone(&metrics), shutdown.clone());
                // The worker is built on its own thread: the handler need not be `Send`.
                let handle = std::thread::Builder::new()
                    .name(format!("duplex-worker-{index}"))
                    .spawn_scoped(scope, move || {
                        Worker {
                            index,
                            poll,
                            listener: Some(listener),
                            conns: Slab::new(),
                            timers: TimerHeap::new(),
                            handler: make_handler(index),
                            config,
                            core_config,
                            metrics,
                            shutdown,
                            epoch,
                            now: Duration::ZERO,
                            dirty: Vec::new(),
                            unfinished: Vec::new(),
                            drain_deadline: None,
                            next_serial: 0,
                            scratch: vec![0; SCRATCH_SIZE],
                            budget: READ_BUDGET,
                        }
                        .run()
                    })?;
                handles.push(handle);
            }
            let mut result = Ok(());
            for handle in handles {
                match handle.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        error!("worker stopped: {e}");
                        shutdown.shutdown();
                        result = Err(e);
                    }
                    Err(_) => {
                        shutdown.shutdown();
                        result = Err(io::Error::other("a worker thread panicked"));
                    }
                }
            }
            result
        })
    }
}

struct Worker<H> {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    timers: TimerHeap,
    handler: H,
    config: Arc<ServerConfig>,
    core_config: Arc<Config>,
    metrics: Arc<Metrics>,
    shutdown: ShutdownHandle,
    epoch: Instant,
    now: Duration,
    dirty: Vec<usize>,
    /// Connections whose read budget ran out: read again, in turn, after the next poll (which
    /// then does not wait).
    unfinished: Vec<(usize, u64)>,
    drain_deadline: Option<Duration>,
    next_serial: u64,
    scratch: Vec<u8>,
    /// What is left of [`READ_BUDGET`] for the connection being serviced.
    budget: usize,
}

impl<H: Handler> Worker<H> {
    fn run(mut self) -> io::Result<()> {
        if let Some(listener) = &mut self.listener {
            self.poll
                .registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(1024);
        debug!(worker = self.index, "worker started");
        loop {
            self.now = self.epoch.elapsed();
            let mut wake_at = self.timers.next_deadline();
            if let Some(d) = self.drain_deadline {
                wake_at = Some(wake_at.map_or(d, |w| w.min(d)));
            }
            if let Some(at) = self.handler.next_timer() {
                let d = at.saturating_duration_since(self.epoch);
                wake_at = Some(wake_at.map_or(d, |w| w.min(d)));
            }
            let timeout = if self.unfinished.is_empty() {
                wake_at.map(|at| at.saturating_sub(self.now))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = self.epoch.elapsed();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        let mut ctx = Ctx {
                            conns: &mut self.conns,
                            dirty: &mut self.dirty,
                            metrics: self.metrics.worker(self.index),
                        };
                        self.handler.on_wake(&mut ctx);
                    }
                    Token(key) => {
                        let Some(conn) = self.conns.get_mut(key) else {
                            continue;
                        };
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            conn.readable = true;
                        }
                        if event.is_read_closed() || event.is_error() {
                            conn.flags.set(Flags::READ_TO_BLOCK, true);
                        }
                        self.service(key);
                    }
                }
            }
            // One more turn for each connection that still had bytes to read, after everyone
            // the poll reported.
            for (key, serial) in std::mem::take(&mut self.unfinished) {
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                if conn.serial != serial {
                    continue;
                }
                conn.unfinished = false;
                self.service(key);
            }
            if self.shutdown.is_shutting_down() && self.drain_deadline.is_none() {
                self.start_drain();
            }
            self.fire_timers();
            let now = Instant::now();
            if self.handler.next_timer().is_some_and(|at| at <= now) {
                let mut ctx = Ctx {
                    conns: &mut self.conns,
                    dirty: &mut self.dirty,
                    metrics: self.metrics.worker(self.index),
                };
                self.handler.on_timer(&mut ctx, now);
            }
            self.flush_dirty();
            if let Some(deadline) = self.drain_deadline {
                if self.conns.is_empty() {
                    debug!(worker = self.index, "drained");
                    return Ok(());
                }
                if self.now >= deadline {
                    info!(
                        worker = self.index,
                        remaining = self.conns.len(),
                        "drain timeout: dropping the remaining connections"
                    );
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.remove(key);
                    }
                    return Ok(());
                }
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.add(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOMEM: the pending connections stay queued; the next
                    // arrival retries. Never a busy loop.
                    warn!(worker = self.index, "accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add(&mut self, stream: TcpStream, peer: SocketAddr) {
        let metrics = &self.metrics;
        metrics.accepted_total.fetch_add(1, Ordering::Relaxed);
        let held = metrics.tcp_connections.fetch_add(1, Ordering::Relaxed);
        let max = self.config.max_connections;
        if held >= max.saturating_mul(2).saturating_add(64) {
            // Far beyond the limit: not even worth a 503's memory.
            metrics.tcp_connections.fetch_sub(1, Ordering::Relaxed);
            metrics.rejected_full_total.fetch_add(1, Ordering::Relaxed);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if !OPTIONS_INHERITED {
            if let Err(e) = stream.set_nodelay(true) {
                debug!(%peer, "TCP_NODELAY: {e}");
            }
            if let Some(bytes) = self.config.send_buffer_size
                && let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(bytes)
            {
                debug!(%peer, "SO_SNDBUF: {e}");
            }
        }
        let mut stream = match &self.config.tls {
            None => Transport::Plain(stream),
            Some(acceptor) => match acceptor.accept() {
                Ok(tls) => Transport::tls_server(stream, tls),
                Err(e) => {
                    error!(%peer, "cannot start TLS: {e}");
                    metrics.tcp_connections.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.poll
                .registry()
                .register(stream.socket(), Token(key), Interest::READABLE)
        {
            warn!(%peer, "cannot register connection: {e}");
            metrics.tcp_connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.next_serial += 1;
        entry.insert(Conn {
            stream,
            core: Connection::server(Arc::clone(&self.core_config), self.now),
            serial: self.next_serial,
            scheduled: None,
            kill_at: None,
            readable: true,
            paused: false,
            eof: false,
            write_failed: false,
            opened: false,
            flags: Flags(if held >= max { Flags::OVER_LIMIT } else { 0 }),
            counted_output: 0,
            in_dirty: false,
            unfinished: false,
            http: None,
        });
        self.service(key);
    }

    /// Read, dispatch, write and settle one connection.
    fn service(&mut self, key: usize) {
        self.budget = READ_BUDGET;
        loop {
            self.read(key);
            self.dispatch(key);
            self.http_body(key);
            self.write(key);
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.paused && conn.core.buffered_amount() <= self.config.max_backlog / 2 {
                conn.paused = false;
                if conn.readable && !conn.eof {
                    continue;
                }
            }
            break;
        }
        self.settle(key);
    }

    fn read(&mut self, key: usize) {
        let now = self.now;
        let max_backlog = self.config.max_backlog;
        loop {
            let conn = &mut self.conns[key];
            if !conn.readable || conn.paused || conn.eof {
                return;
            }
            if self.budget == 0 {
                self.later(key);
                return;
            }
            if conn.flags.has(Flags::LINGERING) {
                match conn.stream.read(&mut self.scratch) {
                    Ok(0) => conn.eof = true,
                    Ok(n) => {
                        self.budget = self.budget.saturating_sub(n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // `WouldBlock` waits for the next edge; any other error ends it like EOF.
                    Err(e) => conn.eof = e.kind() != io::ErrorKind::WouldBlock,
                }
                conn.readable = false;
                return;
            }
            if let Some(wait) = &conn.http
                && conn.core.received_len() >= wait.length + self.core_config.max_head_size()
            {
                // Its body and the next head are in: nothing more until the answer.
                return;
            }
            // Reads land in the worker's scratch buffer and the core copies what arrived, so an
            // idle connection never holds a read buffer and a read that finds nothing costs no
            // allocation. The rest of a large frame is read straight into the core's buffer.
            let lend = conn.core.frame_remaining() >= LEND_THRESHOLD;
            let (result, asked) = if lend {
                let buf = conn.core.recv_buf();
                let asked = buf.len();
                (conn.stream.read(buf), asked)
            } else {
                (conn.stream.read(&mut self.scratch), self.scratch.len())
            };
            // A plain socket that returned less than asked for is drained: epoll (edge-
            // triggered) reports the next bytes that arrive, so the read that would only say
            // `WouldBlock` is skipped (one syscall per message less). Not for TLS, whose reads
            // return plaintext, nor once the peer's FIN or an error was reported: their edge
            // has passed, so those are read until `WouldBlock` or EOF.
            let drained = matches!(result, Ok(n) if n > 0 && n < asked)
                && !conn.flags.has(Flags::READ_TO_BLOCK)
                && matches!(conn.stream, Transport::Plain(_));
            match result {
                Ok(0) => {
                    conn.readable = false;
                    conn.eof = true;
                    conn.core.receive_eof(now);
                    return;
                }
                Ok(n) => {
                    self.budget = self.budget.saturating_sub(n);
                    if lend {
                        conn.core.commit(now, n);
                    } else {
                        conn.core.receive(now, &self.scratch[..n]);
                    }
                    self.dispatch(key);
                    let conn = &mut self.conns[key];
                    if conn.core.buffered_amount() >= FLUSH_THRESHOLD {
                        self.write(key);
                    }
                    let conn = &mut self.conns[key];
                    if conn.core.buffered_amount() > max_backlog {
                        conn.paused = true;
                        self.metrics
                            .backpressure_pauses_total
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(peer = %Peer(&conn.stream), "backpressure: reading paused");
                        return;
                    }
                    if drained {
                        conn.readable = false;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    if lend {
                        // Lets the core release the spare room it lent.
                        conn.core.commit(now, 0);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(tls) = conn.stream.tls_error() {
                        if !conn.opened {
                            self.metrics.record_handshake_failure("tls");
                        }
                        warn!(peer = %Peer(&conn.stream), "TLS failed: {tls}");
                    } else {
                        debug!(peer = %Peer(&conn.stream), "read failed: {e}");
                    }
                    conn.readable = false;
                    conn.eof = true;
                    conn.core.receive_eof(now);
                    return;
                }
            }
        }
    }

    fn write(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.write_failed {
            return;
        }
        // The last bytes of a plain connection that ends (the close frame, a refusal), with
        // nothing left unread: they wait in the kernel for the FIN that `remove` sends right
        // after, so both leave in one segment instead of two.
        let last = cfg!(target_os = "linux") && conn.core.is_terminated() && !conn.readable;
        loop {
            let out = conn.core.output();
            if out.is_empty() {
                break;
            }
            let result = match &mut conn.stream {
                // Payloads sent owned are pieces of their own: one writev for all of them.
                Transport::Plain(socket) if out.len() < conn.core.buffered_amount() => {
                    let mut pieces: [&[u8]; MAX_PIECES] = [&[]; MAX_PIECES];
                    let n = conn.core.output_vectored(&mut pieces);
                    let slices: [io::IoSlice<'_>; MAX_PIECES] = pieces.map(io::IoSlice::new);
                    if last {
                        socket2::SockRef::from(&*socket)
                            .send_vectored_with_flags(&slices[..n], SEND_LAST_FLAGS)
                    } else {
                        socket.write_vectored(&slices[..n])
                    }
                }
                Transport::Plain(socket) if last => {
                    socket2::SockRef::from(&*socket).send_with_flags(out, SEND_LAST_FLAGS)
                }
                stream => stream.write(out),
            };
            match result {
                Ok(0) => {
                    conn.write_failed = true;
                    break;
                }
                Ok(n) => conn.core.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(peer = %Peer(&conn.stream), "write failed: {e}");
                    conn.write_failed = true;
                    break;
                }
            }
        }
        // TLS records of their own (handshake, alerts) may wait without any core output.
        if !conn.write_failed
            && let Err(e) = conn.stream.flush_tls()
            && e.kind() != io::ErrorKind::WouldBlock
        {
            debug!(peer = %Peer(&conn.stream), "write failed: {e}");
            conn.write_failed = true;
        }
        if conn.write_failed {
            // The peer is gone: whatever is queued can never be delivered.
            conn.core.receive_eof(self.now);
            self.budget = usize::MAX;
            self.dispatch(key);
            return;
        }
        let want_writable = conn.core.buffered_amount() > 0 || conn.stream.wants_write();
        if want_writable != conn.flags.has(Flags::WRITABLE_INTEREST) {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) =
                self.poll
                    .registry()
                    .reregister(conn.stream.socket(), Token(key), interest)
            {
                warn!(peer = %Peer(&conn.stream), "cannot update interest: {e}");
                conn.write_failed = true;
            } else {
                conn.flags.set(Flags::WRITABLE_INTEREST, want_writable);
            }
        }
    }

    /// Drops a finished connection or schedules its next timer.
    fn settle(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let buffered = conn.core.buffered_amount();
        if buffered != conn.counted_output {
            let gauge = &self.metrics.worker(self.index).output_buffered;
            WorkerMetrics::add(gauge, buffered as u64);
            WorkerMetrics::sub(gauge, conn.counted_output as u64);
            conn.counted_output = buffered;
        }
        let terminated = conn.core.is_terminated();
        if conn.flags.has(Flags::DRAIN_WATCH)
            && !terminated
            && buffered <= self.config.max_backlog / 2
        {
            conn.flags.set(Flags::DRAIN_WATCH, false);
            let id = ConnId {
                key,
                serial: conn.serial,
            };
            let mut ctx = Ctx {
                conns: &mut self.conns,
                dirty: &mut self.dirty,
                metrics: self.metrics.worker(self.index),
            };
            // What the handler queues is written by `flush_dirty` at the end of the loop turn.
            self.handler.on_drained(&mut ctx, id);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.write_failed
            || (terminated && conn.core.buffered_amount() == 0 && !conn.stream.wants_write())
        {
            if conn.write_failed
                || !conn.flags.has(Flags::LINGER)
                || conn.eof
                || !matches!(conn.stream, Transport::Plain(_))
            {
                self.remove(key);
                return;
            }
            // A close with unread bytes makes the kernel answer with a RST, which can destroy
            // the close frame or the error response before the peer reads it. So after a
            // failure or a close handshake the FIN goes first, and input is discarded until the
            // peer's FIN or the close timeout.
            if !conn.flags.has(Flags::LINGERING) {
                conn.flags.set(Flags::LINGERING, true);
                conn.paused = false;
                // A socket the last read drained needs no read now: what arrives later, the
                // peer's FIN included, comes with an edge.
                if conn.flags.has(Flags::READ_TO_BLOCK) {
                    conn.readable = true;
                }
                conn.stream.shutdown_write();
                conn.kill_at = Some(Deadline::new(self.now + self.core_config.close_timeout()));
                self.read(key);
                return self.settle(key);
            }
        }
        if terminated && conn.kill_at.is_none() {
            conn.kill_at = Some(Deadline::new(self.now + self.core_config.close_timeout()));
        }
        let deadline = match (conn.core.poll_timeout(), conn.kill_at.map(Deadline::get)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = deadline {
            self.timers.schedule(key, &mut conn.scheduled, deadline);
        }
    }

    fn fire_timers(&mut self) {
        while let Some((at, key)) = self.timers.pop_due(self.now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.scheduled != Some(at) {
                continue; // stale: an earlier entry for this connection already fired
            }
            conn.scheduled = None;
            if conn.kill_at.is_some_and(|k| self.now >= k.get()) {
                debug!(peer = %Peer(&conn.stream), "peer did not take its last bytes or send its FIN in time");
                self.remove(key);
                continue;
            }
            conn.core.handle_timeout(self.now);
            self.service(key);
        }
        let live = self.conns.len();
        let conns = &self.conns;
        self.timers.compact(
            live,
            conns
                .iter()
                .filter_map(|(k, c)| c.scheduled.map(|d| (k, d))),
        );
    }

    fn flush_dirty(&mut self) {
        while let Some(key) = self.dirty.pop() {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.in_dirty = false;
                self.service(key);
            }
        }
    }

    /// Hands the core's events of one connection to the application.
    /// Services `key` again after the next poll, after everyone else's turn.
    fn later(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.unfinished {
            conn.unfinished = true;
            self.unfinished.push((key, conn.serial));
        }
    }

    fn dispatch(&mut self, key: usize) {
        loop {
            if self.budget == 0 {
                // Events still waiting in the core are taken on the next pass.
                if self.conns.contains(key) {
                    self.later(key);
                }
                return;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let Some(event) = conn.core.poll_event() else {
                return;
            };
            let id = ConnId {
                key,
                serial: conn.serial,
            };
            let wm = self.metrics.worker(self.index);
            match event {
                Event::Request(request) => self.on_request(key, &request),
                Event::Open => {
                    conn.opened = true;
                    WorkerMetrics::add(&wm.connections_open, 1);
                    debug!(peer = %Peer(&conn.stream), "open");
                    let mut ctx = Ctx {
                        conns: &mut self.conns,
                        dirty: &mut self.dirty,
                        metrics: wm,
                    };
                    self.handler.on_open(&mut ctx, id);
                }
                Event::Message(message) => {
                    WorkerMetrics::add(&wm.messages_in, 1);
                    WorkerMetrics::add(&wm.bytes_in, message.len() as u64);
                    self.budget = self.budget.saturating_sub(message.len());
                    let mut ctx = Ctx {
                        conns: &mut self.conns,
                        dirty: &mut self.dirty,
                        metrics: wm,
                    };
                    self.handler.on_message(&mut ctx, id, message);
                }
                Event::Ping(_) | Event::Pong(_) => {}
                Event::Error(e) => {
                    conn.flags.set(Flags::LINGER, e.caused_by_input());
                    let peer = Peer(&conn.stream);
                    match &e {
                        CoreError::Handshake(h) => {
                            self.metrics.record_handshake_failure(h.kind());
                            warn!(%peer, "handshake failed: {e}");
                        }
                        CoreError::HandshakeTimeout => {
                            self.metrics.record_handshake_failure("timeout");
                            warn!(%peer, "handshake failed: {e}");
                        }
                        CoreError::ConnectionReset => {
                            debug!(%peer, "connection reset by peer");
                        }
                        _ => warn!(%peer, code = e.close_code().as_u16(), "connection failed: {e}"),
                    }
                }
                Event::Closed(closed) => {
                    if !conn.opened {
                        let held = conn.flags.has(Flags::STREAMING)
                            || conn.http.as_ref().is_some_and(|w| w.delivered);
                        conn.flags.set(Flags::STREAMING, false);
                        conn.http = None;
                        if held {
                            let mut ctx = Ctx {
                                conns: &mut self.conns,
                                dirty: &mut self.dirty,
                                metrics: wm,
                            };
                            self.handler.on_http_closed(&mut ctx, id);
                        }
                        continue;
                    }
                    conn.opened = false;
                    // The peer may send after its close frame (a ping, a message it had queued),
                    // and bytes arriving at a closed socket make the kernel answer with a RST
                    // that can destroy the close frame before the peer reads it. So after a
                    // close handshake, too, the socket lingers until the peer's FIN.
                    if closed.clean {
                        conn.flags.set(Flags::LINGER, true);
                    }
                    WorkerMetrics::sub(&wm.connections_open, 1);
                    self.metrics.record_close(closed.code.as_u16());
                    debug!(peer = %Peer(&conn.stream), code = closed.code.as_u16(), clean = closed.clean, "closed");
                    let mut ctx = Ctx {
                        conns: &mut self.conns,
                        dirty: &mut self.dirty,
                        metrics: wm,
                    };
                    self.handler.on_close(&mut ctx, id, &closed);
                }
            }
        }
    }

    /// Takes a plain HTTP request the handler reads with its body.
    fn start_http(&mut self, key: usize, request: &Request, limit: usize) {
        let conn = &mut self.conns[key];
        let close = request.minor_version() == 0
            || request.header_values("Connection").any(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            });
        let mut lengths = request.header_values("Content-Length").map(|v| {
            std::str::from_utf8(v.trim_ascii())
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u64>().ok())
        });
        let first = lengths.next();
        let length = match first {
            None => Ok(0),
            Some(Some(n)) if lengths.all(|l| l == Some(n)) => Ok(n),
            Some(_) => Err(BodyError::BadLength),
        };
        let length = if request.header_values("Transfer-Encoding").next().is_some() {
            Err(BodyError::Chunked)
        } else {
            length
        };
        let length = length.and_then(|n| match usize::try_from(n) {
            Ok(n) if n <= limit => Ok(n),
            _ => Err(BodyError::TooLarge { length: n, limit }),
        });
        let (length, error) = match length {
            Ok(n) => (n, None),
            Err(e) => (0, Some(e)),
        };
        conn.http = Some(Box::new(HttpWait {
            request: request.clone(),
            length,
            delivered: false,
            keep_alive: !close && error.is_none(),
        }));
        if let Some(error) = error {
            // Its body, if any, is not read.
            conn.flags.set(Flags::LINGER, true);
            let id = ConnId {
                key,
                serial: conn.serial,
            };
            if let Some(wait) = conn.http.as_mut() {
                wait.delivered = true;
            }
            let mut ctx = Ctx {
                conns: &mut self.conns,
                dirty: &mut self.dirty,
                metrics: self.metrics.worker(self.index),
            };
            self.handler
                .on_http_request(&mut ctx, id, request, Err(error));
            return;
        }
        let expects = request
            .header_values("Expect")
            .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
        if expects && length > conn.core.request_body().len() {
            let _ = conn.core.continue_request();
            self.mark(key);
        }
        self.http_body(key);
    }

    fn mark(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key)
            && !c.in_dirty
        {
            c.in_dirty = true;
            self.dirty.push(key);
        }
    }

    /// Hands a request taken by [`Worker::start_http`] to the handler once its body is in.
    fn http_body(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(wait) = conn.http.as_mut() else {
            return;
        };
        if wait.delivered || conn.core.request_body().len() < wait.length {
            return;
        }
        wait.delivered = true;
        let body = conn.core.request_body()[..wait.length].to_vec();
        let request = wait.request.clone();
        let id = ConnId {
            key,
            serial: conn.serial,
        };
        let mut ctx = Ctx {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            metrics: self.metrics.worker(self.index),
        };
        self.handler
            .on_http_request(&mut ctx, id, &request, Ok(&body));
    }

    fn on_request(&mut self, key: usize, request: &Request) {
        if !request.is_websocket_upgrade() {
            if let Some(limit) = self.handler.http_body_limit(request) {
                self.metrics
                    .http_requests_total
                    .fetch_add(1, Ordering::Relaxed);
                return self.start_http(key, request, limit);
            }
        }
        let conn = &mut self.conns[key];
        let result = if !request.is_websocket_upgrade() {
            self.metrics
                .http_requests_total
                .fetch_add(1, Ordering::Relaxed);
            match request.path() {
                "/healthz" => {
                    let mut page = String::from("ok\n");
                    self.handler.render_health(&mut page);
                    conn.core.respond(
                        200,
                        &[("Content-Type", "text/plain; charset=utf-8")],
                        page.as_bytes(),
                    )
                }
                "/metrics" => {
                    let mut page = self.metrics.render();
                    self.handler.render_metrics(&mut page);
                    conn.core.respond(
                        200,
                        &[("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                        page.as_bytes(),
                    )
                }
                _ => match self.handler.on_http(request) {
                    Some(r) => {
                        conn.core
                            .respond(r.status, &[("Content-Type", r.content_type)], &r.body)
                    }
                    None => conn.core.reject(
                        404,
                        "not found: this server speaks WebSocket (send an upgrade request), \
                         /healthz and /metrics\n",
                    ),
                },
            }
        } else if conn.flags.has(Flags::OVER_LIMIT) {
            self.metrics
                .rejected_full_total
                .fetch_add(1, Ordering::Relaxed);
            self.metrics.record_handshake_failure("server_full");
            warn!(peer = %Peer(&conn.stream), "refused: --max-connections reached");
            conn.core
                .reject(503, "server full: too many connections, retry later\n")
        } else if self.drain_deadline.is_some() {
            conn.core.reject(503, "server shutting down\n")
        } else {
            match self.handler.on_upgrade(request) {
                Decision::Accept(accept) => conn.core.accept(accept),
                Decision::Reject(status, body) => {
                    self.metrics
                        .record_handshake_failure("rejected_by_application");
                    warn!(peer = %Peer(&conn.stream), status, "upgrade refused: {body}");
                    conn.core.reject(status, &body)
                }
            }
        };
        if let Err(e) = result {
            // Unreachable in practice: the core just reported the request it waits on.
            error!(peer = %Peer(&conn.stream), "cannot answer request: {e}");
        }
    }

    fn start_drain(&mut self) {
        info!(
            worker = self.index,
            connections = self.conns.len(),
            "shutting down: closing connections with 1001"
        );
        self.drain_deadline = Some(self.now + self.config.drain_timeout);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if conn.core.is_streaming() {
                // A streamed response ends; its client resumes elsewhere.
                let _ = conn.core.end_body();
                self.service(key);
                continue;
            }
            match conn.core.state() {
                ConnectionState::Open => {
                    let _ = conn
                        .core
                        .close(CloseCode::GoingAway, "server shutting down");
                    self.service(key);
                }
                ConnectionState::Connecting => self.remove(key),
                ConnectionState::Closing | ConnectionState::Closed => {}
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        WorkerMetrics::sub(
            &self.metrics.worker(self.index).output_buffered,
            conn.counted_output as u64,
        );
        if conn.flags.has(Flags::STREAMING) || conn.http.as_ref().is_some_and(|w| w.delivered) {
            // Dropped without a Closed event (drain timeout, failed write).
            let id = ConnId {
                key,
                serial: conn.serial,
            };
            let mut ctx = Ctx {
                conns: &mut self.conns,
                dirty: &mut self.dirty,
                metrics: self.metrics.worker(self.index),
            };
            self.handler.on_http_closed(&mut ctx, id);
        }
        if conn.opened {
            // Dropped without a Closed event (drain timeout): still accounted for.
            WorkerMetrics::sub(&self.metrics.worker(self.index).connections_open, 1);
            self.metrics.record_close(CloseCode::Abnormal.as_u16());
            let id = ConnId {
                key,
                serial: conn.serial,
            };
            let closed = Closed {
                code: CloseCode::Abnormal,
                reason: "dropped".into(),
                clean: false,
                initiated_by_peer: false,
            };
            let mut ctx = Ctx {
                conns: &mut self.conns,
                dirty: &mut self.dirty,
                metrics: self.metrics.worker(self.index),
            };
            self.handler.on_close(&mut ctx, id, &closed);
        }
        self.metrics.tcp_connections.fetch_sub(1, Ordering::Relaxed);
        // Server closes TCP first (RFC 6455 §7.1.1): FIN after the last bytes. A plain socket
        // is simply closed when `conn` is dropped: `close` sends the FIN and takes the socket
        // out of epoll, so neither `shutdown` nor `epoll_ctl` is needed (two system calls per
        // connection less). TLS first sends its close_notify.
        if !matches!(conn.stream, Transport::Plain(_)) {
            deregister(self.poll.registry(), conn.stream.socket());
            conn.stream.shutdown_write();
        }
    }
}

/// Shows a connection's peer address in logs, looked up only when a line is written (the
/// address is not kept per connection: it would cost 32 bytes each).
struct Peer<'a>(&'a Transport);

impl std::fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.peer_addr() {
            Ok(addr) => addr.fmt(f),
            Err(_) => f.write_str("(gone)"),
        }
    }
}

fn deregister(registry: &Registry, stream: &mut TcpStream) {
    if let Err(e) = registry.deregister(stream) {
        debug!("deregister: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory per idle connection is a goal (README): a worker's slab holds one `Conn` per
    /// connection, so fields added to it are paid by every idle connection.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_connection_entry_stays_small() {
        // mio's sockets carry a selector id in debug builds.
        let limit = if cfg!(debug_assertions) { 432 } else { 424 };
        let size = std::mem::size_of::<Conn>();
        assert!(size <= limit, "Conn grew to {size} bytes");
    }

    #[cfg(target_os = "linux")]
    /// What `add` relies on when it leaves `TCP_NODELAY` and `SO_SNDBUF` alone.
    #[test]
    fn accepted_sockets_inherit_the_listener_options() {
        let bytes = 96 * 1024;
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), Some(bytes)).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "nothing to accept");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        let reference = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let default_size = reference.send_buffer_size().unwrap();
        reference.set_send_buffer_size(bytes).unwrap();
        let accepted = socket2::SockRef::from(&accepted);
        assert!(accepted.tcp_nodelay().unwrap());
        assert_ne!(default_size, reference.send_buffer_size().unwrap());
        assert_eq!(
            accepted.send_buffer_size().unwrap(),
            reference.send_buffer_size().unwrap()
        );
    }
}
