//! Python-style `repr()` text built in Rust, bounded in length.
//!
//! Celery's `argsrepr`/`kwargsrepr` headers hold a short repr of the arguments. Computing the
//! full `repr()` of large arguments only to cut it is wasteful, so the binding crate walks the
//! objects and writes into a [`ReprBuf`] that stops growing at its limit; the pieces here write
//! what Python's `repr` writes for the scalar types (`str`, `int`, `float`, `None`, `bool`).

use std::fmt::Write as _;

use crate::jsonw;

/// A string that keeps at most `limit` characters (not bytes); what is pushed past the limit
/// is dropped.
#[derive(Debug, Clone)]
pub struct ReprBuf {
    text: String,
    chars: usize,
    limit: usize,
}

impl ReprBuf {
    pub fn new(limit: usize) -> ReprBuf {
        ReprBuf {
            text: String::with_capacity(limit.min(256)),
            chars: 0,
            limit,
        }
    }

    /// Whether the limit is reached: anything pushed now is dropped.
    pub fn is_full(&self) -> bool {
        self.chars >= self.limit
    }

    /// Characters still accepted.
    pub fn room(&self) -> usize {
        self.limit - self.chars
    }

    pub fn push_str(&mut self, t: &str) {
        let room = self.room();
        if t.len() <= room {
            // At most as many characters as bytes: it all fits.
            self.text.push_str(t);
            self.chars += if t.is_ascii() {
                t.len()
            } else {
                t.chars().count()
            };
            return;
        }
        for c in t.chars().take(room) {
            self.text.push(c);
        }
        self.chars += t.chars().take(room).count();
    }

    pub fn push_char(&mut self, c: char) {
        if self.chars < self.limit {
            self.text.push(c);
            self.chars += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_string(self) -> String {
        self.text
    }

    /// `repr(i)`.
    pub fn push_int(&mut self, i: i64) {
        let t = itoa_buf(i);
        self.push_str(t.as_str());
    }

    /// `repr(f)` of a Python float: the shortest text that reads back as `f`, in fixed
    /// notation with `.0` when integral, or in exponent notation (`1e+16`, `1.5e-05`) when the
    /// decimal exponent is below -4 or above 15, like CPython's `float_repr_style == 'short'`.
    pub fn push_float(&mut self, f: f64) {
        let mut out = String::with_capacity(24);
        write_py_float(&mut out, f);
        self.push_str(&out);
    }

    /// `repr(s)` of a Python str whose characters outside ASCII are all printable (the caller
    /// checks with `str.isprintable()` or knows `s` is ASCII); returns `false`, writing nothing,
    /// when `s` has a character outside ASCII and `non_ascii_printable` is false.
    pub fn push_str_repr(&mut self, s: &str, non_ascii_printable: bool) -> bool {
        let ascii = s.is_ascii();
        if !ascii && !non_ascii_printable {
            return false;
        }
        let quote = py_quote(s);
        let esc_quote = if quote == '\'' { b'\'' } else { b'\\' };
        self.push_char(quote);
        let bytes = s.as_bytes();
        let mut start = 0;
        // Runs written as they are, cut at the bytes that need an escape.
        while !self.is_full() {
            // Look no further than the bytes that can still fit (4 per character at most).
            let window = bytes.len().min(start + 4 * self.room() + 4);
            let i = jsonw::find_special(
                &bytes[..window],
                start,
                |x| {
                    jsonw::any_byte_lt(x, 0x20)
                        || jsonw::any_byte_eq(x, 0x7f)
                        || jsonw::any_byte_eq(x, b'\\')
                        || jsonw::any_byte_eq(x, esc_quote)
                },
                |b| b < 0x20 || b == 0x7f || b == b'\\' || b == esc_quote,
            );
            if i == window && window < bytes.len() {
                // The run alone fills the rest.
                self.push_str(&s[start..]);
                break;
            }
            self.push_str(&s[start..i]);
            let Some(&b) = bytes.get(i) else {
                self.push_char(quote);
                break;
            };
            match b {
                b'\\' => self.push_str("\\\\"),
                b'\t' => self.push_str("\\t"),
                b'\n' => self.push_str("\\n"),
                b'\r' => self.push_str("\\r"),
                b'\'' => self.push_str("\\'"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let hex = [
                        b'\\',
                        b'x',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ];
                    self.push_str(std::str::from_utf8(&hex).unwrap_or(""));
                }
            }
            start = i + 1;
        }
        true
    }
}

/// The quote Python's `repr` puts around `s`: `"` when it holds `'` and no `"`, else `'`.
pub fn py_quote(s: &str) -> char {
    let b = s.as_bytes();
    if b.contains(&b'\'') && !b.contains(&b'"') {
        '"'
    } else {
        '\''
    }
}

struct IntText {
    buf: [u8; 20],
    start: usize,
}

impl IntText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("")
    }
}

fn itoa_buf(i: i64) -> IntText {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let neg = i < 0;
    let mut n = i.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        pos -= 1;
        buf[pos] = b'-';
    }
    IntText { buf, start: pos }
}

/// Appends `repr(f)` of a Python float to `out`.
pub fn write_py_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f < 0.0 { "-inf" } else { "inf" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Rust's `{:e}` is the shortest round-trip digits: "d.ddde-5", "1e16".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if f < 0.0 {
        out.push('-');
    }
    // Position of the decimal point relative to the digits (CPython's `decpt`).
    let decpt = exp + 1;
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in 0..(-decpt) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let d = decpt as usize;
        if digits.len() <= d {
            out.push_str(&digits);
            for _ in digits.len()..d {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..d]);
            out.push('.');
            out.push_str(&digits[d..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(f: f64) -> String {
        let mut s = String::new();
        write_py_float(&mut s, f);
        s
    }

    fn str_repr(s: &str) -> String {
        let mut b = ReprBuf::new(1 << 20);
        assert!(b.push_str_repr(s, true));
        b.into_string()
    }

    #[test]
    fn test_float_like_python() {
        // Expected texts are CPython's repr() of the same floats.
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.75, "0.75"),
            (0.1, "0.1"),
            (10.99, "10.99"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (1e-300, "1e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (1234.5678, "1234.5678"),
            (2.0f64.powi(60), "1.152921504606847e+18"),
        ];
        for (f, want) in cases {
            assert_eq!(float(*f), *want, "{f:e}");
        }
    }

    #[test]
    fn test_str_repr_quotes_and_escapes() {
        assert_eq!(str_repr("abc"), "'abc'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(str_repr("say \"hi\""), "'say \"hi\"'");
        assert_eq!(str_repr("a\\b\tc\nd\re"), "'a\\\\b\\tc\\nd\\re'");
        assert_eq!(str_repr("\x00\x1f\x7f"), "'\\x00\\x1f\\x7f'");
        assert_eq!(str_repr("héllo €"), "'héllo €'");
        assert_eq!(str_repr(""), "''");
    }

    #[test]
    fn test_non_printable_non_ascii_is_refused() {
        let mut b = ReprBuf::new(100);
        assert!(!b.push_str_repr("é", false));
        assert_eq!(b.as_str(), "");
        assert!(b.push_str_repr("e", false));
    }

    #[test]
    fn test_bound_counts_characters() {
        let mut b = ReprBuf::new(5);
        b.push_str("éé");
        b.push_str("€€€€");
        assert!(b.is_full());
        assert_eq!(b.as_str(), "éé€€€");
        b.push_char('x');
        b.push_int(7);
        assert_eq!(b.as_str(), "éé€€€");

        let mut b = ReprBuf::new(4);
        assert!(b.push_str_repr("a\nbcdef", true));
        assert_eq!(b.as_str(), "'a\\n");

        // A long run is cut without scanning it all, on a character boundary.
        let long = format!("{}\n", "é".repeat(10_000));
        for limit in [1, 2, 3, 10, 1024] {
            let mut b = ReprBuf::new(limit);
            assert!(b.push_str_repr(&long, true));
            let want: String = std::iter::once('\'')
                .chain(long.chars())
                .take(limit)
                .collect();
            assert_eq!(b.as_str(), want);
        }
    }

    proptest::proptest! {
        #[test]
        fn test_float_reads_back(bits in proptest::prelude::any::<u64>()) {
            let f = f64::from_bits(bits);
            proptest::prop_assume!(f.is_finite());
            let text = float(f);
            proptest::prop_assert_eq!(text.parse::<f64>().unwrap().to_bits(), f.to_bits());
            proptest::prop_assert!(text.contains('.') || text.contains('e'));
        }
    }

    #[test]
    fn test_ints() {
        for i in [0, 7, -7, 1234567890, i64::MIN, i64::MAX] {
            let mut b = ReprBuf::new(100);
            b.push_int(i);
            assert_eq!(b.as_str(), i.to_string());
        }
    }
}
