"""The application ``rqueue bench`` runs its workers with: ``rqueue -A rqueue.bench.tasks worker ...``.

The bench passes the settings to its workers in the environment: the broker and backend URLs in
``RQUEUE_BROKER_URL`` and ``RQUEUE_RESULT_BACKEND`` (read by every App), the run's own queue in
``RQUEUE_BENCH_QUEUE``, its Redis key prefix in ``RQUEUE_BENCH_KEYPREFIX``, and a directory in
``RQUEUE_BENCH_COUNTERS`` where each worker process counts the tasks it ran (one 8-byte counter in
a shared-memory file per process): the bench reads the counts to know when a drain is done, on any
broker, without a result per task. Imported without these variables, nothing is counted.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rqueue.app import App
from rqueue.task import Task

QUEUE_ENV = "RQUEUE_BENCH_QUEUE"
KEYPREFIX_ENV = "RQUEUE_BENCH_KEYPREFIX"
COUNTERS_ENV = "RQUEUE_BENCH_COUNTERS"
DEFAULT_QUEUE = "rqueue-bench"
NOOP = "rqueue.bench.noop"
PAYLOAD = "rqueue.bench.payload"
#: Results of bench tasks expire after an hour even if the bench could not delete them.
RESULT_EXPIRES_S = 3600
COUNTER_SUFFIX = ".count"


def bench_settings(queue: str, keyprefix: str = "") -> dict[str, Any]:
    """The settings of a bench app: its own queue, key prefix and a short result expiry."""
    settings: dict[str, Any] = {"task_default_queue": queue, "result_expires": RESULT_EXPIRES_S}
    if keyprefix:
        settings["broker_transport_options"] = {"global_keyprefix": keyprefix}
    return settings


def make_app(settings: Mapping[str, Any], **urls: Any) -> tuple[App, Task[[], None], Task[[str], int]]:
    """A bench app with its two tasks: ``noop()`` and ``payload(data)`` (returns ``len(data)``)."""
    app = App("rqueue.bench.tasks", **urls, **settings)

    @app.task(name=NOOP)
    def noop() -> None:
        _count()

    @app.task(name=PAYLOAD)
    def payload(data: str) -> int:
        _count()
        return len(data)

    return app, noop, payload


class _Counter:
    """This process's count of tasks run, in a file of the counters directory (or nowhere)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # the threads pool runs tasks in several threads
        self.slot: memoryview | None = None
        self.opened = False

    def reset(self) -> None:
        """After a fork: the child counts in its own file."""
        self.slot = None
        self.opened = False
        self.lock = threading.Lock()

    def add(self) -> None:
        if not self.opened:
            self.slot = _open_slot(os.environ.get(COUNTERS_ENV))
            self.opened = True
        if self.slot is not None:
            with self.lock:
                self.slot[0] += 1


def _open_slot(directory: str | None) -> memoryview | None:
    if not directory:
        return None
    fd = os.open(os.path.join(directory, f"{os.getpid()}{COUNTER_SUFFIX}"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 8)
        mem = mmap.mmap(fd, 8)
    finally:
        os.close(fd)
    return memoryview(mem).cast("Q")


_counter = _Counter()
os.register_at_fork(after_in_child=_counter.reset)


def _count() -> None:
    _counter.add()


def read_counts(directory: Path) -> int:
    """Tasks run so far by every process that counts in ``directory``."""
    total = 0
    for path in directory.glob(f"*{COUNTER_SUFFIX}"):
        data = path.read_bytes()
        if len(data) == 8:
            total += int.from_bytes(data, sys.byteorder)
    return total


app, noop, payload = make_app(
    bench_settings(os.environ.get(QUEUE_ENV) or DEFAULT_QUEUE, os.environ.get(KEYPREFIX_ENV, ""))
)
