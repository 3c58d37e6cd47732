"""What the dashboard knows about the cluster: built from Celery's events and broker samples.

Pure bookkeeping with an injectable clock, so it is tested without servers: ``apply`` takes an
event dict as Celery's event receiver gives it, ``sample_queues`` a depth per queue,
``worker_stats`` an ``inspect stats`` reply. Readers get a JSON-ready ``snapshot``. One lock
guards everything; the feeding threads and the web handlers take it briefly.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The charts' time step and span, in seconds: 90 points of 10 s (15 minutes).
BUCKET_S = 10
WINDOW_S = 15 * 60
#: A worker counts as offline when no heartbeat came for this many heartbeat intervals (Flower's
#: rule too: a lost heartbeat or two is load, not death).
HEARTBEAT_MISSES = 2.0
#: The interval assumed when a worker does not say (Celery's default ``freq``), in seconds.
DEFAULT_FREQ_S = 2.0
#: How many task ids the dashboard remembers the name of (events after ``task-received`` carry
#: only the id), and how many failures it keeps.
NAMES_KEPT = 20_000
FAILURES_KEPT = 50
#: Task states counted, as the event types name them (``task-<state>``).
TASK_STATES = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected")
#: Runtime histogram buckets, in seconds (Prometheus's ``le`` bounds).
RUNTIME_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)


@dataclass
class WorkerView:
    hostname: str
    first_seen: float
    last_heartbeat: float = 0.0
    freq_s: float = DEFAULT_FREQ_S
    offline: bool = False
    active: int = 0
    processed: int = 0
    loadavg: list[float] = field(default_factory=list)
    pid: int | None = None
    software: str = ""
    rss_kib: int | None = None
    #: Tasks received and not started yet (prefetched), by id.
    reserved: set[str] = field(default_factory=set)

    def online(self, now: float) -> bool:
        return not self.offline and now - self.last_heartbeat <= self.freq_s * HEARTBEAT_MISSES + 1.0


@dataclass
class Runtimes:
    """A Prometheus-style histogram of one task's runtimes."""

    counts: list[int] = field(default_factory=lambda: [0] * len(RUNTIME_BUCKETS_S))
    total: int = 0
    sum_s: float = 0.0

    def observe(self, runtime_s: float) -> None:
        for i, bound in enumerate(RUNTIME_BUCKETS_S):
            if runtime_s <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum_s += runtime_s


class ClusterState:
    """Workers, task counts, throughput, failures and queue depths, as events and samples arrive."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.workers: dict[str, WorkerView] = {}
        #: (task name, state) -> count, since the dashboard started.
        self.counts: dict[tuple[str, str], int] = {}
        self.runtimes: dict[str, Runtimes] = {}
        #: Bucket start (epoch s) -> [succeeded, failed], the last WINDOW_S.
        self.throughput: OrderedDict[int, list[int]] = OrderedDict()
        #: Queue -> deque of (epoch s, depth), the last WINDOW_S.
        self.depths: dict[str, deque[tuple[float, int]]] = {}
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES_KEPT)
        self._names: OrderedDict[str, str] = OrderedDict()
        self.events_seen = 0
        self.malformed = 0

    # -- input ------------------------------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> None:
        """One event as Celery's receiver decodes it (``type``, ``hostname``, ``timestamp``, ...).
        A malformed one is counted and otherwise ignored: a monitor never stops on bad input."""
        kind = event.get("type")
        if not isinstance(kind, str):
            with self.lock:
                self.malformed += 1
            return
        with self.lock:
            self.events_seen += 1
            try:
                if kind.startswith("worker-"):
                    self._worker_event(kind[len("worker-") :], event)
                elif kind.startswith("task-"):
                    self._task_event(kind[len("task-") :], event)
            except (TypeError, ValueError, KeyError):
                self.malformed += 1

    def sample_queues(self, depths: Mapping[str, int]) -> None:
        now = self.clock()
        with self.lock:
            for queue, depth in depths.items():
                samples = self.depths.setdefault(queue, deque())
                samples.append((now, int(depth)))
                while samples and samples[0][0] < now - WINDOW_S:
                    samples.popleft()

    def worker_stats(self, replies: Mapping[str, Any]) -> None:
        """``inspect stats`` replies by node: what events do not carry (memory)."""
        with self.lock:
            for hostname, stats in replies.items():
                if not isinstance(stats, dict):
                    continue
                view = self.workers.get(hostname)
                if view is None:
                    continue
                rss = stats.get("rss_kib")
                if isinstance(rss, dict):
                    view.rss_kib = sum(int(v) for v in rss.values())
                elif isinstance(stats.get("rusage"), dict):  # a Celery worker: its peak, in KiB
                    view.rss_kib = int(stats["rusage"].get("maxrss", 0)) or None

    def _worker_event(self, what: str, event: Mapping[str, Any]) -> None:
        hostname = str(event["hostname"])
        # Every field is read before anything changes: a malformed event changes nothing.
        freq_s = float(event.get("freq") or DEFAULT_FREQ_S)
        active, processed = int(event.get("active") or 0), int(event.get("processed") or 0)
        loadavg = [float(x) for x in event.get("loadavg") or []]
        pid = int(event["pid"]) if event.get("pid") is not None else None
        now = self.clock()
        view = self.workers.get(hostname)
        if view is None:
            view = self.workers[hostname] = WorkerView(hostname, first_seen=now)
        view.offline = what == "offline"
        if view.offline:
            return
        # Our clock, not the event's: a node's clock may be off, its silence is what counts.
        view.last_heartbeat = now
        view.freq_s, view.active, view.processed, view.loadavg = freq_s, active, processed, loadavg
        view.pid = pid if pid is not None else view.pid
        if event.get("sw_ident"):
            view.software = f"{event.get('sw_ident')} {event.get('sw_ver', '')}".strip()

    def _task_event(self, state: str, event: Mapping[str, Any]) -> None:
        uuid = str(event.get("uuid") or "")
        # Every field is read before anything changes: a malformed event changes nothing.
        runtime_s = float(event["runtime"]) if event.get("runtime") is not None else None
        timestamp = float(event.get("timestamp") or self.clock())
        name = event.get("name")
        if isinstance(name, str) and name:
            self._names[uuid] = name
            self._names.move_to_end(uuid)
            while len(self._names) > NAMES_KEPT:
                self._names.popitem(last=False)
        else:
            name = self._names.get(uuid, "")
        key = (name, state)
        self.counts[key] = self.counts.get(key, 0) + 1
        worker = self.workers.get(str(event.get("hostname", "")))
        if worker is not None:
            if state == "received":
                worker.reserved.add(uuid)
            elif state != "sent":
                worker.reserved.discard(uuid)
        if state in ("succeeded", "failed"):
            bucket = self._bucket(self.clock())
            bucket[0 if state == "succeeded" else 1] += 1
            if runtime_s is not None:
                self.runtimes.setdefault(name, Runtimes()).observe(runtime_s)
        if state == "failed":
            self.failures.appendleft(
                {
                    "uuid": uuid,
                    "name": name,
                    "hostname": event.get("hostname", ""),
                    "timestamp": timestamp,
                    "exception": str(event.get("exception", "")),
                    "traceback": str(event.get("traceback") or ""),
                }
            )

    def _bucket(self, now: float) -> list[int]:
        start = int(now // BUCKET_S * BUCKET_S)
        bucket = self.throughput.get(start)
        if bucket is None:
            bucket = self.throughput[start] = [0, 0]
            while self.throughput and next(iter(self.throughput)) < start - WINDOW_S:
                self.throughput.popitem(last=False)
        return bucket

    # -- output -----------------------------------------------------------------------------------

    def task_names(self) -> list[str]:
        with self.lock:
            return sorted({name for name, _ in self.counts if name})

    def snapshot(self, extra_queues: Iterable[str] = ()) -> dict[str, Any]:
        """Everything the page shows, JSON-ready."""
        now = self.clock()
        with self.lock:
            workers = [
                {
                    "hostname": w.hostname,
                    "online": w.online(now),
                    "heartbeat_age_s": round(now - w.last_heartbeat, 1) if w.last_heartbeat else None,
                    "active": w.active,
                    "prefetched": len(w.reserved),
                    "processed": w.processed,
                    "loadavg": w.loadavg,
                    "pid": w.pid,
                    "software": w.software,
                    "rss_kib": w.rss_kib,
                }
                for w in sorted(self.workers.values(), key=lambda w: w.hostname)
            ]
            first = int((now - WINDOW_S) // BUCKET_S * BUCKET_S) + BUCKET_S
            throughput = [
                [t, *(x / BUCKET_S for x in self.throughput.get(t, (0, 0)))]
                for t in range(first, int(now // BUCKET_S * BUCKET_S) + 1, BUCKET_S)
            ]
            queues = {q: list(self.depths.get(q, ())) for q in sorted({*self.depths, *extra_queues})}
            tasks: dict[str, dict[str, int]] = {}
            for (name, state), count in self.counts.items():
                tasks.setdefault(name or "(unknown)", {})[state] = count
            return {
                "now": now,
                "workers": workers,
                "throughput": throughput,
                "queues": {
                    q: {
                        "depth": s[-1][1] if s else None,
                        "samples": [[round(t, 1), d] for t, d in s],
                        "net_per_s": _net_rate(s),
                    }
                    for q, s in queues.items()
                },
                "tasks": tasks,
                "runtimes": {
                    name: {"counts": list(h.counts), "total": h.total, "sum_s": h.sum_s}
                    for name, h in self.runtimes.items()
                },
                "failures": list(self.failures),
                "events_seen": self.events_seen,
                "malformed_events": self.malformed,
            }


def _net_rate(samples: list[tuple[float, int]]) -> float | None:
    """How fast a queue grew (+) or drained (-) over its last minute of samples, messages/s."""
    if len(samples) < 2:
        return None
    end_t, end = samples[-1]
    start_t, start = next(((t, d) for t, d in samples if t >= end_t - 60), samples[0])
    return round((end - start) / (end_t - start_t), 2) if end_t > start_t else None
