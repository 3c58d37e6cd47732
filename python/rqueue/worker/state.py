"""What a worker remembers across tasks: the revoked task ids.

They come from remote control (``revoke`` broadcasts), from the broker when it keeps revocations
(a ``RevocationStore``, polled about once a second) and, with ``--statedb``, from a file the
worker saves on shutdown and loads on start (a broker without a store relies on it, as Celery does).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from rqueue.brokers.base import RevocationStore, capability
from rqueue.exceptions import BrokerError

if TYPE_CHECKING:
    from rqueue.brokers.base import Broker

logger = logging.getLogger("rqueue.worker")

#: How often the broker's revocations are read again.
REFRESH_S = 1.0
#: Revocations are read back a little before the last poll: clocks of processes differ slightly.
OVERLAP_MS = 5_000


class Revoked:
    """The set of revoked task ids, with expiry (milliseconds since the epoch)."""

    def __init__(self, broker: Broker, statedb: str | None = None) -> None:
        self.store = capability(broker, RevocationStore)
        self.statedb = statedb
        self.ids: dict[str, int] = {}
        self._since_ms = 0
        self._next_refresh = 0.0
        self._lock = threading.Lock()
        if statedb:
            self.load()

    def __contains__(self, task_id: str) -> bool:
        if time.monotonic() >= self._next_refresh:
            self.refresh()
        expires = self.ids.get(task_id)
        return expires is not None and expires >= time.time() * 1000

    def add(self, task_ids: list[str], expires: int) -> None:
        """Revoke at once in this process (remote control), until ``expires`` (epoch ms)."""
        with self._lock:
            for task_id in task_ids:
                self.ids[task_id] = max(self.ids.get(task_id, 0), expires)

    def refresh(self) -> None:
        """Read revocations made since the last read from the broker."""
        with self._lock:
            now_ms = int(time.time() * 1000)
            self._next_refresh = time.monotonic() + REFRESH_S
            revoked: list[tuple[str, int]] = []
            if self.store is not None:
                try:
                    revoked = self.store.revoked_since(self._since_ms)
                except BrokerError as exc:  # keep what is known; read again on the next refresh
                    logger.warning("Cannot read revoked task ids: %s", exc)
                    return
            for task_id, expires in revoked:
                self.ids[task_id] = expires
            self._since_ms = now_ms - OVERLAP_MS
            self.ids = {k: v for k, v in self.ids.items() if v >= now_ms}

    def load(self) -> None:
        assert self.statedb
        try:
            with open(self.statedb) as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable state file %s: %s", self.statedb, exc)
            return
        now_ms = time.time() * 1000
        revoked = data.get("revoked", {}) if isinstance(data, dict) else {}
        self.ids.update({str(k): int(v) for k, v in revoked.items() if isinstance(v, int) and v >= now_ms})

    def save(self) -> None:
        """Write the unexpired ids to the state file atomically (a crash leaves the old file)."""
        if not self.statedb:
            return
        self.refresh()
        now_ms = time.time() * 1000
        tmp = f"{self.statedb}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"revoked": {k: v for k, v in self.ids.items() if v >= now_ms}}, fh)
        os.replace(tmp, self.statedb)
