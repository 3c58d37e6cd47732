//! The Celery protocol v2 task message itself, whatever carries it: what a producer specifies
//! ([`TaskMessageSpec`]), the body `[args, kwargs, embed]` it serializes to, and the decoded
//! message a worker reads ([`TaskMessage`]), with the typed checks of its fields. Transports wrap
//! it their own way (kombu's JSON envelope: [`envelope`](super::envelope)).

use std::borrow::Cow;

use crate::codec::{self, Codec, Map, Value};
use crate::error::{Error, Result};
use crate::protocol::iso8601::parse_iso;

/// Default maximum size of an envelope (and of its decoded body), in bytes.
pub const DEFAULT_MAX_SIZE: usize = 1 << 20;

/// Everything needed to encode one task message. Build with [`TaskMessageSpec::new`] and set
/// the public fields; unset options are written as Celery writes them (`null`, `0`, `false`).
#[derive(Debug, Clone)]
pub struct TaskMessageSpec {
    pub task: String,
    pub id: String,
    pub args: Vec<Value>,
    pub kwargs: Map,
    /// `None` means the default `{"callbacks": null, "errbacks": null, "chain": null, "chord": null}`.
    pub embed: Option<Map>,
    pub routing_key: String,
    pub exchange: String,
    /// json, msgpack, pickle or yaml; pickle/yaml need `body`.
    pub serializer: String,
    /// A body already serialized elsewhere (pickle, from Python); used as is.
    pub body: Option<Vec<u8>>,
    pub eta_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub retries: i64,
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    /// Clamped to 0..=9; `None` is written as 0 like kombu does.
    pub priority: Option<i64>,
    /// Defaults to the task's own id.
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub group_id: Option<String>,
    pub group_index: Option<i64>,
    pub shadow: Option<String>,
    pub origin: Option<String>,
    pub ignore_result: bool,
    pub argsrepr: Option<String>,
    pub kwargsrepr: Option<String>,
    pub reply_to: Option<String>,
    /// A fresh uuid4 when `None`.
    pub delivery_tag: Option<String>,
    /// More headers; a key here replaces the standard header of that name.
    pub extra_headers: Map,
    pub max_size: usize,
}

impl TaskMessageSpec {
    /// A spec with no arguments, JSON, the default exchange and the given queue.
    pub fn new(
        task: impl Into<String>,
        id: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        TaskMessageSpec {
            task: task.into(),
            id: id.into(),
            args: Vec::new(),
            kwargs: Vec::new(),
            embed: None,
            routing_key: routing_key.into(),
            exchange: String::new(),
            serializer: "json".to_owned(),
            body: None,
            eta_ms: None,
            expires_ms: None,
            retries: 0,
            time_limit: None,
            soft_time_limit: None,
            priority: None,
            root_id: None,
            parent_id: None,
            group_id: None,
            group_index: None,
            shadow: None,
            origin: None,
            ignore_result: false,
            argsrepr: None,
            kwargsrepr: None,
            reply_to: None,
            delivery_tag: None,
            extra_headers: Vec::new(),
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// A decoded task message.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    pub task: String,
    pub id: String,
    /// `None` for bodies Rust does not decode (pickle, yaml).
    pub args: Option<Vec<Value>>,
    pub kwargs: Option<Map>,
    pub embed: Option<Map>,
    /// The raw body after base64 decoding.
    pub body: Vec<u8>,
    pub content_type: String,
    pub content_encoding: String,
    pub eta_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub retries: i64,
    pub priority: u8,
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub group_id: Option<String>,
    /// This task's place in its group (Celery 5's `group_index` header).
    pub group_index: Option<i64>,
    /// The name shown instead of `task` (Celery's `shadow` header).
    pub shadow: Option<String>,
    pub origin: Option<String>,
    pub ignore_result: bool,
    pub argsrepr: Option<String>,
    pub kwargsrepr: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    pub delivery_tag: Option<String>,
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    /// Every header, as sent.
    pub headers: Map,
}

/// The accepted content types, normalised (`"json"` → `"application/json"`).
#[derive(Debug, Clone)]
pub struct Accept(pub(crate) Vec<String>);

impl Accept {
    pub fn new<I, S>(names: I) -> Accept
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Accept(
            names
                .into_iter()
                .map(|n| codec::normalize_content_type(n.as_ref()))
                .collect(),
        )
    }

    /// Whether `content_type` (a MIME type, parameters ignored) is accepted.
    pub fn allows(&self, content_type: &str) -> bool {
        let ct = codec::normalize_content_type(content_type);
        self.0.contains(&ct)
    }
}

impl Default for Accept {
    fn default() -> Self {
        Accept(vec!["application/json".to_owned()])
    }
}

/// Clamps a priority to Redis's 0..=9.
pub fn clamp_priority(priority: i64) -> u8 {
    priority.clamp(0, 9) as u8
}

/// `(content_type, content_encoding, body)` of a spec: the body `[args, kwargs, embed]`
/// serialized with the spec's serializer, or the body given already serialized. Every
/// transport sends this body as it is (kombu's envelope base64-encodes it around).
pub fn encode_body(spec: &TaskMessageSpec) -> Result<(&'static str, &'static str, Cow<'_, [u8]>)> {
    let (content_type, content_encoding) = codec::content_type_of(&spec.serializer)?;
    let body = match (&spec.body, Codec::from_content_type(content_type)) {
        (Some(raw), _) => Cow::Borrowed(raw.as_slice()),
        (None, Some(c)) => {
            let mut out = Vec::with_capacity(64 + 16 * spec.args.len());
            let default_embed;
            let embed = match &spec.embed {
                Some(e) => e,
                None => {
                    default_embed = codec::default_embed();
                    &default_embed
                }
            };
            codec::write_task_body(&mut out, c, &spec.args, &spec.kwargs, embed)?;
            Cow::Owned(out)
        }
        (None, None) => {
            return Err(Error::Config(format!(
                "serializer {:?} needs a body serialized in Python (pass body=...)",
                spec.serializer
            )))
        }
    };
    Ok((content_type, content_encoding, body))
}

// -- decoding --------------------------------------------------------------------------------

pub(crate) fn bad(field: &str, expected: &str, got: &Value) -> Error {
    Error::Decode(format!(
        "{field} must be {expected}, got {} {}",
        got.type_name(),
        short(got)
    ))
}

pub(crate) fn short(v: &Value) -> String {
    let mut s = format!("{v:?}");
    if s.len() > 80 {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
pub(crate) fn opt_str(v: Option<Value>, field: &str) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(other) => Err(bad(field, "a string or null", &other)),
    }
}

pub(crate) fn req_str(v: Option<Value>, field: &str) -> Result<String> {
    match v {
        Some(Value::Str(s)) => Ok(s),
        None => Err(Error::Decode(format!(
            "missing {field} (not a Celery protocol v2 task message)"
        ))),
        Some(other) => Err(bad(field, "a string", &other)),
    }
}

pub(crate) fn opt_int(v: Option<Value>, field: &str) -> Result<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Int(i)) => Ok(Some(i)),
        Some(Value::UInt(_)) => Ok(Some(i64::MAX)),
        Some(other) => Err(bad(field, "an integer or null", &other)),
    }
}

pub(crate) fn opt_bool(v: Option<Value>, field: &str) -> Result<Option<bool>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(bad(field, "a boolean or null", &other)),
    }
}

pub(crate) fn num(v: &Value, field: &str) -> Result<Option<f64>> {
    match v {
        Value::Null => Ok(None),
        Value::Int(i) => Ok(Some(*i as f64)),
        Value::UInt(u) => Ok(Some(*u as f64)),
        Value::Float(f) => Ok(Some(*f)),
        other => Err(bad(field, "a number or null", other)),
    }
}

pub(crate) fn opt_time(v: Option<Value>, field: &str) -> Result<Option<i64>> {
    match opt_str(v, field)? {
        None => Ok(None),
        Some(t) => parse_iso(&t)
            .map(Some)
            .ok_or_else(|| Error::Decode(format!("{field} is not an ISO-8601 timestamp: {t:?}"))),
    }
}

/// The value under `key` of a map, taken out (the last one if repeated).
pub(crate) fn take(map: &mut Map, key: &str) -> Option<Value> {
    let i = map.iter().rposition(|(k, _)| k.as_str() == Some(key))?;
    Some(map.swap_remove(i).1)
}

/// `(args, kwargs, embed)` of a decoded protocol v2 body `[args, kwargs, embed]`.
pub type BodyParts = (Vec<Value>, Map, Option<Map>);

/// Deserializes a protocol v2 body with `codec` and checks its shape.
pub fn decode_body(body: &[u8], codec: Codec) -> Result<BodyParts> {
    let decoded = codec::loads(body, codec).map_err(|e| match e {
        Error::Decode(m) => Error::Decode(format!("body: {m}")),
        other => other,
    })?;
    let parts = match decoded {
        Value::List(parts) if parts.len() == 3 => parts,
        other => return Err(bad("body", "a [args, kwargs, embed] list", &other)),
    };
    let mut it = parts.into_iter();
    let args = match it.next() {
        Some(Value::List(a)) => a,
        Some(other) => return Err(bad("body[0] (args)", "a list", &other)),
        None => Vec::new(),
    };
    let kwargs = match it.next() {
        Some(Value::Map(k)) => k,
        Some(other) => return Err(bad("body[1] (kwargs)", "an object", &other)),
        None => Vec::new(),
    };
    let embed = match it.next() {
        Some(Value::Map(e)) => Some(e),
        None | Some(Value::Null) => None,
        Some(other) => return Err(bad("body[2] (embed)", "an object or null", &other)),
    };
    Ok((args, kwargs, embed))
}
