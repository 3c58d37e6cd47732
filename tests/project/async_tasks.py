"""The app the asyncio worker tests run: ``async def`` tasks (and one sync task) that wait, fail,
retry, catch their soft time limit, block the loop on purpose, or record their runs in a ledger
(an SQLite file named by $LEDGER, independent of the broker under test)."""

import asyncio
import os
import sqlite3
import threading
import time

from rqueue import App, signals
from rqueue.exceptions import SoftTimeLimitExceeded

app = App("async_tasks", broker=os.environ.get("TEST_BROKER_URL"), backend=os.environ.get("TEST_BACKEND_URL") or None)
if os.environ.get("TEST_CONFIG_MODULE"):
    app.config_from_object(os.environ["TEST_CONFIG_MODULE"])


class FlakyError(Exception):
    """Raised by ``flaky`` until its ledger shows enough runs."""


def _ledger(key: str) -> int:
    """Record one execution of ``key``; returns how many times it ran, this one included."""
    conn = sqlite3.connect(os.environ["LEDGER"], timeout=30, isolation_level=None)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT, pid INTEGER, at REAL)")
        conn.execute("INSERT INTO runs VALUES (?, ?, ?)", (key, os.getpid(), time.time()))
        return int(conn.execute("SELECT COUNT(*) FROM runs WHERE key = ?", (key,)).fetchone()[0])
    finally:
        conn.close()


@app.task
async def aadd(x, y):
    await asyncio.sleep(0)
    return x + y


@app.task
async def nap(seconds, key=None):
    await asyncio.sleep(seconds)
    if key:
        _ledger(key)
    return seconds


@app.task(bind=True)
async def whoami(self, pause):
    """Its request before and after awaiting: each of many concurrent runs must see its own."""
    before = self.request.id
    await asyncio.sleep(pause)
    return {"before": before, "after": self.request.id, "args": self.request.args}


@app.task(bind=True, max_retries=3, default_retry_delay=0)
async def retry_twice(self, key):
    runs = _ledger(key)
    if runs < 3:
        raise self.retry(countdown=0)
    return runs


@app.task(autoretry_for=(FlakyError,), retry_kwargs={"countdown": 0, "max_retries": 5}, retry_backoff=False)
async def flaky(key):
    runs = _ledger(key)
    await asyncio.sleep(0)
    if runs < 3:
        raise FlakyError(f"run {runs}")
    return runs


@app.task
async def afail(message):
    await asyncio.sleep(0)
    raise ValueError(message)


@app.task(soft_time_limit=0.3)
async def soft_caught(seconds):
    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded as exc:
        return f"caught soft limit {exc.args[0]}"
    return "finished"


@app.task(soft_time_limit=0.3)
async def soft_uncaught(seconds):
    await asyncio.sleep(seconds)
    return "finished"


@app.task(time_limit=0.5)
async def hard_limited(seconds, key):
    try:
        await asyncio.sleep(seconds)
    finally:
        _ledger(key)  # cancellation runs the task's cleanup
    return "finished"


@app.task
async def cancellable(seconds, key):
    """Waits; records ``key:cleanup`` when cancelled (terminate, cold shutdown)."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _ledger(f"{key}:cleanup")
        raise
    _ledger(key)
    return "finished"


@app.task
async def block_loop(seconds):
    time.sleep(seconds)  # the mistake the blocked-loop watchdog names
    return seconds


@app.task
def sync_add(x, y):
    return {"sum": x + y, "thread": threading.current_thread().name}


@app.task(bind=True)
def sync_whoami(self):
    return self.request.id


@app.task(rate_limit="5/s")
async def limited(key):
    _ledger(key)
    return time.time()


@app.task(acks_late=True)
async def slow_record(seconds, key):
    await asyncio.sleep(seconds)
    return _ledger(key)


@app.task(time_limit=0.5)
async def stubborn(key):
    """Swallows three cancellations, then returns: stopped by its hard limit all the same."""
    for _ in range(3):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            _ledger(key)
    return "swallowed"


@app.task(soft_time_limit=0.3)
def sync_soft():
    """A sync task in the asyncio pool: its soft limit is raised in its thread."""
    try:
        for _ in range(1000):
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "sync task caught its soft limit"
    return "finished"


class Hooked(app.Task):
    """Records its hooks (and the prerun/postrun signals below) in the ledger."""

    def on_success(self, retval, task_id, args, kwargs):
        _ledger(f"on_success:{retval}")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        _ledger(f"after_return:{status}")


@app.task(base=Hooked, bind=True)
async def hooked(self):
    await asyncio.sleep(0.01)
    return self.request.id


@signals.task_prerun.connect
def _prerun(sender=None, task_id=None, **kwargs):
    if sender is not None and sender.name == "async_tasks.hooked":
        _ledger("prerun")


@signals.task_postrun.connect
def _postrun(sender=None, task_id=None, state=None, **kwargs):
    if sender is not None and sender.name == "async_tasks.hooked":
        _ledger(f"postrun:{state}")


@app.task
async def slow_prerun():
    return "ran"


@signals.task_prerun.connect
def _slow_prerun(sender=None, **kwargs):
    if sender is not None and sender.name == "async_tasks.slow_prerun":
        time.sleep(0.5)  # a receiver that blocks the loop, outside any task's coroutine


@app.task
async def asum(values):
    await asyncio.sleep(0)
    return sum(values)


@app.task
async def amul(x, y):
    await asyncio.sleep(0.01)
    return x * y
