"""Brokers: where task messages wait. ``open_broker`` picks the transport by the URL's scheme (``BROKERS``)."""

from __future__ import annotations

from typing import Any

from rqueue.brokers.base import Broker
from rqueue.brokers.redis import RedisBroker
from rqueue.brokers.sqlite import SqliteBroker
from rqueue.urls import Schemes, sqlite_path


def _sqlite(url: str, options: dict[str, Any], connect_timeout_s: float) -> Broker:
    return SqliteBroker(sqlite_path(url, "broker_url"))


def _redis(url: str, options: dict[str, Any], connect_timeout_s: float) -> Broker:
    keyprefix = str(options.get("global_keyprefix", ""))
    return RedisBroker(url, global_keyprefix=keyprefix, connect_timeout_s=connect_timeout_s)


#: Every broker scheme: a new transport is one line here.
BROKERS: Schemes[Broker] = Schemes(
    "broker_url",
    {
        "sqlite": ("embedded SQLite file (sqlite:///relative.db or sqlite:////absolute.db)", _sqlite),
        "redis": ("Redis (redis://[user:password@]host[:port][/db])", _redis),
        "rediss": (
            "Redis over TLS (rediss://host:port/db[?ssl_ca_certs=/path/ca.pem&ssl_cert_reqs=required])",
            _redis,
        ),
        "unix": ("Redis over a unix socket (unix:///path/redis.sock?db=N)", _redis),
    },
    planned={"amqp": "RabbitMQ", "pyamqp": "RabbitMQ", "postgresql": "PostgreSQL"},
)


def open_broker(url: str, transport_options: dict[str, Any] | None = None, connect_timeout_s: float = 4.0) -> Broker:
    """A broker for ``url``; raises ConfigurationError for unsupported or malformed URLs."""
    return BROKERS.open(url, transport_options or {}, connect_timeout_s)


__all__ = ["BROKERS", "Broker", "RedisBroker", "SqliteBroker", "open_broker"]
