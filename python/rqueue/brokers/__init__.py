"""Brokers: where task messages wait. ``open_broker`` picks the transport from a URL."""

from __future__ import annotations

from typing import Any

from rqueue.brokers.base import Broker
from rqueue.brokers.redis import RedisBroker
from rqueue.brokers.sqlite import SqliteBroker
from rqueue.urls import scheme_of, sqlite_path


def open_broker(url: str, transport_options: dict[str, Any] | None = None, connect_timeout_s: float = 4.0) -> Broker:
    """A broker for ``url``; raises ConfigurationError for unsupported or malformed URLs."""
    scheme = scheme_of(url, "broker_url")
    options = transport_options or {}
    if scheme == "sqlite":
        return SqliteBroker(sqlite_path(url, "broker_url"))
    if scheme in ("redis", "rediss", "unix"):
        return RedisBroker(
            url, global_keyprefix=str(options.get("global_keyprefix", "")), connect_timeout_s=connect_timeout_s
        )
    raise AssertionError(f"scheme_of accepted {scheme!r} without a broker for it")


__all__ = ["Broker", "RedisBroker", "SqliteBroker", "open_broker"]
