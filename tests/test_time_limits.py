"""Time limits with real workers on SQLite and Redis: the soft limit raises in the task, the hard
limit kills the prefork child, records FAILURE(TimeLimitExceeded) and acks the message; per-call
limits and Celery's ``timelimit`` header win over the task's options; ``PreforkPool.terminate``
and ``set_time_limit`` driven in a real supervisor process."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest

from conftest import Project
from rqueue import _rqueue
from rqueue.brokers.base import owner_id
from rqueue.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

HARD_LIMIT_LOG = "Hard time limit (1s) exceeded for tasks.hard_limited[{}]"


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def publish_with_timelimit(project: Project, task: str, args: list[Any], timelimit: list[float | None]) -> str:
    """Publish a message whose ``timelimit`` header is set as a Celery producer sets it: [hard, soft]."""
    task_id = str(uuid.uuid4())
    raw = _rqueue.encode_task_message(task=task, task_id=task_id, args=args, kwargs={}, routing_key="celery")
    envelope = json.loads(raw)
    envelope["headers"]["timelimit"] = timelimit
    project.app().app.broker.publish("celery", json.dumps(envelope).encode())
    return task_id


# -- soft limit ----------------------------------------------------------------------------------------


def test_soft_time_limit_caught_by_the_task_lets_it_return(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    result = tasks.soft_limited.delay(30, "soft-caught")
    assert result.get(timeout=20) == "caught: soft time limit (0.5s) exceeded"
    assert project.ledger_count("soft-caught") == 1


def test_soft_time_limit_not_caught_fails_the_task_and_the_child_goes_on(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    result = tasks.soft_limited_uncaught.delay(30, "soft-uncaught")
    with pytest.raises(SoftTimeLimitExceeded, match=r"soft time limit \(0.5s\) exceeded"):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    worker.wait_for_log("Soft time limit (0.5s) exceeded for tasks.soft_limited_uncaught")
    pid = tasks.my_pid.delay("after-soft").get(timeout=20)
    assert worker.child_pids() == [pid]  # the same child ran the next task: nothing was killed
    assert "Child process" not in worker.log_text()


def test_a_task_id_too_long_for_the_slot_runs_without_time_limits_and_keeps_its_id(project: Project) -> None:
    """The supervisor records a killed task's outcome under the id it reads from the slot: an id it
    cannot hold whole is never written there cut (its limits are not enforced; a warning says so)."""
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    long_id = "long-" + "x" * 300
    result = tasks.hard_limited.apply_async((0.2, "long-id"), task_id=long_id)  # time_limit=1 on the task
    assert result.get(timeout=30) == 0.2
    assert result.state == "SUCCESS"
    worker.wait_for_log("its id or name is over 255 bytes; its time limits are not enforced")
    assert tasks.add.delay(1, 2).get(timeout=30) == 3


def test_solo_pool_soft_limit_interrupts_a_blocking_sleep(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-P", "solo")
    started = time.monotonic()
    result = tasks.sleep.apply_async((60,), soft_time_limit=0.5)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=30)
    assert time.monotonic() - started < 30  # a 60 s sleep was cut short
    assert tasks.add.delay(1, 2).get(timeout=20) == 3


def test_threads_pool_enforces_the_soft_limit_and_warns_about_the_hard_one(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-P", "threads", "-c", "2")
    caught = tasks.soft_limited.delay(30, "threads-caught")
    uncaught = tasks.soft_limited_uncaught.delay(30, "threads-uncaught")
    assert caught.get(timeout=20) == "caught: soft time limit exceeded"  # raised by class in a thread
    with pytest.raises(SoftTimeLimitExceeded, match=r"\(0.5s\)"):  # the stored failure names the limit
        uncaught.get(timeout=20)
    assert "Task tasks.hard_limited sets time_limit, which the threads pool does not enforce" in worker.log_text()
    assert tasks.add.delay(2, 2).get(timeout=20) == 4


def test_solo_pool_warns_once_that_a_global_hard_limit_is_not_enforced(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.root / "solohard.py").write_text("task_time_limit = 5\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "solohard")
    project.app()
    text = project.start_worker("-P", "solo").log_text()
    assert text.count("task_time_limit is set, but the solo pool does not enforce hard time limits") == 1
    assert "Task tasks.add sets time_limit" not in text  # the global one, said once above
    assert "Task tasks.hard_limited sets time_limit, which the solo pool does not enforce" in text


# -- hard limit ----------------------------------------------------------------------------------------


def test_hard_time_limit_kills_the_child_fails_the_task_and_acks_its_message(project: Project) -> None:
    tasks = project.app()
    worker = project.start_worker("-c", "1", "--prefetch-multiplier", "4")
    (first_child,) = worker.child_pids()
    killed = tasks.hard_limited.delay(30, "hard")
    behind = [tasks.my_pid.delay(f"behind-{i}") for i in range(3)]  # prefetched by the same child
    with pytest.raises(TimeLimitExceeded, match=r"hard time limit \(1s\) exceeded"):
        killed.get(timeout=30)
    assert killed.state == "FAILURE"
    pids = {r.get(timeout=30) for r in behind}
    assert first_child not in pids and len(pids) == 1  # a new child ran the rest
    worker.wait_for_log(HARD_LIMIT_LOG.format(killed.id))
    worker.wait_for_log(f"Child process {first_child} killed (hard time limit of tasks.hard_limited")
    # Acked, not returned: no redelivery, no lease left, not counted towards dead-lettering.
    broker = tasks.app.broker
    assert broker.leased_tags(owner_id(f"rqueue@{socket.gethostname()}", first_child)) == []
    time.sleep(1.5)
    assert project.ledger_count("hard") == 1
    assert broker.queue_length("celery") == 0 and broker.dead_letters("celery") == []
    assert [project.ledger_count(f"behind-{i}") for i in range(3)] == [1, 1, 1]


def test_per_call_time_limit_overrides_the_task_option(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    longer = tasks.hard_limited.apply_async((2, "per-call-longer"), time_limit=20)
    assert longer.get(timeout=30) == 2  # the task's own 1 s limit would have killed it
    shorter = tasks.sleep.apply_async((30,), time_limit=1)  # a task without limits
    with pytest.raises(TimeLimitExceeded):
        shorter.get(timeout=30)


def test_celery_timelimit_header_hard_first_is_honoured(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "1")
    hard_id = publish_with_timelimit(project, "tasks.sleep", [30], [1, None])
    with pytest.raises(TimeLimitExceeded):
        tasks.app.AsyncResult(hard_id).get(timeout=30)
    soft_id = publish_with_timelimit(project, "tasks.soft_limited", [30, "header-soft"], [None, 0.25])
    assert tasks.app.AsyncResult(soft_id).get(timeout=30) == "caught: soft time limit (0.25s) exceeded"


def test_global_time_limit_settings_apply_to_tasks_without_options(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.root / "globallimits.py").write_text("task_time_limit = 1\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "globallimits")
    tasks = project.app()
    project.start_worker("-c", "1")
    with pytest.raises(TimeLimitExceeded):
        tasks.sleep.delay(30).get(timeout=30)


def test_a_non_positive_per_call_time_limit_is_refused_before_sending(project: Project) -> None:
    from rqueue.exceptions import ConfigurationError

    tasks = project.app()
    with pytest.raises(ConfigurationError, match="time_limit must be a positive number of seconds"):
        tasks.sleep.apply_async((1,), time_limit=0)
    with pytest.raises(ConfigurationError, match="soft_time_limit must be a positive number"):
        tasks.sleep.apply_async((1,), soft_time_limit=-2)
    assert tasks.app.broker.queue_length("celery") == 0


# -- acks_late=False -----------------------------------------------------------------------------------


def test_acks_late_false_acks_on_receipt_so_a_task_that_kills_its_worker_is_not_run_again(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.root / "earlyack.py").write_text("task_acks_late = False\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "earlyack")
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    tasks.die_once.delay("early-ack")
    worker.wait_for_log("Child process")  # it died
    assert tasks.add.delay(1, 1).get(timeout=20) == 2  # its replacement runs
    time.sleep(1.0)
    assert project.ledger_count("early-ack") == 1  # at-most-once: the message was gone
    assert tasks.app.broker.queue_length("celery") == 0


# -- PreforkPool.terminate / set_time_limit / active, in a real supervisor ----------------------------

DRIVER = r'''
"""Runs a PreforkPool (-c 1) in this process and drives it from a thread, as remote control will."""
import json, logging, signal, sys, threading, time

import tasks
from rqueue.worker import setup_logging
from rqueue.worker.pool import PreforkPool, install_shutdown_handlers
from rqueue.worker.state import Revoked

setup_logging("info", sys.argv[1])
app = tasks.app
app.broker.prepare_consumer(["celery"], False)
pool = PreforkPool(app, ["celery"], "driver@test", 1, Revoked(app.broker))
command = json.loads(sys.argv[2])


def say(**fields):
    print(json.dumps(fields), flush=True)


def drive():
    if command.get("set_time_limit"):
        pool.set_time_limit(*command["set_time_limit"])
    say(ready=True)
    if "terminate" in command:
        deadline = time.monotonic() + 30
        while not pool.active() and time.monotonic() < deadline:
            time.sleep(0.02)
        (task,) = pool.active()
        time.sleep(max(0.0, task.started + command.get("after_s", 0.0) - time.time()))
        say(active=[task.task_id, task.name, task.args_repr, task.pid, task.soft, task.hard, task.started])
        say(unknown=pool.terminate("no-such-task"))
        say(terminated=pool.terminate(task.task_id, command["terminate"], command.get("grace_s", 5.0)))
    sys.stdin.readline()  # the test says when to stop
    pool.signal(signal.SIGTERM)


install_shutdown_handlers(pool.signal)
threading.Thread(target=drive, daemon=True).start()
sys.exit(pool.run())
'''


class Driver:
    def __init__(self, project: Project, command: dict[str, Any]) -> None:
        (project.root / "driver.py").write_text(DRIVER)
        self.log = project.root / "driver.log"
        self.proc = subprocess.Popen(
            [sys.executable, "driver.py", str(self.log), json.dumps(command)],
            cwd=project.root,
            env=project.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()
        assert self.read() == {"ready": True}

    def read(self, timeout: float = 30) -> Any:
        """The driver's next line of JSON."""
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"the driver said nothing within {timeout} s:\n{self.log_text()}") from None

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def driver(project: Project) -> Any:
    started: list[Driver] = []

    def start(command: dict[str, Any]) -> Driver:
        started.append(Driver(project, command))
        return started[-1]

    yield start
    for d in started:
        d.kill()


def child_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


@pytest.mark.parametrize(
    ("signum", "task", "how"),
    [
        (signal.SIGTERM, "slow", "raised"),  # TaskTerminated interrupts the sleep; the child lives on
        (signal.SIGTERM, "stubborn", "killed"),  # swallows it: killed after the grace period
        (signal.SIGKILL, "slow", "killed"),  # at once
    ],
)
def test_terminate_records_revoked_and_acks(project: Project, driver: Any, signum: int, task: str, how: str) -> None:
    tasks = project.app()
    key = f"terminate-{task}-{signum}"
    result = getattr(tasks, task).delay(60, key)
    d = driver({"terminate": int(signum), "grace_s": 1.0, "after_s": 1.0})  # after its ledger row
    task_id, name, args_repr, pid, soft, hard, started = d.read()["active"]
    assert (task_id, name, soft, hard) == (result.id, f"tasks.{task}", None, None)
    assert pid in child_of(d.proc.pid)
    assert args_repr.startswith("(60,") or args_repr.startswith("[60,")
    assert abs(started - time.time()) < 30
    assert d.read() == {"unknown": False}
    assert d.read() == {"terminated": True}
    with pytest.raises(TaskRevokedError, match="terminated"):
        result.get(timeout=30)
    assert result.state == "REVOKED"
    after = tasks.my_pid.delay(f"{key}-next").get(timeout=30)
    if how == "raised":
        assert after == pid
        assert f"Task tasks.{task}[{result.id}] terminated" in d.log_text()
    else:
        assert after != pid
        wait_for(lambda: "Child process" in d.log_text(), 10, "the kill logged")
        assert f"(task terminated of tasks.{task}[{result.id}])" in d.log_text()
    time.sleep(1.0)
    assert project.ledger_count(key) == 1  # acked: not run again
    assert tasks.app.broker.queue_length("celery") == 0 and tasks.app.broker.dead_letters("celery") == []
    d.stop()


def test_set_time_limit_overrides_the_task_options_at_run_time(project: Project, driver: Any) -> None:
    tasks = project.app()
    d = driver({"set_time_limit": ["tasks.sleep", 0.3, 1]})
    soft = tasks.sleep.delay(60)
    with pytest.raises(SoftTimeLimitExceeded, match=r"\(0.3s\)"):
        soft.get(timeout=30)
    d.stop()
    d = driver({"set_time_limit": ["tasks.stubborn", None, 1]})
    hard = tasks.stubborn.delay(60, "override-hard")
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=30)
    # A per-call limit still wins over the override.
    assert tasks.stubborn.apply_async((1.5, "per-call"), time_limit=20).get(timeout=30) == "outlived"
    d.stop()
