"""Periodic tasks: entries checked at start-up, one leader among several beats, each tick sent once
(also when the leader is SIGKILLed), missed ticks sent once, DST days with an injected clock, and
``worker -B`` on two workers. Processes are real: beats and workers started through the CLI."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, WorkerProcess, rqueue_cmd
from rqueue import App
from rqueue.beat import Beat, tick_task_id
from rqueue.exceptions import ConfigurationError, ScheduleError
from rqueue.schedules import crontab

#: The lease the process tests run with (the default) and the failover gap they accept: a new
#: leader within lease * 7/6 of the last renewal, plus up to one interval and the worker's pickup.
LEASE_S = 3.0
MAX_GAP_S = 5.0


def _app(tmp_path: Path, **settings: Any) -> App:
    app = App("beattest", broker=f"sqlite:///{tmp_path / 'broker.sqlite3'}", set_as_current=False, **settings)

    @app.task(name="beattest.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


class Clock:
    """An injectable wall clock in epoch ms."""

    def __init__(self, start: datetime) -> None:
        self.ms = int(start.timestamp() * 1000)

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


# -- entries are checked at start-up -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ({"task": "beattest.nope", "schedule": 5}, "task", "task 'beattest.nope' is not registered"),
        ({"task": "beattest.add", "schedule": crontab(minute="61")}, "minute", "crontab minute='61'"),
        ({"task": "beattest.add", "schedule": -1.0}, "schedule", "at least 1 ms"),
        ({"task": "beattest.add"}, "schedule", "'schedule' is missing"),
        ({"task": "beattest.add", "schedule": 5, "every": 5}, "every", "unknown key"),
        ({"task": "beattest.add", "schedule": 5, "args": 3}, "args", "'args' must be a list"),
        ({"task": "beattest.add", "schedule": 5, "options": {"task_id": "x"}}, "options", "task_id cannot be used"),
        ({"task": "beattest.add", "schedule": 5, "args": (object(),)}, "options", "cannot be sent"),
    ],
)
def test_beat_bad_entry_is_an_error_naming_the_entry_and_field(
    tmp_path: Path, entry: dict[str, Any], field: str, message: str
) -> None:
    app = _app(tmp_path, beat_schedule={"nightly": entry})
    with pytest.raises(ScheduleError, match=message) as caught:
        Beat(app)
    assert caught.value.entry == "nightly"
    assert caught.value.field == field
    assert str(caught.value).startswith("beat_schedule entry 'nightly': ")


def test_beat_on_rabbitmq_without_a_redis_or_sqlite_backend_is_a_clear_error(tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.conf.broker_url = "amqp://guest:secret@127.0.0.1:1//"
    with pytest.raises(
        ConfigurationError, match=r"a Redis, SQLite or PostgreSQL result_backend to hold the leader lease"
    ) as caught:
        Beat(app)
    assert "result_backend is disabled" in str(caught.value)
    assert "secret" not in str(caught.value)
    app.conf.result_backend = "rpc://"
    with pytest.raises(ConfigurationError, match=r"result_backend is rpc://"):
        Beat(app)


def test_beat_unknown_timezone_is_a_clear_error(tmp_path: Path) -> None:
    app = _app(tmp_path, timezone="Europe/Atlantis")
    with pytest.raises(ConfigurationError, match="timezone 'Europe/Atlantis' is not a known time zone"):
        Beat(app)


def test_add_periodic_task_from_on_after_configure(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.on_after_configure.connect
    def setup(sender: App, **kwargs: Any) -> None:
        sender.add_periodic_task(10.0, sender.tasks["beattest.add"].s(2, 2), name="add every 10")
        sender.add_periodic_task(crontab(0, 7, "mon"), sender.tasks["beattest.add"].s(1, 1), queue="low")

    beat = Beat(app)
    by_name = {e.name: e for e in beat.entries}
    assert set(by_name) == {"add every 10", "beattest.add(1, 1)"}
    assert by_name["add every 10"].args == (2, 2)
    assert by_name["beattest.add(1, 1)"].options == {"queue": "low"}


# -- one beat, an injected clock -------------------------------------------------------------------


def test_beat_missed_ticks_are_sent_once_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = _app(tmp_path, beat_schedule={"minutely": {"task": "beattest.add", "schedule": 60.0, "args": (1, 2)}})
    clock = Clock(datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc))
    beat = Beat(app, clock_ms=clock)
    start = clock.ms
    with caplog.at_level(logging.INFO, logger="rqueue.beat"):
        beat.tick()
        assert beat.leader
        clock.advance(60)
        beat.tick()
        clock.advance(600.5)  # 10 runs missed
        beat.tick()
        beat.tick()
    sent = [r.getMessage() for r in caplog.records if "Sending due task" in r.getMessage()]
    assert sent == ["Scheduler: Sending due task minutely (beattest.add)"] * 2
    assert any("missed its runs" in r.getMessage() for r in caplog.records)
    assert beat.broker.queue_length("celery") == 2
    assert beat.store.beat_runs("beattest") == {"minutely": start + 660_000}  # on the schedule's grid
    beat.close()


def test_beat_send_whose_reply_was_lost_is_not_sent_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The broker carried out a send whose reply never came: the retry is refused as already sent."""
    app = _app(tmp_path, beat_schedule={"minutely": {"task": "beattest.add", "schedule": 60.0}})
    clock = Clock(datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc))
    beat = Beat(app, clock_ms=clock)
    beat.tick()
    clock.advance(60)
    due = beat._next["minutely"]
    assert beat.store.beat_send(beat.name, beat.token, "minutely", due, "celery", b"sent, reply lost", 0, None) == 1
    with caplog.at_level(logging.INFO, logger="rqueue.beat"):
        beat.tick()
    assert any("was sent already" in r.getMessage() for r in caplog.records)
    assert beat.broker.queue_length("celery") == 1
    clock.advance(60)
    beat.tick()
    assert beat.broker.queue_length("celery") == 2
    beat.close()


@pytest.mark.parametrize(
    ("zone", "start", "hours"),
    [
        ("Europe/Oslo", datetime(2026, 3, 28, 23, 0, tzinfo=timezone.utc), 4),  # spring forward
        ("Europe/Oslo", datetime(2026, 10, 24, 22, 0, tzinfo=timezone.utc), 5),  # fall back
        ("America/New_York", datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc), 6),  # fall back (01:30 twice)
    ],
)
def test_beat_daily_crontab_runs_once_on_dst_days(tmp_path: Path, zone: str, start: datetime, hours: int) -> None:
    when = crontab(30, 1 if zone == "America/New_York" else 2)
    app = _app(tmp_path, timezone=zone, beat_schedule={"daily": {"task": "beattest.add", "schedule": when}})
    clock = Clock(start)
    beat = Beat(app, clock_ms=clock)
    for _ in range(hours * 60):
        beat.tick()
        clock.advance(60)
    assert beat.broker.queue_length("celery") == 1
    beat.close()


def test_beat_deposed_leader_is_fenced_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A leader that was paused past its lease still believes it leads: its send is refused."""
    schedule = {"fast": {"task": "beattest.add", "schedule": 0.05, "args": (1, 1)}}
    old = Beat(_app(tmp_path, beat_schedule=schedule, beat_lease_s=0.3))
    new = Beat(_app(tmp_path, beat_schedule=schedule, beat_lease_s=0.3))
    old.tick()
    assert old.leader
    time.sleep(0.4)  # the old leader is "paused": its lease lapses
    new.tick()
    assert new.leader
    old._elect_at = time.monotonic() + 60  # it does not renew first: straight to sending
    with caplog.at_level(logging.INFO, logger="rqueue.beat"):
        old.tick()
    assert not old.leader
    assert any("lost the lease" in r.getMessage() for r in caplog.records)
    runs = new.store.beat_runs("beattest")
    time.sleep(0.06)
    new.tick()
    assert new.store.beat_runs("beattest")["fast"] > runs.get("fast", 0)
    new.close()
    old.close()


# -- processes through the CLI ---------------------------------------------------------------------


BEAT_CONFIG = """
beat_schedule = {"tick-1s": {"task": "tasks.tick", "schedule": 1.0, "args": ("t",)}}
beat_lease_s = %r
"""


@pytest.fixture
def beat_project(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    (project.root / "beatconfig.py").write_text(BEAT_CONFIG % LEASE_S)
    monkeypatch.setenv("TEST_CONFIG_MODULE", "beatconfig")
    yield project


class BeatProcess:
    def __init__(self, project: Project, index: int, *args: str) -> None:
        self.log = project.root / f"beat-{index}.log"
        cmd = [*rqueue_cmd(), "-A", "tasks", "beat", "-l", "info", "-f", str(self.log), *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=project.root,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        self.proc.wait(10)


def _wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout_s} s")


def _ticks(project: Project) -> list[tuple[str, float]]:
    """``(task id, unix time)`` of every recorded run of ``tasks.tick``."""
    return [(key.split(":", 1)[1], at) for key, _, at in project.ledger_rows() if key.startswith("t:")]


def _assert_each_tick_once(project: Project, logs: list[str]) -> list[float]:
    ticks = _ticks(project)
    doubled = [tid for tid, n in Counter(tid for tid, _ in ticks).items() if n > 1]
    assert not doubled, f"ticks run twice: {doubled}"
    sends = sum(text.count("Scheduler: Sending due task tick-1s (tasks.tick)") for text in logs)
    # Every send is logged after its atomic step; a leader SIGKILLed in between logs one less.
    assert sends <= len(ticks) <= sends + 1, (sends, len(ticks))
    return sorted(at for _, at in ticks)


@pytest.mark.slow
def test_beat_three_processes_one_leader_survives_a_sigkill(beat_project: Project) -> None:
    """R16: three beats, an entry every second; the leader is SIGKILLed mid-way. Every tick is
    sent once, and the schedule resumes within the lease."""
    proj = beat_project
    proj.start_worker("-P", "threads", "-c", "4")
    beats = [BeatProcess(proj, i) for i in range(3)]
    try:
        leader = _wait_for(
            lambda: next((b for b in beats if "is now the leader" in b.text()), None), 15, "no beat became leader"
        )
        _wait_for(lambda: len(_ticks(proj)) >= 4, 15, "the leader's ticks did not run")
        leader.kill()
        killed_at = time.time()
        others = [b for b in beats if b is not leader]
        successor = _wait_for(
            lambda: next((b for b in others if "is now the leader" in b.text()), None),
            LEASE_S + 3,
            "no beat took over",
        )
        _wait_for(
            lambda: sum(at > killed_at for _, at in _ticks(proj)) >= 5,
            LEASE_S + 10,
            "the successor's ticks did not run",
        )
        leaders = sum("is now the leader" in b.text() for b in beats)
        for b in others:  # the first to stop gives the lease up: the other may lead until it stops too
            b.kill(signal.SIGTERM)
        time.sleep(1.0)  # the last ticks reach the worker
        times = _assert_each_tick_once(proj, [b.text() for b in beats])
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) <= MAX_GAP_S, gaps
        assert len(times) >= 9
        assert "missed its runs" in successor.text()
        assert leaders == 2
        assert all(b.proc.returncode == 0 for b in others)
    finally:
        for b in beats:
            b.kill()


def test_beat_list_prints_entries_with_next_run(beat_project: Project) -> None:
    done = beat_project.run_cli("-A", "tasks", "beat", "--list")
    assert done.returncode == 0, done.stderr
    name, task, sched, last, upcoming = done.stdout.strip().split("\t")
    assert (name, task, sched, last) == ("tick-1s", "tasks.tick", "<freq: 1 second>", "last: never")
    assert upcoming.startswith("next: 20")


def test_beat_cli_bad_entry_fails_with_one_clear_line(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    (project.root / "badbeat.py").write_text(
        "from rqueue.schedules import crontab\n"
        "beat_schedule = {'report': {'task': 'tasks.add', 'schedule': crontab(hour='25')}}\n"
    )
    monkeypatch.setenv("TEST_CONFIG_MODULE", "badbeat")
    done = project.run_cli("-A", "tasks", "beat")
    assert done.returncode == 1
    assert done.stderr.strip() == ("Error: beat_schedule entry 'report': crontab hour='25': 25 is out of range 0-23"), (
        done.stderr
    )


@pytest.fixture
def redis_beat_project(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    proj = Project(tmp_path, "redis", redis_url)
    (proj.root / "beatconfig.py").write_text(BEAT_CONFIG % LEASE_S)
    monkeypatch.setenv("TEST_CONFIG_MODULE", "beatconfig")
    yield proj
    proj.close()


@pytest.mark.redis
def test_worker_with_beat_on_two_workers_sends_each_tick_once(redis_beat_project: Project) -> None:
    proj = redis_beat_project
    workers: list[WorkerProcess] = [
        proj.start_worker("-B", "-c", "1", "-n", f"w{i}@%h", wait_ready=False) for i in range(2)
    ]
    for w in workers:
        w.wait_for_log("ready.")
    _wait_for(lambda: len(_ticks(proj)) >= 6, 20, "six ticks did not run")
    running = [w.log_text() for w in workers]
    assert sum("is now the leader" in text for text in running) == 1
    assert sum("Sending due task" in text for text in running) == 1, "both workers' beats sent ticks"
    # Stopping, the leader gives its lease up: the other worker's beat may lead until it stops too.
    for w in workers:
        w.proc.send_signal(signal.SIGTERM)  # once: a second SIGTERM is a cold shutdown
    for w in workers:
        assert w.proc.wait(30) == 0
    _assert_each_tick_once(proj, [w.log_text() for w in workers])
    assert ".> beat:        1 periodic task, lease 3s" in workers[0].output()


def test_tick_task_ids_differ_per_tick_and_agree_across_beats() -> None:
    assert tick_task_id("app", "e", 1000) == tick_task_id("app", "e", 1000)
    assert len({tick_task_id("app", "e", 1000), tick_task_id("app", "e", 2000), tick_task_id("app", "f", 1000)}) == 3


def test_beat_runs_an_unmodified_celery_apps_schedule(tmp_path: Path) -> None:
    celery = pytest.importorskip("celery")
    from celery.schedules import crontab as celery_crontab

    from rqueue.from_celery import adopt

    capp = celery.Celery("celeryproj", broker=f"sqlite:///{tmp_path / 'unused.db'}", set_as_current=False)
    capp.conf.beat_schedule = {"nightly": {"task": "celeryproj.add", "schedule": celery_crontab(0, 3), "args": (1, 2)}}

    @capp.task(name="celeryproj.add")
    def add(x: int, y: int) -> int:
        return x + y

    @capp.on_after_configure.connect
    def setup(sender: Any, **kwargs: Any) -> None:
        sender.add_periodic_task(30.0, add.s(4, 4), name="every 30")

    app = adopt(capp)
    app.conf.broker_url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    entries = {e.name: e for e in Beat(app).entries}
    assert entries["nightly"].schedule == crontab(0, 3)
    assert entries["every 30"].args == (4, 4)


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_beat_on_rabbitmq_keeps_its_lease_in_the_redis_backend(tmp_path: Path, amqp_url: str, redis_url: str) -> None:
    """RabbitMQ cannot hold the lease: it lives in the Redis result backend, and each run is
    recorded there before its message is published to RabbitMQ; one leader still sends each run once."""
    schedule = {"minutely": {"task": "beattest.add", "schedule": 60.0, "args": (1, 2)}}
    clock = Clock(datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc))
    beats = []
    for _ in range(2):
        app = _app(tmp_path, beat_schedule=schedule)
        app.conf.update(broker_url=amqp_url, result_backend=redis_url)
        beats.append(Beat(app, clock_ms=clock))
    first, second = beats
    first.broker.prepare_consumer(["celery"], False)
    first.tick()
    second.tick()
    assert first.leader and not second.leader
    for _ in range(3):
        clock.advance(60)
        first.tick()
        second.tick()
    first.close()  # the lease is given up: the other continues where it stopped
    clock.advance(60)
    time.sleep(second.retry_s)  # its next try at the lease
    second.tick()
    assert second.leader
    second.tick()
    assert second.store.beat_runs("beattest") == {"minutely": clock.ms}
    _wait_for(lambda: first.broker.queue_length("celery") == 4, 5, "four messages did not reach RabbitMQ")
    second.close()
