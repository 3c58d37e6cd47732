"""The Celery protocol v2 envelope through the real extension, and interop with celery/kombu."""

from __future__ import annotations

import base64
import json
import pathlib
import uuid
from typing import Any

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


# -- encoding straight from Python objects ---------------------------------------------------------


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if "error" not in v and '"application/json"' in v["envelope"]],
    ids=lambda v: v["name"],
)
def test_protocol_encode_vector_inputs_like_celery(vector: dict) -> None:
    """The vectors' args/kwargs encoded here decode to what Celery's own body decodes to."""
    from kombu.utils.json import loads as kombu_loads

    loads = lambda v: _rqueue.loads(json.dumps(v).encode())  # noqa: E731 - markers → native types
    args, kwargs = loads(vector["expect"]["args"]), loads(vector["expect"]["kwargs"])
    data = _encode(args=args, kwargs=kwargs)
    msg = _rqueue.decode_task_message(data)
    assert (msg.args, msg.kwargs) == (args, kwargs)
    raw = json.loads(vector["envelope"])
    celery_body = base64.b64decode(raw["body"])
    ours = base64.b64decode(json.loads(data)["body"])
    assert _rqueue.loads(ours)[:2] == _rqueue.loads(celery_body)[:2]
    assert kombu_loads(ours)[:2] == kombu_loads(celery_body)[:2]
    # the Value path (msgpack) carries the same
    via_value = _rqueue.decode_task_message(_encode(args=args, kwargs=kwargs, serializer="msgpack"), accept=["msgpack"])
    assert (via_value.args, via_value.kwargs) == (msg.args, msg.kwargs)


class _Custom:
    def __repr__(self) -> str:
        return "<custom 'x'>"


REPR_VALUES: list[object] = [
    0,
    -7,
    2**70,
    -(2**63),
    True,
    False,
    None,
    0.1,
    -2.5,
    1e16,
    1e15,
    1.5e-5,
    0.0001,
    -0.0,
    float("inf"),
    float("nan"),
    5e-324,
    "plain",
    "it's",
    'say "hi"',
    "both ' and \"",
    "tab\there\nnl\r\\ \x00\x7f",
    "héllo €uro 😀",
    "nbsp\xa0zero\u200bwidth",
    "ctl\x85 and é",
    "",
    [],
    (),
    {},
    (1,),
    [1, (2,), {"a": [None]}],
    {"k": {"n": (1.5, "s")}, 3: "int key", None: 0},
    b"bytes",
    _Custom(),
]


def _reprs(args: object, kwargs: object) -> tuple[str | None, str | None]:
    msg = _rqueue.decode_task_message(
        _encode(args=args, kwargs=kwargs, serializer="pickle", body=b"\x80\x04N."), accept=["pickle"]
    )
    return msg.argsrepr, msg.kwargsrepr


@pytest.mark.parametrize("value", REPR_VALUES, ids=repr)
def test_protocol_reprs_match_python_repr(value: object) -> None:
    assert _reprs([value], {"v": value}) == (repr((value,)), repr({"v": value}))
    assert _reprs((value, value), {}) == (repr((value, value)), "{}")


@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=4),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner)
            | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_protocol_reprs_match_python_repr_generated(value: object) -> None:
    assert _reprs([value], {"v": value}) == (repr((value,))[:1024], repr({"v": value})[:1024])


@pytest.mark.parametrize(
    "big",
    [
        "x" * 5000,
        "it's " * 1000,
        "\xa0é" * 2000 + "'",
        "\u200b'\"" * 2000,
        ["y" * 300] * 10,
        {f"k{i}": 1.5 for i in range(500)},
        list(range(2000)),
    ],
    ids=["ascii", "quote", "nonprintable-then-quote", "nonprintable-both-quotes", "list", "dict", "ints"],
)
def test_protocol_reprs_are_bounded_prefixes(big: object) -> None:
    argsrepr, kwargsrepr = _reprs([big], {"big": big})
    assert argsrepr == repr((big,))[:1024]
    assert kwargsrepr == repr({"big": big})[:1024]


def test_protocol_reprs_of_self_referencing_containers() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    d: dict[str, object] = {}
    d["self"] = d
    t = ([],)
    t[0].append(t)
    for value in (loop, d, t):
        assert _reprs([value], {"v": value}) == (repr((value,)), repr({"v": value}))


def test_protocol_args_tuple_and_kwargs_mapping() -> None:
    import types

    msg = _rqueue.decode_task_message(_encode(args=(1, "a"), kwargs=types.MappingProxyType({"k": (2,)})))
    assert (msg.args, msg.kwargs, msg.argsrepr, msg.kwargsrepr) == ([1, "a"], {"k": [2]}, "(1, 'a')", "{'k': (2,)}")
    with pytest.raises(TypeError):
        _encode(args="not a list")


def test_protocol_extra_header_errors_and_values() -> None:
    from rqueue.exceptions import SerializationError

    with pytest.raises(SerializationError, match=r"headers\['x'\]\[0\]"):
        _encode(extra_headers={"x": [object()]})
    with pytest.raises(SerializationError, match="header name"):
        _encode(extra_headers={1: "x"})
    msg = _rqueue.decode_task_message(_encode(extra_headers={"kwargsrepr": "k", "retries": 5, "x": (1.5, b"\xff")}))
    assert (msg.kwargsrepr, msg.retries, msg.headers["x"]) == ("k", 5, [1.5, b"\xff"])
    assert list(msg.headers).count("retries") == 1


def test_protocol_encode_is_byte_stable() -> None:
    kw = dict(task_id="id-1", delivery_tag="tag-1", args=[1, "two", None, 2.5], kwargs={"x": [3]}, eta_ms=1795498773123)
    assert _encode(**kw) == _encode(**kw)
    env = json.loads(_encode(**kw))
    assert list(env) == ["body", "content-encoding", "content-type", "headers", "properties"]
    assert list(env["headers"])[:3] == ["lang", "task", "id"]
    assert env["properties"] == {
        "correlation_id": "id-1",
        "reply_to": None,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": "celery"},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": "tag-1",
    }


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_protocol_encode_many_is_encode_one_per_call_with_fresh_ids(serializer: str) -> None:
    common = {"task": "tasks.add", "routing_key": "q", "serializer": serializer, "priority": 3, "origin": "me@h",
              "extra_headers": {"x": 1}, "callbacks": [{"task": "t.cb", "args": [], "kwargs": {}}]}  # fmt: skip
    calls = [([1, 2], {}), ((3,), {"y": "é"}), ([], {})]
    encoded = _rqueue.encode_task_messages(calls, **common)  # type: ignore[arg-type]
    assert len({task_id for task_id, _ in encoded}) == 3
    for (args, kwargs), (task_id, payload) in zip(calls, encoded, strict=True):
        assert uuid.UUID(task_id).version == 4
        one = json.loads(_encode(task_id=task_id, args=list(args), kwargs=kwargs, **common))
        got = json.loads(payload)
        assert got["properties"].pop("delivery_tag") != one["properties"].pop("delivery_tag")
        assert got == one
        msg = _rqueue.decode_task_message(payload, accept=["application/json", "application/x-msgpack"])
        assert (msg.id, msg.args, msg.kwargs, msg.priority, msg.headers["x"]) == (task_id, list(args), kwargs, 3, 1)


def test_protocol_encode_many_refuses_bad_calls_by_index() -> None:
    with pytest.raises(TypeError, match=r"calls\[1\] must be an \(args, kwargs\) tuple"):
        _rqueue.encode_task_messages([([], {}), ([],)], task="t", routing_key="q")
    with pytest.raises(TypeError, match="args must be a list or tuple, not int"):
        _rqueue.encode_task_messages([(1, {})], task="t", routing_key="q")  # type: ignore[list-item]
    with pytest.raises(MessageTooLarge):
        _rqueue.encode_task_messages([(["x" * 2000], {})], task="t", routing_key="q", max_size=1000)
    assert _rqueue.encode_task_messages([], task="t", routing_key="q") == []
    with pytest.raises(TypeError, match=r"calls\[0\] must be an \(args, kwargs\) tuple"):
        _rqueue.encode_task_messages(["ab"], task="t", routing_key="q")  # type: ignore[list-item]


def test_protocol_encode_many_reads_pairs_as_callers_write_them() -> None:
    """Tuples or lists; None for no arguments (as ``apply_async(args=None)``)."""
    calls: Any = [((1, 2), {"k": 3}), [[4], None], (None, None)]
    encoded = _rqueue.encode_task_messages(calls, task="t", routing_key="q")
    decoded = [_rqueue.decode_task_message(payload) for _, payload in encoded]
    assert [(m.args, m.kwargs) for m in decoded] == [([1, 2], {"k": 3}), ([4], {}), ([], {})]


# -- task ids --------------------------------------------------------------------------------------


def test_protocol_new_task_id_is_uuid4_text() -> None:
    ids = [_rqueue.new_task_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200] + ids[-10:]:
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 4 and u.variant == uuid.RFC_4122
    tags = {json.loads(_encode())["properties"]["delivery_tag"] for _ in range(200)}
    assert len(tags) == 200 and all(uuid.UUID(t).version == 4 for t in tags)


def test_protocol_new_task_id_distinct_after_fork() -> None:
    import os

    _rqueue.new_task_id()  # the parent holds unused random bytes when it forks
    children = []
    for _ in range(3):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: ids, and a grandchild's ids, back through the pipe
            try:
                os.close(read_fd)
                ids = [_rqueue.new_task_id() for _ in range(100)]
                tags = [json.loads(_encode())["properties"]["delivery_tag"] for _ in range(10)]
                r2, w2 = os.pipe()
                grandchild = os.fork()
                if grandchild == 0:
                    os.close(r2)
                    os.write(w2, "\n".join(_rqueue.new_task_id() for _ in range(100)).encode())
                    os._exit(0)
                os.close(w2)
                with os.fdopen(r2) as fh:
                    grand_ids = fh.read().split("\n")
                os.waitpid(grandchild, 0)
                os.write(write_fd, "\n".join(ids + tags + grand_ids).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        children.append((pid, read_fd))
    parent = [_rqueue.new_task_id() for _ in range(100)]
    seen = set(parent)
    total = len(parent)
    for pid, read_fd in children:
        with os.fdopen(read_fd) as fh:
            got = fh.read().split("\n")
        os.waitpid(pid, 0)
        assert len(got) == 210
        seen.update(got)
        total += len(got)
    assert len(seen) == total


# -- canvas fields: the embed, group_index and shadow ------------------------------------------------

SIG = {"task": "tasks.mul", "args": [2], "kwargs": {}, "options": {}, "subtask_type": None, "immutable": False}


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_protocol_embed_and_canvas_headers_round_trip(serializer: str) -> None:
    chord = {**SIG, "task": "tasks.xsum", "chord_size": 3}
    data = _encode(
        serializer=serializer,
        callbacks=[SIG],
        errbacks=[{**SIG, "task": "tasks.on_error"}],
        chain=[SIG, {**SIG, "args": [3]}],
        chord=chord,
        group_id="g-1",
        group_index=2,
        shadow="add(2, 3)",
    )
    msg = _rqueue.decode_task_message(data, accept=[serializer])
    assert msg.embed == {"callbacks": [SIG], "errbacks": [{**SIG, "task": "tasks.on_error"}],
                         "chain": [SIG, {**SIG, "args": [3]}], "chord": chord}  # fmt: skip
    assert (msg.group_id, msg.group_index, msg.shadow) == ("g-1", 2, "add(2, 3)")
    assert (msg.headers["group_index"], msg.headers["shadow"]) == (2, "add(2, 3)")


def test_protocol_embed_parsed_by_kombu_as_celery_sends_it() -> None:
    pytest.importorskip("celery", reason="celery not installed")
    from kombu.serialization import loads as kombu_loads

    raw = json.loads(_encode(callbacks=[SIG], chain=None))
    _args, _kwargs, embed = kombu_loads(
        base64.b64decode(raw["body"]), raw["content-type"], raw["content-encoding"], accept=["application/json"]
    )
    assert embed == {"callbacks": [SIG], "errbacks": None, "chain": None, "chord": None}


def test_protocol_default_embed_is_byte_identical() -> None:
    kw = dict(task_id="id-1", delivery_tag="tag-1", args=[1, "two"], kwargs={"x": [3]})
    plain = _encode(**kw)
    assert plain == _encode(**kw, callbacks=None, errbacks=None, chain=None, chord=None)
    body = base64.b64decode(json.loads(plain)["body"])
    assert body == b'[[1,"two"],{"x":[3]},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
    env = json.loads(plain)
    assert (env["headers"]["group_index"], env["headers"]["shadow"]) == (None, None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("callbacks", {"task": "x"}, "callbacks must be a list of signature dicts or None, not dict"),
        ("chain", "tasks.add", "chain must be a list of signature dicts or None, not str"),
        ("chord", [SIG], "chord must be a signature dict or None, not list"),
        ("errbacks", [object()], "errbacks"),
    ],
)
def test_protocol_bad_embed_is_a_clear_error(field: str, value: object, message: str) -> None:
    from rqueue.exceptions import SerializationError

    with pytest.raises((TypeError, SerializationError), match=message):
        _encode(**{field: value})
