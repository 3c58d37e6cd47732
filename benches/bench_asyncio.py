"""The asyncio pool, side by side in one run on a private Redis (broker and results):

1. concurrency proof: N tasks doing ``await asyncio.sleep(1)`` on one process, ``-P asyncio -c N``
   (default 1,000): the seconds from the first send to the last result;
2. no-op tasks on one ``-P asyncio -c 100`` worker: ``async def`` (on the loop) vs sync (in its
   thread pool), and sync no-op on ``-P prefork`` for reference: tasks/s;
3. I/O bound: each task makes one HTTP GET to a local server that answers after 50 ms (a separate
   process): ``async def`` with ``httpx2.AsyncClient`` on ``-P asyncio -c 100`` vs a sync task with
   ``httpx2.Client`` on ``-P prefork -c P`` (default 8): tasks/s and the worker's resident memory
   (the sum over its processes, once the run is done).

Scenarios 2 and 3 are drains: the messages are in the queue before the worker starts, and the run is
timed from the first task that ran to the last (counted in shared memory by ``rqueue.bench.counter``,
so no result per task is stored or read: the worker's throughput, not the client's). Scenario 1 is
timed from the first send (one ``delay_many``) to the last task counted, with the worker running.
Workers are started through the CLI and stopped after their run.

Run: ``.venv/bin/python benches/bench_asyncio.py [--quick] [--broker redis|sqlite] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script: make `peers` importable
    sys.path.insert(0, str(HERE))

from peers.redis_server import RedisServer  # noqa: E402
from rqueue.bench.counter import COUNTERS_ENV, POLL_S, read_counts  # noqa: E402
from rqueue.bench.procstat import tree  # noqa: E402

#: The latency of the local HTTP server, per request.
LATENCY_S = 0.05

TASKS_MODULE = """
import asyncio
import os

import httpx2

from rqueue import App
from rqueue.bench.counter import count

app = App("benchaio", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BACKEND"])
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=4)

_async_clients = {}
_sync_client = None


@app.task(name="b.anoop")
async def anoop():
    count()


@app.task(name="b.noop")
def noop():
    count()


@app.task(name="b.nap")
async def nap(seconds):
    await asyncio.sleep(seconds)
    count()


@app.task(name="b.aget")
async def aget(url):
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:  # one connection pool per event loop, reused by every task on it
        client = _async_clients[loop] = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=1000))
    (await client.get(url)).raise_for_status()
    count()


@app.task(name="b.get")
def get(url):
    global _sync_client
    if _sync_client is None:
        _sync_client = httpx2.Client()
    _sync_client.get(url).raise_for_status()
    count()
"""

SERVER = """
import asyncio, sys

LATENCY_S = float(sys.argv[2])


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            if not head:
                break
            await asyncio.sleep(LATENCY_S)
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nContent-Type: text/plain\\r\\n\\r\\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""


def rqueue_cmd() -> list[str]:
    script = Path(sys.executable).with_name("rqueue")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rqueue"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """One ``rqueue worker`` through the CLI, its log in ``workdir``."""

    def __init__(self, workdir: Path, env: dict[str, str], *args: str) -> None:
        self.log = workdir / f"worker-{time.monotonic_ns()}.log"
        cmd = [*rqueue_cmd(), "-A", "benchaio", "worker", "-l", "info", "--logfile", str(self.log), *args]
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while "ready." not in (self.log.read_text() if self.log.exists() else ""):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {args} did not start:\n{self.log.read_text() if self.log.exists() else ''}")
            time.sleep(0.05)

    def rss_mib(self) -> float:
        total = 0
        for pid in tree(self.proc.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_counted(counters: Path, n: int, worker: Worker, timeout_s: float = 600) -> tuple[float, float]:
    """``(when the first task was counted, when the n-th was)``, perf_counter seconds."""
    first: float | None = None
    deadline = time.perf_counter() + timeout_s
    while True:
        done = read_counts(counters)
        now = time.perf_counter()
        if first is None and done:
            first = now
        if done >= n:
            assert first is not None
            return first, now
        if worker.proc.poll() is not None or now > deadline:
            raise SystemExit(f"{done} of {n} tasks ran; the worker's log:\n{worker.log.read_text()[-3000:]}")
        time.sleep(POLL_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Smaller runs (a check, not a measurement).")
    parser.add_argument("--broker", choices=["redis", "sqlite"], default="redis")
    parser.add_argument("--sleepers", type=int, default=1000, help="Tasks of the concurrency proof (and its -c).")
    parser.add_argument("--noop", type=int, default=10_000, help="No-op tasks per run.")
    parser.add_argument("--io", type=int, default=3000, help="HTTP tasks per run.")
    parser.add_argument("--prefork-c", type=int, default=8, help="Processes of the prefork pool in the I/O run.")
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()
    if args.quick:
        args.noop, args.io = 1000, 300

    with tempfile.TemporaryDirectory(prefix="rqueue-bench-aio-") as tmp:
        workdir = Path(tmp)
        (workdir / "benchaio.py").write_text(TASKS_MODULE)
        redis: RedisServer | None = None
        if args.broker == "redis":
            redis = RedisServer(workdir)
            broker = backend = redis.url
        else:
            broker = backend = f"sqlite:///{workdir / 'bench.sqlite3'}"
        env = dict(os.environ, BENCH_BROKER=broker, BENCH_BACKEND=backend, PYTHONPATH=str(workdir))
        os.environ.update(BENCH_BROKER=broker, BENCH_BACKEND=backend)
        sys.path.insert(0, str(workdir))
        import benchaio  # type: ignore[import-not-found]

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port), str(LATENCY_S)], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        server.stdout.readline()
        url = f"http://127.0.0.1:{port}/"
        rows: list[dict[str, Any]] = []

        def run(
            scenario: str, pool: str, concurrency: int, task: Any, calls: list[tuple[Any, ...]], drain: bool
        ) -> None:
            counters = Path(tempfile.mkdtemp(dir=workdir, prefix="counters-"))
            env[COUNTERS_ENV] = str(counters)
            if drain:
                task.delay_many(calls)
            worker = Worker(workdir, env, "-P", pool, "-c", str(concurrency))
            try:
                sent = time.perf_counter()
                if not drain:
                    task.delay_many(calls)
                first, last = wait_counted(counters, len(calls), worker)
                seconds = last - (first if drain else sent)
                rss = worker.rss_mib()
            finally:
                worker.stop()
            row = {
                "scenario": scenario,
                "pool": f"{pool} -c {concurrency}",
                "tasks": len(calls),
                "seconds": round(seconds, 3),
                "tasks_per_s": round(len(calls) / seconds, 1),
                "rss_mib": round(rss, 1),
            }
            rows.append(row)
            print(
                f"{scenario:<36} {row['pool']:<18} {len(calls):>6} tasks {seconds:>8.2f} s "
                f"{row['tasks_per_s']:>9.1f} tasks/s  RSS {rss:>7.1f} MiB",
                flush=True,
            )

        try:
            print(f"broker and results: {args.broker}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs\n")
            sleepers = [(1.0,)] * args.sleepers
            run(f"{args.sleepers} x asyncio.sleep(1), live", "asyncio", args.sleepers, benchaio.nap, sleepers, False)
            run("no-op async def, drain", "asyncio", 100, benchaio.anoop, [()] * args.noop, True)
            run("no-op sync (its threads), drain", "asyncio", 100, benchaio.noop, [()] * args.noop, True)
            run("no-op sync, drain", "prefork", 2, benchaio.noop, [()] * args.noop, True)
            http = [(url,)] * args.io
            ms = f"{LATENCY_S * 1000:.0f} ms"
            run(f"HTTP GET {ms} (async httpx2), drain", "asyncio", 100, benchaio.aget, http, True)
            run(f"HTTP GET {ms} (sync httpx2), drain", "prefork", args.prefork_c, benchaio.get, http, True)
        finally:
            server.terminate()
            server.wait(10)
            if redis is not None:
                redis.stop()
        if args.json:
            Path(args.json).write_text(json.dumps({"broker": args.broker, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
