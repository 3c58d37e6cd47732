"""Reject and Ignore raised from inside a task."""

from __future__ import annotations

import time

import pytest

from conftest import Project
from rqueue.exceptions import Reject


def test_reject_dead_letters_the_message_with_reason_rejected(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    rejected = tasks.reject_me.delay(False)
    worker.wait_for_log(f"Message {rejected.id} from queue 'celery' dead-lettered (rejected): not for us")
    assert [d.reason for d in tasks.app.broker.dead_letters("celery")] == ["rejected"]
    assert rejected.state == "FAILURE"  # as Celery stores it: the client does not wait forever
    assert tasks.add.delay(1, 1).get(timeout=30) == 2


def test_ignore_acks_without_recording_a_state(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    ignored = tasks.ignore_me.delay("ignored")
    worker.wait_for_log(f"Task tasks.ignore_me[{ignored.id}] ignored")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2  # the ignored one was acked before this ran
    time.sleep(0.1)
    assert ignored.state == "PENDING"
    assert tasks.app.broker.queue_length("celery") == 0
    assert project.ledger_count("ignored") == 1


def test_reject_with_requeue_is_counted_then_dead_lettered(broker_project: Project) -> None:
    tasks = broker_project.app()
    broker_project.start_worker("-c", "1")
    rejected = tasks.reject_me.delay(True)
    with pytest.raises(Reject, match=r"rejected with requeue 5 times \(not for us\)"):
        rejected.get(timeout=60)
    deadline = time.monotonic() + 10  # the FAILURE is stored just before the move aside
    while not tasks.app.broker.dead_letters("celery") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [d.reason for d in tasks.app.broker.dead_letters("celery")] == ["rejected"]
    assert tasks.add.delay(1, 1).get(timeout=30) == 2


def test_get_inside_a_task_is_refused_unless_allowed(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2", "-O", "fair")  # the waiting child holds nothing the other needs
    refused = tasks.waits_for_subtask.delay("plain")
    with pytest.raises(RuntimeError, match=r"Never call result.get\(\) within a task!"):
        refused.get(timeout=30)
    assert tasks.waits_for_subtask.delay("disabled").get(timeout=30) == 5
    assert tasks.waits_for_subtask.delay("allowed").get(timeout=30) == 5
    assert tasks.add.delay(1, 1).get(timeout=30) == 2  # outside a task, as always
