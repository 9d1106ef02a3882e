//! The STOMP frame decoder and encoder: `stomp_decode`.
//!
//! Compiled with the `stomp` feature only (the fuzz crate's default; in the core's tests, the
//! core's own feature).

use duplex_core::stomp::{Decoder, Frame, Item, Limits, Version};

use super::{Chunker, Reader};

/// The STOMP frame decoder fed bytes in chunks, and the encoder given what it decodes.
///
/// # Input format
///
/// One version byte (`b0 & 3`: 0 none negotiated yet, 1 STOMP 1.0, 2 1.1, 3 1.2), one chunking
/// byte (as for `server_request`), one limits byte (`b & 1`: small limits, 96-byte frames, 3
/// headers, 24-byte header lines; else the defaults), then the bytes.
///
/// # Properties
///
/// - decoding never panics; after an error nothing more is fed (the stream is dead);
/// - between pushes, once `poll` returns `Ok(None)`, the decoder holds at most one partial frame:
///   no more than the frame limit (plus a CR LF);
/// - a decoded frame keeps the limits (header count) and only `SEND`, `MESSAGE` and `ERROR` have
///   a body;
/// - (with the `channel` feature) a [`StompSession`](duplex_core::stomp::StompSession) on an
///   in-process hub, given `CONNECT` and then the same bytes, never panics, every WebSocket
///   message it sends holds exactly one frame or one heart-beat, and once it closes it sends
///   nothing more;
/// - every decoded frame, encoded for the version and decoded again in one piece, is the same
///   frame (plus the `content-length` the encoder adds to a body; a CR inside a header that the
///   version cannot escape becomes a space, as the encoder documents).
pub fn stomp_decode(data: &[u8]) {
    let mut reader = Reader::new(data);
    let version = match reader.u8() & 3 {
        0 => None,
        1 => Some(Version::V1_0),
        2 => Some(Version::V1_1),
        _ => Some(Version::V1_2),
    };
    let chunker = Chunker::new(reader.u8());
    let limits = if reader.u8() & 1 == 1 {
        Limits {
            max_frame: 96,
            max_headers: 3,
            max_header_line: 24,
        }
    } else {
        Limits::default()
    };
    let bytes = reader.rest();

    let mut decoder = Decoder::new(limits);
    if let Some(v) = version {
        decoder.set_version(v);
    }
    let mut frames = Vec::new();
    'feed: for chunk in chunker.split(bytes) {
        decoder.push(chunk);
        loop {
            match decoder.poll() {
                Ok(Some(Item::Frame(f))) => frames.push(f),
                Ok(Some(Item::Heartbeat)) => {}
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(
            decoder.buffered() <= limits.max_frame + 2,
            "{} bytes buffered with a {}-byte frame limit",
            decoder.buffered(),
            limits.max_frame
        );
    }

    #[cfg(feature = "channel")]
    session(chunker_again(data), bytes);

    let wire_version = version.unwrap_or(Version::V1_2);
    for frame in frames {
        assert!(frame.headers.len() <= limits.max_headers);
        assert!(frame.body.is_empty() || frame.command.may_have_body());
        let wire = frame.encode(wire_version);
        let mut again = Decoder::new(Limits {
            max_frame: usize::MAX / 2,
            max_headers: usize::MAX,
            max_header_line: usize::MAX,
        });
        again.set_version(wire_version);
        again.push(&wire);
        let decoded = match again.poll() {
            Ok(Some(Item::Frame(f))) => f,
            other => panic!("{frame:?} encoded as {wire:?} decodes to {other:?}"),
        };
        assert_eq!(again.poll(), Ok(None));
        assert_eq!(decoded, expected(frame, wire_version));
    }
}

/// What a decoded frame is once encoded and decoded again.
fn expected(mut frame: Frame, version: Version) -> Frame {
    let cr_escaped = version == Version::V1_2 && frame.command.escapes_headers();
    if !cr_escaped {
        for (name, value) in &mut frame.headers {
            *name = name.replace('\r', " ");
            *value = value.replace('\r', " ");
        }
    }
    if !frame.body.is_empty() && frame.header("content-length").is_none() {
        frame
            .headers
            .push(("content-length".into(), frame.body.len().to_string()));
    }
    frame
}

/// The chunking byte of the input, for the session run.
#[cfg(feature = "channel")]
fn chunker_again(data: &[u8]) -> Chunker {
    Chunker::new(data.get(1).copied().unwrap_or(0))
}

#[cfg(feature = "channel")]
fn session(chunker: Chunker, bytes: &[u8]) {
    use core::time::Duration;
    use duplex_core::channel::{Hub, HubConfig};
    use duplex_core::stomp::{Output, StompConfig, StompSession};

    let mut hub: Hub<u8> = Hub::new(HubConfig::default(), 1);
    let mut session = StompSession::new(StompConfig::default(), None, Duration::ZERO);
    let mut closed = false;
    let pump = |session: &mut StompSession, hub: &mut Hub<u8>, now: Duration, closed: &mut bool| {
        loop {
            let mut busy = false;
            while let Some(output) = session.poll_output() {
                busy = true;
                assert!(!*closed, "output after close: {output:?}");
                match output {
                    Output::Command(c) => {
                        let _ = hub.receive_message(0, c, now);
                    }
                    Output::Send(wire) => {
                        let mut d = Decoder::new(Limits {
                            max_frame: usize::MAX / 2,
                            max_headers: usize::MAX,
                            max_header_line: usize::MAX,
                        });
                        d.set_version(session.version());
                        d.push(&wire);
                        assert!(matches!(d.poll(), Ok(Some(_))), "{wire:?}");
                        assert_eq!(d.poll(), Ok(None), "{wire:?}");
                    }
                    Output::Close(_) => *closed = true,
                }
            }
            while let Some((_, delivery)) = hub.poll_delivery() {
                busy = true;
                session.deliver_typed(&delivery, None, now);
            }
            if !busy {
                return;
            }
        }
    };
    session.receive(
        b"CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:0,1000\n\n\0",
        Duration::ZERO,
    );
    pump(&mut session, &mut hub, Duration::ZERO, &mut closed);
    for (i, chunk) in chunker.split(bytes).into_iter().enumerate() {
        let now = Duration::from_millis(i as u64 * 300);
        session.receive(chunk, now);
        session.handle_timeout(now);
        pump(&mut session, &mut hub, now, &mut closed);
    }
}
