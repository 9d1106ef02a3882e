//! [`parse`]: JSON text to a [`serde_json::Value`], the reader of [`ClientSession`]
//! (server messages, and the application values of `duplex-wasm`).
//!
//! It accepts exactly what `serde_json::from_str::<Value>` accepts (RFC 8259, nesting up to 127
//! deep, the last of duplicate keys kept) and builds the same value. Numbers keep their exact
//! value: an integer becomes a `u64` or `i64` when it fits, any other number the `f64` nearest
//! to its decimal value (ties to even), as serde_json with `float_roundtrip` reads it, so a
//! number relayed by the client is re-encoded as it came. Why not serde_json's own reader: with
//! `float_roundtrip` its float parser (for `f32` and `f64`, with their tables) and its
//! deserializer are most of the code of a browser's `.wasm` (`wasm/build.sh`); here the common
//! numbers (up to 15 digits, exponent within ±22) take one exact multiplication or division and
//! the rest are settled by comparing with the halfway points between floats in big integers.
//!
//! [`ClientSession`]: super::ClientSession

use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// Nesting limit, serde_json's: 127 arrays or objects, one in another.
const MAX_DEPTH: usize = 127;

/// Parses one JSON document. The error says what was wrong and at which byte.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let value = parser.value(0);
    let result = value.and_then(|value| {
        parser.skip_space();
        if parser.at < parser.bytes.len() {
            Err("trailing characters")
        } else {
            Ok(value)
        }
    });
    result.map_err(|what| {
        let mut message = String::from(what);
        message.push_str(" at byte ");
        push_decimal(&mut message, parser.at);
        message
    })
}

fn push_decimal(out: &mut String, mut n: usize) {
    let start = out.len();
    loop {
        out.insert(start, char::from(b'0' + (n % 10) as u8));
        n /= 10;
        if n == 0 {
            break;
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

type Parsed<T> = Result<T, &'static str>;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `byte` (after whitespace) if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn literal(&mut self, word: &str, value: Value) -> Parsed<Value> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err("expected value")
        }
    }

    fn value(&mut self, depth: usize) -> Parsed<Value> {
        self.skip_space();
        match self.peek() {
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(open @ (b'[' | b'{')) => {
                if depth == MAX_DEPTH {
                    return Err("recursion limit exceeded");
                }
                self.at += 1;
                let close = open + 2; // `]` and `}`
                let mut array = Vec::new();
                let mut object = Map::new();
                if !self.eat(close) {
                    loop {
                        if open == b'[' {
                            array.push(self.value(depth + 1)?);
                        } else {
                            self.skip_space();
                            if self.peek() != Some(b'"') {
                                return Err("key must be a string");
                            }
                            let key = self.string()?;
                            if !self.eat(b':') {
                                return Err("expected `:`");
                            }
                            object.insert(key, self.value(depth + 1)?);
                        }
                        if self.eat(close) {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err("expected `,` or the end of a list");
                        }
                    }
                }
                Ok(if open == b'[' {
                    Value::Array(array)
                } else {
                    Value::Object(object)
                })
            }
            _ => Err("expected value"),
        }
    }

    /// A string, the opening quote next.
    fn string(&mut self) -> Parsed<String> {
        self.at += 1;
        let mut out = String::new();
        let mut start = self.at;
        loop {
            let Some(byte) = self.peek() else {
                return Err("unterminated string");
            };
            match byte {
                b'"' | b'\\' => {
                    // ASCII: both ends are character boundaries of the text (`get` rather than
                    // indexing: no panic path and its formatting in the `.wasm`).
                    out.push_str(self.text.get(start..self.at).unwrap_or_default());
                    self.at += 1;
                    if byte == b'"' {
                        return Ok(out);
                    }
                    let escaped = self.peek().ok_or("unterminated string")?;
                    self.at += 1;
                    out.push(match escaped {
                        b'"' | b'\\' | b'/' => char::from(escaped),
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err("invalid escape"),
                    });
                    start = self.at;
                }
                0..=0x1f => return Err("control character in string"),
                _ => self.at += 1,
            }
        }
    }

    /// The character of `\uXXXX` (the `\u` read), a surrogate pair taking two escapes.
    fn unicode_escape(&mut self) -> Parsed<char> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                if !self.bytes[self.at..].starts_with(b"\\u") {
                    return Err("lone leading surrogate");
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err("lone leading surrogate");
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            0xdc00..=0xdfff => return Err("lone trailing surrogate"),
            code => code,
        };
        char::from_u32(code).ok_or("invalid escape")
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|byte| char::from(byte).to_digit(16))
                .ok_or("invalid escape")?;
            self.at += 1;
            code = code * 16 + digit;
        }
        Ok(code)
    }

    /// Consumes decimal digits; returns them.
    fn digits(&mut self) -> &'a [u8] {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        let bytes: &'a [u8] = self.bytes;
        &bytes[start..self.at]
    }

    fn number(&mut self) -> Parsed<Number> {
        let negative = self.peek() == Some(b'-');
        self.at += usize::from(negative);
        let integer = self.digits();
        if integer.is_empty() || (integer[0] == b'0' && integer.len() > 1) {
            return Err("invalid number");
        }
        let integer_end = self.at;
        // The significant digits and the power of ten they are multiplied by.
        let mut digits: Vec<u8> = integer.to_vec();
        let mut exponent: i64 = 0;
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            let fraction = self.digits();
            if fraction.is_empty() {
                return Err("invalid number");
            }
            digits.extend_from_slice(fraction);
            exponent = -(fraction.len() as i64);
            is_float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            let sign = match self.peek() {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            self.at += usize::from(sign != 0);
            let written = self.digits();
            if written.is_empty() {
                return Err("invalid number");
            }
            // Saturated: beyond ±10^9 the value is 0 or out of range whatever the digits.
            let mut power: i64 = 0;
            for digit in written {
                power = (power * 10 + i64::from(digit - b'0')).min(1_000_000_000);
            }
            exponent += if sign < 0 { -power } else { power };
            is_float = true;
        }
        if !is_float {
            // The integer's text is ASCII digits: it parses unless it overflows.
            let text = self.text.get(integer_end - integer.len()..integer_end);
            if let Some(Ok(n)) = text.map(str::parse::<u64>) {
                if !negative {
                    return Ok(Number::from(n));
                }
                if n != 0 {
                    if let Some(n) = 0i64.checked_sub_unsigned(n) {
                        return Ok(Number::from(n));
                    }
                }
            }
        }
        let magnitude = decimal_to_f64(&digits, exponent);
        Number::from_f64(if negative { -magnitude } else { magnitude }).ok_or("number out of range")
    }
}

/// The `f64` nearest to `digits × 10^exponent` (ties to even; `digits` ASCII decimal digits),
/// infinite when it rounds past `f64::MAX`.
fn decimal_to_f64(digits: &[u8], mut exponent: i64) -> f64 {
    let mut digits = digits;
    while let [b'0', rest @ ..] = digits {
        digits = rest;
    }
    while let [rest @ .., b'0'] = digits {
        digits = rest;
        exponent += 1;
    }
    if digits.is_empty() {
        return 0.0;
    }
    // Every value is below 10^(len + exponent) and at least 10^(len + exponent - 1): past these
    // bounds it rounds to zero or overflows, with no need to look closer.
    let magnitude = digits.len() as i64 + exponent;
    if magnitude <= -324 {
        return 0.0;
    }
    if magnitude > 310 {
        return f64::INFINITY;
    }
    // A first estimate from the leading 19 digits, a few units in the last place off at most.
    let leading = &digits[..digits.len().min(19)];
    let mut estimate = leading
        .iter()
        .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0')) as f64;
    let exact = digits.len() <= 15 && (-22..=22).contains(&exponent);
    let mut scale = exponent + (digits.len() - leading.len()) as i64;
    while scale != 0 {
        // 10^k for k up to 22 is exact, and so is each product on the way to it.
        let step = scale.clamp(-22, 22);
        let power = (0..step.abs()).fold(1.0, |power, _| power * 10.0);
        if step > 0 {
            estimate *= power;
        } else {
            estimate /= power;
        }
        scale -= step;
    }
    // Up to 15 digits (below 2^53) and 10^22: one correctly rounded operation on exact values.
    if exact {
        return estimate;
    }
    // Move by one float at a time until the value lies between the halfway points around it.
    let mut value = BigDecimal::new(digits, exponent);
    let mut bits = estimate.min(f64::MAX).to_bits();
    let infinity = f64::INFINITY.to_bits();
    loop {
        if bits < infinity {
            let above = value.cmp_halfway(bits);
            if above == Ordering::Greater || (above == Ordering::Equal && bits & 1 == 1) {
                bits += 1;
                continue;
            }
        }
        if bits > 0 && bits < infinity {
            let below = value.cmp_halfway(bits - 1);
            if below == Ordering::Less || (below == Ordering::Equal && bits & 1 == 1) {
                bits -= 1;
                continue;
            }
        }
        return f64::from_bits(bits);
    }
}

/// A decimal `digits × 10^exponent` kept exactly for comparisons.
struct BigDecimal {
    digits: Big,
    exponent: i64,
}

impl BigDecimal {
    /// At most 800 significant digits are kept: no halfway point between two floats has more
    /// than 767, so a last digit 1 standing for whatever nonzero digits follow compares the same.
    fn new(digits: &[u8], exponent: i64) -> Self {
        const KEPT: usize = 800;
        let mut big = Big(Vec::new());
        let mut exponent = exponent;
        for digit in digits.iter().take(KEPT) {
            big.mul_add(10, u32::from(digit - b'0'));
        }
        if digits.len() > KEPT {
            // Trailing zeros were removed: what is cut is not zero.
            big.mul_add(10, 1);
            exponent += digits.len() as i64 - KEPT as i64 - 1;
        }
        BigDecimal {
            digits: big,
            exponent,
        }
    }

    /// This value against the point halfway between the positive float of `bits` and the next.
    fn cmp_halfway(&mut self, bits: u64) -> Ordering {
        let (low, low_exp) = decompose(bits);
        let (high, high_exp) = decompose(bits + 1);
        // The next float's exponent is the same or one more.
        let twice_halfway = low + (high << (high_exp - low_exp));
        // self: digits × 5^e × 2^e; halfway: twice_halfway × 2^(low_exp - 1).
        let mut left = Big(self.digits.0.clone());
        let mut right = Big(Vec::from([
            twice_halfway as u32,
            (twice_halfway >> 32) as u32,
        ]));
        let e = self.exponent;
        if e >= 0 {
            left.mul_pow5(e as u32);
        } else {
            right.mul_pow5(e.unsigned_abs() as u32);
        }
        let twos = e - (low_exp - 1);
        if twos >= 0 {
            left.shl(twos as u32);
        } else {
            right.shl(twos.unsigned_abs() as u32);
        }
        left.cmp(&mut right)
    }
}

/// The positive float (or infinity) of `bits` as `mantissa × 2^exponent`.
fn decompose(bits: u64) -> (u64, i64) {
    let biased = (bits >> 52) as i64;
    let fraction = bits & ((1 << 52) - 1);
    if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    }
}

/// An unsigned big integer, 32-bit limbs, least significant first.
struct Big(Vec<u32>);

impl Big {
    fn mul_add(&mut self, factor: u32, add: u32) {
        let mut carry = u64::from(add);
        for limb in &mut self.0 {
            let product = u64::from(*limb) * u64::from(factor) + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
    }

    fn mul_pow5(&mut self, mut n: u32) {
        while n > 0 {
            let step = n.min(13); // 5^13 < 2^32
            self.mul_add(5u32.pow(step), 0);
            n -= step;
        }
    }

    fn shl(&mut self, bits: u32) {
        let (limbs, bits) = ((bits / 32) as usize, bits % 32);
        if bits > 0 {
            self.mul_add(1 << bits, 0);
        }
        self.0.splice(0..0, core::iter::repeat_n(0, limbs));
    }

    fn cmp(&mut self, other: &mut Big) -> Ordering {
        for big in [&mut *self, &mut *other] {
            while big.0.last() == Some(&0) {
                big.0.pop();
            }
        }
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;
    use proptest::prelude::*;

    /// Ours and serde_json's (with `float_roundtrip`, exact) agree: the same value or both refuse.
    fn same(text: &str) {
        let ours = parse(text);
        let theirs = serde_json::from_str::<Value>(text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "{text:?}");
                // The same text once encoded (this also tells -0.0 from 0.0).
                assert_eq!(a.to_string(), b.to_string(), "{text:?}");
            }
            (Err(_), Err(_)) => {}
            _ => panic!("{text:?}: ours {ours:?}, serde_json {theirs:?}"),
        }
    }

    #[test]
    fn documents_like_serde_json() {
        for text in [
            "null",
            " true ",
            "false",
            "0",
            "-0",
            "-0.0",
            "1",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "1E-2",
            "2.5e3",
            "0.1",
            "1e23",
            "1e308",
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.7976931348623159e308",
            "1e309",
            "-1e309",
            "5e-324",
            "2.4703282292062327e-324",
            "2.4703282292062328e-324",
            "1e-400",
            "1e-1000000000000",
            "1e1000000000000",
            "0e1000000000000",
            "2.2250738585072011e-308",
            "2.2250738585072014e-308",
            "9007199254740993",
            "9007199254740993.0",
            "0.30000000000000004",
            "123456789012345678901234567890e-30",
            r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83d\u0041""#,
            r#""\x""#,
            r#""\u12""#,
            "\"tab\there\"",
            "\"é ü 😀\"",
            "\"unterminated",
            "[]",
            "[ ]",
            "[1, 2 ,3]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{}",
            r#"{"a":1,"b":[true,null],"a":2}"#,
            r#"{"a" : {"b" : {}}}"#,
            r#"{"a":1,}"#,
            r#"{1:1}"#,
            r#"{"a" 1}"#,
            "nul",
            "truex",
            "[1] x",
            "",
            "   ",
            "\u{feff}1",
        ] {
            same(text);
        }
        // Nesting: 127 levels are read, 128 refused.
        for depth in [126, 127, 128] {
            same(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            same(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth)));
            same(&format!(
                "{}{}",
                r#"{"a":"#.repeat(depth),
                "}".repeat(depth)
            ));
        }
        // Many digits: the cut at 800 significant digits with the rest standing in as one digit.
        // serde_json's reader rounds some of these wrong (a tie read as above it): the reference
        // is the standard library's reader.
        let halfway = "2.470328229206232720882538112470e-324";
        for text in [
            halfway.to_string(),
            format!("{halfway}{}", "0".repeat(900)),
            format!("{halfway}{}1", "0".repeat(900)),
            format!("1{}e-990", "0".repeat(1000)),
            format!("0.{}1", "0".repeat(1000)),
            format!("9007199254740993{}e-900", "0".repeat(900)),
            format!("9007199254740993{}1e-901", "0".repeat(900)),
            format!("9007199254740993{}1e-801", "0".repeat(800)),
            format!("9007199254740993{}1e-701", "0".repeat(700)),
        ] {
            let Ok(Value::Number(n)) = parse(&text) else {
                panic!("{text}")
            };
            assert_eq!(n.as_f64(), text.parse::<f64>().ok(), "{text}");
        }
    }

    #[test]
    fn error_says_where() {
        assert_eq!(parse("[1,]").unwrap_err(), "expected value at byte 3");
        assert_eq!(parse("{} x").unwrap_err(), "trailing characters at byte 3");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn floats_read_exactly(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            // Shortest (serde_json's encoding), Rust's and exponent forms, and 17 digits.
            for text in [
                serde_json::to_string(&x).unwrap(),
                format!("{x:e}"),
                format!("{x:.16e}"),
                format!("{x:.25e}"),
            ] {
                let Ok(Value::Number(n)) = parse(&text) else { panic!("{text}") };
                prop_assert_eq!(n.as_f64().unwrap().to_bits(), text.parse::<f64>().unwrap().to_bits(), "{}", text);
            }
        }

        #[test]
        fn decimals_read_exactly(digits in "[0-9]{1,40}", point in 0usize..40, exponent in -400i32..400) {
            let point = point.min(digits.len() - 1);
            let text = format!("{}.{}e{exponent}", &digits[..=point], &digits[point + 1..]);
            let text = text.replace(".e", ".0e");
            same(&text);
        }

        #[test]
        fn any_text_like_serde_json(text in r#"[\[\]{}",:0-9.eE+\- a-z\\/u]{0,24}"#) {
            same(&text);
        }

        #[test]
        fn values_like_serde_json(value in json_value()) {
            let text = value.to_string();
            same(&text);
            prop_assert_eq!(parse(&text).unwrap(), value);
        }
    }
}
