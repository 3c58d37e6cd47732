"""SqliteBroker and SqliteConsumer through the real extension."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from rqueue._rqueue import PrefetchBuffer, SqliteBroker, SqliteConsumer
from rqueue.exceptions import ConfigurationError


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "broker.sqlite3")


@pytest.fixture
def broker(db: str) -> SqliteBroker:
    return SqliteBroker(db)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_sqlite_broker_publish_fetch_ack(broker: SqliteBroker, db: str) -> None:
    assert broker.path == db
    broker.publish("q", b"one")
    broker.publish_many([("q", b"two", 0, None), ("q", b"three", 0, None)])
    assert broker.queue_length("q") == 3
    got = broker.fetch(["q"], 10, "w1", 60_000)
    assert [d.payload for d in got] == [b"one", b"two", b"three"]
    assert all(d.deliveries == 1 and d.queue == "q" for d in got)
    assert broker.queue_length("q") == 0
    assert broker.ack([d.tag for d in got]) == 3


def test_sqlite_broker_file_mode_is_0600(broker: SqliteBroker, db: str) -> None:
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_sqlite_broker_priority_order(broker: SqliteBroker) -> None:
    broker.publish_many([("a", b"low", 9, None), ("b", b"high", 0, None), ("a", b"mid", 4, None)])
    got = broker.fetch(["a", "b"], 3, "w", 60_000)
    assert [d.payload for d in got] == [b"high", b"mid", b"low"]


def test_sqlite_broker_eta_not_delivered_early(broker: SqliteBroker) -> None:
    broker.publish("q", b"later", eta_ms=now_ms() + 300)
    assert broker.fetch(["q"], 1, "w", 60_000) == []
    time.sleep(0.35)
    assert [d.payload for d in broker.fetch(["q"], 1, "w", 60_000)] == [b"later"]


def test_sqlite_broker_bad_priority(broker: SqliteBroker) -> None:
    with pytest.raises(ConfigurationError):
        broker.publish("q", b"x", priority=10)
    with pytest.raises(ConfigurationError):
        broker.publish_many([("q", b"x", -1, None)])


def test_sqlite_broker_requeue(broker: SqliteBroker) -> None:
    broker.publish("q", b"x")
    (d,) = broker.fetch(["q"], 1, "w", 60_000)
    assert broker.requeue([d.tag]) == 1
    (again,) = broker.fetch(["q"], 1, "w", 60_000)
    assert again.tag == d.tag and again.deliveries == 1


def test_sqlite_broker_lease_expiry_and_sweep(broker: SqliteBroker) -> None:
    broker.publish("q", b"x")
    (d,) = broker.fetch(["q"], 1, "gone", 20)
    time.sleep(0.05)
    assert broker.sweep_expired() == (1, 0)
    (again,) = broker.fetch(["q"], 1, "w", 60_000)
    assert again.tag == d.tag and again.deliveries == 2


def test_sqlite_broker_requeue_owner_and_worker_lost(broker: SqliteBroker) -> None:
    broker.publish_many([("q", b"a", 0, None), ("q", b"b", 0, None)])
    broker.fetch(["q"], 2, "dead", 60_000)
    assert broker.requeue_owner("dead") == 2
    broker.fetch(["q"], 2, "dead2", 60_000)
    assert broker.requeue_owner("dead2", max_deliveries=2) == 0
    rows = broker.dead_letters("q")
    assert [(r[2], r[4], r[6]) for r in rows] == [("worker_lost", 2, b"a"), ("worker_lost", 2, b"b")]


def test_sqlite_broker_dead_letter_roundtrip(broker: SqliteBroker) -> None:
    broker.publish("q", b"bad")
    (d,) = broker.fetch(["q"], 1, "w", 60_000)
    broker.dead_letter(d.tag, "decode_error", "not json")
    (row,) = broker.dead_letters()
    dead_id, queue, reason, error, deliveries, dead_at_ms, payload = row
    assert (queue, reason, error, deliveries, payload) == ("q", "decode_error", "not json", 1, b"bad")
    assert abs(dead_at_ms - now_ms()) < 60_000
    assert broker.requeue_dead("other", [dead_id]) == 0
    assert broker.requeue_dead("q", [dead_id]) == 1
    assert broker.queue_length("q") == 1
    (d,) = broker.fetch(["q"], 1, "w", 60_000)
    broker.dead_letter(d.tag, "x")
    assert broker.purge_dead("q") == 1
    assert broker.dead_letters() == []


def test_sqlite_broker_purge_and_extend(broker: SqliteBroker) -> None:
    broker.publish_many([("q", b"1", 0, None), ("q", b"2", 0, None)])
    [got] = broker.fetch(["q"], 1, "w", 60_000)
    assert broker.extend_leases("w", 60_000, [got.tag]) == [got.tag]
    assert broker.purge(["q"]) == 1
    assert broker.queue_length("q") == 0


def _publish_worker(path: str, worker: int, count: int) -> None:
    b = SqliteBroker(path)
    for i in range(count):
        if i % 2:
            b.publish("q", f"{worker}-{i}".encode())
        else:
            b.publish_many([("q", f"{worker}-{i}".encode(), i % 10, None)])


def test_sqlite_broker_multi_process_publish_exactly_once(db: str) -> None:
    SqliteBroker(db)  # create the schema first so every process races on data, not DDL
    procs, per = 4, 300
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_publish_worker, args=(db, w, per)) for w in range(procs)]
    for p in workers:
        p.start()
    consumer = SqliteBroker(db)
    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(seen) < procs * per and time.monotonic() < deadline:
        got = consumer.fetch(["q"], 100, "drain", 60_000)
        if not got:
            time.sleep(0.002)
            continue
        consumer.ack([d.tag for d in got])
        seen.extend(d.payload for d in got)
    for p in workers:
        p.join(30)
        assert p.exitcode == 0
    assert len(seen) == procs * per
    assert len(set(seen)) == procs * per
    assert consumer.queue_length("q") == 0


def test_sqlite_consumer_fills_buffer_and_stop_returns_unstarted(broker: SqliteBroker, db: str) -> None:
    broker.publish_many([("q", str(i).encode(), 0, None) for i in range(10)])
    buf = PrefetchBuffer(4)
    consumer = SqliteConsumer(db, ["q"], "w1", buf, lease_ms=60_000)
    assert not consumer.running  # nothing starts at construction
    consumer.start()
    assert consumer.running
    # refills come in batches: two of four credits free. The first "task" runs 10 ms: the capacity
    # stays the configured 4 (it grows only while tasks take under 5 ms)
    taken = [buf.get(5)]
    time.sleep(0.01)
    taken.append(buf.get(5))
    assert [d.payload for d in taken if d is not None] == [b"0", b"1"]
    broker.ack([d.tag for d in taken if d is not None])
    buf.done(2)
    deadline = time.monotonic() + 5
    while len(buf) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(buf) == 4
    left = consumer.stop()
    assert not consumer.running
    assert [d.payload for d in left] == [b"2", b"3", b"4", b"5"]
    assert broker.requeue([d.tag for d in left]) == 4
    assert broker.queue_length("q") == 8
    assert consumer.last_error is None


def test_sqlite_consumer_picks_up_new_work_within_50ms(broker: SqliteBroker, db: str) -> None:
    buf = PrefetchBuffer(2)
    consumer = SqliteConsumer(db, ["q"], "w", buf)
    consumer.start()
    try:
        time.sleep(0.3)
        start = time.monotonic()
        broker.publish("q", b"hi")
        d = buf.get(5)
        assert d is not None and d.payload == b"hi"
        assert time.monotonic() - start < 0.1  # 50 ms target plus scheduling slack on a busy box
    finally:
        consumer.stop()


def test_sqlite_consumer_set_queues(broker: SqliteBroker, db: str) -> None:
    broker.publish("other", b"x")
    buf = PrefetchBuffer(2)
    consumer = SqliteConsumer(db, ["q"], "w", buf)
    consumer.start()
    try:
        assert buf.get(0.2) is None
        consumer.set_queues(["q", "other"])
        d = buf.get(5)
        assert d is not None and d.queue == "other"
    finally:
        consumer.stop()


def test_sqlite_get_does_not_block_other_threads(broker: SqliteBroker, db: str) -> None:
    buf = PrefetchBuffer(1)
    consumer = SqliteConsumer(db, ["q"], "w", buf)
    consumer.start()
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        for _ in range(20):
            ticks += 1
            time.sleep(0.005)

    t = threading.Thread(target=tick)
    t.start()
    assert buf.get(0.2) is None
    t.join()
    consumer.stop()
    assert ticks == 20
