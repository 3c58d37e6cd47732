"""PostgreSQL beside SQLite and Redis in one run, and Huey's SQL storage on the same PostgreSQL.

Private servers, started here and stopped at the end: a PostgreSQL cluster (``initdb`` + ``pg_ctl``, the
tests' ``PostgresServer``) at PostgreSQL's durable defaults (``fsync=on``, ``synchronous_commit=on``),
with ``--fsync-off`` a second one with ``fsync=off, full_page_writes=off`` (a labelled extra row: a
cluster that may lose commits in a power cut), a ``redis-server`` without persistence, and a SQLite file
in a temporary directory. On each, ``rqueue bench`` (``rqueue.bench``) measures: ``delay()`` one at a
time and batches of 1,000 (enqueue/s); a filled queue drained by ONE worker started through the CLI
(``prefork -c 2``), without and with results (tasks/s); and sequential ``delay().get()`` round trips with
the worker running (p50, p99). Then Huey's ``SqlHuey`` (peewee + psycopg2) on the same durable
PostgreSQL through ``benches/peers`` (``peers.apps.huey_pg_app``; install huey, peewee and
psycopg2-binary: ``make bench-postgres`` does), in its fast configuration (1 ms polls) and its defaults.

Prints one table (a column per broker) with ratios to PostgreSQL, and the verdict on the PostgreSQL
targets of issue 20: drain >= 10,000 no-op tasks/s, round trip p50 <= 2 ms.

Run: ``make bench-postgres`` or ``python benches/bench_postgres.py [--quick] [--tasks N]
[--roundtrips N] [--fsync-off] [--no-peer] [--json FILE] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent / "tests"):  # `peers` (benches) and the tests' PostgresServer
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from conftest import PostgresServer, postgres_bin  # noqa: E402
from peers.redis_server import RedisServer, Usage  # noqa: E402
from peers.run import Harness, Sizes, describe  # noqa: E402
from rqueue.bench import Bench, BenchOptions  # noqa: E402
from rqueue.bench.report import markdown_table  # noqa: E402
from rqueue.bench.runner import machine  # noqa: E402

DRAIN_TARGET_TASKS_S = 10_000.0
ROUNDTRIP_TARGET_P50_MS = 2.0
POOL = "prefork"
CONCURRENCY = 2
PREFETCH_MULTIPLIER = 64
#: Huey inserts (and commits) one task per call and runs them one poll at a time: smaller counts.
PEER_DRAIN_TASKS = 2_000
PEER_DRAIN_TASKS_DEFAULT = 300
PEER_ENQUEUE_TASKS = 2_000
PEER_ROUNDTRIPS = 200
PEER_ROUNDTRIPS_DEFAULT = 50

#: The rows of the table: (key, heading, higher is better).
METRICS = (
    ("enqueue", "enqueue delay() /s", True),
    ("enqueue_p50", "delay() p50 ms (one commit)", False),
    ("batch", "enqueue, batches of 1,000 /s", True),
    ("drain", "drain, no results /s", True),
    ("drain_results", "drain, results stored /s", True),
    ("rt_p50", "round trip p50 ms", False),
    ("rt_p99", "round trip p99 ms", False),
)


@dataclass
class Column:
    name: str
    note: str
    figures: dict[str, float]


def rqueue_figures(url: str | None, opts: argparse.Namespace) -> tuple[dict[str, float], str]:
    """``rqueue bench`` on one broker (results in the same place); the figures and the worker command."""
    figures: dict[str, float] = {}
    command = ""

    def run(**kwargs: Any) -> list[dict[str, Any]]:
        nonlocal command
        options = BenchOptions(
            broker=url,
            tasks=opts.tasks,
            roundtrips=opts.roundtrips,
            pool=POOL,
            concurrency=CONCURRENCY,
            prefetch_multiplier=PREFETCH_MULTIPLIER,
            progress=False,
            **kwargs,
        )
        with Bench(options) as bench:
            rows: list[dict[str, Any]] = bench.run()["scenarios"]
            command = bench.shown_command()
        return rows

    single, batch = run(scenario="enqueue")
    figures["enqueue"], figures["batch"] = single["tasks_s"], batch["tasks_s"]
    figures["enqueue_p50"] = single["p50_ms"]
    (drain,) = run(scenario="drain")
    figures["drain"] = drain["tasks_s"]
    (drain,) = run(scenario="drain", results=True)
    figures["drain_results"] = drain["tasks_s"]
    (rt,) = run(scenario="roundtrip")
    figures["rt_p50"], figures["rt_p99"] = rt["p50_ms"], rt["p99_ms"]
    return figures, command


class PgShim:
    """What ``peers.run.Harness`` asks of its server, for a PostgreSQL database Huey keeps its tables in."""

    def __init__(self, server: PostgresServer, database: str) -> None:
        self.server = server
        self.database = database
        self.url = server.url(database)
        self.client = self  # Harness calls server.client.flushall()

    def flushall(self) -> None:
        # Huey's four tables (peewee names them after its models); absent before Huey's first import.
        self.server.psql(
            "DO $$ BEGIN IF to_regclass('task') IS NOT NULL THEN TRUNCATE task, kv, schedule, counter; END IF; END $$",
            self.database,
        )

    def usage(self) -> Usage:
        return Usage(0.0, None)  # per-task PostgreSQL CPU is not read here


def huey_figures(server: PostgresServer, workdir: Path, opts: argparse.Namespace) -> list[Column]:
    """Huey's SqlHuey on ``server`` through ``benches/peers``: a column per configuration."""
    database = "huey"
    server.psql(f"CREATE DATABASE {database}")
    shim = PgShim(server, database)
    lib = describe("huey_pg", opts.peer_python, shim.url)
    if lib.problem:
        print(f"  Huey (SqlHuey) cannot run here: {lib.problem}; pip install huey peewee psycopg2-binary")
        return []
    quick = 0.1 if opts.quick else 1.0
    sizes = Sizes(
        enqueue=max(50, int(PEER_ENQUEUE_TASKS * quick)),
        roundtrips=max(10, int(PEER_ROUNDTRIPS * quick)),
        idle_roundtrips=0,
        scale=quick,
        reps=1,
        scaling_tasks=0,
    )
    harness = Harness(shim, workdir, sizes, {"huey_pg": lib})  # type: ignore[arg-type]
    columns = []
    for config in ("fast", "default"):
        n = PEER_DRAIN_TASKS if config == "fast" else PEER_DRAIN_TASKS_DEFAULT
        n = max(50, int(n * quick))
        figures = {"enqueue": harness.enqueue("huey_pg", config), "enqueue_p50": math.nan, "batch": math.nan}
        figures["drain"] = harness.drain("huey_pg", config, False, n=n)["tasks_s"]
        drained = harness.drain("huey_pg", config, True, n=n)
        figures["drain_results"] = drained["tasks_s"]
        calls = sizes.roundtrips if config == "fast" else max(10, int(PEER_ROUNDTRIPS_DEFAULT * quick))
        sizes.roundtrips = calls
        rt = harness.roundtrip("huey_pg", config)["back_to_back"]
        figures["rt_p50"], figures["rt_p99"] = rt["p50_ms"], rt["p99_ms"]
        note = f"huey {lib.version} SqlHuey, {config}: {lib.configs[config]}"
        columns.append(Column(f"Huey SqlHuey ({config})", note, figures))
        print(f"  {note}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()), flush=True)
    return columns


def fmt(value: float, key: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.2f}" if key.endswith("p50") or key.startswith("rt_") else f"{value:,.0f}"


def ratio(base: float, other: float, higher: bool) -> str:
    """How PostgreSQL compares: its figure over the other's (for latency the other's over its): > 1 is better."""
    if any(v is None or math.isnan(v) or v == 0 for v in (base, other)):
        return ""
    return f" ({(base / other if higher else other / base):.2f}x)"


def render(columns: list[Column]) -> tuple[str, str]:
    """The table as text and as markdown; ratios are PostgreSQL's (the first column's) to each other's."""
    base = columns[0].figures
    head = ["", *(c.name for c in columns)]
    rows = []
    for key, heading, higher in METRICS:
        cells = [fmt(base[key], key)]
        cells += [fmt(c.figures[key], key) + ratio(base[key], c.figures[key], higher) for c in columns[1:]]
        rows.append([heading, *cells])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    text = []
    for r in [head, *rows]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        text.append("  ".join(cells))
    return "\n".join(text), markdown_table(head, rows)


@contextlib.contextmanager
def postgres(durable: bool) -> Iterator[PostgresServer]:
    server = PostgresServer(durable=durable)
    try:
        yield server
    finally:
        server.close()


def server_version(server: PostgresServer) -> str:
    return server.psql("SHOW server_version").strip()


def settings_of(server: PostgresServer) -> str:
    shown = [f"{name}={server.psql(f'SHOW {name}').strip()}" for name in ("fsync", "synchronous_commit")]
    return ", ".join(shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (small counts)")
    parser.add_argument("--tasks", type=int, help="tasks per rqueue drain and enqueue [default: 20000; quick 1000]")
    parser.add_argument("--roundtrips", type=int, help="rqueue delay().get() calls [default: 1000; quick 50]")
    parser.add_argument("--fsync-off", action="store_true", help="also a PostgreSQL column with fsync=off")
    parser.add_argument("--no-peer", action="store_true", help="skip Huey's SqlHuey")
    parser.add_argument("--peer-python", default=sys.executable, help="the interpreter with huey [default: this]")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown to FILE")
    opts = parser.parse_args(argv)
    opts.tasks = opts.tasks or (1_000 if opts.quick else 20_000)
    opts.roundtrips = opts.roundtrips or (50 if opts.quick else 1_000)
    opts.peer_python = os.path.abspath(opts.peer_python)  # not resolve(): a venv's python is a link
    if postgres_bin() is None:
        raise SystemExit("PostgreSQL is not installed (make postgresql installs it)")

    m = machine()
    print(f"bench_postgres: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}")
    columns: list[Column] = []
    out: dict[str, Any] = {"machine": m, "tasks": opts.tasks, "roundtrips": opts.roundtrips}
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="rqueue-bench-pg-") as tmp, postgres(durable=True) as pg:
        settings = settings_of(pg)
        version = server_version(pg)
        out["postgresql"] = {"version": version, "settings": settings}
        print(f"  PostgreSQL {version} ({settings}), rqueue worker prefork -c {CONCURRENCY}", flush=True)
        figures, command = rqueue_figures(pg.new_database(), opts)
        out["worker_command"] = command
        columns.append(Column("PostgreSQL", f"PostgreSQL {version}, {settings}", figures))
        print(f"  PostgreSQL: {figures}", flush=True)
        if opts.fsync_off:
            with postgres(durable=False) as fast_pg:
                fast_settings = settings_of(fast_pg) + ", full_page_writes=off"
                figures, _ = rqueue_figures(fast_pg.new_database(), opts)
                columns.append(Column("PostgreSQL fsync=off", f"PostgreSQL {version}, {fast_settings}", figures))
                print(f"  PostgreSQL fsync=off: {figures}", flush=True)
        figures, _ = rqueue_figures(None, opts)  # a SQLite file in a temporary directory
        columns.append(Column("SQLite", "a SQLite file (WAL) in a temporary directory", figures))
        print(f"  SQLite: {figures}", flush=True)
        redis = RedisServer(Path(tmp))
        try:
            figures, _ = rqueue_figures(redis.url, opts)
            columns.append(Column("Redis", f"redis-server {redis.version}, no persistence", figures))
            print(f"  Redis: {figures}", flush=True)
        finally:
            redis.stop()
        if not opts.no_peer:
            columns += huey_figures(pg, Path(tmp), opts)

    text, md = render(columns)
    print(f"\n  rqueue worker: {out['worker_command']}; ratios: PostgreSQL's figure to the column's (> 1: better)\n")
    print(text)
    print()
    for c in columns:
        print(f"  {c.name}: {c.note}")
    pg_figures = columns[0].figures
    targets = {
        "drain_tasks_s": {"target": DRAIN_TARGET_TASKS_S, "value": pg_figures["drain"]},
        "roundtrip_p50_ms": {"target": ROUNDTRIP_TARGET_P50_MS, "value": pg_figures["rt_p50"]},
    }
    targets["drain_tasks_s"]["met"] = pg_figures["drain"] >= DRAIN_TARGET_TASKS_S
    targets["roundtrip_p50_ms"]["met"] = pg_figures["rt_p50"] <= ROUNDTRIP_TARGET_P50_MS
    print(f"\n  target PostgreSQL drain >= {DRAIN_TARGET_TASKS_S:,.0f} tasks/s: {pg_figures['drain']:,.0f}: "
          f"{'met' if targets['drain_tasks_s']['met'] else 'MISSED'}")  # fmt: skip
    print(f"  target PostgreSQL round trip p50 <= {ROUNDTRIP_TARGET_P50_MS:g} ms: {pg_figures['rt_p50']:.2f} ms: "
          f"{'met' if targets['roundtrip_p50_ms']['met'] else 'MISSED'}")  # fmt: skip
    out["columns"] = [c.__dict__ for c in columns]
    out["targets"] = targets
    if opts.json:
        Path(opts.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"\n  wrote {opts.json}")
    if opts.markdown:
        notes = "\n".join(f"- {c.name}: {c.note}" for c in columns)
        verdicts = "\n".join(
            f"- target {name}: {t['value']:,.2f} against {t['target']:,g}: {'met' if t['met'] else 'MISSED'}"
            for name, t in targets.items()
        )
        when = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
        head = (
            f"# PostgreSQL beside SQLite, Redis and Huey's SqlHuey ({when})\n\n"
            f"`python benches/bench_postgres.py{' --fsync-off' if opts.fsync_off else ''}` (`make bench-postgres`): "
            f"{m['cpus']} CPUs ({m['cpu_model']}), load average {out['load_average']} at the start, Python "
            f"{m['python']}; {opts.tasks:,} tasks per drain and enqueue, {opts.roundtrips:,} round trips; rqueue "
            f"worker `{out['worker_command']}` (one worker). Ratios: PostgreSQL's figure to the column's (for "
            f"latency the column's to PostgreSQL's): > 1x means PostgreSQL is better.\n\n"
        )
        Path(opts.markdown).write_text(f"{head}{md}\n\n{notes}\n\n{verdicts}\n")
        print(f"  wrote {opts.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
