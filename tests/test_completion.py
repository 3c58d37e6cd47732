"""Completing a batch: results and acks in one step when the broker and the backend share a store,
else results first, then acks (chosen once, from the real SQLite broker and backends); and the
thread that writes batches while the executor runs on."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from rqueue import App, states
from rqueue.backends.base import ResultRecord
from rqueue.worker.completion import WRITER_PENDING_MAX, BatchWriter, completer_for


def lease_one(app: App) -> str:
    app.broker.publish("q", b'{"body": ""}')
    (delivery,) = app.broker.native.fetch(["q"], 1, "w/1", 60_000)  # type: ignore[attr-defined]
    return str(delivery.tag)


def test_shared_sqlite_file_completes_in_one_transaction(tmp_path: Path) -> None:
    app = App("t", broker=f"sqlite:///{tmp_path / 'one.db'}")
    broker, backend = app.broker, app.backend
    assert backend.shares_store_with(broker.url)
    joint = broker.joint_completer(backend)  # type: ignore[attr-defined]
    assert joint is not None
    tag = lease_one(app)
    record = ResultRecord("t1", states.SUCCESS, 5)
    completer_for(broker, backend)([("t1", states.SUCCESS, backend.encode(record))], [tag])  # type: ignore[arg-type]
    assert app.AsyncResult("t1").get(timeout=1) == 5
    assert broker.native.leased_tags("w/1") == []  # type: ignore[attr-defined]


def test_separate_stores_write_results_then_ack(tmp_path: Path) -> None:
    app = App("t", broker=f"sqlite:///{tmp_path / 'b.db'}", backend=f"sqlite:///{tmp_path / 'r.db'}")
    broker, backend = app.broker, app.backend
    assert not backend.shares_store_with(broker.url)
    assert broker.joint_completer(backend) is None  # type: ignore[attr-defined]
    tag = lease_one(app)
    record = ResultRecord("t2", states.SUCCESS, {"v": 1})
    completer_for(broker, backend)([("t2", states.SUCCESS, backend.encode(record))], [tag])  # type: ignore[arg-type]
    assert app.AsyncResult("t2").get(timeout=1) == {"v": 1}
    assert broker.native.leased_tags("w/1") == []  # type: ignore[attr-defined]


# -- the writer thread -------------------------------------------------------------------------------


class Recorder:
    """A write step that records each write (and can be held, or made to fail once)."""

    def __init__(self) -> None:
        self.writes: list[tuple[list[Any], list[str], list[Any], float | None]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail_next = False

    def __call__(self, results: list[Any], acks: list[str], parts: list[Any], give_up: float | None) -> None:
        self.entered.set()
        assert self.hold.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a bug in the write step")
        self.writes.append((results, acks, parts, give_up))


def batch(n: int) -> tuple[list[tuple[str, str, bytes]], list[str], list[Any]]:
    return [(f"t{n}", states.SUCCESS, b"%d" % n)], [f"tag{n}"], []


def test_writer_writes_in_order_and_batches_pending_meanwhile_in_one_write() -> None:
    record = Recorder()
    writer = BatchWriter(record)
    record.hold.clear()
    writer.submit(*batch(0), None)
    assert record.entered.wait(5)  # the first write is under way...
    for n in (1, 2, 3):
        writer.submit(*batch(n), 5.0 if n == 2 else None)  # ...these wait behind it
    assert not writer.idle()
    record.hold.set()
    writer.drain()
    assert writer.idle()
    assert [w[0] for w in record.writes] == [batch(0)[0], batch(1)[0] + batch(2)[0] + batch(3)[0]]
    assert record.writes[1][1] == ["tag1", "tag2", "tag3"]  # acks after all of their results
    assert record.writes[1][3] == 5.0  # the shortest give-up of the batches written together
    writer.close()
    writer.submit(*batch(4), None)  # closed: written in the caller's thread, not dropped
    assert record.writes[-1][1] == ["tag4"]


def test_writer_bounds_what_it_holds() -> None:
    record = Recorder()
    writer = BatchWriter(record)
    record.hold.clear()
    writer.submit(*batch(0), None)
    assert record.entered.wait(5)
    for n in range(WRITER_PENDING_MAX):
        writer.submit(*batch(n + 1), None)
    blocked = threading.Thread(target=writer.submit, args=(*batch(99), None))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # full: the executor waits instead of piling up results
    record.hold.set()
    blocked.join(5)
    assert not blocked.is_alive()
    writer.close()
    written = [tag for w in record.writes for tag in w[1]]
    assert written == [f"tag{n}" for n in range(WRITER_PENDING_MAX + 1)] + ["tag99"]


def test_writer_keeps_writing_after_a_failed_write(caplog: pytest.LogCaptureFixture) -> None:
    record = Recorder()
    record.fail_next = True
    writer = BatchWriter(record)
    writer.submit(*batch(0), None)
    writer.drain()
    writer.submit(*batch(1), None)
    writer.close()
    assert [w[1] for w in record.writes] == [["tag1"]]
    assert "Writing 1 result(s) and 1 ack(s) failed" in caplog.text
