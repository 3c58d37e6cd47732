"""Loggers for task code (``get_task_logger(__name__)`` adds the running task's name and id to
every line), and the escaping of untrusted text in logs and terminal output: a task id or name
comes from whoever sent the message, and a newline or an ANSI escape in it must not forge lines."""

from __future__ import annotations

import io
import logging
import sys
import threading
from typing import Any

from rqueue.request import current_request

#: The parent of every task logger; the worker's logging setup configures it like the root logger.
TASK_LOGGER_NAME = "rqueue.task"


def printable(text: str) -> str:
    """``text`` with every non-printable character (newlines, ANSI escapes, other controls) written
    as its Python escape: one line, exactly as received, harmless to a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Verbatim(str):
    """Text logged as it is, several lines included (a traceback): exempt from ``EscapeUntrusted``."""

    __slots__ = ()


class EscapeUntrusted(logging.Filter):
    """A handler filter: string arguments of a log record are made ``printable`` (unless marked
    ``Verbatim``), so a message's fields cannot write forged lines into the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(type(a) is str and not a.isprintable() for a in args):
            record.args = tuple(printable(a) if type(a) is str else a for a in args)
        return True


class TaskLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes each message with ``task_name[task_id]`` of the task running in this thread (the
    fields ``task_name`` and ``task_id`` are also on the record, for formats that use them)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        request = current_request()
        name, task_id = (request.task, request.id) if request is not None else ("???", "???")
        extra = kwargs.setdefault("extra", {})
        extra.setdefault("task_name", name)
        extra.setdefault("task_id", task_id)
        return f"{printable(name)}[{printable(task_id)}]: {msg}", kwargs


def get_task_logger(name: str) -> TaskLogger:
    """A logger for a tasks module, child of ``rqueue.task``: every line names the running task and
    its id (``tasks.add[2f1c...]: Adding 4 + 4``); outside a task they read ``???``."""
    if name in (TASK_LOGGER_NAME, "celery.task"):
        raise ValueError(f"logger name {name!r} is reserved; use get_task_logger(__name__)")
    return TaskLogger(logging.getLogger(f"{TASK_LOGGER_NAME}.{name}"), {})


def get_logger(name: str) -> logging.Logger:
    """A plain logger (Celery's ``celery.utils.log.get_logger``)."""
    return logging.getLogger(name)


#: The logger ``print()`` output of tasks goes to once redirected (Celery's ``celery.redirected``).
REDIRECTED_LOGGER_NAME = "rqueue.redirected"


class LoggingProxy(io.TextIOBase):
    """A text stream that logs each line written to it (``sys.stdout``/``sys.stderr`` of a worker
    that logs to a file, so a task's ``print()`` lands in the log instead of being lost)."""

    _inside = threading.local()

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self.logger, self.level = logger, level
        self._partial = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if getattr(self._inside, "on", False):  # logging itself wrote here (an error report): drop it
            return len(text)
        self._inside.on = True
        try:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                if line.strip():
                    self.logger.log(self.level, "%s", line.rstrip())
        finally:
            self._inside.on = False
        return len(text)

    def flush(self) -> None:
        if self._partial:
            partial, self._partial = self._partial, ""
            self.write(partial + "\n")


def redirect_stdouts(level_name: str) -> None:
    """Send ``sys.stdout`` and ``sys.stderr`` to the log at ``level_name`` (``worker_redirect_stdouts``)."""
    level = logging.getLevelName(str(level_name).upper())
    if not isinstance(level, int):
        raise ValueError(f"worker_redirect_stdouts_level: unknown log level {level_name!r}")
    logger = logging.getLogger(REDIRECTED_LOGGER_NAME)
    sys.stdout = LoggingProxy(logger, level)
    sys.stderr = LoggingProxy(logger, level)
