"""The Redis broker: kombu's key layout, driven by ``_rqueue.RedisBroker`` (Rust, GIL released).

Messages, leases, ETA sets and dead letters are handled in Rust. Revocations (read about once a
second, not on the hot path) use redis-py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rqueue import _rqueue
from rqueue.brokers.base import NativeBroker
from rqueue.exceptions import BrokerError, ConfigurationError
from rqueue.urls import mask_password, redis_py_url

if TYPE_CHECKING:
    from rqueue.backends.base import ResultBackend
    from rqueue.backends.redis import RedisBackend

#: Revocations: a sorted set of task ids scored by when they were revoked, and their expiries.
REVOKED_KEY = "rqueue.revoked"
REVOKED_EXPIRES_KEY = "rqueue.revoked.expires"
#: The set of delivery tags a worker process holds (kept by the transport's scripts).
OWNED_PREFIX = "rqueue.owned."

_INHERITED: list[Any] = []


class RedisBroker(NativeBroker):
    """Messages in Redis lists, exactly where Celery's kombu transport puts them."""

    def __init__(
        self, url: str, *, global_keyprefix: str = "", connect_timeout_s: float = 4.0, socket_timeout_s: float = 10.0
    ) -> None:
        redis_py_url(url)  # a bad TLS option fails at configuration, not at first use
        self.url = url
        self.global_keyprefix = global_keyprefix
        self.connect_timeout_s = connect_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self._native: _rqueue.RedisBroker | None = None
        self._client: Any = None
        self._pid = -1
        self._shares_server: dict[str, bool] = {}  # backend URL -> same Redis server and db as ours

    def _fresh(self) -> bool:
        """True when the handles were made in this process (a fork makes them stale)."""
        if self._pid != os.getpid():
            # Never close sockets inherited over fork: the parent still uses them.
            _INHERITED.extend(h for h in (self._native, self._client) if h is not None)
            self._native = self._client = None
            self._pid = os.getpid()
        return True

    @property
    def native(self) -> _rqueue.RedisBroker:
        self._fresh()
        if self._native is None:
            self._native = _rqueue.RedisBroker(
                self.url,
                global_keyprefix=self.global_keyprefix,
                socket_timeout_s=self.socket_timeout_s,
                connect_timeout_s=self.connect_timeout_s,
            )
        return self._native

    @property
    def client(self) -> Any:
        """A redis-py client for the broker's database (control data, not messages)."""
        self._fresh()
        if self._client is None:
            try:
                import redis
            except ImportError:  # pragma: no cover - redis is installed with rqueue[redis]
                raise ConfigurationError("the Redis broker needs redis-py: pip install 'rqueue[redis]'") from None
            url, tls = redis_py_url(self.url)
            self._client = redis.Redis.from_url(
                url,
                **tls,
                socket_timeout=self.socket_timeout_s,
                socket_connect_timeout=self.connect_timeout_s,
                health_check_interval=30,
            )
        return self._client

    # -- messages ------------------------------------------------------------------------------------

    def consumer(
        self,
        queues: Sequence[str],
        owner: str,
        buffer: _rqueue.PrefetchBuffer,
        lease_s: float,
        max_deliveries: int,
        poll_max_ms: int,
    ) -> _rqueue.RedisConsumer:
        return _rqueue.RedisConsumer(
            self.url,
            list(queues),
            owner,
            buffer,
            lease_ms=int(lease_s * 1000),
            max_deliveries=max_deliveries,
            poll_max_ms=min(poll_max_ms, 20),
            global_keyprefix=self.global_keyprefix,
        )

    def prepare_consumer(self, queues: Sequence[str], allow_eviction: bool) -> None:
        """Declare kombu bindings for the queues, and refuse a server that may evict messages."""
        policy = self.native.check_maxmemory_policy()
        if policy is not None and not allow_eviction:
            raise ConfigurationError(
                f"Redis at {mask_password(self.url)} has maxmemory-policy {policy!r}: it may evict queued "
                "messages under memory pressure. Set it to noeviction (CONFIG SET maxmemory-policy noeviction), "
                "or start the worker with --allow-eviction to accept the risk"
            )
        self.native.declare_bindings(list(queues))

    def complete(self, backend: ResultBackend, results: list[tuple[str, str, bytes]], tags: Sequence[str]) -> None:
        """Store results and ack in ONE round trip when the backend is Redis on our server and db.

        Results go where ``RedisBackend`` writes them (Celery's keys, never prefixed; the same Lua
        script), then the acks run, in one pipeline. Otherwise the backend writes, then we ack.
        """
        shared = self._shared_backend(backend) if results else None
        if shared is not None:
            self.native.complete(shared.rows(results), tags)
        else:
            super().complete(backend, results, tags)

    def _shared_backend(self, backend: ResultBackend) -> RedisBackend | None:
        """``backend`` when it is a RedisBackend on this broker's Redis server and database."""
        module = sys.modules.get("rqueue.backends.redis")  # not imported: backend cannot be one
        if module is None or not isinstance(backend, module.RedisBackend):
            return None
        same = self._shares_server.get(backend.url)
        if same is None:
            same = self._shares_server[backend.url] = backend.same_server(self.url)
        return backend if same else None

    def leased_tags(self, owner: str) -> list[str]:
        with self._as_broker_error():
            tags = self.client.smembers(f"{self.global_keyprefix}{OWNED_PREFIX}{owner}")
        return [t.decode() for t in tags]

    def requeue_dead(self, queue: str, ids: Sequence[str]) -> int:
        return self.native.requeue_dead(queue, ids)

    def purge_dead(self, queue: str) -> int:
        return self.native.purge_dead(queue)

    # -- revocations -----------------------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], expires_at_ms: int) -> None:
        import time

        now_ms = int(time.time() * 1000)
        prefix = self.global_keyprefix
        with self._as_broker_error():
            pipe = self.client.pipeline(transaction=True)
            pipe.zadd(prefix + REVOKED_KEY, dict.fromkeys(task_ids, now_ms))
            pipe.hset(prefix + REVOKED_EXPIRES_KEY, mapping=dict.fromkeys(task_ids, expires_at_ms))
            pipe.execute()

    def revoked_since(self, since_ms: int) -> list[tuple[str, int]]:
        prefix = self.global_keyprefix
        with self._as_broker_error():
            ids = [i.decode() for i in self.client.zrangebyscore(prefix + REVOKED_KEY, since_ms, "+inf")]
            expiries = self.client.hmget(prefix + REVOKED_EXPIRES_KEY, ids) if ids else []
        return [(i, int(e)) for i, e in zip(ids, expiries, strict=True) if e is not None]

    @contextmanager
    def _as_broker_error(self) -> Iterator[None]:
        """redis-py's errors leave as BrokerError, like the extension's, with the password masked."""
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise BrokerError(f"Redis broker {mask_password(self.url)}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<RedisBroker {mask_password(self.url)}>"
