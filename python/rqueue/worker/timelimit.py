"""Time limits: which limits apply to a run of a task, and raising exceptions inside a running task.

Where each limit is enforced:

- **prefork**: the supervisor watches every child's shared :class:`~rqueue.worker.pool.RunningSlot`.
  Past the soft limit it sends the child ``SIGUSR1``, whose handler raises
  :class:`~rqueue.exceptions.SoftTimeLimitExceeded` in the task (interrupting a sleep or a blocking
  call). Past the hard limit it SIGKILLs the child, stores FAILURE(``TimeLimitExceeded``), acks
  the message and starts a new child.
- **solo**: a watchdog thread signals the main thread (``SIGUSR1``) past the soft limit: the same
  as a prefork child.
- **threads**: a watchdog thread raises ``SoftTimeLimitExceeded`` asynchronously in the executor
  thread (``PyThreadState_SetAsyncExc``). It takes effect when that thread next runs Python code:
  a task blocked in one long C call (``time.sleep(60)``, a socket read) sees it when the call returns.
- The hard limit is not enforced by ``solo`` and ``threads`` (a thread cannot be stopped safely);
  the worker says so at start for tasks that set one.

An exception is raised only while the task's own function runs (:class:`TaskGuard`), never in the
worker's code around it, and only in the run it was meant for.
"""

from __future__ import annotations

import ctypes
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rqueue.config import time_limit_value
from rqueue.exceptions import SoftTimeLimitExceeded

if TYPE_CHECKING:
    from rqueue.app import App

logger = logging.getLogger("rqueue.worker")

#: Raises SoftTimeLimitExceeded in the running task (prefork children and the solo pool), as in Celery.
SOFT_LIMIT_SIGNAL = signal.SIGUSR1
#: Raises TaskTerminated in the running task of a prefork child (``PreforkPool.terminate``).
TERMINATE_SIGNAL = signal.SIGUSR2
#: How often limits are checked (by the prefork supervisor and the in-process watchdog).
CHECK_INTERVAL_S = 0.05

Limits = tuple[float | None, float | None]


def _message_value(value: float | None) -> float | None:
    """A limit read from a message: 0, negative or non-finite means none (Celery treats 0 so)."""
    return value if value is not None and math.isfinite(value) and value > 0 else None


class TimeLimits:
    """The effective ``(soft, hard)`` limits of a run of a task, in seconds (None = no limit).

    Each limit is, first found wins: the message's (a per-call ``apply_async(time_limit=...)``, or
    a Celery producer's ``timelimit`` header), an operator's override for the task name
    (:meth:`set`), the task's option (decorator, ``task_annotations``), the global setting
    (``task_time_limit`` / ``task_soft_time_limit``).
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self._overrides: dict[str, Limits] = {}
        self._base: dict[str, Limits] = {}  # per task name, for one version of the settings
        self._version = -1
        #: Bumped by each override (the executor's fast-lane plan is made again).
        self.version = 0

    def set(self, name: str, soft: float | None, hard: float | None) -> None:
        """Override both limits of task ``name`` (None = no limit) for messages that carry none."""
        self._overrides[name] = (time_limit_value(soft, "soft time limit"), time_limit_value(hard, "hard time limit"))
        self._base = {}
        self.version += 1

    def for_task(self, name: str, soft: float | None, hard: float | None) -> Limits:
        """The limits of a run of ``name`` whose message carries ``soft`` and ``hard``."""
        if soft is not None:
            soft = _message_value(soft)
        if hard is not None:
            hard = _message_value(hard)
        if soft is not None and hard is not None:
            return soft, hard
        if self._version != self.app.conf.version:
            self._base, self._version = {}, self.app.conf.version
        base = self._base.get(name)
        if base is None:
            base = self._base[name] = self._base_limits(name)
        return (base[0] if soft is None else soft, base[1] if hard is None else hard)

    def _base_limits(self, name: str) -> Limits:
        override = self._overrides.get(name)
        if override is not None:
            return override
        task = self.app.tasks.get(name)
        if task is not None:
            return task.option("soft_time_limit"), task.option("time_limit")
        conf = self.app.conf
        return conf.task_soft_time_limit, conf.task_time_limit


# PyThreadState_SetAsyncExc(thread id, exception class), and the same with NULL to clear a pending one.
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class TaskGuard:
    """The window in which one executor thread runs a task's function.

    ``enter()`` and ``leave()`` bracket the call; the watchdog (another thread) and signal handlers
    (this process's main thread) raise exceptions in the task only while it is inside, and only in
    the run they were aimed at. The executor enters inside its own ``try``, so an exception that
    arrives just as the function returns still ends up as the task's outcome.
    """

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self.run = 0
        self.inside = False
        self.task_id = ""
        self.name = ""
        self.started = 0.0  # time.monotonic() at enter
        self.soft: float | None = None
        #: The run for which a soft limit was requested, and the limit (watchdog → signal handler).
        self.requested: tuple[int, float] = (0, 0.0)
        self._async_pending = False
        #: Set while the task runs a coroutine on this thread's event loop: an exception for the
        #: task goes through it (onto the loop) instead of being raised asynchronously, which would
        #: wait for the loop's sleep in C to end (``rqueue.worker.coroutine.ThreadLoop``).
        self.deliver: Callable[[type[BaseException]], None] | None = None

    def enter(self, task_id: str, name: str, soft: float | None) -> None:
        with self._lock:
            self.run += 1
            self.task_id, self.name, self.soft = task_id, name, soft
            self.started = time.monotonic()
            self.inside = True

    def leave(self) -> None:
        with self._lock:
            self.inside = False
            if self._async_pending:  # requested but not raised yet: it must not hit the worker's code
                _clear_async_exc(self.thread_id, None)
                self._async_pending = False

    def overdue(self, now: float) -> tuple[int, float] | None:
        """``(run, soft limit)`` when the running task is past its soft limit and was not told yet."""
        with self._lock:
            soft = self.soft
            if not self.inside or soft is None or now - self.started < soft or self.requested[0] == self.run:
                return None
            self.requested = (self.run, soft)
            return self.requested

    def raise_in_thread(self, run: int, exc_type: type[BaseException]) -> bool:
        """From another thread: raise ``exc_type`` in this guard's thread if run ``run`` is inside."""
        with self._lock:
            if not (self.inside and self.run == run):
                return False
            deliver = self.deliver
            if deliver is not None:
                deliver(exc_type)
                return True
            self._async_pending = _set_async_exc(self.thread_id, exc_type) == 1
            return self._async_pending


class Watchdog:
    """Raises SoftTimeLimitExceeded in tasks of this process past their soft limit (solo, threads).

    Started on the first task that has a soft limit; the main thread is signalled, other threads
    get an asynchronous exception.
    """

    def __init__(self) -> None:
        self.guards: list[TaskGuard] = []
        self._started = False
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident

    def add(self, guard: TaskGuard) -> None:
        with self._lock:
            self.guards.append(guard)

    def ensure_started(self) -> None:
        if self._started:
            return
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._watch, name="rqueue-time-limits", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(CHECK_INTERVAL_S)
            now = time.monotonic()
            for guard in list(self.guards):
                due = guard.overdue(now)
                if due is None:
                    continue
                run, soft = due
                logger.warning("Soft time limit (%gs) exceeded for %s[%s]", soft, guard.name, guard.task_id)
                if guard.thread_id == self._main:
                    signal.pthread_kill(guard.thread_id, SOFT_LIMIT_SIGNAL)
                else:
                    guard.raise_in_thread(run, SoftTimeLimitExceeded)


def install_soft_limit_handler(target: Callable[[], float | None]) -> None:
    """Make ``SIGUSR1`` raise SoftTimeLimitExceeded in this process's main thread when ``target()``
    says the running task is the one the limit was meant for (it returns the limit, else None)."""

    def handler(signum: int, frame: object) -> None:
        limit = target()
        if limit is not None:
            raise SoftTimeLimitExceeded(limit)

    signal.signal(SOFT_LIMIT_SIGNAL, handler)


def main_guard_target(guard_of_main: Callable[[], TaskGuard | None]) -> Callable[[], float | None]:
    """``target`` for :func:`install_soft_limit_handler` in the solo pool: the watchdog's request."""

    def target() -> float | None:
        guard = guard_of_main()
        if guard is None:
            return None
        run, limit = guard.requested
        return limit if guard.inside and guard.run == run else None

    return target
