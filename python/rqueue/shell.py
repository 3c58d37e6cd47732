"""``rqueue shell``: an interactive Python shell with the app, the canvas primitives and the app's
tasks preloaded, as ``celery shell`` has them (IPython when installed, else the standard console)."""

from __future__ import annotations

import code
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

import rqueue
from rqueue.utils.log import printable

if TYPE_CHECKING:
    from rqueue.app import App

#: Besides ``app``: what ``celery shell`` preloads, by the same names.
PRELOADED = ("Task", "chain", "chord", "chunks", "group", "signature", "maybe_signature", "xmap", "xstarmap")


def namespace(app: App, with_tasks: bool = True) -> dict[str, Any]:
    """The shell's globals: ``app`` (also as ``celery``, Celery's name for it), the ``rqueue``
    package, the canvas primitives, and each task under its function's name (``add`` for
    ``tasks.add``) unless ``with_tasks`` is False. Celery's own built-in tasks are left out."""
    ns: dict[str, Any] = {"app": app, "celery": app, "rqueue": rqueue}
    ns.update({name: getattr(rqueue, name) for name in PRELOADED})
    ns["subtask"] = rqueue.signature
    if with_tasks:
        app.finalize()
        for task in app.tasks.values():
            short = getattr(task, "__name__", None) or task.name.rpartition(".")[2]
            if not task.name.startswith("celery.") and short.isidentifier() and short not in ns:
                ns[short] = task
    return ns


def banner(ns: dict[str, Any]) -> str:
    tasks = sorted(name for name, value in ns.items() if isinstance(value, rqueue.Task))
    loaded = ", ".join(printable(name) for name in tasks) if tasks else "(none)"
    return (
        f"rqueue {rqueue.__version__} shell, app {ns['app'].main or '__main__'}\n"
        f"Preloaded: app (also celery), rqueue, {', '.join(PRELOADED)}, subtask\n"
        f"Tasks: {loaded}\n"
    )


def has_ipython() -> bool:
    return importlib.util.find_spec("IPython") is not None


def run(ns: dict[str, Any], plain: bool = False) -> None:
    """Run the shell on ``ns`` until end of input: IPython unless ``plain`` or it is not installed."""
    if not plain and has_ipython():
        import IPython  # type: ignore[import-not-found]  # noqa: PLC0415 - optional

        print(banner(ns), file=sys.stderr)
        IPython.start_ipython(argv=[], user_ns=ns)
        return
    code.interact(banner=banner(ns), local=ns, exitmsg="")
