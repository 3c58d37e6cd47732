"""Huey on PostgreSQL: ``SqlHuey`` (``huey.contrib.sql_huey``, peewee + psycopg2), ``huey_consumer``.

Used by ``benches/bench_postgres.py``, which passes the database URL in ``BENCH_SERVER_URL``. Huey's SQL
storage has no wake-up (no LISTEN/NOTIFY): its consumer polls the table and a waiting caller polls for
its result, so the fast configuration polls every millisecond where the defaults start at 100 ms / 50 ms.
"""

from __future__ import annotations

import os
from typing import Any

from huey.contrib.sql_huey import SqlHuey  # type: ignore[import-untyped]

from peers.apps.common import RESULTS, script
from rqueue.bench.counter import count

LIBRARY = "huey"
#: The harness passes the URL of the server under test (here a ``postgresql://`` one).
DATABASE_URL = os.environ.get("BENCH_SERVER_URL", "postgresql://127.0.0.1:5432/postgres")
CONFIG = os.environ.get("BENCH_CONFIG", "fast")
CONFIGS = {
    "fast": "-w 2 -k thread --no-periodic -d 0.001 -m 0.001 (polls the table every 1 ms); results polled every 1 ms",
    "default": "defaults: 1 worker thread, polls from 100 ms backing off to 10 s; results polled from 50 ms",
}
#: The fast configuration's poll interval (consumer and result waits), seconds.
FAST_POLL_S = 0.001

# peewee's URL parser takes postgresql:// as it is.
huey = SqlHuey("bench", database=DATABASE_URL, results=RESULTS, store_none=RESULTS)


@huey.task()
def noop() -> None:
    count()


def worker_argv(config: str) -> list[str]:
    argv = [script("huey_consumer"), "peers.apps.huey_pg_app.huey", "--quiet"]
    if config == "fast":
        delay = str(FAST_POLL_S)
        argv += ["-w", "2", "-k", "thread", "--no-periodic", "-d", delay, "-m", delay]
    return argv


def send_one() -> Any:
    return noop()


def fill(n: int) -> list[str]:
    # No batch publish in Huey: one INSERT (and commit) per task.
    for _ in range(n):
        noop()
    return []


def call(timeout_s: float) -> None:
    result = noop()
    if CONFIG == "fast":
        result.get(blocking=True, timeout=timeout_s, backoff=1.0, max_delay=FAST_POLL_S)
    else:
        result.get(blocking=True, timeout=timeout_s)


def stored() -> int:
    return int(huey.storage.kv().count())


def flush() -> None:
    """Empty huey's tables (between measurements)."""
    huey.storage.flush_all()


assert CONFIG in CONFIGS
