//! What every mode shares: the measured window, the tally a worker returns, and opening and
//! closing a set of connections on one `Poll`.

use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use duplex_core::{CloseCode, Event};
use hdrhistogram::Histogram;
use mio::{Events, Poll, Token};

use crate::client::{Client, Failure, Target, seed};

/// Handshakes in progress at once while a worker opens its connections, so a large count does
/// not overflow the server's accept backlog.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// Time allowed for closing handshakes at the end of a run.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Largest latency recorded (longer ones count as this).
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Size of the read buffer shared by a worker's connections.
pub const READ_BUFFER: usize = 256 * 1024;

/// The measured window, the same for every worker. Operations completing inside
/// `[start, end)` are counted; the warm-up is before `start`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

/// How a worker talks to the main thread: it reports once its connections are open, then
/// waits for the window (a closed channel means: give up).
#[derive(Debug)]
pub struct Control {
    pub ready: Sender<Result<(), String>>,
    pub window: Receiver<Window>,
}

/// What a worker measured.
#[derive(Debug)]
pub struct Tally {
    /// Round-trip (or handshake) latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Round trips (or handshakes) completed inside the window.
    pub ops: u64,
    /// Failed attempts that did not end the run (handshake mode only).
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("valid histogram bounds"),
            ops: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(ns);
        self.ops += 1;
    }

    pub fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }

    pub fn merge(&mut self, other: Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// A connection's number in the whole run (for error messages) beside its token here.
pub fn describe(indices: &[usize], token: usize, failure: &Failure) -> String {
    format!("connection {}: {failure}", indices[token])
}

/// A worker's connections, open, with the poll and read buffer that serve them.
pub struct Opened {
    pub poll: Poll,
    pub events: Events,
    pub buf: Vec<u8>,
    pub clients: Vec<Client>,
}

/// The target of connection `index` when connections are spread over `targets`: round-robin.
pub fn target_of(targets: &[Target], index: usize) -> &Target {
    &targets[index % targets.len()]
}

/// Opens the connections numbered `indices` for a worker, connection `i` to
/// [`target_of`]`(targets, i)`; a failure is also reported to the main thread through `ready`
/// (e.g. [`Control::ready`]), so it stops waiting for this worker.
pub fn open_for_worker(
    targets: &[Target],
    indices: &[usize],
    deadline: Instant,
    ready: &Sender<Result<(), String>>,
) -> Result<Opened, String> {
    let opened = Poll::new()
        .map_err(|e| format!("cannot create a poll: {e}"))
        .and_then(|mut poll| {
            let mut events = Events::with_capacity(1024);
            let mut buf = vec![0u8; READ_BUFFER];
            let clients = open_all(&mut poll, &mut events, targets, indices, &mut buf, deadline)?;
            Ok(Opened {
                poll,
                events,
                buf,
                clients,
            })
        });
    if let Err(e) = &opened {
        let _ = ready.send(Err(e.clone()));
    }
    opened
}

/// Opens one connection per entry of `indices` (their numbers in the whole run), each to
/// [`target_of`] its number; the token of `result[i]` is `Token(i)`. Fails on the first
/// connection that does not open.
pub fn open_all(
    poll: &mut Poll,
    events: &mut Events,
    targets: &[Target],
    indices: &[usize],
    buf: &mut [u8],
    deadline: Instant,
) -> Result<Vec<Client>, String> {
    let count = indices.len();
    let mut clients: Vec<Client> = Vec::with_capacity(count);
    let mut open = vec![false; count];
    let mut opened = 0;
    while opened < count {
        let now = Instant::now();
        while clients.len() < count && clients.len() - opened < MAX_PENDING_HANDSHAKES {
            let i = clients.len();
            let target = target_of(targets, indices[i]);
            let client = Client::connect(target, seed(indices[i]), poll.registry(), Token(i), now)
                .map_err(|e| describe(indices, i, &e))?;
            clients.push(client);
        }
        if now >= deadline {
            return Err(format!(
                "only {opened} of {count} connections opened in time (is the server up?)"
            ));
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        self::wait(poll, events, Some(wait))?;
        for event in events.iter() {
            let i = event.token().0;
            let is_open = &mut open[i];
            let was_open = *is_open;
            clients[i]
                .service(
                    target_of(targets, indices[i]),
                    poll.registry(),
                    event,
                    buf,
                    |_, event, _| {
                        match event {
                            Event::Open => *is_open = true,
                            Event::Error(e) => {
                                return Err(Failure::Protocol(format!("handshake failed: {e}")));
                            }
                            Event::Closed(closed) => {
                                return Err(Failure::Protocol(format!(
                                    "closed during the handshake: {}",
                                    closed.code
                                )));
                            }
                            _ => {}
                        }
                        Ok(())
                    },
                )
                .map_err(|e| describe(indices, i, &e))?;
            if *is_open && !was_open {
                opened += 1;
            }
        }
    }
    Ok(clients)
}

/// Closes every connection with 1000 and waits (at most [`CLOSE_GRACE`]) for the close
/// handshakes to complete and the server to close TCP. Failures no longer matter here.
pub fn close_all(
    poll: &mut Poll,
    events: &mut Events,
    target: &Target,
    clients: Vec<Client>,
    buf: &mut [u8],
) {
    let mut clients: Vec<Option<Client>> = clients.into_iter().map(Some).collect();
    let mut live = 0;
    for (i, slot) in clients.iter_mut().enumerate() {
        let Some(client) = slot else { continue };
        let closing = client.conn.close(CloseCode::Normal, "done").is_ok()
            && client.flush(poll.registry(), Token(i)).is_ok();
        if closing && !client.eof {
            live += 1;
        } else {
            client.deregister(poll.registry());
            *slot = None;
        }
    }
    let deadline = Instant::now() + CLOSE_GRACE;
    while live > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if wait(poll, events, Some(deadline - now)).is_err() {
            break;
        }
        for event in events.iter() {
            let i = event.token().0;
            let Some(Some(client)) = clients.get_mut(i) else {
                continue;
            };
            let result = client.service(target, poll.registry(), event, buf, |_, _, _| Ok(()));
            if result.is_err() || client.eof || client.conn.is_terminated() {
                client.deregister(poll.registry());
                clients[i] = None;
                live -= 1;
            }
        }
    }
}

/// `Poll::poll`, counting an interruption by a signal (EINTR, which epoll also reports after the
/// process was stopped and continued) as a wake-up with no events rather than a failure.
pub fn wait(poll: &mut Poll, events: &mut Events, timeout: Option<Duration>) -> Result<(), String> {
    match poll.poll(events, timeout) {
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        other => other.map_err(|e| format!("poll failed: {e}")),
    }
}

/// Reports the worker ready and waits for the window; `None` when the run was called off.
pub fn ready_and_wait(control: &Control) -> Option<Window> {
    control.ready.send(Ok(())).ok()?;
    control.window.recv().ok()
}
