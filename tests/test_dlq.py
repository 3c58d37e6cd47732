"""``rqueue dlq``: list, show, requeue and purge dead letters, on every broker."""

from __future__ import annotations

import time

from conftest import Project


def dead_letter_a_ghost(project: Project) -> tuple[str, str]:
    """Send a task no worker knows; returns (task id, dead-letter id) once the worker dead-lettered it."""
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    ghost = tasks.app.send_task("tasks.ghost", [1])
    worker.wait_for_log(f"Received unregistered task tasks.ghost[{ghost.id}]")
    deadline = time.monotonic() + 10
    while not tasks.app.broker.dead_letters("celery") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.stop() == 0
    (dead,) = tasks.app.broker.dead_letters("celery")
    return ghost.id, dead.id


def test_dlq_list_show_and_purge(broker_project: Project) -> None:
    task_id, dead_id = dead_letter_a_ghost(broker_project)
    listed = broker_project.run_cli("-A", "tasks", "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.startswith(f"{dead_id}\tunregistered\t1\t") and line.endswith(f"tasks.ghost[{task_id}]")
    shown = broker_project.run_cli("-A", "tasks", "dlq", "show", dead_id)
    assert "reason:      unregistered" in shown.stdout and "is not registered" in shown.stdout
    assert task_id in shown.stdout  # the original message follows
    purged = broker_project.run_cli("-A", "tasks", "dlq", "purge", "-f")
    assert purged.stdout.strip() == "Purged 1 dead letter from celery."


def test_dlq_requeue_puts_the_message_back_and_purge_empties(broker_project: Project) -> None:
    _, dead_id = dead_letter_a_ghost(broker_project)
    tasks = broker_project.app()
    requeued = broker_project.run_cli("-A", "tasks", "dlq", "requeue", dead_id)
    assert requeued.stdout.strip() == "Requeued 1 dead letter to celery."
    assert tasks.app.broker.queue_length("celery") == 1 and tasks.app.broker.dead_letters("celery") == []
    assert (
        broker_project.run_cli("-A", "tasks", "dlq", "purge", "-f").stdout.strip()
        == "Purged 0 dead letters from celery."
    )


def test_dlq_bad_input_is_one_clear_line(broker_project: Project) -> None:
    shown = broker_project.run_cli("-A", "tasks", "dlq", "show", "nope")
    assert shown.returncode == 1 and shown.stderr.startswith("Error: no dead letter 'nope' in queue 'celery'")
    assert len(shown.stderr.splitlines()) == 1
    nothing = broker_project.run_cli("-A", "tasks", "dlq", "requeue")
    assert nothing.returncode == 2 and "pass --all" in nothing.stderr
