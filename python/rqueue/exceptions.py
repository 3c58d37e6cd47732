"""Every exception rqueue raises, under one root, grouped by area, with Celery's names beside.

The Rust extension raises into these classes too (see ``src-rust/py/src/errors.rs``), so a
caller catches ``rqueue.exceptions.DecodeError`` whether the failure happened in Rust or Python.
Code written for ``celery.exceptions`` finds the same names here (``CeleryError``,
``ImproperlyConfigured``, ``TaskPredicate`` ... at the end of this module). The standard failures
rqueue stores (revoked, time limits, worker lost ...) carry Celery's ``exc_module`` in results, so
a Celery client reading them raises its own classes (``CELERY_MODULES``).
"""

from __future__ import annotations

import builtins


class RQueueError(Exception):
    """Root of every rqueue exception."""


# -- configuration -------------------------------------------------------------------------


class ConfigurationError(RQueueError, ValueError):
    """A setting, URL, rate string, route or serializer name is invalid."""


class RateLimitError(ConfigurationError):
    """A rate limit is invalid (a bad rate string), or names a task the worker does not know."""


class ScheduleError(ConfigurationError):
    """A periodic task's entry is invalid: a bad crontab field, a negative interval, an unknown task.

    ``entry`` names the ``beat_schedule`` entry (once known) and ``field`` the offending field.
    """

    def __init__(self, message: str, *, entry: str | None = None, field: str | None = None) -> None:
        super().__init__(f"beat_schedule entry {entry!r}: {message}" if entry is not None else message)
        self.message = message
        self.entry = entry
        self.field = field

    def for_entry(self, entry: str) -> ScheduleError:
        """The same error, naming the entry it was found in."""
        return ScheduleError(self.message, entry=entry, field=self.field)


# -- messages and serialization --------------------------------------------------------------


class SerializationError(RQueueError, ValueError):
    """A value cannot be serialized by the chosen serializer."""


class DecodeError(RQueueError, ValueError):
    """A message or payload is malformed."""


class MessageTooLarge(DecodeError):
    """A message exceeds ``task_max_message_size``."""


class ContentDisallowed(RQueueError):
    """A message's content type is not listed in ``accept_content``."""


# -- brokers and backends ----------------------------------------------------------------------


class BrokerError(RQueueError):
    """The broker failed to carry out an operation."""


class BrokerConnectionError(BrokerError, builtins.ConnectionError):
    """The broker cannot be reached."""


class BrokerNoReplyError(BrokerConnectionError, builtins.TimeoutError):
    """A request reached the broker (as far as this process knows) but no reply came in time: it
    may or may not have been carried out."""


class BrokerReplacedError(BrokerError):
    """The broker's storage was replaced under this process (an SQLite file deleted or swapped):
    nothing more is written to it; restart the process to use the new one."""


class BackendError(RQueueError):
    """The result backend failed to carry out an operation."""


# -- tasks and results -------------------------------------------------------------------------


class NotRegistered(RQueueError, KeyError):
    """A message names a task that is not registered with the app."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TimeoutError(RQueueError, builtins.TimeoutError):
    """``AsyncResult.get(timeout=...)`` ran out of time."""


class ResultIgnoredError(RQueueError):
    """``get()`` was called on a task whose result is not stored (``ignore_result``)."""


class TaskRevokedError(RQueueError):
    """The task was revoked (or expired) before it ran, or terminated while it ran."""


class SoftTimeLimitExceeded(RQueueError):
    """Raised inside a running task when its ``soft_time_limit`` has passed.

    The task may catch it to clean up and return; if it does not, the task fails with it.
    ``args[0]`` is the limit in seconds (Celery's class of the same name carries no arguments);
    in the threads pool the exception is raised by class, so the task sees it without.
    """

    def __str__(self) -> str:
        if self.args and _is_number(self.args[0]):
            return f"soft time limit ({self.args[0]:g}s) exceeded"
        return str(self.args[0]) if self.args else "soft time limit exceeded"


class TimeLimitExceeded(RQueueError):
    """A task ran past its hard ``time_limit`` and was stopped (its process killed and replaced).

    Stored as the task's FAILURE; ``args[0]`` is the limit in seconds, as in Celery.
    """

    def __str__(self) -> str:
        if self.args and _is_number(self.args[0]):
            return f"hard time limit ({self.args[0]:g}s) exceeded"
        return str(self.args[0]) if self.args else "hard time limit exceeded"


class TaskTerminated(RQueueError):
    """Raised inside a running task that is being terminated (``revoke(terminate=True)``).

    The worker records the task REVOKED. A task that swallows it is killed after a grace period.
    """


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class WorkerLostError(RQueueError):
    """The worker process died while running the task (Celery's name): a dead letter's error when
    the same message killed its worker ``broker_max_deliveries`` times."""


class RemoteError(RQueueError):
    """A task raised an exception whose class could not be safely rebuilt on this side.

    ``exc_type`` and ``exc_module`` name the original class; the message is kept.
    """

    def __init__(self, exc_type: str, exc_module: str | None, message: str) -> None:
        super().__init__(f"{exc_module + '.' if exc_module else ''}{exc_type}: {message}")
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.message = message


# -- raised from inside tasks to change how the worker treats them ----------------------------


class TaskControl(RQueueError):
    """Base of the exceptions a task raises to steer the worker, not to report a failure."""


class Retry(TaskControl):
    """Raised by ``Task.retry()``: the task was scheduled to run again."""

    def __init__(self, message: str = "", exc: BaseException | None = None, when: float | None = None) -> None:
        super().__init__(message)
        self.exc = exc
        self.when = when


class MaxRetriesExceededError(RQueueError):
    """``Task.retry()`` was called after the task's last allowed retry."""


class Reject(TaskControl):
    """Reject the message: dead-letter it, or put it back when ``requeue=True``."""

    def __init__(self, reason: str = "", requeue: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requeue = requeue


class Ignore(TaskControl):
    """Stop processing the task without recording a state."""


# -- Celery's names ------------------------------------------------------------------------------

#: ``celery.exceptions.CeleryError``: the root of everything raised.
CeleryError = RQueueError
#: Celery's name for a bad configuration.
ImproperlyConfigured = ConfigurationError
#: Celery's base of Retry, Ignore and Reject.
TaskPredicate = TaskControl
#: A message that is not a valid task message.
InvalidTaskError = DecodeError
#: Celery's name for the error of ``revoke(terminate=True)``.
Terminated = TaskTerminated
#: ``celery.exceptions.TimeoutError`` (``get()`` ran out of time).
CeleryTimeoutError = TimeoutError


class TaskError(RQueueError):
    """Task related errors (Celery's base name)."""


class QueueNotFound(ConfigurationError):
    """A task was routed to a queue that is not defined."""


class IncompleteStream(RQueueError):
    """Found the end of a stream of data, but the data is not complete."""


class AlwaysEagerIgnored(UserWarning):
    """Send options that have no meaning in eager mode."""


class ChordError(TaskError):
    """A task that is part of a chord failed."""


class OperationalError(BrokerError):
    """Recoverable failure talking to the broker (Celery's name)."""


class SecurityError(RQueueError):
    """Message signing failed or a signature did not verify."""


class WorkerShutdown(SystemExit):
    """Raise in a task (or signal handler) to ask the worker for a warm shutdown."""


class WorkerTerminate(SystemExit):
    """Raise to ask the worker for a cold shutdown."""


class BackendGetMetaError(BackendError):
    """Reading a task's state from the result backend failed."""


class BackendStoreError(BackendError):
    """Storing a task's state in the result backend failed."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    """Celery's pending deprecation warning."""


class CDeprecationWarning(DeprecationWarning):
    """Celery's deprecation warning."""


class DuplicateNodenameWarning(UserWarning):
    """Several live workers use the same node name (Celery's warning): replies and remote control
    cannot tell them apart."""


#: The module a Celery process finds each of rqueue's standard failures in (``exc_module`` of a
#: stored result), so ``except celery.exceptions.TaskRevokedError`` works on a Celery client.
CELERY_MODULES: dict[type[BaseException], str] = {
    TaskRevokedError: "celery.exceptions",
    NotRegistered: "celery.exceptions",
    MaxRetriesExceededError: "celery.exceptions",
    Reject: "celery.exceptions",
    Retry: "celery.exceptions",
    Ignore: "celery.exceptions",
    ResultIgnoredError: "celery.exceptions",
    ChordError: "celery.exceptions",
    SoftTimeLimitExceeded: "billiard.exceptions",
    TimeLimitExceeded: "billiard.exceptions",
    WorkerLostError: "billiard.exceptions",
    TaskTerminated: "billiard.exceptions",
}
#: Class names that differ between Celery and rqueue.
CELERY_NAMES: dict[type[BaseException], str] = {TaskTerminated: "Terminated"}
