"""Huey: ``RedisHuey`` (blocking dequeue), ``huey_consumer``."""

from __future__ import annotations

from typing import Any

from huey import RedisHuey  # type: ignore[import-untyped]

from peers.apps.common import CONFIG, REDIS_URL, RESULTS, script
from rqueue.bench.counter import count

LIBRARY = "huey"
CONFIGS = {
    "fast": "-w 1 -k thread --no-periodic; producers wait for results with notify_result=True (BLPOP)",
    "default": "defaults: 1 worker thread, periodic scheduler on; results are polled (50 ms, backing off)",
}

# store_none: huey stores no result for a task that returns None unless told to.
huey = RedisHuey("bench", url=REDIS_URL, results=RESULTS, store_none=RESULTS, notify_result=CONFIG == "fast")


@huey.task()
def noop() -> None:
    count()


def worker_argv(config: str) -> list[str]:
    argv = [script("huey_consumer"), "peers.apps.huey_app.huey", "--quiet"]
    if config == "fast":
        argv += ["-w", "1", "-k", "thread", "--no-periodic"]
    return argv


def send_one() -> Any:
    return noop()


def fill(n: int) -> list[str]:
    # No batch publish in Huey: one enqueue per call.
    for _ in range(n):
        noop()
    return []


def call(timeout_s: float) -> None:
    noop()(blocking=True, timeout=timeout_s)


def stored() -> int:
    return int(huey.storage.conn.hlen(huey.storage.result_key))


assert CONFIG in CONFIGS
