use proptest::prelude::*;

use super::*;

fn s(t: &str) -> Value {
    Value::Str(t.to_owned())
}

fn json(text: &str) -> Result<Value> {
    from_json(text.as_bytes())
}

/// Values JSON can carry exactly: finite floats, string keys.
fn arb_value(string_keys_only: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        ".{0,12}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
        "20[0-9]{2}-0[1-9]-1[0-9]T0[0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{6})?(\\+00:00)?"
            .prop_map(Value::DateTime),
        "20[0-9]{2}-0[1-9]-1[0-9]".prop_map(Value::Date),
        "0[0-9]:[0-5][0-9]:[0-5][0-9]".prop_map(Value::Time),
        "-?[0-9]{1,8}\\.[0-9]{0,4}".prop_map(Value::Decimal),
        any::<[u8; 16]>()
            .prop_map(|b| Value::Uuid(uuid::Builder::from_random_bytes(b).into_uuid().to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        let key = if string_keys_only {
            ".{0,6}".prop_map(Value::Str).boxed()
        } else {
            prop_oneof![
                ".{0,6}".prop_map(Value::Str),
                any::<i64>().prop_map(Value::Int)
            ]
            .boxed()
        };
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::vec((key, inner), 0..6).prop_map(|mut m| {
                dedup_keys(&mut m);
                Value::Map(m)
            }),
        ]
    })
}

proptest! {
    #[test]
    fn test_json_roundtrip(v in arb_value(true)) {
        let bytes = to_json(&v).unwrap();
        prop_assert_eq!(from_json(&bytes).unwrap(), v);
    }

    #[test]
    fn test_msgpack_roundtrip(v in arb_value(false)) {
        let bytes = to_msgpack(&v).unwrap();
        prop_assert_eq!(from_msgpack(&bytes).unwrap(), v);
    }

    #[test]
    fn test_json_decode_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = from_json(&data);
        let _ = from_msgpack(&data);
    }
}

#[test]
fn test_json_markers_match_kombu() {
    let v = Value::List(vec![
        Value::DateTime("2026-01-02T03:04:05.123456+00:00".into()),
        Value::Date("2026-01-02".into()),
        Value::Time("03:04:05".into()),
        Value::Decimal("1.50".into()),
        Value::Uuid("6f1c3a52-2b3e-4a0f-9d2e-3c1a5b7e9f00".into()),
        Value::Bytes(b"hi".to_vec()),
        Value::Bytes(vec![0xff, 0x00]),
    ]);
    let text = String::from_utf8(to_json(&v).unwrap()).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"[{"__type__":"datetime","__value__":"2026-01-02T03:04:05.123456+00:00"},"#,
            r#"{"__type__":"date","__value__":"2026-01-02"},"#,
            r#"{"__type__":"time","__value__":"03:04:05"},"#,
            r#"{"__type__":"decimal","__value__":"1.50"},"#,
            r#"{"__type__":"uuid","__value__":{"hex":"6f1c3a522b3e4a0f9d2e3c1a5b7e9f00"}},"#,
            r#"{"__type__":"bytes","__value__":"hi"},"#,
            r#"{"__type__":"base64","__value__":"/wA="}]"#
        )
    );
}

#[test]
fn test_json_decode_marker_with_keys_reversed() {
    let v = json(r#"{"__value__": "1.5", "__type__": "decimal"}"#).unwrap();
    assert_eq!(v, Value::Decimal("1.5".into()));
}

#[test]
fn test_json_decode_uuid_marker_as_string() {
    let v = json(r#"{"__type__": "uuid", "__value__": "6F1C3A52-2B3E-4A0F-9D2E-3C1A5B7E9F00"}"#)
        .unwrap();
    assert_eq!(
        v,
        Value::Uuid("6f1c3a52-2b3e-4a0f-9d2e-3c1a5b7e9f00".into())
    );
}

#[test]
fn test_json_decode_three_key_dict_is_plain() {
    let v = json(r#"{"__type__": "decimal", "__value__": "1", "x": 1}"#).unwrap();
    assert!(matches!(v, Value::Map(ref m) if m.len() == 3));
}

#[test]
fn test_json_decode_unknown_marker_is_error() {
    assert!(matches!(
        json(r#"{"__type__": "frob", "__value__": 1}"#),
        Err(Error::Decode(_))
    ));
    assert!(matches!(
        json(r#"{"__type__": "decimal", "__value__": 1}"#),
        Err(Error::Decode(_))
    ));
}

#[test]
fn test_json_decode_duplicate_keys_last_wins_first_place() {
    let v = json(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
    assert_eq!(
        v,
        Value::Map(vec![(s("a"), Value::Int(3)), (s("b"), Value::Int(2))])
    );
}

#[test]
fn test_json_decode_deep_nesting_is_decode_error() {
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    assert!(matches!(json(&deep), Err(Error::Decode(_))));
    let deep_obj = r#"{"a":"#.repeat(100_000);
    assert!(matches!(json(&deep_obj), Err(Error::Decode(_))));
}

#[test]
fn test_json_decode_moderate_nesting_ok() {
    let ok = "[".repeat(100) + &"]".repeat(100);
    assert!(json(&ok).is_ok());
}

#[test]
fn test_msgpack_decode_deep_nesting_is_decode_error() {
    let mut data = vec![0x91u8; 100_000]; // fixarray of one element, nested
    data.push(0xc0);
    assert!(matches!(from_msgpack(&data), Err(Error::Decode(_))));
}

#[test]
fn test_encode_deep_nesting_is_serialize_error() {
    let mut v = Value::Null;
    for _ in 0..(MAX_DEPTH + 5) {
        v = Value::List(vec![v]);
    }
    assert!(matches!(to_json(&v), Err(Error::Serialize { .. })));
    assert!(matches!(to_msgpack(&v), Err(Error::Serialize { .. })));
    // Dropping is iterative enough at this depth; no stack concern.
}

#[test]
fn test_json_decode_trailing_garbage_is_error() {
    assert!(matches!(json("[1] x"), Err(Error::Decode(_))));
    assert!(matches!(json(""), Err(Error::Decode(_))));
}

#[test]
fn test_msgpack_trailing_bytes_is_error() {
    assert!(matches!(from_msgpack(&[0xc0, 0xc0]), Err(Error::Decode(_))));
}

#[test]
fn test_msgpack_invalid_utf8_str_is_error() {
    assert!(matches!(
        from_msgpack(&[0xa2, 0xff, 0xfe]),
        Err(Error::Decode(_))
    ));
}

#[test]
fn test_json_serialize_error_names_path() {
    let v = Value::Map(vec![(
        s("args"),
        Value::List(vec![
            Value::Int(1),
            Value::Map(vec![(s("k"), Value::Float(f64::NAN))]),
        ]),
    )]);
    match write_json(&mut Vec::new(), &v, "kwargs") {
        Err(Error::Serialize {
            type_name,
            path,
            codec,
        }) => {
            assert_eq!(path, r#"kwargs["args"][1]["k"]"#);
            assert_eq!(codec, "json");
            assert!(type_name.contains("NaN"), "{type_name}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn test_json_list_key_is_serialize_error() {
    let v = Value::List(vec![Value::Map(vec![(Value::List(vec![]), Value::Null)])]);
    match write_json(&mut Vec::new(), &v, "args") {
        Err(Error::Serialize { path, .. }) => assert_eq!(path, "args[0][<list key>]"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn test_json_non_string_keys_become_text_like_python() {
    let v = Value::Map(vec![
        (Value::Int(1), Value::Null),
        (Value::Bool(true), Value::Null),
        (Value::Null, Value::Null),
        (Value::Float(2.0), Value::Null),
    ]);
    assert_eq!(
        to_json(&v).unwrap(),
        br#"{"1":null,"true":null,"null":null,"2.0":null}"#
    );
}

#[test]
fn test_codec_names_and_content_types() {
    assert_eq!(Codec::from_name("json").unwrap(), Codec::Json);
    assert_eq!(
        Codec::from_name("application/x-msgpack").unwrap(),
        Codec::Msgpack
    );
    assert!(matches!(Codec::from_name("pickle"), Err(Error::Config(_))));
    assert_eq!(
        content_type_of("pickle").unwrap(),
        ("application/x-python-serialize", "binary")
    );
    assert_eq!(content_type_of("yaml").unwrap().0, "application/x-yaml");
    assert!(matches!(content_type_of("xml"), Err(Error::Config(_))));
    assert_eq!(
        normalize_content_type("Application/JSON; charset=utf-8"),
        "application/json"
    );
}

#[test]
fn test_uuid_version_bits_follow_python() {
    // Python: UUID(hex="00000000000000000000000000000000", version=4)
    let v = json(
        r#"{"__type__":"uuid","__value__":{"hex":"00000000000000000000000000000000","version":4}}"#,
    )
    .unwrap();
    assert_eq!(
        v,
        Value::Uuid("00000000-0000-4000-8000-000000000000".into())
    );
}
