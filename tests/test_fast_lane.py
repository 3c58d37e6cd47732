"""The worker's fast lane (``_rqueue.FastLane``, ``src-rust/py/src/lane.rs``): the common case run
natively, a batch at a time, and everything else handed back to the Python executor, which settles
it by the same rules. Runs one process's executor and lane against a real SQLite broker, as a worker
process does; the worker tests run the lane through the real CLI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rqueue import App, _rqueue, signals, states
from rqueue.backends.base import ResultRecord
from rqueue.brokers.base import DeadLetterAdmin, LeaseRecovery, capability
from rqueue.request import request_stack
from rqueue.worker.executor import Executor
from rqueue.worker.hooks import Hooks, WorkerHook
from rqueue.worker.ratelimit import RateLimits
from rqueue.worker.slot import RunningSlot
from rqueue.worker.state import Revoked

OWNER = "lane-test/1"


#: The signals a lane run does not send (a receiver on any of them keeps runs off the lane).
PER_RUN_SIGNALS = (signals.task_received, signals.task_prerun, signals.task_postrun, signals.task_success)


@pytest.fixture(autouse=True)
def _no_receivers_from_other_tests() -> Iterator[None]:
    """Other tests import Celery projects into this process, whose receivers stay connected."""
    saved = [signal.receivers for signal in PER_RUN_SIGNALS]
    for signal in PER_RUN_SIGNALS:
        signal.receivers = ()
    yield
    for signal, receivers in zip(PER_RUN_SIGNALS, saved, strict=True):
        signal.receivers = receivers


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App("lanetest", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}", task_max_retries=1)


@dataclass
class LaneRun:
    executor: Executor
    #: What the lane handed back, in order: (delivery, msg, request, elapsed_s, value, exc).
    handed: list[tuple[Any, ...]]
    buffer: _rqueue.PrefetchBuffer


def run_lane(app: App, slot: RunningSlot | None = None, hooks: Hooks | None = None) -> LaneRun:
    """Lease everything waiting and run it through one executor's lane, as a worker process's
    executor loop does (handbacks go to the executor); then flush, and check every lease was settled."""
    buffer = _rqueue.PrefetchBuffer(1000)  # above the adaptive ceiling: its credits stay comparable
    consumer = app.broker.consumer(["celery"], OWNER, buffer, 60.0, 5, 40)
    executor = Executor(app, consumer, "test@host", Revoked(app.broker), slot=slot, hooks=hooks)
    lane = executor.fast_lane(buffer)
    assert lane is not None
    for delivery in app.broker.native.fetch(["celery"], 100, OWNER, 60_000):  # type: ignore[attr-defined]
        assert buffer.put(delivery)
    handed = []
    while (first := buffer.get(0)) is not None:
        plan = executor.fast_plan()
        assert plan is not None
        logged = logging.getLogger("rqueue.worker").isEnabledFor(logging.INFO)
        back = lane.run(first, plan, executor.results, executor.acks, 60.0, 1000, logged)
        if back is not None:
            handed.append(back)
            executor.take_over(*back)
            buffer.done()
    executor.flush()
    consumer.close()  # the acks handed to the fetching thread are written
    recovery = capability(app.broker, LeaseRecovery)
    assert recovery is not None
    assert recovery.requeue_owner(OWNER, 5) == 0, "a message was left leased"
    assert buffer.credits() == buffer.capacity, "a credit was not given back"
    assert request_stack() == ()
    assert executor.current is None
    return LaneRun(executor, handed, buffer)


def handed_names(run: LaneRun) -> list[tuple[str | None, bool]]:
    """``(task name, whether the lane called it)`` of each handback."""
    return [(back[1].task if back[1] is not None else None, back[2] is not None) for back in run.handed]


def test_plain_tasks_run_on_the_lane_with_their_request(app: App) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(bind=True)
    def who(self: Any, tag: str, *, n: int = 0) -> dict[str, Any]:
        r = self.request
        return {
            "id": r.id,
            "args": r.args,
            "kwargs": r.kwargs,
            "hostname": r.hostname,
            "retries": r.retries,
            "routing_key": r.delivery_info["routing_key"],
            "stack": len(request_stack()),
        }

    @app.task
    def unbound() -> str | None:
        return unbound.request.id

    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    sums = [add.delay(i, i) for i in range(20)]
    w = who.delay("t", n=3)
    u = unbound.delay()
    q = quiet.delay()
    run = run_lane(app)
    assert run.handed == []  # every one ran natively
    assert [r.get(timeout=1) for r in sums] == [2 * i for i in range(20)]
    assert w.get(timeout=1) == {
        "id": w.id,
        "args": ["t"],
        "kwargs": {"n": 3},
        "hostname": "test@host",
        "retries": 0,
        "routing_key": "celery",
        "stack": 1,
    }
    assert u.get(timeout=1) == u.id
    assert q.state == states.PENDING  # its result is not stored
    assert run.executor.processed == {add.name: 20, who.name: 1, unbound.name: 1, quiet.name: 1}


def test_results_the_lane_encodes_are_the_backends_records(app: App) -> None:
    @app.task
    def value(x: Any) -> Any:
        return x

    @app.task
    def odd() -> object:
        return object()  # no serializer takes it: the executor stores why

    @app.task
    def parent() -> int:
        value.delay(1)  # a child: recorded with the parent's result
        return 0

    sent = {"n": 1, "text": 'é\n"', "nested": [1.5, None, True, {"k": [1, 2]}]}
    v, o, p = value.delay(sent), odd.delay(), parent.delay()
    run = run_lane(app)
    assert run.handed == []
    assert v.get(timeout=1) == sent
    meta = app.backend.get_meta(v.id)
    expected = app.backend.encode(ResultRecord(v.id, states.SUCCESS, sent))
    assert list(meta) == list(_rqueue.loads(expected))  # the same fields, in the same order
    assert {k: meta[k] for k in meta if k != "date_done"} == {
        k: val for k, val in _rqueue.loads(expected).items() if k != "date_done"
    }
    assert o.state == states.FAILURE
    assert "SerializationError" in repr(o.result) or "serializ" in str(o.result).lower()
    assert p.get(timeout=1) == 0
    assert [child.id for child in p.children or []] != []


def test_exceptions_are_handed_back_after_the_call_and_settled_by_the_executor(app: App) -> None:
    @app.task
    def boom() -> None:
        raise KeyError("k")

    @app.task(autoretry_for=(ValueError,), retry_kwargs={"countdown": 60})
    def flaky() -> None:
        raise ValueError("once more")

    @app.task(bind=True)
    def again(self: Any) -> None:
        raise self.retry(countdown=60)

    @app.task
    def fine() -> int:
        return 5

    b, f, a, ok = boom.delay(), flaky.delay(), again.delay(), fine.delay()
    run = run_lane(app)
    assert handed_names(run) == [(boom.name, True), (flaky.name, True), (again.name, True)]
    assert [type(back[5]).__name__ for back in run.handed] == ["KeyError", "ValueError", "Retry"]
    assert b.state == states.FAILURE
    assert 'raise KeyError("k")' in (b.traceback or "")  # the task's own frame is in the traceback
    assert f.state == states.RETRY  # autoretry_for read the request the executor pushed again
    assert a.state == states.RETRY
    assert ok.get(timeout=1) == 5
    # Each call is counted once, by the lane.
    assert run.executor.processed == {boom.name: 1, flaky.name: 1, again.name: 1, fine.name: 1}


def test_a_coroutine_is_handed_back_and_run_on_the_executor_loop(app: App) -> None:
    @app.task
    async def later(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    r = later.delay(4)
    run = run_lane(app)
    assert handed_names(run) == [(later.name, True)]
    assert r.get(timeout=1) == 12


def test_unusual_messages_are_handed_back_before_they_run(app: App) -> None:
    ran: list[str] = []

    @app.task
    def step(x: int) -> int:
        ran.append(f"step {x}")
        return x + 1

    @app.task
    def limited() -> None:
        ran.append("limited")

    chained = (step.s(1) | step.s()).delay()
    limited_result = limited.apply_async(time_limit=30)  # a time limit in the message
    revoked = step.delay(100)
    app.control.revoke(revoked.id)
    app.send_task("lanetest.nowhere")  # not registered here
    app.broker.publish("celery", b'{"not": "a message"', 0, None)  # undecodable
    plain = step.delay(7)
    run = run_lane(app)
    assert handed_names(run) == [
        (step.name, False),  # the chain: its message has a canvas
        (limited.name, False),
        (step.name, False),  # revoked
        ("lanetest.nowhere", False),
        (None, False),  # not decoded: the executor refuses it, with why
    ]
    assert plain.get(timeout=1) == 8
    assert limited_result.state == states.SUCCESS
    assert revoked.state == states.REVOKED
    assert "step 100" not in ran
    admin = capability(app.broker, DeadLetterAdmin)
    assert admin is not None
    assert sorted(d.reason for d in admin.dead_letters("celery")) == ["decode_error", "unregistered"]
    # The chain's second step was sent by the executor; it runs on the lane.
    run_lane(app)
    assert chained.get(timeout=1) == 3


def test_an_early_ack_task_is_acked_before_it_runs(app: App) -> None:
    acked_before: list[int] = []

    @app.task(acks_late=False)
    def early() -> None:
        recovery = capability(app.broker, LeaseRecovery)
        assert recovery is not None
        # Its message is no longer leased while it runs: the ack went before the call.
        acked_before.append(app.broker.queue_length("celery"))

    early.delay()
    run = run_lane(app)
    assert run.handed == []
    assert run.executor.acks == []  # nothing left to ack after the run
    assert acked_before == [0]


def test_the_plan_leaves_out_what_the_lane_does_not_do(app: App) -> None:
    @app.task
    def plain() -> None: ...

    @app.task(rate_limit="10/s")
    def rated() -> None: ...

    @app.task(time_limit=5)
    def timed() -> None: ...

    @app.task(track_started=True)
    def tracked() -> None: ...

    class Hooked(app.Task):  # type: ignore[name-defined,misc]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None: ...

    @app.task(base=Hooked)
    def hooked() -> None: ...

    buffer = _rqueue.PrefetchBuffer(4)
    consumer = app.broker.consumer(["celery"], OWNER, buffer, 60.0, 5, 40)
    executor = Executor(app, consumer, "test@host", Revoked(app.broker), rate_limits=RateLimits(app))
    plan = executor.fast_plan()
    assert plan is not None
    assert plain.name in plan
    assert not {rated.name, timed.name, tracked.name, hooked.name} & set(plan)
    # An operator's change takes effect at the next batch.
    executor.limits.set(plain.name, 1.0, 2.0)
    assert plain.name not in (executor.fast_plan() or {})
    executor.limits.set(plain.name, None, None)
    assert plain.name in (executor.fast_plan() or {})
    assert executor.rate_limits is not None
    executor.rate_limits.set(plain.name, "5/s")
    assert plain.name not in (executor.fast_plan() or {})


def test_no_task_takes_the_lane_while_hooks_or_task_signals_need_each_run(app: App) -> None:
    buffer = _rqueue.PrefetchBuffer(4)
    consumer = app.broker.consumer(["celery"], OWNER, buffer, 60.0, 5, 40)
    hooked = Executor(app, consumer, "test@host", Revoked(app.broker), hooks=Hooks([WorkerHook()]))
    assert hooked.fast_plan() is None
    plain = Executor(app, consumer, "test@host", Revoked(app.broker))
    assert plain.fast_plan() is not None

    def receiver(**kwargs: Any) -> None: ...

    for signal in PER_RUN_SIGNALS:
        signal.connect(receiver)
        try:
            assert plain.fast_plan() is None
        finally:
            signal.disconnect(receiver)
    assert plain.fast_plan() is not None


def test_the_lane_logs_each_task_as_the_executor_does(app: App, caplog: pytest.LogCaptureFixture) -> None:
    @app.task
    def shown(x: int) -> int:
        return x

    r = shown.delay(41)
    with caplog.at_level(logging.INFO, logger="rqueue.worker"):
        run = run_lane(app)
    assert run.handed == []
    assert r.get(timeout=1) == 41
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "rqueue.worker"]
    assert lines[0] == f"Task {shown.name}[{r.id}] received"
    assert lines[1].startswith(f"Task {shown.name}[{r.id}] succeeded in ")
    assert lines[1].endswith("s: 41")


def test_a_prefork_child_slot_shows_the_running_task(app: App) -> None:
    slot = RunningSlot()
    slot.attach()
    seen: list[Any] = []

    @app.task
    def inside(x: int) -> None:
        seen.append(slot.read())

    r = inside.delay(9)
    run_lane(app, slot=slot)
    assert len(seen) == 1 and seen[0] is not None
    assert (seen[0].task_id, seen[0].name, seen[0].args_repr) == (r.id, inside.name, "(9,)")
    assert slot.get() is None  # idle again
