"""CPU time and memory of process trees, read from ``/proc`` (Linux); ``None`` where it is not readable."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> bool:
    """True when this system has a Linux-style ``/proc`` for our own process."""
    return (PROC / str(os.getpid()) / "stat").exists()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process so far."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime (fields 14 and 15)
    except (IndexError, ValueError):
        return None


def _status_kib(pid: int, key: str) -> int | None:
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """The largest resident set of one process so far (``VmHWM``)."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found: list[int] = []
    task_dir = PROC / str(pid) / "task"
    try:
        threads = [p.name for p in task_dir.iterdir()]
    except OSError:
        return found
    for tid in threads:
        try:
            found.extend(int(c) for c in (task_dir / tid / "children").read_text().split())
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    pids = [pid]
    i = 0
    while i < len(pids):
        pids.extend(children(pids[i]))
        i += 1
    return pids


class TreeUsage:
    """CPU seconds and peak memory of process trees, between ``start()`` and ``stop()``.

    Each process is read at both ends (a process that appears in between counts from zero), so
    the CPU share is the trees' busy time over the wall time: 100 % is one core.
    """

    def __init__(self, roots: Iterable[int]) -> None:
        self.roots = list(roots)
        self.ok = available()
        self._start: dict[int, float] = {}
        self.cpu_s: float | None = None
        self.peak_rss_bytes: int | None = None
        self.pids: set[int] = set()

    def _read(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for root in self.roots:
            for pid in tree(root):
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    out[pid] = cpu
        self.pids.update(out)
        return out

    def start(self) -> None:
        if self.ok:
            self._start = self._read()

    def stop(self) -> None:
        """Read CPU and peak RSS now (call it before the processes exit)."""
        if not self.ok:
            return
        end = self._read()
        self.cpu_s = sum(cpu - self._start.get(pid, 0.0) for pid, cpu in end.items())
        peaks = [peak_rss_bytes(pid) for pid in end]
        self.peak_rss_bytes = sum(p for p in peaks if p is not None) or None

    def cpu_percent(self, wall_s: float) -> float | None:
        return None if self.cpu_s is None or wall_s <= 0 else 100.0 * self.cpu_s / wall_s


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, or the platform's processor string."""
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
