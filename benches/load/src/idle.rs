//! Idle mode: open the connections, then hold them without traffic for the duration. The main
//! thread measures the server's memory before and after; here any connection the server drops
//! fails the run.

use std::time::Instant;

use duplex_core::Event;

use crate::client::{Failure, Target};
use crate::pool::{self, Control, Tally, describe};

pub fn worker(
    target: &Target,
    indices: &[usize],
    open_deadline: Instant,
    control: Control,
) -> Result<Tally, String> {
    let pool::Opened {
        mut poll,
        mut events,
        mut buf,
        mut clients,
    } = pool::open_for_worker(
        std::slice::from_ref(target),
        indices,
        open_deadline,
        &control.ready,
    )?;
    let tally = Tally::new();
    let Some(window) = pool::ready_and_wait(&control) else {
        return Ok(tally);
    };
    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }
        pool::wait(&mut poll, &mut events, Some(window.end - now))?;
        for event in events.iter() {
            let i = event.token().0;
            clients[i]
                .service(
                    target,
                    poll.registry(),
                    event,
                    &mut buf,
                    |_, event, _| match event {
                        Event::Error(e) => {
                            Err(Failure::Protocol(format!("idle connection failed: {e}")))
                        }
                        Event::Closed(closed) => Err(Failure::Protocol(format!(
                            "the server closed an idle connection: {} {:?}",
                            closed.code, closed.reason
                        ))),
                        _ => Ok(()),
                    },
                )
                .map_err(|e| describe(indices, i, &e))?;
        }
    }
    pool::close_all(&mut poll, &mut events, target, clients, &mut buf);
    Ok(tally)
}
