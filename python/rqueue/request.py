"""The request of a running task (``self.request``): Celery's fields from the message, and the
per-thread stack of the requests being run (a task may call another task's function inside it)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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

    @property
    def correlation(self) -> str:
        return self.correlation_id or self.id


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
    """Make ``request`` the current task request of this thread."""
    stack: list[Request] | None = getattr(_context, "stack", None)
    if stack is None:
        stack = _context.stack = []
    stack.append(request)


def pop_request() -> None:
    _context.stack.pop()


def current_request() -> Request | None:
    """The request of the task a worker (or eager run) is running in this thread, if any; plain
    calls of task functions do not count (as Celery's ``current_worker_task``)."""
    stack: list[Request] | None = getattr(_context, "stack", None)
    if not stack:
        return None
    for request in reversed(stack):
        if not request.called_directly:
            return request
    return None


def request_stack() -> list[Request]:
    """The requests running in this thread, innermost last (empty outside any task)."""
    stack: list[Request] | None = getattr(_context, "stack", None)
    return stack if stack is not None else []


_context = threading.local()
