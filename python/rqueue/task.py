"""Tasks: a registered function plus the options it is sent and run with."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypedDict, TypeVar

from rqueue.exceptions import ConfigurationError, MaxRetriesExceededError, Retry
from rqueue.rates import check_rate

if TYPE_CHECKING:
    from collections.abc import Mapping

    from typing_extensions import Unpack

    from rqueue.app import App
    from rqueue.result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")

#: Options ``@app.task(...)`` accepts, with their defaults (None = follow the app's settings).
TASK_OPTIONS: dict[str, Any] = {
    "name": None,
    "bind": False,
    "ignore_result": None,
    "rate_limit": None,
    "queue": None,
    "priority": None,
    "acks_late": None,
    "max_retries": None,
    "default_retry_delay": None,
    "time_limit": None,
    "soft_time_limit": None,
    "serializer": None,
    "track_started": None,
    "autoretry_for": None,
    "retry_backoff": None,
    "retry_backoff_max": None,
    "retry_jitter": None,
}


class SendOptions(TypedDict, total=False):
    """How one task message is sent: what ``apply_async``, ``send_task``, ``send_many`` and
    ``retry`` accept (see ``Task.apply_async``)."""

    countdown: float | None
    eta: datetime | None
    expires: float | timedelta | datetime | None
    queue: str | None
    priority: int | None
    task_id: str | None
    headers: Mapping[str, Any] | None
    ignore_result: bool | None
    serializer: str | None
    time_limit: float | None
    soft_time_limit: float | None
    #: Set by ``retry()``: how many times the task ran before, its workflow's ids, and where its
    #: states go (the first sender's ``reply_to``, for ``rpc://``).
    retries: int
    root_id: str | None
    parent_id: str | None
    reply_to: str | None


#: The names of ``SendOptions``, for the run-time check of keyword arguments.
SEND_OPTIONS = frozenset(SendOptions.__annotations__)


@dataclass
class Request:
    """What a running task knows about its own message (``self.request`` in ``bind=True`` tasks)."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    #: The sending client's address for ``rpc://`` states.
    reply_to: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    is_eager: bool = False
    headers: dict[str, Any] = field(default_factory=dict)


_context = threading.local()


class Task(Generic[P, R]):
    """A task function registered with an app.

    Calling the task runs the function inline; ``delay``/``apply_async`` send it to a worker.
    """

    def __init__(self, app: App, fun: Callable[..., R], name: str, options: dict[str, Any]) -> None:
        unknown = set(options) - set(TASK_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"task {name}: unknown option(s) {', '.join(sorted(unknown))}; valid: {', '.join(TASK_OPTIONS)}"
            )
        if options.get("rate_limit") is not None:
            check_rate(options["rate_limit"], f"task {name}")
        self.app = app
        self.fun = fun
        self.name = name
        self.bind: bool = bool(options.get("bind", False))
        self.options = {k: v for k, v in options.items() if k not in ("name", "bind") and v is not None}
        self._options_key = f"task-options:{name}"
        self.__doc__ = fun.__doc__
        self.__wrapped__ = fun
        self.__module__ = fun.__module__

    # -- running ---------------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as a plain call."""
        if self.bind:
            return self.fun(self, *args, **kwargs)
        return self.fun(*args, **kwargs)

    @property
    def request(self) -> Request:
        """The request of the task running in this thread (``bind=True`` tasks use it)."""
        stack: list[Request] = getattr(_context, "stack", [])
        if not stack:
            return Request(id="", task=self.name, is_eager=True)
        return stack[-1]

    def option(self, key: str) -> Any:
        """The effective value of a task option: annotations, then the decorator, then the settings."""
        return self.resolved_options().get(key)

    def resolved_options(self) -> dict[str, Any]:
        """Every option's effective value (cached until the settings change); do not modify it."""
        return self.app.derived(self._options_key, self._resolve_options)

    def _resolve_options(self) -> dict[str, Any]:
        resolved = {key: self.app.task_option_default(key) for key in TASK_OPTIONS}
        resolved.update(self.options)
        resolved.update(self.app.annotations_for(self.name))
        return resolved

    # -- sending ---------------------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; a shortcut of ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> AsyncResult[R]:
        """Send the task to a worker with options (``SendOptions``).

        Args:
            args: Positional arguments.
            kwargs: Keyword arguments.
            countdown: Run no earlier than this many seconds from now.
            eta: Run no earlier than this time (a naive datetime is taken as UTC).
            expires: Seconds from now, or a time, after which the task is revoked instead of run.
            queue: The queue to send to (overrides routes).
            priority: 0 (first) to 9 (last).
            task_id: Use this id instead of a new UUID.
            headers: Extra message headers.
            ignore_result: Store no result.
            serializer: ``json``, ``msgpack`` or (when enabled) ``pickle``.
            time_limit: Hard time limit in seconds.
            soft_time_limit: Soft time limit in seconds.
        """
        return self.app.send_task(self.name, args, kwargs, self, **options)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """Schedule this task to run again, then stop the current run (call it as ``raise self.retry(...)``).

        The new message (same id, ``retries + 1``) waits in the broker until its time comes
        (``countdown`` seconds, default ``default_retry_delay``); nothing sleeps in the worker.
        Past ``max_retries`` (default the task's, 3; None = forever) ``exc`` is raised instead, or
        ``MaxRetriesExceededError`` when there is none.

        Raises:
            Retry: always, when a retry was scheduled; the worker records the state RETRY.
        """
        request = self.request
        if request.is_eager:
            raise RuntimeError(f"{self.name}.retry() called outside a worker: there is no message to retry")
        limit = max_retries if max_retries is not None else self.option("max_retries")
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"task {self.name}[{request.id}] gave up after {request.retries} retries (max_retries={limit})"
            )
        if countdown is None and eta is None:
            countdown = float(self.option("default_retry_delay") or 0)
        self.app.send_task(
            self.name,
            request.args,
            request.kwargs,
            self,
            countdown=countdown,
            eta=eta,
            task_id=request.id,
            queue=request.delivery_info.get("routing_key"),
            retries=request.retries + 1,
            root_id=request.root_id,
            parent_id=request.parent_id,
            reply_to=request.reply_to,
        )
        when = f"in {countdown:g} s" if countdown is not None else f"at {eta}"
        raise Retry(f"Retry {when}", exc=exc, when=countdown)

    def retry_countdown(self, retries: int) -> float:
        """The delay before automatic retry number ``retries + 1`` (``retry_backoff``, capped, with jitter)."""
        backoff = self.option("retry_backoff")
        if not backoff:
            return float(self.option("default_retry_delay") or 0)
        factor = 1.0 if backoff is True else float(backoff)
        delay = min(float(self.option("retry_backoff_max") or 600), factor * 2.0**retries)
        if self.option("retry_jitter") is not False:
            delay = random.uniform(0, delay)
        return delay

    def delay_many(self, calls: Iterable[tuple[Any, ...] | list[Any]]) -> list[AsyncResult[R]]:
        """Send one message per argument tuple, all in one broker round trip.

        ``add.delay_many([(1, 2), (3, 4)])`` is ``[add.delay(1, 2), add.delay(3, 4)]`` without a
        round trip each.
        """
        return self.app.send_many(self.name, ((args, {}) for args in calls), self)

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"


def push_request(request: Request) -> None:
    """Make ``request`` the current task request of this thread."""
    stack: list[Request] | None = getattr(_context, "stack", None)
    if stack is None:
        stack = _context.stack = []
    stack.append(request)


def pop_request() -> None:
    _context.stack.pop()
