"""Every exception rqueue raises, under one root, grouped by area.

The Rust extension raises into these classes too (see ``src-rust/py/src/errors.rs``), so a
caller catches ``rqueue.exceptions.DecodeError`` whether the failure happened in Rust or Python.
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
    """The task was revoked (or expired) before it ran."""


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
