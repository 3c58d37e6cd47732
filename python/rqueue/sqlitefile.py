"""One process's connection to an SQLite file, reopened after a fork; shared by the SQLite broker and backend.

Storage goes through the extension's SQLite connection, never Python's ``sqlite3``: two SQLite
libraries in one process on one file release each other's POSIX locks and can corrupt the file.
"""

from __future__ import annotations

import os

from rqueue import _rqueue

#: Connections inherited over fork, kept referenced so they are never closed in the child.
_INHERITED: list[_rqueue.SqliteBroker] = []


class SqliteFile:
    """The file at ``path`` (absolute), opened on first use in each process."""

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
