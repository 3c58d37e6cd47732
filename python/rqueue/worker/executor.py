"""Running one message in three steps: admit (decode and check it), run (call the task inside its
guard), settle (record the outcome and ack), with the worker's hook points between them.

Results and acks are batched: they are written when the prefetch buffer runs dry or a batch is
full, results first, so a crash between the two re-runs a task rather than losing it.

The common case takes the native fast lane (``_rqueue.FastLane``): the executor says per batch
which tasks may (``fast_plan``), the lane runs those messages it finds plain and hands the rest
back (``take_over``), so every rule beyond the common case lives here.
"""

from __future__ import annotations

import logging
import os
import reprlib
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NamedTuple

from rqueue import _rqueue, canvas, chord_join, serialization, signals, states, trace
from rqueue.backends.base import ResultRecord
from rqueue.brokers.base import REASON_WORKER_LOST, Recounting
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
    TimeLimitExceeded,
    WorkerLostError,
)
from rqueue.request import REQUEST_STACK, MessageRequest, Request, pop_request, push_request
from rqueue.utils.log import Verbatim
from rqueue.worker import failpoint
from rqueue.worker.completion import BatchWriter, completer_for
from rqueue.worker.failpoint import ACTIVE as FAILPOINT
from rqueue.worker.hooks import Hooks
from rqueue.worker.timelimit import TaskGuard, TimeLimits
from rqueue.worker.verdicts import LOST, STOPPED, TERMINATED, Verdicts

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.brokers.base import BrokerConsumer
    from rqueue.task import Task
    from rqueue.worker.coroutine import ThreadLoop
    from rqueue.worker.hooks import WorkerHook
    from rqueue.worker.ratelimit import RateLimits
    from rqueue.worker.slot import RunningSlot
    from rqueue.worker.state import Revoked
    from rqueue.worker.timelimit import Watchdog

logger = logging.getLogger("rqueue.worker")

#: Flush results and acks at least every this many tasks...
BATCH = 64
#: ...and once a batch has been open this long (its first task started this long ago). Finished
#: but unacked tasks run again if the worker is killed, so only quick tasks are batched: after a
#: task that ran this long its ack is handed to the fetching thread before the next task starts.
LINGER_S = 0.001
#: At shutdown, how long to keep trying to record results and acks while the broker is away.
SHUTDOWN_FLUSH_S = 10.0
#: How long a task with a hard time limit, or a message delivered before, waits before it runs
#: for the acks handed to the fetching thread to be written (past it, a kill may run those tasks
#: again), in seconds.
SETTLE_BEFORE_RISK_S = 5.0


#: What the worker logs at INFO for each task (the fast lane says them the same way).
RECEIVED_LINE = "Task %s[%s] received"
SUCCEEDED_LINE = "Task %s[%s] succeeded in %.6fs: %s"


class Admitted(NamedTuple):
    """A delivery cleared to run now: its message, task and request, and how it is settled."""

    delivery: _rqueue.Delivery
    msg: _rqueue.TaskMessage
    task: Task[Any, Any]
    request: Request
    args: list[Any]
    kwargs: dict[str, Any]
    ignore_result: bool
    acks_late: bool
    track_started: bool


#: How a run ended: ``(kind, value, traceback, runtime_s)``, a plain tuple (made once per task).
#: ``kind`` is ``succeeded`` (``value`` is the return value), ``failed`` (the exception, with its
#: traceback), ``retried`` (the ``Retry``), ``autoretried`` (the exception it retries), ``ignored``,
#: ``rejected`` (the ``Reject``) or ``terminated``.
Outcome = tuple[str, Any, "str | None", float]


class Executor:
    """Runs deliveries for one thread of one worker process (create it in that thread).

    Deliveries are settled through ``consumer``, the one that delivered them. ``slot`` (a prefork
    child) is told what runs, for the supervisor that enforces time limits; without one,
    ``watchdog`` enforces the soft limit in this process.
    """

    def __init__(  # noqa: PLR0913 - the node state one executor uses, each named
        self,
        app: App,
        consumer: BrokerConsumer,
        hostname: str,
        revoked: Revoked,
        rate_limits: RateLimits | None = None,
        limits: TimeLimits | None = None,
        slot: RunningSlot | None = None,
        watchdog: Watchdog | None = None,
        hooks: Hooks | None = None,
        verdicts: Verdicts | None = None,
    ) -> None:
        self.app = app
        self.verdicts = verdicts
        self.limits = limits if limits is not None else TimeLimits(app)
        self.slot = slot
        self.watchdog = watchdog
        self.guard = TaskGuard()
        if watchdog is not None:
            watchdog.add(self.guard)
        self.revoked = revoked
        self.rate_limits = rate_limits
        self.consumer = consumer
        self.backend = app.backend
        self.complete = completer_for(consumer, self.backend)
        #: Writes the batches ``flush_behind`` hands over while this executor runs on.
        self.writer = BatchWriter(self.write)
        #: None when no hook is installed, so the hot path pays one comparison.
        self.hooks: Hooks | WorkerHook | None = hooks if hooks else None
        #: The node's task-events switch, read when a batch opens: the hooks with and without
        #: the task-events hook (made when events are first on in this process).
        self.events = hooks.events if hooks is not None else None
        self._hooks_off = self.hooks
        self._hooks_on: Hooks | WorkerHook | None = None
        self.hostname = hostname
        conf = app.conf
        self.accept = serialization.accepted_content_types(conf.accept_content)
        self.max_size = int(conf.task_max_message_size)
        #: Tells a flush that keeps failing that the worker is shutting down (set by the consumer).
        self.stopping: Callable[[], bool] = lambda: False
        self.batch_since: float | None = None
        self.results: list[tuple[str, str, bytes]] = []
        self.acks: list[str] = []
        #: Chord header members finished in this batch, counted at the flush.
        self.chord_parts: list[chord_join.Part] = []
        #: This process's right to fire chord bodies (kept across a retried flush).
        self.chord_token = uuid.uuid4().hex
        #: What remote control's ``inspect active`` and ``stats`` report.
        self.current: tuple[Request, float] | None = None
        self.processed: Counter[str] = Counter()
        self._loop: ThreadLoop | None = None
        self._plan: dict[str, tuple[Callable[..., Any], bool, bool]] = {}
        self._plan_key: tuple[int, ...] | None = None

    # -- one message ----------------------------------------------------------------------------------

    def handle(
        self, delivery: _rqueue.Delivery, msg: _rqueue.TaskMessage | None = None, first: bool | None = None
    ) -> tuple[float, _rqueue.TaskMessage] | None:
        """Process one delivery; never raises for anything the message or the task did.

        ``msg`` is the delivery's decoded message when it was decoded before: by the fast lane
        (``first``: its first offer), or for its first offer (a delivery offered again after
        waiting for its rate limit). Returns None once the delivery is dealt with. A task over
        its rate limit is not run: ``(seconds until a token may be there, the decoded message)``
        comes back, and nothing was done (not acked, no state recorded; still leased).
        """
        if self.batch_since is None:
            self.open_batch()
        admitted = self.admit(delivery, msg, msg is None if first is None else first)
        if isinstance(admitted, Admitted):
            self.settle(admitted, self.run(admitted))
            return None
        return admitted  # deferred for its rate limit, or None: dealt with

    # -- the fast lane --------------------------------------------------------------------------------

    def fast_lane(self, buffer: _rqueue.PrefetchBuffer) -> _rqueue.FastLane | None:
        """The native lane that runs the common case of ``buffer``'s deliveries (``FastLane``), or
        None when this executor's setup sends every delivery through the Python path (a failpoint
        armed; replies routed by the worker, for ``rpc://``)."""
        if FAILPOINT is not None or self.backend.routes_replies:
            return None
        return _rqueue.FastLane(
            buffer,
            list(self.accept),
            self.max_size,
            self.hostname,
            MessageRequest,
            REQUEST_STACK,
            self,
            self.guard,
            self.revoked,
            self.consumer,
            self.slot,
            self.store_success,
            reprlib.repr,
            (logger.info, RECEIVED_LINE, SUCCEEDED_LINE, short_repr),
            self.backend.serializer == "json" and not self.backend.extended,
        )

    def fast_plan(self) -> dict[str, tuple[Callable[..., Any], bool, bool]] | None:
        """Open a batch if none is, and say which tasks the lane may run in it: ``name → (entry,
        stores its result, acks on receipt)``. None when no task may: hooks or task events on,
        or a task signal connected."""
        if self.batch_since is None:
            self.open_batch()
        if self.hooks is not None or _task_signals_connected():
            return None
        rates = self.rate_limits
        key = (self.app.conf.version, self.limits.version, len(self.app.tasks), rates.generation if rates else 0)
        if key != self._plan_key:
            self._plan, self._plan_key = self._make_plan(), key
        return self._plan

    def _make_plan(self) -> dict[str, tuple[Callable[..., Any], bool, bool]]:
        """The tasks whose runs need nothing the lane leaves out: no task hooks, STARTED state,
        rate limit or time limit."""
        rates = self.rate_limits if self.rate_limits is not None and self.rate_limits.enabled else None
        plan = {}
        for name, task in self.app.tasks.items():
            options = task.resolved_options()
            if (
                task.hooked
                or options["track_started"]
                or (rates is not None and rates.get(name) is not None)
                or self.limits.for_task(name, None, None) != (None, None)
            ):
                continue
            plan[name] = (task.entry, not options["ignore_result"], not options["acks_late"])
        return plan

    def linger_left_s(self) -> float:
        """How long the open batch may stay open (``LINGER_S`` from its first task)."""
        return 0.0 if self.batch_since is None else LINGER_S - (time.monotonic() - self.batch_since)

    def take_over(
        self,
        delivery: _rqueue.Delivery,
        msg: _rqueue.TaskMessage | None,
        request: MessageRequest | None,
        elapsed_s: float | None,
        value: Any,
        exc: BaseException | None,
    ) -> tuple[float, _rqueue.TaskMessage] | None:
        """Handle a delivery the lane handed back (``FastLane.run``): one it did not run (as
        ``handle``), or one whose task it called (finish the call and settle it here)."""
        if request is None or msg is None or elapsed_s is None:
            return self.handle(delivery, msg, first=True)
        job = self._admitted(delivery, msg, self.app.tasks[msg.task], request)
        self.settle(job, self._guarded(job, None, time.perf_counter() - elapsed_s, (value, exc)))
        return None

    def store_success(self, msg: _rqueue.TaskMessage, request: Request, value: Any) -> None:
        """Record a task's return value in the batch (with the arguments when results are extended)."""
        extended = self._extended(msg, request.args, request.kwargs)
        self._record(ResultRecord(msg.id, states.SUCCESS, value, None, extended, request.children))

    def open_batch(self) -> None:
        """Start a batch: its age counts from now, and it sends task events if the node's switch is on."""
        self.batch_since = time.monotonic()
        if self.events is not None:
            self._switch_events(self.events.on)

    def _switch_events(self, on: bool) -> None:
        """Use the hooks with task events while the node's switch is on."""
        if not on:
            self.hooks = self._hooks_off
            return
        if self._hooks_on is None:
            assert self.events is not None
            events = self.events.hook(self.app.broker, self.hostname)
            # Alone, the events hook is called directly (its points never raise): no dispatch loop.
            self._hooks_on = Hooks([*self._hooks_off.installed, events]) if self._hooks_off is not None else events
        self.hooks = self._hooks_on

    def admit(  # noqa: PLR0911, PLR0912, PLR0915 - one check after another; each return is an outcome
        self, delivery: _rqueue.Delivery, msg: _rqueue.TaskMessage | None, first: bool
    ) -> Admitted | tuple[float, _rqueue.TaskMessage] | None:
        """Decode (unless ``msg`` is given) and check a delivery: registered, not expired, not
        revoked, due, within its rate limit. ``first`` on its first offer (not after waiting for
        its rate limit).

        Returns what may run now; ``(wait_s, msg)`` for a task over its rate limit (nothing done);
        None when the delivery was dealt with here (dead-lettered, revoked, rescheduled).
        """
        if msg is None:
            try:
                msg = _rqueue.decode_task_message(delivery.payload, accept=self.accept, max_size=self.max_size)
            except BaseException as exc:
                self._refuse_undecodable(delivery, exc)
                return None
        if FAILPOINT is not None:
            failpoint.hit("after_decode")
        if self.backend.routes_replies:
            self.backend.note_reply_route(msg.id, msg.reply_to, msg.correlation_id)
        if first and msg.redelivered and self.verdicts is not None and self._judged(delivery, msg):
            return None

        task = self.app.tasks.get(msg.task) or self.app.builtin(msg.task)
        if task is None:
            error = NotRegistered(f"task {msg.task!r} is not registered with this worker")
            logger.error("Received unregistered task %s[%s]; dead-lettered", msg.task, msg.id)
            if signals.task_unknown.receivers:
                signals.task_unknown.send(sender=None, name=msg.task, id=msg.id, message=delivery, exc=error)
            self._record(ResultRecord(msg.id, states.FAILURE, serialization.exception_to_meta(error)))
            self._dead_letter(delivery, "unregistered", error, msg.id, logged=True)
            self._never_runs(msg, states.FAILURE, error)
            return None

        args, kwargs = msg.args, msg.kwargs
        if args is None or kwargs is None:  # a body only Python decodes (pickle, explicitly accepted)
            try:
                args, kwargs, _embed = serialization.loads(msg.body, msg.content_type, self.accept)
            except (DecodeError, ContentDisallowed, ValueError, TypeError) as exc:
                self._dead_letter(delivery, "decode_error", exc, msg.id)
                return None

        embed = msg.embed
        request = MessageRequest(msg, args, kwargs, self.hostname, embed)
        if embed and any(embed.values()):
            try:
                canvas.check_links(embed)
            except DecodeError as exc:
                self._dead_letter(delivery, "decode_error", exc, msg.id)
                return None
        hooks = self.hooks
        if first and hooks is not None:
            hooks.received(request)
        if first and signals.task_received.receivers:
            signals.task_received.send(sender=None, request=request)

        now_ms = time.time() * 1000
        if msg.expires_ms is not None and msg.expires_ms < now_ms:
            logger.info("Task %s[%s] expired before it ran; revoked", msg.task, msg.id)
            self._revoke(delivery, request, "expired")
            return None
        if msg.id in self.revoked:
            logger.info("Discarding revoked task %s[%s]", msg.task, msg.id)
            self._revoke(delivery, request, "revoked")
            return None
        if msg.eta_ms is not None and msg.eta_ms > now_ms + 1:
            # Not due yet (a producer that did not use the broker's schedule): put it back, scheduled.
            self.app.broker.publish(delivery.queue, delivery.payload, msg.priority, msg.eta_ms)
            self._ack(delivery)
            return None
        if self.rate_limits is not None:
            wait_s = self.rate_limits.acquire(msg.task)
            if wait_s > 0.0:
                return wait_s, msg

        job = self._admitted(delivery, msg, task, request)
        if not job.acks_late:
            self.consumer.ack([delivery.tag])
        if logger.isEnabledFor(logging.INFO):
            logger.info(RECEIVED_LINE, msg.shadow or msg.task, msg.id)
        return job

    def _admitted(
        self, delivery: _rqueue.Delivery, msg: _rqueue.TaskMessage, task: Task[Any, Any], request: Request
    ) -> Admitted:
        options = task.resolved_options()
        ignore_result = msg.ignore_result or bool(options["ignore_result"])
        return Admitted(
            delivery,
            msg,
            task,
            request,
            request.args,
            request.kwargs,
            ignore_result,
            bool(options["acks_late"]),
            bool(options["track_started"]),
        )

    def _judged(self, delivery: _rqueue.Delivery, msg: _rqueue.TaskMessage) -> bool:
        """Act on what the supervisor saw of this redelivered message's last delivery; True when
        that settled it (see ``rqueue.worker.verdicts``)."""
        assert self.verdicts is not None
        verdict = self.verdicts.take(msg.id)
        if verdict in (STOPPED, TERMINATED):
            logger.info("Task %s[%s] was stopped and its outcome stored; not run again", msg.task, msg.id)
            exc = TimeLimitExceeded() if verdict == STOPPED else TaskRevokedError("terminated")
            status = states.FAILURE if verdict == STOPPED else states.REVOKED
            if self.backend.routes_replies:  # the supervisor had no reply address: tell the client here
                self._record(ResultRecord(msg.id, status, serialization.exception_to_meta(exc)))
            self._never_runs(msg, status, exc)
            self._ack(delivery)
            return True
        if verdict != LOST:
            return False
        task = self.app.tasks.get(msg.task)
        if task is not None and task.option("reject_on_worker_lost") is False:
            # Celery's default, asked for explicitly: the task fails, its message is not run again.
            logger.error("Task %s[%s] was running when its worker died; stored as failed", msg.task, msg.id)
            lost: BaseException = WorkerLostError("the worker process running the task died")
            self._record(ResultRecord(msg.id, states.FAILURE, serialization.exception_to_meta(lost)))
            self._never_runs(msg, states.FAILURE, lost)
            self._ack(delivery)
            return True
        if not isinstance(self.consumer, Recounting):
            return False
        died = delivery.deliveries  # the earlier deaths, and the one that returned it now
        max_deliveries = int(self.app.conf.broker_max_deliveries)
        if died >= max_deliveries:
            error = WorkerLostError(
                f"its worker died running it {died} times (broker_max_deliveries = {max_deliveries})"
            )
            logger.error("Task %s[%s] killed its worker %d times; dead-lettered", msg.task, msg.id, died)
            self._dead_letter(delivery, REASON_WORKER_LOST, error, msg.id, logged=True)
            self._never_runs(msg, states.FAILURE, error)
        else:
            logger.warning(
                "Task %s[%s] was running when its worker died (%d of %d); requeued",
                msg.task,
                msg.id,
                died,
                max_deliveries,
            )
            self.consumer.recount(delivery.tag, died)
        return True

    def _refuse_undecodable(self, delivery: _rqueue.Delivery, exc: BaseException) -> None:
        """Dead-letter a delivery whose message could not be decoded, with why."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        if signals.task_rejected.receivers:
            signals.task_rejected.send(sender=None, message=delivery, exc=exc)
        if isinstance(exc, MessageTooLarge):
            self._dead_letter(delivery, "too_large", exc)
        elif isinstance(exc, ContentDisallowed):
            self._dead_letter(delivery, "content_disallowed", exc, _peek_id(delivery.payload))
        elif isinstance(exc, DecodeError):
            self._dead_letter(delivery, "decode_error", exc, _peek_id(delivery.payload))
        else:  # a bug of the decoder (a panic), not of the message: keep going
            logger.error("Decoding message %s raised %s", delivery.tag, type(exc).__name__, exc_info=exc)
            self._dead_letter(delivery, "decode_error", exc, _peek_id(delivery.payload), logged=True)

    def run(self, job: Admitted) -> Outcome:
        """Record STARTED (``track_started``), set up the time limits, then call the task inside its
        guard (time limits, terminate); never raises for what it did."""
        msg, request, args = job.msg, job.request, job.args
        if job.track_started and not job.ignore_result:
            self._record(ResultRecord(msg.id, states.STARTED, {"pid": os.getpid(), "hostname": self.hostname}))
            self.flush()
        soft, hard = self.limits.for_task(msg.task, msg.soft_time_limit, msg.time_limit)
        if job.delivery.deliveries > 1 or (self.slot is not None and hard is not None):
            # A process this task kills (a child at the hard limit, or anyone running a message
            # delivered before, whose worker may have died of it) then loses nothing already done.
            self.flush()
            self.consumer.settle_acks(SETTLE_BEFORE_RISK_S)
        if self.slot is not None:
            args_repr = msg.argsrepr if msg.argsrepr is not None else reprlib.repr(args)
            if self.slot.task_started(
                msg.id, msg.task, args_repr, msg.soft_time_limit, msg.time_limit, job.ignore_result
            ):
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
        if self.hooks is not None:
            self.hooks.started(request)
        return self._guarded(job, soft, time.perf_counter(), None)

    def _guarded(self, job: Admitted, soft: float | None, started: float, ran: tuple[Any, Any] | None) -> Outcome:
        """Call the task with its request current, inside the guard; or, with ``ran`` (``(value,
        exception)`` the fast lane's call gave), finish that call: run the coroutine it returned,
        or settle the exception it raised by the same rules."""
        msg, task, request = job.msg, job.task, job.request
        push_request(request)
        self.current = (request, time.time())
        if ran is None and signals.task_prerun.receivers:
            trace.prerun(task, request)
        guard = self.guard
        try:
            # Exceptions aimed at the task (time limit, terminate) are raised only inside the guard.
            guard.enter(msg.id, msg.task, soft)
            try:
                value = self._call(job) if ran is None else _finish(*ran)
                if type(value) is CoroutineType:  # an ``async def`` task: run on this thread's loop
                    value = self._thread_loop().run(value)
                if FAILPOINT is not None:
                    failpoint.hit("during_run")
            finally:
                guard.leave()
        except Exception as exc:
            if isinstance(exc, SoftTimeLimitExceeded) and not exc.args and guard.requested[0] == guard.run:
                exc.args = (guard.requested[1],)  # raised asynchronously (threads pool): by class only
            return self.outcome_of(task, request, exc, started)
        else:
            return ("succeeded", value, None, time.perf_counter() - started)
        finally:
            pop_request()
            self.current = None
            if ran is None:  # the lane counted its call
                self.processed[msg.task] += 1

    @staticmethod
    def _call(job: Admitted) -> Any:
        task = job.task
        if task.hooked and "before_start" in task.hooked:
            task.before_start(job.msg.id, job.args, job.kwargs)
        return task.entry(*job.args, **job.kwargs)

    def outcome_of(self, task: Task[Any, Any], request: Request, exc: Exception, started: float) -> Outcome:
        """The outcome of a run that raised ``exc``; called while the request is current (an
        ``autoretry_for`` retry reads it) and inside the ``except`` (a failure's traceback)."""
        if isinstance(exc, Ignore):
            return ("ignored", None, None, 0.0)
        if isinstance(exc, Retry):
            return ("retried", exc, None, 0.0)
        if isinstance(exc, Reject):
            return ("rejected", exc, None, 0.0)
        if isinstance(exc, TaskTerminated):
            return ("terminated", None, None, 0.0)
        if self._auto_retry(task, request, exc):
            return ("autoretried", exc, None, 0.0)
        return ("failed", exc, traceback.format_exc(), time.perf_counter() - started)

    def _thread_loop(self) -> ThreadLoop:
        """This executor thread's event loop for ``async def`` tasks, made on the first one."""
        if self._loop is None:
            from rqueue.worker.coroutine import ThreadLoop  # noqa: PLC0415 - only a worker with async tasks

            self._loop = ThreadLoop(self.guard)
        return self._loop

    def settle(self, job: Admitted, outcome: Outcome) -> None:
        """Log the outcome, call the hooks, record the result and ack (batched)."""
        if _SETTLE[outcome[0]](self, job, outcome) and job.acks_late:
            self._ack(job.delivery)
        if signals.task_postrun.receivers:
            trace.postrun(job.task, job.request, outcome[1], _STATE_OF[outcome[0]])

    # Each returns True when the delivery is then acked (with acks_late), False when it was moved.

    def _settle_succeeded(self, job: Admitted, outcome: Outcome) -> bool:
        msg = job.msg
        if logger.isEnabledFor(logging.INFO):
            name = msg.shadow or msg.task  # the name the sender chose to show
            logger.info(SUCCEEDED_LINE, name, msg.id, outcome[3], short_repr(outcome[1]))
        if self.hooks is not None:
            self.hooks.succeeded(job.request, outcome[1], outcome[3])
        request = job.request
        if request.chain or request.callbacks:  # sent before the result is stored, as in Celery
            self._apply_links(canvas.apply_success_links, request, outcome[1])
        if not job.ignore_result:
            self.store_success(msg, request, outcome[1])
        if request.chord:
            self._chord_part(request, states.SUCCESS, outcome[1], msg.redelivered)
        if job.task.hooked or signals.task_success.receivers:
            trace.succeeded(job.task, job.request, outcome[1])
        return True

    def _settle_failed(self, job: Admitted, outcome: Outcome) -> bool:
        msg, exc, tb, task = job.msg, outcome[1], outcome[2] or "", job.task
        options = task.resolved_options()
        expected = options["throws"]
        name = msg.shadow or msg.task
        if expected and isinstance(exc, tuple(expected)):  # an expected error: no traceback in the log
            logger.info("Task %s[%s] raised expected: %r (after %.6fs)", name, msg.id, exc, outcome[3])
        else:
            logger.error(
                "Task %s[%s] raised unexpected: %r (after %.6fs)\n%s", name, msg.id, exc, outcome[3], Verbatim(tb)
            )
        if self.hooks is not None:
            self.hooks.failed(job.request, exc, tb, outcome[3])
        request = job.request
        if not job.ignore_result or options["store_errors_even_if_ignored"]:
            meta = serialization.exception_to_meta(exc)
            extended = self._extended(msg, job.args, job.kwargs)
            self._record(ResultRecord(msg.id, states.FAILURE, meta, tb, extended, request.children))
        if request.chord:
            self._chord_part(request, states.FAILURE, exc, msg.redelivered)
        if request.chain:  # the steps after it never run: stored as failed, not left PENDING
            self._apply_links(chord_join.fail_chain, request, exc, tb)
        if task.hooked or signals.task_failure.receivers:
            trace.failed(task, job.request, exc, tb)
        if job.request.errbacks:
            self._apply_links(canvas.apply_error_links, job.request, exc, tb)
        if job.acks_late and options["acks_on_failure_or_timeout"] is False:
            # Celery rejects such a message without requeueing it: here it goes to the dead letters.
            self._dead_letter(job.delivery, "failed", exc, msg.id, logged=True)
            return False
        return True

    def _settle_retried(self, job: Admitted, outcome: Outcome) -> bool:
        retry: Retry = outcome[1]
        logger.info("Task %s[%s] retry: %s", job.msg.task, job.msg.id, retry)
        reason = retry.exc if retry.exc is not None else retry
        return self._retried(job, retry, reason, not job.ignore_result)

    def _settle_autoretried(self, job: Admitted, outcome: Outcome) -> bool:
        # Logged with its countdown when it was scheduled; stored unless the task ignores results.
        return self._retried(job, outcome[1], outcome[1], not job.task.option("ignore_result"))

    def _retried(self, job: Admitted, retry: BaseException, reason: BaseException, record: bool) -> bool:
        if self.hooks is not None:
            self.hooks.retried(job.request, reason)
        if record:
            self._record(ResultRecord(job.msg.id, states.RETRY, serialization.exception_to_meta(reason)))
        if job.task.hooked or signals.task_retry.receivers:
            trace.retried(job.task, job.request, retry, reason)
        return True

    def _settle_ignored(self, job: Admitted, outcome: Outcome) -> bool:
        logger.info("Task %s[%s] ignored", job.msg.task, job.msg.id)
        return True

    def _settle_terminated(self, job: Admitted, outcome: Outcome) -> bool:
        msg = job.msg
        logger.warning("Task %s[%s] terminated", msg.task, msg.id)
        if self.hooks is not None:
            self.hooks.revoked(job.request, "terminated")
        trace.revoked(job.task, job.request, "terminated")
        if not job.ignore_result:
            meta = serialization.exception_to_meta(TaskRevokedError("terminated"))
            self._record(ResultRecord(msg.id, states.REVOKED, meta))
        if job.request.chord:
            self._chord_part(job.request, states.REVOKED, TaskRevokedError("terminated"), msg.redelivered)
        return True

    def _settle_rejected(self, job: Admitted, outcome: Outcome) -> bool:
        msg, rej = job.msg, outcome[1]
        if rej.requeue:
            delivery, max_deliveries = job.delivery, int(self.app.conf.broker_max_deliveries)
            if delivery.deliveries >= max_deliveries:
                rejected = Reject(f"rejected with requeue {delivery.deliveries} times ({rej.reason})")
                if not job.ignore_result:  # never run again: the client must not wait forever
                    self._record(ResultRecord(msg.id, states.FAILURE, serialization.exception_to_meta(rejected)))
                self._dead_letter(delivery, "rejected", rejected, msg.id)
                return False
            logger.info("Task %s[%s] rejected and requeued: %s", msg.task, msg.id, rej.reason)
            if self.hooks is not None:
                self.hooks.rejected(msg.id, "rejected", True)
            self.flush()  # earlier acks first: the release is its own step
            self.consumer.release(delivery)
            return False
        # Never run again: Celery stores FAILURE so the client does not wait forever.
        if not job.ignore_result:
            self._record(ResultRecord(msg.id, states.FAILURE, serialization.exception_to_meta(rej)))
        if job.request.chord:
            self._chord_part(job.request, states.FAILURE, rej, msg.redelivered)
        if signals.task_failure.receivers:
            trace.failed(job.task, job.request, rej, None)
        if job.acks_late:
            self._dead_letter(job.delivery, "rejected", rej, msg.id)
        return False

    def _chord_part(self, request: Request, state: str, value: Any, redelivered: bool) -> None:
        """Count this chord header member's outcome with the batch (``rqueue.chord_join``): at the
        flush, after the batch's results are stored and before its acks, so a crash in between
        runs the member again and it is counted once."""
        self.chord_parts.append(chord_join.Part(request, state, value, redelivered))

    def _never_runs(self, msg: _rqueue.TaskMessage, state: str, exc: BaseException) -> None:
        """A message whose task will not run (again): the chord it belongs to counts it as
        ``state``, and the rest of its chain is stored as failed."""
        embed = msg.embed
        if not embed or not (embed.get("chord") or embed.get("chain")):
            return
        request = MessageRequest(msg, msg.args or [], msg.kwargs or {}, self.hostname, embed)
        if request.chord:
            self._chord_part(request, state, exc, msg.redelivered)
        if request.chain:
            self._apply_links(chord_join.fail_chain, request, exc, None)

    def _apply_links(self, apply: Callable[..., None], request: Request, *outcome: Any) -> None:
        """Send a finished task's linked tasks; a failure to send is logged, the task's outcome stands."""
        try:
            apply(self.app, request, *outcome)
        except Exception:
            logger.exception("Task %s[%s]: sending its linked tasks failed", request.task, request.id)

    def _auto_retry(self, task: Task[Any, Any], request: Request, exc: Exception) -> bool:
        """Retry ``exc`` when the task's ``autoretry_for`` covers it; True when a retry was scheduled."""
        retry = task.auto_retry(exc)
        if retry is None:
            return False
        logger.info("Task %s[%s] retry: %s (%r)", request.task, request.id, retry, exc)
        return True

    def _revoke(self, delivery: _rqueue.Delivery, request: Request, why: str) -> None:
        if self.hooks is not None:
            self.hooks.revoked(request, why)
        if signals.task_revoked.receivers:
            trace.revoked(self.app.tasks.get(request.task), request, why)
        meta = serialization.exception_to_meta(TaskRevokedError(why))
        self._record(ResultRecord(request.id, states.REVOKED, meta))
        if request.chord:
            self._chord_part(request, states.REVOKED, TaskRevokedError(why), request.redelivered)
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
            self.flush_behind()

    def flush(self, give_up_after_s: float | None = None) -> None:
        """Write pending results, then ack: a crash in between re-runs tasks, never loses them.
        Returns once they are written, with every batch handed to the writer before.

        While the broker or backend is unreachable, retry with backoff (the worker pauses rather
        than dropping results); with ``give_up_after_s`` (at shutdown) stop trying after that long,
        and the unacked messages are delivered again once their lease expires.
        """
        self.writer.drain()
        batch = self._take_batch()
        if batch is not None:
            self.write(*batch, give_up_after_s)

    def flush_behind(self, give_up_after_s: float | None = None) -> None:
        """``flush`` without waiting, for while more tasks wait to run: a batch with results goes
        to the writer thread, acks alone to the fetching thread (see ``write``). With a failpoint
        set every batch is written here, in the thread where its crash points are hit."""
        batch = self._take_batch()
        if batch is None:
            return
        results, acks, parts = batch
        if (results or parts) and FAILPOINT is None:
            self.writer.submit(results, acks, parts, give_up_after_s)
        else:
            self.write(results, acks, parts, give_up_after_s)

    def _take_batch(self) -> tuple[list[tuple[str, str, bytes]], list[str], list[chord_join.Part]] | None:
        """The open batch, taken (None when empty); the next one opens with the next task."""
        self.batch_since = None
        if not (self.results or self.acks or self.chord_parts):
            return None
        batch = self.results, self.acks, self.chord_parts
        self.results, self.acks, self.chord_parts = [], [], []
        return batch

    def close(self) -> None:
        """Write what the writer holds and stop its thread (the executor's consumer stopped)."""
        self.writer.close()

    def write(
        self,
        results: list[tuple[str, str, bytes]],
        acks: list[str],
        parts: list[chord_join.Part],
        give_up_after_s: float | None = None,
    ) -> None:
        """Write one batch taken by ``flush``: results (and chord counts), then acks; see ``flush``."""
        if not results and not parts and FAILPOINT is None:
            # Acks alone: the fetching thread sends them before its next fetch (and retries
            # them), so this thread runs the next task instead of waiting a round trip.
            self.consumer.ack_later(acks)
            return
        deadline = None if give_up_after_s is None else time.monotonic() + give_up_after_s
        pause = 0.05
        while True:
            try:
                if FAILPOINT == "after_result":
                    self._complete_in_two_steps(results, acks)
                elif parts:
                    self._complete_with_chords(results, acks, parts)
                else:
                    self.complete(results, acks)
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

    def _complete_with_chords(
        self, results: list[tuple[str, str, bytes]], acks: list[str], parts: list[chord_join.Part]
    ) -> None:
        """Results, then chord counts (one round trip on Redis), then acks. A count that fails for
        a reason other than an unreachable server is logged; the members are acked all the same."""
        try:
            chord_join.count_parts(self.app, parts, self.chord_token, results)
        except (BrokerError, BackendError, OSError):
            raise
        except Exception:
            logger.exception("Counting %d chord member(s) failed", len(parts))
            if results:
                self.backend.write_encoded(results)
        if acks:
            self.consumer.ack(acks)

    def _complete_in_two_steps(self, results: list[tuple[str, str, bytes]], acks: list[str]) -> None:
        """Results, then acks, as two writes: only with the ``after_result`` failpoint armed."""
        if results:
            self.backend.write_encoded(results)
        failpoint.hit("after_result")
        if acks:
            self.consumer.ack(acks)

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
        if self.hooks is not None:
            self.hooks.rejected(task_id, reason, False)
        self.flush()  # earlier acks first: the dead letter is its own atomic move
        self.consumer.dead_letter(delivery.tag, reason, str(exc))

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


#: How each kind of ``Outcome`` is settled.
_SETTLE = {
    "succeeded": Executor._settle_succeeded,
    "failed": Executor._settle_failed,
    "retried": Executor._settle_retried,
    "autoretried": Executor._settle_autoretried,
    "ignored": Executor._settle_ignored,
    "terminated": Executor._settle_terminated,
    "rejected": Executor._settle_rejected,
}


#: The state ``task_postrun`` reports for each kind of outcome.
_STATE_OF = {
    "succeeded": states.SUCCESS,
    "failed": states.FAILURE,
    "retried": states.RETRY,
    "autoretried": states.RETRY,
    "ignored": states.IGNORED,
    "terminated": states.REVOKED,
    "rejected": states.REJECTED,
}


def _finish(value: Any, exc: BaseException | None) -> Any:
    """What the fast lane's call of a task gave: its value, or the exception it raised (raised
    again here, so it is settled as if raised in this frame)."""
    if exc is not None:
        raise exc
    return value


def _task_signals_connected() -> bool:
    """Whether a signal the fast lane does not send has receivers (it sends none: a run that
    would send one takes the Python path)."""
    return bool(
        signals.task_received.receivers
        or signals.task_prerun.receivers
        or signals.task_postrun.receivers
        or signals.task_success.receivers
    )


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
