"""The worker's hook points, in the order a task meets them, and the dispatcher that calls them.

A message that is admitted is ``received``; a received task is either ``revoked`` (revoked,
expired, or terminated while it ran) or ``started``; a started task ends ``succeeded``,
``failed``, ``retried`` or ``rejected`` (``Reject`` raised in it). A message that cannot be run
at all (undecodable, unregistered task) is ``rejected`` without being received. Before any of
them, ``consuming`` is called once in each process that consumes (a prefork child, or the worker
itself). Events,
metrics, canvas callbacks and other executors plug in here; each point is called in the thread
that runs the task, right after the executor decided the outcome and before the result is
written. A hook that raises is logged and never stops the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rqueue.request import Request
    from rqueue.worker.consumer import Consumer
    from rqueue.worker.events import EventSwitch

logger = logging.getLogger("rqueue.worker")

#: The hook points, in written-out order.
HOOK_POINTS = ("consuming", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected")


class WorkerHook:
    """Subclass and override the points you need; every point does nothing by default."""

    def consuming(self, consumer: Consumer) -> None:
        """This process starts consuming (once per process, in its main thread): a hook that
        samples per-process state (``len(consumer.buffer)``: the prefetched messages) starts here."""

    def received(self, request: Request) -> None:
        """A message was decoded and its task is registered here; it may still be revoked."""

    def started(self, request: Request) -> None:
        """The task's function is about to run."""

    def succeeded(self, request: Request, result: Any, runtime_s: float) -> None:
        """The function returned ``result``."""

    def failed(self, request: Request, exc: BaseException, traceback: str, runtime_s: float) -> None:
        """The function raised ``exc`` (and no retry was scheduled)."""

    def retried(self, request: Request, reason: BaseException) -> None:
        """A retry was scheduled (``self.retry()`` or ``autoretry_for``); ``reason`` is why."""

    def revoked(self, request: Request, reason: str) -> None:
        """The task was not run or was stopped: ``revoked``, ``expired`` or ``terminated``."""

    def rejected(self, task_id: str | None, reason: str, requeue: bool) -> None:
        """The message was refused: a reason code (``unregistered``, ``decode_error``, ``rejected``
        ...); ``requeue`` when it went back to its queue rather than aside."""


class Hooks:
    """Calls each installed hook at each point, in installation order; failures are logged.

    ``events`` switches the node's task events (``rqueue.worker.events``): an executor adds their
    hook while the switch is on.
    """

    def __init__(self, hooks: Sequence[WorkerHook] = (), events: EventSwitch | None = None) -> None:
        self.installed = tuple(hooks)
        self.events = events

    def __bool__(self) -> bool:
        return bool(self.installed)

    def _call(self, point: str, *args: Any) -> None:
        for hook in self.installed:
            try:
                getattr(hook, point)(*args)
            except Exception:
                logger.exception("Worker hook %r failed at %r; the worker goes on", hook, point)

    def consuming(self, consumer: Consumer) -> None:
        self._call("consuming", consumer)

    def received(self, request: Request) -> None:
        self._call("received", request)

    def started(self, request: Request) -> None:
        self._call("started", request)

    def succeeded(self, request: Request, result: Any, runtime_s: float) -> None:
        self._call("succeeded", request, result, runtime_s)

    def failed(self, request: Request, exc: BaseException, traceback: str, runtime_s: float) -> None:
        self._call("failed", request, exc, traceback, runtime_s)

    def retried(self, request: Request, reason: BaseException) -> None:
        self._call("retried", request, reason)

    def revoked(self, request: Request, reason: str) -> None:
        self._call("revoked", request, reason)

    def rejected(self, task_id: str | None, reason: str, requeue: bool) -> None:
        self._call("rejected", task_id, reason, requeue)
