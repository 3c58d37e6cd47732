"""The walkthrough (first-steps §4-§6, §9) with real workers started through the CLI on SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import Project
from rqueue.exceptions import TimeoutError


def test_worker_banner_lists_transport_concurrency_queues_and_tasks(project: Project) -> None:
    worker = project.start_worker("-c", "1")
    worker.stop()
    out = worker.output()
    assert "tasks.add" in out and "[tasks]" in out and "[queues]" in out
    assert f"transport:   {project.broker_url}" in out and "concurrency: 1 (prefork)" in out


def test_delay_get_returns_the_sum(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    result = tasks.add.delay(4, 4)
    assert result.get(timeout=30) == 8
    assert result.state == "SUCCESS" and result.successful()


def test_ready_is_false_until_the_task_ran(project: Project) -> None:
    tasks = project.app()
    result = tasks.add.delay(1, 2)
    assert result.ready() is False and result.state == "PENDING"
    project.start_worker("-c", "1")
    assert result.get(timeout=30) == 3
    assert result.ready() is True


def test_worker_logs_received_and_succeeded_with_id_and_runtime(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.add.delay(2, 2)
    result.get(timeout=30)
    worker.wait_for_log(f"Task tasks.add[{result.id}] succeeded in")
    assert f"Task tasks.add[{result.id}] received" in worker.log_text()


def test_exception_propagates_with_type_message_and_traceback(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    result = tasks.fail.delay("boom")
    with pytest.raises(tasks.CustomError, match="boom"):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    assert result.traceback is not None and "CustomError: boom" in result.traceback
    returned = result.get(propagate=False)
    assert isinstance(returned, tasks.CustomError) and str(returned) == "boom"
    with pytest.raises(KeyError, match="nope"):
        tasks.fail_builtin.delay("nope").get(timeout=30)


def test_get_timeout_while_task_runs(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    result = tasks.sleep.delay(2)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)
    assert result.get(timeout=30) == 2


def test_ignore_result_stores_nothing(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.ignored.delay(5)
    worker.wait_for_log(f"Task tasks.ignored[{result.id}] succeeded")
    assert tasks.app.AsyncResult(result.id).state == "PENDING"


def test_bound_task_sees_its_request(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    result = tasks.whoami.delay()
    info = result.get(timeout=30)
    assert info["id"] == result.id and info["task"] == "tasks.whoami" and info["hostname"].startswith("rqueue@")


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_other_pools_run_tasks(project: Project, pool: str) -> None:
    tasks = project.app()
    project.start_worker("--pool", pool, "-c", "2")
    assert [r.get(timeout=30) for r in [tasks.add.delay(i, i) for i in range(10)]] == [2 * i for i in range(10)]


def test_unknown_task_is_dead_lettered_and_worker_continues(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    ghost = tasks.app.send_task("tasks.ghost", [1])
    with pytest.raises(Exception, match="not registered"):
        ghost.get(timeout=30)
    assert ghost.state == "FAILURE"
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    assert "unregistered task tasks.ghost" in worker.log_text()
    dead = tasks.app.broker.dead_letters("celery")
    assert [(d.queue, d.reason) for d in dead] == [("celery", "unregistered")]


def test_content_type_not_accepted_is_refused_before_decoding(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    producer = tasks.app
    producer.conf.accept_content = ["json", "msgpack"]
    refused = producer.send_task("tasks.add", [1, 2], serializer="msgpack")
    worker.wait_for_log(f"Message {refused.id} from queue 'celery' dead-lettered (content_disallowed)")
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    dead = producer.broker.dead_letters("celery")
    assert [d.reason for d in dead] == ["content_disallowed"]


def test_config_module_upper_case_names_reach_the_worker(project: Project) -> None:
    (project.root / "oldconfig.py").write_text(
        "CELERY_TASK_SERIALIZER = 'msgpack'\nCELERY_ACCEPT_CONTENT = ['json', 'msgpack']\n"
    )
    env = project.env
    env["TEST_CONFIG_MODULE"] = "oldconfig"
    check = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import tasks; print(tasks.app.conf.task_serializer)"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.stdout.strip() == "msgpack"
    assert check.stderr.count("DeprecationWarning") == 2


def test_pidfile_not_writable_refuses_to_start(project: Project) -> None:
    result = project.run_cli("-A", "tasks", "worker", "--pidfile", "/nonexistent-dir/w.pid")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "pidfile /nonexistent-dir/w.pid is not writable" in lines[0]


def test_pidfile_held_by_a_live_worker_refuses_a_second(project: Project) -> None:
    pidfile = project.root / "w.pid"
    first = project.start_worker("-c", "1", "--pidfile", str(pidfile))
    assert pidfile.read_text().strip() == str(first.proc.pid)
    second = project.run_cli("-A", "tasks", "worker", "--pidfile", str(pidfile))
    assert second.returncode != 0
    assert f"held by a running worker (pid {first.proc.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.stop() == 0
    assert not pidfile.exists()


def test_pidfile_that_is_a_symlink_is_refused_and_its_target_untouched(project: Project) -> None:
    target = project.root / "precious.txt"
    target.write_text("do not truncate me\n")
    pidfile = project.root / "w.pid"
    pidfile.symlink_to(target)
    result = project.run_cli("-A", "tasks", "worker", "--pidfile", str(pidfile))
    assert result.returncode != 0
    assert "is a symbolic link; refusing to use it" in result.stderr and "Traceback" not in result.stderr
    assert target.read_text() == "do not truncate me\n"
    dangling = project.root / "dangling.pid"
    dangling.symlink_to(project.root / "created-by-nobody")
    result = project.run_cli("-A", "tasks", "worker", "--pidfile", str(dangling))
    assert result.returncode != 0 and "symbolic link" in result.stderr
    assert not (project.root / "created-by-nobody").exists()


def test_stale_pidfile_is_taken_over(project: Project) -> None:
    pidfile = project.root / "w.pid"
    pidfile.write_text("999999\n")
    worker = project.start_worker("-c", "1", "--pidfile", str(pidfile))
    assert pidfile.read_text().strip() == str(worker.proc.pid)


def test_warm_shutdown_finishes_running_and_returns_unstarted(project: Project) -> None:
    tasks = project.app()
    tasks.app.conf.worker_prefetch_multiplier = 4
    worker = project.start_worker("-c", "1", "--prefetch-multiplier", "4")
    running = tasks.sleep.delay(1.5, key="running")
    queued = [tasks.sleep.delay(0.01, key=f"queued-{i}") for i in range(3)]
    worker.wait_for_log(f"Task tasks.sleep[{running.id}] received")
    started = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - started < 10
    assert running.get(timeout=1) == 1.5
    assert tasks.app.broker.queue_length("celery") == 3  # the unstarted went back, none was lost
    assert project.ledger_count("running") == 1
    project.start_worker("-c", "1")
    assert [r.get(timeout=30) for r in queued] == [0.01] * 3


def test_killed_child_is_replaced_and_its_task_runs_again(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.die_once.delay("victim")
    assert result.get(timeout=60) == "survived"
    assert project.ledger_count("victim") == 2
    assert "exited (signal 9)" in worker.log_text()
    assert tasks.add.delay(1, 1).get(timeout=30) == 2


def test_sigkilled_child_during_long_task_runs_it_again(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.sleep.delay(1.0, key="long")
    worker.wait_for_log(f"Task tasks.sleep[{result.id}] received")
    (child,) = worker.child_pids()
    os.kill(child, signal.SIGKILL)
    assert result.get(timeout=60) == 1.0
    assert project.ledger_count("long") == 1  # the killed run never reached the ledger


@pytest.mark.slow
def test_four_producers_of_500_tasks_against_one_worker(project: Project) -> None:
    project.start_worker("-c", "2", "--prefetch-multiplier", "16")
    script = textwrap.dedent("""
        import sys, tasks
        base = int(sys.argv[1])
        results = [tasks.add.delay(base + i, 1) for i in range(500)]
        bad = [(r.id, base + i) for i, r in enumerate(results) if r.get(timeout=120) != base + i + 1]
        print(len(results), len(bad))
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(p * 1000)],
            cwd=project.root,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    assert [out.split() for out, _ in outputs] == [["500", "0"]] * 4


def test_sigterm_right_after_start_is_a_clean_warm_shutdown(project: Project) -> None:
    for _ in range(3):
        worker = project.start_worker("-c", "2")
        assert worker.stop() == 0


def test_track_started_shows_started_while_running(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = project.app()
    (project.root / "trackconfig.py").write_text("task_track_started = True\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "trackconfig")
    worker = project.start_worker("-c", "1")
    result = tasks.sleep.delay(1.0)
    worker.wait_for_log(f"Task tasks.sleep[{result.id}] received")
    deadline = time.monotonic() + 10
    while result.state != "STARTED" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert result.state == "STARTED"
    assert result.get(timeout=30) == 1.0 and result.state == "SUCCESS"


def test_queues_option_consumes_only_those_queues(project: Project) -> None:
    tasks = project.app()
    tasks.app.conf.task_routes = {"tasks.add": "low-priority"}
    routed = tasks.add.delay(2, 2)
    other = tasks.record.delay("default-queue")
    worker = project.start_worker("-c", "1", "-Q", "low-priority", "-n", "w1@%h")
    assert routed.get(timeout=30) == 4
    assert other.state == "PENDING" and tasks.app.broker.queue_length("celery") == 1
    assert "w1@" in worker.log_text()


def test_second_signal_is_a_cold_shutdown_that_returns_the_running_task(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.sleep.delay(30, key="cold")
    worker.wait_for_log(f"Task tasks.sleep[{result.id}] received")
    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for_log("Warm shutdown")
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(20)
    assert time.monotonic() - started < 10
    assert tasks.app.broker.queue_length("celery") == 1  # the interrupted task is waiting again
    assert project.ledger_count("cold") == 0


@pytest.mark.parametrize(
    ("option", "per_child"), [(("--max-tasks-per-child", "3"), 3), (("--max-memory-per-child", "1"), 1)]
)
def test_prefork_children_are_replaced_after_max_tasks_or_memory(
    project: Project, option: tuple[str, str], per_child: int
) -> None:
    """Between tasks a child past its limit stops (returning what it holds) and a fresh one takes
    its place: every task runs once, on at most ``per_child`` tasks per process."""
    tasks = project.app()
    worker = project.start_worker("-c", "1", *option)
    results = [tasks.my_pid.delay(f"retire-{i}") for i in range(7)]
    pids = [r.get(timeout=60) for r in results]
    assert all(project.ledger_count(f"retire-{i}") == 1 for i in range(7))
    assert max(pids.count(pid) for pid in set(pids)) <= per_child
    assert len(set(pids)) >= -(-7 // per_child)
    log = worker.log_text()
    assert "replacing it" in log and "exited (" not in log  # retired, not reported as a failure


def test_print_in_a_task_goes_to_the_logfile(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    assert tasks.prints.delay("hello-from-print").get(timeout=30) == "hello-from-print"
    worker.wait_for_log("hello-from-print on stderr")
    lines = [line for line in worker.log_text().splitlines() if "WARNING/ForkPoolWorker-1] hello-from-print" in line]
    assert [line.split("] ", 1)[1] for line in lines] == ["hello-from-print", "hello-from-print on stderr"]
    worker.stop()
    (project.root / "quiet_settings.py").write_text("worker_redirect_stdouts = False\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "quiet_settings")
    unredirected = project.start_worker("-c", "1")
    assert tasks.prints.delay("not-in-the-log").get(timeout=30) == "not-in-the-log"
    assert "] not-in-the-log" not in unredirected.log_text()  # only its "succeeded" line names it
