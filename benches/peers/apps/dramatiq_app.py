"""Dramatiq with its Redis broker and the Results middleware on Redis, ``dramatiq MODULE``."""

from __future__ import annotations

import sys
from typing import Any

import dramatiq  # type: ignore[import-untyped]
from dramatiq.brokers.redis import RedisBroker  # type: ignore[import-untyped]
from dramatiq.results import Results  # type: ignore[import-untyped]
from dramatiq.results.backends import RedisBackend  # type: ignore[import-untyped]

from peers.apps.common import CONFIG, REDIS_URL, RESULTS, count_keys
from rqueue.bench.counter import count

LIBRARY = "dramatiq"
CONFIGS = {
    "fast": "--processes 1 (8 threads: fewer threads prefetch fewer messages and drain slower)",
    "default": "defaults: one process per CPU, 8 threads each",
}

# Readable result keys (dramatiq-results:<queue>:<actor>:<id>) so they can be counted.
backend = RedisBackend(url=REDIS_URL, use_namespace_prefix_keys=True)
broker = RedisBroker(url=REDIS_URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", store_results=RESULTS, max_retries=0)
def noop() -> None:
    count()


def worker_argv(config: str) -> list[str]:
    argv = [sys.executable, "-m", "dramatiq", "peers.apps.dramatiq_app"]
    if config == "fast":
        argv += ["--processes", "1"]
    return argv


def send_one() -> Any:
    return noop.send()


def fill(n: int) -> list[str]:
    # No batch publish in Dramatiq: send() in a loop.
    for _ in range(n):
        noop.send()
    return []


def call(timeout_s: float) -> None:
    noop.send().get_result(block=True, timeout=int(timeout_s * 1000))


def stored() -> int:
    return count_keys(broker.client, "dramatiq-results:*")


assert CONFIG in CONFIGS
