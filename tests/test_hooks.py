"""The worker's hook points: called in order for each outcome, and a hook that raises never stops
the worker. Runs the executor of one process against a real SQLite broker."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from rqueue import App, _rqueue, states
from rqueue.exceptions import Reject
from rqueue.request import Request
from rqueue.worker.executor import Executor
from rqueue.worker.hooks import HOOK_POINTS, Hooks, WorkerHook
from rqueue.worker.state import Revoked


class Recorder(WorkerHook):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def received(self, request: Request) -> None:
        self.calls.append(("received", request.task))

    def started(self, request: Request) -> None:
        self.calls.append(("started", request.task))

    def succeeded(self, request: Request, result: Any, runtime_s: float) -> None:
        assert runtime_s >= 0
        self.calls.append(("succeeded", repr(result)))

    def failed(self, request: Request, exc: BaseException, traceback: str, runtime_s: float) -> None:
        assert "Traceback" in traceback
        self.calls.append(("failed", type(exc).__name__))

    def retried(self, request: Request, reason: BaseException) -> None:
        self.calls.append(("retried", type(reason).__name__))

    def revoked(self, request: Request, reason: str) -> None:
        self.calls.append(("revoked", reason))

    def rejected(self, task_id: str | None, reason: str, requeue: bool) -> None:
        self.calls.append(("rejected", f"{reason}:{requeue}"))


class Broken(WorkerHook):
    """Raises at every point."""

    def __getattribute__(self, name: str) -> Any:
        if name in HOOK_POINTS:

            def fail(*args: Any) -> None:
                raise RuntimeError(f"hook bug at {name}")

            return fail
        return super().__getattribute__(name)


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App("tasks", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}", task_max_retries=1)


def run_all(app: App, hooks: list[WorkerHook]) -> None:
    """Lease everything waiting and run it through one executor, as a worker process does."""
    buffer = _rqueue.PrefetchBuffer(100)
    consumer = app.broker.consumer(["celery"], "test/1", buffer, 60.0, 5, 40)
    executor = Executor(app, consumer, "test@host", Revoked(app.broker), hooks=Hooks(hooks))
    for delivery in app.broker.native.fetch(["celery"], 100, "test/1", 60_000):  # type: ignore[attr-defined]
        executor.handle(delivery)
    executor.flush()


def define(app: App) -> dict[str, Any]:
    @app.task
    def ok() -> int:
        return 7

    @app.task
    def boom() -> None:
        raise KeyError("k")

    @app.task(bind=True)
    def again(self: Any) -> None:
        raise self.retry(countdown=60)

    @app.task
    def refuse() -> None:
        raise Reject("no", requeue=False)

    return {"ok": ok, "boom": boom, "again": again, "refuse": refuse}


def test_hooks_are_called_at_each_point_in_order(app: App) -> None:
    tasks = define(app)
    results = [tasks[name].delay() for name in ("ok", "boom", "again", "refuse")]
    revoked = tasks["ok"].delay()
    app.control.revoke(revoked.id)
    app.send_task("nowhere.task")
    recorder = Recorder()
    run_all(app, [recorder])
    name = __name__
    assert [c for c in recorder.calls if c[0] != "received"] == [
        ("started", f"{name}.ok"),
        ("succeeded", "7"),
        ("started", f"{name}.boom"),
        ("failed", "KeyError"),
        ("started", f"{name}.again"),
        ("retried", "Retry"),
        ("started", f"{name}.refuse"),
        ("rejected", "rejected:False"),
        ("revoked", "revoked"),
        ("rejected", "unregistered:False"),
    ]
    assert [c for c in recorder.calls if c[0] == "received"] == [
        ("received", f"{name}.{n}") for n in ("ok", "boom", "again", "refuse", "ok")
    ]
    assert [r.state for r in results[:3]] == [states.SUCCESS, states.FAILURE, states.RETRY]


def test_a_hook_that_raises_is_logged_and_the_worker_goes_on(app: App, caplog: pytest.LogCaptureFixture) -> None:
    tasks = define(app)
    ok, boom = tasks["ok"].delay(), tasks["boom"].delay()
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="rqueue.worker"):
        run_all(app, [Broken(), recorder])
    assert ok.get(timeout=1) == 7
    assert boom.state == states.FAILURE
    assert ("succeeded", "7") in recorder.calls  # the hook after the broken one still ran
    failures = [r for r in caplog.records if "Worker hook" in r.getMessage()]
    assert {r.getMessage().split("at ")[-1].split(";")[0] for r in failures} >= {
        "'received'",
        "'started'",
        "'succeeded'",
        "'failed'",
    }
    assert app.broker.queue_length("celery") == 0
