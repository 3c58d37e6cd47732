"""Retries: ``self.retry()`` and ``autoretry_for`` schedule the task again through the broker."""

from __future__ import annotations

import time

import pytest

from conftest import Project


def test_retry_runs_again_with_the_retry_count_and_succeeds(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.flaky.delay("flaky", 2)
    assert result.get(timeout=30) == 2  # the third run sees two earlier retries
    assert project.ledger_count("flaky") == 3
    assert worker.log_text().count(f"Task tasks.flaky[{result.id}] retry: Retry in 0.1 s") == 2


def test_retry_past_max_retries_fails_with_the_task_exception(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    result = tasks.flaky.delay("gives-up", 10)
    with pytest.raises(ValueError, match="attempt 2 failed"):
        result.get(timeout=30)
    assert project.ledger_count("gives-up") == 3  # the first run and max_retries=2 retries


def test_autoretry_for_retries_with_backoff_then_fails(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.always_down.delay("down")
    with pytest.raises(ConnectionError, match="service down"):
        result.get(timeout=30)
    assert project.ledger_count("down") == 4  # the first run and 3 retries
    log = worker.log_text()
    for delay in ("0.05", "0.1", "0.2"):  # retry_backoff=0.05 doubling, no jitter
        assert f"retry: Retry in {delay} s" in log


def test_retry_state_is_recorded_and_the_retry_waits_in_the_broker(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.retry_later.delay()
    worker.wait_for_log(f"Task tasks.retry_later[{result.id}] retry: Retry in 3600 s")
    deadline = time.monotonic() + 10  # the state is written right after the log line
    while result.state != "RETRY" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert result.state == "RETRY"
    assert isinstance(result.result, ValueError) and str(result.result) == "not yet"
    assert tasks.app.broker.queue_length("celery") == 1  # scheduled, not held by the worker
