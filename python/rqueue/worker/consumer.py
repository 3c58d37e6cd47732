"""One worker process's consumer: a Rust transport thread filling a prefetch buffer, drained by
one or more executor threads.

Used directly by the ``solo`` and ``threads`` pools, and by each child of the ``prefork`` pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rqueue import _rqueue
from rqueue.brokers.base import LeaseRecovery, capability, owner_id
from rqueue.exceptions import BackendError, BrokerError, RQueueError
from rqueue.worker import failpoint
from rqueue.worker.executor import BATCH, SHUTDOWN_FLUSH_S, Executor, short_repr
from rqueue.worker.failpoint import ACTIVE as FAILPOINT
from rqueue.worker.ratelimit import SetAside
from rqueue.worker.timelimit import TaskGuard, TimeLimits, Watchdog

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.request import Request
    from rqueue.worker.hooks import Hooks
    from rqueue.worker.ratelimit import RateLimits, Waiting
    from rqueue.worker.slot import RunningSlot
    from rqueue.worker.state import Revoked
    from rqueue.worker.verdicts import Verdicts

logger = logging.getLogger("rqueue.worker")

#: How long to pause after the broker failed mid-message.
BROKER_ERROR_PAUSE_S = 0.5

#: Inspecting reserved messages decodes their headers only (a pickle body is not unpickled).
ANY_CONTENT = ("json", "msgpack", "pickle")

#: How long an idle executor waits on the buffer before re-checking the stop flag.
IDLE_WAIT_S = 0.1

#: Rate-limited deliveries set aside per prefetch credit that give their credit back (so other
#: messages keep flowing); past that, waiting deliveries keep their credit and fetching slows.
SET_ASIDE_PER_CREDIT = 16


def request_info(request: Request, started: float, hostname: str) -> dict[str, Any]:
    """A running task as ``inspect active`` shows it (Celery's field names)."""
    return {
        "id": request.id,
        "name": request.task,
        "args": short_repr(request.args),
        "kwargs": short_repr(request.kwargs),
        "hostname": hostname,
        "time_start": started,
        "worker_pid": os.getpid(),
        "acknowledged": False,
        "delivery_info": request.delivery_info,
    }


class Consumer:
    """Consumes ``queues`` in this process with ``threads`` executor threads.

    ``stop()`` (safe from a signal handler) is a warm shutdown: running tasks finish, and the
    messages fetched but not started (rate-limited ones waiting for a token included) go back to
    their queue at once.
    """

    def __init__(  # noqa: PLR0913 - what one process of a node shares, each named
        self,
        app: App,
        queues: Sequence[str],
        hostname: str,
        revoked: Revoked,
        threads: int = 1,
        running: RunningSlot | None = None,
        rate_limits: RateLimits | None = None,
        hooks: Hooks | None = None,
        verdicts: Verdicts | None = None,
    ) -> None:
        self.app = app
        self.hooks = hooks
        self.verdicts = verdicts
        self.running = running
        self.rate_limits = rate_limits
        self.revoked = revoked
        self.queues = list(queues)
        self.hostname = hostname
        self.threads = max(1, threads)
        self.owner = owner_id(hostname, os.getpid())
        self._stop = threading.Event()
        self.executors: list[Executor] = []
        #: Effective time limits; in prefork the supervisor enforces them, here they pick the soft
        #: limit the watchdog enforces (solo, threads).
        self.limits = TimeLimits(app)
        self.watchdog = Watchdog() if running is None else None
        self.main_guard: TaskGuard | None = None
        conf = app.conf
        self.max_deliveries = int(conf.broker_max_deliveries)
        self.buffer = _rqueue.PrefetchBuffer(max(1, self.threads * int(conf.worker_prefetch_multiplier)))
        self.aside = SetAside(self.buffer.capacity * SET_ASIDE_PER_CREDIT, rate_limits)
        self.transport = app.broker.consumer(
            self.queues,
            self.owner,
            self.buffer,
            lease_s=float(conf.broker_visibility_timeout),
            max_deliveries=self.max_deliveries,
            poll_max_ms=int(conf.worker_poll_max_ms),
        )

    def run(self) -> None:
        """Consume until ``stop()``; then hand back unstarted messages and flush."""
        if self.hooks:
            self.hooks.consuming(self)
        self.transport.start()
        try:
            if self.threads == 1:
                self._executor_loop()
            else:
                workers = [
                    threading.Thread(target=self._executor_loop, name=f"rqueue-exec-{i}", daemon=True)
                    for i in range(self.threads)
                ]
                for t in workers:
                    t.start()
                while any(t.is_alive() for t in workers):
                    for t in workers:
                        t.join(IDLE_WAIT_S)
        finally:
            self._return_unstarted()
            if self.hooks is not None and self.hooks.events is not None:
                self.hooks.events.close_process()  # this process's last task events go out

    #: Asked after each task: True when this process should stop now to be replaced (a prefork
    #: child past ``worker_max_tasks_per_child`` or ``worker_max_memory_per_child``).
    retire: Callable[[Executor], bool] | None = None

    def stop(self) -> None:
        self._stop.set()

    def give_back_prefetched(self) -> None:
        """Return the prefetched, unstarted messages now, while a task still runs (a prefork
        child's warm shutdown): other workers take them at once instead of after the task. The
        buffer closes; the transport keeps renewing the running task's lease (and gives back
        whatever it fetches meanwhile). Called in the thread that runs the executor, between its
        calls into the transport (a signal handler of a one-thread consumer)."""
        unstarted = self.buffer.close()
        if not unstarted:
            return
        try:
            self.transport.requeue([d.tag for d in unstarted])
            logger.info("Returned %d unstarted message(s) to the queue", len(unstarted))
        except (BrokerError, OSError) as exc:
            logger.error(
                "Could not return %d unstarted message(s) (%s); they come back when their leases expire",
                len(unstarted),
                exc,
            )

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- remote control ---------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """What this process runs, holds and has run, for ``inspect``."""
        processed: Counter[str] = Counter()
        active = []
        for executor in list(self.executors):
            processed.update(dict(executor.processed))  # the copy is atomic; another thread counts on
            current = executor.current
            if current is not None:
                active.append(request_info(current[0], current[1], self.hostname))
        decode = self._describe_delivery
        return {
            "pid": os.getpid(),
            "active": active,
            "reserved": [decode(d) for d in self.buffer.snapshot()],
            "scheduled": [self._describe_waiting(w) for w in self.aside.snapshot()],
            "processed": dict(processed),
        }

    def set_queues(self, queues: Sequence[str]) -> None:
        """Consume these queues from the next fetch on."""
        self.queues = list(queues)
        self.transport.set_queues(self.queues)

    def _describe_waiting(self, waiting: Waiting) -> dict[str, Any]:
        """A rate-limited delivery as ``inspect scheduled`` shows it: when it may run, and what it is."""
        msg = waiting.message
        eta = time.time() + max(0.0, waiting.due - time.monotonic())
        return {
            "eta": _rqueue.format_iso8601_ms(int(eta * 1000)),
            "priority": msg.priority,
            "request": self._describe_delivery(waiting.delivery),
        }

    def _describe_delivery(self, delivery: _rqueue.Delivery) -> dict[str, Any]:
        info: dict[str, Any] = {"hostname": self.hostname, "delivery_info": {"routing_key": delivery.queue}}
        try:
            msg = _rqueue.decode_task_message(delivery.payload, accept=ANY_CONTENT, max_size=len(delivery.payload) + 1)
        except RQueueError as exc:
            return {**info, "id": None, "name": None, "error": str(exc)}
        return {
            **info,
            "id": msg.id,
            "name": msg.task,
            "args": short_repr(msg.args),
            "kwargs": short_repr(msg.kwargs),
            "worker_pid": os.getpid(),
        }

    def _new_executor(self) -> Executor:
        """The executor of the calling thread."""
        executor = Executor(
            self.app,
            self.transport,
            self.hostname,
            self.revoked,
            rate_limits=self.rate_limits,
            limits=self.limits,
            slot=self.running,
            watchdog=self.watchdog,
            hooks=self.hooks,
            verdicts=self.verdicts,
        )
        executor.stopping = self._stop.is_set
        self.executors.append(executor)
        if threading.current_thread() is threading.main_thread():
            self.main_guard = executor.guard
        return executor

    def _executor_loop(self) -> None:  # noqa: PLR0912 - one loop: take, run, defer, settle, flush
        executor = self._new_executor()
        buffer = self.buffer
        aside = self.aside
        # The common case runs natively, a batch at a time (not where each task asks to retire).
        lane = executor.fast_lane(buffer) if self.retire is None else None
        try:
            while not self._stop.is_set():
                msg: _rqueue.TaskMessage | None = None
                waited = aside.pop_due()
                if waited is not None:
                    delivery, msg, holds_credit = waited.delivery, waited.message, waited.holds_credit
                else:
                    due_in = aside.next_due_in()
                    got = buffer.get(IDLE_WAIT_S if due_in is None else min(IDLE_WAIT_S, due_in))
                    if got is None:
                        executor.flush()
                        self._check_fetching()
                        continue
                    delivery, holds_credit = got, True
                try:
                    if lane is not None and msg is None and (plan := executor.fast_plan()) is not None:
                        holds_credit = False  # the lane gives back the credit of each delivery it settles
                        logged = logger.isEnabledFor(logging.INFO)
                        handed = lane.run(
                            delivery, plan, executor.results, executor.acks, executor.linger_left_s(), BATCH, logged
                        )
                        deferred = None
                        if handed is not None:  # this one needs the executor (the lane marked the slot)
                            delivery, holds_credit = handed[0], True
                            deferred = executor.take_over(*handed)
                    else:
                        deferred = self._handle(executor, delivery, msg)
                    if deferred is not None:
                        # Over its rate limit: wait aside (still leased) while other deliveries run.
                        wait_s, msg = deferred
                        if aside.put(delivery, msg, wait_s, holds_credit):
                            buffer.done()
                        holds_credit = False
                except (BrokerError, BackendError, OSError) as exc:
                    # The message stays leased: it is delivered again when its lease expires.
                    logger.error("Broker or backend failed while handling message %s: %s", delivery.tag, exc)
                    time.sleep(BROKER_ERROR_PAUSE_S)
                finally:
                    if self.running is not None:
                        self.running.clear()
                    if holds_credit:
                        buffer.done()
                self._flush_after_task(executor)
                if self.retire is not None and self.retire(executor):
                    self.stop()  # between tasks: what it holds goes back, then the process ends
        finally:
            executor.flush(give_up_after_s=SHUTDOWN_FLUSH_S)
            executor.close()

    def _flush_after_task(self, executor: Executor) -> None:
        """Write the open batch once nothing else waits to run, or it is old or full enough."""
        buffer = self.buffer
        dry = len(buffer) == 0
        if not (dry or executor.flush_due() or len(executor.acks) >= BATCH):
            return
        if dry and executor.writer.idle():
            # Nothing else to run, nothing being written: write here, at the lowest latency.
            # More may arrive meanwhile; the wait is no task's time (PrefetchBuffer.discount).
            began = time.monotonic()
            executor.flush()
            buffer.discount(time.monotonic() - began)
        else:
            executor.flush_behind()  # written by the writer thread while the next tasks run

    def _handle(
        self, executor: Executor, delivery: _rqueue.Delivery, msg: _rqueue.TaskMessage | None
    ) -> tuple[float, _rqueue.TaskMessage] | None:
        """One delivery through the executor's Python path."""
        if self.running is not None:
            self.running.set(delivery.tag)
        if FAILPOINT is not None:
            failpoint.hit("after_fetch")
        return executor.handle(delivery, msg)

    #: Why this process stopped consuming on its own (its broker can never be used again), if it did.
    failure: str | None = None

    def _check_fetching(self) -> None:
        """Stop when the fetching thread ended on its own: it retries every passing fault, so the
        broker can never be used again (an SQLite file replaced). Held messages stay in that
        broker; a restarted process uses the new one."""
        failure = None if self._stop.is_set() else self.transport.failure()
        if failure is not None and self.failure is None:
            self.failure = failure
            logger.critical("Stopped consuming: %s", failure)
            self.stop()

    def _return_unstarted(self) -> None:
        """Give back what this process still holds: the unstarted prefetched messages, then any
        lease left over (a fetch whose reply was lost, a flush that gave up) so nothing waits for
        its lease to expire."""
        unstarted = self.transport.stop()
        waiting = self.aside.drain()
        recovery = capability(self.app.broker, LeaseRecovery)
        try:
            if unstarted:
                self.transport.requeue([d.tag for d in unstarted])
                logger.info("Returned %d unstarted message(s) to the queue", len(unstarted))
            if waiting:
                self.transport.requeue([w.delivery.tag for w in waiting])
                logger.info("Returned %d message(s) waiting for their rate limit to the queue", len(waiting))
            leftover = 0 if recovery is None else recovery.requeue_owner(self.owner, self.max_deliveries)
            if leftover:
                logger.warning("Returned %d message(s) still leased by this worker to the queue", leftover)
        except (BrokerError, OSError) as exc:
            logger.error("Could not return held messages (%s); they come back when their leases expire", exc)
        finally:
            self.transport.close()  # the last acks are written before the process may exit
