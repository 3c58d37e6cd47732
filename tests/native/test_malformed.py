"""R9: Hypothesis-generated malformed envelopes reach the Rust decoder through the extension.

Valid envelopes (JSON and msgpack bodies) are spoiled: header and property fields dropped or
retyped, top-level keys replaced, the body made invalid base64, random bytes, a wrong shape, nested
very deep, the content type changed, the bytes truncated. ``decode_task_message`` must either
decode (and every field of the result must then be readable) or raise an rqueue exception: never
a panic (``pyo3_runtime.PanicException``) or another Python exception.
"""

from __future__ import annotations

import base64
import contextlib
import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rqueue import _rqueue
from rqueue.exceptions import DecodeError, RQueueError

ACCEPT = ["json", "msgpack"]
FIELDS = [
    "task",
    "id",
    "eta",
    "expires",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "group",
    "group_index",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "redelivered",
    "compression",
    "lang",
    "shadow",
]
PROPERTIES = ["priority", "delivery_info", "delivery_tag", "correlation_id", "reply_to", "body_encoding"]
TOP = ["body", "content-type", "content-encoding", "headers", "properties"]
CONTENT_TYPES = [
    "application/json",
    "application/x-msgpack",
    "application/x-python-serialize",
    "application/x-yaml",
    "text/plain",
    "",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
#: What a producer can encode (64-bit integers).
arg_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def valid_envelope(msgpack: bool, args: list[Any]) -> dict[str, Any]:
    raw = _rqueue.encode_task_message(
        task="tasks.add",
        task_id="0b6a1c52-6f2e-4d7a-9a51-2f3c4d5e6f70",
        args=args,
        kwargs={"k": "v"},
        routing_key="celery",
        serializer="msgpack" if msgpack else "json",
        time_limit=30.0,
    )
    envelope: dict[str, Any] = json.loads(raw)
    return envelope


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(
        st.sampled_from(
            ["drop", "retype", "top", "raw_body", "shaped_body", "deep_body", "not_base64", "content_type", "deep"]
        )
    )
    if kind in ("drop", "retype"):
        where = draw(st.sampled_from(["headers", "properties", ""]))
        names = {"headers": FIELDS, "properties": PROPERTIES, "": TOP}[where]
        field = draw(st.sampled_from(names) | st.text(string.ascii_lowercase, min_size=1, max_size=5))
        return kind, (where, field, draw(json_values) if kind == "retype" else None)
    if kind == "top":
        return kind, (draw(st.sampled_from(TOP)), draw(json_values))
    if kind == "raw_body":
        return kind, draw(st.binary(max_size=64))
    if kind == "shaped_body":
        return kind, draw(json_values)
    if kind in ("deep_body", "deep"):
        return kind, draw(st.integers(min_value=1, max_value=150_000))
    if kind == "not_base64":
        return kind, draw(st.text(max_size=16)) + "!*"
    return kind, draw(st.sampled_from(CONTENT_TYPES) | st.text(max_size=20))


def spoil(envelope: dict[str, Any], mutations: list[tuple[str, Any]]) -> bytes:
    nested = None
    for kind, arg in mutations:
        if kind in ("drop", "retype"):
            where, field, value = arg
            target = envelope if where == "" else envelope.get(where)
            if isinstance(target, dict):
                if kind == "drop":
                    target.pop(field, None)
                else:
                    target[field] = value
        elif kind == "top":
            envelope[arg[0]] = arg[1]
        elif kind == "raw_body":
            envelope["body"] = b64(arg)
        elif kind == "shaped_body":
            envelope["body"] = b64(json.dumps(arg).encode())
        elif kind == "deep_body":
            envelope["body"] = b64(("[" * arg + "]" * arg).encode())
        elif kind == "not_base64":
            envelope["body"] = arg
        elif kind == "content_type":
            envelope["content-type"] = arg
        elif kind == "deep":
            nested = arg
    data = json.dumps(envelope).encode()
    if nested is not None:  # the envelope itself nested deep inside a header
        data = data.replace(b'"lang": "py"', b'"lang": ' + b"[" * nested + b"]" * nested, 1)
    return data


def decode_or_typed_error(data: bytes) -> None:
    """Decode; on success read every field (some are converted lazily); errors must be rqueue's."""
    with contextlib.suppress(RQueueError):  # anything else fails the test
        msg = _rqueue.decode_task_message(data, accept=ACCEPT, max_size=1 << 20)
        for name in dir(msg):
            if not name.startswith("_"):
                getattr(msg, name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msgpack=st.booleans(),
    args=st.lists(arg_values, max_size=3),
    mutations=st.lists(mutation(), min_size=1, max_size=4),
    cut=st.none() | st.integers(min_value=0, max_value=2000),
)
def test_malformed_envelopes_raise_only_rqueue_errors(
    msgpack: bool, args: list[Any], mutations: list[tuple[str, Any]], cut: int | None
) -> None:
    data = spoil(valid_envelope(msgpack, args), mutations)
    decode_or_typed_error(data if cut is None else data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
@example(b"\x81\x90\x00")  # found by this test: a msgpack map whose key is an array
def test_arbitrary_bytes_raise_only_rqueue_errors(data: bytes) -> None:
    decode_or_typed_error(data)
    for content_type in ("application/json", "application/x-msgpack"):
        with contextlib.suppress(RQueueError):  # anything else fails the test
            _rqueue.loads(data, content_type)


def test_a_typed_error_names_what_was_wrong() -> None:
    envelope = valid_envelope(False, [1])
    envelope["headers"]["retries"] = "many"
    with pytest.raises(DecodeError, match=r"headers\.retries"):
        _rqueue.decode_task_message(json.dumps(envelope).encode(), accept=ACCEPT)


def test_a_msgpack_map_key_python_cannot_hash_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="a map key is a list, which cannot be a Python dict key"):
        _rqueue.loads(b"\x81\x90\x00", "application/x-msgpack")  # {[]: 0}
    envelope = valid_envelope(True, [1])
    envelope["body"] = base64.b64encode(b"\x93\x90\x81\x80\x00\x80").decode()  # [[], {{}: 0}, {}]
    with pytest.raises(DecodeError, match="a map key is a dict"):
        _rqueue.decode_task_message(json.dumps(envelope).encode(), accept=ACCEPT)
