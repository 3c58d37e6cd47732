"""Result backends: where task states and return values are kept."""

from __future__ import annotations

from rqueue.backends.base import DisabledBackend, ResultBackend, ResultRecord
from rqueue.backends.sqlite import SqliteBackend
from rqueue.exceptions import ConfigurationError
from rqueue.urls import scheme_of, sqlite_path


def open_backend(
    url: str | None, *, serializer: str, accept: list[str], expires_s: float | None, extended: bool
) -> ResultBackend:
    """The backend for ``url``; None gives the DisabledBackend."""
    if url is None:
        return DisabledBackend()
    scheme = scheme_of(url, "result_backend")
    if scheme == "sqlite":
        return SqliteBackend(
            sqlite_path(url, "result_backend"),
            serializer=serializer,
            accept=accept,
            expires_s=expires_s,
            extended=extended,
        )
    if scheme in ("redis", "rediss", "unix"):
        try:
            from rqueue.backends.redis import RedisBackend
        except ImportError as exc:  # pragma: no cover - redis-py comes with rqueue[redis]
            raise ConfigurationError(
                f"the Redis result backend needs redis-py: pip install 'rqueue[redis]' ({exc})"
            ) from None
        return RedisBackend(url, serializer=serializer, accept=accept, expires_s=expires_s, extended=extended)
    raise AssertionError(f"scheme_of accepted {scheme!r} without a backend for it")


__all__ = ["DisabledBackend", "ResultBackend", "ResultRecord", "SqliteBackend", "open_backend"]
