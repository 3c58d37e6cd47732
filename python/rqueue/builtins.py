"""Celery's built-in tasks that canvas messages name (``celery.map``, ``celery.starmap``,
``celery.chunks``, ``celery.accumulate``): every app runs them, though none lists them among its
tasks (as Celery's ``inspect registered`` leaves them out)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.task import Task


def builtin_tasks(app: App) -> dict[str, Task[Any, Any]]:
    """The built-in tasks, bound to ``app``."""
    from rqueue.canvas import chunks, maybe_signature  # noqa: PLC0415 - the canvas imports the app's modules

    def xmap(task: Any, it: list[Any]) -> list[Any]:
        """``task.map(items)``: the task's function called with each item, here."""
        fun = maybe_signature(task, app).type
        return [fun(item) for item in it]

    def xstarmap(task: Any, it: list[Any]) -> list[Any]:
        """``task.starmap(items)``: the task's function called with each item's arguments, here."""
        fun = maybe_signature(task, app).type
        return [fun(*item) for item in it]

    def chunked(task: Any, it: list[Any], n: int) -> Any:
        """A ``chunks`` signature sent as a task: its group is sent from the worker."""
        return chunks(task, it, n, app=app).apply_async().as_tuple()

    def accumulate(*args: Any, index: int | None = None) -> Any:
        """The body that gives a group used as one step (``self.replace(group)``) one result."""
        return args[index] if index is not None else args

    made: dict[str, Task[Any, Any]] = {}
    for name, fun in (
        ("celery.map", xmap),
        ("celery.starmap", xstarmap),
        ("celery.chunks", chunked),
        ("celery.accumulate", accumulate),
    ):
        task: Task[Any, Any] = app.Task()
        task.bind_app(app, name, fun, {"typing": False})
        made[name] = task
    return made
