"""rqueue: a Celery-compatible distributed task queue with a Rust hot path.

from rqueue import App   # or: from rqueue import Celery

app = App("tasks")

@app.task
def add(x, y):
    return x + y
"""

from rqueue._rqueue import __version__
from rqueue.app import App, shared_task
from rqueue.canvas import Signature, chain, chord, chunks, group, maybe_signature, signature, xmap, xstarmap
from rqueue.current import current_app
from rqueue.request import Request
from rqueue.result import AsyncResult, GroupResult, ResultSet
from rqueue.task import Task

#: Celery's name of the application class: ``from rqueue import Celery`` is the one-line migration.
Celery = App

__all__ = [
    "App",
    "AsyncResult",
    "Celery",
    "GroupResult",
    "Request",
    "ResultSet",
    "Signature",
    "Task",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "xmap",
    "xstarmap",
]
