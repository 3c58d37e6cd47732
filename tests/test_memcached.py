"""The ``cache+memcached://`` result backend against a real memcached: Celery's keys and values,
expiry, the final SUCCESS, and the clear errors where memcached cannot do what is asked."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MemcachedServer, Project, free_port
from rqueue import App, chord
from rqueue.backends.base import ResultRecord
from rqueue.backends.memcached import MemcachedBackend, memcached_servers
from rqueue.exceptions import BackendError, ConfigurationError


@pytest.fixture
def backend(memcached_server: MemcachedServer, tmp_path: Path) -> MemcachedBackend:
    app = App("t", broker=f"sqlite:///{tmp_path / 'b.db'}", backend=memcached_server.url)
    assert isinstance(app.backend, MemcachedBackend)
    return app.backend


def test_memcached_urls() -> None:
    assert memcached_servers("cache+memcached://127.0.0.1:11211/") == [("127.0.0.1", 11211)]
    assert memcached_servers("cache+memcached://a:1;b/") == [("a", 1), ("b", 11211)]
    for bad, message in (("cache+memcached:///", "names no server"), ("cache+memcached://h:x/", "is not host:port")):
        with pytest.raises(ConfigurationError, match=message):
            memcached_servers(bad)


def test_memcached_result_is_celerys_key_and_success_is_final(backend: MemcachedBackend) -> None:
    task_id = str(uuid.uuid4())
    backend.store(ResultRecord(task_id, "STARTED", {"pid": 1}))
    assert backend.get_meta(task_id)["status"] == "STARTED"
    backend.store(ResultRecord(task_id, "SUCCESS", 8))
    backend.store(ResultRecord(task_id, "RETRY", "late duplicate"))
    meta = backend.get_meta(task_id)
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", 8, task_id)
    raw = backend._client.get(f"celery-task-meta-{task_id}")  # where Celery's cache backend looks
    assert b'"status": "SUCCESS"' in raw or b'"status":"SUCCESS"' in raw
    backend.forget(task_id)
    assert backend.get_meta(task_id)["status"] == "PENDING"


def test_memcached_results_expire(memcached_server: MemcachedServer, tmp_path: Path) -> None:
    app = App("t", broker=f"sqlite:///{tmp_path / 'b.db'}", backend=memcached_server.url, result_expires=1)
    task_id = str(uuid.uuid4())
    app.backend.store(ResultRecord(task_id, "SUCCESS", 1))
    assert app.backend.get_meta(task_id)["status"] == "SUCCESS"
    time.sleep(2.1)  # memcached's expiry has a one-second grain
    assert app.backend.get_meta(task_id)["status"] == "PENDING"


def test_memcached_refuses_what_it_cannot_do(backend: MemcachedBackend) -> None:
    with pytest.raises(BackendError, match=r"storing the result of task big \(\d+ bytes\)"):
        backend.write_encoded([("big", "SUCCESS", b"x" * (2 * 1024 * 1024))])
    with pytest.raises(ConfigurationError, match="chords need a result backend"):
        backend.ensure_chords_allowed()


def test_memcached_down_is_a_backend_error(tmp_path: Path) -> None:
    url = f"cache+memcached://127.0.0.1:{free_port()}/"
    backend = App("t", broker=f"sqlite:///{tmp_path / 'b.db'}", backend=url).backend
    with pytest.raises(BackendError, match="is memcached running there"):
        backend.get_meta("x")


@pytest.fixture
def project(tmp_path: Path, memcached_server: MemcachedServer) -> Iterator[Project]:
    proj = Project(tmp_path, "sqlite")
    proj.backend_url = memcached_server.url
    yield proj
    proj.close()


def test_memcached_results_of_a_real_worker(project: Project) -> None:
    tasks = project.app()
    project.start_worker("-c", "2")
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    with pytest.raises(tasks.CustomError, match="boom"):
        tasks.fail.delay("boom").get(timeout=30)
    with pytest.raises(ConfigurationError, match="chords need"):
        chord([tasks.add.s(1, 1)], tasks.xsum.s())()
