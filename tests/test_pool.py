"""The prefork pool's operations through real workers: soft shutdown, the final stop line, idle stop
time, pool_grow / pool_shrink / autoscale (rqueue's CLI and Celery's) and ``--autoscale``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Project

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _config(project: Project, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
    """Settings for the project's workers, through the test app's TEST_CONFIG_MODULE."""
    body = "".join(f"{name} = {value!r}\n" for name, value in settings.items())
    (project.root / "poolconf.py").write_text(body)
    monkeypatch.setenv("TEST_CONFIG_MODULE", "poolconf")


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- soft shutdown ----------------------------------------------------------------------------------


def test_soft_shutdown_returns_a_long_task_which_runs_again_on_another_worker(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_deliveries 1: the message must go back uncounted (the task did not kill its worker).
    _config(project, monkeypatch, worker_soft_shutdown_timeout=2, broker_max_deliveries=1)
    first = project.start_worker("-c", "1")
    result = project.app().slow_first.delay("long", 60)
    _wait(lambda: project.ledger_count("long") == 1, 30, "the task started")
    started = time.monotonic()
    assert first.stop(signal.SIGTERM, timeout=20) == 0
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 10, f"stopped after {elapsed:.1f} s with a 2 s soft shutdown timeout"
    log = first.log_text()
    assert "Soft shutdown timeout (2s) passed with 1 task(s) still running" in log
    assert "cold shutdown" in _last_line(log) and "1 message(s) of running tasks went back" in _last_line(log)

    # Back in the queue at once (not after the 60 s visibility timeout): a second worker runs it.
    monkeypatch.delenv("TEST_CONFIG_MODULE")
    project.start_worker("-c", "1")
    assert result.get(timeout=15) == "done"
    assert project.ledger_count("long") == 2


def test_soft_shutdown_lets_a_task_finishing_in_time_complete_and_acks_it_once(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(project, monkeypatch, worker_soft_shutdown_timeout=10)
    first = project.start_worker("-c", "1")
    result = project.app().slow_first.delay("short", 1.5)
    _wait(lambda: project.ledger_count("short") == 1, 30, "the task started")
    started = time.monotonic()
    assert first.stop(signal.SIGTERM, timeout=20) == 0
    assert time.monotonic() - started < 8  # it did not wait the 10 s out
    assert result.get(timeout=5) == "done"
    assert "stopped: warm shutdown" in _last_line(first.log_text())

    second = project.start_worker("-c", "1")
    time.sleep(2)
    assert project.ledger_count("short") == 1  # acked: not delivered again
    second.stop()


def test_warm_shutdown_gives_back_a_busy_childs_prefetched_messages_at_once(project: Project) -> None:
    first = project.start_worker("-c", "1")
    tasks = project.app()
    long = tasks.slow_first.delay("busy", 15)  # outlasts a second worker's start on a loaded machine
    _wait(lambda: project.ledger_count("busy") == 1, 30, "the long task started")
    # In one batch: the buffer refills at half its capacity, so messages arriving one by one
    # would not all be prefetched by a child whose one slot is busy.
    quick = tasks.record.delay_many([(f"q{i}",) for i in range(3)])
    _wait(lambda: tasks.app.broker.queue_length("celery") == 0, 10, "the child prefetched the quick tasks")
    first.proc.send_signal(signal.SIGTERM)
    # Another worker runs them while the long task still runs on the first (not after it).
    project.start_worker("-c", "1")
    assert [r.get(timeout=5) for r in quick] == [1, 1, 1]
    assert first.proc.poll() is None
    assert first.proc.wait(30) == 0  # the long task finished there
    assert long.get(timeout=5) == "done"
    assert project.ledger_count("busy") == 1


def test_idle_prefork_worker_stops_within_a_second(project: Project) -> None:
    worker = project.start_worker("-c", "2")
    time.sleep(1)
    started = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=20) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"an idle prefork worker took {elapsed:.2f} s to stop"
    assert _last_line(worker.log_text()).endswith("stopped: warm shutdown; every running task finished")


def test_second_signal_is_a_cold_shutdown_reported_in_the_final_line(project: Project) -> None:
    worker = project.start_worker("-c", "1")
    result = project.app().slow_first.delay("cold", 60)
    _wait(lambda: project.ledger_count("cold") == 1, 30, "the task started")
    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for_log("Warm shutdown")
    assert worker.stop(signal.SIGTERM, timeout=10) == 0
    last = _last_line(worker.log_text())
    assert "cold shutdown (signal received during the warm shutdown)" in last
    assert "1 message(s) of running tasks went back to the queue" in last
    project.start_worker("-c", "1")
    assert result.get(timeout=15) == "done"


def test_soft_shutdown_of_a_threads_worker_returns_its_running_task(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(project, monkeypatch, worker_soft_shutdown_timeout=2)
    first = project.start_worker("-P", "threads", "-c", "1")
    result = project.app().slow_first.delay("threads", 60)
    _wait(lambda: project.ledger_count("threads") == 1, 30, "the task started")
    started = time.monotonic()
    first.stop(signal.SIGTERM, timeout=20)
    assert time.monotonic() - started < 10
    monkeypatch.delenv("TEST_CONFIG_MODULE")
    project.start_worker("-c", "1")
    assert result.get(timeout=15) == "done"


def test_soft_shutdown_on_idle_waits_the_timeout_out(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(project, monkeypatch, worker_soft_shutdown_timeout=2, worker_enable_soft_shutdown_on_idle=True)
    worker = project.start_worker("-c", "1")
    started = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=20) == 0
    assert 1.5 <= time.monotonic() - started < 10  # Celery's rule: waited even with nothing running
    assert "stopped: warm shutdown" in _last_line(worker.log_text())


# -- pool size ----------------------------------------------------------------------------------------


def _control(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return project.run_cli("-A", "tasks", "control", *args, "-d", "w1@test", "-t", "5", "--json")


def _stats_pool(project: Project) -> dict[str, Any]:
    stats = _json(project.run_cli("-A", "tasks", "inspect", "stats", "-d", "w1@test", "-t", "5", "--json"))
    pool: dict[str, Any] = stats["w1@test"]["pool"]
    return pool


def test_pool_grow_and_shrink_resize_a_fixed_prefork_pool(project: Project) -> None:
    worker = project.start_worker("-c", "1", "-n", "w1@test")
    assert _json(_control(project, "pool_grow", "2")) == {"w1@test": {"ok": "pool will grow"}}
    _wait(lambda: len(worker.child_pids()) == 3, 10, "three children")
    pool = _stats_pool(project)
    assert pool["max-concurrency"] == 3 and len(pool["processes"]) == 3

    assert _json(_control(project, "pool_shrink", "2")) == {"w1@test": {"ok": "pool will shrink"}}
    _wait(lambda: len(worker.child_pids()) == 1, 10, "one child")
    assert _stats_pool(project)["max-concurrency"] == 1
    assert project.app().add.delay(2, 3).get(timeout=10) == 5  # the one left still works


def test_pool_resize_refuses_bad_input(project: Project) -> None:
    worker = project.start_worker("-c", "1", "-n", "w1@test")
    done = _control(project, "pool_shrink", "1")
    assert done.returncode == 1
    assert "at least one must stay" in json.loads(done.stdout)["w1@test"]["error"]
    done = _control(project, "autoscale", "3", "1")
    assert done.returncode == 1 and "autoscale is not enabled" in done.stdout
    for bad in (["pool_shrink", "0"], ["pool_grow", "two"], ["autoscale", "1", "3"]):
        done = _control(project, *bad)
        assert done.returncode == 2, done.stdout
        assert "Invalid value" in done.stderr, done.stderr
    assert len(worker.child_pids()) == 1


def test_autoscale_option_is_checked(project: Project) -> None:
    for bad in ("1,3", "x,1", "0"):
        done = project.run_cli("-A", "tasks", "worker", f"--autoscale={bad}", timeout=20)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "worker_autoscale" in done.stderr


def test_autoscale_grows_with_waiting_work_and_shrinks_after_keepalive(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(project, monkeypatch, worker_autoscale_keepalive_s=2)
    worker = project.start_worker("--autoscale=3,1", "-O", "fair", "-n", "w1@test")
    pool = _stats_pool(project)
    assert pool["max-concurrency"] == 1 and pool["autoscaler"] == {"max": 3, "min": 1, "qty": 1}
    tasks = project.app()
    results = [tasks.sleep.delay(4, key=f"k{i}") for i in range(3)]
    _wait(lambda: len(worker.child_pids()) == 3, 8, "grown to three children")
    assert [r.get(timeout=20) for r in results] == [4, 4, 4]
    _wait(lambda: len(worker.child_pids()) == 1, 15, "shrunk back to one child")
    assert "Pool grew by" in worker.log_text()

    # pool_grow/pool_shrink are refused while autoscaling (Celery's reply); autoscale moves the range.
    done = _control(project, "pool_grow", "1")
    assert done.returncode == 1 and "not supported with autoscale" in done.stdout
    reply = _json(_control(project, "autoscale", "4", "2"))
    assert reply == {"w1@test": {"ok": "autoscale now max=4 min=2"}}
    _wait(lambda: len(worker.child_pids()) == 2, 10, "grown to the new minimum")
    assert _stats_pool(project)["autoscaler"] == {"max": 4, "min": 2, "qty": 2}


def test_celery_control_cli_resizes_an_rqueue_pool(tmp_path: Path, redis_url: str) -> None:
    """Celery reaches rqueue workers over Redis (kombu's pidbox)."""
    project = Project(tmp_path, "redis", redis_url)
    try:
        _celery_resizes(project, tmp_path)
    finally:
        project.close()


def _celery_resizes(project: Project, tmp_path: Path) -> None:
    worker = project.start_worker("-c", "1", "-n", "w1@test")
    (tmp_path / "capp.py").write_text(f"import celery\napp = celery.Celery('capp', broker={project.broker_url!r})\n")
    celery_cli = [sys.executable, "-m", "celery", "-A", "capp", "control"]

    def celery(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [*celery_cli, *args, "-d", "w1@test", "--timeout", "5"]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    done = celery("pool_grow", "1")
    assert "pool will grow" in done.stdout, done.stdout + done.stderr
    _wait(lambda: len(worker.child_pids()) == 2, 10, "two children")
    done = celery("pool_shrink", "1")
    assert "pool will shrink" in done.stdout, done.stdout + done.stderr
    _wait(lambda: len(worker.child_pids()) == 1, 10, "one child")
    done = celery("autoscale", "3", "1")
    assert "autoscale is not enabled" in done.stdout + done.stderr
