//! Connect mode: each of the worker's slots opens a connection, completes the handshake,
//! closes it (close handshake, then the server closes TCP) and starts over. The latency is
//! from the TCP connect to the 101 response; the rate counts handshakes completed in the
//! window, each slot's cycle including the close.

use std::time::{Duration, Instant};

use duplex_core::{CloseCode, Event};
use mio::{Events, Poll, Token};

use crate::client::{Client, Failure, Target, seed};
use crate::pool::{self, Control, READ_BUFFER, Tally};

/// A cycle that has not ended by then is abandoned and counted as an error.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often slots are checked for timeouts and refilled after a failed connect.
const SWEEP: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Cycle {
    client: Client,
    started: Instant,
    opened: bool,
}

/// Starts a cycle in slot `i`; a failed connect is counted and leaves the slot empty.
fn start(
    slot: &mut Option<Cycle>,
    i: usize,
    index: u64,
    target: &Target,
    poll: &Poll,
    tally: &mut Tally,
) {
    if let Some(mut old) = slot.take() {
        old.client.deregister(poll.registry());
    }
    let now = Instant::now();
    match Client::connect(target, seed(index as usize), poll.registry(), Token(i), now) {
        Ok(client) => {
            *slot = Some(Cycle {
                client,
                started: now,
                opened: false,
            })
        }
        Err(e) => tally.error(format!("connect: {e}")),
    }
}

pub fn worker(target: &Target, indices: &[usize], control: Control) -> Result<Tally, String> {
    let mut poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut tally = Tally::new();
    let Some(window) = pool::ready_and_wait(&control) else {
        return Ok(tally);
    };
    let mut slots: Vec<Option<Cycle>> = indices.iter().map(|_| None).collect();
    // Distinct seeds for every connection of the run.
    let mut serial = indices.first().copied().unwrap_or(0) as u64 * 1_000_000_007;
    let mut last_sweep = Instant::now();
    for (i, slot) in slots.iter_mut().enumerate() {
        serial += 1;
        start(slot, i, serial, target, &poll, &mut tally);
    }
    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }
        pool::wait(&mut poll, &mut events, Some((window.end - now).min(SWEEP)))?;
        for event in events.iter() {
            let i = event.token().0;
            let Some(cycle) = &mut slots[i] else {
                continue;
            };
            let started = cycle.started;
            let opened = &mut cycle.opened;
            let tally_ref = &mut tally;
            let result = cycle.client.service(
                target,
                poll.registry(),
                event,
                &mut buf,
                |conn, event, t| {
                    match event {
                        Event::Open => {
                            *opened = true;
                            if window.contains(t) {
                                tally_ref.record(t.saturating_duration_since(started));
                            }
                            conn.close(CloseCode::Normal, "")
                                .map_err(|e| Failure::Protocol(format!("cannot close: {e}")))?;
                        }
                        Event::Error(e) if !*opened => {
                            return Err(Failure::Protocol(format!("handshake failed: {e}")));
                        }
                        _ => {}
                    }
                    Ok(())
                },
            );
            let done = match result {
                Err(e) => {
                    tally.error(e.to_string());
                    true
                }
                Ok(()) => cycle.client.eof || cycle.client.conn.is_terminated(),
            };
            if done {
                serial += 1;
                start(&mut slots[i], i, serial, target, &poll, &mut tally);
            }
        }
        let now = Instant::now();
        if now - last_sweep >= SWEEP {
            last_sweep = now;
            for (i, slot) in slots.iter_mut().enumerate() {
                let stuck = slot
                    .as_ref()
                    .is_some_and(|c| now - c.started >= CYCLE_TIMEOUT);
                if stuck {
                    tally.error("a connect/handshake/close cycle took over 5 s".into());
                }
                if stuck || slot.is_none() {
                    serial += 1;
                    start(slot, i, serial, target, &poll, &mut tally);
                }
            }
        }
    }
    let open: Vec<Client> = slots.into_iter().flatten().map(|c| c.client).collect();
    pool::close_all(&mut poll, &mut events, target, open, &mut buf);
    Ok(tally)
}
