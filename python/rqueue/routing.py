"""Routing: which queue, exchange and routing key a task message goes to, from ``task_routes``.

Dict tables (exact names, globs, ``re.Pattern`` keys) are compiled once per settings version into
the Rust router; router callables are called as Celery calls them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from rqueue import _rqueue
from rqueue.exceptions import ConfigurationError

#: Where a message goes: ``(queue, exchange, routing_key, priority or None)``.
Route = tuple[str, str, str, "int | None"]
#: A router callable: ``(name, args, kwargs, options, task) -> route dict | queue name | None``.
RouterFunc = Callable[..., "Mapping[str, Any] | str | None"]
_Stage = Callable[[str, list[Any], dict[str, Any], Any], "Route | None"]


class Routes:
    """The compiled ``task_routes``: stages tried in order, the first route found wins."""

    def __init__(self, stages: list[_Stage], by_name_only: bool) -> None:
        self.stages = stages
        #: No router function: every call of a task takes the same route.
        self.by_name_only = by_name_only

    def lookup(self, name: str, args: list[Any], kwargs: dict[str, Any], task: Any) -> Route | None:
        for stage in self.stages:
            route = stage(name, args, kwargs, task)
            if route is not None:
                return route
        return None


def compile_routes(routes: Any) -> Routes:
    """Compile ``task_routes`` (a dict, a router callable, or a list of those)."""
    items = [] if routes is None else list(routes) if isinstance(routes, (list, tuple)) else [routes]
    by_name_only = not any(callable(item) and not isinstance(item, Mapping) for item in items)
    return Routes([_compile_stage(item) for item in items], by_name_only)


def _compile_stage(item: Any) -> _Stage:
    if callable(item) and not isinstance(item, Mapping):

        def call_router(name: str, args: list[Any], kwargs: dict[str, Any], task: Any) -> Any:
            return _expand_route(item(name, args, kwargs, {}, task))

        return call_router
    if not isinstance(item, Mapping):
        raise ConfigurationError(f"task_routes: expected a dict or a router callable, got {item!r}")
    rules = []
    for key, value in item.items():
        if isinstance(key, re.Pattern):
            kind, pattern = "regex", key.pattern
        elif isinstance(key, str):
            kind, pattern = ("glob", key) if any(c in key for c in "*?[") else ("exact", key)
        else:
            raise ConfigurationError(f"task_routes: a key must be a task name, glob or re.Pattern, got {key!r}")
        queue, exchange, routing_key, priority = _route_fields(value)
        rules.append((kind, pattern, queue, exchange, routing_key, priority))
    router = _rqueue.Router(rules)

    def lookup(name: str, args: list[Any], kwargs: dict[str, Any], task: Any) -> Route | None:
        return router.lookup(name)

    return lookup


def _route_fields(value: Any) -> tuple[str | None, str | None, str | None, int | None]:
    if isinstance(value, str):
        return value, None, None, None
    if isinstance(value, Mapping):
        unknown = set(value) - {"queue", "exchange", "routing_key", "priority"}
        if unknown:
            raise ConfigurationError(f"task_routes: unknown route option(s) {sorted(unknown)}")
        return value.get("queue"), value.get("exchange"), value.get("routing_key"), value.get("priority")
    raise ConfigurationError(f"task_routes: a route must be a queue name or a dict, got {value!r}")


def _expand_route(route: Any) -> Route | None:
    if route is None:
        return None
    queue, exchange, routing_key, priority = _route_fields(route)
    if not queue:
        raise ConfigurationError(f"task_routes: router returned a route without a queue: {route!r}")
    return queue, exchange or "", routing_key or queue, priority
