"""The broker interface the app and the worker use. Transports implement it in Rust."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from rqueue._rqueue import Delivery, PrefetchBuffer


class Consumer(Protocol):
    """A transport thread that leases messages into a PrefetchBuffer (see ``_rqueue.SqliteConsumer``)."""

    def start(self) -> None: ...
    def stop(self) -> list[Delivery]: ...
    def set_queues(self, queues: Sequence[str]) -> None: ...


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

    @abstractmethod
    def ack(self, tags: Sequence[str]) -> None: ...

    @abstractmethod
    def requeue(self, tags: Sequence[str]) -> None: ...

    @abstractmethod
    def requeue_owner(self, owner: str, max_deliveries: int) -> int: ...

    @abstractmethod
    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None: ...

    @abstractmethod
    def purge(self, queues: Sequence[str]) -> int: ...

    @abstractmethod
    def queue_length(self, queue: str) -> int: ...
