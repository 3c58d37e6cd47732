"""Remote control of workers through the broker: ``app.control`` and ``app.control.inspect()``.

Commands are broadcast (every live worker sees them, or those named in ``destination``);
replies are ``{hostname: reply}`` dicts, collected for ``timeout`` seconds. On Redis this is
kombu's pidbox, so Celery's and rqueue's clients and workers reach each other.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rqueue.brokers.base import RevocationStore, capability

if TYPE_CHECKING:
    from rqueue.app import App

#: Revocations are kept at least this long (a task sent with a long countdown is still skipped).
MIN_REVOKE_KEEP_S = 3 * 3600
#: How long a call waits for replies by default.
DEFAULT_TIMEOUT_S = 1.0

Replies = list[dict[str, Any]]


def duplicate_nodename_message(names: Sequence[str]) -> str:
    """Celery's ``DuplicateNodenameWarning`` text for ``names`` answered by more than one node."""
    label = "name" if len(names) == 1 else "names"
    return (
        f"Received multiple replies from node {label}: {', '.join(sorted(names))}. "
        "Please make sure you give each node a unique nodename using the rqueue worker `-n` option."
    )


def revocation_expiry_ms(conf: Any) -> int:
    """Until when a revocation made now is kept (epoch ms): ``result_expires``, at least three hours."""
    expires = conf.result_expires
    keep_s = max(float(getattr(expires, "total_seconds", lambda: expires)() or 0), MIN_REVOKE_KEEP_S)
    return int((time.time() + keep_s) * 1000)


class Control:
    """``app.control``: commands that live workers carry out."""

    def __init__(self, app: App) -> None:
        self.app = app

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        *,
        destination: Sequence[str] | None = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        limit: int | None = None,
    ) -> Replies | None:
        """Send ``command`` to the workers; with ``reply``, the ``{hostname: reply}`` replies.

        Replies are collected for ``timeout`` seconds, or until one came from each ``destination``
        (or ``limit`` came).
        """
        if isinstance(destination, str):
            destination = [destination]
        mailbox = self.app.broker.mailbox()
        message: dict[str, Any] = {
            "method": command,
            "arguments": arguments or {},
            "destination": list(destination) if destination else None,
            "pattern": None,
            "matcher": None,
        }
        if not reply:
            mailbox.broadcast(message, timeout)
            return None
        ticket = str(uuid.uuid4())
        reply_to = mailbox.reply_address()
        try:
            message.update(ticket=ticket, reply_to=reply_to)
            mailbox.broadcast(message, timeout)
            wanted = limit if limit is not None else (len(destination) if destination else None)
            return [r for r in mailbox.replies(reply_to, ticket, timeout, wanted) if isinstance(r, dict)]
        finally:
            mailbox.close_replies(reply_to)

    def inspect(self, destination: Sequence[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> Inspect:
        """Queries about what workers run and hold (``inspect().active()`` ...)."""
        return Inspect(self, destination, timeout)

    def ping(self, destination: Sequence[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> Replies:
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout) or []

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float | None,
        destination: Sequence[str] | None = None,
        reply: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Replies | None:
        """Set a task's rate limit on the workers, at once (``"10/m"``; None or 0 removes it)."""
        arguments = {"task_name": task_name, "rate_limit": rate_limit}
        return self.broadcast("rate_limit", arguments, destination=destination, reply=reply, timeout=timeout)

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Sequence[str] | None = None,
        reply: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Replies | None:
        """Set a task's soft and hard time limits (seconds) on the workers."""
        arguments = {"task_name": task_name, "soft": soft, "hard": hard}
        return self.broadcast("time_limit", arguments, destination=destination, reply=reply, timeout=timeout)

    def revoke(
        self,
        task_id: str | Iterable[str],
        terminate: bool = False,
        signal: str = "SIGTERM",
        destination: Sequence[str] | None = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Replies | None:
        """Revoke tasks: a worker that has not started them records them REVOKED instead of running them.

        The ids are stored in the broker when it keeps revocations (SQLite, Redis: for
        ``result_expires``, at least three hours), so a worker that is offline now, or restarts,
        still skips them; live workers are told at once (and keep them across restarts with
        ``--statedb``).
        With ``terminate``, a prefork worker running one stops it and records it REVOKED: with
        ``signal="SIGKILL"`` its child is killed at once; with any other signal ``TaskTerminated``
        is raised in the task, and its child is killed if it has not stopped 5 s later.
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        store = capability(self.app.broker, RevocationStore)
        if store is not None:  # else only live workers hear of it (and keep it with --statedb)
            store.revoke(ids, revocation_expiry_ms(self.app.conf))
        arguments = {"task_id": ids, "terminate": terminate, "signal": signal}
        return self.broadcast("revoke", arguments, destination=destination, reply=reply, timeout=timeout)

    def shutdown(
        self, destination: Sequence[str] | None = None, reply: bool = False, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Replies | None:
        """Warm shutdown: workers finish their running tasks and stop."""
        return self.broadcast("shutdown", destination=destination, reply=reply, timeout=timeout)

    def add_consumer(
        self,
        queue: str,
        destination: Sequence[str] | None = None,
        reply: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Replies | None:
        """Make workers consume ``queue`` as well."""
        return self.broadcast("add_consumer", {"queue": queue}, destination=destination, reply=reply, timeout=timeout)

    def cancel_consumer(
        self,
        queue: str,
        destination: Sequence[str] | None = None,
        reply: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Replies | None:
        """Make workers stop consuming ``queue``."""
        return self.broadcast(
            "cancel_consumer", {"queue": queue}, destination=destination, reply=reply, timeout=timeout
        )

    def enable_events(
        self, destination: Sequence[str] | None = None, reply: bool = False, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Replies | None:
        """Make workers send task events from now on (``rqueue.events``; heartbeats are always sent)."""
        return self.broadcast("enable_events", destination=destination, reply=reply, timeout=timeout)

    def disable_events(
        self, destination: Sequence[str] | None = None, reply: bool = False, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Replies | None:
        """Make workers stop sending task events."""
        return self.broadcast("disable_events", destination=destination, reply=reply, timeout=timeout)

    def heartbeat(
        self, destination: Sequence[str] | None = None, reply: bool = False, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Replies | None:
        """Make workers send a ``worker-heartbeat`` event now."""
        return self.broadcast("heartbeat", destination=destination, reply=reply, timeout=timeout)


class Inspect:
    """Queries answered by every live worker (or those in ``destination``).

    Each returns ``{hostname: reply}``, or None when no worker replied within the timeout.
    """

    def __init__(self, control: Control, destination: Sequence[str] | None, timeout: float) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _request(self, method: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(
            method, arguments, destination=self.destination, reply=True, timeout=self.timeout
        )
        merged: dict[str, Any] = {}
        for reply in replies or []:
            merged.update(reply)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._request("ping")

    def active(self) -> dict[str, Any] | None:
        """Tasks running now: id, name, args, kwargs, time_start, worker_pid."""
        return self._request("active")

    def reserved(self) -> dict[str, Any] | None:
        """Tasks prefetched by workers and not started yet."""
        return self._request("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        """Tasks a worker holds until a time (rate-limited ones waiting for their turn)."""
        return self._request("scheduled")

    def registered(self) -> dict[str, Any] | None:
        return self._request("registered")

    def stats(self) -> dict[str, Any] | None:
        """pid, uptime, tasks processed per name, pool, prefetch, broker (password masked), RSS."""
        return self._request("stats")

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        """Workers' settings (explicit ones, or all ``with_defaults``), passwords masked."""
        return self._request("conf", with_defaults=with_defaults)
