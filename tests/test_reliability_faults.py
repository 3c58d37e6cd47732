"""Reliability under partial failure (docs/reliability.md R11 to R13): a frozen Redis, RabbitMQ or
PostgreSQL, a full Redis, a replaced SQLite file; with real workers started through the CLI and real servers.

Each scenario prints sent, lost, duplicated and stranded (still leased or in kombu's ``unacked``
once everything ran) and its recovery time. The ledger is the independent record of executions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PostgresServer, Project, RedisServer
from rqueue import _rqueue
from rqueue.exceptions import BrokerError, BrokerNoReplyError, BrokerReplacedError
from test_reliability import cleanup, ledger_counts, use_config, wait_for


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, Project]]:
    """A Redis of this test's own (it is frozen, filled or killed) and a project on it."""
    (tmp_path / "redis").mkdir()
    (tmp_path / "project").mkdir()
    server = RedisServer(tmp_path / "redis", extra_args=["--maxmemory-policy", "noeviction"])
    project = Project(tmp_path / "project", "redis", server.url)
    try:
        yield server, project
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        cleanup(project)
        server.stop()


def redis_client(server: RedisServer) -> object:
    import redis

    return redis.Redis.from_url(server.url, socket_timeout=10, socket_connect_timeout=5)


def stranded(client: object) -> tuple[int, int]:
    """(entries in kombu's ``unacked`` hash, tags in rqueue owner sets) once everything ran."""
    owned = sum(int(client.scard(k)) for k in client.scan_iter("rqueue.owned.*"))  # type: ignore[attr-defined]
    return int(client.hlen("unacked")), owned  # type: ignore[attr-defined]


class Producer:
    """Sends ``sleep(0.01, key)`` every 50 ms from a thread, through a broker fault: each call returns
    an id (``sent``), or fails saying the outcome is unknown (``unknown``) or that the broker refused
    (``refused``); ``slowest`` is the longest call. ``reason`` must be in every unknown outcome's error."""

    def __init__(self, tasks: Any, prefix: str, reason: str = "unknown") -> None:
        self.tasks, self.prefix, self.reason = tasks, prefix, reason
        self.sent: list[str] = []
        self.unknown: list[str] = []
        self.refused: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"{self.prefix}-{i}"
            began = time.monotonic()
            try:
                self.tasks.sleep.delay(0.01, key)
                self.sent.append(key)
            except BrokerNoReplyError as exc:
                assert "unknown" in str(exc) and self.reason in str(exc), exc
                self.unknown.append(key)
            except BrokerError:
                self.refused.append(key)
            self.slowest = max(self.slowest, time.monotonic() - began)
            i += 1
            time.sleep(0.05)

    def stop(self, timeout_s: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout_s)


# -- R11: Redis frozen (SIGSTOP) past the visibility timeout, under load -------------------------------


@pytest.mark.slow
@pytest.mark.redis
def test_r11_redis_frozen_past_the_visibility_timeout_loses_and_strands_nothing(
    private_redis: tuple[RedisServer, Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, project = private_redis
    visibility, freeze = 3, 10
    use_config(project, f"broker_visibility_timeout = {visibility}\nbroker_connection_timeout = 1.0\n", monkeypatch)
    tasks = project.app()
    n = 400
    results = tasks.sleep.delay_many([(0.01, f"r11-{i}") for i in range(n)])
    workers = [project.start_worker("-c", "2"), project.start_worker("-c", "2")]
    wait_for(lambda: project.ledger_count() >= 40, 30, "the workers are draining")

    # A producer keeps sending through the freeze: each call returns an id, or fails within the
    # connection timeout saying whether the outcome is unknown.
    producer = Producer(tasks, "r11-live")
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    time.sleep(freeze)
    server.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    resumed = time.monotonic()
    before = project.ledger_count()
    wait_for(lambda: project.ledger_count() > before, 30, "consuming resumed")
    recovery_s = time.monotonic() - resumed
    time.sleep(1.0)
    producer.stop(10)
    sent = producer.sent

    wait_for(lambda: all(ledger_counts(project)[f"r11-{i}"] for i in range(n)), 60, "the backlog ran", interval=0.2)
    wait_for(lambda: all(ledger_counts(project)[k] for k in sent), 60, "every accepted send ran", interval=0.2)
    client = redis_client(server)
    # Everything ran; what is still leased was leased to no one who will run it. Renewals hand such
    # orphans back within a third of the visibility timeout.
    wait_for(lambda: stranded(client) == (0, 0), visibility * 2, "nothing stays leased")
    counts = ledger_counts(project)
    keys = [f"r11-{i}" for i in range(n)] + sent
    lost = [k for k in keys if counts[k] == 0]
    duplicated = sum(counts[k] - 1 for k in keys if counts[k] > 1)
    print(
        f"\nR11 [redis] frozen={freeze}s visibility={visibility}s sent={len(keys)} lost={len(lost)} "
        f"duplicated={duplicated} stranded={stranded(client)} recovery={recovery_s:.2f}s "
        f"sends-unknown={len(producer.unknown)} sends-refused={len(producer.refused)} "
        f"slowest-send={producer.slowest:.2f}s"
    )
    assert lost == []
    assert duplicated == 0  # every worker renewed before any swept (a stall delays sweeping)
    assert [r.get(timeout=30) for r in results[:10]] == [0.01] * 10
    # a send never waits out the freeze: it fails within about the connection timeout (1 s) per try
    assert producer.slowest < freeze / 2
    assert producer.unknown or producer.refused, "sends during the freeze must fail, not hang"
    assert all(w.proc.poll() is None for w in workers)


# -- R12: Redis memory full (noeviction), then freed ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.redis
def test_r12_full_redis_refuses_producers_while_workers_drain(private_redis: tuple[RedisServer, Project]) -> None:
    server, project = private_redis
    tasks = project.app()
    n = 300
    pad = "x" * 2000
    results = tasks.sleep.delay_many([(0, f"r12-{i}") for i in range(n)])
    client = redis_client(server)
    used = int(client.info("memory")["used_memory"])  # type: ignore[attr-defined]
    client.config_set("maxmemory", used - 200_000)  # type: ignore[attr-defined]

    with pytest.raises(BrokerError, match="maxmemory") as refused:
        tasks.sleep.delay(0, pad)
    # a worker started while Redis is full starts, drains the backlog and stores every result
    worker = project.start_worker("-c", "2")
    wait_for(lambda: len(ledger_counts(project)) >= n, 60, "the backlog drained", interval=0.2)
    assert [r.get(timeout=30) for r in results] == [0] * n
    assert stranded(client) == (0, 0)
    log = worker.log_text()
    client.config_set("maxmemory", 0)  # type: ignore[attr-defined]
    freed = time.monotonic()
    late = tasks.sleep.delay(0, "r12-after")
    assert late.get(timeout=30) == 0
    counts = ledger_counts(project)
    lost = [i for i in range(n) if counts[f"r12-{i}"] == 0]
    print(
        f"\nR12 [redis] sent={n + 1} lost={len(lost)} duplicated={sum(c - 1 for c in counts.values())} "
        f"stranded={stranded(client)} recovery-after-free={time.monotonic() - freed:.2f}s "
        f"producer-error={str(refused.value)[:90]!r}"
    )
    assert lost == []
    assert worker.proc.poll() is None
    assert "Traceback" not in log
    assert log.count("is out of memory") == 1, log  # said once, clearly


# -- R13: the SQLite file deleted or replaced under live producers ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_r13_sqlite_file_replaced_is_refused_loudly_and_workers_restart_on_the_new_one(
    tmp_path: Path, how: str
) -> None:
    project = Project(tmp_path, "sqlite")
    try:
        tasks = project.app()
        worker = project.start_worker("-c", "2")
        assert tasks.sleep.delay(0, "r13-before").get(timeout=30) == 0
        path = Path(project.broker_url.removeprefix("sqlite:///"))
        if how == "deleted":
            os.unlink(path)
        else:
            other = tmp_path / "restored.sqlite3"
            _rqueue.SqliteBroker(str(other)).publish("celery", b"{}")  # another rqueue file
            shutil.copy(other, tmp_path / "copy.sqlite3")
            os.replace(tmp_path / "copy.sqlite3", path)
        # no delay() returns an id for a message that could never run
        with pytest.raises(BrokerReplacedError, match="deleted or replaced"):
            tasks.sleep.delay(0, "r13-lost")
        with pytest.raises(BrokerReplacedError):
            tasks.sleep.delay(0, "r13-lost-again")
        # the worker stops (non-zero: a supervisor restarts it) instead of serving the old file
        code = worker.proc.wait(30)
        assert code != 0
        assert "deleted or replaced" in worker.log_text()
        # restarted, producer and worker use the file now at that path
        restarted = project.start_worker("-c", "1")
        fresh = project.app()
        assert fresh.sleep.delay(0, "r13-after").get(timeout=30) == 0
        counts = ledger_counts(project)
        print(f"\nR13 [sqlite, {how}] refused=2 ran-after-restart={counts['r13-after']} lost-accepted=0")
        assert counts["r13-lost"] == 0 and counts["r13-after"] == 1
        restarted.stop()
    finally:
        cleanup(project)


HOLD_OLD_FILE = """
import sys, time
from rqueue import _rqueue
old = _rqueue.SqliteBroker(sys.argv[1])
for _ in range(200):
    old.publish("old", b"x" * 2000)  # pages of the old file in its write-ahead log
print("holding", flush=True)
time.sleep(120)
"""


def test_r13_a_replaced_files_log_is_never_read_into_the_new_file(tmp_path: Path) -> None:
    """SQLite names the log after the path: the old file's log must neither hide nor corrupt the new file."""
    import subprocess
    import sys

    path = tmp_path / "broker.sqlite3"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OLD_FILE, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        restored = tmp_path / "restored.sqlite3"
        _rqueue.SqliteBroker(str(restored)).publish("celery", b"restored")  # closed: its log folded in
        os.replace(restored, path)
        # the old file's log is still in use by a live process: refused, naming it
        with pytest.raises(BrokerReplacedError, match=f"process {holder.pid} still uses it"):
            _rqueue.SqliteBroker(str(path))
        # that process dies without closing (its log stays behind): the log is moved aside, not read
        holder.kill()
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
    new = _rqueue.SqliteBroker(str(path))
    assert new.queue_length("old") == 0
    assert [d.payload for d in new.fetch(["celery"], 10, "w", 60_000)] == [b"restored"]
    kept = [p.name for p in tmp_path.iterdir() if p.name.startswith("broker.sqlite3-wal-of-")]
    print(f"\nR13 [sqlite, old log left by a killed process] read-into-new=0 kept-aside={kept}")
    assert len(kept) == 1 and (tmp_path / kept[0]).stat().st_size > 0  # the old commits, never deleted


# -- the SQLite write-ahead log under contention ------------------------------------------------------

PRODUCE = """
import sys, time
import tasks
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    tasks.add.delay(1, 2)
"""


@pytest.mark.slow
def test_sqlite_wal_stays_bounded_under_four_producers_and_two_workers(tmp_path: Path) -> None:
    import subprocess
    import sys

    project = Project(tmp_path, "sqlite")
    try:
        (tmp_path / "produce.py").write_text(PRODUCE)
        [project.start_worker("-c", "2") for _ in range(2)]
        seconds = 12.0
        producers = [
            subprocess.Popen([sys.executable, "produce.py", str(seconds)], cwd=tmp_path, env=project.env)
            for _ in range(4)
        ]
        wal = Path(project.broker_url.removeprefix("sqlite:///") + "-wal")
        sizes = []
        while any(p.poll() is None for p in producers):
            sizes.append(wal.stat().st_size if wal.exists() else 0)
            time.sleep(0.1)
        assert all(p.wait() == 0 for p in producers)
        db = Path(project.broker_url.removeprefix("sqlite:///")).stat().st_size
        mib = 1024 * 1024
        print(
            f"\nSQLite WAL, 4 producers + 2 workers for {seconds:.0f} s: max {max(sizes) / mib:.0f} MiB, "
            f"median {sorted(sizes)[len(sizes) // 2] / mib:.0f} MiB, database {db / mib:.0f} MiB "
            f"(checkpointed past {_rqueue.SQLITE_WAL_LIMIT_BYTES / mib:.0f} MiB)"
        )
        # Unbounded, it reached gigabytes within 30 s here; bounded, a few times the limit at most.
        assert max(sizes) < 8 * _rqueue.SQLITE_WAL_LIMIT_BYTES
    finally:
        cleanup(project)


# -- R11 on RabbitMQ: the node frozen under load --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_r11_rabbitmq_frozen_under_load_loses_and_strands_nothing(
    tmp_path: Path, rabbitmq_server: object, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = rabbitmq_server
    project = Project(tmp_path, "amqp", redis_url, server.new_vhost())  # type: ignore[attr-defined]
    freeze = 10
    use_config(project, "broker_connection_timeout = 1.0\n", monkeypatch)
    try:
        tasks = project.app()
        n = 400
        results = tasks.sleep.delay_many([(0.01, f"r11q-{i}") for i in range(n)])
        worker = project.start_worker("-c", "2")
        wait_for(lambda: project.ledger_count() >= 40, 30, "the worker is draining")
        group = os.getpgid(server.proc.pid)  # type: ignore[attr-defined]
        began = time.monotonic()
        os.killpg(group, signal.SIGSTOP)
        outcome = "sent"
        try:
            tasks.sleep.delay(0.01, "r11q-frozen")
        except BrokerNoReplyError:
            outcome = "unknown"
        except BrokerError as exc:
            outcome = f"refused ({exc})"
        send_s = time.monotonic() - began
        time.sleep(max(0.0, freeze - send_s))
        os.killpg(group, signal.SIGCONT)
        resumed = time.monotonic()
        before = project.ledger_count()
        wait_for(lambda: project.ledger_count() > before, 60, "consuming resumed")
        recovery_s = time.monotonic() - resumed
        keys = [f"r11q-{i}" for i in range(n)]
        wait_for(lambda: all(ledger_counts(project)[k] for k in keys), 90, "the backlog ran", interval=0.2)
        if outcome == "sent":  # confirmed, so it must run; an unconfirmed send may or may not have landed
            wait_for(lambda: ledger_counts(project)["r11q-frozen"] > 0, 30, "the task sent during the freeze ran")
        vhost = project.broker_url.rsplit("/", 1)[1]

        def left_in_queue() -> int:
            queues = server.ctl("list_queues", "-p", vhost, "name", "messages", "--quiet")  # type: ignore[attr-defined]
            return sum(int(line.split()[1]) for line in queues.splitlines() if line.startswith("celery\t"))

        # the last messages may still be running when the backlog's keys are all in the ledger
        wait_for(lambda: left_in_queue() == 0, 30, "nothing left in the queue", interval=0.5)
        left = left_in_queue()
        counts = ledger_counts(project)
        lost = [i for i in range(n) if counts[f"r11q-{i}"] == 0]
        duplicated = sum(counts[f"r11q-{i}"] - 1 for i in range(n) if counts[f"r11q-{i}"] > 1)
        print(
            f"\nR11 [amqp] frozen={freeze}s sent={n} lost={len(lost)} duplicated={duplicated} "
            f"left-in-queue={left} recovery={recovery_s:.2f}s send-during-freeze={outcome} in {send_s:.2f}s"
        )
        assert lost == []
        assert left == 0
        if outcome == "sent":
            assert counts["r11q-frozen"] >= 1
        elif outcome.startswith("refused"):
            assert counts["r11q-frozen"] == 0
        assert send_s < freeze / 2
        assert [r.get(timeout=30) for r in results[:10]] == [0.01] * 10
        assert worker.proc.poll() is None
    finally:
        cleanup(project)


# -- R12 on RabbitMQ: a memory alarm blocks publishers ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_r12_rabbitmq_memory_alarm_refuses_producers_while_workers_drain(
    tmp_path: Path, rabbitmq_server: object, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = rabbitmq_server
    project = Project(tmp_path, "amqp", redis_url, server.new_vhost())  # type: ignore[attr-defined]
    use_config(project, "broker_connection_timeout = 1.0\n", monkeypatch)
    try:
        tasks = project.app()
        n = 300
        results = tasks.sleep.delay_many([(0, f"r12q-{i}") for i in range(n)])
        server.ctl("set_vm_memory_high_watermark", "absolute", "1MB")  # type: ignore[attr-defined]
        try:
            began = time.monotonic()
            with pytest.raises(BrokerError) as refused:
                tasks.sleep.delay(0, "r12q-blocked")
            refused_s = time.monotonic() - began
            assert isinstance(refused.value, BrokerNoReplyError)  # queued later, once the alarm clears
            assert "memory or disk alarm" in str(refused.value)
            # a worker started during the alarm starts, drains the backlog and stores every result
            worker = project.start_worker("-c", "2")
            wait_for(lambda: len(ledger_counts(project)) >= n, 60, "the backlog drained", interval=0.2)
            assert [r.get(timeout=30) for r in results] == [0] * n
        finally:
            server.ctl("set_vm_memory_high_watermark", "0.4")  # type: ignore[attr-defined]
        freed = time.monotonic()
        assert tasks.sleep.delay(0, "r12q-after").get(timeout=30) == 0
        counts = ledger_counts(project)
        lost = [i for i in range(n) if counts[f"r12q-{i}"] == 0]
        print(
            f"\nR12 [amqp] sent={n + 1} lost={len(lost)} duplicated={sum(c - 1 for c in counts.values())} "
            f"recovery-after-free={time.monotonic() - freed:.2f}s refused-in={refused_s:.2f}s "
            f"producer-error={str(refused.value)[-150:]!r} blocked-send-ran-later={counts['r12q-blocked']}"
        )
        assert lost == []
        assert refused_s < 5
        assert counts["r12q-blocked"] <= 1
        assert worker.proc.poll() is None
    finally:
        cleanup(project)


# -- R11 on SQLite: the file locked by another process past the visibility timeout -------------------

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@pytest.mark.slow
def test_r11_sqlite_locked_past_the_visibility_timeout_loses_and_strands_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    project = Project(tmp_path, "sqlite")
    visibility, locked = 3, 8
    use_config(project, f"broker_visibility_timeout = {visibility}\n", monkeypatch)
    try:
        tasks = project.app()
        n = 300
        tasks.sleep.delay_many([(0.01, f"r11s-{i}") for i in range(n)])
        workers = [project.start_worker("-c", "2"), project.start_worker("-c", "2")]
        wait_for(lambda: project.ledger_count() >= 40, 30, "the workers are draining")
        path = project.broker_url.removeprefix("sqlite:///")
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, path, str(locked)], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        began = time.monotonic()
        tasks.sleep.delay(0.01, "r11s-during")  # waits for the lock (SQLite has no unknown outcome)
        send_s = time.monotonic() - began
        assert holder.wait(30) == 0
        before = project.ledger_count()
        resumed = time.monotonic()
        wait_for(lambda: project.ledger_count() > before, 30, "consuming resumed")
        recovery_s = time.monotonic() - resumed
        keys = [f"r11s-{i}" for i in range(n)] + ["r11s-during"]
        wait_for(lambda: all(ledger_counts(project)[k] for k in keys), 60, "everything ran", interval=0.2)
        broker = tasks.app.broker
        wait_for(lambda: broker.queue_length("celery") == 0, 10, "the queue drained")
        counts = ledger_counts(project)
        lost = [k for k in keys if counts[k] == 0]
        duplicated = sum(counts[k] - 1 for k in keys if counts[k] > 1)
        held = sqlite_leased(path)
        print(
            f"\nR11 [sqlite, locked {locked}s] visibility={visibility}s sent={len(keys)} lost={len(lost)} "
            f"duplicated={duplicated} stranded={held} recovery={recovery_s:.2f}s send-waited={send_s:.2f}s"
        )
        assert lost == [] and held == 0
        # every worker renewed before any swept (a stall delays sweeping), so none took another's
        assert duplicated == 0
        assert all(w.proc.poll() is None for w in workers)
    finally:
        cleanup(project)


def sqlite_leased(path: str) -> int:
    """Messages leased to anyone in the broker file, counted by another process (two SQLite
    libraries in one process must not open one file)."""
    import subprocess
    import sys

    count = (
        "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
        "'SELECT COUNT(*) FROM messages WHERE owner IS NOT NULL').fetchone()[0])"
    )
    return int(subprocess.run([sys.executable, "-c", count, path], capture_output=True, text=True, check=True).stdout)


# -- R11 on PostgreSQL: the whole cluster frozen (SIGSTOP) past the visibility timeout, under load -------


def cluster_pids(server: PostgresServer) -> list[int]:
    """The postmaster first, then every process it forked (backends, checkpointer, WAL writer ...)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def signal_cluster(server: PostgresServer, sig: signal.Signals) -> None:
    for pid in cluster_pids(server):  # the postmaster first: it forks no one new meanwhile
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@pytest.mark.slow
def test_r11_postgres_frozen_past_the_visibility_timeout_loses_and_strands_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PostgresServer()  # a cluster of this test's own: it is frozen
    reply_timeout, visibility, freeze = 2, 3, 10
    project = Project(tmp_path, "postgres", postgres_url=f"{server.new_database()}?reply_timeout={reply_timeout}")
    try:
        config = f"broker_visibility_timeout = {visibility}\nbroker_connection_timeout = 1.0\n"
        use_config(project, config, monkeypatch)
        tasks = project.app()
        n = 400
        results = tasks.sleep.delay_many([(0.01, f"r11p-{i}") for i in range(n)])
        workers = [project.start_worker("-c", "2"), project.start_worker("-c", "2")]
        wait_for(lambda: project.ledger_count() >= 40, 30, "the workers are draining")

        # A producer keeps sending through the freeze: each call returns an id, or fails within the
        # reply timeout saying whether the outcome is unknown.
        producer = Producer(tasks, "r11p-live", reason="reply_timeout")
        time.sleep(0.5)
        signal_cluster(server, signal.SIGSTOP)
        try:
            time.sleep(freeze)
        finally:
            signal_cluster(server, signal.SIGCONT)
        resumed = time.monotonic()
        before = project.ledger_count()
        wait_for(lambda: project.ledger_count() > before, 30, "consuming resumed")
        recovery_s = time.monotonic() - resumed
        time.sleep(1.0)
        producer.stop()
        sent = producer.sent

        keys = [f"r11p-{i}" for i in range(n)]
        wait_for(lambda: all(ledger_counts(project)[k] for k in keys), 60, "the backlog ran", interval=0.2)
        wait_for(lambda: all(ledger_counts(project)[k] for k in sent), 60, "every accepted send ran", interval=0.2)

        def stranded() -> int:
            return int(server.psql("SELECT count(*) FROM rqueue.messages WHERE owner IS NOT NULL", project_db))

        project_db = project.broker_url.rsplit("/", 1)[1].partition("?")[0]
        # Everything ran; what is still leased was leased to no one who will run it: renewals hand
        # such orphans back within a third of the visibility timeout.
        wait_for(lambda: stranded() == 0, visibility * 2, "nothing stays leased")
        counts = ledger_counts(project)
        keys += sent
        lost = [k for k in keys if counts[k] == 0]
        duplicated = sum(counts[k] - 1 for k in keys if counts[k] > 1)
        logs = "".join(w.log_text() for w in workers)
        print(
            f"\nR11 [postgres] frozen={freeze}s visibility={visibility}s reply_timeout={reply_timeout}s "
            f"sent={len(keys)} lost={len(lost)} duplicated={duplicated} stranded={stranded()} "
            f"recovery={recovery_s:.2f}s sends-unknown={len(producer.unknown)} "
            f"sends-refused={len(producer.refused)} slowest-send={producer.slowest:.2f}s"
        )
        assert lost == []
        assert duplicated == 0  # every worker renewed before any swept (a stall delays sweeping)
        assert [r.get(timeout=30) for r in results[:10]] == [0.01] * 10
        # a send never waits out the freeze: it fails after the reply timeout, or after two when its
        # connection was refused (a new one also waits one out, and one retry fits in
        # broker_connection_timeout)
        assert producer.slowest < 2 * reply_timeout + 1
        assert producer.unknown or producer.refused, "sends during the freeze must fail, not hang"
        # the stall is in the workers' logs, named as such
        assert "no answer within 2.0 s (reply_timeout)" in logs
        assert all(w.proc.poll() is None for w in workers)
    finally:
        signal_cluster(server, signal.SIGCONT)
        cleanup(project)
        server.close()
