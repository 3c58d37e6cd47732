"""End to end on the embedded SQLite broker, through the real product: App, ``.delay()``, the CLI worker.

In a temporary directory it writes a ``tasks.py`` (``App("tasks", broker="sqlite:///<tmp>/b.sqlite3")``
with a no-op task), then:

(a) drain: enqueue N no-op tasks with ``noop.delay()`` (the enqueue rate is reported too), start ONE
    worker with the real CLI (``rqueue -A tasks worker ...``) and time from its start until the queue
    is empty and every result is stored (``app.broker.queue_length`` and a count of the rows of
    ``rqueue_results``). Run for the configured pool and again for ``--pool solo``.
(b) round trip: with a worker running, sequential ``noop.delay().get(timeout=10)`` calls; p50/p99.

Run: ``python benches/bench_sqlite.py [--tasks N] [--roundtrips N] [--pool P] [-c N]
[--prefetch-multiplier N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

DRAIN_TARGET_TASKS_S = 20_000.0
ROUNDTRIP_TARGET_P50_MS = 2.0
#: Give up on one drain after this long (the runtime stays bounded even when something is wrong).
DRAIN_TIMEOUT_S = 60.0
POLL_S = 0.005
WARMUP_ROUNDTRIPS = 50

TASKS_PY = """\
from rqueue import App

app = App("tasks", broker={broker!r})


@app.task
def noop():
    return None
"""


class WorkerProcess:
    """One ``rqueue -A tasks worker`` started through the CLI; stopped with SIGTERM."""

    def __init__(self, workdir: Path, pool: str, concurrency: int, prefetch: int, log: Path) -> None:
        rqueue_cli = Path(sys.executable).with_name("rqueue")
        cmd = [str(rqueue_cli), "-A", "tasks", "worker", "--pool", pool, "--loglevel=warning"]
        if pool != "solo":
            cmd += ["-c", str(concurrency)]
        cmd += ["--prefetch-multiplier", str(prefetch)]
        self.cmd = cmd
        env = dict(os.environ, PYTHONPATH=str(workdir) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = log
        self._log_fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=self._log_fh)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}; log:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            self._log_fh.close()


#: Counts result rows with Python's ``sqlite3`` in a separate process: the extension bundles its own
#: SQLite, and two SQLite libraries on one file in one process release each other's POSIX locks
#: (https://www.sqlite.org/howtocorrupt.html, 2.2.1), so this process never opens the file with ``sqlite3``.
COUNTER_PY = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
for line in sys.stdin:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    table = next((t for t in ("results", "rqueue_results") if t in tables), None)
    cmd = line.strip()
    if table is None:
        n = 0
    elif cmd == "count":
        n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    elif cmd == "failed":
        n = conn.execute(f"SELECT count(*) FROM {table} WHERE status != 'SUCCESS'").fetchone()[0]
    elif cmd == "clear":
        n = conn.execute(f"DELETE FROM {table}").rowcount
    else:
        n = -1
    print(n, flush=True)
"""


class ResultCounter:
    """Rows of the results table, counted with ``sqlite3`` in a helper process."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", COUNTER_PY, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, cmd: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def count(self) -> int:
        return self.ask("count")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


def reset(tasks: ModuleType, counter: ResultCounter) -> None:
    """An empty queue and no stored results, so each run starts from the same state."""
    tasks.app.broker.purge([tasks.app.conf.task_default_queue])
    counter.ask("clear")


def run_drain(
    tasks: ModuleType, workdir: Path, counter: ResultCounter, n: int, pool: str, concurrency: int, prefetch: int
) -> dict[str, Any]:
    reset(tasks, counter)
    queue = tasks.app.conf.task_default_queue
    broker = tasks.app.broker
    delay = tasks.noop.delay

    start = time.perf_counter()
    for _ in range(n):
        delay()
    enqueue_s = time.perf_counter() - start
    queued = broker.queue_length(queue)
    if queued != n:
        raise RuntimeError(f"expected {n} queued messages, found {queued}")

    worker = WorkerProcess(workdir, pool, concurrency, prefetch, workdir / f"worker-{pool}.log")
    started = time.perf_counter()
    first_result: float | None = None
    timed_out = False
    try:
        while True:
            stored = counter.count()
            now = time.perf_counter()
            if stored and first_result is None:
                first_result = now
            if stored >= n and broker.queue_length(queue) == 0:
                break
            if now - started > DRAIN_TIMEOUT_S:
                timed_out = True
                break
            worker.check_alive()
            time.sleep(POLL_S)
        done = time.perf_counter()
    finally:
        worker.stop()
    wall_s = done - started
    stored = counter.count()
    after_first = done - first_result if first_result is not None else float("nan")
    return {
        "pool": pool,
        "concurrency": 1 if pool == "solo" else concurrency,
        "prefetch_multiplier": prefetch,
        "command": " ".join(["rqueue", *worker.cmd[1:]]),
        "tasks": n,
        "enqueue_s": enqueue_s,
        "enqueue_tasks_s": n / enqueue_s,
        "wall_s": wall_s,
        "tasks_s": stored / wall_s,
        "startup_s": (first_result - started) if first_result is not None else None,
        "tasks_s_after_first_result": stored / after_first if first_result is not None else None,
        "results_stored": stored,
        "non_success": counter.ask("failed"),
        "timed_out": timed_out,
    }


def run_roundtrip(
    tasks: ModuleType, workdir: Path, counter: ResultCounter, n: int, pool: str, concurrency: int, prefetch: int
) -> dict[str, Any]:
    reset(tasks, counter)
    worker = WorkerProcess(workdir, pool, concurrency, prefetch, workdir / f"worker-rt-{pool}.log")
    delay = tasks.noop.delay
    samples: list[float] = []
    try:
        # Wait until the worker answers, then warm up (connections, caches, the poll backoff).
        deadline = time.monotonic() + 30
        while True:
            worker.check_alive()
            try:
                delay().get(timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        for _ in range(WARMUP_ROUNDTRIPS):
            delay().get(timeout=10)
        perf = time.perf_counter
        for _ in range(n):
            t0 = perf()
            delay().get(timeout=10)
            samples.append(perf() - t0)
    finally:
        worker.stop()
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p / 100 * len(samples)))] * 1000

    return {
        "pool": pool,
        "concurrency": 1 if pool == "solo" else concurrency,
        "calls": n,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": samples[-1] * 1000,
        "mean_ms": sum(samples) / len(samples) * 1000,
    }


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per drain [default: 20000]")
    parser.add_argument("--roundtrips", type=int, default=2_000, help="sequential delay().get() [default: 2000]")
    parser.add_argument("-P", "--pool", default="prefork", help="pool of the main drain [default: prefork]")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="worker concurrency [default: 2]")
    parser.add_argument("--prefetch-multiplier", type=int, default=64, help="[default: 64]")
    parser.add_argument("--no-solo", action="store_true", help="skip the extra --pool solo drain")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    opts = parser.parse_args(argv)

    out: dict[str, Any] = {
        "targets": {"drain_tasks_s": DRAIN_TARGET_TASKS_S, "roundtrip_p50_ms": ROUNDTRIP_TARGET_P50_MS},
        "drain": [],
    }
    with tempfile.TemporaryDirectory(prefix="rqueue-bench-") as tmp:
        workdir = Path(tmp)
        db = workdir / "b.sqlite3"
        (workdir / "tasks.py").write_text(TASKS_PY.format(broker=f"sqlite:///{db}"))
        sys.path.insert(0, str(workdir))
        tasks = importlib.import_module("tasks")
        from rqueue import _rqueue

        print(
            f"bench_sqlite: embedded SQLite broker end to end; python {sys.version.split()[0]}, "
            f"rqueue._rqueue {_rqueue.__version__}, {os.cpu_count()} CPUs; db {db}"
        )
        print(textwrap.indent(TASKS_PY.format(broker=f"sqlite:///{db}"), "    | ", lambda _line: True), end="")
        tasks.app.broker.queue_length(tasks.app.conf.task_default_queue)  # creates the file and schema
        counter = ResultCounter(db)
        try:
            run_all(opts, tasks, workdir, counter, out)
        finally:
            counter.close()

    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"\n  wrote {opts.json}")
    return 0


def run_all(
    opts: argparse.Namespace, tasks: ModuleType, workdir: Path, counter: ResultCounter, out: dict[str, Any]
) -> None:
    pools = [opts.pool] + ([] if opts.no_solo or opts.pool == "solo" else ["solo"])
    print(f"\n  (a) drain {opts.tasks:,} no-op tasks, enqueued with noop.delay(), then ONE worker")
    for pool in pools:
        r = run_drain(tasks, workdir, counter, opts.tasks, pool, opts.concurrency, opts.prefetch_multiplier)
        out["drain"].append(r)
        met = r["tasks_s"] >= DRAIN_TARGET_TASKS_S and not r["timed_out"]
        r["target_met"] = met
        print(f"    $ {r['command']}")
        print(f"      enqueue  {r['enqueue_tasks_s']:>10,.0f} tasks/s  ({r['enqueue_s']:.2f} s, noop.delay())")
        line = f"      drain    {r['tasks_s']:>10,.0f} tasks/s  ({r['results_stored']:,} results in {r['wall_s']:.2f} s"
        if r["startup_s"] is not None:
            line += f"; first result after {r['startup_s'] * 1000:.0f} ms"
            line += f", {r['tasks_s_after_first_result']:,.0f} tasks/s from then"
        print(line + ")")
        if r["timed_out"] or r["non_success"]:
            print(f"      !! timed out: {r['timed_out']}, non-SUCCESS results: {r['non_success']}")
        print(f"      target drain >= {DRAIN_TARGET_TASKS_S:,.0f} tasks/s: {verdict(met)} ({r['tasks_s']:,.0f})")

    print(f"\n  (b) round trip: {opts.roundtrips:,} sequential noop.delay().get(timeout=10), worker running")
    rt = run_roundtrip(tasks, workdir, counter, opts.roundtrips, opts.pool, opts.concurrency, opts.prefetch_multiplier)
    rt["target_met"] = rt["p50_ms"] <= ROUNDTRIP_TARGET_P50_MS
    out["roundtrip"] = rt
    print(f"    pool {rt['pool']} -c {rt['concurrency']}")
    print(
        f"      p50 {rt['p50_ms']:.2f} ms   p90 {rt['p90_ms']:.2f} ms   p99 {rt['p99_ms']:.2f} ms   "
        f"max {rt['max_ms']:.2f} ms   mean {rt['mean_ms']:.2f} ms"
    )
    print(f"      target p50 <= {ROUNDTRIP_TARGET_P50_MS:g} ms: {verdict(rt['target_met'])} ({rt['p50_ms']:.2f} ms)")


if __name__ == "__main__":
    sys.exit(main())
