//! What every bench shares: inputs, the in-memory byte streams the peers read from and write
//! to, and a one-poll executor for fastwebsockets.
//!
//! Fairness rules followed throughout:
//! - every library gets the same bytes and does the same work per iteration (frame in → payload
//!   out, message in → message out);
//! - every byte crosses an in-memory "socket" with the same copies for everyone: a write copies
//!   into the stream, a read copies out of it, at most one frame per read;
//! - every client draws its masking keys from the same generator (`rand`'s thread RNG, which
//!   tungstenite and fastwebsockets use internally).
#![allow(dead_code)] // Each bench binary uses a different part of this module.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use duplex_core::frame::{FrameHeader, OpCode};
use duplex_core::{Connection, RandomSource};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Payload sizes of the frame benches, with their labels.
pub const FRAME_SIZES: [(usize, &str); 5] = [
    (2, "2B"),
    (125, "125B"),
    (1 << 10, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
];

/// The masking key of every pre-built client frame.
pub const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A deterministic, non-trivial payload.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// A single-frame message as a client sends it: header with `KEY`, masked payload.
pub fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: Some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut frame = Vec::with_capacity(header.encoded_len() + payload.len());
    header.write_to(&mut frame);
    let start = frame.len();
    frame.extend_from_slice(payload);
    duplex_core::mask::apply_mask(&mut frame[start..], KEY);
    frame
}

/// The masking-key source handed to duplex clients: the same thread RNG the peers use.
pub fn random_source() -> RandomSource {
    Box::new(|buf: &mut [u8]| rand::fill(buf))
}

/// Polls a future once. The streams here never wait, so every future is ready at once; polling
/// directly keeps executor overhead out of the numbers.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory stream never waits"),
    }
}

// ------------------------------------------------------------------ duplex driver reads

/// How `duplex` (native/src/server.rs) reads a socket into a connection: reads land in a
/// per-worker scratch buffer and the core copies what arrived (`receive`), so an idle
/// connection holds no buffer; only the rest of a large frame is read straight into the
/// core's buffer (`recv_buf` + `commit`).
#[derive(Debug)]
pub struct DuplexReader {
    scratch: Vec<u8>,
}

/// The native server's scratch buffer size and the frame remainder from which it lends.
const SCRATCH_SIZE: usize = 64 << 10;
const LEND_THRESHOLD: usize = SCRATCH_SIZE / 2;

impl Default for DuplexReader {
    fn default() -> Self {
        DuplexReader {
            scratch: vec![0; SCRATCH_SIZE],
        }
    }
}

impl DuplexReader {
    /// One read from `source` (which copies into the buffer it is given and says how much, or
    /// `None` when nothing is waiting) into `conn`.
    pub fn read(
        &mut self,
        conn: &mut Connection,
        mut source: impl FnMut(&mut [u8]) -> Option<usize>,
    ) {
        let now = std::time::Duration::ZERO;
        if conn.frame_remaining() >= LEND_THRESHOLD {
            let n = source(conn.recv_buf()).unwrap_or(0);
            conn.commit(now, n);
        } else if let Some(n) = source(&mut self.scratch) {
            conn.receive(now, &self.scratch[..n]);
        }
    }
}

// ------------------------------------------------------------------ replayed input

/// An endless stream of copies of one frame, handing out at most the rest of the current copy
/// per read: each iteration finds exactly one frame waiting, as if the socket had just received
/// it. Writes are discarded.
#[derive(Debug)]
pub struct Replay {
    frame: Vec<u8>,
    pos: usize,
}

impl Replay {
    pub fn new(frame: Vec<u8>) -> Replay {
        assert!(!frame.is_empty());
        Replay { frame, pos: 0 }
    }

    /// Copies the next bytes into `buf`, never past the end of the current copy.
    pub fn read_into(&mut self, buf: &mut [u8]) -> usize {
        let rest = &self.frame[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos = (self.pos + n) % self.frame.len();
        n
    }

    /// Reads one whole frame into a duplex connection, as the native server reads a socket.
    pub fn feed(&mut self, reader: &mut DuplexReader, conn: &mut Connection) {
        loop {
            reader.read(conn, |buf| Some(self.read_into(buf)));
            if self.pos == 0 {
                return;
            }
        }
    }
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.read_into(buf))
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.frame[this.pos..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos = (this.pos + n) % this.frame.len();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ------------------------------------------------------------------ discarded output

/// A socket that takes every byte written and throws it away (after the optimiser has had to
/// assume it was looked at). Reads find nothing.
#[derive(Debug, Default)]
pub struct Sink;

impl Read for Sink {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        std::hint::black_box(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Sink {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::hint::black_box(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::hint::black_box(bufs);
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ------------------------------------------------------------------ in-memory socket pair

/// Bytes written by one end and not yet read by the other.
#[derive(Debug, Default)]
struct Wire {
    bytes: Vec<u8>,
    read: usize,
}

/// One end of an in-memory, single-threaded socket pair: a write copies into the peer's wire,
/// a read copies out of our own. Reading an empty wire would block.
#[derive(Debug)]
pub struct Pipe {
    inbound: Rc<RefCell<Wire>>,
    outbound: Rc<RefCell<Wire>>,
}

/// Two connected ends.
pub fn pipe_pair() -> (Pipe, Pipe) {
    let a = Rc::new(RefCell::new(Wire::default()));
    let b = Rc::new(RefCell::new(Wire::default()));
    (
        Pipe {
            inbound: a.clone(),
            outbound: b.clone(),
        },
        Pipe {
            inbound: b,
            outbound: a,
        },
    )
}

impl Pipe {
    /// Copies waiting bytes into `buf`; `None` when there are none.
    pub fn read_into(&self, buf: &mut [u8]) -> Option<usize> {
        let mut wire = self.inbound.borrow_mut();
        let available = wire.bytes.len() - wire.read;
        if available == 0 {
            return None;
        }
        let n = available.min(buf.len());
        let start = wire.read;
        buf[..n].copy_from_slice(&wire.bytes[start..start + n]);
        wire.read += n;
        if wire.read == wire.bytes.len() {
            wire.bytes.clear();
            wire.read = 0;
        }
        Some(n)
    }

    pub fn write_from(&self, buf: &[u8]) -> usize {
        self.outbound.borrow_mut().bytes.extend_from_slice(buf);
        buf.len()
    }

    /// Writes all of a duplex connection's output, as a driver would.
    pub fn send_output(&self, conn: &mut Connection) {
        let n = self.write_from(conn.output());
        conn.consume(n);
    }

    /// True when the peer has written bytes we have not read.
    pub fn readable(&self) -> bool {
        let wire = self.inbound.borrow();
        wire.read < wire.bytes.len()
    }

    /// Reads everything waiting into a duplex connection, as the native server does. Like the
    /// peers, it stops when nothing is left instead of reading until "would block".
    pub fn receive_into(&self, reader: &mut DuplexReader, conn: &mut Connection) {
        while self.readable() {
            reader.read(conn, |buf| self.read_into(buf));
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_into(buf)
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.write_from(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut wire = self.inbound.borrow_mut();
        let available = wire.bytes.len() - wire.read;
        if available == 0 {
            return Poll::Pending;
        }
        let n = available.min(buf.remaining());
        let start = wire.read;
        buf.put_slice(&wire.bytes[start..start + n]);
        wire.read += n;
        if wire.read == wire.bytes.len() {
            wire.bytes.clear();
            wire.read = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.write_from(buf)))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(bufs.iter().map(|b| self.write_from(b)).sum()))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
