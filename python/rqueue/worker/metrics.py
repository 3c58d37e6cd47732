"""Prometheus metrics of a worker node (``rqueue worker --metrics-port N``): one endpoint per node.

Tasks are counted by name and outcome, their runtimes go into a histogram, and the node reports
the tasks it runs and holds prefetched. Every process of the node writes its values to files in
one directory (prometheus_client's multiprocess mode, made for forked servers), so the endpoint,
served by the worker's main process, adds up the prefork children, also those already replaced.
Queue depth is read from the broker when the endpoint is scraped.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rqueue.exceptions import BrokerError, ConfigurationError
from rqueue.worker.hooks import WorkerHook

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from rqueue.app import App
    from rqueue.request import Request
    from rqueue.worker.consumer import Consumer

logger = logging.getLogger("rqueue.worker")

#: prometheus_client's multiprocess mode reads its directory from this variable.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often each process records how many messages it holds prefetched, in seconds.
SAMPLE_EVERY_S = 1.0
#: Task runtime buckets, in seconds: no-op tasks take ~10 µs, batch jobs minutes.
RUNTIME_BUCKETS_S = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def prometheus() -> Any:
    """prometheus_client, or a clear error naming the extra that installs it."""
    try:
        import prometheus_client  # noqa: PLC0415 - optional: only metrics need it
    except ImportError:
        raise ConfigurationError(
            "metrics need prometheus_client: pip install 'rqueue[metrics]' (or prometheus_client)"
        ) from None
    return prometheus_client


class WorkerMetrics(WorkerHook):
    """The node's metrics: a hook in every process, an endpoint in the main one.

    Made in the worker's main process before any child is forked (it chooses the directory the
    children write to); ``serve()`` starts the endpoint, ``close()`` removes the directory.
    """

    def __init__(self, app: App, queues: Sequence[str], hostname: str, port: int, address: str = "127.0.0.1") -> None:
        client = prometheus()
        self.app, self.queues, self.hostname = app, list(queues), hostname
        self.port, self.address = port, address
        self._own_dir = MULTIPROCESS_DIR_ENV not in os.environ
        if self._own_dir:
            os.environ[MULTIPROCESS_DIR_ENV] = tempfile.mkdtemp(prefix="rqueue-metrics-")
        self.directory = os.environ[MULTIPROCESS_DIR_ENV]
        from prometheus_client import values  # noqa: PLC0415

        # The value class is chosen when prometheus_client is first imported: if that was before
        # the directory was set (an app importing it), choose again so every process writes files.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        worker = ("worker",)
        self.tasks = client.Counter(
            "rqueue_tasks", "Tasks by name and what became of them.", ["worker", "task", "state"]
        )
        self.runtime = client.Histogram(
            "rqueue_task_runtime_seconds",
            "How long tasks ran, by name.",
            ["worker", "task"],
            buckets=RUNTIME_BUCKETS_S,
        )
        self.active = client.Gauge("rqueue_tasks_active", "Tasks running now.", worker, multiprocess_mode="livesum")
        self.prefetched = client.Gauge(
            "rqueue_tasks_prefetched", "Messages held and not started.", worker, multiprocess_mode="livesum"
        )
        self.heartbeat = client.Gauge(
            "rqueue_worker_heartbeat_timestamp_seconds",
            "When a process of the node last reported (Unix time).",
            worker,
            multiprocess_mode="livemax",
        )
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._server: Any = None

    # -- the endpoint (main process) -------------------------------------------------------------

    def serve(self) -> None:
        """Start the HTTP endpoint in a thread of this process; a port in use is a clear error."""
        client = prometheus()
        from prometheus_client import multiprocess  # noqa: PLC0415

        registry = client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        registry.register(self._node_collector())
        try:
            self._server, _ = client.start_http_server(self.port, addr=self.address, registry=registry)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {self.address}:{self.port}: {exc}") from None
        logger.info("Metrics at http://%s:%d/metrics", self.address, self.port)

    def child_exited(self, pid: int) -> None:
        """A prefork child is gone: its live gauges stop counting (its counters stay)."""
        from prometheus_client import multiprocess  # noqa: PLC0415

        multiprocess.mark_process_dead(pid, path=self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _node_collector(self) -> Collector:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        metrics = self

        class Node:
            def collect(self) -> Iterator[Any]:
                up = GaugeMetricFamily("rqueue_worker_up", "1 while the node answers.", labels=["worker"])
                up.add_metric([metrics.hostname], 1.0)
                yield up
                depth = GaugeMetricFamily("rqueue_queue_depth", "Messages waiting in a queue.", labels=["queue"])
                for queue in metrics.queues:
                    try:
                        depth.add_metric([queue], float(metrics.app.broker.queue_length(queue)))
                    except (BrokerError, OSError) as exc:  # the endpoint answers; the depth is missing
                        logger.warning("Metrics: cannot read the depth of queue %r: %s", queue, exc)
                yield depth

        return Node()

    # -- the hook (every process) -----------------------------------------------------------------

    def consuming(self, consumer: Consumer) -> None:
        buffer, prefetched, heartbeat = consumer.buffer, self.prefetched.labels(self.hostname), self.heartbeat

        def sample() -> None:
            while not consumer.stopping:
                prefetched.set(len(buffer))
                heartbeat.labels(self.hostname).set(time.time())
                time.sleep(SAMPLE_EVERY_S)

        threading.Thread(target=sample, name="rqueue-metrics", daemon=True).start()

    def received(self, request: Request) -> None:
        self.tasks.labels(self.hostname, request.task, "received").inc()

    def started(self, request: Request) -> None:
        self.tasks.labels(self.hostname, request.task, "started").inc()
        self._run(request.id, True)

    def succeeded(self, request: Request, result: Any, runtime_s: float) -> None:
        self._end(request, "succeeded", runtime_s)

    def failed(self, request: Request, exc: BaseException, traceback: str, runtime_s: float) -> None:
        self._end(request, "failed", runtime_s)

    def retried(self, request: Request, reason: BaseException) -> None:
        self._end(request, "retried", None)

    def revoked(self, request: Request, reason: str) -> None:
        self._end(request, "revoked", None)

    def rejected(self, task_id: str | None, reason: str, requeue: bool) -> None:
        # No task name: the message may not even have decoded.
        self.tasks.labels(self.hostname, "", "rejected").inc()
        if task_id is not None:
            self._run(task_id, False)

    def _end(self, request: Request, state: str, runtime_s: float | None) -> None:
        self.tasks.labels(self.hostname, request.task, state).inc()
        if runtime_s is not None:
            self.runtime.labels(self.hostname, request.task).observe(runtime_s)
        self._run(request.id, False)

    def _run(self, task_id: str, running: bool) -> None:
        """Track what runs by id: an outcome without a start (revoked before it ran) changes nothing."""
        with self._lock:
            if running:
                self._running.add(task_id)
            else:
                self._running.discard(task_id)
            self.active.labels(self.hostname).set(len(self._running))
