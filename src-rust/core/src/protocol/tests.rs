use base64::Engine as _;
use proptest::prelude::*;

use super::*;
use crate::codec::{self, map_get, Codec, Map, Value};
use crate::error::{Error, Result};

fn s(t: &str) -> Value {
    Value::Str(t.to_owned())
}

fn spec() -> TaskMessageSpec {
    let mut sp = TaskMessageSpec::new(
        "tasks.add",
        "0b6a1c52-6f2e-4d7a-9a51-2f3c4d5e6f70",
        "celery",
    );
    sp.args = vec![Value::Int(2), Value::Int(3)];
    sp
}

fn decode(data: &[u8]) -> Result<TaskMessage> {
    decode_task_message(data, &Accept::default(), DEFAULT_MAX_SIZE)
}

fn envelope_value(data: &[u8]) -> Value {
    codec::from_json(data).unwrap()
}

#[test]
fn test_encode_has_every_celery_header() {
    let env = envelope_value(&encode_task_message(&spec()).unwrap());
    let headers = env.get("headers").unwrap();
    for key in [
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
    ] {
        assert!(headers.get(key).is_some(), "missing header {key}");
    }
    assert_eq!(
        headers.get("root_id"),
        Some(&s("0b6a1c52-6f2e-4d7a-9a51-2f3c4d5e6f70"))
    );
    assert_eq!(
        headers.get("timelimit"),
        Some(&Value::List(vec![Value::Null, Value::Null]))
    );
    assert_eq!(headers.get("stamps"), Some(&Value::Map(vec![])));
    let props = env.get("properties").unwrap();
    assert_eq!(props.get("delivery_mode"), Some(&Value::Int(2)));
    assert_eq!(props.get("body_encoding"), Some(&s("base64")));
    assert_eq!(props.get("priority"), Some(&Value::Int(0)));
    assert!(matches!(props.get("delivery_tag"), Some(Value::Str(t)) if t.len() == 36));
    let info = props.get("delivery_info").unwrap();
    assert_eq!(info.get("routing_key"), Some(&s("celery")));
    assert_eq!(info.get("exchange"), Some(&s("")));
    assert_eq!(env.get("content-type"), Some(&s("application/json")));
    assert_eq!(env.get("content-encoding"), Some(&s("utf-8")));
}

#[test]
fn test_encode_body_is_args_kwargs_embed() {
    let msg = decode(&encode_task_message(&spec()).unwrap()).unwrap();
    assert_eq!(
        msg.body,
        br#"[[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#
    );
    assert_eq!(msg.embed, Some(codec::default_embed()));
}

#[test]
fn test_encode_priority_is_clamped() {
    let mut sp = spec();
    sp.priority = Some(42);
    assert_eq!(
        decode(&encode_task_message(&sp).unwrap()).unwrap().priority,
        9
    );
    sp.priority = Some(-3);
    assert_eq!(
        decode(&encode_task_message(&sp).unwrap()).unwrap().priority,
        0
    );
}

#[test]
fn test_encode_too_large() {
    let mut sp = spec();
    sp.max_size = 100;
    assert!(matches!(
        encode_task_message(&sp),
        Err(Error::TooLarge { max: 100, .. })
    ));
}

#[test]
fn test_encode_unsupported_value_names_path() {
    let mut sp = spec();
    sp.kwargs = vec![(s("k"), Value::List(vec![Value::Float(f64::INFINITY)]))];
    match encode_task_message(&sp) {
        Err(Error::Serialize { path, .. }) => assert_eq!(path, r#"kwargs["k"][0]"#),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn test_encode_extra_headers_override_and_extend() {
    let mut sp = spec();
    sp.extra_headers = vec![
        (s("argsrepr"), s("(...)")),
        (s("x-custom"), Value::Decimal("1.5".into())),
    ];
    let msg = decode(&encode_task_message(&sp).unwrap()).unwrap();
    assert_eq!(msg.argsrepr.as_deref(), Some("(...)"));
    assert_eq!(
        map_get(&msg.headers, "x-custom"),
        Some(&Value::Decimal("1.5".into()))
    );
    assert_eq!(
        msg.headers
            .iter()
            .filter(|(k, _)| k.as_str() == Some("argsrepr"))
            .count(),
        1
    );
}

#[test]
fn test_encode_pickle_needs_body() {
    let mut sp = spec();
    sp.serializer = "pickle".into();
    assert!(matches!(encode_task_message(&sp), Err(Error::Config(_))));
    sp.body = Some(b"\x80\x04N.".to_vec());
    let data = encode_task_message(&sp).unwrap();
    let accept = Accept::new(["pickle"]);
    let msg = decode_task_message(&data, &accept, DEFAULT_MAX_SIZE).unwrap();
    assert_eq!(msg.body, b"\x80\x04N.");
    assert_eq!(msg.args, None);
    assert_eq!(msg.content_type, "application/x-python-serialize");
    assert!(matches!(
        decode(&data),
        Err(Error::ContentDisallowed { .. })
    ));
}

#[test]
fn test_decode_checks_size_before_parsing() {
    assert!(matches!(
        decode_task_message(b"not json at all", &Accept::default(), 3),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn test_decode_checks_content_type_before_body() {
    // The body is garbage, but the content type is refused first.
    let env =
        br#"{"body": "!!", "content-type": "application/x-yaml", "headers": {}, "properties": {}}"#;
    assert!(matches!(decode(env), Err(Error::ContentDisallowed { .. })));
}

#[test]
fn test_decode_accept_by_serializer_name() {
    let mut sp = spec();
    sp.serializer = "msgpack".into();
    let data = encode_task_message(&sp).unwrap();
    let msg =
        decode_task_message(&data, &Accept::new(["json", "msgpack"]), DEFAULT_MAX_SIZE).unwrap();
    assert_eq!(msg.args, Some(vec![Value::Int(2), Value::Int(3)]));
    assert_eq!(msg.content_encoding, "binary");
}

#[test]
fn test_decode_errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (r#""retries": 0"#, r#""retries": "3""#),
        (r#""task": "tasks.add""#, r#""task": 7"#),
        (r#""timelimit": [null,null]"#, r#""timelimit": 5"#),
        (r#""eta": null"#, r#""eta": "soon""#),
    ];
    let good = String::from_utf8(encode_task_message(&spec()).unwrap()).unwrap();
    let pretty = good.replace(":", ": ").replace(",\"", ", \"");
    for (from, to) in cases {
        assert!(pretty.contains(from), "{from} not in {pretty}");
        let bad_env = pretty.replacen(from, to, 1);
        match decode(bad_env.as_bytes()) {
            Err(Error::Decode(m)) => {
                let field = from.split('"').nth(1).unwrap();
                assert!(m.contains(field), "{m} does not name {field}");
            }
            other => panic!("{to}: unexpected {other:?}"),
        }
    }
}

#[test]
fn test_decode_missing_task_header() {
    let env = br#"{"body": "", "content-type": "application/json", "headers": {"id": "x"}, "properties": {}}"#;
    assert!(matches!(decode(env), Err(Error::Decode(m)) if m.contains("headers.task")));
}

#[test]
fn test_decode_compression_refused() {
    let mut sp = spec();
    sp.extra_headers = vec![(s("compression"), s("application/x-gzip"))];
    assert!(
        matches!(decode(&encode_task_message(&sp).unwrap()), Err(Error::Decode(m)) if m.contains("compress"))
    );
}

#[test]
fn test_iso8601_parse_variants() {
    let base = 1_795_498_773_123; // 2026-11-24T05:39:33.123Z
    for text in [
        "2026-11-24T05:39:33.123456+00:00",
        "2026-11-24T05:39:33.123Z",
        "2026-11-24T05:39:33.123",
        "2026-11-24 05:39:33.1239",
        "2026-11-24T07:39:33.123+02:00",
        "2026-11-24T00:09:33.123-05:30",
        "2026-11-24T07:39:33.123+0200",
    ] {
        assert_eq!(parse_iso8601_ms(text).unwrap(), base, "{text}");
    }
    assert_eq!(parse_iso8601_ms("1970-01-01").unwrap(), 0);
    assert_eq!(parse_iso8601_ms("1969-12-31T23:59:59.5").unwrap(), -500);
    for bad_text in [
        "",
        "2026-13-01",
        "2026-02-30T00:00",
        "2026-11-24T25:00",
        "2026-11-24T05:39:33+25:00",
        "x",
        "2026-11-24T05:39:33.+00:00",
        "2026-11-24T05:39:33 junk",
    ] {
        assert!(
            matches!(parse_iso8601_ms(bad_text), Err(Error::Decode(_))),
            "{bad_text}"
        );
    }
}

#[test]
fn test_iso8601_format_like_celery() {
    assert_eq!(
        format_iso8601_ms(1_795_498_773_123).unwrap(),
        "2026-11-24T05:39:33.123000+00:00"
    );
    assert_eq!(
        format_iso8601_ms(0).unwrap(),
        "1970-01-01T00:00:00.000000+00:00"
    );
    assert_eq!(
        format_iso8601_ms(-500).unwrap(),
        "1969-12-31T23:59:59.500000+00:00"
    );
    assert!(format_iso8601_ms(i64::MAX).is_err());
    assert!(format_iso8601_ms(300_000_000_000_000).is_err());
}

#[test]
fn test_now_isoformat_utc_reads_back_as_now() {
    let text = now_isoformat_utc();
    assert!(text.ends_with("+00:00"), "{text}");
    let len = text.len(); // 25 without a fraction, 32 with microseconds
    assert!(len == 25 || len == 32, "{text}");
    let now_ms = chrono::Utc::now().timestamp_millis();
    let read = parse_iso8601_ms(&text).unwrap();
    assert!((now_ms - read).abs() < 5_000, "{text}");
}

proptest! {
    #[test]
    fn test_iso8601_roundtrip(ms in -62_135_596_800_000i64..253_402_300_799_999) {
        prop_assert_eq!(parse_iso8601_ms(&format_iso8601_ms(ms).unwrap()).unwrap(), ms);
    }

    #[test]
    fn test_envelope_roundtrip(
        args in proptest::collection::vec(prop_oneof![any::<i64>().prop_map(Value::Int), ".{0,8}".prop_map(Value::Str)], 0..5),
        kw in proptest::collection::btree_map("[a-z]{1,6}", any::<bool>().prop_map(Value::Bool), 0..4),
        eta in proptest::option::of(0i64..4_000_000_000_000),
        retries in 0i64..100,
        priority in proptest::option::of(0i64..10),
        limits in (proptest::option::of(0u16..1000), proptest::option::of(0u16..1000)),
        msgpack in any::<bool>(),
        ignore_result in any::<bool>(),
        parent in proptest::option::of("[a-f0-9-]{8,36}"),
    ) {
        let mut sp = spec();
        sp.args = args.clone();
        sp.kwargs = kw.into_iter().map(|(k, v)| (Value::Str(k), v)).collect();
        sp.eta_ms = eta;
        sp.retries = retries;
        sp.priority = priority;
        sp.time_limit = limits.0.map(f64::from);
        sp.soft_time_limit = limits.1.map(f64::from);
        sp.serializer = if msgpack { "msgpack".into() } else { "json".into() };
        sp.ignore_result = ignore_result;
        sp.parent_id = parent.clone();
        sp.reply_to = Some("r".into());
        let data = encode_task_message(&sp).unwrap();
        let msg = decode_task_message(&data, &Accept::new(["json", "msgpack"]), DEFAULT_MAX_SIZE).unwrap();
        prop_assert_eq!(&msg.task, &sp.task);
        prop_assert_eq!(&msg.id, &sp.id);
        prop_assert_eq!(msg.args, Some(args));
        prop_assert_eq!(msg.kwargs, Some(sp.kwargs.clone()));
        prop_assert_eq!(msg.eta_ms, eta);
        prop_assert_eq!(msg.retries, retries);
        prop_assert_eq!(i64::from(msg.priority), priority.unwrap_or(0));
        prop_assert_eq!(msg.time_limit, sp.time_limit);
        prop_assert_eq!(msg.soft_time_limit, sp.soft_time_limit);
        prop_assert_eq!(msg.ignore_result, ignore_result);
        prop_assert_eq!(msg.parent_id, parent);
        prop_assert_eq!(msg.root_id.as_deref(), Some(sp.id.as_str()));
        prop_assert_eq!(msg.correlation_id.as_deref(), Some(sp.id.as_str()));
        prop_assert_eq!(msg.reply_to.as_deref(), Some("r"));
        prop_assert_eq!(msg.routing_key.as_str(), "celery");
        prop_assert!(!msg.redelivered);
    }

    #[test]
    fn test_decode_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&data);
    }

    #[test]
    fn test_decode_mutated_envelope_never_panics(pos in 0usize..600, byte in any::<u8>()) {
        let mut data = encode_task_message(&spec()).unwrap();
        let i = pos % data.len();
        data[i] = byte;
        let _ = decode(&data);
    }
}

// -- shared test vectors -------------------------------------------------------------------------

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/test-vectors/envelopes.json"
    );
    let text = std::fs::read(path).unwrap();
    match codec::from_json(&text).unwrap() {
        Value::List(v) => v,
        other => panic!("vectors file is not a list: {other:?}"),
    }
}

fn opt_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn opt_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn opt_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

#[test]
fn test_vectors_file() {
    let vectors = vectors();
    assert!(vectors.len() >= 10);
    let mut celery = 0;
    for v in &vectors {
        let name = v.get("name").and_then(Value::as_str).unwrap();
        celery += usize::from(name.starts_with("celery-"));
        let envelope = v.get("envelope").and_then(Value::as_str).unwrap();
        let accept = match v.get("accept") {
            Some(Value::List(a)) => Accept::new(a.iter().filter_map(Value::as_str)),
            _ => Accept::default(),
        };
        let max = v
            .get("max_size")
            .and_then(opt_i64)
            .map_or(DEFAULT_MAX_SIZE, |m| m as usize);
        let got = decode_task_message(envelope.as_bytes(), &accept, max);
        if let Some(expected) = v.get("error").and_then(Value::as_str) {
            let kind = match &got {
                Err(Error::Decode(_)) => "Decode",
                Err(Error::TooLarge { .. }) => "TooLarge",
                Err(Error::ContentDisallowed { .. }) => "ContentDisallowed",
                other => panic!("{name}: unexpected {other:?}"),
            };
            assert_eq!(kind, expected, "{name}");
            continue;
        }
        let msg = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let e = v.get("expect").unwrap();
        let f = |k: &str| {
            e.get(k)
                .unwrap_or_else(|| panic!("{name}: expect.{k} missing"))
        };
        assert_eq!(msg.task, f("task").as_str().unwrap(), "{name}");
        assert_eq!(msg.id, f("id").as_str().unwrap(), "{name}");
        assert_eq!(
            msg.args.as_ref().map(|a| Value::List(a.clone())).as_ref(),
            Some(f("args")),
            "{name}"
        );
        assert_eq!(
            msg.kwargs.as_ref().map(|a| Value::Map(a.clone())).as_ref(),
            Some(f("kwargs")),
            "{name}"
        );
        if let Some(embed) = e.get("embed") {
            assert_eq!(
                msg.embed.as_ref().map(|a| Value::Map(a.clone())).as_ref(),
                Some(embed),
                "{name}"
            );
        }
        assert_eq!(msg.eta_ms, opt_i64(f("eta_ms")), "{name}");
        assert_eq!(msg.expires_ms, opt_i64(f("expires_ms")), "{name}");
        assert_eq!(Some(msg.retries), opt_i64(f("retries")), "{name}");
        assert_eq!(
            Some(i64::from(msg.priority)),
            opt_i64(f("priority")),
            "{name}"
        );
        assert_eq!(msg.time_limit, opt_f64(f("time_limit")), "{name}");
        assert_eq!(msg.soft_time_limit, opt_f64(f("soft_time_limit")), "{name}");
        assert_eq!(msg.root_id, opt_string(f("root_id")), "{name}");
        assert_eq!(msg.parent_id, opt_string(f("parent_id")), "{name}");
        assert_eq!(msg.group_id, opt_string(f("group_id")), "{name}");
        assert_eq!(msg.origin, opt_string(f("origin")), "{name}");
        assert_eq!(
            Value::Bool(msg.ignore_result),
            *f("ignore_result"),
            "{name}"
        );
        assert_eq!(msg.argsrepr, opt_string(f("argsrepr")), "{name}");
        assert_eq!(msg.kwargsrepr, opt_string(f("kwargsrepr")), "{name}");
        assert_eq!(msg.reply_to, opt_string(f("reply_to")), "{name}");
        assert_eq!(
            msg.correlation_id,
            opt_string(f("correlation_id")),
            "{name}"
        );
        assert_eq!(msg.delivery_tag, opt_string(f("delivery_tag")), "{name}");
        assert_eq!(msg.exchange, f("exchange").as_str().unwrap(), "{name}");
        assert_eq!(
            msg.routing_key,
            f("routing_key").as_str().unwrap(),
            "{name}"
        );
        assert_eq!(Value::Bool(msg.redelivered), *f("redelivered"), "{name}");
        assert_eq!(
            msg.content_type,
            f("content_type").as_str().unwrap(),
            "{name}"
        );

        // Re-encoding the decoded message and decoding again keeps every field.
        let mut sp = TaskMessageSpec::new(&msg.task, &msg.id, &msg.routing_key);
        sp.args = msg.args.clone().unwrap_or_default();
        sp.kwargs = msg.kwargs.clone().unwrap_or_default();
        sp.serializer = if msg.content_type.contains("msgpack") {
            "msgpack".into()
        } else {
            "json".into()
        };
        sp.eta_ms = msg.eta_ms;
        sp.expires_ms = msg.expires_ms;
        sp.retries = msg.retries;
        sp.priority = Some(i64::from(msg.priority));
        sp.time_limit = msg.time_limit;
        sp.soft_time_limit = msg.soft_time_limit;
        let again = decode_task_message(
            &encode_task_message(&sp).unwrap(),
            &Accept::new(["json", "msgpack"]),
            DEFAULT_MAX_SIZE,
        )
        .unwrap();
        assert_eq!(
            (again.args, again.kwargs, again.eta_ms, again.expires_ms),
            (msg.args, msg.kwargs, msg.eta_ms, msg.expires_ms),
            "{name}"
        );
    }
    assert!(
        celery >= 5,
        "the file must keep the Celery-produced vectors"
    );
}

#[test]
fn test_decode_envelope_headers_json_matches_full_parse() {
    for v in &vectors() {
        let name = v.get("name").and_then(Value::as_str).unwrap();
        let envelope = v.get("envelope").and_then(Value::as_str).unwrap();
        let accept = match v.get("accept") {
            Some(Value::List(a)) => Accept::new(a.iter().filter_map(Value::as_str)),
            _ => Accept::default(),
        };
        let Ok(env) = decode_envelope(envelope.as_bytes(), &accept, DEFAULT_MAX_SIZE) else {
            continue;
        };
        let full = envelope_value(envelope.as_bytes());
        let expected = match full.get("headers") {
            Some(Value::Map(m)) => m.clone(),
            _ => Vec::new(),
        };
        assert_eq!(
            decode_headers(headers_json(envelope.as_bytes()).unwrap()).unwrap(),
            expected,
            "{name}"
        );
        assert!(
            env.message.args.is_none() && env.message.headers.is_empty(),
            "{name}"
        );
    }
}

#[test]
fn test_decode_repeated_keys_keep_the_last() {
    let env = br#"{"body": "W1tdLHt9LHt9XQ==", "content-type": "text/plain", "content-type": "application/json",
        "headers": {"task": "a", "id": "x", "task": "b"}, "properties": {"body_encoding": "base64"}}"#;
    let msg = decode(env).unwrap();
    assert_eq!(msg.task, "b");
    assert_eq!(msg.args, Some(vec![]));
}

#[test]
fn test_decode_deep_unknown_header_is_decode_error() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let env = format!(
        r#"{{"body": "", "content-type": "application/json", "headers": {{"task": "a", "id": "x", "x": {deep}}}}}"#
    );
    assert!(matches!(decode(env.as_bytes()), Err(Error::Decode(_))));
}

#[test]
fn test_encode_envelope_writes_kombu_layout_and_extras() {
    let env = EnvelopeRef {
        task: "tasks.add",
        id: "id-1",
        routing_key: "celery",
        content_type: "application/json",
        content_encoding: "utf-8",
        argsrepr: Some("(2, 3)"),
        priority: Some(42),
        ..EnvelopeRef::default()
    };
    let body = br#"[[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#;
    let extra: &[(&str, &[u8])] = &[("retries", b"7"), ("x-list", b"[1,{\"a\":null}]")];
    let data = encode_envelope(&env, body, extra, DEFAULT_MAX_SIZE).unwrap();
    // Plain JSON, in kombu's layout; extras replace standard headers and come last.
    let parsed: serde_json::Value = serde_json::from_slice(&data).unwrap();
    let headers = parsed["headers"].as_object().unwrap();
    let keys: Vec<&str> = headers.keys().map(String::as_str).collect();
    assert_eq!(keys.first(), Some(&"lang"));
    assert_eq!(&keys[keys.len() - 2..], &["retries", "x-list"]);
    assert_eq!(keys.iter().filter(|k| **k == "retries").count(), 1);
    assert_eq!(headers["retries"], 7);
    assert_eq!(headers["root_id"], "id-1");
    assert_eq!(headers["timelimit"], serde_json::json!([null, null]));
    assert_eq!(parsed["properties"]["priority"], 9);
    let tag = parsed["properties"]["delivery_tag"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(tag).unwrap().get_version_num(), 4);

    let msg = decode(&data).unwrap();
    assert_eq!(msg.args, Some(vec![Value::Int(2), Value::Int(3)]));
    assert_eq!(msg.retries, 7);
    assert_eq!(msg.argsrepr.as_deref(), Some("(2, 3)"));
    assert_eq!(msg.kwargsrepr, None);

    assert!(matches!(
        encode_envelope(&env, body, extra, data.len() - 1),
        Err(Error::TooLarge { .. })
    ));
    assert!(encode_envelope(&env, body, extra, data.len()).is_ok());
}

#[test]
fn test_encode_envelope_matches_spec_encoding() {
    let mut sp = spec();
    sp.delivery_tag = Some("tag".into());
    sp.eta_ms = Some(1_795_498_773_123);
    sp.time_limit = Some(30.0);
    sp.origin = Some("gen1@h".into());
    let via_spec = encode_task_message(&sp).unwrap();
    let mut body = Vec::new();
    codec::write_task_body(
        &mut body,
        Codec::Json,
        &sp.args,
        &sp.kwargs,
        &codec::default_embed(),
    )
    .unwrap();
    let env = EnvelopeRef {
        task: &sp.task,
        id: &sp.id,
        routing_key: &sp.routing_key,
        content_type: "application/json",
        content_encoding: "utf-8",
        eta_ms: sp.eta_ms,
        time_limit: sp.time_limit,
        origin: sp.origin.as_deref(),
        delivery_tag: Some("tag"),
        ..EnvelopeRef::default()
    };
    assert_eq!(
        encode_envelope(&env, &body, &[], DEFAULT_MAX_SIZE).unwrap(),
        via_spec
    );
}

// -- malformed envelopes (R9): mutations of valid ones never panic, and fail only as bad input --------

/// Any value the codecs know, nested a few levels.
fn arb_any() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<f64>().prop_map(Value::Float),
        ".{0,12}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
            proptest::collection::vec(("[a-z_]{0,8}".prop_map(Value::Str), inner), 0..4)
                .prop_map(Value::Map),
        ]
    })
}

/// One way to spoil an envelope.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace `section.field` (section `""` is the top level) with a value.
    Set(&'static str, String, Value),
    /// Remove `section.field`.
    Remove(&'static str, String),
    /// The body: base64 of these bytes.
    RawBody(Vec<u8>),
    /// The body: base64 of this value serialized by the message's own codec (a wrong shape).
    ShapedBody(Value),
    /// The body: base64 of JSON nested this deep.
    DeepBody(usize),
    /// The body: a string that is not base64.
    NotBase64(String),
    /// The serialized envelope cut after this many bytes.
    Truncate(usize),
}

const SECTIONS: [&str; 3] = ["", "headers", "properties"];
const FIELDS: [&str; 24] = [
    "body",
    "content-type",
    "content-encoding",
    "headers",
    "properties",
    "task",
    "id",
    "eta",
    "expires",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "group",
    "argsrepr",
    "ignore_result",
    "redelivered",
    "compression",
    "priority",
    "delivery_info",
    "delivery_tag",
    "correlation_id",
    "reply_to",
    "body_encoding",
];

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let section = proptest::sample::select(SECTIONS.to_vec());
    let field = prop_oneof![
        proptest::sample::select(FIELDS.to_vec()).prop_map(String::from),
        "[a-z]{1,6}"
    ];
    prop_oneof![
        (section.clone(), field.clone(), arb_any()).prop_map(|(s, f, v)| Mutation::Set(s, f, v)),
        (section, field).prop_map(|(s, f)| Mutation::Remove(s, f)),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Mutation::RawBody),
        arb_any().prop_map(Mutation::ShapedBody),
        (1usize..200_000).prop_map(Mutation::DeepBody),
        ".{0,16}".prop_map(Mutation::NotBase64),
        (0usize..2_000).prop_map(Mutation::Truncate),
    ]
}

fn b64(data: &[u8]) -> Value {
    Value::Str(base64::engine::general_purpose::STANDARD.encode(data))
}

fn section_of<'a>(env: &'a mut Value, section: &str) -> Option<&'a mut Map> {
    let Value::Map(top) = env else { return None };
    if section.is_empty() {
        return Some(top);
    }
    match top.iter_mut().find(|(k, _)| k.as_str() == Some(section)) {
        Some((_, Value::Map(m))) => Some(m),
        _ => None,
    }
}

fn set_field(map: &mut Map, field: &str, value: Value) {
    match map.iter_mut().find(|(k, _)| k.as_str() == Some(field)) {
        Some(entry) => entry.1 = value,
        None => map.push((Value::Str(field.to_owned()), value)),
    }
}

fn mutate(msgpack: bool, mutations: &[Mutation]) -> Vec<u8> {
    let mut sp = spec();
    sp.serializer = if msgpack {
        "msgpack".into()
    } else {
        "json".into()
    };
    let mut env = envelope_value(&encode_task_message(&sp).unwrap());
    let codec = if msgpack { Codec::Msgpack } else { Codec::Json };
    let mut truncate = None;
    for m in mutations {
        match m {
            Mutation::Set(section, field, value) => {
                if let Some(map) = section_of(&mut env, section) {
                    set_field(map, field, value.clone());
                }
            }
            Mutation::Remove(section, field) => {
                if let Some(map) = section_of(&mut env, section) {
                    map.retain(|(k, _)| k.as_str() != Some(field.as_str()));
                }
            }
            Mutation::RawBody(bytes) => {
                set_field(section_of(&mut env, "").unwrap(), "body", b64(bytes))
            }
            Mutation::ShapedBody(value) => {
                // Values a codec cannot write (bytes in JSON) leave the body as it was.
                if let Ok(bytes) = codec::dumps(value, codec) {
                    set_field(section_of(&mut env, "").unwrap(), "body", b64(&bytes));
                }
            }
            Mutation::DeepBody(depth) => {
                let deep = format!("{}{}", "[".repeat(*depth), "]".repeat(*depth));
                set_field(
                    section_of(&mut env, "").unwrap(),
                    "body",
                    b64(deep.as_bytes()),
                );
            }
            Mutation::NotBase64(text) => {
                set_field(
                    section_of(&mut env, "").unwrap(),
                    "body",
                    Value::Str(format!("{text}!*")),
                );
            }
            Mutation::Truncate(at) => truncate = Some(*at),
        }
    }
    let mut data = codec::to_json(&env).unwrap_or_else(|_| encode_task_message(&sp).unwrap());
    if let Some(at) = truncate {
        data.truncate(at);
    }
    data
}

/// The errors bad input may produce: anything else (a broker or configuration error) is a bug.
fn is_input_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Decode(_) | Error::TooLarge { .. } | Error::ContentDisallowed { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn test_decode_mutated_envelopes_fails_only_as_bad_input(
        msgpack in any::<bool>(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let data = mutate(msgpack, &mutations);
        let accept = Accept::new(["json", "msgpack"]);
        if let Err(e) = decode_task_message(&data, &accept, DEFAULT_MAX_SIZE) {
            prop_assert!(is_input_error(&e), "{e:?}");
        }
        if let Err(e) = decode_envelope(&data, &accept, DEFAULT_MAX_SIZE) {
            prop_assert!(is_input_error(&e), "{e:?}");
        }
    }

    #[test]
    fn test_decode_arbitrary_bytes_fails_only_as_bad_input(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let accept = Accept::new(["json", "msgpack"]);
        if let Err(e) = decode_task_message(&data, &accept, DEFAULT_MAX_SIZE) {
            prop_assert!(is_input_error(&e), "{e:?}");
        }
        for codec in [Codec::Json, Codec::Msgpack] {
            if let Err(e) = codec::loads(&data, codec) {
                prop_assert!(is_input_error(&e), "{e:?}");
            }
        }
    }
}

#[test]
fn test_canvas_fields_round_trip_through_the_envelope() {
    let mut sp = spec();
    let link = vec![
        (s("task"), s("tasks.mul")),
        (s("args"), Value::List(vec![])),
    ];
    sp.embed = Some(vec![
        (s("callbacks"), Value::List(vec![Value::Map(link.clone())])),
        (s("errbacks"), Value::Null),
        (s("chain"), Value::Null),
        (s("chord"), Value::Map(link.clone())),
    ]);
    sp.group_id = Some("g".into());
    sp.group_index = Some(4);
    sp.shadow = Some("add(2, 3)".into());
    let msg = decode(&encode_task_message(&sp).unwrap()).unwrap();
    assert_eq!(
        (
            msg.group_id.as_deref(),
            msg.group_index,
            msg.shadow.as_deref()
        ),
        (Some("g"), Some(4), Some("add(2, 3)"))
    );
    let embed = msg.embed.unwrap();
    assert_eq!(
        map_get(&embed, "callbacks"),
        Some(&Value::List(vec![Value::Map(link.clone())]))
    );
    assert_eq!(map_get(&embed, "chord"), Some(&Value::Map(link)));
}

#[test]
fn test_message_body_is_the_same_bytes_the_envelope_carries() {
    let sp = spec();
    let (content_type, _, body) = encode_body(&sp).unwrap();
    assert_eq!(content_type, "application/json");
    let env = decode(&encode_task_message(&sp).unwrap()).unwrap();
    assert_eq!(env.body, body.into_owned());
}
