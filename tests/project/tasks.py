"""The app the worker tests run: the walkthrough's ``add`` plus tasks that misbehave on purpose.

Tasks that must be counted append to a ledger (a separate SQLite file named by $LEDGER), so the
tests check executions independently of the broker under test.
"""

import os
import signal
import sqlite3
import time

from rqueue import App

app = App("tasks", broker=os.environ.get("TEST_BROKER_URL"), backend=os.environ.get("TEST_BACKEND_URL") or None)
if os.environ.get("TEST_CONFIG_MODULE"):
    app.config_from_object(os.environ["TEST_CONFIG_MODULE"])


class CustomError(Exception):
    """An exception class of the user's own, importable on both sides."""


def _ledger(key: str) -> int:
    """Record one execution of ``key`` (with the process and the time); returns how many times it
    ran, this one included."""
    conn = sqlite3.connect(os.environ["LEDGER"], timeout=30, isolation_level=None)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT, pid INTEGER, at REAL)")
        conn.execute("INSERT INTO runs VALUES (?, ?, ?)", (key, os.getpid(), time.time()))
        return int(conn.execute("SELECT COUNT(*) FROM runs WHERE key = ?", (key,)).fetchone()[0])
    finally:
        conn.close()


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise CustomError(message)


@app.task
def fail_builtin(message):
    raise KeyError(message)


@app.task
def sleep(seconds, key=None):
    time.sleep(seconds)
    if key:
        _ledger(key)
    return seconds


@app.task
def record(key):
    return _ledger(key)


@app.task(ignore_result=True)
def ignored(x):
    return x


@app.task(bind=True)
def whoami(self):
    return {"id": self.request.id, "task": self.request.task, "hostname": self.request.hostname}


@app.task
def die_once(key):
    """Kill the process running it on the first execution; succeed on the next."""
    if _ledger(key) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@app.task(bind=True, max_retries=2, default_retry_delay=0.1)
def flaky(self, key, failures):
    """Fail ``failures`` times (retrying each time), then succeed."""
    if _ledger(key) <= failures:
        raise self.retry(exc=ValueError(f"attempt {self.request.retries} failed"))
    return self.request.retries


@app.task(autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=0.05, retry_jitter=False)
def always_down(key):
    _ledger(key)
    raise ConnectionError("service down")


@app.task(bind=True)
def retry_later(self):
    raise self.retry(exc=ValueError("not yet"), countdown=3600)


@app.task
def reject_me(requeue):
    from rqueue.exceptions import Reject

    raise Reject("not for us", requeue=requeue)


@app.task
def ignore_me(key):
    from rqueue.exceptions import Ignore

    _ledger(key)
    raise Ignore()


@app.task
def kill_worker(key):
    """Kill the process running it, every time: a poison message."""
    _ledger(key)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(rate_limit="5/s")
def limited(key, seconds=0.0):
    """At most 5 per second per worker node (burst 5); records when it ran."""
    time.sleep(seconds)
    return _ledger(key)


@app.task
def annotated(key):
    """Rate-limited only by the settings of the tests that set them (task_annotations, defaults)."""
    return _ledger(key)
