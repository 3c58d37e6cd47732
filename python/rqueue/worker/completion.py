"""How a worker process completes a batch: results first, then acks, in one step when the broker
and the result backend share a store (chosen once per consumer, when the worker starts), and the
thread that writes batches while the executor runs the next tasks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rqueue.backends.base import ResultBackend
    from rqueue.brokers.base import Completer, Settler

logger = logging.getLogger("rqueue.worker")

#: Batches a writer holds before ``submit`` waits for it: tasks that outrun the broker slow down
#: instead of piling up results in memory (each is written together with the others pending).
WRITER_PENDING_MAX = 16

#: ``(results, acks, chord parts, give up after s)``: one batch, as ``Executor.write`` takes it.
Batch = tuple[list[tuple[str, str, bytes]], list[str], list[Any], float | None]
#: ``Executor.write``: writes one batch.
WriteBatch = Callable[[list[tuple[str, str, bytes]], list[str], list[Any], float | None], None]


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


class BatchWriter:
    """The thread that writes the batches an executor hands it, so the executor runs its next
    tasks meanwhile instead of waiting a round trip. In order; the batches pending when a write
    starts go in one write (results, chord counts, then acks). ``write`` retries while the broker
    is away (``Executor.write``). Started at the first batch."""

    def __init__(self, write: WriteBatch) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._pending: list[Batch] = []
        self._writing = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(
        self, results: list[tuple[str, str, bytes]], acks: list[str], parts: list[Any], give_up_after_s: float | None
    ) -> None:
        """Hand a batch over; waits only while ``WRITER_PENDING_MAX`` batches are pending. Once
        closed, writes it in the calling thread."""
        if self._closed:
            self._write(results, acks, parts, give_up_after_s)
            return
        with self._changed:
            while len(self._pending) >= WRITER_PENDING_MAX:
                self._changed.wait()
            self._pending.append((results, acks, parts, give_up_after_s))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rqueue-results", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def idle(self) -> bool:
        """Nothing pending, nothing being written."""
        return not (self._pending or self._writing)

    def drain(self) -> None:
        """Wait until every batch handed over is written (or given up on)."""
        with self._changed:
            while self._pending or self._writing:
                self._changed.wait()

    def close(self) -> None:
        """Write what is pending, then stop the thread (blocks)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if not self._pending:
                    return
                batches, self._pending = self._pending, []
                self._writing = True
                self._changed.notify_all()  # room for submitters
            results: list[tuple[str, str, bytes]] = []
            acks: list[str] = []
            parts: list[Any] = []
            give_ups: list[float] = []
            for more in batches:
                results += more[0]
                acks += more[1]
                parts += more[2]
                if more[3] is not None:
                    give_ups.append(more[3])
            try:
                self._write(results, acks, parts, min(give_ups, default=None))
            except Exception:  # a bug, not the broker (write retries those): keep writing the next ones
                logger.exception("Writing %d result(s) and %d ack(s) failed", len(results), len(acks))
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()
