"""Interop with the real ``celery`` package on a real redis-server, through real worker processes.

Celery producers feed rqueue workers (started through the ``rqueue`` CLI) and an rqueue producer
feeds a real ``celery worker``; each side reads the other's results. Executions are counted in
the project's ledger (a SQLite file the test tasks append to), not in the broker under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from rqueue import App

pytestmark = pytest.mark.redis

celery = pytest.importorskip("celery")
redis = pytest.importorskip("redis")

HERE = Path(__file__).parent


# -- helpers -------------------------------------------------------------------------------------------


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def write_config(project: Project, name: str, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings module in the project directory, read by ``tasks.py`` through $TEST_CONFIG_MODULE."""
    (project.root / f"{name}.py").write_text(text)
    monkeypatch.setenv("TEST_CONFIG_MODULE", name)


class CeleryWorker:
    """A real ``celery worker`` subprocess running ``celery_project.tasks`` (one process unless
    ``pool`` says otherwise); ``conf`` adds Celery settings (``$CELERY_INTEROP_CONF``), ``ledger``
    is where ``tasks.sleep`` records executions and ``extra`` are more worker options."""

    def __init__(
        self,
        url: str,
        queue: str,
        log: Path,
        backend: str = "",
        conf: dict[str, Any] | None = None,
        ledger: Path | None = None,
        pool: str = "solo",
        concurrency: int = 1,
        extra: tuple[str, ...] = ("--without-heartbeat",),
    ) -> None:
        self.log = log
        env = dict(os.environ)
        env.update(CELERY_INTEROP_URL=url, CELERY_INTEROP_BACKEND=backend, PYTHONPATH=str(HERE), PYTHONUNBUFFERED="1")
        env.pop("TEST_CONFIG_MODULE", None)
        env.pop("LEDGER", None)
        if conf:
            env["CELERY_INTEROP_CONF"] = json.dumps(conf)
        if ledger is not None:
            env["LEDGER"] = str(ledger)
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_project.tasks",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "-Q",
            queue,
            "--loglevel=info",
            "-n",
            f"interop-{queue}@%h",
            "--without-gossip",
            "--without-mingle",
            *extra,
            "--logfile",
            str(log),
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_text():
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                raise AssertionError(f"celery worker exited ({self.proc.returncode}):\n{out}\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"celery worker not ready within {timeout} s:\n{self.log_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def rproject(tmp_path: Path, redis_url: str) -> Iterator[Project]:
    """The rqueue test project on Redis (broker and backend), with a timestamped ledger."""
    proj = Project(tmp_path, "redis", redis_url)
    yield proj
    proj.close()


def make_celery(url: str, backend: str | None = None, **conf: Any) -> Any:
    app = celery.Celery("tasks", broker=url, backend=backend or url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        **conf,
    )
    return app


@pytest.fixture
def celery_producer(redis_url: str) -> Iterator[Any]:
    app = make_celery(redis_url)
    yield app
    app.close()


@pytest.fixture
def celery_worker(tmp_path: Path, redis_url: str) -> Iterator[tuple[CeleryWorker, str]]:
    queue = "celery-side"
    worker = CeleryWorker(redis_url, queue, tmp_path / "celery-worker.log")
    try:
        worker.wait_ready()
        yield worker, queue
    finally:
        worker.kill()


# -- 1. Celery producer, rqueue worker -----------------------------------------------------------------


def test_celery_sends_rqueue_runs_and_celery_reads_the_result(rproject: Project, celery_producer: Any) -> None:
    worker = rproject.start_worker("-c", "1")
    result = celery_producer.send_task("tasks.add", (4, 4))
    assert result.get(timeout=10) == 8
    assert result.state == "SUCCESS"
    worker.wait_for_log(f"Task tasks.add[{result.id}] succeeded in")


def test_celery_sees_the_exception_raised_on_an_rqueue_worker(rproject: Project, celery_producer: Any) -> None:
    rproject.start_worker("-c", "1")
    result = celery_producer.send_task("tasks.fail", ("boom from rqueue",))
    with pytest.raises(Exception) as raised:  # Celery rebuilds the type: checked below
        result.get(timeout=10)
    assert type(raised.value).__name__ == "CustomError"
    assert str(raised.value) == "boom from rqueue"
    assert result.state == "FAILURE"
    assert result.traceback is not None and "CustomError: boom from rqueue" in result.traceback


# -- 2. rqueue producer, Celery worker -----------------------------------------------------------------


def test_rqueue_sends_celery_runs_and_rqueue_reads_the_result(
    redis_url: str, celery_worker: tuple[CeleryWorker, str]
) -> None:
    worker, queue = celery_worker
    app = App("producer", broker=redis_url, backend=redis_url)
    result = app.send_task("tasks.add", (20, 22), queue=queue)
    assert result.get(timeout=10) == 42
    assert result.state == "SUCCESS"
    # Celery publishes the result before it logs the success line: wait for the line.
    deadline = time.monotonic() + 10
    while f"Task tasks.add[{result.id}] succeeded" not in worker.log_text():
        assert time.monotonic() < deadline, worker.log_text()
        time.sleep(0.02)


def test_exception_raised_on_a_celery_worker_propagates_to_rqueue(
    redis_url: str, celery_worker: tuple[CeleryWorker, str]
) -> None:
    _, queue = celery_worker
    app = App("producer", broker=redis_url, backend=redis_url)
    failed = app.send_task("tasks.fail", ("bad input",), queue=queue)
    with pytest.raises(ValueError) as raised:
        failed.get(timeout=10)
    assert type(raised.value) is ValueError and str(raised.value) == "bad input"
    assert failed.state == "FAILURE"
    assert failed.traceback is not None and "ValueError: bad input" in failed.traceback
    missing = app.send_task("tasks.fail_builtin", ("nope",), queue=queue)
    with pytest.raises(KeyError) as raised_key:
        missing.get(timeout=10)
    assert type(raised_key.value) is KeyError and raised_key.value.args == ("nope",)


# -- 3. countdown from Celery --------------------------------------------------------------------------


def test_celery_countdown_runs_once_and_not_before_its_eta(rproject: Project, celery_producer: Any) -> None:
    rproject.start_worker("-c", "2")
    sent_at = time.time()
    result = celery_producer.send_task("tasks.record", ("countdown",), countdown=2)
    assert result.get(timeout=15) == 1
    time.sleep(1.0)  # a second execution, if any, would show up here
    rows = rproject.ledger_rows()
    assert [key for key, _, _ in rows] == ["countdown"]
    ran_after = rows[0][2] - sent_at
    print(f"countdown=2 task ran {ran_after:.3f} s after it was sent")
    assert ran_after >= 1.5


# -- 4. priorities -------------------------------------------------------------------------------------


def test_celery_priorities_are_honoured_by_an_rqueue_worker(rproject: Project, redis_url: str) -> None:
    queue = "prio"
    producer = make_celery(
        redis_url,
        broker_transport_options={"priority_steps": list(range(10)), "queue_order_strategy": "priority"},
    )
    try:
        low = [producer.send_task("tasks.record", (f"p9-{i}",), queue=queue, priority=9) for i in range(3)]
        high = [producer.send_task("tasks.record", (f"p0-{i}",), queue=queue, priority=0) for i in range(3)]
        raw = redis.Redis.from_url(redis_url)
        assert raw.llen(queue) == 3 and raw.llen(f"{queue}\x06\x169") == 3  # kombu's buckets
        raw.close()
        rproject.start_worker("-Q", queue, "-c", "1", "--prefetch-multiplier", "1")
        assert [r.get(timeout=20) for r in high + low] == [1] * 6
    finally:
        producer.close()
    assert [key for key, _, _ in rproject.ledger_rows()] == ["p0-0", "p0-1", "p0-2", "p9-0", "p9-1", "p9-2"]


# -- 5. a killed worker's messages come back -------------------------------------------------------------


@pytest.mark.slow
def test_sigkilled_worker_messages_run_on_another_worker(
    rproject: Project, celery_producer: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(rproject, "interop_visibility", "broker_visibility_timeout = 3\n", monkeypatch)
    long = celery_producer.send_task("tasks.sleep", (4, "long"))
    short = [celery_producer.send_task("tasks.sleep", (0.05, f"short-{i}")) for i in range(4)]
    victim = rproject.start_worker("-c", "1", "-n", "victim@%h")  # prefetches 4: the long one and 3 more
    victim.wait_for_log(f"Task tasks.sleep[{long.id}] received")
    raw = redis.Redis.from_url(redis_url)
    try:
        held = raw.hlen("unacked")
        waiting = raw.llen("celery")
    finally:
        raw.close()
    assert held >= 2, f"the worker should hold the running task and prefetched ones, holds {held}"
    assert held + waiting == 5
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    killed_at = time.monotonic()
    assert rproject.ledger_count() == 0  # nothing finished on the victim

    rproject.start_worker("-c", "1", "-n", "rescuer@%h")
    assert [r.get(timeout=40) for r in short] == [0.05] * 4
    assert long.get(timeout=40) == 4
    recovered_s = time.monotonic() - killed_at
    time.sleep(1.0)
    counts = {key: rproject.ledger_count(key) for key in ["long", *(f"short-{i}" for i in range(4))]}
    print(f"held by the killed worker: {held}; every task done {recovered_s:.1f} s after the kill; runs: {counts}")
    assert counts == {"long": 1, "short-0": 1, "short-1": 1, "short-2": 1, "short-3": 1}


@pytest.mark.slow
def test_a_dead_celery_workers_messages_come_back_after_celerys_visibility_timeout(
    rproject: Project, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Celery worker's in-flight messages carry no rqueue lease: rqueue restores them once they
    are older than the visibility timeout Celery uses (``broker_transport_options``), not kombu's
    default hour."""
    queue = "celery-dies"
    celery_side = CeleryWorker(redis_url, queue, tmp_path / "dying-celery.log")
    celery_side.wait_ready()
    producer = make_celery(redis_url)
    try:
        held = producer.send_task("tasks.sleep", (2,), queue=queue)
        wait_for(lambda: f"Task tasks.sleep[{held.id}] received" in celery_side.log.read_text(), 20, "Celery took it")
        assert redis.Redis.from_url(redis_url).hlen("unacked") == 1  # in flight on Celery, no rqueue lease
        celery_side.kill()
        killed_at = time.monotonic()
        write_config(
            rproject, "celery_visibility", "broker_transport_options = {'visibility_timeout': 3}\n", monkeypatch
        )
        rproject.start_worker("-c", "1", "-Q", queue)
        assert held.get(timeout=40) == 2
        restored_after = time.monotonic() - killed_at
        print(f"done {restored_after:.1f} s after the Celery worker died (visibility 3 s, sweeps every 5 s, task 2 s)")
        assert 3 <= restored_after < 30  # not before Celery's visibility, and far sooner than kombu's default hour
    finally:
        producer.close()


def test_a_bad_celery_visibility_timeout_is_a_clear_error() -> None:
    app = App("badvis", broker="redis://127.0.0.1:1/0")
    app.conf.broker_transport_options = {"visibility_timeout": "soon"}
    with pytest.raises(Exception, match=r"broker_transport_options\['visibility_timeout'\] must be a positive number"):
        app.broker  # noqa: B018 - opening the broker checks its options


# -- 4. Remote control across the two: kombu's pidbox ----------------------------------------------------


def test_celery_inspect_and_control_reach_an_rqueue_worker(rproject: Project, celery_producer: Any) -> None:
    rproject.start_worker("-c", "1", "-n", "rq1@test")
    inspect = celery_producer.control.inspect(destination=["rq1@test"], timeout=5)
    assert inspect.ping() == {"rq1@test": {"ok": "pong"}}
    assert "tasks.add" in inspect.registered()["rq1@test"]
    replies = celery_producer.control.rate_limit("tasks.nope", "1/s", destination=["rq1@test"], reply=True, timeout=5)
    assert replies == [{"rq1@test": {"error": "unknown task 'tasks.nope'"}}]


def test_rqueue_inspect_reaches_a_celery_worker(redis_url: str, celery_worker: tuple[CeleryWorker, str]) -> None:
    _, queue = celery_worker
    app = App("producer", broker=redis_url, backend=redis_url)
    replies = app.control.ping(timeout=3)
    [(name, reply)] = [item for r in replies for item in r.items()]
    assert name.startswith(f"interop-{queue}@")
    assert reply == {"ok": "pong"}
    active = app.control.inspect(destination=[name], timeout=5).active_queues()
    assert active is not None and [q["name"] for q in active[name]] == [queue]


# -- 5. time limits sent by Celery ---------------------------------------------------------------------


def test_celery_time_limits_are_honoured_by_an_rqueue_worker(rproject: Project, celery_producer: Any) -> None:
    worker = rproject.start_worker("-c", "1")
    hard = celery_producer.send_task("tasks.sleep", (30,), time_limit=1)  # header timelimit = [1, None]
    with pytest.raises(Exception) as raised:  # Celery rebuilds the type: checked below
        hard.get(timeout=30)
    assert type(raised.value).__name__ == "TimeLimitExceeded"
    assert hard.state == "FAILURE"
    worker.wait_for_log(f"Hard time limit (1s) exceeded for tasks.sleep[{hard.id}]")
    soft = celery_producer.send_task("tasks.soft_limited", (30, "celery-soft"), soft_time_limit=0.25)
    assert soft.get(timeout=30) == "caught: soft time limit (0.25s) exceeded"


# -- 3. chains and links across the two --------------------------------------------------------------


def test_celery_chain_and_link_run_on_rqueue_workers(rproject: Project, celery_producer: Any) -> None:
    rproject.start_worker("-c", "1")
    add = celery_producer.signature("tasks.add")
    result = celery.chain(add.clone((4, 4)), add.clone((8,)), add.clone((1,)))()
    assert result.get(timeout=20) == 17
    linked = celery_producer.send_task(
        "tasks.add", (1, 2), link=celery_producer.signature("tasks.record", ("via-link",), immutable=True)
    )
    assert linked.get(timeout=20) == 3
    wait_for(lambda: rproject.ledger_count("via-link") == 1, 20, "the linked task ran")


def test_rqueue_chain_runs_on_a_celery_worker(redis_url: str, celery_worker: tuple[CeleryWorker, str]) -> None:
    _, queue = celery_worker
    app = App("producer", broker=redis_url, backend=redis_url)
    first = app.signature("tasks.add", (2, 2), queue=queue)
    result = (first | app.signature("tasks.add", (10,), queue=queue) | app.signature("tasks.add", (1,), queue=queue))()
    assert result.get(timeout=20) == 15


# -- 4. groups and chords across the two ---------------------------------------------------------------


def test_celery_group_chord_and_link_run_on_rqueue_workers(rproject: Project, celery_producer: Any) -> None:
    rproject.start_worker("-c", "2")
    add, xsum = celery_producer.signature("tasks.add"), celery_producer.signature("tasks.xsum")
    grouped = celery.group(add.clone((i, i)) for i in range(10))()
    assert grouped.get(timeout=30) == [i + i for i in range(10)]
    joined = celery.chord((add.clone((i, i)) for i in range(10)), xsum)()
    assert joined.get(timeout=30) == 90
    flow = celery.chain(add.clone((4, 4)), celery.group(add.clone((1,)), add.clone((2,))), xsum)()
    assert flow.get(timeout=30) == 19
    failing = celery.chord([add.clone((1, 1)), celery_producer.signature("tasks.fail", ("header",))], xsum)()
    with pytest.raises(Exception, match="header"):
        failing.get(timeout=30)  # Celery raises the header's failure (its parent) first
    wait_for(lambda: failing.state == "FAILURE", 30, "the body stored as failed")
    assert type(failing.result).__name__ == "ChordError"


def test_rqueue_group_and_chord_run_on_a_celery_worker(redis_url: str, celery_worker: tuple[CeleryWorker, str]) -> None:
    from rqueue import chord, group

    _, queue = celery_worker
    app = App("producer", broker=redis_url, backend=redis_url)
    add, xsum = app.signature("tasks.add", queue=queue), app.signature("tasks.xsum", queue=queue)
    assert group(add.clone((i, i)) for i in range(5))().get(timeout=30) == [0, 2, 4, 6, 8]
    assert chord((add.clone((i, i)) for i in range(5)), xsum)().get(timeout=30) == 20
    flow = (add.clone((1, 1)) | group(add.clone((1,)), add.clone((2,))) | xsum)()
    assert flow.get(timeout=30) == 7


def test_a_chord_whose_header_runs_on_celery_and_rqueue_fires_its_body_once(
    rproject: Project, redis_url: str, celery_worker: tuple[CeleryWorker, str]
) -> None:
    """Header members on both kinds of worker: they count in the same Celery keys, and whichever
    counts last fires the body, once."""
    from rqueue import chord

    _, celery_queue = celery_worker
    rproject.start_worker("-c", "2")
    tasks = rproject.app()
    header = [tasks.add.s(i, i).set(queue=celery_queue if i % 2 else "celery") for i in range(20)]
    body = tasks.record_sum.s()
    result = chord(header, body)()
    assert result.get(timeout=60) == sum(i + i for i in range(20))
    time.sleep(1)
    assert rproject.ledger_count(f"sum:{sum(i + i for i in range(20))}") == 1
