"""RQ: a ``Queue`` on Redis, ``rq worker``. Results are kept unless ``result_ttl=0``."""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq import Queue  # type: ignore[import-untyped]

from peers.apps.common import CHUNK, CONFIG, REDIS_URL, RESULTS, count_keys, script
from rqueue.bench.counter import count

LIBRARY = "rq"
CONFIGS = {
    "fast": "--worker-class rq.worker.SimpleWorker (runs jobs in the worker process, no fork per job)",
    "default": "defaults: Worker, which forks a work horse process per job",
}

connection = Redis.from_url(REDIS_URL)
queue = Queue("default", connection=connection)
#: rq keeps results for 500 s by default; 0 discards them.
RESULT_TTL = 500 if RESULTS else 0


def noop() -> None:
    count()


def worker_argv(config: str) -> list[str]:
    argv = [script("rq"), "worker", "--url", REDIS_URL, "--quiet", "--path", "."]
    if config == "fast":
        argv += ["--worker-class", "rq.worker.SimpleWorker"]
    return [*argv, "default"]


def send_one() -> Any:
    return queue.enqueue(noop, result_ttl=RESULT_TTL)


def fill(n: int) -> list[str]:
    while n > 0:
        k = min(n, CHUNK)
        queue.enqueue_many([Queue.prepare_data(noop, result_ttl=RESULT_TTL) for _ in range(k)])
        n -= k
    return []


def call(timeout_s: float) -> None:
    job = queue.enqueue(noop, result_ttl=500)
    if job.latest_result(timeout=max(1, int(timeout_s))) is None:
        raise TimeoutError(f"rq job {job.id}: no result within {timeout_s} s")


def stored() -> int:
    return count_keys(connection, "rq:results:*")


assert CONFIG in CONFIGS
