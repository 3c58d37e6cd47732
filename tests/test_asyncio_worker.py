"""The asyncio pool (``-P asyncio``) and ``async def`` tasks, through real workers started by the
CLI on SQLite and Redis: results and ``self.request`` across concurrent coroutines, retries, time
limits as cancellation, revoke with terminate, rate limits, warm and cold shutdown, SIGKILL
recovery (R1), sync tasks beside coroutines, async tasks under the prefork and solo pools, the
blocked-loop warning, and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, WorkerProcess
from rqueue import chord, group
from rqueue.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

HERE = Path(__file__).parent


class AsyncProject(Project):
    """A project whose app is ``tests/project/async_tasks.py``."""

    app_spec = "async_tasks"

    def __init__(self, root: Path, kind: str, redis_url: str | None = None, amqp_url: str | None = None) -> None:
        super().__init__(root, kind, redis_url, amqp_url)
        shutil.copy(HERE / "project" / "async_tasks.py", root / "async_tasks.py")

    def app(self) -> Any:
        os.environ.update(TEST_BROKER_URL=self.broker_url, TEST_BACKEND_URL=self.backend_url, LEDGER=str(self.ledger))
        sys.modules.pop("async_tasks", None)
        sys.path.insert(0, str(self.root))
        try:
            import async_tasks  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(self.root))
        return async_tasks

    def close(self) -> None:
        super().close()
        sys.modules.pop("async_tasks", None)


@pytest.fixture(params=["sqlite", "redis"])
def aproject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AsyncProject]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    proj = AsyncProject(tmp_path, request.param, redis_url)
    yield proj
    proj.close()


@pytest.fixture
def sqlite_aproject(tmp_path: Path) -> Iterator[AsyncProject]:
    proj = AsyncProject(tmp_path, "sqlite")
    yield proj
    proj.close()


def use_config(project: Project, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings module in the project, read by ``async_tasks.py`` through $TEST_CONFIG_MODULE."""
    name = f"aiocfg_{uuid.uuid4().hex[:8]}"
    (project.root / f"{name}.py").write_text(text)
    monkeypatch.setenv("TEST_CONFIG_MODULE", name)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def ledger_counts(project: Project) -> Counter[str]:
    return Counter(key for key, _, _ in project.ledger_rows())


def start_async(project: Project, *args: str) -> WorkerProcess:
    return project.start_worker("-P", "asyncio", *args)


# -- results, requests, concurrency ---------------------------------------------------------------------


def test_async_tasks_return_results_and_each_coroutine_sees_its_own_request(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    worker = start_async(aproject, "-c", "50")
    sums = [tasks.aadd.delay(i, 1) for i in range(20)]
    # 40 runs overlapping on one loop: each reads self.request before and after its await.
    mine = [tasks.whoami.delay(0.3 + (i % 5) / 10) for i in range(40)]
    assert [r.get(timeout=30) for r in sums] == [i + 1 for i in range(20)]
    for r in mine:
        seen = r.get(timeout=30)
        assert seen["before"] == seen["after"] == r.id
        assert len(seen["args"]) == 1
    assert worker.stop() == 0
    assert "concurrency: 50 (asyncio)" in worker.output()


def test_a_thousand_one_second_sleeps_run_concurrently_on_one_process(aproject: AsyncProject) -> None:
    """The concurrency proof: run one after another they would take 1,000 s; the bound is generous
    (a loaded 2-core machine), the figure itself is measured by benches/bench_asyncio.py."""
    tasks = aproject.app()
    worker = start_async(aproject, "-c", "1000")
    started = time.monotonic()
    results = tasks.nap.delay_many([(1.0,)] * 1000)
    assert [r.get(timeout=120) for r in results] == [1.0] * 1000
    elapsed = time.monotonic() - started
    print(f"\n1,000 x asyncio.sleep(1) on -P asyncio -c 1000 [{aproject.kind}]: {elapsed:.2f} s")
    assert elapsed < 60
    assert len(worker.child_pids()) == 0  # one process
    assert worker.stop() == 0


def test_retry_and_autoretry_for_in_async_tasks(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    start_async(aproject, "-c", "10")
    assert tasks.retry_twice.delay("retry").get(timeout=30) == 3
    assert tasks.flaky.delay("auto").get(timeout=30) == 3
    with pytest.raises(ValueError, match="boom"):
        tasks.afail.delay("boom").get(timeout=30)
    assert ledger_counts(aproject) == Counter({"retry": 3, "auto": 3})


def test_a_sync_task_runs_in_a_thread_of_the_asyncio_worker_with_its_request(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    start_async(aproject, "-c", "4")
    got = tasks.sync_add.delay(2, 3).get(timeout=30)
    assert got["sum"] == 5
    assert got["thread"].startswith("rqueue-aio-sync")
    r = tasks.sync_whoami.delay()
    assert r.get(timeout=30) == r.id


def test_task_hooks_and_signals_run_around_an_async_task(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    start_async(aproject, "-c", "4")
    r = tasks.hooked.delay()
    assert r.get(timeout=30) == r.id
    wait_for(lambda: len(ledger_counts(aproject)) >= 4, 10, "hooks recorded")
    keys = [key for key, _, _ in aproject.ledger_rows()]
    assert keys == ["prerun", f"on_success:{r.id}", "after_return:SUCCESS", "postrun:SUCCESS"]


def test_chords_chains_and_groups_of_async_tasks(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    start_async(aproject, "-c", "50")
    assert chord((tasks.aadd.s(i, i) for i in range(30)), tasks.asum.s())().get(timeout=30) == 870
    flow = tasks.aadd.s(4, 4) | group(tasks.aadd.s(1), tasks.amul.s(2)) | tasks.asum.s() | tasks.amul.s(10)
    assert flow().get(timeout=30) == 250
    assert group(tasks.amul.s(i, i) for i in range(20))().get(timeout=30) == [i * i for i in range(20)]


# -- time limits, terminate -----------------------------------------------------------------------------


def test_soft_time_limit_is_raised_at_the_await_and_can_be_caught(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    worker = start_async(aproject, "-c", "10")
    assert tasks.soft_caught.delay(30).get(timeout=30) == "caught soft limit 0.3"
    with pytest.raises(SoftTimeLimitExceeded):
        tasks.soft_uncaught.delay(30).get(timeout=30)
    assert "Soft time limit (0.3s) exceeded for async_tasks.soft_caught" in worker.log_text()


def test_a_sync_task_in_the_asyncio_pool_gets_its_soft_limit_in_its_thread(sqlite_aproject: AsyncProject) -> None:
    tasks = sqlite_aproject.app()
    start_async(sqlite_aproject, "-c", "4")
    assert tasks.sync_soft.delay().get(timeout=30) == "sync task caught its soft limit"


def test_hard_time_limit_cancels_the_coroutine_fails_the_task_and_acks(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    start_async(aproject, "-c", "10")
    result = tasks.hard_limited.delay(30, "hard")
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    assert aproject.ledger_count("hard") == 1  # its finally block ran on cancellation
    assert tasks.aadd.delay(1, 1).get(timeout=30) == 2  # the worker goes on
    time.sleep(0.5)
    assert tasks.app.broker.queue_length("celery") == 0
    assert aproject.ledger_count("hard") == 1  # acked: not run again


def test_a_coroutine_swallowing_its_cancellation_is_cancelled_again_and_fails(sqlite_aproject: AsyncProject) -> None:
    tasks = sqlite_aproject.app()
    worker = start_async(sqlite_aproject, "-c", "4")
    result = tasks.stubborn.delay("stubborn")
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    assert sqlite_aproject.ledger_count("stubborn") == 3
    assert f"Task async_tasks.stubborn[{result.id}] ignores its cancellation" in worker.log_text()


def test_revoke_with_terminate_cancels_the_running_coroutine(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    worker = start_async(aproject, "-c", "10")
    result = tasks.cancellable.delay(60, "term")
    other = tasks.nap.delay(1.0)
    wait_for(lambda: f"Task async_tasks.cancellable[{result.id}] received" in worker.log_text(), 30, "started")
    active = tasks.app.control.inspect(timeout=2.0).active() or {}
    running = [t["id"] for node in active.values() for t in node]
    assert result.id in running
    tasks.app.control.revoke(result.id, terminate=True)
    with pytest.raises(TaskRevokedError, match="terminated"):
        result.get(timeout=30)
    assert result.state == "REVOKED"
    assert other.get(timeout=30) == 1.0  # the other coroutine was not disturbed
    wait_for(lambda: aproject.ledger_count("term:cleanup") == 1, 10, "its cleanup recorded")
    assert aproject.ledger_count("term") == 0
    time.sleep(0.5)
    assert tasks.app.broker.queue_length("celery") == 0


def test_time_limit_set_by_remote_control_applies_to_coroutines(sqlite_aproject: AsyncProject) -> None:
    tasks = sqlite_aproject.app()
    start_async(sqlite_aproject, "-c", "4")
    reply = tasks.app.control.time_limit("async_tasks.nap", soft=0.2, hard=0.4, reply=True)
    assert any("ok" in r.get(node, {}) for r in reply for node in r), reply
    with pytest.raises(SoftTimeLimitExceeded):
        tasks.nap.delay(30).get(timeout=30)


# -- rate limits, acks, shutdown --------------------------------------------------------------------


def test_rate_limit_applies_to_async_tasks(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    start_async(aproject, "-c", "50")
    results = [tasks.limited.delay(f"rl-{i}") for i in range(10)]
    stamps = sorted(r.get(timeout=30) for r in results)
    # 5/s (a burst of 5, then one per 0.2 s): the last five spread over about a second, not all at once.
    assert stamps[-1] - stamps[0] >= 0.8, stamps
    assert stamps[-1] - stamps[5] >= 0.6, stamps


def test_rate_limit_set_by_remote_control_applies_to_the_asyncio_pool(sqlite_aproject: AsyncProject) -> None:
    tasks = sqlite_aproject.app()
    start_async(sqlite_aproject, "-c", "50")
    reply = tasks.app.control.rate_limit("async_tasks.nap", "4/s", reply=True)
    assert any("ok" in r.get(node, {}) for r in reply for node in r), reply
    started = time.monotonic()
    assert [r.get(timeout=30) for r in [tasks.nap.delay(0) for _ in range(12)]] == [0] * 12
    assert time.monotonic() - started >= 1.5  # 4 at once, then one per 0.25 s


def test_warm_shutdown_waits_for_running_coroutines_and_returns_the_unstarted(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    worker = start_async(aproject, "-c", "5")
    results = tasks.slow_record.delay_many([(1.5, f"warm-{i}") for i in range(20)])
    wait_for(lambda: worker.log_text().count("slow_record") >= 5, 30, "five running")
    time.sleep(0.3)
    assert worker.stop(signal.SIGTERM) == 0
    running = ledger_counts(aproject)
    assert len(running) == 5 and set(running.values()) == {1}  # the five running ones finished
    text = worker.log_text()
    assert "Returned" in text and "unstarted message(s) to the queue" in text
    start_async(aproject, "-c", "20")
    assert sorted(r.get(timeout=60) for r in results) == [1] * 20
    assert ledger_counts(aproject) == Counter({f"warm-{i}": 1 for i in range(20)})


def test_cold_shutdown_cancels_running_coroutines_and_returns_their_messages(aproject: AsyncProject) -> None:
    tasks = aproject.app()
    worker = start_async(aproject, "-c", "3")
    results = [tasks.cancellable.delay(3, f"cold-{i}") for i in range(3)]
    wait_for(lambda: worker.log_text().count("cancellable") >= 3, 30, "three running")
    time.sleep(0.3)
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    code = worker.stop(signal.SIGTERM, timeout=10)  # the second signal: cold
    assert code != 0
    assert "Cold shutdown" in worker.log_text()
    counts = ledger_counts(aproject)
    assert all(counts[f"cold-{i}:cleanup"] == 1 for i in range(3)), counts  # cancelled: cleanup ran
    assert all(counts[f"cold-{i}"] == 0 for i in range(3))
    start_async(aproject, "-c", "3")  # their messages came back: they run to the end now
    assert [r.get(timeout=60) for r in results] == ["finished"] * 3
    assert all(ledger_counts(aproject)[f"cold-{i}"] == 1 for i in range(3))


def test_r1_sigkill_mid_run_loses_no_async_task(aproject: AsyncProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """R1 for the asyncio pool: the worker SIGKILLed with 50 coroutines running; a new worker runs
    every message that was not finished; only those running at the kill may run twice."""
    visibility, concurrency, n = 2, 50, 300
    use_config(aproject, f"broker_visibility_timeout = {visibility}\n", monkeypatch)
    tasks = aproject.app()
    rng = random.Random(20261206)
    calls = [(rng.randint(100, 600) / 1000, f"r1-{i}") for i in range(n)]
    worker = start_async(aproject, "-c", str(concurrency))
    results = tasks.slow_record.delay_many(calls)
    wait_for(lambda: len(ledger_counts(aproject)) >= n // 3, 60, "a third done")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)
    done_at_kill = len(ledger_counts(aproject))
    start_async(aproject, "-c", str(concurrency))
    wait_for(lambda: len(ledger_counts(aproject)) >= n, 90, "all tasks in the ledger")
    assert all(r.get(timeout=30) >= 1 for r in results)
    counts = ledger_counts(aproject)
    lost = [key for _, key in calls if counts[key] == 0]
    duplicates = sum(c - 1 for c in counts.values())
    print(f"\nR1 asyncio [{aproject.kind}] tasks={n} done-at-kill={done_at_kill} lost={len(lost)} dup={duplicates}")
    assert lost == []
    assert set(counts) == {key for _, key in calls}
    assert duplicates <= concurrency  # only coroutines running at the kill


def test_r8_a_coroutine_longer_than_the_visibility_timeout_runs_once(
    aproject: AsyncProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_config(aproject, "broker_visibility_timeout = 2\n", monkeypatch)
    tasks = aproject.app()
    start_async(aproject, "-c", "10")
    start_async(aproject, "-c", "10", "-n", "second@%h")  # would take the message if its lease lapsed
    results = [tasks.nap.delay(5, f"long-{i}") for i in range(3)]
    assert [r.get(timeout=30) for r in results] == [5, 5, 5]
    time.sleep(2 + 1)
    assert ledger_counts(aproject) == Counter({f"long-{i}": 1 for i in range(3)})


# -- other pools, the blocked loop, the pool choice, bad input ------------------------------------------


@pytest.mark.parametrize("pool", ["prefork", "solo", "threads"])
def test_async_tasks_run_under_the_other_pools(sqlite_aproject: AsyncProject, pool: str) -> None:
    tasks = sqlite_aproject.app()
    worker = sqlite_aproject.start_worker("-P", pool, "-c", "2")
    assert tasks.aadd.delay(2, 2).get(timeout=30) == 4
    r = tasks.whoami.delay(0.1)
    assert r.get(timeout=30)["after"] == r.id
    assert tasks.soft_caught.delay(30).get(timeout=30) == "caught soft limit 0.3"
    assert tasks.retry_twice.delay(f"retry-{pool}").get(timeout=30) == 3
    assert worker.stop() == 0
    assert f"({pool})" in worker.output()


def test_a_coroutine_blocking_the_loop_is_named_in_a_warning(sqlite_aproject: AsyncProject) -> None:
    tasks = sqlite_aproject.app()
    worker = start_async(sqlite_aproject, "-c", "10")
    r = tasks.block_loop.delay(0.6)
    assert r.get(timeout=30) == 0.6
    text = worker.log_text()
    line = f"Task async_tasks.block_loop[{r.id}] has blocked the event loop"
    assert text.count(line) == 1, text  # once per episode
    tasks.aadd.delay(1, 2).get(timeout=30)  # a short task warns nothing
    assert "async_tasks.aadd" not in "".join(ln for ln in worker.log_text().splitlines() if "blocked" in ln)


def test_a_loop_blocked_outside_any_coroutine_is_reported_with_the_running_tasks(
    sqlite_aproject: AsyncProject,
) -> None:
    tasks = sqlite_aproject.app()
    worker = start_async(sqlite_aproject, "-c", "10")
    sleeper = tasks.nap.delay(3)
    wait_for(lambda: f"async_tasks.nap[{sleeper.id}] received" in worker.log_text(), 30, "nap running")
    assert tasks.slow_prerun.delay().get(timeout=30) == "ran"
    text = worker.log_text()
    assert "The event loop has been blocked for" in text and "outside any task's coroutine" in text
    assert f"async_tasks.nap[{sleeper.id}]" in text.split("outside any task's coroutine", 1)[1].splitlines()[0]


def test_a_worker_whose_tasks_are_all_coroutines_chooses_the_asyncio_pool(tmp_path: Path) -> None:
    (tmp_path / "only_async.py").write_text(
        "import os\nfrom rqueue import App\n"
        "app = App('only_async', broker=os.environ['TEST_BROKER_URL'])\n"
        "@app.task\nasync def ping():\n    return 'pong'\n"
    )
    proj = Project(tmp_path, "sqlite")
    proj.app_spec = "only_async"
    try:
        worker = proj.start_worker()
        text = worker.log_text()
        assert "using the asyncio pool" in text
        assert worker.stop() == 0
        assert "concurrency: 100 (asyncio)" in worker.output()
    finally:
        proj.close()


def test_asyncio_pool_bad_concurrency_is_refused_with_a_clear_error(sqlite_aproject: AsyncProject) -> None:
    done = sqlite_aproject.run_cli("-A", "async_tasks", "worker", "-P", "asyncio", "-c", "0")
    assert done.returncode == 2
    assert "-c" in done.stderr and "0" in done.stderr
    done = sqlite_aproject.run_cli("-A", "async_tasks", "worker", "-P", "asyncio", "-c", "many")
    assert done.returncode == 2 and "many" in done.stderr
    done = sqlite_aproject.run_cli("-A", "async_tasks", "worker", "-P", "gevent")
    assert done.returncode == 2 and "asyncio" in done.stderr


def test_a_bad_block_warning_threshold_is_refused(
    sqlite_aproject: AsyncProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_config(sqlite_aproject, "worker_async_block_warn_s = -1\n", monkeypatch)
    done = sqlite_aproject.run_cli("-A", "async_tasks", "worker", "-P", "asyncio")
    assert done.returncode != 0
    assert "worker_async_block_warn_s" in done.stderr and "positive" in done.stderr


def test_terminate_cancels_an_async_task_under_prefork(sqlite_aproject: AsyncProject) -> None:
    tasks = sqlite_aproject.app()
    worker = sqlite_aproject.start_worker("-P", "prefork", "-c", "2")
    result = tasks.cancellable.delay(60, "pterm")
    wait_for(lambda: f"Task async_tasks.cancellable[{result.id}] received" in worker.log_text(), 30, "started")
    time.sleep(0.3)
    tasks.app.control.revoke(result.id, terminate=True)
    with pytest.raises(TaskRevokedError, match="terminated"):
        result.get(timeout=30)
    wait_for(lambda: sqlite_aproject.ledger_count("pterm:cleanup") == 1, 10, "its cleanup recorded")
    assert f"Task async_tasks.cancellable[{result.id}] terminated" in worker.log_text()  # raised, not killed
    assert tasks.aadd.delay(1, 1).get(timeout=30) == 2


def test_asyncio_pool_on_rabbitmq_runs_coroutines_and_returns_messages_on_cold_shutdown(
    tmp_path: Path, redis_url: str, amqp_url: str
) -> None:
    proj = AsyncProject(tmp_path, "amqp", redis_url, amqp_url)
    try:
        tasks = proj.app()
        worker = start_async(proj, "-c", "20")
        mine = [tasks.whoami.delay(0.2) for _ in range(20)]
        assert all(r.get(timeout=30)["after"] == r.id for r in mine)
        held = [tasks.cancellable.delay(2, f"amqp-{i}") for i in range(3)]
        wait_for(lambda: worker.log_text().count("cancellable") >= 3, 30, "three running")
        time.sleep(0.3)
        worker.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert worker.stop(signal.SIGTERM, timeout=10) != 0
        start_async(proj, "-c", "20")
        assert [r.get(timeout=60) for r in held] == ["finished"] * 3
        counts = ledger_counts(proj)
        assert all(counts[f"amqp-{i}:cleanup"] == 1 and counts[f"amqp-{i}"] == 1 for i in range(3)), counts
    finally:
        proj.close()


def test_eager_mode_awaits_async_tasks_with_their_request(sqlite_aproject: AsyncProject) -> None:
    tasks = sqlite_aproject.app()
    tasks.app.conf.task_always_eager = True
    assert tasks.aadd.delay(2, 3).get() == 5
    r = tasks.whoami.apply((0.01,))
    assert r.get()["before"] == r.get()["after"] == r.id
    assert tasks.flaky.apply(("eager-flaky",)).get() == 3  # autoretry: run again at once

    async def from_async_code() -> int:  # eager mode used inside a running loop (an ASGI app's test)
        return int(tasks.aadd.delay(1, 1).get())

    assert asyncio.run(from_async_code()) == 2


def test_an_asyncio_worker_in_a_thread_of_the_test_process_runs_and_stops(sqlite_aproject: AsyncProject) -> None:
    from rqueue.contrib.pytest import running_worker

    tasks = sqlite_aproject.app()
    with running_worker(tasks.app, pool="asyncio", concurrency=20) as worker:
        assert worker.pool == "asyncio"
        assert tasks.aadd.delay(1, 2).get(timeout=30) == 3
        mine = [tasks.whoami.delay(0.1) for _ in range(10)]
        assert all(r.get(timeout=30)["after"] == r.id for r in mine)
    assert worker.consumer is not None and worker.consumer.stopping
