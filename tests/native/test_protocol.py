"""The Celery protocol v2 envelope through the real extension, and interop with celery/kombu."""

from __future__ import annotations

import base64
import json
import pathlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rqueue import _rqueue
from rqueue.exceptions import ContentDisallowed, DecodeError, MessageTooLarge

VECTORS = json.loads((pathlib.Path(__file__).parents[2] / "docs/test-vectors/envelopes.json").read_text())
ERRORS = {"Decode": DecodeError, "TooLarge": MessageTooLarge, "ContentDisallowed": ContentDisallowed}


def _encode(**kw: object) -> bytes:
    base: dict[str, object] = {
        "task": "tasks.add",
        "task_id": str(uuid.uuid4()),
        "args": [2, 3],
        "kwargs": {},
        "routing_key": "celery",
    }
    base.update(kw)
    return _rqueue.encode_task_message(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_protocol_vector(vector: dict) -> None:
    kw = {"accept": vector.get("accept", ["application/json"]), "max_size": vector.get("max_size", 1 << 20)}
    if "error" in vector:
        with pytest.raises(ERRORS[vector["error"]]):
            _rqueue.decode_task_message(vector["envelope"].encode(), **kw)
        return
    msg = _rqueue.decode_task_message(vector["envelope"].encode(), **kw)
    expect = vector["expect"]
    loads = lambda v: _rqueue.loads(json.dumps(v).encode())  # noqa: E731 - markers → native types
    assert msg.args == loads(expect["args"])
    assert msg.kwargs == loads(expect["kwargs"])
    for field in (
        "task",
        "id",
        "eta_ms",
        "expires_ms",
        "retries",
        "priority",
        "time_limit",
        "soft_time_limit",
        "root_id",
        "parent_id",
        "group_id",
        "origin",
        "ignore_result",
        "argsrepr",
        "kwargsrepr",
        "reply_to",
        "correlation_id",
        "delivery_tag",
        "exchange",
        "routing_key",
        "redelivered",
    ):
        assert getattr(msg, field) == expect[field], field


@given(
    args=st.lists(st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10) | st.none(), max_size=5),
    kwargs=st.dictionaries(
        st.text(min_size=1, max_size=6), st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    ),
    eta_ms=st.none() | st.integers(0, 4_000_000_000_000),
    priority=st.none() | st.integers(-5, 20),
    serializer=st.sampled_from(["json", "msgpack"]),
)
def test_protocol_roundtrip(
    args: list, kwargs: dict, eta_ms: int | None, priority: int | None, serializer: str
) -> None:
    data = _encode(
        args=args, kwargs=kwargs, eta_ms=eta_ms, priority=priority, serializer=serializer, time_limit=30.0, retries=3
    )
    msg = _rqueue.decode_task_message(data, accept=["json", "msgpack"])
    assert (msg.args, msg.kwargs, msg.eta_ms, msg.retries) == (args, kwargs, eta_ms, 3)
    assert msg.priority == min(max(priority or 0, 0), 9)
    assert (msg.time_limit, msg.soft_time_limit) == (30.0, None)
    assert msg.root_id == msg.id == msg.correlation_id


def test_protocol_reprs_default_and_truncate() -> None:
    msg = _rqueue.decode_task_message(_encode(args=["x" * 5000], kwargs={"a": 1}))
    assert msg.argsrepr is not None and len(msg.argsrepr) == 1024 and msg.argsrepr.startswith("('xxx")
    assert msg.kwargsrepr == "{'a': 1}"
    msg = _rqueue.decode_task_message(_encode(extra_headers={"argsrepr": "hidden"}))
    assert msg.argsrepr == "hidden"


def test_protocol_too_large() -> None:
    with pytest.raises(MessageTooLarge):
        _encode(max_size=50)
    with pytest.raises(MessageTooLarge):
        _rqueue.decode_task_message(_encode(), max_size=50)


def test_protocol_pickle_refused_unless_accepted() -> None:
    data = _encode(serializer="pickle", body=b"\x80\x04N.")
    with pytest.raises(ContentDisallowed):
        _rqueue.decode_task_message(data)
    msg = _rqueue.decode_task_message(data, accept=["pickle"])
    assert (msg.args, msg.body) == (None, b"\x80\x04N.")


def test_protocol_unsupported_arg_raises_serialization_error() -> None:
    from rqueue.exceptions import SerializationError

    with pytest.raises(SerializationError, match=r"kwargs\['k'\]"):
        _encode(kwargs={"k": object()})


def test_protocol_iso8601() -> None:
    assert _rqueue.format_iso8601_ms(1795498773123) == "2026-11-24T05:39:33.123000+00:00"
    assert _rqueue.parse_iso8601_ms("2026-11-24T07:39:33.123+02:00") == 1795498773123
    with pytest.raises(DecodeError):
        _rqueue.parse_iso8601_ms("later")


# -- live interop with the celery package ---------------------------------------------------------


def test_protocol_decodes_live_celery_envelope() -> None:
    celery = pytest.importorskip("celery", reason="celery not installed")
    from kombu.utils.json import dumps as kombu_dumps

    app = celery.Celery("interop", broker="memory://")
    with app.producer_or_acquire() as producer:
        app.send_task("tasks.mul", args=(4, 5), kwargs={"k": "v"}, countdown=10, priority=3, producer=producer)
        message = producer.channel._get("celery")
    msg = _rqueue.decode_task_message(kombu_dumps(message).encode())
    assert (msg.task, msg.args, msg.kwargs, msg.priority) == ("tasks.mul", [4, 5], {"k": "v"}, 3)
    assert msg.eta_ms == _rqueue.parse_iso8601_ms(message["headers"]["eta"])
    assert msg.headers == message["headers"]


def test_protocol_envelope_parsed_by_kombu() -> None:
    pytest.importorskip("celery", reason="celery not installed")
    from kombu.serialization import loads as kombu_loads
    from kombu.transport.virtual import Message

    data = _encode(args=[1, "two"], kwargs={"x": [3]}, eta_ms=1795498773123, priority=4)
    raw = json.loads(data)
    body = base64.b64decode(raw["body"])
    args, kwargs, embed = kombu_loads(body, raw["content-type"], raw["content-encoding"], accept=["application/json"])
    assert (args, kwargs) == ([1, "two"], {"x": [3]})
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

    class _Channel:  # the minimum kombu's virtual Message reads from its channel
        def decode_body(self, body: str, encoding: str | None) -> bytes:
            return base64.b64decode(body) if encoding == "base64" else body.encode()

    message = Message(raw, channel=_Channel())
    assert message.headers["task"] == "tasks.add"
    assert message.headers["eta"] == "2026-11-24T05:39:33.123000+00:00"
    assert message.properties["priority"] == 4
    assert message.delivery_tag == raw["properties"]["delivery_tag"]
    assert message.decode() == [[1, "two"], {"x": [3]}, embed]


# -- lazily built fields: the same values as an eager decode -------------------------------------


@pytest.mark.parametrize("vector", [v for v in VECTORS if "error" not in v], ids=lambda v: v["name"])
def test_protocol_lazy_headers_and_body_match_eager(vector: dict) -> None:
    kw = {"accept": vector.get("accept", ["application/json"]), "max_size": vector.get("max_size", 1 << 20)}
    msg = _rqueue.decode_task_message(vector["envelope"].encode(), **kw)
    raw = json.loads(vector["envelope"])
    assert msg.headers == _rqueue.loads(json.dumps(raw["headers"]).encode())
    assert msg.headers is msg.headers  # built once, then cached
    body = raw["body"]
    expected = base64.b64decode(body) if raw["properties"].get("body_encoding") == "base64" else body.encode()
    assert msg.body == expected
    if msg.args is not None and raw["content-type"] == "application/json":
        assert [msg.args, msg.kwargs, msg.embed] == _rqueue.loads(expected)


def test_protocol_headers_with_markers_and_no_headers() -> None:
    data = _encode(extra_headers={"x-when": uuid.UUID(int=5), "x-n": [1, {"a": None}]})
    msg = _rqueue.decode_task_message(data)
    assert msg.headers["x-when"] == uuid.UUID(int=5)
    assert msg.headers["x-n"] == [1, {"a": None}]
    env = json.loads(data)
    env["headers"] = {"task": "t", "id": "i"}
    msg = _rqueue.decode_task_message(json.dumps(env).encode())
    assert msg.headers == {"task": "t", "id": "i"}


def test_protocol_body_shape_errors_are_decode_errors() -> None:
    env = json.loads(_encode())
    for body in (b"[1, 2]", b"[{}, {}, null]", b"[[], [], null]", b"[[], {}, 5]", b"[[], {}, {}] x"):
        env["body"] = base64.b64encode(body).decode()
        with pytest.raises(DecodeError):
            _rqueue.decode_task_message(json.dumps(env).encode())


def test_protocol_headers_not_object_is_decode_error_after_content_type() -> None:
    env = json.loads(_encode())
    env["headers"] = [1, 2]
    with pytest.raises(DecodeError):
        _rqueue.decode_task_message(json.dumps(env).encode())
    env["content-type"] = "application/x-yaml"
    with pytest.raises(ContentDisallowed):
        _rqueue.decode_task_message(json.dumps(env).encode())
