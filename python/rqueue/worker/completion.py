"""How a worker process completes a batch: results first, then acks, in one step when the broker
and the result backend share a store. Chosen once per consumer, when the worker starts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rqueue.backends.base import ResultBackend
    from rqueue.brokers.base import Completer, Settler


def completer_for(settler: Settler, backend: ResultBackend) -> Completer:
    """Store results in ``backend`` and ack through ``settler``.

    Results go first, so a crash in between re-runs tasks rather than losing them. When the
    broker keeps its messages in the backend's store (the same SQLite file, the same Redis
    database) both go in one transaction or round trip.
    """
    joint = settler.joint_completer(backend)
    if joint is not None:
        return joint

    def separately(results: list[tuple[str, str, bytes]], tags: Sequence[str]) -> None:
        if results:
            backend.write_encoded(results)
        if tags:
            settler.ack(tags)

    return separately
