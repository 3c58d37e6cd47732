"""rqueue's web dashboard (``rqueue -A proj dashboard``): workers, queues, throughput, failures,
dead letters and rate limits on one page, plus Prometheus ``/metrics``.

It reads Celery's events (so it sees Celery workers too) and the broker: queue depths every
``SAMPLE_EVERY_S``, dead letters when asked, node memory from ``inspect stats``. The pieces:
``state`` (the bookkeeping), ``web`` (the HTTP face), and ``Dashboard`` here, which feeds the one
and serves the other.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rqueue.brokers.base import DeadLetterAdmin, capability
from rqueue.config import default_queues
from rqueue.dashboard.state import RUNTIME_BUCKETS_S, TASK_STATES, ClusterState
from rqueue.exceptions import ConfigurationError, RQueueError
from rqueue.rates import check_rate

if TYPE_CHECKING:
    from rqueue.app import App

logger = logging.getLogger("rqueue.dashboard")

#: How often queue depths are sampled, and node memory asked for, in seconds.
SAMPLE_EVERY_S = 2.0
STATS_EVERY_S = 10.0
#: How long a remote control query waits for replies, in seconds.
CONTROL_TIMEOUT_S = 1.0
#: How many dead letters one listing shows.
DEAD_LETTERS_SHOWN = 100
#: Reconnecting to the event stream after it failed, at most this often, in seconds.
EVENTS_RETRY_S = 2.0


def _dashboard_modules() -> None:
    try:
        import starlette  # noqa: F401, PLC0415
        import uvicorn  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigurationError("the dashboard needs its extra: pip install 'rqueue[dashboard]'") from None


class Dashboard:
    """The dashboard of ``app``: ``start()`` its feeding threads, then serve ``web_app()``.

    Args:
        app: The application: its broker, its control, its tasks (for their rate limits).
        queues: The queues to chart (default: the ones a worker of this app consumes).
        events: Where events come from: an iterable of event dicts (default: the app's broker).
        clock: Time in seconds since the epoch (tests pass their own).
    """

    def __init__(
        self,
        app: App,
        queues: Sequence[str] | None = None,
        events: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        app.finalize()
        self.queues = list(queues or default_queues(app.conf))
        self.default_queue = str(app.conf.task_default_queue)
        self.state = ClusterState(clock)
        self._events = events or (lambda: _broker_events(app))
        self._stop = threading.Event()
        self._rate_limits: dict[str, str] = {}

    # -- feeding ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the events (before returning: what happens from now on is seen), then
        feed the state from threads."""
        stream = self._open_events()
        threading.Thread(
            target=self._follow_events, args=(stream,), name="rqueue-dashboard-events", daemon=True
        ).start()
        for target, name in ((self._sample_queues, "queues"), (self._ask_stats, "stats")):
            threading.Thread(target=target, name=f"rqueue-dashboard-{name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _open_events(self) -> Iterator[Mapping[str, Any]] | None:
        try:
            return iter(self._events())
        except (RQueueError, OSError) as exc:
            logger.warning("Dashboard: cannot receive events (%s); retrying", exc)
            return None

    def _follow_events(self, stream: Iterator[Mapping[str, Any]] | None) -> None:
        while not self._stop.is_set():
            try:
                for event in stream or ():
                    self.state.apply(event)
                    if self._stop.is_set():
                        return
            except (RQueueError, OSError) as exc:
                logger.warning("Dashboard: the event stream failed (%s); reconnecting", exc)
            self._stop.wait(EVENTS_RETRY_S)
            stream = self._open_events()

    def _sample_queues(self) -> None:
        while not self._stop.is_set():
            depths = {}
            for queue in self.queues:
                try:
                    depths[queue] = self.app.broker.queue_length(queue)
                except (RQueueError, OSError) as exc:
                    logger.warning("Dashboard: cannot read the depth of queue %r: %s", queue, exc)
            self.state.sample_queues(depths)
            self._stop.wait(SAMPLE_EVERY_S)

    def _ask_stats(self) -> None:
        while not self._stop.is_set():
            try:
                self.state.worker_stats(self.app.control.inspect(timeout=CONTROL_TIMEOUT_S).stats() or {})
            except (RQueueError, OSError) as exc:
                logger.warning("Dashboard: inspect stats failed: %s", exc)
            self._stop.wait(STATS_EVERY_S)

    # -- reading ----------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The page's data: the cluster state, the tasks' rate limits, where dead letters are kept."""
        snapshot = self.state.snapshot(self.queues)
        snapshot["rate_limits"] = self.rate_limits()
        snapshot["dead_letter_queues"] = self.queues if self._dead_letter_store() is not None else []
        snapshot["default_queue"] = self.default_queue
        return snapshot

    def rate_limits(self) -> dict[str, str]:
        """Each registered task's rate limit: as declared, or as last set here ('' for none)."""
        declared = {
            name: str(task.rate_limit or "")
            for name, task in self.app.tasks.items()
            if not name.startswith(("celery.", "rqueue."))
        }
        return {**declared, **self._rate_limits}

    def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        store = self._require_dead_letters()
        return [
            {
                "id": d.id,
                "reason": d.reason,
                "error": d.error,
                "deliveries": d.deliveries,
                "dead_at_ms": d.dead_at_ms,
                "task": d.task(),
            }
            for d in store.dead_letters(queue, DEAD_LETTERS_SHOWN)
        ]

    # -- actions ----------------------------------------------------------------------------------

    def requeue_dead(self, queue: str, ids: list[str] | None) -> int:
        """Put dead letters back in their queue: those named, or all of them (``ids`` None)."""
        store = self._require_dead_letters()
        if ids is None:
            ids = [d.id for d in store.dead_letters(queue, 1 << 30)]
        count = store.requeue_dead(queue, ids) if ids else 0
        logger.warning("Dashboard: requeued %d dead letter(s) of queue %r", count, queue)
        return count

    def purge_dead(self, queue: str) -> int:
        count = self._require_dead_letters().purge_dead(queue)
        logger.warning("Dashboard: purged %d dead letter(s) of queue %r", count, queue)
        return count

    def set_rate_limit(self, task: str, rate: str) -> list[Any]:
        """Set ``task``'s rate limit on every worker ('' removes it); ValueError for a bad one."""
        if task not in self.app.tasks:
            raise ValueError(f"unknown task {task!r}")
        check_rate(rate or None, f"rate limit of {task}")
        replies = self.app.control.rate_limit(task, rate or None, reply=True, timeout=CONTROL_TIMEOUT_S) or []
        self._rate_limits[task] = rate
        logger.warning("Dashboard: rate limit of %s set to %r (%d worker(s) replied)", task, rate, len(replies))
        return list(replies)

    def _dead_letter_store(self) -> DeadLetterAdmin | None:
        store = capability(self.app.broker, DeadLetterAdmin)
        return store if isinstance(store, DeadLetterAdmin) else None

    def _require_dead_letters(self) -> DeadLetterAdmin:
        store = self._dead_letter_store()
        if store is None:
            raise ConfigurationError("this broker keeps no dead letters")
        return store

    # -- Prometheus -------------------------------------------------------------------------------

    def metrics_text(self) -> str:
        """The cluster as Prometheus text: what the events and samples say."""
        from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_StateCollector(self.view()))
        return generate_latest(registry).decode()


class _StateCollector:
    """The metrics of one snapshot (a collector made per scrape)."""

    def __init__(self, view: dict[str, Any]) -> None:
        self.view = view

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        view = self.view
        tasks = CounterMetricFamily("rqueue_tasks", "Task events seen, by task and state.", labels=["task", "state"])
        for name, counts in sorted(view["tasks"].items()):
            for state in TASK_STATES:
                if state in counts:
                    tasks.add_metric([name, state], counts[state])
        yield tasks
        runtime = HistogramMetricFamily(
            "rqueue_task_runtime_seconds", "Runtimes of succeeded and failed tasks.", labels=["task"]
        )
        for name, hist in sorted(view["runtimes"].items()):
            buckets = [(str(b), c) for b, c in zip(RUNTIME_BUCKETS_S, hist["counts"], strict=True)] + [
                ("+Inf", hist["total"])
            ]
            runtime.add_metric([name], buckets, hist["sum_s"])
        yield runtime
        depth = GaugeMetricFamily("rqueue_queue_depth", "Messages waiting in a queue.", labels=["queue"])
        for queue, q in view["queues"].items():
            if q["depth"] is not None:
                depth.add_metric([queue], q["depth"])
        yield depth
        families = {
            "up": GaugeMetricFamily("rqueue_worker_up", "1 while heartbeats arrive.", labels=["worker"]),
            "active": GaugeMetricFamily("rqueue_tasks_active", "Tasks running.", labels=["worker"]),
            "prefetched": GaugeMetricFamily("rqueue_tasks_prefetched", "Received, not started.", labels=["worker"]),
            "age": GaugeMetricFamily(
                "rqueue_worker_heartbeat_age_seconds", "Since the last heartbeat.", labels=["worker"]
            ),
        }
        for w in view["workers"]:
            node = [w["hostname"]]
            families["up"].add_metric(node, 1.0 if w["online"] else 0.0)
            families["active"].add_metric(node, w["active"])
            families["prefetched"].add_metric(node, w["prefetched"])
            if w["heartbeat_age_s"] is not None:
                families["age"].add_metric(node, w["heartbeat_age_s"])
        yield from families.values()


def _broker_events(app: App) -> Iterator[Mapping[str, Any]]:
    """Every event sent through the app's broker from now on (``rqueue.events``); live workers
    are asked for a heartbeat at once, so they show without waiting for their next one."""
    from rqueue.events import EventReceiver  # noqa: PLC0415

    receiver = EventReceiver(app)
    receiver.subscribe()
    return receiver.itercapture()


def serve(app: App, address: str, port: int, token: str | None, queues: Sequence[str] | None = None) -> None:
    """Run the dashboard until interrupted; a port in use or a missing extra is a clear error."""
    _dashboard_modules()
    import uvicorn  # noqa: PLC0415

    from rqueue.dashboard.web import create_web_app  # noqa: PLC0415

    token = token or secrets.token_urlsafe(18)
    loopback = address in ("127.0.0.1", "::1", "localhost")
    try:
        sock = socket.create_server((address, port))
    except OSError as exc:
        raise ConfigurationError(f"cannot serve the dashboard on {address}:{port}: {exc}") from None
    dashboard = Dashboard(app, queues)
    dashboard.start()
    host = f"[{address}]" if ":" in address else address
    print(f"Dashboard at http://{host}:{sock.getsockname()[1]}/#token={token}", flush=True)
    print(
        f"Actions (requeue, purge, rate limits){'' if loopback else ' and reads'} need this token: {token}", flush=True
    )
    config = uvicorn.Config(create_web_app(dashboard, token, not loopback), log_level="warning")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        dashboard.stop()
