"""The canvas: a task call as data (a signature), and the workflows built of them: ``chain``,
``group``, ``chord``, ``chunks``, ``xmap``/``xstarmap``.

A signature is a dict with Celery's keys (``task``, ``args``, ``kwargs``, ``options``,
``subtask_type``, ``immutable``), so it survives JSON and msgpack and crosses between Celery and
rqueue processes unchanged; a workflow is a signature whose ``subtask_type`` names it. Partial
application: applying a mutable signature with arguments puts them before its own (a parent's
result becomes the first argument of a callback); an immutable one (``task.si(...)``) ignores them.

How workflows travel, as in Celery: a chain's first message carries the rest in ``embed.chain``;
a group's members carry the group's id and their place in it (``group``, ``group_index``
headers); a chord's header members also carry the body in ``embed.chord``, and the worker that
counts the last header result sends the body (``rqueue.chord_join``). Ids are fixed when a workflow is
sent (``freeze``), so the client holds every result before any task runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from rqueue._rqueue import new_task_id
from rqueue.current import current_app
from rqueue.exceptions import DecodeError
from rqueue.options import SEND_OPTIONS, SendOptions
from rqueue.result import AsyncResult, EagerResult, GroupResult

if TYPE_CHECKING:
    from rqueue.app import App
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
        """A signature (of the workflow class its ``subtask_type`` names) from a dict, as a message
        or a Celery client holds it: DecodeError when it is not one."""
        if isinstance(value, Signature):
            return value
        if not isinstance(value, Mapping) or not isinstance(value.get("task"), str):
            raise DecodeError(f"not a signature (a dict with a 'task' name): {value!r:.200}")
        args, kwargs, options = value.get("args") or (), value.get("kwargs") or {}, value.get("options") or {}
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping) or not isinstance(options, Mapping):
            raise DecodeError(f"malformed signature of {value['task']!r}: args, kwargs or options of the wrong type")
        kind = value.get("subtask_type")
        if not kind:
            return Signature(value, app=app)
        workflow = _WORKFLOWS.get(kind)
        if workflow is None:
            raise DecodeError(f"signature of {value['task']!r} has an unknown subtask_type {kind!r}")
        try:
            return workflow._from_dict(value, app)
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"malformed {kind} signature: {exc}") from None

    @classmethod
    def _from_dict(cls, value: Mapping[str, Any], app: App | None) -> Signature:
        return Signature(value, app=app)

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
    def id(self) -> str | None:
        """The task id it is sent with, once fixed (``freeze``)."""
        task_id = self["options"].get("task_id")
        return None if task_id is None else str(task_id)

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
        return Signature(
            self.task, new_args, _copy(new_kwargs), _copy(new_options), self.subtask_type, self.immutable, app=self._app
        )

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

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix the id (and place in a group or chord) it will be sent with; its result handle."""
        options = self["options"]
        task_id = options.setdefault("task_id", _id or new_task_id())
        for key, value in (("group_id", group_id), ("root_id", root_id), ("parent_id", parent_id)):
            if value is not None:
                options.setdefault(key, value)
        if chord is not None:
            options["chord"] = chord
        if group_index is not None:
            options["group_index"] = group_index
        return AsyncResult(task_id, app=self._app, task_name=self.task)

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

    def __or__(self, other: Signature) -> Signature:  # type: ignore[override]  # Celery's pipe, not dict union
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(self, other, app=self._app)

    # -- running --------------------------------------------------------------------------------------

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """Send the task with the merged arguments and options."""
        call_args, call_kwargs, call_options = self._merge(args, kwargs, options)
        sendable = {k: v for k, v in call_options.items() if k in SEND_OPTIONS}
        ignored = call_options.keys() - sendable.keys()
        if ignored:  # a Celery sender's bookkeeping rqueue has no use for: kept out
            logger.debug("Signature %s: options not used by rqueue: %s", self.task, ", ".join(sorted(ignored)))
        app = self.app
        task = app.tasks.get(self.task)
        if task is not None:  # known here: its options, argument check and eager mode apply
            return task.apply_async(call_args, call_kwargs, **sendable)
        return app.send_task(self.task, call_args, call_kwargs, **sendable)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    async def aapply_async(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """``apply_async`` from a running event loop, for every canvas (a chain, group or chord
        sends several messages and may set up a join): sent from the publish threads ``adelay``
        uses, in this context (a task sending it is its parent), so a slow broker never blocks the
        loop. As with ``adelay``, cancelling the await does not recall what was handed over."""
        from rqueue.sending import publisher  # noqa: PLC0415 - sending imports this module

        loop = asyncio.get_running_loop()
        send = functools.partial(self.apply_async, args, kwargs, **options)
        return await loop.run_in_executor(publisher(), contextvars.copy_context().run, send)

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return await self.aapply_async(args, kwargs)

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


def maybe_signature(value: Any, app: App | None = None) -> Signature:
    """A signature from a signature, a task, or a dict (DecodeError for anything else)."""
    if isinstance(value, Signature):
        return value
    if hasattr(value, "s") and hasattr(value, "name"):  # a task: its call without arguments
        return Signature(value, app=app)
    return Signature.from_wire(value, app)


def _given(tasks: tuple[Any, ...]) -> list[Any]:
    """A workflow's tasks as Celery takes them: ``chain(a, b)`` or ``chain([a, b])`` (any iterable
    of signatures, a generator too, as the one argument)."""
    if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and isinstance(tasks[0], Iterable):
        return list(tasks[0])
    return list(tasks)


def _copy(value: Any) -> Any:
    """A copy of signature data deep enough that changing the copy's options never changes the
    original (signatures keep their class and app; other leaves are shared)."""
    if type(value) is Signature:  # the common case, made without re-reading the dict
        copied = dict.__new__(Signature)
        dict.update(copied, value)
        copied["kwargs"], copied["options"] = _copy(value["kwargs"]), _copy(value["options"])
        copied._app = value._app
        return copied
    if isinstance(value, Signature):
        return Signature.from_wire({k: _copy(v) for k, v in value.items()}, value._app)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _options_for_step(options: Mapping[str, Any]) -> dict[str, Any]:
    """What a workflow passes on to the tasks it sends: send options, and the group/chord
    bookkeeping a member carries."""
    return {k: v for k, v in options.items() if k in SEND_OPTIONS and v is not None}


class chain(Signature):  # noqa: N801 - Celery's name
    """Tasks run one after another, each getting the previous one's result as first argument:
    ``chain(add.s(4, 4), mul.s(8))()`` or ``add.s(4, 4) | mul.s(8)``. The result is the last step's
    (its ``parent`` the step before). A group followed by a step becomes a chord with that step as
    body; a step may be any workflow.

    On the wire it is Celery's: the first message carries the remaining signatures in
    ``embed.chain`` (the next one last), so a Celery worker continues an rqueue chain and the reverse.
    """

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        steps: list[Signature] = []
        for item in _given(tasks):
            sig = maybe_signature(item, app)
            if isinstance(sig, chain) and not sig["options"]:
                steps.extend(sig.tasks)
            else:
                steps.append(sig)
        if not steps:
            raise ValueError("a chain needs at least one task")
        super().__init__("celery.chain", (), {"tasks": steps}, options, "chain", app=app or steps[0]._app)

    @classmethod
    def _from_dict(cls, value: Mapping[str, Any], app: App | None) -> Signature:
        steps = [Signature.from_wire(s, app) for s in value["kwargs"]["tasks"]]
        args = list(value.get("args") or ())
        if args and steps:  # a chain applied with arguments gives them to its first step
            steps[0] = steps[0].clone(args)
        return chain(*steps, app=app, **dict(value.get("options") or {}))

    @property
    def tasks(self) -> list[Signature]:
        return [maybe_signature(s, self._app) for s in self["kwargs"]["tasks"]]

    def __or__(self, other: Signature) -> Signature:  # type: ignore[override]  # Celery's pipe, not dict union
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(*self.tasks, other, app=self._app, **self["options"])

    def clone(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> chain:
        steps = [_copy(s) for s in self.tasks]
        if args and not self.immutable:
            steps[0] = steps[0].clone(args, kwargs)
        return chain(*steps, app=self._app, **{**_copy(self["options"]), **options})

    def _steps(self) -> list[Signature]:
        """The steps as sent: nested chains spliced in, a group followed by a step made a chord."""
        flat: list[Signature] = []
        for step in self.tasks:
            if isinstance(step, chain):
                flat.extend(step._steps())
            else:
                flat.append(step)
        steps: list[Signature] = []
        for step in flat:
            if steps and isinstance(steps[-1], group):
                steps[-1] = chord(steps[-1].tasks, step, app=self._app, **steps[-1]["options"])
            elif steps and isinstance(steps[-1], chord) and steps[-1].body is not None and not isinstance(step, group):
                previous, body = steps[-1], steps[-1].body
                steps[-1] = chord(previous.header, body | step, app=self._app, **previous["options"])
            else:
                steps.append(step)
        return steps

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix every step's id; the last step carries the chain's place in a group or chord. The
        last step's result, each result's ``parent`` the step before."""
        steps = self._steps()
        root_id = root_id or self["options"].get("root_id")
        results = []
        for i, step in enumerate(steps):
            if i == len(steps) - 1:
                result = step.freeze(_id or self["options"].get("task_id"), group_id, chord, root_id, None, group_index)
            else:
                result = step.freeze(root_id=root_id)
            results.append(result)
        for previous, result in itertools.pairwise(results):
            _first_of(result).parent = previous
        self["kwargs"]["tasks"] = steps
        return results[-1]

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        """Send the first step; the workers send the others in turn. Returns the last step's result.
        ``link`` applies to the last step, ``link_error`` to every step. Under ``task_always_eager``
        the steps run here, one after another (``apply``)."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        sent = self.clone(args, kwargs)
        own = {**sent["options"], **options}
        link, link_error = own.pop("link", None), own.pop("link_error", None)
        group_id, chord_body, group_index = (
            own.pop("group_id", None),
            own.pop("chord", None),
            own.pop("group_index", None),
        )
        last_result = sent.freeze(own.pop("task_id", None), group_id, chord_body, own.get("root_id"), None, group_index)
        steps = sent["kwargs"]["tasks"]
        if link:
            for callback in links_of(link) or ():
                steps[-1].link(callback)
        if link_error:
            for step in steps:
                for errback in links_of(link_error) or ():
                    step.link_error(errback)
        # The rest of the chain, the next step last: after this chain's own steps, what was to follow it.
        following = [*(own.pop("chain", None) or ()), *(dict(s) for s in reversed(steps[1:]))]
        steps[0].apply_async(chain=following or None, **_options_for_step(own))
        return last_result

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Run the steps here and now, each with the previous result; the last result (or the
        first that failed)."""
        first, *rest = self._steps()
        result = first.apply(args, kwargs)
        for step in rest:
            if not _eager_ok(result):
                break
            result = step.apply((result.get(),))
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.tasks)


def _first_of(result: Any) -> Any:
    """The result a chain step's predecessor is the parent of: for a chord, its header."""
    node = result
    seen = set()
    while getattr(node, "parent", None) is not None and id(node) not in seen:
        seen.add(id(node))
        node = node.parent
    return node


def _eager_ok(result: Any) -> bool:
    return bool(result.successful()) if isinstance(result, (EagerResult, GroupResult)) else True


class group(Signature):  # noqa: N801 - Celery's name
    """Tasks run in parallel: ``group(add.s(i, i) for i in range(10))()`` returns a
    ``GroupResult`` whose ``get()`` lists their values in order. Nested groups are flattened
    into their parent (as Celery does); a member may be a chain or a chord (its result is then
    that workflow's). Plain members are sent in batches, one broker round trip per 500.
    """

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        members = [maybe_signature(t, app) for t in _given(tasks)]
        first_app = next((m._app for m in members if m._app is not None), None)
        super().__init__("celery.group", (), {"tasks": members}, options, "group", app=app or first_app)

    @classmethod
    def _from_dict(cls, value: Mapping[str, Any], app: App | None) -> Signature:
        members = [Signature.from_wire(s, app) for s in value["kwargs"]["tasks"]]
        args = list(value.get("args") or ())
        if args:
            members = [m.clone(args) for m in members]
        return group(members, app=app, **dict(value.get("options") or {}))

    @property
    def tasks(self) -> list[Signature]:
        return [maybe_signature(s, self._app) for s in self["kwargs"]["tasks"]]

    def clone(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> group:
        members = [_copy(m) for m in self.tasks]
        if args or kwargs:
            members = [m.clone(args, kwargs) for m in members]
        return group(members, app=self._app, **{**_copy(self["options"]), **options})

    def _members(self) -> list[Signature]:
        """The members as sent: nested groups flattened."""
        flat: list[Signature] = []
        for member in self.tasks:
            flat.extend(member._members() if isinstance(member, group) else [member])
        return flat

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix the group's id and its members'. Inside a chord's header (``chord``), every member
        counts towards the chord under the enclosing group's id (``group_id``), from ``group_index``
        on, so nested forms add up; otherwise members are numbered within this group."""
        options = self["options"]
        gid = options.setdefault("task_id", _id or new_task_id())
        root_id = root_id or options.get("root_id")
        members = self._members()
        results = []
        if chord is not None:
            count_as, index = group_id or gid, group_index or 0
            for member in members:
                results.append(member.freeze(None, count_as, chord, root_id, parent_id, index))
                index += chord_size(member)
        else:
            for index, member in enumerate(members):
                results.append(member.freeze(None, gid, None, root_id, parent_id, index))
        self["kwargs"]["tasks"] = members
        return GroupResult(gid, results, app=self._app)

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        """Send every member (with ``args`` put before each mutable member's own); the GroupResult.
        ``link_error`` applies to every member; a group takes no ``link`` (use a chord)."""
        if options.get("link"):
            raise TypeError("a group takes no link= (its members finish separately): use a chord to act on all results")
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        sent = self.clone(args, kwargs)
        own = {**sent["options"], **options}
        link_error = own.pop("link_error", None)
        chord_body = own.pop("chord", None)
        if own.pop("chain", None):  # a chain turns a group followed by a step into a chord
            logger.warning("group %s: a chain continuing after a group is not sent; make it a chord", self.id)
        result = sent.freeze(
            own.pop("task_id", None),
            own.pop("group_id", None),
            chord_body,
            own.get("root_id"),
            None,
            own.pop("group_index", None),
        )
        members = sent["kwargs"]["tasks"]
        for member in members:
            for errback in links_of(link_error) or ():
                member.link_error(errback)
        _send_members(self.app, members, _options_for_step(own))
        return result

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Run every member here and now; a GroupResult of their eager results."""
        members = self.clone(args, kwargs)._members()
        return GroupResult(self.id or new_task_id(), [m.apply() for m in members], app=self._app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __len__(self) -> int:
        return len(self["kwargs"]["tasks"])

    def __repr__(self) -> str:
        return f"group({self.tasks!r})"


#: A group's plain members are published this many per broker round trip: large groups start
#: running while the rest is still being sent.
SEND_BATCH = 500


def _send_members(app: App, members: list[Signature], options: dict[str, Any]) -> None:
    """Send a group's members: plain tasks in batches (one broker round trip each), workflows one by
    one. Every known task's arguments are checked first: nothing is sent when one does not fit."""
    for member in members:
        task = None if member.subtask_type else app.tasks.get(member.task)
        if task is not None and task.option("typing") is not False:
            task.check_arguments(member["args"], member["kwargs"])
    batch: list[tuple[str, Any, Any, SendOptions]] = []
    for member in members:
        if member.subtask_type:
            member.apply_async(**options)
            continue
        merged = {**member["options"], **options}
        sendable = {k: v for k, v in merged.items() if k in SEND_OPTIONS}
        batch.append((member.task, member["args"], member["kwargs"], cast("SendOptions", sendable)))
        if len(batch) >= SEND_BATCH:
            app.send_batch(batch)
            batch = []
    if batch:
        app.send_batch(batch)


class chord(Signature):  # noqa: N801 - Celery's name
    """A group whose results, once all are in, go to a body as one list:
    ``chord(add.s(i, i) for i in range(10))(xsum.s())``. The result is the body's (its ``parent``
    the header's GroupResult). A header member that fails makes the body fail with a ChordError
    naming it (and calls the body's ``link_error``); an empty header runs the body with ``[]``.
    """

    def __init__(self, header: Any, body: Any = None, app: App | None = None, **options: Any) -> None:
        if isinstance(header, group):
            members = header.tasks
        elif isinstance(header, Signature):
            members = [header]
        else:
            members = [maybe_signature(t, app) for t in header]
        body_sig = None if body is None else maybe_signature(body, app)
        first_app = app or (body_sig._app if body_sig is not None else None)
        first_app = first_app or next((m._app for m in members if m._app is not None), None)
        super().__init__(
            "celery.chord", (), {"kwargs": {}, "header": members, "body": body_sig}, options, "chord", app=first_app
        )

    @classmethod
    def _from_dict(cls, value: Mapping[str, Any], app: App | None) -> Signature:
        kw = value["kwargs"]
        header = kw["header"]
        members = header["kwargs"]["tasks"] if isinstance(header, Mapping) else header
        made = chord(
            [Signature.from_wire(m, app) for m in members], kw.get("body"), app=app, **dict(value.get("options") or {})
        )
        args = list(value.get("args") or ())
        return made.clone(args) if args else made

    @property
    def header(self) -> list[Signature]:
        return [maybe_signature(s, self._app) for s in self["kwargs"]["header"]]

    @property
    def tasks(self) -> list[Signature]:
        return self.header

    @property
    def body(self) -> Signature | None:
        body = self["kwargs"].get("body")
        return None if body is None else maybe_signature(body, self._app)

    def clone(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> chord:
        members = [_copy(m) for m in self.header]
        if args and not self.immutable:
            members = [m.clone(args, kwargs) for m in members]
        body = _copy(self.body) if self.body is not None else None
        return chord(members, body, app=self._app, **{**_copy(self["options"]), **options})

    def __or__(self, other: Signature) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature) and not isinstance(other, (group, chain)) and self.body is not None:
            return chord(self.header, self.body | other, app=self._app, **self["options"])
        return super().__or__(other)

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix the body's id (carrying the chord's own place in an enclosing group or chord) and
        the header's (each member carrying the body); the body's result, its parent the header's."""
        body = self.body
        if body is None:
            raise TypeError("a chord needs a body: chord(header)(body) or chord(header, body)")
        options = self["options"]
        root_id = root_id or options.get("root_id")
        gid = options.setdefault("task_id", new_task_id())
        body_result = body.freeze(_id, group_id or gid, chord, root_id, None, group_index)
        header = group(self.header, app=self._app, task_id=gid)
        header_result = header.freeze(gid, gid, dict(body), root_id, parent_id)
        _first_of(body_result).parent = header_result
        self["kwargs"]["header"] = header["kwargs"]["tasks"]
        self["kwargs"]["body"] = body
        return body_result

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        """Send the header (the body goes with each member); the body's result. ``link`` and
        ``link_error`` go to the body; a ``chain`` to continue after the body goes with the body."""
        body = options.pop("body", None)
        made = self if body is None else chord(self.header, body, app=self._app, **self["options"])
        if made.body is None:
            raise TypeError("a chord needs a body: chord(header)(body) or chord(header, body)")
        if self.app.conf.task_always_eager:
            return made.apply(args, kwargs, **options)
        sent = made.clone(args, kwargs)
        own = {**sent["options"], **options}
        body_sig = sent.body
        assert body_sig is not None
        for key in ("link", "link_error"):
            for link in links_of(own.pop(key, None)) or ():
                (body_sig.link if key == "link" else body_sig.link_error)(link)
        rest = own.pop("chain", None)
        if rest:
            body_sig["options"]["chain"] = rest
        sent["kwargs"]["body"] = body_sig
        body_result = sent.freeze(
            own.pop("task_id", None),
            own.pop("group_id", None),
            own.pop("chord", None),
            own.get("root_id"),
            None,
            own.pop("group_index", None),
        )
        members = sent["kwargs"]["header"]
        size = sum(chord_size(m) for m in members)
        app = self.app
        if size == 0:
            body_sig.apply_async(([],), **_options_for_step(own))
            return body_result
        app.backend.ensure_chords_allowed()
        app.backend.set_chord_size(sent.id or "", size)
        _send_members(app, members, _options_for_step(own))
        return body_result

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Run the header here and now, then the body with its values."""
        body = options.pop("body", None) or self.body
        if body is None:
            raise TypeError("a chord needs a body: chord(header)(body) or chord(header, body)")
        header = group(self.header, app=self._app).apply(args, kwargs)
        values = header.get(propagate=True)
        return maybe_signature(body, self._app).apply((values,))

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return self.apply_async((), {}, body=body, **options) if body is not None else self.apply_async(**options)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def chord_size(sig: Signature) -> int:
    """How many header results a member adds to a chord: a task 1, a group its members', a chain
    its last step's, a chord its body's."""
    if isinstance(sig, group):
        return sum(chord_size(m) for m in sig.tasks)
    if isinstance(sig, chain):
        for step in reversed(sig._steps()):
            size = chord_size(step)
            if size:
                return size
        return 0
    if isinstance(sig, chord):
        body = sig.body
        return chord_size(body) if body is not None else 0
    return 1


class xmap(Signature):  # noqa: N801 - Celery's name
    """``task.map(items)``: one message that calls ``task(item)`` for each item, in one worker."""

    _task_name = "celery.map"

    def __init__(self, task: Any, it: Iterable[Any], app: App | None = None, **options: Any) -> None:
        sig = maybe_signature(task, app)
        super().__init__(self._task_name, (), {"task": sig, "it": list(it)}, options, None, True, app=app or sig._app)


class xstarmap(xmap):  # noqa: N801 - Celery's name
    """``task.starmap(items)``: one message that calls ``task(*item)`` for each item."""

    _task_name = "celery.starmap"


class chunks(Signature):  # noqa: N801 - Celery's name
    """``task.chunks(items, n)``: the calls ``task(*item)`` split into messages of ``n`` items (a
    group of ``xstarmap``); ``get()`` lists each chunk's list of values."""

    def __init__(self, task: Any, it: Iterable[Any], n: int, app: App | None = None, **options: Any) -> None:
        if int(n) < 1:
            raise ValueError(f"chunks need a size of at least 1, got {n!r}")
        sig = maybe_signature(task, app)
        kwargs = {"task": sig, "it": list(it), "n": int(n)}
        super().__init__("celery.chunks", (), kwargs, options, None, True, app=app or sig._app)

    def group(self) -> group:
        task, items, n = self["kwargs"]["task"], list(self["kwargs"]["it"]), int(self["kwargs"]["n"])
        parts = [xstarmap(task, items[i : i + n], app=self._app) for i in range(0, len(items), n)]
        return group(parts, app=self._app, **self["options"])

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        return self.group().apply_async(args, kwargs, **options)

    def __call__(self, **options: Any) -> Any:
        return self.apply_async(**options)


#: The workflow class of each ``subtask_type`` (Celery's names).
_WORKFLOWS: dict[str, type[Signature]] = {"chain": chain, "group": group, "chord": chord}


def links_of(value: Any) -> list[dict[str, Any]] | None:
    """``link=``/``link_error=``/``chain=`` as the wire's list of signature dicts (one signature or several)."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    links = []
    for item in items:
        if type(item) is dict and isinstance(item.get("task"), str):
            links.append(item)  # already wire data (the rest of a chain a worker passes on): no copy
            continue
        as_dict = dict(item) if isinstance(item, Mapping) else None
        if as_dict is None or not isinstance(as_dict.get("task"), str):
            raise TypeError(f"link/link_error takes signatures (task.s(...)), got {item!r}")
        links.append(as_dict)
    return links or None


# -- what a worker does with a message's links ----------------------------------------------------------


def check_links(embed: Mapping[str, Any]) -> None:
    """Raise DecodeError when a message's callbacks, errbacks, chord body or next chain step is not
    a signature (the worker dead-letters it before running the task). Of a chain only the next step
    is read in full: each later one is the next step of some message in turn, and is checked then
    (a chain of N steps would otherwise cost N² reads)."""
    if embed.get("chord") is not None:
        Signature.from_wire(embed["chord"])
    for key in ("callbacks", "errbacks", "chain"):
        value = embed.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise DecodeError(f"embed.{key} must be a list of signatures, got {type(value).__name__}")
        for item in value[-1:] if key == "chain" else value:
            Signature.from_wire(item)


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
        Signature.from_wire(callback, app).apply_async((retval,), **options)


def apply_error_links(app: App, request: Any, exc: BaseException, traceback: str | None) -> None:
    """After a task failed: its errbacks (``link_error``). As in Celery, an errback task whose
    function takes ``(request, exc, traceback)`` is called here in the worker; any other is sent
    with the failed task's id as its argument."""
    root_id = request.root_id or request.id
    for errback in request.errbacks or ():
        sig = Signature.from_wire(errback, app)
        task = None if sig.subtask_type else app.tasks.get(sig.task)
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
