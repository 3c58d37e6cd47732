"""The broker contract: what every broker has, the capabilities some add, and the consumer handle.

Every broker publishes, hands out a consumer, purges, counts and carries remote control
(``Broker``). Some also keep leases by owner so that another process can give back a dead
worker's messages (``LeaseRecovery``), keep dead letters (``DeadLetterAdmin``), store
revocations (``RevocationStore``) or elect the leader of periodic tasks (``BeatStore``); code
that needs one of these asks for it with ``capability`` or ``require``. Deliveries are settled
(acked, requeued, dead-lettered) through the ``BrokerConsumer`` that delivered them: on AMQP an
ack is only valid on the delivering channel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from rqueue._rqueue import Delivery, PrefetchBuffer, loads
from rqueue.exceptions import ConfigurationError
from rqueue.utils.log import printable

if TYPE_CHECKING:
    from rqueue.backends.base import ResultBackend

#: The reason code of a message dead-lettered because its worker died running it too often.
REASON_WORKER_LOST = "worker_lost"

#: Stores encoded results ``(task_id, status, payload)`` and acks tags, results first.
Completer = Callable[[list[tuple[str, str, bytes]], Sequence[str]], None]


class Settler(Protocol):
    """What can settle leased deliveries: ack them, and maybe store results in the same step."""

    def ack(self, tags: Sequence[str]) -> None: ...

    def joint_completer(self, backend: ResultBackend) -> Completer | None:
        """A completer that stores ``backend``'s results and acks in ONE step (one transaction or
        round trip), when this broker's store is the backend's; else None."""
        ...


class BrokerConsumer(Settler, Protocol):
    """One worker process's consumer: a transport thread leasing messages into a PrefetchBuffer,
    and the channel its deliveries are settled on."""

    def start(self) -> None: ...
    def stop(self) -> list[Delivery]:
        """Stop fetching; the deliveries never handed out (still leased, not yet returned)."""
        ...

    def set_queues(self, queues: Sequence[str]) -> None: ...
    def failure(self) -> str | None:
        """Why the fetching thread ended on its own (it retries every passing fault, so only a
        broker that can never be used again ends it); None while it runs or was stopped."""
        ...

    def ack_later(self, tags: Sequence[str]) -> None:
        """Ack ``tags`` without waiting for the broker: the fetching thread sends them before its
        next fetch (or now, where the broker has no such thread). A failure is retried there."""
        ...

    def settle_acks(self, timeout_s: float) -> bool:
        """Wait until every ``ack_later`` so far reached the broker; False after ``timeout_s``."""
        ...

    def requeue(self, tags: Sequence[str]) -> None:
        """Return unstarted deliveries to their queue, uncounted."""
        ...

    def release(self, delivery: Delivery) -> None:
        """Return a delivery the task rejected (``Reject(requeue=True)``) to its queue, counted: a
        message rejected over and over reaches ``broker_max_deliveries``."""
        ...

    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None:
        """Move a delivery aside for good, with a reason code (``unregistered``, ``decode_error`` ...)."""
        ...

    def close(self) -> None:
        """After the last settle: make sure every ack was written (a channel-bound consumer closes its
        connection, so a process exiting next loses none)."""
        ...


@runtime_checkable
class Recounting(Protocol):
    """A consumer whose broker cannot tell a delivery that killed its worker from the innocent
    ones returned with it (RabbitMQ only flags redeliveries): the worker node that saw the death
    puts the message back with its count (see ``rqueue.worker.verdicts``)."""

    def recount(self, tag: str, died_running: int) -> None:
        """Put the delivery back recording that ``died_running`` of its deliveries died running."""
        ...


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

    def task(self) -> str:
        """``name[id]`` from the message's headers when they are readable, else a short note."""
        try:
            headers = loads(self.payload[: 1 << 20], "application/json")["headers"]
            return printable(f"{headers['task']}[{headers['id']}]")
        except Exception:
            return f"<{len(self.payload)} bytes, not a readable task message>"


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


#: Celery's event exchange (``event_exchange``): a topic exchange on RabbitMQ, PUB/SUB channels
#: ``/<db>.celeryev/<routing key>`` on Redis.
EVENT_EXCHANGE = "celeryev"


@dataclass(frozen=True)
class Malformed:
    """Something received on the event stream that is not a message at all (not a kombu envelope,
    not JSON): what it was and why it was refused, for the receiver to report."""

    reason: str
    data: bytes


class EventChannel(ABC):
    """Celery's event stream over the broker: workers and producers publish, monitors (Flower,
    ``celery events``, ``rqueue events``) receive. Events are transient: a receiver gets those
    published while it is subscribed, and none is stored for later."""

    @abstractmethod
    def publish(self, routing_key: str, body: bytes, hostname: str) -> None:
        """Publish one JSON body (an event dict, or a list of them under ``task.multi``) with its
        routing key (the event type with ``-`` as ``.``) and the sender's node name (a header)."""

    @abstractmethod
    def subscribe(self) -> None:
        """Start receiving every event published from now on."""

    @abstractmethod
    def receive(self, timeout_s: float) -> list[bytes | Malformed]:
        """The JSON bodies received since the last call, waiting up to ``timeout_s`` for the first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop receiving and let go of what the subscription holds."""


class Broker(ABC):
    """What every broker does: publish, consume, purge, count, and carry remote control.

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
    ) -> BrokerConsumer:
        """A consumer for one worker process (``owner``); start it after any fork."""

    def prepare_consumer(self, queues: Sequence[str], allow_eviction: bool) -> None:  # noqa: B027 - optional hook
        """Called once when a worker starts consuming ``queues``: declare what the broker needs."""

    @abstractmethod
    def purge(self, queues: Sequence[str]) -> int: ...

    @abstractmethod
    def queue_length(self, queue: str) -> int: ...

    @abstractmethod
    def mailbox(self) -> Mailbox:
        """A new remote-control endpoint on this broker (one per listener or client call)."""

    def events(self) -> EventChannel:
        """A new endpoint on Celery's event stream (one per sender or receiver)."""
        raise ConfigurationError(f"{self!r} does not carry events (Celery's event protocol)")


def owner_id(hostname: str, pid: int) -> str:
    """The lease owner name of one worker process (``LeaseRecovery`` keys leases by it)."""
    return f"{hostname}/{pid}"


class LeaseRecovery(ABC):
    """Leases are kept by owner (a worker process), so any process can settle or give back another
    one's messages: a supervisor those of a child that died, a worker its own leftovers."""

    @abstractmethod
    def ack(self, tags: Sequence[str]) -> None: ...

    def joint_completer(self, backend: ResultBackend) -> Completer | None:
        """See ``Settler.joint_completer``."""
        return None

    @abstractmethod
    def requeue(self, tags: Sequence[str]) -> None: ...

    @abstractmethod
    def requeue_owner(self, owner: str, max_deliveries: int) -> int:
        """Return every message ``owner`` holds; those delivered ``max_deliveries`` times are
        dead-lettered (``worker_lost``). Returns how many went back."""

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


class DeadLetterAdmin(ABC):
    """The broker keeps dead letters per queue, to list, requeue and purge (``rqueue dlq``)."""

    @abstractmethod
    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The dead letters of a queue, oldest first."""

    @abstractmethod
    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        """Put dead letters of ``queue`` back in it (fresh delivery count); returns how many."""

    @abstractmethod
    def purge_dead(self, queue: str) -> int:
        """Delete the dead letters of ``queue``; returns how many."""


class RevocationStore(ABC):
    """The broker keeps revoked task ids, so workers that start later skip them too. Without one,
    revocations reach live workers by broadcast and survive restarts through ``--statedb``."""

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        """Record revoked task ids until ``expires_at_ms``."""

    @abstractmethod
    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        """``(task_id, expires_at_ms)`` of revocations made at or after ``since_ms``."""


class BeatStore(ABC):
    """The broker elects the one beat that sends periodic tasks and keeps their schedule's state.

    A schedule ``name`` has one lease, held by a token until it lapses (``ttl_ms`` after it was
    taken or last renewed), and the last tick sent of each of its entries. ``beat_send`` records a
    tick and publishes its message in ONE atomic step that also checks the lease (a deposed leader
    that still believes it leads is refused) and that the tick is later than the last one sent, so
    no tick is sent twice, across leader changes and retries of an unanswered send alike.
    """

    @abstractmethod
    def beat_lease(self, name: str, token: str, ttl_ms: int) -> bool:
        """Take the lease when free or lapsed, or renew it for its holder; False when another holds it."""

    @abstractmethod
    def beat_release(self, name: str, token: str) -> bool:
        """Give the lease up if ``token`` holds it (a leader stopping)."""

    @abstractmethod
    def beat_runs(self, name: str) -> dict[str, int]:
        """The last tick sent (epoch ms) of each entry."""

    @abstractmethod
    def beat_send(  # noqa: PLR0913 - the extension's signature
        self,
        name: str,
        token: str,
        entry: str,
        tick_ms: int,
        queue: str,
        payload: bytes,
        priority: int,
        eta_ms: int | None,
    ) -> int:
        """Record ``tick_ms`` of ``entry`` and publish the message, if ``token`` leads and the tick is
        new: 1 sent, 0 not the leader (nothing written), -1 already sent (nothing written)."""

    @abstractmethod
    def beat_claim(self, name: str, token: str, entry: str, tick_ms: int) -> int:
        """Record ``tick_ms`` of ``entry`` under the same checks as ``beat_send``, publishing nothing
        (the caller publishes to another broker after a 1)."""


Capability = TypeVar("Capability", LeaseRecovery, DeadLetterAdmin, RevocationStore, BeatStore)


def capability(broker: Broker, kind: type[Capability]) -> Capability | None:
    """``broker`` as a ``kind`` when it has that capability, else None."""
    return broker if isinstance(broker, kind) else None


def require(broker: Broker, kind: type[Capability], what: str) -> Capability:
    """``broker`` as a ``kind``, or a ConfigurationError saying that ``what`` needs it."""
    found = capability(broker, kind)
    if found is None:
        raise ConfigurationError(f"{what} is not available on {broker!r}: this broker has no {kind.__name__}")
    return found


class NativeTransport(Protocol):
    """What the extension's broker classes (``SqliteBroker``, ``RedisBroker``) have in common."""

    def publish(self, queue: str, payload: bytes, priority: int = ..., eta_ms: int | None = ...) -> None: ...
    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None: ...
    def ack(self, tags: Sequence[str]) -> int: ...
    def complete(self, rows: Sequence[tuple[str, str, str, bytes, int | None]], tags: Sequence[str]) -> int: ...
    def requeue(self, tags: Sequence[str]) -> int: ...
    def release(self, tags: Sequence[str]) -> int: ...
    def requeue_owner(self, owner: str, max_deliveries: int = ...) -> int: ...
    def leased_tags(self, owner: str) -> list[str]: ...
    def dead_letter(self, tag: str, reason: str, error: str | None = ...) -> None: ...
    def dead_letters(
        self, queue: str | None = ..., limit: int = ...
    ) -> Sequence[tuple[str, str, str, str | None, int, int, bytes]]: ...
    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int: ...
    def purge_dead(self, queue: str | None = ...) -> int: ...
    def purge(self, queues: Sequence[str]) -> int: ...
    def queue_length(self, queue: str) -> int: ...
    def beat_lease(self, name: str, token: str, ttl_ms: int) -> bool: ...
    def beat_release(self, name: str, token: str) -> bool: ...
    def beat_runs(self, name: str) -> list[tuple[str, int]]: ...
    def beat_send(  # noqa: PLR0913 - the extension's signature
        self,
        name: str,
        token: str,
        entry: str,
        tick_ms: int,
        queue: str,
        payload: bytes,
        priority: int = ...,
        eta_ms: int | None = ...,
    ) -> int: ...
    def beat_claim(self, name: str, token: str, entry: str, tick_ms: int) -> int: ...


class NativeThread(Protocol):
    """What the extension's consumer threads (``SqliteConsumer``, ``RedisConsumer``) have in common."""

    def start(self) -> None: ...
    def stop(self) -> list[Delivery]: ...
    def set_queues(self, queues: list[str]) -> None: ...
    def ack_later(self, tags: list[str]) -> None: ...
    def settle_acks(self, timeout_s: float) -> bool: ...
    @property
    def running(self) -> bool: ...
    @property
    def last_error(self) -> str | None: ...


class NativeBroker(Broker, LeaseRecovery, DeadLetterAdmin, BeatStore):
    """A broker whose message operations are the extension's: each one passes straight through.

    Any connection may settle any lease (leases are kept by owner in the broker's own store), so
    the consumers of a native broker settle through this process's connection.
    """

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

    def joint_completer(self, backend: ResultBackend) -> Completer | None:
        if not backend.shares_store_with(self.url):
            return None

        def complete(results: list[tuple[str, str, bytes]], tags: Sequence[str]) -> None:
            if results:  # one transaction (SQLite) or round trip (Redis)
                self.native.complete(backend.rows(results), tags)
            elif tags:
                self.native.ack(tags)

        return complete

    def requeue(self, tags: Sequence[str]) -> None:
        self.native.requeue(tags)

    def requeue_owner(self, owner: str, max_deliveries: int) -> int:
        return self.native.requeue_owner(owner, max_deliveries)

    def leased_tags(self, owner: str) -> list[str]:
        return self.native.leased_tags(owner)

    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None:
        self.native.dead_letter(tag, reason, error)

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return [DeadLetter(*row) for row in self.native.dead_letters(queue, limit)]

    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        return self.native.requeue_dead(queue, list(ids))

    def purge_dead(self, queue: str) -> int:
        return self.native.purge_dead(queue)

    def purge(self, queues: Sequence[str]) -> int:
        return self.native.purge(queues)

    def queue_length(self, queue: str) -> int:
        return self.native.queue_length(queue)

    def beat_lease(self, name: str, token: str, ttl_ms: int) -> bool:
        return self.native.beat_lease(name, token, ttl_ms)

    def beat_release(self, name: str, token: str) -> bool:
        return self.native.beat_release(name, token)

    def beat_runs(self, name: str) -> dict[str, int]:
        return dict(self.native.beat_runs(name))

    def beat_send(  # noqa: PLR0913 - the extension's signature
        self,
        name: str,
        token: str,
        entry: str,
        tick_ms: int,
        queue: str,
        payload: bytes,
        priority: int,
        eta_ms: int | None,
    ) -> int:
        return self.native.beat_send(name, token, entry, tick_ms, queue, payload, priority, eta_ms)

    def beat_claim(self, name: str, token: str, entry: str, tick_ms: int) -> int:
        return self.native.beat_claim(name, token, entry, tick_ms)

    def native_consumer(self, thread: NativeThread) -> NativeConsumer:
        """The consumer handle of a native consumer thread of this broker."""
        return NativeConsumer(thread, self)


class NativeConsumer:
    """The ``BrokerConsumer`` of a native broker: the extension's thread fetches (GIL released); its
    deliveries are settled through the broker's connection of this process."""

    def __init__(self, thread: NativeThread, broker: NativeBroker) -> None:
        self.thread = thread
        self.broker = broker

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> list[Delivery]:
        return self.thread.stop()

    def set_queues(self, queues: Sequence[str]) -> None:
        self.thread.set_queues(list(queues))

    def failure(self) -> str | None:
        return None if self.thread.running else self.thread.last_error

    def ack(self, tags: Sequence[str]) -> None:
        self.broker.ack(tags)

    def ack_later(self, tags: Sequence[str]) -> None:
        if self.thread.running:
            self.thread.ack_later(list(tags))
        else:  # nobody would send them (a consumer driven by hand, or stopped): now
            self.broker.ack(tags)

    def settle_acks(self, timeout_s: float) -> bool:
        return self.thread.settle_acks(timeout_s)

    def joint_completer(self, backend: ResultBackend) -> Completer | None:
        return self.broker.joint_completer(backend)

    def requeue(self, tags: Sequence[str]) -> None:
        self.broker.requeue(tags)

    def release(self, delivery: Delivery) -> None:
        self.broker.native.release([delivery.tag])

    def close(self) -> None:
        """Settles are synchronous round trips on this process's connection: nothing is pending."""

    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None:
        self.broker.dead_letter(tag, reason, error)
