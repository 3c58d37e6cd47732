"""rqueue and its peers on one private Redis: the same no-op workload through each, side by side.

For each library (``benches/peers/apps/<library>_app.py``: a raw redis-py floor, rqueue, Celery,
Dramatiq, RQ, Huey, taskito and the Rust-backed mayu, fluxqueue and flexiq) and each of its worker
configurations, its fastest documented single-process one (``fast``) and its defaults (``default``),
repeated ``--reps`` times on a freshly flushed private ``redis-server``:

1. enqueue: N ``delay()``-equivalents one by one, result storage off, in a fresh client process;
2. drain, no results: N messages queued first (batched where the library can: "batch send"), then
   ONE worker started through the library's CLI; timed from the first task run to the N-th, counted
   inside the task by ``rqueue.bench.counter`` (the same for every library). Over the same window:
   Redis commands (``INFO commandstats`` calls) and Redis CPU (``used_cpu_user + used_cpu_sys``) per
   task, and the worker process tree's CPU (user + sys, from ``/proc``) per task;
3. drain, results stored: the same with result storage on (each library's Redis result store);
4. round trip: with a worker running, sequential send-and-wait calls back to back (p50, p99), then
   calls each after the worker has been idle for ``IDLE_MS`` (p50, p99).

Then payload scaling (rqueue and Celery, fast: drains with 100 B, 10 KiB and 100 KiB arguments,
with Redis commands and CPU per task) and rqueue's worker scaling through ``rqueue.bench`` (1, 2
and 4 solo worker processes, with Redis's CPU at each). Medians of the repetitions are shown with
their spread ((max - min) / median); ratios are rqueue's figure over the peer's for the same
configuration (for latency and costs: the peer's over rqueue's), so > 1 means rqueue is better.

Writes ``benches/results/<date><suffix>.json``, ``.md`` (the README tables, benches/peers/readme.py)
and ``.png``. Run: ``make bench-peers`` (``QUICK=1``: a check of a couple of minutes), or
``.venv-bench/bin/python benches/peers/run.py [--quick] [--reps N] [--libraries rqueue,celery]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHES = HERE.parent
if str(BENCHES) not in sys.path:  # run as a script: make `peers` importable
    sys.path.insert(0, str(BENCHES))

from peers.readme import fmt, markdown  # noqa: E402
from peers.redis_server import RedisServer, Usage  # noqa: E402
from rqueue.bench import BenchOptions, procstat  # noqa: E402
from rqueue.bench.counter import COUNTERS_ENV, DrainTimeout, watch_drain  # noqa: E402
from rqueue.bench.processes import WorkerProcess  # noqa: E402
from rqueue.bench.report import pyplot  # noqa: E402
from rqueue.bench.runner import Bench, machine  # noqa: E402
from rqueue.bench.stats import latency_ms, median_spread  # noqa: E402

ROOT = BENCHES.parent
LIBRARIES = ("raw", "rqueue", "celery", "dramatiq", "rq", "huey", "taskito", "mayu", "fluxqueue", "flexiq")
#: Not a peer: the floor any Redis task queue in Python sits on (no ratios to it in "fastest peer").
FLOOR = "raw"
#: Libraries that run from a virtualenv of their own (mayu needs Python >= 3.13): ``--<name>-python``.
OWN_PYTHON = {"mayu": ROOT / ".venv-bench-mayu" / "bin" / "python"}
COLUMNS = (
    "enqueue",
    "batch_send",
    "drain",
    "drain_results",
    "rt_p50",
    "rt_p99",
    "rt_idle_p50",
    "rt_idle_p99",
    "redis_cmds",
    "redis_cpu_us",
    "worker_cpu_us",
)
LOWER_IS_BETTER = {"rt_p50", "rt_p99", "rt_idle_p50", "rt_idle_p99", "redis_cmds", "redis_cpu_us", "worker_cpu_us"}
HEADINGS = {
    "enqueue": "enqueue /s",
    "batch_send": "batch send /s",
    "drain": "drain /s",
    "drain_results": "drain+results /s",
    "rt_p50": "round trip p50 ms",
    "rt_p99": "round trip p99 ms",
    "rt_idle_p50": "after 50 ms idle p50 ms",
    "rt_idle_p99": "after 50 ms idle p99 ms",
    "redis_cmds": "Redis cmds/task",
    "redis_cpu_us": "Redis CPU µs/task",
    "worker_cpu_us": "worker CPU µs/task",
}
#: The console and README split the columns into two tables: speed, and what a task costs.
SPEED_COLUMNS = COLUMNS[:8]
COST_COLUMNS = COLUMNS[8:]
#: Tasks per drain, per library (about 1-3 s of work each at its expected speed).
DRAIN_TASKS = {
    "raw": 100_000,
    "rqueue": 30_000,
    "celery": 3_000,
    "dramatiq": 5_000,
    "rq": 1_000,
    "huey": 3_000,
    "taskito": 2_000,
    "mayu": 20_000,
    "fluxqueue": 10_000,
    "flexiq": 2_000,
}
#: Defaults far slower than the fast configurations (rq forks a process per job; taskito's scheduler
#: claims one job per 50 ms poll; flexiq's push dispatch starts one job per thread every 2 s on Redis):
#: smaller drains keep the whole run within about twenty minutes.
DRAIN_TASKS_DEFAULT = {"rq": 200, "taskito": 200, "flexiq": 50, "mayu": 5_000}
ENQUEUE_TASKS = 3_000
ROUNDTRIPS = 300
#: Defaults whose round trips take 30-50 ms (a fork per job, result polling every 50 ms): fewer calls.
ROUNDTRIPS_DEFAULT = {"rq": 100, "huey": 100, "taskito": 100, "flexiq": 100}
#: Round trips after the worker has been idle, and how long it is idle before each, in milliseconds.
IDLE_ROUNDTRIPS = 100
IDLE_MS = 50
#: Targets of issue 7, rqueue vs Celery (fast configurations): rates as ratios, p50 as how many times lower.
CELERY_TARGETS = {"drain": 200.0, "drain_results": 100.0, "enqueue": 6.0, "rt_p50": 6.0}
#: Targets of issue 17: rqueue's best drain over the raw floor's.
FLOOR_TARGETS = {"drain": 0.8, "drain_results": 0.5, "enqueue": 0.9}
SCALING_WORKERS = (1, 2, 4)
#: Payload drains: these libraries (fast configuration), with one string argument of these sizes in bytes.
PAYLOAD_LIBRARIES = ("rqueue", "celery")
PAYLOADS_BYTES = (100, 10 * 1024, 100 * 1024)
#: Payload drains queue at most this many bytes of arguments (Redis holds them all at once).
PAYLOAD_BUDGET_BYTES = 64 << 20
DRAIN_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 600.0
US_PER_S = 1e6
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass
class Sizes:
    enqueue: int
    roundtrips: int
    idle_roundtrips: int
    scale: float
    reps: int
    scaling_tasks: int

    def drain(self, library: str, config: str) -> int:
        n = DRAIN_TASKS_DEFAULT.get(library, DRAIN_TASKS[library]) if config == "default" else DRAIN_TASKS[library]
        return max(50, int(n * self.scale))

    def payload_drain(self, library: str, payload: int) -> int:
        return max(50, min(self.drain(library, "fast"), PAYLOAD_BUDGET_BYTES // payload))

    def calls(self, library: str, config: str) -> int:
        n = ROUNDTRIPS_DEFAULT.get(library, ROUNDTRIPS) if config == "default" else ROUNDTRIPS
        return max(10, int(n * self.roundtrips / ROUNDTRIPS))


@dataclass
class Library:
    """One library as its own interpreter describes it (``peers.client LIBRARY describe``)."""

    name: str
    python: str
    version: str = "?"
    configs: dict[str, str] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    result_store: bool = True
    #: Why it cannot run here (not installed, needs another Python, a missing binary), or None.
    problem: str | None = None


def per_task_us(seconds: float | None, tasks: int) -> float:
    return math.nan if seconds is None or not tasks else US_PER_S * seconds / tasks


class Harness:
    def __init__(self, server: RedisServer, workdir: Path, sizes: Sizes, libraries: dict[str, Library]) -> None:
        self.server = server
        self.workdir = workdir
        self.sizes = sizes
        self.libraries = libraries
        self.runs = 0

    def env(self, config: str, results: bool, counters: Path | None = None, payload: int = 0) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RQUEUE_", "BENCH_"))}
        env.update(
            BENCH_REDIS_URL=self.server.url,
            BENCH_SERVER_URL=self.server.url,  # for apps on another server (benches/bench_postgres.py)
            BENCH_RESULTS="1" if results else "0",
            BENCH_CONFIG=config,
            BENCH_PAYLOAD_BYTES=str(payload),
            PYTHONPATH=os.pathsep.join([str(BENCHES), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        for key in ("BENCH_FLUXQUEUE_WORKER",):  # settings of the apps themselves pass through
            if key in os.environ:
                env[key] = os.environ[key]
        if counters is not None:
            env[COUNTERS_ENV] = str(counters)
        return env

    def client(
        self, library: str, config: str, results: bool, mode: str, *args: int, payload: int = 0
    ) -> dict[str, Any]:
        cmd = [self.libraries[library].python, "-m", "peers.client", library, mode, *map(str, args)]
        proc = subprocess.run(
            cmd,
            cwd=self.workdir,
            env=self.env(config, results, payload=payload),
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{library} {config} client {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

    def worker(self, library: str, config: str, results: bool, payload: int = 0) -> tuple[WorkerProcess, Path]:
        self.runs += 1
        counters = self.workdir / f"counters-{self.runs}"
        counters.mkdir()
        argv = self.libraries[library].argv[config]
        log = self.workdir / f"{library}-{config}-{self.runs}.log"
        env = self.env(config, results, counters, payload)
        return WorkerProcess(argv, log, env, cwd=self.workdir), counters

    def enqueue(self, library: str, config: str) -> float:
        self.server.client.flushall()
        n = self.sizes.enqueue
        return n / float(self.client(library, config, False, "enqueue", n)["seconds"])

    def drain(self, library: str, config: str, results: bool, n: int | None = None, payload: int = 0) -> dict[str, Any]:
        """Fill, then time one worker through the queue; Redis's and the worker's use over the same window."""
        self.server.client.flushall()
        n = n or self.sizes.drain(library, config)
        fill_s = float(self.client(library, config, results, "fill", n, payload=payload)["seconds"])
        worker, counters = self.worker(library, config, results, payload)
        usage = procstat.TreeUsage([worker.pid])
        redis0 = Usage(0.0, 0)

        def on_first() -> None:
            nonlocal redis0
            usage.start()
            redis0 = self.server.usage()

        try:
            timing = watch_drain(counters, n, DRAIN_TIMEOUT_S, worker.check_alive, on_first)
            usage.stop()
            redis = self.server.usage().since(redis0)
        except DrainTimeout as exc:
            raise RuntimeError(f"{library} {config}: {exc.done} of {n} tasks ran in {DRAIN_TIMEOUT_S} s") from None
        finally:
            worker.stop()
        seconds = timing.seconds
        stored = self.client(library, config, results, "stored", 0)["stored"] if results else None
        return {
            "tasks": n,
            "tasks_timed": timing.measured,
            "payload_bytes": payload,
            "tasks_s": timing.measured / seconds,
            "batch_send_s": n / fill_s,
            "startup_s": timing.first - timing.started,
            "worker_cpu_pct": usage.cpu_percent(seconds),
            "broker_cpu_pct": 100 * redis.cpu_s / seconds,
            "redis_cmds": math.nan if redis.commands is None else redis.commands / timing.measured,
            "redis_cpu_us": per_task_us(redis.cpu_s, timing.measured),
            "worker_cpu_us": per_task_us(usage.cpu_s, timing.measured),
            "worker_rss_mib": None if usage.peak_rss_bytes is None else usage.peak_rss_bytes / (1 << 20),
            "results_stored": stored,
        }

    def roundtrip(self, library: str, config: str) -> dict[str, Any]:
        """Back-to-back round trips, then as many after the worker has idled ``IDLE_MS`` each."""
        self.server.client.flushall()
        worker, _ = self.worker(library, config, True)
        calls = self.sizes.calls(library, config)
        idle_calls = min(calls, self.sizes.idle_roundtrips)
        try:
            out = self.client(library, config, True, "roundtrip", calls, idle_calls, IDLE_MS)
        finally:
            worker.stop()
        return {"back_to_back": latency_ms(out["samples"]), "after_idle": latency_ms(out["idle_samples"])}


def describe(name: str, python: str, redis_url: str) -> Library:
    """Ask the library's interpreter for its version, configurations and worker commands on ``redis_url``."""
    lib = Library(name, python)
    if not Path(python).exists():
        lib.problem = f"no interpreter at {python}"
        return lib
    env = {k: v for k, v in os.environ.items() if not k.startswith("RQUEUE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHES), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["BENCH_REDIS_URL"] = env["BENCH_SERVER_URL"] = redis_url
    proc = subprocess.run(
        [python, "-m", "peers.client", name, "describe", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        lib.problem = last[0]
        return lib
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    lib.version, lib.configs, lib.argv = info["version"], info["configs"], info["argv"]
    lib.result_store = info["result_store"]
    return lib


def measure_library(h: Harness, library: str, config: str, reps: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {c: [] for c in COLUMNS}
    detail: dict[str, list[Any]] = {"drain": [], "drain_results": [], "roundtrip": []}
    lib = h.libraries[library]
    for rep in range(reps):
        print(f"  {library:9} {config:7} rep {rep + 1}/{reps}: ", end="", flush=True)
        runs["enqueue"].append(h.enqueue(library, config))
        print(f"enqueue {runs['enqueue'][-1]:,.0f}/s", end="", flush=True)
        for key, results in (("drain", False), ("drain_results", True)):
            if results and not lib.result_store:
                runs[key].append(math.nan)
                print(f", {key} n/a (no result store)", end="", flush=True)
                continue
            d = h.drain(library, config, results)
            detail[key].append(d)
            runs[key].append(d["tasks_s"])
            print(f", {key} {d['tasks_s']:,.0f}/s", end="", flush=True)
            if results and d["results_stored"] not in (None, -1) and d["results_stored"] < d["tasks"]:
                print(f" (!! only {d['results_stored']} of {d['tasks']} results stored)", end="")
            if not results:
                for c, k in (("batch_send", "batch_send_s"), *((c, c) for c in COST_COLUMNS)):
                    runs[c].append(d[k])
                print(
                    f" ({d['redis_cmds']:.1f} cmds, {d['redis_cpu_us']:.0f} µs Redis, "
                    f"{d['worker_cpu_us']:.0f} µs worker /task)",
                    end="",
                    flush=True,
                )
        rt = h.roundtrip(library, config)
        detail["roundtrip"].append(rt)
        b2b, idle = rt["back_to_back"], rt["after_idle"]
        runs["rt_p50"].append(b2b["p50_ms"])
        runs["rt_p99"].append(b2b["p99_ms"])
        runs["rt_idle_p50"].append(idle.get("p50_ms", math.nan))
        runs["rt_idle_p99"].append(idle.get("p99_ms", math.nan))
        print(
            f", round trip p50 {b2b['p50_ms']:.2f} ms p99 {b2b['p99_ms']:.2f} ms, after idle "
            f"p50 {idle.get('p50_ms', math.nan):.2f} ms p99 {idle.get('p99_ms', math.nan):.2f} ms",
            flush=True,
        )
    return {
        "library": library,
        "version": lib.version,
        "config": config,
        "config_note": lib.configs[config],
        "worker_command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(lib.argv[config])),
        "drain_tasks": h.sizes.drain(library, config),
        "enqueue_tasks": h.sizes.enqueue,
        "roundtrips": h.sizes.calls(library, config),
        "summary": {c: median_spread(v) for c, v in runs.items()},
        "runs": runs,
        "detail": detail,
    }


def payloads(h: Harness, libraries: list[str]) -> list[dict[str, Any]]:
    """Drains (no results, fast configuration) with one string argument per task of each size."""
    out = []
    for library in libraries:
        for payload in PAYLOADS_BYTES:
            n = h.sizes.payload_drain(library, payload)
            rows = [h.drain(library, "fast", False, n=n, payload=payload) for _ in range(h.sizes.reps)]
            case: dict[str, Any] = {"library": library, "payload_bytes": payload, "tasks": n, "runs": rows}
            for key in ("tasks_s", "redis_cmds", "redis_cpu_us", "worker_cpu_us", "broker_cpu_pct"):
                case[key] = median_spread([r[key] for r in rows])["median"]
            out.append(case)
            print(
                f"  {library:9} payload {payload:>7,} B: {case['tasks_s']:,.0f} tasks/s, "
                f"{case['redis_cmds']:.1f} Redis cmds, {case['redis_cpu_us']:.0f} µs Redis CPU, "
                f"{case['worker_cpu_us']:.0f} µs worker CPU per task"
            )
    return out


def scaling(server: RedisServer, sizes: Sizes) -> list[dict[str, Any]]:
    """rqueue drain (no results) with 1, 2, 4 solo workers through rqueue.bench, and Redis's CPU at each."""
    out = []
    for workers in SCALING_WORKERS:
        rows = []
        for _ in range(sizes.reps):
            server.client.flushall()
            opts = BenchOptions(
                broker=server.url,
                tasks=sizes.scaling_tasks,
                workers=workers,
                pool="solo",
                scenario="drain",
                prefetch_multiplier=64,
                progress=False,
            )
            with Bench(opts) as bench:
                (row,) = bench.run()["scenarios"]
                rows.append(row)
                command = bench.shown_command()
        rates = [r["tasks_s"] or math.nan for r in rows]
        redis_pct = [r["broker_cpu_pct"] if r["broker_cpu_pct"] is not None else math.nan for r in rows]
        worker_pct = [r["worker_cpu_pct"] if r["worker_cpu_pct"] is not None else math.nan for r in rows]
        case: dict[str, Any] = {"workers": workers, "tasks": opts.tasks, "runs": rates, "command": command}
        case["summary"] = median_spread(rates)
        rate = case["summary"]["median"]
        case["redis_cpu_pct"] = median_spread(redis_pct)["median"]
        case["worker_cpu_pct"] = median_spread(worker_pct)["median"]
        # CPU share over rate: (cpu_s / wall_s) / (tasks / wall_s) = CPU seconds per task.
        case["redis_cpu_us"] = case["redis_cpu_pct"] / 100 / rate * US_PER_S if rate else math.nan
        case["worker_cpu_us"] = case["worker_cpu_pct"] / 100 / rate * US_PER_S if rate else math.nan
        out.append(case)
        print(
            f"  rqueue drain, {workers} worker(s): {rate:,.0f} tasks/s, Redis at {case['redis_cpu_pct']:.0f} % "
            f"of a core ({case['redis_cpu_us']:.0f} µs/task), workers {case['worker_cpu_us']:.0f} µs/task"
        )
    return out


def ratio(column: str, rq: float, peer: float) -> float:
    if not rq or not peer or math.isnan(rq) or math.isnan(peer):
        return math.nan
    return peer / rq if column in LOWER_IS_BETTER else rq / peer


def comparison_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per library and config: median, spread and ratio (rqueue / peer, same config) per column."""
    by = {(r["library"], r["config"]): r for r in results}
    rows = []
    for r in results:
        # The floor has one configuration: it compares with rqueue's fast one.
        base = by.get(("rqueue", "fast" if r["library"] == FLOOR else r["config"]))
        row = {"library": r["library"], "config": r["config"], "reps": len(r["runs"]["drain"]), "cells": {}}
        for c in COLUMNS:
            med = r["summary"][c]["median"]
            rq = base["summary"][c]["median"] if base else math.nan
            row["cells"][c] = {"median": med, "spread": r["summary"][c]["spread"], "ratio": ratio(c, rq, med)}
        rows.append(row)
    return rows


def check_targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["library"], r["config"]): r["summary"] for r in results}
    out: dict[str, Any] = {}
    rq, celery, floor = by.get(("rqueue", "fast")), by.get(("celery", "fast")), by.get((FLOOR, "fast"))
    if rq and celery:
        for c, target in CELERY_TARGETS.items():
            got = ratio(c, rq[c]["median"], celery[c]["median"])
            out[f"vs celery: {c}"] = {"target": target, "ratio": got, "met": bool(got >= target)}
    if rq and floor:
        for c, target in FLOOR_TARGETS.items():
            best = max(s[c]["median"] for (lib, _), s in by.items() if lib == "rqueue")
            got = ratio(c, best, floor[c]["median"])
            out[f"vs raw floor: {c}"] = {"target": target, "ratio": got, "met": bool(got >= target)}
    for c in COLUMNS:
        # rqueue's better configuration against the best figure of any peer in any configuration.
        figures = [(lib, cfg, s[c]["median"]) for (lib, cfg), s in by.items() if not math.isnan(s[c]["median"])]
        mine = [f for f in figures if f[0] == "rqueue"]
        peers = [f for f in figures if f[0] not in ("rqueue", FLOOR)]
        if not mine or not peers:
            continue
        pick = min if c in LOWER_IS_BETTER else max
        best_rq, best_peer = pick(mine, key=lambda f: f[2]), pick(peers, key=lambda f: f[2])
        got = ratio(c, best_rq[2], best_peer[2])
        out[f"vs fastest peer: {c}"] = {"peer": f"{best_peer[0]} {best_peer[1]}", "ratio": got, "met": bool(got > 1)}
    return out


def print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = ["library", "config", *[HEADINGS[c] for c in columns]]
    body = []
    for row in rows:
        cells = [row["library"], row["config"]]
        for c in columns:
            cell = row["cells"][c]
            text = fmt(c, cell["median"])
            if row["library"] != "rqueue" and not math.isnan(cell["ratio"]):
                text += f" ({cell['ratio']:.1f}x)"
            if row["reps"] > 1 and not math.isnan(cell["spread"]):
                text += f" ±{cell['spread'] * 50:.0f}%"
            cells.append(text)
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = []
    for r in [head, *body]:
        lines.append(
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    return "\n".join(lines)


#: The chart's panels: one per column.
PLOTTED = ("enqueue", "drain", "drain_results", "rt_p50", "rt_idle_p50", "redis_cmds", "redis_cpu_us", "worker_cpu_us")


def plot(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    ticker = importlib.import_module("matplotlib.ticker")
    fig, grid = plt.subplots(2, 4, figsize=(18, 9.5))
    results = report["libraries"]
    labels = [f"{r['library']}\n({r['config']})" for r in results]
    colors = [
        "#c44e52" if r["library"] == "rqueue" else "#8c8c8c" if r["library"] == FLOOR else "#3b75af" for r in results
    ]
    for ax, c in zip(grid.flat, PLOTTED, strict=True):
        med = [r["summary"][c]["median"] for r in results]
        lo = [m - r["summary"][c]["min"] for m, r in zip(med, results, strict=True)]
        hi = [r["summary"][c]["max"] - m for m, r in zip(med, results, strict=True)]
        ax.barh(labels, med, xerr=[lo, hi], color=colors)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:,g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(
            HEADINGS[c] + (" (lower is better)" if c in LOWER_IS_BETTER else " (higher is better)"), fontsize=9
        )
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        for y, (v, r) in enumerate(zip(med, results, strict=True)):
            if not math.isnan(v):  # right of the error bar
                ax.text(max(v, r["summary"][c]["max"]), y, f"  {fmt(c, v)}", va="center", fontsize=6)
    m = report["machine"]
    fig.suptitle(
        f"rqueue vs peers on one private Redis {report['redis']}, {report['date']}: "
        f"{m['cpus']} CPUs ({m['cpu_model']}), medians of {report['reps']}, bars = min..max; log scale; "
        f"grey: raw redis-py floor",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repetition (a check, not figures)")
    parser.add_argument("--reps", type=int, help="repetitions of each measurement [default: 3; quick 1]")
    parser.add_argument("--libraries", help=f"comma-separated subset of {','.join(LIBRARIES)} [default: all]")
    parser.add_argument("--no-scaling", action="store_true", help="skip the payload and worker scaling")
    for name, python in OWN_PYTHON.items():
        parser.add_argument(f"--{name}-python", default=str(python), help=f"{name}'s interpreter [default: {python}]")
    parser.add_argument(
        "--out", type=Path, default=BENCHES / "results", help="where to write [default: benches/results]"
    )
    parser.add_argument("--suffix", default="", help="added to the file names' date, e.g. -peers")
    opts = parser.parse_args(argv)
    reps = opts.reps or (1 if opts.quick else 3)
    if reps < 1:
        parser.error("--reps must be at least 1")
    sizes = (
        Sizes(enqueue=300, roundtrips=30, idle_roundtrips=10, scale=0.1, reps=reps, scaling_tasks=2_000)
        if opts.quick
        else Sizes(
            enqueue=ENQUEUE_TASKS,
            roundtrips=ROUNDTRIPS,
            idle_roundtrips=IDLE_ROUNDTRIPS,
            scale=1.0,
            reps=reps,
            scaling_tasks=30_000,
        )
    )
    wanted = opts.libraries.split(",") if opts.libraries else list(LIBRARIES)
    unknown = [w for w in wanted if w not in LIBRARIES]
    if unknown:
        parser.error(f"--libraries: unknown {', '.join(unknown)}; choose from {', '.join(LIBRARIES)}")
    pyplot()  # fail now, not after ten minutes, when matplotlib is missing
    # Absolute (processes start in a temporary directory), symlinks kept (a virtualenv's python is one).
    pythons = {name: os.path.abspath(getattr(opts, f"{name}_python")) for name in OWN_PYTHON}

    started = time.monotonic()
    now = datetime.now(timezone.utc)
    command = "make bench-peers" + (" QUICK=1" if opts.quick else "") + (f" REPS={reps}" if opts.reps else "")
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="rqueue-peers-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir)
        try:
            # Worker commands name the server (and some apps connect on import): describe them now.
            libs = {name: describe(name, pythons.get(name, sys.executable), server.url) for name in wanted}
            cannot_run = {name: lib.problem for name, lib in libs.items() if lib.problem}
            libraries = [w for w in wanted if w not in cannot_run]
            if "rqueue" not in libraries:
                raise SystemExit(
                    f"rqueue must run (and be listed): every ratio is to rqueue ({cannot_run.get('rqueue')})"
                )
            print(
                f"bench-peers: {', '.join(f'{lib} {libs[lib].version}' for lib in libraries)} on redis-server "
                f"{server.version} at {server.url}; {reps} repetition(s); load average {load_before}"
            )
            for name, why in cannot_run.items():
                print(f"  !! {name} cannot run here, left out: {why}")
            h = Harness(server, workdir, sizes, libs)
            results = []
            failed: dict[str, str] = {}
            for library in libraries:
                for config in libs[library].configs:
                    try:
                        results.append(measure_library(h, library, config, reps))
                    except Exception as exc:  # one library failing must not lose the others' figures
                        if library == "rqueue":
                            raise
                        failed[f"{library} {config}"] = f"{type(exc).__name__}: {exc}"
                        print(f"\n  !! {library} {config} failed, left out: {failed[f'{library} {config}'][:2000]}")
            payload = [] if opts.no_scaling else payloads(h, [p for p in PAYLOAD_LIBRARIES if p in libraries])
            scale = [] if opts.no_scaling else scaling(server, sizes)
        finally:
            server.stop()

    report: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "load_average_1_5_15": {"before": load_before, "after": load_average()},
        "python": sys.version.split()[0],
        "pythons": {name: lib.python for name, lib in libs.items()},
        "redis": server.version,
        "reps": reps,
        "quick": opts.quick,
        "idle_ms": IDLE_MS,
        "headings": HEADINGS,
        "speed_columns": SPEED_COLUMNS,
        "cost_columns": COST_COLUMNS,
        "lower_is_better": sorted(LOWER_IS_BETTER),
        "cannot_run": cannot_run,
        "failed": failed,
        "libraries": results,
        "comparison": comparison_rows(results),
        "payloads": payload,
        "scaling": scale,
        "seconds": time.monotonic() - started,
    }
    report["targets"] = check_targets(results)
    print("\nconfigurations:")
    for r in results:
        print(f"  {r['library']:9} {r['config']:7} $ {r['worker_command']}\n{'':20}{r['config_note']}")
    for columns in (SPEED_COLUMNS, COST_COLUMNS):
        print("\n" + print_table(report["comparison"], columns))
    print(
        "  (x): rqueue over the peer, same config (latency and costs: the peer over rqueue; the raw floor: "
        "to rqueue fast); ±: half the min..max spread; costs are over the no-results drain"
    )
    for name, why in {**cannot_run, **failed}.items():
        print(f"  not measured: {name}: {why[:300]}")
    for name, t in report["targets"].items():
        vs = f" ({t['peer']})" if "peer" in t else ""
        goal = f" (target {t['target']:g}x)" if "target" in t else ""
        print(f"  target {name}{vs}: {t['ratio']:.2f}x{goal}: {'met' if t['met'] else 'MISSED'}")
    print(f"  load average (1, 5, 15 min) before {load_before}, after {report['load_average_1_5_15']['after']}")
    opts.out.mkdir(parents=True, exist_ok=True)
    stem = opts.out / (now.strftime("%Y-%m-%d") + ("-quick" if opts.quick else "") + opts.suffix)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))
    print(f"\nwrote {stem}.json, {stem}.md (the README tables) and {stem}.png in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
