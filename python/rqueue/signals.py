"""Signals with Celery's names and arguments: connect a receiver to act when something happens.

``@task_success.connect`` (any sender) or ``@task_success.connect(sender="proj.tasks.add")``; each
receiver is called as ``receiver(signal=..., sender=..., **arguments)``. A receiver that raises is
logged and the others still run: a signal never stops a worker or a send. Receivers are held
strongly (Celery holds them weakly by default): disconnect what you no longer want called.

Who sends what, and where (the worker's signals in the process that runs the task):

- sending: ``before_task_publish`` and ``after_task_publish`` (sender: the task name);
- in the worker, per task: ``task_received`` (sender: None; ``request``), ``task_prerun``,
  ``task_postrun``, ``task_success``, ``task_failure``, ``task_retry``, ``task_revoked`` (sender: the
  task), ``task_rejected`` and ``task_unknown`` (messages refused before a task ran);
- the worker's life: ``worker_init``, ``worker_process_init`` (in each prefork child, before it
  takes work: the place to open per-process connections), ``worker_ready``,
  ``worker_shutting_down``, ``worker_process_shutdown``, ``worker_shutdown``;
- logging: ``setup_logging`` (a receiver replaces rqueue's logging setup), ``after_setup_logger``,
  ``after_setup_task_logger``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

logger = logging.getLogger("rqueue.signals")

F = TypeVar("F", bound=Callable[..., Any])


class Signal:
    """A named hook point that calls every connected receiver (Celery's ``Signal`` interface)."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = providing_args
        #: ``(key, receiver, sender)``; a tuple swapped whole on change, so sending needs no lock.
        self.receivers: tuple[tuple[object, Callable[..., Any], object], ...] = ()
        self._lock = threading.Lock()

    @overload
    def connect(self, receiver: F, /) -> F: ...

    @overload
    def connect(
        self, receiver: None = None, /, *, sender: object = None, weak: bool = True, dispatch_uid: object = None
    ) -> Callable[[F], F]: ...

    def connect(
        self,
        receiver: Callable[..., Any] | None = None,
        /,
        *,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: object = None,
    ) -> Any:
        """Connect ``receiver`` (also as ``@signal.connect`` or ``@signal.connect(sender=...)``).

        Only sends from ``sender`` reach it when one is given (a task, or a task's name for the
        publish signals). Connecting the same receiver (or ``dispatch_uid``) twice keeps one.
        """

        def add(fun: F) -> F:
            if not callable(fun):
                raise TypeError(f"signal {self.name}: a receiver must be callable, got {fun!r}")
            key = dispatch_uid if dispatch_uid is not None else (_identity(fun), _identity(sender))
            with self._lock:
                if all(existing != key for existing, _, _ in self.receivers):
                    self.receivers = (*self.receivers, (key, fun, sender))
            return fun

        if receiver is not None:
            return add(receiver)
        return add

    def disconnect(
        self, receiver: Callable[..., Any] | None = None, sender: object = None, dispatch_uid: object = None
    ) -> bool:
        """Disconnect a receiver; True when one was connected."""
        key = dispatch_uid if dispatch_uid is not None else (_identity(receiver), _identity(sender))
        with self._lock:
            kept = tuple(r for r in self.receivers if r[0] != key)
            removed = len(kept) != len(self.receivers)
            self.receivers = kept
        return removed

    def send(self, sender: object, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call the receivers for ``sender``; returns ``(receiver, response)`` pairs, the response of a
        receiver that raised being the exception (which is logged)."""
        responses: list[tuple[Callable[..., Any], Any]] = []
        for _key, receiver, wanted in self.receivers:
            if wanted is not None and not _matches(wanted, sender):
                continue
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                logger.exception("Signal %s: receiver %r raised; going on", self.name, receiver)
                responses.append((receiver, exc))
        return responses

    send_robust = send

    def __bool__(self) -> bool:
        # Hot paths test ``signal.receivers`` instead: an attribute, not a call.
        return bool(self.receivers)

    def __repr__(self) -> str:
        return f"<Signal: {self.name} ({len(self.receivers)} receivers)>"


def _identity(obj: object) -> object:
    # Bound methods are made anew on each attribute access: identify them by their parts.
    self = getattr(obj, "__self__", None)
    func = getattr(obj, "__func__", None)
    if self is not None and func is not None:
        return (id(self), id(func))
    return id(obj)


def _matches(wanted: object, sender: object) -> bool:
    if wanted is sender:
        return True
    if isinstance(wanted, str):  # a task name stands for the task (Celery's publish senders are names)
        return wanted == sender or wanted == getattr(sender, "name", None)
    return False


# -- sending tasks ---------------------------------------------------------------------------------
before_task_publish = Signal(
    "before_task_publish",
    ("body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"),
)
after_task_publish = Signal("after_task_publish", ("body", "exchange", "routing_key", "headers"))

# -- running tasks (worker) ------------------------------------------------------------------------
task_received = Signal("task_received", ("request",))
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
task_success = Signal("task_success", ("result",))
task_failure = Signal("task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo"))
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_rejected = Signal("task_rejected", ("message", "exc"))
task_unknown = Signal("task_unknown", ("name", "id", "message", "exc"))

# -- the worker's life -----------------------------------------------------------------------------
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_ready = Signal("worker_ready")
worker_shutting_down = Signal("worker_shutting_down", ("sig", "how", "exitcode"))
worker_process_shutdown = Signal("worker_process_shutdown", ("pid", "exitcode"))
worker_shutdown = Signal("worker_shutdown")

# -- logging ---------------------------------------------------------------------------------------
setup_logging = Signal("setup_logging", ("loglevel", "logfile", "format", "colorize"))
after_setup_logger = Signal("after_setup_logger", ("logger", "loglevel", "logfile", "format", "colorize"))
after_setup_task_logger = Signal("after_setup_task_logger", ("logger", "loglevel", "logfile", "format", "colorize"))

# -- the app ---------------------------------------------------------------------------------------
import_modules = Signal("import_modules")

__all__ = [
    "Signal",
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "before_task_publish",
    "import_modules",
    "setup_logging",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]
