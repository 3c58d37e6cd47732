"""The application: settings, the task registry, and sending tasks."""

from __future__ import annotations

import fnmatch
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Concatenate, Literal, NamedTuple, ParamSpec, TypeVar, overload

from rqueue import _rqueue, serialization
from rqueue.backends import ResultBackend, open_backend
from rqueue.brokers import BROKERS, Broker, open_broker
from rqueue.config import Settings, time_limit_value
from rqueue.control import Control
from rqueue.exceptions import ConfigurationError, NotRegistered
from rqueue.result import AsyncResult
from rqueue.routing import Route, compile_routes
from rqueue.task import SEND_OPTIONS, SendOptions, Task
from rqueue.urls import DEFAULT_SQLITE_URL, mask_password

if TYPE_CHECKING:
    from typing_extensions import Unpack

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class App:
    """An rqueue application.

    Args:
        main: Name of the main module, used for task names when tasks are defined in ``__main__``.
        broker: Broker URL; unset uses ``$RQUEUE_BROKER_URL`` or the embedded ``sqlite:///rqueue.sqlite3``.
        backend: Result backend URL; unset uses ``$RQUEUE_RESULT_BACKEND``, or the broker's file for SQLite.
        **settings: Any setting of ``rqueue.config.DEFAULTS``.
    """

    def __init__(
        self, main: str | None = None, broker: str | None = None, backend: str | None = None, **settings: Any
    ) -> None:
        self.main = main
        self.conf = Settings()
        if broker is not None:
            settings["broker_url"] = broker
        if backend is not None:
            settings["result_backend"] = backend
        self.conf.update(settings)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._broker: tuple[str, Broker] | None = None
        self._backend: tuple[tuple[Any, ...], ResultBackend] | None = None
        self._derived_version = -1
        self._derived_cache: dict[str, Any] = {}
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.oid = str(uuid.uuid4())

    # -- configuration -------------------------------------------------------------------------------

    def config_from_object(self, obj: object | str) -> None:
        """Load settings from a module (or its importable name) or an object's attributes."""
        self.conf.from_object(obj)

    @property
    def broker_url(self) -> str:
        """The effective broker URL (unmasked: do not log it; use ``mask_password``)."""
        url = self.conf.broker_url or DEFAULT_SQLITE_URL
        BROKERS.scheme_of(url)
        return str(url)

    @property
    def backend_url(self) -> str | None:
        """The effective result backend URL; an ``sqlite://`` broker keeps results in its own file."""
        url = self.conf.result_backend
        if url:
            return str(url)
        broker = self.broker_url
        return broker if broker.startswith("sqlite://") else None

    def derived(self, key: str, build: Callable[[], T]) -> T:
        """A value computed from the settings, rebuilt only after they change (hot paths use it)."""
        version = self.conf.version
        if self._derived_version != version:
            self._derived_cache = {}
            self._derived_version = version
        try:
            return self._derived_cache[key]  # type: ignore[no-any-return]  # stored by build(): a T
        except KeyError:
            value = self._derived_cache[key] = build()
            return value

    @property
    def broker(self) -> Broker:
        """The broker connection of this process (opened on first use)."""
        url = self.derived("broker_url", lambda: self.broker_url)
        if self._broker is None or self._broker[0] != url:
            self._broker = (url, open_broker(url, self.conf))
        return self._broker[1]

    @property
    def backend(self) -> ResultBackend:
        """The result backend (opened on first use)."""
        conf = self.conf
        key = self.derived(
            "backend_key",
            lambda: (
                self.backend_url,
                conf.result_serializer,
                tuple(conf.result_accept_content or conf.accept_content),
                conf.result_expires,
                conf.result_extended,
            ),
        )
        if self._backend is None or self._backend[0] != key:
            expires = conf.result_expires
            if isinstance(expires, timedelta):
                expires = expires.total_seconds()
            accept = serialization.accepted_content_types(conf.result_accept_content or conf.accept_content)
            accept.append(serialization.content_type(conf.result_serializer))
            backend = open_backend(
                self.backend_url,
                broker=lambda: self.broker,
                serializer=conf.result_serializer,
                accept=accept,
                expires_s=expires,
                extended=conf.result_extended,
            )
            self._backend = (key, backend)
        return self._backend[1]

    # -- tasks -----------------------------------------------------------------------------------------

    @overload
    def task(self, fun: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, fun: None = None, /, *, bind: Literal[True], name: str | None = None, **options: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...

    @overload
    def task(
        self, fun: None = None, /, *, bind: Literal[False] = False, name: str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, fun: Callable[..., Any] | None = None, /, *, bind: bool = False, name: str | None = None, **options: Any
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., bind=True, ...)``."""

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or self.gen_task_name(f)
            task: Task[Any, Any] = Task(self, f, task_name, {**options, "bind": bind})
            self.tasks[task_name] = task
            return task

        if fun is not None:
            return register(fun)
        return register

    def gen_task_name(self, fun: Callable[..., Any]) -> str:
        module = fun.__module__
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{fun.__name__}"

    def annotations_for(self, name: str) -> dict[str, Any]:
        """Option overrides for a task from ``task_annotations`` (exact names and globs; later wins)."""
        annotations = self.conf.task_annotations
        if not annotations:
            return {}
        merged: dict[str, Any] = {}
        for table in annotations if isinstance(annotations, (list, tuple)) else [annotations]:
            for pattern, values in table.items():
                if pattern == name or fnmatch.fnmatchcase(name, pattern):
                    merged.update(values)
        return merged

    def task_option_default(self, key: str) -> Any:
        """The app-wide default of a task option."""
        return self.derived("task_option_defaults", self._task_option_defaults).get(key)

    def _task_option_defaults(self) -> dict[str, Any]:
        conf = self.conf
        return {
            "ignore_result": conf.task_ignore_result,
            "acks_late": conf.task_acks_late,
            "track_started": conf.task_track_started,
            "serializer": conf.task_serializer,
            "time_limit": conf.task_time_limit,
            "soft_time_limit": conf.task_soft_time_limit,
            "max_retries": conf.task_max_retries,
            "default_retry_delay": conf.task_default_retry_delay,
            "rate_limit": conf.task_default_rate_limit,
            "priority": conf.task_default_priority,
        }

    # -- sending -------------------------------------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        _task: Task[Any, Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> AsyncResult[Any]:
        """Send a task by name (it need not be importable here). Options as in ``Task.apply_async``."""
        message = self._message(name, args, kwargs, _task, options)
        self.broker.publish(message.queue, message.payload, message.priority, message.eta_ms)
        return AsyncResult(message.task_id, self.backend, ignored=message.ignore_result, app=self)

    def send_many(
        self,
        name: str,
        calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
        _task: Task[Any, Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> list[AsyncResult[Any]]:
        """Send many calls of one task in one broker round trip (one transaction on SQLite).

        ``calls`` holds ``(args, kwargs)`` pairs; the options apply to every call.
        """
        messages = [self._message(name, args, kwargs, _task, options) for args, kwargs in calls]
        backend = self.backend
        self.broker.publish_many([(m.queue, m.payload, m.priority, m.eta_ms) for m in messages])
        return [AsyncResult(m.task_id, backend, ignored=m.ignore_result, app=self) for m in messages]

    def _message(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        task: Task[Any, Any] | None,
        options: SendOptions,
    ) -> _Outgoing:
        """Route and encode one task message."""
        unknown = options.keys() - SEND_OPTIONS
        if unknown:
            raise TypeError(f"unknown send option(s) {', '.join(sorted(unknown))}; valid: {', '.join(SEND_OPTIONS)}")
        if task is None:
            task = self.tasks.get(name)
        args = list(args or ())
        kwargs = dict(kwargs or {})

        def option(key: str, given: Any) -> Any:
            if given is not None:
                return given
            return task.option(key) if task is not None else self.task_option_default(key)

        serializer = option("serializer", options.get("serializer"))
        ignore_result = bool(option("ignore_result", options.get("ignore_result")))
        queue_name, exchange, routing_key, routed_priority = self._route(name, args, kwargs, options.get("queue"), task)
        priority = options.get("priority")
        priority = option("priority", priority if priority is not None else routed_priority)
        now = time.time()
        eta_ms = _eta_ms(now, options.get("countdown"), options.get("eta"))
        task_id = options.get("task_id") or _rqueue.new_task_id()
        body = None
        if serializer not in ("json", "msgpack"):
            self._check_serializer_enabled(serializer)
            body = serialization.dumps([args, kwargs, _EMBED], serializer)
        payload = _rqueue.encode_task_message(
            task=name,
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            routing_key=routing_key,
            exchange=exchange,
            serializer=serializer,
            body=body,
            eta_ms=eta_ms,
            expires_ms=_expires_ms(now, options.get("expires")),
            retries=options.get("retries", 0),
            # Only per-call limits travel: the worker adds its own task options and settings
            # (and operators' run-time overrides), as a Celery worker does for an empty header.
            time_limit=time_limit_value(options.get("time_limit"), "time_limit"),
            soft_time_limit=time_limit_value(options.get("soft_time_limit"), "soft_time_limit"),
            priority=priority,
            root_id=options.get("root_id"),
            parent_id=options.get("parent_id"),
            origin=self.origin,
            ignore_result=ignore_result,
            reply_to=options.get("reply_to") or self.backend.reply_to_for(task_id) or self.oid,
            extra_headers=options.get("headers"),
            max_size=self.conf.task_max_message_size,
        )
        return _Outgoing(task_id, queue_name, payload, _clamp_priority(priority), eta_ms, ignore_result)

    def _check_serializer_enabled(self, serializer: str) -> None:
        accept = [serialization.serializer_name(c) for c in self.conf.accept_content]
        if serializer not in accept:
            raise ConfigurationError(
                f"serializer {serializer!r} is not enabled: add it to accept_content explicitly "
                f"(accept_content is {self.conf.accept_content})"
            )

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:  # noqa: N802 - Celery's spelling
        """A result handle for a task id."""
        return AsyncResult(task_id, self.backend, app=self)

    @property
    def control(self) -> Control:
        """Operations on tasks carried out by workers (``app.control.revoke(task_id)``)."""
        return Control(self)

    # -- routing ---------------------------------------------------------------------------------------

    def _route(
        self, name: str, args: list[Any], kwargs: dict[str, Any], queue: str | None, task: Task[Any, Any] | None
    ) -> Route:
        """``(queue, exchange, routing_key, priority)``: an explicit queue, then the task's, then routes."""
        explicit = queue or (task.options.get("queue") if task is not None else None)
        if explicit:
            return explicit, "", explicit, None
        routes = self.derived("routing", lambda: compile_routes(self.conf.task_routes))
        route = routes.lookup(name, args, kwargs, task)
        if route is not None:
            return route
        default = self.conf.task_default_queue
        return default, self.conf.task_default_exchange, default, None

    def __repr__(self) -> str:
        return f"<App {self.main or '__main__'} broker={mask_password(self.broker_url)}>"


#: The default ``embed`` of a protocol v2 body (no callbacks, no chain, no chord).
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class _Outgoing(NamedTuple):
    """An encoded message ready to publish."""

    task_id: str
    queue: str
    payload: bytes
    priority: int
    eta_ms: int | None
    ignore_result: bool


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


def find_task(app: App, name: str) -> Task[Any, Any]:
    """The registered task ``name``, or NotRegistered."""
    try:
        return app.tasks[name]
    except KeyError:
        raise NotRegistered(f"task {name!r} is not registered with app {app.main!r}") from None
