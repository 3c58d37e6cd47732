"""Crash injection for the reliability suite (R2): ``RQUEUE_FAILPOINT=<point>[:N]``.

A worker started with it dies by SIGKILL the Nth time (default: the first) one of its processes
reaches ``<point>``; a prefork child kills its supervisor first (and the other children when the
supervisor leads its own process group, as a worker started by a service manager or with
``setsid`` does), so the whole worker is gone at once, as after a power loss, and its leases come
back only when they expire. The variable is read
once, at import; unset, each point costs one comparison. Never set it in production.

Points, in the order a message meets them:

``after_fetch``
    A message was taken from the prefetch buffer (leased by this process), not decoded yet.
``after_decode``
    The message was decoded, its task not started.
``during_run``
    The task's function returned (its side effects are done); its outcome is not recorded yet.
``after_result``
    A batch's results are written, its acks are not. rqueue normally writes results and acks in
    one step (one SQLite transaction; on Redis one pipeline in which the result scripts run before
    the ack script), so on SQLite this state cannot arise, and on Redis only from a crash in the
    middle of sending that pipeline; while this point is armed, the batch is written in two steps
    (backend, then ack) so that the crash falls between them.
``after_ack``
    A batch's results and acks are written.

``N`` counts hits per process: messages for the first three points, batches for the last two.
"""

from __future__ import annotations

import logging
import os
import signal

from rqueue.exceptions import ConfigurationError

logger = logging.getLogger("rqueue.worker")

POINTS = ("after_fetch", "after_decode", "during_run", "after_result", "after_ack")
ENV = "RQUEUE_FAILPOINT"


def _parse(spec: str | None) -> tuple[str | None, int, str | None]:
    """``(point, n, error)`` of a failpoint spec."""
    if not spec:
        return None, 0, None
    point, _, count = spec.partition(":")
    if point not in POINTS:
        return None, 0, f"{ENV}={spec!r}: unknown failpoint {point!r}; choose one of {', '.join(POINTS)}"
    try:
        n = int(count) if count else 1
    except ValueError:
        n = 0
    if n < 1:
        return None, 0, f"{ENV}={spec!r}: the count after ':' must be a whole number >= 1"
    return point, n, None


#: The armed point (None: no failpoint), how many hits remain before the crash, and why the
#: variable was refused (the worker refuses to start then).
ACTIVE, _remaining, ERROR = _parse(os.environ.get(ENV))
#: Set in prefork children: the crash takes the supervisor down too.
kill_supervisor = False


def check() -> None:
    """Raise ConfigurationError when ``RQUEUE_FAILPOINT`` is set to something unknown."""
    if ERROR is not None:
        raise ConfigurationError(ERROR)


def hit(point: str) -> None:
    """Count a hit of ``point``; the Nth hit of the armed point kills this worker."""
    global _remaining
    if point != ACTIVE:
        return
    _remaining -= 1
    if _remaining > 0:
        return
    logger.critical("Failpoint %s reached: process %d crashes now (SIGKILL)", point, os.getpid())
    if kill_supervisor:
        supervisor = os.getppid()
        if os.getpgid(0) == supervisor:  # the worker leads its own process group: all of it at once
            os.killpg(supervisor, signal.SIGKILL)
        os.kill(supervisor, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
