"""``AsyncResult``: a handle on a task's state and return value; ``EagerResult``: the outcome of a
task run here and now (``task.apply()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from rqueue import states
from rqueue.current import current_app
from rqueue.exceptions import ResultIgnoredError, TaskRevokedError
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
    ) -> None:
        self.id = id
        self._backend = backend
        self.name = task_name
        self.ignored = ignored
        self.app = app
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

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> R:
        """Wait for the task and return its value.

        Args:
            timeout: Seconds to wait; ``rqueue.exceptions.TimeoutError`` when they run out.
            propagate: Re-raise the task's exception (same type and message) when it failed; with
                False the exception is returned instead.
            interval: The longest pause between two polls of the backend, in seconds.
        """
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


class EagerResult(AsyncResult[R]):
    """The outcome of a task run eagerly: ready at once, nothing read from a backend."""

    def __init__(self, id: str, value: Any, state: str, traceback: str | None = None, name: str | None = None) -> None:
        super().__init__(id, backend=None, task_name=name)
        self._value_now = value
        self._state = state
        self._traceback = traceback

    def _meta(self) -> dict[str, Any]:
        return {"status": self._state, "result": self._value_now, "traceback": self._traceback, "task_id": self.id}

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> R:
        if isinstance(self._value_now, BaseException) and propagate:
            raise self._value_now
        return self._value_now  # type: ignore[no-any-return]

    wait = get

    @property
    def result(self) -> Any:
        return self._value_now

    info = result

    def forget(self) -> None:
        """Nothing is stored for an eager result unless ``task_store_eager_result``."""

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"
