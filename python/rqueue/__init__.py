"""rqueue: a Celery-compatible distributed task queue with a Rust hot path.

from rqueue import App

app = App("tasks")

@app.task
def add(x, y):
    return x + y
"""

from rqueue._rqueue import __version__
from rqueue.app import App
from rqueue.result import AsyncResult
from rqueue.task import Request, Task

__all__ = ["App", "AsyncResult", "Request", "Task", "__version__"]
