"""rqueue vs Celery on one private RabbitMQ (results in a private Redis), side by side in one run,
against a raw-client baseline of what the broker itself hands out.

For rqueue and Celery, each in its fast configuration (one process: ``--pool solo --prefetch-multiplier
64``) and its defaults (prefork, one child per CPU, prefetch multiplier 4), through the peer harness
(``benches/peers``: the same no-op task, counted inside the task, a fresh client process per side):

1. enqueue: N ``delay()`` calls one by one, publisher confirms on for both (Celery:
   ``confirm_publish``), results off;
2. drain, no results: N messages queued, then ONE worker through the library's CLI, timed from the
   first task run to the N-th;
3. drain, results stored in Redis;
4. round trip: sequential ``delay().get()``, p50 and p99, with Redis results and with ``rpc://``.

Every measurement gets a fresh vhost. The raw baseline (``src-rust/core/examples/amqp_raw_drain.rs``,
lapin) drains the same Celery frames with a prefetch of 1000 and one ``multiple`` ack per 100
messages, doing nothing per message. Ratios: rqueue over Celery (latency: Celery over rqueue) and
rqueue's drain over the raw baseline. Medians of ``--reps``; broker CPU is the RabbitMQ node's.

Run: ``make bench-rabbitmq`` or ``.venv-bench/bin/python benches/bench_rabbitmq.py [--quick] [--reps N]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # run as a script: make `peers` importable
    sys.path.insert(0, str(HERE))

from peers.rabbit_server import RabbitServer  # noqa: E402
from peers.redis_server import RedisServer, Usage  # noqa: E402
from peers.run import Harness, Library, Sizes, describe, measure_library  # noqa: E402
from rqueue.bench.runner import machine  # noqa: E402

LIBRARIES = ("rqueue", "celery")
CONFIGS = ("fast", "default")
#: Targets of the RabbitMQ issue: drain against the raw baseline and Celery, enqueue against Celery.
TARGETS = {"drain_vs_raw": 0.8, "drain_vs_celery": 20.0, "enqueue_vs_celery": 4.0}
#: Targets of the rpc:// issue: round trip p50 at most 1 ms, and at least 3x better than Celery's.
RPC_P50_MS = 1.0
RPC_VS_CELERY = 3.0
DRAIN_TASKS = {"rqueue": 20_000, "celery": 3_000}
RAW_TASKS = 20_000
TIMES = "\N{MULTIPLICATION SIGN}"


class Servers:
    """What the peer harness calls its server: Redis for results, RabbitMQ's CPU as the broker's."""

    def __init__(self, redis: RedisServer, rabbit: RabbitServer) -> None:
        self.redis = redis
        self.rabbit = rabbit
        self.url = redis.url
        self.client = redis.client

    def cpu_seconds(self) -> float:
        return self.rabbit.cpu_seconds()

    def usage(self) -> Usage:
        """The broker's CPU (RabbitMQ's node); commands are Redis's notion, not counted here."""
        return Usage(self.rabbit.cpu_seconds(), None)


class AmqpHarness(Harness):
    """The peer harness with messages on RabbitMQ, in a fresh vhost per measurement."""

    def __init__(self, servers: Servers, workdir: Path, sizes: Sizes, libraries: dict[str, Library]) -> None:
        super().__init__(servers, workdir, sizes, libraries)  # type: ignore[arg-type]
        self.rabbit = servers.rabbit
        self.broker_url = self.rabbit.new_vhost()

    result_url = ""

    def env(self, config: str, results: bool, counters: Path | None = None, payload: int = 0) -> dict[str, str]:
        env = super().env(config, results, counters, payload)
        env["BENCH_BROKER_URL"] = self.broker_url
        if self.result_url:
            env["BENCH_RESULT_URL"] = self.result_url
        return env

    def rpc_roundtrip(self, library: str, config: str) -> dict[str, Any]:
        """Round trips with results sent back over RabbitMQ (``rpc://``)."""
        self.result_url = "rpc://"
        try:
            return self.roundtrip(library, config)
        finally:
            self.result_url = ""

    def enqueue(self, library: str, config: str) -> float:
        self.broker_url = self.rabbit.new_vhost()
        return super().enqueue(library, config)

    def drain(self, library: str, config: str, results: bool, n: int | None = None, payload: int = 0) -> dict[str, Any]:
        self.broker_url = self.rabbit.new_vhost()
        return super().drain(library, config, results, n, payload)

    def roundtrip(self, library: str, config: str) -> dict[str, Any]:
        self.broker_url = self.rabbit.new_vhost()
        return super().roundtrip(library, config)


def raw_baseline(rabbit: RabbitServer, n: int, reps: int) -> dict[str, Any]:
    """The lapin consumer's drain rate (built once with cargo)."""
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "-p", "rqueue-core", "--example", "amqp_raw_drain"],
        cwd=ROOT,
        check=True,
    )
    exe = ROOT / "target" / "release" / "examples" / "amqp_raw_drain"
    rates = []
    for _ in range(reps):
        out = subprocess.run([str(exe), rabbit.new_vhost(), str(n)], capture_output=True, text=True, check=True)
        rates.append(float(json.loads(out.stdout)["tasks_s"]))
    return {"tasks": n, "tasks_s": statistics.median(rates), "runs": rates}


def rpc_roundtrips(h: AmqpHarness, library: str, reps: int) -> dict[str, Any]:
    """Medians over ``reps`` of the fast configuration's rpc:// round trips."""
    runs = [h.rpc_roundtrip(library, "fast") for _ in range(reps)]
    return {key: statistics.median(r["back_to_back"][key] for r in runs) for key in ("p50_ms", "p99_ms")} | {
        "runs": runs
    }


def report_rpc(rpc: dict[str, Any]) -> None:
    rq, cel = rpc["rqueue"], rpc["celery"]
    rpc_ratio = cel["p50_ms"] / rq["p50_ms"]
    print(
        f"rpc:// round trip (fast): rqueue p50 {rq['p50_ms']:.2f} ms p99 {rq['p99_ms']:.2f} ms; "
        f"celery p50 {cel['p50_ms']:.2f} ms p99 {cel['p99_ms']:.2f} ms; {rpc_ratio:.2f}{TIMES}"
    )
    print(f"target rpc:// p50 <= {RPC_P50_MS} ms: {'met' if rq['p50_ms'] <= RPC_P50_MS else 'MISSED'}")
    print(f"target rpc:// >= {RPC_VS_CELERY}{TIMES} Celery: {'met' if rpc_ratio >= RPC_VS_CELERY else 'MISSED'}")


def figure(results: list[dict[str, Any]], library: str, config: str, column: str) -> float:
    (row,) = [r for r in results if r["library"] == library and r["config"] == config]
    return float(row["summary"][column]["median"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repetition (a check, not figures)")
    parser.add_argument("--reps", type=int, help="repetitions of each measurement [default: 3; quick 1]")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--rpc-only", action="store_true", help="only the rpc:// round trips of rqueue and Celery")
    opts = parser.parse_args(argv)
    reps = opts.reps or (1 if opts.quick else 3)
    scale = 0.1 if opts.quick else 1.0
    sizes = Sizes(
        enqueue=300 if opts.quick else 3_000,
        roundtrips=30 if opts.quick else 300,
        idle_roundtrips=0,
        scale=scale,
        reps=reps,
        scaling_tasks=0,
    )
    with tempfile.TemporaryDirectory(prefix="rqueue-amqp-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "redis").mkdir()
        (workdir / "rabbit").mkdir()
        redis = RedisServer(workdir / "redis")
        rabbit = RabbitServer(workdir / "rabbit")
        try:
            libs = {lib: describe(lib, sys.executable, redis.url) for lib in LIBRARIES}
            for lib in libs.values():
                if lib.problem:
                    raise SystemExit(f"{lib.name} cannot run: {lib.problem}")
            print(
                f"bench-rabbitmq: rqueue {libs['rqueue'].version} and celery {libs['celery'].version} on RabbitMQ "
                f"{rabbit.version} (results: redis-server {redis.version}); {reps} repetition(s)"
            )
            import peers.run

            peers.run.DRAIN_TASKS.update(DRAIN_TASKS)
            h = AmqpHarness(Servers(redis, rabbit), workdir, sizes, libs)
            rpc = {lib: rpc_roundtrips(h, lib, reps) for lib in LIBRARIES}
            if opts.rpc_only:
                report_rpc(rpc)
                return 0
            results = [measure_library(h, lib, config, reps) for lib in LIBRARIES for config in CONFIGS]
            raw = raw_baseline(rabbit, max(1_000, int(RAW_TASKS * scale)), reps)
        finally:
            rabbit.stop()
            redis.stop()

    print(f"\nraw lapin consumer (prefetch 1000, multiple ack per 100): drain {raw['tasks_s']:,.0f}/s")
    print(f"{'':28} {'enqueue /s':>11} {'drain /s':>10} {'drain+res /s':>13} {'rt p50 ms':>10} {'rt p99 ms':>10}")
    for r in results:
        s = r["summary"]
        print(
            f"{r['library'] + ' ' + r['config']:28} {s['enqueue']['median']:>11,.0f} {s['drain']['median']:>10,.0f} "
            f"{s['drain_results']['median']:>13,.0f} {s['rt_p50']['median']:>10.2f} {s['rt_p99']['median']:>10.2f}"
        )
    ratios: dict[str, Any] = {}
    for config in CONFIGS:

        def ratio(column: str, config: str = config) -> float:
            mine, theirs = figure(results, "rqueue", config, column), figure(results, "celery", config, column)
            return theirs / mine if column.startswith("rt_") else mine / theirs

        ratios[config] = {
            "drain_vs_raw": figure(results, "rqueue", config, "drain") / raw["tasks_s"],
            **{f"{c}_vs_celery": ratio(c) for c in ("enqueue", "drain", "drain_results", "rt_p50")},
        }
        line = ", ".join(f"{k} {v:.2f}{TIMES}" for k, v in ratios[config].items())
        print(f"rqueue {config}: {line}")
    report_rpc(rpc)
    fast = ratios["fast"]
    for key, target in TARGETS.items():
        verdict = "met" if fast[key] >= target else "MISSED"
        print(f"target {key} >= {target}{TIMES} (fast): {fast[key]:.2f}{TIMES} {verdict}")
    if opts.json:
        report = {
            "machine": machine(),
            "raw": raw,
            "results": results,
            "ratios": ratios,
            "rpc": rpc,
            "targets": TARGETS,
        }
        opts.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
