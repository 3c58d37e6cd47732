"""Results in an SQLite file (by default the broker's own file).

The records are Celery's (built in ``ResultBackend``); storage goes through the extension's
SQLite connection of this process (``rqueue.sqlitefile``), the same one the broker uses. The tables
and their use are the SQL stores' (``rqueue.backends.sqltable``).
"""

from __future__ import annotations

from typing import Any

from rqueue import _rqueue
from rqueue.backends.sqltable import SqlTableBackend
from rqueue.sqlitefile import SqliteFile
from rqueue.urls import sqlite_path


class SqliteBackend(SqlTableBackend):
    """Result records keyed by task id, with expiry, in one SQLite file; chord joins in its
    ``chords`` tables, each header result counted in one transaction."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.url = f"sqlite:///{path}"
        self._file = SqliteFile(path)

    @property
    def native(self) -> _rqueue.SqliteBroker:
        return self._file.native

    def shares_store_with(self, broker_url: str) -> bool:
        """True for an ``sqlite://`` broker on this file: results and acks go in one transaction."""
        return broker_url.startswith("sqlite://") and sqlite_path(broker_url, "broker_url") == self.path

    def _results_mark(self) -> int | None:
        # Commits ring the file's bells where there are bells (Linux); elsewhere clients poll.
        native = self.native
        return native.results_seen() if native.has_bells else None
