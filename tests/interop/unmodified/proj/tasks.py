"""Tasks of an unmodified Celery project: plain, bound (self.request, self.retry), a base class
with a hook, a task that sends a task, and a shared task."""

import json
import os

from celery import Task, shared_task

from proj.celery import app


def journal(*entry):
    with open(os.environ["JOURNAL"], "a") as fh:
        fh.write(json.dumps(entry) + "\n")


class Hooked(Task):
    def on_success(self, retval, task_id, args, kwargs):
        journal("on_success", self.name, retval)


@app.task(base=Hooked)
def add(x, y):
    return x + y


@app.task(bind=True)
def whoami(self):
    return {"id": self.request.id, "parent_id": self.request.parent_id, "retries": self.request.retries}


@app.task(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, needed):
    if self.request.retries < needed:
        raise self.retry(exc=ValueError(f"attempt {self.request.retries}"))
    return self.request.retries


@app.task(bind=True)
def spawn(self):
    return whoami.delay().id


@shared_task
def mul(x, y):
    return x * y
