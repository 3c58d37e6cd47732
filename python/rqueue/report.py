"""``rqueue report``: what a bug report needs (versions, platform, transports, the app's explicit
settings), with every secret masked as Celery's ``bugreport`` masks it."""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rqueue import __version__, _rqueue
from rqueue.exceptions import RQueueError
from rqueue.urls import describe

if TYPE_CHECKING:
    from rqueue.app import App

#: Setting names whose values are never shown (Celery's ``HIDDEN_SETTINGS``).
HIDDEN_SETTINGS = re.compile("API|TOKEN|KEY|SECRET|PASS|PROFANITIES_LIST|SIGNATURE|DATABASE|BEAT_DBURI", re.IGNORECASE)
MASK = "*" * 8
#: The client libraries a transport may use, shown with their versions when installed.
DRIVERS = ("redis", "amqp", "kombu", "celery")


def bugreport(app: App) -> str:
    """The report, as text: software, platform, transports, then ``name: value`` per explicit setting."""
    drivers = " ".join(f"{name}:{version}" for name in DRIVERS if (version := _version(name)))
    backend = app.backend_url
    try:
        transport = type(app.broker).__name__
    except RQueueError as exc:  # the report is wanted most when something is wrong
        transport = f"<unavailable: {mask_url(str(exc))}>"
    settings = censor(app.conf.explicit())
    lines = [
        f"software -> rqueue:{__version__} rqueue._rqueue:{_rqueue.__version__} py:{platform.python_version()}",
        f"            {drivers}" if drivers else None,
        f"platform -> system:{platform.system()} arch:{', '.join(x for x in platform.architecture() if x)}",
        f"            kernel version:{platform.release()} imp:{platform.python_implementation()}",
        f"app      -> {app.main or '__main__'} ({len(app.tasks)} tasks)",
        f"settings -> transport:{transport} {mask_url(app.broker_url)}",
        f"            results:{mask_url(backend) if backend else 'disabled://'}",
        "",
        *(f"{name}: {value!r}" for name, value in sorted(settings.items())),
    ]
    return "\n".join(line for line in lines if line is not None)


def censor(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with secret values masked: any whose key names a secret (``KEY``, ``PASS``, ...,
    in nested mappings too), and passwords in every URL."""
    return {key: _censor(key, value) for key, value in settings.items()}


def _censor(key: object, value: Any) -> Any:
    if isinstance(key, str) and HIDDEN_SETTINGS.search(key):
        return MASK
    if isinstance(value, Mapping):
        return censor(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_censor(None, v) for v in value)
    if isinstance(value, str):
        return mask_url(value)
    return value


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it masked (``;``-separated failover URLs too), and
    query parameters naming a secret (``?password=``)."""
    return ";".join(_mask_one(part) for part in text.split(";"))


def _mask_one(url: str) -> str:
    if "://" not in url:
        return url
    masked = describe(url)  # the password masked; an SQLite path made absolute
    try:
        parts = urlsplit(masked)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable URL>"
    if not any(HIDDEN_SETTINGS.search(k) for k, _ in query):
        return masked
    hidden = [(k, MASK if HIDDEN_SETTINGS.search(k) else v) for k, v in query]
    return urlunsplit(parts._replace(query=urlencode(hidden, safe="/*")))


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
