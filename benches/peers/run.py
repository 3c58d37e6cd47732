"""rqueue and its peers on one private Redis: the same no-op workload through each, side by side.

For each library (``benches/peers/apps/<library>_app.py``) and each of two worker configurations,
its fastest reasonable single-process one (``fast``) and its defaults (``default``), repeated
``--reps`` times on a freshly flushed private ``redis-server``:

1. enqueue: N ``delay()``-equivalents one by one, result storage off, in a fresh client process;
2. drain, no results: N messages queued first (batched where the library can), then ONE worker
   started through the library's CLI; timed from the first task run to the N-th, counted inside
   the task by ``rqueue.bench.counter`` (the same for every library);
3. drain, results stored: the same with result storage on (each library's Redis result store);
4. round trip: with a worker running, sequential send-and-wait calls; p50 and p99.

Then rqueue's scaling (through ``rqueue.bench``): drain with 1, 2 and 4 worker processes, and with
100 B, 10 KiB and 100 KiB payloads. Medians of the repetitions are shown with their spread
((max - min) / median); ratios are rqueue's figure over the peer's for the same configuration
(for latency: the peer's over rqueue's), so > 1 means rqueue is better.

Writes ``benches/results/<date>.json``, ``<date>.md`` (the README table) and ``<date>.png``.
Run: ``make bench-peers`` (``QUICK=1`` for a check of a minute or two), or
``.venv-bench/bin/python benches/peers/run.py [--quick] [--reps N] [--libraries rqueue,celery]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHES = HERE.parent
if str(BENCHES) not in sys.path:  # run as a script: make `peers` importable
    sys.path.insert(0, str(BENCHES))

from peers.redis_server import RedisServer  # noqa: E402
from rqueue.bench import BenchOptions, procstat  # noqa: E402
from rqueue.bench.counter import COUNTERS_ENV, DrainTimeout, watch_drain  # noqa: E402
from rqueue.bench.processes import WorkerProcess  # noqa: E402
from rqueue.bench.report import markdown_table, pyplot  # noqa: E402
from rqueue.bench.runner import Bench, machine  # noqa: E402
from rqueue.bench.stats import latency_ms, median_spread  # noqa: E402

LIBRARIES = ("rqueue", "celery", "dramatiq", "rq", "huey", "taskito")
CONFIGS = ("fast", "default")
COLUMNS = ("enqueue", "drain", "drain_results", "rt_p50", "rt_p99")
LOWER_IS_BETTER = {"rt_p50", "rt_p99"}
HEADINGS = {
    "enqueue": "enqueue /s",
    "drain": "drain /s",
    "drain_results": "drain+results /s",
    "rt_p50": "round trip p50 ms",
    "rt_p99": "round trip p99 ms",
}
#: Tasks per drain and round trips, per library (about 1-3 s of work each at its expected speed).
DRAIN_TASKS = {"rqueue": 30_000, "celery": 3_000, "dramatiq": 5_000, "rq": 1_000, "huey": 3_000, "taskito": 2_000}
#: Defaults far slower than the fast configurations (rq forks a process per job; taskito's scheduler
#: claims one job per 50 ms poll): smaller drains keep the whole run near ten minutes.
DRAIN_TASKS_DEFAULT = {"rq": 200, "taskito": 200}
ENQUEUE_TASKS = 3_000
ROUNDTRIPS = 300
#: Defaults whose round trips take 30-50 ms (a fork per job, result polling every 50 ms): fewer calls.
ROUNDTRIPS_DEFAULT = {"rq": 100, "huey": 100, "taskito": 100}
#: Targets of issue 7, rqueue vs Celery (fast configurations): rates as ratios, p50 as how many times lower.
CELERY_TARGETS = {"drain": 200.0, "drain_results": 100.0, "enqueue": 6.0, "rt_p50": 6.0}
SCALING_WORKERS = (1, 2, 4)
SCALING_PAYLOADS = (100, 10 * 1024, 100 * 1024)
#: Payload drains queue at most this many bytes of arguments (Redis holds them all at once).
PAYLOAD_BUDGET_BYTES = 64 << 20
DRAIN_TIMEOUT_S = 120.0
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass
class Sizes:
    enqueue: int
    roundtrips: int
    scale: float
    reps: int
    scaling_tasks: int

    def drain(self, library: str, config: str) -> int:
        n = DRAIN_TASKS_DEFAULT.get(library, DRAIN_TASKS[library]) if config == "default" else DRAIN_TASKS[library]
        return max(50, int(n * self.scale))

    def calls(self, library: str, config: str) -> int:
        n = ROUNDTRIPS_DEFAULT.get(library, ROUNDTRIPS) if config == "default" else ROUNDTRIPS
        return max(10, int(n * self.roundtrips / ROUNDTRIPS))


class Harness:
    def __init__(self, server: RedisServer, workdir: Path, sizes: Sizes) -> None:
        self.server = server
        self.workdir = workdir
        self.sizes = sizes
        self.runs = 0

    def env(self, library: str, config: str, results: bool, counters: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RQUEUE_", "BENCH_"))}
        env.update(
            BENCH_REDIS_URL=self.server.url,
            BENCH_RESULTS="1" if results else "0",
            BENCH_CONFIG=config,
            PYTHONPATH=os.pathsep.join([str(BENCHES), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        if counters is not None:
            env[COUNTERS_ENV] = str(counters)
        return env

    def client(self, library: str, config: str, results: bool, mode: str, n: int) -> dict[str, Any]:
        import subprocess

        cmd = [sys.executable, "-m", "peers.client", library, mode, str(n)]
        proc = subprocess.run(
            cmd,
            cwd=self.workdir,
            env=self.env(library, config, results),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{library} {config} client {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

    def worker(self, library: str, config: str, results: bool) -> tuple[WorkerProcess, Path]:
        self.runs += 1
        counters = self.workdir / f"counters-{self.runs}"
        counters.mkdir()
        app = importlib.import_module(f"peers.apps.{library}_app")
        argv = app.worker_argv(config)
        log = self.workdir / f"{library}-{config}-{self.runs}.log"
        return WorkerProcess(argv, log, self.env(library, config, results, counters), cwd=self.workdir), counters

    def enqueue(self, library: str, config: str) -> float:
        self.server.client.flushall()
        n = self.sizes.enqueue
        return n / float(self.client(library, config, False, "enqueue", n)["seconds"])

    def drain(self, library: str, config: str, results: bool) -> dict[str, Any]:
        self.server.client.flushall()
        n = self.sizes.drain(library, config)
        self.client(library, config, results, "fill", n)
        worker, counters = self.worker(library, config, results)
        usage = procstat.TreeUsage([worker.pid])
        broker_cpu0 = 0.0

        def on_first() -> None:
            nonlocal broker_cpu0
            usage.start()
            broker_cpu0 = self.server.cpu_seconds()

        try:
            timing = watch_drain(counters, n, DRAIN_TIMEOUT_S, worker.check_alive, on_first)
            usage.stop()
            broker_cpu = self.server.cpu_seconds() - broker_cpu0
        except DrainTimeout as exc:
            raise RuntimeError(f"{library} {config}: {exc.done} of {n} tasks ran in {DRAIN_TIMEOUT_S} s") from None
        finally:
            worker.stop()
        seconds = timing.seconds
        stored = self.client(library, config, results, "stored", 0)["stored"] if results else None
        return {
            "tasks": n,
            "tasks_s": timing.measured / seconds,
            "startup_s": timing.first - timing.started,
            "worker_cpu_pct": usage.cpu_percent(seconds),
            "broker_cpu_pct": 100 * broker_cpu / seconds,
            "worker_rss_mib": None if usage.peak_rss_bytes is None else usage.peak_rss_bytes / (1 << 20),
            "results_stored": stored,
        }

    def roundtrip(self, library: str, config: str) -> dict[str, Any]:
        self.server.client.flushall()
        worker, _ = self.worker(library, config, True)
        try:
            samples = self.client(library, config, True, "roundtrip", self.sizes.calls(library, config))["samples"]
        finally:
            worker.stop()
        return latency_ms(samples)


def available(library: str) -> bool:
    return importlib.util.find_spec(library) is not None  # each library imports by its own name


def version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def measure_library(h: Harness, library: str, config: str, reps: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {c: [] for c in COLUMNS}
    detail: dict[str, list[Any]] = {"drain": [], "drain_results": [], "roundtrip": []}
    for rep in range(reps):
        print(f"  {library:8} {config:7} rep {rep + 1}/{reps}: ", end="", flush=True)
        runs["enqueue"].append(h.enqueue(library, config))
        print(f"enqueue {runs['enqueue'][-1]:,.0f}/s", end="", flush=True)
        for key, results in (("drain", False), ("drain_results", True)):
            d = h.drain(library, config, results)
            detail[key].append(d)
            runs[key].append(d["tasks_s"])
            print(f", {key} {d['tasks_s']:,.0f}/s", end="", flush=True)
            if results and d["results_stored"] not in (None, -1) and d["results_stored"] < d["tasks"]:
                print(f" (!! only {d['results_stored']} of {d['tasks']} results stored)", end="")
        rt = h.roundtrip(library, config)
        detail["roundtrip"].append(rt)
        runs["rt_p50"].append(rt["p50_ms"])
        runs["rt_p99"].append(rt["p99_ms"])
        print(f", round trip p50 {rt['p50_ms']:.2f} ms p99 {rt['p99_ms']:.2f} ms", flush=True)
    app = importlib.import_module(f"peers.apps.{library}_app")
    return {
        "library": library,
        "version": version(library),
        "config": config,
        "config_note": app.CONFIGS[config],
        "worker_command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(app.worker_argv(config))),
        "drain_tasks": h.sizes.drain(library, config),
        "enqueue_tasks": h.sizes.enqueue,
        "roundtrips": h.sizes.calls(library, config),
        "summary": {c: median_spread(v) for c, v in runs.items()},
        "runs": runs,
        "detail": detail,
    }


def scaling(server: RedisServer, sizes: Sizes) -> list[dict[str, Any]]:
    """rqueue drain (no results) with 1, 2, 4 solo workers, and with payloads, through rqueue.bench."""
    out = []
    cases = [(k, 0) for k in SCALING_WORKERS] + [(1, p) for p in SCALING_PAYLOADS]
    for workers, payload in cases:
        rates = []
        for _ in range(sizes.reps):
            server.client.flushall()
            opts = BenchOptions(
                broker=server.url,
                tasks=min(sizes.scaling_tasks, max(200, PAYLOAD_BUDGET_BYTES // max(payload, 1))),
                workers=workers,
                pool="solo",
                payload_bytes=payload,
                scenario="drain",
                prefetch_multiplier=64,
                progress=False,
            )
            with Bench(opts) as bench:
                (row,) = bench.run()["scenarios"]
                rates.append(row["tasks_s"] or math.nan)
                command = bench.shown_command()
        case = {"workers": workers, "payload_bytes": payload, "tasks": opts.tasks, "runs": rates}
        case["summary"] = median_spread(rates)
        case["command"] = command
        out.append(case)
        what = f"{workers} worker(s)" + (f", payload {payload:,} B" if payload else "")
        print(f"  rqueue drain, {what}: {case['summary']['median']:,.0f} tasks/s")
    return out


def fmt(column: str, value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if column in LOWER_IS_BETTER else f"{value:,.0f}"


def ratio(column: str, rq: float, peer: float) -> float:
    if not rq or not peer or math.isnan(rq) or math.isnan(peer):
        return math.nan
    return peer / rq if column in LOWER_IS_BETTER else rq / peer


def comparison_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per library and config: median, spread and ratio (rqueue / peer, same config) per column."""
    by = {(r["library"], r["config"]): r for r in results}
    rows = []
    for r in results:
        base = by.get(("rqueue", r["config"]))
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
    rq, celery = by.get(("rqueue", "fast")), by.get(("celery", "fast"))
    if rq and celery:
        for c, target in CELERY_TARGETS.items():
            got = ratio(c, rq[c]["median"], celery[c]["median"])
            out[f"vs celery: {c}"] = {"target": target, "ratio": got, "met": bool(got >= target)}
    for c in COLUMNS:
        # rqueue's better configuration against the best figure of any peer in any configuration.
        figures = [(lib, cfg, s[c]["median"]) for (lib, cfg), s in by.items() if not math.isnan(s[c]["median"])]
        mine = [f for f in figures if f[0] == "rqueue"]
        peers = [f for f in figures if f[0] != "rqueue"]
        if not mine or not peers:
            continue
        pick = min if c in LOWER_IS_BETTER else max
        best_rq, best_peer = pick(mine, key=lambda f: f[2]), pick(peers, key=lambda f: f[2])
        got = ratio(c, best_rq[2], best_peer[2])
        out[f"vs fastest peer: {c}"] = {"peer": f"{best_peer[0]} {best_peer[1]}", "ratio": got, "met": bool(got > 1)}
    return out


def print_table(rows: list[dict[str, Any]]) -> str:
    head = ["library", "config", *[HEADINGS[c] for c in COLUMNS]]
    body = []
    for row in rows:
        cells = [row["library"], row["config"]]
        for c in COLUMNS:
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


def markdown(report: dict[str, Any]) -> str:
    """The README's table: medians, ratios to rqueue and the machine line, from one run."""
    head = ["library (config)", *[HEADINGS[c] for c in COLUMNS]]
    rows = []
    for row in report["comparison"]:
        cells = [f"{row['library']} ({row['config']})"]
        for c in COLUMNS:
            cell = row["cells"][c]
            text = fmt(c, cell["median"])
            if row["library"] != "rqueue" and not math.isnan(cell["ratio"]):
                text += f" ({cell['ratio']:.1f}{TIMES})"
            cells.append(text)
        rows.append(cells)
    m = report["machine"]
    lines = [
        f"Measured {report['date']} with `{report['command']}` on {m['cpus']} CPUs ({m['cpu_model']}), "
        f"Python {m['python']}, redis-server {report['redis']}; medians of {report['reps']} repetition(s). "
        "Ratios in parentheses: rqueue over the peer in the same configuration (for latency, the peer over "
        f"rqueue): > 1{TIMES} means rqueue is better.",
        "",
        markdown_table(head, rows),
        "",
        "Configurations: "
        + "; ".join(
            f"**{r['library']}** fast: {r['config_note']}" for r in report["libraries"] if r["config"] == "fast"
        )
        + ".",
    ]
    if report.get("scaling"):
        scale_rows = [
            [
                f"{s['workers']} {TIMES} solo" + (f", payload {s['payload_bytes']:,} B" if s["payload_bytes"] else ""),
                f"{s['summary']['median']:,.0f}",
            ]
            for s in report["scaling"]
        ]
        lines += [
            "",
            "rqueue drain (no results), scaling:",
            "",
            markdown_table(["workers, payload", "tasks/s"], scale_rows),
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    ticker = importlib.import_module("matplotlib.ticker")
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.8))
    results = report["libraries"]
    labels = [f"{r['library']}\n({r['config']})" for r in results]
    colors = ["#c44e52" if r["library"] == "rqueue" else "#3b75af" for r in results]
    for ax, c in zip(axes, ("enqueue", "drain", "drain_results", "rt_p50"), strict=True):
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
        f"{m['cpus']} CPUs ({m['cpu_model']}), medians of {report['reps']}, bars = min..max; log scale",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repetition (a check, not figures)")
    parser.add_argument("--reps", type=int, help="repetitions of each measurement [default: 3; quick 1]")
    parser.add_argument("--libraries", help=f"comma-separated subset of {','.join(LIBRARIES)} [default: all installed]")
    parser.add_argument("--no-scaling", action="store_true", help="skip rqueue's workers/payload scaling")
    parser.add_argument(
        "--out", type=Path, default=BENCHES / "results", help="where to write [default: benches/results]"
    )
    opts = parser.parse_args(argv)
    reps = opts.reps or (1 if opts.quick else 3)
    if reps < 1:
        parser.error("--reps must be at least 1")
    sizes = (
        Sizes(enqueue=300, roundtrips=30, scale=0.1, reps=reps, scaling_tasks=2_000)
        if opts.quick
        else Sizes(enqueue=ENQUEUE_TASKS, roundtrips=ROUNDTRIPS, scale=1.0, reps=reps, scaling_tasks=30_000)
    )
    wanted = opts.libraries.split(",") if opts.libraries else list(LIBRARIES)
    unknown = [w for w in wanted if w not in LIBRARIES]
    if unknown:
        parser.error(f"--libraries: unknown {', '.join(unknown)}; choose from {', '.join(LIBRARIES)}")
    missing = [w for w in wanted if not available(w)]
    libraries = [w for w in wanted if w not in missing]
    if "rqueue" not in libraries:
        parser.error("rqueue must be installed (and listed): every ratio is to rqueue")
    pyplot()  # fail now, not after ten minutes, when matplotlib is missing

    started = time.monotonic()
    now = datetime.now(timezone.utc)
    command = "make bench-peers" + (" QUICK=1" if opts.quick else "")
    with tempfile.TemporaryDirectory(prefix="rqueue-peers-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir)
        # The harness imports the app modules too (for their worker commands): point them at this server.
        os.environ["BENCH_REDIS_URL"] = server.url
        try:
            print(
                f"bench-peers: {', '.join(f'{lib} {version(lib)}' for lib in libraries)} on redis-server "
                f"{server.version} at {server.url}; {reps} repetition(s)"
                + (f"; not installed here: {', '.join(missing)}" if missing else "")
            )
            h = Harness(server, workdir, sizes)
            results = []
            failed: dict[str, str] = {}
            for library in libraries:
                for config in CONFIGS:
                    try:
                        results.append(measure_library(h, library, config, reps))
                    except Exception as exc:  # one library failing must not lose the others' figures
                        if library == "rqueue":
                            raise
                        failed[f"{library} {config}"] = f"{type(exc).__name__}: {exc}"
                        print(f"\n  !! {library} {config} failed, left out: {failed[f'{library} {config}'][:2000]}")
            scale = [] if opts.no_scaling else scaling(server, sizes)
        finally:
            server.stop()

    report: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "python": sys.version.split()[0],
        "redis": server.version,
        "reps": reps,
        "quick": opts.quick,
        "not_installed": missing,
        "failed": failed,
        "libraries": results,
        "comparison": comparison_rows(results),
        "scaling": scale,
        "seconds": time.monotonic() - started,
    }
    report["targets"] = check_targets(results)
    print("\nconfigurations (one worker process each in 'fast'):")
    for r in results:
        print(f"  {r['library']:8} {r['config']:7} $ {r['worker_command']}\n{'':19}{r['config_note']}")
    table = print_table(report["comparison"])
    print("\n" + table)
    print("  (x): rqueue over the peer, same config (latency: the peer over rqueue); ±: half the min..max spread")
    for name, t in report["targets"].items():
        vs = f" ({t['peer']})" if "peer" in t else ""
        goal = f" (target {t['target']:g}x)" if "target" in t else ""
        print(f"  target {name}{vs}: {t['ratio']:.1f}x{goal}: {'met' if t['met'] else 'MISSED'}")
    opts.out.mkdir(parents=True, exist_ok=True)
    stem = opts.out / (now.strftime("%Y-%m-%d") + ("-quick" if opts.quick else ""))
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))
    print(f"\nwrote {stem}.json, {stem}.md (the README table) and {stem}.png in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
