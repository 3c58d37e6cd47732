"""What a prefork supervisor saw of its children's deaths, for brokers that return a dead child's
messages themselves (RabbitMQ): which task was running when its child died, and which were killed
to stop them.

RabbitMQ redelivers everything a dead child held, flagged as redelivered but not counted, and the
innocent prefetched messages along with the one that killed it. Only the supervisor knows which one
was running (its ``RunningSlot``). It records a verdict here, in memory every child inherits over
fork; the child that receives the redelivered message takes the verdict and acts on it: ``LOST``
counts a delivery (the message is recounted, or dead-lettered at ``broker_max_deliveries``),
``STOPPED``/``TERMINATED`` mean its outcome is stored (hard time limit, terminate), so it is acked
without running. The broker may redeliver before the supervisor has reaped the dead child: a message still
shown running in a sibling's slot is ``LOST`` too (it cannot run in two places). A redelivered
message with no verdict (another node's death, or a prefetched neighbour) runs as it is.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rqueue.worker.slot import RunningSlot

#: The message was running when its worker process died: one delivery that may have killed it.
LOST = 1
#: The task was killed by its hard time limit (STOPPED) or by ``revoke(terminate=True)`` (TERMINATED)
#: and its outcome was stored: ack, do not run (an ``rpc://`` client is sent the outcome from there).
STOPPED = 2
TERMINATED = 3


class Verdicts:
    """A small ring of ``(verdict, task id)`` entries in anonymous shared memory, with a lock.

    Create it in the supervisor before forking children. An entry is overwritten when the ring
    wraps (``SIZE`` deaths before the message comes back), which only loses a count.
    """

    SIZE = 128
    _ENTRY = struct.Struct("<B255s")
    _HEAD = struct.Struct("<Q")

    def __init__(self, slots: Sequence[RunningSlot]) -> None:
        self._mem = mmap.mmap(-1, self._HEAD.size + self.SIZE * self._ENTRY.size)
        self._lock = multiprocessing.get_context("fork").Lock()
        self._slots = list(slots)

    def add_slot(self, slot: RunningSlot) -> None:
        """Watch one more slot (the pool grew); children forked before do not see it, which only
        loses the count of a death they could not have witnessed anyway."""
        self._slots.append(slot)

    def _at(self, i: int) -> int:
        return self._HEAD.size + i * self._ENTRY.size

    def record(self, task_id: str, verdict: int) -> None:
        raw = task_id.encode()[:255]
        with self._lock:
            (head,) = self._HEAD.unpack_from(self._mem, 0)
            self._ENTRY.pack_into(self._mem, self._at(head % self.SIZE), verdict, raw)
            self._HEAD.pack_into(self._mem, 0, head + 1)

    def take(self, task_id: str) -> int | None:
        """The verdict on ``task_id``'s last delivery (a recorded one is removed); None when there
        is none."""
        raw = task_id.encode()[:255].ljust(255, b"\0")
        with self._lock:
            for i in range(self.SIZE):
                verdict, stored = self._ENTRY.unpack_from(self._mem, self._at(i))
                if verdict and stored == raw:
                    self._ENTRY.pack_into(self._mem, self._at(i), 0, b"")
                    return int(verdict)
        me = os.getpid()
        for slot in self._slots:
            running = slot.read()
            if running is not None and running.task_id == task_id and running.pid != me:
                return LOST  # its child died and is not reaped yet
        return None
