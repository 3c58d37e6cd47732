"""Node-wide task rate limits, and the deliveries set aside while their task waits for a token.

A worker builds one ``RateLimits`` before its pool forks: its table of token buckets lives in
shared memory (``_rqueue.RateLimitTable``), so the supervisor, every prefork child and every thread
take tokens from the same buckets, and ``RateLimits.set`` takes effect in all of them at once.

A delivery whose task has no token yet is not run, acked or returned: it stays leased by the
process that fetched it (its lease is renewed with the others) and waits in that process's
``SetAside`` heap until a token may be there, while other deliveries keep running.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from rqueue import _rqueue
from rqueue.exceptions import ConfigurationError, RateLimitError
from rqueue.rates import check_rate

if TYPE_CHECKING:
    from rqueue.app import App


class RateLimits:
    """The rate limits of one worker node, shared by all its processes and threads.

    Built from each task's ``rate_limit`` (decorator option, ``task_annotations``, then
    ``task_default_rate_limit``); ``worker_disable_rate_limits=True`` turns enforcement off.

    Raises:
        RateLimitError: a task's configured rate limit is not a valid rate.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        #: False when ``worker_disable_rate_limits`` is set: no task waits (``set`` still records).
        self.enabled = not bool(app.conf.worker_disable_rate_limits)
        self._table = _rqueue.RateLimitTable()
        for name, task in sorted(app.tasks.items()):
            rate = check_rate(task.option("rate_limit"), f"task {name}")
            if rate is not None:
                self._set(name, rate)

    def set(self, task_name: str, rate: str | float | None) -> None:
        """Change a task's rate limit, at once, in every process and thread of this worker.

        Args:
            task_name: A task registered with this worker's app.
            rate: ``"10/s"``, ``"10/m"``, ``"10/h"``, a number per second, or None / ``"0"`` / 0 for no limit.

        Raises:
            RateLimitError: an unknown task name or a bad rate (the message says which and why).
        """
        if task_name not in self.app.tasks:
            raise RateLimitError(
                f"unknown task {task_name!r}: not registered with this worker (registered: "
                f"{', '.join(sorted(self.app.tasks)) or 'none'})"
            )
        self._set(task_name, check_rate(rate, f"task {task_name}"))

    def _set(self, task_name: str, rate_per_s: float | None) -> None:
        try:
            self._table.set(task_name, rate_per_s)
        except ConfigurationError as exc:  # a name too long for the table, or a full table
            raise RateLimitError(str(exc)) from None

    def get(self, task_name: str) -> float | None:
        """The task's limit in tasks per second, or None when it has none."""
        return self._table.rate(task_name)

    def limits(self) -> dict[str, float]:
        """Every limited task and its rate in tasks per second."""
        return dict(self._table.limits())

    @property
    def generation(self) -> int:
        """A counter bumped by every change of a limit, in any process of the worker."""
        return self._table.generation

    def acquire(self, task_name: str) -> float:
        """0.0 when the task may start now (its token is taken); else the seconds until it may."""
        if not self.enabled:
            return 0.0
        return self._table.try_acquire(task_name)


class Waiting(NamedTuple):
    """A delivery set aside until ``due`` (``time.monotonic()``), with its decoded message."""

    due: float
    seq: int
    delivery: _rqueue.Delivery
    message: _rqueue.TaskMessage
    #: True while it still holds its prefetch-buffer credit (the set-aside bound was reached).
    holds_credit: bool


class SetAside:
    """One process's rate-limited deliveries, soonest due first; shared by its executor threads.

    Up to ``max_released`` of them give their prefetch credit back, so other messages keep being
    fetched while they wait; past that they keep it, and fetching slows down until some are due.
    When ``rate_limits`` says a limit changed (its generation moved), every waiting delivery is
    due at once, so a raised or lifted limit applies to them without waiting out the old one.
    """

    def __init__(self, max_released: int, rate_limits: RateLimits | None = None) -> None:
        self.max_released = max(0, max_released)
        self.rate_limits = rate_limits
        self._generation = rate_limits.generation if rate_limits is not None else 0
        self._heap: list[Waiting] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._released = 0

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, delivery: _rqueue.Delivery, message: _rqueue.TaskMessage, wait_s: float, holds_credit: bool) -> bool:
        """Set a delivery aside for ``wait_s``; True when the caller must give its credit back now."""
        with self._lock:
            release = holds_credit and self._released < self.max_released
            keeps_credit = holds_credit and not release
            if not keeps_credit:
                self._released += 1
            heapq.heappush(
                self._heap, Waiting(time.monotonic() + wait_s, next(self._seq), delivery, message, keeps_credit)
            )
            return release

    def pop_due(self) -> Waiting | None:
        """The soonest delivery whose time has come, if any."""
        if not self._heap:
            return None
        with self._lock:
            if self.rate_limits is not None and self._generation != (generation := self.rate_limits.generation):
                self._generation = generation
                now = time.monotonic()
                self._heap = [w._replace(due=min(w.due, now)) for w in self._heap]
                heapq.heapify(self._heap)
            if not self._heap or self._heap[0].due > time.monotonic():
                return None
            entry = heapq.heappop(self._heap)
            if not entry.holds_credit:
                self._released -= 1
            return entry

    def next_due_in(self) -> float | None:
        """Seconds until the soonest delivery is due (0 when overdue), or None when there is none."""
        if not self._heap:
            return None
        with self._lock:
            return max(0.0, self._heap[0].due - time.monotonic()) if self._heap else None

    def snapshot(self) -> list[Waiting]:
        """The deliveries set aside now, soonest due first (for inspection; they stay)."""
        with self._lock:
            return sorted(self._heap)

    def drain(self) -> list[Waiting]:
        """Everything still set aside (at shutdown)."""
        with self._lock:
            entries, self._heap = sorted(self._heap), []
            self._released = 0
            return entries
