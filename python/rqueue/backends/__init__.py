"""Result backends: where task states and return values are kept. ``open_backend`` picks one by
the URL's scheme (``BACKENDS``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rqueue.backends.base import DisabledBackend, ResultBackend, ResultRecord
from rqueue.backends.postgres import PostgresBackend
from rqueue.backends.rpc import RpcBackend
from rqueue.backends.sqlite import SqliteBackend
from rqueue.exceptions import ConfigurationError
from rqueue.urls import Schemes, sqlite_path

if TYPE_CHECKING:
    from rqueue.brokers.base import Broker


def _sqlite(url: str, broker: Callable[[], Broker] | None, **options: Any) -> ResultBackend:
    return SqliteBackend(sqlite_path(url, "result_backend"), **options)


def _db_sqlite(url: str, broker: Callable[[], Broker] | None, **options: Any) -> ResultBackend:
    # Celery's SQLAlchemy spelling of an SQLite file: the same file as sqlite:///.
    return SqliteBackend(sqlite_path(url.removeprefix("db+"), "result_backend"), **options)


def _postgres(url: str, broker: Callable[[], Broker] | None, **options: Any) -> ResultBackend:
    return PostgresBackend(url, **options)


def _memcached(url: str, broker: Callable[[], Broker] | None, **options: Any) -> ResultBackend:
    from rqueue.backends.memcached import MemcachedBackend  # noqa: PLC0415 - pymemcache is optional

    return MemcachedBackend(url, **options)


def _rpc(url: str, broker: Callable[[], Broker] | None, **options: Any) -> ResultBackend:
    if url.rstrip("/") != "rpc:":
        raise ConfigurationError(f"result_backend: {url!r} takes no host or options; write rpc://")
    if broker is None:
        raise ConfigurationError("result_backend rpc:// sends results through the app's broker: open it through an App")
    return RpcBackend(broker, **options)


def _redis(url: str, broker: Callable[[], Broker] | None, **options: Any) -> ResultBackend:
    try:
        from rqueue.backends.redis import RedisBackend  # noqa: PLC0415 - redis-py is optional (rqueue[redis])
    except ImportError as exc:  # pragma: no cover - redis-py comes with rqueue[redis]
        raise ConfigurationError(
            f"the Redis result backend needs redis-py: pip install 'rqueue[redis]' ({exc})"
        ) from None
    return RedisBackend(url, **options)


#: Every result backend scheme: a new backend is one line here.
BACKENDS: Schemes[ResultBackend] = Schemes(
    "result_backend",
    {
        "sqlite": ("SQLite file (sqlite:///relative.db or sqlite:////absolute.db)", _sqlite),
        "redis": ("Redis (redis://[user:password@]host[:port][/db])", _redis),
        "rediss": ("Redis over TLS (rediss://host:port/db?ssl_cert_reqs=required)", _redis),
        "unix": ("Redis over a unix socket (unix:///path/redis.sock?db=N)", _redis),
        "rpc": ("states sent back to the client that sent the task (rpc://; RabbitMQ brokers only)", _rpc),
        "postgresql": ("PostgreSQL (postgresql://[user:password@]host[:port]/database[?schema=rqueue])", _postgres),
        "postgres": ("PostgreSQL, libpq's short name (postgres://... as postgresql://...)", _postgres),
        "db+postgresql": ("PostgreSQL, Celery's SQLAlchemy spelling (db+postgresql://...)", _postgres),
        "db+postgres": ("PostgreSQL, Celery's SQLAlchemy spelling (db+postgres://...)", _postgres),
        "db+sqlite": ("SQLite file, Celery's SQLAlchemy spelling (db+sqlite:///results.db)", _db_sqlite),
        "cache+memcached": ("memcached, Celery's key format (cache+memcached://host:11211[;host2:11211]/)", _memcached),
    },
    planned={"mongodb": "MongoDB", "mongodb+srv": "MongoDB"},
)


def open_backend(  # noqa: PLR0913 - each backend setting named
    url: str | None,
    *,
    broker: Callable[[], Broker] | None = None,
    serializer: str,
    accept: list[str],
    expires_s: float | None,
    extended: bool,
    max_retries: float = float("inf"),
) -> ResultBackend:
    """The backend for ``url`` (``broker`` gives the app's broker, for ``rpc://``); None gives the DisabledBackend."""
    if url is None:
        return DisabledBackend()
    return BACKENDS.open(
        url,
        broker=broker,
        serializer=serializer,
        accept=accept,
        expires_s=expires_s,
        extended=extended,
        max_retries=max_retries,
    )


__all__ = [
    "BACKENDS",
    "DisabledBackend",
    "PostgresBackend",
    "ResultBackend",
    "ResultRecord",
    "SqliteBackend",
    "open_backend",
]
