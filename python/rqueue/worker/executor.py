"""Running one message: decode, check, run the task, record the result, ack.

Results and acks are batched: they are written when the prefetch buffer runs dry or a batch is
full, results first, so a crash between the two re-runs a task rather than losing it.
"""

from __future__ import annotations

import logging
import os
import reprlib
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rqueue import _rqueue, serialization, states
from rqueue.backends.base import ResultRecord
from rqueue.exceptions import (
    BackendError,
    BrokerError,
    ContentDisallowed,
    DecodeError,
    Ignore,
    MessageTooLarge,
    NotRegistered,
    Reject,
    Retry,
    SerializationError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TaskTerminated,
)
from rqueue.task import Request, pop_request, push_request
from rqueue.worker import failpoint
from rqueue.worker.failpoint import ACTIVE as FAILPOINT
from rqueue.worker.timelimit import TaskGuard, TimeLimits

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.brokers.base import Broker
    from rqueue.task import Task
    from rqueue.worker.pool import RunningSlot
    from rqueue.worker.ratelimit import RateLimits
    from rqueue.worker.state import Revoked
    from rqueue.worker.timelimit import Watchdog

logger = logging.getLogger("rqueue.worker")

#: Flush results and acks at least every this many tasks...
BATCH = 64
#: ...and once a batch has been open this long (its first task started this long ago). Finished
#: but unacked tasks run again if the worker is killed, so only quick tasks are batched: after a
#: task that ran this long its ack goes out before the next task starts.
LINGER_S = 0.001
#: At shutdown, how long to keep trying to record results and acks while the broker is away.
SHUTDOWN_FLUSH_S = 10.0


class Executor:
    """Runs deliveries for one thread of one worker process (create it in that thread).

    ``slot`` (a prefork child) is told what runs, for the supervisor that enforces time limits;
    without one, ``watchdog`` enforces the soft limit in this process.
    """

    def __init__(
        self,
        app: App,
        broker: Broker,
        hostname: str,
        revoked: Revoked,
        rate_limits: RateLimits | None = None,
        limits: TimeLimits | None = None,
        slot: RunningSlot | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.app = app
        self.limits = limits if limits is not None else TimeLimits(app)
        self.slot = slot
        self.watchdog = watchdog
        self.guard = TaskGuard()
        if watchdog is not None:
            watchdog.add(self.guard)
        self.revoked = revoked
        self.rate_limits = rate_limits
        self.broker = broker
        self.backend = app.backend
        self.hostname = hostname
        conf = app.conf
        self.accept = serialization.accepted_content_types(conf.accept_content)
        self.max_size = int(conf.task_max_message_size)
        #: Tells a flush that keeps failing that the worker is shutting down (set by the consumer).
        self.stopping: Callable[[], bool] = lambda: False
        self.batch_since: float | None = None
        self.results: list[tuple[str, str, bytes]] = []
        self.acks: list[str] = []
        #: What remote control's ``inspect active`` and ``stats`` report.
        self.current: tuple[Request, float] | None = None
        self.processed: Counter[str] = Counter()

    # -- one message ----------------------------------------------------------------------------------

    def handle(
        self, delivery: _rqueue.Delivery, msg: _rqueue.TaskMessage | None = None
    ) -> tuple[float, _rqueue.TaskMessage] | None:
        """Process one delivery; never raises for anything the message or the task did.

        ``msg`` is the delivery's decoded message when it was decoded before (a delivery offered
        again after waiting for its rate limit). Returns None once the delivery is dealt with. A
        task over its rate limit is not run: ``(seconds until a token may be there, the decoded
        message)`` comes back, and nothing was done (not acked, no state recorded; still leased).
        """
        if self.batch_since is None:
            self.batch_since = time.monotonic()
        if msg is None:
            try:
                msg = _rqueue.decode_task_message(delivery.payload, accept=self.accept, max_size=self.max_size)
            except MessageTooLarge as exc:
                self._dead_letter(delivery, "too_large", exc)
                return None
            except ContentDisallowed as exc:
                self._dead_letter(delivery, "content_disallowed", exc, _peek_id(delivery.payload))
                return None
            except DecodeError as exc:
                self._dead_letter(delivery, "decode_error", exc, _peek_id(delivery.payload))
                return None
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a bug of the decoder (a panic), not of the message: keep going
                logger.exception("Decoding message %s raised %s", delivery.tag, type(exc).__name__)
                self._dead_letter(delivery, "decode_error", exc, _peek_id(delivery.payload), logged=True)
                return None
        if FAILPOINT is not None:
            failpoint.hit("after_decode")

        task = self.app.tasks.get(msg.task)
        if task is None:
            error = NotRegistered(f"task {msg.task!r} is not registered with this worker")
            logger.error("Received unregistered task %s[%s]; dead-lettered", msg.task, msg.id)
            self._record(ResultRecord(msg.id, states.FAILURE, serialization.exception_to_meta(error)))
            self._dead_letter(delivery, "unregistered", error, msg.id, logged=True)
            return None

        args, kwargs = msg.args, msg.kwargs
        if args is None or kwargs is None:  # a body only Python decodes (pickle, explicitly accepted)
            try:
                args, kwargs, _embed = serialization.loads(msg.body, msg.content_type, self.accept)
            except (DecodeError, ContentDisallowed, ValueError, TypeError) as exc:
                self._dead_letter(delivery, "decode_error", exc, msg.id)
                return None

        now_ms = time.time() * 1000
        if msg.expires_ms is not None and msg.expires_ms < now_ms:
            logger.info("Task %s[%s] expired before it ran; revoked", msg.task, msg.id)
            self._revoke(delivery, msg.id, "expired")
            return None
        if msg.id in self.revoked:
            logger.info("Discarding revoked task %s[%s]", msg.task, msg.id)
            self._revoke(delivery, msg.id, "revoked")
            return None
        if msg.eta_ms is not None and msg.eta_ms > now_ms + 1:
            # Not due yet (a producer that did not use the broker's schedule): put it back, scheduled.
            self.broker.publish(delivery.queue, delivery.payload, msg.priority, msg.eta_ms)
            self._ack(delivery)
            return None
        if self.rate_limits is not None:
            wait_s = self.rate_limits.acquire(msg.task)
            if wait_s > 0.0:
                return wait_s, msg

        ignore_result = msg.ignore_result or bool(task.option("ignore_result"))
        acks_late = bool(task.option("acks_late"))
        if not acks_late:
            self.broker.ack([delivery.tag])
        logger.info("Task %s[%s] received", msg.task, msg.id)
        if task.option("track_started") and not ignore_result:
            self._record(ResultRecord(msg.id, states.STARTED, {"pid": os.getpid(), "hostname": self.hostname}))
            self.flush()

        request = Request(
            id=msg.id,
            task=msg.task,
            args=list(args),
            kwargs=dict(kwargs),
            retries=msg.retries,
            root_id=msg.root_id,
            parent_id=msg.parent_id,
            group=msg.group_id,
            hostname=self.hostname,
            delivery_info={
                "exchange": msg.exchange,
                "routing_key": msg.routing_key,
                "priority": msg.priority,
                "redelivered": msg.redelivered,
            },
            redelivered=msg.redelivered,
            headers=msg.headers,
        )
        soft, hard = self.limits.for_task(msg.task, msg.soft_time_limit, msg.time_limit)
        if self.slot is not None:
            if hard is not None and (self.results or self.acks):
                self.flush()  # a child killed at the hard limit then loses nothing already done
            args_repr = msg.argsrepr if msg.argsrepr is not None else reprlib.repr(args)
            if self.slot.task_started(msg.id, msg.task, args_repr, msg.soft_time_limit, msg.time_limit, ignore_result):
                soft = None  # the supervisor watches the slot
            elif soft is not None or hard is not None:
                logger.warning(
                    "Task %s[%.40s...]: its id or name is over %d bytes; its time limits are not enforced",
                    msg.task,
                    msg.id,
                    self.slot.MAX_NAME,
                )
        elif soft is not None and self.watchdog is not None:
            self.watchdog.ensure_started()
        started = time.perf_counter()
        push_request(request)
        self.current = (request, time.time())
        guard = self.guard
        try:
            # Exceptions aimed at the task (time limit, terminate) are raised only inside the guard.
            guard.enter(msg.id, msg.task, soft)
            try:
                value = task.fun(task, *args, **kwargs) if task.bind else task.fun(*args, **kwargs)
                if FAILPOINT is not None:
                    failpoint.hit("during_run")
            finally:
                guard.leave()
        except Ignore:
            logger.info("Task %s[%s] ignored", msg.task, msg.id)
        except Retry as retry:
            logger.info("Task %s[%s] retry: %s", msg.task, msg.id, retry)
            reason = retry.exc if retry.exc is not None else retry
            if not ignore_result:
                self._record(ResultRecord(msg.id, states.RETRY, serialization.exception_to_meta(reason)))
        except Reject as rej:
            if rej.requeue:
                logger.info("Task %s[%s] rejected and requeued: %s", msg.task, msg.id, rej.reason)
                self.broker.requeue([delivery.tag])
                return None
            if acks_late:
                self._dead_letter(delivery, "rejected", rej, msg.id)
            return None
        except TaskTerminated:
            logger.warning("Task %s[%s] terminated", msg.task, msg.id)
            if not ignore_result:
                meta = serialization.exception_to_meta(TaskRevokedError("terminated"))
                self._record(ResultRecord(msg.id, states.REVOKED, meta))
        except Exception as exc:
            if isinstance(exc, SoftTimeLimitExceeded) and not exc.args and guard.requested[0] == guard.run:
                exc.args = (guard.requested[1],)  # raised asynchronously (threads pool): by class only
            if self._auto_retry(task, request, exc):
                if acks_late:
                    self._ack(delivery)
                return None
            runtime = time.perf_counter() - started
            tb = traceback.format_exc()
            logger.error("Task %s[%s] raised unexpected: %r (after %.6fs)\n%s", msg.task, msg.id, exc, runtime, tb)
            if not ignore_result:
                self._record(
                    ResultRecord(
                        msg.id,
                        states.FAILURE,
                        serialization.exception_to_meta(exc),
                        tb,
                        self._extended(msg, args, kwargs),
                    )
                )
        else:
            runtime = time.perf_counter() - started
            if logger.isEnabledFor(logging.INFO):
                logger.info("Task %s[%s] succeeded in %.6fs: %s", msg.task, msg.id, runtime, short_repr(value))
            if not ignore_result:
                self._record(ResultRecord(msg.id, states.SUCCESS, value, None, self._extended(msg, args, kwargs)))
        finally:
            pop_request()
            self.current = None
            self.processed[msg.task] += 1
        if acks_late:
            self._ack(delivery)
        return None

    def _auto_retry(self, task: Task[Any, Any], request: Request, exc: Exception) -> bool:
        """Retry ``exc`` when the task's ``autoretry_for`` covers it; True when a retry was scheduled."""
        retry_for = task.option("autoretry_for")
        if not retry_for or not isinstance(exc, tuple(retry_for)):
            return False
        try:
            task.retry(exc=exc, countdown=task.retry_countdown(request.retries))
        except Retry as retry:
            logger.info("Task %s[%s] retry: %s (%r)", request.task, request.id, retry, exc)
            if not task.option("ignore_result"):
                self._record(ResultRecord(request.id, states.RETRY, serialization.exception_to_meta(exc)))
            return True
        except Exception:  # out of retries: the original exception is the outcome
            return False
        return False

    def _revoke(self, delivery: _rqueue.Delivery, task_id: str, why: str) -> None:
        meta = serialization.exception_to_meta(TaskRevokedError(why))
        self._record(ResultRecord(task_id, states.REVOKED, meta))
        self._ack(delivery)

    # -- batching -------------------------------------------------------------------------------------

    def flush_due(self) -> bool:
        """True once the open batch is older than LINGER_S."""
        return self.batch_since is not None and time.monotonic() - self.batch_since >= LINGER_S

    def _record(self, record: ResultRecord) -> None:
        try:
            payload = self.backend.encode(record)
        except SerializationError as exc:
            logger.error("Task [%s]: its result cannot be stored: %s", record.task_id, exc)
            record = ResultRecord(record.task_id, states.FAILURE, serialization.exception_to_meta(exc))
            payload = self.backend.encode(record)
        self.results.append((record.task_id, record.status, payload))

    def _ack(self, delivery: _rqueue.Delivery) -> None:
        self.acks.append(delivery.tag)
        if len(self.acks) >= BATCH:
            self.flush()

    def flush(self, give_up_after_s: float | None = None) -> None:
        """Write pending results, then ack: a crash in between re-runs tasks, never loses them.

        While the broker or backend is unreachable, retry with backoff (the worker pauses rather
        than dropping results); with ``give_up_after_s`` (at shutdown) stop trying after that long,
        and the unacked messages are delivered again once their lease expires.
        """
        self.batch_since = None
        if not (self.results or self.acks):
            return
        results, acks = self.results, self.acks
        self.results, self.acks = [], []
        deadline = None if give_up_after_s is None else time.monotonic() + give_up_after_s
        pause = 0.05
        while True:
            try:
                if FAILPOINT == "after_result":
                    self._complete_in_two_steps(results, acks)
                else:
                    self.broker.complete(self.backend, results, acks)
                if FAILPOINT is not None:
                    failpoint.hit("after_ack")
                return
            except (BrokerError, BackendError, OSError) as exc:
                if deadline is None and self.stopping():
                    deadline = time.monotonic() + SHUTDOWN_FLUSH_S
                if deadline is not None and time.monotonic() >= deadline:
                    logger.error(
                        "Gave up recording %d result(s) and %d ack(s): %s; the messages will be delivered again",
                        len(results),
                        len(acks),
                        exc,
                    )
                    return
                logger.warning(
                    "Cannot record %d result(s) and %d ack(s) yet (%s); retrying in %.2f s",
                    len(results),
                    len(acks),
                    exc,
                    pause,
                )
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _complete_in_two_steps(self, results: list[tuple[str, str, bytes]], acks: list[str]) -> None:
        """Results, then acks, as two writes: only with the ``after_result`` failpoint armed."""
        if results:
            self.backend.write_encoded(results)
        failpoint.hit("after_result")
        if acks:
            self.broker.ack(acks)

    def _dead_letter(
        self,
        delivery: _rqueue.Delivery,
        reason: str,
        exc: BaseException,
        task_id: str | None = None,
        logged: bool = False,
    ) -> None:
        if not logged:
            logger.error(
                "Message %s from queue %r dead-lettered (%s): %s",
                task_id or f"#{delivery.tag}",
                delivery.queue,
                reason,
                exc,
            )
        self.flush()  # earlier acks first: the dead letter is its own atomic move
        self.broker.dead_letter(delivery.tag, reason, str(exc))

    def _extended(self, msg: _rqueue.TaskMessage, args: Any, kwargs: Any) -> dict[str, Any] | None:
        if not self.backend.extended:
            return None
        return {
            "name": msg.task,
            "args": args,
            "kwargs": kwargs,
            "worker": self.hostname,
            "retries": msg.retries,
            "queue": msg.routing_key,
        }


def short_repr(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _peek_id(payload: bytes) -> str | None:
    """The task id of a message that failed to decode, if the headers are readable at all (for the log)."""
    try:
        envelope = _rqueue.loads(payload[: 1 << 20], "application/json")
        return str(envelope["headers"]["id"])
    except Exception:
        return None
