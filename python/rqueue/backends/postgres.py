"""Results in a PostgreSQL database (by default beside a ``postgresql://`` broker's messages).

The records are Celery's (built in ``ResultBackend``), kept in the ``results`` table of the URL's
schema through the extension's connection of this process, the same one the broker uses. With the
broker on the same database and schema, a worker stores a batch's results and acks its messages in
one transaction (``shares_store_with``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rqueue.backends.base import CHORD_DONE_KEPT_S, ChordCount, ResultBackend
from rqueue.brokers.postgres import PostgresDatabase


class PostgresBackend(ResultBackend):
    """Result records keyed by task id, with expiry, in a PostgreSQL table; chord joins in its
    ``chords`` tables, each header result counted in one transaction."""

    supports_chords = True

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

    def _results_mark(self) -> int | None:
        # Stores NOTIFY the schema's results channel: a waiting client reads again at once.
        return self._db.native.results_seen()

    def _wait_results(self, mark: int, seconds: float) -> None:
        self._db.native.wait_results(mark, seconds)

    # -- groups ---------------------------------------------------------------------------------

    def _write_group(self, group_id: str, payload: bytes) -> None:
        self._db.native.store_results(self.rows([(_group_key(group_id), "SUCCESS", payload)]))

    def _read_group(self, group_id: str) -> bytes | None:
        raw = self._read(_group_key(group_id))
        return None if raw is None else raw[0]

    def _delete_group(self, group_id: str) -> None:
        self._delete(_group_key(group_id))

    # -- chords ---------------------------------------------------------------------------------

    def set_chord_size(self, group_id: str, size: int) -> None:
        self._db.native.chord_set_size(group_id, size, self.ttl_ms)

    def add_to_chord(self, group_id: str, n: int) -> None:
        self._db.native.chord_add(group_id, n)

    def count_chord_parts(
        self,
        items: Sequence[tuple[str, str, float, bytes]],
        token: str,
        claim_s: int,
        results: list[tuple[str, str, bytes]],
    ) -> list[ChordCount | None]:
        native = self._db.native
        if results:
            native.store_results(self.rows(results))
        counts = []
        for group_id, member, index, part in items:
            count = native.chord_part_return(group_id, member, index, part, self.ttl_ms, token, claim_s * 1000)
            counts.append(None if count is None else ChordCount(*count))
        return counts

    def chord_renew_claim(self, group_id: str, token: str, claim_s: int) -> bool:
        return self._db.native.chord_renew_claim(group_id, token, claim_s * 1000)

    def chord_parts(self, group_id: str) -> list[bytes]:
        return self._db.native.chord_parts(group_id)

    def chord_done(self, group_id: str, token: str) -> bool:
        return self._db.native.chord_done(group_id, token, CHORD_DONE_KEPT_S * 1000)


def _group_key(group_id: str) -> str:
    """Where a saved group lives in the results table (Celery's key name)."""
    return f"celery-taskset-meta-{group_id}"
