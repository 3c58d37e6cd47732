//! The one pass over an envelope's JSON that [`decode_envelope`](super::envelope::decode_envelope)
//! starts with: the body, content type and encoding borrowed, the headers and properties reduced
//! to the members a [`TaskMessage`](super::message::TaskMessage) reads, on serde_json. The byte
//! scan of [`envelope_scan`](super::envelope_scan) gives the same [`RawEnvelope`] faster for the
//! envelopes producers usually write; this is the path for any envelope, and its precise error.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};

use crate::codec::{self, Seed, Skip, Value};
use crate::error::{Error, Result};

/// The index of a key in a list of known names, or `None`; never allocates.
pub(super) struct KnownKey(pub(super) &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KnownKey {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KnownKey {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == s))
    }
}

/// A JSON value that should be a string: borrowed from the input when it has no escapes;
/// any other type is kept (as a [`Value`]) for the error message, which is raised only after
/// the content type was checked.
#[derive(Debug)]
pub(super) enum Text<'a> {
    Missing,
    Str(Cow<'a, str>),
    Other(Value),
}

struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Text<'de>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed {
    type Value = Text<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Text::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Self::Value, E> {
        Ok(Text::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(Text::Other(Value::Null))
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Self::Value, E> {
        Ok(Text::Other(Value::Bool(b)))
    }
    fn visit_i64<E>(self, i: i64) -> std::result::Result<Self::Value, E> {
        Ok(Text::Other(Value::Int(i)))
    }
    fn visit_u64<E>(self, u: u64) -> std::result::Result<Self::Value, E> {
        Ok(Text::Other(Value::from_u64(u)))
    }
    fn visit_f64<E>(self, f: f64) -> std::result::Result<Self::Value, E> {
        Ok(Text::Other(Value::Float(f)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
        Skip { depth: 1 }.visit_seq(seq)?;
        Ok(Text::Other(Value::List(Vec::new())))
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> std::result::Result<Self::Value, A::Error> {
        Skip { depth: 1 }.visit_map(access)?;
        Ok(Text::Other(Value::Map(Vec::new())))
    }
}

/// The members of a JSON object (headers, properties) a [`TaskMessage`] reads, by index in
/// `keys`; a repeated key keeps its last value. A non-object is kept as the type name for an
/// error raised after the content type check; `null` means no members.
#[derive(Debug)]
pub(super) struct Members {
    pub(super) values: Vec<Option<Value>>,
    pub(super) not_object: Option<&'static str>,
}

impl Members {
    pub(super) fn empty(n: usize) -> Members {
        Members {
            values: (0..n).map(|_| None).collect(),
            not_object: None,
        }
    }
}

struct MembersSeed {
    keys: &'static [&'static str],
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for MembersSeed {
    type Value = Members;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Members, D::Error> {
        d.deserialize_any(self)
    }
}

impl MembersSeed {
    fn other(self, kind: &'static str) -> Members {
        let mut m = Members::empty(self.keys.len());
        m.not_object = Some(kind);
        m
    }
}

impl<'de> Visitor<'de> for MembersSeed {
    type Value = Members;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_unit<E>(self) -> std::result::Result<Members, E> {
        Ok(Members::empty(self.keys.len()))
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Members, E> {
        Ok(self.other("bool"))
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Members, E> {
        Ok(self.other("int"))
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Members, E> {
        Ok(self.other("int"))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Members, E> {
        Ok(self.other("float"))
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Members, E> {
        Ok(self.other("str"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Members, A::Error> {
        Skip { depth: self.depth }.visit_seq(seq)?;
        Ok(self.other("list"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> std::result::Result<Members, A::Error> {
        if self.depth >= codec::MAX_DEPTH {
            return Err(codec::too_deep());
        }
        let mut out = Members::empty(self.keys.len());
        let child = self.depth + 1;
        while let Some(key) = access.next_key_seed(KnownKey(self.keys))? {
            match key {
                Some(i) => out.values[i] = Some(access.next_value_seed(Seed { depth: child })?),
                None => access.next_value_seed(Skip { depth: child })?,
            }
        }
        Ok(out)
    }
}

/// The headers a [`TaskMessage`] reads; the others are skipped.
pub(super) const HEADER_KEYS: &[&str] = &[
    "task",
    "id",
    "retries",
    "timelimit",
    "redelivered",
    "compression",
    "eta",
    "expires",
    "root_id",
    "parent_id",
    "group",
    "group_index",
    "shadow",
    "origin",
    "ignore_result",
    "argsrepr",
    "kwargsrepr",
];

/// The properties a [`TaskMessage`] reads.
pub(super) const PROPERTY_KEYS: &[&str] = &[
    "delivery_info",
    "priority",
    "delivery_tag",
    "body_encoding",
    "reply_to",
    "correlation_id",
];

pub(super) const ENVELOPE_KEYS: &[&str] = &[
    "body",
    "content-type",
    "content-encoding",
    "headers",
    "properties",
];

/// An envelope after one pass over its JSON: the string members borrowed, the headers and
/// properties reduced to the members a [`TaskMessage`] reads.
#[derive(Debug)]
pub(super) struct RawEnvelope<'a> {
    pub(super) body: Text<'a>,
    pub(super) content_type: Text<'a>,
    pub(super) content_encoding: Text<'a>,
    pub(super) headers: Members,
    pub(super) properties: Members,
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = RawEnvelope<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut access: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut env = RawEnvelope {
            body: Text::Missing,
            content_type: Text::Missing,
            content_encoding: Text::Missing,
            headers: Members::empty(HEADER_KEYS.len()),
            properties: Members::empty(PROPERTY_KEYS.len()),
        };
        while let Some(key) = access.next_key_seed(KnownKey(ENVELOPE_KEYS))? {
            match key {
                Some(0) => env.body = access.next_value_seed(TextSeed)?,
                Some(1) => env.content_type = access.next_value_seed(TextSeed)?,
                Some(2) => env.content_encoding = access.next_value_seed(TextSeed)?,
                Some(3) => {
                    env.headers = access.next_value_seed(MembersSeed {
                        keys: HEADER_KEYS,
                        depth: 1,
                    })?
                }
                Some(_) => {
                    env.properties = access.next_value_seed(MembersSeed {
                        keys: PROPERTY_KEYS,
                        depth: 1,
                    })?
                }
                None => access.next_value_seed(Skip { depth: 1 })?,
            }
        }
        Ok(env)
    }
}

/// The serde_json path of [`decode_envelope`]: any envelope, and the precise error.
pub(super) fn raw_envelope(text: &str) -> Result<RawEnvelope<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(EnvelopeVisitor)
        .and_then(|env| de.end().map(|()| env))
        .map_err(|e| Error::Decode(format!("envelope: invalid JSON: {e}")))
}
