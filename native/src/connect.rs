//! `duplex connect`: a wscat-like command-line client.
//!
//! Lines read from stdin are sent as text messages; every received message is written to
//! stdout on its own line. A thread reads stdin and hands lines over a bounded channel, waking
//! the client's poll, so the socket (pings, the server's close) is served while stdin is quiet.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use duplex_core::channel::{ClientMessage, Id, SUBPROTOCOL};
use duplex_core::close::CloseCode;
use duplex_core::deflate::DeflateConfig;
use duplex_core::limits::Config;
use duplex_core::message::{Closed, Message};

use crate::client::{Client, ClientError, ClientEvent, ClientOptions};
use crate::tls::{Trust, client_config};

/// Lines buffered between the stdin reader and the socket before the reader waits.
const INPUT_QUEUE: usize = 1024;

/// Arguments of `duplex connect`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Input: each line of stdin is sent as one text message (without its line ending).
Output: each received text message is printed as one line; a binary message is printed as
`[binary N bytes] HEX` (lowercase hex of the payload).

When stdin is a terminal these commands are recognised:
  /ping [PAYLOAD]          send a ping (the pong is reported on stderr)
  /close [CODE [REASON]]   start the close handshake (default 1000)
  //text                   send the text `/text`
When stdin is not a terminal, every line is sent as is.

At the end of stdin the client keeps printing what arrives until one of these, then closes with
1000, waits for the server's close and exits 0:
  - with the duplex.v1 subprotocol, every reply the protocol promises for the lines sent has
    arrived: `welcome` for `hello`; `joined`, `left`, `pong` or `error` with the id of a `join`,
    `leave`, `ping`; `ack` and then the publisher's own `message` for a `publish`; `error` for a
    line the server refuses. (After a `presence`, whose refusal cannot be told apart, and after
    a publish repeated with an id already acknowledged, which gets its `ack` but no second
    `message`, the quiet rule below applies.)
  - the server has sent no message for --wait seconds (default 1; 0 closes at once);
  - --max-wait seconds have passed since the end of stdin (default 10), however busy the server.
If duplex.v1 replies are still missing when it closes, their number is reported on stderr.
Failures exit 1 with one line on stderr: `connection refused: ADDR`,
`handshake rejected: HTTP STATUS`, `closed by server: CODE ...`,
`TLS with HOST failed: certificate expired (...)` (or `has the wrong name`, `signed by an
unknown issuer`).")]
pub struct ConnectArgs {
    /// Server URL, e.g. ws://127.0.0.1:9001/chat or wss://example.com/chat.
    pub url: String,

    /// wss://: also trust the CA certificates of this PEM file (repeatable), besides the
    /// operating system's trust store.
    #[arg(long = "ca", value_name = "PEM")]
    pub ca: Vec<std::path::PathBuf>,

    /// wss://: accept any server certificate, unverified (testing only; prints a warning).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,

    /// Offer this subprotocol (repeatable, in order of preference).
    #[arg(short = 's', long = "subprotocol", value_name = "PROTOCOL")]
    pub subprotocols: Vec<String>,

    /// Add a request header, written 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Send this Origin header.
    #[arg(long)]
    pub origin: Option<String>,

    /// Largest message accepted from the server, in bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub max_message_size: usize,

    /// Seconds allowed for the TCP connection and for the handshake each.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub connect_timeout: f64,

    /// Seconds to wait for the server's close reply once the client closes.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub close_timeout: f64,

    /// Do not offer permessage-deflate (compression is offered by default).
    #[arg(long)]
    pub no_deflate: bool,

    /// Ping the server this often (seconds; 0 disables) and give up after 3 missed pongs.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub ping_interval: f64,

    /// After the end of stdin, close once the server has sent nothing for this many seconds
    /// (sooner with duplex.v1 when every reply is in; see below).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub wait: f64,

    /// After the end of stdin, close after this many seconds at the latest.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub max_wait: f64,
}

fn parse_header(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("header {raw:?} is not written 'Name: value'"))?;
    let name = name.trim();
    if !duplex_core::handshake::is_token(name) {
        return Err(format!("header name {name:?} is not a valid HTTP token"));
    }
    let value = value.trim();
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("header value of {name} contains a line break"));
    }
    Ok((name.to_string(), value.to_string()))
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("invalid {what}: {value}"))
}

/// What the stdin reader hands to the client loop.
enum Input {
    Line(String),
    Eof,
    Error(io::Error),
}

/// Runs the client until the connection ends; returns the process exit code.
pub fn run(args: ConnectArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("duplex connect: {message}");
            1
        }
    }
}

fn run_inner(args: ConnectArgs) -> Result<(), String> {
    let connect_timeout = seconds(args.connect_timeout, "--connect-timeout")?;
    let close_timeout = seconds(args.close_timeout, "--close-timeout")?;
    let ping_interval = seconds(args.ping_interval, "--ping-interval")?;
    let wait = seconds(args.wait, "--wait")?;
    let max_wait = seconds(args.max_wait, "--max-wait")?;
    let deflate = (!args.no_deflate).then(DeflateConfig::default);
    let config = Config::default()
        .with_deflate(deflate)
        .with_max_message_size(args.max_message_size)
        .with_max_frame_size(args.max_message_size)
        .with_handshake_timeout(Some(connect_timeout))
        .with_close_timeout(close_timeout)
        .with_ping_interval(Some(ping_interval));
    let mut options = ClientOptions::default()
        .with_config(config)
        .with_connect_timeout(connect_timeout);
    options.subprotocols = args.subprotocols;
    options.headers = args.headers;
    options.origin = args.origin;
    if args
        .url
        .trim()
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
    {
        let trust = if args.insecure {
            eprintln!(
                "duplex connect: warning: --insecure: the server's certificate is NOT verified; \
                 anyone on the path can read and change this connection"
            );
            Trust::Insecure
        } else if args.ca.is_empty() {
            Trust::System
        } else {
            Trust::WithCa(args.ca)
        };
        options.tls = Some(client_config(&trust)?);
    }

    let interactive = io::stdin().is_terminal();
    let mut client = Client::connect(&args.url, options).map_err(|e| e.to_string())?;
    if interactive {
        match client.protocol() {
            Some(protocol) => eprintln!("connected to {} (subprotocol {protocol})", args.url),
            None => eprintln!("connected to {}", args.url),
        }
    }

    let waker = client.waker().map_err(|e| e.to_string())?;
    let (lines_tx, lines_rx) = mpsc::sync_channel(INPUT_QUEUE);
    thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_stdin(lines_tx, move || drop(waker.wake())))
        .map_err(|e| format!("cannot start the stdin reader: {e}"))?;

    let expected = (client.protocol() == Some(SUBPROTOCOL)).then(Expected::default);
    let mut session = Session {
        client,
        stdout: io::stdout().lock(),
        interactive,
        closing_since: None,
        close_timeout,
        input_ended: None,
        last_message: Instant::now(),
        wait,
        max_wait,
        expected,
    };
    session.run(&lines_rx)
}

struct Session {
    client: Client,
    stdout: io::StdoutLock<'static>,
    interactive: bool,
    /// When we started the close handshake; the wait for its end is bounded.
    closing_since: Option<Instant>,
    close_timeout: Duration,
    /// When stdin ended: from then on the session closes by the rules of [`Session::linger`].
    input_ended: Option<Instant>,
    /// When the last message arrived (pings do not count: they say nothing about replies).
    last_message: Instant,
    wait: Duration,
    max_wait: Duration,
    /// With duplex.v1: the replies still due for the lines sent.
    expected: Option<Expected>,
}

impl Session {
    fn run(&mut self, lines: &Receiver<Input>) -> Result<(), String> {
        let mut stdin_open = true;
        loop {
            // Lines first, so a burst of input goes out before we wait again.
            while stdin_open && self.closing_since.is_none() {
                match lines.try_recv() {
                    Ok(Input::Line(line)) => self.on_line(&line)?,
                    Ok(Input::Eof) | Err(TryRecvError::Disconnected) => {
                        stdin_open = false;
                        self.input_ended = Some(Instant::now());
                    }
                    Ok(Input::Error(e)) => {
                        stdin_open = false;
                        eprintln!("duplex connect: reading stdin: {e}");
                        self.input_ended = Some(Instant::now());
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            let linger = match self.closing_since {
                None => self.linger()?,
                Some(_) => None,
            };
            let timeout = match self.closing_since {
                // Twice the close timeout covers the close reply plus the wait for the server
                // to close TCP; the core's own timers end it sooner in every normal case.
                Some(since) => {
                    let limit = self.close_timeout * 2 + Duration::from_secs(1);
                    let left = limit.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return Err("the server did not complete the close handshake".into());
                    }
                    Some(left)
                }
                None => linger,
            };
            match self.client.poll(timeout) {
                Ok(None) => {}
                Ok(Some(event)) => {
                    if let Some(result) = self.on_event(event) {
                        return result;
                    }
                }
                Err(e) => return Err(describe_failure(&e)),
            }
        }
    }

    /// After the end of stdin: closes when the replies are in, the server has been quiet for
    /// `wait`, or `max_wait` has passed; otherwise returns how long to poll before deciding again.
    /// Closing at once would lose replies: the server answers the close before it answers
    /// commands still on their way through its application.
    fn linger(&mut self) -> Result<Option<Duration>, String> {
        let Some(ended) = self.input_ended else {
            return Ok(None);
        };
        if self.expected.as_ref().is_some_and(Expected::complete) {
            return self.close_after_input().map(|()| None);
        }
        let now = Instant::now();
        let quiet_until = self.last_message.max(ended) + self.wait;
        let give_up = ended + self.max_wait;
        let until = quiet_until.min(give_up);
        if now < until {
            return Ok(Some(until - now));
        }
        if let Some(expected) = &self.expected {
            let due = expected.outstanding();
            if due > 0 {
                let what = if now >= give_up {
                    format!("--max-wait {}s passed", self.max_wait.as_secs_f64())
                } else {
                    format!("the server was quiet for {}s", self.wait.as_secs_f64())
                };
                eprintln!("duplex connect: duplex.v1 replies not received: {due} ({what})");
            }
        }
        self.close_after_input().map(|()| None)
    }

    /// Starts the close that ends the session after stdin; the wait for its end is bounded
    /// even when the close frame could not be sent.
    fn close_after_input(&mut self) -> Result<(), String> {
        self.start_close(CloseCode::Normal, "")?;
        self.closing_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn on_line(&mut self, line: &str) -> Result<(), String> {
        if self.interactive {
            if let Some(rest) = line.strip_prefix("//") {
                return self.send(&format!("/{rest}"));
            }
            if let Some(command) = line.strip_prefix('/') {
                return self.on_command(command);
            }
        }
        self.send(line)
    }

    fn on_command(&mut self, command: &str) -> Result<(), String> {
        let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
        match name {
            "ping" => match self.client.ping(rest.as_bytes()) {
                Ok(()) => Ok(()),
                Err(ClientError::Send(e)) => {
                    eprintln!("cannot ping: {e}");
                    Ok(())
                }
                Err(e) => Err(describe_failure(&e)),
            },
            "close" => {
                let rest = rest.trim_start();
                let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                let code = if code.is_empty() {
                    CloseCode::Normal
                } else {
                    match code.parse::<u16>() {
                        Ok(n) => CloseCode::from_u16(n),
                        Err(_) => {
                            eprintln!("usage: /close [CODE [REASON]] (CODE is a number)");
                            return Ok(());
                        }
                    }
                };
                self.start_close(code, reason)
            }
            _ => {
                eprintln!(
                    "unknown command /{name}; commands: /ping [PAYLOAD], /close [CODE [REASON]], //text sends /text"
                );
                Ok(())
            }
        }
    }

    fn send(&mut self, text: &str) -> Result<(), String> {
        match self.client.send_text(text) {
            Ok(()) => {
                if let Some(expected) = &mut self.expected {
                    expected.sent(text);
                }
                Ok(())
            }
            // The server is closing: what it says next is reported by the event loop.
            Err(ClientError::Closed { .. }) => Ok(()),
            Err(e) => Err(describe_failure(&e)),
        }
    }

    fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<(), String> {
        match self.client.start_close(code, reason) {
            Ok(()) => {
                self.closing_since = Some(Instant::now());
                Ok(())
            }
            Err(ClientError::Send(e)) if self.interactive => {
                eprintln!("cannot close: {e}");
                Ok(())
            }
            Err(ClientError::Closed { .. }) => {
                self.closing_since.get_or_insert_with(Instant::now);
                Ok(())
            }
            Err(e) => Err(describe_failure(&e)),
        }
    }

    /// Handles one event; `Some` ends the session with that result.
    fn on_event(&mut self, event: ClientEvent) -> Option<Result<(), String>> {
        match event {
            ClientEvent::Message(message) => {
                self.last_message = Instant::now();
                if let (Some(expected), Message::Text(text)) = (&mut self.expected, &message) {
                    expected.received(text.as_str());
                }
                if let Err(e) = self.print(&message) {
                    // Nobody reads our output any more: end politely.
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        eprintln!("duplex connect: writing stdout: {e}");
                    }
                    if self.closing_since.is_none() {
                        if let Err(e) = self.start_close(CloseCode::Normal, "") {
                            return Some(Err(e));
                        }
                    }
                }
                None
            }
            ClientEvent::Ping(payload) => {
                if self.interactive {
                    eprintln!("< ping {}", String::from_utf8_lossy(&payload));
                }
                None
            }
            ClientEvent::Pong(payload) => {
                if self.interactive {
                    eprintln!("< pong {}", String::from_utf8_lossy(&payload));
                }
                None
            }
            ClientEvent::Closed(closed) => Some(self.on_closed(&closed)),
        }
    }

    fn on_closed(&mut self, closed: &Closed) -> Result<(), String> {
        let _ = self.stdout.flush();
        if closed.initiated_by_peer {
            let text = closed_text("closed by server", closed);
            if closed.code == CloseCode::Normal {
                if self.interactive {
                    eprintln!("{text}");
                }
                Ok(())
            } else {
                Err(text)
            }
        } else {
            if self.interactive {
                eprintln!("{}", closed_text("closed", closed));
            }
            Ok(())
        }
    }

    fn print(&mut self, message: &Message) -> io::Result<()> {
        match message {
            Message::Text(text) => {
                self.stdout.write_all(text.as_bytes())?;
                self.stdout.write_all(b"\n")?;
            }
            Message::Binary(data) => {
                write!(self.stdout, "[binary {} bytes] ", data.len())?;
                for byte in data.iter() {
                    write!(self.stdout, "{byte:02x}")?;
                }
                self.stdout.write_all(b"\n")?;
            }
        }
        self.stdout.flush()
    }
}

/// The `duplex.v1` replies still due for the lines sent. The server answers each command once,
/// so counting what was sent against what came back tells when every reply is in.
#[derive(Debug, Default)]
struct Expected {
    /// Commands sent with a readable id, by id (ids may repeat): `Some(room)` for a publish,
    /// whose own `message` follows its `ack`.
    by_id: HashMap<Id, VecDeque<Option<String>>>,
    /// Own messages announced by an `ack` and not received yet: (room, seq).
    own_messages: HashSet<(String, u64)>,
    /// Replies without an id still due: `welcome` for a `hello`, `error` for a line whose id
    /// the server cannot read.
    anonymous: usize,
    /// A `presence` was sent: it has no reply, but a refusal comes as an `error` without id
    /// that could arrive any time later, so completeness cannot be known.
    untracked: bool,
}

impl Expected {
    /// Reads a line as the server does, to know which reply it promises.
    fn sent(&mut self, line: &str) {
        match duplex_core::channel::decode(line) {
            Ok(ClientMessage::Hello { .. }) => self.anonymous += 1,
            Ok(ClientMessage::Join { id, .. } | ClientMessage::Leave { id, .. })
            | Ok(ClientMessage::Ping { id } | ClientMessage::Send { id, .. }) => {
                self.expect(id, None)
            }
            Ok(ClientMessage::Publish { id, room, .. }) => self.expect(id, Some(room)),
            Ok(ClientMessage::Presence { .. }) => self.untracked = true,
            Err(refused) => match refused.id {
                Some(id) => self.expect(id, None),
                None => self.anonymous += 1,
            },
        }
    }

    fn expect(&mut self, id: Id, publish_room: Option<String>) {
        self.by_id.entry(id).or_default().push_back(publish_room);
    }

    fn received(&mut self, text: &str) {
        let Ok(serde_json::Value::Object(reply)) = serde_json::from_str(text) else {
            return;
        };
        let id = reply
            .get("id")
            .and_then(|v| serde_json::from_value::<Id>(v.clone()).ok());
        let seq = reply.get("seq").and_then(serde_json::Value::as_u64);
        match (reply.get("type").and_then(serde_json::Value::as_str), id) {
            (Some("welcome") | Some("error"), None) => {
                self.anonymous = self.anonymous.saturating_sub(1);
            }
            (Some("joined" | "left" | "pong" | "ack" | "sent" | "error"), Some(id)) => {
                let Some(waiting) = self.by_id.get_mut(&id) else {
                    return;
                };
                let publish_room = waiting.pop_front().flatten();
                if waiting.is_empty() {
                    self.by_id.remove(&id);
                }
                if reply.get("type").and_then(serde_json::Value::as_str) == Some("ack") {
                    if let (Some(room), Some(seq)) = (publish_room, seq) {
                        self.own_messages.insert((room, seq));
                    }
                }
            }
            (Some("message"), None) => {
                if let (Some(room), Some(seq)) =
                    (reply.get("room").and_then(serde_json::Value::as_str), seq)
                {
                    self.own_messages.remove(&(room.to_owned(), seq));
                }
            }
            _ => {}
        }
    }

    /// Command replies still due. Own messages are not counted: a publish retried with an id
    /// the server already sequenced gets its `ack` but no second `message` (deduplication), so
    /// a missing one is no fault.
    fn outstanding(&self) -> usize {
        self.anonymous + self.by_id.values().map(VecDeque::len).sum::<usize>()
    }

    fn complete(&self) -> bool {
        !self.untracked && self.outstanding() == 0 && self.own_messages.is_empty()
    }
}

fn closed_text(prefix: &str, closed: &Closed) -> String {
    if closed.reason.is_empty() {
        format!("{prefix}: {}", closed.code)
    } else {
        format!("{prefix}: {} {:?}", closed.code, closed.reason)
    }
}

fn describe_failure(error: &ClientError) -> String {
    match error {
        ClientError::Closed { code, reason } if reason.is_empty() => {
            format!("closed by server: {code}")
        }
        ClientError::Closed { code, reason } => format!("closed by server: {code} {reason:?}"),
        other => other.to_string(),
    }
}

/// Reads stdin line by line until its end, handing each line over. Invalid UTF-8 is replaced
/// (a text message must be UTF-8).
fn read_stdin(lines: SyncSender<Input>, wake: impl Fn()) {
    let stdin = io::stdin();
    let mut reader = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let input = match reader.read_until(b'\n', &mut buf) {
            Ok(0) => Input::Eof,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                Input::Line(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Input::Error(e),
        };
        let last = !matches!(input, Input::Line(_));
        if lines.send(input).is_err() {
            return;
        }
        wake();
        if last {
            return;
        }
    }
}
