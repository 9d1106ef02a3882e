//! # STOMP 1.0–1.2 frames, sans-IO
//!
//! The frame codec of STOMP (the Simple Text Oriented Messaging Protocol), as carried over
//! WebSocket by `@stomp/stompjs`, Spring's message broker and RabbitMQ Web-STOMP. Like the rest of
//! the core it does no I/O: a [`Decoder`] takes bytes as they arrive (several frames in one
//! WebSocket message, or one frame split over several) and yields [`Item`]s; [`Frame::encode`]
//! writes a frame for a negotiated [`Version`].
//!
//! What it implements of the specification:
//! - The grammar `COMMAND EOL *(header EOL) EOL body NUL *EOL`, with `EOL = [CR] LF`; a trailing
//!   CR before LF is dropped in every version (STOMP 1.0 and 1.1 clients send LF alone).
//! - Bodies: with a `content-length` header exactly that many octets, NULs included, followed by
//!   the NUL that ends every frame; without it, up to the first NUL. Only `SEND`, `MESSAGE` and
//!   `ERROR` may have a body: a body on any other frame is an error.
//! - Header escapes: `\n`, `\c` and `\\` in 1.1, plus `\r` in 1.2; none in 1.0 nor in `CONNECT`,
//!   `STOMP` and `CONNECTED` frames. An unknown escape is an error, as the specification asks.
//! - Repeated headers: the first one wins ([`Frame::header`]); values are never trimmed.
//! - Heart-beats: an EOL between frames is [`Item::Heartbeat`]; [`HeartBeat`] parses the header
//!   and [`HeartBeat::negotiate`] computes both periods.
//! - Limits ([`Limits`]): the size of a frame, the number of headers and the length of one header
//!   line are checked while bytes arrive, before a frame is complete, so a peer cannot make the
//!   decoder buffer more than the frame limit.
//!
//! ```
//! use duplex_core::stomp::{Command, Decoder, Frame, Item, Limits, Version};
//!
//! let mut decoder = Decoder::new(Limits::default());
//! // One frame split over two WebSocket messages, then a heart-beat.
//! decoder.push(b"SEND\ndestination:/topic/app/chat\ncontent-type:text/plain\n\nhel");
//! assert_eq!(decoder.poll().unwrap(), None);
//! decoder.push(b"lo\0\n");
//! let Some(Item::Frame(frame)) = decoder.poll().unwrap() else { panic!() };
//! assert_eq!(frame.command, Command::Send);
//! assert_eq!(frame.header("destination"), Some("/topic/app/chat"));
//! assert_eq!(frame.body, b"hello");
//! assert_eq!(decoder.poll().unwrap(), Some(Item::Heartbeat));
//! assert_eq!(decoder.poll().unwrap(), None);
//!
//! let receipt = Frame::new(Command::Receipt).with_header("receipt-id", "77");
//! assert_eq!(receipt.encode(Version::V1_2), b"RECEIPT\nreceipt-id:77\n\n\0");
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

#[cfg(feature = "channel")]
pub mod session;
#[cfg(test)]
mod tests;

#[cfg(feature = "channel")]
pub use session::{MessageBody, Output, StompConfig, StompSession};

/// A STOMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escapes.
    V1_0,
    /// STOMP 1.1: escapes `\n`, `\c`, `\\`.
    V1_1,
    /// STOMP 1.2: escapes `\r` too.
    V1_2,
}

impl Version {
    /// Every version, highest first.
    pub const ALL: [Version; 3] = [Version::V1_2, Version::V1_1, Version::V1_0];

    /// The version as written in `accept-version` and `version` headers (`"1.2"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// The WebSocket subprotocol of the version (`"v12.stomp"`).
    pub fn subprotocol(self) -> &'static str {
        match self {
            Version::V1_0 => "v10.stomp",
            Version::V1_1 => "v11.stomp",
            Version::V1_2 => "v12.stomp",
        }
    }

    /// The version a WebSocket subprotocol names, if it is a STOMP one.
    pub fn from_subprotocol(name: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.subprotocol() == name)
    }

    /// The highest version of a STOMP subprotocol among those a client offered.
    pub fn best_subprotocol<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Version> {
        offered
            .into_iter()
            .filter_map(Version::from_subprotocol)
            .max()
    }

    /// The highest common version for a `CONNECT` frame's `accept-version` header (a list such
    /// as `1.2,1.1,1.0`; absent means 1.0), or `None` when there is none.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
        Version::negotiate_up_to(accept_version, Version::V1_2)
    }

    /// [`Version::negotiate`] among the versions up to `highest` (the version of the
    /// WebSocket subprotocol the upgrade chose, say).
    pub fn negotiate_up_to(accept_version: Option<&str>, highest: Version) -> Option<Version> {
        match accept_version {
            // Absent means 1.0, which every cap allows.
            None => Some(Version::V1_0),
            Some(list) => list
                .split(',')
                .filter_map(|v| Version::ALL.into_iter().find(|k| k.as_str() == v.trim()))
                .filter(|v| *v <= highest)
                .max(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session.
    Connect,
    /// Client: open a session (the 1.1+ name of `CONNECT`).
    Stomp,
    /// Client: send a message to a destination.
    Send,
    /// Client: subscribe to a destination.
    Subscribe,
    /// Client: end a subscription.
    Unsubscribe,
    /// Client: acknowledge a message.
    Ack,
    /// Client: refuse a message.
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: abort a transaction.
    Abort,
    /// Client: end the session.
    Disconnect,
    /// Server: the session is open.
    Connected,
    /// Server: a message of a subscription.
    Message,
    /// Server: a frame with a `receipt` header was processed.
    Receipt,
    /// Server: something went wrong; the connection closes after it.
    Error,
}

impl Command {
    /// Every command.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// The command a line names (exact, upper case).
    pub fn parse(line: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == line)
    }

    /// Whether frames of this command may carry a body (`SEND`, `MESSAGE`, `ERROR`).
    pub fn may_have_body(self) -> bool {
        matches!(self, Command::Send | Command::Message | Command::Error)
    }

    /// Whether header values of this command are escaped (all but `CONNECT`, `STOMP` and
    /// `CONNECTED`).
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// The headers in wire order, unescaped; repeated names are kept (the first one counts).
    pub headers: Vec<(String, String)>,
    /// The body (empty when there is none).
    pub body: Vec<u8>,
}

impl Frame {
    /// A frame without headers or body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Frame {
        self.body = body.into();
        self
    }

    /// The value of the first header of that name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The frame on the wire for `version`. A body is preceded by a `content-length` header
    /// unless the frame has one already. In 1.0, which has no escapes, a CR, LF or (in a name) a
    /// colon in a header would break the frame: each becomes a space.
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(version, &mut out);
        out
    }

    /// [`Frame::encode`] appending to `out`.
    pub fn encode_into(&self, version: Version, out: &mut Vec<u8>) {
        let mut writer = FrameWriter::new(self.command, version, out);
        for (name, value) in &self.headers {
            writer.header(name, value);
        }
        writer.end(&self.body, self.header("content-length").is_none());
    }

    fn encoded_len_hint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum();
        self.command.as_str().len() + headers + self.body.len() + 24
    }
}

/// Writes a frame straight into bytes, header by header, without building a [`Frame`] (the
/// server's hot path: one `MESSAGE` per subscriber). [`Frame::encode`] writes with it too.
#[derive(Debug)]
pub struct FrameWriter<'a> {
    out: &'a mut Vec<u8>,
    version: Version,
    escape: bool,
}

impl<'a> FrameWriter<'a> {
    /// Starts a frame of `command` for `version`, appended to `out`.
    pub fn new(command: Command, version: Version, out: &'a mut Vec<u8>) -> FrameWriter<'a> {
        out.extend_from_slice(command.as_str().as_bytes());
        out.push(b'\n');
        FrameWriter {
            out,
            version,
            escape: command.escapes_headers(),
        }
    }

    /// Adds a header.
    pub fn header(&mut self, name: &str, value: &str) -> &mut FrameWriter<'a> {
        write_header_part(self.out, name, self.version, self.escape, true);
        self.out.push(b':');
        write_header_part(self.out, value, self.version, self.escape, false);
        self.out.push(b'\n');
        self
    }

    /// Ends the frame with `body` (and a `content-length` header when it is not empty).
    pub fn body(self, body: &[u8]) {
        self.end(body, true);
    }

    /// Ends the frame with `body`, preceded by a `content-length` header when `length` is
    /// asked and the body is not empty.
    fn end(self, body: &[u8], length: bool) {
        if length && !body.is_empty() {
            self.out.extend_from_slice(b"content-length:");
            push_decimal(self.out, body.len());
            self.out.push(b'\n');
        }
        self.out.push(b'\n');
        self.out.extend_from_slice(body);
        self.out.push(0);
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn write_header_part(out: &mut Vec<u8>, text: &str, version: Version, escape: bool, name: bool) {
    // Most values need no escape at all: copy them whole.
    if !text
        .bytes()
        .any(|b| matches!(b, b'\r' | b'\n' | b':' | b'\\'))
    {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for &b in text.as_bytes() {
        match (version, escape, b) {
            (Version::V1_0, _, b'\r' | b'\n') | (_, false, b'\r' | b'\n') => out.push(b' '),
            (Version::V1_0, _, b':') | (_, false, b':') if name => out.push(b' '),
            (Version::V1_0, _, _) | (_, false, _) => out.push(b),
            (_, true, b'\n') => out.extend_from_slice(b"\\n"),
            (_, true, b':') => out.extend_from_slice(b"\\c"),
            (_, true, b'\\') => out.extend_from_slice(b"\\\\"),
            (Version::V1_2, true, b'\r') => out.extend_from_slice(b"\\r"),
            // 1.1 has no escape for CR, and a CR before LF would be taken for part of the EOL.
            (Version::V1_1, true, b'\r') => out.push(b' '),
            _ => out.push(b),
        }
    }
}

/// The `heart-beat` header: `cx,cy` in milliseconds (what the sender can send, what it wants
/// to receive; 0 means none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartBeat {
    /// The smallest period at which the sender can send beats (0: it cannot).
    pub can_send: u32,
    /// The period at which the sender wants to receive beats (0: it does not).
    pub want_receive: u32,
}

impl HeartBeat {
    /// Parses `cx,cy`.
    pub fn parse(value: &str) -> Result<HeartBeat, StompError> {
        let bad = || StompError::BadHeartBeat(String::from(value));
        let (a, b) = value.split_once(',').ok_or_else(bad)?;
        let number = |t: &str| {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            // Values beyond u32 milliseconds (49 days) mean "very rarely".
            Ok(t.parse::<u64>()
                .map_or(u32::MAX, |n| n.min(u64::from(u32::MAX)) as u32))
        };
        Ok(HeartBeat {
            can_send: number(a)?,
            want_receive: number(b)?,
        })
    }

    /// The header value.
    pub fn to_header(self) -> String {
        alloc::format!("{},{}", self.can_send, self.want_receive)
    }

    /// The periods a server with `server` beats agrees on with a client that sent `client`:
    /// `(server → client, client → server)` in milliseconds, `None` for no beats that way. Each
    /// is the larger of what one side can send and the other wants, as the specification says.
    pub fn negotiate(client: HeartBeat, server: HeartBeat) -> (Option<u32>, Option<u32>) {
        let period = |send: u32, want: u32| (send != 0 && want != 0).then(|| send.max(want));
        (
            period(server.can_send, client.want_receive),
            period(client.can_send, server.want_receive),
        )
    }
}

/// Limits the [`Decoder`] enforces while bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame, command line, headers and body together (bytes).
    pub max_frame: usize,
    /// The most headers in one frame.
    pub max_headers: usize,
    /// The longest header line (bytes, escaped, without its EOL).
    pub max_header_line: usize,
}

impl Default for Limits {
    /// 1 MiB frames, 64 headers, 8 KiB per header line.
    fn default() -> Limits {
        Limits {
            max_frame: 1 << 20,
            max_headers: 64,
            max_header_line: 8 << 10,
        }
    }
}

/// What the [`Decoder`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete frame.
    Frame(Frame),
    /// An EOL between frames: a heart-beat.
    Heartbeat,
}

/// Why bytes are not a valid STOMP frame. After an error the stream cannot be resynchronised:
/// send `ERROR` with [`StompError`]'s text and close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StompError {
    /// The frame is larger than [`Limits::max_frame`].
    FrameTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The frame has more headers than [`Limits::max_headers`].
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A header line is longer than [`Limits::max_header_line`].
    HeaderTooLong {
        /// The limit.
        limit: usize,
    },
    /// The command line is not a STOMP command.
    UnknownCommand(String),
    /// A header line without a colon.
    BadHeader(String),
    /// A backslash followed by something the version does not define.
    BadEscape(String),
    /// A header or command that is not UTF-8.
    NotUtf8,
    /// A `content-length` that is not a decimal number.
    BadContentLength(String),
    /// The `content-length` octets of a body are not followed by a NUL.
    MissingNul,
    /// A body on a frame whose command may not have one.
    UnexpectedBody(Command),
    /// A `heart-beat` header that is not `cx,cy`.
    BadHeartBeat(String),
}

impl fmt::Display for StompError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StompError::FrameTooLarge { limit } => {
                write!(f, "frame larger than the limit of {limit} bytes")
            }
            StompError::TooManyHeaders { limit } => {
                write!(f, "more than {limit} headers in one frame")
            }
            StompError::HeaderTooLong { limit } => {
                write!(f, "header line longer than {limit} bytes")
            }
            StompError::UnknownCommand(c) => write!(f, "unknown command {c:?}"),
            StompError::BadHeader(h) => write!(f, "header line without a colon: {h:?}"),
            StompError::BadEscape(h) => write!(f, "undefined escape sequence in header {h:?}"),
            StompError::NotUtf8 => f.write_str("command or header is not UTF-8"),
            StompError::BadContentLength(v) => write!(f, "content-length {v:?} is not a number"),
            StompError::MissingNul => f.write_str("body not followed by NUL"),
            StompError::UnexpectedBody(c) => write!(f, "{c} frames must not have a body"),
            StompError::BadHeartBeat(v) => write!(f, "heart-beat {v:?} is not cx,cy"),
        }
    }
}

impl core::error::Error for StompError {}

/// Where the decoder is inside the frame it is reading.
#[derive(Debug, Clone)]
enum State {
    /// Between frames: EOLs are heart-beats.
    Idle,
    /// Reading header lines; `headers` holds the ones read.
    Head {
        command: Command,
        headers: Vec<(String, String)>,
        /// Bytes of this frame consumed so far.
        size: usize,
    },
    /// Reading the body.
    Body {
        command: Command,
        headers: Vec<(String, String)>,
        size: usize,
        length: Option<usize>,
    },
}

/// A streaming STOMP frame decoder: [`Decoder::push`] the bytes of each WebSocket message as
/// they come, then [`Decoder::poll`] until `Ok(None)` (so that the buffer holds at most one
/// message and one partial frame).
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    state: State,
    version: Option<Version>,
    limits: Limits,
}

impl Decoder {
    /// A decoder before version negotiation (header escapes as in 1.2 until
    /// [`Decoder::set_version`]; `CONNECT` has none anyway).
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            state: State::Idle,
            version: None,
            limits,
        }
    }

    /// The negotiated version, for the escapes of the frames that follow.
    pub fn set_version(&mut self, version: Version) {
        self.version = Some(version);
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends received bytes (one WebSocket message, say; its size is bounded by the
    /// connection's message limit). [`Decoder::poll`] checks the limits, and a partial frame
    /// that already breaks one fails there without waiting for the rest.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next heart-beat or complete frame, `Ok(None)` when more bytes are needed.
    pub fn poll(&mut self) -> Result<Option<Item>, StompError> {
        loop {
            match core::mem::replace(&mut self.state, State::Idle) {
                State::Idle => {
                    let rest = &self.buf[self.pos..];
                    match rest {
                        [] => return Ok(None),
                        [b'\n', ..] => {
                            self.pos += 1;
                            return Ok(Some(Item::Heartbeat));
                        }
                        [b'\r', b'\n', ..] => {
                            self.pos += 2;
                            return Ok(Some(Item::Heartbeat));
                        }
                        [b'\r'] => return Ok(None),
                        _ => {}
                    }
                    let Some(line) = self.take_line(0)? else {
                        return Ok(None);
                    };
                    let line = &self.buf[line];
                    let command = Command::parse(line).ok_or_else(|| {
                        StompError::UnknownCommand(String::from_utf8_lossy(line).into_owned())
                    })?;
                    let size = line.len() + 1;
                    self.state = State::Head {
                        command,
                        headers: Vec::new(),
                        size,
                    };
                }
                State::Head {
                    command,
                    mut headers,
                    mut size,
                } => {
                    let start = self.pos;
                    let Some(line) = self.take_line(size)? else {
                        self.state = State::Head {
                            command,
                            headers,
                            size,
                        };
                        return Ok(None);
                    };
                    size += self.pos - start;
                    let line = &self.buf[line];
                    if line.is_empty() {
                        let length = match headers.iter().find(|(n, _)| n == "content-length") {
                            None => None,
                            Some((_, v)) => {
                                let t = v.trim();
                                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                                    return Err(StompError::BadContentLength(v.clone()));
                                }
                                let n = t.parse::<usize>().unwrap_or(usize::MAX);
                                if n > self.limits.max_frame.saturating_sub(size) {
                                    return Err(StompError::FrameTooLarge {
                                        limit: self.limits.max_frame,
                                    });
                                }
                                Some(n)
                            }
                        };
                        self.state = State::Body {
                            command,
                            headers,
                            size,
                            length,
                        };
                        continue;
                    }
                    if headers.len() == self.limits.max_headers {
                        return Err(StompError::TooManyHeaders {
                            limit: self.limits.max_headers,
                        });
                    }
                    let escape = command.escapes_headers()
                        && self.version.unwrap_or(Version::V1_2) != Version::V1_0;
                    let version = self.version.unwrap_or(Version::V1_2);
                    headers.push(parse_header(line, escape, version)?);
                    self.state = State::Head {
                        command,
                        headers,
                        size,
                    };
                }
                State::Body {
                    command,
                    headers,
                    size,
                    length,
                } => {
                    let rest = &self.buf[self.pos..];
                    let end = match length {
                        Some(n) => {
                            if rest.len() <= n {
                                self.state = State::Body {
                                    command,
                                    headers,
                                    size,
                                    length,
                                };
                                return Ok(None);
                            }
                            if rest[n] != 0 {
                                return Err(StompError::MissingNul);
                            }
                            n
                        }
                        None => match rest.iter().position(|&b| b == 0) {
                            Some(n) => n,
                            None => {
                                if size + rest.len() > self.limits.max_frame {
                                    return Err(StompError::FrameTooLarge {
                                        limit: self.limits.max_frame,
                                    });
                                }
                                self.state = State::Body {
                                    command,
                                    headers,
                                    size,
                                    length,
                                };
                                return Ok(None);
                            }
                        },
                    };
                    if size + end > self.limits.max_frame {
                        return Err(StompError::FrameTooLarge {
                            limit: self.limits.max_frame,
                        });
                    }
                    if end > 0 && !command.may_have_body() {
                        return Err(StompError::UnexpectedBody(command));
                    }
                    let body = rest[..end].to_vec();
                    self.pos += end + 1;
                    return Ok(Some(Item::Frame(Frame {
                        command,
                        headers,
                        body,
                    })));
                }
            }
        }
    }

    /// The next complete line (without its EOL), consuming it; `None` when no LF has arrived.
    /// `size` is what the frame already used, for the frame limit.
    fn take_line(&mut self, size: usize) -> Result<Option<Range<usize>>, StompError> {
        let rest = &self.buf[self.pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > self.limits.max_header_line {
                return Err(StompError::HeaderTooLong {
                    limit: self.limits.max_header_line,
                });
            }
            if size + rest.len() > self.limits.max_frame {
                return Err(StompError::FrameTooLarge {
                    limit: self.limits.max_frame,
                });
            }
            return Ok(None);
        };
        let line_end = if lf > 0 && rest[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        if line_end > self.limits.max_header_line {
            return Err(StompError::HeaderTooLong {
                limit: self.limits.max_header_line,
            });
        }
        if size + lf + 1 > self.limits.max_frame {
            return Err(StompError::FrameTooLarge {
                limit: self.limits.max_frame,
            });
        }
        let start = self.pos;
        self.pos += lf + 1;
        Ok(Some(start..start + line_end))
    }
}

fn parse_header(
    line: &[u8],
    escape: bool,
    version: Version,
) -> Result<(String, String), StompError> {
    let text = core::str::from_utf8(line).map_err(|_| StompError::NotUtf8)?;
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| StompError::BadHeader(String::from(text)))?;
    if !escape {
        return Ok((String::from(name), String::from(value)));
    }
    Ok((
        unescape(name, version, text)?,
        unescape(value, version, text)?,
    ))
}

fn unescape(part: &str, version: Version, line: &str) -> Result<String, StompError> {
    if !part.contains('\\') {
        return Ok(String::from(part));
    }
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version == Version::V1_2 => out.push('\r'),
            _ => return Err(StompError::BadEscape(String::from(line))),
        }
    }
    Ok(out)
}
