"""Settings: one table of canonical lower-case names with their defaults and types.

Values come from, in order of precedence: explicit settings (``App(**settings)``, ``app.conf.x = v``,
``app.conf.update()``, ``app.config_from_object()``), then environment variables for the URLs, then the
defaults below. The upper-case names of Celery's classic tutorial are accepted, mapped to the
canonical names, with one deprecation warning per name and process. A name that is valid in Celery 5.x
but that rqueue does not implement is kept (``conf.get()`` returns it) with one warning saying it has
no effect; a name valid in neither is an error with the closest valid names as a suggestion.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from rqueue.celery_settings import CELERY_OLD_NAMES, CELERY_SETTINGS
from rqueue.exceptions import ConfigurationError

SERIALIZERS = ("json", "msgpack", "pickle")
#: Autoscaling: how long a prefork child stays idle before the pool shrinks by it (Celery's
#: autoscaler keepalive); the default of ``worker_autoscale_keepalive_s``.
AUTOSCALE_KEEPALIVE_S = 30.0
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


def parse_autoscale(name: str, value: Any) -> tuple[int, int] | None:
    """``worker_autoscale`` / ``--autoscale``: ``"MAX,MIN"`` (or ``"MAX"``: min 1), or a
    ``(max, min)`` pair, as ``(max, min)``; None when unset. ConfigurationError otherwise."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    if not 1 <= len(parts) <= 2:
        raise ConfigurationError(f"{name}: expected MAX,MIN (e.g. 10,3), got {value!r}")
    try:
        numbers = [int(str(part).strip()) for part in parts]
    except ValueError:
        raise ConfigurationError(f"{name}: expected whole numbers MAX,MIN (e.g. 10,3), got {value!r}") from None
    max_size, min_size = numbers[0], numbers[1] if len(numbers) == 2 else 1
    if min_size < 1 or max_size < min_size:
        raise ConfigurationError(f"{name}: need 1 <= MIN <= MAX, got max={max_size} min={min_size}")
    return max_size, min_size


def _autoscale(name: str, value: Any) -> None:
    parse_autoscale(name, value)


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
    "result_backend_max_retries": Setting(
        float("inf"), NUMBER, "times get() retries an unreachable result backend before raising", _non_negative
    ),
    # worker
    "worker_concurrency": Setting(None, (int, _NONE), "child processes (default: CPU count)", _positive),
    "worker_prefetch_multiplier": Setting(4, (int,), "messages prefetched per process/thread", _positive),
    "worker_redirect_stdouts": Setting(True, (bool,), "with --logfile, tasks' print() output goes to the log"),
    "worker_redirect_stdouts_level": Setting("WARNING", (str,), "the log level of redirected print() output"),
    "worker_max_tasks_per_child": Setting(
        None, (int, _NONE), "replace a prefork child after this many tasks (None: never)", _positive
    ),
    "worker_max_memory_per_child": Setting(
        None, (int, _NONE), "replace a prefork child once its RSS passes this many KiB (None: never)", _positive
    ),
    "worker_soft_shutdown_timeout": Setting(
        0.0, NUMBER, "seconds running tasks get after a warm shutdown; then their messages go back", _non_negative
    ),
    "worker_enable_soft_shutdown_on_idle": Setting(
        False, (bool,), "wait worker_soft_shutdown_timeout out even with no task running"
    ),
    "worker_autoscale": Setting(
        None,
        (str, list, tuple, _NONE),
        "prefork pool size range 'MAX,MIN' (--autoscale)",
        _autoscale,
    ),
    "worker_autoscale_keepalive_s": Setting(
        AUTOSCALE_KEEPALIVE_S, NUMBER, "seconds a prefork child stays idle before autoscaling stops it", _positive
    ),
    "worker_disable_rate_limits": Setting(False, (bool,), "ignore every rate limit"),
    "worker_poll_max_ms": Setting(40, (int,), "longest idle poll interval of polling brokers", _positive),
    "worker_hijack_root_logger": Setting(True, (bool,), "the worker replaces the root logger's handlers"),
    "worker_async_block_warn_s": Setting(
        0.1, NUMBER, "asyncio pool: warn when a task holds the event loop this many seconds without awaiting", _positive
    ),
    # modules, eager mode, publishing
    "include": Setting((), (list, tuple), "modules the worker imports at start (their tasks register)"),
    "imports": Setting((), (list, tuple), "modules the worker imports at start, before include"),
    "task_always_eager": Setting(False, (bool,), "apply_async runs the task here and now (tests)"),
    "task_eager_propagates": Setting(False, (bool,), "an eager task's exception is raised by apply_async"),
    "task_store_eager_result": Setting(False, (bool,), "eager tasks store their results in the backend"),
    "task_inherit_parent_priority": Setting(False, (bool,), "a task sent from a task gets its priority"),
    "task_publish_retry": Setting(True, (bool,), "retry sending while the broker cannot be reached"),
    "task_publish_retry_policy": Setting(
        {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
        (dict,),
        "how sending retries: max_retries, interval_start/step/max in seconds",
    ),
    # periodic tasks (rqueue beat, worker -B)
    "beat_schedule": Setting(
        {}, (dict,), "periodic tasks: name -> {'task', 'schedule', 'args', 'kwargs', 'options'} (rqueue.beat)"
    ),
    "beat_lease_s": Setting(
        3.0, NUMBER, "seconds a beat leader's lease lasts unrenewed: bounds the failover gap", _positive
    ),
    # monitoring events (Celery's event protocol: Flower, `celery events`, `rqueue events`)
    "worker_send_task_events": Setting(False, (bool,), "workers send task events (-E); heartbeats are always sent"),
    "task_send_sent_event": Setting(False, (bool,), "producers send a task-sent event for each task"),
    "event_queue_ttl": Setting(5.0, NUMBER, "seconds an event waits in a RabbitMQ receiver's queue", _positive),
    "event_queue_expires": Setting(60.0, NUMBER, "seconds an unused RabbitMQ event queue lives", _positive),
    # remote control
    "control_queue_ttl": Setting(300.0, NUMBER, "seconds a control message waits on RabbitMQ", _positive),
    "control_queue_expires": Setting(10.0, NUMBER, "seconds an unused RabbitMQ control queue lives", _positive),
}

#: Celery's old upper-case names (and ``CELERY_``-prefixed Django forms) of settings rqueue implements,
#: accepted with a deprecation warning.
LEGACY_NAMES = {
    **{old: new for old, new in CELERY_OLD_NAMES.items() if new in DEFAULTS},
    "CELERY_BROKER_URL": "broker_url",
    "CELERY_RESULT_EXPIRES": "result_expires",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
}

#: Environment variables that supply a setting when it is not set explicitly, first found wins
#: (rqueue's own, then Celery's, so a deployment configured for Celery keeps working).
ENVIRONMENT = {
    "broker_url": ("RQUEUE_BROKER_URL", "CELERY_BROKER_URL"),
    "result_backend": ("RQUEUE_RESULT_BACKEND", "CELERY_RESULT_BACKEND"),
}

_warned: set[str] = set()


def _warn_once(name: str, message: str, category: type[Warning]) -> None:
    if name not in _warned:
        _warned.add(name)
        warnings.warn(message, category, stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` of the first caller outside rqueue: the warning points at the user's line."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] == "rqueue":
        frame, level = frame.f_back, level + 1
    return level


class IneffectiveSettingWarning(UserWarning):
    """A Celery setting rqueue accepts but does not implement: it has no effect."""


def canonical_name(name: str) -> str:
    """The canonical name of ``name``: rqueue's own, or Celery's new-style name of a setting rqueue
    does not implement (which warns once). Upper-case legacy names warn once. Unknown names raise."""
    if name in DEFAULTS:
        return name
    if name in LEGACY_NAMES:
        new = LEGACY_NAMES[name]
        _warn_once(name, f"setting {name} is deprecated; use {new}", DeprecationWarning)
        return new
    celery_name = name if name in CELERY_SETTINGS else CELERY_OLD_NAMES.get(name)
    if celery_name is not None:
        _warn_once(
            celery_name,
            f"setting {name} is a Celery setting rqueue does not implement; it has no effect",
            IneffectiveSettingWarning,
        )
        return celery_name
    raise ConfigurationError(unknown_setting_message(name))


def is_ineffective(name: str) -> bool:
    """True for a canonical name that is Celery's only (accepted, without effect)."""
    return name not in DEFAULTS


def unknown_setting_message(name: str) -> str:
    """The error for a name valid in neither table, with the closest valid names."""
    close = closest_names(name, [*DEFAULTS, *CELERY_SETTINGS])
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see rqueue.config.DEFAULTS for valid names"
    return f"unknown setting {name!r}{hint}"


def closest_names(name: str, candidates: list[str], limit: int = 2) -> list[str]:
    """The candidates most like ``name``: by edit similarity of the whole name, then by shared words
    (``max_tasks_per_child`` is close to ``worker_max_tasks_per_child``, not to ``worker_poll_max_ms``)."""
    wanted = name.lower()
    words = set(wanted.split("_"))

    def score(candidate: str) -> float:
        whole = difflib.SequenceMatcher(None, wanted, candidate).ratio()
        theirs = set(candidate.split("_"))
        shared = len(words & theirs) / len(words | theirs)
        return max(whole, shared)

    scored = sorted(((score(c), c) for c in set(candidates)), reverse=True)
    if not scored or scored[0][0] < 0.6:
        return []
    best = scored[0][0]
    return [c for s, c in scored[:limit] if best - s < 0.02]  # a second name only when as close


def validate(name: str, value: Any) -> Any:
    """Check ``value`` for the canonical setting ``name``; return it. Celery-only settings are not checked."""
    setting = DEFAULTS.get(name)
    if setting is None:
        return value
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
        if is_ineffective(key):
            return None  # a Celery setting without effect that was never set
        for env in ENVIRONMENT.get(key, ()):
            if os.environ.get(env):
                return os.environ[env]
        default = DEFAULTS[key].default
        return default.copy() if isinstance(default, (dict, list)) else default

    def __setitem__(self, name: str, value: Any) -> None:
        key = canonical_name(name)
        self._explicit[key] = validate(key, value)
        object.__setattr__(self, "version", self.version + 1)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in DEFAULTS or name in LEGACY_NAMES or name in self._explicit

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        """rqueue's settings, then the Celery-only ones that were set."""
        return [*DEFAULTS, *(k for k in self._explicit if is_ineffective(k))]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self.keys()]

    def get(self, name: str, default: Any = None) -> Any:
        """A setting's value, or ``default`` for a name that is not a setting or not set (as a dict's)."""
        try:
            key = canonical_name(name)
        except ConfigurationError:
            return default
        if is_ineffective(key) and key not in self._explicit:
            return default
        return self[key]

    def setdefault(self, name: str, value: Any) -> Any:
        """Set ``name`` unless it has a value (a default counts, as in Celery); return its value."""
        key = canonical_name(name)
        if is_ineffective(key) and key not in self._explicit:
            self[key] = value
        return self[key]

    def update(self, other: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Set several settings; all are validated before any is applied."""
        pending = {**(other or {}), **kwargs}
        checked = {canonical_name(k): v for k, v in pending.items()}
        for key, value in checked.items():
            validate(key, value)
        self._explicit.update(checked)
        object.__setattr__(self, "version", self.version + 1)

    def from_object(self, obj: object | str, namespace: str | None = None) -> None:
        """Load the public names of a module (or its dotted name) or object: settings are validated.

        With ``namespace`` (Django's ``namespace="CELERY"``) only names starting with ``CELERY_`` are
        read, without the prefix (``CELERY_BROKER_URL`` is ``broker_url``); other names are the host
        framework's own settings and are left alone.
        """
        if isinstance(obj, str):
            obj = _import_object(obj)
        names = [n for n in dir(obj) if not n.startswith("_") and (n.islower() or n.isupper())]
        values = {n: getattr(obj, n) for n in names if not _is_module_noise(getattr(obj, n))}
        if namespace:
            prefix = namespace.rstrip("_") + "_"
            values = {n[len(prefix) :].lower(): v for n, v in values.items() if n.startswith(prefix)}
        self.update(values)

    def explicit(self) -> dict[str, Any]:
        """The settings set explicitly (a copy)."""
        return dict(self._explicit)

    def as_dict(self) -> dict[str, Any]:
        """Every setting with its effective value."""
        return dict(self.items())

    def __repr__(self) -> str:
        return f"<Settings {len(self._explicit)} explicit>"


def _import_object(name: str) -> object:
    """``module``, ``module:attribute`` (``"django.conf:settings"``) or ``module.attribute``."""
    module_name, _, attribute = name.partition(":")
    if attribute:
        return getattr(importlib.import_module(module_name), attribute)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        parent, _, last = name.rpartition(".")
        if not parent or exc.name != name:
            raise
        holder = importlib.import_module(parent)
        if not hasattr(holder, last):
            raise
        return getattr(holder, last)


def _is_module_noise(value: object) -> bool:
    """Imports and helpers in a config module are not settings."""
    return isinstance(value, (types.ModuleType, types.FunctionType, type))
