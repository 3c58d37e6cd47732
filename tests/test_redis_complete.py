"""The joint completer of ``RedisBroker``: results and acks in ONE round trip when the result backend is Redis on
the broker's server and database. Records land exactly where ``RedisBackend`` (and Celery) read
them, are published for waiters, keep SUCCESS final, and the acks follow them."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rqueue import serialization, states
from rqueue.backends import open_backend
from rqueue.backends.base import ResultBackend, ResultRecord
from rqueue.backends.redis import RedisBackend
from rqueue.brokers.redis import RedisBroker
from rqueue.exceptions import BrokerConnectionError
from rqueue.result import AsyncResult
from rqueue.urls import redis_server_of
from rqueue.worker.completion import completer_for

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.redis


def make_backend(url: str, serializer: str = "json", expires_s: float | None = 86400) -> RedisBackend:
    backend = open_backend(
        url,
        serializer=serializer,
        accept=[serialization.content_type(serializer)],
        expires_s=expires_s,
        extended=False,
    )
    assert isinstance(backend, RedisBackend)
    return backend


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def broker(redis_url: str) -> RedisBroker:
    return RedisBroker(redis_url)


def tid() -> str:
    return str(uuid.uuid4())


def lease(broker: RedisBroker, n: int, queue: str = "q") -> list[str]:
    """Publish ``n`` kombu-style envelopes and lease them; their delivery tags."""
    for _ in range(n):
        tag = tid()
        envelope = {"body": "", "headers": {"id": tag}, "properties": {"delivery_tag": tag, "delivery_info": {}}}
        broker.publish(queue, json.dumps(envelope).encode())
    tags = [d.tag for d in broker.native.fetch([queue], n, "w1")]
    assert len(tags) == n
    return tags


def complete(
    broker: RedisBroker, backend: ResultBackend, results: list[tuple[str, str, bytes]], tags: list[str]
) -> None:
    """The worker's completing step for ``backend``, as a worker chooses it at start."""
    completer_for(broker, backend)(results, tags)


def encoded(backend: ResultBackend, *records: ResultRecord) -> list[tuple[str, str, bytes]]:
    return [(r.task_id, r.status, backend.encode(r)) for r in records]


def count_round_trips(monkeypatch: pytest.MonkeyPatch, broker: RedisBroker) -> list[str]:
    """Calls of the native one-round-trip path and of the two-step fallback."""
    calls: list[str] = []
    native = broker.native

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(native, name)

        def complete(self, rows: Any, tags: Any) -> int:
            calls.append("native.complete")
            return native.complete(rows, tags)

        def ack(self, tags: Any) -> int:
            calls.append("native.ack")
            return native.ack(tags)

    monkeypatch.setattr(broker, "_native", Spy())
    return calls


def test_complete_stores_publishes_and_acks_in_one_call(
    broker: RedisBroker, redis_url: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(redis_url, expires_s=120)
    tags = lease(broker, 3)
    ok, failed = tid(), tid()
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"celery-task-meta-{ok}")
    pubsub.get_message(timeout=1)  # the confirmation
    calls = count_round_trips(monkeypatch, broker)
    failure = ResultRecord(failed, states.FAILURE, serialization.exception_to_meta(ValueError("boom")), "tb")
    complete(broker, backend, encoded(backend, ResultRecord(ok, states.SUCCESS, {"a": 1}), failure), tags)
    assert calls == ["native.complete"]  # no separate backend write, no separate ack
    # stored where RedisBackend reads it, with the backend's expiry
    meta = backend.get_meta(ok)
    assert meta["status"] == states.SUCCESS and meta["result"] == {"a": 1}
    assert backend.get_meta(failed)["status"] == states.FAILURE
    assert 119_000 <= raw.pttl(f"celery-task-meta-{ok}") <= 120_000
    # published on the key's channel
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
    assert message is not None and json.loads(message["data"])["result"] == {"a": 1}
    pubsub.close()
    # acked: no lease left
    assert raw.hlen("unacked") == 0
    assert raw.scard("rqueue.owned.w1") == 0


def test_complete_without_expiry_and_success_stays_final(broker: RedisBroker, redis_url: str, raw: Any) -> None:
    backend = make_backend(redis_url, expires_s=None)
    task_id = tid()
    complete(broker, backend, encoded(backend, ResultRecord(task_id, states.SUCCESS, 1)), lease(broker, 1))
    assert raw.pttl(f"celery-task-meta-{task_id}") == -1
    late = ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(ValueError("late")))
    complete(broker, backend, encoded(backend, late, ResultRecord(task_id, states.SUCCESS, 2)), lease(broker, 1))
    assert backend.get_meta(task_id)["result"] == 1
    assert raw.hlen("unacked") == 0


def test_a_batch_of_rows_stored_differently_keeps_each_rows_expiry_marker_and_order(
    broker: RedisBroker, raw: Any
) -> None:
    """Rows go to Redis in runs stored alike (one script call per run): each keeps its own expiry
    and pickle marker, and a task's records keep their order across runs."""
    a, b, c, d = tid(), tid(), tid(), tid()
    json_type, pickle_type = "application/json", "application/x-python-serialize"
    rows = [
        (a, "FAILURE", json_type, b'{"status": "FAILURE"}', 60_000),
        (a, "SUCCESS", json_type, b'{"status": "SUCCESS", "n": 1}', 60_000),
        (b, "SUCCESS", pickle_type, b"pickled", 60_000),
        (c, "SUCCESS", json_type, b'{"status": "SUCCESS", "n": 3}', None),
        (a, "FAILURE", json_type, b'{"status": "FAILURE", "late": 1}', None),  # after a SUCCESS
        (d, "STARTED", json_type, b'{"status": "STARTED"}', 30_000),
        (d, "SUCCESS", json_type, b'{"status": "SUCCESS", "n": 4}', 30_000),
    ]
    tags = lease(broker, 2)
    assert broker.native.complete(rows, tags) == 2
    assert json.loads(raw.get(f"celery-task-meta-{a}")) == {"status": "SUCCESS", "n": 1}
    assert 59_000 <= raw.pttl(f"celery-task-meta-{a}") <= 60_000
    assert raw.get(f"celery-task-meta-{b}") == b"pickled"
    assert raw.get(f"rqueue-task-final-{b}") == b"1" and raw.pttl(f"rqueue-task-final-{b}") > 59_000
    assert raw.pttl(f"celery-task-meta-{c}") == -1 and not raw.exists(f"rqueue-task-final-{c}")
    assert json.loads(raw.get(f"celery-task-meta-{d}")) == {"status": "SUCCESS", "n": 4}
    assert 29_000 <= raw.pttl(f"celery-task-meta-{d}") <= 30_000
    assert raw.hlen("unacked") == 0


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
def test_success_is_final_with_other_serializers(redis_url: str, serializer: str) -> None:
    broker = RedisBroker(redis_url)
    backend = make_backend(redis_url, serializer)
    task_id = tid()
    complete(broker, backend, encoded(backend, ResultRecord(task_id, states.SUCCESS, {"v": 1})), [])
    late = ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(ValueError("late")))
    complete(broker, backend, encoded(backend, late), [])
    backend.store(late)  # the backend's own path sees the same finality
    assert backend.get_meta(task_id)["result"] == {"v": 1}


def test_results_under_a_global_keyprefix_stay_where_celery_reads_them(redis_url: str, raw: Any) -> None:
    broker = RedisBroker(redis_url, global_keyprefix="app:")
    backend = make_backend(redis_url)
    tags = lease(broker, 2)
    assert raw.hlen("app:unacked") == 2
    task_id = tid()
    complete(broker, backend, encoded(backend, ResultRecord(task_id, states.SUCCESS, 5)), tags)
    assert raw.exists(f"celery-task-meta-{task_id}") == 1  # never prefixed, as RedisBackend writes it
    assert raw.hlen("app:unacked") == 0


def test_script_flush_is_survived(broker: RedisBroker, redis_url: str, raw: Any) -> None:
    backend = make_backend(redis_url)
    complete(broker, backend, encoded(backend, ResultRecord(tid(), states.SUCCESS, 0)), lease(broker, 1))
    raw.script_flush()
    task_id = tid()
    complete(broker, backend, encoded(backend, ResultRecord(task_id, states.SUCCESS, 1)), lease(broker, 2))
    assert backend.get_meta(task_id)["result"] == 1
    assert raw.hlen("unacked") == 0


def test_other_servers_and_backends_fall_back_to_two_steps(
    broker: RedisBroker, redis_url: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
    calls = count_round_trips(monkeypatch, broker)
    other_db = make_backend(f"redis://127.0.0.1:{port}/3")
    task_id = tid()
    complete(broker, other_db, encoded(other_db, ResultRecord(task_id, states.SUCCESS, 7)), lease(broker, 1))
    assert calls == ["native.ack"]
    assert other_db.get_meta(task_id)["result"] == 7
    assert raw.exists(f"celery-task-meta-{task_id}") == 0  # not in the broker's db 0
    calls.clear()
    same = make_backend(f"redis://127.0.0.1:{port}")  # another spelling of db 0
    complete(broker, same, encoded(same, ResultRecord(tid(), states.SUCCESS, 8)), lease(broker, 1))
    assert calls == ["native.complete"]
    calls.clear()
    complete(broker, same, [], lease(broker, 1))  # acks only
    assert calls == ["native.ack"]


def test_redis_server_of_normalizes_only_what_both_clients_agree_on() -> None:
    assert redis_server_of("redis://h") == redis_server_of("redis://H:6379/0") == redis_server_of("redis://h:6379/")
    assert redis_server_of("redis://h/1") != redis_server_of("redis://h/0")
    assert redis_server_of("redis://h") != redis_server_of("redis://h:6380")
    assert redis_server_of("redis://:pw@h") != redis_server_of("redis://:other@h")
    assert redis_server_of("redis://h?db=2") is None  # redis-py and the Rust client disagree on it
    assert redis_server_of("unix:///tmp/r.sock?db=2") == redis_server_of("unix:///tmp/./r.sock?db=2")
    assert redis_server_of("unix:///tmp/r.sock") != redis_server_of("unix:///tmp/r.sock?db=1")
    assert redis_server_of("sqlite:///x.db") is None


def test_unreachable_broker_raises_broker_connection_error(redis_url: str, tmp_path: Any) -> None:
    from conftest import RedisServer

    server = RedisServer(tmp_path)
    try:
        broker = RedisBroker(server.url, connect_timeout_s=1.0, socket_timeout_s=1.0)
        backend = make_backend(server.url)
        complete(broker, backend, encoded(backend, ResultRecord(tid(), states.SUCCESS, 1)), [])
    finally:
        server.stop()
    with pytest.raises(BrokerConnectionError):
        complete(broker, backend, encoded(backend, ResultRecord(tid(), states.SUCCESS, 2)), ["t"])


def test_waiters_and_real_celery_receive_results_written_by_complete(broker: RedisBroker, redis_url: str) -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery("interop", broker="memory://", backend=redis_url)
    try:
        backend = make_backend(redis_url)
        stored, waited, celery_waited = tid(), tid(), tid()
        complete(broker, backend, encoded(backend, ResultRecord(stored, states.SUCCESS, {"n": 1})), lease(broker, 1))
        assert app.AsyncResult(stored).get(timeout=5) == {"n": 1}

        # written while both are already waiting: delivered through pub/sub

        def later() -> None:
            time.sleep(0.3)
            records = encoded(
                backend, ResultRecord(waited, states.SUCCESS, "ours"), ResultRecord(celery_waited, states.SUCCESS, 42)
            )
            complete(broker, backend, records, lease(broker, 2))

        celery_result = app.AsyncResult(celery_waited)
        results: dict[str, Any] = {}
        celery_thread = threading.Thread(target=lambda: results.update(c=celery_result.get(timeout=5)), daemon=True)
        celery_thread.start()
        writer = threading.Thread(target=later, daemon=True)
        writer.start()
        started = time.monotonic()
        assert AsyncResult(waited, backend).get(timeout=5) == "ours"
        assert time.monotonic() - started < 4
        celery_thread.join(timeout=6)
        writer.join(timeout=6)
        assert results.get("c") == 42

        failed = tid()
        failure = ResultRecord(failed, states.FAILURE, serialization.exception_to_meta(KeyError("k")), "Traceback: x")
        complete(broker, backend, encoded(backend, failure), [])
        with pytest.raises(KeyError):
            app.AsyncResult(failed).get(timeout=5)
        assert app.AsyncResult(failed).traceback == "Traceback: x"
    finally:
        app.close()
