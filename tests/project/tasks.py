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


def _sleep_in_steps(seconds):
    """Sleep in short steps, so an exception raised asynchronously (threads pool) lands soon."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)


@app.task(soft_time_limit=0.5)
def soft_limited(seconds, key):
    """Catch the soft time limit and return what it said; "finished" when it never came."""
    from rqueue.exceptions import SoftTimeLimitExceeded

    _ledger(key)
    try:
        _sleep_in_steps(seconds)
    except SoftTimeLimitExceeded as exc:
        return f"caught: {exc}"
    return "finished"


@app.task(soft_time_limit=0.5)
def soft_limited_uncaught(seconds, key):
    _ledger(key)
    _sleep_in_steps(seconds)
    return "finished"


@app.task(time_limit=1)
def hard_limited(seconds, key):
    """Runs past its hard time limit unless told otherwise per call."""
    _ledger(key)
    time.sleep(seconds)
    return seconds


@app.task(bind=True)
def my_pid(self, key):
    _ledger(key)
    return os.getpid()


@app.task
def stubborn(seconds, key):
    """Swallow every exception raised in it (a soft limit, a termination) and keep sleeping."""
    _ledger(key)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.02)
        except Exception:  # a soft time limit, a termination: ignored on purpose
            continue
    return "outlived"


@app.task
def slow(seconds, key):
    """Record the execution first, then sleep."""
    _ledger(key)
    time.sleep(seconds)
    return seconds


@app.task
def mul(x, y):
    return x * y


@app.task
def on_error(request, exc, traceback):
    """A new-style errback: called in the worker with the failed task's request and exception."""
    _ledger(f"errback:{request.id}:{type(exc).__name__}")


@app.task
def on_error_id(task_id):
    """An old-style errback: sent with the failed task's id."""
    _ledger(f"errback-id:{task_id}")


@app.task(bind=True)
def lineage(self):
    return {"id": self.request.id, "parent_id": self.request.parent_id, "root_id": self.request.root_id}


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task(bind=True)
def replaced_by(self, kind, x):
    """Replaces itself with a task, a chain or a group, keeping its place."""
    from rqueue import group

    if kind == "task":
        return self.replace(add.s(x, 1))
    if kind == "chain":
        return self.replace(add.s(x, 1) | mul.s(2))
    return self.replace(group(add.s(x, i) for i in range(3)))


@app.task
def spawn(n):
    """Sends ``n`` tasks from inside a task: they become its children."""
    return [add.delay(i, i).id for i in range(n)]


@app.task
def identity(value):
    return value


@app.task
def record_sum(numbers):
    """A chord body that counts how often it ran."""
    total = sum(numbers)
    _ledger(f"sum:{total}")
    return total


@app.task
def waits_for_subtask(how):
    """Calls get() on a subtask inside a task: refused unless explicitly allowed (Celery's rule)."""
    from rqueue.result import allow_join_result

    child = add.delay(2, 3)
    if how == "plain":
        return child.get(timeout=10)
    if how == "disabled":
        return child.get(timeout=10, disable_sync_subtasks=False)
    with allow_join_result():
        return child.get(timeout=10)


@app.task
def prints(text):
    """Writes to stdout and stderr, as careless task code does."""
    import sys

    print(text)
    print(f"{text} on stderr", file=sys.stderr)
    return text


@app.task
def process_info():
    """Where and as whom the task runs: the working directory, umask, user and group ids."""
    mask = os.umask(0)
    os.umask(mask)
    return {"cwd": os.getcwd(), "umask": mask, "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()}


@app.task
def slow_first(key, seconds):
    """Sleep ``seconds`` on the first execution only (recorded in the ledger before): a long task
    that, sent back to the queue, runs again quickly."""
    if _ledger(key) == 1:
        time.sleep(seconds)
    return "done"


@app.task(bind=True)
def tick(self, key):
    """A periodic task's run, recorded with its task id: a beat gives each tick its own id, so a
    tick sent twice shows as one id recorded twice."""
    return _ledger(f"{key}:{self.request.id}")
