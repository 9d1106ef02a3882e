//! Close status codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use alloc::string::String;
use alloc::vec::Vec;

/// Longest close reason that fits a control frame: 125 bytes of payload minus the 2-byte code.
pub const MAX_CLOSE_REASON: usize = 123;

/// Close status codes (RFC 6455 §7.4 and the IANA registry).
///
/// [`CloseCode::from_u16`] always picks the named variant when there is one, so
/// `Library`, `Application` and `Reserved` only ever hold codes from their own ranges when
/// built that way. Whatever the variant, the number ([`CloseCode::as_u16`]) is what is judged
/// and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    Normal,
    /// 1001: the endpoint is going away (server shutting down, page navigated away).
    GoingAway,
    /// 1002: the peer broke the protocol.
    Protocol,
    /// 1003: the endpoint received a type of data it cannot accept.
    Unsupported,
    /// 1005: the close frame carried no status code. Never sent on the wire.
    NoStatus,
    /// 1006: the connection dropped without a close frame. Never sent on the wire.
    Abnormal,
    /// 1007: a message's data did not match its type (e.g. invalid UTF-8 in a text message).
    InvalidPayload,
    /// 1008: a message violated the endpoint's policy.
    Policy,
    /// 1009: a message was too big to process.
    TooBig,
    /// 1010: the client expected the server to negotiate an extension it did not.
    MandatoryExtension,
    /// 1011: the server hit an unexpected condition.
    Internal,
    /// 1012: the service is restarting.
    ServiceRestart,
    /// 1013: the service is overloaded; try again later.
    TryAgainLater,
    /// 1014: a gateway or proxy got an invalid response from upstream.
    BadGateway,
    /// 1015: the TLS handshake failed. Never sent on the wire.
    TlsHandshake,
    /// 3000–3999: registered with IANA by libraries and frameworks.
    Library(u16),
    /// 4000–4999: private use by applications.
    Application(u16),
    /// Every other code (0–999, 1004, 1016–2999, 5000+): invalid on the wire.
    Reserved(u16),
}

impl CloseCode {
    /// The code for a number; every number has one.
    pub fn from_u16(code: u16) -> CloseCode {
        match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::GoingAway,
            1002 => CloseCode::Protocol,
            1003 => CloseCode::Unsupported,
            1005 => CloseCode::NoStatus,
            1006 => CloseCode::Abnormal,
            1007 => CloseCode::InvalidPayload,
            1008 => CloseCode::Policy,
            1009 => CloseCode::TooBig,
            1010 => CloseCode::MandatoryExtension,
            1011 => CloseCode::Internal,
            1012 => CloseCode::ServiceRestart,
            1013 => CloseCode::TryAgainLater,
            1014 => CloseCode::BadGateway,
            1015 => CloseCode::TlsHandshake,
            3000..=3999 => CloseCode::Library(code),
            4000..=4999 => CloseCode::Application(code),
            _ => CloseCode::Reserved(code),
        }
    }

    /// The number sent on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::NoStatus => 1005,
            CloseCode::Abnormal => 1006,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::MandatoryExtension => 1010,
            CloseCode::Internal => 1011,
            CloseCode::ServiceRestart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::BadGateway => 1014,
            CloseCode::TlsHandshake => 1015,
            CloseCode::Library(code) | CloseCode::Application(code) | CloseCode::Reserved(code) => {
                code
            }
        }
    }

    /// May appear in a received close frame: 1000–1003, 1007–1014, 3000–4999.
    ///
    /// 1005, 1006 and 1015 exist only to report what happened locally; the rest are unassigned.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.as_u16(), 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    fn description(self) -> &'static str {
        match CloseCode::from_u16(self.as_u16()) {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going away",
            CloseCode::Protocol => "protocol error",
            CloseCode::Unsupported => "unsupported data",
            CloseCode::NoStatus => "no status",
            CloseCode::Abnormal => "abnormal closure",
            CloseCode::InvalidPayload => "invalid payload data",
            CloseCode::Policy => "policy violation",
            CloseCode::TooBig => "message too big",
            CloseCode::MandatoryExtension => "mandatory extension",
            CloseCode::Internal => "internal error",
            CloseCode::ServiceRestart => "service restart",
            CloseCode::TryAgainLater => "try again later",
            CloseCode::BadGateway => "bad gateway",
            CloseCode::TlsHandshake => "TLS handshake failure",
            CloseCode::Library(_) => "library",
            CloseCode::Application(_) => "application",
            CloseCode::Reserved(_) => "reserved",
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode::from_u16(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.as_u16()
    }
}

impl core::fmt::Display for CloseCode {
    /// The number and what it means, e.g. `1000 (normal)`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.as_u16(), self.description())
    }
}

/// The status code and reason of a close frame that carried a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Why the connection is closing.
    pub code: CloseCode,
    /// Human-readable detail, at most [`MAX_CLOSE_REASON`] bytes; may be empty.
    pub reason: String,
}

/// A close payload that cannot be parsed or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// The payload had one byte: too long to be empty, too short for a code.
    #[error("close payload of one byte")]
    OneBytePayload,
    /// The code may not appear on the wire (see [`CloseCode::is_valid_on_wire`]).
    #[error("close code {0} is not valid on the wire")]
    InvalidCode(u16),
    /// The reason is not valid UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidReason,
    /// The reason does not fit a control frame (more than [`MAX_CLOSE_REASON`] bytes).
    #[error("close reason longer than 123 bytes")]
    ReasonTooLong,
}

impl CloseError {
    /// The code to close the connection with in answer to this error.
    pub fn close_code(self) -> CloseCode {
        match self {
            CloseError::InvalidReason => CloseCode::InvalidPayload,
            // A reason this long can only arrive in a control frame over the 125-byte limit,
            // which is a protocol error.
            CloseError::OneBytePayload | CloseError::InvalidCode(_) | CloseError::ReasonTooLong => {
                CloseCode::Protocol
            }
        }
    }
}

/// Parses a received close payload. Empty → `Ok(None)` (meaning no status, 1005).
///
/// The payload length is not checked here: the frame decoder already caps control frames at
/// 125 bytes.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, CloseError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(CloseError::OneBytePayload),
        [high, low, reason @ ..] => (u16::from_be_bytes([*high, *low]), reason),
    };
    let code = CloseCode::from_u16(code);
    if !code.is_valid_on_wire() {
        return Err(CloseError::InvalidCode(code.as_u16()));
    }
    let reason = core::str::from_utf8(reason).map_err(|_| CloseError::InvalidReason)?;
    Ok(Some(CloseFrame {
        code,
        reason: String::from(reason),
    }))
}

/// Appends code (big endian) + reason. Errors: reason > 123 bytes; code not valid on the wire.
///
/// Nothing is appended on error.
pub fn encode_close_payload(
    code: CloseCode,
    reason: &str,
    out: &mut Vec<u8>,
) -> Result<(), CloseError> {
    if reason.len() > MAX_CLOSE_REASON {
        return Err(CloseError::ReasonTooLong);
    }
    if !code.is_valid_on_wire() {
        return Err(CloseError::InvalidCode(code.as_u16()));
    }
    out.reserve(2 + reason.len());
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn every_code_classifies_by_rfc_and_iana_ranges() {
        for number in 0..=u16::MAX {
            let code = CloseCode::from_u16(number);
            assert_eq!(code.as_u16(), number);
            assert_eq!(u16::from(CloseCode::from(number)), number);
            let expected_valid = matches!(number, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(code.is_valid_on_wire(), expected_valid, "{number}");
            match number {
                0..=999 | 1004 | 1016..=2999 | 5000.. => {
                    assert_eq!(code, CloseCode::Reserved(number))
                }
                1000..=1015 => assert!(!matches!(
                    code,
                    CloseCode::Reserved(_) | CloseCode::Library(_) | CloseCode::Application(_)
                )),
                3000..=3999 => assert_eq!(code, CloseCode::Library(number)),
                4000..=4999 => assert_eq!(code, CloseCode::Application(number)),
            }
        }
    }

    #[test]
    fn named_codes_have_their_rfc_numbers() {
        let named = [
            (CloseCode::Normal, 1000),
            (CloseCode::GoingAway, 1001),
            (CloseCode::Protocol, 1002),
            (CloseCode::Unsupported, 1003),
            (CloseCode::NoStatus, 1005),
            (CloseCode::Abnormal, 1006),
            (CloseCode::InvalidPayload, 1007),
            (CloseCode::Policy, 1008),
            (CloseCode::TooBig, 1009),
            (CloseCode::MandatoryExtension, 1010),
            (CloseCode::Internal, 1011),
            (CloseCode::ServiceRestart, 1012),
            (CloseCode::TryAgainLater, 1013),
            (CloseCode::BadGateway, 1014),
            (CloseCode::TlsHandshake, 1015),
        ];
        for (code, number) in named {
            assert_eq!(code.as_u16(), number);
            assert_eq!(CloseCode::from_u16(number), code);
        }
    }

    #[test]
    fn display_shows_number_and_meaning() {
        assert_eq!(CloseCode::Normal.to_string(), "1000 (normal)");
        assert_eq!(
            CloseCode::InvalidPayload.to_string(),
            "1007 (invalid payload data)"
        );
        assert_eq!(CloseCode::Library(3001).to_string(), "3001 (library)");
        assert_eq!(
            CloseCode::Application(4000).to_string(),
            "4000 (application)"
        );
        assert_eq!(CloseCode::Reserved(1004).to_string(), "1004 (reserved)");
    }

    #[test]
    fn empty_payload_means_no_status() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
    }

    #[test]
    fn one_byte_payload_is_a_protocol_error() {
        let error = parse_close_payload(&[0x03]).unwrap_err();
        assert_eq!(error, CloseError::OneBytePayload);
        assert_eq!(error.close_code(), CloseCode::Protocol);
    }

    #[test]
    fn parses_code_and_reason() {
        let frame = parse_close_payload(b"\x03\xE8bye").unwrap().unwrap();
        assert_eq!(frame.code, CloseCode::Normal);
        assert_eq!(frame.reason, "bye");
        let frame = parse_close_payload(&[0x0F, 0xA0]).unwrap().unwrap();
        assert_eq!(frame.code, CloseCode::Application(4000));
        assert_eq!(frame.reason, "");
    }

    #[test]
    fn rejects_codes_not_valid_on_the_wire() {
        for number in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            let payload = number.to_be_bytes();
            let error = parse_close_payload(&payload).unwrap_err();
            assert_eq!(error, CloseError::InvalidCode(number));
            assert_eq!(error.close_code(), CloseCode::Protocol);
        }
    }

    #[test]
    fn rejects_reason_that_is_not_utf8() {
        let error =
            parse_close_payload(b"\x03\xE8\xCE\xBA\xE1\xBD\xB9\xF4\x90\x80\x80").unwrap_err();
        assert_eq!(error, CloseError::InvalidReason);
        assert_eq!(error.close_code(), CloseCode::InvalidPayload);
    }

    #[test]
    fn encodes_code_then_reason() {
        let mut out = vec![0xAA];
        encode_close_payload(CloseCode::GoingAway, "shutdown", &mut out).unwrap();
        assert_eq!(out, b"\xAA\x03\xE9shutdown");
    }

    #[test]
    fn encoding_refuses_long_reasons_and_local_codes() {
        let mut out = Vec::new();
        let longest = "x".repeat(MAX_CLOSE_REASON);
        encode_close_payload(CloseCode::Normal, &longest, &mut out).unwrap();
        assert_eq!(out.len(), 125);

        let mut out = Vec::new();
        let too_long = "x".repeat(MAX_CLOSE_REASON + 1);
        assert_eq!(
            encode_close_payload(CloseCode::Normal, &too_long, &mut out),
            Err(CloseError::ReasonTooLong)
        );
        for code in [
            CloseCode::NoStatus,
            CloseCode::Abnormal,
            CloseCode::TlsHandshake,
        ] {
            assert_eq!(
                encode_close_payload(code, "", &mut out),
                Err(CloseError::InvalidCode(code.as_u16()))
            );
        }
        assert!(out.is_empty(), "nothing appended on error");
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(number in any::<u16>(), reason in "\\PC{0,40}") {
            let code = CloseCode::from_u16(number);
            let mut out = Vec::new();
            match encode_close_payload(code, &reason, &mut out) {
                Ok(()) => {
                    let frame = parse_close_payload(&out).unwrap().unwrap();
                    prop_assert_eq!(frame, CloseFrame { code, reason });
                }
                Err(CloseError::ReasonTooLong) => prop_assert!(reason.len() > MAX_CLOSE_REASON),
                Err(error) => {
                    prop_assert!(!code.is_valid_on_wire());
                    prop_assert_eq!(error, CloseError::InvalidCode(number));
                }
            }
        }

        #[test]
        fn parse_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..130)) {
            if let Ok(Some(frame)) = parse_close_payload(&payload) {
                prop_assert!(frame.code.is_valid_on_wire());
                prop_assert_eq!(frame.reason.as_bytes(), &payload[2..]);
            }
        }
    }
}
