"""Results in a PostgreSQL database (by default beside a ``postgresql://`` broker's messages).

The records are Celery's (built in ``ResultBackend``), kept in the ``results`` table of the URL's
schema through the extension's connection of this process, the same one the broker uses. With the
broker on the same database and schema, a worker stores a batch's results and acks its messages in
one transaction (``shares_store_with``). The tables and their use are the SQL stores'
(``rqueue.backends.sqltable``).
"""

from __future__ import annotations

from typing import Any

from rqueue import _rqueue
from rqueue.backends.sqltable import SqlTableBackend
from rqueue.brokers.postgres import PostgresDatabase


class PostgresBackend(SqlTableBackend):
    """Result records keyed by task id, with expiry, in a PostgreSQL table; chord joins in its
    ``chords`` tables, each header result counted in one transaction."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(**options)
        self._db = PostgresDatabase(url, "result_backend")
        self.url = url

    @property
    def native(self) -> _rqueue.PostgresBroker:
        return self._db.native

    def shares_store_with(self, broker_url: str) -> bool:
        """True for a PostgreSQL broker on this database and schema: results and acks go in one transaction."""
        return self._db.same_store(broker_url)

    def _results_mark(self) -> int | None:
        # Stores NOTIFY the schema's results channel: a waiting client reads again at once.
        return self.native.results_seen()
