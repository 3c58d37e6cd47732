"""The application ``rqueue bench`` runs its workers with: ``rqueue -A rqueue.bench.tasks worker ...``.

The bench passes the settings to its workers in the environment: the broker and backend URLs in
``RQUEUE_BROKER_URL`` and ``RQUEUE_RESULT_BACKEND`` (read by every App), the run's own queue in
``RQUEUE_BENCH_QUEUE``, its Redis key prefix in ``RQUEUE_BENCH_KEYPREFIX``, and in
``RQUEUE_BENCH_COUNTERS`` the directory where each worker process counts the tasks it ran
(``rqueue.bench.counter``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rqueue.app import App
from rqueue.bench.counter import COUNTERS_ENV, count, read_counts
from rqueue.task import Task

QUEUE_ENV = "RQUEUE_BENCH_QUEUE"
KEYPREFIX_ENV = "RQUEUE_BENCH_KEYPREFIX"
DEFAULT_QUEUE = "rqueue-bench"
NOOP = "rqueue.bench.noop"
PAYLOAD = "rqueue.bench.payload"
#: Results of bench tasks expire after an hour even if the bench could not delete them.
RESULT_EXPIRES_S = 3600


def bench_settings(queue: str, keyprefix: str = "") -> dict[str, Any]:
    """The settings of a bench app: its own queue, key prefix and a short result expiry."""
    settings: dict[str, Any] = {"task_default_queue": queue, "result_expires": RESULT_EXPIRES_S}
    if keyprefix:
        settings["broker_transport_options"] = {"global_keyprefix": keyprefix}
    return settings


def make_app(settings: Mapping[str, Any], **urls: Any) -> tuple[App, Task[[], None], Task[[str], int]]:
    """A bench app with its two tasks: ``noop()`` and ``payload(data)`` (returns ``len(data)``)."""
    app = App("rqueue.bench.tasks", **urls, **settings)

    @app.task(name=NOOP)
    def noop() -> None:
        count()

    @app.task(name=PAYLOAD)
    def payload(data: str) -> int:
        count()
        return len(data)

    return app, noop, payload


app, noop, payload = make_app(
    bench_settings(os.environ.get(QUEUE_ENV) or DEFAULT_QUEUE, os.environ.get(KEYPREFIX_ENV, ""))
)

__all__ = ["COUNTERS_ENV", "app", "bench_settings", "make_app", "noop", "payload", "read_counts"]
