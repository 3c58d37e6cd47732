"""How one task message is sent: the options ``apply_async``, ``send_task``, ``send_many``,
``retry()`` and signatures accept, as one typed table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict


class SendOptions(TypedDict, total=False):
    """How one task message is sent: what ``apply_async``, ``send_task``, ``send_many`` and
    ``retry`` accept (see ``Task.apply_async``)."""

    countdown: float | None
    eta: datetime | None
    expires: float | timedelta | datetime | None
    queue: str | None
    exchange: str | None
    routing_key: str | None
    priority: int | None
    task_id: str | None
    headers: Mapping[str, Any] | None
    ignore_result: bool | None
    serializer: str | None
    time_limit: float | None
    soft_time_limit: float | None
    shadow: str | None
    #: Retry publishing while the broker cannot be reached (default ``task_publish_retry``), with
    #: ``retry_policy`` (``max_retries``, ``interval_start``, ``interval_step``, ``interval_max``).
    retry: bool | None
    retry_policy: Mapping[str, Any] | None
    #: Signatures applied when the task succeeds (``link``, with its result) or fails (``link_error``).
    link: Any
    link_error: Any
    #: The rest of a chain (signature dicts, the next one last), carried in the message's embed.
    chain: Any
    #: Set by the canvas: the group the task belongs to, its place in it, and the body of the
    #: chord it counts towards (``group``/``group_index`` headers, ``embed.chord``).
    group_id: str | None
    group_index: int | None
    chord: Any
    #: Accepted for Celery's sake: rqueue does not compress (``None`` only) and keeps no trail.
    compression: str | None
    add_to_parent: bool
    #: Set by ``retry()``: how many times the task ran before, its workflow's ids, and where its
    #: states go (the first sender's ``reply_to``, for ``rpc://``).
    retries: int
    root_id: str | None
    parent_id: str | None
    reply_to: str | None


#: The names of ``SendOptions``, for the run-time check of keyword arguments.
SEND_OPTIONS = frozenset(SendOptions.__annotations__)
