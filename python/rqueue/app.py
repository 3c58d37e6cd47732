"""The application: settings, the task registry, and sending tasks."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from rqueue import current, serialization, signals
from rqueue.backends import ResultBackend, open_backend
from rqueue.brokers import BROKERS, Broker, open_broker
from rqueue.builtins import builtin_tasks
from rqueue.canvas import Signature, signature
from rqueue.config import Settings
from rqueue.control import Control
from rqueue.current import current_app
from rqueue.exceptions import BrokerConnectionError, BrokerNoReplyError, ConfigurationError, NotRegistered
from rqueue.options import SendOptions
from rqueue.request import current_request
from rqueue.result import AsyncResult
from rqueue.routing import Route, compile_routes
from rqueue.sending import Outgoing, SendPlan
from rqueue.task import Task
from rqueue.urls import DEFAULT_SQLITE_URL, mask_password

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from rqueue.events import EventDispatcher

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
logger = logging.getLogger("rqueue")


class App:
    """An rqueue application (``from rqueue import Celery`` names the same class).

    Args:
        main: Name of the main module, used for task names when tasks are defined in ``__main__``.
        broker: Broker URL; unset uses ``$RQUEUE_BROKER_URL`` (or ``$CELERY_BROKER_URL``), else the
            embedded ``sqlite:///rqueue.sqlite3``.
        backend: Result backend URL; unset uses ``$RQUEUE_RESULT_BACKEND`` (or
            ``$CELERY_RESULT_BACKEND``), or the broker's file for SQLite.
        include: Modules the worker imports at start, so their tasks register.
        task_cls: The base class of this app's tasks (``app.Task``); default ``rqueue.Task``.
        set_as_current: Make this the current app (used by ``shared_task`` and ``AsyncResult(id)``).
        config_source: An object or module name to load settings from (``config_from_object``).
        namespace: With ``config_source``: the settings' prefix, e.g. ``"CELERY"``.
        **settings: Any setting of ``rqueue.config.DEFAULTS`` (or a Celery setting, with a warning).
    """

    def __init__(  # noqa: PLR0913 - Celery's constructor
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        *,
        include: Sequence[str] | None = None,
        task_cls: type[Task[Any, Any]] | None = None,
        set_as_current: bool = True,
        config_source: object | str | None = None,
        namespace: str | None = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings()
        if broker is not None:
            settings["broker_url"] = broker
        if backend is not None:
            settings["result_backend"] = backend
        if include is not None:
            settings["include"] = list(include)
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        self.conf.update(settings)
        self.namespace = namespace
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: The base class of ``@app.task`` tasks; subclass it for shared behaviour (``class MyTask(app.Task)``).
        self.Task: type[Task[Any, Any]] = task_cls or Task
        #: Sent once the configuration is complete (at finalize), and once every task is registered.
        self.on_after_configure = signals.Signal("on_after_configure", ("source",))
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self.finalized = False
        self._autodiscover: list[tuple[Any, str]] = []
        self._broker: tuple[str, Broker] | None = None
        self._backend: tuple[tuple[Any, ...], ResultBackend] | None = None
        #: Held while the broker or backend is opened, so threads that use them first at once
        #: (sends from ``aapply_async``'s pool) share one; by pid, as a fork may copy it held.
        self._opening = (os.getpid(), threading.RLock())
        self._derived_version = -1
        self._derived_cache: dict[str, Any] = {}
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        #: This process's event dispatcher (``send_event``), by pid: a forked child makes its own.
        self._events: tuple[int, EventDispatcher] | None = None
        self.oid = str(uuid.uuid4())
        _register_app(self, set_as_current)

    # -- configuration -------------------------------------------------------------------------------

    def config_from_object(
        self,
        obj: object | str,
        namespace: str | None = None,
        silent: bool = False,
        force: bool = True,
    ) -> None:
        """Load settings from a module (or its importable name) or an object's attributes.

        ``namespace="CELERY"`` (Django) reads only ``CELERY_``-prefixed names, without the prefix.
        ``silent`` ignores a module that cannot be imported.
        """
        try:
            self.conf.from_object(obj, namespace=namespace or self.namespace)
        except ImportError:
            if not silent:
                raise

    def config_from_envvar(self, variable_name: str, silent: bool = False, force: bool = True) -> None:
        """Load settings from the module named by an environment variable."""
        module = os.environ.get(variable_name)
        if not module:
            if silent:
                return
            raise ConfigurationError(f"the environment variable {variable_name} is not set: it must name a module")
        self.config_from_object(module, silent=silent, force=force)

    def autodiscover_tasks(
        self,
        packages: Sequence[str] | Callable[[], Sequence[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.tasks`` of each package when the worker starts (at once with ``force``).

        ``packages`` may be a callable (Django: ``lambda: settings.INSTALLED_APPS``); None means
        Django's installed apps when Django is configured. A package without the module is skipped.
        """
        self._autodiscover.append((packages, related_name))
        if force:
            self._discover()

    def _discover(self) -> None:
        pending, self._autodiscover = self._autodiscover, []
        for packages, related_name in pending:
            names = packages() if callable(packages) else packages
            if names is None:
                names = _django_installed_apps()
            for package in names:
                _import_related(package, related_name)

    def import_default_modules(self) -> None:
        """Import ``imports`` and ``include`` and the autodiscovered task modules (worker start)."""
        signals.import_modules.send(sender=self)
        for module in [*self.conf.imports, *self.conf.include]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigurationError(f"cannot import module {module!r} named in imports/include: {exc}") from exc
        self._discover()

    def finalize(self, auto: bool = False) -> None:
        """Import the task modules and announce the app complete (``on_after_configure``, then
        ``on_after_finalize``); the worker calls it at start. Later calls do nothing."""
        if self.finalized:
            return
        self.finalized = True
        self.on_after_configure.send(sender=self, source=self.conf)
        _bind_shared_tasks(self)
        self.import_default_modules()
        self.on_after_finalize.send(sender=self)

    def set_current(self) -> None:
        """Make this the current app (``shared_task``, ``AsyncResult(id)`` use it)."""
        current.set_current(self)

    def set_default(self) -> None:
        """Make this the default app (the current one in threads that set none)."""
        current.set_default(self)

    def start(self, argv: Sequence[str] | None = None) -> None:
        """Run the ``rqueue`` command line for this app (``argv`` without the program name)."""
        from rqueue.cli import run_for_app  # noqa: PLC0415 - the CLI is not needed to send tasks

        run_for_app(self, list(sys.argv[1:] if argv is None else argv))

    def worker_main(self, argv: Sequence[str] | None = None) -> None:
        """Run a worker of this app: ``app.worker_main(["worker", "--loglevel=INFO"])``."""
        args = list(sys.argv[1:] if argv is None else argv)
        if not args or args[0] != "worker":
            args.insert(0, "worker")
        self.start(args)

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
        opened = self._broker
        if opened is None or opened[0] != url:
            with self._opening_lock():
                opened = self._broker
                if opened is None or opened[0] != url:
                    opened = self._broker = (url, open_broker(url, self.conf))
        return opened[1]

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
                conf.result_backend_max_retries,
            ),
        )
        opened = self._backend
        if opened is None or opened[0] != key:
            with self._opening_lock():
                opened = self._backend
                if opened is None or opened[0] != key:
                    opened = self._backend = (key, self._open_backend())
        return opened[1]

    def _opening_lock(self) -> threading.RLock:
        pid, lock = self._opening
        if pid != os.getpid():
            self._opening = pid, lock = os.getpid(), threading.RLock()
        return lock

    def _open_backend(self) -> ResultBackend:
        conf = self.conf
        expires = conf.result_expires
        if isinstance(expires, timedelta):
            expires = expires.total_seconds()
        accept = serialization.accepted_content_types(conf.result_accept_content or conf.accept_content)
        accept.append(serialization.content_type(conf.result_serializer))
        return open_backend(
            self.backend_url,
            broker=lambda: self.broker,
            serializer=conf.result_serializer,
            accept=accept,
            expires_s=expires,
            extended=conf.result_extended,
            max_retries=conf.result_backend_max_retries,
        )

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
        self,
        fun: Callable[..., Any] | None = None,
        /,
        *,
        bind: bool = False,
        name: str | None = None,
        base: type[Task[Any, Any]] | None = None,
        **options: Any,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., bind=True, base=MyTask, ...)``.

        ``base`` is the task's class (default ``app.Task``): its class attributes are option
        defaults and its hook methods are called by the worker. Options: ``rqueue.task.TASK_OPTIONS``.
        """

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task: Task[Any, Any] = (base or self.Task)()
            task.bind_app(self, name, f, {**options, "bind": bind})
            return self.register_task(task)

        if fun is not None:
            return register(fun)
        return register

    def register_task(self, task: Task[Any, Any] | type[Task[Any, Any]], **options: Any) -> Task[Any, Any]:
        """Register a class-based task (an instance, or a class, of a ``Task`` subclass that defines ``run``)."""
        if isinstance(task, type):
            task = task()
        if getattr(task, "app", None) is not self:
            task.bind_app(self, task.__dict__.get("name"), None, options)
        existing = self.tasks.get(task.name)
        if existing is not None and existing is not task and _origin(existing) != _origin(task):
            logger.warning("Task %s registered twice; the later definition wins", task.name)
        self.tasks[task.name] = task
        return task

    def registered(self, name: str) -> Task[Any, Any]:
        """The registered (or built-in) task ``name``, or NotRegistered."""
        task = self.tasks.get(name) or self.builtin(name)
        if task is None:
            raise NotRegistered(f"task {name!r} is not registered with app {self.main!r}")
        return task

    def builtin(self, name: str) -> Task[Any, Any] | None:
        """Celery's built-in task ``name`` (``celery.map`` ...; ``rqueue.builtins``), or None."""
        if not name.startswith("celery."):
            return None
        return self.derived("builtins", lambda: builtin_tasks(self)).get(name)

    def gen_task_name(self, fun: Callable[..., Any] | type) -> str:
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
        return self.task_option_defaults().get(key)

    def task_option_defaults(self) -> dict[str, Any]:
        """The app-wide defaults of the task options."""
        return self.derived("task_option_defaults", self._task_option_defaults)

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
            "typing": True,
            "acks_on_failure_or_timeout": True,
            "store_errors_even_if_ignored": False,
            "store_eager_result": conf.task_store_eager_result,
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
        """Send a task by name (it need not be importable here). Options as in ``Task.apply_async``.

        Sent from inside a running task, the new task's ``parent_id`` is the running task and its
        ``root_id`` the running task's root, as in Celery.
        """
        message = SendPlan(self, name, _task, options).outgoing(args, kwargs)
        self._publish(message, options)
        result: AsyncResult[Any] = AsyncResult(message.task_id, self.backend, ignored=message.ignore_result, app=self)
        if options.get("add_to_parent", True):
            _add_to_parent(result)
        return result

    def _publish(self, message: Outgoing, options: SendOptions) -> None:
        """Publish one message: the publish signals around it, retried per ``retry_policy`` while the
        broker cannot be reached."""
        published = None
        if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
            published = {
                "body": message.payload,
                "exchange": message.exchange,
                "routing_key": message.routing_key,
                "headers": {"id": message.task_id, "task": message.name},
            }
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(
                sender=message.name,
                **published,  # type: ignore[arg-type]  # set above when there are receivers
                properties={"priority": message.priority},
                declare=[],
                retry_policy=options.get("retry_policy"),
            )
        try:
            self._send(message)
        except BrokerNoReplyError:
            raise
        except BrokerConnectionError as exc:
            self._send_again(message, options, exc)
        if published is not None and signals.after_task_publish.receivers:
            signals.after_task_publish.send(sender=message.name, **published)
        if message.sent_event is not None:
            self.send_event("task-sent", message.sent_event)

    def send_event(self, event_type: str, fields: dict[str, Any]) -> None:
        """Send one event (Celery's event protocol) from this process, as node ``origin``
        (``gen<pid>@<host>``); never raises for the broker (``rqueue.events``)."""
        from rqueue.events import EventDispatcher  # noqa: PLC0415 - only producers that send events load it

        events = self._events
        if events is None or events[0] != os.getpid():
            events = self._events = (os.getpid(), EventDispatcher(self.broker, self.origin))
        events[1].send(event_type, **fields)

    def _send(self, message: Outgoing) -> None:
        try:
            self.broker.publish(message.queue, message.payload, message.priority, message.eta_ms)
        except BrokerNoReplyError as exc:
            # Sent, but unanswered: sending again could run the task twice. The caller decides.
            raise BrokerNoReplyError(
                f"Sending {message.name}[{message.task_id}]: {exc}. Whether the task was queued is "
                f"unknown: check AsyncResult({message.task_id!r}).state, or the queue, before sending it again"
            ) from None

    def _send_again(self, message: Outgoing, options: SendOptions, exc: BrokerConnectionError) -> None:
        """Retry a send that could not reach the broker, per ``retry_policy`` (worked out only now:
        the common send pays nothing for it); re-raises once the retries or the time run out."""
        retry = options.get("retry")
        if retry is None:
            retry = self.conf.task_publish_retry
        policy = {**self.conf.task_publish_retry_policy, **(options.get("retry_policy") or {})}
        attempts = int(policy.get("max_retries") or 0) if retry else 0
        pause = float(policy.get("interval_start") or 0)
        # Retries stop at the connection timeout: a frozen broker must not hold delay() for long.
        deadline = time.monotonic() + float(self.conf.broker_connection_timeout)
        attempt = 0
        while True:
            if attempt == attempts or time.monotonic() + pause >= deadline:
                raise exc
            attempt += 1
            logger.warning(
                "Sending %s[%s]: %s; retrying in %.2f s (%d of %d)",
                message.name,
                message.task_id,
                exc,
                pause,
                attempt,
                attempts,
            )
            time.sleep(pause)
            pause = min(pause + float(policy.get("interval_step") or 0), float(policy.get("interval_max") or 1))
            try:
                self._send(message)
                return
            except BrokerNoReplyError:
                raise
            except BrokerConnectionError as again:
                exc = again

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
        plan = SendPlan(self, name, _task, options)
        messages = plan.outgoing_many(list(calls))
        backend = self.backend
        self.broker.publish_many([(m.queue, m.payload, m.priority, m.eta_ms) for m in messages])
        if plan.sent_events:
            self._send_sent_events(messages)
        return [AsyncResult(m.task_id, backend, ignored=m.ignore_result, app=self) for m in messages]

    def send_batch(self, calls: Sequence[tuple[str, Sequence[Any], Mapping[str, Any], SendOptions]]) -> None:
        """Send ``(name, args, kwargs, options)`` calls in one broker round trip (a group's members;
        the caller has checked their arguments)."""
        messages = [SendPlan(self, name, None, options).outgoing(args, kwargs) for name, args, kwargs, options in calls]
        self.broker.publish_many([(m.queue, m.payload, m.priority, m.eta_ms) for m in messages])
        self._send_sent_events(messages)

    def _send_sent_events(self, messages: list[Outgoing]) -> None:
        for message in messages:
            if message.sent_event is not None:
                self.send_event("task-sent", message.sent_event)

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Signature | Task[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """Add a ``beat_schedule`` entry that sends ``sig`` on ``schedule`` (seconds, a timedelta, a
        ``rqueue.schedules.crontab``), as Celery's ``add_periodic_task``; ``options`` are send
        options (``queue``, ``priority``, ``expires`` ...). Returns the entry's name: ``name``, or
        the signature's ``repr``. Usually called from an ``on_after_configure`` receiver."""
        if isinstance(sig, Signature):
            sig = sig.clone(tuple(args), dict(kwargs or {})) if (args or kwargs) else sig
        else:
            sig = self.signature(sig.name, args, kwargs)
        key = name or repr(sig)
        entries = dict(self.conf.beat_schedule)
        entries[key] = {
            "schedule": schedule,
            "task": sig.task,
            "args": tuple(sig.args),
            "kwargs": dict(sig.kwargs),
            "options": {**sig.options, **options},
        }
        self.conf.beat_schedule = entries
        return key

    def check_serializer_enabled(self, serializer: str) -> None:
        """Refuse a serializer that ``accept_content`` does not list."""
        accept = [serialization.serializer_name(c) for c in self.conf.accept_content]
        if serializer not in accept:
            raise ConfigurationError(
                f"serializer {serializer!r} is not enabled: add it to accept_content explicitly "
                f"(accept_content is {self.conf.accept_content})"
            )

    def signature(
        self, name: str, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A signature of a task by name, sent through this app (``app.signature("tasks.add", (2, 2))``)."""
        return signature(name, args, kwargs, app=self, **options)

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:  # noqa: N802 - Celery's spelling
        """A result handle for a task id."""
        return AsyncResult(task_id, self.backend, app=self)

    @property
    def control(self) -> Control:
        """Operations on tasks carried out by workers (``app.control.revoke(task_id)``)."""
        return Control(self)

    # -- routing ---------------------------------------------------------------------------------------

    def route_by_name(self, name: str, options: SendOptions, task: Task[Any, Any] | None) -> Route | None:
        """The route of every call of ``name`` with these options, or None when a router function
        may route each call by its arguments."""
        if not self.derived("routing", lambda: compile_routes(self.conf.task_routes)).by_name_only:
            return None
        return self.route(name, [], {}, options, task)

    def route(
        self, name: str, args: list[Any], kwargs: dict[str, Any], options: SendOptions, task: Task[Any, Any] | None
    ) -> Route:
        """``(queue, exchange, routing_key, priority)``: an explicit queue (or exchange and routing
        key), then the task's queue, then routes."""
        queue, exchange, routing_key = options.get("queue"), options.get("exchange"), options.get("routing_key")
        if exchange or routing_key:
            # Celery's explicit exchange/routing key: the queue a direct exchange delivers it to is
            # the one named by the routing key (on Redis and SQLite there is no exchange).
            key = routing_key or queue or self.conf.task_default_queue
            return queue or key, exchange or "", key, None
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


# -- the current app, and tasks shared by every app ----------------------------------------------------


_all_apps: list[App] = []
#: ``shared_task`` registrations: ``(function, options)``, bound to every app made before or after.
_shared: list[tuple[Callable[..., Any], dict[str, Any]]] = []
_shared_lock = threading.Lock()


def _add_to_parent(result: AsyncResult[Any]) -> None:
    """A task sent from inside a running task is one of its children (stored with its result)."""
    parent = current_request()
    if parent is not None and not parent.called_directly and not parent.is_eager:
        if parent.children is None:
            parent.children = []
        parent.children.append(result.as_tuple())


def _register_app(app: App, set_as_current: bool) -> None:
    with _shared_lock:
        _all_apps.append(app)
    current.register(app, set_as_current)
    _bind_shared_tasks(app)


current.make_default = lambda: App("default")


def _bind_shared_tasks(app: App) -> None:
    with _shared_lock:
        pending = list(_shared)
    for fun, options in pending:
        name = options.get("name") or app.gen_task_name(fun)
        if name not in app.tasks:
            register: Callable[[Callable[..., Any]], Task[Any, Any]] = app.task(**options)
            register(fun)


class SharedTask:
    """What ``@shared_task`` returns: the task of the current app, looked up on each use, so a
    reusable module defines tasks without importing any app."""

    def __init__(self, fun: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fun = fun
        self.options = options
        self.__doc__ = fun.__doc__
        self.__wrapped__ = fun
        self.__name__ = fun.__name__
        self.__module__ = fun.__module__

    @property
    def task(self) -> Task[Any, Any]:
        app = current_app()
        name = self.options.get("name") or app.gen_task_name(self.fun)
        task = app.tasks.get(name)
        if task is None:
            _bind_shared_tasks(app)
            task = app.tasks[name]
        return task

    def __getattr__(self, key: str) -> Any:
        return getattr(self.task, key)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task: {self.options.get('name') or self.fun.__module__ + '.' + self.fun.__name__}>"


def shared_task(fun: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """``@shared_task`` (or ``@shared_task(bind=True, ...)``): a task registered with every app, for
    modules that must not import a particular app (Django reusable apps, libraries)."""

    def share(f: Callable[..., Any]) -> Any:
        with _shared_lock:
            _shared.append((f, options))
            apps = list(_all_apps)
        for app in apps:
            _bind_shared_tasks(app)
        return SharedTask(f, options)

    if fun is not None:
        return share(fun)
    return share


def _origin(task: Task[Any, Any]) -> object:
    return getattr(task.fun, "__code__", None) or type(task)


def _django_installed_apps() -> list[str]:
    try:
        from django.conf import settings  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except ImportError:
        raise ConfigurationError("autodiscover_tasks() without packages needs Django; name the packages") from None
    return list(settings.INSTALLED_APPS)


def _import_related(package: str, related_name: str) -> None:
    """Import ``package.related_name`` if the package has it (a package without it is fine)."""
    try:
        pkg = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigurationError(f"autodiscover_tasks: cannot import package {package!r}: {exc}") from exc
    if not hasattr(pkg, "__path__"):  # a plain module cannot have submodules
        return
    module_name = f"{package}.{related_name}"
    if importlib.util.find_spec(module_name) is None:
        return
    importlib.import_module(module_name)
