"""The canvas, rqueue vs Celery on one private Redis (broker and results), side by side in one run.

Three workflows of a no-op task, each timed from the client's first send to its ``get()``
returning, with one worker process per library in its fast configuration (``--pool solo
--prefetch-multiplier 64``), started through the library's own CLI:

1. group of N no-op tasks (default 10,000): send, run, ``join()``;
2. chord of N header tasks (default 1,000) into a body that counts them;
3. chain of N steps (default 1,000).

Both apps use JSON and Redis database 1 (rqueue) and 2 (Celery), so neither sees the other's keys.
Medians of ``--reps``; the ratio is Celery's time over rqueue's (the issue's target: 10x each).

Run: ``make bench-canvas`` or ``.venv/bin/python benches/bench_canvas.py [--quick] [--reps N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script: make `peers` importable
    sys.path.insert(0, str(HERE))

from peers.redis_server import RedisServer  # noqa: E402

#: The issue's target: each workflow at least this many times faster than Celery's.
TARGET = 10.0
SIZES = {"group": 10_000, "chord": 1_000, "chain": 1_000}
QUICK_SIZES = {"group": 1_000, "chord": 200, "chain": 100}
TIMES = "\N{MULTIPLICATION SIGN}"

TASKS_MODULE = """
import os
{imports}
app = {make_app}
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"], result_expires=600)


@app.task(name="bench.noop")
def noop(*args):
    return 0


@app.task(name="bench.count")
def count(values):
    return len(values)
"""

RQUEUE_APP = (
    "from rqueue import App",
    'App("benchrq", broker=os.environ["BENCH_URL"], backend=os.environ["BENCH_URL"])',
)
CELERY_APP = (
    "from celery import Celery",
    'Celery("benchcel", broker=os.environ["BENCH_URL"], backend=os.environ["BENCH_URL"])',
)


def write_modules(workdir: Path) -> None:
    for name, (imports, make_app) in (("benchrq", RQUEUE_APP), ("benchcel", CELERY_APP)):
        (workdir / f"{name}.py").write_text(TASKS_MODULE.format(imports=imports, make_app=make_app))


def start_worker(library: str, workdir: Path, url: str) -> subprocess.Popen[bytes]:
    module = "benchrq" if library == "rqueue" else "benchcel"
    cli = [sys.executable, "-m", library]
    cmd = [*cli, "-A", module, "worker", "--pool", "solo", "--prefetch-multiplier", "64", "--loglevel", "warning"]
    if library == "celery":
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    env = {**os.environ, "BENCH_URL": url, "PYTHONPATH": str(workdir)}
    log = open(workdir / f"{library}-worker.log", "ab")  # noqa: SIM115 - the worker writes it until stopped
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)


def load_app(library: str, workdir: Path, url: str) -> Any:
    os.environ["BENCH_URL"] = url
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    module = __import__("benchrq" if library == "rqueue" else "benchcel")
    return module


def workflows(library: str, module: Any, sizes: dict[str, int]) -> dict[str, Callable[[], Any]]:
    """Each workflow as a call that sends it and returns its result's value."""
    if library == "rqueue":
        from rqueue import chain, chord, group
    else:
        from celery import chain, chord, group
    noop, count = module.noop, module.count
    return {
        "group": lambda: group(noop.s() for _ in range(sizes["group"]))().get(timeout=600),
        "chord": lambda: chord((noop.s() for _ in range(sizes["chord"])), count.s())().get(timeout=600),
        "chain": lambda: chain(noop.s() for _ in range(sizes["chain"]))().get(timeout=600),
    }


def expected(name: str, sizes: dict[str, int]) -> Any:
    return {"group": [0] * sizes["group"], "chord": sizes["chord"], "chain": 0}[name]


def measure(library: str, workdir: Path, server: RedisServer, sizes: dict[str, int], reps: int) -> dict[str, float]:
    url = server.url.rsplit("/", 1)[0] + ("/1" if library == "rqueue" else "/2")
    module = load_app(library, workdir, url)
    worker = start_worker(library, workdir, url)
    try:
        calls = workflows(library, module, sizes)
        if module.noop.delay().get(timeout=60) != 0:  # warm up: the worker is connected and answering
            raise SystemExit(f"{library}: the warm-up task returned a wrong value")
        seconds: dict[str, float] = {}
        for name, call in calls.items():
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                value = call()
                times.append(time.perf_counter() - started)
                if value != expected(name, sizes):
                    raise SystemExit(f"{library} {name}: wrong value {str(value)[:100]}")
            seconds[name] = statistics.median(times)
        return seconds
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small workflows: a check that it runs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    opts = parser.parse_args(argv)
    sizes = QUICK_SIZES if opts.quick else SIZES
    with tempfile.TemporaryDirectory(prefix="bench-canvas-") as tmp:
        workdir = Path(tmp)
        write_modules(workdir)
        server = RedisServer(workdir)
        try:
            figures = {lib: measure(lib, workdir, server, sizes, opts.reps) for lib in ("rqueue", "celery")}
        finally:
            server.stop()
    print(f"\nCanvas on Redis {server.version}, one worker process each (solo, prefetch 64), medians of {opts.reps}")
    print(f"{'workflow':<26}{'rqueue s':>10}{'celery s':>10}{'ratio':>9}  target")
    rows = []
    for name in ("group", "chord", "chain"):
        rq, cel = figures["rqueue"][name], figures["celery"][name]
        ratio = cel / rq
        label = {"group": "group of", "chord": "chord of", "chain": "chain of"}[name] + f" {sizes[name]:,}"
        verdict = "met" if ratio >= TARGET else "MISSED"
        print(f"{label:<26}{rq:>10.3f}{cel:>10.3f}{ratio:>8.1f}{TIMES}  {TARGET:g}{TIMES} {verdict}")
        rows.append({"workflow": name, "size": sizes[name], "rqueue_s": rq, "celery_s": cel, "ratio": ratio})
    if opts.json:
        opts.json.write_text(json.dumps({"reps": opts.reps, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
