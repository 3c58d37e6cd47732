"""The asyncio client against the sync one, side by side in one run, on a private Redis (or an
SQLite file: ``--backend sqlite``).

Measured, with one worker (``rqueue -A tasks worker -c 2``, prefork, started through the CLI):

- **send**: N sequential ``add.delay()`` vs N sequential ``await add.adelay()`` (µs per send: what
  publishing through the publish threads costs over publishing inline);
- **round trip**: M sequential ``delay().get()`` vs ``await adelay()).aget()`` (p50 and p99 ms);
- **concurrent**: C tasks in flight at once: C ``await adelay()).aget()`` in one event loop vs
  ``delay().get()`` in T threads (tasks/s end to end, the client's threads and RSS afterwards, the
  Redis connections it held at the peak).

Run: ``python benches/bench_asyncio_client.py [--quick] [--backend redis|sqlite] [--sends N]
[--roundtrips M] [--concurrent C] [--threads T,T2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from peers.redis_server import RedisServer

TASKS_PY = textwrap.dedent("""
    import os
    from rqueue import App

    app = App("tasks", broker=os.environ["BENCH_URL"], backend=os.environ["BENCH_URL"])

    @app.task
    def add(x, y):
        return x + y
""")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def connections(url: str) -> int:
    if not url.startswith("redis"):
        return 0  # an SQLite file: no connections to count
    client = redis.Redis.from_url(url)
    try:
        return len(client.client_list()) - 1  # less this one
    finally:
        client.close()


class Peak:
    """Samples the Redis connections every 20 ms in a thread of its own while a scenario runs."""

    def __init__(self, url: str, baseline: int) -> None:
        self.url, self.baseline, self.peak = url, baseline, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, connections(self.url) - self.baseline)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--sends", type=int, default=5000)
    parser.add_argument("--roundtrips", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--threads", default="64,1000", help="thread counts of the sync side, comma separated")
    parser.add_argument("--backend", choices=["redis", "sqlite"], default="redis", help="broker and results")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.sends, opts.roundtrips, opts.concurrent, opts.threads = 500, 100, 200, "32"
    thread_counts = [int(t) for t in opts.threads.split(",") if t]

    with tempfile.TemporaryDirectory(prefix="bench-asyncio-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir) if opts.backend == "redis" else None
        url = server.url if server is not None else f"sqlite:///{workdir / 'bench.sqlite3'}"
        os.environ["BENCH_URL"] = url
        (workdir / "tasks.py").write_text(TASKS_PY)
        sys.path.insert(0, str(workdir))
        import tasks  # type: ignore[import-not-found]  # written just above

        add = tasks.add
        rows: list[tuple[str, str, str]] = []
        try:
            # -- send -------------------------------------------------------------------------------
            add.delay(0, 0)  # connections made, scripts loaded
            asyncio.run(add.adelay(0, 0))
            sync_s = timed(lambda: [add.delay(i, i) for i in range(opts.sends)])

            async def sends() -> None:
                for i in range(opts.sends):
                    await add.adelay(i, i)

            async_s = timed(lambda: asyncio.run(sends()))
            rows.append(
                ("send, sequential", f"{sync_s / opts.sends * 1e6:.0f} µs", f"{async_s / opts.sends * 1e6:.0f} µs")
            )
            tasks.app.broker.purge(["celery"])

            worker_log = workdir / "worker.log"
            cmd = [sys.executable, "-m", "rqueue", "-A", "tasks", "worker", "-c", "2", "--loglevel=info"]
            worker = subprocess.Popen(
                [*cmd, "--logfile", str(worker_log)],
                cwd=workdir,
                env={**os.environ, "PYTHONPATH": str(workdir)},
                stdout=(workdir / "worker.out").open("w"),
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 60
                while "ready." not in (worker_log.read_text() if worker_log.exists() else ""):
                    if time.monotonic() > deadline or worker.poll() is not None:
                        raise SystemExit(f"worker not ready:\n{(workdir / 'worker.out').read_text()}")
                    time.sleep(0.05)
                measure(add, url, opts, thread_counts, rows)
            finally:
                worker.terminate()
                worker.wait(30)
        finally:
            if server is not None:
                server.stop()

    width = max(len(r[0]) for r in rows)
    print(f"\nasyncio client vs sync client, {opts.backend}, one worker (prefork -c 2); {os.cpu_count()} CPUs")
    print(f"{'':{width}}  {'sync':>28}  {'asyncio':>28}")
    for label, sync, aio in rows:
        print(f"{label:{width}}  {sync:>28}  {aio:>28}")
    return 0


def measure(add: Any, url: str, opts: argparse.Namespace, thread_counts: list[int], rows: list[Any]) -> None:
    # -- round trip -------------------------------------------------------------------------------------
    for _ in range(20):
        add.delay(1, 1).get(timeout=30)
    sync_ms = []
    for i in range(opts.roundtrips):
        started = time.perf_counter()
        add.delay(i, i).get(timeout=30)
        sync_ms.append((time.perf_counter() - started) * 1000)

    async def roundtrips() -> list[float]:
        spent = []
        for i in range(opts.roundtrips):
            started = time.perf_counter()
            await (await add.adelay(i, i)).aget(timeout=30)
            spent.append((time.perf_counter() - started) * 1000)
        return spent

    async_ms = asyncio.run(roundtrips())
    rows.append(("round trip p50", f"{statistics.median(sync_ms):.2f} ms", f"{statistics.median(async_ms):.2f} ms"))
    rows.append(("round trip p99", f"{_p99(sync_ms):.2f} ms", f"{_p99(async_ms):.2f} ms"))

    # -- concurrent ---------------------------------------------------------------------------------
    n = opts.concurrent
    baseline = connections(url)

    async def together() -> list[int]:
        sent = await asyncio.gather(*(add.adelay(i, i) for i in range(n)))
        return list(await asyncio.gather(*(r.aget(timeout=300) for r in sent)))

    with Peak(url, baseline) as peak:
        async_s = timed(lambda: asyncio.run(together()))
    aio = f"{n / async_s:,.0f}/s, {peak.peak} conn, {threading.active_count()} thr, {rss_mib():.0f} MiB"
    for count in thread_counts:
        with ThreadPoolExecutor(count) as pool, Peak(url, connections(url)) as tpeak:
            sync_s = timed(lambda pool=pool: list(pool.map(lambda i: add.delay(i, i).get(timeout=300), range(n))))
            threads = threading.active_count()
        sync = f"{n / sync_s:,.0f}/s, {tpeak.peak} conn, {threads} thr, {rss_mib():.0f} MiB"
        rows.append((f"{n} in flight ({count} threads vs 1 loop)", sync, aio))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


if __name__ == "__main__":
    sys.exit(main())
