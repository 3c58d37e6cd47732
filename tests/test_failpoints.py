"""R2: a crash injected at each step of a message (``RQUEUE_FAILPOINT``), on SQLite and Redis.

A prefork worker (-c 2) drains 200 tasks that append to the ledger; at the failpoint one child
SIGKILLs its supervisor and itself. A worker started afterwards without the failpoint finishes the
work once the dead worker's leases expire. Lost must be 0, every task ends with one SUCCESS, and
only messages the crashed worker had received may have run twice (at least once). Each scenario
prints its figures.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter

import pytest

from conftest import Project

#: ``point:N``: crash at the Nth message (the first three) or the Nth batch (the last two) of a child.
SCENARIOS = ["after_fetch:40", "after_decode:40", "during_run:40", "after_result:25", "after_ack:25"]
VISIBILITY_S = 2
TASKS = 200
RECEIVED = re.compile(r"/(ForkPoolWorker-\d+)\] Task tasks\.record\[([0-9a-f-]+)\] received")
CRASHED = re.compile(r"/(ForkPoolWorker-\d+)\] Failpoint \w+ reached")


def wait_for(predicate: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("spec", SCENARIOS)
def test_r2_crash_at_each_step_loses_nothing_and_keeps_one_result_per_task(
    project: Project, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    name = f"r2cfg_{uuid.uuid4().hex[:8]}"
    (project.root / f"{name}.py").write_text(f"broker_visibility_timeout = {VISIBILITY_S}\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", name)
    tasks = project.app()
    monkeypatch.setenv("RQUEUE_FAILPOINT", spec)
    crashing = project.start_worker("-c", "2")
    monkeypatch.delenv("RQUEUE_FAILPOINT")
    keys = [f"r2-{i}" for i in range(TASKS)]
    results = tasks.record.delay_many([(key,) for key in keys])
    key_of = {r.id: key for r, key in zip(results, keys, strict=True)}

    assert crashing.proc.wait(60) == -9, "the failpoint did not kill the worker"
    crashed = time.monotonic()
    done_at_crash = len({k for k, _pid, _at in project.ledger_rows()})
    assert f"Failpoint {spec.partition(':')[0]} reached" in crashing.log_text()
    assert done_at_crash < TASKS, "the load finished before the crash could test anything"

    project.start_worker("-c", "2")
    wait_for(lambda: len({k for k, _p, _a in project.ledger_rows()}) == TASKS, 60, "every task ran")
    values = [r.get(timeout=60) for r in results]
    recovery_s = time.monotonic() - crashed

    counts = Counter(key for key, _pid, _at in project.ledger_rows())
    lost = [key for key in keys if counts[key] == 0]
    duplicates = sum(c - 1 for c in counts.values())
    duplicated = {i for i, key in key_of.items() if counts[key] > 1}
    log = crashing.log_text()
    received = RECEIVED.findall(log)
    received_by_crashed = {task_id for _child, task_id in received}
    (crashed_child,) = CRASHED.findall(log)
    print(
        f"\nR2 [{project.kind}/{spec}] tasks={TASKS} done-before-crash={done_at_crash} lost={len(lost)} "
        f"duplicates={duplicates} recovery={recovery_s:.1f}s (visibility timeout {VISIBILITY_S}s)"
    )
    assert lost == []
    assert set(counts) == set(keys)  # nothing unexpected ran
    assert all(r.state == "SUCCESS" for r in results)
    # One final result per task: the value of one of its runs (a stored SUCCESS is never replaced).
    assert all(1 <= v <= counts[key_of[r.id]] for r, v in zip(results, values, strict=True))
    assert duplicated <= received_by_crashed, "only messages the crashed worker had started may run twice"
    if spec.startswith("after_result"):  # the crashed batch's results were stored: the re-run changed none
        # Only the crashing child's batch: it SIGKILLs its whole process group, so tasks its sibling
        # had run but not yet recorded run again (at least once) and keep their second value.
        crashed_batch = duplicated & {task_id for child, task_id in received if child == crashed_child}
        assert crashed_batch and all(v == 1 for r, v in zip(results, values, strict=True) if r.id in crashed_batch)
    assert tasks.app.broker.queue_length("celery") == 0 and tasks.app.broker.dead_letters("celery") == []


def test_an_unknown_failpoint_stops_the_worker_with_a_clear_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RQUEUE_FAILPOINT", "after_lunch")
    done = project.run_cli("-A", "tasks", "worker", timeout=60)
    assert done.returncode == 1
    assert "unknown failpoint 'after_lunch'; choose one of after_fetch, after_decode" in done.stderr
    monkeypatch.setenv("RQUEUE_FAILPOINT", "after_ack:0")
    done = project.run_cli("-A", "tasks", "worker", timeout=60)
    assert done.returncode == 1 and "must be a whole number >= 1" in done.stderr
