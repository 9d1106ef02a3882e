//! Connection configuration: every buffer has a limit and every wait has a deadline.

use core::time::Duration;

/// Limits and timers for one connection. Build it from [`Config::default`], whose values are
/// safe for a public server, and adjust with the `with_*` methods.
///
/// ```
/// use core::time::Duration;
/// use duplex_core::Config;
/// let config = Config::default()
///     .with_max_message_size(1 << 20)
///     .with_ping_interval(Some(Duration::from_secs(30)))
///     .with_max_missed_pongs(3);
/// assert_eq!(config.max_message_size(), 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) max_frame_size: usize,
    pub(crate) max_message_size: usize,
    pub(crate) max_head_size: usize,
    pub(crate) fragment_size: Option<usize>,
    pub(crate) read_chunk: usize,
    pub(crate) handshake_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) max_missed_pongs: u32,
    pub(crate) buffer_keep: Option<Duration>,
    #[cfg(feature = "deflate")]
    pub(crate) deflate: Option<crate::deflate::DeflateConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_head_size: 16 << 10,
            fragment_size: None,
            read_chunk: 4096,
            handshake_timeout: Some(Duration::from_secs(10)),
            close_timeout: Duration::from_secs(5),
            idle_timeout: None,
            ping_interval: None,
            max_missed_pongs: 3,
            buffer_keep: Some(Duration::from_secs(1)),
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }
}

impl Config {
    /// permessage-deflate: a server accepts offers within this policy, a client offers it.
    /// `None` (the default) neither offers nor accepts compression.
    #[cfg(feature = "deflate")]
    pub fn with_deflate(mut self, deflate: Option<crate::deflate::DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&crate::deflate::DeflateConfig> {
        self.deflate.as_ref()
    }

    /// Largest payload of a single received frame; a larger one fails the connection with 1009.
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }
    /// Largest received message, all fragments together; checked as each frame header arrives,
    /// before its payload is buffered (1009).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
    /// Largest HTTP head (request or response) accepted during the handshake (431 / failure).
    pub fn with_max_head_size(mut self, bytes: usize) -> Self {
        self.max_head_size = bytes;
        self
    }
    /// Outgoing messages longer than this are split into frames of at most this many bytes.
    /// `None` sends every message as one frame.
    pub fn with_fragment_size(mut self, bytes: Option<usize>) -> Self {
        self.fragment_size = bytes.map(|b| b.max(1));
        self
    }
    /// Smallest window [`crate::Connection::recv_buf`] lends for one read.
    pub fn with_read_chunk(mut self, bytes: usize) -> Self {
        self.read_chunk = bytes.max(64);
        self
    }
    /// Time allowed from creation until the handshake completes (slowloris defence).
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }
    /// Time allowed for the peer to answer our close frame (and, for a client, for the server
    /// to close TCP afterwards).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }
    /// Close with 1001 when nothing at all arrives from the peer for this long.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// Send a ping this often while open.
    pub fn with_ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval.filter(|i| !i.is_zero());
        self
    }
    /// Fail the connection when this many pings in a row got no pong by the next ping.
    pub fn with_max_missed_pongs(mut self, count: u32) -> Self {
        self.max_missed_pongs = count.max(1);
        self
    }

    /// How long an open connection keeps its emptied receive and send buffers (each up to
    /// 64 KiB) after the last frame it received, so that a connection with traffic does not
    /// allocate and free them for every message. `None` releases them as soon as they are
    /// empty (least memory while busy). Idle connections hold no buffer either way. Default
    /// 1 s.
    pub fn with_buffer_keep(mut self, keep: Option<Duration>) -> Self {
        self.buffer_keep = keep.filter(|k| !k.is_zero());
        self
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }
    pub fn max_head_size(&self) -> usize {
        self.max_head_size
    }
    pub fn fragment_size(&self) -> Option<usize> {
        self.fragment_size
    }
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }
    pub fn ping_interval(&self) -> Option<Duration> {
        self.ping_interval
    }
    pub fn max_missed_pongs(&self) -> u32 {
        self.max_missed_pongs
    }
    pub fn buffer_keep(&self) -> Option<Duration> {
        self.buffer_keep
    }
}
