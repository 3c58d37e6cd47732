"""Task rate limits against real workers: node-wide, non-blocking, never losing a waiting message.

Start times come from the ledger the tasks write (``tests/project/tasks.py``), not from the broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid

import pytest

from conftest import Project, WorkerProcess
from rqueue import App, _rqueue
from rqueue.exceptions import RateLimitError
from rqueue.worker import Worker
from rqueue.worker.ratelimit import RateLimits, SetAside


def use_config(project: Project, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings module in the project, read by ``tasks.py`` through $TEST_CONFIG_MODULE."""
    name = f"ratecfg_{uuid.uuid4().hex[:8]}"  # unique: the test process imports it too
    (project.root / f"{name}.py").write_text(text)
    monkeypatch.setenv("TEST_CONFIG_MODULE", name)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def runs(project: Project, prefix: str) -> list[tuple[str, int, float]]:
    return [row for row in project.ledger_rows() if row[0].startswith(prefix)]


def kill_group(worker: WorkerProcess) -> None:
    """SIGKILL the supervisor and its children at once: nothing gets to give messages back."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)


def test_rate_limit_holds_for_the_node_across_prefork_children(project: Project) -> None:
    """20 tasks at "5/s" (burst 5) on three child processes: together they start no faster than
    5 per second after the burst (not 3 times that), and more than one child runs them."""
    tasks = project.app()
    worker = project.start_worker("-c", "3", "--prefetch-multiplier", "1")
    results = tasks.limited.delay_many([(f"lim-{i}", 0.2) for i in range(20)])
    for r in results:
        r.get(timeout=60)
    worker.stop()
    rows = runs(project, "lim-")
    assert sorted(k for k, _, _ in rows) == sorted(f"lim-{i}" for i in range(20))
    times = sorted(at for _, _, at in rows)
    # 5 at once, then one every 0.2 s: the last starts >= 3 s after the first (less ledger jitter)
    assert times[-1] - times[0] >= 2.5, times
    # in any window, at most the rate over it plus the burst (with slack for ledger timing)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= 5 * (times[j] - start + 0.3) + 5 + 1, (i, j, times)
    assert len({pid for _, pid, _ in rows}) >= 2  # the limit was shared, not per process
    assert "Task tasks.limited: rate limit 5/s for this worker node" in worker.log_text()


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_rate_limited_tasks_do_not_block_other_tasks(project: Project, pool: str) -> None:
    tasks = project.app()
    worker = project.start_worker("-P", pool, "-c", "2")
    limited = tasks.limited.delay_many([(f"wait-{i}",) for i in range(20)])
    tasks.record.delay("free").get(timeout=30)
    free_at = runs(project, "free")[0][2]
    for r in limited:
        r.get(timeout=60)
    worker.stop()
    last_limited = max(at for _, _, at in runs(project, "wait-"))
    # the unlimited task, sent after all 20, finished while limited ones were still waiting their turn
    assert free_at < last_limited - 1.0, (free_at, last_limited)
    assert len(runs(project, "wait-")) == 20  # each ran once: none was acked early or lost


def test_worker_disable_rate_limits_turns_limits_off(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(
        project,
        "task_annotations = {'tasks.annotated': {'rate_limit': '1/h'}}\nworker_disable_rate_limits = True\n",
        monkeypatch,
    )
    tasks = project.app()
    worker = project.start_worker("-c", "2")
    for r in tasks.annotated.delay_many([(f"off-{i}",) for i in range(5)]):
        r.get(timeout=30)  # at 1/h only one would run
    worker.stop()
    assert len(runs(project, "off-")) == 5
    assert "Rate limits are disabled" in worker.log_text()


def test_rate_limit_from_annotation_globs_in_a_list(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(
        project,
        "task_annotations = [{'tasks.add': {'priority': 3}}, {'tasks.annot*': {'rate_limit': '1/h'}}]\n",
        monkeypatch,
    )
    tasks = project.app()
    worker = project.start_worker("-c", "2")
    tasks.annotated.delay_many([(f"glob-{i}",) for i in range(3)])
    assert tasks.add.delay(2, 2).get(timeout=30) == 4  # other tasks are not limited
    wait_until(lambda: len(runs(project, "glob-")) == 1, 30, "the one token of the hour used")
    time.sleep(1.5)
    assert len(runs(project, "glob-")) == 1  # the other two wait, not run
    worker.stop()
    assert tasks.app.broker.queue_length("celery") == 2  # and went back to the queue at shutdown
    assert "Task tasks.annotated: rate limit 0.000277778/s" in worker.log_text()


def test_task_default_rate_limit_applies_to_tasks_without_one(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_config(
        project,
        "task_default_rate_limit = '1/h'\ntask_annotations = {'tasks.add': {'rate_limit': None}}\n",
        monkeypatch,
    )
    tasks = project.app()
    worker = project.start_worker("-c", "1")
    tasks.record.delay("dflt-1")
    tasks.record.delay("dflt-2")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2  # exempted by its annotation
    wait_until(lambda: len(runs(project, "dflt-")) == 1, 30, "the default's one token used")
    time.sleep(1.0)
    assert len(runs(project, "dflt-")) == 1
    worker.stop()


def test_bad_rate_limit_in_decorator_is_a_clear_error() -> None:
    app = App("badrate", broker="sqlite:///unused.sqlite3")
    with pytest.raises(RateLimitError, match=r"task badrate.f: invalid rate limit \"fast\".*10/s"):

        @app.task(name="badrate.f", rate_limit="fast")
        def f() -> None: ...

    with pytest.raises(RateLimitError, match=r"task badrate.g: invalid rate limit \[5\]"):

        @app.task(name="badrate.g", rate_limit=[5])
        def g() -> None: ...


def test_bad_rate_limit_in_annotations_stops_the_worker_with_a_clear_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_config(project, "task_annotations = {'tasks.*': {'rate_limit': '10/fortnight'}}\n", monkeypatch)
    worker = project.start_worker("-c", "1", wait_ready=False)
    assert worker.proc.wait(30) == 1
    out = worker.output()
    assert 'invalid rate limit "10/fortnight"' in out and "task tasks." in out, out


def test_tasks_waiting_for_their_rate_limit_survive_a_sigkilled_worker(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting tasks stay leased (not acked early): when the whole worker is SIGKILLed they come
    back after their lease expires and run on the next worker, none lost."""
    settings = "broker_visibility_timeout = 2\n"
    use_config(project, settings + "task_annotations = {'tasks.annotated': {'rate_limit': '1/h'}}\n", monkeypatch)
    tasks = project.app()
    first = project.start_worker("-c", "2")
    results = tasks.annotated.delay_many([(f"kill-{i}",) for i in range(5)])
    wait_until(lambda: len(runs(project, "kill-")) == 1, 30, "the one token of the hour used")
    ran_first = runs(project, "kill-")[0][0]
    results[int(ran_first.split("-")[1])].get(timeout=30)
    time.sleep(0.5)  # its ack follows its result
    assert tasks.app.broker.queue_length("celery") == 0  # the other four are held, leased, by the worker
    kill_group(first)
    use_config(project, settings, monkeypatch)  # the next worker has no limit
    second = project.start_worker("-c", "2")
    for r in results:
        r.get(timeout=60)
    second.stop()
    counts = {f"kill-{i}": project.ledger_count(f"kill-{i}") for i in range(5)}
    assert counts == dict.fromkeys(counts, 1), counts


def test_worker_rate_limits_set_validates_and_reports(project: Project) -> None:
    tasks = project.app()
    worker = Worker(tasks.app, pool="solo")
    limits = worker.rate_limits
    assert limits.get("tasks.limited") == pytest.approx(5.0)
    limits.set("tasks.add", "10/m")
    assert limits.get("tasks.add") == pytest.approx(10 / 60)
    assert limits.limits() == {"tasks.add": pytest.approx(10 / 60), "tasks.limited": pytest.approx(5.0)}
    for off in (None, "0", 0):
        limits.set("tasks.add", "1/s")
        limits.set("tasks.add", off)
        assert limits.get("tasks.add") is None
    with pytest.raises(RateLimitError, match=r"unknown task 'tasks.nope': not registered.*tasks.add"):
        limits.set("tasks.nope", "1/s")
    with pytest.raises(RateLimitError, match=r"task tasks.add: invalid rate limit \"often\""):
        limits.set("tasks.add", "often")
    assert limits.get("tasks.add") is None


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_control_rate_limit_changes_the_limit_of_live_workers_at_once(
    project: Project, monkeypatch: pytest.MonkeyPatch, pool: str
) -> None:
    """``rqueue control rate_limit`` lifts a 1/h limit: the tasks waiting for it (listed by
    ``inspect scheduled``) run at once, in every child of the node."""
    use_config(project, "task_annotations = {'tasks.annotated': {'rate_limit': '1/h'}}\n", monkeypatch)
    tasks = project.app()
    project.start_worker("-c", "2", "-P", pool, "-n", "w1@test")
    results = tasks.annotated.delay_many([(f"ctl-{i}",) for i in range(6)])
    wait_until(lambda: len(runs(project, "ctl-")) == 1, 30, "the one token of the hour used")
    inspect = tasks.app.control.inspect(destination=["w1@test"], timeout=5)
    wait_until(lambda: len((inspect.scheduled() or {}).get("w1@test", [])) == 5, 30, "five tasks waiting")
    [first, *_] = (inspect.scheduled() or {})["w1@test"]
    assert first["request"]["name"] == "tasks.annotated"
    assert _rqueue.parse_iso8601_ms(first["eta"]) > (time.time() + 60) * 1000  # next token: an hour away
    assert len(runs(project, "ctl-")) == 1

    bad = project.run_cli("-A", "tasks", "control", "rate_limit", "tasks.annotated", "10/fortnight")
    assert bad.returncode == 1
    assert "-> w1@test: ERROR" in bad.stdout and "invalid rate limit" in bad.stdout

    done = project.run_cli("-A", "tasks", "control", "rate_limit", "tasks.annotated", "50/s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("-> w1@test: OK\n    new rate limit set successfully\n")
    assert [r.get(timeout=30) for r in results] and len(runs(project, "ctl-")) == 6

    off = tasks.app.control.rate_limit("tasks.annotated", None, destination=["w1@test"])
    assert off == [{"w1@test": {"ok": "rate limit disabled successfully"}}]


def _waiting_message(tag: str) -> tuple[_rqueue.Delivery, _rqueue.TaskMessage]:
    payload = _rqueue.encode_task_message(
        task="tasks.add", task_id=f"id-{tag}", args=[1, 2], kwargs={}, routing_key="celery"
    )
    return _rqueue.Delivery(tag, "celery", payload), _rqueue.decode_task_message(payload)


def test_set_aside_gives_back_credit_up_to_its_bound_and_orders_by_due_time() -> None:
    aside = SetAside(max_released=2)
    # the first two give their credit back; the third keeps it (the bound is reached)
    assert aside.put(*_waiting_message("a"), wait_s=0.05, holds_credit=True) is True
    assert aside.put(*_waiting_message("b"), wait_s=0.0, holds_credit=True) is True
    assert aside.put(*_waiting_message("c"), wait_s=0.02, holds_credit=True) is False
    assert len(aside) == 3
    first = aside.pop_due()
    assert first is not None and first.delivery.tag == "b" and not first.holds_credit
    assert aside.pop_due() is None  # "c" and "a" are not due yet
    due_in = aside.next_due_in()
    assert due_in is not None and 0.0 < due_in <= 0.02
    time.sleep(0.06)
    second, third = aside.pop_due(), aside.pop_due()
    assert second is not None and (second.delivery.tag, second.holds_credit) == ("c", True)
    assert third is not None and (third.delivery.tag, third.holds_credit) == ("a", False)
    # "b" ran and "a" left: two may give their credit back again
    assert aside.put(*_waiting_message("d"), wait_s=10, holds_credit=True) is True
    assert aside.put(*_waiting_message("e"), wait_s=10, holds_credit=True) is True
    assert [w.delivery.tag for w in aside.drain()] == ["d", "e"]
    assert len(aside) == 0 and aside.next_due_in() is None


def test_set_aside_wakes_everything_when_a_limit_changes() -> None:
    app = App("wake", broker="sqlite:///unused.sqlite3")
    app.task(name="wake.slow", rate_limit="1/h")(lambda: None)
    limits = RateLimits(app)
    aside = SetAside(max_released=8, rate_limits=limits)
    aside.put(*_waiting_message("slow"), wait_s=3600, holds_credit=True)
    assert aside.pop_due() is None
    limits.set("wake.slow", "100/s")
    woken = aside.pop_due()
    assert woken is not None and woken.delivery.tag == "slow"


def test_waiting_tasks_keep_their_leases_fresh_and_go_back_at_warm_shutdown(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 1 s visibility timeout, tasks waiting for a token long past it are not taken by
    another worker (their leases are renewed); a warm shutdown hands them over at once."""
    settings = "broker_visibility_timeout = 1\n"
    use_config(project, settings + "task_annotations = {'tasks.annotated': {'rate_limit': '1/h'}}\n", monkeypatch)
    tasks = project.app()
    holder = project.start_worker("-c", "1")
    results = tasks.annotated.delay_many([(f"lease-{i}",) for i in range(3)])
    wait_until(lambda: len(runs(project, "lease-")) == 1, 30, "the one token of the hour used")
    time.sleep(2.5)  # leases not renewed would have expired by now
    use_config(project, settings, monkeypatch)
    other = project.start_worker("-c", "1")  # no limit: it would run anything it could lease
    time.sleep(2.5)
    assert len(runs(project, "lease-")) == 1
    assert holder.stop() == 0
    for r in results:
        r.get(timeout=30)
    other.stop()
    counts = [project.ledger_count(f"lease-{i}") for i in range(3)]
    assert counts == [1, 1, 1]
