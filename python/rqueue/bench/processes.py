"""Worker processes started through a command line, each in its own process group, always stopped."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from rqueue.exceptions import RQueueError

#: Warm shutdown gets this long before the process group is killed.
STOP_GRACE_S = 10.0


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` that has the kernel SIGTERM the child when its parent dies.

    So workers stop (a warm shutdown) even when the bench is killed outright (SIGKILL, a closed
    terminal) and no ``finally`` runs. libc's ``prctl`` is looked up here, in the parent: the child
    between fork and exec then only calls into C.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return set_signal


_PREEXEC = _parent_death_signal()


def rqueue_command() -> list[str]:
    """The ``rqueue`` command of this interpreter (the script beside it, else ``python -m rqueue``)."""
    script = Path(sys.executable).with_name("rqueue")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rqueue"]


class WorkerExited(RQueueError):
    """A worker process ended while the bench needed it."""


class WorkerProcess:
    """One worker command, in a new session (a Ctrl-C on the terminal reaches only the bench), sent
    SIGTERM by the kernel if the process that started it dies.

    Its output goes to ``log``; ``stop()`` sends SIGTERM (a warm shutdown), then SIGKILL to the
    whole group after ``grace_s``, so children of a prefork pool never outlive it.
    """

    def __init__(
        self, cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.cmd = list(cmd)
        self.log = log
        self._terminated = False
        self._log_fh: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_PREEXEC,  # noqa: PLW1509 - it only calls prctl(), looked up before the fork
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        """WorkerExited, with the end of its log, when the worker has exited."""
        if self.proc.poll() is not None:
            raise WorkerExited(f"worker exited with code {self.proc.returncode}; its log ends:\n{self.log_tail()}")

    def terminate(self) -> None:
        """Ask the worker for a warm shutdown, once: a second SIGTERM would make it a cold one. The
        worker passes it on to its own children."""
        if not self._terminated and self.proc.poll() is None:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        try:
            if self.proc.poll() is None:
                self.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace_s)
            # Children may outlive a killed parent; the group is the worker's alone.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        finally:
            self._log_fh.close()


class WorkerGroup:
    """Several worker processes, stopped together (in parallel: each gets the same grace)."""

    def __init__(self) -> None:
        self.workers: list[WorkerProcess] = []

    def add(self, worker: WorkerProcess) -> WorkerProcess:
        self.workers.append(worker)
        return worker

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def check_alive(self) -> None:
        for w in self.workers:
            w.check_alive()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        for w in self.workers:
            w.terminate()
        errors: list[BaseException] = []
        for w in self.workers:
            try:
                w.stop(grace_s)
            except Exception as exc:  # stop the others all the same
                errors.append(exc)
        self.workers = []
        if errors:
            raise errors[0]
