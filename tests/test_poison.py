"""R5: a message that kills its worker is dead-lettered after broker_max_deliveries; others are unaffected."""

from __future__ import annotations

import time

import pytest

from conftest import Project


@pytest.mark.slow
def test_r5_poison_dead_lettered_after_max_deliveries_while_normal_and_flaky_tasks_complete(
    broker_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    (broker_project.root / "poisoncfg.py").write_text("broker_max_deliveries = 3\n")
    monkeypatch.setenv("TEST_CONFIG_MODULE", "poisoncfg")
    tasks = broker_project.app()
    poison = tasks.kill_worker.delay("killer")
    normal = tasks.add.delay_many([(i, i) for i in range(2000)])
    flaky = tasks.flaky.delay("flaky", 2)
    failing = tasks.fail.delay("always")
    worker = broker_project.start_worker("-c", "2")
    started = time.monotonic()
    assert [r.get(timeout=60) for r in normal] == [2 * i for i in range(2000)]
    normal_s = time.monotonic() - started
    # Exactly 3 runs: the poison came back twice, and before each a worker wrote the work it had
    # finished, so the death re-ran nothing else (a run of flaky's included).
    assert flaky.get(timeout=60) == 2 and broker_project.ledger_count("flaky") == 3
    with pytest.raises(tasks.CustomError):
        failing.get(timeout=60)
    deadline = time.monotonic() + 60
    while not tasks.app.broker.dead_letters("celery") and time.monotonic() < deadline:
        time.sleep(0.1)
    (dead,) = tasks.app.broker.dead_letters("celery")  # only the poison: its neighbours were not counted
    assert dead.reason == "worker_lost" and poison.id.encode() in dead.payload
    assert broker_project.ledger_count("killer") == 3  # delivered broker_max_deliveries times, then set aside
    assert worker.proc.poll() is None
    print(
        f"\nR5 [{broker_project.kind}] normal tasks={len(normal)} all SUCCESS in {normal_s:.2f}s; "
        f"flaky runs={broker_project.ledger_count('flaky')}; always-raising: {failing.state}; "
        f"killer runs={broker_project.ledger_count('killer')}, then dead-lettered ({dead.reason}); "
        f"dead letters={len(tasks.app.broker.dead_letters('celery'))}"
    )
