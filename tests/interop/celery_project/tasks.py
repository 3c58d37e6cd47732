"""The Celery side of the interop tests: the same task names as ``tests/project/tasks.py``.

Started as a real worker by the tests:
``python -m celery -A celery_project.tasks worker --pool solo -Q <queue>``, with
``$CELERY_INTEROP_URL`` naming the broker (Redis or RabbitMQ) and ``$CELERY_INTEROP_BACKEND`` the
Redis result backend (the broker's URL when unset). ``$CELERY_INTEROP_CONF`` (JSON) adds settings,
e.g. ``{"task_acks_late": true}``; with ``$LEDGER`` set, ``tasks.sleep`` with a key appends to the same
ledger as the rqueue test project (``tests/project/tasks.py``), so a mixed fleet's executions are
counted in one place.
"""

import json
import os
import sqlite3
import time

from celery import Celery

url = os.environ["CELERY_INTEROP_URL"]
app = Celery("celery_project", broker=url, backend=os.environ.get("CELERY_INTEROP_BACKEND") or url)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)
if os.environ.get("CELERY_INTEROP_CONF"):
    app.conf.update(json.loads(os.environ["CELERY_INTEROP_CONF"]))


def _ledger(key):
    """One row per execution, as ``tests/project/tasks.py`` writes it: (key, pid, time)."""
    conn = sqlite3.connect(os.environ["LEDGER"], timeout=30, isolation_level=None)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT, pid INTEGER, at REAL)")
        conn.execute("INSERT INTO runs VALUES (?, ?, ?)", (key, os.getpid(), time.time()))
    finally:
        conn.close()


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="tasks.fail_builtin")
def fail_builtin(message):
    raise KeyError(message)


@app.task(name="tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="tasks.xsum")
def xsum(numbers):
    return sum(numbers)


@app.task(name="tasks.sleep")
def sleep(seconds, key=None):
    time.sleep(seconds)
    if key and os.environ.get("LEDGER"):
        _ledger(key)
    return seconds
