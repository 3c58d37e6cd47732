"""Signatures: a task call as data, in Celery's wire form, and the chain that runs them in turn.

A signature is a dict with Celery's keys (``task``, ``args``, ``kwargs``, ``options``,
``subtask_type``, ``immutable``), so it survives JSON and msgpack and crosses between Celery and
rqueue processes unchanged. Partial application: applying a mutable signature with arguments puts
them before its own (a parent's result becomes the first argument of a callback); an immutable one
(``task.si(...)``) ignores them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rqueue._rqueue import new_task_id
from rqueue.current import current_app
from rqueue.exceptions import DecodeError
from rqueue.options import SEND_OPTIONS

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.result import AsyncResult
    from rqueue.task import Task

logger = logging.getLogger("rqueue")


class Signature(dict):  # type: ignore[type-arg]  # Celery's signatures are dicts on the wire
    """A task call as data: ``add.s(2, 2)``, ``signature("tasks.add", args=(2, 2))``."""

    def __init__(  # noqa: PLR0913 - Celery's constructor
        self,
        task: str | Task[Any, Any] | Mapping[str, Any],
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: App | None = None,
    ) -> None:
        if isinstance(task, Mapping):
            args, kwargs, options = task.get("args"), task.get("kwargs"), task.get("options")
            subtask_type, immutable = task.get("subtask_type"), bool(task.get("immutable", False))
            task = task.get("task")  # type: ignore[assignment]
        name = getattr(task, "name", task)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a signature names a task, got {task!r}")
        super().__init__(
            task=name,
            args=tuple(args or ()),
            kwargs=dict(kwargs or {}),
            options=dict(options or {}),
            subtask_type=subtask_type,
            immutable=immutable,
        )
        self._app = app if app is not None else getattr(task, "app", None)

    @classmethod
    def from_wire(cls, value: object, app: App | None = None) -> Signature:
        """A signature from a message's embed: DecodeError when it is not one."""
        if isinstance(value, Signature):
            return value
        if not isinstance(value, Mapping) or not isinstance(value.get("task"), str):
            raise DecodeError(f"not a signature (a dict with a 'task' name): {value!r:.200}")
        args, kwargs, options = value.get("args") or (), value.get("kwargs") or {}, value.get("options") or {}
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping) or not isinstance(options, Mapping):
            raise DecodeError(f"malformed signature of {value['task']!r}: args, kwargs or options of the wrong type")
        return cls(value, app=app)

    # -- fields ---------------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        return str(self["task"])

    name = task

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self["options"])

    @property
    def immutable(self) -> bool:
        return bool(self["immutable"])

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def app(self) -> App:
        return self._app if self._app is not None else current_app()

    @property
    def type(self) -> Task[Any, Any]:
        """The registered task (NotRegistered when this process does not know it)."""
        return self.app.registered(self.task)

    # -- building -----------------------------------------------------------------------------------

    def clone(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A copy with ``args`` put before its own (unless immutable), ``kwargs`` and ``options`` merged."""
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        return Signature(self.task, new_args, new_kwargs, new_options, self.subtask_type, self.immutable, app=self._app)

    def _merge(
        self, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        if self.immutable:
            return self.args, self.kwargs, {**self["options"], **options}
        return (*(args or ()), *self["args"]), {**self["kwargs"], **(kwargs or {})}, {**self["options"], **options}

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set send options (``queue=``, ``countdown=`` ...) in place; returns the signature."""
        if immutable is not None:
            self["immutable"] = immutable
        self["options"].update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Apply ``callback`` with this task's result when it succeeds."""
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Apply ``errback`` when this task fails (with the failed task's id, or, for a task taking
        ``(request, exc, traceback)``, called in the worker with those)."""
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    def __or__(self, other: Signature) -> chain:  # type: ignore[override]  # Celery's pipe, not dict union
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(self, other)

    # -- running --------------------------------------------------------------------------------------

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """Send the task with the merged arguments and options."""
        call_args, call_kwargs, call_options = self._merge(args, kwargs, options)
        sendable = {k: v for k, v in call_options.items() if k in SEND_OPTIONS}
        ignored = call_options.keys() - sendable.keys()
        if ignored:  # a Celery sender's bookkeeping (e.g. group_id without the canvas): kept out
            logger.debug("Signature %s: options not used by rqueue: %s", self.task, ", ".join(sorted(ignored)))
        app = self.app
        task = app.tasks.get(self.task)
        if task is not None:  # known here: its options, argument check and eager mode apply
            return task.apply_async(call_args, call_kwargs, **sendable)
        return app.send_task(self.task, call_args, call_kwargs, **sendable)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Run the task here and now (``task.apply``) with the merged arguments."""
        call_args, call_kwargs, call_options = self._merge(args, kwargs, options)
        return self.type.apply(call_args, call_kwargs, **call_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task's function here with the merged arguments (as Celery's ``sig()``)."""
        call_args, call_kwargs, _ = self._merge(args, kwargs, {})
        return self.type(*call_args, **call_kwargs)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self["args"]] + [f"{k}={v!r}" for k, v in self["kwargs"].items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"


def signature(
    task: str | Task[Any, Any] | Mapping[str, Any],
    args: Iterable[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    app: App | None = None,
    **rest: Any,
) -> Signature:
    """Celery's ``signature()``: from a name, a task, or a signature dict (a copy); other keywords
    are send options. ``app`` is the app that sends it (default: the task's, else the current one)."""
    if isinstance(task, Signature) and args is None and kwargs is None and options is None and not rest:
        return task
    immutable = bool(rest.pop("immutable", False))
    return Signature(task, args, kwargs, {**(options or {}), **rest}, immutable=immutable, app=app)


class chain(Signature):  # noqa: N801 - Celery's name
    """Tasks run one after another, each getting the previous one's result as first argument:
    ``chain(add.s(4, 4), mul.s(8))()`` or ``add.s(4, 4) | mul.s(8)``. The result is the last task's.

    On the wire it is Celery's: the first task's message carries the remaining signatures in
    ``embed.chain`` (the next one last), so a Celery worker continues an rqueue chain and the reverse.
    """

    def __init__(self, *tasks: Signature | Iterable[Signature], app: App | None = None) -> None:
        steps: list[Signature] = []
        for item in tasks:
            if isinstance(item, chain):
                steps.extend(item.tasks)
            elif isinstance(item, Signature):
                steps.append(item)
            else:
                steps.extend(Signature.from_wire(s) for s in item)
        if not steps:
            raise ValueError("a chain needs at least one task")
        super().__init__("celery.chain", (), {"tasks": steps}, {}, "chain", app=app or steps[0]._app)

    @property
    def tasks(self) -> list[Signature]:
        return list(self["kwargs"]["tasks"])

    def __or__(self, other: Signature) -> chain:  # type: ignore[override]  # Celery's pipe, not dict union
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(*self.tasks, other, app=self._app)

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """Send the first task; the workers send the others in turn. Returns the last task's result.
        Under ``task_always_eager`` the steps run here, one after another (``apply``)."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)  # type: ignore[no-any-return]
        steps = [s.clone() for s in self.tasks]
        for step in steps:
            step["options"].setdefault("task_id", new_task_id())
        first, rest = steps[0], steps[1:]
        sent = first.apply_async(args, kwargs, **options, chain=[dict(s) for s in reversed(rest)] or None)
        return self.app.AsyncResult(rest[-1]["options"]["task_id"]) if rest else sent

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Run the steps here and now, each with the previous result; the last ``EagerResult`` (or
        the first that failed)."""
        first, *rest = self.tasks
        result = first.apply(args, kwargs, **options)
        for step in rest:
            if not result.successful():
                break
            result = step.apply((result.get(),), **options)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.tasks)


def links_of(value: Any) -> list[dict[str, Any]] | None:
    """``link=``/``link_error=``/``chain=`` as the wire's list of signature dicts (one signature or several)."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    links = []
    for item in items:
        as_dict = dict(item) if isinstance(item, Mapping) else None
        if as_dict is None or not isinstance(as_dict.get("task"), str):
            raise TypeError(f"link/link_error takes signatures (task.s(...)), got {item!r}")
        links.append(as_dict)
    return links or None


# -- what a worker does with a message's links ----------------------------------------------------------


def check_links(embed: Mapping[str, Any]) -> None:
    """Raise DecodeError when a message's callbacks, errbacks or chain hold something that is not a
    signature (the worker dead-letters it before running the task)."""
    for key in ("callbacks", "errbacks", "chain"):
        value = embed.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise DecodeError(f"embed.{key} must be a list of signatures, got {type(value).__name__}")
        for item in value:
            Signature.from_wire(item)


def unsupported_links(embed: Mapping[str, Any]) -> list[str]:
    """The parts of a message's canvas this version does not run yet (groups, chords)."""
    parts = ["chord"] if embed.get("chord") else []
    for key in ("callbacks", "errbacks", "chain"):
        for item in embed.get(key) or ():
            if isinstance(item, Mapping) and item.get("subtask_type"):
                parts.append(f"{key} of type {item['subtask_type']}")
    return parts


def apply_success_links(app: App, request: Any, retval: Any) -> None:
    """After a task succeeded: send the next step of its chain with the result as first argument,
    then its callbacks (``link``), each with this task as parent, as Celery's worker does."""
    root_id = request.root_id or request.id
    options = {"parent_id": request.id, "root_id": root_id, "priority": request.delivery_info.get("priority")}
    chain_rest = request.chain
    if chain_rest:
        rest = list(chain_rest)
        following = Signature.from_wire(rest.pop(), app)
        following.apply_async((retval,), chain=rest or None, **options)
    for callback in request.callbacks or ():
        sig = Signature.from_wire(callback, app)
        if sig.subtask_type:
            continue  # a group or chord: not run by this version (logged at admission)
        sig.apply_async((retval,), **options)


def apply_error_links(app: App, request: Any, exc: BaseException, traceback: str | None) -> None:
    """After a task failed: its errbacks (``link_error``). As in Celery, an errback task whose
    function takes ``(request, exc, traceback)`` is called here in the worker; any other is sent
    with the failed task's id as its argument."""
    root_id = request.root_id or request.id
    for errback in request.errbacks or ():
        sig = Signature.from_wire(errback, app)
        if sig.subtask_type:
            continue
        task = app.tasks.get(sig.task)
        if task is not None and _takes_request_exc_traceback(task):
            sig(request, exc, traceback)
        else:
            sig.apply_async((request.id,), parent_id=request.id, root_id=root_id)


def _takes_request_exc_traceback(task: Task[Any, Any]) -> bool:
    import inspect  # noqa: PLC0415 - only for errbacks

    fun = task.fun
    if fun is None or task.bind:
        return False
    try:
        parameters = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > 1
