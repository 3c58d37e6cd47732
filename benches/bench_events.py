"""What monitoring costs: drain with task events on (``-E``) against off, in the same run.

``rqueue bench`` drains a filled queue on a private ``redis-server`` (no persistence) with ONE
worker started through the CLI, alternately without and with ``-E``, ``--reps`` times each; while
events are on, an ``rqueue.events.EventReceiver`` in this process subscribes and counts what
arrives, as Flower would (a PUBLISH that nobody reads costs Redis less). Prints each figure, the
best of each side and their ratio (the issue's target: events on >= 0.7x events off). A figure,
not a test: nothing here asserts speed.

Run: ``python benches/bench_events.py [--tasks N] [--reps N] [--pool solo|prefork] [-c N] [--results]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from peers.redis_server import RedisServer
from rqueue.bench import Bench, BenchOptions
from rqueue.events import EventReceiver

#: The issue's target: draining with task events on keeps at least this share of the speed off.
TARGET_RATIO = 0.7


class Counting:
    """An event receiver on its own thread, counting task events by type until stopped."""

    def __init__(self, app: Any) -> None:
        self.receiver = EventReceiver(app, wakeup=False)  # the bench's app: its key prefix too
        self.receiver.subscribe()
        self.counts: dict[str, int] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            for event in self.receiver.poll(0.1):
                self.counts[event["type"]] = self.counts.get(event["type"], 0) + 1

    def stop(self) -> dict[str, int]:
        self.stopped.set()
        self.thread.join(5)
        self.receiver.close()
        return self.counts


def drain(opts: argparse.Namespace, server: RedisServer, events: bool) -> dict[str, Any]:
    server.client.flushall()
    options = BenchOptions(
        broker=server.url,
        tasks=opts.tasks,
        pool=opts.pool,
        concurrency=opts.concurrency if opts.pool != "solo" else None,
        results=opts.results,
        scenario="drain",
        prefetch_multiplier=64,
        progress=False,
        task_events=events,
    )
    monitor = None
    try:
        with Bench(options) as bench:
            monitor = Counting(bench.app) if events else None
            row = bench.run()["scenarios"][0]
            time.sleep(0.2)  # the last events in flight
    finally:
        counts = monitor.stop() if monitor is not None else {}
    row["events_received"] = counts
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--pool", choices=("solo", "prefork"), default="solo")
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--results", action="store_true", help="store results too")
    parser.add_argument("--json", type=Path, help="write the figures here")
    opts = parser.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="rqueue-bench-events-") as tmp:
        server = RedisServer(Path(tmp))
        try:
            for rep in range(opts.reps):
                for side in ("off", "on"):
                    row = drain(opts, server, side == "on")
                    rows[side].append(row)
                    seen = sum(row["events_received"].values())
                    extra = f", {seen:,} events received" if side == "on" else ""
                    print(f"  rep {rep + 1}, events {side}: {row['tasks_s']:,.0f} tasks/s{extra}", flush=True)
        finally:
            server.stop()
    best = {side: max(r["tasks_s"] for r in side_rows) for side, side_rows in rows.items()}
    ratio = best["on"] / best["off"]
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    pool = opts.pool if opts.pool == "solo" else f"{opts.pool} -c {opts.concurrency}"
    print(
        f"drain of {opts.tasks:,} tasks ({pool}, results {'on' if opts.results else 'off'}), best of {opts.reps}: "
        f"events off {best['off']:,.0f} tasks/s, events on {best['on']:,.0f} tasks/s, "
        f"ratio {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})"
    )
    if opts.json:
        opts.json.write_text(json.dumps({"rows": rows, "best": best, "ratio": ratio}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
