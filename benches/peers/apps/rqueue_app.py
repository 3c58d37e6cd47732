"""rqueue: ``App`` on Redis (or RabbitMQ) with Redis results, ``rqueue -A ... worker``."""

from __future__ import annotations

from typing import Any

import redis

from peers.apps.common import ARGS, BROKER_URL, CHUNK, CONFIG, REDIS_URL, RESULT_URL, RESULTS, count_keys, script
from rqueue import App
from rqueue.bench.counter import count

LIBRARY = "rqueue"
CONFIGS = {
    "fast": "--pool solo --prefetch-multiplier 64 (one process)",
    "default": "defaults: prefork pool, one child per CPU, prefetch multiplier 4",
}

app = App("bench", broker=BROKER_URL, backend=RESULT_URL, task_ignore_result=not RESULTS)


@app.task(name="bench.noop")
def noop(*_payload: str) -> None:
    count()


def worker_argv(config: str) -> list[str]:
    argv = [script("rqueue"), "-A", "peers.apps.rqueue_app", "worker", "--loglevel", "warning"]
    if config == "fast":
        argv += ["--pool", "solo", "--prefetch-multiplier", "64"]
    return argv


def send_one() -> Any:
    return noop.delay()


def fill(n: int) -> list[str]:
    ids: list[str] = []
    while n > 0:
        k = min(n, CHUNK)
        ids.extend(r.id for r in noop.delay_many([ARGS] * k))
        n -= k
    return ids if RESULTS else []


def call(timeout_s: float) -> None:
    noop.delay().get(timeout=timeout_s)


def stored() -> int:
    return count_keys(redis.Redis.from_url(REDIS_URL), "celery-task-meta-*")


assert CONFIG in CONFIGS
