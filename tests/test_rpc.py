"""The ``rpc://`` result backend on a real RabbitMQ node, through real workers; interop with the real
Celery both ways; reply queues cleaned up after short-lived producers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, RabbitServer
from interop.test_celery_interop import CeleryWorker, make_celery
from rqueue import App
from rqueue.exceptions import BackendError, ConfigurationError, TaskRevokedError, TimeLimitExceeded

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def rpc_project(tmp_path: Path, amqp_url: str) -> Iterator[Project]:
    proj = Project(tmp_path, "amqp", None, amqp_url)
    proj.backend_url = "rpc://"
    yield proj
    proj.close()


def test_walkthrough_keeps_results_with_rpc(rpc_project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    (rpc_project.root / "rpccfg.py").write_text("task_track_started = True\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "rpccfg")
    tasks = rpc_project.app()
    rpc_project.start_worker()
    result = tasks.add.delay(4, 4)
    assert result.get(timeout=30) == 8 and result.state == "SUCCESS" and result.ready()
    assert repr(tasks.app.backend) == "<RpcBackend rpc://>"
    failed = tasks.fail.delay("boom")
    with pytest.raises(tasks.CustomError, match="boom"):
        failed.get(timeout=30)
    assert failed.state == "FAILURE" and "CustomError: boom" in (failed.traceback or "")
    assert isinstance(failed.get(timeout=30, propagate=False), tasks.CustomError)
    slow = tasks.sleep.delay(1.0)
    deadline = time.monotonic() + 10
    while slow.state != "STARTED":  # task_track_started: the STARTED state arrives too
        assert time.monotonic() < deadline, slow.state
        time.sleep(0.02)
    assert slow.get(timeout=30) == 1.0
    many = tasks.add.delay_many([(i, i) for i in range(100)])
    assert [r.get(timeout=30) for r in reversed(many)] == [2 * i for i in reversed(range(100))]


def test_retry_revoked_and_time_limit_states_reach_the_client(rpc_project: Project) -> None:
    tasks = rpc_project.app()
    rpc_project.start_worker("-c", "1", "--prefetch-multiplier", "1")
    assert tasks.flaky.delay("rpc-flaky", 1).get(timeout=30) == 1  # after a RETRY state
    limited = tasks.hard_limited.delay(30, "rpc-hard")  # killed by its hard limit: the child is gone
    with pytest.raises(TimeLimitExceeded):
        limited.get(timeout=30)
    busy = tasks.sleep.delay(2.0)
    time.sleep(0.5)
    waiting = tasks.record.delay("rpc-revoked")
    waiting.revoke()
    assert busy.get(timeout=30) == 2.0
    with pytest.raises(TaskRevokedError):
        waiting.get(timeout=30)
    assert waiting.state == "REVOKED" and rpc_project.ledger_count("rpc-revoked") == 0


def test_a_result_sent_by_another_process_is_a_clear_error(rpc_project: Project) -> None:
    tasks = rpc_project.app()
    with pytest.raises(BackendError, match="not sent by this process"):
        tasks.app.AsyncResult("00000000-0000-0000-0000-000000000000").get(timeout=1)


def test_rpc_with_a_broker_other_than_rabbitmq_is_a_configuration_error(tmp_path: Path) -> None:
    app = App("tasks", broker=f"sqlite:///{tmp_path / 'b.db'}", backend="rpc://")
    with pytest.raises(ConfigurationError, match=r"rpc:// needs a RabbitMQ broker"):
        _ = app.backend


def test_celery_and_rqueue_read_each_other_s_rpc_results(rpc_project: Project, amqp_url: str, tmp_path: Path) -> None:
    rpc_project.start_worker("-c", "1")
    celery_client = make_celery(amqp_url, "rpc://")
    try:
        assert celery_client.send_task("tasks.add", (4, 4)).get(timeout=30) == 8
        with pytest.raises(Exception) as raised:  # Celery rebuilds the type: checked below
            celery_client.send_task("tasks.fail", ("from rqueue",)).get(timeout=30)
        assert type(raised.value).__name__ == "CustomError" and str(raised.value) == "from rqueue"
    finally:
        celery_client.close()
    queue = "celery-side"
    worker = CeleryWorker(amqp_url, queue, tmp_path / "celery-worker.log", backend="rpc://")
    try:
        worker.wait_ready()
        app = App("producer", broker=amqp_url, backend="rpc://")
        assert app.send_task("tasks.add", (20, 22), queue=queue).get(timeout=30) == 42
        with pytest.raises(ValueError, match="bad input"):
            app.send_task("tasks.fail", ("bad input",), queue=queue).get(timeout=30)
    finally:
        worker.kill()


PRODUCER = """
import sys
from rqueue import App
app = App("p", broker=sys.argv[1], backend="rpc://")
r = app.send_task("tasks.add", (1, 2))
print(r.get(timeout=30))
"""


@pytest.mark.slow
def test_short_lived_producers_leave_no_reply_queues(
    rpc_project: Project, rabbitmq_server: RabbitServer, amqp_url: str
) -> None:
    rpc_project.start_worker("-c", "2")
    vhost = amqp_url.rsplit("/", 1)[1]

    def queues() -> list[str]:
        out = rabbitmq_server.ctl("list_queues", "-p", vhost, "name", "--quiet", "--no-table-headers")
        return [q for q in out.split() if not q.startswith(("celery", "rqueue")) and not q.endswith("pidbox")]

    before = queues()
    procs: list[subprocess.Popen[Any]] = []
    for _ in range(50):
        procs.append(subprocess.Popen([sys.executable, "-c", PRODUCER, amqp_url], stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outputs == ["3"] * 50
    deadline = time.monotonic() + 10
    while queues() != before:  # each reply queue goes with its client's connection
        assert time.monotonic() < deadline, queues()
        time.sleep(0.2)
