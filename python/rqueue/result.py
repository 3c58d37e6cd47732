"""``AsyncResult``: a handle on a task's state and return value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from rqueue import states
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
        backend: The backend to read from (the app's, when made through the app).
        ignored: True when the task was sent with ``ignore_result``: ``get()`` then fails fast.
    """

    def __init__(self, id: str, backend: ResultBackend, *, ignored: bool = False, app: App | None = None) -> None:
        self.id = id
        self.backend = backend
        self.ignored = ignored
        self.app = app
        self._final: dict[str, Any] | None = None

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

    def revoke(self) -> None:
        """Revoke the task: a worker that has not started it records it REVOKED instead of running it."""
        if self.app is None:
            raise RuntimeError("this AsyncResult has no app; use app.AsyncResult(task_id).revoke()")
        self.app.control.revoke(self.id)

    def forget(self) -> None:
        """Delete the stored result."""
        self._final = None
        self.backend.forget(self.id)

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
