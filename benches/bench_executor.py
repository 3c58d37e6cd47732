"""The worker's per-task cost: the fast lane (``FastLane.run``: the common case natively, the
default) or ``Executor.handle`` (the Python path: admit, run, settle) on no-op tasks, in one
process, without the broker round trips of a flush (results and acks are kept, not written).

Tasks are published to a temporary SQLite file and leased in one fetch, so the loop measures the
executor alone. Wall-clock figures on a shared VM are noisy; for a repeatable count run it under
callgrind with two sizes, with and without ``--setup-only``, and take the differences (instructions
per task of the lane or ``handle`` alone: publishing and leasing cancel out):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benches/bench_executor.py --tasks 1000 --once
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benches/bench_executor.py --tasks 3000 --once
    (the same two with --setup-only)

Run: ``python benches/bench_executor.py [--tasks N] [--results] [--python] [--once]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import rqueue.worker.executor as executor_module
from rqueue import App, _rqueue
from rqueue.worker.executor import Executor
from rqueue.worker.state import Revoked

#: Repetitions of the timed loop (the median is printed).
REPEATS = 5
#: Most messages the SQLite transport leases in one fetch.
MAX_FETCH = 10_000


def handle_all(tasks: int, results: bool, setup_only: bool = False, python: bool = False) -> float:
    """Seconds per task of the lane (``python``: of ``Executor.handle``) over ``tasks`` leased no-op messages."""
    folder = tempfile.mkdtemp(prefix="rqueue-bench-executor-")
    app = App("bench", broker=f"sqlite:///{folder}/bench.sqlite3", task_ignore_result=not results)

    @app.task
    def noop() -> None:
        return None

    noop.delay_many([()] * tasks)
    buffer = _rqueue.PrefetchBuffer(MAX_FETCH)
    consumer = app.broker.consumer(["celery"], "bench/1", buffer, 600.0, 5, 40)
    executor = Executor(app, consumer, "bench@host", Revoked(app.broker))
    executor.revoked._next_refresh = float("inf")  # no revocation reads inside the loop
    deliveries = app.broker.native.fetch(["celery"], tasks, "bench/1", 600_000)  # type: ignore[attr-defined]
    lane = executor.fast_lane(buffer)
    plan = executor.fast_plan()
    assert lane is not None and plan is not None and noop.name in plan
    if not python:
        for delivery in deliveries:
            buffer.put(delivery)
    started = time.perf_counter()
    if setup_only:
        pass
    elif python:
        for delivery in deliveries:
            executor.handle(delivery)
    else:
        first = buffer.get(0)
        assert first is not None
        assert lane.run(first, plan, executor.results, executor.acks, 1e9, 1 << 30, False) is None  # all on the lane
    return (time.perf_counter() - started) / max(1, len(deliveries))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5_000, help=f"tasks per loop, at most {MAX_FETCH}")
    parser.add_argument("--results", action="store_true", help="store results (encoded, not written)")
    parser.add_argument("--python", action="store_true", help="the executor's Python path, not the lane")
    parser.add_argument("--once", action="store_true", help="one loop, no report (for callgrind)")
    parser.add_argument("--setup-only", action="store_true", help="publish and lease, handle nothing (a baseline)")
    opts = parser.parse_args()
    logging.disable(logging.INFO)
    executor_module.BATCH = 1 << 30  # never flush inside the loop: the broker's I/O is not measured here
    tasks = min(opts.tasks, MAX_FETCH)
    if opts.once:
        handle_all(tasks, opts.results, opts.setup_only, opts.python)
        return 0
    runs = [handle_all(tasks, opts.results, python=opts.python) * 1e6 for _ in range(REPEATS)]
    path = "Executor.handle" if opts.python else "FastLane.run"
    print(
        f"{path}, results {'on' if opts.results else 'off'}: {statistics.median(runs):.2f} us/task "
        f"(median of {REPEATS} x {tasks}; min {min(runs):.2f}, max {max(runs):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
