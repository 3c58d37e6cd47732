"""The scenarios of ``rqueue bench``: enqueue, drain and round trip, through the real CLI worker.

A run has its own queue (``rqueue-bench-<run id>``) and, on Redis, its own key prefix (the same
name and a colon), so it never touches a user's queues; its workers are ``rqueue -A
rqueue.bench.tasks worker`` processes in their own process groups. ``cleanup()`` stops them and
deletes what the run left in the broker (waiting messages, dead letters, leases, prefixed keys and
the results of its tasks); with no ``--broker`` everything lives in a temporary directory that is
removed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rqueue import __version__, states
from rqueue.backends import BACKENDS
from rqueue.bench import procstat
from rqueue.bench.counter import DrainTimeout, watch_drain
from rqueue.bench.processes import WorkerGroup, WorkerProcess, rqueue_command
from rqueue.bench.stats import latency_ms
from rqueue.bench.tasks import (
    COUNTERS_ENV,
    KEYPREFIX_ENV,
    NOOP,
    PAYLOAD,
    QUEUE_ENV,
    bench_settings,
    make_app,
    read_counts,
)
from rqueue.brokers import BROKERS, AmqpBroker
from rqueue.brokers.base import DeadLetterAdmin, LeaseRecovery, capability, owner_id, require
from rqueue.exceptions import ConfigurationError, RQueueError
from rqueue.urls import describe

SCENARIOS = ("enqueue", "drain", "roundtrip")
POOLS = ("prefork", "threads", "solo")
#: Messages per batch publish when filling a queue (``send_many``).
FILL_CHUNK = 1_000
#: The largest ``--payload-bytes``: the message (base64 in kombu's envelope) must stay under 1 MiB.
MAX_PAYLOAD_BYTES = 512 * 1024
#: Round trips before measuring (connections, caches and the poll backoff warm up).
WARMUP_ROUNDTRIPS = 20
#: How long workers get to answer the first round trip.
READY_TIMEOUT_S = 60.0
#: Untimed calls before the enqueue scenario (as the peer comparison's client does).
WARMUP_CALLS = 10
DEFAULT_ROUNDTRIPS = 1_000


class BenchError(RQueueError):
    """A bench run could not measure what it was asked to (a worker died, a drain timed out ...)."""


@dataclass
class BenchOptions:
    """What to measure; see ``rqueue bench --help``."""

    broker: str | None = None
    backend: str | None = None
    tasks: int = 10_000
    workers: int = 1
    concurrency: int | None = None
    pool: str = "prefork"
    payload_bytes: int = 0
    results: bool = False
    scenario: str = "all"
    roundtrips: int | None = None
    prefetch_multiplier: int | None = None
    timeout_s: float = 120.0
    progress: bool | None = None
    #: Workers send task events (``-E``): what monitoring costs (``benches/bench_events.py``).
    task_events: bool = False

    def check(self) -> None:
        """ConfigurationError for values no run can use."""
        if self.tasks < 1:
            raise ConfigurationError(f"--tasks must be at least 1, got {self.tasks}")
        if self.workers < 1:
            raise ConfigurationError(f"--workers must be at least 1, got {self.workers}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigurationError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.pool not in POOLS:
            raise ConfigurationError(f"--pool: unknown pool {self.pool!r}; choose one of {', '.join(POOLS)}")
        if not 0 <= self.payload_bytes <= MAX_PAYLOAD_BYTES:
            raise ConfigurationError(
                f"--payload-bytes must be between 0 and {MAX_PAYLOAD_BYTES} (messages stay under 1 MiB), "
                f"got {self.payload_bytes}"
            )
        if self.scenario not in (*SCENARIOS, "all"):
            raise ConfigurationError(
                f"--scenario: unknown scenario {self.scenario!r}; choose one of {', '.join((*SCENARIOS, 'all'))}"
            )
        if self.roundtrips is not None and self.roundtrips < 1:
            raise ConfigurationError(f"--roundtrips must be at least 1, got {self.roundtrips}")
        if self.timeout_s <= 0:
            raise ConfigurationError(f"--timeout must be positive, got {self.timeout_s}")
        if self.broker is not None:
            BROKERS.scheme_of(self.broker, "--broker")
        if self.backend is not None:
            BACKENDS.scheme_of(self.backend, "--backend")

    @property
    def scenarios(self) -> list[str]:
        return list(SCENARIOS) if self.scenario == "all" else [self.scenario]

    @property
    def effective_concurrency(self) -> int:
        """Processes or threads per worker, as the worker computes it."""
        return 1 if self.pool == "solo" else self.concurrency or os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": procstat.cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "host": socket.gethostname(),
    }


def _progress(enabled: bool | None) -> Callable[..., Any]:
    """A tqdm bar factory (on stderr; ``None`` shows bars only on a terminal)."""

    def bar(**kwargs: Any) -> Any:
        return tqdm(disable=None if enabled is None else not enabled, file=sys.stderr, leave=False, **kwargs)

    return bar


class Bench:
    """One ``rqueue bench`` run. Use as a context manager: leaving it always cleans up."""

    def __init__(self, options: BenchOptions) -> None:
        options.check()
        self.options = options
        self.run_id = f"{datetime.now(timezone.utc):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
        self.queue = f"rqueue-bench-{self.run_id}"
        self.tmp = Path(tempfile.mkdtemp(prefix="rqueue-bench-"))
        self.temporary_broker = options.broker is None
        self.broker_url = options.broker or f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        scheme = BROKERS.scheme_of(self.broker_url, "--broker")
        self.kind = {
            "sqlite": "sqlite",
            "amqp": "amqp",
            "pyamqp": "amqp",
            "amqps": "amqp",
            "postgresql": "postgres",
            "postgres": "postgres",
        }.get(scheme, "redis")
        # Round trips need results; the broker keeps them unless told otherwise (RabbitMQ needs a
        # --backend). Named explicitly for both sides, so $RQUEUE_RESULT_BACKEND cannot point the
        # producer and the workers apart.
        self.backend_url = options.backend or self.broker_url
        if self.kind == "amqp" and not options.backend:
            raise ConfigurationError("rqueue bench on RabbitMQ needs --backend (a Redis URL) for results")
        self.keyprefix = f"{self.queue}:" if self.kind == "redis" else ""
        self.app, self.noop, self.payload = make_app(
            bench_settings(self.queue, self.keyprefix), broker=self.broker_url, backend=self.backend_url
        )
        self.bar = _progress(options.progress)
        self.result_ids: list[str] = []
        self.owners: set[tuple[str, int]] = set()  # (worker hostname, pid): lease owners to release
        self.groups: list[WorkerGroup] = []
        self.runs = 0
        self.rows: list[dict[str, Any]] = []
        self.cleaned: dict[str, Any] | None = None
        self.reached = False  # the broker answered once: there may be something to clean

    # -- setup ---------------------------------------------------------------------------------------

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def check_broker(self) -> None:
        """Fail early, with the broker's own error, when it cannot be reached."""
        self.app.broker.queue_length(self.queue)
        if self.kind == "redis":
            self._redis().ping()
        self.reached = True

    @property
    def call(self) -> tuple[str, tuple[Any, ...]]:
        """The task name and arguments of every message of this run."""
        if self.options.payload_bytes:
            return PAYLOAD, ("x" * self.options.payload_bytes,)
        return NOOP, ()

    def worker_env(self, counters: Path) -> dict[str, str]:
        env = dict(os.environ)
        env["RQUEUE_BROKER_URL"] = self.broker_url
        env["RQUEUE_RESULT_BACKEND"] = self.backend_url
        env[QUEUE_ENV] = self.queue
        env[KEYPREFIX_ENV] = self.keyprefix
        env[COUNTERS_ENV] = str(counters)
        return env

    def worker_command(self, index: int) -> list[str]:
        o = self.options
        cmd = [*rqueue_command(), "-A", "rqueue.bench.tasks", "worker", "-P", o.pool, "-Q", self.queue]
        if o.pool != "solo":
            cmd += ["-c", str(o.effective_concurrency)]
        if o.prefetch_multiplier:
            cmd += ["--prefetch-multiplier", str(o.prefetch_multiplier)]
        if o.task_events:
            cmd.append("-E")
        cmd += ["-n", f"bench{index}-{self.run_id}@%h", "--loglevel", "warning"]
        return cmd

    def shown_command(self) -> str:
        cmd = self.worker_command(0)
        return " ".join(["rqueue", *cmd[cmd.index("-A") :]])

    def start_workers(self) -> tuple[WorkerGroup, Path]:
        self.runs += 1
        counters = self.tmp / f"counters-{self.runs}"
        counters.mkdir()
        env = self.worker_env(counters)
        group = WorkerGroup()
        self.groups.append(group)
        for i in range(self.options.workers):
            group.add(WorkerProcess(self.worker_command(i), self.tmp / f"worker-{self.runs}-{i}.log", env))
        return group, counters

    def stop_workers(self, group: WorkerGroup) -> None:
        host = socket.gethostname()
        for i, pid in enumerate(group.pids):
            for p in procstat.tree(pid):
                self.owners.add((f"bench{i}-{self.run_id}@{host}", p))
        group.stop()  # an interrupted stop leaves the group listed: cleanup() kills what is left
        if group in self.groups:
            self.groups.remove(group)

    # -- scenarios -------------------------------------------------------------------------------------

    def run(self, on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Measure every chosen scenario; the report (also when ``on_row`` printed rows as they came)."""
        self.check_broker()
        for scenario in self.options.scenarios:
            rows = {"enqueue": self.enqueue, "drain": self.drain, "roundtrip": self.roundtrip}[scenario]()
            for row in rows:
                self.rows.append(row)
                if on_row is not None:
                    on_row(row)
        return self.report()

    def _row(self, scenario: str, label: str, n: int, seconds: float, **extra: Any) -> dict[str, Any]:
        o = self.options
        row: dict[str, Any] = {
            "scenario": scenario,
            "label": label,
            "tasks": n,
            "seconds": seconds,
            "tasks_s": n / seconds if seconds > 0 else None,
            "p50_ms": None,
            "p95_ms": None,
            "p99_ms": None,
            "worker_cpu_pct": None,
            "broker_cpu_pct": None,
            "worker_rss_mib": None,
            "workers": o.workers,
            "pool": o.pool,
            "concurrency": o.effective_concurrency,
            "results": o.results,
            "payload_bytes": o.payload_bytes,
        }
        row.update(extra)
        return row

    def _purge(self) -> None:
        self.app.broker.purge([self.queue])

    def enqueue(self) -> list[dict[str, Any]]:
        """``delay()`` one at a time (with per-call latency), then batches of ``send_many``; no worker."""
        o = self.options
        name, args = self.call
        task = self.app.tasks[name]
        n = o.tasks
        for _ in range(WARMUP_CALLS):  # connect and load what the first call loads, untimed
            task.apply_async(args, ignore_result=True)
        self._purge()
        broker_cpu = self.broker_cpu()
        samples: list[float] = []
        perf = time.perf_counter
        with self.bar(total=n, desc="enqueue delay()", unit="task") as bar:
            start = perf()
            for i in range(n):
                t0 = perf()
                res = task.apply_async(args, ignore_result=not o.results)
                samples.append(perf() - t0)
                if o.results:
                    self.result_ids.append(res.id)
                if i % 256 == 255:
                    bar.update(256)
            seconds = perf() - start
        cpu = broker_cpu()
        self._check_queued(n)
        single = self._row(
            "enqueue", "enqueue, delay()", n, seconds, **latency_ms(samples), broker_cpu_pct=_pct(cpu, seconds)
        )
        single.pop("max_ms", None)
        single.pop("mean_ms", None)
        self._purge()
        broker_cpu = self.broker_cpu()
        seconds = self.fill(n, "enqueue delay_many()")
        batch = self._row(
            "enqueue", f"enqueue, batches of {FILL_CHUNK:,}", n, seconds, broker_cpu_pct=_pct(broker_cpu(), seconds)
        )
        self._check_queued(n)
        self._purge()
        for row in (single, batch):
            row.update(workers=0, pool=None, concurrency=None)
        return [single, batch]

    def fill(self, n: int, desc: str) -> float:
        """Publish ``n`` messages in batches; the seconds it took."""
        name, args = self.call
        ignore = not self.options.results
        with self.bar(total=n, desc=desc, unit="task") as bar:
            start = time.perf_counter()
            sent = 0
            while sent < n:
                k = min(FILL_CHUNK, n - sent)
                results = self.app.send_many(name, [(args, {})] * k, ignore_result=ignore)
                if not ignore:
                    self.result_ids.extend(r.id for r in results)
                sent += k
                bar.update(k)
            return time.perf_counter() - start

    def _check_queued(self, n: int) -> None:
        queued = self.app.broker.queue_length(self.queue)
        if queued != n:
            raise BenchError(f"expected {n} messages in queue {self.queue}, found {queued}")

    def drain(self) -> list[dict[str, Any]]:
        """Fill the queue, then start the workers and time them until every task has run."""
        o = self.options
        n = o.tasks
        self._purge()
        first_id = len(self.result_ids)
        self.fill(n, "fill queue")
        self._check_queued(n)
        group, counters = self.start_workers()
        usage = procstat.TreeUsage(group.pids)
        broker_cpu: Callable[[], float | None] = _none

        def on_first() -> None:
            nonlocal broker_cpu
            usage.start()
            broker_cpu = self.broker_cpu()

        try:
            with self.bar(total=n, desc="drain", unit="task") as bar:
                timing = watch_drain(
                    counters, n, o.timeout_s, group.check_alive, on_first, lambda done: bar.update(done - bar.n)
                )
            usage.stop()
            cpu = broker_cpu()
        except DrainTimeout as exc:
            raise BenchError(
                f"drain: {exc.done:,} of {n:,} tasks ran within --timeout {o.timeout_s:g} s "
                f"(worker command: {self.shown_command()})"
            ) from None
        finally:
            self.stop_workers(group)
        seconds = timing.seconds
        stored = self._count_stored(self.result_ids[first_id:]) if o.results else None
        if stored is not None and stored != n:
            raise BenchError(f"drain: {n:,} tasks ran but {stored:,} results were stored")
        row = self._row(
            "drain",
            f"drain, {'results stored' if o.results else 'no results'}",
            n,
            seconds,
            tasks_s=timing.measured / seconds,
            tasks_timed=timing.measured,
            tasks_run=read_counts(counters),
            startup_s=timing.first - timing.started,
            tasks_s_incl_startup=n / (timing.end - timing.started),
            results_stored=stored,
            command=self.shown_command(),
            **self._usage(usage, seconds, cpu),
        )
        return [row]

    def roundtrip(self) -> list[dict[str, Any]]:
        """Sequential ``delay().get()`` with the workers running: per-call latency."""
        o = self.options
        n = o.roundtrips or min(o.tasks, DEFAULT_ROUNDTRIPS)
        name, args = self.call
        task = self.app.tasks[name]
        self._purge()
        group, _ = self.start_workers()
        usage = procstat.TreeUsage(group.pids)
        samples: list[float] = []
        try:
            self._wait_ready(group, task, args)
            for _ in range(WARMUP_ROUNDTRIPS):
                self._call(task, args, 10.0)
            usage.start()
            broker_cpu = self.broker_cpu()
            perf = time.perf_counter
            with self.bar(total=n, desc="round trip", unit="call") as bar:
                start = perf()
                for _ in range(n):
                    t0 = perf()
                    self._call(task, args, 10.0)
                    samples.append(perf() - t0)
                    bar.update(1)
                seconds = perf() - start
            usage.stop()
            cpu = broker_cpu()
        finally:
            self.stop_workers(group)
        lat = latency_ms(samples)
        row = self._row(
            "roundtrip",
            "round trip, delay().get()",
            n,
            seconds,
            p50_ms=lat["p50_ms"],
            p95_ms=lat["p95_ms"],
            p99_ms=lat["p99_ms"],
            max_ms=lat["max_ms"],
            mean_ms=lat["mean_ms"],
            results=True,
            command=self.shown_command(),
            **self._usage(usage, seconds, cpu),
        )
        return [row]

    def _call(self, task: Any, args: tuple[Any, ...], timeout: float) -> Any:
        res = task.apply_async(args)
        self.result_ids.append(res.id)
        return res.get(timeout=timeout)

    def _wait_ready(self, group: WorkerGroup, task: Any, args: tuple[Any, ...]) -> None:
        wait_s = min(READY_TIMEOUT_S, self.options.timeout_s)
        deadline = time.monotonic() + wait_s
        while True:
            group.check_alive()
            try:
                self._call(task, args, 1.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise BenchError(f"the workers did not answer within {wait_s:g} s") from None

    def _usage(self, usage: procstat.TreeUsage, seconds: float, broker_cpu_s: float | None) -> dict[str, Any]:
        rss = usage.peak_rss_bytes
        return {
            "worker_cpu_pct": usage.cpu_percent(seconds),
            "broker_cpu_pct": _pct(broker_cpu_s, seconds),
            "worker_rss_mib": None if rss is None else rss / (1 << 20),
        }

    # -- broker --------------------------------------------------------------------------------------------

    def _redis(self) -> Any:
        return self.app.broker.client  # type: ignore[attr-defined]

    def broker_cpu(self) -> Callable[[], float | None]:
        """Start reading the broker's CPU time; the returned function gives the seconds used since.

        Redis reports its own (``INFO cpu``); the embedded SQLite broker has no process of its own.
        """
        if self.kind != "redis":
            return _none

        import redis  # noqa: PLC0415 - redis-py is optional (rqueue[redis])

        def used() -> float | None:
            try:
                info = self._redis().info("cpu")
                return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            except (redis.RedisError, KeyError, ValueError):  # INFO refused (an ACL), or fields missing
                return None

        start = used()
        if start is None:
            return _none
        return lambda: None if (now := used()) is None else now - start

    def _count_stored(self, ids: list[str]) -> int:
        if self.kind == "redis" and self.backend_url == self.broker_url:
            r = self._redis()
            return sum(
                int(r.exists(*[f"celery-task-meta-{i}" for i in ids[k : k + 1000]])) for k in range(0, len(ids), 1000)
            )
        backend = self.app.backend
        return sum(1 for i in ids if backend.get_meta(i)["status"] == states.SUCCESS)

    # -- cleanup -------------------------------------------------------------------------------------------

    def cleanup(self) -> dict[str, Any]:
        """Stop every worker and delete what this run put in the broker; what is left (all zero)."""
        if self.cleaned is not None:
            return self.cleaned
        for group in list(self.groups):
            with contextlib.suppress(Exception):
                self.stop_workers(group)
        try:
            if self.temporary_broker or not self.reached:
                left = {"queue_length": 0, "removed": str(self.tmp)} if self.temporary_broker else {}
            else:
                left = self._clean_broker()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.cleaned = left
        return left

    def _clean_broker(self) -> dict[str, Any]:
        broker = self.app.broker
        recovery = capability(broker, LeaseRecovery)
        dead = require(broker, DeadLetterAdmin, "rqueue bench")
        for hostname, pid in self.owners:  # leases of workers that had to be killed
            if recovery is not None:
                recovery.requeue_owner(owner_id(hostname, pid), 1_000_000)
        broker.purge([self.queue])
        dead.purge_dead(self.queue)
        if isinstance(broker, AmqpBroker):  # durable queues outlive the run: remove them
            broker.native.delete_queues([self.queue])
        if self.kind == "redis":
            r = self._redis()
            if self.backend_url == self.broker_url:
                for k in range(0, len(self.result_ids), 1000):
                    r.delete(*[f"celery-task-meta-{i}" for i in self.result_ids[k : k + 1000]])
            else:
                self._forget_results()
            keys = list(r.scan_iter(match=f"{_glob_escape(self.keyprefix)}*", count=1000))
            for k in range(0, len(keys), 1000):
                r.delete(*keys[k : k + 1000])
            leftover = sum(1 for _ in r.scan_iter(match=f"{_glob_escape(self.keyprefix)}*", count=1000))
        else:
            self._forget_results()
            leftover = 0
        return {
            "queue_length": broker.queue_length(self.queue),
            "dead_letters": len(dead.dead_letters(self.queue, 10)),
            "prefixed_keys": leftover,
            "results_deleted": len(self.result_ids),
        }

    def _forget_results(self) -> None:
        backend = self.app.backend
        for task_id in self.result_ids:
            backend.forget(task_id)

    # -- report ----------------------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        o = self.options
        return {
            "rqueue": __version__,
            "run_id": self.run_id,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "broker": "temporary SQLite file" if self.temporary_broker else describe(self.broker_url),
            "backend": "the broker" if self.backend_url == self.broker_url else describe(self.backend_url),
            "broker_kind": self.kind,
            "queue": self.queue,
            "keyprefix": self.keyprefix,
            "command": self.shown_command(),
            "options": {k: v for k, v in asdict(o).items() if k not in ("broker", "backend", "progress")},
            "scenarios": self.rows,
        }


def _none() -> None:
    return None


def _pct(cpu_s: float | None, seconds: float) -> float | None:
    return None if cpu_s is None or seconds <= 0 else 100.0 * cpu_s / seconds


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
