"""Interop with the real ``celery`` package on a real RabbitMQ node (results in Redis), through real
worker processes: each side runs the other's tasks, reads the other's results and exceptions, and
honours the other's priorities and countdowns; each side's remote control reaches the other's workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from interop.test_celery_interop import CeleryWorker, make_celery
from rqueue import App

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis]

celery = pytest.importorskip("celery")


@pytest.fixture
def aproject(tmp_path: Path, amqp_url: str, redis_url: str) -> Iterator[Project]:
    proj = Project(tmp_path, "amqp", redis_url, amqp_url)
    yield proj
    proj.close()


@pytest.fixture
def celery_producer(amqp_url: str, redis_url: str) -> Iterator[Any]:
    app = make_celery(amqp_url, redis_url)
    yield app
    app.close()


@pytest.fixture
def celery_worker(tmp_path: Path, amqp_url: str, redis_url: str) -> Iterator[tuple[CeleryWorker, str]]:
    queue = "celery-side"
    worker = CeleryWorker(amqp_url, queue, tmp_path / "celery-worker.log", backend=redis_url)
    try:
        worker.wait_ready()
        yield worker, queue
    finally:
        worker.kill()


def test_celery_sends_rqueue_runs_values_and_exceptions(aproject: Project, celery_producer: Any) -> None:
    worker = aproject.start_worker("-c", "1")
    result = celery_producer.send_task("tasks.add", (4, 4))
    assert result.get(timeout=30) == 8 and result.state == "SUCCESS"
    worker.wait_for_log(f"Task tasks.add[{result.id}] succeeded in")
    failed = celery_producer.send_task("tasks.fail", ("boom from rqueue",))
    with pytest.raises(Exception) as raised:  # Celery rebuilds the type: checked below
        failed.get(timeout=30)
    assert type(raised.value).__name__ == "CustomError" and str(raised.value) == "boom from rqueue"


def test_rqueue_sends_celery_runs_values_and_exceptions(
    amqp_url: str, redis_url: str, celery_worker: tuple[CeleryWorker, str]
) -> None:
    _, queue = celery_worker
    app = App("producer", broker=amqp_url, backend=redis_url)
    assert app.send_task("tasks.add", (20, 22), queue=queue).get(timeout=30) == 42
    with pytest.raises(ValueError, match="bad input"):
        app.send_task("tasks.fail", ("bad input",), queue=queue).get(timeout=30)


def test_countdowns_cross_both_ways_and_run_once_not_early(
    aproject: Project, celery_producer: Any, amqp_url: str, redis_url: str, celery_worker: tuple[CeleryWorker, str]
) -> None:
    aproject.start_worker("-c", "1")
    sent_at = time.time()
    from_celery = celery_producer.send_task("tasks.record", ("from-celery",), countdown=2)
    _, queue = celery_worker
    app = App("producer", broker=amqp_url, backend=redis_url)
    from_rqueue = app.send_task("tasks.add", (1, 2), queue=queue, countdown=2)  # through the delay levels
    assert from_rqueue.get(timeout=30) == 3
    assert time.time() - sent_at >= 1.9
    assert from_celery.get(timeout=30) == 1
    time.sleep(1.0)  # a second execution, if any, would show up here
    ((key, _, ran_at),) = aproject.ledger_rows()
    assert key == "from-celery" and ran_at - sent_at >= 1.9


def test_celery_priorities_are_honoured_by_an_rqueue_worker(
    aproject: Project, amqp_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (aproject.root / "prio.py").write_text("task_queue_max_priority = 10\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "prio")
    producer = make_celery(amqp_url, redis_url, task_queue_max_priority=10)
    try:
        low = [producer.send_task("tasks.record", (f"p0-{i}",), priority=0) for i in range(3)]
        high = [producer.send_task("tasks.record", (f"p9-{i}",), priority=9) for i in range(3)]
        aproject.start_worker("-c", "1", "--prefetch-multiplier", "1")
        assert [r.get(timeout=30) for r in high + low] == [1] * 6
    finally:
        producer.close()
    assert [key for key, _, _ in aproject.ledger_rows()] == ["p9-0", "p9-1", "p9-2", "p0-0", "p0-1", "p0-2"]


def test_remote_control_crosses_both_ways(
    aproject: Project, celery_producer: Any, amqp_url: str, celery_worker: tuple[CeleryWorker, str]
) -> None:
    aproject.start_worker("-c", "1", "-n", "rq1@test")
    inspect = celery_producer.control.inspect(destination=["rq1@test"], timeout=5)
    assert inspect.ping() == {"rq1@test": {"ok": "pong"}}
    assert "tasks.add" in inspect.registered()["rq1@test"]
    replies = celery_producer.control.rate_limit("tasks.add", "10/m", destination=["rq1@test"], reply=True, timeout=5)
    assert replies == [{"rq1@test": {"ok": "new rate limit set successfully"}}]
    _, queue = celery_worker
    app = App("producer", broker=amqp_url)
    replies = app.control.ping(timeout=3)
    names = {name for reply in replies for name in reply}
    celery_name = next(n for n in names if n.startswith(f"interop-{queue}@"))
    assert names == {"rq1@test", celery_name}
    active = app.control.inspect(destination=[celery_name], timeout=5).active_queues()
    assert active is not None and [q["name"] for q in active[celery_name]] == [queue]
