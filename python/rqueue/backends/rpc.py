"""The ``rpc://`` result backend: states sent back to the client that sent the task, over RabbitMQ.

Celery's layout: every client process has its own reply queue (durable, deleted with its last consumer
and after ``result_expires`` unused), named in its messages' ``reply_to``; a worker sends each state
(STARTED, RETRY, SUCCESS, FAILURE, REVOKED) as a transient message in Celery's result-meta format
through the default exchange, with the task id as ``correlation_id``. The client takes them as they
are pushed (``AmqpBroker.receive`` waits in Rust with the GIL released) and keeps the latest state
per task. Only the client that sent a task can read its result.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rqueue import serialization, states
from rqueue.backends.base import ResultBackend
from rqueue.backends.waiting import LoopLocal, Outcome, answered, leave, ready_outcome
from rqueue.exceptions import BackendError, ConfigurationError, TimeoutError

if TYPE_CHECKING:
    from rqueue.brokers.amqp import AmqpBroker
    from rqueue.brokers.base import Broker

#: Task ids a client remembers having sent (to tell "not mine" from "not yet"), most recent first.
SENT_REMEMBERED = 100_000
#: Reply routes a worker keeps (tasks that record no final state, ``ignore_result``, leave theirs):
#: the oldest go first.
ROUTES_REMEMBERED = 100_000
#: Longest single wait on the reply queue, so a blocked get() notices a dead connection.
RECEIVE_SLICE_S = 1.0


class RpcBackend(ResultBackend):
    """Results as messages to the sending client (RabbitMQ only)."""

    url = "rpc://"

    def __init__(self, broker: Callable[[], Broker], **options: Any) -> None:
        super().__init__(**options)
        self._broker = broker
        self._lock = threading.Lock()
        self._pid = -1
        self._queue = ""
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._latest: dict[str, dict[str, Any]] = {}
        #: Worker side: where each running task's states go, ``task_id -> (reply_to, correlation_id)``.
        self._routes: OrderedDict[str, tuple[str, str]] = OrderedDict()
        #: The event loop the reply queue rings (``RpcBellWaiter``), if any.
        self._bell_loop: asyncio.AbstractEventLoop | None = None
        _ = self.amqp  # a non-RabbitMQ broker is a configuration error now, not at the first result

    @property
    def amqp(self) -> AmqpBroker:
        from rqueue.brokers.amqp import AmqpBroker  # noqa: PLC0415 - brokers import backends

        broker = self._broker()
        if not isinstance(broker, AmqpBroker):
            raise ConfigurationError(f"result_backend rpc:// needs a RabbitMQ broker (amqp://), not {broker!r}")
        return broker

    # -- client side ------------------------------------------------------------------------------------

    def reply_to_for(self, task_id: str) -> str | None:
        """This process's reply queue, declared and listened to before the first task goes out."""
        with self._lock:
            if self._pid != os.getpid():  # a fork: the parent's queue and state are not ours
                self._pid = os.getpid()
                self._queue = ""
                self._sent.clear()
                self._latest.clear()
            if not self._queue:
                queue = str(uuid.uuid4())
                native = self.amqp.native
                native.declare_reply_queue(queue, self.ttl_ms)
                native.listen(queue)
                self._queue = queue
            self._sent[task_id] = None
            if len(self._sent) > SENT_REMEMBERED:
                self._sent.popitem(last=False)
            return self._queue

    def get_meta(self, task_id: str) -> dict[str, Any]:
        self._take(0.0)
        return self._meta(task_id)

    def wait_for(self, task_id: str, timeout: float | None, interval: float = 0.5) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            meta = self._meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            left = RECEIVE_SLICE_S if deadline is None else min(RECEIVE_SLICE_S, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"the result of task {task_id} was not ready within {timeout} s")
            self._take(left)

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._latest.pop(task_id, None)
            self._sent.pop(task_id, None)

    # -- awaiting (``await result.aget()``): one reply consumer per loop feeds every awaiter -----

    def _collect_now(self, task_ids: Sequence[str]) -> list[Outcome]:
        """The states already taken from the reply queue (no I/O: the pump's thread may be receiving)."""
        outcomes: list[Outcome] = []
        for task_id in task_ids:
            try:
                outcomes.append(self._meta(task_id))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _collect_mark(self) -> int | None:
        return 0  # the reply queue itself wakes a waiting receive: nothing to mark

    def _collect_wait(self, task_ids: Sequence[str], mark: int | None, wait_s: float) -> list[Outcome]:
        """Take what the reply queue holds; when no awaited task is ready, wait up to ``wait_s`` for more."""
        self._take(0.0)
        outcomes = self._collect_now(task_ids)
        if wait_s > 0 and not any(ready_outcome(o) for o in outcomes):
            self._take(wait_s)
            outcomes = self._collect_now(task_ids)
        return outcomes

    async def await_meta(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        """Awaited on the loop itself: the extension rings a loopback UDP socket the loop watches
        when a reply arrives (``RpcBellWaiter``). A loop that cannot watch sockets (Windows'
        proactor loop), or a second loop while another one holds the bell, uses the threaded pump."""
        waiter = self._bell_waiters.get()
        if waiter.attach():
            return await waiter.wait(task_id, timeout)
        return await super().await_meta(task_id, timeout)

    async def aget_meta(self, task_id: str) -> dict[str, Any]:
        return self.get_meta(task_id)  # a zero-timeout receive never waits, not even for another thread's

    @functools.cached_property
    def _bell_waiters(self) -> LoopLocal[RpcBellWaiter]:
        return LoopLocal(lambda loop: RpcBellWaiter(self, loop))

    def _reply_queue(self) -> str:
        """This process's reply queue, or "" before it sent a task."""
        with self._lock:
            return self._queue if self._pid == os.getpid() else ""

    def _meta(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            meta = self._latest.get(task_id)
            if meta is not None:
                return meta
            if task_id not in self._sent or self._pid != os.getpid():
                raise BackendError(
                    f"task {task_id} was not sent by this process: an rpc:// result goes only to the client "
                    f"that sent the task (or this client sent over {SENT_REMEMBERED:,} tasks since); use a "
                    "result backend that stores results (redis://, sqlite://) to read it anywhere"
                )
        return {"status": states.PENDING, "result": None, "traceback": None, "task_id": task_id}

    def _take(self, timeout_s: float) -> None:
        """Move the states pushed to this process's queue into the latest-state table."""
        with self._lock:
            queue = self._queue if self._pid == os.getpid() else ""
        if not queue:
            if timeout_s > 0:
                time.sleep(timeout_s)  # nothing sent from here: nothing can arrive
            return
        for body, _headers, correlation_id, content_type in self.amqp.native.receive(queue, timeout_s, 1000):
            try:
                meta = serialization.loads(body, content_type or self.content_type, self.accept)
            except Exception:
                continue
            task_id = correlation_id or (meta.get("task_id") if isinstance(meta, dict) else None)
            if not isinstance(meta, dict) or "status" not in meta or not task_id:
                continue
            with self._lock:
                known = self._latest.get(task_id)
                if known is None or known["status"] not in states.READY_STATES:
                    self._latest[task_id] = meta

    # -- worker side ------------------------------------------------------------------------------------

    routes_replies = True

    def note_reply_route(self, task_id: str, reply_to: str | None, correlation_id: str | None) -> None:
        """Where the states of a received task go (its message's ``reply_to``)."""
        if reply_to:
            self._routes[task_id] = (reply_to, correlation_id or task_id)
            if len(self._routes) > ROUTES_REMEMBERED:
                self._routes.popitem(last=False)

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        native = self.amqp.native
        for task_id, status, payload in items:
            route = self._routes.get(task_id)
            if route is None:
                continue  # sent without a reply address: nobody to tell
            if status in states.READY_STATES:
                del self._routes[task_id]
            native.publish_reply(route[0], route[1], self.content_type, payload, False)

    def _read(self, task_id: str) -> tuple[bytes, str] | None:  # pragma: no cover - get_meta is overridden
        return None

    def _delete(self, task_id: str) -> None:
        self.forget(task_id)


#: While results are awaited, the bell waiter also reads the queue this often: a reply another
#: thread's ``get()`` took (so no datagram told this loop) is found within this time.
BELL_RECHECK_S = 1.0


class RpcBellWaiter:
    """The ``rpc://`` results awaited in one event loop, woken by the extension's datagrams."""

    def __init__(self, backend: RpcBackend, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.loop = loop
        #: Awaited task id -> the futures of its awaiters.
        self.waiting: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._sock: socket.socket | None = None
        self._queue = ""
        self._recheck: asyncio.TimerHandle | None = None

    def attach(self) -> bool:
        """Have the reply queue ring this loop; False when it cannot (see ``RpcBackend.await_meta``)."""
        queue = self.backend._reply_queue()
        if not queue:
            return False  # nothing sent from this process: the threaded path says so
        if self._sock is not None and self._queue == queue:
            return True
        owner = self.backend._bell_loop
        if owner is not None and owner is not self.loop and not owner.is_closed():
            return False
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.loop.add_reader(sock.fileno(), self._on_ring)
        except (NotImplementedError, OSError):
            sock.close()
            return False
        self.backend.amqp.native.ring_on_push(queue, sock.getsockname()[1])
        if self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._sock, self._queue = sock, queue
        self.backend._bell_loop = self.loop
        return True

    async def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        futures = self.waiting.setdefault(task_id, [])
        futures.append(future)
        self._collect()  # a reply that came before the bell was attached, or one already taken
        try:
            return await answered(future, task_id, timeout)
        finally:
            leave(self.waiting, task_id, future)

    def _on_ring(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            while sock.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return
        self._collect()

    def _collect(self) -> None:
        """Take what the reply queue holds (never waiting) and answer the awaiters whose task is ready."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if not self.waiting:
            return
        try:
            self.backend._take(0.0)
        except Exception as exc:  # the reply queue is gone: its awaiters hear why
            for futures in self.waiting.values():
                _settle(futures, exc)
            return
        for task_id, futures in list(self.waiting.items()):
            outcome: Outcome
            try:
                outcome = self.backend._meta(task_id)
            except Exception as exc:
                outcome = exc
            if ready_outcome(outcome):
                _settle(futures, outcome)
        if self.waiting:
            self._recheck = self.loop.call_later(BELL_RECHECK_S, self._collect)


def _settle(futures: list[asyncio.Future[dict[str, Any]]], outcome: Outcome) -> None:
    for future in futures:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
