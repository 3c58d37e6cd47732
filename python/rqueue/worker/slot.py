"""The memory one prefork child shares with its supervisor: what the child runs, and the
supervisor's requests about it (soft limit, terminate).

The child side (``Executor``) writes; the supervisor (``pool.PreforkPool``) reads and requests.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import time
from dataclasses import dataclass


class SlotState:
    IDLE = 0
    FETCHED = 1  # a message is being decoded and checked
    RUNNING = 2  # its task's function is running


@dataclass(frozen=True)
class RunningTask:
    """What a prefork child is running, as its slot says (``inspect active``, time limits).

    ``soft``/``hard`` are the limits the message carries (per call; None when it carries none):
    :meth:`PreforkPool.active` gives the effective ones. ``started`` is in epoch seconds; ``run``
    numbers the messages the slot's children have started, so a stale snapshot is told apart.
    """

    task_id: str
    name: str
    args_repr: str
    started: float
    pid: int
    tag: str
    soft: float | None
    hard: float | None
    run: int
    ignore_result: bool = False


class RunningSlot:
    """Memory shared by one child slot and the supervisor (an anonymous mmap, inherited over fork).

    The child writes what it is running: the message's tag as soon as it takes one (when a child
    dies, only that message counts as delivered: it may be what killed the child; its prefetched,
    unstarted messages go back uncounted, so a poison message does not push its innocent
    neighbours to ``broker_max_deliveries``), then the task's id, name, args, start time and time
    limits. The supervisor reads them (a sequence counter makes each read consistent) and writes
    back requests: "raise SoftTimeLimitExceeded in run N", "terminate run N".

    Text fields are UTF-8, NUL-padded and truncated to their size. Each write is one
    ``struct.pack_into`` (fields in order, the counter first) plus the closing counter.
    """

    SIZE = 1024
    #: version (odd while the child writes), run, started, soft, hard (NaN = none), pid, state,
    #: ignore_result, then the tag; the task's id, name and args repr follow.
    _FETCHED = struct.Struct("<QQdddiBB256s")
    _RUNNING = struct.Struct("<QQdddiBB256s256s256s128s")
    #: Longest task id and name (UTF-8 bytes) the slot holds whole: the supervisor records a killed
    #: task's outcome under the id it reads here, so a longer one must not be written cut.
    MAX_NAME = 255
    _VERSION = struct.Struct("<Q")
    _STATE_AT = 8 + 8 + 8 * 3 + 4  # the state byte
    _REQUESTS = struct.Struct("<QdQ")  # soft-limit run, soft limit, terminate run (supervisor → child)
    _REQUESTS_AT = 960

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, self.SIZE)
        #: The child's current run number and message tag (meaningful in the child only).
        self.run = 0
        self._tag = b""
        self._version = 0
        self._pid = 0

    # -- child side ---------------------------------------------------------------------------------

    def attach(self) -> None:
        """In a newly forked child: continue the slot's run numbering."""
        self._version, self.run = struct.unpack_from("<QQ", self._mem, 0)
        self._version &= ~1
        self._pid = os.getpid()

    def set(self, tag: str) -> None:
        """A message was taken: its tag is what this child holds now (a new run)."""
        self.run += 1
        self._tag = tag.encode("utf-8", "replace")
        version = self._version + 1
        self._FETCHED.pack_into(
            self._mem, 0, version, self.run, time.time(), math.nan, math.nan, self._pid, SlotState.FETCHED, 0, self._tag
        )
        self._VERSION.pack_into(self._mem, 0, version + 1)
        self._version = version + 1

    def task_started(
        self,
        task_id: str,
        name: str,
        args_repr: str,
        soft: float | None,
        hard: float | None,
        ignore_result: bool,
    ) -> bool:
        """The message's task function is about to run (``soft``/``hard``: the message's limits).

        False (nothing written) when the id or name is longer than the slot holds: the supervisor
        then sees the message as held but no task as running, so it enforces no time limit and
        cannot terminate it, rather than record an outcome under a cut id.
        """
        raw_id, raw_name = task_id.encode("utf-8", "replace"), name.encode("utf-8", "replace")
        if len(raw_id) > self.MAX_NAME or len(raw_name) > self.MAX_NAME:
            return False
        version = self._version + 1
        self._RUNNING.pack_into(
            self._mem,
            0,
            version,
            self.run,
            time.time(),
            math.nan if soft is None else soft,
            math.nan if hard is None else hard,
            self._pid,
            SlotState.RUNNING,
            ignore_result,
            self._tag,
            raw_id,
            raw_name,
            args_repr.encode("utf-8", "replace"),
        )
        self._VERSION.pack_into(self._mem, 0, version + 1)
        self._version = version + 1
        return True

    def clear(self) -> None:
        self._mem[self._STATE_AT] = SlotState.IDLE  # one byte: no torn read possible

    def requested(self) -> tuple[int, float, int]:
        """``(soft-limit run, soft limit, terminate run)`` as last written by the supervisor."""
        run, limit, terminate = self._REQUESTS.unpack_from(self._mem, self._REQUESTS_AT)
        return int(run), float(limit), int(terminate)

    # -- supervisor side ----------------------------------------------------------------------------

    def get(self) -> str | None:
        """The tag of the message the child holds (taken or running), None when idle."""
        snapshot = self._snapshot()
        return snapshot[0] if snapshot is not None and snapshot[1] != SlotState.IDLE else None

    def read(self) -> RunningTask | None:
        """The task the child is running, None when it is not running one."""
        snapshot = self._snapshot()
        return snapshot[2] if snapshot is not None and snapshot[1] == SlotState.RUNNING else None

    def runs(self) -> tuple[int, bool]:
        """``(messages the slot's children have taken, whether one holds a message now)``: two
        reads of the shared memory, no consistency loop (heartbeat counts may be a task off)."""
        run = int(struct.unpack_from("<Q", self._mem, 8)[0])
        return run, self._mem[self._STATE_AT] != SlotState.IDLE

    def request_soft_limit(self, run: int, limit: float) -> None:
        _, _, terminate = self.requested()
        self._REQUESTS.pack_into(self._mem, self._REQUESTS_AT, run, limit, terminate)

    def request_terminate(self, run: int) -> None:
        soft_run, limit, _ = self.requested()
        self._REQUESTS.pack_into(self._mem, self._REQUESTS_AT, soft_run, limit, run)

    def _snapshot(self) -> tuple[str, int, RunningTask] | None:
        mem = self._mem
        for _ in range(1000):
            fields = self._RUNNING.unpack_from(mem, 0)
            if fields[0] & 1 or self._VERSION.unpack_from(mem, 0)[0] != fields[0]:
                time.sleep(0)  # the child is writing
                continue
            _, run, started, soft, hard, pid, state, ignore, *texts = fields
            tag, task_id, name, args_repr = (t.rstrip(b"\0").decode("utf-8", "ignore") for t in texts)
            limits = _none(soft), _none(hard)
            return tag, state, RunningTask(task_id, name, args_repr, started, pid, tag, *limits, run, bool(ignore))
        return None  # the child keeps rewriting it (it cannot for this long); treat as unknown


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value
