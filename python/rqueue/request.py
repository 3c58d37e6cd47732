"""The request of a running task (``self.request``): Celery's fields from the message, and the
stack of the requests being run (a task may call another task's function inside it), one per
thread and per asyncio task: it lives in a context variable, so each of the coroutines an asyncio
worker runs at once on one thread sees its own request."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rqueue._rqueue import TaskMessage


@dataclass
class Request:
    """What a running task knows about its own message (``self.request`` in ``bind=True`` tasks):
    the fields of Celery's task request, filled from the message's headers, properties and embed."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    #: When the task was due and when it expires: ISO-8601 UTC text, as Celery's request has them.
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    #: The sending client's address for ``rpc://`` states.
    reply_to: str | None = None
    correlation_id: str | None = None
    origin: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    is_eager: bool = False
    #: True when the task function is called as a plain function (``add(2, 2)``), not for a message.
    called_directly: bool = False
    headers: dict[str, Any] = field(default_factory=dict)
    #: ``(hard, soft)`` limits in seconds the message asked for (Celery's order).
    timelimit: tuple[float | None, float | None] = (None, None)
    shadow: str | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    ignore_result: bool = False
    #: The canvas: Celery's embed fields (signature dicts) of the message.
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: Any = None
    utc: bool = True
    #: The tasks it sent while running, as Celery's result tuples (stored with its result).
    children: list[Any] | None = None


class MessageRequest(Request):
    """The request of a task a worker runs, read from its decoded message: the fields every task
    needs are set at once; Celery's rarer ones are read from the message on first use (each read
    of the message costs a conversion, and most tasks never look)."""

    def __init__(
        self, msg: TaskMessage, args: list[Any], kwargs: dict[str, Any], hostname: str, embed: dict[str, Any] | None
    ) -> None:
        self.message = msg
        self.embed = embed or {}
        self.id = msg.id
        self.task = msg.task
        self.args = args
        self.kwargs = kwargs
        self.hostname = hostname

    # Read from the message on first use: most tasks read none of these, and each read converts.

    @functools.cached_property
    def retries(self) -> int:  # type: ignore[override]
        return self.message.retries

    @functools.cached_property
    def root_id(self) -> str | None:  # type: ignore[override]
        return self.message.root_id

    @functools.cached_property
    def parent_id(self) -> str | None:  # type: ignore[override]
        return self.message.parent_id

    @functools.cached_property
    def group(self) -> str | None:  # type: ignore[override]
        return self.message.group_id

    @functools.cached_property
    def reply_to(self) -> str | None:  # type: ignore[override]
        return self.message.reply_to

    @functools.cached_property
    def redelivered(self) -> bool:  # type: ignore[override]
        return self.message.redelivered

    @functools.cached_property
    def delivery_info(self) -> dict[str, Any]:  # type: ignore[override]
        msg = self.message
        return {
            "exchange": msg.exchange,
            "routing_key": msg.routing_key,
            "priority": msg.priority,
            "redelivered": msg.redelivered,
        }

    @functools.cached_property
    def headers(self) -> dict[str, Any]:  # type: ignore[override]
        return self.message.headers

    @functools.cached_property
    def eta(self) -> str | None:  # type: ignore[override]
        return _iso(self.message.eta_ms)

    @functools.cached_property
    def expires(self) -> str | None:  # type: ignore[override]
        return _iso(self.message.expires_ms)

    @functools.cached_property
    def group_index(self) -> int | None:  # type: ignore[override]
        return self.message.group_index

    @functools.cached_property
    def correlation_id(self) -> str | None:  # type: ignore[override]
        return self.message.correlation_id or self.id

    @functools.cached_property
    def origin(self) -> str | None:  # type: ignore[override]
        return self.message.origin

    @functools.cached_property
    def properties(self) -> dict[str, Any]:  # type: ignore[override]
        msg = self.message
        return {
            "correlation_id": self.correlation_id,
            "reply_to": self.reply_to,
            "priority": msg.priority,
            "content_type": msg.content_type,
            "content_encoding": msg.content_encoding,
        }

    @functools.cached_property
    def timelimit(self) -> tuple[float | None, float | None]:  # type: ignore[override]
        return (self.message.time_limit, self.message.soft_time_limit)

    @functools.cached_property
    def shadow(self) -> str | None:  # type: ignore[override]
        return self.message.shadow

    @functools.cached_property
    def argsrepr(self) -> str | None:  # type: ignore[override]
        return self.message.argsrepr

    @functools.cached_property
    def kwargsrepr(self) -> str | None:  # type: ignore[override]
        return self.message.kwargsrepr

    @functools.cached_property
    def ignore_result(self) -> bool:  # type: ignore[override]
        return self.message.ignore_result

    @property
    def callbacks(self) -> list[Any] | None:  # type: ignore[override]
        return self.embed.get("callbacks")

    @property
    def errbacks(self) -> list[Any] | None:  # type: ignore[override]
        return self.embed.get("errbacks")

    @property
    def chain(self) -> list[Any] | None:  # type: ignore[override]
        return self.embed.get("chain")

    @property
    def chord(self) -> Any:
        return self.embed.get("chord")


def _iso(epoch_ms: int | None) -> str | None:
    from rqueue._rqueue import format_iso8601_ms  # noqa: PLC0415 - only when a task asks

    return None if epoch_ms is None else format_iso8601_ms(epoch_ms)


class ExceptionInfo:
    """The exception a task hook is given as ``einfo`` (Celery's ``ExceptionInfo``): the exception,
    its type and the formatted traceback text."""

    def __init__(self, exc: BaseException, traceback: str | None) -> None:
        self.exception = exc
        self.type = type(exc)
        self.traceback = traceback or ""

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


#: Headers of the v2 protocol itself: everything else in a message's headers is the sender's own,
#: kept by ``retry()``.
PROTOCOL_HEADERS = frozenset(
    {
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
    }
)


def custom_headers(headers: Mapping[str, Any]) -> dict[str, Any] | None:
    """The sender's own headers of a message (not the protocol's), or None."""
    custom = {k: v for k, v in headers.items() if k not in PROTOCOL_HEADERS}
    return custom or None


def push_request(request: Request) -> None:
    """Make ``request`` the current task request of this thread (or asyncio task)."""
    _stack.set((*_stack.get(), request))


def pop_request() -> None:
    _stack.set(_stack.get()[:-1])


def current_request() -> Request | None:
    """The request of the task a worker (or eager run) is running in this thread or asyncio task,
    if any; plain calls of task functions do not count (as Celery's ``current_worker_task``)."""
    for request in reversed(_stack.get()):
        if not request.called_directly:
            return request
    return None


def request_stack() -> tuple[Request, ...]:
    """The requests running in this thread or asyncio task, innermost last (empty outside any task)."""
    return _stack.get()


#: A tuple, never mutated: an asyncio task started inside a running task copies the context, and
#: its pushes must not show in its parent's stack (a shared list would).
_stack: contextvars.ContextVar[tuple[Request, ...]] = contextvars.ContextVar("rqueue_request_stack", default=())
#: The same variable, for the worker's fast lane, which pushes and pops requests natively.
REQUEST_STACK = _stack
