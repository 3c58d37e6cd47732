//! Small pieces for writing compact JSON straight into a byte buffer, as serde_json writes
//! them (strings escaped the same way, UTF-8 left as is; integers and floats in serde_json's
//! text). The envelope writer and the binding crate's Python-object writer build on these.

use base64::Engine as _;
use serde::Serializer as _;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `x` equals `b` (exact, no false answers).
#[inline]
pub(crate) fn any_byte_eq(x: u64, b: u8) -> bool {
    let y = x ^ (LO * u64::from(b));
    y.wrapping_sub(LO) & !y & HI != 0
}

/// Whether any byte of `x` is below `n` (`n` <= 0x80; exact).
#[inline]
pub(crate) fn any_byte_lt(x: u64, n: u8) -> bool {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI != 0
}

/// Index of the first byte at or after `from` for which `special` holds, skipping eight
/// bytes at a time where `chunk_special` says none of them can.
#[inline]
pub(crate) fn find_special(
    bytes: &[u8],
    mut from: usize,
    chunk_special: impl Fn(u64) -> bool,
    special: impl Fn(u8) -> bool,
) -> usize {
    while from + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[from..from + 8]);
        if chunk_special(u64::from_le_bytes(word)) {
            break;
        }
        from += 8;
    }
    while from < bytes.len() && !special(bytes[from]) {
        from += 1;
    }
    from
}

/// Appends `s` as a JSON string, escaped as serde_json escapes (`\"`, `\\`, `\n`-style
/// short forms, other control characters as `\u00xx`; everything else as is).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = find_special(
            bytes,
            start,
            |x| any_byte_lt(x, 0x20) || any_byte_eq(x, b'"') || any_byte_eq(x, b'\\'),
            |b| b < 0x20 || b == b'"' || b == b'\\',
        );
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.push(b'"');
}

pub fn write_i64(out: &mut Vec<u8>, i: i64) {
    let _ = serde_json::Serializer::new(&mut *out).serialize_i64(i);
}

pub fn write_u64(out: &mut Vec<u8>, u: u64) {
    let _ = serde_json::Serializer::new(&mut *out).serialize_u64(u);
}

/// Appends a float; a non-finite one is written as `null`, like serde_json does (callers that
/// must refuse them check first).
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    let _ = serde_json::Serializer::new(&mut *out).serialize_f64(f);
}

pub fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

pub fn write_opt_f64(out: &mut Vec<u8>, f: Option<f64>) {
    match f {
        Some(f) => write_f64(out, f),
        None => out.extend_from_slice(b"null"),
    }
}

pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Appends the standard base64 of `data` as a JSON string (its alphabet needs no escapes).
pub fn write_base64_str(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'"');
    let start = out.len();
    let len = base64::encoded_len(data.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pieces_match_serde_json() {
        let long = "0123456789abcdef\"x\\y\x7f\x1fé€😀 \x08\x0c\r".repeat(5);
        let mut all = String::new();
        for c in 0u8..0x80 {
            all.push(char::from(c));
            all.push_str("abcdefgh");
        }
        for s in [
            "",
            "plain",
            "quote\" back\\ nl\n tab\t ctl\x01 é€😀",
            &long,
            &all,
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap());
        }
        for f in [0.0, -0.0, 1.0, 0.75, 1e300, 5e-324, 123456.789] {
            let mut out = Vec::new();
            write_f64(&mut out, f);
            assert_eq!(out, serde_json::to_vec(&f).unwrap());
        }
        let mut out = Vec::new();
        write_f64(&mut out, f64::NAN);
        write_opt_f64(&mut out, None);
        write_i64(&mut out, i64::MIN);
        write_u64(&mut out, u64::MAX);
        write_bool(&mut out, true);
        write_opt_str(&mut out, None);
        assert_eq!(
            out,
            b"nullnull-922337203685477580818446744073709551615truenull"
        );
    }

    proptest::proptest! {
        #[test]
        fn test_write_str_matches_serde_json(s in ".*") {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }
    }

    #[test]
    fn test_base64_str() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"\x00\xff\x10binary"] {
            let mut out = b"x".to_vec();
            write_base64_str(&mut out, data);
            let want = format!(
                "x\"{}\"",
                base64::engine::general_purpose::STANDARD.encode(data)
            );
            assert_eq!(out, want.as_bytes());
        }
    }
}
