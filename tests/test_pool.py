"""The prefork pool's operations through real workers: soft shutdown, the final stop line, idle stop
time."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
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
    _config(project, monkeypatch, worker_soft_shutdown_timeout=2)
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
