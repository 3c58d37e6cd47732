"""A pytest plugin for testing tasks as Celery users do: an app and a real worker in a thread.

Enable it with ``pytest_plugins = ("rqueue.contrib.pytest",)`` in a ``conftest.py``. Fixtures:

- ``rqueue_config``: the settings of the test app (override it; default: an SQLite broker and
  results in the test's temporary directory, nothing shared between tests);
- ``rqueue_app``: an ``App`` with those settings, current for the test;
- ``rqueue_worker``: a real worker (threads pool) consuming ``rqueue_app``'s queues in a background
  thread of the test process; register tasks before requesting it. It is stopped (warm shutdown)
  after the test.

Celery's names work too: ``celery_config``, ``celery_app``, ``celery_worker``, with
``celery_worker_pool`` and ``celery_worker_parameters`` to override.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rqueue.app import App
from rqueue.worker import Worker

#: How long a fixture waits for the worker to become ready or to stop.
WORKER_WAIT_S = 30.0


@pytest.fixture
def rqueue_config(tmp_path: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path / 'rqueue-test.sqlite3'}"
    return {"broker_url": url, "result_backend": url}


@pytest.fixture
def celery_config(rqueue_config: dict[str, Any]) -> dict[str, Any]:
    return rqueue_config


@pytest.fixture
def rqueue_app(celery_config: dict[str, Any]) -> App:
    return App("rqueue_test_app", **celery_config)


@pytest.fixture
def celery_app(rqueue_app: App) -> App:
    return rqueue_app


@pytest.fixture
def celery_worker_pool() -> str:
    return "threads"


@pytest.fixture
def celery_worker_parameters() -> dict[str, Any]:
    return {}


@pytest.fixture
def rqueue_worker(
    celery_app: App, celery_worker_pool: str, celery_worker_parameters: dict[str, Any]
) -> Iterator[Worker]:
    with running_worker(celery_app, pool=celery_worker_pool, **celery_worker_parameters) as worker:
        yield worker


@pytest.fixture
def celery_worker(rqueue_worker: Worker) -> Worker:
    return rqueue_worker


class running_worker:  # noqa: N801 - used as a context manager, like a function
    """``with running_worker(app) as worker:`` a real worker in a background thread of this process."""

    def __init__(self, app: App, pool: str = "threads", concurrency: int = 1, **options: Any) -> None:
        self.worker = Worker(app, pool=pool, concurrency=concurrency, **options)
        self.thread = threading.Thread(target=self._run, name="rqueue-test-worker", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.worker.start(out=io.StringIO())
        except BaseException as exc:
            self.error = exc
            self.worker.ready.set()

    def __enter__(self) -> Worker:
        self.thread.start()
        if not self.worker.ready.wait(WORKER_WAIT_S):
            raise RuntimeError(f"the test worker was not ready within {WORKER_WAIT_S:g} s")
        if self.error is not None:
            raise RuntimeError(f"the test worker failed to start: {self.error}") from self.error
        return self.worker

    def __exit__(self, *exc_info: object) -> None:
        if self.worker.consumer is not None:
            self.worker.stop()
        self.thread.join(WORKER_WAIT_S)
        if self.thread.is_alive():
            raise RuntimeError(f"the test worker did not stop within {WORKER_WAIT_S:g} s")
