"""Results in an SQLite file (by default the broker's own file).

The records are Celery's (built in ``ResultBackend``); storage goes through the extension's
SQLite connection of this process (``rqueue.sqlitefile``), the same one the broker uses.
"""

from __future__ import annotations

from typing import Any

from rqueue.backends.base import ResultBackend
from rqueue.sqlitefile import SqliteFile
from rqueue.urls import sqlite_path


class SqliteBackend(ResultBackend):
    """Result records keyed by task id, with expiry, in one SQLite file."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.url = f"sqlite:///{path}"
        self._file = SqliteFile(path)

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        self._file.native.store_results(self.rows(items))

    def shares_store_with(self, broker_url: str) -> bool:
        """True for an ``sqlite://`` broker on this file: results and acks go in one transaction."""
        return broker_url.startswith("sqlite://") and sqlite_path(broker_url, "broker_url") == self.path

    def _read(self, task_id: str) -> tuple[bytes, str] | None:
        row = self._file.native.read_result(task_id)
        return None if row is None else (row[1], row[0])

    def _delete(self, task_id: str) -> None:
        self._file.native.delete_result(task_id)
