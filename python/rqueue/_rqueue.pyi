"""Type stubs for the Rust extension ``rqueue._rqueue`` (checked with ``mypy.stubtest``).

Only bytes, str, numbers, None and plain containers cross this boundary. Errors are raised as
classes of ``rqueue.exceptions``.
"""

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, final

__version__: str
#: The Lua script that stores one result record in Redis (SET with expiry + PUBLISH unless a
#: SUCCESS is stored); ``RedisBroker.complete`` and ``rqueue.backends.redis`` both run it.
REDIS_STORE_RESULT_LUA: str
#: The SQLite broker checkpoints and truncates its write-ahead log once it is larger than this.
SQLITE_WAL_LIMIT_BYTES: int

# -- codecs -------------------------------------------------------------------------------------

def dumps(obj: object, serializer: str = "json") -> bytes:
    """Serialize with ``json`` (kombu's ``__type__`` markers) or ``msgpack``.

    Raises SerializationError naming the unsupported type and its path, ConfigurationError for an
    unknown serializer name.
    """

def loads(data: bytes, content_type: str = "application/json") -> Any:
    """Deserialize ``application/json`` or ``application/x-msgpack`` bytes (DecodeError on bad input)."""

def content_type_of(serializer: str) -> tuple[str, str]:
    """``(content_type, content_encoding)`` of a serializer name (json, msgpack, pickle, yaml)."""

# -- Celery protocol v2 envelope ---------------------------------------------------------------

def encode_task_message(
    *,
    task: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    routing_key: str,
    exchange: str = "",
    serializer: str = "json",
    body: bytes | None = None,
    eta_ms: int | None = None,
    expires_ms: int | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    priority: int | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    group_id: str | None = None,
    origin: str | None = None,
    ignore_result: bool = False,
    reply_to: str | None = None,
    delivery_tag: str | None = None,
    extra_headers: Mapping[str, Any] | None = None,
    max_size: int = 1048576,
    callbacks: Sequence[Mapping[str, Any]] | None = None,
    errbacks: Sequence[Mapping[str, Any]] | None = None,
    chain: Sequence[Mapping[str, Any]] | None = None,
    chord: Mapping[str, Any] | None = None,
    group_index: int | None = None,
    shadow: str | None = None,
) -> bytes:
    """Build the kombu Redis JSON envelope of a Celery protocol v2 task message.

    ``body`` carries a body already serialized in Python (pickle); otherwise ``[args, kwargs, embed]``
    is serialized in Rust with ``serializer`` (json straight from the Python objects). The embed
    holds the canvas links with Celery's keys: ``callbacks``, ``errbacks`` and ``chain`` (lists of
    signature dicts) and ``chord`` (one); all None gives Celery's default embed. ``group_index`` and
    ``shadow`` are headers. The
    ``argsrepr``/``kwargsrepr`` headers hold the first 1024 characters of ``repr(tuple(args))`` and
    ``repr(kwargs)`` unless ``extra_headers`` sets them. Raises MessageTooLarge past ``max_size``.
    """

def encode_task_messages(
    calls: list[tuple[Sequence[Any], Mapping[str, Any]]],
    *,
    task: str,
    routing_key: str,
    exchange: str = "",
    serializer: str = "json",
    eta_ms: int | None = None,
    expires_ms: int | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    priority: int | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    group_id: str | None = None,
    origin: str | None = None,
    ignore_result: bool = False,
    reply_to: str | None = None,
    extra_headers: Mapping[str, Any] | None = None,
    max_size: int = 1048576,
    callbacks: Sequence[Mapping[str, Any]] | None = None,
    errbacks: Sequence[Mapping[str, Any]] | None = None,
    chain: Sequence[Mapping[str, Any]] | None = None,
    chord: Mapping[str, Any] | None = None,
    group_index: int | None = None,
    shadow: str | None = None,
) -> list[tuple[str, bytes]]:
    """``encode_task_message`` for many ``(args, kwargs)`` calls of one task with the same options:
    ``[(task_id, payload), ...]``, each with a new task id (as ``new_task_id``), in one call."""

def new_task_id() -> str:
    """A new task id: a random (version 4) UUID as text, like ``str(uuid.uuid4())`` but faster.

    The randomness comes from the operating system for every id, so processes forked from one
    another never repeat each other's ids.
    """

@final
class TaskMessage:
    """A decoded task message: typed fields of the headers, properties and body."""

    task: str
    id: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    embed: dict[str, Any] | None
    body: bytes
    content_type: str
    content_encoding: str
    eta_ms: int | None
    expires_ms: int | None
    retries: int
    priority: int
    time_limit: float | None
    soft_time_limit: float | None
    root_id: str | None
    parent_id: str | None
    group_id: str | None
    group_index: int | None
    shadow: str | None
    origin: str | None
    ignore_result: bool
    argsrepr: str | None
    kwargsrepr: str | None
    reply_to: str | None
    correlation_id: str | None
    delivery_tag: str | None
    exchange: str
    routing_key: str
    redelivered: bool
    headers: dict[str, Any]

def decode_task_message(
    data: bytes,
    *,
    accept: Sequence[str] | None = None,
    max_size: int = 1048576,
) -> TaskMessage:
    """Parse an envelope; check size, then content type (before any decoding), then decode.

    ``accept`` lists serializer names or MIME types; None accepts JSON only.

    Bodies of json/msgpack are decoded to ``args``/``kwargs``/``embed``; for other accepted types
    (pickle) those are None and ``body`` holds the raw bytes for a Python decoder. Raises
    MessageTooLarge, ContentDisallowed or DecodeError.
    """

def parse_iso8601_ms(value: str) -> int:
    """Epoch milliseconds of an ISO-8601 timestamp (naive means UTC). DecodeError when invalid."""

def format_iso8601_ms(epoch_ms: int) -> str:
    """ISO-8601 UTC text with microseconds and ``+00:00``, as Celery writes it."""

# -- routing ------------------------------------------------------------------------------------

@final
class TaskEventBuffer:
    """A worker process's task events (Celery's event protocol), appended as JSON by the
    executor's hook points and taken as one ``task.multi`` body by the event sender thread.

    Each append returns how many events wait now (1: the buffer was empty before).
    """

    def __new__(cls, hostname: str, pid: int, utcoffset_h: float) -> TaskEventBuffer: ...
    def received(self, msg: TaskMessage) -> int:
        """``task-received`` with the message's own fields (``argsrepr``/``kwargsrepr`` headers)."""
    def started(self, task_id: str) -> int: ...
    def succeeded(self, task_id: str, result: object, runtime_s: float) -> int:
        """``task-succeeded`` with ``repr(result)`` cut to 1024 characters."""
    def failed(self, task_id: str, exception: str, traceback: str) -> int: ...
    def retried(self, task_id: str, exception: str, traceback: str) -> int: ...
    def revoked(self, task_id: str, terminated: bool, expired: bool) -> int: ...
    def rejected(self, task_id: str, requeue: bool) -> int: ...
    def set_utcoffset(self, hours: float) -> None:
        """Events appended from now on say this ``utcoffset`` (hours west of UTC)."""
    def take(self) -> tuple[bytes, int] | None:
        """``(JSON list of the waiting events, how many)``, or None; empties the buffer."""
    @property
    def clock(self) -> int:
        """The Lamport clock of the last event appended."""
    def __len__(self) -> int: ...

@final
class Router:
    """A compiled route table: the first matching rule wins, else the default queue.

    Each rule is ``(kind, pattern, queue, exchange, routing_key, priority)`` with kind one of
    ``"exact"``, ``"glob"``, ``"regex"``.
    """

    def __new__(
        cls,
        rules: Sequence[tuple[str, str, str | None, str | None, str | None, int | None]],
        default_queue: str = "celery",
    ) -> Router: ...
    def route(self, task: str) -> tuple[str, str, str, int | None]:
        """``(queue, exchange, routing_key, priority)`` for a task name."""
    def lookup(self, task: str) -> tuple[str, str, str, int | None] | None:
        """Like ``route``, but None when no rule matches."""

# -- rate limiting ------------------------------------------------------------------------------

def parse_rate(rate: str | float) -> float:
    """Tokens per second of ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a bare number (per second)."""

@final
class TokenBucket:
    """A token bucket; ``try_acquire`` never blocks."""

    def __new__(cls, rate: str | float, burst: int | None = None) -> TokenBucket: ...
    @property
    def rate_per_s(self) -> float: ...
    @property
    def burst(self) -> int: ...
    def try_acquire(self, tokens: int = 1) -> float:
        """0.0 when the tokens were taken, else the seconds to wait until they are available."""
    def set_rate(self, rate: str | float) -> None: ...

@final
class RateLimitTable:
    """The rate limits of a worker node, in memory shared with the processes it forks later.

    One GCRA token bucket per task name (burst: one second's worth, at least 1), updated by
    compare-and-swap, so the limit holds for the node as a whole. Raises ``ConfigurationError``
    for a bad rate, an empty or over-long (> 192 bytes) task name, or a full table.
    """

    def __new__(cls, slots: int = 1024) -> RateLimitTable: ...
    @property
    def slots(self) -> int: ...
    @staticmethod
    def check(rate: str | float | None) -> float | None:
        """The rate in tasks per second, or None for no limit (None, ``"0"``, 0); raises for a bad rate."""
    def set(self, task_name: str, rate: str | float | None) -> None:
        """Set the limit of a task; None, ``"0"`` or 0 removes it. Seen at once by every sharing process."""
    @property
    def generation(self) -> int:
        """A counter bumped by every ``set``, in any sharing process."""
    def rate(self, task_name: str) -> float | None:
        """Tasks per second allowed, or None when the task has no limit."""
    def limits(self) -> list[tuple[str, float]]:
        """Every limited task and its rate (tasks per second), by name."""
    def try_acquire(self, task_name: str) -> float:
        """0.0 when the task may start now (a token was taken), else the seconds until it may."""

# -- prefetch and the SQLite transport ---------------------------------------------------------

@final
class Delivery:
    """One fetched message: its lease id, its queue, the raw envelope and how often it was delivered.

    ``tag`` is the SQLite row id as text, or kombu's ``delivery_tag`` (a uuid) on Redis.
    """

    tag: str
    queue: str
    payload: bytes
    deliveries: int
    def __new__(cls, tag: str, queue: str, payload: bytes, deliveries: int = 1) -> Delivery: ...

@final
class PrefetchBuffer:
    """Bounded, thread-safe buffer between a transport thread and the Python executor.

    ``credits`` = capacity now - buffered - taken-but-not-done: how many messages the transport may
    fetch. The capacity given is a floor: while tasks are short the buffer holds about 5 ms of them
    (at most 128); when one runs long it falls back and the transport hands the excess back.
    """

    def __new__(cls, capacity: int) -> PrefetchBuffer: ...
    @property
    def capacity(self) -> int:
        """The capacity given (the floor of the adaptive one)."""
    def credits(self) -> int: ...
    def __len__(self) -> int: ...
    def put(self, delivery: Delivery) -> bool:
        """Add a delivery; False when the buffer is full or closed."""
    def get(self, timeout_s: float | None = None) -> Delivery | None:
        """Block (GIL released) until a delivery is there, the timeout runs out, or the buffer closes."""
    def done(self, count: int = 1) -> None:
        """Mark taken deliveries finished (acked or returned), giving their credit back."""
    def discount(self, waited_s: float) -> None:
        """Leave ``waited_s`` out of the pace of taking: the taker spent it since its last take
        waiting on the broker (writing results and acks), not running a task."""
    def snapshot(self) -> list[Delivery]:
        """Copies of the deliveries waiting in the buffer, oldest first; they stay in it."""
    def close(self) -> list[Delivery]:
        """Close the buffer, wake waiters and return the deliveries never taken."""

#: What ``FastLane.run`` hands back: the delivery, its message (None when it did not decode), and
#: when the lane called its task: the request, the seconds since the call, its value or exception.
_Handback = tuple[Delivery, TaskMessage | None, Any, float | None, Any, BaseException | None]

@final
class FastLane:
    """A worker's common case run natively, a batch at a time: decode, admit, call the task, store
    its result (encoded here when ``json_results``: Celery's JSON meta), ack. Anything else is
    handed back to the executor (``rqueue.worker.executor``), before the task runs or after its
    call (an exception, a coroutine)."""

    def __new__(
        cls,
        buffer: PrefetchBuffer,
        accept: list[str],
        max_size: int,
        hostname: str,
        request_type: Callable[..., Any],
        stack: ContextVar[Any],
        executor: object,
        guard: object,
        revoked: object,
        consumer: object,
        slot: object | None,
        store: Callable[[TaskMessage, Any, Any], None],
        args_repr: Callable[[Any], str],
        log: tuple[Callable[..., None], str, str, Callable[[Any], str]],
        json_results: bool,
    ) -> FastLane: ...
    def run(
        self,
        first: Delivery,
        plan: dict[str, tuple[Callable[..., Any], bool, bool]],
        results: list[tuple[str, str, bytes]],
        acks: list[str],
        budget_s: float,
        max_acks: int,
        logged: bool,
    ) -> _Handback | None:
        """Run ``first`` (taken from the buffer), then the deliveries behind it while they take the
        common path, for up to ``budget_s`` or until ``acks`` (appended to, as ``results`` is)
        holds ``max_acks`` (``logged``: each task logged at INFO, as the executor does); None when all were settled,
        else the first one that needs the executor."""

@final
class SqliteBroker:
    """The embedded SQLite broker: one file, WAL, busy timeout; every step atomic."""

    def __new__(cls, path: str, busy_timeout_ms: int = 10000) -> SqliteBroker: ...
    @property
    def path(self) -> str: ...
    def results_seen(self) -> int:
        """The results bell's sequence: read it before reading a result, pass it to ``wait_results``."""
    def wait_results(self, seen: int, timeout_s: float) -> None:
        """Wait (GIL released) up to ``timeout_s`` for results stored by any process after ``seen``."""
    @property
    def has_bells(self) -> bool:
        """Whether waits are woken by other processes' commits (Linux), or only sleep."""
    def publish(self, queue: str, payload: bytes, priority: int = 0, eta_ms: int | None = None) -> None: ...
    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None:
        """Publish ``(queue, payload, priority, eta_ms)`` items in one transaction."""
    def fetch(self, queues: Sequence[str], limit: int, owner: str, lease_ms: int) -> list[Delivery]:
        """Atomically lease up to ``limit`` due messages (priority 0 first, then FIFO). GIL released."""
    def ack(self, tags: Sequence[str]) -> int: ...
    def requeue(self, tags: Sequence[str]) -> int:
        """Return unstarted leased messages to their queue now (their original place; this delivery is not counted)."""
    def release(self, tags: Sequence[str]) -> int:
        """Return rejected deliveries to their queue; this delivery counts towards ``broker_max_deliveries``."""
    def requeue_owner(self, owner: str, max_deliveries: int = 5) -> int:
        """Return every message leased by ``owner`` (a worker process that died).

        Messages already delivered ``max_deliveries`` times are dead-lettered as ``worker_lost`` instead.
        Returns how many were requeued.
        """
    def leased_tags(self, owner: str) -> list[str]:
        """Tags of the messages ``owner`` holds."""
    def extend_leases(self, owner: str, lease_ms: int, held: list[str]) -> list[str]:
        """Renew the leases of ``held`` (tags ``owner`` holds); returns every tag leased to ``owner``."""
    def sweep_expired(self, max_deliveries: int = 5) -> tuple[int, int]:
        """Return expired leases to their queue; dead-letter those over ``max_deliveries``.

        Returns ``(requeued, dead_lettered)``.
        """
    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None:
        """Move a leased message to the dead-letter table with a reason code and error text."""
    def dead_letters(
        self, queue: str | None = None, limit: int = 100
    ) -> list[tuple[str, str, str, str | None, int, int, bytes]]:
        """``(id, queue, reason, error, deliveries, dead_at_ms, payload)`` rows, oldest first (None: every queue)."""
    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        """Put dead letters of ``queue`` back in it (fresh delivery count); ids of other queues match nothing."""
    def purge_dead(self, queue: str | None = None) -> int: ...
    def purge(self, queues: Sequence[str]) -> int:
        """Delete waiting (not leased) messages of these queues; returns how many."""
    def queue_length(self, queue: str) -> int: ...
    def beat_lease(self, name: str, token: str, ttl_ms: int) -> bool:
        """Take (when free or lapsed) or renew the leader lease of the periodic schedule ``name``
        for ``token``, for ``ttl_ms``; False when another process holds it."""
    def beat_release(self, name: str, token: str) -> bool:
        """Give the lease of ``name`` up if ``token`` holds it; True when it did."""
    def beat_runs(self, name: str) -> list[tuple[str, int]]:
        """``(entry, tick_ms)``: the last tick sent of each entry of the schedule ``name``."""
    def beat_send(
        self,
        name: str,
        token: str,
        entry: str,
        tick_ms: int,
        queue: str,
        payload: bytes,
        priority: int = 0,
        eta_ms: int | None = None,
    ) -> int:
        """Record the tick and publish the message in one atomic step, only if ``token`` holds the
        lease and no tick at or after ``tick_ms`` was sent: 1 sent, 0 not the leader, -1 already sent."""
    def beat_claim(self, name: str, token: str, entry: str, tick_ms: int) -> int:
        """Record the tick like ``beat_send`` without publishing anything (the caller publishes to
        another broker once this returned 1)."""
    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        """Record revoked task ids, kept until ``expires_at_ms``."""
    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        """``(task_id, expires_at_ms)`` of unexpired revocations made at or after ``since_ms``."""
    def mailbox_post(self, channel: str, body: bytes, expires_at_ms: int) -> int:
        """Post ``body`` on a mailbox channel (remote control), kept until ``expires_at_ms``; returns its id."""
    def mailbox_read(self, channel: str, after_id: int) -> list[tuple[int, bytes]]:
        """``(id, body)`` of the unexpired posts on ``channel`` after ``after_id``, oldest first."""
    def mailbox_last_id(self) -> int:
        """The id of the newest mailbox post (0 when none)."""
    def store_results(self, rows: Sequence[tuple[str, str, str, bytes, int | None]]) -> None:
        """Store ``(task_id, status, content_type, payload, ttl_ms)`` records (None: kept forever); SUCCESS is final."""
    def complete(self, rows: Sequence[tuple[str, str, str, bytes, int | None]], tags: Sequence[str]) -> int:
        """Store ``(task_id, status, content_type, payload, ttl_ms)`` records and ack ``tags`` in one
        transaction; returns how many tags were in flight."""
    def chord_set_size(self, group_id: str, size: int, ttl_ms: int | None = None) -> None:
        """Set the number of header results a chord's body waits for (a new run of the chord)."""
    def chord_add(self, group_id: str, n: int) -> None:
        """Make a chord wait for ``n`` more header results."""
    def chord_part_return(
        self,
        group_id: str,
        member: str,
        index: float,
        payload: bytes,
        ttl_ms: int | None,
        token: str,
        claim_ms: int,
    ) -> tuple[int, int | None, bool] | None:
        """Count one header result (once per member) in one transaction; ``(ready, total, claimed)``,
        or None once the body was fired."""
    def chord_renew_claim(self, group_id: str, token: str, claim_ms: int) -> bool:
        """Keep (or take, once lapsed) the right to fire a chord's body."""
    def chord_parts(self, group_id: str) -> list[bytes]:
        """The counted header results of a chord, in header order."""
    def chord_done(self, group_id: str, token: str, done_ttl_ms: int) -> bool:
        """The body was fired by the holder of ``token``: forget the parts, mark the chord done."""
    def read_result(self, task_id: str) -> tuple[str, bytes] | None:
        """``(content_type, payload)`` of an unexpired result, or None."""
    def delete_result(self, task_id: str) -> bool: ...

@final
class SqliteConsumer:
    """A Rust thread that leases batches from a SqliteBroker into a PrefetchBuffer.

    It fetches only as many messages as the buffer has credits, polls with backoff when idle
    (new work is picked up within 50 ms), renews its leases, and sweeps expired ones.
    Start it after any fork.
    """

    def __new__(
        cls,
        path: str,
        queues: Sequence[str],
        owner: str,
        buffer: PrefetchBuffer,
        lease_ms: int = 60000,
        max_deliveries: int = 5,
        poll_max_ms: int = 40,
    ) -> SqliteConsumer: ...
    def start(self) -> None: ...
    def stop(self) -> list[Delivery]:
        """Stop fetching, join the thread, close the buffer; returns unstarted deliveries (not requeued)."""
    def set_queues(self, queues: Sequence[str]) -> None: ...
    def ack_later(self, tags: Sequence[str]) -> None:
        """Hand ``tags`` to the thread to ack before its next fetch; returns at once (failures are retried there)."""
    def settle_acks(self, timeout_s: float) -> bool:
        """Wait (GIL released) until the acks handed over so far were sent; False after ``timeout_s`` or if stopped."""
    @property
    def running(self) -> bool: ...
    @property
    def last_error(self) -> str | None:
        """The last error the thread met (it keeps retrying with backoff), if any."""

# -- the Redis transport (kombu layout) --------------------------------------------------------

@final
class RedisBroker:
    """A Redis broker in kombu's layout, so Celery producers and workers interoperate.

    Messages wait in one list per queue and priority bucket (``queue``, ``queue\\x06\\x163``, ...);
    in-flight ones in kombu's ``unacked``/``unacked_index`` plus rqueue's lease records; ETA messages
    in ``rqueue.eta.<queue>``; dead letters in ``rqueue.dlq.<queue>``. ``global_keyprefix`` prefixes
    every key. Connecting fails with BrokerConnectionError; the password is masked in every message.
    ``rediss://`` speaks TLS (rustls; the system's roots unless ``?ssl_ca_certs=/path/ca.pem``;
    ``ssl_cert_reqs=required|optional|none``, where ``none`` disables verification). A bad TLS option
    raises ConfigurationError; a rejected certificate, BrokerConnectionError.
    """

    def __new__(
        cls,
        url: str,
        global_keyprefix: str = "",
        socket_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        foreign_visibility_s: float = 3600.0,
    ) -> RedisBroker: ...
    @property
    def url(self) -> str:
        """The URL with its password masked."""
    @property
    def global_keyprefix(self) -> str: ...
    def publish(self, queue: str, payload: bytes, priority: int = 0, eta_ms: int | None = None) -> None:
        """LPUSH the envelope to its priority bucket, or into the ETA set when ``eta_ms`` is ahead."""
    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None:
        """Publish ``(queue, payload, priority, eta_ms)`` items in one round trip (all or none)."""
    def fetch(self, queues: Sequence[str], limit: int, owner: str) -> list[Delivery]:
        """Atomically lease up to ``limit`` messages with one Lua script (due ETA messages first join
        their queue; every queue's bucket 0 before any bucket 3; FIFO). GIL released."""
    def ack(self, tags: Sequence[str]) -> int:
        """Remove finished messages from every lease record; returns how many were in flight."""
    def complete(self, rows: Sequence[tuple[str, str, str, bytes, int | None]], tags: Sequence[str]) -> int:
        """Store ``(task_id, status, content_type, payload, ttl_ms)`` result records, then ack ``tags``,
        in one round trip (one pipeline, results first); returns how many tags were in flight.

        Records go where Celery's Redis backend keeps them (``celery-task-meta-<task_id>``, never
        prefixed): ``SET`` with ``PX ttl_ms`` (None: no expiry) and ``PUBLISH`` on the key's channel,
        unless a SUCCESS is already stored. GIL released.
        """
    def requeue(self, tags: Sequence[str]) -> int:
        """Return unstarted deliveries to the front of their queue, unchanged; this delivery is not counted."""
    def release(self, tags: Sequence[str]) -> int:
        """Return rejected deliveries to their queue; this delivery counts towards ``broker_max_deliveries``."""
    def requeue_owner(self, owner: str, max_deliveries: int = 5) -> int:
        """Return every message held by ``owner`` (a dead worker process) to the front of its queue.

        They are marked redelivered; those delivered ``max_deliveries`` times are dead-lettered as
        ``worker_lost`` instead. Returns how many were requeued.
        """
    def extend_leases(self, owner: str, held: list[str]) -> list[str]:
        """Renew, with the broker's clock, the leases of ``held`` (tags ``owner`` holds).

        Returns every tag leased to ``owner``; one not in ``held`` was leased by a fetch whose reply
        never arrived.
        """
    def sweep_expired(self, visibility_timeout_ms: int, max_deliveries: int = 5) -> tuple[int, int]:
        """Return leases older than the timeout to the front of their queue (marked redelivered).

        Those over ``max_deliveries`` are dead-lettered. Returns ``(requeued, dead_lettered)``.
        """
    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None:
        """Move an in-flight message to its queue's dead-letter list with a reason code and error text."""
    def leased_tags(self, owner: str) -> list[str]:
        """Tags of the messages ``owner`` holds."""
    def dead_letters(
        self, queue: str | None = None, limit: int = 100
    ) -> list[tuple[str, str, str, str | None, int, int, bytes]]:
        """``(id, queue, reason, error, deliveries, dead_at_ms, payload)`` rows of a queue, oldest first
        (None raises ConfigurationError: Redis keeps dead letters per queue)."""
    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        """Put dead letters (by id) back at the end of their queue with a fresh delivery count."""
    def purge_dead(self, queue: str | None = None) -> int: ...
    def purge(self, queues: Sequence[str]) -> int:
        """Delete waiting messages of these queues (every priority bucket and the ETA set)."""
    def queue_length(self, queue: str) -> int:
        """Waiting messages: every priority bucket plus those whose ETA is still ahead."""
    def beat_lease(self, name: str, token: str, ttl_ms: int) -> bool:
        """Take (when free or lapsed) or renew the leader lease of the periodic schedule ``name``
        for ``token``, for ``ttl_ms``; False when another process holds it."""
    def beat_release(self, name: str, token: str) -> bool:
        """Give the lease of ``name`` up if ``token`` holds it; True when it did."""
    def beat_runs(self, name: str) -> list[tuple[str, int]]:
        """``(entry, tick_ms)``: the last tick sent of each entry of the schedule ``name``."""
    def beat_send(
        self,
        name: str,
        token: str,
        entry: str,
        tick_ms: int,
        queue: str,
        payload: bytes,
        priority: int = 0,
        eta_ms: int | None = None,
    ) -> int:
        """Record the tick and publish the message in one atomic step, only if ``token`` holds the
        lease and no tick at or after ``tick_ms`` was sent: 1 sent, 0 not the leader, -1 already sent."""
    def beat_claim(self, name: str, token: str, entry: str, tick_ms: int) -> int:
        """Record the tick like ``beat_send`` without publishing anything (the caller publishes to
        another broker once this returned 1)."""
    def declare_bindings(self, queues: Sequence[str], exchange: str | None = None) -> None:
        """``SADD _kombu.binding.<exchange> "<queue>\\x06\\x16\\x06\\x16<queue>"`` per queue.

        The exchange defaults to the queue's own name, as for Celery's default direct exchanges.
        """
    def check_maxmemory_policy(self) -> str | None:
        """The server's ``maxmemory-policy`` when it is not ``noeviction`` (Redis may evict messages)."""

@final
class RedisConsumer:
    """A Rust thread that leases batches from Redis into a PrefetchBuffer.

    It fetches only as many messages as the buffer has credits, polls with backoff when idle
    (0.1 ms up to ``poll_max_ms``), renews its leases every ``lease_ms / 3``, sweeps expired ones,
    and reconnects with backoff (10 ms to 1 s) after connection errors. Start it after any fork.
    """

    def __new__(
        cls,
        url: str,
        queues: Sequence[str],
        owner: str,
        buffer: PrefetchBuffer,
        lease_ms: int = 60000,
        max_deliveries: int = 5,
        poll_max_ms: int = 20,
        global_keyprefix: str = "",
        foreign_visibility_s: float = 3600.0,
        socket_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> RedisConsumer: ...
    def start(self) -> None: ...
    def stop(self) -> list[Delivery]:
        """Stop fetching, join the thread, close the buffer; returns unstarted deliveries (not requeued)."""
    def set_queues(self, queues: Sequence[str]) -> None: ...
    def ack_later(self, tags: Sequence[str]) -> None:
        """Hand ``tags`` to the thread to ack before its next fetch; returns at once (failures are retried there)."""
    def settle_acks(self, timeout_s: float) -> bool:
        """Wait (GIL released) until the acks handed over so far were sent; False after ``timeout_s`` or if stopped."""
    @property
    def running(self) -> bool: ...
    @property
    def last_error(self) -> str | None:
        """The last error the thread met (it keeps retrying with backoff), if any."""

# -- the PostgreSQL transport ----------------------------------------------------------------

@final
class PostgresBroker:
    """A PostgreSQL broker: messages, dead letters, results, revocations and the control mailbox in
    tables of one schema (default ``rqueue``), created on first use by versioned migrations.

    A fetch leases a batch in one statement (``FOR UPDATE SKIP LOCKED``); ETAs, leases and expiries
    use the server's clock; statements that make messages available ``NOTIFY`` the schema's channel.
    Connecting fails with BrokerConnectionError; a bad URL or schema raises ConfigurationError; the
    password is masked in every message. TLS as libpq reads the URL (rustls): ``sslmode=verify-full``
    (or ``verify-ca``, checked as strictly) verifies the certificate against ``sslrootcert`` (a PEM file;
    the system's roots without it) and the host; ``sslmode=require`` encrypts without verifying unless
    ``sslrootcert`` is given; other modes connect in plain text.
    """

    def __new__(cls, url: str, schema: str = "rqueue") -> PostgresBroker: ...
    @property
    def url(self) -> str:
        """The URL with its password masked."""
    @property
    def schema(self) -> str: ...
    def publish(self, queue: str, payload: bytes, priority: int = 0, eta_ms: int | None = None) -> None:
        """Insert one message and notify listeners (when it is due now), in one statement."""
    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None:
        """Publish ``(queue, payload, priority, eta_ms)`` items in one statement (all or none)."""
    def fetch(self, queues: Sequence[str], limit: int, owner: str, lease_ms: int) -> list[Delivery]:
        """Atomically lease up to ``limit`` due messages (priority 0 first, then FIFO). GIL released."""
    def ack(self, tags: Sequence[str]) -> int: ...
    def complete(self, rows: Sequence[tuple[str, str, str, bytes, int | None]], tags: Sequence[str]) -> int:
        """Store ``(task_id, status, content_type, payload, ttl_ms)`` records and ack ``tags`` in one
        transaction; returns how many tags were in flight."""
    def requeue(self, tags: Sequence[str]) -> int:
        """Return unstarted leased messages to their queue now (their original place; this delivery is not counted)."""
    def release(self, tags: Sequence[str]) -> int:
        """Return rejected deliveries to their queue; this delivery counts towards ``broker_max_deliveries``."""
    def requeue_owner(self, owner: str, max_deliveries: int = 5) -> int:
        """Return every message leased by ``owner`` (a worker process that died).

        Messages already delivered ``max_deliveries`` times are dead-lettered as ``worker_lost`` instead.
        Returns how many were requeued.
        """
    def leased_tags(self, owner: str) -> list[str]:
        """Tags of the messages ``owner`` holds."""
    def extend_leases(self, owner: str, lease_ms: int, held: list[str]) -> list[str]:
        """Renew the leases of ``held`` (tags ``owner`` holds); returns every tag leased to ``owner``."""
    def sweep_expired(self, max_deliveries: int = 5) -> tuple[int, int]:
        """Return expired leases to their queue; dead-letter those over ``max_deliveries``.

        Returns ``(requeued, dead_lettered)``.
        """
    def lease_of(self, tag: str) -> tuple[str | None, int | None] | None:
        """``(owner, lease_until_ms)`` of a message (server clock), or None when it does not exist."""
    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> None:
        """Move a leased message to the dead-letter table with a reason code and error text."""
    def dead_letters(
        self, queue: str | None = None, limit: int = 100
    ) -> list[tuple[str, str, str, str | None, int, int, bytes]]:
        """``(id, queue, reason, error, deliveries, dead_at_ms, payload)`` rows, oldest first (None: every queue)."""
    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        """Put dead letters of ``queue`` back in it (fresh delivery count); ids of other queues match nothing."""
    def purge_dead(self, queue: str | None = None) -> int: ...
    def purge(self, queues: Sequence[str]) -> int:
        """Delete waiting (not leased) messages of these queues; returns how many."""
    def queue_length(self, queue: str) -> int: ...
    def beat_lease(self, name: str, token: str, ttl_ms: int) -> bool:
        """Take (when free or lapsed) or renew the leader lease of the periodic schedule ``name``
        for ``token``, for ``ttl_ms``; False when another process holds it."""
    def beat_release(self, name: str, token: str) -> bool:
        """Give the lease of ``name`` up if ``token`` holds it; True when it did."""
    def beat_runs(self, name: str) -> list[tuple[str, int]]:
        """``(entry, tick_ms)``: the last tick sent of each entry of the schedule ``name``."""
    def beat_send(
        self,
        name: str,
        token: str,
        entry: str,
        tick_ms: int,
        queue: str,
        payload: bytes,
        priority: int = 0,
        eta_ms: int | None = None,
    ) -> int:
        """Record the tick and publish the message in one atomic step, only if ``token`` holds the
        lease and no tick at or after ``tick_ms`` was sent: 1 sent, 0 not the leader, -1 already sent."""
    def beat_claim(self, name: str, token: str, entry: str, tick_ms: int) -> int:
        """Record the tick like ``beat_send`` without publishing anything (the caller publishes to
        another broker once this returned 1)."""
    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        """Record revoked task ids, kept until ``expires_at_ms``."""
    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        """``(task_id, expires_at_ms)`` of unexpired revocations made at or after ``since_ms``."""
    def mailbox_post(self, channel: str, body: bytes, expires_at_ms: int) -> int:
        """Post ``body`` on a mailbox channel (remote control), kept until ``expires_at_ms``; returns its id."""
    def mailbox_read(self, channel: str, after_id: int) -> list[tuple[int, bytes]]:
        """``(id, body)`` of the unexpired posts on ``channel`` after ``after_id``, oldest first."""
    def mailbox_last_id(self) -> int:
        """The id of the newest mailbox post (0 when none)."""
    def store_results(self, rows: Sequence[tuple[str, str, str, bytes, int | None]]) -> None:
        """Store ``(task_id, status, content_type, payload, ttl_ms)`` records (None: kept forever); SUCCESS is final."""
    def results_seen(self) -> int:
        """The results mark: read it before reading a result, pass it to ``wait_results``."""
    def wait_results(self, seen: int, timeout_s: float) -> None:
        """Wait (GIL released) up to ``timeout_s`` for results stored in this schema by anyone after ``seen``."""
    def read_result(self, task_id: str) -> tuple[str, bytes] | None:
        """``(content_type, payload)`` of an unexpired result, or None."""
    def delete_result(self, task_id: str) -> bool: ...
    def chord_set_size(self, group_id: str, size: int, ttl_ms: int | None = None) -> None:
        """Set the number of header results a chord's body waits for (a new run of the chord)."""
    def chord_add(self, group_id: str, n: int) -> None:
        """Make a chord wait for ``n`` more header results."""
    def chord_part_return(
        self,
        group_id: str,
        member: str,
        index: float,
        payload: bytes,
        ttl_ms: int | None,
        token: str,
        claim_ms: int,
    ) -> tuple[int, int | None, bool] | None:
        """Count one header result (once per member) in one transaction; ``(ready, total, claimed)``,
        or None once the body was fired."""
    def chord_renew_claim(self, group_id: str, token: str, claim_ms: int) -> bool:
        """Keep (or take, once lapsed) the right to fire a chord's body."""
    def chord_parts(self, group_id: str) -> list[bytes]:
        """The counted header results of a chord, in header order."""
    def chord_done(self, group_id: str, token: str, done_ttl_ms: int) -> bool:
        """The body was fired by the holder of ``token``: forget the parts, mark the chord done."""

@final
class PostgresConsumer:
    """A Rust thread that leases batches from PostgreSQL into a PrefetchBuffer.

    Its connection LISTENs for new messages: an idle consumer queries again when notified, when the
    next ETA falls due, or after 1 s at the latest. It renews its leases every ``lease_ms / 3``, sweeps
    expired ones, and reconnects with backoff (10 ms to 1 s) after errors. Start it after any fork.
    """

    def __new__(
        cls,
        url: str,
        queues: Sequence[str],
        owner: str,
        buffer: PrefetchBuffer,
        lease_ms: int = 60000,
        max_deliveries: int = 5,
        schema: str = "rqueue",
    ) -> PostgresConsumer: ...
    def start(self) -> None: ...
    def stop(self) -> list[Delivery]:
        """Stop fetching, join the thread, close the buffer; returns unstarted deliveries (not requeued)."""
    def set_queues(self, queues: Sequence[str]) -> None: ...
    def ack_later(self, tags: Sequence[str]) -> None:
        """Hand ``tags`` to the thread to ack before its next fetch; returns at once (failures are retried there)."""
    def settle_acks(self, timeout_s: float) -> bool:
        """Wait (GIL released) until the acks handed over so far were sent; False after ``timeout_s`` or if stopped."""
    @property
    def running(self) -> bool: ...
    @property
    def last_error(self) -> str | None:
        """The last error the thread met (it keeps retrying with backoff), if any."""

# -- the RabbitMQ transport (Celery's AMQP layout) ---------------------------------------------

@final
class AmqpBroker:
    """A RabbitMQ broker in Celery's layout: publishes with confirms, declares, administers.

    Task messages travel as Celery sends them (AMQP properties, the v2 headers table, the raw body),
    persistent, into durable queues declared as ``topology`` says (JSON: ``queues``,
    ``default_arguments``, ``delayed_queue_type``). Messages due later go through Celery 5.5's delay
    levels (``celery_delayed_*``). Dead letters wait in ``<queue>.rqueue.dead``. Settling deliveries is
    the consumer's (an ack is valid only on the delivering channel). Runs a private I/O thread made
    in the process that creates the handle; the password is masked in every message.
    """

    def __new__(
        cls,
        host: str,
        port: int,
        username: str,
        password: str,
        vhost: str,
        tls: bool = False,
        ca_pem: str | None = None,
        heartbeat_s: int = 60,
        connect_timeout_s: float = 4.0,
        confirm_timeout_s: float = 30.0,
        topology: str = "{}",
    ) -> AmqpBroker: ...
    @property
    def url(self) -> str:
        """The URL with its password masked."""
    def publish(self, queue: str, payload: bytes, priority: int = 0, eta_ms: int | None = None) -> None:
        """Publish an envelope's message and wait for the broker's confirm (a nack, a return or a
        timeout raises BrokerError). The priority is the message's own (RabbitMQ: 9 highest)."""
    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None:
        """Publish ``(queue, payload, priority, eta_ms)`` items in one AMQP transaction (all or none)."""
    def declare(self, queues: Sequence[str]) -> None:
        """Declare these queues, their exchanges and bindings, and the delay levels."""
    def queue_length(self, queue: str) -> int:
        """Ready messages of the queue (0 when it does not exist)."""
    def purge(self, queues: Sequence[str]) -> int: ...
    def delete_queues(self, queues: Sequence[str]) -> int:
        """Delete these queues and their dead-letter queues (those that exist) with their messages;
        returns how many messages went."""
    def dead_letters(
        self, queue: str | None = None, limit: int = 100
    ) -> list[tuple[str, str, str, str | None, int, int, bytes]]:
        """``(id, queue, reason, error, deliveries, dead_at_ms, payload)`` rows, oldest first, left in
        place (None raises ConfigurationError: dead letters are kept per queue)."""
    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        """Put dead letters (by id) back in their queue with a fresh delivery count."""
    def purge_dead(self, queue: str | None = None) -> int: ...
    def declare_transient(
        self,
        exchange: str,
        exchange_type: str,
        queue: str,
        routing_key: str,
        ttl_ms: int,
        expires_ms: int,
        durable_exchange: bool = False,
    ) -> None:
        """Declare an exchange (non-durable unless ``durable_exchange``: flags must match other
        declarers', e.g. Celery's durable ``celeryev``) and (unless ``queue`` is empty) a
        self-deleting queue bound to it."""
    def publish_transient(self, exchange: str, routing_key: str, body: bytes, headers: str) -> None:
        """Publish a transient JSON message with ``headers`` (a JSON object's text)."""
    def listen(self, queue: str) -> None:
        """Start taking the messages of ``queue`` (auto-acked: control messages)."""
    def receive(self, queue: str, timeout_s: float, limit: int) -> list[tuple[bytes, str, str | None, str | None]]:
        """``(body, headers JSON, correlation_id, content_type)`` of a listened queue's messages,
        waiting up to ``timeout_s`` for the first (GIL released)."""
    def ring_on_push(self, queue: str, port: int | None = None) -> None:
        """Announce each message reaching listened ``queue`` with a one-byte UDP datagram to
        127.0.0.1:``port`` (an event loop's wakeup); None stops."""
    def declare_reply_queue(self, queue: str, expires_ms: int | None = None) -> None:
        """Declare an ``rpc://`` client's reply queue as Celery does (durable, auto-delete, ``x-expires``)."""
    def publish_reply(
        self, reply_to: str, correlation_id: str, content_type: str, body: bytes, persistent: bool
    ) -> None:
        """Send one ``rpc://`` state message to ``reply_to`` through the default exchange."""
    def unlisten(self, queue: str) -> None: ...

@final
class AmqpConsumer:
    """A Rust thread taking RabbitMQ's pushed deliveries into a PrefetchBuffer, settling them on
    their channel.

    ``basic.qos`` is the buffer's capacity, per consumer. Tags are ``<generation>.<delivery tag>``;
    after a reconnect, acks of the lost channel's tags are dropped (the broker redelivers them).
    ``Delivery.deliveries`` counts the deliveries that died running (recorded by ``recount``) plus
    this one; past ``max_deliveries`` a message goes to its dead-letter queue (``worker_lost``).
    Start it after any fork.
    """

    def __new__(
        cls,
        broker: AmqpBroker,
        queues: Sequence[str],
        owner: str,
        buffer: PrefetchBuffer,
        max_deliveries: int = 5,
    ) -> AmqpConsumer: ...
    def start(self) -> None: ...
    def stop(self) -> list[Delivery]:
        """Stop consuming; returns unstarted deliveries (still unacked: requeue them)."""
    def set_queues(self, queues: Sequence[str]) -> None: ...
    @property
    def running(self) -> bool: ...
    @property
    def last_error(self) -> str | None: ...
    def ack(self, tags: Sequence[str]) -> int:
        """Acknowledge on the delivering channel (one ``multiple`` ack where safe); returns how many were held."""
    def requeue(self, tags: Sequence[str]) -> int:
        """Return unstarted deliveries, uncounted (republished with their count, then acked)."""
    def close(self) -> None:
        """Close the connection once the acks queued on it were written (after the last settle)."""
    def recount(self, tag: str, died_running: int) -> bool:
        """Put a delivery back (republished, then acked) recording that ``died_running`` of its
        deliveries died with their worker; False when not held here."""
    def dead_letter(self, tag: str, reason: str, error: str | None = None) -> bool:
        """Move a delivery to its dead-letter queue with a reason; False when not held here."""
