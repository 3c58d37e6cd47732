"""Tasks: a registered function plus the options it is sent and run with."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar

from rqueue.canvas import Signature, chain, chord, chunks, group, maybe_signature, xmap, xstarmap
from rqueue.config import closest_names
from rqueue.exceptions import ConfigurationError, Ignore, MaxRetriesExceededError, Retry
from rqueue.options import SendOptions
from rqueue.rates import check_rate
from rqueue.request import ExceptionInfo, Request, custom_headers, pop_request, push_request, request_stack
from rqueue.sending import send_async

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from rqueue.app import App
    from rqueue.result import AsyncResult as _AsyncResult
    from rqueue.result import EagerResult

P = ParamSpec("P")
R = TypeVar("R")

#: Options ``@app.task(...)`` accepts (and a ``Task`` subclass may set as class attributes), with
#: their defaults (None = follow the app's settings).
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
    "dont_autoretry_for": None,
    "retry_kwargs": None,
    "retry_backoff": None,
    "retry_backoff_max": None,
    "retry_jitter": None,
    "expires": None,
    "throws": None,
    "typing": None,
    "reject_on_worker_lost": None,
    "acks_on_failure_or_timeout": None,
    "store_errors_even_if_ignored": None,
    "store_eager_result": None,
    "shadow": None,
    "pydantic": None,
    "pydantic_strict": None,
    "pydantic_context": None,
    "pydantic_dump_kwargs": None,
}

#: Options of Celery's task decorator that rqueue accepts and does not act on (see the docs'
#: differences): events are the monitoring issue's, the others tune Celery internals.
CELERY_ONLY_OPTIONS = frozenset(
    {"trail", "send_events", "resultrepr_maxsize", "autoregister", "request_stack", "abstract", "lazy", "shared"}
)


#: The task hook methods a subclass may override, called by the worker in Celery's order.
HOOK_METHODS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


class Task(Generic[P, R]):
    """A task: a function (``@app.task``) or a subclass with a ``run`` method, registered with an app.

    Calling the task runs it inline; ``delay``/``apply_async`` send it to a worker. A subclass may
    set options as class attributes (``max_retries = 5``, ``autoretry_for = (IOError,)``, any of
    ``TASK_OPTIONS``) and override the hooks ``before_start``, ``on_success``, ``on_failure``,
    ``on_retry`` and ``after_return``; use it with ``@app.task(base=MyTask)``, or register an
    instance of a subclass that defines ``run`` with ``app.register_task(MyTask())``.
    """

    #: The registered name (set by the app, or by a class-based task's class attribute).
    name: str
    app: App
    #: The function for ``@app.task`` tasks (None for a class-based task, which defines ``run``).
    fun: Callable[..., Any] | None = None
    bind: bool = False
    #: Called as the task's body: ``run``, or the instance when the class overrides ``__call__``.
    entry: Callable[..., Any]
    #: The hook methods this task's class overrides (the worker skips the others).
    hooked: frozenset[str] = frozenset()
    #: True when the class overrides ``shadow_name`` (sending then asks it for each message).
    names_shadow: bool = False

    def bind_app(
        self,
        app: App,
        name: str | None = None,
        fun: Callable[..., Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Task[P, R]:
        """Attach this task to ``app`` under ``name`` (made from the function or the class when None)."""
        options = dict(options or {})
        cls = type(self)
        class_options = {
            key: value
            for klass in reversed(cls.__mro__[: cls.__mro__.index(Task)])
            for key, value in vars(klass).items()
            if key in TASK_OPTIONS and key not in ("name", "bind") and value is not None
        }
        label = name or (fun.__name__ if fun is not None else None) or getattr(cls, "name", None) or cls.__name__
        _check_options(label, options)
        rate_limit = options.get("rate_limit") or class_options.get("rate_limit")
        if rate_limit is not None:
            check_rate(rate_limit, f"task {label}")
        self.app = app
        if fun is not None:
            self.fun = fun
            self.__doc__ = fun.__doc__
            self.__wrapped__ = fun
            self.__module__ = fun.__module__
            self.__name__ = fun.__name__
            self.__qualname__ = fun.__qualname__
        self.bind = bool(options.pop("bind", False))
        options.pop("name", None)
        self.name = name or getattr(cls, "name", None) or app.gen_task_name(self.fun or cls)
        self.options = {
            **class_options,
            **{k: v for k, v in options.items() if k in TASK_OPTIONS and v is not None},
        }
        for key, value in options.items():
            # Celery sets every decorator keyword as an attribute: options read as ``self.max_retries``
            # then give the decorator's value over a base class's, and other keywords are the user's own.
            if key not in TASK_OPTIONS or (value is not None and hasattr(cls, key)):
                setattr(self, key, value)
        self._options_key = f"task-options:{self.name}"
        self.hooked = frozenset(h for h in HOOK_METHODS if getattr(cls, h) is not getattr(Task, h))
        self.names_shadow = cls.shadow_name is not Task.shadow_name
        body = self._body()
        if self.options.get("pydantic"):
            from rqueue.contrib.pydantic import validating  # noqa: PLC0415 - optional dependency

            body = validating(self, body)
        self.run_body = body
        self.entry = self if cls.__call__ is not Task.__call__ else body
        return self

    def _body(self) -> Callable[..., Any]:
        fun = self.fun
        if fun is None:
            return self.run
        if self.bind:
            return functools.partial(fun, self)
        return fun

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task's body: a class-based task overrides it; a function task runs its function."""
        if self.fun is None:
            raise NotImplementedError(f"task {type(self).__name__} defines no run() method")
        return self._body()(*args, **kwargs)

    def __getattr__(self, key: str) -> Any:
        # Celery code reads options as attributes (``self.max_retries``): the effective values.
        if key in TASK_OPTIONS and "app" in self.__dict__:
            return self.option(key)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    # -- running ---------------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task here and now, as a plain call (``self.request.called_directly`` is True)."""
        stack = request_stack()
        if stack and stack[-1].task == self.name:
            # The worker (or an eager run) calling a class's own __call__: its request stands, as
            # Celery's per-task request stack would have it.
            return self.run_body(*args, **kwargs)  # type: ignore[no-any-return]
        push_request(Request(id="", task=self.name, args=list(args), kwargs=dict(kwargs), called_directly=True))
        try:
            return self.run_body(*args, **kwargs)  # type: ignore[no-any-return]
        finally:
            pop_request()

    @property
    def request(self) -> Request:
        """The request of the task running in this thread (``bind=True`` tasks use it)."""
        stack = request_stack()
        if not stack:
            return Request(id="", task=self.name, called_directly=True)
        return stack[-1]

    # -- hooks: override in a subclass (Celery's names and arguments) -----------------------------

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Called in the worker just before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Called in the worker after the task returned ``retval``."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: dict[str, Any], einfo: ExceptionInfo
    ) -> None:
        """Called in the worker after the task raised ``exc`` (and no retry was scheduled)."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: dict[str, Any], einfo: ExceptionInfo
    ) -> None:
        """Called in the worker after a retry of the task was scheduled."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo | None,
    ) -> None:
        """Called in the worker after the task ended (succeeded, failed or retried), last."""

    # -- options ---------------------------------------------------------------------------------

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

    @property
    def backend(self) -> Any:
        """The app's result backend."""
        return self.app.backend

    def AsyncResult(self, task_id: str) -> _AsyncResult[R]:  # noqa: N802 - Celery's spelling
        """A result handle for a task id of this task."""
        return self.app.AsyncResult(task_id)

    def shadow_name(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: Mapping[str, Any]) -> str | None:
        """Override to name a message differently in logs and monitors (Celery's hook); None keeps the name."""
        return None

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kwargs: Any
    ) -> None:
        """Store a state now (``PROGRESS`` with ``meta={'done': 3}``): clients read it through
        ``AsyncResult.state`` and ``.info`` while the task runs. Defaults to this task's running request."""
        from rqueue.backends.base import ResultRecord  # noqa: PLC0415 - the backend layer sits above tasks

        task_id = task_id or self.request.id
        if not task_id:
            raise RuntimeError(f"{self.name}.update_state() needs a task_id outside a running task")
        self.app.backend.store(ResultRecord(task_id, state or "PENDING", meta))

    # -- sending ---------------------------------------------------------------------------------

    # -- signatures (rqueue.canvas) ---------------------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of a call of this task: ``add.s(2, 2)``; a parent's result comes first."""
        return Signature(self, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a parent's result is not passed to it."""
        return Signature(self, args, kwargs, immutable=True, app=self.app)

    def signature(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A signature with send options: ``add.signature((2, 2), countdown=10)``."""
        immutable = bool(options.pop("immutable", False))
        return Signature(self, args, kwargs, options, immutable=immutable, app=self.app)

    subtask = signature

    def map(self, it: Iterable[Any]) -> Signature:
        """One message that calls this task's function with each item (``celery.map``)."""
        return xmap(self, it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> Signature:
        """One message that calls this task's function with each item's arguments (``celery.starmap``)."""
        return xstarmap(self, it, app=self.app)

    def chunks(self, it: Iterable[Any], n: int) -> Signature:
        """The calls ``task(*item)`` split into messages of ``n`` items each (a group of starmaps)."""
        return chunks(self, it, n, app=self.app)

    def replace(self, sig: Any) -> Any:
        """Replace this running task with ``sig`` (a signature or workflow), which keeps this task's
        place: its id for the final result, its callbacks and errbacks, its chord, the rest of its
        chain. Sends ``sig`` and stops this run (``Ignore``); under eager mode runs it here and
        returns its value. Call it as ``return self.replace(sig)``."""
        request = self.request
        if request.called_directly:
            raise RuntimeError(f"{self.name}.replace() called outside a worker: there is no task to replace")
        replacement = maybe_signature(sig, self.app).clone()
        if replacement["options"].get("chord"):
            raise ConfigurationError("a signature replacing a task must not be part of a chord itself")
        if isinstance(replacement, group):  # one result in this task's place: the list of the group's
            replacement = chord(replacement.tasks, self.app.registered("celery.accumulate").s(index=0), app=self.app)
        for callback in request.callbacks or ():
            replacement.link(callback)
        for errback in request.errbacks or ():
            replacement.link_error(errback)
        replacement.freeze(request.id, request.group, request.chord, request.root_id, None, request.group_index)
        if request.is_eager:
            return replacement.apply().get()
        rest = [maybe_signature(step, self.app) for step in reversed(request.chain or ())]
        whole = chain(replacement, *rest, app=self.app) if rest else replacement
        whole.apply_async(parent_id=request.id, root_id=request.root_id or request.id)
        raise Ignore("replaced by a new task")

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> _AsyncResult[R]:
        """Send the task with these arguments; a shortcut of ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> _AsyncResult[R]:
        """Send the task to a worker with options (``SendOptions``); with ``task_always_eager`` run
        it here instead (see ``apply``).

        Args:
            args: Positional arguments.
            kwargs: Keyword arguments.
            countdown: Run no earlier than this many seconds from now.
            eta: Run no earlier than this time (a naive datetime is taken as UTC).
            expires: Seconds from now, or a time, after which the task is revoked instead of run.
            queue: The queue to send to (overrides routes).
            exchange: The exchange to publish to (with ``routing_key``; RabbitMQ).
            routing_key: The routing key (default: the queue's name).
            priority: 0 (first) to 9 (last).
            task_id: Use this id instead of a new UUID.
            headers: Extra message headers.
            ignore_result: Store no result.
            serializer: ``json``, ``msgpack`` or (when enabled) ``pickle``.
            time_limit: Hard time limit in seconds.
            soft_time_limit: Soft time limit in seconds.
            shadow: The name logs and monitors show for this message.
            retry: Retry publishing while the broker is unreachable (default ``task_publish_retry``).
            retry_policy: ``max_retries``, ``interval_start``, ``interval_step``, ``interval_max``.
            link: Signature(s) to apply with the result when the task succeeds.
            link_error: Signature(s) to apply when the task fails.

        Raises:
            TypeError: the arguments do not fit the task's signature (``typing``, default on).
        """
        if self.option("typing") is not False:
            self.check_arguments(args or (), kwargs or {})
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return self.app.send_task(self.name, args, kwargs, self, **options)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> _AsyncResult[R]:
        """``delay`` from a running event loop: ``await add.adelay(2, 2)``; see ``aapply_async``."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> _AsyncResult[R]:
        """``apply_async`` from a running event loop, with the same options and errors: the message
        is built in the caller and published in a small thread pool, so a slow or unreachable broker
        never stalls the loop (``rqueue.sending.send_async``). ``await result.aget()`` waits for it.
        With ``task_always_eager`` the task runs here and now, as ``apply_async`` does."""
        if self.option("typing") is not False:
            self.check_arguments(args or (), kwargs or {})
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return await send_async(self.app, self.name, args, kwargs, self, options)

    def check_arguments(self, args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError, here in the caller, when ``args``/``kwargs`` do not fit the task's signature."""
        signature, positional = self._call_shape
        if signature is None:
            return
        if not kwargs and positional is not None and positional[0] <= len(args) <= positional[1]:
            return  # the common call, checked without binding (which costs more than the send)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    @functools.cached_property
    def _call_shape(self) -> tuple[inspect.Signature | None, tuple[float, float] | None]:
        """The call signature, and how many positional arguments alone fit it (``(least, most)``,
        most infinite with ``*args``), unless a keyword-only parameter is required (then none do)."""
        signature = self._call_signature()
        if signature is None:
            return None, None
        kind = inspect.Parameter
        params = list(signature.parameters.values())
        if any(p.kind is kind.KEYWORD_ONLY and p.default is kind.empty for p in params):
            return signature, None
        positional = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
        required = sum(1 for p in positional if p.default is kind.empty)
        most = math.inf if any(p.kind is kind.VAR_POSITIONAL for p in params) else len(positional)
        return signature, (required, most)

    def _call_signature(self) -> inspect.Signature | None:
        target = self.fun if self.fun is not None else self.run
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return None  # a builtin or C function: nothing to check
        if self.fun is not None and self.bind:
            parameters = list(signature.parameters.values())[1:]
            signature = signature.replace(parameters=parameters)
        return signature

    def apply(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task here and now, as a worker would, and return an ``EagerResult``.

        The arguments go through the task's serializer and back first, so a test catches what a
        worker would refuse. Retries run at once, in a loop; ``task_eager_propagates`` (or
        ``throw=True``) re-raises a failure. Hooks and signals are called as in a worker.
        """
        from rqueue.trace import run_eagerly  # noqa: PLC0415 - trace runs tasks: it imports this module's callers

        return run_eagerly(self, list(args or ()), dict(kwargs or {}), options)

    def retry(  # noqa: PLR0913 - Celery's signature
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> NoReturn:
        """Schedule this task to run again, then stop the current run (call it as ``raise self.retry(...)``).

        The new message (same id, ``retries + 1``, the same priority and custom headers) waits in
        the broker until its time comes (``countdown`` seconds, default ``default_retry_delay``);
        nothing sleeps in the worker. ``args``/``kwargs`` replace the arguments when given; other
        keywords are send options (``queue=``, ``priority=`` ...). Past ``max_retries`` (default the
        task's, 3; None = forever) ``exc`` is raised instead, or ``MaxRetriesExceededError``.

        Raises:
            Retry: always, when a retry was scheduled; the worker records the state RETRY.
        """
        request = self.request
        if request.called_directly:
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
        when = f"in {countdown:g} s" if countdown is not None else f"at {eta}"
        if request.is_eager:  # run again here and now (the eager loop catches Retry)
            raise Retry(f"Retry {when}", exc=exc, when=countdown)
        sent: dict[str, Any] = {
            "queue": request.delivery_info.get("routing_key"),
            "priority": request.delivery_info.get("priority"),
            "headers": custom_headers(request.headers),
            "reply_to": request.reply_to,
            "shadow": request.shadow,
            "time_limit": request.timelimit[0],
            "soft_time_limit": request.timelimit[1],
            **options,
        }
        self.app.send_task(
            self.name,
            request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            self,
            countdown=countdown,
            eta=eta,
            task_id=request.id,
            retries=request.retries + 1,
            root_id=request.root_id,
            parent_id=request.parent_id,
            link=request.callbacks,
            link_error=request.errbacks,
            chain=request.chain,
            chord=request.chord,
            group_id=request.group,
            group_index=request.group_index,
            **sent,
        )
        raise Retry(f"Retry {when}", exc=exc, when=countdown)

    def auto_retry(self, exc: Exception) -> Retry | None:
        """Schedule a retry for ``exc`` when ``autoretry_for`` covers it (and ``dont_autoretry_for``
        does not), with ``retry_kwargs`` and the backoff; the ``Retry`` when one was scheduled, None
        when not (not covered, or out of retries: ``exc`` is then the outcome)."""
        options = self.resolved_options()
        retry_for, dont = options["autoretry_for"], options["dont_autoretry_for"]
        if not retry_for or not isinstance(exc, tuple(retry_for)) or (dont and isinstance(exc, tuple(dont))):
            return None
        kwargs = dict(options["retry_kwargs"] or {})
        if kwargs.get("countdown") is None and kwargs.get("eta") is None:
            kwargs["countdown"] = self.retry_countdown(self.request.retries)
        try:
            self.retry(exc=exc, **kwargs)
        except Retry as retry:
            return retry
        except Exception:
            return None
        return None  # pragma: no cover - retry() always raises

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

    def delay_many(self, calls: Iterable[tuple[Any, ...] | list[Any]]) -> list[_AsyncResult[R]]:
        """Send one message per argument tuple, all in one broker round trip.

        ``add.delay_many([(1, 2), (3, 4)])`` is ``[add.delay(1, 2), add.delay(3, 4)]`` without a
        round trip each.
        """
        calls = list(calls)
        if self.option("typing") is not False:
            for args in calls:
                self.check_arguments(args, {})
        return self.app.send_many(self.name, [(args, {}) for args in calls], self)

    def __repr__(self) -> str:
        return f"<@task: {getattr(self, 'name', type(self).__name__)}>"


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    """Celery accepts any decorator keyword as an attribute; one that looks like a misspelt option
    is refused with the option it resembles."""
    known = [*TASK_OPTIONS, *CELERY_ONLY_OPTIONS]
    for key in options:
        if key in TASK_OPTIONS or key in CELERY_ONLY_OPTIONS:
            continue
        close = closest_names(key, known, limit=1)
        if close and difflib.SequenceMatcher(None, key, close[0]).ratio() >= 0.8:
            raise ConfigurationError(f"task {name}: unknown option {key!r}; did you mean {close[0]!r}?")
