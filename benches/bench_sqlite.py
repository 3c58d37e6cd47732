"""End to end on the embedded SQLite broker, through the real product, with the SQLite milestone's targets.

The measuring is ``rqueue bench`` (``rqueue.bench``) on a temporary SQLite file: enqueue with
``delay()``, drain (a filled queue emptied by ONE worker started through the CLI, results stored)
with the configured pool and again with ``--pool solo``, and sequential ``delay().get()`` round
trips. This script adds the targets and prints a verdict.

Run: ``python benches/bench_sqlite.py [--tasks N] [--roundtrips N] [--pool P] [-c N]
[--prefetch-multiplier N] [--no-solo] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rqueue.bench import Bench, BenchOptions
from rqueue.bench.report import table

DRAIN_TARGET_TASKS_S = 20_000.0
ROUNDTRIP_TARGET_P50_MS = 2.0


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def measure(opts: argparse.Namespace, pool: str, scenario: str) -> dict[str, Any]:
    options = BenchOptions(
        tasks=opts.tasks,
        roundtrips=opts.roundtrips,
        pool=pool,
        concurrency=opts.concurrency,
        prefetch_multiplier=opts.prefetch_multiplier,
        results=True,
        scenario=scenario,
        progress=False,
    )
    with Bench(options) as bench:
        return bench.run()


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

    reports = [measure(opts, opts.pool, "all")]
    if not opts.no_solo and opts.pool != "solo":
        reports.append(measure(opts, "solo", "drain"))
    rows = [row for report in reports for row in report["scenarios"]]
    for report in reports:
        for row in report["scenarios"]:
            if row.get("command"):
                row["label"] += f" ({row['pool']} -c {row['concurrency']})"
    m = reports[0]["machine"]
    print(f"bench_sqlite: rqueue bench on a temporary SQLite file; {m['cpus']} CPUs ({m['cpu_model']})")
    print(f"  worker: {reports[0]['command']}\n")
    print(table(rows))
    targets = {}
    drain = next(r for r in rows if r["scenario"] == "drain")
    roundtrip = next(r for r in rows if r["scenario"] == "roundtrip")
    targets["drain_tasks_s"] = {"target": DRAIN_TARGET_TASKS_S, "value": drain["tasks_s"]}
    targets["roundtrip_p50_ms"] = {"target": ROUNDTRIP_TARGET_P50_MS, "value": roundtrip["p50_ms"]}
    targets["drain_tasks_s"]["met"] = drain["tasks_s"] >= DRAIN_TARGET_TASKS_S
    targets["roundtrip_p50_ms"]["met"] = roundtrip["p50_ms"] <= ROUNDTRIP_TARGET_P50_MS
    print(f"\n  target drain >= {DRAIN_TARGET_TASKS_S:,.0f} tasks/s: {verdict(targets['drain_tasks_s']['met'])}")
    print(f"  target round trip p50 <= {ROUNDTRIP_TARGET_P50_MS:g} ms: {verdict(targets['roundtrip_p50_ms']['met'])}")
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump({"reports": reports, "targets": targets}, fh, indent=2)
        print(f"\n  wrote {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
