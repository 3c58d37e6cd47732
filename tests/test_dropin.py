"""A Celery project with only its imports changed runs on rqueue: Celery's Next Steps layout
(``proj/celery.py`` + ``proj/tasks.py`` + a config module), found by ``rqueue -A proj``, on real
workers on SQLite and Redis. See ``tests/celery_style/proj``."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from rqueue import AsyncResult
from rqueue.exceptions import NotRegistered, Reject, TaskRevokedError

STYLE = Path(__file__).parent / "celery_style"


class CeleryProject(Project):
    """``tests/celery_style`` copied to a temporary directory, with a journal of hooks and signals."""

    app_spec = "proj"

    def __init__(self, root: Path, kind: str, redis_url: str | None) -> None:
        super().__init__(root, kind, redis_url)
        shutil.copytree(STYLE / "proj", root / "proj")
        self.journal = root / "journal.jsonl"

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["JOURNAL"] = str(self.journal)
        env["TEST_BACKEND_URL"] = self.backend_url or self.broker_url
        return env

    def import_tasks(self, monkeypatch: pytest.MonkeyPatch) -> Any:
        """``proj.tasks`` imported in this process, as the project's own client code would."""
        for key, value in self.env.items():
            if key in ("TEST_BROKER_URL", "TEST_BACKEND_URL", "JOURNAL"):
                monkeypatch.setenv(key, value)
        monkeypatch.syspath_prepend(str(self.root))
        _forget_proj()
        import proj.tasks  # type: ignore[import-not-found]

        return proj.tasks

    def entries(self) -> list[list[Any]]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]


def _wait_for_dead_letter(proj: CeleryProject, task_id: str) -> None:
    """The FAILURE is stored just before the message is moved aside: wait for ``rqueue dlq list``."""
    deadline = time.monotonic() + 10
    while True:
        listed = proj.run_cli("-A", "proj", "dlq", "list")
        if task_id in listed.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert task_id in listed.stdout, listed.stdout + listed.stderr


def _forget_proj() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


@pytest.fixture(params=["sqlite", "redis"])
def celery_project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CeleryProject]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    proj = CeleryProject(tmp_path, request.param, redis_url)
    yield proj
    proj.close()
    _forget_proj()


@pytest.fixture
def running(celery_project: CeleryProject, monkeypatch: pytest.MonkeyPatch) -> tuple[CeleryProject, Any]:
    """A prefork worker of two children started as ``rqueue -A proj worker``, and the tasks module."""
    celery_project.start_worker("-c", "2")
    return celery_project, celery_project.import_tasks(monkeypatch)


def test_dropin_project_is_found_by_package_name_and_runs(running: tuple[CeleryProject, Any]) -> None:
    _proj, tasks = running
    assert tasks.add.delay(4, 4).get(timeout=20) == 8
    # include=, autodiscover_tasks() with a shared_task, a class-based task, a named shared task
    summary = tasks.app.send_task("proj.reports.tasks.summary", args=[[1, 2, 3]])
    assert summary.get(timeout=20) == {"count": 3, "total": 6}
    assert tasks.multiply.delay(6, 7).get(timeout=20) == 42
    assert tasks.shared_mul.delay(3, 3).get(timeout=20) == 9
    # AsyncResult(id) without an app: the current app (Celery's default-app rule)
    assert AsyncResult(tasks.add.delay(1, 1).id).get(timeout=20) == 2


def test_dropin_hooks_and_signals_run_in_celerys_order(running: tuple[CeleryProject, Any]) -> None:
    proj, tasks = running
    assert tasks.add.delay(2, 3).get(timeout=20) == 5
    assert tasks.flaky.delay(1).get(timeout=20) == 1
    with pytest.raises(KeyError):
        tasks.fails.delay().get(timeout=20)
    entries = proj.entries()
    add = [e for e in entries if "proj.tasks.add" in e and e[0] != "worker_process_init"]
    assert [e[0] for e in add] == [
        "task_prerun",
        "before_start",
        "on_success",
        "task_success",
        "after_return",
        "task_postrun",
    ]
    assert ["task_success", "proj.tasks.add", 5] in entries
    flaky = [e[0] for e in entries if "proj.tasks.flaky" in e]
    # The retry is sent before on_retry runs (as in Celery), so another process may start it while
    # the first attempt is still finishing: each attempt keeps Celery's order, and the first starts first.
    first = ["task_prerun", "before_start", "on_retry", "after_return", "task_postrun"]
    second = ["task_prerun", "before_start", "on_success", "after_return", "task_postrun"]
    assert flaky[0] == "task_prerun" and interleaves(flaky, first, second), flaky
    assert ["on_retry", "proj.tasks.flaky", "attempt 0"] in entries
    fails = [e for e in entries if "proj.tasks.fails" in e]
    assert ["on_failure", "proj.tasks.fails", "KeyError", True] in fails
    assert ["task_failure", "proj.tasks.fails", "KeyError"] in fails
    assert ["after_return", "proj.tasks.fails", "FAILURE"] in fails
    # one worker_process_init per prefork child, worker_ready once; the raising receiver was logged
    assert len({e[1] for e in entries if e[0] == "worker_process_init"}) == 2
    assert [e[0] for e in entries].count("worker_ready") == 1
    assert "a receiver that raises must not stop the worker" in proj.workers[0].log_text()


def test_dropin_task_logger_names_the_task_in_every_line(running: tuple[CeleryProject, Any]) -> None:
    proj, tasks = running
    result = tasks.add.delay(20, 22)
    assert result.get(timeout=20) == 42
    proj.workers[0].wait_for_log(f"proj.tasks.add[{result.id}]: Adding 20 + 22")


def test_dropin_custom_states_are_readable_while_the_task_runs(running: tuple[CeleryProject, Any]) -> None:
    _, tasks = running
    result = tasks.progress.delay(3)
    assert result.get(timeout=20) == 3
    # the last PROGRESS state was replaced by SUCCESS; a state stored by update_state is read as is:
    tasks.progress.update_state(task_id="progress-probe", state="PROGRESS", meta={"done": 1, "total": 3})
    probe = tasks.app.AsyncResult("progress-probe")
    assert probe.state == "PROGRESS"
    assert probe.info == {"done": 1, "total": 3}
    assert not probe.ready()


def test_dropin_tasks_sent_from_a_task_carry_parent_and_root(running: tuple[CeleryProject, Any]) -> None:
    _, tasks = running
    parent = tasks.spawn.delay()
    child_id = parent.get(timeout=20)
    child = tasks.app.AsyncResult(child_id).get(timeout=20)
    assert child["parent_id"] == parent.id
    assert child["root_id"] == parent.id
    top = tasks.request_info.delay().get(timeout=20)
    assert top["parent_id"] is None
    assert top["root_id"] == top["id"]


def test_dropin_request_carries_celerys_fields(running: tuple[CeleryProject, Any]) -> None:
    _, tasks = running
    info = tasks.request_info.apply_async(
        countdown=0.2, expires=600, priority=3, headers={"x-custom": "v"}, time_limit=30, soft_time_limit=20
    ).get(timeout=20)
    assert info["eta"] is not None and info["eta"].endswith("+00:00")
    assert info["expires"] is not None
    assert info["priority"] == 3
    assert info["custom"] == "v"
    assert info["correlation_id"] == info["id"]
    assert info["called_directly"] is False
    assert info["is_eager"] is False
    assert info["timelimit"] == [30, 20]
    assert info["hostname"].startswith("rqueue@")


def test_dropin_retry_keeps_priority_and_custom_headers(running: tuple[CeleryProject, Any]) -> None:
    _, tasks = running
    kept = tasks.retry_keeps.apply_async(priority=5, headers={"x-custom": "kept"}).get(timeout=20)
    assert kept == {"priority": 5, "custom": "kept"}


def test_dropin_reject_without_requeue_stores_failure(running: tuple[CeleryProject, Any]) -> None:
    proj, tasks = running
    result = tasks.reject_forever.delay()
    with pytest.raises(Reject):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    _wait_for_dead_letter(proj, result.id)


def test_dropin_expected_errors_are_logged_without_traceback(running: tuple[CeleryProject, Any]) -> None:
    proj, tasks = running
    result = tasks.expected_failure.delay()
    with pytest.raises(tasks.ExpectedError):
        result.get(timeout=20)
    proj.workers[0].wait_for_log(f"proj.tasks.expected_failure[{result.id}] raised expected")
    after = proj.workers[0].log_text().split(f"[{result.id}] raised expected", 1)[1]
    assert "Traceback" not in after.split("\n[", 1)[0]


def test_dropin_errors_stored_even_if_results_are_ignored(running: tuple[CeleryProject, Any]) -> None:
    _, tasks = running
    sent = tasks.ignored_but_failing.delay()
    stored = tasks.app.AsyncResult(sent.id)
    with pytest.raises(ValueError, match="stored even though"):
        stored.get(timeout=20)


def test_dropin_task_expires_option_revokes_late_messages(running: tuple[CeleryProject, Any]) -> None:
    _, tasks = running
    result = tasks.expires_soon.apply_async(countdown=0.2)  # due after its expiry (1 ms after sending)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=20)
    meta = tasks.app.backend.get_meta(result.id)
    assert meta["result"]["exc_module"] == "celery.exceptions"  # a Celery client raises its own class


def test_dropin_wrong_arguments_fail_in_the_caller(running: tuple[CeleryProject, Any]) -> None:
    _proj, tasks = running
    with pytest.raises(TypeError, match=r"proj\.tasks\.add\(\) missing a required argument: 'y'"):
        tasks.add.delay(1)
    with pytest.raises(TypeError, match="too many positional arguments"):
        tasks.add.delay(1, 2, 3)


def test_dropin_reject_with_requeue_counts_towards_max_deliveries(running: tuple[CeleryProject, Any]) -> None:
    proj, tasks = running
    result = tasks.reject_requeue.delay()
    with pytest.raises(Reject, match="rejected with requeue 5 times"):
        result.get(timeout=30)
    runs = [e for e in proj.entries() if e[0] == "reject_requeue"]
    assert len(runs) == 5  # broker_max_deliveries, not thousands a second
    _wait_for_dead_letter(proj, result.id)


def test_dropin_revoked_unknown_and_shutdown_signals(running: tuple[CeleryProject, Any]) -> None:
    proj, tasks = running
    with pytest.raises(TaskRevokedError):
        tasks.expires_soon.apply_async(countdown=0.2).get(timeout=20)
    unknown = tasks.app.send_task("proj.tasks.no_such_task")
    with pytest.raises(NotRegistered):
        unknown.get(timeout=20)
    assert proj.workers[0].stop() == 0
    entries = proj.entries()
    assert ["task_revoked", "proj.tasks.expires_soon", False, True] in entries
    assert ["task_unknown", "proj.tasks.no_such_task", unknown.id] in entries
    names = [e[0] for e in entries]
    assert ["worker_shutting_down", "SIGTERM", "Warm"] in entries
    assert names.count("worker_process_shutdown") == 2  # each prefork child
    assert names[-1] == "worker_shutdown"


def test_dropin_shadow_name_is_what_the_log_shows(running: tuple[CeleryProject, Any]) -> None:
    proj, tasks = running
    result = tasks.add.apply_async((1, 2), shadow="proj.reports.monthly")
    assert result.get(timeout=20) == 3
    proj.workers[0].wait_for_log(f"Task proj.reports.monthly[{result.id}] succeeded")


def interleaves(seq: list[str], a: list[str], b: list[str]) -> bool:
    """Whether ``seq`` is ``a`` and ``b`` merged, each keeping its own order."""
    if len(seq) != len(a) + len(b):
        return False
    # reachable[j]: a[:i] and b[:j] can make seq[:i + j]
    reachable = [True] + [False] * len(b)
    for j in range(1, len(b) + 1):
        reachable[j] = reachable[j - 1] and b[j - 1] == seq[j - 1]
    for i in range(1, len(a) + 1):
        reachable[0] = reachable[0] and a[i - 1] == seq[i - 1]
        for j in range(1, len(b) + 1):
            k = seq[i + j - 1]
            reachable[j] = (reachable[j] and a[i - 1] == k) or (reachable[j - 1] and b[j - 1] == k)
    return reachable[len(b)]
