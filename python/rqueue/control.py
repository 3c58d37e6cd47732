"""Control of tasks through the broker: revoking them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rqueue.app import App

#: Revocations are kept at least this long (a task sent with a long countdown is still skipped).
MIN_REVOKE_KEEP_S = 3 * 3600


class Control:
    """``app.control``: operations on tasks that workers carry out."""

    def __init__(self, app: App) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str]) -> None:
        """Revoke tasks: a worker that has not started them records them REVOKED instead of running them.

        The ids are stored in the broker (kept for ``result_expires``, at least three hours), so a
        worker that is offline now, or restarts, still skips them.
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        expires = self.app.conf.result_expires
        keep_s = max(float(getattr(expires, "total_seconds", lambda: expires)() or 0), MIN_REVOKE_KEEP_S)
        self.app.broker.revoke(ids, int((time.time() + keep_s) * 1000))
