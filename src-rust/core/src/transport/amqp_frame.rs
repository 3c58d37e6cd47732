//! Task messages between kombu's JSON envelope and AMQP frames: the encoder and the executor speak
//! the envelope (as on Redis); on RabbitMQ the same message travels as Celery sends it there —
//! AMQP properties, the v2 headers as a field table, and the raw serialized body (no base64).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Persistent: the broker writes the message to disk before confirming it (kombu's default).
pub const DELIVERY_MODE_PERSISTENT: u8 = 2;

/// One task message as AMQP carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Where the envelope's `delivery_info` says it goes (`""` = the default exchange).
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

fn bad(what: &str) -> Error {
    Error::Decode(format!("envelope: {what}"))
}

fn opt_text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The AMQP form of a kombu envelope (as `encode_task_message` writes it).
pub fn from_envelope(envelope: &[u8]) -> Result<Frame> {
    let Value::Object(mut env) = serde_json::from_slice::<Value>(envelope)
        .map_err(|e| bad(&format!("invalid JSON: {e}")))?
    else {
        return Err(bad("not a JSON object"));
    };
    let props = match env.remove("properties") {
        Some(Value::Object(p)) => p,
        None => Map::new(),
        Some(_) => return Err(bad("properties is not an object")),
    };
    let body = match env.remove("body") {
        Some(Value::String(s)) if props.get("body_encoding") == Some(&"base64".into()) => B64
            .decode(s.as_bytes())
            .map_err(|e| bad(&format!("body is not base64: {e}")))?,
        Some(Value::String(s)) => s.into_bytes(),
        _ => return Err(bad("body is missing")),
    };
    let headers = match env.remove("headers") {
        Some(Value::Object(h)) => table_from_json(&h),
        None | Some(Value::Null) => FieldTable::default(),
        Some(_) => return Err(bad("headers is not an object")),
    };
    let info = props.get("delivery_info").and_then(Value::as_object);
    let exchange = opt_text(info.and_then(|i| i.get("exchange"))).unwrap_or_default();
    let routing_key = opt_text(info.and_then(|i| i.get("routing_key"))).unwrap_or_default();
    let priority = props
        .get("priority")
        .and_then(Value::as_i64)
        .map(crate::protocol::clamp_priority)
        .unwrap_or(0);
    let mut properties = BasicProperties::default()
        .with_delivery_mode(
            props
                .get("delivery_mode")
                .and_then(Value::as_u64)
                .and_then(|m| u8::try_from(m).ok())
                .unwrap_or(DELIVERY_MODE_PERSISTENT),
        )
        .with_priority(priority)
        .with_headers(headers);
    if let Some(ct) = opt_text(env.get("content-type")) {
        properties = properties.with_content_type(short(ct)?);
    }
    if let Some(ce) = opt_text(env.get("content-encoding")) {
        properties = properties.with_content_encoding(short(ce)?);
    }
    if let Some(id) = opt_text(props.get("correlation_id")) {
        properties = properties.with_correlation_id(short(id)?);
    }
    if let Some(r) = opt_text(props.get("reply_to")) {
        properties = properties.with_reply_to(short(r)?);
    }
    Ok(Frame {
        exchange,
        routing_key,
        properties,
        body,
    })
}

/// An AMQP short string (at most 255 bytes), or a clear error naming the value.
pub fn short(s: String) -> Result<ShortString> {
    if s.len() > 255 {
        return Err(Error::Config(format!(
            "{:?}... is {} bytes long; AMQP names and properties hold at most 255",
            s.chars().take(40).collect::<String>(),
            s.len()
        )));
    }
    Ok(ShortString::from(s))
}

/// kombu's JSON envelope around a delivered AMQP message, tagged `delivery_tag`, so the executor
/// decodes every transport's messages the same way.
pub fn to_envelope(
    exchange: &str,
    routing_key: &str,
    redelivered: bool,
    properties: &BasicProperties,
    body: &[u8],
    delivery_tag: &str,
) -> Vec<u8> {
    let text = |v: &Option<ShortString>| match v {
        Some(s) => Value::String(s.as_str().to_string()),
        None => Value::Null,
    };
    let headers = properties
        .headers()
        .as_ref()
        .map(table_to_json)
        .unwrap_or_default();
    let mut p = Map::new();
    p.insert("correlation_id".into(), text(properties.correlation_id()));
    p.insert("reply_to".into(), text(properties.reply_to()));
    p.insert(
        "delivery_mode".into(),
        properties.delivery_mode().map_or(Value::Null, Value::from),
    );
    let mut info = Map::new();
    info.insert("exchange".into(), Value::from(exchange));
    info.insert("routing_key".into(), Value::from(routing_key));
    info.insert("redelivered".into(), Value::from(redelivered));
    p.insert("delivery_info".into(), Value::Object(info));
    p.insert(
        "priority".into(),
        Value::from(properties.priority().unwrap_or(0)),
    );
    p.insert("body_encoding".into(), Value::from("base64"));
    p.insert("delivery_tag".into(), Value::from(delivery_tag));
    let mut env = Map::new();
    env.insert("body".into(), Value::from(B64.encode(body)));
    // A message without a content type is refused by the decoder (and dead-lettered), as it
    // is in Celery; "" keeps that path instead of guessing JSON.
    env.insert(
        "content-type".into(),
        properties
            .content_type()
            .as_ref()
            .map_or(Value::from(""), |s| Value::from(s.as_str())),
    );
    env.insert(
        "content-encoding".into(),
        properties
            .content_encoding()
            .as_ref()
            .map_or(Value::from("utf-8"), |s| Value::from(s.as_str())),
    );
    env.insert("headers".into(), Value::Object(headers));
    env.insert("properties".into(), Value::Object(p));
    serde_json::to_vec(&Value::Object(env)).unwrap_or_default()
}

/// A JSON object as an AMQP field table, typed as py-amqp types Python values (ints that fit
/// 32 bits as `I`, others as `l`, floats as `d`, None as `V`), so declarations compare equal.
pub fn table_from_json(map: &Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in map {
        t.insert(ShortString::from(k.clone()), value_from_json(v));
    }
    t
}

fn value_from_json(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                match i32::try_from(i) {
                    Ok(small) => AMQPValue::LongInt(small),
                    Err(_) => AMQPValue::LongLongInt(i),
                }
            } else {
                AMQPValue::Double(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Array(items) => {
            let mut a = FieldArray::default();
            for item in items {
                a.push(value_from_json(item));
            }
            AMQPValue::FieldArray(a)
        }
        Value::Object(m) => AMQPValue::FieldTable(table_from_json(m)),
    }
}

/// An AMQP field table as a JSON object (byte strings as text, lossy where not UTF-8).
pub fn table_to_json(t: &FieldTable) -> Map<String, Value> {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), value_to_json(v)))
        .collect()
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes()).as_ref()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::ByteArray(b) => Value::from(String::from_utf8_lossy(b.as_slice()).as_ref()),
        AMQPValue::Void => Value::Null,
    }
}

/// An integer header of a field table (any integer type), if present.
pub fn int_header(t: Option<&FieldTable>, name: &str) -> Option<i64> {
    match t?.inner().get(name)? {
        AMQPValue::ShortShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortUInt(i) => Some(i64::from(*i)),
        AMQPValue::LongInt(i) => Some(i64::from(*i)),
        AMQPValue::LongUInt(i) => Some(i64::from(*i)),
        AMQPValue::LongLongInt(i) => Some(*i),
        _ => None,
    }
}

/// A text header of a field table, if present.
pub fn text_header(t: Option<&FieldTable>, name: &str) -> Option<String> {
    match t?.inner().get(name)? {
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_task_message, TaskMessageSpec};

    fn spec() -> TaskMessageSpec {
        let mut s = TaskMessageSpec::new("tasks.add", "id-1", "celery");
        s.args = vec![crate::codec::Value::Int(4), crate::codec::Value::Int(4)];
        s.priority = Some(7);
        s.reply_to = Some("client-1".into());
        s
    }

    #[test]
    fn test_envelope_round_trips_through_a_frame() {
        let envelope = encode_task_message(&spec()).unwrap();
        let frame = from_envelope(&envelope).unwrap();
        assert_eq!(
            frame.body,
            br#"[[4,4],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#
        );
        let p = &frame.properties;
        assert_eq!(p.correlation_id().as_ref().unwrap().as_str(), "id-1");
        assert_eq!(p.reply_to().as_ref().unwrap().as_str(), "client-1");
        assert_eq!(*p.priority(), Some(7));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        let h = p.headers().as_ref().unwrap();
        assert_eq!(text_header(Some(h), "task").as_deref(), Some("tasks.add"));
        assert_eq!(h.inner().get("eta"), Some(&AMQPValue::Void));
        assert_eq!(int_header(Some(h), "retries"), Some(0));

        let back = to_envelope("celery", "celery", true, p, &frame.body, "1.7");
        let decoded = crate::protocol::decode_task_message(
            &back,
            &crate::protocol::Accept::new(["json"]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(decoded.id, "id-1");
        assert_eq!(decoded.task, "tasks.add");
        assert_eq!(decoded.priority, 7);
        assert_eq!(decoded.delivery_tag.as_deref(), Some("1.7"));
        assert_eq!(decoded.routing_key, "celery");
        assert!(decoded.redelivered);
    }

    #[test]
    fn test_header_types_follow_py_amqp() {
        let v = serde_json::json!({"a": 1, "b": 1i64 << 40, "c": 1.5, "d": [1, "x"], "e": true, "f": null});
        let t = table_from_json(v.as_object().unwrap());
        let m = t.inner();
        assert_eq!(m.get("a"), Some(&AMQPValue::LongInt(1)));
        assert_eq!(m.get("b"), Some(&AMQPValue::LongLongInt(1 << 40)));
        assert_eq!(m.get("c"), Some(&AMQPValue::Double(1.5)));
        assert_eq!(m.get("f"), Some(&AMQPValue::Void));
        assert_eq!(Value::Object(table_to_json(&t)), v);
    }

    #[test]
    fn test_a_message_without_content_type_is_refused_by_the_decoder() {
        let back = to_envelope("", "q", false, &BasicProperties::default(), b"junk", "1.1");
        let err = crate::protocol::decode_task_message(
            &back,
            &crate::protocol::Accept::new(["json"]),
            1 << 20,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not accepted"), "{err}");
    }

    #[test]
    fn test_malformed_envelopes_are_decode_errors() {
        for bad in [
            &b"nope"[..],
            b"[]",
            br#"{"headers": 1, "body": ""}"#,
            br#"{"properties": {}}"#,
        ] {
            assert!(matches!(from_envelope(bad), Err(Error::Decode(_))));
        }
        assert!(matches!(short("x".repeat(256)), Err(Error::Config(_))));
    }
}
