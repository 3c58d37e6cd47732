"""R14 of docs/reliability.md: a soak with results on; worker RSS and broker memory must stay flat, nothing lost.

A private broker (a ``redis-server`` on a free loopback port without persistence, or a temporary
SQLite file that also holds the results) and ONE worker started through the real CLI
(``rqueue -A soaktasks worker --pool prefork -c 2``). This process sends a steady load of small
tasks with ``delay()`` (``--rate`` per second, results on, ``result_expires`` short enough that the
stored results reach a steady state), calls ``delay().get()`` once a second, and every
``--sample-s`` reads:

- the worker's resident memory: ``VmRSS`` of the supervisor and every child, from ``/proc``;
- the broker's memory: Redis ``INFO memory`` ``used_memory`` (and the key count); for SQLite the
  size of the database file (with its ``-shm``), and of the write-ahead log (``-wal``) apart: the
  log is not flat but bounded, checkpointed and truncated by rqueue past
  ``SQLITE_WAL_LIMIT_BYTES`` (it grows in steps until then), so it is judged against that bound.

Every sent task's result is read back (in batches, some seconds after it was sent and before it
expires): lost = sent tasks without a SUCCESS result with the right value by the end. After a
warm-up (by default ``result_expires`` + 30 s: the results stored are then as many as expire), each
series is judged flat when the mean of its last third is within ``--tolerance`` (or an absolute
floor) of the mean of its first third; the least-squares slope is printed too.

Exit status: 0 when lost = 0, every series is flat (or the run is too short to judge) and the
SQLite log bounded, else 1.
The table goes to stdout; the figures and samples to ``--json`` (default
``benches/results/<date>-soak-<broker>.json``, with the table beside it as ``.txt``).

Run: ``make soak [SOAK_MINUTES=10] [SOAK_BROKER=redis|sqlite]`` or
``python benches/soak.py --minutes 10 --broker redis|sqlite [--rate 300] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported by a test: make `peers` importable
    sys.path.insert(0, str(HERE))

from peers.redis_server import RedisServer  # noqa: E402
from rqueue._rqueue import SQLITE_WAL_LIMIT_BYTES  # noqa: E402
from rqueue.bench import procstat  # noqa: E402
from rqueue.bench.processes import WorkerProcess, rqueue_command  # noqa: E402

RESULTS_DIR = HERE / "results"
MIB = 1024 * 1024

TASKS_MODULE = '''
"""The soak's app (written by benches/soak.py): one small task, results on, short result expiry."""
import os

from rqueue import App

app = App("soaktasks", broker=os.environ["SOAK_BROKER_URL"], backend=os.environ["SOAK_BACKEND_URL"] or None)
app.conf.update(result_expires=float(os.environ["SOAK_RESULT_EXPIRES_S"]))


@app.task(name="soak.work")
def work(i, payload):
    return [i, len(payload)]
'''

#: Each task carries this much payload (a small task, a small result).
PAYLOAD = "x" * 100
#: A result is read back this long after its task was sent (a backlog is read again later).
VERIFY_AFTER_S = 5.0
#: Results read per backend call.
VERIFY_BATCH = 500
#: At the end, the last tasks get this long to complete before the unfinished ones count as lost.
DRAIN_S = 60.0
#: Absolute growth that is noise whatever the relative one: RSS, and broker memory.
FLOOR_BYTES = {"worker_rss": 2 * MIB, "broker_memory": 1 * MIB}
#: The SQLite write-ahead log is bounded when it never passes rqueue's checkpoint threshold by more
#: than this factor (the size is looked at every 50 ms, so a busy log overshoots a little).
WAL_BOUND_FACTOR = 1.5


# -- measuring -------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    """``VmRSS`` of one process (None once it is gone)."""
    try:
        text = (procstat.PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def worker_rss(pid: int) -> tuple[int, int, int]:
    """Resident bytes of the worker's supervisor, of its descendants together, and how many they are."""
    pids = procstat.tree(pid)
    sizes = [rss_bytes(p) or 0 for p in pids]
    return sizes[0], sum(sizes[1:]), len(pids) - 1


class RedisBroker:
    kind = "redis"

    def __init__(self, workdir: Path) -> None:
        self.server = RedisServer(workdir)
        self.broker_url = self.backend_url = self.server.url
        self.version = f"Redis {self.server.version}"
        # rqueue requires noeviction: nothing may be dropped silently.
        self.server.client.config_set("maxmemory-policy", "noeviction")

    def memory(self) -> dict[str, int]:
        info = self.server.client.info("memory")
        return {
            "broker_memory": int(info["used_memory"]),
            "broker_rss": int(info["used_memory_rss"]),
            "keys": int(self.server.client.dbsize()),
        }

    def stop(self) -> None:
        self.server.stop()


class SqliteBroker:
    kind = "sqlite"

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "soak.sqlite3"
        self.broker_url = f"sqlite:///{self.path}"
        self.backend_url = ""  # results in the broker's own file
        self.version = f"SQLite {sqlite3.sqlite_version}"

    def memory(self) -> dict[str, int]:
        def size(suffix: str) -> int:
            try:
                return Path(f"{self.path}{suffix}").stat().st_size
            except OSError:
                return 0

        db, wal, shm = size(""), size("-wal"), size("-shm")
        return {"broker_memory": db + shm, "db_file": db, "wal_file": wal, "shm_file": shm}

    def stop(self) -> None:
        pass


# -- judging ---------------------------------------------------------------------------------------


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 2:
        return 0.0
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def judge(samples: list[dict[str, Any]], key: str, warmup_s: float, tolerance: float) -> dict[str, Any]:
    """Start/end/slope of one series after the warm-up, and whether it is flat."""
    points = [(s["t_s"], float(s[key])) for s in samples if s["t_s"] >= warmup_s]
    out: dict[str, Any] = {"samples": len(points)}
    if len(points) < 6:
        out["verdict"] = "too short to judge"
        return out
    third = len(points) // 3
    first = statistics.fmean(y for _, y in points[:third])
    last = statistics.fmean(y for _, y in points[-third:])
    growth = last - first
    floor = FLOOR_BYTES.get(key, 0)
    flat = growth <= max(tolerance * first, floor)
    out.update(
        start=points[0][1],
        end=points[-1][1],
        first_third_mean=first,
        last_third_mean=last,
        growth=growth,
        growth_pct=100.0 * growth / first if first else 0.0,
        slope_per_min=slope_per_min(points),
        verdict="flat" if flat else "GROWING",
    )
    return out


def judge_bound(samples: list[dict[str, Any]], key: str, bound: float) -> dict[str, Any]:
    """Start/end/max/slope of one series over the whole run, and whether it stayed under ``bound``."""
    points = [(s["t_s"], float(s[key])) for s in samples]
    peak = max(y for _, y in points)
    return {
        "samples": len(points),
        "start": points[0][1],
        "end": points[-1][1],
        "max": peak,
        "bound": bound,
        "slope_per_min": slope_per_min(points),
        "verdict": "bounded" if peak <= bound else "OVER BOUND",
    }


# -- the run ---------------------------------------------------------------------------------------


class Soak:
    def __init__(self, opts: argparse.Namespace, workdir: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.broker: RedisBroker | SqliteBroker = (
            RedisBroker(workdir) if opts.broker == "redis" else SqliteBroker(workdir)
        )
        (workdir / "soaktasks.py").write_text(TASKS_MODULE)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RQUEUE_")},
            "SOAK_BROKER_URL": self.broker.broker_url,
            "SOAK_BACKEND_URL": self.broker.backend_url,
            "SOAK_RESULT_EXPIRES_S": str(opts.result_expires),
            "PYTHONPATH": str(workdir),
        }
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("SOAK_")})
        sys.path.insert(0, str(workdir))
        sys.modules.pop("soaktasks", None)  # a previous soak in this process had its own
        import soaktasks  # type: ignore[import-not-found]

        self.tasks = soaktasks
        self.samples: list[dict[str, Any]] = []
        self.roundtrips_ms: list[float] = []
        self.sent = 0
        self.verified = 0
        self.wrong: list[str] = []
        #: (send time, task id, i) of tasks whose result is not read back yet, oldest first.
        self.pending: collections.deque[tuple[float, str, int]] = collections.deque()

    def start_worker(self) -> WorkerProcess:
        cmd = [*rqueue_command(), "-A", "soaktasks", "worker", "--pool", self.opts.pool]
        cmd += ["-c", str(self.opts.concurrency), "--loglevel", "warning"]
        worker = WorkerProcess(cmd, self.workdir / "worker.log", env=self.env, cwd=self.workdir)
        # Ready once it answers a task.
        if self.tasks.work.delay(-1, "").get(timeout=60) != [-1, 0]:
            raise SystemExit("the warm-up task returned a wrong value")
        return worker

    def sample(self, t_s: float, worker: WorkerProcess) -> None:
        supervisor, children, nchildren = worker_rss(worker.pid)
        row: dict[str, Any] = {
            "t_s": round(t_s, 1),
            "sent": self.sent,
            "verified": self.verified,
            "unverified": len(self.pending),
            "queue_length": self.tasks.app.broker.queue_length("celery"),
            "worker_rss": supervisor + children,
            "supervisor_rss": supervisor,
            "children_rss": children,
            "children": nchildren,
            **self.broker.memory(),
        }
        self.samples.append(row)
        print(
            f"  {t_s:7.0f}s sent {self.sent:>9,}  unverified {len(self.pending):>6,}  queue {row['queue_length']:>6,}  "
            f"worker RSS {row['worker_rss'] / MIB:7.1f} MiB ({nchildren} children)  "
            f"broker {row['broker_memory'] / MIB:7.1f} MiB",
            flush=True,
        )

    def verify(self, older_than: float) -> None:
        """Read back the results of tasks sent before ``older_than``; the unfinished go to the back."""
        batch: list[tuple[float, str, int]] = []
        while self.pending and self.pending[0][0] < older_than and len(batch) < VERIFY_BATCH:
            batch.append(self.pending.popleft())
        if not batch:
            return
        metas = self.tasks.app.backend.get_many_meta([task_id for _, task_id, _ in batch])
        for (sent_at, task_id, i), meta in zip(batch, metas, strict=True):
            if meta["status"] == "SUCCESS":
                self.verified += 1
                if meta["result"] != [i, len(PAYLOAD)]:
                    self.wrong.append(task_id)
            elif meta["status"] in ("FAILURE", "REVOKED"):
                self.wrong.append(task_id)
                self.verified += 1
            else:  # not done yet (a backlog): read again later
                self.pending.append((sent_at, task_id, i))

    def run(self) -> dict[str, Any]:
        opts = self.opts
        worker = self.start_worker()
        work = self.tasks.work
        duration = opts.minutes * 60.0
        started = time.monotonic()
        next_sample = started
        next_get = started + 1.0
        try:
            while True:
                now = time.monotonic()
                elapsed = now - started
                if elapsed >= duration:
                    break
                due = int(elapsed * opts.rate) - self.sent
                for _ in range(min(due, opts.rate)):  # never more than a second's worth at once
                    result = work.delay(self.sent, PAYLOAD)
                    self.pending.append((now, result.id, self.sent))
                    self.sent += 1
                if now >= next_get:
                    t0 = time.perf_counter()
                    if work.delay(-2, "ab").get(timeout=60) != [-2, 2]:
                        raise SystemExit("delay().get() returned a wrong value")
                    self.roundtrips_ms.append(1000 * (time.perf_counter() - t0))
                    next_get += 1.0
                self.verify(now - VERIFY_AFTER_S)
                if now >= next_sample:
                    worker.check_alive()
                    self.sample(elapsed, worker)
                    next_sample += opts.sample_s
                time.sleep(0.01)
            # The load stops; the last tasks get DRAIN_S to complete.
            end_of_load = time.monotonic()
            self.sample(end_of_load - started, worker)
            while self.pending and time.monotonic() - end_of_load < DRAIN_S:
                self.verify(time.monotonic())
                if self.pending:
                    time.sleep(0.2)
            worker.check_alive()
        finally:
            worker.stop()
        return self.summary(time.monotonic() - started)

    def summary(self, wall_s: float) -> dict[str, Any]:
        opts = self.opts
        warmup = opts.warmup_s if opts.warmup_s is not None else opts.result_expires + 30.0
        metrics = {key: judge(self.samples, key, warmup, opts.tolerance) for key in ("worker_rss", "broker_memory")}
        if self.broker.kind == "sqlite":
            metrics["wal_file"] = judge_bound(self.samples, "wal_file", WAL_BOUND_FACTOR * SQLITE_WAL_LIMIT_BYTES)
        rt = sorted(self.roundtrips_ms)
        lost = len(self.pending)
        flat = all(m["verdict"] not in ("GROWING", "OVER BOUND") for m in metrics.values())
        return {
            "scenario": "R14 soak, results on",
            "date": datetime.date.today().isoformat(),
            "broker": self.broker.kind,
            "broker_version": self.broker.version,
            "machine": {"cpus": os.cpu_count(), "cpu": procstat.cpu_model(), "python": platform.python_version()},
            "minutes": opts.minutes,
            "rate_per_s": opts.rate,
            "pool": opts.pool,
            "concurrency": opts.concurrency,
            "result_expires_s": opts.result_expires,
            "warmup_s": warmup,
            "tolerance": opts.tolerance,
            "wall_s": wall_s,
            "sent": self.sent,
            "succeeded": self.verified - len(self.wrong),
            "lost": lost,
            "lost_ids": [task_id for _, task_id, _ in list(self.pending)[:20]],
            "wrong": len(self.wrong),
            "roundtrip_ms": {
                "count": len(rt),
                "p50": statistics.median(rt) if rt else None,
                "p95": rt[int(0.95 * (len(rt) - 1))] if rt else None,
                "max": rt[-1] if rt else None,
            },
            "metrics": metrics,
            "passed": lost == 0 and not self.wrong and flat,
            "samples": self.samples,
        }


# -- report ----------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    rt = report["roundtrip_ms"]
    lines = [
        f"R14 soak on {report['broker_version']}: {report['minutes']:g} min, {report['rate_per_s']} tasks/s "
        f"with results (expire after {report['result_expires_s']:g} s), worker --pool {report['pool']} "
        f"-c {report['concurrency']}, {report['machine']['cpus']} CPUs",
        f"sent {report['sent']:,}  succeeded {report['succeeded']:,}  lost {report['lost']}  wrong {report['wrong']}  "
        f"delay().get() p50 {rt['p50'] or 0:.2f} ms p95 {rt['p95'] or 0:.2f} ms max {rt['max'] or 0:.1f} ms "
        f"({rt['count']} calls)",
        f"judged after a warm-up of {report['warmup_s']:g} s: last third vs first third, flat within "
        f"{100 * report['tolerance']:g} % (or {FLOOR_BYTES['worker_rss'] // MIB} MiB RSS / "
        f"{FLOOR_BYTES['broker_memory'] // MIB} MiB broker)"
        + (
            f"; broker_memory is the database file; its log (wal_file) must stay under "
            f"{WAL_BOUND_FACTOR:g} x {SQLITE_WAL_LIMIT_BYTES // MIB} MiB, where rqueue truncates it"
            if report["broker"] == "sqlite"
            else "; broker_memory is Redis used_memory"
        ),
        f"{'series':<16}{'start MiB':>10}{'end MiB':>10}{'1st 3rd':>10}{'last 3rd':>10}{'growth':>9}"
        f"{'slope MiB/min':>15}  verdict",
    ]
    for key, m in report["metrics"].items():
        if "bound" in m:
            lines.append(
                f"{key:<16}{m['start'] / MIB:>10.1f}{m['end'] / MIB:>10.1f}{'max ' + format(m['max'] / MIB, '.1f'):>20}"
                f"{'':>9}{m['slope_per_min'] / MIB:>15.3f}  {m['verdict']} (under {m['bound'] / MIB:.0f} MiB)"
            )
            continue
        if "start" not in m:
            lines.append(f"{key:<16}{'':>64}  {m['verdict']} ({m['samples']} samples)")
            continue
        lines.append(
            f"{key:<16}{m['start'] / MIB:>10.1f}{m['end'] / MIB:>10.1f}{m['first_third_mean'] / MIB:>10.1f}"
            f"{m['last_third_mean'] / MIB:>10.1f}{m['growth_pct']:>8.1f}%{m['slope_per_min'] / MIB:>15.3f}  "
            f"{m['verdict']}"
        )
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs [default: 10]")
    parser.add_argument("--broker", choices=["redis", "sqlite"], default="redis")
    parser.add_argument("--rate", type=int, default=300, help="tasks sent per second [default: 300]")
    parser.add_argument("--pool", default="prefork", help="the worker's pool [default: prefork]")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="the worker's concurrency [default: 2]")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples [default: 10]")
    parser.add_argument("--result-expires", type=float, default=120.0, help="result_expires, s [default: 120]")
    parser.add_argument("--warmup-s", type=float, help="samples before this are not judged [default: expiry + 30]")
    parser.add_argument("--tolerance", type=float, default=0.05, help="relative growth still flat [default: 0.05]")
    parser.add_argument("--json", type=Path, help="write the figures here [default: benches/results/<date>-soak-…]")
    opts = parser.parse_args(argv)
    if opts.json is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        opts.json = RESULTS_DIR / f"{datetime.date.today().isoformat()}-soak-{opts.broker}.json"

    with tempfile.TemporaryDirectory(prefix="rqueue-soak-") as tmp:
        soak = Soak(opts, Path(tmp))
        print(f"R14 soak: {opts.minutes:g} min on {soak.broker.version}, {opts.rate} tasks/s, results on", flush=True)
        try:
            report = soak.run()
        finally:
            soak.broker.stop()
    text = table(report)
    print(f"\n{text}")
    opts.json.write_text(json.dumps(report, indent=1) + "\n")
    opts.json.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwrote {opts.json} and {opts.json.with_suffix('.txt').name}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
