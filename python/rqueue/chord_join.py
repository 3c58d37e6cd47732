"""The chord join in the worker: each header result counted once, the body fired once, and a
workflow that can no longer run marked failed rather than left PENDING.

A chord's header members carry the body (``embed.chord``) and the chord's id (``group``). When a
member finishes, however it finished, its result is counted in the result backend (Redis: Celery's
keys and steps, so Celery and rqueue workers count together; SQLite: one transaction). A member that
runs twice (redelivered after a crash) is counted once. The worker whose count completes the chord
takes the right to fire the body for ``CLAIM_S``: it sends the body with the results in header
order, or, when a member failed, stores the body as failed with a ``ChordError`` naming the member
and calls the body's errbacks; then it marks the chord done. If that worker dies before it is done,
its header message is delivered again, and the new run takes the lapsed right and fires the body.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from rqueue import serialization, states
from rqueue.backends.base import ResultRecord
from rqueue.canvas import Signature, apply_error_links, chain, chord, group
from rqueue.exceptions import ChordError
from rqueue.request import Request

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.backends.base import ResultBackend

logger = logging.getLogger("rqueue.worker")

#: How long the worker that completed a chord holds the right to fire its body (Celery's default
#: for its Redis backend: twice a 5 s join timeout).
CLAIM_S = 10


class Part(NamedTuple):
    """A finished chord header member, to be counted: its request, how it ended (``state`` and
    its value or exception), and whether it ran before (see ``count_parts``)."""

    request: Request
    state: str
    value: Any
    redelivered: bool = False


def count_parts(
    app: App, parts: Sequence[Part], token: str, results: list[tuple[str, str, bytes]] | None = None
) -> None:
    """Store ``results`` and count ``parts`` (in one round trip where the backend can), then fire
    each chord they complete, under ``token`` (one per worker process, so a retried count keeps
    the right it took). A part that ``redelivered`` may find the right held by its earlier run, which
    may have died before firing: it then waits for that right to lapse rather than leave the body
    unsent."""
    backend = app.backend
    items = []
    for part in parts:
        request = part.request
        value = serialization.exception_to_meta(part.value) if isinstance(part.value, BaseException) else part.value
        index = float(request.group_index) if request.group_index is not None else float("inf")
        items.append((str(request.group), request.id, index, backend.encode_chord_part(request.id, part.state, value)))
    counts = backend.count_chord_parts(items, token, CLAIM_S, results or [])
    fired: set[str] = set()
    for part, (group_id, *_), count in zip(parts, items, counts, strict=True):
        if count is None or count.total is None or count.ready < count.total or group_id in fired:
            continue  # fired already, or results still to come
        if not count.claimed and not (part.redelivered and _take_lapsed_claim(backend, group_id, token)):
            continue  # another worker fires it
        fired.add(group_id)
        _fire(app, group_id, Signature.from_wire(part.request.chord, app), token)


def part_returned(app: App, request: Request, state: str, value: Any) -> None:
    """Count one finished chord header member now (see ``count_parts``)."""
    if request.group and request.chord:
        count_parts(app, [Part(request, state, value)], uuid.uuid4().hex)


def _take_lapsed_claim(backend: ResultBackend, group_id: str, token: str) -> bool:
    """Wait (at most a claim's lifetime) for the right to fire the body to lapse, then take it;
    False when the chord got fired meanwhile."""
    deadline = time.monotonic() + CLAIM_S + 1
    while time.monotonic() < deadline:
        if backend.chord_renew_claim(group_id, token, CLAIM_S):
            return True
        time.sleep(0.25)
    return False


def _fire(app: App, group_id: str, body: Signature, token: str) -> None:
    """Send the body with the header's values in order, or fail it when a member failed."""
    backend = app.backend
    try:
        values = [_value_of(backend, part) for part in backend.chord_parts(group_id)]
    except ChordError as exc:
        logger.error("Chord %s failed: %s", group_id, exc)
        fail_signature(app, body, exc, call_errbacks=True)
        backend.chord_done(group_id, token)
        return
    try:
        body.apply_async((values,))
    except Exception as exc:
        logger.exception("Chord %s: sending its body %s failed", group_id, body.task)
        fail_signature(app, body, ChordError(f"Callback error: {exc!r}"), call_errbacks=True)
    finally:
        if not backend.chord_done(group_id, token):
            logger.warning("Chord %s: the right to fire its body lapsed while it was sent", group_id)


def _value_of(backend: ResultBackend, part: bytes) -> Any:
    task_id, state, value = backend.decode_chord_part(part)
    if state in states.PROPAGATE_STATES:
        exc = serialization.exception_from_meta(value) if isinstance(value, Mapping) else value
        error = ChordError(f"Dependency {task_id} raised {exc!r}")
        if isinstance(exc, BaseException):
            error.__cause__ = exc
        raise error
    return value


def fail_signature(
    app: App, sig: Signature, exc: BaseException, traceback: str | None = None, *, call_errbacks: bool = False
) -> None:
    """Record that a workflow part will never run because ``exc`` happened before it: its result
    is stored as failed, what was to continue after it fails too, a chord it counts towards is told
    (so that chord fails rather than waits), and with ``call_errbacks`` its ``link_error`` runs."""
    if isinstance(sig, group):
        for member in sig.tasks:
            fail_signature(app, member, exc, traceback, call_errbacks=call_errbacks)
        return
    if isinstance(sig, chain):
        for step in sig.tasks:
            fail_signature(app, step, exc, traceback, call_errbacks=call_errbacks)
        return
    if isinstance(sig, chord):
        if sig.body is not None:
            fail_signature(app, sig.body, exc, traceback, call_errbacks=call_errbacks)
        return
    options = sig["options"]
    task_id = sig.id
    if task_id is None:
        return  # never frozen: nobody holds its result
    app.backend.store(ResultRecord(task_id, states.FAILURE, serialization.exception_to_meta(exc), traceback))
    request = Request(
        id=task_id,
        task=sig.task,
        root_id=options.get("root_id"),
        parent_id=options.get("parent_id"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        chord=options.get("chord"),
        errbacks=options.get("link_error"),
    )
    _fail_steps(app, options.get("chain"), exc, traceback)
    part_returned(app, request, states.FAILURE, exc)
    if call_errbacks and request.errbacks:
        apply_error_links(app, request, exc, traceback)


def fail_chain(app: App, request: Request, exc: BaseException, traceback: str | None = None) -> None:
    """A chain step failed: the steps after it (``embed.chain``) will never run; store them failed."""
    _fail_steps(app, request.chain, exc, traceback)


def _fail_steps(app: App, steps: Any, exc: BaseException, traceback: str | None) -> None:
    """Fail the rest of a chain (the wire's order: the next step last), in the order they would
    have run, so a client that sees the last one failed finds the earlier ones failed too."""
    for step in reversed(steps or ()):
        fail_signature(app, Signature.from_wire(step, app), exc, traceback)
