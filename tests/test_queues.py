"""Routing to queues, and a worker consuming several queues: fair between them, priorities first.

Execution order comes from the ledger the tasks write (``tests/project/tasks.py``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from conftest import Project
from rqueue import App, _rqueue
from rqueue.worker import Worker


def order(project: Project) -> list[str]:
    return [key for key, _, _ in project.ledger_rows()]


def test_worker_is_fair_between_its_queues(project: Project) -> None:
    """Queue b's 20 tasks, sent after queue a's 200, do not wait until a is drained."""
    tasks = project.app()
    worker = project.start_worker("-Q", "a,b", "-P", "solo")
    backlog = tasks.app.send_many("tasks.record", [((f"a-{i}",), {}) for i in range(200)], queue="a")
    late = tasks.app.send_many("tasks.record", [((f"b-{i}",), {}) for i in range(20)], queue="b")
    for r in late + backlog:
        r.get(timeout=60)
    worker.stop()
    keys = order(project)
    assert len(keys) == 220
    last_b = max(i for i, k in enumerate(keys) if k.startswith("b-"))
    a_after_last_b = sum(1 for k in keys[last_b:] if k.startswith("a-"))
    # taking the queues in turn, b's 20 are done after about as many more of a's: most of a still waits
    assert a_after_last_b >= 100, (last_b, keys[: last_b + 1])


def test_worker_honours_priorities_across_and_within_its_queues(project: Project) -> None:
    tasks = project.app()
    for q in ("a", "b"):
        tasks.app.send_many("tasks.record", [((f"{q}-low-{i}",), {}) for i in range(5)], queue=q, priority=9)
        tasks.app.send_many("tasks.record", [((f"{q}-high-{i}",), {}) for i in range(5)], queue=q, priority=0)
    worker = project.start_worker("-Q", "a,b", "-P", "solo")
    _wait_for_count(project, 20)
    worker.stop()
    keys = order(project)
    assert all("high" in k for k in keys[:10]) and all("low" in k for k in keys[10:]), keys
    # within each level, each queue keeps its own order, and the two queues take turns
    for level in ("high", "low"):
        run = [k for k in keys if f"-{level}-" in k]
        for q in ("a", "b"):
            assert [k for k in run if k.startswith(q)] == [f"{q}-{level}-{i}" for i in range(5)], run
        assert {k[0] for k in run[:4]} == {"a", "b"}, run


def _wait_for_count(project: Project, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while project.ledger_count() < n:
        assert time.monotonic() < deadline, f"{project.ledger_count()} of {n} tasks ran"
        time.sleep(0.05)


def test_task_queues_setting_is_what_a_worker_consumes_by_default(tmp_path: Path) -> None:
    app = App("q", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}", task_queues=["high", "low"])
    assert Worker(app, pool="solo").queues == ["high", "low"]
    assert Worker(app, pool="solo", queues=["other"]).queues == ["other"]
    app.conf.task_queues = None
    assert Worker(app, pool="solo").queues == ["celery"]


def test_task_routes_regex_keys_and_route_dicts(tmp_path: Path) -> None:
    app = App("q", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}")
    seen: list[tuple[Any, ...]] = []

    def router(name: str, args: Any, kwargs: Any, options: Any, task: Any) -> dict[str, Any] | None:
        seen.append((name, args, kwargs))
        return {"queue": "called", "priority": 1} if name == "reports.now" else None

    app.conf.task_routes = [router, {re.compile(r"^(math|stats)\.\w+$"): {"queue": "numbers", "priority": 2}}]
    app.send_task("math.add", [1, 2])
    app.send_task("stats.mean", [[1]])
    app.send_task("reports.now", [], {"day": 1})
    app.send_task("mathematics.add")  # the regex is anchored: default queue
    app.send_task("math.add", queue="explicit")  # an explicit queue wins over every route
    assert seen[2] == ("reports.now", [], {"day": 1})
    broker: Any = app.broker
    numbers = [_rqueue.decode_task_message(d.payload) for d in broker.native.fetch(["numbers"], 10, "t", 60_000)]
    called = [_rqueue.decode_task_message(d.payload) for d in broker.native.fetch(["called"], 10, "t", 60_000)]
    assert [(m.task, m.priority) for m in numbers] == [("math.add", 2), ("stats.mean", 2)]
    assert [(m.task, m.priority) for m in called] == [("reports.now", 1)]
    assert [app.broker.queue_length(q) for q in ("celery", "explicit")] == [1, 1]
