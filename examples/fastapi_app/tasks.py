"""The tasks of the FastAPI example: the rqueue app both the web server and the worker import.

The broker and result backend come from ``RQUEUE_BROKER_URL`` and ``RQUEUE_RESULT_BACKEND``
(default: Redis on localhost; ``sqlite:///example.sqlite3`` works too, results in the same file).
"""

from __future__ import annotations

import os

from rqueue import App

app = App(
    "tasks",
    broker=os.environ.get("RQUEUE_BROKER_URL", "redis://localhost:6379/0"),
    backend=os.environ.get("RQUEUE_RESULT_BACKEND") or None,
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def divide(x: float, y: float) -> float:
    return x / y
