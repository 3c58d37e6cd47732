"""What every result backend does: build Celery-format result records and read them back."""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, NoReturn

from rqueue import serialization, states
from rqueue.backends.waiting import BackendPool, LoopLocal, Outcome, ThreadedWaiter, ready_outcome
from rqueue.exceptions import ConfigurationError, DecodeError, TimeoutError
from rqueue.urls import mask_password


@dataclass
class ResultRecord:
    """One state change of one task, ready to be written (possibly in a batch)."""

    task_id: str
    status: str
    result: Any = None
    traceback: str | None = None
    extended: dict[str, Any] | None = None
    #: The tasks it sent while running, as Celery's result tuples (``AsyncResult.children``).
    children: list[Any] | None = None


#: How long a fired chord stays marked done, so late duplicates of its header tasks change
#: nothing (Celery's Redis backend keeps its marker as long).
CHORD_DONE_KEPT_S = 300


class ChordCount(NamedTuple):
    """Where a chord's join stands after one header result was counted."""

    #: Header results counted so far (each header member once, however often it ran).
    ready: int
    #: How many the body waits for; None until the sender has set it.
    total: int | None
    #: True when this call took the right to fire the body.
    claimed: bool


class ResultBackend(ABC):
    """Stores results as Celery does (``status``, ``result``, ``traceback``, ``date_done`` ...)."""

    url: str = ""
    #: True when states go to the sending client rather than to a store (``rpc://``): the worker
    #: then tells the backend each received task's reply address (``note_reply_route``).
    routes_replies: bool = False

    def __init__(
        self,
        *,
        serializer: str = "json",
        accept: list[str] | None = None,
        expires_s: float | None = 86400,
        extended: bool = False,
        max_retries: float = float("inf"),
    ) -> None:
        self.serializer = serializer
        self.content_type = serialization.content_type(serializer)
        self.accept = accept if accept is not None else [self.content_type]
        self.expires_s = expires_s
        self.extended = extended
        #: How many times waiting for a result retries a store that cannot be reached
        #: (``result_backend_max_retries``) before raising BackendError.
        self.max_retries = max_retries

    # -- writing -------------------------------------------------------------------------------

    def store(self, record: ResultRecord) -> None:
        """Write one record now."""
        self.store_many([record])

    def store_many(self, records: Sequence[ResultRecord]) -> None:
        """Write records in one round trip. A stored SUCCESS is never overwritten."""
        if records:
            self.write_encoded([(r.task_id, r.status, self.encode(r)) for r in records])

    def encode(self, record: ResultRecord) -> bytes:
        """The serialized Celery meta of a record."""
        meta: dict[str, Any] = {
            "status": record.status,
            "result": record.result,
            "traceback": record.traceback,
            "children": record.children or [],
            "date_done": _now_iso() if record.status in states.READY_STATES else None,
            "task_id": record.task_id,
        }
        if self.extended and record.extended:
            meta.update(record.extended)
        return serialization.dumps(meta, self.serializer)

    @property
    def ttl_ms(self) -> int | None:
        """How long a stored record lives, in ms; None: forever."""
        expires = self.expires_s
        return max(1, round(expires * 1000)) if expires and expires > 0 else None

    def rows(self, items: list[tuple[str, str, bytes]]) -> list[tuple[str, str, str, bytes, int | None]]:
        """``(task_id, status, content_type, payload, ttl_ms)`` of encoded records: what a broker
        that shares this backend's store writes in its completing step (``Broker.joint_completer``)."""
        ttl_ms = self.ttl_ms
        return [(task_id, status, self.content_type, payload, ttl_ms) for task_id, status, payload in items]

    def shares_store_with(self, broker_url: str) -> bool:
        """True when the broker at ``broker_url`` keeps its messages in this backend's store, so
        results and acks can be written in one step. Only a backend that knows says True."""
        return False

    def note_reply_route(self, task_id: str, reply_to: str | None, correlation_id: str | None) -> None:  # noqa: B027
        """Where the states of a received task go (only a backend that ``routes_replies`` keeps it)."""

    def reply_to_for(self, task_id: str) -> str | None:
        """The ``reply_to`` a client puts in the message of ``task_id``; None: the app's id."""
        return None

    # -- reading -------------------------------------------------------------------------------

    def get_meta(self, task_id: str) -> dict[str, Any]:
        """The stored meta of a task; PENDING when nothing is recorded."""
        raw = self._read(task_id)
        if raw is None:
            return {"status": states.PENDING, "result": None, "traceback": None, "task_id": task_id}
        data, content_type = raw
        meta = serialization.loads(data, content_type, self.accept)
        if not isinstance(meta, dict) or "status" not in meta:
            raise DecodeError(f"result of task {task_id} is not a result record: {meta!r:.200}")
        return meta

    def wait_for(self, task_id: str, timeout: float | None, interval: float = 0.5) -> dict[str, Any]:
        """Poll until the task is ready; TimeoutError when ``timeout`` runs out.

        Polls start at 0.2 ms and back off to ``interval``, so a quick task is seen at once and a
        slow one costs little; a backend whose stores wake waiters (``_results_mark``) is read
        again as soon as any result is stored.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0002
        while True:
            mark = self._results_mark()
            meta = self.get_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"the result of task {task_id} was not ready within {timeout} s")
            sleep = delay if deadline is None else min(delay, deadline - now)
            if mark is None:
                time.sleep(max(sleep, 0.0))
                delay = min(delay * 1.5, interval)
            else:
                self._wait_results(mark, max(sleep, 0.0001))
                delay = interval

    def _results_mark(self) -> int | None:
        """A backend that can be woken when results are stored: a mark to read before reading a
        result (see ``_wait_results``); None (the default) to poll."""
        return None

    def _wait_results(self, mark: int, seconds: float) -> None:
        """Wait up to ``seconds`` for a result to be stored after ``mark`` was read."""
        time.sleep(seconds)

    def get_many_meta(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The stored meta of several tasks (a backend that can reads them in one round trip)."""
        return [self.get_meta(task_id) for task_id in task_ids]

    # -- waiting inside an event loop (``await result.aget()``; ``rqueue.backends.waiting``) -------

    async def await_meta(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        """The ready meta of a task, awaited without blocking the running loop; TimeoutError after
        ``timeout`` seconds. This default reads in the backend's small thread pool, for every
        awaiter of the loop at once (``ThreadedWaiter``); a backend with an asynchronous client
        overrides it."""
        return await self._async_waiters.get().wait(task_id, timeout)

    async def aget_meta(self, task_id: str) -> dict[str, Any]:
        """``get_meta`` without blocking the running loop (in the backend's thread pool)."""
        return await self._async_pool.run(self.get_meta, task_id)

    async def aget_many_meta(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``get_many_meta`` without blocking the running loop (in the backend's thread pool)."""
        return await self._async_pool.run(self.get_many_meta, list(task_ids))

    @functools.cached_property
    def _async_pool(self) -> BackendPool:
        return BackendPool(f"rqueue-results-{type(self).__name__}")

    @functools.cached_property
    def _async_waiters(self) -> LoopLocal[ThreadedWaiter]:
        return LoopLocal(lambda loop: ThreadedWaiter(self, loop, self._async_pool))

    def _collect_now(self, task_ids: Sequence[str]) -> list[Outcome]:
        """(In the pool) the meta of each task, or the error reading it raised."""
        try:
            return list(self.get_many_meta(task_ids))
        except Exception:  # find whose read fails: only its awaiters get the error
            outcomes: list[Outcome] = []
            for task_id in task_ids:
                try:
                    outcomes.append(self.get_meta(task_id))
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes

    def _collect_mark(self) -> int | None:
        """(In the pool) a mark to wait for stores after (``_results_mark``); None: poll instead."""
        return self._results_mark()

    def _collect_wait(self, task_ids: Sequence[str], mark: int | None, wait_s: float) -> list[Outcome]:
        """(In the pool) read the tasks; when none is ready, wait up to ``wait_s`` for a store after ``mark``."""
        outcomes = self._collect_now(task_ids)
        if mark is not None and wait_s > 0 and not any(ready_outcome(o) for o in outcomes):
            self._wait_results(mark, wait_s)
        return outcomes

    def forget(self, task_id: str) -> None:
        """Delete what is stored about a task."""
        self._delete(task_id)

    # -- groups (``GroupResult.save()``/``restore()``) ----------------------------------------------

    def save_group(self, group_id: str, result_tuple: Any) -> None:
        """Store a group's result ids (Celery's ``{"result": as_tuple}`` record)."""
        payload = serialization.dumps({"result": result_tuple}, self.serializer)
        self._write_group(group_id, payload)

    def restore_group(self, group_id: str) -> Any | None:
        """The result tuple a ``save_group`` stored, or None."""
        raw = self._read_group(group_id)
        if raw is None:
            return None
        meta = serialization.loads(raw, self.content_type, self.accept)
        if not isinstance(meta, dict) or "result" not in meta:
            raise DecodeError(f"group {group_id} record is not a saved group: {meta!r:.200}")
        return meta["result"]

    def forget_group(self, group_id: str) -> None:
        self._delete_group(group_id)

    def _write_group(self, group_id: str, payload: bytes) -> None:
        self._no_store("saving a group")

    def _read_group(self, group_id: str) -> bytes | None:
        self._no_store("restoring a group")

    def _delete_group(self, group_id: str) -> None:
        self._no_store("forgetting a group")

    # -- chords: counting header results until the body may fire ------------------------------------

    #: True for a backend that keeps chord joins (Redis, SQLite).
    supports_chords: bool = False

    def ensure_chords_allowed(self) -> None:
        """Raise ConfigurationError unless this backend can join chords."""
        if not self.supports_chords:
            raise ConfigurationError(
                f"chords need a result backend that counts their header results (Redis, SQLite or PostgreSQL); "
                f"{mask_password(self.url) or 'no backend'} cannot: set result_backend"
            )

    def encode_chord_part(self, task_id: str, state: str, value: Any) -> bytes:
        """A header result as Celery's join keeps it: ``[1, task_id, state, result]``."""
        return serialization.dumps([1, task_id, state, value], self.serializer)

    def decode_chord_part(self, data: bytes) -> tuple[str, str, Any]:
        """``(task_id, state, result)`` of an ``encode_chord_part`` record."""
        part = serialization.loads(data, self.content_type, self.accept)
        if not isinstance(part, (list, tuple)) or len(part) != 4:
            raise DecodeError(f"not a chord header result: {part!r:.200}")
        return str(part[1]), str(part[2]), part[3]

    def set_chord_size(self, group_id: str, size: int) -> None:
        self.ensure_chords_allowed()

    def add_to_chord(self, group_id: str, n: int) -> None:
        self.ensure_chords_allowed()

    def count_chord_parts(
        self,
        items: Sequence[tuple[str, str, float, bytes]],
        token: str,
        claim_s: int,
        results: list[tuple[str, str, bytes]],
    ) -> list[ChordCount | None]:
        """Store ``results`` (encoded records), then count each ``(group_id, member, index, part)``
        once per member; when a count is complete and nobody else holds the right to fire the body,
        take it for ``claim_s`` under ``token`` (a holder of ``token`` keeps it). None for a chord
        already fired."""
        self.ensure_chords_allowed()
        return []

    def chord_renew_claim(self, group_id: str, token: str, claim_s: int) -> bool:
        """Keep the right to fire the body, or take it when it lapsed; False when another has it."""
        return False

    def chord_parts(self, group_id: str) -> list[bytes]:
        """The counted header results, in header order."""
        return []

    def chord_done(self, group_id: str, token: str) -> bool:
        """The body was fired: drop the parts, mark the chord done (late duplicates change nothing)."""
        return False

    @property
    def chord_ttl_s(self) -> int | None:
        """How long a chord's join is kept (``result_expires``), in whole seconds; None: forever."""
        expires = self.expires_s
        return max(1, int(expires)) if expires and expires > 0 else None

    def _no_store(self, what: str) -> NoReturn:
        raise ConfigurationError(
            f"{what} needs a result store (Redis, SQLite or PostgreSQL); {mask_password(self.url)} has none"
        )

    # -- what each backend implements --------------------------------------------------------------

    @abstractmethod
    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        """Store ``(task_id, status, payload)`` items (from ``encode``); a stored SUCCESS is final."""

    @abstractmethod
    def _read(self, task_id: str) -> tuple[bytes, str] | None:
        """``(payload, content_type)`` of a task, or None."""

    @abstractmethod
    def _delete(self, task_id: str) -> None: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {mask_password(self.url)}>"


class DisabledBackend(ResultBackend):
    """No result backend: nothing is stored, and waiting for a result is an immediate, clear error."""

    url = "disabled://"

    def store_many(self, records: Sequence[ResultRecord]) -> None:
        return None

    def get_meta(self, task_id: str) -> dict[str, Any]:
        raise ConfigurationError(
            "no result backend is configured, so results are not stored: set result_backend "
            "(e.g. App(..., backend='sqlite:///results.db'))"
        )

    async def await_meta(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        return self.get_meta(task_id)  # raises the same error as the synchronous get()

    async def aget_meta(self, task_id: str) -> dict[str, Any]:
        return self.get_meta(task_id)

    async def aget_many_meta(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        return self.get_many_meta(task_ids)

    def write_encoded(self, items: list[tuple[str, str, bytes]]) -> None:
        return None

    def _read(self, task_id: str) -> tuple[bytes, str] | None:  # pragma: no cover - get_meta raises first
        return None

    def _delete(self, task_id: str) -> None:
        return None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()
