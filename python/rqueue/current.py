"""The current app: the last ``App`` made with ``set_as_current`` in this thread, else the process's
default (the first made, or ``set_default()``'s), else one made on first use, as Celery's default
app is. ``AsyncResult(id)`` and ``shared_task`` use it; ``rqueue.app`` registers every app here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rqueue.app import App


class _ThreadState(threading.local):
    #: The current app of this thread (``set_as_current``).
    current: App | None = None


_thread = _ThreadState()
_lock = threading.Lock()
#: The app of threads that set none.
_default: App | None = None
#: Makes the default app when none was made (``App``, installed by ``rqueue.app``: this module sits
#: below it and must not import it).
make_default: Callable[[], App] | None = None


def register(app: App, set_as_current: bool) -> None:
    """A new app: the default when it is the first; the current one of this thread when asked."""
    global _default
    with _lock:
        if _default is None:
            _default = app
    if set_as_current:
        _thread.current = app


def set_current(app: App) -> None:
    _thread.current = app


def set_default(app: App) -> None:
    global _default
    _default = app


def current_app() -> App:
    """The current app (see the module docstring)."""
    app = _thread.current or _default
    if app is None:
        if make_default is None:
            raise RuntimeError("no rqueue app exists: make one with rqueue.App(...)")
        app = make_default()
    return app
