"""What the SQL result stores (SQLite, PostgreSQL) share: result rows, saved groups and chord joins in
tables the extension's broker connection of this process writes, by the same method names on both.

A subclass says where its connection is (``native``) and how a waiting client is woken
(``_results_mark``); everything else is here once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from rqueue import _rqueue
from rqueue.backends.base import CHORD_DONE_KEPT_S, ChordCount, ResultBackend


class SqlTableBackend(ResultBackend):
    """Result records keyed by task id, with expiry, in a ``results`` table; chord joins in its
    ``chords`` tables, each header result counted in one transaction."""

    supports_chords = True

    @property
    @abstractmethod
    def native(self) -> _rqueue.SqliteBroker | _rqueue.PostgresBroker:
        """This process's connection to the store (shared with a broker on the same store)."""

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        self.native.store_results(self.rows(items))

    def _read(self, task_id: str) -> tuple[bytes, str] | None:
        row = self.native.read_result(task_id)
        return None if row is None else (row[1], row[0])

    def _delete(self, task_id: str) -> None:
        self.native.delete_result(task_id)

    def _wait_results(self, mark: int, seconds: float) -> None:
        self.native.wait_results(mark, seconds)

    # -- groups ---------------------------------------------------------------------------------

    def _write_group(self, group_id: str, payload: bytes) -> None:
        self.native.store_results(self.rows([(_group_key(group_id), "SUCCESS", payload)]))

    def _read_group(self, group_id: str) -> bytes | None:
        raw = self._read(_group_key(group_id))
        return None if raw is None else raw[0]

    def _delete_group(self, group_id: str) -> None:
        self._delete(_group_key(group_id))

    # -- chords ---------------------------------------------------------------------------------

    def set_chord_size(self, group_id: str, size: int) -> None:
        self.native.chord_set_size(group_id, size, self.ttl_ms)

    def add_to_chord(self, group_id: str, n: int) -> None:
        self.native.chord_add(group_id, n)

    def count_chord_parts(
        self,
        items: Sequence[tuple[str, str, float, bytes]],
        token: str,
        claim_s: int,
        results: list[tuple[str, str, bytes]],
    ) -> list[ChordCount | None]:
        native = self.native
        if results:
            native.store_results(self.rows(results))
        ttl_ms = self.ttl_ms
        counts = []
        for group_id, member, index, part in items:
            count = native.chord_part_return(group_id, member, index, part, ttl_ms, token, claim_s * 1000)
            counts.append(None if count is None else ChordCount(*count))
        return counts

    def chord_renew_claim(self, group_id: str, token: str, claim_s: int) -> bool:
        return self.native.chord_renew_claim(group_id, token, claim_s * 1000)

    def chord_parts(self, group_id: str) -> list[bytes]:
        return self.native.chord_parts(group_id)

    def chord_done(self, group_id: str, token: str) -> bool:
        return self.native.chord_done(group_id, token, CHORD_DONE_KEPT_S * 1000)


def _group_key(group_id: str) -> str:
    """Where a saved group lives in the results table (Celery's key name)."""
    return f"celery-taskset-meta-{group_id}"
