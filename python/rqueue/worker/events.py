"""A worker's events: task events from the executor's hook points, and the node's heartbeat.

Task events are switched on and off for the whole node at once (``-E``, the ``enable_events`` /
``disable_events`` control commands) through one byte of memory shared with the prefork children;
an executor reads it when it opens a batch, so a worker with events off pays one byte read per
batch. Each process that runs tasks sends its own task events from a background sender thread;
the node's main process sends ``worker-online``, a ``worker-heartbeat`` every ``HEARTBEAT_S``
(with or without task events, as Celery does) and ``worker-offline``.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
import traceback as tb
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rqueue.events import HEARTBEAT_S, SOFTWARE_INFO, EventDispatcher
from rqueue.request import MessageRequest
from rqueue.worker.hooks import WorkerHook

if TYPE_CHECKING:
    from rqueue.brokers.base import Broker
    from rqueue.request import Request

logger = logging.getLogger("rqueue.worker")

#: Reprs of results, arguments and exceptions in task events are cut to this many characters
#: (Celery's ``resultrepr_maxsize`` and ``argsrepr`` limit).
REPR_MAX = 1024


class EventSwitch:
    """Whether the node sends task events, in memory shared by all its processes (an anonymous
    mmap made before the prefork pool forks: a change reaches every child at once)."""

    def __init__(self, on: bool) -> None:
        self._mem = mmap.mmap(-1, 1)
        self._mem[0] = 1 if on else 0
        #: The node's main process: every event of the node carries its pid.
        self.node_pid = os.getpid()
        self._process: tuple[int, TaskEvents] | None = None
        #: Held only by executor threads making the hook (never across the supervisor's forks).
        self._lock = threading.Lock()

    @property
    def on(self) -> bool:
        return self._mem[0] == 1

    def set(self, on: bool) -> bool:
        """Switch task events on or off; True when that changed anything."""
        changed = self.on != on
        self._mem[0] = 1 if on else 0
        return changed

    def hook(self, broker: Broker, hostname: str) -> TaskEvents:
        """The task-events hook of this process (made at its first use in each process; the
        executor threads of a threads pool share it)."""
        pid = os.getpid()
        with self._lock:
            if self._process is None or self._process[0] != pid:
                dispatcher = EventDispatcher(broker, hostname, pid=self.node_pid, task_buffer=True)
                self._process = (pid, TaskEvents(dispatcher))
            return self._process[1]

    def close_process(self) -> None:
        """Send what this process's task events still queue (before the process stops)."""
        if self._process is not None and self._process[0] == os.getpid():
            self._process[1].dispatcher.close()
            self._process = None


class TaskEvents(WorkerHook):
    """Sends Celery's task events at the executor's hook points, with Celery's fields.

    Its points never raise (an executor with no other hook calls them directly, not through
    ``Hooks``): events are queued, and reprs that fail are named instead."""

    def __init__(self, dispatcher: EventDispatcher) -> None:
        assert dispatcher.tasks is not None, "a task-events dispatcher has a task buffer"
        self.dispatcher = dispatcher
        self.buffer = dispatcher.tasks
        self.wake = dispatcher.tasks_waiting

    def received(self, request: Request) -> None:
        if isinstance(request, MessageRequest):  # the message's own fields, read in Rust
            if self.buffer.received(request.message) == 1:
                self.wake()
            return
        self.dispatcher.send_task_event(
            "task-received",
            {
                "uuid": request.id,
                "name": request.task,
                "args": request.argsrepr or _repr(tuple(request.args)),
                "kwargs": request.kwargsrepr or _repr(request.kwargs),
                "root_id": request.root_id,
                "parent_id": request.parent_id,
                "retries": request.retries,
                "eta": request.eta,
                "expires": request.expires,
            },
        )

    def started(self, request: Request) -> None:
        if self.buffer.started(request.id) == 1:
            self.wake()

    def succeeded(self, request: Request, result: Any, runtime_s: float) -> None:
        if self.buffer.succeeded(request.id, result, runtime_s) == 1:
            self.wake()

    def failed(self, request: Request, exc: BaseException, traceback: str, runtime_s: float) -> None:
        if self.buffer.failed(request.id, _repr(exc), traceback) == 1:
            self.wake()

    def retried(self, request: Request, reason: BaseException) -> None:
        try:
            trace = "".join(tb.format_exception(type(reason), reason, reason.__traceback__))
        except Exception:  # the executor calls this hook directly: it must not raise
            trace = ""
        if self.buffer.retried(request.id, _repr(reason), trace) == 1:
            self.wake()

    def revoked(self, request: Request, reason: str) -> None:
        if self.buffer.revoked(request.id, reason == "terminated", reason == "expired") == 1:
            self.wake()

    def rejected(self, task_id: str | None, reason: str, requeue: bool) -> None:
        # A message too broken to name its task has nothing to show it under.
        if task_id is not None and self.buffer.rejected(task_id, requeue) == 1:
            self.wake()


class Heart:
    """The node's ``worker-online``, ``worker-heartbeat`` (every ``HEARTBEAT_S``) and
    ``worker-offline``, sent from its main process; ``tick`` is called from its control loop.

    ``counts()`` gives ``(active, processed)``: tasks running now, and run since the start.
    """

    def __init__(self, broker: Broker, hostname: str, counts: Callable[[], tuple[int, int]]) -> None:
        # Sent from a thread: a broker that blocks publishers (a RabbitMQ memory alarm, a frozen
        # Redis) must not hold the node's start or its supervisor loop.
        self.dispatcher = EventDispatcher(broker, hostname, background=True)
        self.counts = counts
        self._next_at: float | None = None

    def start(self) -> None:
        self._send("worker-online")
        self._next_at = time.monotonic() + HEARTBEAT_S

    def tick(self) -> None:
        """Send the heartbeat when it is due."""
        if self._next_at is not None and time.monotonic() >= self._next_at:
            self.beat()

    def beat(self) -> None:
        """Send a heartbeat now (the ``heartbeat`` control command, a monitor that just started)."""
        self._send("worker-heartbeat")
        self._next_at = time.monotonic() + HEARTBEAT_S

    def stop(self) -> None:
        if self._next_at is None:
            return
        self._next_at = None
        self._send("worker-offline")
        self.dispatcher.close()

    def _send(self, event_type: str) -> None:
        try:
            active, processed = self.counts()
        except Exception:  # a count must not stop the heartbeat that says the node is alive
            logger.exception("Counting tasks for the %s event failed", event_type)
            active, processed = 0, 0
        self.dispatcher.send(
            event_type, freq=HEARTBEAT_S, active=active, processed=processed, loadavg=load_average(), **SOFTWARE_INFO
        )


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded as Celery sends them (zeros where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return [0.0, 0.0, 0.0]


def _repr(value: object) -> str:
    """A repr cut to ``REPR_MAX`` characters; one that raises is named, not raised."""
    try:
        text = repr(value)
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= REPR_MAX else text[:REPR_MAX] + "..."
