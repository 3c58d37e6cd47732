"""Waiting for results inside a running event loop (``await result.aget()``) without blocking it:
one waiter per backend and event loop serves every ``await`` of that loop.

Backends with an asynchronous client wait natively (Redis: ``rqueue.backends.redis_async``). The
others (SQLite, PostgreSQL, memcached, ``rpc://``) share a ``ThreadedWaiter``: their clients are
blocking calls into the extension, so the waiter runs them in a small thread pool of the backend,
and never more than two at a time per loop however many results are awaited:

- the *pump* reads every awaited result in one round trip (``get_many_meta``), then, when none was
  ready, waits up to ``PUMP_SLICE_S`` in its thread for the backend's "results were stored" signal
  (SQLite's doorbell, PostgreSQL's ``NOTIFY``, the ``rpc://`` reply queue), or, for a backend
  without one (memcached), sleeps in the loop with a growing pause;
- the *fresh reader* reads the results awaited since the pump's last read at once, so a task that
  finished before its result was awaited is not held up by a pump that is waiting.

A result stored after the pump read its mark wakes the pump; one stored before it was awaited is
seen by the fresh read: none is missed (the order is spelled out in ``ThreadedWaiter._pump``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from rqueue import states
from rqueue.exceptions import TimeoutError

#: Longest wait of the pump's thread for a "results were stored" signal before it reads again.
PUMP_SLICE_S = 1.0
#: First and longest pause between two reads of a backend that cannot signal stores.
POLL_FIRST_S = 0.0002
POLL_MAX_S = 0.5
#: Threads of one backend's pool: a pump and a fresh reader per loop, and short calls
#: (``aget_meta``) beside them.
POOL_THREADS = 4

#: A read's outcome for one task: its meta, or the error reading it raised (given to its awaiters).
Outcome = dict[str, Any] | BaseException

W = TypeVar("W")


class LoopLocal(Generic[W]):
    """One ``W`` per running event loop (per process): a loop never uses a closed loop's connections,
    and a second ``asyncio.run`` in the same process starts afresh."""

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], W]) -> None:
        self._make = make
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._by_loop: dict[int, tuple[asyncio.AbstractEventLoop, W]] = {}

    def get(self) -> W:
        """The ``W`` of the running loop (RuntimeError outside of one, as asyncio's own calls)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._pid != os.getpid():  # a fork: the parent's loops and sockets are not ours
                self._pid = os.getpid()
                self._by_loop.clear()
            found = self._by_loop.get(id(loop))
            if found is not None and found[0] is loop:
                return found[1]
            # Forget closed loops (an id may be reused by a new loop once the old one is gone).
            for key, (old, _) in list(self._by_loop.items()):
                if old.is_closed() or (old is not loop and key == id(loop)):
                    del self._by_loop[key]
            made = self._make(loop)
            self._by_loop[id(loop)] = (loop, made)
            return made

    def current(self) -> list[W]:
        """The ``W`` of every loop still open (tests and diagnostics)."""
        with self._lock:
            return [w for loop, w in self._by_loop.values() if not loop.is_closed()]


class BackendPool:
    """The small thread pool a backend's blocking calls run in (per process: rebuilt after a fork)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pid = -1
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix=self._name)
            return self._pool

    async def run(self, call: Callable[..., W], *args: Any) -> W:
        """``call(*args)`` in the pool; the loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.get(), call, *args)


def ready_outcome(outcome: Outcome) -> bool:
    """True for an error (its awaiters get it) or a meta in a ready state."""
    return isinstance(outcome, BaseException) or outcome["status"] in states.READY_STATES


def not_ready_error(task_id: str, timeout: float | None, why: str = "") -> TimeoutError:
    """The same error as the synchronous ``get()``'s when ``timeout`` runs out."""
    return TimeoutError(f"the result of task {task_id} was not ready within {timeout} s{why}")


#: What a waiter keys its awaiters by (a task id, a pub/sub channel).
K = TypeVar("K")


def leave(waiting: dict[K, list[asyncio.Future[dict[str, Any]]]], key: K, future: asyncio.Future[Any]) -> bool:
    """An awaiter left (answered, timed out or cancelled): its future leaves ``waiting``, and so does
    ``key`` once no awaiter is left under it; True when this emptied the key."""
    futures = waiting.get(key)
    if futures is None:
        return False
    if future in futures:
        futures.remove(future)
    if futures:
        return False
    del waiting[key]
    return True


async def answered(future: asyncio.Future[dict[str, Any]], task_id: str, timeout: float | None) -> dict[str, Any]:
    """The awaited meta, or ``get()``'s TimeoutError once ``timeout`` seconds ran out."""
    try:
        return await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        raise not_ready_error(task_id, timeout) from None


class Collecting(Protocol):
    """What the pump reads from its backend (``ResultBackend``'s collect steps), named here so this
    module needs nothing from the backends that use it."""

    def _collect_now(self, task_ids: Sequence[str]) -> list[Outcome]: ...

    def _collect_mark(self) -> int | None: ...

    def _collect_wait(self, task_ids: Sequence[str], mark: int | None, wait_s: float) -> list[Outcome]: ...


class ThreadedWaiter:
    """The awaited results of one backend in one event loop, read in batches in the backend's pool."""

    def __init__(self, backend: Collecting, loop: asyncio.AbstractEventLoop, pool: BackendPool) -> None:
        self.backend = backend
        self.loop = loop
        self.pool = pool
        #: Awaited task id -> the futures of its awaiters.
        self.waiting: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._fresh: list[str] = []
        self._pump_task: asyncio.Task[None] | None = None
        self._fresh_task: asyncio.Task[None] | None = None

    async def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        """The ready meta of ``task_id``; TimeoutError after ``timeout`` seconds."""
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.waiting.setdefault(task_id, []).append(future)
        self._fresh.append(task_id)
        self._start()
        try:
            return await answered(future, task_id, timeout)
        finally:
            leave(self.waiting, task_id, future)

    def _start(self) -> None:
        if self._fresh_task is None or self._fresh_task.done():
            self._fresh_task = self.loop.create_task(self._read_fresh(), name="rqueue-results-fresh")
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = self.loop.create_task(self._pump(), name="rqueue-results-pump")

    def _answer(self, task_ids: Sequence[str], outcomes: Sequence[Outcome]) -> bool:
        """Give ready outcomes to their awaiters; True when any was ready."""
        any_ready = False
        for task_id, outcome in zip(task_ids, outcomes, strict=True):
            if not ready_outcome(outcome):
                continue
            any_ready = True
            for future in self.waiting.get(task_id, ()):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        return any_ready

    async def _read_fresh(self) -> None:
        """Read newly awaited results at once, in batches."""
        while self._fresh:
            ids = [task_id for task_id in dict.fromkeys(self._fresh) if task_id in self.waiting]
            self._fresh.clear()
            if ids:
                try:
                    outcomes = await self.pool.run(self.backend._collect_now, ids)
                except Exception as exc:  # the backend failed as a whole: its awaiters hear why
                    outcomes = [exc] * len(ids)
                self._answer(ids, outcomes)

    async def _pump(self) -> None:
        """Read every awaited result, then wait for the backend to signal a store, while any is awaited.

        Per round: (1) read the backend's mark, (2) list the awaited ids, (3) read them and, when
        none is ready, wait for a store after the mark. A result stored after (1) ends the wait in
        (3); one stored before (1) for an id awaited by (2) is read in (3); an id awaited after (2)
        is read by the fresh reader, after its awaiter registered: if the store came earlier that
        read sees it, else the store came after (2), so after (1), and wakes (3).
        """
        backend = self.backend
        pause = POLL_FIRST_S
        while self.waiting:
            ids: list[str] = []
            try:
                mark = await self.pool.run(backend._collect_mark)
                if not self.waiting:
                    break
                ids = list(self.waiting)
                wait_s = PUMP_SLICE_S if mark is not None else 0.0
                outcomes = await self.pool.run(backend._collect_wait, ids, mark, wait_s)
            except Exception as exc:  # the backend failed as a whole: its awaiters hear why
                ids = list(self.waiting)
                outcomes, mark = [exc] * len(ids), None
            if self._answer(ids, outcomes):
                pause = POLL_FIRST_S
            elif mark is None:  # no signal to wait for: poll, the pause growing as sync get() does
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, POLL_MAX_S)
