"""The Redis result backend against a real redis-server: Celery's record format, expiry, pub/sub
notifications, SUCCESS finality, batching, waiting (before/after, timeouts, reconnects), fork
safety and interop with the real ``celery`` package in both directions."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, RedisServer
from rqueue import App, serialization, states
from rqueue.backends import open_backend
from rqueue.backends.base import ResultRecord
from rqueue.backends.redis import RedisBackend
from rqueue.exceptions import TimeoutError as RQueueTimeoutError
from rqueue.result import AsyncResult

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.redis

JSON = "application/json"
MSGPACK = "application/x-msgpack"


def make_backend(url: str, serializer: str = "json", expires_s: float | None = 86400, **kw: Any) -> RedisBackend:
    accept = [serialization.content_type(serializer)]
    if serializer == "pickle":
        accept.append(JSON)
    backend = open_backend(url, serializer=serializer, accept=accept, expires_s=expires_s, extended=False, **kw)
    assert isinstance(backend, RedisBackend)
    return backend


@pytest.fixture
def backend(redis_url: str) -> RedisBackend:
    return make_backend(redis_url)


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def tid() -> str:
    return str(uuid.uuid4())


def stored(raw: Any, task_id: str) -> dict[str, Any]:
    data = raw.get(f"celery-task-meta-{task_id}")
    assert data is not None
    value: dict[str, Any] = json.loads(data)
    return value


def write_later(backend: RedisBackend, record: ResultRecord, delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        backend.store(record)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- configuration -------------------------------------------------------------------------------------


def test_open_backend_gives_redis_backend_for_redis_and_unix_urls(redis_url: str, tmp_path: Path) -> None:
    assert type(make_backend(redis_url)).__name__ == "RedisBackend"
    sock = tmp_path / "redis.sock"
    unix = make_backend(f"unix://{sock}?db=3")
    assert unix.url == f"unix://{sock}?db=3"
    kwargs = unix.client.connection_pool.connection_kwargs
    assert kwargs["path"] == str(sock)
    assert int(kwargs["db"]) == 3


def test_unix_socket_url_round_trip(tmp_path: Path) -> None:
    import shutil
    import subprocess

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not on PATH")
    sock = tmp_path / "r.sock"
    proc = subprocess.Popen(
        [exe, "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "redis-server did not create its socket"
            time.sleep(0.01)
        backend = make_backend(f"unix://{sock}?db=2")
        task_id = tid()
        backend.store(ResultRecord(task_id, states.SUCCESS, 5))
        assert backend.wait_for(task_id, timeout=5)["result"] == 5
        assert redis.Redis(unix_socket_path=str(sock), db=2).exists(f"celery-task-meta-{task_id}") == 1
    finally:
        proc.kill()
        proc.wait(10)


def test_password_is_masked_in_repr_and_connection_options_are_finite() -> None:
    backend = make_backend("redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(backend)
    assert "***" in repr(backend)
    assert repr(backend) == "<RedisBackend redis://user:***@127.0.0.1:1/0>"
    kwargs = backend.client.connection_pool.connection_kwargs
    assert kwargs["password"] == "s3cret"  # the client still uses it
    assert 0 < kwargs["socket_timeout"] < 60
    assert 0 < kwargs["socket_connect_timeout"] < 60
    assert kwargs["health_check_interval"] > 0
    assert kwargs["retry_on_timeout"] is True


def test_app_uses_redis_backend(redis_url: str, tmp_path: Path) -> None:
    app = App("t", broker=f"sqlite:///{tmp_path / 'b.db'}", backend=redis_url)
    assert isinstance(app.backend, RedisBackend)
    task_id = tid()
    app.backend.store(ResultRecord(task_id, states.SUCCESS, {"x": [1, 2]}))
    assert app.AsyncResult(task_id).get(timeout=5) == {"x": [1, 2]}


# -- writing -----------------------------------------------------------------------------------------


def test_record_format_is_celerys(backend: RedisBackend, raw: Any) -> None:
    task_id = tid()
    backend.store(ResultRecord(task_id, states.SUCCESS, 8))
    meta = stored(raw, task_id)
    assert set(meta) == {"status", "result", "traceback", "children", "date_done", "task_id"}
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == 8
    assert meta["traceback"] is None
    assert meta["children"] == []
    assert meta["task_id"] == task_id
    done = datetime.fromisoformat(meta["date_done"])
    assert done.tzinfo is not None
    assert abs(time.time() - done.timestamp()) < 60


def test_started_has_no_date_done_and_failure_has_exc_fields(backend: RedisBackend, raw: Any) -> None:
    started = tid()
    backend.store(ResultRecord(started, states.STARTED, {"pid": 1, "hostname": "h"}))
    meta = stored(raw, started)
    assert meta["status"] == "STARTED"
    assert meta["date_done"] is None
    assert meta["result"] == {"pid": 1, "hostname": "h"}

    failed = tid()
    exc_meta = serialization.exception_to_meta(ValueError("boom", 3))
    backend.store(ResultRecord(failed, states.FAILURE, exc_meta, "Traceback (most recent call last): ..."))
    meta = stored(raw, failed)
    assert meta["result"] == {"exc_type": "ValueError", "exc_message": ["boom", 3], "exc_module": "builtins"}
    assert meta["traceback"].startswith("Traceback")
    assert meta["date_done"] is not None
    value = AsyncResult(failed, backend).get(timeout=5, propagate=False)
    assert isinstance(value, ValueError)
    assert value.args == ("boom", 3)


def test_expiry_from_result_expires(redis_url: str, raw: Any) -> None:
    task_id = tid()
    make_backend(redis_url, expires_s=3600).store(ResultRecord(task_id, states.SUCCESS, 1))
    ttl = raw.ttl(f"celery-task-meta-{task_id}")
    assert 3590 <= ttl <= 3600

    fractional = tid()
    make_backend(redis_url, expires_s=1.5).store(ResultRecord(fractional, states.SUCCESS, 1))
    assert 1000 <= raw.pttl(f"celery-task-meta-{fractional}") <= 1500

    forever = tid()
    make_backend(redis_url, expires_s=None).store(ResultRecord(forever, states.SUCCESS, 1))
    assert raw.ttl(f"celery-task-meta-{forever}") == -1


def test_write_publishes_the_record_on_the_key_channel(backend: RedisBackend, raw: Any) -> None:
    task_id = tid()
    key = f"celery-task-meta-{task_id}"
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(key)
    assert pubsub.get_message(timeout=1) is None  # consumes the confirmation
    backend.store(ResultRecord(task_id, states.SUCCESS, "hi"))
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
    assert message is not None
    assert message["channel"] == key.encode()
    assert message["data"] == raw.get(key)
    assert json.loads(message["data"])["result"] == "hi"
    pubsub.close()


def test_success_is_final(backend: RedisBackend, raw: Any) -> None:
    task_id = tid()
    key = f"celery-task-meta-{task_id}"
    backend.store(ResultRecord(task_id, states.STARTED, {"pid": 1, "hostname": "h"}))
    backend.store(ResultRecord(task_id, states.SUCCESS, 42))
    first = raw.get(key)
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(key)
    pubsub.get_message(timeout=1)
    backend.store(ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(ValueError("late"))))
    backend.store(ResultRecord(task_id, states.STARTED, None))
    backend.store(ResultRecord(task_id, states.SUCCESS, 43))
    assert raw.get(key) == first
    assert backend.get_meta(task_id)["result"] == 42
    assert pubsub.get_message(timeout=0.3) is None  # an ignored write is not published either
    pubsub.close()


def test_a_result_whose_value_mentions_success_is_not_final(backend: RedisBackend) -> None:
    task_id = tid()
    backend.store(ResultRecord(task_id, states.STARTED, {"status": "SUCCESS", "note": '"status": "SUCCESS"'}))
    backend.store(ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(KeyError("k"))))
    assert backend.get_meta(task_id)["status"] == "FAILURE"


def test_success_written_by_celery_style_json_is_final(backend: RedisBackend, raw: Any) -> None:
    task_id = tid()
    key = f"celery-task-meta-{task_id}"
    celery_style = json.dumps({"status": "SUCCESS", "result": 1, "traceback": None, "children": [], "task_id": task_id})
    raw.set(key, celery_style)
    backend.store(ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(ValueError("x"))))
    assert raw.get(key) == celery_style.encode()


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
def test_success_is_final_with_other_serializers(redis_url: str, serializer: str) -> None:
    backend = make_backend(redis_url, serializer)
    task_id = tid()
    backend.store(ResultRecord(task_id, states.STARTED, None))
    backend.store(ResultRecord(task_id, states.SUCCESS, {"v": 1}))
    backend.store(ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(ValueError("late"))))
    backend.store(ResultRecord(task_id, states.SUCCESS, {"v": 2}))
    meta = backend.get_meta(task_id)
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == {"v": 1}
    assert backend.wait_for(task_id, timeout=5)["result"] == {"v": 1}
    backend.forget(task_id)
    assert backend.get_meta(task_id)["status"] == states.PENDING
    backend.store(ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(ValueError("new"))))
    assert backend.get_meta(task_id)["status"] == states.FAILURE  # forget() also forgets finality


def test_batch_is_one_pipeline_round_trip(backend: RedisBackend, raw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    backend.store(ResultRecord(tid(), states.SUCCESS, 0))  # loads the script
    sends: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    raw.config_resetstat()
    sends.clear()
    ids = [tid() for _ in range(50)]
    backend.store_many([ResultRecord(i, states.SUCCESS, n) for n, i in enumerate(ids)])
    assert len(sends) == 1  # the whole batch goes out in one write: one round trip
    monkeypatch.undo()
    stats = raw.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1  # one script call stores the batch
    assert stats["cmdstat_publish"]["calls"] == 50
    assert not any(name.startswith("cmdstat_script") for name in stats)
    assert [backend.get_meta(i)["result"] for i in ids] == list(range(50))


def test_script_is_reloaded_after_script_flush(backend: RedisBackend, raw: Any) -> None:
    backend.store(ResultRecord(tid(), states.SUCCESS, 0))
    raw.script_flush()
    task_id = tid()
    backend.store_many([ResultRecord(task_id, states.SUCCESS, 1), ResultRecord(tid(), states.SUCCESS, 2)])
    assert backend.get_meta(task_id)["result"] == 1


def test_forget_deletes(backend: RedisBackend, raw: Any) -> None:
    task_id = tid()
    backend.store(ResultRecord(task_id, states.SUCCESS, 1))
    AsyncResult(task_id, backend).forget()
    assert raw.exists(f"celery-task-meta-{task_id}") == 0
    assert backend.get_meta(task_id)["status"] == states.PENDING


# -- waiting -----------------------------------------------------------------------------------------


def test_missing_is_pending(backend: RedisBackend) -> None:
    task_id = tid()
    assert backend.get_meta(task_id) == {"status": "PENDING", "result": None, "traceback": None, "task_id": task_id}


def test_get_of_result_written_before_get(backend: RedisBackend) -> None:
    task_id = tid()
    backend.store(ResultRecord(task_id, states.SUCCESS, 7))
    assert AsyncResult(task_id, backend).get(timeout=5) == 7
    assert backend._subs == set()


def test_get_of_result_already_stored(backend: RedisBackend) -> None:
    task_id = tid()
    backend.store(ResultRecord(task_id, states.SUCCESS, "early"))
    assert AsyncResult(task_id, backend).get(timeout=5) == "early"
    assert AsyncResult(task_id, backend).get(timeout=0) == "early"  # timeout 0 still reads once


def test_get_of_result_written_after_get_from_another_thread(backend: RedisBackend) -> None:
    task_id = tid()
    writer = write_later(backend, ResultRecord(task_id, states.STARTED, {"pid": 1, "hostname": "h"}), 0.1)
    write_later(backend, ResultRecord(task_id, states.SUCCESS, "late"), 0.4)
    started = time.monotonic()
    assert AsyncResult(task_id, backend).get(timeout=10) == "late"
    assert time.monotonic() - started < 5
    writer.join(5)


def test_get_then_written_later(redis_url: str) -> None:
    reader = make_backend(redis_url)
    writer = make_backend(redis_url)
    task_id = tid()
    write_later(writer, ResultRecord(task_id, states.SUCCESS, [1, "x"]), 0.3)
    assert reader.wait_for(task_id, timeout=10)["result"] == [1, "x"]


def test_failure_propagates(backend: RedisBackend) -> None:
    task_id = tid()
    write_later(backend, ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(KeyError("nope"))), 0.1)
    with pytest.raises(KeyError, match="nope"):
        AsyncResult(task_id, backend).get(timeout=5)


def test_timeout_raises_within_the_timeout(backend: RedisBackend) -> None:
    task_id = tid()
    backend.store(ResultRecord(task_id, states.STARTED, None))
    started = time.monotonic()
    with pytest.raises(RQueueTimeoutError, match=task_id):
        AsyncResult(task_id, backend).get(timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.5
    with pytest.raises(TimeoutError):  # also the builtin TimeoutError
        backend.wait_for(task_id, timeout=0.1)
    # after a timeout, a later get() still sees the result
    write_later(backend, ResultRecord(task_id, states.SUCCESS, 1), 0.2)
    assert AsyncResult(task_id, backend).get(timeout=5) == 1


def test_many_outstanding_results_in_order(redis_url: str) -> None:
    reader = make_backend(redis_url)
    writer = make_backend(redis_url)
    ids = [tid() for _ in range(500)]
    # results arrive in reverse order, in batches, while the reader waits in order
    batches = [ids[i : i + 50] for i in range(0, 500, 50)][::-1]

    def write() -> None:
        for batch in batches:
            writer.store_many([ResultRecord(i, states.SUCCESS, ids.index(i)) for i in batch])
            time.sleep(0.01)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    assert [AsyncResult(i, reader).get(timeout=10) for i in ids] == list(range(500))
    thread.join(10)
    assert reader._subs == set()
    assert reader._cache == {}


def test_concurrent_waiters_in_threads_share_one_connection(redis_url: str) -> None:
    reader = make_backend(redis_url)
    writer = make_backend(redis_url)
    ids = [tid() for _ in range(20)]
    results: dict[str, Any] = {}

    def wait(task_id: str) -> None:
        results[task_id] = reader.wait_for(task_id, timeout=10)["result"]

    threads = [threading.Thread(target=wait, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    writer.store_many([ResultRecord(i, states.SUCCESS, i) for i in ids])
    for thread in threads:
        thread.join(15)
    assert results == {i: i for i in ids}


def test_polling_a_result_leaves_no_subscription_once_ready(backend: RedisBackend) -> None:
    task_id = tid()
    result = AsyncResult(task_id, backend)
    assert not result.ready()
    backend.store(ResultRecord(task_id, states.SUCCESS, 3))
    assert result.ready()
    assert backend._subs == set()


@pytest.mark.parametrize("settle_s", [0.0, 0.5])
def test_reconnect_while_waiting(tmp_path: Path, settle_s: float) -> None:
    """Redis restarts while get() waits; the result is written at once (before the waiter is back:
    only a GET after reconnecting finds it) or a little later (the notification does)."""
    server = RedisServer(tmp_path)
    try:
        reader = make_backend(server.url)
        task_id = tid()
        other = tid()
        outcome: dict[str, Any] = {}

        def wait() -> None:
            try:
                outcome["value"] = AsyncResult(task_id, reader).get(timeout=30)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.3)
        server.stop()
        time.sleep(1.5)
        server.start()
        time.sleep(settle_s)
        writer = make_backend(server.url)
        writer.store_many(
            [ResultRecord(task_id, states.SUCCESS, "after restart"), ResultRecord(other, states.SUCCESS, 2)]
        )
        thread.join(20)
        assert outcome == {"value": "after restart"}
        assert AsyncResult(other, reader).get(timeout=10) == 2
    finally:
        server.stop()


def test_result_written_during_outage_is_found_after_reconnect(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persistent=True)
    try:
        reader = make_backend(server.url)
        task_id = tid()
        assert reader.get_meta(task_id)["status"] == states.PENDING
        outcome: dict[str, Any] = {}

        def wait() -> None:
            try:
                outcome["value"] = reader.wait_for(task_id, timeout=30)["result"]
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.3)
        # The pub/sub connection is killed while the result is written: the message is lost, GET finds it.
        admin = redis.Redis.from_url(server.url)
        admin.client_kill_filter(_type="pubsub")
        make_backend(server.url).store(ResultRecord(task_id, states.SUCCESS, "found"))
        thread.join(20)
        assert outcome == {"value": "found"}
        assert reader._generation >= 1  # the pub/sub connection was made again
        admin.close()
    finally:
        server.stop()


def test_timeout_while_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    reader = make_backend(server.url)
    task_id = tid()
    server.stop()
    started = time.monotonic()
    with pytest.raises(RQueueTimeoutError, match=task_id):
        reader.wait_for(task_id, timeout=1.0)
    assert time.monotonic() - started < 3.0


def test_fork_gets_its_own_connections(backend: RedisBackend) -> None:
    task_id = tid()
    parent_client = backend.client
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            ok = backend.client is not parent_client
            backend.store(ResultRecord(task_id, states.SUCCESS, "from child"))
            ok = ok and backend.wait_for(task_id, timeout=5)["result"] == "from child"
            code = 0 if ok else 1
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    assert os.read(read, 1) == b"\x00"
    os.close(read)
    os.waitpid(pid, 0)
    assert backend.client is parent_client
    assert AsyncResult(task_id, backend).get(timeout=5) == "from child"


@pytest.mark.parametrize("project", ["redis"], indirect=True)
def test_worker_end_to_end(project: Project) -> None:
    tasks = project.app()
    assert isinstance(tasks.app.backend, RedisBackend)
    project.start_worker("-c", "2")
    results = [tasks.add.delay(i, i) for i in range(300)]
    failing = tasks.fail.delay("boom")
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(300)]
    with pytest.raises(tasks.CustomError, match="boom"):
        failing.get(timeout=30)
    assert tasks.app.backend._subs == set()


# -- interop with Celery -----------------------------------------------------------------------------


@pytest.fixture
def celery_app(redis_url: str) -> Iterator[Any]:
    celery = pytest.importorskip("celery")
    app = celery.Celery("interop", broker="memory://", backend=redis_url)
    app.conf.result_expires = 3600
    yield app
    app.close()


def test_celery_reads_our_results(backend: RedisBackend, celery_app: Any) -> None:
    ok = tid()
    backend.store(ResultRecord(ok, states.SUCCESS, {"a": [1, 2]}))
    assert celery_app.AsyncResult(ok).get(timeout=5) == {"a": [1, 2]}

    later = tid()
    write_later(backend, ResultRecord(later, states.SUCCESS, 99), 0.3)
    assert celery_app.AsyncResult(later).get(timeout=5) == 99

    failed = tid()
    backend.store(ResultRecord(failed, states.FAILURE, serialization.exception_to_meta(ValueError("bad")), "tb"))
    with pytest.raises(ValueError, match="bad"):
        celery_app.AsyncResult(failed).get(timeout=5)
    assert celery_app.AsyncResult(failed).traceback == "tb"


def test_we_read_celerys_results(backend: RedisBackend, celery_app: Any, raw: Any) -> None:
    celery_backend = celery_app.backend
    ok = tid()
    celery_backend.store_result(ok, {"n": 5}, "SUCCESS")
    meta = backend.get_meta(ok)
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == {"n": 5}
    assert meta["date_done"]
    assert AsyncResult(ok, backend).get(timeout=5) == {"n": 5}
    assert 3590 <= raw.ttl(f"celery-task-meta-{ok}") <= 3600

    failed = tid()
    try:
        raise KeyError("missing")
    except KeyError as exc:
        celery_backend.store_result(failed, exc, "FAILURE", traceback="Traceback: celery side")
    result = AsyncResult(failed, backend)
    with pytest.raises(KeyError, match="missing"):
        result.get(timeout=5)
    assert result.traceback == "Traceback: celery side"
    assert isinstance(result.result, KeyError)

    # Our waiting sees Celery's publish.
    later = tid()

    def celery_writes() -> None:
        time.sleep(0.3)
        celery_backend.store_result(later, "from celery", "SUCCESS")

    threading.Thread(target=celery_writes, daemon=True).start()
    assert AsyncResult(later, backend).get(timeout=5) == "from celery"

    # A SUCCESS Celery stored stays final against our writes.
    backend.store(ResultRecord(ok, states.FAILURE, serialization.exception_to_meta(ValueError("x"))))
    assert backend.get_meta(ok)["result"] == {"n": 5}


def test_sending_without_waiting_holds_no_subscription(redis_url: str, raw: Any) -> None:
    app = App("producer", broker=redis_url, backend=redis_url)
    sent = [app.send_task("tasks.add", (i, i)) for i in range(20)]
    sent += app.send_many("tasks.add", [((1, 1), {})] * 5)
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    assert backend._subs == set()
    assert raw.pubsub_numsub(*(f"celery-task-meta-{r.id}" for r in sent)) == [
        (f"celery-task-meta-{r.id}".encode(), 0) for r in sent
    ]
    app.broker.purge(["celery"])


def test_get_through_a_backend_outage_warns_then_gives_up_after_max_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No timeout and the backend gone: ``get()`` says so in the log after a few seconds, keeps
    retrying, and raises a clear BackendError after ``result_backend_max_retries``."""
    import logging

    from rqueue.backends.redis import UNREACHABLE_WARN_S
    from rqueue.exceptions import BackendError

    server = RedisServer(tmp_path)
    app = App("outage", broker=f"sqlite:///{tmp_path}/b.db", backend=server.url)
    app.conf.result_backend_max_retries = 12  # backoff 0.02 s doubling to 1 s: about 7 s in all
    server.stop()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rqueue"), pytest.raises(BackendError) as raised:
        app.AsyncResult("never-sent").get()
    waited = time.monotonic() - started
    assert "gave up waiting for task never-sent after 12 retries (result_backend_max_retries)" in str(raised.value)
    assert "the task itself may still run" in str(raised.value)
    warnings = [r.getMessage() for r in caplog.records if "has been unreachable for" in r.getMessage()]
    assert len(warnings) == 1 and "never-sent" in warnings[0] and "still retrying" in warnings[0]
    assert UNREACHABLE_WARN_S <= waited < 30
