"""The Rust codecs through the real extension: round trips, kombu compatibility, typed errors."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rqueue import _rqueue
from rqueue.exceptions import ConfigurationError, DecodeError, SerializationError

CONTENT_TYPES = {"json": "application/json", "msgpack": "application/x-msgpack"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.datetimes(timezones=st.none() | st.just(dt.timezone.utc))
    | st.dates()
    | st.times()
    | st.decimals(allow_nan=False, allow_infinity=False, places=4)
    | st.uuids()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@given(value=values)
def test_codec_roundtrip(serializer: str, value: object) -> None:
    data = _rqueue.dumps(value, serializer)
    assert _rqueue.loads(data, CONTENT_TYPES[serializer]) == value


def test_codec_tuple_becomes_list() -> None:
    assert _rqueue.loads(_rqueue.dumps((1, (2, 3)))) == [1, [2, 3]]


def test_codec_json_readable_by_kombu() -> None:
    kombu_json = pytest.importorskip("kombu.utils.json", reason="kombu not installed")
    value = {
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc),
        "day": dt.date(2026, 1, 2),
        "at": dt.time(12, 30),
        "price": decimal.Decimal("19.99"),
        "ref": uuid.UUID("6f1c3a52-2b3e-4a0f-9d2e-3c1a5b7e9f00"),
        "raw": b"bytes",
        "bin": b"\x00\xff",
    }
    assert kombu_json.loads(_rqueue.dumps(value)) == value
    assert _rqueue.loads(kombu_json.dumps(value).encode()) == value


def test_codec_unsupported_type_names_type_and_path() -> None:
    with pytest.raises(SerializationError) as info:
        _rqueue.dumps({"args": [1, {"k": object()}]})
    assert "object" in str(info.value)
    assert "obj['args'][1]['k']" in str(info.value)


def test_codec_nan_is_serialization_error_for_json() -> None:
    with pytest.raises(SerializationError):
        _rqueue.dumps([float("nan")])


def test_codec_huge_int_is_serialization_error() -> None:
    with pytest.raises(SerializationError):
        _rqueue.dumps(2**70)


def test_codec_self_referencing_list_is_serialization_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        _rqueue.dumps(loop)


def test_codec_deep_json_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        _rqueue.loads(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("data", [b"", b"{", b"[1] x", b"\xff", b'{"__type__": "nope", "__value__": 1}'])
def test_codec_malformed_json_is_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        _rqueue.loads(data)


def test_codec_malformed_msgpack_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        _rqueue.loads(b"\x92\x01", "application/x-msgpack")


def test_codec_unknown_serializer_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        _rqueue.dumps(1, "xml")
    with pytest.raises(ConfigurationError):
        _rqueue.loads(b"1", "application/xml")


def test_codec_content_type_of() -> None:
    assert _rqueue.content_type_of("json") == ("application/json", "utf-8")
    assert _rqueue.content_type_of("msgpack") == ("application/x-msgpack", "binary")
    assert _rqueue.content_type_of("pickle") == ("application/x-python-serialize", "binary")
    assert _rqueue.content_type_of("yaml")[0] == "application/x-yaml"


def test_codec_json_output_is_plain_json() -> None:
    assert json.loads(_rqueue.dumps({"a": [1, 2.5, None, True]})) == {"a": [1, 2.5, None, True]}


@pytest.mark.parametrize(
    "data",
    [b'{"a": 1, "a": 2, "b": 3}', b'{"__type__": "decimal", "__value__": "1.5", "x": 1}', b"-0", b'"\\u00e9\\n"'],
)
def test_codec_json_loads_matches_stdlib_shape(data: bytes) -> None:
    got = _rqueue.loads(data)
    assert got == json.loads(data) or isinstance(got, decimal.Decimal)


def test_codec_json_markers_and_errors() -> None:
    assert _rqueue.loads(b'{"__value__": "1.5", "__type__": "decimal"}') == decimal.Decimal("1.5")
    assert _rqueue.loads(b'{"__type__": "bytes", "__value__": "hi"}') == b"hi"
    assert _rqueue.loads(
        b'{"__type__": "uuid", "__value__": {"hex": "6f1c3a522b3e4a0f9d2e3c1a5b7e9f00", "version": 4}}'
    ) == uuid.UUID("6f1c3a52-2b3e-4a0f-9d2e-3c1a5b7e9f00")
    for bad in (b'{"__type__": 1, "__value__": "x"}', b'{"__type__": "datetime", "__value__": "not a date"}'):
        with pytest.raises(DecodeError):
            _rqueue.loads(bad)
    assert _rqueue.loads(b"[" * 100 + b"]" * 100) is not None
    with pytest.raises(DecodeError):
        _rqueue.loads(b"[" * 129 + b"]" * 129)


# -- the JSON writer over Python objects: same meaning as the Value path, kombu-readable --------


@given(value=values)
def test_codec_json_writer_matches_value_path(value: object) -> None:
    # msgpack still goes through the core's Value tree: both must carry the same value.
    via_json = _rqueue.loads(_rqueue.dumps(value, "json"))
    via_value = _rqueue.loads(_rqueue.dumps(value, "msgpack"), "application/x-msgpack")
    assert via_json == via_value == value


def test_codec_json_writer_subclasses_and_keys() -> None:
    import collections
    import enum

    class Color(enum.IntEnum):
        RED = 1

    class Text(str):
        pass

    value = {
        "enum": Color.RED,
        "text": Text("t"),
        "ordered": collections.OrderedDict(a=1),
        "default": collections.defaultdict(list, b=[1]),
        "ba": bytearray(b"xy"),
        "tuple": (1, (2,)),
        7: "int key",
        2.5: "float key",
        True: "bool key",
        None: "none key",
    }
    assert json.loads(_rqueue.dumps(value)) == {
        "enum": 1,
        "text": "t",
        "ordered": {"a": 1},
        "default": {"b": [1]},
        "ba": {"__type__": "bytes", "__value__": "xy"},
        "tuple": [1, [2]],
        # keys as json.dumps writes them
        "7": "int key",
        "2.5": "float key",
        "true": "bool key",
        "null": "none key",
    }
    assert json.loads(_rqueue.dumps({1e16: 0, -0.5: 1})) == json.loads(json.dumps({1e16: 0, -0.5: 1}))


def test_codec_json_writer_output_is_serde_json_compact() -> None:
    value = {"s": 'q"\\\n\t\x01é😀', "f": [0.1, 1e16, -0.0, 5e-324], "n": [2**63, -(2**63)], "b": [True, False, None]}
    assert _rqueue.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("value", "where", "what"),
    [
        ({"a": [1, {"k": object()}]}, "obj['a'][1]['k']", "object"),
        ({"a": {(1, 2): 1}}, "obj['a'][(1, 2)]", "tuple"),
        ([{"x": float("inf")}], "obj[0]['x']", "float inf"),
        ([0, 2**64], "obj[1]", "64-bit"),
        ({b"k": 1}, "obj[b'k']", "bytes"),
    ],
)
def test_codec_json_writer_errors_name_type_and_path(value: object, where: str, what: str) -> None:
    with pytest.raises(SerializationError) as info:
        _rqueue.dumps(value)
    assert where in str(info.value) and what in str(info.value)


def test_codec_json_writer_depth_bound() -> None:
    def nested(n: int) -> object:
        v: object = 1
        for _ in range(n):
            v = [v]
        return v

    assert _rqueue.loads(_rqueue.dumps(nested(120))) == nested(120)
    assert _rqueue.dumps(nested(128)) == b"[" * 128 + b"1" + b"]" * 128
    with pytest.raises(SerializationError, match="nested too deeply"):
        _rqueue.dumps(nested(129))
    with pytest.raises(SerializationError, match="nested too deeply"):
        _rqueue.dumps(nested(100_000))
