"""Tasks written for Celery (only the imports changed): a base class with hooks, signals, custom
states, task loggers, tasks sending tasks, retries, Reject and expected exceptions.

Every hook and signal appends a JSON line to $JOURNAL, so the tests read what ran, in order.
"""

import json
import os

from proj.celery import app
from rqueue import Task, shared_task
from rqueue.exceptions import Reject
from rqueue.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_revoked,
    task_success,
    task_unknown,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from rqueue.utils.log import get_task_logger

logger = get_task_logger(__name__)


def journal(*entry):
    with open(os.environ["JOURNAL"], "a") as fh:
        fh.write(json.dumps(entry) + "\n")


class JournalTask(Task):
    """A base class as Celery projects write them: option defaults and hooks."""

    max_retries = 2
    default_retry_delay = 0

    def before_start(self, task_id, args, kwargs):
        journal("before_start", self.name, list(args))

    def on_success(self, retval, task_id, args, kwargs):
        journal("on_success", self.name, retval)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        journal("on_failure", self.name, type(exc).__name__, "Traceback" in einfo.traceback)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        journal("on_retry", self.name, str(exc))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        journal("after_return", self.name, status)


@task_prerun.connect
def on_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **_):
    journal("task_prerun", task.name)


@task_postrun.connect
def on_postrun(sender=None, task_id=None, task=None, retval=None, state=None, **_):
    journal("task_postrun", task.name, state)


@task_success.connect(sender="proj.tasks.add")
def on_add_success(sender=None, result=None, **_):
    journal("task_success", sender.name, result)


@task_failure.connect
def on_failure_signal(sender=None, task_id=None, exception=None, **_):
    journal("task_failure", sender.name, type(exception).__name__)


@worker_process_init.connect
def on_process_init(**_):
    journal("worker_process_init", os.getpid())


@worker_ready.connect
def on_ready(sender=None, **_):
    journal("worker_ready")


@task_revoked.connect
def on_revoked(sender=None, request=None, terminated=None, expired=None, **_):
    journal("task_revoked", request.task, terminated, expired)


@task_unknown.connect
def on_unknown(sender=None, name=None, id=None, **_):
    journal("task_unknown", name, id)


@worker_shutting_down.connect
def on_shutting_down(sender=None, sig=None, how=None, exitcode=None, **_):
    journal("worker_shutting_down", sig, how)


@worker_process_shutdown.connect
def on_process_shutdown(sender=None, pid=None, exitcode=None, **_):
    journal("worker_process_shutdown", pid)


@worker_shutdown.connect
def on_shutdown(sender=None, **_):
    journal("worker_shutdown")


@task_prerun.connect
def broken_receiver(**_):
    raise RuntimeError("a receiver that raises must not stop the worker")


@app.task(base=JournalTask)
def add(x, y):
    logger.info("Adding %s + %s", x, y)
    return x + y


@app.task(bind=True, base=JournalTask)
def flaky(self, attempts_needed):
    if self.request.retries < attempts_needed:
        raise self.retry(exc=ValueError(f"attempt {self.request.retries}"))
    return self.request.retries


@app.task(bind=True, base=JournalTask)
def fails(self):
    raise KeyError("boom")


@app.task(bind=True)
def progress(self, steps):
    for done in range(steps):
        self.update_state(state="PROGRESS", meta={"done": done + 1, "total": steps})
    return steps


@app.task(bind=True)
def spawn(self):
    """Sends a child task from inside a task: the child's parent_id is this task, root_id its root."""
    child = request_info.delay()
    return child.id


@app.task(bind=True)
def request_info(self):
    r = self.request
    return {
        "id": r.id,
        "parent_id": r.parent_id,
        "root_id": r.root_id,
        "eta": r.eta,
        "expires": r.expires,
        "priority": r.delivery_info.get("priority"),
        "custom": r.headers.get("x-custom"),
        "hostname": r.hostname,
        "correlation_id": r.correlation_id,
        "called_directly": r.called_directly,
        "is_eager": r.is_eager,
        "retries": r.retries,
        "timelimit": list(r.timelimit),
    }


@app.task(bind=True, max_retries=1, default_retry_delay=0)
def retry_keeps(self):
    if self.request.retries == 0:
        raise self.retry()
    return {"priority": self.request.delivery_info.get("priority"), "custom": self.request.headers.get("x-custom")}


@app.task(bind=True)
def reject_forever(self):
    raise Reject("never", requeue=False)


@app.task(bind=True)
def reject_requeue(self):
    journal("reject_requeue", self.request.id)
    raise Reject("again", requeue=True)


class ExpectedError(Exception):
    pass


@app.task(throws=(ExpectedError,))
def expected_failure():
    raise ExpectedError("an expected business error")


@app.task(ignore_result=True, store_errors_even_if_ignored=True)
def ignored_but_failing():
    raise ValueError("stored even though results are ignored")


@app.task(expires=0.001)
def expires_soon():
    return "ran"


class Multiply(app.Task):
    """A class-based task, registered with app.register_task."""

    name = "proj.tasks.multiply"

    def run(self, x, y):
        return x * y


multiply = app.register_task(Multiply())


@shared_task(name="proj.tasks.shared_mul")
def shared_mul(x, y):
    return x * y
