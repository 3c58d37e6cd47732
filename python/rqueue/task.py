"""Tasks: a registered function plus the options it is sent and run with."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
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
}


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
            from rqueue.exceptions import ConfigurationError

            raise ConfigurationError(
                f"task {name}: unknown option(s) {', '.join(sorted(unknown))}; valid: {', '.join(TASK_OPTIONS)}"
            )
        self.app = app
        self.fun = fun
        self.name = name
        self.bind: bool = bool(options.get("bind", False))
        self.options = {k: v for k, v in options.items() if k not in ("name", "bind") and v is not None}
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
        return self.app.derived(f"task-options:{self.name}", self._resolve_options).get(key)

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
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        task_id: str | None = None,
        headers: dict[str, Any] | None = None,
        ignore_result: bool | None = None,
        serializer: str | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
    ) -> AsyncResult[R]:
        """Send the task to a worker with options.

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
        return self.app.send_task(
            self.name,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            task_id=task_id,
            headers=headers,
            ignore_result=ignore_result,
            serializer=serializer,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            _task=self,
        )

    def delay_many(self, calls: Iterable[tuple[Any, ...] | list[Any]]) -> list[AsyncResult[R]]:
        """Send one message per argument tuple, all in one broker round trip.

        ``add.delay_many([(1, 2), (3, 4)])`` is ``[add.delay(1, 2), add.delay(3, 4)]`` without a
        round trip each.
        """
        return self.app.send_many(self.name, ((args, {}) for args in calls), _task=self)

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
