"""Settings: one table of canonical lower-case names with their defaults and types.

Values come from, in order of precedence: explicit settings (``App(**settings)``, ``app.conf.x = v``,
``app.conf.update()``, ``app.config_from_object()``), then environment variables for the URLs, then the
defaults below. The upper-case names of Celery's classic tutorial are accepted, mapped to the
canonical names, with one deprecation warning per name and process.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from rqueue.exceptions import ConfigurationError

SERIALIZERS = ("json", "msgpack", "pickle")
_NONE = type(None)


@dataclass(frozen=True)
class Setting:
    """One setting: its default, the types it accepts and a one-line description."""

    default: Any
    types: tuple[type, ...]
    doc: str
    check: Callable[[str, Any], None] | None = None


def _serializer(name: str, value: Any) -> None:
    if value not in SERIALIZERS:
        raise ConfigurationError(f"{name}: unknown serializer {value!r}; choose one of {', '.join(SERIALIZERS)}")


def _accept_list(name: str, value: Any) -> None:
    for item in value:
        if not isinstance(item, str):
            raise ConfigurationError(f"{name}: expected serializer names or content types, got {item!r}")
        short = CONTENT_TYPE_NAMES.get(item, item)
        if short not in SERIALIZERS:
            raise ConfigurationError(f"{name}: unknown serializer {item!r}; choose from {', '.join(SERIALIZERS)}")


def _positive(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, timedelta) and value <= 0:
        raise ConfigurationError(f"{name}: must be positive, got {value!r}")


def time_limit_value(value: object, what: str) -> float | None:
    """A time limit given by a caller or an operator: None, or a positive finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{what} must be a positive number of seconds or None, got {value!r}")
    return float(value)


def _queue_type(name: str, value: Any) -> None:
    if value not in ("classic", "quorum"):
        raise ConfigurationError(f"{name}: must be 'classic' or 'quorum', got {value!r}")


def queue_name(entry: Any) -> str:
    """The name of a ``task_queues`` entry: a name, a dict with ``name``, or a kombu ``Queue``."""
    name = (
        entry
        if isinstance(entry, str)
        else entry.get("name")
        if isinstance(entry, dict)
        else getattr(entry, "name", None)
    )
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"task_queues: expected a queue name, a dict with 'name' or a kombu Queue, got {entry!r}"
        )
    return name


def default_queues(conf: Any) -> list[str]:
    """The queues a worker consumes when told none: ``task_queues``, else the default queue."""
    return [queue_name(q) for q in conf.task_queues] if conf.task_queues else [conf.task_default_queue]


def _queue_entries(name: str, value: Any) -> None:
    for entry in value or ():
        queue_name(entry)


def _non_negative(name: str, value: Any) -> None:
    if value is not None and value < 0:
        raise ConfigurationError(f"{name}: must be zero or more, got {value!r}")


#: MIME types of the serializers, as ``accept_content`` may name them either way.
CONTENT_TYPE_NAMES = {
    "application/json": "json",
    "application/x-msgpack": "msgpack",
    "application/x-python-serialize": "pickle",
}

NUMBER = (int, float)
DEFAULTS: dict[str, Setting] = {
    # where messages and results live
    "broker_url": Setting(None, (str, _NONE), "broker URL; unset means the embedded SQLite file"),
    "result_backend": Setting(None, (str, _NONE), "result backend URL; unset follows an sqlite:// broker"),
    "broker_connection_timeout": Setting(4.0, NUMBER, "seconds to wait when connecting", _positive),
    "broker_visibility_timeout": Setting(60.0, NUMBER, "seconds a leased message stays invisible", _positive),
    "broker_max_deliveries": Setting(5, (int,), "deliveries before a message is dead-lettered", _positive),
    "broker_transport_options": Setting({}, (dict,), "transport options, e.g. {'global_keyprefix': 'app:'}"),
    "broker_allow_eviction": Setting(False, (bool,), "let workers use a Redis whose maxmemory-policy may evict"),
    "broker_heartbeat": Setting(120, NUMBER, "seconds between AMQP heartbeats (0: none)", _non_negative),
    "broker_native_delayed_delivery_queue_type": Setting(
        "quorum", (str,), "classic or quorum: the RabbitMQ delay-level queues", _queue_type
    ),
    # serialization
    "task_serializer": Setting("json", (str,), "serializer of task arguments", _serializer),
    "result_serializer": Setting("json", (str,), "serializer of results", _serializer),
    "accept_content": Setting(["json"], (list, tuple, set, frozenset), "content types workers accept", _accept_list),
    "result_accept_content": Setting(None, (list, tuple, _NONE), "content types clients accept for results"),
    "task_max_message_size": Setting(1 << 20, (int,), "largest message in bytes", _positive),
    # time
    "timezone": Setting("UTC", (str,), "time zone for display; times on the wire are UTC"),
    "enable_utc": Setting(True, (bool,), "kept for Celery compatibility; rqueue always sends UTC"),
    # tasks
    "task_routes": Setting(None, (dict, list, tuple, _NONE), "task name -> queue routes, or routers"),
    "task_annotations": Setting(None, (dict, list, tuple, _NONE), "per-task option overrides"),
    "task_default_queue": Setting("celery", (str,), "queue of tasks without a route"),
    "task_default_exchange": Setting("", (str,), "exchange of tasks without a route"),
    "task_default_priority": Setting(None, (int, _NONE), "priority 0 (first) .. 9 (last) on Redis and SQLite"),
    "task_default_rate_limit": Setting(None, (str, int, float, _NONE), "rate limit of tasks without one"),
    "task_queues": Setting(
        None, (list, tuple, _NONE), "queues workers consume by default: names, dicts or kombu Queues", _queue_entries
    ),
    "task_queue_max_priority": Setting(None, (int, _NONE), "x-max-priority of RabbitMQ queues that set none"),
    "task_default_queue_type": Setting("classic", (str,), "classic or quorum: RabbitMQ queues declared", _queue_type),
    "task_ignore_result": Setting(False, (bool,), "store no results unless a task asks to"),
    "task_acks_late": Setting(True, (bool,), "ack after the task ran (at-least-once); False acks on receipt"),
    "task_track_started": Setting(False, (bool,), "record STARTED when a task begins"),
    "task_time_limit": Setting(None, (*NUMBER, _NONE), "hard time limit in seconds", _positive),
    "task_soft_time_limit": Setting(None, (*NUMBER, _NONE), "soft time limit in seconds", _positive),
    "task_default_retry_delay": Setting(180, NUMBER, "seconds before a retry", _non_negative),
    "task_max_retries": Setting(3, (int, _NONE), "retries before giving up; None = forever"),
    # results
    "result_expires": Setting(86400, (*NUMBER, timedelta, _NONE), "seconds results are kept", _positive),
    "result_extended": Setting(False, (bool,), "also store name, args, kwargs, worker, queue"),
    # worker
    "worker_concurrency": Setting(None, (int, _NONE), "child processes (default: CPU count)", _positive),
    "worker_prefetch_multiplier": Setting(4, (int,), "messages prefetched per process/thread", _positive),
    "worker_disable_rate_limits": Setting(False, (bool,), "ignore every rate limit"),
    "worker_poll_max_ms": Setting(40, (int,), "longest idle poll interval of polling brokers", _positive),
    # remote control
    "control_queue_ttl": Setting(300.0, NUMBER, "seconds a control message waits on RabbitMQ", _positive),
    "control_queue_expires": Setting(10.0, NUMBER, "seconds an unused RabbitMQ control queue lives", _positive),
}

#: Celery's classic upper-case names, accepted with a deprecation warning.
LEGACY_NAMES = {
    "BROKER_URL": "broker_url",
    "CELERY_BROKER_URL": "broker_url",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERY_ROUTES": "task_routes",
    "CELERY_ANNOTATIONS": "task_annotations",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_DEFAULT_EXCHANGE": "task_default_exchange",
    "CELERY_DEFAULT_RATE_LIMIT": "task_default_rate_limit",
    "CELERY_QUEUES": "task_queues",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_RESULT_EXPIRES": "result_expires",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_DISABLE_RATE_LIMITS": "worker_disable_rate_limits",
}

#: Environment variables that supply a setting when it is not set explicitly.
ENVIRONMENT = {"broker_url": "RQUEUE_BROKER_URL", "result_backend": "RQUEUE_RESULT_BACKEND"}

_warned_legacy: set[str] = set()


def canonical_name(name: str) -> str:
    """The canonical name of ``name``; upper-case legacy names warn once. Unknown names raise."""
    if name in DEFAULTS:
        return name
    if name in LEGACY_NAMES:
        new = LEGACY_NAMES[name]
        if name not in _warned_legacy:
            _warned_legacy.add(name)
            warnings.warn(f"setting {name} is deprecated; use {new}", DeprecationWarning, stacklevel=4)
        return new
    raise ConfigurationError(_unknown_message(name))


def _unknown_message(name: str) -> str:
    candidates = list(DEFAULTS) + list(LEGACY_NAMES)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(name.lower(), list(DEFAULTS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else "; see rqueue.config.DEFAULTS for valid names"
    return f"unknown setting {name!r}{hint}"


def validate(name: str, value: Any) -> Any:
    """Check ``value`` for the canonical setting ``name``; return it (tuples of lists become lists)."""
    setting = DEFAULTS[name]
    if isinstance(value, bool) and bool not in setting.types and int in setting.types:
        raise ConfigurationError(f"{name}: expected {_type_names(setting.types)}, got {value!r}")
    if not isinstance(value, setting.types):
        raise ConfigurationError(f"{name}: expected {_type_names(setting.types)}, got {type(value).__name__} {value!r}")
    if setting.check is not None and value is not None:
        setting.check(name, value)
    return value


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("None" if t is _NONE else t.__name__ for t in types)


class Settings:
    """``app.conf``: attribute and mapping access to validated settings.

    Reading an unknown attribute raises AttributeError with a suggestion; assigning one raises
    ConfigurationError. ``version`` increases on every change so derived state (the compiled router)
    knows when to rebuild.
    """

    __slots__ = ("_explicit", "version")

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_explicit", {})
        object.__setattr__(self, "version", 0)
        if initial:
            self.update(initial)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except ConfigurationError as exc:
            raise AttributeError(str(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __getitem__(self, name: str) -> Any:
        key = canonical_name(name)
        explicit: dict[str, Any] = self._explicit
        if key in explicit:
            return explicit[key]
        env = ENVIRONMENT.get(key)
        if env and os.environ.get(env):
            return os.environ[env]
        default = DEFAULTS[key].default
        return default.copy() if isinstance(default, (dict, list)) else default

    def __setitem__(self, name: str, value: Any) -> None:
        key = canonical_name(name)
        self._explicit[key] = validate(key, value)
        object.__setattr__(self, "version", self.version + 1)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in DEFAULTS or name in LEGACY_NAMES)

    def __iter__(self) -> Iterator[str]:
        return iter(DEFAULTS)

    def update(self, other: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Set several settings; all are validated before any is applied."""
        pending = {**(other or {}), **kwargs}
        checked = {canonical_name(k): v for k, v in pending.items()}
        for key, value in checked.items():
            validate(key, value)
        self._explicit.update(checked)
        object.__setattr__(self, "version", self.version + 1)

    def from_object(self, obj: object | str) -> None:
        """Load the public names of a module (or its dotted name) or object: settings are validated."""
        if isinstance(obj, str):
            obj = importlib.import_module(obj)
        names = [n for n in dir(obj) if not n.startswith("_") and (n.islower() or n.isupper())]
        values = {n: getattr(obj, n) for n in names if not _is_module_noise(getattr(obj, n))}
        self.update(values)

    def explicit(self) -> dict[str, Any]:
        """The settings set explicitly (a copy)."""
        return dict(self._explicit)

    def as_dict(self) -> dict[str, Any]:
        """Every setting with its effective value."""
        return {name: self[name] for name in DEFAULTS}

    def __repr__(self) -> str:
        return f"<Settings {len(self._explicit)} explicit>"


def _is_module_noise(value: object) -> bool:
    """Imports and helpers in a config module are not settings."""
    return isinstance(value, (types.ModuleType, types.FunctionType, type))
