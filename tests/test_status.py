"""``rqueue status`` and the duplicate node name warning, with real workers on SQLite and Redis."""

from __future__ import annotations

import json

from conftest import Project


def test_status_lists_each_worker_and_the_count(project: Project) -> None:
    project.start_worker("-c", "1", "-n", "w1@test")
    project.start_worker("-c", "1", "-n", "w2@test", "-P", "threads")
    done = project.run_cli("-A", "tasks", "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "->  w1@test: OK\n->  w2@test: OK\n\n2 nodes online.\n"


def test_status_destination_and_json(project: Project) -> None:
    project.start_worker("-c", "1", "-n", "w1@test")
    project.start_worker("-c", "1", "-n", "w2@test")
    done = project.run_cli("-A", "tasks", "status", "-d", "w2@test", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"w2@test": {"ok": "pong"}}  # stdout is the JSON alone
    assert "1 node online." in done.stderr


def test_status_with_no_worker_fails_like_celery(project: Project) -> None:
    done = project.run_cli("-A", "tasks", "status", "--timeout", "0.3")
    assert done.returncode == 69  # EX_UNAVAILABLE, as celery status
    assert done.stderr.startswith("Error: No nodes replied within time constraint (0.3 s)")
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_status_bad_timeout_is_a_usage_error(project: Project) -> None:
    done = project.run_cli("-A", "tasks", "status", "--timeout", "-1")
    assert done.returncode == 2 and "Invalid value for '-t' / '--timeout'" in done.stderr


def test_second_worker_with_the_same_name_is_warned_at_start(project: Project) -> None:
    first = project.start_worker("-c", "1", "-n", "same@test")
    other = project.start_worker("-c", "1", "-n", "other@test")
    second = project.start_worker("-c", "1", "-n", "same@test", "-P", "threads")
    warning = (
        "DuplicateNodenameWarning: Received multiple replies from node name: same@test. "
        "Please make sure you give each node a unique nodename using the rqueue worker `-n` option."
    )
    second.wait_for_log(warning, timeout=15)
    assert "DuplicateNodenameWarning" not in first.log_text() + other.log_text()
    status = project.run_cli("-A", "tasks", "status")
    assert "Received multiple replies from node name: same@test" in status.stderr
    assert status.stdout.count("->  same@test: OK") == 1
    inspect = project.run_cli("-A", "tasks", "inspect", "ping")
    assert "Received multiple replies from node name: same@test" in inspect.stderr


def test_a_lone_worker_is_not_warned(project: Project) -> None:
    import time

    worker = project.start_worker("-c", "1", "-n", "alone@test")
    time.sleep(2.5)  # past the probe's wait
    assert "DuplicateNodenameWarning" not in worker.log_text()
    worker.stop()
    restarted = project.start_worker("-c", "1", "-n", "alone@test")  # the same name, the first one gone
    time.sleep(2.5)
    assert "DuplicateNodenameWarning" not in restarted.log_text()
