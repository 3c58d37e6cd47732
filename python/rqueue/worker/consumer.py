"""One worker process's consumer: a Rust transport thread filling a prefetch buffer, drained by
one or more executor threads.

Used directly by the ``solo`` and ``threads`` pools, and by each child of the ``prefork`` pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rqueue import _rqueue
from rqueue.exceptions import BackendError, BrokerError
from rqueue.worker import failpoint
from rqueue.worker.executor import SHUTDOWN_FLUSH_S, Executor
from rqueue.worker.failpoint import ACTIVE as FAILPOINT
from rqueue.worker.timelimit import TaskGuard, TimeLimits, Watchdog

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.worker.pool import RunningSlot
    from rqueue.worker.state import Revoked

logger = logging.getLogger("rqueue.worker")

#: How long to pause after the broker failed mid-message.
BROKER_ERROR_PAUSE_S = 0.5

#: How long an idle executor waits on the buffer before re-checking the stop flag.
IDLE_WAIT_S = 0.1


def owner_id(hostname: str, pid: int) -> str:
    """The lease owner name of one worker process."""
    return f"{hostname}/{pid}"


class Consumer:
    """Consumes ``queues`` in this process with ``threads`` executor threads.

    ``stop()`` (safe from a signal handler) is a warm shutdown: running tasks finish, and the
    messages fetched but not started go back to their queue at once.
    """

    def __init__(
        self,
        app: App,
        queues: Sequence[str],
        hostname: str,
        revoked: Revoked,
        threads: int = 1,
        running: RunningSlot | None = None,
    ) -> None:
        self.app = app
        self.running = running
        self.revoked = revoked
        self.queues = list(queues)
        self.hostname = hostname
        self.threads = max(1, threads)
        self.owner = owner_id(hostname, os.getpid())
        self._stop = threading.Event()
        #: Effective time limits; in prefork the supervisor enforces them, here they pick the soft
        #: limit the watchdog enforces (solo, threads).
        self.limits = TimeLimits(app)
        self.watchdog = Watchdog() if running is None else None
        self.main_guard: TaskGuard | None = None
        conf = app.conf
        self.buffer = _rqueue.PrefetchBuffer(max(1, self.threads * int(conf.worker_prefetch_multiplier)))
        self.transport = app.broker.consumer(
            self.queues,
            self.owner,
            self.buffer,
            lease_s=float(conf.broker_visibility_timeout),
            max_deliveries=int(conf.broker_max_deliveries),
            poll_max_ms=int(conf.worker_poll_max_ms),
        )

    def run(self) -> None:
        """Consume until ``stop()``; then hand back unstarted messages and flush."""
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

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _executor_loop(self) -> None:
        executor = Executor(
            self.app, self.app.broker, self.hostname, self.revoked, self.limits, self.running, self.watchdog
        )
        executor.stopping = self._stop.is_set
        if threading.current_thread() is threading.main_thread():
            self.main_guard = executor.guard
        buffer = self.buffer
        try:
            while not self._stop.is_set():
                delivery = buffer.get(IDLE_WAIT_S)
                if delivery is None:
                    executor.flush()
                    continue
                if self.running is not None:
                    self.running.set(delivery.tag)
                if FAILPOINT is not None:
                    failpoint.hit("after_fetch")
                try:
                    executor.handle(delivery)
                except (BrokerError, BackendError, OSError) as exc:
                    # The message stays leased: it is delivered again when its lease expires.
                    logger.error("Broker or backend failed while handling message %s: %s", delivery.tag, exc)
                    time.sleep(BROKER_ERROR_PAUSE_S)
                finally:
                    if self.running is not None:
                        self.running.clear()
                    buffer.done()
                if len(buffer) == 0 or executor.flush_due():
                    executor.flush()
        finally:
            executor.flush(give_up_after_s=SHUTDOWN_FLUSH_S)

    def _return_unstarted(self) -> None:
        """Give back what this process still holds: the unstarted prefetched messages, then any
        lease left over (a fetch whose reply was lost, a flush that gave up) so nothing waits for
        its lease to expire."""
        unstarted = self.transport.stop()
        broker = self.app.broker
        try:
            if unstarted:
                broker.requeue([d.tag for d in unstarted])
                logger.info("Returned %d unstarted message(s) to the queue", len(unstarted))
            leftover = broker.requeue_owner(self.owner, int(self.app.conf.broker_max_deliveries))
            if leftover:
                logger.warning("Returned %d message(s) still leased by this worker to the queue", leftover)
        except (BrokerError, OSError) as exc:
            logger.error("Could not return held messages (%s); they come back when their leases expire", exc)
