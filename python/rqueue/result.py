"""``AsyncResult``: a handle on a task's state and return value; ``EagerResult``: the outcome of a
task run here and now (``task.apply()``); ``ResultSet`` and ``GroupResult``: many results read
together (a group's). Results link up as Celery's do: ``parent`` (the previous step of a chain),
``children`` (the tasks a task sent, stored with its result), and Celery's tuple form of both."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from rqueue import states
from rqueue.current import current_app
from rqueue.exceptions import DecodeError, ResultIgnoredError, TaskRevokedError, TimeoutError
from rqueue.request import current_request
from rqueue.serialization import exception_from_meta

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.backends.base import ResultBackend

R = TypeVar("R")


class AsyncResult(Generic[R]):
    """The state and result of one task, read from the result backend.

    Args:
        id: The task id.
        backend: The backend to read from; default the app's.
        task_name: The task's name, when known.
        app: The app; default the current app (as Celery's ``AsyncResult(id)``).
        ignored: True when the task was sent with ``ignore_result``: ``get()`` then fails fast.
    """

    def __init__(
        self,
        id: str,
        backend: ResultBackend | None = None,
        task_name: str | None = None,
        app: App | None = None,
        *,
        ignored: bool = False,
        parent: AsyncResult[Any] | None = None,
    ) -> None:
        self.id = id
        self._backend = backend
        self.name = task_name
        self.ignored = ignored
        self.app = app
        #: The result this one's task got its input from (a chain's previous step), when known.
        self.parent = parent
        self._final: dict[str, Any] | None = None

    @property
    def backend(self) -> ResultBackend:
        if self._backend is None:
            if self.app is None:
                self.app = current_app()
            self._backend = self.app.backend
        return self._backend

    def _meta(self) -> dict[str, Any]:
        if self._final is not None:
            return self._final
        meta = self.backend.get_meta(self.id)
        if meta["status"] in states.READY_STATES:
            self._final = meta
        return meta

    @property
    def state(self) -> str:
        """PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        return str(self._meta()["status"])

    status = state

    def ready(self) -> bool:
        """True once the task succeeded, failed or was revoked."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """Wait for the task and return its value.

        Args:
            timeout: Seconds to wait; ``rqueue.exceptions.TimeoutError`` when they run out.
            propagate: Re-raise the task's exception (same type and message) when it failed; with
                False the exception is returned instead.
            interval: The longest pause between two polls of the backend, in seconds.
            disable_sync_subtasks: Refuse to wait inside a running task (Celery's rule: a task
                waiting for another can deadlock the pool); False, or ``allow_join_result()``, allows it.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        if self.ignored:
            raise ResultIgnoredError(
                f"task {self.id} was sent with ignore_result=True, so no result will ever be stored"
            )
        meta = self._final or self.backend.wait_for(self.id, timeout, interval)
        self._final = meta
        value = self._value(meta)
        if isinstance(value, BaseException) and propagate:
            raise value
        return cast(R, value)

    wait = get

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """``get()`` for a running event loop: await the task and return its value, no thread blocked
        (Redis, ``rpc://``), or one thread of the backend's for all of the loop's awaits (SQLite,
        PostgreSQL, memcached). The same arguments, value and errors as ``get()``.

        Args:
            timeout: Seconds to wait; ``rqueue.exceptions.TimeoutError`` when they run out.
            propagate: Re-raise the task's exception when it failed; with False it is returned.
            interval: Accepted for symmetry with ``get()``: results are pushed or signalled, and
                a backend that can do neither is polled with pauses growing up to 0.5 s.
            disable_sync_subtasks: Refuse to wait inside a running task, as ``get()`` does.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        if self.ignored:
            raise ResultIgnoredError(
                f"task {self.id} was sent with ignore_result=True, so no result will ever be stored"
            )
        meta = self._final or await self.backend.await_meta(self.id, timeout)
        self._final = meta
        value = self._value(meta)
        if isinstance(value, BaseException) and propagate:
            raise value
        return cast(R, value)

    async def _ameta(self) -> dict[str, Any]:
        if self._final is not None:
            return self._final
        meta = await self.backend.aget_meta(self.id)
        if meta["status"] in states.READY_STATES:
            self._final = meta
        return meta

    async def astate(self) -> str:
        """``state``, read without blocking the running loop."""
        return str((await self._ameta())["status"])

    async def aready(self) -> bool:
        """``ready()``, read without blocking the running loop."""
        return await self.astate() in states.READY_STATES

    async def asuccessful(self) -> bool:
        """``successful()``, read without blocking the running loop."""
        return await self.astate() == states.SUCCESS

    async def afailed(self) -> bool:
        """``failed()``, read without blocking the running loop."""
        return await self.astate() == states.FAILURE

    @property
    def result(self) -> R | BaseException | None:
        """The return value, or the exception when the task failed; None while not ready."""
        return cast("R | BaseException | None", self._value(self._meta()))

    info = result

    @property
    def traceback(self) -> str | None:
        """The worker-side traceback text of a failed task."""
        tb = self._meta().get("traceback")
        return None if tb is None else str(tb)

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Revoke the task: a worker that has not started it records it REVOKED instead of running it;
        with ``terminate`` a running one is stopped."""
        if self.app is None:
            self.app = current_app()
        options: dict[str, Any] = {"terminate": terminate}
        if signal is not None:
            options["signal"] = signal
        self.app.control.revoke(self.id, **options)

    def forget(self) -> None:
        """Delete the stored result."""
        self._final = None
        self.backend.forget(self.id)

    @property
    def children(self) -> list[AsyncResult[Any]]:
        """The tasks this task sent while it ran (read from its stored result; empty until ready)."""
        return [result_from_tuple(child, self.app) for child in self._meta().get("children") or ()]

    def collect(self, timeout: float | None = None) -> Iterator[tuple[AsyncResult[Any], Any]]:
        """``(result, value)`` of this task and, depth first, of every task it sent (and they sent),
        waiting for each: a task that starts subtasks and returns is followed to the end."""
        for node in self._walk():
            yield node, node.get(timeout=timeout)

    def _walk(self) -> Iterator[AsyncResult[Any]]:
        stack: list[AsyncResult[Any]] = [self]
        while stack:
            node = stack.pop()
            if not isinstance(node, ResultSet):
                node.get(propagate=False)  # children are known once it is ready
            yield node
            stack.extend(reversed(node.children))

    def as_tuple(self) -> Any:
        """Celery's tuple form: ``((id, parent_tuple), None)``."""
        return (self.id, self.parent.as_tuple() if self.parent is not None else None), None

    @property
    def date_done(self) -> Any:
        """When the task reached a ready state (ISO-8601 text as stored), or None."""
        return self._meta().get("date_done")

    @staticmethod
    def _value(meta: dict[str, Any]) -> Any:
        status = meta["status"]
        if status in (states.FAILURE, states.RETRY):
            return exception_from_meta(meta.get("result"))
        if status == states.REVOKED:
            reason = meta.get("result")
            detail = f": {reason.get('exc_message')}" if isinstance(reason, dict) else ""
            return TaskRevokedError(f"task {meta.get('task_id')} was revoked{detail}")
        return meta.get("result")

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class ResultSet(AsyncResult[list[Any]]):
    """Several results read together: ``get()`` returns their values in order."""

    def __init__(self, results: Iterable[AsyncResult[Any]], app: App | None = None, **kwargs: Any) -> None:
        super().__init__(kwargs.pop("id", ""), app=app, **kwargs)
        self.results = list(results)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult[Any]]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any]:
        return self.results[index]

    def add(self, result: AsyncResult[Any]) -> None:
        if result not in self.results:
            self.results.append(result)

    def _states(self) -> list[str]:
        """The state of every result (nested sets flattened), read in as few round trips as the backend allows."""
        plain = [r for r in self.results if not isinstance(r, ResultSet)]
        metas = {m["task_id"]: m for m in self._metas(plain)}
        found: list[str] = []
        for r in self.results:
            found.extend(r._states() if isinstance(r, ResultSet) else [metas[r.id]["status"]])
        return found

    def _metas(self, results: list[AsyncResult[Any]]) -> list[dict[str, Any]]:
        todo = [r for r in results if r._final is None]
        if todo:
            for r, meta in zip(todo, self.backend.get_many_meta([r.id for r in todo]), strict=True):
                meta.setdefault("task_id", r.id)
                if meta["status"] in states.READY_STATES:
                    r._final = meta
        return [r._final or {"status": states.PENDING, "task_id": r.id} for r in results]

    @property
    def state(self) -> str:
        found = self._states()
        for state in (states.FAILURE, states.REVOKED):
            if state in found:
                return state
        return states.SUCCESS if all(s == states.SUCCESS for s in found) else states.PENDING

    def ready(self) -> bool:
        """True once every result is ready."""
        return all(s in states.READY_STATES for s in self._states())

    def successful(self) -> bool:
        """True once every task succeeded."""
        return all(s == states.SUCCESS for s in self._states())

    def failed(self) -> bool:
        """True when any task failed."""
        return any(s == states.FAILURE for s in self._states())

    def waiting(self) -> bool:
        """True while any task is not ready."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many tasks succeeded."""
        return sum(s == states.SUCCESS for s in self._states())

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """Wait for every result; their values in order (a nested group's as a list). With
        ``propagate`` the first failure (in order) is raised once all are ready or it is seen."""
        return self.join(timeout, propagate, interval, disable_sync_subtasks)

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        plain = self._leaves()
        while True:
            metas = self._metas(plain)
            if propagate:
                for meta in metas:  # fail fast: the first failure in order raises now
                    if meta["status"] in states.PROPAGATE_STATES:
                        value = self._value(meta)
                        raise value if isinstance(value, BaseException) else TaskRevokedError(str(value))
            if all(meta["status"] in states.READY_STATES for meta in metas):
                return self._values()
            if deadline is not None and time.monotonic() >= deadline:
                waiting = sum(meta["status"] not in states.READY_STATES for meta in metas)
                raise TimeoutError(f"{waiting} of {len(metas)} results were not ready within {timeout} s")
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 1.5, interval)

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """``get()`` for a running event loop (see ``ajoin``)."""
        return await self.ajoin(timeout, propagate, interval, disable_sync_subtasks)

    async def ajoin(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """``join()`` for a running event loop: every result awaited at once (one shared waiter per
        backend and loop), their values in order. With ``propagate`` a failure raises as soon as it
        is seen (the first in order among those seen together); the other awaits are cancelled."""
        if disable_sync_subtasks:
            assert_will_not_block()
        plain = [r for r in self._leaves() if r._final is None]
        backend = self.backend
        by_id: dict[str, list[AsyncResult[Any]]] = {}
        for r in plain:
            by_id.setdefault(r.id, []).append(r)
        pending: dict[asyncio.Future[dict[str, Any]], str] = {
            asyncio.ensure_future(backend.await_meta(task_id, None)): task_id for task_id in by_id
        }
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            while pending:
                left = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
                done, _ = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise TimeoutError(
                        f"{len(pending)} of {len(self._leaves())} results were not ready within {timeout} s"
                    )
                for future in done:
                    meta = future.result()  # a backend error raises here
                    for r in by_id[pending.pop(future)]:
                        r._final = meta
                if propagate:  # fail fast: the first failure in order raises now
                    self._raise_first_failure(plain)
        finally:
            for future in pending:
                future.cancel()
            if pending:  # let the cancelled awaits leave their waiters before returning
                await asyncio.wait(pending)
        if propagate:  # results ready before the call: the same rule, in order
            self._raise_first_failure(self._leaves())
        return self._values()

    def _raise_first_failure(self, results: list[AsyncResult[Any]]) -> None:
        """Raise the failure (or revocation) of the first of ``results`` known to have one."""
        for r in results:
            meta = r._final
            if meta is not None and meta["status"] in states.PROPAGATE_STATES:
                value = self._value(meta)
                raise value if isinstance(value, BaseException) else TaskRevokedError(str(value))

    async def _aleaf_states(self) -> list[str]:
        """The state of every leaf, read without blocking the running loop (one round trip where the backend can)."""
        plain = self._leaves()
        todo = [r for r in plain if r._final is None]
        read = dict(zip(todo, await self.backend.aget_many_meta([r.id for r in todo]), strict=True)) if todo else {}
        found = []
        for r in plain:
            meta = r._final or read[r]
            if meta["status"] in states.READY_STATES:
                r._final = meta
            found.append(str(meta["status"]))
        return found

    async def astate(self) -> str:
        """``state``, read without blocking the running loop."""
        found = await self._aleaf_states()
        for state in (states.FAILURE, states.REVOKED):
            if state in found:
                return state
        return states.SUCCESS if all(s == states.SUCCESS for s in found) else states.PENDING

    async def aready(self) -> bool:
        """``ready()``, read without blocking the running loop."""
        return all(s in states.READY_STATES for s in await self._aleaf_states())

    def _leaves(self) -> list[AsyncResult[Any]]:
        leaves: list[AsyncResult[Any]] = []
        for r in self.results:
            leaves.extend(r._leaves() if isinstance(r, ResultSet) else [r])
        return leaves

    def _values(self) -> list[Any]:
        return [r._values() if isinstance(r, ResultSet) else r._value(r._meta()) for r in self.results]

    @property
    def result(self) -> list[Any]:
        return [r.result for r in self.results]

    @property
    def children(self) -> list[AsyncResult[Any]]:
        return list(self.results)

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Revoke every task of the set."""
        for r in self.results:
            r.revoke(terminate=terminate, signal=signal)

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResultSet) and other.id == self.id and other.results == self.results

    def __hash__(self) -> int:
        return hash((self.id, len(self.results)))


class GroupResult(ResultSet):
    """The results of a group: ``id`` is the group's id (its members' ``group`` header)."""

    def __init__(
        self,
        id: str,
        results: Iterable[AsyncResult[Any]],
        app: App | None = None,
        parent: AsyncResult[Any] | None = None,
        backend: ResultBackend | None = None,
    ) -> None:
        super().__init__(results, app=app, id=id, parent=parent, backend=backend)

    def save(self, backend: ResultBackend | None = None) -> None:
        """Store the group's result ids, so ``GroupResult.restore(id)`` finds them anywhere."""
        (backend or self.backend).save_group(self.id, self.as_tuple())

    def delete(self, backend: ResultBackend | None = None) -> None:
        """Remove the saved group (not its tasks' results)."""
        (backend or self.backend).forget_group(self.id)

    @classmethod
    def restore(cls, id: str, backend: ResultBackend | None = None, app: App | None = None) -> GroupResult | None:
        """The group saved under ``id``, or None."""
        app = app if app is not None else current_app()
        saved = (backend or app.backend).restore_group(id)
        if saved is None:
            return None
        result = result_from_tuple(saved, app)
        if not isinstance(result, GroupResult):
            raise DecodeError(f"group {id}: the saved record is not a group's")
        return result

    def as_tuple(self) -> Any:
        """Celery's tuple form: ``((id, parent_tuple), [member tuples])``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), [r.as_tuple() for r in self.results]

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


#: Celery's words, so a search for them finds its docs on why.
E_WOULDBLOCK = (
    "Never call result.get() within a task! See "
    "https://docs.celeryq.dev/en/latest/userguide/tasks.html#avoid-launching-synchronous-subtasks"
)

_join_allowed = threading.local()


def assert_will_not_block() -> None:
    """RuntimeError when called inside a task a worker runs (unless ``allow_join_result()``)."""
    request = current_request()
    if (
        request is not None
        and not request.is_eager
        and not request.called_directly
        and not getattr(_join_allowed, "on", False)
    ):
        raise RuntimeError(E_WOULDBLOCK)


@contextmanager
def allow_join_result() -> Iterator[None]:
    """Allow ``get()`` inside a task within this block (Celery's escape hatch; it can deadlock)."""
    previous = getattr(_join_allowed, "on", False)
    _join_allowed.on = True
    try:
        yield
    finally:
        _join_allowed.on = previous


def result_from_tuple(value: Any, app: App | None = None) -> AsyncResult[Any]:
    """A result from Celery's tuple form (``as_tuple()``), as stored in ``children`` and saved groups."""
    if isinstance(value, AsyncResult):
        return value
    try:
        head, nodes = value
        task_id, parent = head if isinstance(head, (list, tuple)) else (head, None)
    except (TypeError, ValueError):
        raise DecodeError(f"not a result tuple: {value!r:.200}") from None
    parent_result = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        return GroupResult(str(task_id), [result_from_tuple(n, app) for n in nodes], app=app, parent=parent_result)
    return AsyncResult(str(task_id), app=app, parent=parent_result)


class EagerResult(AsyncResult[R]):
    """The outcome of a task run eagerly: ready at once, nothing read from a backend."""

    def __init__(self, id: str, value: Any, state: str, traceback: str | None = None, name: str | None = None) -> None:
        super().__init__(id, backend=None, task_name=name)
        self._value_now = value
        self._state = state
        self._traceback = traceback
        self._final = self._meta()  # ready now: a ResultSet never reads a backend for it

    def _meta(self) -> dict[str, Any]:
        return {"status": self._state, "result": self._value_now, "traceback": self._traceback, "task_id": self.id}

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> R:
        if isinstance(self._value_now, BaseException) and propagate:
            raise self._value_now
        return self._value_now  # type: ignore[no-any-return]

    wait = get

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> R:
        return self.get(timeout, propagate, interval, disable_sync_subtasks)

    async def _ameta(self) -> dict[str, Any]:
        return self._meta()

    @property
    def result(self) -> Any:
        return self._value_now

    info = result

    def forget(self) -> None:
        """Nothing is stored for an eager result unless ``task_store_eager_result``."""

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"
