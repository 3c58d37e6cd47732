"""Results in Redis, exactly where and how Celery's Redis backend keeps them.

A result is the serialized Celery meta under ``celery-task-meta-<task_id>``, written with an expiry
and published on a channel of the same name. Writers send a whole batch in one pipeline; a small
Lua script per record keeps a stored SUCCESS final. A reader subscribes to a task's channel when
it starts waiting (not when the task is sent: a producer that never waits holds no subscription),
``GET``s once subscribed (and after any reconnect), then waits for the notification, so a result is
never missed and never polled for.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from rqueue import _rqueue, serialization, states
from rqueue.backends.base import CHORD_DONE_KEPT_S, ChordCount, ResultBackend
from rqueue.backends.waiting import LoopLocal
from rqueue.exceptions import BackendError, DecodeError, TimeoutError
from rqueue.urls import mask_password, redis_py_url, redis_server_of

if TYPE_CHECKING:
    from rqueue.backends.redis_async import RedisWaiter

logger = logging.getLogger("rqueue")

#: Celery's key (and channel) prefix of a task's result.
KEY_PREFIX = "celery-task-meta-"
#: With the pickle serializer Lua cannot read a record's status, so SUCCESS is also marked here.
FINAL_PREFIX = "rqueue-task-final-"

#: SET + PUBLISH a record unless the stored one is a SUCCESS (JSON via cjson, msgpack via cmsgpack).
#: KEYS[1] result key, KEYS[2] (pickle only) SUCCESS marker; ARGV: payload, expiry in ms ('' = none), status.
#: The text lives in the Rust transport, which runs it too (``RedisBroker.complete``).
STORE_LUA = _rqueue.REDIS_STORE_RESULT_LUA

#: Celery's key prefix of a group: the saved group itself, and its chord join under suffixes:
#: ``.j`` the header results (a sorted set scored by ``group_index``), ``.s`` the chord size,
#: ``.t`` extra results to wait for (a replaced header task), ``.d`` the members counted,
#: ``.c`` who fires the body (a token with expiry; ``done`` once fired).
GROUP_PREFIX = "celery-taskset-meta-"

#: Count one header result, once per member, and take the right to fire the body when the count
#: is complete and nobody else holds it (the token's holder keeps it): the same keys and steps as
#: Celery 5.7's Redis backend, so a chord's header may finish on Celery and rqueue workers alike.
#: KEYS: .j .t .s .d .c; ARGV: task id, encoded result, ordered (1/0), score, expiry s (0:
#: none), claim s, claim token. Returns {ready, extra, size, claimed}, or {-1} once fired.
CHORD_PART_LUA = """
local jkey, tkey, skey, dkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('GET', ckey) == 'done' then
    return {-1, false, false, 0}
end
local member = ARGV[1] .. ':' .. ARGV[4]
if redis.call('SADD', dkey, member) == 1 then
    if ARGV[3] == '1' then
        redis.call('ZADD', jkey, ARGV[4], ARGV[2])
    else
        redis.call('RPUSH', jkey, ARGV[2])
    end
end
local ready
if ARGV[3] == '1' then
    ready = redis.call('ZCARD', jkey)
else
    ready = redis.call('LLEN', jkey)
end
local expires = tonumber(ARGV[5])
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
end
local extra = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and ready == tonumber(size) + tonumber(extra or 0) then
    if redis.call('GET', ckey) == ARGV[7] then
        redis.call('EXPIRE', ckey, tonumber(ARGV[6]))
        claimed = 1
    elseif redis.call('SET', ckey, ARGV[7], 'NX', 'EX', tonumber(ARGV[6])) then
        claimed = 1
    end
end
return {ready, extra, size, claimed}
"""

#: Keep the right to fire a chord's body, or take it when it lapsed and the chord is not fired.
#: KEYS: .c .s; ARGV: token, claim s. Returns 1 when held.
CHORD_RENEW_LUA = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    return redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
if not current and redis.call('EXISTS', KEYS[2]) == 1 then
    return redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]), 'NX') and 1 or 0
end
return 0
"""

#: The body was fired by the token's holder: drop the join, mark the chord done for a while.
#: KEYS: .c .j .t .s .d; ARGV: token, done s. Returns 1 when the token held the claim.
CHORD_DONE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
    redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
    return 1
end
return 0
"""

#: How long ``get()`` waits through an unreachable backend before it says so in the log.
UNREACHABLE_WARN_S = 5.0

#: Longest time one waiting call holds the pub/sub connection before letting other threads in.
_SLICE_S = 0.1
#: Redis errors after which the pub/sub connection is rebuilt and results are read again.
_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError)

#: Clients made before a fork: kept referenced so the child never closes the parent's sockets.
_INHERITED: list[Any] = []


class _PubSub(PubSub):
    """A PubSub that reports every (re)connection: messages sent meanwhile may have been lost."""

    def __init__(self, connection_pool: Any, backend: RedisBackend) -> None:
        self._backend = backend
        super().__init__(connection_pool, ignore_subscribe_messages=False)

    def on_connect(self, connection: Any) -> None:
        wanted = self._backend._subs
        for channel in list(self.channels):  # never re-subscribe channels we already left
            if channel not in wanted:
                self.channels.pop(channel, None)
        super().on_connect(connection)
        self._backend._connected(list(self.channels))


class RedisBackend(ResultBackend):
    """Celery-compatible results in Redis (``redis://``, ``rediss://`` or ``unix://`` URLs)."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = 10.0,
        connect_timeout_s: float = 4.0,
        health_check_interval_s: int = 25,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.url = url
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.health_check_interval_s = health_check_interval_s
        self._pickle = self.content_type == serialization.PICKLE_CONTENT_TYPE
        self._pid = -1
        self._client: redis.Redis | None = None
        self._reset_process_state()
        self.client  # noqa: B018 - parse the URL now: a bad one fails at configuration, not at first use

    # -- connections ----------------------------------------------------------------------------

    def _reset_process_state(self) -> None:
        if self._client is not None:
            _INHERITED.extend(h for h in (self._client, self._pubsub) if h is not None)
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._client = None
        self._pubsub: _PubSub | None = None
        self._broken = False  # the pub/sub connection failed: rebuild it before the next use
        self._subs: set[bytes] = set()  # channels of results someone waits for
        self._pending: dict[bytes, int] = {}  # subscribe/unsubscribe replies not read yet, per channel
        self._cache: dict[bytes, bytes] = {}  # the last message of each subscribed channel, not consumed yet
        self._generation = 0  # bumped on every (re)connection of the pub/sub connection

    def _check_pid(self) -> None:
        """A client made before ``fork()`` is never used in the child."""
        if self._pid != os.getpid():
            self._reset_process_state()

    @property
    def client(self) -> redis.Redis:
        """The redis-py client of this process (commands other than pub/sub)."""
        self._check_pid()
        if self._client is None:
            tcp: dict[str, Any] = {} if self.url.lower().startswith("unix:") else {"socket_keepalive": True}
            url, tls = redis_py_url(self.url)
            self._client = redis.Redis.from_url(
                url,
                **tls,
                socket_timeout=self.socket_timeout_s,
                socket_connect_timeout=self.connect_timeout_s,
                **tcp,
                health_check_interval=self.health_check_interval_s,
                retry_on_timeout=True,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
            )
        return self._client

    def key(self, task_id: str) -> str:
        """The key (and pub/sub channel) of a task's result."""
        return f"{KEY_PREFIX}{task_id}"

    # -- writing --------------------------------------------------------------------------------

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        """SET (with expiry) and PUBLISH every record, in one pipeline; a stored SUCCESS is final."""
        if items:
            with _as_backend_error(self.url):
                self._write_batch(items)

    def shares_store_with(self, broker_url: str) -> bool:
        """True when ``broker_url`` surely names this backend's Redis server and database."""
        mine = redis_server_of(self.url)
        return mine is not None and mine == redis_server_of(broker_url)

    def _write_batch(self, items: list[tuple[str, str, bytes]]) -> None:
        self._eval_pipeline([self._store_call(items)])

    def _store_call(self, items: list[tuple[str, str, bytes]]) -> tuple[str, list[Any]]:
        """One STORE_LUA call (text, ``EVALSHA`` arguments after the sha) storing every record."""
        ttl_ms = self.ttl_ms
        keys = [self.key(task_id) for task_id, _, _ in items]
        if self._pickle:
            keys += [f"{FINAL_PREFIX}{task_id}" for task_id, _, _ in items]
        args: list[Any] = ["" if ttl_ms is None else str(ttl_ms)]
        for _, status, payload in items:
            args += (payload, status)
        return STORE_LUA, [len(keys), *keys, *args]

    def _eval_pipeline(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Run ``(script text, EVALSHA arguments)`` calls in one pipeline; scripts the server lacks
        (a new or flushed server) are loaded and their calls sent again. The replies, in order."""
        client = self.client
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(3):
            pipe = client.pipeline(transaction=False)
            for i in todo:
                text, args = calls[i]
                pipe.evalsha(_sha(text), *args)
            answers = pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError):
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    replies[i] = answer
            if not missing:
                return replies
            for text in {calls[i][0] for i in missing}:
                client.script_load(text)
            todo = missing
        raise RuntimeError("Redis keeps refusing rqueue's scripts (SCRIPT FLUSH in a loop?)")

    # -- reading --------------------------------------------------------------------------------

    def _read(self, task_id: str) -> tuple[bytes, str] | None:
        with _as_backend_error(self.url):
            data = self.client.get(self.key(task_id))
        if data is None:
            return None
        return (data if isinstance(data, bytes) else data.encode()), self.content_type

    def _delete(self, task_id: str) -> None:
        with _as_backend_error(self.url):
            self.client.delete(self.key(task_id), f"{FINAL_PREFIX}{task_id}")

    def get_many_meta(self, task_ids: Any) -> list[dict[str, Any]]:
        """Several tasks' meta with ``MGET`` (in slices of 1,000 keys)."""
        ids = list(task_ids)
        metas: list[dict[str, Any]] = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            with _as_backend_error(self.url):
                values = self.client.mget([self.key(task_id) for task_id in chunk])
            metas.extend(self.metas(chunk, values))
        return metas

    def metas(self, task_ids: list[str], values: list[Any]) -> list[dict[str, Any]]:
        """Each task's meta from what its key holds (an ``MGET``'s values): PENDING when nothing."""
        return [
            {"status": states.PENDING, "result": None, "traceback": None, "task_id": task_id}
            if data is None
            else self._decode(task_id, data if isinstance(data, bytes) else data.encode())
            for task_id, data in zip(task_ids, values, strict=True)
        ]

    # -- groups and chords (Celery's keys) ---------------------------------------------------------

    supports_chords = True
    #: Header results are kept in a sorted set by header position: Celery's default
    #: (``result_chord_ordered``); its list form (that option off) is not written by rqueue.
    chord_ordered = True

    def _group_key(self, group_id: str, suffix: str = "") -> str:
        return f"{GROUP_PREFIX}{group_id}{suffix}"

    def _write_group(self, group_id: str, payload: bytes) -> None:
        with _as_backend_error(self.url):
            self.client.set(self._group_key(group_id), payload, px=self.ttl_ms)

    def _read_group(self, group_id: str) -> bytes | None:
        with _as_backend_error(self.url):
            data = self.client.get(self._group_key(group_id))
        return data if data is None or isinstance(data, bytes) else data.encode()

    def _delete_group(self, group_id: str) -> None:
        with _as_backend_error(self.url):
            self.client.delete(self._group_key(group_id))

    def set_chord_size(self, group_id: str, size: int) -> None:
        """Celery's ``set_chord_size``: a new run of the chord (any claim cleared), its size in ``.s``."""
        with _as_backend_error(self.url):
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self._group_key(group_id, ".c"))
            pipe.set(self._group_key(group_id, ".s"), size, ex=self.chord_ttl_s)
            pipe.execute()

    def add_to_chord(self, group_id: str, n: int) -> None:
        with _as_backend_error(self.url):
            self.client.incrby(self._group_key(group_id, ".t"), n)

    def count_chord_parts(
        self,
        items: Any,
        token: str,
        claim_s: int,
        results: list[tuple[str, str, bytes]],
    ) -> list[ChordCount | None]:
        """Results and counts in one pipeline (one round trip)."""
        calls: list[tuple[str, list[Any]]] = [self._store_call(results)] if results else []
        stored = len(calls)
        ttl_s = self.chord_ttl_s or 0
        for group_id, member, index, part in items:
            keys = [self._group_key(group_id, suffix) for suffix in (".j", ".t", ".s", ".d", ".c")]
            score = "+inf" if index == float("inf") else repr(index)
            args = [member, part, "1" if self.chord_ordered else "0", score, ttl_s, claim_s, token]
            calls.append((CHORD_PART_LUA, [len(keys), *keys, *args]))
        with _as_backend_error(self.url):
            replies = self._eval_pipeline(calls)
        counts: list[ChordCount | None] = []
        for ready, extra, size, claimed in replies[stored:]:
            if ready == -1:
                counts.append(None)
            else:
                total = None if size is None else int(size) + int(extra or 0)
                counts.append(ChordCount(int(ready), total, bool(claimed)))
        return counts

    def chord_renew_claim(self, group_id: str, token: str, claim_s: int) -> bool:
        keys = [self._group_key(group_id, ".c"), self._group_key(group_id, ".s")]
        with _as_backend_error(self.url):
            return bool(self._run_script(CHORD_RENEW_LUA, keys, [token, claim_s]))

    def chord_parts(self, group_id: str) -> list[bytes]:
        key = self._group_key(group_id, ".j")
        with _as_backend_error(self.url):
            parts: Any = self.client.zrange(key, 0, -1) if self.chord_ordered else self.client.lrange(key, 0, -1)
        return [p if isinstance(p, bytes) else str(p).encode() for p in parts]

    def chord_done(self, group_id: str, token: str) -> bool:
        keys = [self._group_key(group_id, suffix) for suffix in (".c", ".j", ".t", ".s", ".d")]
        with _as_backend_error(self.url):
            return bool(self._run_script(CHORD_DONE_LUA, keys, [token, CHORD_DONE_KEPT_S]))

    def _run_script(self, text: str, keys: list[str], args: list[Any]) -> Any:
        return self._eval_pipeline([(text, [len(keys), *keys, *args])])[0]

    def get_meta(self, task_id: str) -> dict[str, Any]:
        meta = super().get_meta(task_id)
        if meta["status"] in states.READY_STATES:
            channel = self.key(task_id).encode()
            if channel in self._subs:  # read by polling: nobody waits for its message now
                self._leave(channel)
        return meta

    def _decode(self, task_id: str, data: bytes) -> dict[str, Any]:
        meta = serialization.loads(data, self.content_type, self.accept)
        if not isinstance(meta, dict) or "status" not in meta:
            raise DecodeError(f"result of task {task_id} is not a result record: {meta!r:.200}")
        return meta

    # -- waiting --------------------------------------------------------------------------------

    def wait_for(self, task_id: str, timeout: float | None, interval: float = 0.5) -> dict[str, Any]:
        """The task's ready meta, from its pub/sub notification or a ``GET``; TimeoutError after ``timeout``.

        ``GET`` runs once the subscription is confirmed, and again after every reconnection, so a
        result written before or while subscribing, or during an outage, is still found.
        """
        channel = self.key(task_id).encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        fetched = -1  # the connection generation of the last GET
        backoff = 0.02
        outage = _Outage(self, task_id)
        try:
            while True:
                self._check_pid()
                with self._lock:
                    try:
                        self._join(channel)
                        meta = self._take(task_id, channel)
                        if meta is None and self._pending.get(channel):
                            self._pump(0.0)  # replies already received (usually the confirmation)
                            meta = self._take(task_id, channel)
                        if meta is not None:
                            return meta
                        expired = deadline is not None and time.monotonic() >= deadline
                        if fetched != self._generation and (not self._pending.get(channel) or expired):
                            fetched = self._generation
                            meta = super().get_meta(task_id)
                            if meta["status"] in states.READY_STATES:
                                return meta
                        if deadline is not None and time.monotonic() >= deadline:
                            raise TimeoutError(f"the result of task {task_id} was not ready within {timeout} s")
                        remaining = _SLICE_S if deadline is None else min(_SLICE_S, deadline - time.monotonic())
                        self._pump(max(remaining, 0.0))
                        backoff = 0.02
                        outage.over()
                        continue
                    except _CONNECTION_ERRORS as exc:
                        self._broken = True
                        outage.failed(exc)
                # Redis is unreachable: retry (re-subscribe, GET) after a pause, never past the deadline.
                pause = backoff
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(
                            f"the result of task {task_id} was not ready within {timeout} s (Redis unreachable)"
                        )
                    pause = min(pause, left)
                time.sleep(pause)
                backoff = min(backoff * 2, 1.0)
        finally:
            self._leave(channel)

    # -- awaiting inside an event loop (``rqueue.backends.redis_async``) ------------------------------

    async def await_meta(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        """The task's ready meta, awaited on the loop's shared pub/sub connection (no thread)."""
        return await self._redis_waiters.get().wait(task_id, timeout)

    async def aget_meta(self, task_id: str) -> dict[str, Any]:
        return await self._redis_waiters.get().get_meta(task_id)

    async def aget_many_meta(self, task_ids: Any) -> list[dict[str, Any]]:
        return await self._redis_waiters.get().get_many_meta(list(task_ids))

    @functools.cached_property
    def _redis_waiters(self) -> LoopLocal[RedisWaiter]:
        from rqueue.backends.redis_async import RedisWaiter  # noqa: PLC0415 - redis.asyncio only for async callers

        return LoopLocal(lambda loop: RedisWaiter(self, loop))

    # -- pub/sub (callers hold self._lock) --------------------------------------------------------

    def _join(self, channel: bytes) -> None:
        """Subscribe to ``channel`` (and, after a failure, to every wanted channel on a new connection)."""
        if self._pubsub is None or self._broken:
            self._subs.add(channel)
            if self._pubsub is not None:
                self._pubsub.reset()  # drops the connection and redis-py's own channel list
            self._pending.clear()
            self._generation += 1  # a new connection: what was published meanwhile is read again (GET)
            self._pubsub = _PubSub(self.client.connection_pool, self)
            subs = sorted(self._subs)
            self._pubsub.subscribe(*subs)
            for ch in subs:
                self._pending[ch] = self._pending.get(ch, 0) + 1
            self._broken = False
        elif channel not in self._subs:
            self._subs.add(channel)
            self._pubsub.subscribe(channel)
            self._pending[channel] = self._pending.get(channel, 0) + 1

    def _leave(self, channel: bytes) -> None:
        """Stop listening on ``channel``; its cached message is dropped."""
        self._check_pid()
        with self._lock:
            self._cache.pop(channel, None)
            if channel not in self._subs:
                return
            self._subs.discard(channel)
            if self._pubsub is None or self._broken:
                return
            try:
                pubsub: Any = self._pubsub  # redis-py leaves unsubscribe() unannotated
                pubsub.unsubscribe(channel)
                self._pending[channel] = self._pending.get(channel, 0) + 1
            except _CONNECTION_ERRORS:
                self._broken = True

    def _connected(self, channels: list[bytes]) -> None:
        """The pub/sub connection was (re)made and ``channels`` were subscribed again on it."""
        self._generation += 1
        self._pending = dict.fromkeys(channels, 1)

    def _pump(self, timeout: float) -> None:
        """Read what the pub/sub connection has (waiting up to ``timeout`` for the first message)."""
        assert self._pubsub is not None
        wait = timeout
        for _ in range(10_000):
            message = self._pubsub.get_message(timeout=wait)
            if message is None:
                return
            wait = 0.0
            kind = message["type"]
            channel = message["channel"]
            if kind in ("subscribe", "unsubscribe"):
                left = self._pending.get(channel, 0) - 1
                if left > 0:
                    self._pending[channel] = left
                else:
                    self._pending.pop(channel, None)
            elif kind == "message" and channel in self._subs:
                self._cache[channel] = message["data"]

    def _take(self, task_id: str, channel: bytes) -> dict[str, Any] | None:
        """The ready meta of a received notification, if any (a non-ready one is dropped)."""
        data = self._cache.pop(channel, None)
        if data is None:
            return None
        meta = self._decode(task_id, data)
        return meta if meta["status"] in states.READY_STATES else None


class _Outage:
    """One ``get()``'s view of an unreachable backend: a warning once it lasted UNREACHABLE_WARN_S,
    BackendError after ``result_backend_max_retries`` retries."""

    def __init__(self, backend: RedisBackend, task_id: str) -> None:
        self.backend, self.task_id = backend, task_id
        self.failures, self.since, self.warned = 0, 0.0, False

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            self.since = time.monotonic()
        url = mask_password(self.backend.url)
        if self.failures > self.backend.max_retries:
            raise BackendError(
                f"Redis result backend {url} unreachable ({exc}): gave up waiting for task {self.task_id} after "
                f"{self.failures - 1} retries (result_backend_max_retries); the task itself may still run, and "
                "its result be stored once the backend is back"
            ) from exc
        lasted = time.monotonic() - self.since
        if not self.warned and lasted >= UNREACHABLE_WARN_S:
            self.warned = True
            logger.warning(
                "Waiting for the result of task %s: the Redis result backend %s has been unreachable for %.0f s "
                "(%s); still retrying",
                self.task_id,
                url,
                lasted,
                exc,
            )

    def over(self) -> None:
        self.failures = 0


@functools.cache
def _sha(text: str) -> str:
    """The SHA1 Redis names a script by."""
    return hashlib.sha1(text.encode()).hexdigest()


@contextmanager
def _as_backend_error(url: str) -> Iterator[None]:
    """redis-py's errors leave as BackendError (the worker waits those out), password masked."""
    try:
        yield
    except redis.RedisError as exc:
        raise BackendError(f"Redis result backend {mask_password(url)}: {exc}") from exc
