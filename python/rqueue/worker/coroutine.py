"""Running one ``async def`` task's coroutine: the step wrapper that raises exceptions at its await
point, and the event loop each executor thread of the prefork, solo and threads pools runs them on.

The asyncio pool (``rqueue.worker.aio``) runs many coroutines at once on one loop; the other pools
run one at a time, to completion, on a loop of their executor thread (kept for the thread's life,
so clients bound to a loop, such as a connection pool, are reused by the next task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from rqueue.exceptions import SoftTimeLimitExceeded, TaskTerminated

if TYPE_CHECKING:
    from types import TracebackType

    from rqueue.worker.timelimit import TaskGuard


class Steps(Coroutine[Any, Any, Any]):
    """Wraps a task's coroutine for the ``asyncio.Task`` that runs it.

    An exception meant for the task (the soft time limit) is raised *at its await point*: the
    runner sets ``pending`` and cancels the asyncio task; the ``CancelledError`` that asyncio then
    throws into the coroutine is replaced here by ``pending``, so ``except SoftTimeLimitExceeded``
    in the task works as in a sync task. ``on_step`` and ``after_step`` bracket each step (the
    code that runs between two awaits): the asyncio pool names the task blocking its loop with them.
    """

    __slots__ = ("_coro", "after_step", "on_step", "pending", "task")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        on_step: Callable[[], None] | None = None,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        self._coro = coro
        self.on_step = on_step
        self.after_step = after_step
        #: Raised in place of the next cancellation (set by the runner before it cancels).
        self.pending: BaseException | None = None
        #: The asyncio task running this (set by the runner): a replaced cancellation is uncounted.
        self.task: asyncio.Task[Any] | None = None

    def send(self, value: Any) -> Any:
        if self.on_step is None:
            return self._coro.send(value)
        self.on_step()
        try:
            return self._coro.send(value)
        finally:
            assert self.after_step is not None
            self.after_step()

    def throw(
        self,
        typ: type[BaseException] | BaseException,
        val: BaseException | object = None,
        tb: TracebackType | None = None,
    ) -> Any:
        exc = typ if isinstance(typ, BaseException) else (val if isinstance(val, BaseException) else typ())
        if self.pending is not None and isinstance(exc, asyncio.CancelledError):
            exc, self.pending = self.pending, None
            uncancel = getattr(self.task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()  # not a cancellation: asyncio.timeout() and TaskGroup count them
        if self.on_step is None:
            return self._coro.throw(exc)
        self.on_step()
        try:
            return self._coro.throw(exc)
        finally:
            assert self.after_step is not None
            self.after_step()

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __iter__(self) -> Steps:
        return self

    def __next__(self) -> Any:
        return self.send(None)


class ThreadLoop:
    """The event loop of one executor thread (prefork child, solo, threads): runs one task's
    coroutine at a time to completion.

    Time limits and ``terminate`` reach a sync task as an exception raised in its thread (a signal
    handler, or the threads pool's watchdog). While a coroutine runs, that exception usually
    interrupts the loop's wait for I/O rather than the coroutine itself; it is then delivered
    into the coroutine at its await point: ``SoftTimeLimitExceeded`` is raised there, and
    ``TaskTerminated`` cancels the coroutine (its ``finally`` blocks and ``async with`` exits run),
    after which the task is recorded as terminated.
    """

    def __init__(self, guard: TaskGuard) -> None:
        self.guard = guard
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """The coroutine's return value; raises what it raised."""
        steps = Steps(coro)
        # In a copy of this thread's context: the task's request is current in it.
        task: asyncio.Task[Any] = self.loop.create_task(steps)
        steps.task = task
        loop = self.loop

        def deliver(exc_type: type[BaseException]) -> None:  # from the watchdog thread (threads pool)
            loop.call_soon_threadsafe(self._deliver, task, steps, exc_type)

        self.guard.deliver = deliver
        try:
            return self._run(task, steps)
        finally:
            self.guard.deliver = None

    def _deliver(self, task: asyncio.Task[Any], steps: Steps, exc_type: type[BaseException]) -> None:
        """On the loop: the soft limit raised at the coroutine's await point."""
        if task.done():
            return
        exc = exc_type()
        if isinstance(exc, SoftTimeLimitExceeded):
            exc.args = (self.guard.requested[1],)
        steps.pending = exc
        task.cancel()

    def _run(self, task: asyncio.Task[Any], steps: Steps) -> Any:
        terminated: TaskTerminated | None = None
        while True:
            try:
                value = self.loop.run_until_complete(task)
            except asyncio.CancelledError:
                if terminated is not None:
                    raise terminated from None
                raise
            except (SoftTimeLimitExceeded, TaskTerminated) as exc:
                if task.done():
                    raise  # raised by the coroutine, or inside it: its outcome
                # Raised while the loop waited (a signal handler): deliver it inside the coroutine.
                if isinstance(exc, TaskTerminated):
                    terminated = exc
                else:
                    steps.pending = exc
                task.cancel()
                continue
            if terminated is not None:
                raise terminated  # it returned despite the cancellation: it was terminated all the same
            return value
