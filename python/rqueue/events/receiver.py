"""Receiving Celery's events from any broker, decoded and checked: what monitors build on.

``EventReceiver`` subscribes to the broker's event stream and yields each event as a dict (a
``task.multi`` list is unpacked into its events, in order). Anything that is not an event (not
JSON, not an object with a string ``type``) is reported to ``on_malformed`` and skipped; the
events around it are still delivered.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rqueue.brokers.base import Broker, Malformed

if TYPE_CHECKING:
    from types import TracebackType

    from rqueue.app import App
    from rqueue.brokers.base import EventChannel

logger = logging.getLogger("rqueue.events")

#: How long a wakeup broadcast (``heartbeat``: every worker sends one at once) stays valid.
WAKEUP_TIMEOUT_S = 1.0
#: The longest one wait for events blocks (so a consumer of ``itercapture`` can stop in time).
POLL_STEP_S = 1.0
#: Malformed payloads are logged with at most this many bytes of what came.
SHOWN_BYTES = 200


@dataclass(frozen=True)
class MalformedEvent:
    """A payload on the event stream that is not an event, and why."""

    reason: str
    data: bytes | Any

    def __str__(self) -> str:
        shown = repr(self.data)
        if len(shown) > SHOWN_BYTES:
            shown = shown[:SHOWN_BYTES] + "..."
        return f"{self.reason}: {shown}"


def _log_malformed(bad: MalformedEvent) -> None:
    logger.warning("Skipped a malformed event payload: %s", bad)


def decode_events(
    body: bytes | Malformed, received: float | None = None
) -> tuple[list[dict[str, Any]], list[MalformedEvent]]:
    """The events in one message body (an event object, or a list of them), and what in it is not one.

    Each event gets ``local_received`` (epoch seconds, when it was read here), as Celery's receiver adds.
    """
    if isinstance(body, Malformed):
        return [], [MalformedEvent(body.reason, body.data)]
    try:
        from rqueue import _rqueue  # noqa: PLC0415 - the extension is loaded by then; keeps the import cheap

        value = _rqueue.loads(body, "application/json")
    except Exception as exc:
        return [], [MalformedEvent(f"not JSON ({exc})", body)]
    received = time.time() if received is None else received
    items = value if isinstance(value, list) else [value]
    events: list[dict[str, Any]] = []
    bad: list[MalformedEvent] = []
    for item in items:
        if not isinstance(item, dict):
            bad.append(MalformedEvent(f"an event must be a JSON object, got {type(item).__name__}", item))
        elif not isinstance(item.get("type"), str) or not item["type"]:
            bad.append(MalformedEvent("an event must have a non-empty string 'type'", item))
        else:
            item["local_received"] = received
            events.append(item)
    return events, bad


class EventReceiver:
    """Receives the events that workers and producers send on the broker (Redis, RabbitMQ, SQLite).

    Args:
        source: The app (or its broker) whose broker carries the events.
        wakeup: Right after subscribing, ask every worker for a heartbeat (Celery's receivers do
            too), so live workers show up at once rather than within their heartbeat interval.
        on_malformed: Called with each ``MalformedEvent`` received (default: logged as a warning).

    Use it as a context manager, or call ``close()``::

        with EventReceiver(app) as receiver:
            for event in receiver.itercapture(timeout_s=10):
                print(event["type"], event["hostname"])
    """

    def __init__(
        self,
        source: App | Broker,
        *,
        wakeup: bool = True,
        on_malformed: Callable[[MalformedEvent], None] | None = None,
    ) -> None:
        self.broker: Broker = source if isinstance(source, Broker) else source.broker
        self.wakeup = wakeup
        self.on_malformed = on_malformed or _log_malformed
        #: How many malformed payloads (or list items) were skipped.
        self.malformed = 0
        self._channel: EventChannel | None = None
        #: Events received but not yet handed out (an iteration that stopped inside a batch).
        self._backlog: deque[dict[str, Any]] = deque()

    def __enter__(self) -> EventReceiver:
        self.subscribe()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def subscribe(self) -> None:
        """Start receiving (events published from now on); then wake the workers up if asked to."""
        if self._channel is not None:
            return
        channel = self.broker.events()
        channel.subscribe()
        self._channel = channel
        if self.wakeup:
            self.wakeup_workers()

    def wakeup_workers(self) -> None:
        """Ask every live worker to send a heartbeat now (the ``heartbeat`` control command)."""
        command: dict[str, Any] = {
            "method": "heartbeat",
            "arguments": {},
            "destination": None,
            "pattern": None,
            "matcher": None,
            "ticket": str(uuid.uuid4()),
        }
        self.broker.mailbox().broadcast(command, WAKEUP_TIMEOUT_S)

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        """The events received since the last call, waiting up to ``timeout_s`` for the first."""
        self.subscribe()
        assert self._channel is not None
        if self._backlog:
            events = list(self._backlog)
            self._backlog.clear()
            return events
        events = []
        for body in self._channel.receive(timeout_s):
            found, bad = decode_events(body)
            events.extend(found)
            for item in bad:
                self.malformed += 1
                try:
                    self.on_malformed(item)
                except Exception:
                    logger.exception("on_malformed failed for %s", item)
        return events

    def itercapture(self, limit: int | None = None, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield events as they come: until ``limit`` were yielded, or ``timeout_s`` passed (forever
        when both are None)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        count = 0
        while limit is None or count < limit:
            step = POLL_STEP_S if deadline is None else min(POLL_STEP_S, deadline - time.monotonic())
            if step <= 0:
                return
            batch = self.poll(step)
            handed = 0
            try:
                for event in batch:
                    handed += 1
                    yield event
                    count += 1
                    if limit is not None and count >= limit:
                        return
            finally:  # stopped inside the batch (limit, or the caller broke off): keep the rest
                self._backlog.extendleft(reversed(batch[handed:]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.itercapture()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
