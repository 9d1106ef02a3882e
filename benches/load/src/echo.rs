//! Echo mode: every connection keeps `in_flight` messages outstanding; each echo is checked
//! byte for byte against the message sent and its round trip recorded, then the next is sent.
//!
//! Every message is the run's payload (generated once) with the connection's sequence number
//! written in hex over its first 16 bytes, so a lost, repeated or reordered echo is caught as
//! surely as a corrupted one. Sending rewrites those 16 bytes in a per-connection copy of the
//! payload; nothing else is allocated per message beyond what the core does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use duplex_core::{Connection, Event, Message};
use mio::Token;

use crate::client::{Failure, Target};
use crate::pool::{self, Control, Tally, describe};

/// Bytes at the front of each message that carry its sequence number.
const SEQ_DIGITS: usize = 16;

/// What every connection sends.
#[derive(Debug, Clone)]
pub struct EchoSpec {
    pub text: bool,
    pub in_flight: usize,
    /// The payload, generated once for the run (ASCII for text).
    pub payload: Arc<Vec<u8>>,
}

impl EchoSpec {
    pub fn new(size: usize, text: bool, in_flight: usize) -> EchoSpec {
        let payload = (0..size)
            .map(|i| {
                if text {
                    b'a' + (i % 26) as u8
                } else {
                    (i.wrapping_mul(131) ^ (i >> 8)) as u8
                }
            })
            .collect();
        EchoSpec {
            text,
            in_flight,
            payload: Arc::new(payload),
        }
    }
}

/// The message being sent: text keeps a `String` so sending needs no UTF-8 check.
#[derive(Debug)]
enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
}

/// One connection's echo traffic.
#[derive(Debug)]
struct Flow {
    outgoing: Outgoing,
    next_seq: u64,
    /// Sequence numbers sent and not yet echoed, with their send time, oldest first.
    outstanding: VecDeque<(u64, Instant)>,
}

/// The low `out.len()` hex digits of `seq`.
fn write_seq(seq: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut v = seq;
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

impl Flow {
    fn new(spec: &EchoSpec) -> Flow {
        let payload = spec.payload.as_ref().clone();
        let outgoing = if spec.text {
            Outgoing::Text(String::from_utf8(payload).expect("the text payload is ASCII"))
        } else {
            Outgoing::Binary(payload)
        };
        Flow {
            outgoing,
            next_seq: 0,
            outstanding: VecDeque::with_capacity(spec.in_flight),
        }
    }

    fn send(&mut self, conn: &mut Connection, now: Instant) -> Result<(), Failure> {
        let seq = self.next_seq;
        let mut digits = [0u8; SEQ_DIGITS];
        let result = match &mut self.outgoing {
            Outgoing::Text(text) => {
                let n = text.len().min(SEQ_DIGITS);
                write_seq(seq, &mut digits[..n]);
                let digits = std::str::from_utf8(&digits[..n]).expect("hex digits are ASCII");
                text.replace_range(..n, digits);
                conn.send_text(text)
            }
            Outgoing::Binary(data) => {
                let n = data.len().min(SEQ_DIGITS);
                write_seq(seq, &mut data[..n]);
                conn.send_binary(data)
            }
        };
        result.map_err(|e| Failure::Protocol(format!("cannot send: {e}")))?;
        self.outstanding.push_back((seq, now));
        self.next_seq += 1;
        Ok(())
    }

    /// Checks an echo against the message with sequence number `seq`.
    fn verify(&self, spec: &EchoSpec, message: &Message, seq: u64) -> Result<(), Failure> {
        let (got, kind_ok) = match message {
            Message::Text(t) => (t.as_bytes(), spec.text),
            Message::Binary(b) => (&b[..], !spec.text),
        };
        let expected = spec.payload.as_slice();
        if !kind_ok {
            return Err(Failure::Mismatch(format!(
                "message {seq}: sent {}, echoed as {}",
                if spec.text { "text" } else { "binary" },
                if spec.text { "binary" } else { "text" },
            )));
        }
        if got.len() != expected.len() {
            return Err(Failure::Mismatch(format!(
                "message {seq}: sent {} bytes, echo has {}",
                expected.len(),
                got.len()
            )));
        }
        let n = expected.len().min(SEQ_DIGITS);
        let mut digits = [0u8; SEQ_DIGITS];
        write_seq(seq, &mut digits[..n]);
        let offset = if got[..n] != digits[..n] {
            first_difference(&got[..n], &digits[..n])
        } else if got[n..] != expected[n..] {
            n + first_difference(&got[n..], &expected[n..])
        } else {
            return Ok(());
        };
        let want = if offset < n {
            digits[offset]
        } else {
            expected[offset]
        };
        Err(Failure::Mismatch(format!(
            "message {seq}: byte {offset} is {:#04x}, sent {want:#04x} (expected sequence \
             number {}, echo carries {:?})",
            got[offset],
            String::from_utf8_lossy(&digits[..n]),
            String::from_utf8_lossy(&got[..n]),
        )))
    }

    fn on_event(
        &mut self,
        spec: &EchoSpec,
        conn: &mut Connection,
        event: Event,
        t: Instant,
        window: &pool::Window,
        tally: &mut Tally,
    ) -> Result<(), Failure> {
        match event {
            Event::Message(message) => {
                let Some((seq, sent)) = self.outstanding.pop_front() else {
                    return Err(Failure::Mismatch(
                        "a message arrived while none was outstanding".into(),
                    ));
                };
                self.verify(spec, &message, seq)?;
                if window.contains(t) {
                    tally.record(t.saturating_duration_since(sent));
                }
                if t < window.end {
                    self.send(conn, t)?;
                }
                Ok(())
            }
            Event::Error(e) => Err(Failure::Protocol(format!("connection failed: {e}"))),
            Event::Closed(closed) => Err(Failure::Protocol(format!(
                "the server closed the connection: {} {:?}",
                closed.code, closed.reason
            ))),
            _ => Ok(()),
        }
    }
}

/// Runs the echo load on the connections numbered `indices`.
pub fn worker(
    spec: &EchoSpec,
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
    let mut flows: Vec<Flow> = indices.iter().map(|_| Flow::new(spec)).collect();
    let mut tally = Tally::new();
    let Some(window) = pool::ready_and_wait(&control) else {
        return Ok(tally);
    };

    let now = Instant::now();
    for (i, (client, flow)) in clients.iter_mut().zip(&mut flows).enumerate() {
        let started: Result<(), Failure> = (0..spec.in_flight)
            .try_for_each(|_| flow.send(&mut client.conn, now))
            .and_then(|()| client.flush(poll.registry(), Token(i)));
        started.map_err(|e| describe(indices, i, &e))?;
    }

    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }
        pool::wait(&mut poll, &mut events, Some(window.end - now))?;
        for event in events.iter() {
            let i = event.token().0;
            let flow = &mut flows[i];
            let tally = &mut tally;
            clients[i]
                .service(
                    target,
                    poll.registry(),
                    event,
                    &mut buf,
                    |conn, event, t| flow.on_event(spec, conn, event, t, &window, tally),
                )
                .map_err(|e| describe(indices, i, &e))?;
        }
    }
    pool::close_all(&mut poll, &mut events, target, clients, &mut buf);
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_fill_the_front() {
        let mut out = [0u8; 16];
        write_seq(0x1234, &mut out);
        assert_eq!(&out, b"0000000000001234");
        let mut short = [0u8; 3];
        write_seq(0xabcd, &mut short);
        assert_eq!(&short, b"bcd");
    }

    #[test]
    fn a_changed_byte_is_reported_with_its_offset() {
        let spec = EchoSpec::new(40, false, 1);
        let flow = Flow::new(&spec);
        let mut echo = spec.payload.as_ref().clone();
        write_seq(7, &mut echo[..16]);
        assert!(
            flow.verify(&spec, &Message::binary(echo.clone()), 7)
                .is_ok()
        );
        assert!(
            flow.verify(&spec, &Message::binary(echo.clone()), 8)
                .is_err()
        );
        echo[30] ^= 1;
        let Err(Failure::Mismatch(detail)) = flow.verify(&spec, &Message::binary(echo), 7) else {
            panic!("a corrupted echo must fail");
        };
        assert!(detail.contains("byte 30"), "{detail}");
    }

    #[test]
    fn text_echoed_as_binary_fails() {
        let spec = EchoSpec::new(20, true, 1);
        let flow = Flow::new(&spec);
        let mut echo = spec.payload.as_ref().clone();
        write_seq(0, &mut echo[..16]);
        assert!(
            flow.verify(
                &spec,
                &Message::text(String::from_utf8(echo.clone()).unwrap()),
                0
            )
            .is_ok()
        );
        assert!(flow.verify(&spec, &Message::binary(echo), 0).is_err());
    }
}
