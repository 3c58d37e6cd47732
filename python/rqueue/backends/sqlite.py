"""Results in an SQLite file (by default the broker's own file).

The records are Celery's (built in ``ResultBackend``); storage goes through the extension's
SQLite connection, never Python's ``sqlite3``: two SQLite libraries in one process on one file
release each other's POSIX locks and can corrupt the file.
"""

from __future__ import annotations

import time
from typing import Any

from rqueue.backends.base import ResultBackend
from rqueue.brokers.sqlite import SqliteBroker


class SqliteBackend(ResultBackend):
    """Result records keyed by task id, with expiry, in one SQLite file."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.url = f"sqlite:///{path}"
        self._store = SqliteBroker(path)  # the same file handle logic as the broker, fork-safe

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        self._store.native.store_results(self.rows(items))

    def rows(self, items: list[tuple[str, str, bytes]]) -> list[tuple[str, str, str, bytes, int | None]]:
        """Rows of the ``results`` table for encoded records (with their expiry)."""
        expires = None if self.expires_s is None else int((time.time() + self.expires_s) * 1000)
        return [(task_id, status, self.content_type, payload, expires) for task_id, status, payload in items]

    def _read(self, task_id: str) -> tuple[bytes, str] | None:
        row = self._store.native.read_result(task_id)
        return None if row is None else (row[1], row[0])

    def _delete(self, task_id: str) -> None:
        self._store.native.delete_result(task_id)
