"""Results in memcached (``cache+memcached://host:port/``, Celery's URL and key format).

Each result is the key ``celery-task-meta-<task_id>`` holding the serialized Celery meta, set with
``result_expires`` as its expiry, as Celery's cache backend writes it, so either side reads the other's
results. A stored SUCCESS is final here too (check-and-set). memcached is a cache: it may evict any
result before it expires when its memory is full, and it forgets everything on restart; it cannot
join chords (a clear error). Values over memcached's item size limit (1 MiB by default) are refused
with a BackendError naming the task.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rqueue import serialization, states
from rqueue.backends.base import ResultBackend
from rqueue.exceptions import BackendError, ConfigurationError, DecodeError
from rqueue.urls import mask_password

#: Celery's key prefixes (``KeyValueStoreBackend``).
TASK_KEY_PREFIX = "celery-task-meta-"
GROUP_KEY_PREFIX = "celery-taskset-meta-"
#: memcached reads an expiry above 30 days as an absolute Unix time, not a number of seconds.
RELATIVE_EXPIRY_MAX_S = 30 * 24 * 3600
#: Seconds to connect and to wait for a reply.
TIMEOUT_S = 5.0
#: How often a check-and-set write is tried again when another writer changed the key in between.
CAS_TRIES = 5
DEFAULT_PORT = 11211


def memcached_servers(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` servers of a ``cache+memcached://h1:p1;h2:p2/`` URL (Celery's spelling)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("cache+memcached", "memcached"):
        raise ConfigurationError(f"result_backend: {mask_password(url)!r} is not a cache+memcached:// URL")
    location = rest.split("/", 1)[0]
    servers = []
    for part in filter(None, location.split(";")):
        host, colon, port = part.rpartition(":")
        if not colon:
            host, port = part, str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"result_backend: {part!r} in {mask_password(url)!r} is not host:port")
        servers.append((host.strip("[]"), int(port)))
    if not servers:
        raise ConfigurationError(
            f"result_backend: {mask_password(url)!r} names no server; write cache+memcached://host:11211/"
        )
    return servers


def _pymemcache() -> Any:
    try:
        import pymemcache  # noqa: PLC0415 - optional (rqueue[memcached])
        from pymemcache.client.hash import HashClient  # noqa: PLC0415
    except ImportError:
        raise ConfigurationError(
            "the memcached result backend needs pymemcache, which is not installed: pip install 'rqueue[memcached]'"
        ) from None
    return pymemcache, HashClient


class MemcachedBackend(ResultBackend):
    """Result records in memcached under Celery's keys, expiring with ``result_expires``."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(**options)
        self.url = url
        self.servers = memcached_servers(url)
        self._module, hash_client = _pymemcache()
        self._client = hash_client(
            self.servers, connect_timeout=TIMEOUT_S, timeout=TIMEOUT_S, ignore_exc=False, retry_attempts=1
        )

    @property
    def _expire(self) -> int:
        """The expiry argument of a write: seconds, an absolute time past 30 days, 0 for never."""
        if self.expires_s is None or self.expires_s <= 0:
            return 0
        if self.expires_s > RELATIVE_EXPIRY_MAX_S:
            return int(time.time() + self.expires_s)
        return max(1, int(self.expires_s))

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The client's errors as BackendError, naming the server(s) and what was being done."""
        mod = self._module
        try:
            yield
        except mod.exceptions.MemcacheError as exc:
            raise BackendError(f"memcached at {mask_password(self.url)}: {what}: {exc}") from exc
        except OSError as exc:
            raise BackendError(
                f"memcached at {mask_password(self.url)}: {what}: {exc}; is memcached running there?"
            ) from exc

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        # The stored record's own status decides whether a write may replace it (check-and-set).
        for task_id, _status, payload in items:
            self._write(TASK_KEY_PREFIX + task_id, task_id, payload)

    def _write(self, key: str, task_id: str, payload: bytes) -> None:
        """Set ``key`` unless it holds a SUCCESS (final), with check-and-set against concurrent writers."""
        with self._errors(f"storing the result of task {task_id} ({len(payload)} bytes)"):
            for _ in range(CAS_TRIES):
                value, token = self._client.gets(key)
                if value is None:
                    if self._client.add(key, payload, expire=self._expire, noreply=False):
                        return
                    continue
                if self._is_success(value):
                    return
                if self._client.cas(key, payload, token, expire=self._expire, noreply=False):
                    return
            raise BackendError(
                f"memcached at {mask_password(self.url)}: the result of task {task_id} kept changing "
                f"under {CAS_TRIES} check-and-set writes"
            )

    def _is_success(self, value: bytes) -> bool:
        try:
            meta = serialization.loads(value, self.content_type, self.accept)
        except DecodeError:
            return False
        return isinstance(meta, dict) and meta.get("status") == states.SUCCESS

    def _read(self, task_id: str) -> tuple[bytes, str] | None:
        with self._errors(f"reading the result of task {task_id}"):
            value = self._client.get(TASK_KEY_PREFIX + task_id)
        return None if value is None else (bytes(value), self.content_type)

    def _delete(self, task_id: str) -> None:
        with self._errors(f"deleting the result of task {task_id}"):
            self._client.delete(TASK_KEY_PREFIX + task_id, noreply=False)

    def _write_group(self, group_id: str, payload: bytes) -> None:
        with self._errors(f"storing group {group_id}"):
            self._client.set(GROUP_KEY_PREFIX + group_id, payload, expire=self._expire, noreply=False)

    def _read_group(self, group_id: str) -> bytes | None:
        with self._errors(f"reading group {group_id}"):
            value = self._client.get(GROUP_KEY_PREFIX + group_id)
        return None if value is None else bytes(value)

    def _delete_group(self, group_id: str) -> None:
        with self._errors(f"deleting group {group_id}"):
            self._client.delete(GROUP_KEY_PREFIX + group_id, noreply=False)
