"""The asyncio pool (``-P asyncio -c N``): one process, one event loop running up to N tasks at once.

``async def`` tasks run as coroutines on the loop (in the worker's main thread); sync tasks run
in a thread pool beside it (``SYNC_THREADS_MAX`` threads at most, made as needed) and count
towards the same N. Each message goes through the executor's admit and settle steps exactly as
in the other pools (retries, ``autoretry_for``, ``Reject``/``Ignore``, results, links and chords,
events and hooks, dead letters, ``acks_late``); only the run step differs: the coroutine is
awaited on the loop instead of called.

How work reaches the loop without blocking it: the Rust transport thread fills the prefetch
buffer (sized ``N * worker_prefetch_multiplier``) as in the other pools; a reader thread waits on
the buffer while a slot is free and hands what it took to the loop in batches
(``call_soon_threadsafe``: one wake-up per batch, not per message). Results are written off the
loop: a flush hands its batch to a writer thread (batches pending at once are written together,
in order, results before acks), so the loop never waits for a round trip to store a result.

Time limits: past the soft limit the coroutine is cancelled and ``SoftTimeLimitExceeded`` is raised
at its await point (``rqueue.worker.coroutine.Steps``); past the hard limit it is cancelled and
the task fails with ``TimeLimitExceeded``; ``revoke(terminate=True)`` cancels it (REVOKED). A
coroutine that blocks the loop (``time.sleep`` in ``async def``) cannot be interrupted by any of
them until it awaits: a watchdog thread logs a warning naming it once it has held the loop for
``worker_async_block_warn_s``. Sync tasks get soft limits as in the threads pool; their hard
limits and ``terminate`` are not enforced (a thread cannot be stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from rqueue import signals, states, trace
from rqueue.backends.base import ResultRecord
from rqueue.exceptions import BackendError, BrokerError, SoftTimeLimitExceeded, TimeLimitExceeded
from rqueue.request import pop_request, push_request
from rqueue.worker.consumer import IDLE_WAIT_S, Consumer, request_info
from rqueue.worker.control import ControlError, InProcess
from rqueue.worker.coroutine import Steps
from rqueue.worker.executor import SHUTDOWN_FLUSH_S, Admitted, Executor, Outcome
from rqueue.worker.timelimit import TaskGuard

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.task import Task
    from rqueue.worker.hooks import Hooks
    from rqueue.worker.ratelimit import RateLimits
    from rqueue.worker.state import Revoked

logger = logging.getLogger("rqueue.worker")

#: ``-c`` of an asyncio worker when neither it nor ``worker_concurrency`` is given: coroutines
#: waiting for I/O cost little, so the CPU count is no guide.
DEFAULT_CONCURRENCY = 100
#: The most threads the sync tasks of an asyncio worker run in (fewer when ``-c`` is smaller).
SYNC_THREADS_MAX = 32
#: Cold shutdown: how long cancelled coroutines get to run their ``finally`` blocks before the
#: process exits (their messages go back to the queue either way).
COLD_SHUTDOWN_GRACE_S = 1.0
#: How often a coroutine stopped by its hard time limit or ``terminate`` is cancelled again while
#: it catches the cancellation and goes on.
RECANCEL_S = 1.0
#: The blocked-loop watchdog looks at least this often (and twice per warning threshold).
BLOCK_CHECK_MIN_S = 0.01


def is_coroutine_task(task: Task[Any, Any]) -> bool:
    """Whether a task's body is an ``async def`` (its function, or a class-based task's ``run``)."""
    body = task.fun if task.fun is not None else type(task).run
    return inspect.iscoroutinefunction(body)


class _Job:
    """One admitted delivery on the loop: its asyncio task, limits and how it is being stopped."""

    __slots__ = (
        "coroutine",
        "holds_credit",
        "job",
        "limit_handles",
        "started_wall",
        "steps",
        "stop",
        "task",
    )

    def __init__(self, job: Admitted, holds_credit: bool) -> None:
        self.job = job
        self.holds_credit = holds_credit
        self.task: asyncio.Task[None] | None = None
        #: The coroutine's step wrapper, once its body turned out to be one (None: a sync task).
        self.steps: Steps | None = None
        self.coroutine = False
        #: Why the worker cancelled it: ``time_limit``, ``terminated`` or ``shutdown``.
        self.stop: str | None = None
        self.limit_handles: list[asyncio.TimerHandle] = []
        self.started_wall = time.time()


class AsyncExecutor(Executor):
    """The executor of the asyncio pool: admit and settle as in every pool, run as a coroutine on
    the loop (or a sync task in a thread), flushes handed to a writer thread."""

    def __init__(self, consumer: AsyncioConsumer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = consumer
        self._coroutine_tasks: dict[str, bool] = {}

    def flush(self, give_up_after_s: float | None = None) -> None:
        """Hand the open batch to the writer thread (``flush_behind``): the loop never waits."""
        self.flush_behind(give_up_after_s)

    def is_coroutine(self, task: Task[Any, Any]) -> bool:
        known = self._coroutine_tasks.get(task.name)
        if known is None:
            known = self._coroutine_tasks[task.name] = is_coroutine_task(task)
        return known

    async def run_async(self, entry: _Job) -> Outcome:  # noqa: PLR0912 - Executor.run's steps, inline (per task)
        """``Executor.run`` for the loop: STARTED, hooks, the request, then the body awaited (a
        coroutine) or run in a thread (a sync task); never raises for what the task did."""
        job = entry.job
        msg, task, request, args, kwargs = job.msg, job.task, job.request, job.args, job.kwargs
        if job.track_started and not job.ignore_result:
            self._record(ResultRecord(msg.id, states.STARTED, {"pid": os.getpid(), "hostname": self.hostname}))
            self.flush()
        soft, hard = self.limits.for_task(msg.task, msg.soft_time_limit, msg.time_limit)
        if self.hooks is not None:
            self.hooks.started(request)
        started = time.perf_counter()
        push_request(request)  # in this asyncio task's own context: each coroutine sees its own
        if signals.task_prerun.receivers:
            trace.prerun(task, request)
        try:
            if self.is_coroutine(task):
                if task.hooked and "before_start" in task.hooked:
                    task.before_start(msg.id, args, kwargs)
                value = task.entry(*args, **kwargs)
            else:
                value = await self.pool.in_thread(task, job, soft)
            if type(value) is CoroutineType:
                entry.coroutine = True
                self.pool.arm_limits(entry, soft, hard)
                steps = entry.steps = Steps(value, self.pool.on_step, self.pool.after_step)
                steps.task = entry.task
                value = await steps
                if entry.stop is not None:  # it swallowed the cancellation and returned: stopped all the same
                    raise asyncio.CancelledError
        except asyncio.CancelledError as exc:
            return self._cancelled(entry, exc, hard, started)
        except Exception as exc:
            if isinstance(exc, SoftTimeLimitExceeded) and not exc.args and soft is not None:
                exc.args = (soft,)  # raised asynchronously in a sync task's thread: by class only
            return self.outcome_of(task, request, exc, started)
        else:
            return ("succeeded", value, None, time.perf_counter() - started)
        finally:
            for handle in entry.limit_handles:
                handle.cancel()
            pop_request()
            self.processed[msg.task] += 1

    def _cancelled(self, entry: _Job, exc: asyncio.CancelledError, hard: float | None, started: float) -> Outcome:
        """The outcome of a run that ended cancelled: by its hard time limit, by ``terminate``, or
        cancelled by its own code (a failure). Cold shutdown's cancellation is no outcome: re-raised."""
        if entry.stop == "shutdown":
            raise exc
        if entry.stop == "terminated":
            return ("terminated", None, None, 0.0)
        if entry.stop == "time_limit":
            limit = TimeLimitExceeded(hard)
            return ("failed", limit, f"TimeLimitExceeded: {hard}\n", time.perf_counter() - started)
        return ("failed", exc, traceback.format_exc(), time.perf_counter() - started)


class AsyncioConsumer(Consumer):
    """Consumes ``queues`` in this process, running up to ``concurrency`` tasks at once on one
    event loop (see the module docstring).

    ``stop()`` (safe from any thread and from a signal handler) is a warm shutdown: no new task
    starts, the prefetched messages go back to their queue at once, running tasks finish.
    ``cold_stop()`` cancels the running coroutines and then calls what it is given (which returns
    their messages and ends the process).
    """

    #: Called with the signal number for SIGINT, SIGTERM and SIGQUIT, from the loop (set by the
    #: worker before ``run()`` when it runs in the main thread).
    on_signal: Callable[[int], None] | None = None

    def __init__(  # noqa: PLR0913 - what one process of a node shares, each named
        self,
        app: App,
        queues: Sequence[str],
        hostname: str,
        revoked: Revoked,
        concurrency: int,
        rate_limits: RateLimits | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        super().__init__(app, queues, hostname, revoked, threads=concurrency, rate_limits=rate_limits, hooks=hooks)
        self.concurrency = concurrency
        self.block_warn_s = float(app.conf.worker_async_block_warn_s)
        #: The tasks admitted and not settled yet, by delivery tag (``inspect active``).
        self.jobs: dict[str, _Job] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.executor: AsyncExecutor | None = None
        self._free = concurrency  # slots: tasks that may start now
        self._slots = threading.Condition()
        self._sync_threads: ThreadPoolExecutor | None = None
        self._sync_guards = threading.local()
        self._wake: asyncio.Event | None = None
        self._flush_scheduled = False
        self._aside_timer: asyncio.TimerHandle | None = None
        #: The job whose coroutine is running a step on the loop now, and since when (monotonic).
        self.stepping: _Job | None = None
        self.step_at = 0.0
        self._beat_at = time.monotonic()

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until ``stop()``; then wait for the running tasks, hand back unstarted messages and flush."""
        if self.hooks:
            self.hooks.consuming(self)
        loop = self.loop = asyncio.new_event_loop()
        if self.on_signal is not None:
            self._install_signals(loop, self.on_signal)
        self.transport.start()
        try:
            loop.run_until_complete(self._main())
        finally:
            self._return_unstarted()
            if self.hooks is not None and self.hooks.events is not None:
                self.hooks.events.close_process()
            if self._sync_threads is not None:
                self._sync_threads.shutdown(wait=False)
            loop.close()

    def _install_signals(self, loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None]) -> None:
        """SIGINT, SIGTERM and SIGQUIT call ``on_signal`` as a callback of the loop (never between
        two bytecodes of the loop's own code)."""
        for name in ("SIGINT", "SIGTERM", "SIGQUIT"):
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                loop.add_signal_handler(signum, on_signal, int(signum))
            except NotImplementedError:  # Windows' loops: a plain handler that hands it to the loop

                def handler(num: int, frame: object) -> None:
                    loop.call_soon_threadsafe(on_signal, num)

                signal.signal(signum, handler)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._stop.is_set():  # stopped before the loop ran (a signal while starting)
            self._wake.set()
        executor = self.executor = AsyncExecutor(
            self,
            self.app,
            self.transport,
            self.hostname,
            self.revoked,
            rate_limits=self.rate_limits,
            limits=self.limits,
            watchdog=self.watchdog,
            hooks=self.hooks,
        )
        executor.stopping = self._stop.is_set
        self.executors.append(executor)
        reader = threading.Thread(target=self._read, args=(loop,), name="rqueue-aio-reader", daemon=True)
        reader.start()
        threading.Thread(target=self._watch_blocking, name="rqueue-aio-blocking", daemon=True).start()
        self._beat()
        try:
            await self._wake.wait()
            # Warm shutdown: nothing new starts; what was prefetched goes back now, not after the tasks.
            with self._slots:
                self._slots.notify_all()
            await loop.run_in_executor(None, self.give_back_prefetched)
            while self.jobs:
                await asyncio.wait([j.task for j in list(self.jobs.values()) if j.task is not None])
            executor.flush(give_up_after_s=SHUTDOWN_FLUSH_S)
        finally:
            await loop.run_in_executor(None, executor.close)
            reader.join(IDLE_WAIT_S * 5)

    def stop(self) -> None:
        self._stop.set()
        loop, wake = self.loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: it is stopping anyway
                loop.call_soon_threadsafe(wake.set)

    def cold_stop(self, then: Callable[[], None]) -> None:
        """Cancel every running coroutine, give them ``COLD_SHUTDOWN_GRACE_S`` to finish their
        cleanup, then call ``then`` (on the loop). Their messages are not acked. Safe from any thread."""
        self._stop.set()
        loop = self.loop
        if loop is None or loop.is_closed():
            then()
            return

        async def cancel_all() -> None:
            tasks = []
            for entry in list(self.jobs.values()):
                entry.stop = "shutdown"
                if entry.task is not None:
                    entry.task.cancel()
                    tasks.append(entry.task)
            if tasks:
                await asyncio.wait(tasks, timeout=COLD_SHUTDOWN_GRACE_S)
            then()

        loop.call_soon_threadsafe(lambda: loop.create_task(cancel_all()))

    def _beat(self) -> None:
        """The loop's heartbeat, for the blocked-loop watchdog (a loop busy outside any task's step)."""
        self._beat_at = time.monotonic()
        if not self._stop.is_set() or self.jobs:
            assert self.loop is not None
            self.loop.call_later(max(BLOCK_CHECK_MIN_S, self.block_warn_s / 2), self._beat)

    # -- taking deliveries ----------------------------------------------------------------------

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        """The reader thread: while a slot is free, take deliveries from the buffer and hand them
        to the loop, in batches."""
        buffer = self.buffer
        while not self._stop.is_set():
            with self._slots:
                while self._free <= 0 and not self._stop.is_set():
                    self._slots.wait(IDLE_WAIT_S)
                if self._stop.is_set():
                    return
            got = buffer.get(IDLE_WAIT_S)
            if got is None:
                self._check_fetching()
                if not self.jobs:
                    self._call(loop, self._flush_now)
                continue
            batch = [got]
            with self._slots:
                self._free -= 1
                more = min(self._free, len(buffer))
                while more > 0:
                    extra = buffer.get(0)
                    if extra is None:
                        break
                    batch.append(extra)
                    self._free -= 1
                    more -= 1
            if not self._call(loop, self._start, batch):
                return

    def _call(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> bool:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the worker is gone
            return False
        return True

    def _release_slot(self) -> None:
        with self._slots:
            self._free += 1
            self._slots.notify()

    def _start(self, batch: list[Any]) -> None:
        """On the loop: admit each delivery of a batch the reader took."""
        if self._stop.is_set():  # warm shutdown began after they were taken: they go back unstarted
            self._give_back(batch)
            return
        for delivery in batch:
            try:
                self._admit(delivery, None, True)
            except Exception:  # a bug (admit deals with what the message did): the others still start
                logger.exception(
                    "Admitting message %s failed; it is delivered again once its lease expires", delivery.tag
                )

    def _give_back(self, batch: list[Any]) -> None:
        try:
            self.transport.requeue([d.tag for d in batch])
        except (BrokerError, OSError) as exc:
            logger.error(
                "Could not return %d message(s) (%s); they come back when their leases expire", len(batch), exc
            )
        for _ in batch:
            self.buffer.done()
            self._release_slot()

    def _admit(self, delivery: Any, msg: Any, holds_credit: bool) -> None:
        executor = self.executor
        assert executor is not None and self.loop is not None
        if executor.batch_since is None:
            executor.open_batch()
        try:
            admitted = executor.admit(delivery, msg, msg is None)
        except (BrokerError, BackendError, OSError) as exc:
            # The message stays leased: it is delivered again when its lease expires.
            logger.error("Broker or backend failed while handling message %s: %s", delivery.tag, exc)
            admitted = None
        if isinstance(admitted, Admitted):
            entry = _Job(admitted, holds_credit)
            self.jobs[delivery.tag] = entry
            entry.task = self.loop.create_task(self._drive(entry))
            return
        if admitted is not None:  # over its rate limit: wait aside (still leased), its slot freed
            wait_s, decoded = admitted
            if self.aside.put(delivery, decoded, wait_s, holds_credit):
                self.buffer.done()
            self._schedule_aside()
        elif holds_credit:
            self.buffer.done()
        self._release_slot()
        self._flush_soon()

    def _schedule_aside(self) -> None:
        due_in = self.aside.next_due_in()
        if due_in is None or self._aside_timer is not None:
            return
        assert self.loop is not None
        self._aside_timer = self.loop.call_later(due_in, self._take_aside)

    def _take_aside(self) -> None:
        """On the loop: start the rate-limited deliveries whose time has come, while slots are free."""
        self._aside_timer = None
        if self._stop.is_set():
            return
        while True:
            with self._slots:
                if self._free <= 0:
                    break
                waiting = self.aside.pop_due()
                if waiting is None:
                    break
                self._free -= 1
            self._admit(waiting.delivery, waiting.message, waiting.holds_credit)
        if len(self.aside):
            assert self.loop is not None
            due_in = self.aside.next_due_in()
            self._aside_timer = self.loop.call_later(max(due_in or 0.0, IDLE_WAIT_S / 10), self._take_aside)

    # -- running --------------------------------------------------------------------------------

    async def _drive(self, entry: _Job) -> None:
        executor = self.executor
        assert executor is not None
        job = entry.job
        _current_entry.set(entry)  # this asyncio task's context only: on_step names it
        try:
            outcome = await executor.run_async(entry)
            executor.settle(job, outcome)
        except asyncio.CancelledError:
            if entry.stop != "shutdown":
                raise
            return  # cold shutdown: not settled; the message goes back to the queue
        except (BrokerError, BackendError, OSError) as exc:
            logger.error("Broker or backend failed while handling message %s: %s", job.delivery.tag, exc)
        except Exception:  # a bug (run and settle deal with what the task did): the worker goes on
            logger.exception("Handling task %s[%s] failed", job.msg.task, job.msg.id)
        finally:
            if entry.stop != "shutdown":
                self.jobs.pop(job.delivery.tag, None)
                if entry.holds_credit:
                    self.buffer.done()
                self._release_slot()
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Flush once the tasks finishing in this turn of the loop are settled: one batch for them all."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        if self.executor is not None:
            self.executor.flush()

    async def in_thread(self, task: Task[Any, Any], job: Admitted, soft: float | None) -> Any:
        """Run a sync task's body in the thread pool, in this asyncio task's context (its request)."""
        if self._sync_threads is None:
            self._sync_threads = ThreadPoolExecutor(min(self.concurrency, SYNC_THREADS_MAX), "rqueue-aio-sync")
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._sync_threads, context.run, self._call_sync, task, job, soft)

    def _call_sync(self, task: Task[Any, Any], job: Admitted, soft: float | None) -> Any:
        """In a thread of the pool: the body inside this thread's guard (soft limits as in the threads pool)."""
        guard: TaskGuard | None = getattr(self._sync_guards, "guard", None)
        if guard is None:
            guard = self._sync_guards.guard = TaskGuard()
            assert self.watchdog is not None
            self.watchdog.add(guard)
        if soft is not None:
            assert self.watchdog is not None
            self.watchdog.ensure_started()
        msg = job.msg
        guard.enter(msg.id, msg.task, soft)
        try:
            if task.hooked and "before_start" in task.hooked:
                task.before_start(msg.id, job.args, job.kwargs)
            return task.entry(*job.args, **job.kwargs)
        finally:
            guard.leave()

    def arm_limits(self, entry: _Job, soft: float | None, hard: float | None) -> None:
        """Start a coroutine's time limits (timers on the loop)."""
        loop = self.loop
        assert loop is not None
        if soft is not None:
            entry.limit_handles.append(loop.call_later(soft, self._soft_limit, entry, soft))
        if hard is not None:
            entry.limit_handles.append(loop.call_later(hard, self._hard_limit, entry, hard))

    def _soft_limit(self, entry: _Job, soft: float) -> None:
        if entry.task is None or entry.task.done() or entry.steps is None or entry.stop is not None:
            return
        msg = entry.job.msg
        logger.warning("Soft time limit (%gs) exceeded for %s[%s]", soft, msg.task, msg.id)
        entry.steps.pending = SoftTimeLimitExceeded(soft)
        entry.task.cancel()

    def _hard_limit(self, entry: _Job, hard: float) -> None:
        if entry.task is None or entry.task.done() or entry.stop is not None:
            return
        msg = entry.job.msg
        logger.error("Hard time limit (%gs) exceeded for %s[%s]: cancelling it", hard, msg.task, msg.id)
        entry.stop = "time_limit"
        self._cancel(entry)

    def terminate(self, task_id: str) -> bool:
        """From any thread: cancel the running coroutine of ``task_id`` (recorded REVOKED). False
        when it is not running here; ControlError for a sync task (its thread cannot be stopped)."""
        loop = self.loop
        for entry in list(self.jobs.values()):
            if entry.job.msg.id != task_id or entry.stop is not None:
                continue
            if not entry.coroutine:
                raise ControlError(
                    f"cannot terminate {task_id}: it is a sync task running in a thread of the asyncio pool, "
                    "where it cannot be stopped; it is flagged as revoked"
                )
            assert loop is not None
            loop.call_soon_threadsafe(self._terminate, entry)
            return True
        return False

    def _terminate(self, entry: _Job) -> None:
        if entry.task is None or entry.task.done() or entry.stop is not None:
            return
        msg = entry.job.msg
        logger.info("Terminating task %s[%s]: cancelling its coroutine", msg.task, msg.id)
        entry.stop = "terminated"
        self._cancel(entry)

    def _cancel(self, entry: _Job) -> None:
        """Cancel a coroutine the worker stops, and again every ``RECANCEL_S`` while it swallows
        the cancellation and goes on (it holds its slot until it ends)."""
        task = entry.task
        if task is None or task.done():
            return
        if entry.steps is not None:
            entry.steps.pending = None
        if task.cancelling() if hasattr(task, "cancelling") else False:
            msg = entry.job.msg
            logger.warning(
                "Task %s[%s] ignores its cancellation (%s); cancelling it again", msg.task, msg.id, entry.stop
            )
        task.cancel()
        assert self.loop is not None
        self.loop.call_later(RECANCEL_S, self._cancel, entry)

    # -- blocked loop ---------------------------------------------------------------------------

    def on_step(self) -> None:
        self.stepping = _current_entry.get()
        self.step_at = time.monotonic()

    def after_step(self) -> None:
        self.stepping = None

    def _watch_blocking(self) -> None:
        """The watchdog thread: warn once per episode when one step of a coroutine (or anything
        else on the loop) has held it for ``block_warn_s``, naming the task."""
        threshold = self.block_warn_s
        period = max(BLOCK_CHECK_MIN_S, threshold / 2)
        warned_step: float | None = None
        warned_beat: float | None = None
        while self.loop is not None and not self.loop.is_closed():
            time.sleep(period)
            now = time.monotonic()
            entry, at = self.stepping, self.step_at
            if entry is not None and now - at >= threshold:
                if warned_step != at:
                    warned_step = at
                    msg = entry.job.msg
                    logger.warning(
                        "Task %s[%s] has blocked the event loop for %.2fs (worker_async_block_warn_s = %g): "
                        "it runs without awaiting (time.sleep, blocking I/O, long computation?); the %d other "
                        "task(s) on the loop wait meanwhile, and time limits reach it only at its next await",
                        msg.task,
                        msg.id,
                        now - at,
                        threshold,
                        max(0, len(self.jobs) - 1),
                    )
                continue
            beat = self._beat_at
            if entry is None and now - beat >= threshold + period and warned_beat != beat and not self._stop.is_set():
                warned_beat = beat
                running = ", ".join(f"{j.job.msg.task}[{j.job.msg.id}]" for j in list(self.jobs.values())[:10])
                logger.warning(
                    "The event loop has been blocked for %.2fs outside any task's coroutine (a hook, a signal "
                    "receiver or a sync call made on the loop?); running: %s",
                    now - beat,
                    running or "none",
                )

    # -- remote control -------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        report = super().report()
        report["active"] = [
            request_info(entry.job.request, entry.started_wall, self.hostname) for entry in list(self.jobs.values())
        ]
        return report


#: The job whose task is running (set in each job's own context, read by ``on_step``).
_current_entry: contextvars.ContextVar[_Job | None] = contextvars.ContextVar("rqueue_aio_job", default=None)


class AsyncProcesses(InProcess):
    """The asyncio pool's one process as remote control steers it: running coroutines can be
    terminated and time limits changed at run time."""

    consumer: AsyncioConsumer

    def __init__(self, consumer: AsyncioConsumer) -> None:
        super().__init__(consumer)

    def terminate(self, task_id: str, signum: int) -> bool:
        return self.consumer.terminate(task_id)

    def set_time_limit(self, task_name: str, soft: float | None, hard: float | None) -> None:
        self.consumer.limits.set(task_name, soft, hard)

    def resize(self, method: str, args: dict[str, Any]) -> str:
        raise ControlError(f"{method}: the asyncio pool has a fixed size (-c); the prefork pool can be resized")

    def size(self) -> dict[str, Any]:
        return {"max-concurrency": self.consumer.concurrency}

    def counts(self) -> tuple[int, int]:
        executors = list(self.consumer.executors)
        return len(self.consumer.jobs), sum(sum(e.processed.values()) for e in executors)
