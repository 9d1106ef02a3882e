use super::*;
use alloc::string::ToString;
use alloc::vec;
use proptest::prelude::*;

fn decode_all(decoder: &mut Decoder) -> Result<Vec<Item>, StompError> {
    let mut items = Vec::new();
    while let Some(item) = decoder.poll()? {
        items.push(item);
    }
    Ok(items)
}

fn one(bytes: &[u8]) -> Result<Vec<Item>, StompError> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.push(bytes);
    decode_all(&mut decoder)
}

fn frame(items: &[Item]) -> &Frame {
    match items {
        [Item::Frame(f)] => f,
        other => panic!("expected one frame, got {other:?}"),
    }
}

#[test]
fn what_stompjs_sends_to_connect_is_read_without_escapes() {
    let items =
        one(b"CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\nlogin:a\\b\n\n\0")
            .unwrap();
    let f = frame(&items);
    assert_eq!(f.command, Command::Connect);
    assert_eq!(f.header("accept-version"), Some("1.2,1.1,1.0"));
    // No escapes in CONNECT: the backslash is kept.
    assert_eq!(f.header("login"), Some("a\\b"));
    assert_eq!(f.header("host"), None);
    assert!(f.body.is_empty());
}

#[test]
fn content_length_bodies_may_hold_nuls_and_crlf_lines_are_accepted() {
    let items =
        one(b"SEND\r\ndestination:/topic/a/b\r\ncontent-length:5\r\n\r\na\0b\0c\0\r\n\n").unwrap();
    assert_eq!(items.len(), 3);
    let Item::Frame(f) = &items[0] else { panic!() };
    assert_eq!(f.body, b"a\0b\0c");
    assert_eq!(f.header("destination"), Some("/topic/a/b"));
    assert_eq!(&items[1..], &[Item::Heartbeat, Item::Heartbeat]);
}

#[test]
fn several_frames_in_one_message_and_one_frame_byte_by_byte() {
    let wire =
        b"SUBSCRIBE\nid:0\ndestination:/topic/app/x\n\n\0SEND\ndestination:/topic/app/x\n\nhi\0";
    let items = one(wire).unwrap();
    assert_eq!(items.len(), 2);
    let mut decoder = Decoder::new(Limits::default());
    let mut split = Vec::new();
    for b in wire {
        decoder.push(core::slice::from_ref(b));
        split.extend(decode_all(&mut decoder).unwrap());
    }
    assert_eq!(split, items);
}

#[test]
fn escapes_follow_the_version() {
    let wire = b"SEND\ndestination:/topic/a/b\nx\\cy:1\\n2\\\\3\\r\n\n\0";
    let mut d = Decoder::new(Limits::default());
    d.set_version(Version::V1_2);
    d.push(wire);
    let items = decode_all(&mut d).unwrap();
    assert_eq!(frame(&items).header("x:y"), Some("1\n2\\3\r"));

    let mut d = Decoder::new(Limits::default());
    d.set_version(Version::V1_1);
    d.push(wire);
    assert!(matches!(decode_all(&mut d), Err(StompError::BadEscape(_))));

    let mut d = Decoder::new(Limits::default());
    d.set_version(Version::V1_0);
    d.push(wire);
    let items = decode_all(&mut d).unwrap();
    assert_eq!(frame(&items).header("x\\cy"), Some("1\\n2\\\\3\\r"));

    assert!(matches!(
        one(b"SEND\nx:\\t\n\n\0"),
        Err(StompError::BadEscape(_))
    ));
}

#[test]
fn the_first_of_repeated_headers_wins_and_values_are_not_trimmed() {
    let items = one(b"SEND\nfoo: a \nfoo:b\n\n\0").unwrap();
    let f = frame(&items);
    assert_eq!(f.header("foo"), Some(" a "));
    assert_eq!(f.headers.len(), 2);
}

#[test]
fn malformed_frames_get_precise_errors() {
    assert_eq!(
        one(b"PUBLISH\n\n\0"),
        Err(StompError::UnknownCommand("PUBLISH".to_string()))
    );
    assert_eq!(
        one(b"send\n\n\0"),
        Err(StompError::UnknownCommand("send".to_string()))
    );
    assert!(matches!(
        one(b"SEND\nnocolon\n\n\0"),
        Err(StompError::BadHeader(_))
    ));
    assert!(matches!(
        one(b"SEND\ncontent-length:x\n\n\0"),
        Err(StompError::BadContentLength(_))
    ));
    assert_eq!(
        one(b"SEND\ncontent-length:2\n\nabc\0"),
        Err(StompError::MissingNul)
    );
    assert_eq!(
        one(b"SUBSCRIBE\nid:1\n\nbody\0"),
        Err(StompError::UnexpectedBody(Command::Subscribe))
    );
    assert_eq!(one(b"SEND\nk:\xff\n\n\0"), Err(StompError::NotUtf8));
    let text = StompError::UnexpectedBody(Command::Ack).to_string();
    assert_eq!(text, "ACK frames must not have a body");
}

#[test]
fn limits_hold_before_a_frame_is_complete() {
    let limits = Limits {
        max_frame: 64,
        max_headers: 2,
        max_header_line: 16,
    };
    let mut d = Decoder::new(limits);
    d.push(b"SEND\na:1\nb:2\nc:3\n");
    assert_eq!(
        decode_all(&mut d),
        Err(StompError::TooManyHeaders { limit: 2 })
    );

    // A header line that never ends fails once it is past the limit.
    let mut d = Decoder::new(limits);
    d.push(b"SEND\nxxxxxxxxxxxxxxxxxxxxx");
    assert_eq!(
        decode_all(&mut d),
        Err(StompError::HeaderTooLong { limit: 16 })
    );

    // A body without NUL fails once the frame is past the limit, before its end.
    let mut d = Decoder::new(limits);
    d.push(b"SEND\n\n");
    assert_eq!(decode_all(&mut d), Ok(vec![]));
    d.push(&[b'x'; 70]);
    assert_eq!(
        decode_all(&mut d),
        Err(StompError::FrameTooLarge { limit: 64 })
    );

    // A content-length beyond the limit fails as soon as the headers are read.
    let mut d = Decoder::new(Limits {
        max_header_line: 32,
        ..limits
    });
    d.push(b"SEND\ncontent-length:99\n\n");
    assert_eq!(
        decode_all(&mut d),
        Err(StompError::FrameTooLarge { limit: 64 })
    );

    // Up to the limit is fine.
    let mut d = Decoder::new(limits);
    let mut wire = b"SEND\n\n".to_vec();
    wire.extend([b'y'; 58]);
    wire.push(0);
    d.push(&wire);
    let items = decode_all(&mut d).unwrap();
    assert_eq!(frame(&items).body.len(), 58);
}

#[test]
fn encoding_adds_content_length_and_escapes_per_version() {
    let f = Frame::new(Command::Message)
        .with_header("destination", "/topic/a/b")
        .with_header("k:1", "v\n\\\r")
        .with_body(&b"x\0y"[..]);
    assert_eq!(
        f.encode(Version::V1_2),
        b"MESSAGE\ndestination:/topic/a/b\nk\\c1:v\\n\\\\\\r\ncontent-length:3\n\nx\0y\0"
    );
    assert_eq!(
        f.encode(Version::V1_1),
        b"MESSAGE\ndestination:/topic/a/b\nk\\c1:v\\n\\\\ \ncontent-length:3\n\nx\0y\0"
    );
    assert_eq!(
        f.encode(Version::V1_0),
        b"MESSAGE\ndestination:/topic/a/b\nk 1:v \\ \ncontent-length:3\n\nx\0y\0"
    );
    let connected = Frame::new(Command::Connected).with_header("server", "duplex:1\n");
    assert_eq!(
        connected.encode(Version::V1_2),
        b"CONNECTED\nserver:duplex:1 \n\n\0"
    );
}

#[test]
fn versions_and_subprotocols_negotiate_to_the_highest_common() {
    assert_eq!(Version::negotiate(None), Some(Version::V1_0));
    assert_eq!(Version::negotiate(Some("1.2,1.1,1.0")), Some(Version::V1_2));
    assert_eq!(Version::negotiate(Some("1.0, 1.1")), Some(Version::V1_1));
    assert_eq!(Version::negotiate(Some("2.0")), None);
    assert_eq!(
        Version::best_subprotocol(["v10.stomp", "v12.stomp", "v11.stomp"]),
        Some(Version::V1_2)
    );
    assert_eq!(Version::best_subprotocol(["duplex.v1"]), None);
    assert_eq!(Version::V1_1.subprotocol(), "v11.stomp");
}

#[test]
fn heart_beats_negotiate_as_the_specification_says() {
    let client = HeartBeat::parse("10000,10000").unwrap();
    let server = HeartBeat {
        can_send: 1000,
        want_receive: 5000,
    };
    // Server → client every max(1000, 10000); client → server every max(10000, 5000).
    assert_eq!(
        HeartBeat::negotiate(client, server),
        (Some(10000), Some(10000))
    );
    let quiet = HeartBeat::parse("0,0").unwrap();
    assert_eq!(HeartBeat::negotiate(quiet, server), (None, None));
    let wants_fast = HeartBeat::parse("0, 1000").unwrap();
    assert_eq!(HeartBeat::negotiate(wants_fast, server), (Some(1000), None));
    assert!(HeartBeat::parse("10").is_err());
    assert!(HeartBeat::parse("a,b").is_err());
    assert!(HeartBeat::parse("-1,0").is_err());
    assert_eq!(server.to_header(), "1000,5000");
    assert_eq!(
        HeartBeat::parse("99999999999,1").unwrap().can_send,
        u32::MAX
    );
}

fn command() -> impl Strategy<Value = Command> {
    proptest::sample::select(Command::ALL.to_vec())
}

fn version() -> impl Strategy<Value = Version> {
    proptest::sample::select(Version::ALL.to_vec())
}

fn header_text(version: Version, escaped: bool, name: bool) -> BoxedStrategy<String> {
    // What survives a round trip: in 1.0 and unescaped frames no CR, LF (nor a colon in a
    // name); in 1.1 no CR. Empty names are fine on the wire.
    let pattern = match (version, escaped, name) {
        (Version::V1_0, _, true) | (_, false, true) => "[a-z\\\\é -]{0,12}",
        (Version::V1_0, _, false) | (_, false, false) => "[a-z:\\\\é -]{0,12}",
        (Version::V1_1, true, _) => "[a-z:\\\\\né -]{0,12}",
        (Version::V1_2, true, _) => "[a-z:\\\\\r\né -]{0,12}",
    };
    proptest::string::string_regex(pattern).unwrap().boxed()
}

fn frame_for(version: Version) -> impl Strategy<Value = Frame> {
    command().prop_flat_map(move |command| {
        let escaped = command.escapes_headers();
        let headers = proptest::collection::vec(
            (
                header_text(version, escaped, true),
                header_text(version, escaped, false),
            ),
            0..6,
        )
        // A content-length among random headers would change the framing.
        .prop_map(|h| {
            h.into_iter()
                .filter(|(n, _)| n != "content-length")
                .collect::<Vec<_>>()
        });
        let body = if command.may_have_body() {
            proptest::collection::vec(any::<u8>(), 0..40).boxed()
        } else {
            Just(Vec::new()).boxed()
        };
        (headers, body).prop_map(move |(headers, body)| Frame {
            command,
            headers,
            body,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any frame encoded for a version and cut anywhere decodes to itself (plus the
    /// content-length header the encoder adds), whatever the split and with heart-beats between.
    #[test]
    fn encode_then_decode_in_random_pieces(
        (version, frames) in version().prop_flat_map(|v| (Just(v), proptest::collection::vec(frame_for(v), 1..5))),
        cuts in proptest::collection::vec(1usize..17, 1..40),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            f.encode_into(version, &mut wire);
            wire.extend_from_slice(b"\r\n");
        }
        let mut decoder = Decoder::new(Limits::default());
        decoder.set_version(version);
        let mut items = Vec::new();
        let mut rest = &wire[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            decoder.push(&rest[..n]);
            rest = &rest[n..];
            items.extend(decode_all(&mut decoder).unwrap());
        }
        let mut expected = Vec::new();
        for f in &frames {
            let mut f = f.clone();
            if !f.body.is_empty() {
                f.headers.push(("content-length".to_string(), f.body.len().to_string()));
            }
            expected.push(Item::Frame(f));
            expected.push(Item::Heartbeat);
        }
        prop_assert_eq!(items, expected);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    /// Arbitrary bytes never panic and never make the decoder hold more than the frame limit
    /// plus what was pushed since the last poll.
    #[test]
    fn arbitrary_bytes_are_refused_or_decoded(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..12)) {
        let limits = Limits { max_frame: 128, max_headers: 4, max_header_line: 32 };
        let mut decoder = Decoder::new(limits);
        for chunk in &chunks {
            decoder.push(chunk);
            match decode_all(&mut decoder) {
                Ok(_) => prop_assert!(decoder.buffered() <= limits.max_frame + 2),
                Err(_) => break,
            }
        }
    }
}
