"""Brokers: where task messages wait. ``open_broker`` picks the transport from a URL."""

from __future__ import annotations

from rqueue.brokers.base import Broker
from rqueue.brokers.sqlite import SqliteBroker
from rqueue.urls import scheme_of, sqlite_path


def open_broker(url: str) -> Broker:
    """A broker for ``url``; raises ConfigurationError for unsupported or malformed URLs."""
    scheme = scheme_of(url, "broker_url")
    if scheme == "sqlite":
        return SqliteBroker(sqlite_path(url, "broker_url"))
    raise AssertionError(f"scheme_of accepted {scheme!r} without a broker for it")


__all__ = ["Broker", "SqliteBroker", "open_broker"]
