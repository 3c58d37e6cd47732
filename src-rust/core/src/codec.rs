//! Values carried in task messages and their two wire codecs, JSON and msgpack.
//!
//! JSON follows kombu's `kombu.utils.json`: types JSON lacks are written as
//! `{"__type__": T, "__value__": v}` (`datetime`, `date`, `time` as ISO text, `decimal` as text,
//! `uuid` as `{"hex": ...}`, `bytes` as UTF-8 text or `base64` when not UTF-8), and a
//! decoded object with exactly those two keys turns back into the native value.
//!
//! kombu's msgpack has no hooks for those types; rqueue writes them with the same marker maps
//! (bytes as msgpack `bin`) so they survive a round trip between rqueue peers, and a Celery peer
//! sees plain dicts instead of failing.
//!
//! Decoding bounds nesting at [`MAX_DEPTH`]: deeper input is an [`Error::Decode`], never a stack
//! overflow.

use std::cell::RefCell;
use std::fmt::Write as _;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, SerializeMap, SerializeSeq};
use serde::Serialize;

use crate::error::{Error, Result};

/// Deepest nesting of lists and maps accepted when decoding or encoding a value.
pub const MAX_DEPTH: usize = 128;

/// An ordered map; keys are usually [`Value::Str`] (always, after JSON decoding).
pub type Map = Vec<(Value, Value)>;

/// A value of a task's arguments, headers or results.
///
/// `Int` holds every integer that fits `i64`; `UInt` only those above `i64::MAX`. The
/// date/time, decimal and uuid variants hold their canonical text (Python's `isoformat()`,
/// `str(Decimal)`, the hyphenated lowercase UUID).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Map(Map),
    DateTime(String),
    Date(String),
    Time(String),
    Decimal(String),
    Uuid(String),
}

impl Value {
    /// An integer value, normalised so that `Int` is used whenever it fits.
    pub fn from_u64(n: u64) -> Value {
        match i64::try_from(n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(n),
        }
    }

    /// A short name of the variant for error messages (`"str"`, `"list"`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "dict",
            Value::DateTime(_) => "datetime",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Decimal(_) => "decimal",
            Value::Uuid(_) => "uuid",
        }
    }

    /// The text of a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value under string key `key` of a `Map` (the last one if repeated).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => map_get(m, key),
            _ => None,
        }
    }
}

/// The value under string key `key` (the last one if the key is repeated).
pub fn map_get<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .rev()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// The two codecs implemented in Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Msgpack,
}

impl Codec {
    /// The codec of a serializer name (`json`, `msgpack`) or MIME type.
    pub fn from_name(name: &str) -> Result<Codec> {
        Codec::from_content_type(name).ok_or_else(|| {
            Error::Config(format!(
                "unknown serializer {name:?} for a Rust codec: use \"json\" or \"msgpack\" \
                 (pickle and yaml are handled in Python)"
            ))
        })
    }

    /// The codec of a serializer name or content type, if Rust implements it.
    pub fn from_content_type(content_type: &str) -> Option<Codec> {
        match normalize_content_type(content_type).as_str() {
            "application/json" => Some(Codec::Json),
            "application/x-msgpack" => Some(Codec::Msgpack),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Msgpack => "msgpack",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Msgpack => "application/x-msgpack",
        }
    }

    pub fn content_encoding(self) -> &'static str {
        match self {
            Codec::Json => "utf-8",
            Codec::Msgpack => "binary",
        }
    }
}

/// `(content_type, content_encoding)` of a serializer name (json, msgpack, pickle, yaml).
pub fn content_type_of(serializer: &str) -> Result<(&'static str, &'static str)> {
    match serializer.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(("application/json", "utf-8")),
        "msgpack" => Ok(("application/x-msgpack", "binary")),
        "pickle" => Ok(("application/x-python-serialize", "binary")),
        "yaml" => Ok(("application/x-yaml", "utf-8")),
        _ => Err(Error::Config(format!(
            "unknown serializer {serializer:?}: use one of json, msgpack, pickle, yaml"
        ))),
    }
}

/// Lowercase MIME type of a serializer name or content type; parameters (`; charset=...`)
/// are dropped. Unknown names are returned as they are (lowercased), so a MIME type passes.
pub fn normalize_content_type(name_or_type: &str) -> String {
    let base = name_or_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "json" => "application/json".to_owned(),
        "msgpack" => "application/x-msgpack".to_owned(),
        "pickle" => "application/x-python-serialize".to_owned(),
        "yaml" => "application/x-yaml".to_owned(),
        _ => base,
    }
}

/// Serializes with `codec`.
pub fn dumps(value: &Value, codec: Codec) -> Result<Vec<u8>> {
    match codec {
        Codec::Json => to_json(value),
        Codec::Msgpack => to_msgpack(value),
    }
}

/// Deserializes with `codec`.
pub fn loads(data: &[u8], codec: Codec) -> Result<Value> {
    match codec {
        Codec::Json => from_json(data),
        Codec::Msgpack => from_msgpack(data),
    }
}

// -- error paths -------------------------------------------------------------------------------

/// One step of the location of a value, kept on the stack while encoding and rendered only
/// when an error needs it (`args[1]["k"]`).
#[derive(Clone, Copy)]
pub(crate) enum Seg<'a> {
    Root(&'a str),
    Index(usize),
    Key(&'a Value),
}

#[derive(Clone, Copy)]
pub(crate) struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

impl<'a> Path<'a> {
    pub(crate) fn root(name: &'a str) -> Path<'a> {
        Path {
            parent: None,
            seg: Seg::Root(name),
        }
    }

    pub(crate) fn child(&'a self, seg: Seg<'a>) -> Path<'a> {
        Path {
            parent: Some(self),
            seg,
        }
    }

    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            segs.push(p.seg);
            cur = p.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root(name) => out.push_str(name),
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
                Seg::Key(Value::Str(s)) => {
                    let _ = write!(out, "[{s:?}]");
                }
                Seg::Key(Value::Int(i)) => {
                    let _ = write!(out, "[{i}]");
                }
                Seg::Key(k) => {
                    let _ = write!(out, "[<{} key>]", k.type_name());
                }
            }
        }
        out
    }
}

fn ser_error(type_name: &str, path: &Path<'_>, codec: Codec) -> Error {
    Error::Serialize {
        type_name: type_name.to_owned(),
        path: path.render(),
        codec: codec.name().to_owned(),
    }
}

// -- JSON encoding -----------------------------------------------------------------------------

/// Holds the typed error of a failed JSON serialization (serde's errors are strings).
#[derive(Default)]
pub(crate) struct ErrSlot(RefCell<Option<Error>>);

impl ErrSlot {
    pub(crate) fn fail<E: ser::Error>(&self, err: Error) -> E {
        let msg = err.to_string();
        *self.0.borrow_mut() = Some(err);
        E::custom(msg)
    }

    /// The typed error recorded during serialization, else the serde error as a Decode-free
    /// Serialize error.
    pub(crate) fn into_error(self, e: serde_json::Error) -> Error {
        self.0.into_inner().unwrap_or_else(|| Error::Serialize {
            type_name: "value".to_owned(),
            path: format!("? ({e})"),
            codec: "json".to_owned(),
        })
    }
}

/// A value being written as JSON with kombu's markers; `Serialize` so it can sit inside other
/// serde structures (the envelope).
pub(crate) struct JsonNode<'a> {
    value: &'a Value,
    path: Path<'a>,
    depth: usize,
    slot: &'a ErrSlot,
}

impl<'a> JsonNode<'a> {
    pub(crate) fn new(value: &'a Value, path: Path<'a>, slot: &'a ErrSlot) -> JsonNode<'a> {
        JsonNode {
            value,
            path,
            depth: 0,
            slot,
        }
    }
}

struct Marker<'a, V: Serialize> {
    ty: &'a str,
    value: V,
}

impl<V: Serialize> Serialize for Marker<'_, V> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("__type__", self.ty)?;
        m.serialize_entry("__value__", &self.value)?;
        m.end()
    }
}

/// kombu 5.5+ writes a UUID as `{"hex": ...}` (older releases added `"version"`, still read).
#[derive(Serialize)]
struct UuidParts {
    hex: String,
}

fn uuid_parts(text: &str) -> Option<UuidParts> {
    let u = uuid::Uuid::parse_str(text).ok()?;
    Some(UuidParts {
        hex: u.simple().to_string(),
    })
}

/// Python's `str(float)` for a JSON object key (`json.dumps({1.5: 0})` gives `"1.5"`).
fn float_key(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

impl Serialize for JsonNode<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.value {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => {
                if f.is_finite() {
                    s.serialize_f64(*f)
                } else {
                    Err(self
                        .slot
                        .fail(ser_error(&format!("float {f}"), &self.path, Codec::Json)))
                }
            }
            Value::Str(t) => s.serialize_str(t),
            Value::Bytes(b) => match std::str::from_utf8(b) {
                Ok(t) => Marker {
                    ty: "bytes",
                    value: t,
                }
                .serialize(s),
                Err(_) => Marker {
                    ty: "base64",
                    value: base64::engine::general_purpose::STANDARD.encode(b),
                }
                .serialize(s),
            },
            Value::DateTime(t) => Marker {
                ty: "datetime",
                value: t,
            }
            .serialize(s),
            Value::Date(t) => Marker {
                ty: "date",
                value: t,
            }
            .serialize(s),
            Value::Time(t) => Marker {
                ty: "time",
                value: t,
            }
            .serialize(s),
            Value::Decimal(t) => Marker {
                ty: "decimal",
                value: t,
            }
            .serialize(s),
            Value::Uuid(t) => match uuid_parts(t) {
                Some(parts) => Marker {
                    ty: "uuid",
                    value: parts,
                }
                .serialize(s),
                None => {
                    Err(self
                        .slot
                        .fail(ser_error("uuid (malformed text)", &self.path, Codec::Json)))
                }
            },
            Value::List(items) => ser_list(s, items, &self.path, self.depth, self.slot),
            Value::Map(entries) => ser_map(s, entries, &self.path, self.depth, self.slot),
        }
    }
}

fn ser_list<S: ser::Serializer>(
    s: S,
    items: &[Value],
    path: &Path<'_>,
    depth: usize,
    slot: &ErrSlot,
) -> std::result::Result<S::Ok, S::Error> {
    if depth >= MAX_DEPTH {
        return Err(slot.fail(ser_error("list nested too deeply", path, Codec::Json)));
    }
    let mut seq = s.serialize_seq(Some(items.len()))?;
    for (i, item) in items.iter().enumerate() {
        let path = path.child(Seg::Index(i));
        seq.serialize_element(&JsonNode {
            value: item,
            path,
            depth: depth + 1,
            slot,
        })?;
    }
    seq.end()
}

fn ser_map<S: ser::Serializer>(
    s: S,
    entries: &[(Value, Value)],
    path: &Path<'_>,
    depth: usize,
    slot: &ErrSlot,
) -> std::result::Result<S::Ok, S::Error> {
    if depth >= MAX_DEPTH {
        return Err(slot.fail(ser_error("dict nested too deeply", path, Codec::Json)));
    }
    let mut map = s.serialize_map(Some(entries.len()))?;
    for (k, v) in entries {
        let path = path.child(Seg::Key(k));
        match k {
            Value::Str(t) => map.serialize_key(t.as_str())?,
            Value::Int(i) => map.serialize_key(&i.to_string())?,
            Value::UInt(u) => map.serialize_key(&u.to_string())?,
            Value::Bool(b) => map.serialize_key(if *b { "true" } else { "false" })?,
            Value::Null => map.serialize_key("null")?,
            Value::Float(f) if f.is_finite() => map.serialize_key(&float_key(*f))?,
            other => {
                let what = format!("dict key of type {}", other.type_name());
                return Err(slot.fail(ser_error(&what, &path, Codec::Json)));
            }
        }
        map.serialize_value(&JsonNode {
            value: v,
            path,
            depth: depth + 1,
            slot,
        })?;
    }
    map.end()
}

/// The `[args, kwargs, embed]` body of a protocol v2 message, serialized without first
/// building a `Value` of it.
struct JsonBody<'a> {
    args: &'a [Value],
    kwargs: &'a [(Value, Value)],
    embed: &'a [(Value, Value)],
    slot: &'a ErrSlot,
}

struct JsonList<'a>(&'a [Value], &'a str, &'a ErrSlot);
struct JsonMap<'a>(&'a [(Value, Value)], &'a str, &'a ErrSlot);

impl Serialize for JsonList<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ser_list(s, self.0, &Path::root(self.1), 0, self.2)
    }
}

impl Serialize for JsonMap<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ser_map(s, self.0, &Path::root(self.1), 0, self.2)
    }
}

impl Serialize for JsonBody<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(3))?;
        seq.serialize_element(&JsonList(self.args, "args", self.slot))?;
        seq.serialize_element(&JsonMap(self.kwargs, "kwargs", self.slot))?;
        seq.serialize_element(&JsonMap(self.embed, "embed", self.slot))?;
        seq.end()
    }
}

/// The embed of a plain task: no callbacks, errbacks, chain or chord.
pub fn default_embed() -> Map {
    ["callbacks", "errbacks", "chain", "chord"]
        .iter()
        .map(|k| (Value::Str((*k).to_owned()), Value::Null))
        .collect()
}

/// Appends the protocol v2 body `[args, kwargs, embed]` serialized with `codec`; error paths
/// start at `args`, `kwargs` or `embed`.
pub fn write_task_body(
    out: &mut Vec<u8>,
    codec: Codec,
    args: &[Value],
    kwargs: &[(Value, Value)],
    embed: &[(Value, Value)],
) -> Result<()> {
    match codec {
        Codec::Json => {
            let slot = ErrSlot::default();
            let body = JsonBody {
                args,
                kwargs,
                embed,
                slot: &slot,
            };
            serde_json::to_writer(&mut *out, &body).map_err(|e| slot.into_error(e))
        }
        Codec::Msgpack => {
            let io = |_| ser_error("body", &Path::root("body"), Codec::Msgpack);
            rmp::encode::write_array_len(out, 3).map_err(io)?;
            write_msgpack_list(out, args, &Path::root("args"), 0)?;
            write_msgpack_map(out, kwargs, &Path::root("kwargs"), 0)?;
            write_msgpack_map(out, embed, &Path::root("embed"), 0)
        }
    }
}

/// Serializes to compact JSON with kombu's markers.
pub fn to_json(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    write_json(&mut out, value, "value")?;
    Ok(out)
}

/// Appends the JSON of `value` to `out`; error paths start at `root` (e.g. `"args"`).
pub fn write_json(out: &mut Vec<u8>, value: &Value, root: &str) -> Result<()> {
    let slot = ErrSlot::default();
    let node = JsonNode::new(value, Path::root(root), &slot);
    serde_json::to_writer(&mut *out, &node).map_err(|e| slot.into_error(e))
}

// -- JSON decoding -----------------------------------------------------------------------------

/// Deserializes one JSON value into a [`Value`], `depth` levels below the root (for the
/// nesting bound).
pub(crate) struct Seed {
    pub(crate) depth: usize,
}

/// Skips one JSON value while honouring the nesting bound (serde's `IgnoredAny` has none).
pub(crate) struct Skip {
    pub(crate) depth: usize,
}

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        while seq
            .next_element_seed(Skip {
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> std::result::Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        while access.next_key::<de::IgnoredAny>()?.is_some() {
            access.next_value_seed(Skip {
                depth: self.depth + 1,
            })?;
        }
        Ok(())
    }
}

struct ValueVisitor {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor { depth: self.depth })
    }
}

pub(crate) fn too_deep<E: de::Error>() -> E {
    E::custom(format_args!("nesting deeper than {MAX_DEPTH} levels"))
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> std::result::Result<Value, E> {
        Ok(Value::from_u64(u))
    }
    fn visit_f64<E>(self, f: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Seed {
            depth: self.depth + 1,
        })? {
            items.push(v);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> std::result::Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let mut entries: Map = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
        while let Some(k) = access.next_key::<String>()? {
            let v = access.next_value_seed(Seed {
                depth: self.depth + 1,
            })?;
            entries.push((Value::Str(k), v));
        }
        finish_map(entries, true).map_err(de::Error::custom)
    }
}

/// Applies Python's dict semantics (a repeated key keeps its first place and its last value)
/// and turns a kombu marker object into its native value.
pub(crate) fn finish_map(
    mut entries: Map,
    strict_markers: bool,
) -> std::result::Result<Value, String> {
    dedup_keys(&mut entries);
    if entries.len() == 2 {
        let ty = map_get(&entries, "__type__");
        let has_value = map_get(&entries, "__value__").is_some();
        if let (Some(ty), true) = (ty, has_value) {
            let ty = match ty {
                Value::Str(t) => t.clone(),
                other if strict_markers => {
                    return Err(format!(
                        "__type__ must be a string, not {}",
                        other.type_name()
                    ))
                }
                _ => return Ok(Value::Map(entries)),
            };
            let value = entries
                .into_iter()
                .find(|(k, _)| k.as_str() == Some("__value__"))
                .map(|(_, v)| v)
                .unwrap_or(Value::Null);
            return from_marker(&ty, value, strict_markers);
        }
    }
    Ok(Value::Map(entries))
}

fn dedup_keys(entries: &mut Map) {
    if entries.len() < 2 {
        return;
    }
    let all_str = entries.iter().all(|(k, _)| matches!(k, Value::Str(_)));
    let has_dup = if entries.len() > 16 && all_str {
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        !entries.iter().all(|(k, _)| seen.insert(k.as_str()))
    } else {
        (1..entries.len()).any(|i| entries[..i].iter().any(|(k, _)| k == &entries[i].0))
    };
    if !has_dup {
        return;
    }
    let mut out: Map = Vec::with_capacity(entries.len());
    for (k, v) in entries.drain(..) {
        match out.iter_mut().find(|(ok, _)| ok == &k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    *entries = out;
}

/// The native value of a JSON marker object `{"__type__": ty, "__value__": value}`, with the
/// strict rules of JSON decoding (an unknown `ty` is an error).
pub fn decode_json_marker(ty: &str, value: Value) -> std::result::Result<Value, String> {
    from_marker(ty, value, true)
}

fn from_marker(ty: &str, value: Value, strict: bool) -> std::result::Result<Value, String> {
    let text = |value: Value| match value {
        Value::Str(s) => Ok(s),
        other => Err(format!(
            "__value__ of a {ty:?} marker must be a string, not {}",
            other.type_name()
        )),
    };
    match ty {
        "datetime" => Ok(Value::DateTime(text(value)?)),
        "date" => Ok(Value::Date(text(value)?)),
        "time" => Ok(Value::Time(text(value)?)),
        "decimal" => Ok(Value::Decimal(text(value)?)),
        "bytes" => Ok(Value::Bytes(text(value)?.into_bytes())),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(text(value)?)
            .map(Value::Bytes)
            .map_err(|e| format!("invalid base64 in a bytes marker: {e}")),
        "uuid" => decode_uuid(value).map(Value::Uuid),
        _ if strict => Err(format!("unsupported __type__ {ty:?} in a marker object")),
        _ => Ok(Value::Map(vec![
            (Value::Str("__type__".to_owned()), Value::Str(ty.to_owned())),
            (Value::Str("__value__".to_owned()), value),
        ])),
    }
}

/// A uuid marker holds `{"hex": ...}`, `{"hex": ..., "version": ...}` (older kombu) or the text.
fn decode_uuid(value: Value) -> std::result::Result<String, String> {
    let (hex, version) = match &value {
        Value::Str(s) => (s.as_str(), None),
        Value::Map(m) => {
            let hex = map_get(m, "hex")
                .and_then(Value::as_str)
                .ok_or("uuid marker without a \"hex\" string")?;
            let version = match map_get(m, "version") {
                None | Some(Value::Null) => None,
                Some(Value::Int(v)) if (1..=8).contains(v) => Some(*v as u8),
                Some(other) => return Err(format!("invalid uuid version {other:?}")),
            };
            (hex, version)
        }
        other => {
            return Err(format!(
                "uuid marker value must be a string or dict, not {}",
                other.type_name()
            ))
        }
    };
    let u = uuid::Uuid::parse_str(hex).map_err(|e| format!("invalid uuid {hex:?}: {e}"))?;
    let mut bytes = *u.as_bytes();
    if let Some(v) = version {
        // Python's UUID(hex=..., version=v) forces the RFC 4122 variant and version bits.
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        bytes[6] = (bytes[6] & 0x0f) | (v << 4);
    }
    Ok(uuid::Uuid::from_bytes(bytes).hyphenated().to_string())
}

/// Deserializes JSON (kombu's markers become native values).
pub fn from_json(data: &[u8]) -> Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let value = Seed { depth: 0 }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| Error::Decode(format!("invalid JSON: {e}")))?;
    Ok(value)
}

// -- msgpack -----------------------------------------------------------------------------------

fn mp_err(path: &Path<'_>, what: &str) -> Error {
    ser_error(what, path, Codec::Msgpack)
}

fn mp_len(len: usize, path: &Path<'_>) -> Result<u32> {
    u32::try_from(len).map_err(|_| mp_err(path, "container or string longer than 2**32"))
}

fn mp_marker(out: &mut Vec<u8>, ty: &str, value: &str, path: &Path<'_>) -> Result<()> {
    let io = |_| mp_err(path, ty);
    rmp::encode::write_map_len(out, 2).map_err(io)?;
    rmp::encode::write_str(out, "__type__").map_err(io)?;
    rmp::encode::write_str(out, ty).map_err(io)?;
    rmp::encode::write_str(out, "__value__").map_err(io)?;
    rmp::encode::write_str(out, value).map_err(io)
}

pub(crate) fn write_msgpack_at(
    out: &mut Vec<u8>,
    value: &Value,
    path: &Path<'_>,
    depth: usize,
) -> Result<()> {
    let io = |_| mp_err(path, value.type_name());
    match value {
        Value::Null => rmp::encode::write_nil(out).map_err(|_| mp_err(path, "null")),
        Value::Bool(b) => rmp::encode::write_bool(out, *b).map_err(|_| mp_err(path, "bool")),
        Value::Int(i) => rmp::encode::write_sint(out, *i).map(|_| ()).map_err(io),
        Value::UInt(u) => rmp::encode::write_uint(out, *u).map(|_| ()).map_err(io),
        Value::Float(f) => rmp::encode::write_f64(out, *f).map_err(io),
        Value::Str(s) => {
            mp_len(s.len(), path)?;
            rmp::encode::write_str(out, s).map_err(io)
        }
        Value::Bytes(b) => {
            mp_len(b.len(), path)?;
            rmp::encode::write_bin(out, b).map_err(io)
        }
        Value::DateTime(t) => mp_marker(out, "datetime", t, path),
        Value::Date(t) => mp_marker(out, "date", t, path),
        Value::Time(t) => mp_marker(out, "time", t, path),
        Value::Decimal(t) => mp_marker(out, "decimal", t, path),
        Value::Uuid(t) => {
            let parts = uuid_parts(t).ok_or_else(|| mp_err(path, "uuid (malformed text)"))?;
            rmp::encode::write_map_len(out, 2).map_err(io)?;
            rmp::encode::write_str(out, "__type__").map_err(io)?;
            rmp::encode::write_str(out, "uuid").map_err(io)?;
            rmp::encode::write_str(out, "__value__").map_err(io)?;
            rmp::encode::write_map_len(out, 1).map_err(io)?;
            rmp::encode::write_str(out, "hex").map_err(io)?;
            rmp::encode::write_str(out, &parts.hex).map_err(io)
        }
        Value::List(items) => write_msgpack_list(out, items, path, depth),
        Value::Map(entries) => write_msgpack_map(out, entries, path, depth),
    }
}

fn write_msgpack_list(
    out: &mut Vec<u8>,
    items: &[Value],
    path: &Path<'_>,
    depth: usize,
) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(mp_err(path, "list nested too deeply"));
    }
    let len = mp_len(items.len(), path)?;
    rmp::encode::write_array_len(out, len).map_err(|_| mp_err(path, "list"))?;
    for (i, item) in items.iter().enumerate() {
        write_msgpack_at(out, item, &path.child(Seg::Index(i)), depth + 1)?;
    }
    Ok(())
}

fn write_msgpack_map(
    out: &mut Vec<u8>,
    entries: &[(Value, Value)],
    path: &Path<'_>,
    depth: usize,
) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(mp_err(path, "dict nested too deeply"));
    }
    let len = mp_len(entries.len(), path)?;
    rmp::encode::write_map_len(out, len).map_err(|_| mp_err(path, "dict"))?;
    for (k, v) in entries {
        let child = path.child(Seg::Key(k));
        write_msgpack_at(out, k, &child, depth + 1)?;
        write_msgpack_at(out, v, &child, depth + 1)?;
    }
    Ok(())
}

/// Serializes to msgpack (strings as `str`, bytes as `bin`, like `packb(use_bin_type=True)`).
pub fn to_msgpack(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    write_msgpack_at(&mut out, value, &Path::root("value"), 0)?;
    Ok(out)
}

/// Appends the msgpack of `value` to `out`; error paths start at `root`.
pub fn write_msgpack(out: &mut Vec<u8>, value: &Value, root: &str) -> Result<()> {
    write_msgpack_at(out, value, &Path::root(root), 0)
}

fn from_rmpv(v: rmpv::Value) -> std::result::Result<Value, String> {
    Ok(match v {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(b),
        rmpv::Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Value::Int(n),
            (None, Some(n)) => Value::UInt(n),
            _ => return Err("integer out of range".to_owned()),
        },
        rmpv::Value::F32(f) => Value::Float(f64::from(f)),
        rmpv::Value::F64(f) => Value::Float(f),
        rmpv::Value::String(s) => match s.into_str() {
            Some(s) => Value::Str(s),
            None => return Err("msgpack str is not valid UTF-8".to_owned()),
        },
        rmpv::Value::Binary(b) => Value::Bytes(b),
        rmpv::Value::Array(items) => Value::List(
            items
                .into_iter()
                .map(from_rmpv)
                .collect::<std::result::Result<_, _>>()?,
        ),
        rmpv::Value::Map(entries) => {
            let mut map = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                map.push((from_rmpv(k)?, from_rmpv(v)?));
            }
            finish_map(map, false)?
        }
        rmpv::Value::Ext(code, _) => {
            return Err(format!("msgpack extension type {code} is not supported"))
        }
    })
}

/// Deserializes msgpack (marker maps become native values; bin becomes bytes).
pub fn from_msgpack(data: &[u8]) -> Result<Value> {
    let mut rd = data;
    let raw = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .map_err(|e| Error::Decode(format!("invalid msgpack: {e}")))?;
    if !rd.is_empty() {
        return Err(Error::Decode(format!(
            "invalid msgpack: {} trailing bytes after the value",
            rd.len()
        )));
    }
    from_rmpv(raw).map_err(|e| Error::Decode(format!("invalid msgpack: {e}")))
}

#[cfg(test)]
mod tests;
