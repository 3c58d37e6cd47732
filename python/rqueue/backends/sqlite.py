"""Results in an SQLite file (by default the broker's own file)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rqueue.backends.base import ResultBackend
from rqueue.exceptions import BackendError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rqueue_results (
    task_id       TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    payload       BLOB NOT NULL,
    expires_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS rqueue_results_expiry ON rqueue_results (expires_at_ms);
"""
# A stored SUCCESS is final: later writes for the same id (a redelivered duplicate) are ignored.
_UPSERT = """
INSERT INTO rqueue_results (task_id, status, content_type, payload, expires_at_ms) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET
    status = excluded.status, content_type = excluded.content_type,
    payload = excluded.payload, expires_at_ms = excluded.expires_at_ms
WHERE rqueue_results.status != 'SUCCESS'
"""
_SWEEP_EVERY_S = 60.0


class SqliteBackend(ResultBackend):
    """Result records keyed by task id, with expiry, in one SQLite file."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.url = f"sqlite:///{path}"
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._next_sweep = 0.0

    @property
    def conn(self) -> sqlite3.Connection:
        """This process's connection (reopened after a fork)."""
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        fresh = not os.path.exists(self.path)
        try:
            if fresh:  # created 0600: results may hold private data
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"cannot open result database {self.path}: {exc}") from exc
        return conn

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        expires = None if self.expires_s is None else int((time.time() + self.expires_s) * 1000)
        rows = [(task_id, status, self.content_type, payload, expires) for task_id, status, payload in items]
        try:
            conn = self.conn
            with _transaction(conn):
                conn.executemany(_UPSERT, rows)
                self._maybe_sweep(conn)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot store results in {self.path}: {exc}") from exc

    def _maybe_sweep(self, conn: sqlite3.Connection) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY_S
            conn.execute(
                "DELETE FROM rqueue_results WHERE expires_at_ms IS NOT NULL AND expires_at_ms < ?",
                (int(time.time() * 1000),),
            )

    def _read(self, task_id: str) -> tuple[bytes, str] | None:
        try:
            row = self.conn.execute(
                "SELECT payload, content_type, expires_at_ms FROM rqueue_results WHERE task_id = ?", (task_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"cannot read results from {self.path}: {exc}") from exc
        if row is None or (row[2] is not None and row[2] < time.time() * 1000):
            return None
        return bytes(row[0]), str(row[1])

    def _delete(self, task_id: str) -> None:
        self.conn.execute("DELETE FROM rqueue_results WHERE task_id = ?", (task_id,))


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
