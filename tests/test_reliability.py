"""Reliability scenarios of docs/reliability.md (R1, R3, R4, R7, R8) with real workers started
through the CLI, real brokers and real signals.

The ledger (a SQLite file the test tasks append to, with a trigger stamping each row's time) is
the independent record of executions: lost = sent but never in the ledger; duplicates = ledger
rows beyond the first per task. Each scenario prints its figures.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from conftest import Project, RedisServer, WorkerProcess
from rqueue import chord

#: The supervisor and every child of a worker are in one process group (start_new_session).
RECEIVED = re.compile(r"Task tasks\.\w+\[([0-9a-f-]+)\] received")
SUCCEEDED = re.compile(r"Task tasks\.\w+\[([0-9a-f-]+)\] succeeded in")

#: Sweep interval of the transports' consumer threads (seconds): how often expired leases are looked for.
SWEEP_S = 5.0


# -- helpers -------------------------------------------------------------------------------------------


def ledger(project: Project) -> list[tuple[str, float]]:
    """``(key, unix time)`` of every execution, in the order recorded."""
    return [(key, at) for key, _pid, at in project.ledger_rows()]


def ledger_counts(project: Project) -> Counter[str]:
    return Counter(key for key, _ in ledger(project))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll until ``predicate()``; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


def use_config(project: Project, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings module in the project, read by ``tasks.py`` through $TEST_CONFIG_MODULE."""
    name = f"relcfg_{uuid.uuid4().hex[:8]}"  # unique: the test process imports it too
    (project.root / f"{name}.py").write_text(text)
    monkeypatch.setenv("TEST_CONFIG_MODULE", name)


def kill_group(worker: WorkerProcess) -> None:
    """SIGKILL the worker's whole process group (supervisor and children): nothing gets to clean up."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)


#: A task's outcome is recorded (result, then ack) right after its "succeeded" line; one that died
#: within this long after that line was still completing, i.e. running.
COMPLETING_S = 0.02
SUCCEEDED_AT = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): [^\]]*\] Task [\w.]+\[([0-9a-f-]+)\] succeeded", re.M
)


def received_not_finished(worker: WorkerProcess, killed_at: float) -> set[str]:
    """Task ids the (dead) worker started and had not finished recording when it was killed at
    ``killed_at`` (epoch seconds): those running when it died."""
    text = worker.log_text()
    done_before = {
        task_id
        for stamp, task_id in SUCCEEDED_AT.findall(text)
        if datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() < killed_at - COMPLETING_S
    }
    return set(RECEIVED.findall(text)) - done_before


def received_counts(workers: list[WorkerProcess]) -> Counter[str]:
    return Counter(i for w in workers for i in RECEIVED.findall(w.log_text()))


def cleanup(project: Project) -> None:
    for worker in project.workers:
        if worker.proc.poll() is None:
            kill_group(worker)
    sys.modules.pop("tasks", None)


# -- R1: one of two workers SIGKILLed every 2 s ---------------------------------------------------------


@pytest.mark.slow
def test_r1_sigkill_one_of_two_workers_every_two_seconds(
    broker_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scaled from 2,000 tasks of 20-200 ms (2 cores): 500 tasks of 10-100 ms, 2 workers of -c 2."""
    visibility, concurrency, n, max_kills = 3, 2, 500, 5
    use_config(broker_project, f"broker_visibility_timeout = {visibility}\n", monkeypatch)
    tasks = broker_project.app()
    rng = random.Random(20240601)
    calls = [(rng.randint(10, 100) / 1000, f"r1-{i}") for i in range(n)]
    workers = [broker_project.start_worker("-c", str(concurrency), "-n", f"w{slot}@%h") for slot in range(2)]
    started = time.monotonic()
    results = tasks.sleep.delay_many(calls)
    key_of = {r.id: key for r, (_, key) in zip(results, calls, strict=True)}

    def done() -> int:
        return len(ledger_counts(broker_project))

    kills, last_kill = 0, started
    running_at_kills: set[str] = set()  # received by a killed worker, never logged as finished
    finished_on_killed: set[str] = set()  # logged as succeeded by a worker that was then killed
    while done() < n and kills < max_kills:
        next_kill = started + 2.0 * (kills + 1)
        while time.monotonic() < next_kill and done() < n:
            time.sleep(0.05)
        if done() >= n:
            break
        slot = kills % 2
        victim = workers[slot]
        killed_at = time.time()
        kill_group(victim)
        last_kill = time.monotonic()
        kills += 1
        running_at_kills |= received_not_finished(victim, killed_at)
        finished_on_killed |= set(SUCCEEDED.findall(victim.log_text()))
        workers[slot] = broker_project.start_worker("-c", str(concurrency), "-n", f"w{slot}@%h")

    wait_for(lambda: done() >= n, 60, f"all {n} tasks in the ledger (done: {done()})", interval=0.1)
    finished = time.monotonic()
    assert [r.get(timeout=30) for r in results] == [seconds for seconds, _ in calls]
    assert all(r.state == "SUCCESS" for r in results)

    counts = ledger_counts(broker_project)
    lost = [key for _, key in calls if counts[key] == 0]
    duplicates = sum(c - 1 for c in counts.values())
    duplicated_ids = {i for i, key in key_of.items() if counts[key] > 1}
    print(
        f"\nR1 [{broker_project.kind}] tasks={n} kills={kills} running-at-kills={len(running_at_kills)} "
        f"lost={len(lost)} duplicates={duplicates} total={finished - started:.1f}s "
        f"recovery-after-last-kill={finished - last_kill:.1f}s"
    )
    assert kills >= 2, "the load finished before the kills could test anything"
    assert lost == []
    assert set(counts) == {key for _, key in calls}  # nothing unexpected ran
    not_running = duplicated_ids - running_at_kills
    assert not not_running, (
        f"only tasks running at a kill may run twice, but {len(not_running)} others did; "
        f"{len(not_running & finished_on_killed)} of them had finished (succeeded logged) on a worker killed later"
    )
    assert duplicates <= kills * concurrency  # at most one task in flight per child at each kill


# -- R3: SIGTERM during load -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["busy", "idle"])
def test_r3_sigterm_returns_unstarted_messages_at_once(broker_project: Project, moment: str) -> None:
    n = 40
    tasks = broker_project.app()
    worker = broker_project.start_worker("-c", "2", "--prefetch-multiplier", "4")
    calls = [(0.3, f"r3-{i}") for i in range(n)]
    if moment == "busy":
        results = tasks.sleep.delay_many(calls)
        wait_for(lambda: broker_project.ledger_count() >= 2, 30, "some tasks done")
    else:
        # The worker has been idle-polling an empty queue; the batch and the signal arrive together.
        time.sleep(1.0)
        results = tasks.sleep.delay_many(calls)
    worker.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert worker.proc.wait(30) == 0
    exited = time.monotonic()
    ran = broker_project.ledger_count()
    broker = tasks.app.broker
    back_after = wait_for(lambda: broker.queue_length("celery") == n - ran, 1.0, f"{n - ran} messages back")
    print(
        f"\nR3 [{broker_project.kind}/{moment}] ran-before-exit={ran} returned={n - ran} "
        f"shutdown={exited - signalled:.2f}s back-in-queue-after-exit={back_after:.3f}s"
    )
    assert "Warm shutdown" in worker.log_text()

    broker_project.start_worker("-c", "2")
    assert [r.get(timeout=60) for r in results] == [0.3] * n
    counts = ledger_counts(broker_project)
    assert [counts[key] for _, key in calls] == [1] * n  # lost = 0, and a warm shutdown duplicates nothing


@pytest.mark.slow
def test_r3_sigterm_of_an_idle_worker_is_prompt_and_takes_nothing(broker_project: Project) -> None:
    tasks = broker_project.app()
    worker = broker_project.start_worker("-c", "2")
    time.sleep(1.0)  # idle-polling
    signalled = time.monotonic()
    assert worker.stop() == 0
    shutdown_s = time.monotonic() - signalled
    print(f"\nR3 [{broker_project.kind}/idle-only] shutdown={shutdown_s:.2f}s")
    assert shutdown_s < 10
    results = tasks.record.delay_many([(f"after-{i}",) for i in range(5)])
    assert tasks.app.broker.queue_length("celery") == 5
    broker_project.start_worker("-c", "1")
    assert [r.get(timeout=30) for r in results] == [1] * 5


# -- R4: Redis killed and restarted under load -----------------------------------------------------------


@pytest.fixture
def r4(tmp_path: Path) -> Iterator[tuple[RedisServer, Project]]:
    (tmp_path / "redis").mkdir()
    (tmp_path / "project").mkdir()
    server = RedisServer(tmp_path / "redis", persistent=True)
    project = Project(tmp_path / "project", "redis", server.url)
    try:
        yield server, project
    finally:
        cleanup(project)
        server.stop()


@pytest.mark.slow
@pytest.mark.redis
def test_r4_worker_resumes_after_redis_is_killed_and_restarted(r4: tuple[RedisServer, Project]) -> None:
    import redis

    server, project = r4
    n = 500
    tasks = project.app()
    results = tasks.sleep.delay_many([(0.02, f"r4-{i}") for i in range(n)])
    worker = project.start_worker("-c", "2")
    wait_for(lambda: project.ledger_count() >= 50, 30, "the worker is draining")

    client = redis.Redis.from_url(server.url, socket_timeout=5, socket_connect_timeout=5)
    waiting_before = int(client.llen("celery"))
    client.close()
    server.stop()  # SIGKILL
    time.sleep(2.0)
    assert worker.proc.poll() is None, "the worker must survive the outage"
    server.start()
    restarted = time.monotonic()

    client = redis.Redis.from_url(server.url, socket_timeout=5, socket_connect_timeout=5)
    try:
        waiting_after_restart = int(client.llen("celery"))
        # 20 messages fewer than before the kill: the worker is consuming again (not its prefetch).
        wait_for(lambda: int(client.llen("celery")) <= waiting_before - 20, 10, "consuming resumed")
        resume_s = time.monotonic() - restarted
    finally:
        client.close()
    wait_for(lambda: len(ledger_counts(project)) >= n, 60, "all tasks ran", interval=0.1)
    assert [r.get(timeout=30) for r in results] == [0.02] * n
    assert all(r.state == "SUCCESS" for r in results)
    counts = ledger_counts(project)
    lost = [i for i in range(n) if counts[f"r4-{i}"] == 0]
    duplicates = sum(c - 1 for c in counts.values())
    print(
        f"\nR4 waiting-before-kill={waiting_before} waiting-after-restart={waiting_after_restart} "
        f"resumed-after={resume_s:.2f}s lost={len(lost)} duplicates={duplicates}"
    )
    assert resume_s <= 10
    assert lost == []
    assert worker.proc.poll() is None and len(project.workers) == 1  # no manual restart


# -- R7: ETA beyond the visibility timeout ---------------------------------------------------------------


@pytest.mark.slow
def test_r7_eta_beyond_visibility_timeout_runs_once_not_early(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    visibility, countdown = 2, 5.0
    use_config(project, f"broker_visibility_timeout = {visibility}\n", monkeypatch)
    tasks = project.app()
    workers = [project.start_worker("-c", "2"), project.start_worker("-c", "1")]
    due: dict[str, float] = {}
    results = []
    for i in range(6):
        key = f"r7-{i}"
        due[key] = time.time() + countdown
        results.append(tasks.record.apply_async((key,), countdown=countdown))
    assert [r.get(timeout=countdown + 20) for r in results] == [1] * 6
    time.sleep(visibility + SWEEP_S + 1)  # a redelivery of any of them would have run by now
    rows = ledger(project)
    counts = Counter(key for key, _ in rows)
    early = {key: round(due[key] - at, 3) for key, at in rows if at < due[key] - 0.25}
    lateness = [at - due[key] for key, at in rows]
    print(
        f"\nR7 [{project.kind}] tasks=6 countdown={countdown}s visibility={visibility}s runs={len(rows)} "
        f"ran {min(lateness):.3f}..{max(lateness):.3f}s after their ETA"
    )
    assert counts == dict.fromkeys(due, 1)
    assert early == {}
    assert received_counts(workers) == Counter({r.id: 1 for r in results})


# -- R8: a task longer than the visibility timeout --------------------------------------------------------


@pytest.mark.slow
def test_r8_task_longer_than_visibility_timeout_runs_once(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    visibility, seconds = 2, 6
    use_config(project, f"broker_visibility_timeout = {visibility}\n", monkeypatch)
    tasks = project.app()
    # Three processes for two long tasks: an idle one would pick up a message whose lease lapsed.
    workers = [project.start_worker("-c", "2"), project.start_worker("-c", "1")]
    results = [tasks.sleep.delay(seconds, f"r8-{i}") for i in range(2)]
    assert [r.get(timeout=seconds + 30) for r in results] == [seconds] * 2
    time.sleep(visibility + 1)  # past the last moment an expired lease could have been swept and received
    counts = ledger_counts(project)
    received = received_counts(workers)
    print(f"\nR8 [{project.kind}] visibility={visibility}s task={seconds}s runs={dict(counts)}")
    assert counts == {"r8-0": 1, "r8-1": 1}
    assert received == Counter({r.id: 1 for r in results})
    assert tasks.app.broker.queue_length("celery") == 0


# -- a chord's header while a worker is SIGKILLed ----------------------------------------------------------


@pytest.mark.slow
def test_chord_of_200_fires_its_body_once_with_the_right_value_across_a_sigkill(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Header members running on the killed worker are delivered again and run twice; each is
    counted once, and the body runs once, with every member's value in header order."""
    use_config(project, "broker_visibility_timeout = 3\n", monkeypatch)
    tasks = project.app()
    workers = [project.start_worker("-c", "2", "-n", f"c{slot}@%h") for slot in range(2)]
    header = [tasks.sleep.s((i % 5 + 1) / 100, f"chord-{i}") for i in range(200)]
    expected = sum((i % 5 + 1) / 100 for i in range(200))
    result = chord(header, tasks.record_sum.s())()
    wait_for(lambda: len(ledger_counts(project)) >= 40, 60, "a fifth of the header ran")
    killed_at = time.time()
    kill_group(workers[0])
    running = received_not_finished(workers[0], killed_at)
    workers[0] = project.start_worker("-c", "2", "-n", "c0@%h")
    assert result.get(timeout=120) == pytest.approx(expected)
    time.sleep(2)  # a second firing of the body would be in the ledger by now
    counts = ledger_counts(project)
    fired = [key for key in counts if key.startswith("sum:")]
    print(
        f"\nchord-sigkill [{project.kind}] header=200 running-at-kill={len(running)} "
        f"ran-twice={sum(1 for k, c in counts.items() if k.startswith('chord-') and c > 1)} body-runs={len(fired)}"
    )
    assert len(fired) == 1 and counts[fired[0]] == 1
    assert all(counts[f"chord-{i}"] >= 1 for i in range(200))
    cleanup(project)
