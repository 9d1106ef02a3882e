//! The stream: one [`Connection`] and one socket behind a mutex shared by the two halves.
//!
//! Whoever polls drives what it can: the writer flushes output and fires timers, the reader
//! does the same and also reads. Every socket and timer poll uses one waker that wakes both
//! halves, so a readiness registered by one task (the socket and `Sleep` keep only the last
//! waker) never strands the other.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use duplex_core::{
    CloseCode, Closed, Connection, ConnectionState, Event, Message, Role, SendError,
};
use futures_core::Stream;
use futures_sink::Sink;
use parking_lot::{Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::Error;

/// Default bound on queued output above which [`Sink::poll_ready`] waits (1 MiB).
pub const DEFAULT_MAX_BUFFERED: usize = 1 << 20;

/// Size of the stack buffer small reads go through.
const SCRATCH: usize = 32 << 10;

/// Pieces of output written by one vectored write at most.
const MAX_PIECES: usize = 16;

/// How often the time reads are dated with is brought up to date (see `Inner::read_time`).
const READ_CLOCK_STEP: Duration = Duration::from_millis(1);

/// One half's waker and whether that half waits on the stream.
#[derive(Debug, Default)]
struct Slot {
    /// Replaced only under the state's lock, when the half polls with another waker (the
    /// state keeps a copy to compare with, so an unchanged waker costs no lock here).
    waker: Mutex<Option<Waker>>,
    /// Set while the half is being polled or waits (its last poll was `Pending`); a wake
    /// clears it, so a half that is not waiting (a writer parked on something else) is not
    /// woken at all. Two wakes racing may both wake the half: a spare wake is harmless, and
    /// a wake that clears the flag always wakes, so none is lost.
    parked: AtomicBool,
}

impl Slot {
    fn wake(&self) {
        // A load, not a swap: the common case (the writer, not waiting) costs no atomic write.
        if self.parked.load(Ordering::Acquire) {
            self.parked.store(false, Ordering::Relaxed);
            if let Some(waker) = self.waker.lock().as_ref() {
                waker.wake_by_ref();
            }
        }
    }
}

/// The reader's and the writer's wakers; waking the pair wakes both (those that wait).
#[derive(Debug, Default)]
struct Wakers {
    reader: Slot,
    writer: Slot,
    /// The timer woke: the sleep must be polled again (it is registered otherwise).
    timer_fired: AtomicBool,
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.reader.wake();
        self.writer.wake();
    }
}

/// The waker the timer is polled with: it records that the timer fired, then wakes both
/// halves. Between firings the sleep stays registered and is not polled again.
#[derive(Debug)]
struct TimerWake(Arc<Wakers>);

impl Wake for TimerWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.timer_fired.store(true, Ordering::Release);
        self.0.wake_by_ref();
    }
}

struct Inner<S> {
    io: S,
    conn: Connection,
    /// Connection time zero; the core's `now` is the time elapsed since.
    start: Instant,
    /// The time reads are dated with, and until when it holds (`Self::read_time`).
    read_clock: Duration,
    read_clock_until: Instant,
    sleep: Pin<Box<Sleep>>,
    /// The deadline `sleep` is set to and registered for (with `timer_waker`), until it fires.
    armed: Option<Duration>,
    /// The core's `timers_version` when `sleep` was last found set early enough for the next
    /// deadline (or there was none): until it changes or the sleep fires, the deadlines have
    /// only moved later and need not be read again.
    timers_seen: Option<u32>,
    wakers: Arc<Wakers>,
    timer_waker: Waker,
    /// The socket returned EOF or a read error: never read again.
    read_closed: bool,
    /// A write failed: output is discarded from now on.
    broken: bool,
    /// The socket has output written since its last flush.
    unflushed: bool,
    shutdown: bool,
    io_error: Option<io::Error>,
    failure: Option<duplex_core::Error>,
    closed: Option<Closed>,
    max_buffered: usize,
    /// The receiving side is parked waiting for data (it writes pending output when woken).
    reader_waiting: bool,
    /// Copies of the wakers in the reader's and the writer's slots.
    reader_waker: Option<Waker>,
    writer_waker: Option<Waker>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Inner<S> {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The time a read is dated with, to within [`READ_CLOCK_STEP`]: converting an `Instant`
    /// into time since `start` costs more than reading the clock, so it is done once per step
    /// and the reads of that step share it. The core's deadlines that follow reads (idle,
    /// buffer keep) thus come at most a step early.
    fn read_time(&mut self) -> Duration {
        let now = Instant::now();
        if now >= self.read_clock_until {
            self.read_clock = now.saturating_duration_since(self.start);
            self.read_clock_until = now + READ_CLOCK_STEP;
        }
        self.read_clock
    }

    fn io_error_copy(&self) -> Error {
        match &self.io_error {
            Some(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
            None => Error::Closed,
        }
    }

    /// The socket is gone: no more reads or writes; the core reports the end.
    fn fail_io(&mut self, error: io::Error) {
        if self.io_error.is_none() {
            self.io_error = Some(error);
        }
        self.broken = true;
        self.read_closed = true;
        let n = self.conn.buffered_amount();
        self.conn.consume(n);
        let now = self.now();
        self.conn.receive_eof(now);
    }

    /// Writes the pending output and flushes the socket. Ready once all of it is written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.broken && !self.conn.output().is_empty() {
            // Large payloads sent owned are pieces of their own: one vectored write for all.
            let write = if self.conn.output().len() < self.conn.buffered_amount()
                && self.io.is_write_vectored()
            {
                let mut pieces: [&[u8]; MAX_PIECES] = [&[]; MAX_PIECES];
                let n = self.conn.output_vectored(&mut pieces);
                let slices: [IoSlice<'_>; MAX_PIECES] = pieces.map(IoSlice::new);
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n])
            } else {
                Pin::new(&mut self.io).poll_write(cx, self.conn.output())
            };
            match write {
                Poll::Ready(Ok(0)) => {
                    self.fail_io(io::ErrorKind::WriteZero.into());
                }
                Poll::Ready(Ok(n)) => {
                    self.conn.consume(n);
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => self.fail_io(e),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed && !self.broken {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => self.fail_io(e),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.broken {
            let n = self.conn.buffered_amount();
            self.conn.consume(n);
        }
        Poll::Ready(())
    }

    /// Fires every deadline the core has reached and arms the timer for the next one.
    ///
    /// The sleep is polled only when it is (re)armed or has fired: a deadline that moved later
    /// (the idle timeout after each message) leaves it armed at the earlier time, and it is
    /// re-armed when it fires early. The deadlines are not even read while the core's
    /// `timers_version` stays the same (none moved earlier): messages in between cost a
    /// comparison. Returns whether a deadline was handled (it may have queued an event).
    #[inline]
    fn poll_timer(&mut self) -> bool {
        if !self.wakers.timer_fired.load(Ordering::Acquire)
            && self.timers_seen == Some(self.conn.timers_version())
        {
            // No deadline moved earlier since the sleep was last found early enough.
            return false;
        }
        self.run_timers()
    }

    /// [`Self::poll_timer`] once the deadlines must be read.
    #[inline(never)]
    fn run_timers(&mut self) -> bool {
        let mut handled = false;
        while let Some(deadline) = self.conn.poll_timeout() {
            if self.armed.is_some_and(|armed| armed <= deadline)
                && !self.wakers.timer_fired.load(Ordering::Acquire)
            {
                self.timers_seen = Some(self.conn.timers_version());
                return handled;
            }
            self.wakers.timer_fired.store(false, Ordering::Relaxed);
            if self.armed != Some(deadline) {
                self.sleep.as_mut().reset(self.start + deadline);
                self.armed = Some(deadline);
            }
            let mut cx = Context::from_waker(&self.timer_waker);
            if self.sleep.as_mut().poll(&mut cx).is_pending() {
                self.timers_seen = Some(self.conn.timers_version());
                return handled;
            }
            self.armed = None;
            let now = self.now().max(deadline);
            self.conn.handle_timeout(now);
            handled = true;
        }
        self.timers_seen = Some(self.conn.timers_version());
        handled
    }

    fn next_event(&mut self) -> Option<Event> {
        let event = self.conn.poll_event()?;
        match &event {
            Event::Error(e) => self.failure = Some(e.clone()),
            Event::Closed(c) => self.closed = Some(c.clone()),
            _ => {}
        }
        Some(event)
    }

    /// The next core event, reading as needed; `None` once the connection is over and its
    /// last bytes are written.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.next_event() {
                return Poll::Ready(Some(event));
            }
            // Timers run before this task waits (below), and here when one fired or the
            // connection is not open (a close or handshake deadline may have just been set),
            // so a peer whose bytes keep coming cannot hold them off. While an open
            // connection reads data, the deadlines it derives only move later.
            if (self.wakers.timer_fired.load(Ordering::Acquire) || !self.conn.is_open())
                && self.poll_timer()
            {
                // It may have queued an event (a timeout) or output (a ping).
                continue;
            }
            // Nothing left to report: write what the events so far queued (echoes, pongs,
            // pings) in one go before waiting for more data. While a burst of messages is
            // being reported, output accumulates up to the bound `poll_ready` enforces.
            let _ = self.poll_write_out(cx);
            if self.conn.is_terminated() || self.broken {
                ready!(self.poll_write_out(cx));
                if !self.shutdown {
                    if !self.broken {
                        // The peer may already be gone; the connection is over either way.
                        let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
                    }
                    self.shutdown = true;
                    if self.lingers() {
                        let until = self.now() + self.conn.config().close_timeout();
                        self.sleep.as_mut().reset(self.start + until);
                        self.armed = None;
                        self.timers_seen = None;
                    }
                }
                ready!(self.poll_linger(cx));
                return Poll::Ready(None);
            }
            let read = if self.read_closed {
                // Only a timer can end the connection now.
                Poll::Pending
            } else if self.conn.reads_in_place() {
                // A frame in progress, or frames arriving: the read lands in the connection's
                // own buffer (which it keeps meanwhile), without a copy and without zeroing.
                let buf = self.conn.append_buf();
                let read = pin!(self.io.read_buf(buf)).poll(cx);
                if let Poll::Ready(Ok(n)) = read {
                    if n > 0 {
                        let now = self.read_time();
                        self.conn.commit_appended(now);
                    }
                }
                read
            } else {
                self.poll_read_idle(cx)
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    self.read_closed = true;
                    let now = self.now();
                    self.conn.receive_eof(now);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => self.fail_io(e),
                Poll::Pending => {
                    // About to wait: fire what is due and arm the timer for the next deadline.
                    if self.poll_timer() {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// A read of an idle connection, through the stack, so a connection waiting for data
    /// holds no receive buffer (the core drops its own once its traffic stops). Left
    /// uninitialised: zeroing it would cost more than the read. A function of its own, so
    /// the stack frame of every other poll stays small (a frame this large is probed page
    /// by page on entry).
    #[inline(never)]
    fn poll_read_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut buf = ReadBuf::uninit(&mut scratch);
        let read = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        if let Poll::Ready(Ok(())) = read {
            if n > 0 {
                let now = self.read_time();
                self.conn.receive(now, buf.filled());
            }
        }
        read.map_ok(|()| n)
    }

    /// The connection failed on what the peer sent, or a server's ended with a close handshake;
    /// either way the peer may still be sending (a peer may send after its close frame:
    /// Autobahn 7.1.3 sends a ping). A client's core already waits for the server's FIN after
    /// a close handshake (the server closes TCP first), up to the close timeout.
    fn lingers(&self) -> bool {
        !self.read_closed
            && !self.broken
            && (self.failure.as_ref().is_some_and(|e| e.caused_by_input())
                || (self.conn.role() == Role::Server
                    && self.closed.as_ref().is_some_and(|c| c.clean)))
    }

    /// After a failure caused by the peer's input or a close handshake (see [`Self::lingers`]),
    /// with the FIN sent:
    /// input is read and discarded until the peer's FIN, a read error or the close timeout
    /// (`sleep`, set when the FIN went out). Dropping a socket with unread bytes makes the
    /// kernel send a RST, which can destroy the close frame before the peer reads it.
    #[inline(never)]
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.lingers() {
            let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
            let mut buf = ReadBuf::uninit(&mut scratch);
            let read = Pin::new(&mut self.io).poll_read(cx, &mut buf);
            if matches!(read, Poll::Ready(Err(_))) || read.is_ready() && buf.filled().is_empty() {
                self.read_closed = true;
                break;
            }
            let mut timer = Context::from_waker(&self.timer_waker);
            if self.sleep.as_mut().poll(&mut timer).is_ready() {
                self.read_closed = true;
                break;
            }
            if read.is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }

    /// The next message; the error the connection failed with, then `None` at the end.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        let next = self.poll_next_message(cx);
        self.reader_waiting = next.is_pending();
        next
    }

    fn poll_next_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        loop {
            match ready!(self.poll_event(cx)) {
                Some(Event::Message(message)) => return Poll::Ready(Some(Ok(message))),
                Some(_) => {}
                None => {
                    // Reported once the close frame and the last output are written, so an
                    // application that stops at the first error still sent them.
                    if let Some(e) = self.io_error.take() {
                        self.failure = None;
                        return Poll::Ready(Some(Err(Error::Io(e))));
                    }
                    if let Some(e) = self.failure.take() {
                        return Poll::Ready(Some(Err(Error::Protocol(e))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn send_error(&self, error: SendError) -> Error {
        match error {
            SendError::NotOpen if self.broken => self.io_error_copy(),
            SendError::NotOpen => Error::Closed,
            other => Error::Send(other),
        }
    }

    /// Queues a message in the connection's output. Owned: a large payload goes out as it is,
    /// without a copy.
    fn queue(&mut self, message: Message) -> Result<(), Error> {
        self.conn
            .send_owned(message)
            .map_err(|e| self.send_error(e))
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let _ = self.poll_timer();
        // Below the bound nothing is written here, so messages queued in a row (`feed`,
        // `send_all`) leave in one write.
        if self.conn.buffered_amount() >= self.max_buffered && self.poll_write_out(cx).is_pending()
        {
            return Poll::Pending;
        }
        if !self.conn.is_open() {
            return Poll::Ready(Err(self.send_error(SendError::NotOpen)));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let _ = self.poll_timer();
        ready!(self.poll_write_out(cx));
        if self.broken {
            return Poll::Ready(Err(self.io_error_copy()));
        }
        Poll::Ready(Ok(()))
    }
}

struct Shared<S> {
    inner: Mutex<Inner<S>>,
    wakers: Arc<Wakers>,
    waker: Waker,
}

impl<S> std::fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("WebSocketStream")
            .field("connection", &inner.conn)
            .field("max_buffered", &inner.max_buffered)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Side {
    Reader,
    Writer,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shared<S> {
    fn new(io: S, conn: Connection, start: Instant) -> Arc<Shared<S>> {
        let wakers = Arc::new(Wakers::default());
        let waker = Waker::from(wakers.clone());
        let timer_waker = Waker::from(Arc::new(TimerWake(wakers.clone())));
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                io,
                conn,
                start,
                read_clock: Duration::ZERO,
                read_clock_until: start,
                sleep: Box::pin(tokio::time::sleep_until(start)),
                armed: None,
                timers_seen: None,
                wakers: wakers.clone(),
                timer_waker,
                read_closed: false,
                broken: false,
                unflushed: false,
                shutdown: false,
                io_error: None,
                failure: None,
                closed: None,
                max_buffered: DEFAULT_MAX_BUFFERED,
                reader_waiting: false,
                reader_waker: None,
                writer_waker: None,
            }),
            wakers,
            waker,
        })
    }

    /// Runs `f` on the state after recording the caller's waker for its side. While the other
    /// half waits, `f` gets a context whose waker wakes both halves: whichever half polls the
    /// socket last holds its registration, and the other may be waiting for the same
    /// readiness. Otherwise (a stream used from one task, or the other half not waiting) `f`
    /// gets the caller's own context, and readiness wakes the task without the detour. That
    /// is safe because a half that waits on the socket has polled, in its own last poll, every
    /// direction it waits for: once it waits, the other half's polls register the shared
    /// waker again.
    fn with<T>(
        &self,
        cx: &mut Context<'_>,
        side: Side,
        f: impl FnOnce(&mut Inner<S>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let mut inner = self.inner.lock();
        let (slot, other, seen) = match side {
            Side::Reader => (
                &self.wakers.reader,
                &self.wakers.writer,
                &mut inner.reader_waker,
            ),
            Side::Writer => (
                &self.wakers.writer,
                &self.wakers.reader,
                &mut inner.writer_waker,
            ),
        };
        if !seen.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *seen = Some(cx.waker().clone());
            *slot.waker.lock() = Some(cx.waker().clone());
        }
        // Marked before polling, so a wake during the poll is not lost.
        slot.parked.store(true, Ordering::Release);
        let waker = if other.parked.load(Ordering::Acquire) {
            &self.waker
        } else {
            cx.waker()
        };
        let result = f(&mut inner, &mut Context::from_waker(waker));
        if result.is_ready() {
            slot.parked.store(false, Ordering::Relaxed);
        }
        result
    }

    fn state(&self) -> MutexGuard<'_, Inner<S>> {
        self.inner.lock()
    }

    /// One poll of `send`: wait for room, queue the message, write it out (under one lock).
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        message: &mut Option<Message>,
    ) -> Poll<Result<(), Error>> {
        self.with(cx, Side::Writer, |inner, cx| {
            if message.is_some() {
                ready!(inner.poll_ready(cx))?;
                if let Some(message) = message.take() {
                    inner.queue(message)?;
                }
                // From here the message is in the connection's output: dropping the future
                // loses nothing, the next poll of either half writes it.
            }
            inner.poll_flush(cx)
        })
    }

    /// One poll of `feed`: below the output bound, queue at once (one lock, no waker
    /// recorded); above it, wait (and write) until it is below again.
    fn poll_feed(
        &self,
        cx: &mut Context<'_>,
        message: &mut Option<Message>,
    ) -> Poll<Result<(), Error>> {
        let mut inner = self.state();
        if inner.conn.buffered_amount() >= inner.max_buffered {
            drop(inner);
            ready!(self.with(cx, Side::Writer, Inner::poll_ready))?;
            inner = self.state();
        }
        if let Some(message) = message.take() {
            inner.queue(message)?;
        }
        let reader_waiting = inner.reader_waiting;
        drop(inner);
        self.wake_waiting_reader(reader_waiting);
        Poll::Ready(Ok(()))
    }

    /// After `feed`: a receiving half parked in another task writes the message out when
    /// woken.
    fn wake_waiting_reader(&self, reader_waiting: bool) {
        if reader_waiting {
            self.wakers.reader.wake();
        }
    }

    async fn flush(&self) -> Result<(), Error> {
        poll_fn(|cx| self.with(cx, Side::Writer, Inner::poll_flush)).await
    }

    async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        {
            let mut inner = self.state();
            if let Err(e) = inner.conn.close(code, reason) {
                return Err(inner.send_error(e));
            }
        }
        self.flush().await
    }

    async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        {
            let mut inner = self.state();
            if let Err(e) = inner.conn.send_ping(payload) {
                return Err(inner.send_error(e));
            }
        }
        self.flush().await
    }

    fn start_send(&self, message: Message) -> Result<(), Error> {
        self.state().queue(message)
    }

    fn poll_close(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.with(cx, Side::Writer, |inner, cx| {
            if inner.conn.is_open() {
                // Only Open is checked, so close cannot fail here.
                let _ = inner.conn.close(CloseCode::Normal, "");
            }
            inner.poll_flush(cx)
        })
    }
}

macro_rules! common_methods {
    () => {
        /// Sends a message and writes it out. Waits first while more than the output bound
        /// ([`Self::set_max_buffered`]) is queued. Cancellation-safe: once the message is
        /// accepted it is in the connection's output, and dropping the future loses nothing.
        pub fn send(
            &self,
            message: impl Into<Message>,
        ) -> impl Future<Output = Result<(), Error>> + '_ {
            let mut message = Some(message.into());
            poll_fn(move |cx| self.shared.poll_send(cx, &mut message))
        }

        /// Queues a message without waiting for it to be written (after waiting, like
        /// [`Self::send`], while the output is above its bound). It goes out with the next
        /// `send` or `flush`, or as soon as the receiving side waits for data: an echo loop
        /// of `recv` and `feed` writes a burst of replies at once instead of one by one.
        pub fn feed(
            &self,
            message: impl Into<Message>,
        ) -> impl Future<Output = Result<(), Error>> + '_ {
            let mut message = Some(message.into());
            poll_fn(move |cx| self.shared.poll_feed(cx, &mut message))
        }

        /// Starts the close handshake with `code` and `reason` and writes the close frame.
        /// The reading side ends (`None`) when the peer answers or the close timeout passes.
        pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
            self.shared.close(code, reason).await
        }

        /// Sends a ping (at most 125 bytes); its pong is consumed by the connection.
        pub async fn ping(&self, payload: impl AsRef<[u8]>) -> Result<(), Error> {
            self.shared.ping(payload.as_ref()).await
        }

        /// Writes out everything queued.
        pub async fn flush(&self) -> Result<(), Error> {
            self.shared.flush().await
        }

        /// Bytes queued in the connection and not yet taken by the socket.
        pub fn buffered_amount(&self) -> usize {
            self.shared.state().conn.buffered_amount()
        }

        /// Sets the output bound above which sending waits for the socket to drain.
        pub fn set_max_buffered(&self, bytes: usize) {
            self.shared.state().max_buffered = bytes;
        }

        /// Connecting, open, closing or closed.
        pub fn state(&self) -> ConnectionState {
            self.shared.state().conn.state()
        }

        /// The subprotocol agreed in the handshake.
        pub fn protocol(&self) -> Option<String> {
            self.shared.state().conn.protocol().map(str::to_owned)
        }

        /// How the connection ended, once it has.
        pub fn closed(&self) -> Option<Closed> {
            self.shared.state().closed.clone()
        }
    };
}

/// A WebSocket connection over any tokio byte stream: a [`Stream`] of received messages and a
/// [`Sink`] of messages to send.
///
/// Pings are answered, and the heartbeat, idle and close timers of the [`duplex_core::Config`]
/// run, while the stream is polled (awaiting the next message is enough). The stream yields
/// `Err` once when the connection fails (after its close frame is written), then `None`; a
/// clean close ends it with `None`, and [`WebSocketStream::closed`] tells the code.
pub struct WebSocketStream<S> {
    shared: Arc<Shared<S>>,
}

impl<S> std::fmt::Debug for WebSocketStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    /// Wraps a connection created at `start` (its time zero). Any of its pending output and
    /// events are driven by the stream.
    pub fn from_connection(io: S, conn: Connection, start: Instant) -> WebSocketStream<S> {
        WebSocketStream {
            shared: Shared::new(io, conn, start),
        }
    }

    /// Splits into a sending and a receiving half that can move into different tasks. Closing
    /// from the sending half ends the receiving half once the peer answers.
    pub fn split(self) -> (SendHalf<S>, RecvHalf<S>) {
        (
            SendHalf {
                shared: self.shared.clone(),
            },
            RecvHalf {
                shared: self.shared,
            },
        )
    }

    /// The next core event (handshake events included), for the handshake drivers.
    pub(crate) async fn next_event(&self) -> Option<Event> {
        poll_fn(|cx| self.shared.with(cx, Side::Reader, Inner::poll_event)).await
    }

    pub(crate) fn with_connection<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        f(&mut self.shared.state().conn)
    }

    /// The next message, `Err` once if the connection failed, then `None`.
    pub fn recv(&self) -> impl Future<Output = Option<Result<Message, Error>>> + '_ {
        poll_fn(|cx| self.shared.with(cx, Side::Reader, Inner::poll_message))
    }

    common_methods!();
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocketStream<S> {
    type Item = Result<Message, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.with(cx, Side::Reader, Inner::poll_message)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocketStream<S> {
    type Error = Error;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.with(cx, Side::Writer, Inner::poll_ready)
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.shared.start_send(item)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.with(cx, Side::Writer, Inner::poll_flush)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.poll_close(cx)
    }
}

/// The sending half of a split [`WebSocketStream`]: a [`Sink`] of messages.
pub struct SendHalf<S> {
    shared: Arc<Shared<S>>,
}

impl<S> std::fmt::Debug for SendHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SendHalf<S> {
    common_methods!();
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for SendHalf<S> {
    type Error = Error;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.with(cx, Side::Writer, Inner::poll_ready)
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.shared.start_send(item)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.with(cx, Side::Writer, Inner::poll_flush)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.poll_close(cx)
    }
}

/// The receiving half of a split [`WebSocketStream`]: a [`Stream`] of messages. It also answers
/// pings and runs the timers, so keep polling it.
pub struct RecvHalf<S> {
    shared: Arc<Shared<S>>,
}

impl<S> std::fmt::Debug for RecvHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RecvHalf<S> {
    /// The next message, `Err` once if the connection failed, then `None`.
    pub fn recv(&self) -> impl Future<Output = Option<Result<Message, Error>>> + '_ {
        poll_fn(|cx| self.shared.with(cx, Side::Reader, Inner::poll_message))
    }

    /// How the connection ended, once it has.
    pub fn closed(&self) -> Option<Closed> {
        self.shared.state().closed.clone()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for RecvHalf<S> {
    type Item = Result<Message, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.with(cx, Side::Reader, Inner::poll_message)
    }
}
