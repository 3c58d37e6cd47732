"""Sending Celery's events: the common fields, the Lamport clock, and publishing in batches.

An event is a flat JSON object: ``type`` (``task-succeeded``, ``worker-heartbeat`` ...) and the
fields every event carries (``hostname``, ``timestamp``, ``utcoffset``, ``pid``, ``clock``), then
its own. A background dispatcher (a worker process's task events) only queues an event; its
sender thread publishes what has queued since the last publish, consecutive task events as one
list under ``task.multi`` (as a Celery worker flushes its event buffer), so a busy worker sends a
few large messages rather than three per task. A synchronous dispatcher (heartbeats, a
producer's ``task-sent``) publishes each event at once.
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rqueue import __version__, _rqueue
from rqueue.exceptions import BrokerError

if TYPE_CHECKING:
    from rqueue.brokers.base import Broker, EventChannel

logger = logging.getLogger("rqueue.events")

#: What ``sw_ident``, ``sw_ver`` and ``sw_sys`` say in worker events (Celery's ``py-celery``).
SOFTWARE_INFO = {"sw_ident": "py-rqueue", "sw_ver": __version__, "sw_sys": platform.system()}
#: Most events one publish carries (a ``task.multi`` list).
MAX_BATCH = 500
#: While the broker cannot be reached, at most this many events wait to be sent; older ones go.
MAX_PENDING = 10_000
#: After a failed publish, the sender thread waits this long before trying again...
RETRY_PAUSE_S = 0.5
#: ...and a synchronous dispatcher (a worker's main process) only keeps what it sends for this
#: long, without trying: a broker that is away must not hold the process at every heartbeat.
SYNC_RETRY_PAUSE_S = 5.0
#: ...and says so in the log at most this often.
WARN_EVERY_S = 30.0
#: How long ``close`` waits for the sender thread to publish what is queued.
CLOSE_TIMEOUT_S = 5.0
#: The utcoffset is read from the clock at most this often (it changes with daylight saving only).
UTCOFFSET_REFRESH_S = 60.0

_STOP = object()
#: Queued by the hook points when ``tasks`` goes from empty to not: wakes the sender thread.
_TASKS = object()


def utcoffset() -> float:
    """Hours west of UTC now (Celery's sign: UTC+2 is -2), as Celery puts in ``utcoffset``."""
    west_s = time.altzone if time.localtime().tm_isdst and time.daylight else time.timezone
    return west_s / 3600


def routing_key(event_type: str) -> str:
    """The routing key of an event type (``task-succeeded`` → ``task.succeeded``)."""
    return event_type.replace("-", ".")


class EventDispatcher:
    """Sends events for one node (``hostname``) from this process.

    Args:
        broker: The broker whose event stream carries them.
        hostname: The node name events come from (``worker@host``, or a producer's ``gen<pid>@host``).
        background: Queue events and publish them from a sender thread (started at the first
            event; make the dispatcher in the process that sends, after any fork). Otherwise
            ``send`` publishes at once.
        pid: The ``pid`` events carry (default this process's; a prefork child sends its node's
            main process's, as a Celery worker's events all carry).
        task_buffer: Also keep ``tasks``, a native buffer the executor's hook points append task
            events to as JSON (``rqueue.worker.events``); the sender thread publishes it as
            ``task.multi`` bodies. A background dispatcher only.
    """

    def __init__(
        self,
        broker: Broker,
        hostname: str,
        *,
        background: bool = False,
        pid: int | None = None,
        task_buffer: bool = False,
    ) -> None:
        self.broker = broker
        self.hostname = hostname
        self.background = background or task_buffer
        self.pid = os.getpid() if pid is None else pid
        self._clock = itertools.count(1)
        self._last_clock = 0
        self._offset = utcoffset()
        self._offset_at = time.time()
        self._channel: EventChannel | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: Serializes the start of the sender thread, and synchronous publishes (any thread may send).
        self._lock = threading.Lock()
        self._pending: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING)
        #: ``task.multi`` bodies taken from ``tasks`` and not sent yet, with their event counts.
        self._pending_bodies: deque[tuple[bytes, int]] = deque()
        self.tasks = _rqueue.TaskEventBuffer(hostname, self.pid, self._offset) if task_buffer else None
        self._warned_at = -WARN_EVERY_S
        #: A synchronous dispatcher whose publish failed tries again from then on.
        self._retry_at = 0.0
        self._closed = False
        #: True while only task events were queued: a batch is then one ``task.multi`` list as it is.
        self._only_tasks = True
        #: Events published and events dropped (the broker away too long, or closed), for tests and stats.
        self.sent = 0
        self.dropped = 0

    # -- sending ------------------------------------------------------------------------------------

    def event(self, event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` completed with the type and the common fields (the dict itself, updated)."""
        now = time.time()
        if not 0 <= now - self._offset_at < UTCOFFSET_REFRESH_S:  # (the wall clock may step back)
            self._offset, self._offset_at = utcoffset(), now
        fields["type"] = event_type
        fields["hostname"] = self.hostname
        fields["utcoffset"] = self._offset
        fields["pid"] = self.pid
        fields["clock"] = self._last_clock = next(self._clock)
        fields["timestamp"] = now
        return fields

    def clock_value(self) -> int:
        """The Lamport clock of the last event sent (``inspect stats``' ``clock``)."""
        return max(self._last_clock, self.tasks.clock if self.tasks is not None else 0)

    def send(self, event_type: str, **fields: Any) -> None:
        """Send one event; fields must be JSON-serializable. Never raises for the broker: an event
        that cannot be sent is logged (at most every ``WARN_EVERY_S``) and kept for a while."""
        event = self.event(event_type, fields)
        if self.background:
            if event_type[:5] != "task-":
                self._only_tasks = False
            if self._thread is None:
                self._start()
            self._queue.put(event)
        else:
            with self._lock:
                if time.monotonic() < self._retry_at:
                    self._pending.append(event)
                else:
                    self._publish([*self._pending, event])

    def tasks_waiting(self) -> None:
        """Wake the sender thread: ``tasks`` went from empty to holding an event."""
        if self._thread is None:
            self._start()
        self._queue.put(_TASKS)

    def send_task_event(self, event_type: str, fields: dict[str, Any]) -> None:
        """``send`` for a worker's task events (a background dispatcher; ``fields`` is used as
        the event): the executor's hot path, so without keyword packing or checks."""
        self.event(event_type, fields)
        if self._thread is None:
            self._start()
        self._queue.put(fields)

    def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until the events queued so far are published (or given up); True when they were."""
        if not self.background:
            with self._lock:
                if self._pending:
                    self._publish(list(self._pending))
                return not self._pending
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout_s)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Publish what is queued (waiting up to ``timeout_s``), then stop the sender thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
        else:
            self.flush()
        if self._channel is not None:
            self._channel.close()

    # -- publishing ---------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="rqueue-events", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        """The sender thread: runs ``_send_loop`` until told to stop; a bug in it is logged and the
        thread goes on (it alone empties the task buffer: if it ended, the buffer would only grow)."""
        while True:
            try:
                self._send_loop()
                return
            except Exception:
                logger.exception("The event sender failed; it goes on in %.1f s", RETRY_PAUSE_S)
                time.sleep(RETRY_PAUSE_S)

    def _send_loop(self) -> None:
        """Publish whatever queued since the last publish, in order, until ``_STOP``."""
        get = self._queue.get
        while True:
            try:
                item = get(timeout=RETRY_PAUSE_S) if self._pending or self._pending_bodies else get()
            except queue.Empty:
                self._publish_bodies()
                self._publish(list(self._pending))
                continue
            batch, waiters, stop = self._drain(item)
            self._take_tasks()
            if batch:
                self._publish(batch)
            for waiter in waiters:
                waiter.set()
            if stop:
                left = len(self._pending) + sum(n for _, n in self._pending_bodies)
                if left:
                    self.dropped += left
                    logger.warning("%d event(s) could not be sent before closing", left)
                return

    def _drain(self, item: Any) -> tuple[list[dict[str, Any]], list[threading.Event], bool]:
        """``item`` and what else is queued now: the events to publish (after those kept from a
        failed publish), the ``flush`` waiters to wake after it, and whether to stop."""
        batch = list(self._pending)
        waiters: list[threading.Event] = []
        stop = False
        while True:
            if item is _STOP:
                stop = True
            elif isinstance(item, threading.Event):
                waiters.append(item)
            elif item is not _TASKS:  # (the task buffer is taken whatever woke the thread)
                batch.append(item)
            if len(batch) >= MAX_BATCH:
                return batch, waiters, stop
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, waiters, stop

    def _take_tasks(self) -> None:
        """Publish what ``tasks`` holds (and task bodies left from a failed publish), in order."""
        tasks = self.tasks
        if tasks is None:
            return
        now = time.time()
        if not 0 <= now - self._offset_at < UTCOFFSET_REFRESH_S:
            self._offset, self._offset_at = utcoffset(), now
            tasks.set_utcoffset(self._offset)
        taken = tasks.take()
        if taken is not None:
            self._pending_bodies.append(taken)
            excess = sum(n for _, n in self._pending_bodies) - MAX_PENDING
            while excess > 0 and len(self._pending_bodies) > 1:
                _, n = self._pending_bodies.popleft()
                self.dropped += n
                excess -= n
        self._publish_bodies()

    def _publish_bodies(self) -> None:
        """Publish the waiting ``task.multi`` bodies, oldest first; on a broker error keep them."""
        try:
            while self._pending_bodies:
                body, n = self._pending_bodies[0]
                if self._channel is None:
                    self._channel = self.broker.events()
                self._channel.publish("task.multi", body, self.hostname)
                self._pending_bodies.popleft()
                self.sent += n
        except (BrokerError, OSError) as exc:
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                waiting = sum(n for _, n in self._pending_bodies)
                logger.warning("Cannot send %d event(s) for now (%s); they are kept and sent again", waiting, exc)

    def _publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish ``events`` in order, consecutive task events as one ``task.multi`` list; on a
        broker error, keep what was not sent (at most ``MAX_PENDING``) for the next try."""
        self._pending.clear()
        if not events:
            return
        start = 0
        try:
            channel = self._channel
            if channel is None:
                channel = self._channel = self.broker.events()
            only_tasks = self._only_tasks or all(e["type"][:5] == "task-" for e in events)
            if only_tasks and 1 < len(events) <= MAX_BATCH:
                body = self._encode(list(events))  # the usual batch of a worker: one list, one publish
                if body is not None:
                    channel.publish("task.multi", body, self.hostname)
                    self.sent += len(events)
                    return
            while start < len(events):
                end = start + 1
                if events[start]["type"].startswith("task-"):
                    while end < len(events) and end - start < MAX_BATCH and events[end]["type"].startswith("task-"):
                        end += 1
                run = events[start:end]
                body = self._encode(run[0] if len(run) == 1 else list(run))
                if body is None and len(run) > 1:  # one field in the run is not JSON: send the others
                    run = [event for event in run if self._encode(event) is not None]
                    body = self._encode(run) if run else None
                if body is not None:
                    key = routing_key(run[0]["type"]) if len(run) == 1 else "task.multi"
                    channel.publish(key, body, self.hostname)
                    self.sent += len(run)
                start = end
        except (BrokerError, OSError) as exc:
            left = events[start:]
            overflow = max(0, len(left) - MAX_PENDING)
            self.dropped += overflow
            self._pending.extend(left[overflow:])
            now = time.monotonic()
            self._retry_at = now + SYNC_RETRY_PAUSE_S
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                logger.warning("Cannot send %d event(s) for now (%s); they are kept and sent again", len(left), exc)

    def _encode(self, body: dict[str, Any] | list[dict[str, Any]]) -> bytes | None:
        """The JSON of an event or a list of them; None (logged, counted as dropped) when a field
        is not JSON-serializable."""
        try:
            return _rqueue.dumps(body)
        except Exception as exc:  # a custom event's field: the event goes, the sender stays
            if isinstance(body, dict):
                self.dropped += 1
                logger.error("Event %s dropped: a field is not JSON-serializable: %s", body.get("type"), exc)
            return None
