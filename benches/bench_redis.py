"""rqueue vs Celery on the same private Redis, side by side, through each one's public API and real CLI.

The script starts its own ``redis-server`` on a free loopback port (``--save "" --appendonly no``),
writes a ``tasks.py`` for each side into a temporary directory (same broker and result backend URL,
a no-op task ``tasks.noop`` with results and ``tasks.noop_ignored`` with ``ignore_result=True``,
``worker_prefetch_multiplier=64``, each side's default ``task_acks_late``), and measures, for rqueue
and then Celery on the same server (``FLUSHALL`` before every measurement):

1. enqueue rate, in a fresh client process: ``noop.delay()`` in a loop, and a batch publish: rqueue's
   ``noop.delay_many(...)`` in chunks; Celery has no batch publish, so its fastest public
   alternative, ``noop.apply_async(producer=p)`` in a loop on one ``app.producer_or_acquire()``.
2. drain without results: N ``noop_ignored`` messages are queued (by the batch publish above, in a
   client process that has exited), then ONE worker is started with the real CLI
   (``rqueue -A tasks worker ...`` / ``python -m celery -A tasks worker ...``); timed until the
   ``celery`` list is empty and kombu's ``unacked`` hash is empty.
3. drain with results: the same with ``noop``; timed until every ``celery-task-meta-<id>`` key exists
   (``EXISTS`` over the ids, in chunks).
4. round trip: with a worker running, sequential ``noop.delay().get(timeout=10)``; p50/p99.

Scenarios 2-4 run with ``--pool solo`` and with ``--pool prefork -c 2`` on both sides (Celery also
gets ``--without-gossip --without-mingle --without-heartbeat``). Drain rates are tasks/s measured
from the worker's first fetch (the ``celery`` list shrinks) to the end, so worker start-up is left
out; the rate from the worker's start is printed too.

Run: ``python benches/bench_redis.py [--quick] [--tasks N] [--celery-tasks N] [--enqueue N]
[--roundtrips N] [--celery-roundtrips N] [--pools solo,prefork] [--json FILE]``. ``--profile S``
then samples an rqueue ``--pool solo`` worker draining ``noop_ignored`` with py-spy for S seconds
(``pip install py-spy``) and prints the hottest frames: by default ``--nonblocking --idle`` (Python
frames, share of wall time, the worker is never stopped); ``--profile-native`` uses ``--native``,
which stops the worker per sample, and the stops make its Redis reads fail with EINTR.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

# Targets of the Redis milestone (rqueue figures only).
TARGET_DRAIN_NO_RESULTS = 150_000.0
TARGET_DRAIN_RESULTS = 60_000.0
TARGET_DELAY = 8_000.0
TARGET_BATCH = 200_000.0
TARGET_RT_P50_MS = 0.5

BATCH_CHUNK = 1_000
#: Give up on one drain after this long (the runtime stays bounded even when something is wrong).
DRAIN_TIMEOUT_S = 60.0
POLL_S = 0.002
WORKER_STOP_S = 10.0
#: The profile starts this long after the worker's first fetch (lazy imports and connections are done).
PROFILE_SETTLE_S = 1.0
SIDES = ("rqueue", "celery")
POOL_CONCURRENCY = {"solo": 1, "prefork": 2}

RQUEUE_TASKS_PY = """\
from rqueue import App

app = App("tasks", broker={url!r}, backend={url!r}, worker_prefetch_multiplier=64)


@app.task(name="tasks.noop")
def noop():
    return None


@app.task(name="tasks.noop_ignored", ignore_result=True)
def noop_ignored():
    return None
"""

CELERY_TASKS_PY = """\
from celery import Celery

app = Celery("tasks", broker={url!r}, backend={url!r})
app.conf.update(worker_prefetch_multiplier=64, broker_connection_retry_on_startup=True)


@app.task(name="tasks.noop")
def noop():
    return None


@app.task(name="tasks.noop_ignored", ignore_result=True)
def noop_ignored():
    return None
"""

#: The user's side of each measurement, run as ``python client.py SIDE MODE TASK N [IDS_FILE]`` in
#: the side's directory (``import tasks``); prints one JSON object. A fresh process each time, so
#: no result subscriptions or connections carry over from one measurement to the next.
CLIENT_PY = """\
import json, sys, time

side, mode, task_name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ids_file = sys.argv[5] if len(sys.argv) > 5 else None
import tasks

task = getattr(tasks, task_name)
perf = time.perf_counter
out = {}
results = []
if mode == "single":
    delay = task.delay
    t0 = perf()
    for _ in range(n):
        results.append(delay())
    out["seconds"] = perf() - t0
elif mode == "batch" and side == "rqueue":
    t0 = perf()
    left = n
    while left:
        k = min(left, CHUNK)
        results.extend(task.delay_many([()] * k))
        left -= k
    out["seconds"] = perf() - t0
elif mode == "batch":
    # Celery has no batch publish: one producer (one connection) for the whole loop.
    apply_async = task.apply_async
    t0 = perf()
    with tasks.app.producer_or_acquire() as producer:
        for _ in range(n):
            results.append(apply_async(producer=producer))
    out["seconds"] = perf() - t0
elif mode == "roundtrip":
    delay = task.delay
    deadline = time.monotonic() + 30
    while True:  # the worker may still be starting
        try:
            delay().get(timeout=1)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    for _ in range(WARMUP):
        delay().get(timeout=10)
    samples = []
    for _ in range(n):
        t0 = perf()
        delay().get(timeout=10)
        samples.append(perf() - t0)
    out["samples"] = samples
if ids_file:
    with open(ids_file, "w") as fh:
        fh.write("\\n".join(r.id for r in results))
print(json.dumps(out))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], grace_s: float = WORKER_STOP_S) -> None:
    """SIGTERM, then SIGKILL (of the whole process group) when it does not exit within ``grace_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    # Children (prefork) may outlive their parent; the group is ours alone (start_new_session).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, no persistence."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("bench_redis: redis-server is not on PATH")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / "redis.log"
        cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(workdir), "--logfile", str(self.log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; log:\n{self.log.read_text()[-2000:]}") from None
                time.sleep(0.02)
        self.version = self.client.info("server")["redis_version"]

    def stop(self) -> None:
        try:
            self.client.close()
        finally:
            stop_process(self.proc, 5)


class Worker:
    """One worker started through its real CLI, in its own process group; stopped with SIGTERM."""

    def __init__(self, side: str, sidedir: Path, pool: str, concurrency: int) -> None:
        if side == "rqueue":
            cmd = [str(Path(sys.executable).with_name("rqueue")), "-A", "tasks", "worker"]
        else:
            cmd = [sys.executable, "-m", "celery", "-A", "tasks", "worker"]
            cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        cmd += ["--pool", pool, "--loglevel=warning", "--prefetch-multiplier", "64"]
        if pool != "solo":
            cmd += ["-c", str(concurrency)]
        self.cmd = cmd
        self.log = sidedir / f"worker-{pool}.log"
        self._log_fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONPATH=str(sidedir) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            cmd, cwd=sidedir, env=env, stdout=subprocess.DEVNULL, stderr=self._log_fh, start_new_session=True
        )

    @property
    def shown(self) -> str:
        head = ["rqueue"] if self.cmd[0].endswith("rqueue") else ["celery"]
        return " ".join(head + self.cmd[self.cmd.index("-A") :])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}; log:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        try:
            stop_process(self.proc)
        finally:
            self._log_fh.close()


class Bench:
    def __init__(self, opts: argparse.Namespace, workdir: Path, server: RedisServer) -> None:
        self.opts = opts
        self.workdir = workdir
        self.server = server
        self.r = server.client
        self.dirs: dict[str, Path] = {}
        client_py = CLIENT_PY.replace("CHUNK", str(BATCH_CHUNK)).replace("WARMUP", str(opts.warmup))
        for side, tpl in (("rqueue", RQUEUE_TASKS_PY), ("celery", CELERY_TASKS_PY)):
            d = workdir / side
            d.mkdir()
            (d / "tasks.py").write_text(tpl.format(url=server.url))
            (d / "client.py").write_text(client_py)
            self.dirs[side] = d

    def client(self, side: str, mode: str, task: str, n: int, ids_file: Path | None = None) -> dict[str, Any]:
        """Run the user's side of a measurement in a fresh process; its JSON output."""
        cmd = [sys.executable, "client.py", side, mode, task, str(n)] + ([str(ids_file)] if ids_file else [])
        proc = subprocess.run(cmd, cwd=self.dirs[side], capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{side} client {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

    def reset(self) -> None:
        self.r.flushall()

    def tasks_for(self, side: str) -> int:
        return int(self.opts.tasks if side == "rqueue" else self.opts.celery_tasks)

    # -- 1. enqueue ------------------------------------------------------------------------------

    def enqueue(self, side: str) -> dict[str, Any]:
        n = self.opts.enqueue
        out: dict[str, Any] = {"tasks": n}
        for task in ("noop", "noop_ignored"):
            for mode in ("single", "batch"):
                self.reset()
                res = self.client(side, mode, task, n)
                queued = self.r.llen("celery")
                if queued != n:
                    raise RuntimeError(f"{side} {task} {mode}: expected {n} queued messages, found {queued}")
                out[f"{task}_{mode}_s"] = res["seconds"]
                out[f"{task}_{mode}_tasks_s"] = n / res["seconds"]
        self.reset()
        return out

    # -- 2, 3. drain -----------------------------------------------------------------------------

    def drain(self, side: str, pool: str, concurrency: int, results: bool) -> dict[str, Any]:
        n = self.tasks_for(side)
        self.reset()
        ids_file = self.workdir / f"ids-{side}.txt"
        fill = self.client(side, "batch", "noop" if results else "noop_ignored", n, ids_file if results else None)
        queued = self.r.llen("celery")
        if queued != n:
            raise RuntimeError(f"{side}: expected {n} queued messages, found {queued}")
        keys = [f"celery-task-meta-{i}" for i in ids_file.read_text().split()] if results else []
        r = self.r
        done_keys = 0

        def finished() -> bool:
            nonlocal done_keys
            if results:
                while done_keys < n:  # results arrive roughly in queue order: advance chunk by chunk
                    chunk = keys[done_keys : done_keys + 1000]
                    if r.exists(*chunk) != len(chunk):
                        return False
                    done_keys += len(chunk)
                return True
            pipe = r.pipeline(transaction=False)
            pipe.llen("celery")
            pipe.hlen("unacked")
            left, unacked = pipe.execute()
            return bool(left == 0 and unacked == 0)

        worker = Worker(side, self.dirs[side], pool, concurrency)
        started = time.perf_counter()
        first_fetch: float | None = None
        timed_out = False
        try:
            while True:
                now = time.perf_counter()
                if first_fetch is None and r.llen("celery") < n:
                    first_fetch = now
                if first_fetch is not None and finished():
                    break
                if now - started > DRAIN_TIMEOUT_S:
                    timed_out = True
                    break
                worker.check_alive()
                time.sleep(POLL_S)
            done = time.perf_counter()
        finally:
            worker.stop()
        stored = None
        if results:
            stored = sum(r.exists(*keys[i : i + 1000]) for i in range(0, n, 1000))
        from_fetch = done - first_fetch if first_fetch is not None else float("nan")
        return {
            "side": side,
            "pool": pool,
            "concurrency": concurrency,
            "results": results,
            "command": worker.shown,
            "tasks": n,
            "fill_tasks_s": n / fill["seconds"],
            "startup_s": (first_fetch - started) if first_fetch is not None else None,
            "wall_s": done - started,
            "tasks_s_incl_startup": n / (done - started),
            "drain_s": from_fetch,
            "tasks_s": n / from_fetch,
            "results_stored": stored,
            "timed_out": timed_out,
        }

    # -- 4. round trip ---------------------------------------------------------------------------

    def roundtrip(self, side: str, pool: str, concurrency: int) -> dict[str, Any]:
        n = self.opts.roundtrips if side == "rqueue" else self.opts.celery_roundtrips
        self.reset()
        worker = Worker(side, self.dirs[side], pool, concurrency)
        try:
            samples = sorted(self.client(side, "roundtrip", "noop", n)["samples"])
        finally:
            worker.stop()

        def pct(p: float) -> float:
            return float(samples[min(len(samples) - 1, int(p / 100 * len(samples)))]) * 1000

        return {
            "side": side,
            "pool": pool,
            "concurrency": concurrency,
            "command": worker.shown,
            "calls": n,
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": samples[-1] * 1000,
            "mean_ms": sum(samples) / len(samples) * 1000,
        }

    # -- profile ---------------------------------------------------------------------------------

    def profile(self, seconds: float) -> dict[str, Any]:
        """py-spy on an rqueue ``--pool solo`` worker draining ``noop_ignored`` messages."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            return {"error": "py-spy not installed (pip install py-spy)"}
        n = self.opts.profile_tasks
        self.reset()
        self.client("rqueue", "batch", "noop_ignored", n)
        raw = self.workdir / "profile.txt"
        worker = Worker("rqueue", self.dirs["rqueue"], "solo", 1)
        try:
            while self.r.llen("celery") >= n:  # started consuming
                worker.check_alive()
                time.sleep(POLL_S)
            time.sleep(PROFILE_SETTLE_S)
            worker.check_alive()
            left_at_start = self.r.llen("celery")
            cmd = [spy, "record", *profile_flags(self.opts), "-f", "raw", "-d", str(int(seconds)), "-o", str(raw)]
            cmd += ["--pid", str(worker.proc.pid)]
            spied = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
            left_at_end = self.r.llen("celery")
        finally:
            worker.stop()
        if spied.returncode != 0 or not raw.exists():
            return {"error": f"py-spy failed ({spied.returncode}): {spied.stderr[-1000:]}"}
        summary = summarize_raw(raw.read_text())
        summary["tasks_s_while_sampled"] = (left_at_start - left_at_end) / seconds
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


# -- report ------------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def ratio(a: float, b: float, higher_is_better: bool = True) -> str:
    if not a or not b:
        return "-"
    return f"{(a / b) if higher_is_better else (b / a):.1f}x"


def pools(opts: argparse.Namespace) -> list[tuple[str, int]]:
    return [(p, POOL_CONCURRENCY[p]) for p in opts.pools]


def run(opts: argparse.Namespace, bench: Bench, out: dict[str, Any]) -> None:
    print(f"\n  1. enqueue {opts.enqueue:,} no-op tasks (client process, no worker running)")
    for side in SIDES:
        e = out["enqueue"][side] = bench.enqueue(side)
        batch = "noop.delay_many([()] * 1000) per chunk" if side == "rqueue" else "apply_async(producer=p) loop"
        for task, note in (("noop", "results on"), ("noop_ignored", "ignore_result")):
            print(
                f"    {side:7} {note:13} delay() {e[f'{task}_single_tasks_s']:>9,.0f} tasks/s   "
                f"batch {e[f'{task}_batch_tasks_s']:>9,.0f} tasks/s  ({batch})"
            )

    for results in (False, True):
        key = "drain_results" if results else "drain"
        what = "noop (results stored in Redis)" if results else "noop_ignored (ignore_result=True)"
        print(f"\n  {3 if results else 2}. drain {what}: queue filled first, then ONE worker via the CLI")
        for pool, conc in pools(opts):
            for side in SIDES:
                d = bench.drain(side, pool, conc, results)
                out[key].append(d)
                print(f"    $ {d['command']}")
                line = (
                    f"      {d['tasks_s']:>10,.0f} tasks/s  ({d['tasks']:,} in {d['drain_s']:.2f} s from first fetch; "
                    f"start-up {d['startup_s'] or float('nan'):.2f} s, {d['tasks_s_incl_startup']:,.0f} tasks/s incl.)"
                )
                if pool == pools(opts)[0][0]:
                    line += f"\n      (queue filled by the batch publish at {d['fill_tasks_s']:,.0f} tasks/s)"
                print(line)
                if d["timed_out"] or (results and d["results_stored"] != d["tasks"]):
                    print(f"      !! timed out: {d['timed_out']}, results stored: {d['results_stored']}")

    print("\n  4. round trip: sequential noop.delay().get(timeout=10), worker running")
    for pool, conc in pools(opts):
        for side in SIDES:
            rt = bench.roundtrip(side, pool, conc)
            out["roundtrip"].append(rt)
            print(
                f"    {side:7} {pool:7} -c {conc}: {rt['calls']:>5,} calls  p50 {rt['p50_ms']:.2f} ms  "
                f"p90 {rt['p90_ms']:.2f} ms  p99 {rt['p99_ms']:.2f} ms  max {rt['max_ms']:.2f} ms"
            )

    print_table(opts, out)


def print_table(opts: argparse.Namespace, out: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str, str, str]] = []
    targets: dict[str, Any] = {}

    def add(name: str, rq: float, ce: float, unit: str, target: float | None, higher: bool = True) -> None:
        fmt: Callable[[float], str] = (lambda v: f"{v:,.0f} {unit}") if unit == "/s" else (lambda v: f"{v:.2f} {unit}")
        tgt = ""
        if target is not None:
            met = rq >= target if higher else rq <= target
            targets[name] = {"target": target, "rqueue": rq, "met": met}
            tgt = f"{'>=' if higher else '<='} {target:,g}{' ' + unit if unit != '/s' else '/s'}: {verdict(met)}"
        rows.append((name, fmt(rq), fmt(ce), ratio(rq, ce, higher), tgt))

    e = out["enqueue"]
    for task, note in (("noop", "results on"), ("noop_ignored", "ignore_result")):
        for mode, label, target in (("single", "delay()", TARGET_DELAY), ("batch", "batch *", TARGET_BATCH)):
            k = f"{task}_{mode}_tasks_s"
            add(f"enqueue {label}, {note}", e["rqueue"][k], e["celery"][k], "/s", target)
    for key, label, target in (
        ("drain", "drain, no results", TARGET_DRAIN_NO_RESULTS),
        ("drain_results", "drain, results", TARGET_DRAIN_RESULTS),
    ):
        for pool, conc in pools(opts):
            by = {d["side"]: d for d in out[key] if d["pool"] == pool}
            add(f"{label}, {pool} -c {conc}", by["rqueue"]["tasks_s"], by["celery"]["tasks_s"], "/s", target)
    for pool, conc in pools(opts):
        by = {d["side"]: d for d in out["roundtrip"] if d["pool"] == pool}
        for p in ("p50", "p99"):
            add(
                f"round trip {p}, {pool} -c {conc}",
                by["rqueue"][f"{p}_ms"],
                by["celery"][f"{p}_ms"],
                "ms",
                TARGET_RT_P50_MS if p == "p50" else None,
                higher=False,
            )
    out["targets"] = targets
    head = ("scenario", "rqueue", "Celery", "rqueue/Celery", "target (rqueue)")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    print("\n  summary (ratio > 1: rqueue better)")
    for row in [head, *rows]:
        cells = (c.rjust(w) if 0 < i < 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        print(("    " + "  ".join(cells)).rstrip())
    print(
        "    * batch: rqueue noop.delay_many() in chunks of 1,000; Celery has no batch publish, its fastest "
        "public alternative\n      is noop.apply_async(producer=p) in a loop on one app.producer_or_acquire()"
    )
    print(
        "    drain figures are tasks/s from the worker's first fetch until done; acks: rqueue "
        "task_acks_late=True (its default),\n    Celery task_acks_late=False (its default)"
    )


def print_profile(prof: dict[str, Any], opts: argparse.Namespace) -> None:
    flags = " ".join(profile_flags(opts))
    idle = not opts.profile_native
    print(
        f"\n  profile: py-spy record {flags} -f raw -d {opts.profile:g} --pid <worker> of "
        f"`rqueue -A tasks worker --pool solo` draining noop_ignored, from {PROFILE_SETTLE_S:g} s after its first fetch"
    )
    if "error" in prof:
        print(f"    !! {prof['error']}")
        return
    print(
        f"    {prof['samples']:,} samples ({'all' if idle else 'idle samples dropped'}); "
        f"{prof['tasks_s_while_sampled']:,.0f} tasks/s while sampled"
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
    parser.add_argument("--tasks", type=int, help="rqueue tasks per drain [default: 20000; quick 2000]")
    parser.add_argument("--celery-tasks", type=int, help="Celery tasks per drain [default: 3000; quick 200]")
    parser.add_argument("--enqueue", type=int, help="tasks per enqueue measurement [default: 5000; quick 500]")
    parser.add_argument("--roundtrips", type=int, help="rqueue delay().get() calls [default: 1000; quick 50]")
    parser.add_argument("--celery-roundtrips", type=int, help="Celery delay().get() calls [default: 200; quick 20]")
    parser.add_argument(
        "--pools", help="comma-separated, of solo (-c 1) and prefork (-c 2) [default: solo,prefork; quick: solo]"
    )
    parser.add_argument("--warmup", type=int, default=20, help="round trips before measuring [default: 20]")
    parser.add_argument("--profile", type=float, metavar="S", help="then py-spy an rqueue solo worker for S s")
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native (native frames; it stops the worker per sample, which disturbs its Redis I/O) "
        "instead of --nonblocking --idle (Python frames, wall time)",
    )
    parser.add_argument("--profile-tasks", type=int, default=300_000, help="queued for --profile [default: 300000]")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    opts = parser.parse_args(argv)
    defaults = (
        {"tasks": 2_000, "celery_tasks": 200, "enqueue": 500, "roundtrips": 50, "celery_roundtrips": 20}
        if opts.quick
        else {"tasks": 20_000, "celery_tasks": 3_000, "enqueue": 5_000, "roundtrips": 1_000, "celery_roundtrips": 200}
    )
    for k, v in defaults.items():
        if getattr(opts, k) is None:
            setattr(opts, k, v)
    if opts.quick:
        opts.warmup = min(opts.warmup, 5)
    opts.pools = (opts.pools or ("solo" if opts.quick else "solo,prefork")).split(",")
    if not opts.pools or any(p not in POOL_CONCURRENCY for p in opts.pools):
        parser.error(f"--pools: expected a comma-separated list of {', '.join(POOL_CONCURRENCY)}")

    import celery  # type: ignore[import-untyped]

    from rqueue import _rqueue

    out: dict[str, Any] = {"enqueue": {}, "drain": [], "drain_results": [], "roundtrip": []}
    with tempfile.TemporaryDirectory(prefix="rqueue-bench-redis-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir)
        try:
            print(
                f"bench_redis: rqueue vs Celery on one private redis-server {server.version} at {server.url}; "
                f"python {sys.version.split()[0]}, rqueue._rqueue {_rqueue.__version__}, celery {celery.__version__}, "
                f"redis-py {redis.__version__}, {os.cpu_count()} CPUs"
            )
            print(textwrap.indent(RQUEUE_TASKS_PY.format(url=server.url), "    rqueue | ", lambda _line: True), end="")
            print(textwrap.indent(CELERY_TASKS_PY.format(url=server.url), "    celery | ", lambda _line: True), end="")
            out["meta"] = {
                "redis": server.version,
                "rqueue": _rqueue.__version__,
                "celery": celery.__version__,
                "cpus": os.cpu_count(),
                "acks_late": {"rqueue": True, "celery": False},
                "prefetch_multiplier": 64,
            }
            bench = Bench(opts, workdir, server)
            run(opts, bench, out)
            if opts.profile:
                out["profile"] = bench.profile(opts.profile)
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
