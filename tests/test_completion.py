"""Completing a batch: results and acks in one step when the broker and the backend share a store,
else results first, then acks. Chosen once, from the real SQLite broker and backends."""

from __future__ import annotations

from pathlib import Path

from rqueue import App, states
from rqueue.backends.base import ResultRecord
from rqueue.worker.completion import completer_for


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
