"""The embedded SQLite broker: a thin Python face over ``_rqueue.SqliteBroker``; and the table mailbox
(remote control) that the SQL brokers share."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from rqueue import _rqueue
from rqueue.brokers.base import (
    EVENT_EXCHANGE,
    EventChannel,
    Mailbox,
    Malformed,
    NativeBroker,
    NativeConsumer,
    RevocationStore,
)
from rqueue.sqlitefile import SqliteFile

#: The mailbox channel of control commands; replies go to ``reply.<ticket>``.
COMMANDS = "pidbox"
#: Replies are kept this long (a client reads them within its timeout).
REPLY_KEEP_S = 60.0
#: How often the mailbox table is read while waiting (a cheap indexed query).
MAILBOX_POLL_S = 0.02
#: Events are posts on this mailbox channel, kept this long (Celery's ``event_queue_ttl`` is 5 s
#: too): a receiver reads them well within it; nobody has to delete them.
EVENTS_CHANNEL = EVENT_EXCHANGE
EVENTS_KEEP_S = 5.0
#: How often a receiver reads the events channel while waiting.
EVENTS_POLL_S = 0.05


class SqliteBroker(NativeBroker, RevocationStore):
    """Messages in one SQLite file shared by every worker and client on the machine."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._file = SqliteFile(path)

    @property
    def native(self) -> _rqueue.SqliteBroker:
        return self._file.native

    def consumer(
        self,
        queues: Sequence[str],
        owner: str,
        buffer: _rqueue.PrefetchBuffer,
        lease_s: float,
        max_deliveries: int,
        poll_max_ms: int,
    ) -> NativeConsumer:
        thread = _rqueue.SqliteConsumer(
            self.path,
            list(queues),
            owner,
            buffer,
            lease_ms=int(lease_s * 1000),
            max_deliveries=max_deliveries,
            poll_max_ms=poll_max_ms,
        )
        return self.native_consumer(thread)

    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        self.native.revoke(task_ids, expires_at_ms)

    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        return self.native.revoked_since(since_ms)

    def mailbox(self) -> TableMailbox:
        return TableMailbox(lambda: self.native)

    def events(self) -> TableEvents:
        return TableEvents(lambda: self.native)

    def __repr__(self) -> str:
        return f"<SqliteBroker {self.url}>"


class MailboxTable(Protocol):
    """The extension's ``mailbox`` table of an SQL broker (SQLite, PostgreSQL)."""

    def mailbox_post(self, channel: str, body: bytes, expires_at_ms: int) -> int: ...
    def mailbox_read(self, channel: str, after_id: int) -> list[tuple[int, bytes]]: ...
    def mailbox_last_id(self) -> int: ...


class TableMailbox(Mailbox):
    """Remote control in an SQL broker's store: commands and replies are rows of its ``mailbox`` table.

    ``table`` gives this process's connection (called at each use: it changes after a fork).
    """

    def __init__(self, table: Callable[[], MailboxTable]) -> None:
        self.table = table
        self._after = 0

    def reply_address(self) -> dict[str, str]:
        return {"exchange": "reply.celery.pidbox", "routing_key": uuid.uuid4().hex}

    def broadcast(self, command: dict[str, Any], timeout_s: float) -> None:
        expires = int((time.time() + max(timeout_s, 1.0)) * 1000)
        self.table().mailbox_post(COMMANDS, json.dumps(command).encode(), expires)

    def replies(self, reply_to: dict[str, str], ticket: str, timeout_s: float, limit: int | None) -> list[Any]:
        channel = f"reply.{ticket}"
        deadline = time.monotonic() + timeout_s
        after, found = 0, list[Any]()
        while True:
            rows = self.table().mailbox_read(channel, after)
            if rows:
                after = rows[-1][0]
                found.extend(_json_or_none(body) for _, body in rows)
            if (limit is not None and len(found) >= limit) or time.monotonic() >= deadline:
                return found
            time.sleep(MAILBOX_POLL_S)

    def listen(self) -> None:
        self._after = self.table().mailbox_last_id()

    def commands(self, timeout_s: float) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.table().mailbox_read(COMMANDS, self._after)
            if rows:
                self._after = rows[-1][0]
                return [_json_or_none(body) for _, body in rows]
            if time.monotonic() >= deadline:
                return []
            time.sleep(min(MAILBOX_POLL_S * 5, max(0.0, deadline - time.monotonic())))

    def reply(self, reply_to: dict[str, str], ticket: str, body: dict[str, Any]) -> None:
        expires = int((time.time() + REPLY_KEEP_S) * 1000)
        self.table().mailbox_post(f"reply.{ticket}", json.dumps(body).encode(), expires)


class TableEvents(EventChannel):
    """Celery's events in an SQL broker's store: posts on the ``celeryev`` channel of its mailbox
    table, each kept ``EVENTS_KEEP_S`` (expired posts are deleted by the next post).

    ``table`` gives this process's connection (called at each use: it changes after a fork).
    """

    def __init__(self, table: Callable[[], MailboxTable]) -> None:
        self.table = table
        self._after: int | None = None

    def publish(self, routing_key: str, body: bytes, hostname: str) -> None:
        # The routing key is in the body already (each event's ``type``): receivers take them all.
        expires = int((time.time() + EVENTS_KEEP_S) * 1000)
        self.table().mailbox_post(EVENTS_CHANNEL, body, expires)

    def subscribe(self) -> None:
        self._after = self.table().mailbox_last_id()

    def receive(self, timeout_s: float) -> list[bytes | Malformed]:
        if self._after is None:
            self.subscribe()
        assert self._after is not None
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.table().mailbox_read(EVENTS_CHANNEL, self._after)
            if rows:
                self._after = rows[-1][0]
                return [body for _, body in rows]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            time.sleep(min(EVENTS_POLL_S, left))


def _json_or_none(body: bytes) -> Any:
    """A post's JSON, or None when it is not JSON (the control server reports and skips it)."""
    try:
        return json.loads(body)
    except ValueError:
        return None
