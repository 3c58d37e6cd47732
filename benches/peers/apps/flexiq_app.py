"""flexiq (a Rust-core task queue with taskito's API) on its Redis storage backend, ``flexiq worker``.

flexiq keeps every job's record and result in its storage; there is no "results off" switch, so
its drain with and without results are the same workload.
"""

from __future__ import annotations

from typing import Any

from flexiq import Queue  # type: ignore[import-untyped]

from peers.apps.common import CONFIG, REDIS_URL, call_and_poll, fill_by_map, script
from rqueue.bench.counter import count

LIBRARY = "flexiq"
CONFIGS = {
    "fast": "Queue(workers=1, scheduler_batch_size=64, scheduler_poll_interval_ms=1, push_dispatch=False); "
    "results polled every 0.5-5 ms",
    "default": "defaults: one worker thread per CPU, push dispatch (an enqueue wakes the scheduler), 8 jobs claimed "
    "per round, 50 ms polls otherwise; results polled every 50-500 ms (a backlog drains at ~2 tasks/s here)",
}

if CONFIG == "fast":
    # push_dispatch (on by default on Redis) is off: with it, flexiq 2.1.0's scheduler here starts one
    # job per worker thread every 2 s from a backlog (measured: 300 jobs did not finish in 60 s); with
    # 1 ms polls instead the same 300 take 0.4 s.
    queue = Queue(
        backend="redis",
        db_url=REDIS_URL,
        workers=1,
        scheduler_batch_size=64,
        scheduler_poll_interval_ms=1,
        push_dispatch=False,
    )
else:
    queue = Queue(backend="redis", db_url=REDIS_URL)


@queue.task(name="bench.noop")
def noop() -> None:
    count()


def worker_argv(config: str) -> list[str]:
    return [script("flexiq"), "worker", "--app", "peers.apps.flexiq_app:queue"]


def send_one() -> Any:
    return noop.delay()


def fill(n: int) -> list[str]:
    return fill_by_map(noop, n)


def call(timeout_s: float) -> None:
    call_and_poll(noop, timeout_s)


def stored() -> int:
    return -1  # results live in flexiq's own records; the drain is verified by the task counts


assert CONFIG in CONFIGS
