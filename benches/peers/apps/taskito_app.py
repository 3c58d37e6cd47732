"""taskito (a Rust-core task queue) on its Redis storage backend, ``taskito worker``.

taskito keeps every job's record and result in its storage; there is no "results off" switch, so
its drain with and without results are the same workload.
"""

from __future__ import annotations

from typing import Any

from taskito import Queue  # type: ignore[import-untyped]

from peers.apps.common import CONFIG, REDIS_URL, call_and_poll, fill_by_map, script
from rqueue.bench.counter import count

LIBRARY = "taskito"
CONFIGS = {
    "fast": "Queue(workers=1, scheduler_batch_size=64, scheduler_poll_interval_ms=1); results polled every 0.5-5 ms",
    "default": "defaults: one worker thread per CPU, scheduler polls every 50 ms and claims 1 job per round",
}

if CONFIG == "fast":
    queue = Queue(backend="redis", db_url=REDIS_URL, workers=1, scheduler_batch_size=64, scheduler_poll_interval_ms=1)
else:
    queue = Queue(backend="redis", db_url=REDIS_URL)


@queue.task(name="bench.noop")
def noop() -> None:
    count()


def worker_argv(config: str) -> list[str]:
    return [script("taskito"), "worker", "--app", "peers.apps.taskito_app:queue"]


def send_one() -> Any:
    return noop.delay()


def fill(n: int) -> list[str]:
    return fill_by_map(noop, n)


def call(timeout_s: float) -> None:
    call_and_poll(noop, timeout_s)


def stored() -> int:
    return -1  # results live in taskito's own records; the drain is verified by the task counts


assert CONFIG in CONFIGS
