"""flexiq (a Rust-core task queue with taskito's API) on its Redis storage backend, ``flexiq worker``.

flexiq keeps every job's record and result in its storage; there is no "results off" switch, so
its drain with and without results are the same workload.
"""

from __future__ import annotations

from typing import Any

from flexiq import Queue  # type: ignore[import-untyped]

from peers.apps.common import CHUNK, CONFIG, REDIS_URL, script
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
    ids: list[str] = []
    while n > 0:
        k = min(n, CHUNK)
        ids.extend(j.id for j in noop.map([()] * k))
        n -= k
    return ids


def call(timeout_s: float) -> None:
    job = noop.delay()
    if CONFIG == "fast":  # poll for the result every 0.5-5 ms instead of 50-500 ms
        job.result(timeout=timeout_s, poll_interval=0.0005, max_poll_interval=0.005)
    else:
        job.result(timeout=timeout_s)


def stored() -> int:
    return -1  # results live in flexiq's own records; the drain is verified by the task counts


assert CONFIG in CONFIGS
