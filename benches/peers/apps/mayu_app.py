"""mayu (a Rust core on Redis streams, built for free-threaded Python), ``mayu worker``.

mayu needs Python >= 3.13, so it runs from a virtualenv of its own (the Makefile's MAYU_PYTHON,
``.venv-bench-mayu``). Its thread mode runs tasks on parallel threads only on a free-threaded build
(3.13t/3.14t); on a GIL build its CLI picks process mode, one task per process, which is what the
default configuration measures. No batch enqueue: ``fill`` sends one by one.
"""

from __future__ import annotations

import sys
from typing import Any

import redis
from mayu import App  # type: ignore[import-not-found]

from peers.apps.common import ARGS, CONFIG, REDIS_URL, RESULTS, count_keys
from rqueue.bench.counter import count

LIBRARY = "mayu"
CONFIGS = {
    "fast": "--mode thread --processes 1 --threads 4 --prefetch-multiplier 64 (one process; on a GIL build the "
    "threads take turns)",
    "default": "defaults: on a GIL build process mode, one process per CPU running one task at a time, "
    "prefetch multiplier 2",
}
#: Seconds results are kept when stored (mayu stores none without a TTL).
RESULT_TTL_S = 3600

app = App(broker=REDIS_URL, result_ttl=RESULT_TTL_S if RESULTS else None)


@app.task(name="bench.noop", max_retries=0)
def noop(*_payload: str) -> None:
    count()


def worker_argv(config: str) -> list[str]:
    argv = [sys.executable, "-m", "mayu", "worker", "peers.apps.mayu_app:app", "--log-level", "WARNING"]
    if config == "fast":
        argv += ["--mode", "thread", "--processes", "1", "--threads", "4", "--prefetch-multiplier", "64"]
    return argv


def send_one() -> Any:
    return noop.send(*ARGS)


def fill(n: int) -> list[str]:
    ids = [noop.send(*ARGS).id for _ in range(n)]
    return ids if RESULTS else []


def call(timeout_s: float) -> None:
    noop.send(*ARGS).result(timeout=timeout_s)


def stored() -> int:
    return count_keys(redis.Redis.from_url(REDIS_URL), "mayu:result:*")


assert CONFIG in CONFIGS
