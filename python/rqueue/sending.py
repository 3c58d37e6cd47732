"""How task calls become messages: a ``SendPlan`` resolves a send's options once (task options,
serializer, parent, links, limits, route when it does not depend on the arguments), then encodes
each call (``SendPlan.outgoing``), so a batch pays for the options once, not per message.
``send_async`` is the same send from a running event loop (``await task.adelay(...)``)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from rqueue import _rqueue, serialization
from rqueue.canvas import links_of
from rqueue.config import time_limit_value
from rqueue.exceptions import ConfigurationError
from rqueue.options import SEND_OPTIONS, SendOptions
from rqueue.request import current_request
from rqueue.result import AsyncResult

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.routing import Route
    from rqueue.task import Task


class Outgoing(NamedTuple):
    """An encoded message ready to publish."""

    task_id: str
    name: str
    queue: str
    exchange: str
    routing_key: str
    payload: bytes
    priority: int
    eta_ms: int | None
    ignore_result: bool
    #: The ``task-sent`` event's own fields, when the producer sends it (``task_send_sent_event``).
    sent_event: dict[str, Any] | None = None


#: ``Outgoing`` from a tuple of all its fields without a Python-level ``__new__`` (a batch makes
#: one per message).
_outgoing = functools.partial(tuple.__new__, Outgoing)


class SendPlan:
    """The options of one send (``apply_async``, ``send_task``, ``send_many``), resolved once."""

    def __init__(self, app: App, name: str, task: Task[Any, Any] | None, options: SendOptions) -> None:
        unknown = options.keys() - SEND_OPTIONS
        if unknown:
            raise TypeError(f"unknown send option(s) {', '.join(sorted(unknown))}; valid: {', '.join(SEND_OPTIONS)}")
        if options.get("compression"):
            raise ConfigurationError(
                f"compression={options['compression']!r}: rqueue does not compress messages "
                "(and refuses compressed ones); send without compression"
            )
        self.app, self.name, self.options = app, name, options
        self.task = task = task if task is not None else app.tasks.get(name)
        self.defaults = defaults = task.resolved_options() if task is not None else app.task_option_defaults()
        self.serializer = self._option("serializer", options.get("serializer"))
        if self.serializer not in ("json", "msgpack"):
            app.check_serializer_enabled(self.serializer)
        self.ignore_result = bool(self._option("ignore_result", options.get("ignore_result")))
        priority = options.get("priority")
        root_id, parent_id = options.get("root_id"), options.get("parent_id")
        parent = current_request() if root_id is None or parent_id is None else None
        if parent is not None:
            root_id = root_id or parent.root_id or parent.id
            parent_id = parent_id or parent.id
            if priority is None and app.conf.task_inherit_parent_priority:
                priority = parent.delivery_info.get("priority")
        self.priority = priority
        now = time.time()
        self.eta_ms = _eta_ms(now, options.get("countdown"), options.get("eta"))
        self.shadow = options.get("shadow")
        if self.shadow is None and task is not None:
            self.shadow = defaults["shadow"]
        #: Whether the shadow name is the task's to make per call (``shadow_name``).
        self.shadow_per_call = self.shadow is None and task is not None and task.names_shadow
        self.callbacks, self.errbacks = links_of(options.get("link")), links_of(options.get("link_error"))
        self.chain = links_of(options.get("chain"))
        chord = options.get("chord")
        self.chord = dict(chord) if chord is not None else None
        #: The route, when it cannot depend on the arguments (no router function is configured).
        self.route: Route | None = app.route_by_name(name, options, task)
        self.reply_to = options.get("reply_to")
        #: Whether each message is announced with a ``task-sent`` event (read once per send call).
        self.sent_events: bool = app.derived("task_send_sent_event", lambda: bool(app.conf.task_send_sent_event))
        self.fixed = {
            "task": name,
            "serializer": self.serializer,
            "eta_ms": self.eta_ms,
            "expires_ms": _expires_ms(now, self._option("expires", options.get("expires"))),
            "retries": options.get("retries", 0),
            # Only per-call limits travel: the worker adds its own task options and settings
            # (and operators' run-time overrides), as a Celery worker does for an empty header.
            "time_limit": time_limit_value(options.get("time_limit"), "time_limit"),
            "soft_time_limit": time_limit_value(options.get("soft_time_limit"), "soft_time_limit"),
            "root_id": root_id,
            "parent_id": parent_id,
            "origin": app.origin,
            "ignore_result": self.ignore_result,
            "extra_headers": options.get("headers"),
            "max_size": app.conf.task_max_message_size,
            "callbacks": self.callbacks,
            "errbacks": self.errbacks,
            "chain": self.chain,
            "chord": self.chord,
            "group_id": options.get("group_id"),
            "group_index": options.get("group_index"),
        }

    def _option(self, key: str, given: Any) -> Any:
        return given if given is not None else self.defaults.get(key)

    def outgoing_many(self, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]]) -> list[Outgoing]:
        """Route and encode many calls: in one native step when nothing depends on the call (the
        route, the shadow name, the reply address, the task id), else one by one."""
        app = self.app
        if (
            self.route is None
            or self.shadow_per_call
            or self.serializer not in ("json", "msgpack")
            or app.backend.routes_replies
            or self.options.get("task_id")
        ):
            return [self.outgoing(args, kwargs) for args, kwargs in calls]
        queue_name, exchange, routing_key, routed_priority = self.route
        priority = self._option("priority", self.priority if self.priority is not None else routed_priority)
        encoded = _rqueue.encode_task_messages(
            calls if isinstance(calls, list) else list(calls),  # (args, kwargs) pairs, read natively
            routing_key=routing_key,
            exchange=exchange,
            priority=priority,
            reply_to=self.reply_to or app.oid,
            shadow=self.shadow,
            **self.fixed,
        )
        clamped, name, eta_ms, ignore_result = _clamp_priority(priority), self.name, self.eta_ms, self.ignore_result
        if self.sent_events:  # each message announced with its own task-sent event
            return [
                Outgoing(
                    task_id,
                    name,
                    queue_name,
                    exchange,
                    routing_key,
                    payload,
                    clamped,
                    eta_ms,
                    ignore_result,
                    self._sent_event(task_id, list(args or ()), dict(kwargs or {}), queue_name, exchange, routing_key),
                )
                for (task_id, payload), (args, kwargs) in zip(encoded, calls, strict=True)
            ]
        return [
            _outgoing((task_id, name, queue_name, exchange, routing_key, payload, clamped, eta_ms, ignore_result, None))
            for task_id, payload in encoded
        ]

    def outgoing(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> Outgoing:
        """Route and encode one call."""
        args = list(args or ())
        kwargs = dict(kwargs or {})
        app, options = self.app, self.options
        route = self.route or app.route(self.name, args, kwargs, options, self.task)
        queue_name, exchange, routing_key, routed_priority = route
        priority = self._option("priority", self.priority if self.priority is not None else routed_priority)
        task_id = options.get("task_id") or _rqueue.new_task_id()
        shadow = self.shadow
        if self.shadow_per_call:
            assert self.task is not None
            shadow = self.task.shadow_name(tuple(args), kwargs, options)
        body = None
        if self.serializer not in ("json", "msgpack"):
            embed = {"callbacks": self.callbacks, "errbacks": self.errbacks, "chain": self.chain, "chord": self.chord}
            body = serialization.dumps([args, kwargs, embed], self.serializer)
        payload = _rqueue.encode_task_message(
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            routing_key=routing_key,
            exchange=exchange,
            body=body,
            priority=priority,
            reply_to=self.reply_to or app.backend.reply_to_for(task_id) or app.oid,
            shadow=shadow,
            **self.fixed,
        )
        return Outgoing(
            task_id,
            self.name,
            queue_name,
            exchange,
            routing_key,
            payload,
            _clamp_priority(priority),
            self.eta_ms,
            self.ignore_result,
            self._sent_event(task_id, args, kwargs, queue_name, exchange, routing_key) if self.sent_events else None,
        )

    def _sent_event(
        self, task_id: str, args: list[Any], kwargs: dict[str, Any], queue: str, exchange: str, routing_key: str
    ) -> dict[str, Any]:
        """The fields of a ``task-sent`` event, as Celery's producer sends them."""
        fixed = self.fixed
        return {
            "uuid": task_id,
            "root_id": fixed["root_id"] or task_id,
            "parent_id": fixed["parent_id"],
            "name": self.name,
            "args": _repr(tuple(args)),
            "kwargs": _repr(kwargs),
            "retries": fixed["retries"],
            "eta": _iso(fixed["eta_ms"]),
            "expires": _iso(fixed["expires_ms"]),
            "queue": queue,
            "exchange": exchange,
            "routing_key": routing_key,
        }


#: Threads publishing for event loops (per process): a publish blocks in the extension (GIL
#: released) for a round trip, and through retries while the broker is unreachable; in a thread it
#: never stalls the loop. A few suffice: each is busy for one round trip per message.
PUBLISH_THREADS = 4

_publisher: tuple[int, ThreadPoolExecutor] | None = None
_publisher_lock = threading.Lock()


def publisher() -> ThreadPoolExecutor:
    """The publishing threads of this process (made on first use, and again after a fork)."""
    global _publisher
    with _publisher_lock:
        if _publisher is None or _publisher[0] != os.getpid():
            _publisher = (os.getpid(), ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="rqueue-publish"))
        return _publisher[1]


async def send_async(
    app: App,
    name: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    task: Task[Any, Any] | None,
    options: SendOptions,
) -> AsyncResult[Any]:
    """``app.send_task`` from a running event loop: the message is built here (so bad arguments and
    options raise in the caller, and a task sent from a running task gets its parent), then
    published in a ``publisher()`` thread with the same signals, retries and errors as ``delay``.

    Cancelling the await does not recall a message already handed to the thread: it may be sent.
    """
    from rqueue.app import _add_to_parent  # noqa: PLC0415 - the app imports this module

    loop = asyncio.get_running_loop()
    plan = SendPlan(app, name, task, options)
    if app._backend is None:  # opening it may connect (rpc:// opens the broker): not on the loop
        await loop.run_in_executor(publisher(), lambda: app.backend)
    backend = app.backend
    if backend.routes_replies:
        # rpc:// declares this process's reply queue on its first message: a round trip, in the pool.
        message = await loop.run_in_executor(publisher(), plan.outgoing, args, kwargs)
    else:
        message = plan.outgoing(args, kwargs)
    context = contextvars.copy_context()
    await loop.run_in_executor(publisher(), context.run, app._publish, message, options)
    result: AsyncResult[Any] = AsyncResult(message.task_id, backend, ignored=message.ignore_result, app=app)
    if options.get("add_to_parent", True):
        _add_to_parent(result)
    return result


#: Argument reprs in ``task-sent`` events are cut to this many characters (as the message's headers).
SENT_REPR_MAX = 1024


def _repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= SENT_REPR_MAX else text[:SENT_REPR_MAX] + "..."


def _iso(epoch_ms: int | None) -> str | None:
    return None if epoch_ms is None else _rqueue.format_iso8601_ms(epoch_ms)


def _clamp_priority(priority: int | None) -> int:
    return 0 if priority is None else max(0, min(9, int(priority)))


def _to_epoch_ms(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def _eta_ms(now: float, countdown: float | None, eta: datetime | None) -> int | None:
    if countdown is not None:
        return int((now + countdown) * 1000)
    return None if eta is None else _to_epoch_ms(eta)


def _expires_ms(now: float, expires: float | timedelta | datetime | None) -> int | None:
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return _to_epoch_ms(expires)
    seconds = expires.total_seconds() if isinstance(expires, timedelta) else float(expires)
    return int((now + seconds) * 1000)
