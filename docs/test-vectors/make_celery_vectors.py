"""Regenerate the Celery-produced vectors of ``envelopes.json``.

Run with the real ``celery`` package installed (``pip install celery``)::

    python docs/test-vectors/make_celery_vectors.py

Each message is sent with Celery's own producer through kombu's in-memory transport, read back
from the channel, and serialized with ``kombu.utils.json.dumps`` exactly as kombu's Redis
transport does before its ``LPUSH``. The expected fields are computed here with Python's own
parsers (``datetime.fromisoformat``, kombu's deserializer), independently of rqueue.

Vectors whose name does not start with ``celery-`` are written by hand and kept as they are.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import pathlib
import uuid

import celery
from kombu.serialization import loads as kombu_loads
from kombu.utils.json import dumps as kombu_dumps

HERE = pathlib.Path(__file__).parent
OUT = HERE / "envelopes.json"


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (value - epoch) // dt.timedelta(milliseconds=1)


def _to_jsonable(obj: object) -> object:
    """The expected decoded value, written in the vectors' own JSON (markers kept as kombu writes them)."""
    return json.loads(kombu_dumps(obj))


def _send(app: celery.Celery, name: str, **options: object) -> tuple[str, dict]:
    with app.producer_or_acquire() as producer:
        app.send_task(name, producer=producer, **options)
        channel = producer.channel
        queue = options.get("queue", "celery")
        message = channel._get(queue)  # the dict kombu's virtual transport would hand to _put
    envelope = kombu_dumps(message)
    return envelope, message


def _expect(message: dict) -> dict:
    headers = message["headers"]
    props = message["properties"]
    body = base64.b64decode(message["body"])
    args, kwargs, embed = kombu_loads(body, message["content-type"], message["content-encoding"], accept=[message["content-type"]])
    hard, soft = headers["timelimit"]
    return {
        "task": headers["task"],
        "id": headers["id"],
        "args": _to_jsonable(list(args)),
        "kwargs": _to_jsonable(kwargs),
        "embed": _to_jsonable(embed),
        "content_type": message["content-type"],
        "content_encoding": message["content-encoding"],
        "eta_ms": _ms(headers["eta"]),
        "expires_ms": _ms(headers["expires"]),
        "retries": headers["retries"],
        "priority": props.get("priority") or 0,
        "time_limit": hard,
        "soft_time_limit": soft,
        "root_id": headers["root_id"],
        "parent_id": headers["parent_id"],
        "group_id": headers["group"],
        "origin": headers["origin"],
        "ignore_result": bool(headers["ignore_result"]),
        "argsrepr": headers["argsrepr"],
        "kwargsrepr": headers["kwargsrepr"],
        "reply_to": props.get("reply_to"),
        "correlation_id": props.get("correlation_id"),
        "delivery_tag": props.get("delivery_tag"),
        "exchange": props["delivery_info"]["exchange"],
        "routing_key": props["delivery_info"]["routing_key"],
        "redelivered": False,
    }


def celery_vectors() -> list[dict]:
    app = celery.Celery("vectors", broker="memory://")
    app.conf.task_serializer = "json"
    out = []
    cases = [
        ("celery-basic", "tasks.add", {"args": (2, 3), "task_id": "0b6a1c52-6f2e-4d7a-9a51-2f3c4d5e6f70"}),
        (
            "celery-countdown",
            "tasks.later",
            {"args": ("x",), "countdown": 30, "task_id": "1c7b2d63-7a3f-4e8b-8b62-3a4d5e6f7081"},
        ),
        (
            "celery-eta-expires-limits",
            "tasks.slow",
            {
                "args": (),
                "eta": dt.datetime(2026, 11, 24, 5, 39, 33, 123456, tzinfo=dt.timezone.utc),
                "expires": dt.datetime(2026, 11, 25, 0, 0, 0, tzinfo=dt.timezone.utc),
                "time_limit": 60,
                "soft_time_limit": 50.5,
                "task_id": "2d8c3e74-8b4a-4f9c-9c73-4b5e6f708192",
            },
        ),
        (
            "celery-priority",
            "tasks.urgent",
            {"args": [1], "priority": 7, "queue": "high", "task_id": "3e9d4f85-9c5b-4a0d-8d84-5c6f708192a3"},
        ),
        (
            "celery-kwargs-native-types",
            "tasks.typed",
            {
                "args": ["s", 1.5, None, True, [1, {"n": 2}]],
                "kwargs": {
                    "when": dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc),
                    "day": dt.date(2026, 1, 2),
                    "at": dt.time(12, 30),
                    "price": decimal.Decimal("19.99"),
                    "ref": uuid.UUID("6f1c3a52-2b3e-4a0f-9d2e-3c1a5b7e9f00"),
                    "raw": b"bytes",
                },
                "retries": 2,
                "task_id": "4fae5096-ad6c-4b1e-9e95-6d708192a3b4",
            },
        ),
        (
            "celery-msgpack",
            "tasks.mp",
            {"args": [1, "two"], "kwargs": {"k": b"\x00\xff"}, "serializer": "msgpack",
             "task_id": "5abf61a7-be7d-4c2f-8fa6-7e8192a3b4c5"},
        ),
    ]
    for name, task, options in cases:
        envelope, message = _send(app, task, **options)
        vector = {"name": name, "envelope": envelope, "expect": _expect(message)}
        if message["content-type"] != "application/json":
            vector["accept"] = [message["content-type"]]
        out.append(vector)
    return out


def main() -> None:
    existing = json.loads(OUT.read_text()) if OUT.exists() else []
    manual = [v for v in existing if not v["name"].startswith("celery-")]
    vectors = celery_vectors() + manual
    OUT.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT} (celery {celery.__version__})")


if __name__ == "__main__":
    main()
