"""Awaiting Redis results inside an event loop (``RedisBackend.await_meta``): no thread, and per
backend and loop one pub/sub connection plus at most ``COMMAND_CONNECTIONS`` command connections,
however many results are awaited.

The protocol is the synchronous reader's (``rqueue.backends.redis``): subscribe to the result's
channel, ``GET`` the key once the subscription is confirmed (and after every reconnection), then
take the published record. Here the steps are batched across awaiters: one ``SUBSCRIBE`` names every
channel wanted since the last one, the confirmations read together are checked with one ``MGET``,
and a channel nobody awaits any more is left with one ``UNSUBSCRIBE``. Tasks of the loop do the
work: the *reader* (owns the pub/sub connection: connects, reads, pings while idle, reconnects), and,
while they have work, the *writer* (sends the batched (un)subscriptions) and the *checker* (``MGET``
of confirmed channels).

A channel is *live* from its subscription's confirmation until an ``UNSUBSCRIBE`` of it is sent: a
result awaited on a live channel is checked at once; any other is checked after its (new)
confirmation. Either way the ``GET`` follows both the awaiter's arrival and the subscription, so a
result stored before, while or after subscribing is found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

import redis
import redis.asyncio as aredis

from rqueue import states
from rqueue.backends.waiting import answered, leave
from rqueue.exceptions import BackendError
from rqueue.urls import mask_password, redis_py_url


class RedisResults(Protocol):
    """What the waiter uses of its ``RedisBackend``, named here so the two modules do not import
    each other."""

    url: str
    socket_timeout_s: float
    connect_timeout_s: float
    max_retries: float

    def key(self, task_id: str) -> str: ...

    def _decode(self, task_id: str, data: bytes) -> dict[str, Any]: ...

    def metas(self, task_ids: list[str], values: list[Any]) -> list[dict[str, Any]]: ...


logger = logging.getLogger("rqueue")

#: Command connections (GET/MGET) per backend and loop; the checker uses one at a time.
COMMAND_CONNECTIONS = 2
#: The name of every connection this module opens (``CLIENT LIST`` shows who holds them).
CLIENT_NAME = "rqueue-results-async"
#: An idle pub/sub connection is pinged this often; no answer within as long again: reconnect.
PING_EVERY_S = 15.0
#: Keys per ``MGET``.
MGET_CHUNK = 1000
#: First and longest pause between two reconnection attempts.
RECONNECT_FIRST_S = 0.02
RECONNECT_MAX_S = 1.0
#: How long awaiting goes on through an unreachable Redis before it says so in the log.
UNREACHABLE_WARN_S = 5.0

#: Errors after which the pub/sub connection is rebuilt (or a check is tried again).
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.TimeoutError)


class RedisWaiter:
    """The awaited results of one Redis backend in one event loop."""

    def __init__(self, backend: RedisResults, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.loop = loop
        url, tls = redis_py_url(backend.url)
        options: dict[str, Any] = {
            **tls,
            "socket_timeout": backend.socket_timeout_s,
            "socket_connect_timeout": backend.connect_timeout_s,
            "client_name": CLIENT_NAME,
        }
        if not backend.url.lower().startswith("unix:"):
            options["socket_keepalive"] = True
        self.commands = aredis.Redis(
            connection_pool=aredis.BlockingConnectionPool.from_url(
                url, max_connections=COMMAND_CONNECTIONS, timeout=None, **options
            )
        )
        self._subscriber_pool = aredis.ConnectionPool.from_url(url, **options)
        #: Awaited channel -> the futures of its awaiters.
        self.waiting: dict[bytes, list[asyncio.Future[dict[str, Any]]]] = {}
        #: Channels whose subscription is confirmed and not left since.
        self.live: set[bytes] = set()
        self._conn: Any = None  # the pub/sub connection while it is up
        self._to_subscribe: set[bytes] = set()
        self._to_unsubscribe: set[bytes] = set()
        self._to_check: set[bytes] = set()
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._failures = 0
        self._outage_since = 0.0
        self._warned = False

    # -- awaiting ---------------------------------------------------------------------------------

    async def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        """The ready meta of ``task_id``; TimeoutError after ``timeout`` seconds."""
        channel = self.backend.key(task_id).encode()
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        futures = self.waiting.setdefault(channel, [])
        futures.append(future)
        self._to_unsubscribe.discard(channel)
        if channel in self.live:
            self._want_check(channel)
        else:
            self._to_subscribe.add(channel)
            self._want_write()
        if self._reader is None or self._reader.done():
            self._reader = self.loop.create_task(self._read(), name="rqueue-results-redis-reader")
        try:
            return await answered(future, task_id, timeout)
        finally:
            if leave(self.waiting, channel, future):
                self._to_subscribe.discard(channel)
                self._to_unsubscribe.add(channel)
                self._want_write()

    async def get_meta(self, task_id: str) -> dict[str, Any]:
        """One task's stored meta (PENDING when none), read asynchronously."""
        return (await self.get_many_meta([task_id]))[0]

    async def get_many_meta(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """Several tasks' stored meta with ``MGET``, read asynchronously."""
        metas: list[dict[str, Any]] = []
        backend = self.backend
        for start in range(0, len(task_ids), MGET_CHUNK):
            chunk = task_ids[start : start + MGET_CHUNK]
            try:
                values = await self.commands.mget([backend.key(task_id) for task_id in chunk])
            except redis.RedisError as exc:
                raise BackendError(f"Redis result backend {mask_password(backend.url)}: {exc}") from exc
            metas.extend(backend.metas(chunk, values))
        return metas

    def _answer(self, channel: bytes, data: bytes | None) -> None:
        """A record of ``channel`` was read or published: its awaiters get it when it is ready."""
        futures = self.waiting.get(channel)
        if not futures or data is None:
            return
        task_id = channel.decode()[len(self.backend.key("")) :]
        outcome: dict[str, Any] | BaseException
        try:
            outcome = self.backend._decode(task_id, data)
        except Exception as exc:  # an unreadable record: its awaiters hear why, as get() would raise
            outcome = exc
        if isinstance(outcome, dict) and outcome["status"] not in states.READY_STATES:
            return
        for future in futures:
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _fail_all(self, exc: BaseException) -> None:
        for futures in self.waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)

    # -- the loop's tasks ------------------------------------------------------------------------------

    # The writer and the checker are started when there is work and end when it is done: only the
    # reader lives on (pinging while idle), so a loop's shutdown has one task to cancel, cancelled
    # inside a read.

    def _want_write(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = self.loop.create_task(self._write(), name="rqueue-results-redis-writer")

    def _want_check(self, channel: bytes) -> None:
        self._to_check.add(channel)
        if self._checker is None or self._checker.done():
            self._checker = self.loop.create_task(self._check(), name="rqueue-results-redis-checker")

    async def _read(self) -> None:
        """Own the pub/sub connection: (re)connect, subscribe every awaited channel, read replies."""
        pause = RECONNECT_FIRST_S
        try:
            while True:
                conn = self._subscriber_pool.make_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                try:
                    await conn.connect()
                    self._conn = conn
                    self.live.clear()
                    self._to_unsubscribe.clear()
                    self._to_subscribe = set(self.waiting)  # everything, again: the old subscriptions died
                    self._want_write()
                    self._recovered()
                    pause = RECONNECT_FIRST_S
                    await self._read_replies(conn)
                except _CONNECTION_ERRORS as exc:
                    self._conn = None
                    self.live.clear()
                    self._failed(exc)
                    if not self.waiting:
                        return  # nobody to reconnect for: the next awaiter starts a new reader
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RECONNECT_MAX_S)
                finally:
                    self._conn = None
                    if not self.loop.is_closed():  # else the task is being destroyed: awaiting is not allowed
                        with contextlib.suppress(Exception):
                            await conn.disconnect()
        finally:
            if not self.loop.is_closed():
                with contextlib.suppress(Exception):
                    await self.commands.connection_pool.disconnect()  # the pool is ours: Redis.aclose() leaves it

    async def _read_replies(self, conn: Any) -> None:
        pinged = False
        while True:
            reply = await conn.read_response(timeout=PING_EVERY_S, disconnect_on_error=False, push_request=True)
            if reply is None:  # quiet for a while: is the server still there?
                if pinged:
                    raise redis.ConnectionError(f"no answer to PING within {PING_EVERY_S} s")
                pinged = True
                await conn.send_command("PING", check_health=False)
                continue
            pinged = False
            if not isinstance(reply, list) or len(reply) < 2:
                continue  # +PONG outside subscribe mode
            kind, channel = reply[0], reply[1]
            if kind == b"message" and len(reply) >= 3:
                self._answer(channel, reply[2])
            elif kind == b"subscribe":
                if channel in self.waiting:
                    self.live.add(channel)
                    self._want_check(channel)
            elif kind == b"unsubscribe":
                self.live.discard(channel)

    async def _write(self) -> None:
        """Send the (un)subscriptions wanted since the last write, each kind in one command."""
        await asyncio.sleep(0)  # let this turn's awaiters join the batch
        while self._to_subscribe or self._to_unsubscribe:
            conn = self._conn
            if conn is None or not conn.is_connected:
                return  # the reader subscribes everything awaited once it is connected again
            leave = [c for c in self._to_unsubscribe if c not in self.waiting]
            join = [c for c in self._to_subscribe if c in self.waiting]
            self._to_unsubscribe.clear()
            self._to_subscribe.clear()
            try:
                if leave:
                    self.live.difference_update(leave)
                    await conn.send_command("UNSUBSCRIBE", *leave, check_health=False)
                if join:
                    await conn.send_command("SUBSCRIBE", *join, check_health=False)
            except _CONNECTION_ERRORS:
                # The reader sees the same broken connection, reconnects and subscribes everything.
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                return

    async def _check(self) -> None:
        """``MGET`` the channels confirmed since the last check; retried while Redis is unreachable."""
        pause = RECONNECT_FIRST_S
        while self._to_check:
            channels = [c for c in self._to_check if c in self.waiting]
            self._to_check.clear()
            for start in range(0, len(channels), MGET_CHUNK):
                chunk = channels[start : start + MGET_CHUNK]
                try:
                    values = await self.commands.mget(chunk)
                except _CONNECTION_ERRORS as exc:
                    self._failed(exc)
                    self._to_check.update(chunk)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RECONNECT_MAX_S)
                    continue
                except redis.RedisError as exc:
                    error = BackendError(f"Redis result backend {mask_password(self.backend.url)}: {exc}")
                    for channel in chunk:
                        for future in self.waiting.get(channel, ()):
                            if not future.done():
                                future.set_exception(error)
                    continue
                pause = RECONNECT_FIRST_S
                for channel, data in zip(chunk, values, strict=True):
                    self._answer(channel, data if data is None or isinstance(data, bytes) else data.encode())

    # -- outages: waiting goes on, with a warning, until result_backend_max_retries ---------------------

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failures == 1:
            self._outage_since = time.monotonic()
        url = mask_password(self.backend.url)
        if self._failures > self.backend.max_retries:
            self._fail_all(
                BackendError(
                    f"Redis result backend {url} unreachable ({exc}): gave up waiting after {self._failures - 1} "
                    "retries (result_backend_max_retries); the tasks themselves may still run, and their results "
                    "be stored once the backend is back"
                )
            )
            self._failures = 0
            return
        lasted = time.monotonic() - self._outage_since
        if not self._warned and lasted >= UNREACHABLE_WARN_S and self.waiting:
            self._warned = True
            logger.warning(
                "Awaiting %d result(s): the Redis result backend %s has been unreachable for %.0f s (%s); "
                "still retrying",
                len(self.waiting),
                url,
                lasted,
                exc,
            )

    def _recovered(self) -> None:
        self._failures = 0
        self._warned = False
