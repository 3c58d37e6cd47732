//! The envelope decoder's fast path: one validating byte scan for envelopes as producers write
//! them. It reads nothing serde_json would read differently: a string with an escape, a
//! fraction or exponent in a value it keeps, an integer out of `i64`, deep nesting or anything
//! malformed make it give up (`None`), and [`decode_envelope`](super::envelope::decode_envelope)
//! then takes the serde_json path ([`envelope_read`](super::envelope_read)), which gives the same result or the precise error. What it
//! skips it still validates, so an envelope is never accepted here that serde_json would refuse.
//!
//! Why: the serde visitor machinery cost ~60 instructions per byte of a typical 850-byte
//! envelope, about a fifth of a worker's whole per-task cost for a no-op task.

use std::borrow::Cow;

use crate::codec::{self, Value};
use crate::protocol::envelope_read::{
    Members, RawEnvelope, Text, ENVELOPE_KEYS, HEADER_KEYS, PROPERTY_KEYS,
};

/// Nesting this scan follows; deeper input is left to serde_json (which allows up to
/// `codec::MAX_DEPTH` and reports the error past it).
const MAX_SCAN_DEPTH: usize = 32;
/// Digits of an integer this scan converts: every 18-digit number fits `i64`.
const MAX_INT_DIGITS: usize = 18;

/// Scans `text` as an envelope; `None` when the serde_json path must decide.
pub(super) fn scan_envelope(text: &str) -> Option<RawEnvelope<'_>> {
    let mut s = Scanner {
        b: text.as_bytes(),
        text,
        i: 0,
    };
    let mut env = RawEnvelope {
        body: Text::Missing,
        content_type: Text::Missing,
        content_encoding: Text::Missing,
        headers: Members::empty(HEADER_KEYS.len()),
        properties: Members::empty(PROPERTY_KEYS.len()),
    };
    s.ws();
    s.object(|s, key| {
        match position(ENVELOPE_KEYS, key) {
            Some(0) => env.body = s.text_value()?,
            Some(1) => env.content_type = s.text_value()?,
            Some(2) => env.content_encoding = s.text_value()?,
            Some(3) => env.headers = s.members(HEADER_KEYS)?,
            Some(_) => env.properties = s.members(PROPERTY_KEYS)?,
            None => s.skip(1)?,
        }
        Some(())
    })?;
    s.ws();
    (s.i == s.b.len()).then_some(env)
}

/// Where `key` is in `keys`; the length and first byte are compared before the bytes.
fn position(keys: &[&str], key: &str) -> Option<usize> {
    let first = *key.as_bytes().first()?;
    keys.iter()
        .position(|k| k.len() == key.len() && k.as_bytes()[0] == first && *k == key)
}

/// Bytes before the first quote, backslash or control character (or the end), eight at a time:
/// the scan spends most of its time inside strings.
fn string_span(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero (or, for `x - 0x20..`, below 0x20) when its high bit ends up set
    // here; bytes of 0x80 and above never match, so non-ASCII text passes.
    let special = |x: u64| {
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        (zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | x.wrapping_sub(ONES * 0x20))
            & !x
            & HIGHS
    };
    let mut word = [0u8; 8];
    for (n, chunk) in b.chunks_exact(8).enumerate() {
        word.copy_from_slice(chunk);
        let hit = special(u64::from_le_bytes(word));
        if hit != 0 {
            return n * 8 + (hit.trailing_zeros() / 8) as usize;
        }
    }
    let i = b.len() - b.len() % 8;
    i + b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len() - i)
}

struct Scanner<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string without escapes or control characters, borrowed (the opening quote is next).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = start + string_span(&self.b[start..]);
        let len = self.i - start;
        self.eat(b'"')?; // an escape or a control character: not ours
                         // Both ends are ASCII quotes inside valid UTF-8, so these are char boundaries.
        Some(&self.text[start..start + len])
    }

    /// `{ "key": value, ... }` (the brace is next), calling `member` with each key once the
    /// scanner stands on its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `[ value, ... ]` (the bracket is next), calling `item` with the scanner on each value.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The body, content type or encoding: a string, or `null` (other types: serde_json's
    /// path words the error).
    fn text_value(&mut self) -> Option<Text<'a>> {
        if self.peek()? == b'"' {
            Some(Text::Str(Cow::Borrowed(self.string()?)))
        } else {
            self.literal(b"null")?;
            Some(Text::Other(Value::Null))
        }
    }

    /// An object's members named in `keys` (a repeated key keeps its last value), or `null`.
    fn members(&mut self, keys: &'static [&'static str]) -> Option<Members> {
        let mut out = Members::empty(keys.len());
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(out);
        }
        self.object(|s, key| {
            match position(keys, key) {
                Some(i) => out.values[i] = Some(s.value(2)?),
                None => s.skip(2)?,
            }
            Some(())
        })?;
        Some(out)
    }

    /// A value kept: null, a bool, an integer, a string, or a list or object of those (an object
    /// as serde_json's path makes it: Python's dict semantics, kombu's markers).
    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_SCAN_DEPTH {
            return None;
        }
        Some(match self.peek()? {
            b'"' => Value::Str(self.string()?.to_owned()),
            b'n' => self.literal(b"null").map(|()| Value::Null)?,
            b't' => self.literal(b"true").map(|()| Value::Bool(true))?,
            b'f' => self.literal(b"false").map(|()| Value::Bool(false))?,
            b'[' => {
                let mut items = Vec::new();
                self.array(|s| {
                    items.push(s.value(depth + 1)?);
                    Some(())
                })?;
                Value::List(items)
            }
            b'{' => {
                let mut map = Vec::new();
                self.object(|s, key| {
                    map.push((Value::Str(key.to_owned()), s.value(depth + 1)?));
                    Some(())
                })?;
                codec::finish_map(map, true).ok()?
            }
            _ => Value::Int(self.integer()?),
        })
    }

    /// An integer as serde_json reads it into `i64` (not `-0`, which it reads as a float).
    fn integer(&mut self) -> Option<i64> {
        let negative = self.eat(b'-').is_some();
        let start = self.i;
        let digits = self.b[start..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || digits > MAX_INT_DIGITS || (digits > 1 && self.b[start] == b'0') {
            return None;
        }
        self.i += digits;
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None; // a float: serde_json's own parsing decides its exact value
        }
        let n = self.b[start..self.i]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        match (negative, n) {
            (true, 0) => None,
            (true, n) => Some(-n),
            (false, n) => Some(n),
        }
    }

    /// Passes over any valid JSON value, validating it; numbers by JSON's grammar.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_SCAN_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'[' => self.array(|s| s.skip(depth + 1)),
            b'{' => self.object(|s, _| s.skip(depth + 1)),
            _ => self.number(),
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        let int = self.digits();
        if int == 0 || (int > 1 && self.b[self.i - int] == b'0') {
            return None;
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn digits(&mut self) -> usize {
        let n = self.b[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        self.i += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::scan_envelope;
    use crate::codec::{self, Value};
    use crate::protocol::envelope_read::raw_envelope;
    use proptest::prelude::*;

    /// The scan either gives up or reads exactly what serde_json's path reads.
    fn agrees(text: &str) -> bool {
        let fast = scan_envelope(text);
        let slow = raw_envelope(text);
        match (&fast, &slow) {
            (None, _) => {}
            (Some(f), Ok(s)) => assert_eq!(format!("{f:?}"), format!("{s:?}"), "input: {text}"),
            (Some(f), Err(e)) => {
                panic!("scan accepted what serde_json refuses ({e}): {f:?}; input: {text}")
            }
        }
        fast.is_some()
    }

    const TYPICAL: &str = r#"{"body":"W1tdLHt9LHsiY2FsbGJhY2tzIjpudWxsfV0=","content-encoding":"utf-8","content-type":"application/json","headers":{"lang":"py","task":"noop","id":"05e94fd9","shadow":null,"eta":null,"expires":null,"group":null,"group_index":null,"retries":0,"timelimit":[null,null],"root_id":"05e94fd9","parent_id":null,"argsrepr":"()","kwargsrepr":"{}","origin":"gen18520@vm","ignore_result":false,"replaced_task_nesting":0,"stamped_headers":null,"stamps":{}},"properties":{"correlation_id":"05e94fd9","reply_to":"5ce4d78f","delivery_mode":2,"delivery_info":{"exchange":"","routing_key":"celery"},"priority":0,"body_encoding":"base64","delivery_tag":"86bdd2c4"}}"#;

    #[test]
    fn typical_envelopes_take_the_scan_and_read_the_same() {
        assert!(agrees(TYPICAL));
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/test-vectors/envelopes.json"
        );
        let Value::List(vectors) = codec::from_json(&std::fs::read(path).unwrap()).unwrap() else {
            panic!("the vectors file is a list")
        };
        let mut scanned = 0;
        for v in &vectors {
            let Value::Map(m) = v else { continue };
            for (k, val) in m {
                if let (Value::Str(k), Value::Str(env)) = (k, val) {
                    if k == "envelope" {
                        scanned += usize::from(agrees(env));
                    }
                }
            }
        }
        assert!(scanned > 0, "no test vector took the scan");
    }

    #[test]
    fn what_the_scan_leaves_to_serde_json() {
        let variants = [
            // escapes, floats, -0, integers past i64, deep nesting: left to serde_json
            TYPICAL.replace(r#""argsrepr":"()""#, r#""argsrepr":"(\"a\",)""#),
            TYPICAL.replace(r#""lang":"py""#, r#""la\u006eg":"py""#),
            TYPICAL.replace(r#""retries":0"#, r#""retries":1.5"#),
            TYPICAL.replace(r#""retries":0"#, r#""retries":-0"#),
            TYPICAL.replace(r#""retries":0"#, r#""retries":99999999999999999999"#),
            TYPICAL.replace(
                r#""stamps":{}"#,
                &format!(r#""stamps":{}1{}"#, "[".repeat(40), "]".repeat(40)),
            ),
            // refused by serde_json too: the scan must not accept them
            TYPICAL.replace(r#""retries":0"#, r#""retries":01"#),
            TYPICAL.replace(r#""delivery_mode":2"#, r#""delivery_mode":2."#),
            TYPICAL.replace(r#""delivery_mode":2"#, r#""delivery_mode":.5"#),
            TYPICAL.replace(r#""delivery_mode":2"#, r#""delivery_mode":1e"#),
            TYPICAL.replace(r#""delivery_mode":2"#, r#""delivery_mode":-"#),
            TYPICAL.replace(r#""delivery_mode":2"#, r#""delivery_mode":nul"#),
            TYPICAL.replace(r#""stamps":{}"#, r#""stamps":{,}"#),
            TYPICAL.replace(r#""stamps":{}"#, r#""stamps":[1,]"#),
            TYPICAL.replace(r#""lang":"py""#, "\"lang\":\"p\ty\""),
            format!("{TYPICAL},"),
            format!("{TYPICAL} x"),
            TYPICAL.replacen('{', "[", 1),
            // read by both alike
            TYPICAL.replace(r#""delivery_mode":2"#, r#""delivery_mode":-2.5e+10"#),
            TYPICAL.replace(r#""retries":0"#, r#""retries":-7"#),
            TYPICAL.replace(r#""retries":0"#, r#""retries":999999999999999999"#),
            TYPICAL.replace(',', " ,\n\t"),
            TYPICAL.replace(':', " : "),
            TYPICAL.replace(r#""task":"noop""#, r#""task":"noop","task":"other""#),
            TYPICAL.replace(r#""headers":{"#, r#""headers":null,"x":{"#),
            TYPICAL.replace(r#""exchange":"""#, r#""exchange":"","exchange":"e""#),
            TYPICAL.replace(
                r#""delivery_info":{"exchange":"","routing_key":"celery"}"#,
                r#""delivery_info":{"__type__":"bytes","__value__":"YQ=="}"#,
            ),
            TYPICAL.replace(
                r#""body":"W1tdLHt9LHsiY2FsbGJhY2tzIjpudWxsfV0=""#,
                r#""body":null"#,
            ),
            TYPICAL.replace(r#""lang":"py""#, r#""lang":"pé""#),
            format!(" \n{TYPICAL}\n "),
            "{}".to_owned(),
        ];
        for text in &variants {
            agrees(text);
        }
        assert!(!agrees(&variants[0]) && !agrees(&variants[3]));
        assert!(agrees(&variants[18]) && agrees(&variants[23]));
    }

    proptest! {
        #[test]
        fn string_span_stops_where_a_byte_by_byte_search_stops(
            b in proptest::collection::vec(proptest::sample::select(vec![b'a', b'"', b'\\', 0x1f, 0x20, 0x7f, 0x80, 0xc3, 0xff, b'!', b'#', b'[', b']', 0]), 0..40)
        ) {
            let naive = b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(b.len());
            prop_assert_eq!(super::string_span(&b), naive);
        }

        #[test]
        fn a_mutated_envelope_is_read_alike_or_left_to_serde_json(
            edits in proptest::collection::vec((0usize..900, 0u8..128, 0u8..3), 1..4)
        ) {
            let mut data = TYPICAL.as_bytes().to_vec();
            for (pos, byte, op) in edits {
                let i = pos % (data.len() + 1);
                match op {
                    0 if i < data.len() => data[i] = byte,
                    1 => data.insert(i, byte),
                    _ if i < data.len() => { data.remove(i); }
                    _ => {}
                }
            }
            agrees(std::str::from_utf8(&data).unwrap());
        }

        #[test]
        fn generated_values_are_read_alike_or_left_to_serde_json(
            tokens in proptest::collection::vec(proptest::sample::select(vec![
                "null", "true", "false", "0", "-1", "12", "1.5", "-0", "1e3", "\"s\"", "\"a\\\"b\"",
                "[", "]", "{", "}", ",", ":", "\"__type__\"", "\"__value__\"", " ", "01", "\"k\"",
            ]), 1..12),
            key in proptest::sample::select(vec!["retries", "timelimit", "stamps", "eta", "task"]),
            in_properties in any::<bool>(),
        ) {
            let value: String = tokens.concat();
            let text = if in_properties {
                TYPICAL.replace(r#""delivery_mode":2"#, &format!(r#""delivery_info":{value}"#))
            } else {
                TYPICAL.replace(r#""lang":"py""#, &format!(r#""{key}":{value}"#))
            };
            agrees(&text);
        }
    }
}
