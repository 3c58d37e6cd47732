"""The prefork pool: a supervisor process and N child processes, each a full consumer.

Each child leases its own messages, so nothing is passed between processes. A child that dies
is replaced, and the supervisor returns its leased messages to the queue at once (a message
that keeps killing children is dead-lettered after ``broker_max_deliveries``).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from rqueue.worker.consumer import Consumer, owner_id
from rqueue.worker.link import ChildLink

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.worker.ratelimit import RateLimits
    from rqueue.worker.state import Revoked

logger = logging.getLogger("rqueue.worker")

SHUTDOWN_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGQUIT}

#: Supervisors check that children are alive (and children that the parent is) this often.
CHECK_INTERVAL_S = 0.5
#: How long the supervisor waits for children to acknowledge a change (queues, revocations).
LINK_TIMEOUT_S = 1.0


class RunningSlot:
    """Memory shared by one child slot and the supervisor: the tag of the message the child is running.

    When a child dies, only that message counts as delivered (it may be what killed the child);
    the child's prefetched, unstarted messages go back uncounted, so a poison message does not push
    its innocent neighbours to ``broker_max_deliveries``.
    """

    SIZE = 256

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, self.SIZE)  # anonymous and shared: children inherit it over fork

    def set(self, tag: str) -> None:
        data = tag.encode()[: self.SIZE - 1] + b"\0"
        self._mem[: len(data)] = data

    def clear(self) -> None:
        self._mem[:1] = b"\0"

    def get(self) -> str | None:
        tag = self._mem[: self.SIZE].split(b"\0", 1)[0]
        return tag.decode() if tag else None


class PreforkPool:
    """Starts, watches and replaces child processes; forwards warm and cold shutdown to them."""

    def __init__(
        self,
        app: App,
        queues: Sequence[str],
        hostname: str,
        concurrency: int,
        revoked: Revoked,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.app = app
        self.revoked = revoked
        self.rate_limits = rate_limits
        self.queues = list(queues)
        self.hostname = hostname
        self.concurrency = concurrency
        self.children: dict[int, int] = {}  # pid -> slot
        self.links: dict[int, ChildLink] = {}  # slot -> channel to its current child
        self.running = {slot: RunningSlot() for slot in range(concurrency)}
        self.shutdown = 0  # 0 running, 1 warm, 2 cold

    def run(self, on_ready: Callable[[], None] | None = None, on_idle: Callable[[float], None] | None = None) -> int:
        """Run until every child has exited after a shutdown signal; returns the exit code.

        ``on_idle(seconds)`` is called between checks of the children (remote control); it may
        take up to that long.
        """
        for slot in range(self.concurrency):
            self._spawn(slot)
        if on_ready is not None:
            on_ready()
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                (on_idle or time.sleep)(CHECK_INTERVAL_S / 10)
                continue
            slot = self.children.pop(pid, -1)
            if slot < 0:
                continue
            self._reap(pid, slot, status)
            if self.shutdown == 0:
                self._spawn(slot)
        return 0

    def signal(self, signum: int) -> None:
        """First signal: warm shutdown of every child; second: cold (SIGKILL)."""
        self.shutdown += 1
        if self.shutdown == 1:
            logger.warning("Warm shutdown: waiting for running tasks (signal again for a cold shutdown)")
            self._kill_all(signal.SIGTERM)
        else:
            logger.warning("Cold shutdown: stopping running tasks; their messages go back to the queue")
            self._kill_all(signal.SIGKILL)

    # -- remote control (see rqueue.worker.control.Processes) ------------------------------------------

    def reports(self, timeout_s: float) -> list[dict[str, Any]]:
        return [r for r in self._ask_all({"op": "report"}, timeout_s) if isinstance(r, dict)]

    def set_queues(self, queues: list[str]) -> None:
        self.queues = list(queues)  # children started later consume these too
        self._ask_all({"op": "queues", "queues": self.queues}, LINK_TIMEOUT_S)

    def revoke(self, task_ids: list[str]) -> None:
        self._ask_all({"op": "revoke", "ids": task_ids}, LINK_TIMEOUT_S)

    def warm_shutdown(self) -> None:
        self.signal(signal.SIGTERM)

    def terminate(self, task_id: str, signum: int) -> bool:  # replaced by the time-limit work (merge)
        from rqueue.worker.control import ControlError

        raise ControlError("terminate is not available yet")

    def set_time_limit(self, task_name: str, soft: float | None, hard: float | None) -> None:
        from rqueue.worker.control import ControlError

        raise ControlError("time limits are not available yet")

    def _ask_all(self, request: dict[str, Any], timeout_s: float) -> list[Any]:
        """Send ``request`` to every child, then collect the replies that come within ``timeout_s``."""
        sent = []
        for link in list(self.links.values()):
            with contextlib.suppress(OSError):
                sent.append((link, link.send(request)))
        deadline = time.monotonic() + timeout_s
        return [link.receive(seq, deadline) for link, seq in sent]

    def _kill_all(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reap(self, pid: int, slot: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        running = self.running[slot].get()
        self.running[slot].clear()
        returned = self.app.broker.release_lost_worker(
            owner_id(self.hostname, pid), int(self.app.conf.broker_max_deliveries), {running} if running else set()
        )
        if self.shutdown == 0 or code != 0:
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            logger.error(
                "Child process %d exited (%s); %d message(s) it held went back to the queue", pid, how, returned
            )

    def _spawn(self, slot: int) -> None:
        # Shutdown signals wait until the new child is in self.children (so it is told to stop)
        # and, in the child, until its own handlers are installed.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        old = self.links.pop(slot, None)
        if old is not None:
            old.close()
        link = self.links[slot] = ChildLink()
        pid = os.fork()
        if pid:
            link.in_parent()
            self.children[pid] = slot
            if self.shutdown:
                os.kill(pid, signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            return
        code = 1
        for other in self.links.values():
            if other is not link:
                other.close()
        link.in_child()
        try:
            code = run_child(
                self.app,
                self.queues,
                self.hostname,
                slot,
                previous,
                self.revoked,
                self.running[slot],
                link,
                self.rate_limits,
            )
        except BaseException:
            logger.exception("Child process %d crashed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)


def run_child(
    app: App,
    queues: Sequence[str],
    hostname: str,
    slot: int,
    sigmask: Iterable[int],
    revoked: Revoked,
    running: RunningSlot,
    link: ChildLink,
    rate_limits: RateLimits | None = None,
) -> int:
    """The body of one prefork child: consume until told to stop or the parent is gone."""
    parent = os.getppid()
    _set_process_name(f"ForkPoolWorker-{slot + 1}")
    consumer = Consumer(app, queues, hostname, revoked, threads=1, running=running, rate_limits=rate_limits)

    def answer(request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "report":
            return consumer.report()
        if op == "queues":
            consumer.set_queues(request["queues"])
        elif op == "revoke":
            revoked.add(request["ids"])
        return True

    link.serve(answer)
    # SIGINT from a terminal reaches the whole process group: only the parent's SIGTERM counts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
    _watch_parent(parent, consumer.stop)
    consumer.run()
    return 0


def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    """Stop warmly when the supervisor disappears (it was SIGKILLed): no orphan keeps consuming."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(CHECK_INTERVAL_S)
        stop()

    threading.Thread(target=watch, name="rqueue-parent-watch", daemon=True).start()


def _set_process_name(name: str) -> None:
    import multiprocessing

    multiprocessing.current_process().name = name


def install_shutdown_handlers(on_signal: Callable[[int], None]) -> None:
    """Route SIGINT and SIGTERM to ``on_signal`` (in the main thread)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        on_signal(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if sys.platform != "win32":
        signal.signal(signal.SIGQUIT, handler)
