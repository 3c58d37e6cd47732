"""The PostgreSQL broker: a thin Python face over ``_rqueue.PostgresBroker`` (Rust, GIL released).

Messages, leases, dead letters, revocations, remote control and (with a ``postgresql://`` result
backend on the same database and schema) results live in tables of one schema, created on first use.
Each process opens its own connection (reopened after a fork); each worker's consumer thread has
its own, which LISTENs for new messages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rqueue import _rqueue
from rqueue.brokers.base import NativeBroker, NativeConsumer, RevocationStore
from rqueue.brokers.sqlite import TableEvents, TableMailbox
from rqueue.exceptions import ConfigurationError
from rqueue.urls import mask_password, postgres_params

#: Connections inherited over fork, kept referenced so they are never closed in the child (closing
#: would send a Terminate on the parent's socket).
_INHERITED: list[_rqueue.PostgresBroker] = []
#: This process's connection to each ``(url, schema)``: the broker and the result backend of one
#: database share it (one connection per process, not one per role).
_OPEN: dict[tuple[str, str], _rqueue.PostgresBroker] = {}
_OPEN_PID = [os.getpid()]


def _connection(url: str, schema: str) -> _rqueue.PostgresBroker:
    if _OPEN_PID[0] != os.getpid():  # forked: the parent's sockets are not ours
        _INHERITED.extend(_OPEN.values())
        _OPEN.clear()
        _OPEN_PID[0] = os.getpid()
    native = _OPEN.get((url, schema))
    if native is None:
        native = _OPEN[(url, schema)] = _rqueue.PostgresBroker(url, schema=schema)
    return native


class PostgresDatabase:
    """A PostgreSQL database and schema, connected on first use in each process; shared by the
    PostgreSQL broker and result backend."""

    def __init__(self, url: str, setting: str) -> None:
        self.url, self.schema = postgres_params(url, setting)

    @property
    def native(self) -> _rqueue.PostgresBroker:
        """This process's connection (a new one after a fork: a socket must not serve two)."""
        return _connection(self.url, self.schema)

    def same_store(self, url: str) -> bool:
        """Whether ``url`` names this database and schema (spelled the same way)."""
        try:
            return postgres_params(url, "url") == (self.url, self.schema)
        except ConfigurationError:  # not a PostgreSQL URL: another store
            return False


class PostgresBroker(NativeBroker, RevocationStore):
    """Messages in tables of one schema of a PostgreSQL database shared by every worker and client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = PostgresDatabase(url, "broker_url")

    @property
    def native(self) -> _rqueue.PostgresBroker:
        return self._db.native

    def consumer(
        self,
        queues: Sequence[str],
        owner: str,
        buffer: _rqueue.PrefetchBuffer,
        lease_s: float,
        max_deliveries: int,
        poll_max_ms: int,
    ) -> NativeConsumer:
        # Woken by NOTIFY: the poll interval does not apply (the thread's fallback poll is 1 s).
        thread = _rqueue.PostgresConsumer(
            self._db.url,
            list(queues),
            owner,
            buffer,
            lease_ms=int(lease_s * 1000),
            max_deliveries=max_deliveries,
            schema=self._db.schema,
        )
        return self.native_consumer(thread)

    def prepare_consumer(self, queues: Sequence[str], allow_eviction: bool) -> None:
        """Connect now (creating or upgrading the schema): a worker whose database cannot be reached
        says so at start instead of retrying in the background."""
        _ = self.native

    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        self.native.revoke(task_ids, expires_at_ms)

    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        return self.native.revoked_since(since_ms)

    def mailbox(self) -> TableMailbox:
        return TableMailbox(lambda: self.native)

    def events(self) -> TableEvents:
        return TableEvents(lambda: self.native)

    def __repr__(self) -> str:
        return f"<PostgresBroker {mask_password(self.url)}>"
