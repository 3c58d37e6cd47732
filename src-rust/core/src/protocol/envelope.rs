//! kombu's virtual-transport envelope (Redis, SQLite): the message's headers and properties
//! as JSON with the body base64-encoded inside, written in one pass and read in one pass that
//! keeps only what a [`TaskMessage`] needs. Encoding writes every header Celery writes (unset
//! ones as `null`), the properties kombu's virtual transport adds (`delivery_info`,
//! `body_encoding`, `delivery_tag`). Decoding checks, in this order: the size limit, the
//! envelope JSON, the content type against the accept list (before the body is touched), the
//! typed headers and properties, then the body.

use base64::Engine as _;
use serde::de::{self, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::codec::{self, Codec, Map, Value};
use crate::error::{Error, Result};
use crate::jsonw;
use crate::protocol::envelope_read::{
    raw_envelope, KnownKey, Members, Text, HEADER_KEYS, PROPERTY_KEYS,
};
use crate::protocol::envelope_scan;
use crate::protocol::iso8601::format_iso8601_ms;
use crate::protocol::message::{
    bad, clamp_priority, decode_body, encode_body, num, opt_bool, opt_int, opt_str, opt_time,
    req_str, short, take, Accept, TaskMessage, TaskMessageSpec,
};

/// The headers and properties of one task message, borrowed, for [`encode_envelope`]. Unset
/// options are written as Celery writes them (`null`, `0`, `false`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvelopeRef<'a> {
    pub task: &'a str,
    pub id: &'a str,
    pub routing_key: &'a str,
    pub exchange: &'a str,
    pub content_type: &'a str,
    pub content_encoding: &'a str,
    pub eta_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub retries: i64,
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    /// Clamped to 0..=9; `None` is written as 0 like kombu does.
    pub priority: Option<i64>,
    /// Defaults to the task's own id.
    pub root_id: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    pub group_id: Option<&'a str>,
    pub group_index: Option<i64>,
    pub shadow: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub ignore_result: bool,
    pub argsrepr: Option<&'a str>,
    pub kwargsrepr: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    /// A fresh uuid4 when `None`.
    pub delivery_tag: Option<&'a str>,
}

fn key(out: &mut Vec<u8>, k: &str) {
    jsonw::write_str(out, k);
    out.push(b':');
}

/// Writes kombu's Redis JSON envelope around an already serialized `body` (base64-encoded
/// here), straight into one buffer.
///
/// `extra` holds more headers as `(name, JSON text of the value)`; a name there replaces the
/// standard header of that name (which is then left out) and extras are written after the
/// standard headers, in their order. Fails with [`Error::TooLarge`] past `max_size` bytes.
pub fn encode_envelope(
    env: &EnvelopeRef<'_>,
    body: &[u8],
    extra: &[(&str, &[u8])],
    max_size: usize,
) -> Result<Vec<u8>> {
    let eta = env.eta_ms.map(format_iso8601_ms).transpose()?;
    let expires = env.expires_ms.map(format_iso8601_ms).transpose()?;
    let tag_owned;
    let delivery_tag = match env.delivery_tag {
        Some(t) => t,
        None => {
            let mut buf = uuid::Uuid::encode_buffer();
            tag_owned = uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut buf)
                .to_owned();
            tag_owned.as_str()
        }
    };
    let extra_len: usize = extra.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(body.len() / 3 * 4 + 4 + 720 + extra_len);
    out.extend_from_slice(b"{\"body\":");
    jsonw::write_base64_str(&mut out, body);
    out.extend_from_slice(b",\"content-encoding\":");
    jsonw::write_str(&mut out, env.content_encoding);
    out.extend_from_slice(b",\"content-type\":");
    jsonw::write_str(&mut out, env.content_type);
    out.extend_from_slice(b",\"headers\":{");

    let mut first = true;
    macro_rules! header {
        ($name:literal, $write:expr) => {
            if !extra.iter().any(|(k, _)| *k == $name) {
                if !first {
                    out.push(b',');
                }
                first = false;
                key(&mut out, $name);
                $write;
            }
        };
    }
    header!("lang", out.extend_from_slice(b"\"py\""));
    header!("task", jsonw::write_str(&mut out, env.task));
    header!("id", jsonw::write_str(&mut out, env.id));
    header!("shadow", jsonw::write_opt_str(&mut out, env.shadow));
    header!("eta", jsonw::write_opt_str(&mut out, eta.as_deref()));
    header!(
        "expires",
        jsonw::write_opt_str(&mut out, expires.as_deref())
    );
    header!("group", jsonw::write_opt_str(&mut out, env.group_id));
    header!(
        "group_index",
        match env.group_index {
            Some(i) => jsonw::write_i64(&mut out, i),
            None => out.extend_from_slice(b"null"),
        }
    );
    header!("retries", jsonw::write_i64(&mut out, env.retries));
    header!("timelimit", {
        out.push(b'[');
        jsonw::write_opt_f64(&mut out, env.time_limit);
        out.push(b',');
        jsonw::write_opt_f64(&mut out, env.soft_time_limit);
        out.push(b']');
    });
    header!(
        "root_id",
        jsonw::write_str(&mut out, env.root_id.unwrap_or(env.id))
    );
    header!("parent_id", jsonw::write_opt_str(&mut out, env.parent_id));
    header!("argsrepr", jsonw::write_opt_str(&mut out, env.argsrepr));
    header!("kwargsrepr", jsonw::write_opt_str(&mut out, env.kwargsrepr));
    header!("origin", jsonw::write_opt_str(&mut out, env.origin));
    header!(
        "ignore_result",
        jsonw::write_bool(&mut out, env.ignore_result)
    );
    header!("replaced_task_nesting", out.push(b'0'));
    header!("stamped_headers", out.extend_from_slice(b"null"));
    header!("stamps", out.extend_from_slice(b"{}"));
    for (k, v) in extra {
        if !first {
            out.push(b',');
        }
        first = false;
        key(&mut out, k);
        out.extend_from_slice(v);
    }

    out.extend_from_slice(b"},\"properties\":{\"correlation_id\":");
    jsonw::write_str(&mut out, env.id);
    out.extend_from_slice(b",\"reply_to\":");
    jsonw::write_opt_str(&mut out, env.reply_to);
    out.extend_from_slice(b",\"delivery_mode\":2,\"delivery_info\":{\"exchange\":");
    jsonw::write_str(&mut out, env.exchange);
    out.extend_from_slice(b",\"routing_key\":");
    jsonw::write_str(&mut out, env.routing_key);
    out.extend_from_slice(b"},\"priority\":");
    jsonw::write_i64(
        &mut out,
        i64::from(clamp_priority(env.priority.unwrap_or(0))),
    );
    out.extend_from_slice(b",\"body_encoding\":\"base64\",\"delivery_tag\":");
    jsonw::write_str(&mut out, delivery_tag);
    out.extend_from_slice(b"}}");
    if out.len() > max_size {
        return Err(Error::TooLarge {
            size: out.len(),
            max: max_size,
        });
    }
    Ok(out)
}

/// Encodes a task message as the JSON envelope kombu's Redis transport `LPUSH`es.
pub fn encode_task_message(spec: &TaskMessageSpec) -> Result<Vec<u8>> {
    let (content_type, content_encoding, body) = encode_body(spec)?;
    let mut extra_json = Vec::with_capacity(spec.extra_headers.len());
    for (k, v) in &spec.extra_headers {
        let Value::Str(name) = k else {
            return Err(Error::Serialize {
                type_name: format!("header name of type {}", k.type_name()),
                path: "headers".to_owned(),
                codec: "json".to_owned(),
            });
        };
        let mut text = Vec::new();
        codec::write_json(&mut text, v, &format!("headers[{name:?}]"))?;
        extra_json.push((name.as_str(), text));
    }
    let extra: Vec<(&str, &[u8])> = extra_json.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let env = EnvelopeRef {
        task: &spec.task,
        id: &spec.id,
        routing_key: &spec.routing_key,
        exchange: &spec.exchange,
        content_type,
        content_encoding,
        eta_ms: spec.eta_ms,
        expires_ms: spec.expires_ms,
        retries: spec.retries,
        time_limit: spec.time_limit,
        soft_time_limit: spec.soft_time_limit,
        priority: spec.priority,
        root_id: spec.root_id.as_deref(),
        parent_id: spec.parent_id.as_deref(),
        group_id: spec.group_id.as_deref(),
        group_index: spec.group_index,
        shadow: spec.shadow.as_deref(),
        origin: spec.origin.as_deref(),
        ignore_result: spec.ignore_result,
        argsrepr: spec.argsrepr.as_deref(),
        kwargsrepr: spec.kwargsrepr.as_deref(),
        reply_to: spec.reply_to.as_deref(),
        delivery_tag: spec.delivery_tag.as_deref(),
    };
    encode_envelope(&env, &body, &extra, spec.max_size)
}

// -- decoding --------------------------------------------------------------------------------

/// An envelope whose typed fields are decoded and whose body is base64-decoded but not
/// deserialized: `message.args`, `kwargs` and `embed` are `None` and `message.headers` is
/// empty (see [`headers_json`] and [`decode_headers`] for them).
#[derive(Debug)]
pub struct DecodedEnvelope {
    pub message: TaskMessage,
    /// The codec of the body, when Rust implements it (else the body stays raw, e.g. pickle).
    pub codec: Option<Codec>,
}

fn h(m: &mut Members, key: &str) -> Option<Value> {
    let i = HEADER_KEYS.iter().position(|k| *k == key)?;
    m.values[i].take()
}

fn p(m: &mut Members, key: &str) -> Option<Value> {
    let i = PROPERTY_KEYS.iter().position(|k| *k == key)?;
    m.values[i].take()
}

/// Decodes a kombu Redis envelope up to (not including) deserializing its body, in one pass
/// over the JSON that keeps only what a [`TaskMessage`] reads.
///
/// Checks, in this order: the size, the envelope JSON, the content type against `accept`,
/// the typed headers and properties, the base64 of the body and the decoded body's size.
pub fn decode_envelope(data: &[u8], accept: &Accept, max_size: usize) -> Result<DecodedEnvelope> {
    if data.len() > max_size {
        return Err(Error::TooLarge {
            size: data.len(),
            max: max_size,
        });
    }
    // Validating UTF-8 once up front is much cheaper than per string (`from_slice` does).
    let text = std::str::from_utf8(data)
        .map_err(|e| Error::Decode(format!("envelope: invalid JSON: not UTF-8: {e}")))?;
    let env = match envelope_scan::scan_envelope(text) {
        Some(env) => env,
        None => raw_envelope(text)?,
    };
    let content_type = match env.content_type {
        Text::Str(s) => s.into_owned(),
        Text::Missing | Text::Other(Value::Null) => {
            return Err(Error::Decode("missing content-type".to_owned()))
        }
        Text::Other(other) => return Err(bad("content-type", "a string", &other)),
    };
    if !accept.allows(&content_type) {
        return Err(Error::ContentDisallowed {
            content_type,
            accepted: accept.0.join(", "),
        });
    }
    let content_encoding = match env.content_encoding {
        Text::Str(s) => s.into_owned(),
        Text::Missing | Text::Other(Value::Null) => String::new(),
        Text::Other(other) => return Err(bad("content-encoding", "a string", &other)),
    };
    let (mut hd, mut pr) = (env.headers, env.properties);
    for (m, field) in [(&hd, "headers"), (&pr, "properties")] {
        if let Some(kind) = m.not_object {
            return Err(Error::Decode(format!(
                "{field} must be an object, got {kind}"
            )));
        }
    }
    let mut info = match p(&mut pr, "delivery_info") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Map(m)) => m,
        Some(other) => return Err(bad("properties.delivery_info", "an object", &other)),
    };

    let task = req_str(h(&mut hd, "task"), "headers.task")?;
    let id = req_str(h(&mut hd, "id"), "headers.id")?;
    let retries = opt_int(h(&mut hd, "retries"), "headers.retries")?.unwrap_or(0);
    let (time_limit, soft_time_limit) = match h(&mut hd, "timelimit") {
        None | Some(Value::Null) => (None, None),
        Some(Value::List(l)) if l.len() == 2 => (
            num(&l[0], "headers.timelimit[0]")?,
            num(&l[1], "headers.timelimit[1]")?,
        ),
        Some(other) => return Err(bad("headers.timelimit", "a [hard, soft] list", &other)),
    };
    let priority =
        clamp_priority(opt_int(p(&mut pr, "priority"), "properties.priority")?.unwrap_or(0));
    let redelivered = opt_bool(h(&mut hd, "redelivered"), "headers.redelivered")?.unwrap_or(false)
        || opt_bool(
            take(&mut info, "redelivered"),
            "properties.delivery_info.redelivered",
        )?
        .unwrap_or(false);
    let delivery_tag = match p(&mut pr, "delivery_tag") {
        None | Some(Value::Null) => None,
        Some(Value::Str(s)) => Some(s),
        Some(Value::Int(i)) => Some(i.to_string()),
        Some(other) => return Err(bad("properties.delivery_tag", "a string", &other)),
    };
    if let Some(c) = h(&mut hd, "compression") {
        if !matches!(c, Value::Null) {
            return Err(Error::Decode(format!(
                "compressed bodies are not supported (headers.compression = {})",
                short(&c)
            )));
        }
    }

    let body = match env.body {
        Text::Str(s) => {
            match opt_str(p(&mut pr, "body_encoding"), "properties.body_encoding")?.as_deref() {
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .map_err(|e| Error::Decode(format!("body is not valid base64: {e}")))?,
                None => s.into_owned().into_bytes(),
                Some(other) => {
                    return Err(Error::Decode(format!(
                        "unsupported properties.body_encoding {other:?} (expected \"base64\")"
                    )))
                }
            }
        }
        Text::Missing => return Err(Error::Decode("missing body".to_owned())),
        Text::Other(other) => return Err(bad("body", "a string", &other)),
    };
    if body.len() > max_size {
        return Err(Error::TooLarge {
            size: body.len(),
            max: max_size,
        });
    }
    let codec = Codec::from_content_type(&content_type);

    let message = TaskMessage {
        eta_ms: opt_time(h(&mut hd, "eta"), "headers.eta")?,
        expires_ms: opt_time(h(&mut hd, "expires"), "headers.expires")?,
        root_id: opt_str(h(&mut hd, "root_id"), "headers.root_id")?,
        parent_id: opt_str(h(&mut hd, "parent_id"), "headers.parent_id")?,
        group_id: opt_str(h(&mut hd, "group"), "headers.group")?,
        group_index: opt_int(h(&mut hd, "group_index"), "headers.group_index")?,
        shadow: opt_str(h(&mut hd, "shadow"), "headers.shadow")?,
        origin: opt_str(h(&mut hd, "origin"), "headers.origin")?,
        ignore_result: opt_bool(h(&mut hd, "ignore_result"), "headers.ignore_result")?
            .unwrap_or(false),
        argsrepr: opt_str(h(&mut hd, "argsrepr"), "headers.argsrepr")?,
        kwargsrepr: opt_str(h(&mut hd, "kwargsrepr"), "headers.kwargsrepr")?,
        reply_to: opt_str(p(&mut pr, "reply_to"), "properties.reply_to")?,
        correlation_id: opt_str(p(&mut pr, "correlation_id"), "properties.correlation_id")?,
        exchange: opt_str(
            take(&mut info, "exchange"),
            "properties.delivery_info.exchange",
        )?
        .unwrap_or_default(),
        routing_key: opt_str(
            take(&mut info, "routing_key"),
            "properties.delivery_info.routing_key",
        )?
        .unwrap_or_default(),
        task,
        id,
        args: None,
        kwargs: None,
        embed: None,
        body,
        content_type,
        content_encoding,
        retries,
        priority,
        time_limit,
        soft_time_limit,
        delivery_tag,
        redelivered,
        headers: Vec::new(),
    };
    Ok(DecodedEnvelope { message, codec })
}

/// The raw JSON of the `headers` member of an envelope (`""` when it has none or it is not
/// an object): a second, cheap pass for a caller that wants every header.
pub fn headers_json(data: &[u8]) -> Result<&str> {
    struct HeadersOnly;
    impl<'de> Visitor<'de> for HeadersOnly {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut access: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = access.next_key_seed(KnownKey(&["headers"]))? {
                match key {
                    Some(_) => found = Some(access.next_value::<&'de RawValue>()?),
                    None => access.next_value::<de::IgnoredAny>().map(|_| ())?,
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    let raw = de
        .deserialize_map(HeadersOnly)
        .map_err(|e| Error::Decode(format!("envelope: invalid JSON: {e}")))?;
    Ok(match raw {
        Some(r) if r.get().starts_with('{') => r.get(),
        _ => "",
    })
}

/// Every header of [`headers_json`] as a map (`""`: none).
pub fn decode_headers(headers_json: &str) -> Result<Map> {
    if headers_json.is_empty() {
        return Ok(Vec::new());
    }
    match codec::from_json(headers_json.as_bytes()) {
        Ok(Value::Map(m)) => Ok(m),
        Ok(other) => Err(bad("headers", "an object", &other)),
        Err(Error::Decode(e)) => Err(Error::Decode(format!("envelope: headers: {e}"))),
        Err(e) => Err(e),
    }
}

/// Decodes a kombu Redis envelope of a Celery protocol v2 task message.
///
/// Checks the size first, then the content type against `accept` before touching the body.
/// Bodies of json/msgpack are decoded; for other accepted types `args`/`kwargs`/`embed` are
/// `None` and `body` carries the raw bytes.
pub fn decode_task_message(data: &[u8], accept: &Accept, max_size: usize) -> Result<TaskMessage> {
    let env = decode_envelope(data, accept, max_size)?;
    let headers = decode_headers(headers_json(data)?)?;
    let mut msg = env.message;
    if let Some(c) = env.codec {
        let (args, kwargs, embed) = decode_body(&msg.body, c)?;
        msg.args = Some(args);
        msg.kwargs = Some(kwargs);
        msg.embed = embed;
    }
    msg.headers = headers;
    Ok(msg)
}
