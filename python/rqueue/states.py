"""Task states, as Celery names them (the strings are on the wire). A task may store any other
state of its own with ``self.update_state(state="PROGRESS", meta=...)``; clients read it as is."""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"
REVOKED = "REVOKED"
#: Reported by ``task_postrun`` for runs that raised ``Reject`` or ``Ignore`` (never stored).
REJECTED = "REJECTED"
IGNORED = "IGNORED"

#: States after which nothing more happens to a task.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
#: States that end in an exception.
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})
#: States Celery counts as not yet ready (custom states are too).
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
#: States whose failure propagates (``get()`` raises).
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
