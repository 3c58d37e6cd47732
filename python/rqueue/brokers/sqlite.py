"""The embedded SQLite broker: a thin Python face over ``_rqueue.SqliteBroker``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rqueue import _rqueue
from rqueue.brokers.base import NativeBroker

if TYPE_CHECKING:
    from rqueue.backends.base import ResultBackend

_INHERITED: list[_rqueue.SqliteBroker] = []


class SqliteBroker(NativeBroker):
    """Messages in one SQLite file shared by every worker and client on the machine."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._native: _rqueue.SqliteBroker | None = None
        self._pid = -1

    @property
    def native(self) -> _rqueue.SqliteBroker:
        """The connection of this process (reopened after a fork: SQLite handles must not cross one)."""
        if self._native is None or self._pid != os.getpid():
            if self._native is not None:
                # Never close a connection inherited over fork: closing runs SQLite's cleanup
                # (checkpoint, WAL removal) against the parent's live file. Keep it, unused.
                _INHERITED.append(self._native)
            self._native = _rqueue.SqliteBroker(self.path)
            self._pid = os.getpid()
        return self._native

    def consumer(
        self,
        queues: Sequence[str],
        owner: str,
        buffer: _rqueue.PrefetchBuffer,
        lease_s: float,
        max_deliveries: int,
        poll_max_ms: int,
    ) -> _rqueue.SqliteConsumer:
        return _rqueue.SqliteConsumer(
            self.path,
            list(queues),
            owner,
            buffer,
            lease_ms=int(lease_s * 1000),
            max_deliveries=max_deliveries,
            poll_max_ms=poll_max_ms,
        )

    def complete(self, backend: ResultBackend, results: list[tuple[str, str, bytes]], tags: Sequence[str]) -> None:
        from rqueue.backends.sqlite import SqliteBackend

        if isinstance(backend, SqliteBackend) and backend.path == self.path:
            self.native.complete(backend.rows(results), tags)  # one transaction for both
        else:
            super().complete(backend, results, tags)

    def leased_tags(self, owner: str) -> list[str]:
        return self.native.leased_tags(owner)

    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        # Dead-letter ids are unique across queues here; ids that are not numbers match nothing.
        return self.native.requeue_dead([int(i) for i in ids if i.isdigit()])

    def purge_dead(self, queue: str) -> int:
        return self.native.purge_dead(queue)

    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        self.native.revoke(task_ids, expires_at_ms)

    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        return self.native.revoked_since(since_ms)

    def __repr__(self) -> str:
        return f"<SqliteBroker {self.url}>"
