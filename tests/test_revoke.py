"""Revoking tasks and expiry: a revoked or expired task is recorded REVOKED and never runs."""

from __future__ import annotations

import json
import time

import pytest

from conftest import Project
from rqueue.exceptions import TaskRevokedError


def test_revoked_before_start_is_recorded_revoked_and_not_run(project: Project) -> None:
    tasks = project.app()
    doomed = tasks.record.delay("doomed")
    doomed.revoke()
    worker = project.start_worker("-c", "1")
    with pytest.raises(TaskRevokedError, match="revoked"):
        doomed.get(timeout=30)
    assert doomed.state == "REVOKED"
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    assert project.ledger_count("doomed") == 0
    assert f"Discarding revoked task tasks.record[{doomed.id}]" in worker.log_text()


def test_cli_revoke_with_no_live_worker_says_it_is_stored(project: Project) -> None:
    tasks = project.app()
    doomed = tasks.record.delay("offline")
    said = project.run_cli("-A", "tasks", "control", "revoke", doomed.id, "--timeout", "0.5")
    assert said.returncode == 0, said.stderr
    assert f"Revoked {doomed.id}: stored in the broker; no live worker replied" in said.stdout
    project.start_worker("-c", "1")
    with pytest.raises(TaskRevokedError):
        doomed.get(timeout=30)
    assert project.ledger_count("offline") == 0


def test_revoke_reaches_a_running_worker(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    doomed = tasks.record.apply_async(("late",), countdown=2)
    tasks.app.control.revoke(doomed.id)
    with pytest.raises(TaskRevokedError):
        doomed.get(timeout=30)
    assert project.ledger_count("late") == 0


def test_expired_task_is_revoked_not_run(project: Project) -> None:
    tasks = project.app()
    stale = tasks.record.apply_async(("stale",), expires=0.05)
    time.sleep(0.2)
    project.start_worker("-c", "1")
    with pytest.raises(TaskRevokedError, match="expired"):
        stale.get(timeout=30)
    assert project.ledger_count("stale") == 0


def test_statedb_keeps_revoked_ids_across_brokers_and_restarts(project: Project) -> None:
    tasks = project.app()
    statedb = project.root / "worker.state"
    worker = project.start_worker("-c", "1", "--statedb", str(statedb))
    tasks.app.control.revoke("revoked-id")
    time.sleep(1.5)  # the worker reads revocations about once a second
    assert worker.stop() == 0
    assert "revoked-id" in json.loads(statedb.read_text())["revoked"]

    # A new, empty broker file knows nothing of the revocation: only the state file does.
    project.switch_to_empty_broker()
    tasks = project.app()
    project.start_worker("-c", "1", "--statedb", str(statedb))
    skipped = tasks.record.apply_async(("again",), task_id="revoked-id")
    with pytest.raises(TaskRevokedError):
        skipped.get(timeout=30)
    assert project.ledger_count("again") == 0
