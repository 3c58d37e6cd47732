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
import time
from collections.abc import Callable
from dataclasses import dataclass
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


#: How often a drain's counters are read.
POLL_S = 0.002


@dataclass(frozen=True)
class DrainTiming:
    """When a drain of ``n`` tasks began (workers started), first showed a task run, and ended.

    Tasks that ran before the first poll saw any are not in the timed window; when all ran between
    two polls, the window is counted from the workers' start instead.
    """

    n: int
    started: float
    first: float
    done_at_first: int
    end: float

    @property
    def measured(self) -> int:
        return self.n - self.done_at_first or self.n

    @property
    def seconds(self) -> float:
        return self.end - (self.first if self.n - self.done_at_first else self.started)


class DrainTimeout(Exception):
    """Not every task ran within the time allowed; ``done`` did."""

    def __init__(self, done: int) -> None:
        super().__init__(done)
        self.done = done


def watch_drain(
    counters: Path,
    n: int,
    timeout_s: float,
    check_alive: Callable[[], None],
    on_first: Callable[[], None],
    on_poll: Callable[[int], None] | None = None,
) -> DrainTiming:
    """Poll ``counters`` until ``n`` tasks ran (workers just started); ``on_first`` runs when the
    first task shows. DrainTimeout after ``timeout_s``; ``check_alive`` raises if a worker died."""
    started = time.perf_counter()
    first: float | None = None
    done_at_first = 0
    while True:
        done = read_counts(counters)
        now = time.perf_counter()
        if first is None and done:
            first, done_at_first = now, done
            on_first()
        if on_poll is not None:
            on_poll(done)
        if done >= n:
            assert first is not None
            return DrainTiming(n, started, first, done_at_first, time.perf_counter())
        if now - started > timeout_s:
            raise DrainTimeout(done)
        check_alive()
        time.sleep(POLL_S)
