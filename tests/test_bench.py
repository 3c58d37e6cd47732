"""``rqueue bench``: end to end on SQLite and Redis through the real CLI, clean-up, Ctrl-C and bad input.

Speed is never asserted: only that every task was counted, the figures are sane and the broker is
left as it was found.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import free_port, rqueue_cmd
from rqueue.bench import procstat, stats
from rqueue.bench.report import table

pytestmark = pytest.mark.timeout(300)


def run_bench(
    cwd: Path, *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rqueue_cmd(), "bench", "--no-progress", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RQUEUE_")}, **(env or {})},
    )


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def rows_by_label(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["label"]: row for row in report["scenarios"]}


def assert_sane(row: dict[str, Any]) -> None:
    assert row["seconds"] > 0
    assert row["tasks_s"] > 0 and math.isfinite(row["tasks_s"])
    if row["p50_ms"] is not None:
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]


def test_bench_runs_on_the_temporary_sqlite_default(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_bench(tmp_path, "--tasks", "300", "--roundtrips", "40", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = load(out)
    assert report["broker_kind"] == "sqlite"
    assert report["broker"] == "temporary SQLite file"
    assert report["queue"].startswith("rqueue-bench-")
    assert report["machine"]["cpus"] == os.cpu_count()
    rows = rows_by_label(report)
    assert set(rows) == {
        "enqueue, delay()",
        "enqueue, batches of 1,000",
        "drain, no results",
        "round trip, delay().get()",
    }
    for row in report["scenarios"]:
        assert_sane(row)
    assert rows["enqueue, delay()"]["tasks"] == 300
    drain = rows["drain, no results"]
    assert drain["tasks"] == drain["tasks_run"] == 300  # every task counted by the worker processes
    assert 0 < drain["tasks_timed"] <= 300
    assert drain["results_stored"] is None
    assert drain["command"].startswith("rqueue -A rqueue.bench.tasks worker")
    assert rows["round trip, delay().get()"]["tasks"] == 40
    if procstat.available():
        # measured; a 300-task drain may use less than one clock tick (10 ms) of CPU in a sample
        assert isinstance(drain["worker_cpu_pct"], float) and drain["worker_cpu_pct"] >= 0
        assert drain["worker_rss_mib"] > 1
    assert drain["broker_cpu_pct"] is None  # SQLite has no broker process: n/a
    # The temporary broker directory is gone, and the user's default file was never created.
    assert report["cleanup"]["queue_length"] == 0
    assert not Path(report["cleanup"]["removed"]).exists()
    assert not (tmp_path / "rqueue.sqlite3").exists()
    assert "tasks/s" in proc.stdout and "n/a" in proc.stdout


def test_bench_ignores_a_result_backend_from_the_environment(tmp_path: Path) -> None:
    """$RQUEUE_RESULT_BACKEND must not send the bench's producer and its workers to different stores."""
    elsewhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    done = run_bench(
        tmp_path,
        "-n",
        "20",
        "-s",
        "roundtrip",
        "--json",
        str(tmp_path / "r.json"),
        env={"RQUEUE_RESULT_BACKEND": elsewhere},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert load(tmp_path / "r.json")["backend"] == "the broker"


def test_bench_on_redis_counts_every_task_and_leaves_nothing(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "bench.json"
    proc = run_bench(
        tmp_path,
        *("--broker", redis_url, "--tasks", "400", "--roundtrips", "30", "--results"),
        *("--workers", "2", "-c", "1", "--json", str(out)),
    )
    assert proc.returncode == 0, proc.stderr
    report = load(out)
    assert report["broker_kind"] == "redis"
    assert report["keyprefix"] == report["queue"] + ":"
    rows = rows_by_label(report)
    drain = rows["drain, results stored"]
    assert drain["tasks_run"] == 400
    assert drain["results_stored"] == 400
    assert drain["workers"] == 2 and drain["concurrency"] == 1
    for row in report["scenarios"]:
        assert_sane(row)
        assert row["broker_cpu_pct"] is not None and row["broker_cpu_pct"] >= 0
    cleanup = report["cleanup"]
    assert cleanup["queue_length"] == 0 and cleanup["prefixed_keys"] == 0 and cleanup["dead_letters"] == 0
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0, client.keys("*")[:20]  # no queue, lease, binding or result key is left
    finally:
        client.close()


def test_bench_payload_scenario_on_redis(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "bench.json"
    proc = run_bench(
        tmp_path,
        *("--broker", redis_url, "--tasks", "200", "--scenario", "drain", "--payload-bytes", "10240"),
        *("-P", "solo", "--json", str(out)),
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = load(out)["scenarios"]
    assert row["payload_bytes"] == 10240 and row["tasks_run"] == 200 and row["pool"] == "solo"
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def sqlite_rows(path: Path) -> dict[str, int]:
    """Rows left in the broker file's tables, read with Python's sqlite3 (no rqueue in this process)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("messages", "results", "dead_letters")
        }
    finally:
        conn.close()


def test_bench_on_a_user_sqlite_file_deletes_its_messages_and_results(tmp_path: Path) -> None:
    db = tmp_path / "mine.sqlite3"
    out = tmp_path / "bench.json"
    proc = run_bench(
        tmp_path, "--broker", f"sqlite:///{db}", "--tasks", "200", "--roundtrips", "20", "--results", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    report = load(out)
    assert rows_by_label(report)["drain, results stored"]["results_stored"] == 200
    assert report["cleanup"]["results_deleted"] >= 200 + 200 + 20  # enqueue, drain and round trip results
    assert db.exists()  # the user's file stays, emptied of what the bench put there
    assert sqlite_rows(db) == {"messages": 0, "results": 0, "dead_letters": 0}


def _worker_pids(bench_pid: int) -> list[int]:
    return [p for p in procstat.tree(bench_pid) if p != bench_pid]


def start_redis_drain(tmp_path: Path, redis_url: str) -> tuple[subprocess.Popen[str], set[int]]:
    """A ``rqueue bench`` draining a long queue on Redis, and its worker pids once they are consuming."""
    proc = subprocess.Popen(
        [
            *rqueue_cmd(),
            *("bench", "--no-progress", "--broker", redis_url, "--scenario", "drain"),
            *("--tasks", "30000", "-P", "prefork", "-c", "2", "--timeout", "200"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # a killed bench cannot remove its temporary directory
    )
    client = redis.Redis.from_url(redis_url)
    try:
        # Wait for the worker and its prefork children, then for them to be consuming the queue.
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            workers = _worker_pids(proc.pid)
            leases = client.keys("rqueue-bench-*:unacked")
            if len(workers) >= 3 and leases and client.hlen(leases[0]):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0]
        assert len(workers) >= 3, workers
        return proc, set(_worker_pids(proc.pid))
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    finally:
        client.close()


def assert_gone(pids: set[int], within_s: float = 0.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert not alive, f"worker processes still running: {alive}"


@pytest.mark.skipif(not procstat.available(), reason="needs /proc to find the worker processes")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_bench_interrupted_stops_workers_and_cleans_the_broker(
    tmp_path: Path, redis_url: str, sig: signal.Signals
) -> None:
    proc, workers = start_redis_drain(tmp_path, redis_url)
    try:
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, output
        assert "interrupted" in output
        assert_gone(workers)
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.dbsize() == 0, client.keys("*")[:20]
        finally:
            client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_bench_killed_outright_still_stops_its_workers(tmp_path: Path, redis_url: str) -> None:
    proc, workers = start_redis_drain(tmp_path, redis_url)
    proc.kill()  # SIGKILL: no clean-up runs in the bench; the kernel tells the workers
    proc.wait(10)
    assert_gone(workers, within_s=60)


@pytest.mark.skipif(not procstat.available(), reason="needs /proc to find the worker processes")
def test_bench_ctrl_c_on_sqlite_leaves_no_worker_and_no_row(tmp_path: Path) -> None:
    db = tmp_path / "mine.sqlite3"
    proc = subprocess.Popen(
        [
            *rqueue_cmd(),
            *("bench", "--no-progress", "--broker", f"sqlite:///{db}", "--scenario", "drain", "--results"),
            *("--tasks", "30000", "-P", "prefork", "-c", "2", "--timeout", "200"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None and len(workers) < 3:
            workers = _worker_pids(proc.pid)
            time.sleep(0.05)
        time.sleep(0.5)  # consuming by now
        assert proc.poll() is None, proc.communicate()[0]
        seen = set(_worker_pids(proc.pid))
        assert len(seen) >= 3, seen
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, output
        for pid in seen:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"worker process {pid} is still running"
        assert sqlite_rows(db) == {"messages": 0, "results": 0, "dead_letters": 0}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "kafka://localhost"], "supported schemes"),
        (["--broker", "amqp://guest@localhost//"], "needs --backend"),
        (["--broker", "not a url"], "is not a URL"),
        (["--tasks", "0"], "0 is not in the range x>=1"),
        (["--scenario", "bogus"], "'bogus' is not one of"),
        (["--payload-bytes", "10000000"], "--payload-bytes"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bench_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_bench(tmp_path, *args, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = run_bench(tmp_path, "--broker", url, "--tasks", "10", timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and "127.0.0.1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_plot_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    proc = run_bench(tmp_path, "--tasks", "100", "--roundtrips", "10", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib_says_how_to_install_it(tmp_path: Path) -> None:
    # matplotlib made unimportable (None in sys.modules) in the CLI's own process.
    code = "import sys; sys.modules['matplotlib'] = None; from rqueue.cli import main; sys.argv[0] = 'rqueue'; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "bench", "--tasks", "10", "--plot", str(tmp_path / "x.png")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "pip install 'rqueue[plot]'" in proc.stderr
    assert "rqueue bench" not in proc.stdout  # it failed before starting anything


def test_bench_help_says_where_the_default_broker_is(tmp_path: Path) -> None:
    proc = subprocess.run([*rqueue_cmd(), "bench", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "temporary SQLite file" in " ".join(proc.stdout.split())
    for option in ("--broker", "--tasks", "--workers", "--concurrency", "--payload-bytes", "--results", "--json"):
        assert option in proc.stdout


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert stats.percentile(samples, 50) == 50.0
    assert stats.percentile(samples, 99) == 99.0
    assert stats.percentile(samples, 100) == 100.0
    assert stats.percentile([7.0], 95) == 7.0
    assert math.isnan(stats.percentile([], 50))


def test_median_spread_of_repetitions() -> None:
    summary = stats.median_spread([10.0, 12.0, 8.0])
    assert summary == {"median": 10.0, "min": 8.0, "max": 12.0, "spread": 0.4, "n": 3}


def test_table_shows_n_a_for_unreadable_figures() -> None:
    text = table([{"label": "drain", "tasks": 5, "seconds": 1.0, "tasks_s": 5.0, "broker_cpu_pct": None}])
    header, rule, line = text.splitlines()
    assert header.split()[:4] == ["scenario", "tasks", "timed", "s"]
    assert set(rule) <= {"-", " "}
    assert line.split()[:4] == ["drain", "5", "1.00", "5"] and "n/a" in line


@pytest.mark.skipif(not procstat.available(), reason="Linux /proc")
def test_procstat_reads_this_process() -> None:
    me = os.getpid()
    assert procstat.tree(me)[0] == me
    cpu = procstat.cpu_seconds(me)
    assert cpu is not None and cpu > 0
    rss = procstat.peak_rss_bytes(me)
    assert rss is not None and rss > 1 << 20
    assert procstat.cpu_seconds(2**22 + 12345) is None  # no such process
