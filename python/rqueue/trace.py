"""What happens around one run of a task, in Celery's order: the task class's hooks and the task
signals. The worker's executor and eager mode (``task.apply()``, ``task_always_eager``, run here
by ``run_eagerly``) both call these, so a task's hooks see the same calls in a test as in
production. Eager mode runs a task as a worker would: its arguments make the round trip through
the task's serializer first (a test fails on what a worker would refuse), and a retry runs again at
once instead of after its countdown.

Order for one run: ``task_prerun`` → ``before_start`` → the task → then by outcome
``on_success`` + ``task_success`` / ``on_failure`` + ``task_failure`` / ``on_retry`` +
``task_retry``, then ``after_return`` (not for ignored or rejected runs) → ``task_postrun``.
A hook or receiver that raises is logged; the task's outcome stands.
"""

from __future__ import annotations

import contextvars
import logging
import socket
import traceback
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import CoroutineType
from typing import TYPE_CHECKING, Any, TypeVar

from rqueue import _rqueue, canvas, serialization, signals, states
from rqueue.backends.base import ResultRecord
from rqueue.exceptions import Ignore, Reject, Retry
from rqueue.request import ExceptionInfo, Request, current_request, pop_request, push_request
from rqueue.result import EagerResult

if TYPE_CHECKING:
    from rqueue.task import Task

R = TypeVar("R")

logger = logging.getLogger("rqueue.worker")


def _hook(task: Task[Any, Any], name: str, *args: Any) -> None:
    try:
        getattr(task, name)(*args)
    except Exception:
        logger.exception("Task %s: its %s() hook raised; the task's outcome stands", task.name, name)


def prerun(task: Task[Any, Any], request: Request) -> None:
    if signals.task_prerun.receivers:
        signals.task_prerun.send(sender=task, task_id=request.id, task=task, args=request.args, kwargs=request.kwargs)


def succeeded(task: Task[Any, Any], request: Request, retval: Any) -> None:
    if "on_success" in task.hooked:
        _hook(task, "on_success", retval, request.id, request.args, request.kwargs)
    if signals.task_success.receivers:
        signals.task_success.send(sender=task, result=retval)
    _after_return(task, request, states.SUCCESS, retval)


def failed(task: Task[Any, Any], request: Request, exc: BaseException, traceback: str | None) -> None:
    einfo = ExceptionInfo(exc, traceback)
    if "on_failure" in task.hooked:
        _hook(task, "on_failure", exc, request.id, request.args, request.kwargs, einfo)
    if signals.task_failure.receivers:
        signals.task_failure.send(
            sender=task,
            task_id=request.id,
            exception=exc,
            args=request.args,
            kwargs=request.kwargs,
            traceback=einfo.traceback,
            einfo=einfo,
        )
    _after_return(task, request, states.FAILURE, exc)


def retried(task: Task[Any, Any], request: Request, retry: BaseException, reason: BaseException) -> None:
    """``retry`` is the ``Retry`` raised; ``reason`` the exception that caused it (or the ``Retry``)."""
    einfo = ExceptionInfo(reason, None)
    if "on_retry" in task.hooked:
        _hook(task, "on_retry", reason, request.id, request.args, request.kwargs, einfo)
    if signals.task_retry.receivers:
        signals.task_retry.send(sender=task, request=request, reason=retry, einfo=einfo)
    _after_return(task, request, states.RETRY, reason)


def _after_return(task: Task[Any, Any], request: Request, state: str, retval: Any) -> None:
    if "after_return" in task.hooked:
        _hook(task, "after_return", state, retval, request.id, request.args, request.kwargs, None)


def postrun(task: Task[Any, Any], request: Request, retval: Any, state: str) -> None:
    if signals.task_postrun.receivers:
        signals.task_postrun.send(
            sender=task,
            task_id=request.id,
            task=task,
            args=request.args,
            kwargs=request.kwargs,
            retval=retval,
            state=state,
        )


def revoked(task: Task[Any, Any] | None, request: Request, reason: str) -> None:
    if signals.task_revoked.receivers:
        signals.task_revoked.send(
            sender=task,
            request=request,
            terminated=reason == "terminated",
            signum=None,
            expired=reason == "expired",
        )


# -- eager mode ---------------------------------------------------------------------------------------


def run_eagerly(task: Task[Any, R], args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]) -> EagerResult[R]:
    """Run ``task`` in this thread as a worker would, retries included; see the module docstring."""
    app = task.app
    task_id = options.get("task_id") or _rqueue.new_task_id()
    args, kwargs = _round_trip(args, kwargs, options.get("serializer") or task.option("serializer"))
    throw = options.get("throw")
    if throw is None:
        throw = app.conf.task_eager_propagates
    parent = current_request()
    root_id = options.get("root_id") or (parent.root_id or parent.id if parent else task_id)
    parent_id = options.get("parent_id") or (parent.id if parent else None)
    retries = int(options.get("retries", 0))
    while True:
        request = Request(
            id=task_id,
            task=task.name,
            args=args,
            kwargs=kwargs,
            retries=retries,
            root_id=root_id,
            parent_id=parent_id,
            hostname=socket.gethostname(),
            is_eager=True,
            delivery_info={"is_eager": True, "priority": options.get("priority")},
            headers=dict(options.get("headers") or {}),
            callbacks=canvas.links_of(options.get("link")),
            errbacks=canvas.links_of(options.get("link_error")),
            chain=canvas.links_of(options.get("chain")),
        )
        state, value, tb = _run_once(task, request)
        if state != states.RETRY:
            break
        retries += 1
    # Links are applied as a worker would (sent, or run here too under task_always_eager).
    if state == states.SUCCESS and (request.callbacks or request.chain):
        canvas.apply_success_links(app, request, value)
    elif state == states.FAILURE and request.errbacks:
        canvas.apply_error_links(app, request, value, tb)
    if task.option("store_eager_result") and not task.option("ignore_result"):
        stored = serialization.exception_to_meta(value) if isinstance(value, BaseException) else value
        app.backend.store(ResultRecord(task_id, state, stored, tb))
    if throw and isinstance(value, BaseException):
        raise value
    return EagerResult(task_id, value, state, tb, task.name)


def _run_once(task: Task[Any, Any], request: Request) -> tuple[str, Any, str | None]:
    """One run with the hooks and signals around it: ``(state, value or exception, traceback)``."""
    push_request(request)
    prerun(task, request)
    state, value, tb = states.SUCCESS, None, None
    try:
        if "before_start" in task.hooked:
            task.before_start(request.id, request.args, request.kwargs)
        value = task.entry(*request.args, **request.kwargs)
        if type(value) is CoroutineType:  # an ``async def`` task: awaited here, as a worker would
            value = _await_eagerly(value)
    except Retry as retry:
        state, value = states.RETRY, retry
        retried(task, request, retry, retry.exc if retry.exc is not None else retry)
    except Ignore:
        state = states.IGNORED
    except Reject as rej:
        state, value = states.FAILURE, rej
        failed(task, request, rej, None)
    except Exception as exc:
        retry_scheduled = task.auto_retry(exc)
        if retry_scheduled is not None:
            state, value = states.RETRY, retry_scheduled
            retried(task, request, retry_scheduled, exc)
        else:
            state, value, tb = states.FAILURE, exc, traceback.format_exc()
            failed(task, request, exc, tb)
    else:
        succeeded(task, request, value)
    finally:
        pop_request()
    postrun(task, request, value, state)
    return state, value, tb


def _await_eagerly(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an eager ``async def`` task's coroutine to completion, in this thread's context (its
    request): on a new event loop here, or, when this thread already runs one (eager mode used from
    async code), on a loop of its own in another thread while this one waits, as for a sync task."""
    import asyncio  # noqa: PLC0415 - only eager async tasks need it

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, "rqueue-eager") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()


def _round_trip(args: list[Any], kwargs: dict[str, Any], serializer: str) -> tuple[list[Any], dict[str, Any]]:
    """The arguments as a worker would receive them (tuples become lists, as on the wire); raises
    what sending would raise for a value the serializer cannot carry."""
    content_type = serialization.content_type(serializer)
    data = serialization.dumps([args, kwargs], serializer)
    decoded = serialization.loads(data, content_type, [content_type])
    return list(decoded[0]), dict(decoded[1])
