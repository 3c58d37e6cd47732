"""What every app module of the comparison shares: its environment and the commands next to Python."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Where messages go: the Redis server (the peer comparison) or RabbitMQ (``bench_rabbitmq.py``);
#: results always go to Redis.
BROKER_URL = os.environ.get("BENCH_BROKER_URL") or REDIS_URL
AMQP = BROKER_URL.startswith("amqp")
#: Where results go: Redis, or ``rpc://`` (back to the client over RabbitMQ) in ``bench_rabbitmq.py``.
RESULT_URL = os.environ.get("BENCH_RESULT_URL") or REDIS_URL
RESULTS = os.environ.get("BENCH_RESULTS", "0") == "1"
CONFIG = os.environ.get("BENCH_CONFIG", "fast")
#: Messages per batch publish when filling a queue.
CHUNK = 1_000
#: Bytes of the one string argument each task gets in the payload drains (0: no arguments).
PAYLOAD_BYTES = int(os.environ.get("BENCH_PAYLOAD_BYTES") or 0)
#: The positional arguments of every task sent: none, or one string of ``PAYLOAD_BYTES``.
ARGS: tuple[str, ...] = ("x" * PAYLOAD_BYTES,) if PAYLOAD_BYTES else ()
#: Where the peers without a result store (the raw floor, fluxqueue) answer a round trip: the task
#: LPUSHes to ``REPLY_PREFIX + <id>`` and the caller BLPOPs it, the fastest reply Redis offers.
REPLY_PREFIX = "bench-reply:"


def script(name: str) -> str:
    """A console script installed beside this interpreter (the bench virtualenv's)."""
    return str(Path(sys.executable).with_name(name))


def count_keys(client: Any, pattern: str) -> int:
    """Keys matching ``pattern`` (SCAN, never KEYS)."""
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def fill_by_map(task: Any, n: int) -> list[str]:
    """Queue ``n`` argument-less calls of a taskito-style ``task`` (``task.map``) in chunks; their ids."""
    ids: list[str] = []
    while n > 0:
        k = min(n, CHUNK)
        ids.extend(j.id for j in task.map([()] * k))
        n -= k
    return ids


def call_and_poll(task: Any, timeout_s: float) -> None:
    """A taskito-style round trip; in the fast configuration the result is polled every 0.5-5 ms
    instead of the library's 50-500 ms."""
    job = task.delay()
    if CONFIG == "fast":
        job.result(timeout=timeout_s, poll_interval=0.0005, max_poll_interval=0.005)
    else:
        job.result(timeout=timeout_s)
