"""RedisBroker and RedisConsumer through the real extension, against a real redis-server, and
interoperating with the real kombu/celery packages."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from conftest import free_port
from rqueue._rqueue import PrefetchBuffer, RedisBroker, RedisConsumer, encode_task_message
from rqueue.exceptions import BrokerConnectionError, ConfigurationError

redis = pytest.importorskip("redis")


@pytest.fixture
def raw(redis_url: str) -> Any:
    return redis.Redis.from_url(redis_url)


def envelope(queue: str = "celery", args: tuple[Any, ...] = (2, 3), tag: str | None = None) -> bytes:
    return encode_task_message(
        task="tasks.add",
        task_id=str(uuid.uuid4()),
        args=args,
        kwargs={},
        routing_key=queue,
        delivery_tag=tag or str(uuid.uuid4()),
    )


def test_redis_broker_publish_fetch_ack(redis_url: str, raw: Any) -> None:
    broker = RedisBroker(redis_url)
    broker.publish_many([("q", envelope("q", tag="t1"), 0, None), ("q", envelope("q", tag="t2"), 0, None)])
    broker.publish("q", envelope("q", tag="t0"), priority=0)
    assert broker.queue_length("q") == 3
    got = broker.fetch(["q"], 10, "w1")
    assert [d.tag for d in got] == ["t1", "t2", "t0"]
    assert all(d.deliveries == 1 and d.queue == "q" for d in got)
    # the index also keeps its keeper, the one member with score +inf (no delivery)
    assert raw.hlen("unacked") == 3 and raw.zcount("unacked_index", "-inf", "(inf") == 3
    assert broker.ack([d.tag for d in got]) == 3
    assert raw.hlen("unacked") == 0 and raw.zcount("unacked_index", "-inf", "(inf") == 0
    assert raw.zrange("unacked_index", 0, -1) == [
        b"rqueue: not a delivery tag; keeps this index a skip list, which takes batches fastest"
    ]


def test_redis_broker_priority_buckets(redis_url: str, raw: Any) -> None:
    broker = RedisBroker(redis_url)
    broker.publish("q", envelope("q", tag="low"), priority=9)
    broker.publish("q", envelope("q", tag="mid"), priority=4)
    broker.publish("q", envelope("q", tag="high"), priority=0)
    assert raw.llen(b"q\x06\x169") == 1 and raw.llen(b"q\x06\x163") == 1 and raw.llen(b"q") == 1
    assert [d.tag for d in broker.fetch(["q"], 10, "w")] == ["high", "mid", "low"]


def test_redis_broker_requeue_and_dead_letters(redis_url: str) -> None:
    broker = RedisBroker(redis_url, global_keyprefix="app:")
    broker.publish("q", envelope("q", tag="a"))
    broker.publish("q", envelope("q", tag="b"))
    first = broker.fetch(["q"], 1, "w")
    assert broker.requeue([first[0].tag]) == 1
    again = broker.fetch(["q"], 2, "w")
    assert [d.tag for d in again] == ["a", "b"] and again[0].deliveries == 1
    broker.dead_letter("a", "decode_error", "not json")
    rows = broker.dead_letters("q")
    assert [(r[0], r[2], r[3]) for r in rows] == [("a", "decode_error", "not json")]
    assert json.loads(rows[0][6])["properties"]["delivery_tag"] == "a"
    assert broker.requeue_dead("q", ["a"]) == 1
    assert broker.queue_length("q") == 1
    assert broker.purge(["q"]) == 1
    assert broker.requeue_owner("w", 5) == 1


def test_redis_broker_errors_mask_the_password() -> None:
    url = f"redis://user:canary-secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(BrokerConnectionError) as info:
        RedisBroker(url, connect_timeout_s=0.5)
    assert "canary-secret" not in str(info.value)
    with pytest.raises(ConfigurationError, match="ssl_cert_reqs") as config:
        RedisBroker("rediss://user:canary-secret@127.0.0.1:6380/0?ssl_cert_reqs=maybe")
    assert "canary-secret" not in str(config.value)


def test_redis_broker_repr_and_maxmemory_policy(redis_url: str, raw: Any) -> None:
    broker = RedisBroker(redis_url)
    assert repr(broker) == f"RedisBroker({redis_url!r})".replace("'", '"')
    assert broker.check_maxmemory_policy() is None
    raw.config_set("maxmemory-policy", "allkeys-lru")
    assert broker.check_maxmemory_policy() == "allkeys-lru"


def test_redis_consumer_fills_buffer_and_stops(redis_url: str) -> None:
    broker = RedisBroker(redis_url)
    for i in range(6):
        broker.publish("q", envelope("q", tag=f"c{i}"))
    buffer = PrefetchBuffer(4)
    consumer = RedisConsumer(redis_url, ["q"], "owner-1", buffer, lease_ms=30000, poll_max_ms=5)
    consumer.start()
    got = buffer.get(5.0)
    assert got is not None and got.tag == "c0"
    deadline = time.monotonic() + 5
    while len(buffer) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    left = consumer.stop()
    assert not consumer.running
    assert [d.tag for d in left] == ["c1", "c2", "c3"]
    assert broker.requeue([d.tag for d in left]) == 3
    assert consumer.last_error is None


def test_rqueue_envelope_is_consumed_by_kombu(redis_url: str) -> None:
    kombu = pytest.importorskip("kombu")
    broker = RedisBroker(redis_url)
    broker.publish("rq-interop", envelope("rq-interop", args=(4, 5), tag="from-rqueue"))
    with kombu.Connection(redis_url) as conn:
        queue = conn.SimpleQueue("rq-interop")
        message = queue.get(timeout=5)
        assert message.headers["task"] == "tasks.add"
        assert message.delivery_tag == "from-rqueue"
        args, kwargs, _embed = message.decode()
        assert (list(args), kwargs) == ([4, 5], {})
        message.ack()
        queue.close()


def test_celery_send_task_is_fetched_by_rqueue(redis_url: str, raw: Any) -> None:
    celery = pytest.importorskip("celery")
    broker = RedisBroker(redis_url)
    broker.declare_bindings(["celery"])
    assert raw.smembers("_kombu.binding.celery") == {b"celery\x06\x16\x06\x16celery"}
    app = celery.Celery("interop", broker=redis_url)
    result = app.send_task("tasks.add", (4, 4))
    got = broker.fetch(["celery"], 1, "w")
    assert len(got) == 1
    sent = json.loads(got[0].payload)
    assert sent["headers"]["id"] == result.id
    assert got[0].tag == sent["properties"]["delivery_tag"]
    assert raw.hexists("unacked", got[0].tag)
    assert raw.zscore("unacked_index", got[0].tag) is not None
    entry = json.loads(raw.hget("unacked", got[0].tag))
    assert entry[0] == sent and entry[2] == "celery"
    assert broker.ack([got[0].tag]) == 1
