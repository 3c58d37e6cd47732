"""Reject and Ignore raised from inside a task."""

from __future__ import annotations

import time

from conftest import Project


def test_reject_dead_letters_the_message_with_reason_rejected(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    rejected = tasks.reject_me.delay(False)
    worker.wait_for_log(f"Message {rejected.id} from queue 'celery' dead-lettered (rejected): not for us")
    assert [d.reason for d in tasks.app.broker.dead_letters("celery")] == ["rejected"]
    assert rejected.state == "PENDING"  # no outcome recorded: the message is in the dead-letter store
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
