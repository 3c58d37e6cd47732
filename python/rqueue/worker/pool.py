"""The prefork pool: a supervisor process and N child processes, each a full consumer.

Each child leases its own messages, so no message passes between processes (remote control
reaches the children over a socket pair each, ``link.py``; time limits through a shared slot). A
child that dies is replaced, and the supervisor returns its leased messages to the queue at once (a message
that keeps killing children is dead-lettered after ``broker_max_deliveries``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from rqueue import serialization, signals, states
from rqueue.backends.base import ResultRecord
from rqueue.brokers.base import LeaseRecovery, capability, owner_id
from rqueue.control import revocation_expiry_ms
from rqueue.exceptions import BackendError, BrokerError, TaskRevokedError, TaskTerminated, TimeLimitExceeded
from rqueue.worker import failpoint
from rqueue.worker.completion import completer_for
from rqueue.worker.consumer import Consumer
from rqueue.worker.control import ControlError
from rqueue.worker.link import ChildLink
from rqueue.worker.slot import RunningSlot, RunningTask
from rqueue.worker.timelimit import SOFT_LIMIT_SIGNAL, TERMINATE_SIGNAL, TimeLimits, install_soft_limit_handler
from rqueue.worker.verdicts import LOST, STOPPED, TERMINATED, Verdicts

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.worker.executor import Executor
    from rqueue.worker.hooks import Hooks
    from rqueue.worker.ratelimit import RateLimits
    from rqueue.worker.state import Revoked

logger = logging.getLogger("rqueue.worker")

SHUTDOWN_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGQUIT}

#: Signals the supervisor sends a child about its running task.
TASK_SIGNALS = {SOFT_LIMIT_SIGNAL, TERMINATE_SIGNAL}

#: Supervisors check that children are alive (and children that the parent is) this often.
CHECK_INTERVAL_S = 0.5
#: How long the supervisor waits for children to acknowledge a change (queues, revocations).
LINK_TIMEOUT_S = 1.0
#: ``terminate()``: how long a task has to stop after TaskTerminated is raised in it, before its child is killed.
TERMINATE_GRACE_S = 5.0
#: Autoscaling: how often the supervisor looks at how busy its children are. (How long a child
#: stays idle before the pool shrinks by it is ``worker_autoscale_keepalive_s``, default
#: ``rqueue.config.AUTOSCALE_KEEPALIVE_S``.)
AUTOSCALE_CHECK_S = 1.0
_SIGTERM = signal.SIGTERM  # PreforkPool.signal() shadows the module in the class body


@dataclass
class _Stop:
    """Why the supervisor is stopping a child: the task it runs went past its hard time limit
    (``time_limit``) or is being terminated (``terminated``)."""

    task: RunningTask
    reason: str
    limit: float  # the hard limit, for time_limit
    kill_at: float  # time.monotonic() after which the child is SIGKILLed if still running the task
    killed: bool = False


class PreforkPool:
    """Starts, watches and replaces child processes; forwards warm and cold shutdown to them;
    enforces time limits and terminates tasks.

    ``set_time_limit``, ``terminate`` and ``active`` may be called from other threads of the
    supervisor (remote control).
    """

    def __init__(  # noqa: PLR0913 - the node state the supervisor hands each child, each named
        self,
        app: App,
        queues: Sequence[str],
        hostname: str,
        concurrency: int,
        revoked: Revoked,
        rate_limits: RateLimits | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.app = app
        self.hooks = hooks
        self.revoked = revoked
        self.rate_limits = rate_limits
        self.queues = list(queues)
        self.hostname = hostname
        self.concurrency = concurrency
        self.children: dict[int, int] = {}  # pid -> slot
        self.links: dict[int, ChildLink] = {}  # slot -> channel to its current child
        self.running = {slot: RunningSlot() for slot in range(concurrency)}
        #: Without LeaseRecovery the broker returns a dead child's messages itself: the children
        #: learn from these which one was running (counted) or stopped (outcome stored).
        self.verdicts = Verdicts(list(self.running.values())) if capability(app.broker, LeaseRecovery) is None else None
        self.shutdown = 0  # 0 running, 1 warm, 2 cold
        self.failed = False  # a child's broker became unusable: exit non-zero so a supervisor restarts us
        self.limits = TimeLimits(app)
        self._lock = threading.Lock()
        self._stopping: dict[int, _Stop] = {}  # pid -> why the supervisor is stopping it
        self._soft_told: dict[int, int] = {}  # slot -> the run told it is past its soft limit
        conf = app.conf
        #: Soft shutdown (``worker_soft_shutdown_timeout``): after a warm shutdown began, running
        #: tasks get this long; then a cold shutdown returns their messages. 0: wait for them.
        self.soft_shutdown_s = float(conf.worker_soft_shutdown_timeout or 0.0)
        self.soft_shutdown_on_idle = bool(conf.worker_enable_soft_shutdown_on_idle)
        self._soft_deadline: float | None = None  # time.monotonic()
        self._cold_reason = ""  # why the cold shutdown happened, for the final log line
        self._returned_cold = 0  # messages of running tasks given back by the cold shutdown
        #: Children told to stop because the pool shrinks (pid -> slot): not replaced.
        self._retiring: dict[int, int] = {}
        #: Autoscaling (``--autoscale=MAX,MIN``): None when the pool has a fixed size.
        self.autoscale: tuple[int, int] | None = None
        self.keepalive_s = float(conf.worker_autoscale_keepalive_s)
        self._idle_since: dict[int, float] = {}  # slot -> time.monotonic() since when its child is idle
        self._next_scale = 0.0
        #: Called with the pid of each child that exited, after its messages were seen to.
        self.on_child_exit: list[Callable[[int], None]] = []

    def run(self, on_ready: Callable[[], None] | None = None, on_idle: Callable[[float], None] | None = None) -> int:
        """Run until every child has exited after a shutdown signal; returns the exit code.

        ``on_idle(seconds)`` is called between checks of the children (remote control); it may
        take up to that long.
        """
        for slot in range(self.concurrency):
            self._spawn(slot)
        if on_ready is not None:
            on_ready()
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                self._enforce_limits()
                self._check_soft_shutdown()
                if self.shutdown == 0 and self.autoscale is not None:
                    self._autoscale_step()
                # Remote control, or a pause; also how often time limits are checked.
                (on_idle or time.sleep)(CHECK_INTERVAL_S / 10)
                continue
            slot = self.children.pop(pid, -1)
            if slot < 0:
                continue
            retired = self._retiring.pop(pid, None) is not None
            self._reap(pid, slot, status, retired)
            if self.shutdown == 0 and not retired:
                self._spawn(slot)
        self._wait_soft_on_idle()
        self._log_stopped()
        return 1 if self.failed else 0

    def _check_soft_shutdown(self) -> None:
        """After ``worker_soft_shutdown_timeout`` of a warm shutdown, go cold: the running tasks'
        messages go back to the queue now rather than when the orchestrator kills the worker."""
        if self.shutdown != 1 or self._soft_deadline is None or time.monotonic() < self._soft_deadline:
            return
        logger.warning(
            "Soft shutdown timeout (%gs) passed with %d task(s) still running: cold shutdown; "
            "their messages go back to the queue",
            self.soft_shutdown_s,
            len(self.active()),
        )
        self._cold_reason = f"worker_soft_shutdown_timeout of {self.soft_shutdown_s:g}s passed"
        self.shutdown = 2
        self._kill_all(signal.SIGKILL)

    def _wait_soft_on_idle(self) -> None:
        """``worker_enable_soft_shutdown_on_idle``: Celery waits the soft shutdown timeout out even
        with nothing running; so does this pool (only after a warm shutdown that did not go cold)."""
        if self.shutdown != 1 or not self.soft_shutdown_on_idle or self._soft_deadline is None:
            return
        left = self._soft_deadline - time.monotonic()
        if left > 0:
            logger.info("Soft shutdown on idle: waiting %.1fs (worker_enable_soft_shutdown_on_idle)", left)
            time.sleep(left)

    def _log_stopped(self) -> None:
        """The pool's last line: that the worker stopped, and how."""
        if self.shutdown >= 2:
            why = f" ({self._cold_reason})" if self._cold_reason else ""
            logger.warning(
                "Worker %s stopped: cold shutdown%s; %d message(s) of running tasks went back to the queue",
                self.hostname,
                why,
                self._returned_cold,
            )
        else:
            logger.info("Worker %s stopped: warm shutdown; every running task finished", self.hostname)

    def signal(self, signum: int) -> None:
        """First signal: warm shutdown of every child (limited to ``worker_soft_shutdown_timeout``
        when that is set); second: cold (SIGKILL, the running tasks' messages go back)."""
        self.shutdown += 1
        if self.shutdown == 1:
            if self.soft_shutdown_s > 0:
                self._soft_deadline = time.monotonic() + self.soft_shutdown_s
                logger.warning(
                    "Warm shutdown: running tasks have %gs to finish (worker_soft_shutdown_timeout), "
                    "then their messages go back to the queue (signal again for a cold shutdown now)",
                    self.soft_shutdown_s,
                )
            else:
                logger.warning("Warm shutdown: waiting for running tasks (signal again for a cold shutdown)")
            self._kill_all(signal.SIGTERM)
        elif self.shutdown == 2:
            logger.warning("Cold shutdown: stopping running tasks; their messages go back to the queue")
            self._cold_reason = "signal received during the warm shutdown"
            self._kill_all(signal.SIGKILL)

    # -- remote control (rqueue.worker.control.Processes), from run()'s on_idle, in the main thread ---

    def reports(self, timeout_s: float) -> list[dict[str, Any]]:
        replies = self._ask_all({"op": "report"}, timeout_s)
        reports = [reply for reply in replies.values() if isinstance(reply, dict)]
        if len(reports) < len(self.children):
            # A child that did not answer in time (stuck in C code that holds the GIL): what its
            # shared slot says it runs.
            answered = {report.get("pid") for report in reports}
            for task in self.active():
                if task.pid not in answered:
                    reports.append({"pid": task.pid, "active": [_running_info(task, self.hostname)]})
        return reports

    def set_queues(self, queues: list[str]) -> None:
        self.queues = list(queues)  # children started later consume these too
        self._ask_all({"op": "queues", "queues": self.queues}, LINK_TIMEOUT_S)

    def revoke(self, task_ids: list[str]) -> None:
        self._ask_all({"op": "revoke", "ids": task_ids}, LINK_TIMEOUT_S)

    def warm_shutdown(self) -> None:
        self.signal(signal.SIGTERM)

    def resize(self, method: str, args: dict[str, Any]) -> str:
        """Remote control ``pool_grow N``, ``pool_shrink N`` (not while autoscaling, as in Celery)
        and ``autoscale MAX MIN``; the ``ok`` reply. ControlError for bad input."""
        if self.shutdown:
            raise ControlError(f"{method}: the worker is shutting down")
        if method == "autoscale":
            if self.autoscale is None:
                raise ControlError("autoscale is not enabled on this worker (start it with --autoscale=MAX,MIN)")
            max_size = _count(args.get("max"), "max", self.autoscale[0])
            min_size = _count(args.get("min"), "min", self.autoscale[1])
            if min_size > max_size:
                raise ControlError(f"autoscale: min ({min_size}) must not exceed max ({max_size})")
            self.set_autoscale(max_size, min_size)
            logger.info("Autoscale now max=%d min=%d", max_size, min_size)
            return f"autoscale now max={max_size} min={min_size}"
        if self.autoscale is not None:
            raise ControlError(f"{method} is not supported with autoscale. Adjust autoscale range instead.")
        n = _count(args.get("n", 1), "n", 1)
        if method == "pool_grow":
            self.grow(n)
            return "pool will grow"
        if n >= self.concurrency:
            raise ControlError(
                f"pool_shrink {n}: the pool has {self.concurrency} process(es) and at least one must stay"
            )
        self.shrink(n)
        return "pool will shrink"

    def size(self) -> dict[str, Any]:
        info: dict[str, Any] = {"max-concurrency": self.concurrency}
        if self.autoscale is not None:
            info["autoscaler"] = {"max": self.autoscale[0], "min": self.autoscale[1], "qty": self.concurrency}
        return info

    def counts(self) -> tuple[int, int]:
        """``(active, processed)`` from the children's slots: messages taken and held now."""
        taken = holding = 0
        for slot in list(self.running.values()):
            run, held = slot.runs()
            taken += run
            holding += held
        return holding, taken - holding

    def _ask_all(self, request: dict[str, Any], timeout_s: float) -> dict[int, Any]:
        """Send ``request`` to every child, then collect the replies (by slot) that come within
        ``timeout_s``; None for a child that did not reply."""
        sent = []
        for slot, link in list(self.links.items()):
            with contextlib.suppress(OSError):
                sent.append((slot, link, link.send(request)))
        deadline = time.monotonic() + timeout_s
        return {slot: link.receive(seq, deadline) for slot, link, seq in sent}

    # -- pool size (remote control pool_grow / pool_shrink / autoscale; autoscaling) -------------------

    def grow(self, n: int) -> None:
        """Start ``n`` more children (in the main thread: remote control runs there)."""
        for _ in range(n):
            self._spawn(self._free_slot())
            self.concurrency += 1
        logger.info("Pool grew by %d to %d process(es)", n, self.concurrency)

    def shrink(self, n: int) -> None:
        """Stop ``n`` children warmly, idle ones first: a busy one finishes its task, and its
        prefetched messages go back to the queue."""
        if n >= self.concurrency:
            raise ValueError(f"cannot shrink a pool of {self.concurrency} process(es) by {n}: at least one must stay")
        live = [(pid, slot) for pid, slot in self.children.items() if pid not in self._retiring]
        live.sort(key=lambda item: self.running[item[1]].read() is not None)  # idle first
        for pid, slot in live[:n]:
            self._retire(pid, slot)
        logger.info("Pool shrinks by %d to %d process(es)", n, self.concurrency)

    def set_autoscale(self, max_size: int, min_size: int) -> None:
        """Scale between ``min_size`` and ``max_size`` processes from now on; a pool outside the
        new range is brought into it at once."""
        if not 1 <= min_size <= max_size:
            raise ValueError(f"invalid autoscale range max={max_size} min={min_size}: need 1 <= min <= max")
        self.autoscale = (max_size, min_size)
        if self.concurrency > max_size:
            self.shrink(self.concurrency - max_size)
        elif self.concurrency < min_size:
            self.grow(min_size - self.concurrency)

    def _free_slot(self) -> int:
        used = set(self.children.values())
        slot = next(i for i in range(len(self.running) + 1) if i not in used)
        if slot not in self.running:
            self.running[slot] = RunningSlot()
            if self.verdicts is not None:
                self.verdicts.add_slot(self.running[slot])
        return slot

    def _retire(self, pid: int, slot: int) -> None:
        self._retiring[pid] = slot
        self.concurrency -= 1
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def _autoscale_step(self) -> None:
        """Grow by what waits in the queues (up to max) when every child is busy; shrink by one
        child idle for the keepalive (down to min). Checked every ``AUTOSCALE_CHECK_S``."""
        now = time.monotonic()
        if now < self._next_scale or self.autoscale is None:
            return
        self._next_scale = now + AUTOSCALE_CHECK_S
        max_size, min_size = self.autoscale
        live = {pid: slot for pid, slot in self.children.items() if pid not in self._retiring}
        busy = 0
        for slot in live.values():
            if self.running[slot].read() is not None:
                busy += 1
                self._idle_since.pop(slot, None)
            else:
                self._idle_since.setdefault(slot, now)
        if busy >= len(live) and self.concurrency < max_size:
            waiting = self._waiting()
            if waiting:
                self.grow(min(max_size - self.concurrency, waiting))
                return
        if self.concurrency > min_size:
            for pid, slot in live.items():
                since = self._idle_since.get(slot)
                if since is not None and now - since >= self.keepalive_s:
                    logger.info("Child process %d idle for %gs: the pool shrinks", pid, self.keepalive_s)
                    self._retire(pid, slot)
                    self._idle_since.pop(slot, None)
                    return

    def _waiting(self) -> int:
        """Messages ready in the consumed queues (0 when the broker cannot tell)."""
        total = 0
        for queue in self.queues:
            try:
                total += int(self.app.broker.queue_length(queue))
            except (BrokerError, OSError, NotImplementedError) as error:
                logger.debug("Autoscale: cannot read the length of %s: %s", queue, error)
        return total

    # -- time limits and termination -----------------------------------------------------------------

    def set_time_limit(self, task_name: str, soft: float | None, hard: float | None) -> None:
        """Override both time limits of ``task_name`` (seconds; None = no limit) from now on, for
        messages that carry no limit of their own. ConfigurationError for a non-positive limit.

        The children hear of it too (and new ones inherit it), so a child writes out the results it
        holds before a task that may be killed at its hard limit."""
        with self._lock:
            self.limits.set(task_name, soft, hard)
        self._ask_all({"op": "time_limit", "task": task_name, "soft": soft, "hard": hard}, LINK_TIMEOUT_S)

    def active(self) -> list[RunningTask]:
        """The tasks the children are running, with their effective time limits."""
        with self._lock:
            slots = list(self.children.values())
            tasks = [task for task in (self.running[slot].read() for slot in slots) if task is not None]
            out = []
            for task in tasks:
                soft, hard = self._limits(task)
                out.append(dataclasses.replace(task, soft=soft, hard=hard))
            return out

    def terminate(self, task_id: str, signum: int = _SIGTERM, grace_s: float = TERMINATE_GRACE_S) -> bool:
        """Stop the task ``task_id`` if a child is running it; returns whether one was.

        ``SIGKILL`` kills the child at once. Any other signal (SIGTERM by default) is not passed on
        as such (a child's SIGTERM means "warm shutdown"): the child is told to raise
        :class:`~rqueue.exceptions.TaskTerminated` in the task, which lets its ``finally`` blocks
        run; the child records the task REVOKED, acks its message and goes on with the next one.
        A task still running ``grace_s`` seconds later (it swallowed the exception, or is stuck in
        C code) has its child SIGKILLed. After a kill the supervisor records the task REVOKED
        (``TaskRevokedError("terminated")``), acks its message, returns the child's other messages
        to the queue uncounted and starts a new child.
        """
        with self._lock:
            for pid, slot in list(self.children.items()):
                task = self.running[slot].read()
                if task is None or task.task_id != task_id:
                    continue
                if pid in self._stopping:
                    return True
                stop = self._stopping[pid] = _Stop(task, "terminated", 0.0, time.monotonic() + max(0.0, grace_s))
                logger.warning("Terminating task %s[%s] (signal %d)", task.name, task_id, signum)
                if signum == signal.SIGKILL:
                    self._kill(pid, stop)
                else:
                    self.running[slot].request_terminate(task.run)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, TERMINATE_SIGNAL)
                return True
        return False

    def _limits(self, task: RunningTask) -> tuple[float | None, float | None]:
        return self.limits.for_task(task.name, task.soft, task.hard)

    def _enforce_limits(self) -> None:
        """Tell a child whose task is past its soft limit; kill one past its hard limit or past the
        grace period of a termination."""
        now, mono = time.time(), time.monotonic()
        with self._lock:
            for pid, slot in list(self.children.items()):
                task = self.running[slot].read()
                stop = self._stopping.get(pid)
                if stop is not None:
                    if stop.killed:
                        continue  # reaped soon
                    if task is None or task.run != stop.task.run:
                        del self._stopping[pid]  # the task ended by itself (a terminated task raised)
                    elif mono >= stop.kill_at:
                        logger.error(
                            "Task %s[%s] did not stop within its grace period; killing child %d",
                            task.name,
                            task.task_id,
                            pid,
                        )
                        self._kill(pid, stop)
                    continue
                if task is None:
                    continue
                soft, hard = self._limits(task)
                elapsed = now - task.started
                if hard is not None and elapsed >= hard:
                    logger.error("Hard time limit (%gs) exceeded for %s[%s]", hard, task.name, task.task_id)
                    self._kill(pid, self._stopping.setdefault(pid, _Stop(task, "time_limit", hard, mono)))
                elif soft is not None and elapsed >= soft and self._soft_told.get(slot) != task.run:
                    self._soft_told[slot] = task.run
                    logger.warning("Soft time limit (%gs) exceeded for %s[%s]", soft, task.name, task.task_id)
                    self.running[slot].request_soft_limit(task.run, soft)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, SOFT_LIMIT_SIGNAL)

    def _kill(self, pid: int, stop: _Stop) -> None:
        stop.killed = True
        if self.verdicts is not None:  # before the kill: the message may come back at once
            self.verdicts.record(stop.task.task_id, STOPPED if stop.reason == "time_limit" else TERMINATED)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _record_stop(self, stop: _Stop) -> bool:
        """Store the outcome of a task whose child was killed to stop it, and ack its message (or,
        where only the dead child's channel could, tell the child that receives it again)."""
        recovery = capability(self.app.broker, LeaseRecovery)
        task = stop.task
        exc: BaseException
        if stop.reason == "time_limit":
            status, exc = states.FAILURE, TimeLimitExceeded(stop.limit)
        else:
            status, exc = states.REVOKED, TaskRevokedError("terminated")
        backend = self.app.backend
        record = ResultRecord(task.task_id, status, serialization.exception_to_meta(exc))
        try:
            if recovery is not None:
                results = [] if task.ignore_result else [(task.task_id, status, backend.encode(record))]
                completer_for(recovery, backend)(results, [task.tag])
            elif not task.ignore_result:  # its message comes back to a child: see _kill
                backend.store(record)
        except (BrokerError, BackendError, OSError) as error:
            logger.error("Cannot record %s of task %s[%s]: %s", status, task.name, task.task_id, error)
            return False
        return True

    # -- children -----------------------------------------------------------------------------------

    def _kill_all(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reap(self, pid: int, slot: int, status: int, retired: bool = False) -> None:
        try:
            self._settle_child(pid, slot, status, retired)
        finally:
            for callback in self.on_child_exit:
                callback(pid)

    def _settle_child(self, pid: int, slot: int, status: int, retired: bool) -> None:
        code = os.waitstatus_to_exitcode(status)
        self._idle_since.pop(slot, None)
        with self._lock:
            stop = self._stopping.pop(pid, None)
        last = self.running[slot].read()
        running = self.running[slot].get()
        self.running[slot].clear()
        # A child killed to stop its task: that task's outcome is recorded and its message acked,
        # so it neither runs again nor counts as a delivery that killed a worker.
        stopped = stop is not None and stop.killed and last is not None and last.run == stop.task.run
        if stopped and stop is not None and self._record_stop(stop):
            running = None
        if code == EXIT_CONSUMING_FAILED:
            # Its broker can never be used again (the child logged why): so can no other child.
            logger.critical("Child process %d stopped consuming; stopping this worker so that it is restarted", pid)
            self.failed = True
            if self.shutdown == 0:
                self.signal(signal.SIGTERM)
            return
        # A cold shutdown killed it: its running task was not at fault, so its message goes back
        # uncounted (it must not be dead-lettered as a message that kills workers).
        cold = self.shutdown >= 2 and code == -signal.SIGKILL and not stopped
        recovery = capability(self.app.broker, LeaseRecovery)
        returned = 0
        if recovery is not None:
            counted = {running} if running and not cold else set()
            try:
                returned = recovery.release_lost_worker(
                    owner_id(self.hostname, pid), int(self.app.conf.broker_max_deliveries), counted
                )
            except (BrokerError, OSError) as error:
                logger.error(
                    "Cannot return the messages of child %d (%s): they come back when their leases expire", pid, error
                )
        elif last is not None and self.verdicts is not None and not stopped and not cold:
            # The broker returns the dead child's messages when its connection drops; the one
            # it was running counts as a delivery wherever on this node it comes back.
            self.verdicts.record(last.task_id, LOST)
        if stopped and stop is not None:
            why = "hard time limit" if stop.reason == "time_limit" else "task terminated"
            logger.error(
                "Child process %d killed (%s of %s[%s]); %d other message(s) it held went back to the queue",
                pid,
                why,
                stop.task.name,
                stop.task.task_id,
                returned,
            )
        elif cold:
            if running or last is not None:
                self._returned_cold += 1
                what = f"{last.name}[{last.task_id}]" if last is not None else f"message {running}"
                logger.warning(
                    "Child process %d stopped in cold shutdown while running %s; %d message(s) it held went back",
                    pid,
                    what,
                    returned,
                )
        elif retired and code == 0:
            logger.info("Child process %d stopped (the pool shrank to %d)", pid, self.concurrency)
        elif code == EXIT_RETIRED and self.shutdown == 0:
            logger.debug("Child process %d retired (it logged why); starting a new one", pid)
        elif self.shutdown == 0 or code != 0:
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            logger.error(
                "Child process %d exited (%s); %d message(s) it held went back to the queue", pid, how, returned
            )

    def _spawn(self, slot: int) -> None:
        # Shutdown signals wait until the new child is in self.children (so it is told to stop)
        # and, in the child, until its own handlers are installed (so do the task signals).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS | TASK_SIGNALS)
        old = self.links.pop(slot, None)
        if old is not None:
            old.close()
        link = self.links[slot] = ChildLink()
        pid = os.fork()
        if pid:
            link.in_parent()
            self.children[pid] = slot
            if self.shutdown:
                os.kill(pid, signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            return
        code = 1
        for other in self.links.values():
            if other is not link:
                other.close()
        link.in_child()
        try:
            self.running[slot].attach()
            code = run_child(
                self.app,
                self.queues,
                self.hostname,
                slot,
                previous,
                self.revoked,
                self.running[slot],
                link,
                self.limits,
                self.rate_limits,
                self.hooks,
                self.verdicts,
            )
        except BaseException:
            logger.exception("Child process %d crashed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)


def _count(value: Any, name: str, default: int) -> int:
    """A process count from a control message: a positive integer (or a string of one)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ControlError(f"{name} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ControlError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ControlError(f"{name} must be a positive integer, got {value!r}")
    return number


def run_child(  # noqa: PLR0913 - what a forked child inherits, each named
    app: App,
    queues: Sequence[str],
    hostname: str,
    slot: int,
    sigmask: Iterable[int],
    revoked: Revoked,
    running: RunningSlot,
    link: ChildLink,
    limits: TimeLimits,
    rate_limits: RateLimits | None = None,
    hooks: Hooks | None = None,
    verdicts: Verdicts | None = None,
) -> int:
    """The body of one prefork child: consume until told to stop or the parent is gone."""
    parent = os.getppid()
    failpoint.kill_supervisor = True
    _set_process_name(f"ForkPoolWorker-{slot + 1}")
    # Before the consumer connects: receivers open this process's own connections here.
    signals.worker_process_init.send(sender=None)
    consumer = Consumer(
        app,
        queues,
        hostname,
        revoked,
        threads=1,
        running=running,
        rate_limits=rate_limits,
        hooks=hooks,
        verdicts=verdicts,
    )
    consumer.limits = limits  # the supervisor's, with its run-time overrides (copied by fork)

    def answer(request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "report":
            return consumer.report()
        if op == "queues":
            consumer.set_queues(request["queues"])
        elif op == "revoke":
            revoked.add(request["ids"], revocation_expiry_ms(app.conf))
        elif op == "time_limit":
            consumer.limits.set(request["task"], request["soft"], request["hard"])
        return True

    retiring = Retirement(app)
    if retiring.max_tasks is not None or retiring.max_kib is not None:
        consumer.retire = retiring.due
    link.serve(answer)
    # SIGINT from a terminal reaches the whole process group: only the parent's SIGTERM counts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: _warm_stop(consumer))
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    _install_task_signal_handlers(consumer, running)
    signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
    _watch_parent(parent, consumer.stop)
    consumer.run()
    code = EXIT_CONSUMING_FAILED if consumer.failure else EXIT_RETIRED if retiring.reason else 0
    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=code)
    return code


def _warm_stop(consumer: Consumer) -> None:
    """A child's SIGTERM (in its main thread, which runs the executor): stop taking messages, and
    give back the prefetched ones now rather than once the running task ends."""
    consumer.stop()
    consumer.give_back_prefetched()


#: A child's exit code when it stopped to be replaced (``Retirement``): the supervisor starts a
#: new one without reporting a failure.
EXIT_RETIRED = 75
#: A child's exit code when it stopped consuming because its broker can never be used again
#: (``Consumer.failure``): the whole worker stops, with a non-zero exit code.
EXIT_CONSUMING_FAILED = 76


class Retirement:
    """When a prefork child should stop to be replaced by a fresh one, checked between tasks:
    after ``worker_max_tasks_per_child`` tasks, or once its resident memory passes
    ``worker_max_memory_per_child`` KiB (a leaking task's memory comes back with the process)."""

    def __init__(self, app: App) -> None:
        self.max_tasks = app.conf.worker_max_tasks_per_child
        self.max_kib = app.conf.worker_max_memory_per_child
        self.reason = ""

    def due(self, executor: Executor) -> bool:
        done = sum(executor.processed.values())
        if self.max_tasks is not None and done >= self.max_tasks:
            self.reason = f"{done} tasks done (worker_max_tasks_per_child = {self.max_tasks})"
        elif self.max_kib is not None and (rss := _rss_kib()) > self.max_kib:
            self.reason = f"resident memory {rss} KiB (worker_max_memory_per_child = {self.max_kib} KiB)"
        else:
            return False
        logger.info("Child process %d: %s; replacing it", os.getpid(), self.reason)
        return True


def _rss_kib() -> int:
    """This process's resident memory now, in KiB (Linux's /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _running_info(task: RunningTask, hostname: str) -> dict[str, Any]:
    """``inspect active``'s entry for a task known only from its slot (no kwargs there)."""
    return {
        "id": task.task_id,
        "name": task.name,
        "args": task.args_repr,
        "hostname": hostname,
        "time_start": task.started,
        "worker_pid": task.pid,
        "acknowledged": False,
    }


def _install_task_signal_handlers(consumer: Consumer, running: RunningSlot) -> None:
    """SIGUSR1 raises SoftTimeLimitExceeded, SIGUSR2 TaskTerminated, in the task the supervisor
    named in the slot, if this child is still running it (a late signal does nothing)."""

    def inside(run: int) -> bool:
        guard = consumer.main_guard
        return guard is not None and guard.inside and run == running.run

    def soft_target() -> float | None:
        run, limit, _ = running.requested()
        return limit if inside(run) else None

    def on_terminate(signum: int, frame: FrameType | None) -> None:
        if inside(running.requested()[2]):
            raise TaskTerminated("terminated")

    install_soft_limit_handler(soft_target)
    signal.signal(TERMINATE_SIGNAL, on_terminate)


def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    """Stop warmly when the supervisor disappears (it was SIGKILLed): no orphan keeps consuming."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(CHECK_INTERVAL_S)
        stop()

    threading.Thread(target=watch, name="rqueue-parent-watch", daemon=True).start()


def _set_process_name(name: str) -> None:
    multiprocessing.current_process().name = name


def install_shutdown_handlers(on_signal: Callable[[int], None]) -> None:
    """Route SIGINT and SIGTERM to ``on_signal`` (in the main thread)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        on_signal(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if sys.platform != "win32":
        signal.signal(signal.SIGQUIT, handler)
