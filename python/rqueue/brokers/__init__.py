"""Brokers: where task messages wait. ``open_broker`` picks the transport by the URL's scheme (``BROKERS``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rqueue.brokers.amqp import AmqpBroker
from rqueue.brokers.base import Broker
from rqueue.brokers.postgres import PostgresBroker
from rqueue.brokers.redis import KOMBU_VISIBILITY_S, RedisBroker
from rqueue.brokers.sqlite import SqliteBroker
from rqueue.exceptions import ConfigurationError
from rqueue.urls import Schemes, sqlite_path

if TYPE_CHECKING:
    from rqueue.config import Settings


def _sqlite(url: str, conf: Settings) -> Broker:
    return SqliteBroker(sqlite_path(url, "broker_url"))


def _redis(url: str, conf: Settings) -> Broker:
    options = conf.broker_transport_options
    keyprefix = str(options.get("global_keyprefix", ""))
    # kombu's option: how long Celery workers on this Redis leave an unacked message alone. rqueue
    # restores their in-flight messages (which carry no rqueue lease) only after it.
    foreign = options.get("visibility_timeout", KOMBU_VISIBILITY_S)
    if isinstance(foreign, bool) or not isinstance(foreign, (int, float)) or foreign <= 0:
        raise ConfigurationError(
            f"broker_transport_options['visibility_timeout'] must be a positive number of seconds, got {foreign!r}"
        )
    return RedisBroker(
        url,
        global_keyprefix=keyprefix,
        connect_timeout_s=conf.broker_connection_timeout,
        # Also the longest wait for a reply: a frozen Redis fails a publish (or an ack) after this,
        # not after minutes.
        socket_timeout_s=conf.broker_connection_timeout,
        foreign_visibility_s=float(foreign),
    )


def _postgres(url: str, conf: Settings) -> Broker:
    return PostgresBroker(url)


def _amqp(url: str, conf: Settings) -> Broker:
    return AmqpBroker(url, conf)


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
        "amqp": ("RabbitMQ (amqp://[user:password@]host[:port]/[vhost])", _amqp),
        "pyamqp": ("RabbitMQ, kombu's name (pyamqp://... as amqp://...)", _amqp),
        "amqps": ("RabbitMQ over TLS (amqps://host:5671/vhost[?ssl_ca_certs=/path/ca.pem])", _amqp),
        "postgresql": ("PostgreSQL (postgresql://[user:password@]host[:port]/database[?schema=rqueue])", _postgres),
        "postgres": ("PostgreSQL, libpq's short name (postgres://... as postgresql://...)", _postgres),
    },
    planned={},
)


def open_broker(url: str, conf: Settings) -> Broker:
    """A broker for ``url`` configured by ``conf``; raises ConfigurationError for unsupported or malformed URLs."""
    return BROKERS.open(url, conf)


__all__ = ["BROKERS", "AmqpBroker", "Broker", "PostgresBroker", "RedisBroker", "SqliteBroker", "open_broker"]
