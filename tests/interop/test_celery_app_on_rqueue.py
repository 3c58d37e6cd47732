"""The stretch of the drop-in issue: ``rqueue -A proj worker`` where ``proj`` is an unmodified Celery
project (``from celery import Celery``), on Redis; the Celery project's own client sends the tasks
and reads the results with Celery."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerProcess, rqueue_cmd

pytestmark = pytest.mark.redis
pytest.importorskip("celery")

HERE = Path(__file__).parent


@pytest.fixture
def celery_proj(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Path]]:
    shutil.copytree(HERE / "unmodified" / "proj", tmp_path / "proj")
    journal = tmp_path / "journal.jsonl"
    env = {"TEST_BROKER_URL": redis_url, "JOURNAL": str(journal)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [*rqueue_cmd(), "-A", "proj", "worker", "-c", "1", "--loglevel=info", "--logfile", str(log)],
        cwd=tmp_path,
        env={**os.environ, **env, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    worker = WorkerProcess(proc, log)
    try:
        worker.wait_for_log("ready.")
        monkeypatch.syspath_prepend(str(tmp_path))
        _forget()
        import proj.tasks  # type: ignore[import-not-found]  # the project's own client

        yield proj.tasks, journal
    finally:
        worker.stop()
        _forget()


def _forget() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def test_unmodified_celery_app_runs_on_the_rqueue_worker(celery_proj: tuple[Any, Path]) -> None:
    tasks, journal = celery_proj
    assert tasks.add.delay(2, 3).get(timeout=20) == 5
    assert tasks.mul.delay(3, 4).get(timeout=20) == 12
    assert ["on_success", "proj.tasks.add", 5] in [json.loads(line) for line in journal.read_text().splitlines()]


def test_unmodified_celery_bound_task_reads_its_request_and_retries(celery_proj: tuple[Any, Path]) -> None:
    tasks, _ = celery_proj
    sent = tasks.whoami.delay()
    assert sent.get(timeout=20) == {"id": sent.id, "parent_id": None, "retries": 0}
    assert tasks.flaky.delay(2).get(timeout=30) == 2  # Celery's self.retry() twice, run by rqueue
    parent = tasks.spawn.delay()
    child = tasks.app.AsyncResult(parent.get(timeout=20)).get(timeout=20)
    assert child["parent_id"] == parent.id
