"""PostgresBroker and PostgresConsumer through the real extension, on a private PostgreSQL cluster."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

from rqueue._rqueue import PostgresBroker, PostgresConsumer, PrefetchBuffer
from rqueue.exceptions import BrokerConnectionError, ConfigurationError

if TYPE_CHECKING:
    from tests.conftest import PostgresServer


@pytest.fixture
def broker(postgres_url: str) -> PostgresBroker:
    return PostgresBroker(postgres_url)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_postgres_broker_publish_fetch_ack(broker: PostgresBroker) -> None:
    broker.publish("q", b"one")
    broker.publish_many([("q", b"two", 0, None), ("q", b"three", 0, None)])
    assert broker.queue_length("q") == 3
    got = broker.fetch(["q"], 10, "w1", 60_000)
    assert [d.payload for d in got] == [b"one", b"two", b"three"]
    assert all(d.deliveries == 1 and d.queue == "q" for d in got)
    assert broker.queue_length("q") == 0
    assert broker.ack([d.tag for d in got]) == 3
    assert broker.ack([d.tag for d in got]) == 0


def test_postgres_broker_priority_order_and_fairness(broker: PostgresBroker) -> None:
    broker.publish_many([("a", b"low", 9, None), ("b", b"high", 0, None), ("a", b"mid", 4, None)])
    got = broker.fetch(["a", "b"], 3, "w", 60_000)
    assert [d.payload for d in got] == [b"high", b"mid", b"low"]
    # within one priority, one from each queue in turn, in the order the queues are given
    broker.publish_many([("a", b"a1", 0, None), ("a", b"a2", 0, None), ("a", b"a3", 0, None), ("b", b"b1", 0, None)])
    got = broker.fetch(["b", "a"], 3, "w", 60_000)
    assert [d.payload for d in got] == [b"b1", b"a1", b"a2"]
    # one queue (its own statement): priority first, then FIFO
    broker.publish_many([("s", b"p9", 9, None), ("s", b"p0a", 0, None), ("s", b"p5", 5, None), ("s", b"p0b", 0, None)])
    assert [d.payload for d in broker.fetch(["s"], 3, "w", 60_000)] == [b"p0a", b"p0b", b"p5"]
    assert [d.payload for d in broker.fetch(["s"], 3, "w", 60_000)] == [b"p9"]


def test_postgres_broker_eta_not_delivered_early(broker: PostgresBroker) -> None:
    broker.publish("q", b"later", eta_ms=now_ms() + 300)
    assert broker.fetch(["q"], 1, "w", 60_000) == []
    time.sleep(0.35)
    assert [d.payload for d in broker.fetch(["q"], 1, "w", 60_000)] == [b"later"]


def test_postgres_broker_bad_priority_and_queue(broker: PostgresBroker) -> None:
    with pytest.raises(ConfigurationError, match="priority 10"):
        broker.publish("q", b"x", priority=10)
    with pytest.raises(ConfigurationError):
        broker.publish_many([("q", b"x", -1, None)])
    with pytest.raises(ConfigurationError, match="queue name"):
        broker.publish("", b"x")


def test_postgres_broker_requeue_and_release(broker: PostgresBroker) -> None:
    broker.publish("q", b"x")
    (d,) = broker.fetch(["q"], 1, "w", 60_000)
    assert broker.requeue([d.tag]) == 1
    (again,) = broker.fetch(["q"], 1, "w", 60_000)
    assert again.tag == d.tag and again.deliveries == 1
    assert broker.release([again.tag]) == 1
    (third,) = broker.fetch(["q"], 1, "w", 60_000)
    assert third.deliveries == 2


def test_postgres_broker_lease_expiry_and_sweep(broker: PostgresBroker) -> None:
    broker.publish("q", b"x")
    (d,) = broker.fetch(["q"], 1, "gone", 20)
    assert broker.fetch(["q"], 1, "w", 60_000) == []  # leased: nobody else gets it
    time.sleep(0.05)
    assert broker.sweep_expired() == (1, 0)
    (again,) = broker.fetch(["q"], 1, "w", 60_000)
    assert again.tag == d.tag and again.deliveries == 2
    # over max_deliveries: dead-lettered as worker_lost
    broker.ack([again.tag])
    broker.publish("q", b"killer")
    broker.fetch(["q"], 1, "gone", 20)
    time.sleep(0.05)
    assert broker.sweep_expired(max_deliveries=1) == (0, 1)
    (row,) = broker.dead_letters("q")
    assert row[2] == "worker_lost" and "gone" in (row[3] or "") and row[6] == b"killer"


def test_postgres_broker_extend_lease_keeps_it(broker: PostgresBroker) -> None:
    broker.publish("q", b"long")
    (d,) = broker.fetch(["q"], 1, "w", 100)
    owner, until = broker.lease_of(d.tag) or (None, None)
    assert owner == "w" and until is not None
    assert broker.extend_leases("w", 60_000, [d.tag]) == [d.tag]
    time.sleep(0.15)
    assert broker.sweep_expired() == (0, 0)
    assert broker.leased_tags("w") == [d.tag]


def test_postgres_broker_requeue_owner_and_worker_lost(broker: PostgresBroker) -> None:
    broker.publish_many([("q", b"a", 0, None), ("q", b"b", 0, None)])
    broker.fetch(["q"], 2, "dead", 60_000)
    assert broker.requeue_owner("dead") == 2
    broker.fetch(["q"], 2, "dead2", 60_000)
    assert broker.requeue_owner("dead2", max_deliveries=2) == 0
    rows = broker.dead_letters("q")
    assert [(r[2], r[4], r[6]) for r in rows] == [("worker_lost", 2, b"a"), ("worker_lost", 2, b"b")]


def test_postgres_broker_dead_letter_roundtrip(broker: PostgresBroker) -> None:
    broker.publish("q", b"bad")
    (d,) = broker.fetch(["q"], 1, "w", 60_000)
    broker.dead_letter(d.tag, "decode_error", "not json")
    (row,) = broker.dead_letters()
    dead_id, queue, reason, error, deliveries, dead_at_ms, payload = row
    assert (queue, reason, error, deliveries, payload) == ("q", "decode_error", "not json", 1, b"bad")
    assert abs(dead_at_ms - now_ms()) < 60_000
    assert broker.requeue_dead("other", [dead_id]) == 0
    assert broker.requeue_dead("q", [dead_id]) == 1
    (d,) = broker.fetch(["q"], 1, "w", 60_000)
    assert d.deliveries == 1
    broker.dead_letter(d.tag, "x")
    assert broker.purge_dead("q") == 1
    assert broker.dead_letters() == []


def test_postgres_broker_results_and_complete_in_one_step(broker: PostgresBroker) -> None:
    broker.publish("q", b"t")
    (d,) = broker.fetch(["q"], 1, "w", 60_000)
    rows = [("id1", "STARTED", "application/json", b"{}", None), ("id1", "SUCCESS", "application/json", b"8", 60_000)]
    assert broker.complete(rows, [d.tag]) == 1
    assert broker.read_result("id1") == ("application/json", b"8")
    broker.store_results([("id1", "FAILURE", "application/json", b"late", None)])
    assert broker.read_result("id1") == ("application/json", b"8")  # a stored SUCCESS is final
    broker.store_results([("gone", "SUCCESS", "application/json", b"x", 1)])
    time.sleep(0.01)
    assert broker.read_result("gone") is None  # expired
    assert broker.delete_result("id1") and broker.read_result("id1") is None
    assert broker.queue_length("q") == 0 and broker.leased_tags("w") == []


def test_postgres_broker_revocations_and_mailbox(broker: PostgresBroker) -> None:
    start = now_ms()
    broker.revoke(["t1", "t2"], start + 60_000)
    assert sorted(t for t, _ in broker.revoked_since(start - 1)) == ["t1", "t2"]
    assert broker.revoked_since(now_ms() + 1000) == []
    assert broker.mailbox_last_id() == 0
    first = broker.mailbox_post("pidbox", b"cmd", now_ms() + 60_000)
    broker.mailbox_post("other", b"x", now_ms() + 60_000)
    assert broker.mailbox_read("pidbox", 0) == [(first, b"cmd")]
    assert broker.mailbox_read("pidbox", first) == []
    assert broker.mailbox_last_id() > first


def test_postgres_broker_schema_is_created_once_and_separate(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    PostgresBroker(postgres_url).publish("q", b"x")
    other = PostgresBroker(postgres_url, schema="other_app")
    assert other.queue_length("q") == 0
    assert PostgresBroker(postgres_url).queue_length("q") == 1  # a second opener migrates nothing
    database = postgres_url.rsplit("/", 1)[1]
    versions = postgres_server.psql("SELECT string_agg(version::text, ',') FROM rqueue.migrations", database)
    assert versions.strip() == "1,2,3"


def test_postgres_broker_upgrades_an_older_schema(postgres_url: str, postgres_server: PostgresServer) -> None:
    PostgresBroker(postgres_url).publish("q", b"kept")
    database = postgres_url.rsplit("/", 1)[1]
    # what a database at migration 1 looks like (before the chord tables came)
    postgres_server.psql(
        "DROP TABLE rqueue.chords, rqueue.chord_parts, rqueue.beat_leases, rqueue.beat_runs; "
        "DELETE FROM rqueue.migrations WHERE version >= 2",
        database,
    )
    upgraded = PostgresBroker(postgres_url)
    assert upgraded.queue_length("q") == 1
    assert upgraded.chord_part_return("g", "m", 0.0, b"p", None, "tok", 1000) == (1, None, False)
    assert upgraded.beat_lease("sched", "tok", 1000)
    versions = postgres_server.psql(
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM rqueue.migrations", database
    )
    assert versions.strip() == "1,2,3"


def test_postgres_broker_newer_schema_is_refused(postgres_url: str, postgres_server: PostgresServer) -> None:
    PostgresBroker(postgres_url)
    postgres_server.psql("INSERT INTO rqueue.migrations (version) VALUES (99)", postgres_url.rsplit("/", 1)[1])
    with pytest.raises(Exception, match=r"migration 99.*upgrade rqueue"):
        PostgresBroker(postgres_url)


def test_postgres_broker_bad_url_and_schema_are_clear_errors(postgres_server: PostgresServer) -> None:
    with pytest.raises(ConfigurationError, match="not a PostgreSQL URL"):
        PostgresBroker("redis://localhost/0")
    with pytest.raises(ConfigurationError, match="schema name"):
        PostgresBroker(postgres_server.url(), schema="Bad-Name")
    with pytest.raises(ConfigurationError, match=r"sslmode=\"maybe\" is not one of disable") as info:
        PostgresBroker(postgres_server.url() + "?sslmode=maybe")
    assert postgres_server.PASSWORD not in str(info.value)
    with pytest.raises(ConfigurationError, match="sslcrl is not supported"):
        PostgresBroker(postgres_server.url() + "?sslmode=require&sslcrl=/crl.pem")
    with pytest.raises(ConfigurationError, match="sslcert needs sslkey"):
        PostgresBroker(postgres_server.url() + "?sslmode=require&sslcert=/client.pem")
    with pytest.raises(ConfigurationError, match=r"sslrootcert=/nonexistent/ca\.pem: cannot read"):
        PostgresBroker(postgres_server.url() + "?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")


def test_postgres_broker_server_down_or_wrong_password_is_a_connection_error(postgres_server: PostgresServer) -> None:
    from tests.conftest import free_port

    with pytest.raises(BrokerConnectionError, match="is PostgreSQL running there") as info:
        PostgresBroker(f"postgresql://rqueue:pw-secret@127.0.0.1:{free_port()}/x?connect_timeout=2")
    assert "pw-secret" not in str(info.value) and "***" in str(info.value)
    wrong = postgres_server.url().replace(postgres_server.PASSWORD, "wrong-pw")
    with pytest.raises(BrokerConnectionError, match="password authentication failed") as info:
        PostgresBroker(wrong)
    assert "wrong-pw" not in str(info.value)


def test_postgres_fetch_is_exactly_once_across_threads(broker: PostgresBroker, postgres_url: str) -> None:
    broker.publish_many([("q", str(i).encode(), i % 10, None) for i in range(400)])
    seen: list[bytes] = []
    lock = threading.Lock()

    def drain() -> None:
        mine = PostgresBroker(postgres_url)
        while batch := mine.fetch(["q"], 7, f"w{threading.get_ident()}", 60_000):
            mine.ack([d.tag for d in batch])
            with lock:
                seen.extend(d.payload for d in batch)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(str(i).encode() for i in range(400))


def test_postgres_consumer_fills_buffer_and_stop_returns_unstarted(broker: PostgresBroker, postgres_url: str) -> None:
    broker.publish_many([("q", str(i).encode(), 0, None) for i in range(10)])
    buf = PrefetchBuffer(4)
    consumer = PostgresConsumer(postgres_url, ["q"], "w1", buf, lease_ms=60_000)
    assert not consumer.running  # nothing starts at construction
    consumer.start()
    first = buf.get(5)
    assert first is not None and first.payload == b"0"
    deadline = time.monotonic() + 5
    while len(buf) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    left = consumer.stop()
    assert not consumer.running
    assert [d.payload for d in left] == [b"1", b"2", b"3"]
    assert broker.requeue([d.tag for d in left]) == 3
    assert broker.queue_length("q") == 9
    assert consumer.last_error is None


def test_postgres_consumer_is_woken_by_notify(broker: PostgresBroker, postgres_url: str) -> None:
    buf = PrefetchBuffer(2)
    consumer = PostgresConsumer(postgres_url, ["q"], "w", buf)
    consumer.start()
    try:
        time.sleep(1.2)  # idle past its first queries: from now on only a notification (or the 1 s fallback) wakes it
        broker.publish("q", b"hi")
        d = buf.get(5)
        assert d is not None and d.payload == b"hi"
        broker.publish("q", b"later", eta_ms=now_ms() + 300)
        d = buf.get(5)
        assert d is not None and d.payload == b"later"
    finally:
        consumer.stop()


def test_postgres_consumer_set_queues_and_bad_schema(broker: PostgresBroker, postgres_url: str) -> None:
    broker.publish("other", b"x")
    buf = PrefetchBuffer(2)
    consumer = PostgresConsumer(postgres_url, ["q"], "w", buf)
    consumer.start()
    try:
        assert buf.get(0.2) is None
        consumer.set_queues(["q", "other"])
        d = buf.get(5)
        assert d is not None and d.queue == "other"
    finally:
        consumer.stop()
    with pytest.raises(ConfigurationError, match="schema name"):
        PostgresConsumer(postgres_url, ["q"], "w", buf, schema="1bad")


def test_postgres_result_waits_wake_on_store_and_do_not_block_other_threads(broker: PostgresBroker) -> None:
    mark = broker.results_seen()
    waiter = threading.Thread(target=broker.wait_results, args=(mark, 2.0))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    broker.results_seen()  # another thread's mark while the first one waits
    assert time.monotonic() - started < 0.5
    broker.store_results([("t", "SUCCESS", "application/json", b"1", None)])  # on its other connection
    waiter.join(5)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 1.5  # woken by the store, not by its 2 s timeout


def test_postgres_beat_lease_and_once_only_ticks(broker: PostgresBroker, postgres_url: str) -> None:
    assert broker.beat_lease("sched", "a", 60_000)
    assert not broker.beat_lease("sched", "b", 60_000)  # held by a
    assert broker.beat_lease("sched", "a", 60_000)  # renewed by its holder
    assert broker.beat_send("sched", "a", "every-minute", 1000, "q", b"tick", 0, None) == 1
    assert broker.beat_send("sched", "a", "every-minute", 1000, "q", b"again", 0, None) == -1  # sent already
    assert broker.beat_send("sched", "b", "every-minute", 2000, "q", b"usurper", 0, None) == 0  # not the leader
    assert broker.beat_claim("sched", "a", "other", 5) == 1
    assert sorted(broker.beat_runs("sched")) == [("every-minute", 1000), ("other", 5)]
    assert [d.payload for d in broker.fetch(["q"], 10, "w", 60_000)] == [b"tick"]
    assert broker.beat_release("sched", "a") and not broker.beat_release("sched", "a")
    assert PostgresBroker(postgres_url).beat_lease("sched", "b", 10)  # free now: b takes it
