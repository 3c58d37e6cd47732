"""Encode + decode of a Celery protocol v2 task message: rqueue's Rust core vs kombu/Celery in Python.

Both sides produce and consume the same thing: a task message (headers, properties, body
``[args, kwargs, embed]``) in kombu's Redis JSON envelope with a base64 body.

- rqueue: ``_rqueue.new_task_id()``, ``_rqueue.encode_task_message(...)`` then
  ``_rqueue.decode_task_message(...)`` (what ``App.send_task`` and the worker's executor call).
- kombu/Celery: ``app.amqp.as_task_v2(...)`` builds the message, ``kombu.serialization.dumps``
  serializes the body, the envelope is built as ``Channel.prepare_message`` +
  ``_inplace_augment_message`` do (base64 body, new delivery tag) and dumped with kombu's JSON as
  the Redis ``Channel._put`` does; decoding is kombu's JSON ``loads`` of the envelope, base64 decode
  of the body and ``kombu.serialization.loads`` of the body (what a Celery worker does per message).

Run: ``python benches/bench_protocol.py [--seconds S] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

TARGET_RATIO = 10.0
REPEATS = 5


def _kwargs_1k() -> dict[str, Any]:
    """About 1 KiB of typical kwargs (strings, numbers, a nested dict and a list) once serialized."""
    return {
        "user_id": 123456,
        "email": "someone@example.com",
        "subject": "Your weekly report is ready",
        "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8,
        "tags": ["report", "weekly", "email", "customer", "priority-normal"],
        "options": {"retry": True, "attempts": 3, "ratio": 0.75, "locale": "en_GB", "tz": "Europe/London"},
        "items": [{"sku": f"SKU-{i:05d}", "qty": i, "price": 9.99 + i} for i in range(6)],
    }


CASES: dict[str, tuple[str, list[Any], dict[str, Any]]] = {
    "add(4, 4)": ("tasks.add", [4, 4], {}),
    "~1 KiB kwargs": ("tasks.send_report", [], _kwargs_1k()),
}


# -- rqueue (Rust core) --------------------------------------------------------------------------


def rqueue_roundtrip(name: str, args: list[Any], kwargs: dict[str, Any]) -> Callable[[], Any]:
    from rqueue import _rqueue

    encode = _rqueue.encode_task_message
    decode = _rqueue.decode_task_message
    new_task_id = _rqueue.new_task_id  # the task id source App.send_task uses
    origin = "gen1234@bench-host"
    reply_to = str(uuid.uuid4())

    def once() -> Any:
        task_id = new_task_id()
        data = encode(
            task=name,
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            routing_key="celery",
            exchange="",
            serializer="json",
            origin=origin,
            reply_to=reply_to,
        )
        msg = decode(data)
        return data, msg.args, msg.kwargs, msg.embed

    return once


# -- kombu / Celery (Python) ---------------------------------------------------------------------


def kombu_roundtrip(name: str, args: list[Any], kwargs: dict[str, Any]) -> Callable[[], Any]:
    import celery
    from kombu import serialization
    from kombu.transport.virtual.base import Base64
    from kombu.utils.json import dumps as json_dumps
    from kombu.utils.json import loads as json_loads
    from kombu.utils.uuid import uuid as kombu_uuid

    app = celery.Celery("bench", broker="memory://")
    as_task_v2 = app.amqp.as_task_v2
    codec = Base64()
    origin = "gen1234@bench-host"
    reply_to = str(uuid.uuid4())

    def once() -> Any:
        task_id = str(uuid.uuid4())
        # Celery: the task message (headers, properties, body) as Task.apply_async builds it.
        message = as_task_v2(task_id, name, args, kwargs, origin=origin, reply_to=reply_to)
        headers, properties, body, _sent_event = message
        # kombu Producer.publish: serialize the body.
        content_type, content_encoding, payload = serialization.dumps(body, serializer="json")
        # virtual Channel.prepare_message + _inplace_augment_message (base64 body, delivery tag).
        properties = dict(properties)
        properties.setdefault("delivery_info", {})
        properties.setdefault("priority", 0)
        properties["delivery_mode"] = 2
        envelope = {
            "body": payload,
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": properties,
        }
        envelope["body"] = codec.encode(envelope["body"])
        properties.update(body_encoding="base64", delivery_tag=kombu_uuid())
        properties["delivery_info"].update(exchange="", routing_key="celery")
        # Redis Channel._put: JSON dumps of the envelope.
        data = json_dumps(envelope)

        # Consumer side: Channel._get loads, Message decodes the body, message.decode() loads it.
        got = json_loads(data)
        raw = codec.decode(got["body"])
        decoded_args, decoded_kwargs, embed = serialization.loads(
            raw, got["content-type"], got["content-encoding"], accept={"application/json"}
        )
        return data, decoded_args, decoded_kwargs, embed

    return once


# -- measurement ---------------------------------------------------------------------------------


def _calibrate(fn: Callable[[], Any], budget_s: float) -> int:
    """Loop count so that one repeat takes about ``budget_s``."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        took = time.perf_counter() - start
        if took >= 0.05:
            return max(1, int(n * budget_s / took))
        n *= 4


def measure(fn: Callable[[], Any], seconds: float) -> dict[str, float]:
    """Best and median ops/s over REPEATS repeats of a calibrated loop (timeit style)."""
    per_repeat = seconds / REPEATS
    loops = _calibrate(fn, per_repeat)
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        rates.append(loops / (time.perf_counter() - start))
    rates.sort()
    return {"best_ops_s": rates[-1], "median_ops_s": rates[len(rates) // 2], "loops": loops, "repeats": REPEATS}


def check_equivalent(case: str, rust: Callable[[], Any], py: Callable[[], Any]) -> None:
    """Both sides must carry the same args/kwargs/embed: otherwise the comparison is meaningless."""
    _, ra, rk, re_ = rust()
    _, pa, pk, pe = py()
    if (list(ra), rk, re_) != (list(pa), pk, pe):
        raise SystemExit(f"{case}: decoded messages differ: rust={(ra, rk, re_)!r} kombu={(pa, pk, pe)!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per side per case [default: 2]")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    opts = parser.parse_args(argv)

    import celery
    import kombu

    from rqueue import _rqueue

    print(
        f"bench_protocol: encode+decode of one task message; python {platform.python_version()}, "
        f"rqueue._rqueue {_rqueue.__version__}, celery {celery.__version__}, kombu {kombu.__version__}; "
        f"{opts.seconds:g} s per side, best of {REPEATS}"
    )
    results: dict[str, Any] = {"target_ratio": TARGET_RATIO, "cases": {}}
    all_met = True
    for case, (name, args, kwargs) in CASES.items():
        rust = rqueue_roundtrip(name, args, kwargs)
        py = kombu_roundtrip(name, args, kwargs)
        check_equivalent(case, rust, py)
        rust_size = len(rust()[0])
        py_size = len(py()[0])
        r = measure(rust, opts.seconds)
        p = measure(py, opts.seconds)
        ratio = r["best_ops_s"] / p["best_ops_s"]
        met = ratio >= TARGET_RATIO
        all_met &= met
        print(f"\n  {case}  (envelope: rqueue {rust_size} B, kombu {py_size} B)")
        print(f"    rqueue (Rust)      {r['best_ops_s']:>12,.0f} ops/s  ({1e6 / r['best_ops_s']:7.2f} us/op)")
        print(f"    kombu/Celery (Py)  {p['best_ops_s']:>12,.0f} ops/s  ({1e6 / p['best_ops_s']:7.2f} us/op)")
        print(f"    ratio {ratio:.1f}x  (target >= {TARGET_RATIO:g}x: {'met' if met else 'MISSED'})")
        results["cases"][case] = {
            "rqueue": r,
            "kombu": p,
            "ratio": ratio,
            "target_met": met,
            "envelope_bytes": {"rqueue": rust_size, "kombu": py_size},
        }
    results["all_targets_met"] = all_met
    print(f"\n  target >= {TARGET_RATIO:g}x on every case: {'met' if all_met else 'MISSED'}")
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"  wrote {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
