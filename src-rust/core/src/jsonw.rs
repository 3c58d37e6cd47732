//! Small pieces for writing compact JSON straight into a byte buffer, as serde_json writes
//! them (strings escaped the same way, UTF-8 left as is; integers and floats in serde_json's
//! text). The envelope writer and the binding crate's Python-object writer build on these.

use base64::Engine as _;
use serde::Serializer as _;

/// Appends `s` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::Serializer::new(&mut *out).serialize_str(s);
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
        for s in ["", "plain", "quote\" back\\ nl\n tab\t ctl\x01 é€😀"] {
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
