"""Results in a PostgreSQL database (by default beside a ``postgresql://`` broker's messages).

The records are Celery's (built in ``ResultBackend``), kept in the ``results`` table of the URL's
schema through the extension's connection of this process, the same one the broker uses. With the
broker on the same database and schema, a worker stores a batch's results and acks its messages in
one transaction (``shares_store_with``).
"""

from __future__ import annotations

from typing import Any

from rqueue.backends.base import ResultBackend
from rqueue.brokers.postgres import PostgresDatabase


class PostgresBackend(ResultBackend):
    """Result records keyed by task id, with expiry, in a PostgreSQL table."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(**options)
        self._db = PostgresDatabase(url, "result_backend")
        self.url = url

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        self._db.native.store_results(self.rows(items))

    def shares_store_with(self, broker_url: str) -> bool:
        """True for a PostgreSQL broker on this database and schema: results and acks go in one transaction."""
        return self._db.same_store(broker_url)

    def _read(self, task_id: str) -> tuple[bytes, str] | None:
        row = self._db.native.read_result(task_id)
        return None if row is None else (row[1], row[0])

    def _delete(self, task_id: str) -> None:
        self._db.native.delete_result(task_id)

    # -- groups ---------------------------------------------------------------------------------

    def _write_group(self, group_id: str, payload: bytes) -> None:
        self._db.native.store_results(self.rows([(_group_key(group_id), "SUCCESS", payload)]))

    def _read_group(self, group_id: str) -> bytes | None:
        raw = self._read(_group_key(group_id))
        return None if raw is None else raw[0]

    def _delete_group(self, group_id: str) -> None:
        self._delete(_group_key(group_id))


def _group_key(group_id: str) -> str:
    """Where a saved group lives in the results table (Celery's key name)."""
    return f"celery-taskset-meta-{group_id}"
