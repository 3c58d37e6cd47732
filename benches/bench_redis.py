"""rqueue on a private Redis, with the Redis milestone's targets, and an optional py-spy profile of a worker.

The measuring is ``rqueue bench`` (``rqueue.bench``) against a ``redis-server`` this script starts
on a free loopback port (no persistence): enqueue (``delay()`` and batches), drain without and with
results (a filled queue emptied by ONE worker started through the CLI) for ``--pool solo`` and
``--pool prefork -c 2``, and ``delay().get()`` round trips. The comparison with Celery and the
other peers is ``make bench-peers`` (``benches/peers``).

``--profile S`` then samples a ``--pool solo`` worker draining no-op tasks with py-spy for S seconds
(``pip install py-spy``) and prints the hottest frames: by default ``--nonblocking --idle`` (Python
frames, share of wall time; the worker is never stopped); ``--profile-native`` uses ``--native``,
which stops the worker per sample (its Redis reads then fail with EINTR now and then).

Run: ``python benches/bench_redis.py [--quick] [--tasks N] [--roundtrips N] [--pools solo,prefork]
[--profile S] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peers.redis_server import RedisServer
from rqueue.bench import Bench, BenchOptions
from rqueue.bench.report import table

TARGET_DRAIN_NO_RESULTS = 150_000.0
TARGET_DRAIN_RESULTS = 60_000.0
TARGET_DELAY = 8_000.0
TARGET_BATCH = 200_000.0
TARGET_RT_P50_MS = 0.5
POOL_CONCURRENCY = {"solo": 1, "prefork": 2}
#: The profile starts this long after the worker's first task (lazy imports and connections are done).
PROFILE_SETTLE_S = 1.0


def options(opts: argparse.Namespace, url: str, **kwargs: Any) -> BenchOptions:
    base: dict[str, Any] = {
        "broker": url,
        "tasks": opts.tasks,
        "roundtrips": opts.roundtrips,
        "prefetch_multiplier": 64,
        "progress": False,
    }
    base.update(kwargs)
    return BenchOptions(**base)


def measure(opts: argparse.Namespace, server: RedisServer) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def run(label: str, **kwargs: Any) -> None:
        server.client.flushall()
        with Bench(options(opts, server.url, **kwargs)) as bench:
            for row in bench.run()["scenarios"]:
                row["label"] = f"{row['label']}{label}"
                rows.append(row)
                print(f"  {row['label']}: {row['tasks_s']:,.0f} tasks/s", flush=True)

    for results in (False, True):
        run(", results on" if results else ", results off", scenario="enqueue", results=results)
    for pool in opts.pools:
        conc = POOL_CONCURRENCY[pool]
        for results in (False, True):
            run(f" ({pool} -c {conc})", scenario="drain", results=results, pool=pool, concurrency=conc)
        run(f" ({pool} -c {conc})", scenario="roundtrip", pool=pool, concurrency=conc)
    return rows


def check_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def best(scenario: str, key: str, pick: Any = max, **match: Any) -> float:
        values = [r[key] for r in rows if r["scenario"] == scenario and all(r[k] == v for k, v in match.items())]
        return float(pick(values))

    figures = {
        "drain, no results (tasks/s)": (best("drain", "tasks_s", results=False), TARGET_DRAIN_NO_RESULTS, True),
        "drain, results (tasks/s)": (best("drain", "tasks_s", results=True), TARGET_DRAIN_RESULTS, True),
        "delay() (tasks/s)": (
            min(r["tasks_s"] for r in rows if r["label"].startswith("enqueue, delay()")),
            TARGET_DELAY,
            True,
        ),
        "batch publish (tasks/s)": (
            min(r["tasks_s"] for r in rows if r["label"].startswith("enqueue, batches")),
            TARGET_BATCH,
            True,
        ),
        "round trip p50 (ms)": (best("roundtrip", "p50_ms", min), TARGET_RT_P50_MS, False),
    }
    out = {}
    for name, (value, target, higher) in figures.items():
        met = value >= target if higher else value <= target
        out[name] = {"value": value, "target": target, "met": met}
        print(f"  target {name} {'>=' if higher else '<='} {target:,g}: {value:,.2f}: {'met' if met else 'MISSED'}")
    return out


# -- profile ---------------------------------------------------------------------------------------


def profile(opts: argparse.Namespace, server: RedisServer, workdir: Path) -> dict[str, Any]:
    """py-spy on a ``--pool solo`` worker of ``rqueue bench`` draining no-op tasks (results off)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {"error": "py-spy not installed (pip install py-spy)"}
    server.client.flushall()
    n = opts.profile_tasks
    raw = workdir / "profile.txt"
    with Bench(options(opts, server.url, tasks=n, pool="solo", scenario="drain")) as bench:
        bench.check_broker()
        bench.fill(n, "fill")
        group, _ = bench.start_workers()
        try:
            queue_length = bench.app.broker.queue_length
            while queue_length(bench.queue) >= n:  # started consuming
                group.check_alive()
                time.sleep(0.002)
            time.sleep(PROFILE_SETTLE_S)
            left_at_start = queue_length(bench.queue)
            cmd = [spy, "record", *profile_flags(opts), "-f", "raw", "-d", str(int(opts.profile)), "-o", str(raw)]
            cmd += ["--pid", str(group.pids[0])]
            spied = subprocess.run(cmd, capture_output=True, text=True, timeout=opts.profile + 60, check=False)
            left_at_end = queue_length(bench.queue)
        finally:
            bench.stop_workers(group)
    if spied.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed ({spied.returncode}): {spied.stderr[-1000:]}"}
    summary = summarize_raw(raw.read_text())
    summary["tasks_s_while_sampled"] = (left_at_start - left_at_end) / opts.profile
    summary["queue_emptied"] = left_at_end == 0
    return summary


def profile_flags(opts: argparse.Namespace) -> list[str]:
    """``--native`` pauses the worker (ptrace) per sample; ``--nonblocking --idle`` never stops it."""
    return ["--native"] if opts.profile_native else ["--nonblocking", "--idle"]


def summarize_raw(text: str, top: int = 30) -> dict[str, Any]:
    """Samples, and inclusive/self counts per frame, from py-spy's raw (collapsed, root first) stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    return {"samples": total, "inclusive": inclusive.most_common(top), "self": own.most_common(top)}


def print_profile(prof: dict[str, Any], opts: argparse.Namespace) -> None:
    flags = " ".join(profile_flags(opts))
    print(
        f"\n  profile: py-spy record {flags} -f raw -d {opts.profile:g} --pid <worker> of "
        f"`rqueue -A rqueue.bench.tasks worker --pool solo` draining no-op tasks, "
        f"from {PROFILE_SETTLE_S:g} s after its first fetch"
    )
    if "error" in prof:
        print(f"    !! {prof['error']}")
        return
    print(
        f"    {prof['samples']:,} samples; {prof['tasks_s_while_sampled']:,.0f} tasks/s while sampled"
        f"{'; the queue emptied: a lower bound' if prof['queue_emptied'] else ''}"
    )
    boring = ("click/", "rqueue/cli/", "Worker.start", "Worker._run_in_process", "<module> (rqueue:", "(libc.so.6)")
    total = prof["samples"] or 1
    print("    top inclusive frames (% of samples)")
    shown = [(f, c) for f, c in prof["inclusive"] if not any(b in f for b in boring)]
    for frame, count in shown[:14]:
        print(f"      {count / total:6.1%}  {frame[:140]}")
    print("    top self frames")
    for frame, count in prof["self"][:8]:
        print(f"      {count / total:6.1%}  {frame[:140]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (small counts)")
    parser.add_argument("--tasks", type=int, help="tasks per drain and enqueue [default: 30000; quick 2000]")
    parser.add_argument("--roundtrips", type=int, help="delay().get() calls [default: 1000; quick 50]")
    parser.add_argument("--pools", help="comma-separated, of solo (-c 1) and prefork (-c 2) [default: both]")
    parser.add_argument("--profile", type=float, metavar="S", help="then py-spy a solo worker for S s")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native instead of --idle")
    parser.add_argument("--profile-tasks", type=int, default=300_000, help="queued for --profile [default: 300000]")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    opts = parser.parse_args(argv)
    opts.tasks = opts.tasks or (2_000 if opts.quick else 30_000)
    opts.roundtrips = opts.roundtrips or (50 if opts.quick else 1_000)
    opts.pools = (opts.pools or ("solo" if opts.quick else "solo,prefork")).split(",")
    if any(p not in POOL_CONCURRENCY for p in opts.pools):
        parser.error(f"--pools: expected a comma-separated list of {', '.join(POOL_CONCURRENCY)}")

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rqueue-bench-redis-") as tmp:
        server = RedisServer(Path(tmp))
        try:
            print(f"bench_redis: rqueue bench on a private redis-server {server.version} at {server.url}")
            rows = measure(opts, server)
            print()
            print(table(rows))
            print()
            out = {"redis": server.version, "scenarios": rows, "targets": check_targets(rows)}
            if opts.profile:
                out["profile"] = profile(opts, server, Path(tmp))
                print_profile(out["profile"], opts)
        finally:
            server.stop()
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"\n  wrote {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
