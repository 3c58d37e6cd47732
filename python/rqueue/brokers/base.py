"""The broker interface the app and the worker use. Transports implement it in Rust."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rqueue._rqueue import Delivery, PrefetchBuffer

if TYPE_CHECKING:
    from rqueue.backends.base import ResultBackend


class Consumer(Protocol):
    """A transport thread that leases messages into a PrefetchBuffer (see ``_rqueue.SqliteConsumer``)."""

    def start(self) -> None: ...
    def stop(self) -> list[Delivery]: ...
    def set_queues(self, queues: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class DeadLetter:
    """A message moved aside, with why: ``reason`` is a code (``unregistered``, ``decode_error`` ...)."""

    id: str
    queue: str
    reason: str
    error: str | None
    deliveries: int
    dead_at_ms: int
    payload: bytes


class Mailbox(ABC):
    """Remote control over the broker, in kombu's pidbox model.

    A client broadcasts a command (a dict: ``method``, ``arguments``, ``destination``, ``pattern``,
    ``matcher``, ``ticket``, ``reply_to``); every listening worker sees the commands posted after it
    started listening, and replies to the client's ``reply_to`` with ``{hostname: reply}``.
    """

    # -- client side --------------------------------------------------------------------------------

    @abstractmethod
    def reply_address(self) -> dict[str, str]:
        """A new ``reply_to`` for one call, ready to receive replies until ``close_replies``."""

    @abstractmethod
    def broadcast(self, command: dict[str, Any], timeout_s: float) -> None:
        """Post a command to every worker; it expires after ``timeout_s``."""

    @abstractmethod
    def replies(self, reply_to: dict[str, str], ticket: str, timeout_s: float, limit: int | None) -> list[Any]:
        """The replies to ``ticket`` that arrive within ``timeout_s`` (stop early at ``limit``)."""

    def close_replies(self, reply_to: dict[str, str]) -> None:  # noqa: B027 - optional hook
        """Forget the reply address (replies that arrive later are dropped)."""

    # -- worker side --------------------------------------------------------------------------------

    @abstractmethod
    def listen(self) -> None:
        """Start receiving commands (only those posted from now on)."""

    @abstractmethod
    def commands(self, timeout_s: float) -> list[Any]:
        """Commands received since the last call, waiting up to ``timeout_s`` for the first one.

        Each is what was posted, decoded from JSON (None when it was not JSON): anyone who can reach
        the broker can post, so the caller checks the shape."""

    @abstractmethod
    def reply(self, reply_to: dict[str, str], ticket: str, body: dict[str, Any]) -> None:
        """Send ``body`` (``{hostname: reply}``) to a client's reply address."""


class Broker(ABC):
    """Publish, lease, ack and dead-letter task messages.

    Implementations are fork-safe: a connection opened before ``fork()`` is never used after it.
    """

    url: str

    @abstractmethod
    def publish(self, queue: str, payload: bytes, priority: int = 0, eta_ms: int | None = None) -> None: ...

    @abstractmethod
    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None: ...

    @abstractmethod
    def consumer(
        self,
        queues: Sequence[str],
        owner: str,
        buffer: PrefetchBuffer,
        lease_s: float,
        max_deliveries: int,
        poll_max_ms: int,
    ) -> Consumer: ...

    def prepare_consumer(self, queues: Sequence[str], allow_eviction: bool) -> None:  # noqa: B027 - optional hook
        """Called once when a worker starts consuming ``queues``: declare what the broker needs."""

    @abstractmethod
    def ack(self, tags: Sequence[str]) -> None: ...

    def complete(self, backend: ResultBackend, results: list[tuple[str, str, bytes]], tags: Sequence[str]) -> None:
        """Store encoded results, then ack: the worker's step after a batch of tasks.

        Results go first, so a crash in between re-runs tasks rather than losing them. A broker
        that can reach the backend's store overrides this to do both in one transaction (SQLite)
        or one round trip (Redis).
        """
        if results:
            backend.write_encoded(results)
        if tags:
            self.ack(tags)

    @abstractmethod
    def requeue(self, tags: Sequence[str]) -> None: ...

    @abstractmethod
    def requeue_owner(self, owner: str, max_deliveries: int) -> int: ...

    @abstractmethod
    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None: ...

    @abstractmethod
    def leased_tags(self, owner: str) -> list[str]:
        """Tags of the messages ``owner`` (a worker process) holds."""

    def release_lost_worker(self, owner: str, max_deliveries: int, running: set[str]) -> int:
        """Return the leases of a worker process that died; returns how many went back to the queue.

        Its unstarted messages go back uncounted; the ``running`` ones (which may have killed it)
        count as delivered and are dead-lettered (``worker_lost``) at ``max_deliveries``.
        """
        unstarted = [tag for tag in self.leased_tags(owner) if tag not in running]
        if unstarted:
            self.requeue(unstarted)
        return len(unstarted) + self.requeue_owner(owner, max_deliveries)

    @abstractmethod
    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The dead letters of a queue, oldest first."""

    @abstractmethod
    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        """Put dead letters of ``queue`` back in it (fresh delivery count); returns how many."""

    @abstractmethod
    def purge_dead(self, queue: str) -> int:
        """Delete the dead letters of ``queue``; returns how many."""

    @abstractmethod
    def purge(self, queues: Sequence[str]) -> int: ...

    @abstractmethod
    def queue_length(self, queue: str) -> int: ...

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        """Record revoked task ids in the broker, so workers that start later skip them too."""

    @abstractmethod
    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        """``(task_id, expires_at_ms)`` of revocations made at or after ``since_ms``."""

    @abstractmethod
    def mailbox(self) -> Mailbox:
        """A new remote-control endpoint on this broker (one per listener or client call)."""


class NativeTransport(Protocol):
    """What the extension's broker classes (``SqliteBroker``, ``RedisBroker``) have in common."""

    def publish(self, queue: str, payload: bytes, priority: int = ..., eta_ms: int | None = ...) -> None: ...
    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None: ...
    def ack(self, tags: Sequence[str]) -> int: ...
    def requeue(self, tags: Sequence[str]) -> int: ...
    def requeue_owner(self, owner: str, max_deliveries: int = ...) -> int: ...
    def dead_letter(self, tag: str, reason: str, error: str | None = ...) -> None: ...
    def dead_letters(
        self, queue: str, limit: int = ...
    ) -> Sequence[tuple[Any, str, str, str | None, int, int, bytes]]: ...
    def purge(self, queues: Sequence[str]) -> int: ...
    def queue_length(self, queue: str) -> int: ...


class NativeBroker(Broker):
    """A broker whose message operations are the extension's: each one passes straight through."""

    @property
    @abstractmethod
    def native(self) -> NativeTransport:
        """The extension's broker object of this process."""

    def publish(self, queue: str, payload: bytes, priority: int = 0, eta_ms: int | None = None) -> None:
        self.native.publish(queue, payload, priority, eta_ms)

    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None:
        self.native.publish_many(messages)

    def ack(self, tags: Sequence[str]) -> None:
        self.native.ack(tags)

    def requeue(self, tags: Sequence[str]) -> None:
        self.native.requeue(tags)

    def requeue_owner(self, owner: str, max_deliveries: int) -> int:
        return self.native.requeue_owner(owner, max_deliveries)

    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None:
        self.native.dead_letter(tag, reason, error)

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return [DeadLetter(str(row[0]), *row[1:]) for row in self.native.dead_letters(queue, limit)]

    def purge(self, queues: Sequence[str]) -> int:
        return self.native.purge(queues)

    def queue_length(self, queue: str) -> int:
        return self.native.queue_length(queue)
