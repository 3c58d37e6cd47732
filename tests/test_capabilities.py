"""A broker with only the required contract: code that needs a capability asks for it, and falls
back (or says clearly what is missing) when the broker lacks it. The broker here is the real SQLite
transport seen through the required methods only, as a future broker without a store would be."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from rqueue import App, _rqueue
from rqueue.brokers.base import (
    Broker,
    BrokerConsumer,
    DeadLetterAdmin,
    LeaseRecovery,
    Mailbox,
    RevocationStore,
    capability,
    require,
)
from rqueue.brokers.sqlite import SqliteBroker
from rqueue.exceptions import ConfigurationError
from rqueue.worker.state import Revoked


class RequiredOnly(Broker):
    """The required contract of a real SQLite broker, and nothing more."""

    def __init__(self, path: Path) -> None:
        self.real = SqliteBroker(str(path))
        self.url = self.real.url

    def publish(self, queue: str, payload: bytes, priority: int = 0, eta_ms: int | None = None) -> None:
        self.real.publish(queue, payload, priority, eta_ms)

    def publish_many(self, messages: Sequence[tuple[str, bytes, int, int | None]]) -> None:
        self.real.publish_many(messages)

    def consumer(
        self,
        queues: Sequence[str],
        owner: str,
        buffer: _rqueue.PrefetchBuffer,
        lease_s: float,
        max_deliveries: int,
        poll_max_ms: int,
    ) -> BrokerConsumer:
        return self.real.consumer(queues, owner, buffer, lease_s, max_deliveries, poll_max_ms)

    def purge(self, queues: Sequence[str]) -> int:
        return self.real.purge(queues)

    def queue_length(self, queue: str) -> int:
        return self.real.queue_length(queue)

    def mailbox(self) -> Mailbox:
        return self.real.mailbox()

    def __repr__(self) -> str:
        return "<RequiredOnly broker>"


def test_capabilities_are_asked_for(tmp_path: Path) -> None:
    full = SqliteBroker(str(tmp_path / "full.db"))
    bare = RequiredOnly(tmp_path / "bare.db")
    assert capability(full, RevocationStore) is full and capability(full, LeaseRecovery) is full
    assert capability(bare, RevocationStore) is None and capability(bare, LeaseRecovery) is None
    with pytest.raises(
        ConfigurationError, match=r"rqueue dlq is not available on <RequiredOnly broker>.*DeadLetterAdmin"
    ):
        require(bare, DeadLetterAdmin, "rqueue dlq")


def test_revoke_without_a_revocation_store_broadcasts_and_keeps_ids_in_the_statedb(tmp_path: Path) -> None:
    app = App("t", broker=f"sqlite:///{tmp_path / 'b.db'}")
    bare = RequiredOnly(tmp_path / "b.db")
    app._broker = (app.broker_url, bare)  # this app talks to the broker through the required contract only
    listener = bare.mailbox()
    listener.listen()
    app.control.revoke("t-1")
    (command,) = listener.commands(1.0)
    assert (command["method"], command["arguments"]["task_id"]) == ("revoke", ["t-1"])
    assert bare.real.revoked_since(0) == []  # nothing was stored in the broker

    statedb = tmp_path / "worker.state"
    revoked = Revoked(bare, str(statedb))
    revoked.add(["t-1"], expires=2**62)
    assert "t-1" in revoked  # refreshing without a store keeps what remote control said
    revoked.save()
    assert json.loads(statedb.read_text())["revoked"] == {"t-1": 2**62}
    assert "t-1" in Revoked(bare, str(statedb))  # a restarted worker still skips it
