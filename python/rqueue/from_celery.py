"""Running an unmodified ``celery.Celery`` app on the rqueue worker: ``rqueue -A proj worker`` where
``proj`` holds a Celery app (and ``celery`` is installed), so a team can switch workers first and
code later.

The Celery app's explicit settings and its broker and result backend become an rqueue ``App``;
each of its tasks (Celery's own ``celery.*`` tasks aside) is registered as a ``CeleryTask`` that
runs the Celery task's ``run`` with a Celery request pushed, so bound tasks read ``self.request``
as under Celery, and tasks they send carry them as parent. What works and what does not is in
``docs/celery-migration.md`` ("Running a Celery app unchanged").
"""

from __future__ import annotations

import logging
from typing import Any

from rqueue.app import App
from rqueue.celery_settings import CELERY_OLD_NAMES, CELERY_SETTINGS
from rqueue.exceptions import ConfigurationError, Ignore, Reject, Retry
from rqueue.request import Request, current_request, custom_headers
from rqueue.task import Task

logger = logging.getLogger("rqueue")

#: Celery's default broker, used when the Celery app names none (as Celery would).
CELERY_DEFAULT_BROKER = "amqp://guest@localhost//"
#: Options of a Celery task that mean the same on rqueue's worker.
CARRIED_OPTIONS = (
    "ignore_result",
    "acks_late",
    "rate_limit",
    "time_limit",
    "soft_time_limit",
    "track_started",
    "serializer",
    "priority",
    "reject_on_worker_lost",
    "acks_on_failure_or_timeout",
    "store_errors_even_if_ignored",
)


def is_celery_app(obj: object) -> bool:
    """True for a ``celery.Celery`` instance (without importing Celery when the user did not)."""
    import sys  # noqa: PLC0415 - only sys.modules is consulted

    celery = sys.modules.get("celery")
    return celery is not None and isinstance(obj, getattr(celery, "Celery", ()))


def adopt(celery_app: Any) -> App:
    """An rqueue ``App`` that runs ``celery_app``'s tasks with its configuration."""
    celery_app.loader.import_default_modules()
    celery_app.finalize(auto=True)
    conf = celery_app.conf
    settings = {  # the settings the project set (Celery keeps its own bookkeeping beside them)
        key: value
        for key, value in dict(conf.changes).items()
        if (key in CELERY_SETTINGS or key in CELERY_OLD_NAMES) and key not in ("broker_url", "result_backend")
    }
    if conf.beat_schedule:  # add_periodic_task fills Celery's default dict in place: not a "change"
        settings["beat_schedule"] = dict(conf.beat_schedule)
    try:
        app = App(
            celery_app.main,
            broker=conf.broker_url or CELERY_DEFAULT_BROKER,
            backend=conf.result_backend or None,
            **settings,
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"the Celery app {celery_app.main!r} has a setting rqueue cannot use: {exc}") from exc
    for name, celery_task in sorted(celery_app.tasks.items()):
        if name.startswith("celery."):
            continue
        options = {k: getattr(celery_task, k) for k in CARRIED_OPTIONS if getattr(celery_task, k, None) is not None}
        app.register_task(CeleryTask(celery_task).bind_app(app, name, None, options))
    logger.info("Running the Celery app %r on rqueue: %d task(s)", celery_app.main, len(app.tasks))
    return app


class CeleryTask(Task[..., Any]):
    """An rqueue task that runs a Celery task: its body with a Celery request pushed, its hooks,
    and Celery's Retry/Ignore/Reject read as rqueue's."""

    def __init__(self, celery_task: Any) -> None:
        self.celery_task = celery_task

    def run(self, *args: Any, **kwargs: Any) -> Any:
        from celery import exceptions as celery_exceptions  # noqa: PLC0415 - only with Celery installed
        from celery._state import _task_stack  # noqa: PLC0415 - Celery's current-task stack

        task = self.celery_task
        request = current_request()
        task.push_request(**_celery_context(request, args, kwargs))
        _task_stack.push(task)  # tasks it sends get it as parent, as under a Celery worker
        try:
            return task.run(*args, **kwargs)
        except celery_exceptions.Retry as exc:  # Celery's retry() already sent the new message
            raise Retry(str(exc), exc=exc.exc, when=exc.when) from exc
        except celery_exceptions.Ignore as exc:
            raise Ignore() from exc
        except celery_exceptions.Reject as exc:
            raise Reject(str(exc.reason or ""), requeue=bool(exc.requeue)) from exc
        finally:
            _task_stack.pop()
            task.pop_request()

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        self.celery_task.before_start(task_id, args, kwargs)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        self.celery_task.on_success(retval, task_id, args, kwargs)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self.celery_task.on_failure(exc, task_id, args, kwargs, einfo)

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self.celery_task.on_retry(exc, task_id, args, kwargs, einfo)

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self.celery_task.after_return(status, retval, task_id, args, kwargs, einfo)


def _celery_context(request: Request | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The fields of Celery's request (``celery.app.task.Context``) from rqueue's."""
    if request is None:
        return {"args": list(args), "kwargs": kwargs, "called_directly": True}
    hard, soft = request.timelimit
    return {
        "id": request.id,
        "task": request.task,
        "args": list(args),
        "kwargs": kwargs,
        "retries": request.retries,
        "eta": request.eta,
        "expires": request.expires,
        "is_eager": request.is_eager,
        "called_directly": False,
        # Only the sender's own headers: Celery re-sends these with retry(), over the protocol's.
        "headers": custom_headers(request.headers) or {},
        "delivery_info": request.delivery_info,
        "properties": request.properties,
        "reply_to": request.reply_to,
        "correlation_id": request.correlation_id,
        "root_id": request.root_id,
        "parent_id": request.parent_id,
        "group": request.group,
        "group_index": request.group_index,
        "hostname": request.hostname,
        "origin": request.origin,
        "callbacks": request.callbacks,
        "errbacks": request.errbacks,
        "chain": request.chain,
        "chord": request.chord,
        "timelimit": (hard, soft),
        "shadow": request.shadow,
        "ignore_result": request.ignore_result,
        "utc": True,
    }
