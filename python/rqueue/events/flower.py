"""A Celery app that stands for an rqueue app, for Flower and Celery's own tools.

Flower is a Celery program: it reads events and sends control commands through a ``celery.Celery``
app, and its rate-limit and task pages know only the task names that app registered. Give it
one made from your rqueue app (same broker, every task name registered)::

    # flower_app.py, next to your project
    from proj import app
    from rqueue.events.flower import celery_app

    celery = celery_app(app)

    $ celery -A flower_app flower --port=5555

The stand-in tasks never run (rqueue workers run the real ones); calling one raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rqueue.exceptions import ConfigurationError

if TYPE_CHECKING:
    from rqueue.app import App


def celery_app(app: App, main: str | None = None) -> Any:
    """A ``celery.Celery`` on ``app``'s broker (Redis or RabbitMQ) with every task name of ``app``
    registered, as Flower and ``celery events``/``inspect``/``control`` need it."""
    try:
        import celery  # noqa: PLC0415 - optional: only monitors use it
    except ImportError:
        raise ConfigurationError("celery_app() needs the celery package: pip install celery flower") from None
    url = app.broker_url
    if url.startswith("sqlite"):
        raise ConfigurationError(
            f"Celery's tools cannot read the embedded SQLite broker ({url}); run the workers on Redis or "
            "RabbitMQ to watch them with Flower, or use `rqueue events --dump`"
        )
    stand_in = celery.Celery(main or app.main or "rqueue", broker=url, set_as_current=False)
    stand_in.conf.update(
        broker_transport_options=dict(app.conf.broker_transport_options),
        broker_connection_retry_on_startup=True,
        task_default_queue=app.conf.task_default_queue,
    )
    app.finalize()
    for name in sorted(app.tasks):
        stand_in.task(name=name, bind=True)(_never_here(name))
    return stand_in


def _never_here(name: str) -> Any:
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} is an rqueue task: rqueue workers run it, not this Celery stand-in")

    run.__name__ = name.rsplit(".", 1)[-1]
    return run
