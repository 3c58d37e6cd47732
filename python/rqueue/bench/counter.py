"""Counts of tasks run, per process, that another process can read while they run.

A task calls ``count()``. When ``RQUEUE_BENCH_COUNTERS`` names a directory, each process keeps one
8-byte counter there, in a file mapped into memory (``<pid>.count``); ``read_counts(dir)`` adds
them up. So a bench knows when a drain is done on any broker and with any task queue library,
without a result per task, for about the cost of one locked integer increment per task. Without
the variable, ``count()`` does nothing.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from pathlib import Path

COUNTERS_ENV = "RQUEUE_BENCH_COUNTERS"
COUNTER_SUFFIX = ".count"


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


def count() -> None:
    """One more task ran in this process."""
    _counter.add()


def read_counts(directory: Path) -> int:
    """Tasks run so far by every process that counts in ``directory``."""
    total = 0
    for path in directory.glob(f"*{COUNTER_SUFFIX}"):
        data = path.read_bytes()
        if len(data) == 8:
            total += int.from_bytes(data, sys.byteorder)
    return total
