"""``rqueue report``, ``shell``, ``dashboard`` and ``events``: parse the options, then call
``rqueue.report``, ``rqueue.shell``, ``rqueue.dashboard`` and ``rqueue.events``."""

from __future__ import annotations

import click

from rqueue.cli import CONTEXT, fail, get_app
from rqueue.exceptions import RQueueError


@click.command(context_settings=CONTEXT)
@click.pass_context
def report(ctx: click.Context) -> None:
    """Show versions, platform, transports and the app's settings for a bug report (secrets masked)."""
    from rqueue.report import bugreport  # noqa: PLC0415 - `rqueue --help` stays quick

    app = get_app(ctx)
    try:
        click.echo(bugreport(app))
    except RQueueError as exc:
        fail(str(exc), 1)


@click.command(context_settings=CONTEXT)
@click.option("--python", "plain", is_flag=True, help="Use the standard Python console even if IPython is installed.")
@click.option("--ipython", is_flag=True, help="Use IPython (an error if it is not installed).")
@click.option("--without-tasks", is_flag=True, help="Do not preload the app's tasks by name.")
@click.pass_context
def shell(ctx: click.Context, plain: bool, ipython: bool, without_tasks: bool) -> None:
    """An interactive Python shell with app, rqueue, the canvas primitives and every task preloaded."""
    from rqueue.shell import has_ipython, namespace, run  # noqa: PLC0415 - `rqueue --help` stays quick

    if plain and ipython:
        fail("--python and --ipython exclude each other: choose one")
    if ipython and not has_ipython():
        fail("--ipython: IPython is not installed (pip install ipython), or use the plain shell (--python)")
    app = get_app(ctx)
    try:
        ns = namespace(app, with_tasks=not without_tasks)
    except RQueueError as exc:
        fail(str(exc), 1)
    run(ns, plain=plain)


@click.command(context_settings=CONTEXT)
@click.option("--port", type=click.IntRange(0, 65535), default=5555, show_default=True, help="The port to listen on.")
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on (beyond loopback, reads need the token too).",
)
@click.option("--token", envvar="RQUEUE_DASHBOARD_TOKEN", help="The token actions need [default: a new one, printed].")
@click.option("-Q", "--queues", help="Comma-separated queues to chart [default: the ones a worker consumes].")
@click.pass_context
def dashboard(ctx: click.Context, port: int, address: str, token: str | None, queues: str | None) -> None:
    """A web dashboard: workers, queues, throughput, failures, dead letters, rate limits, /metrics."""
    from rqueue.dashboard import serve  # noqa: PLC0415 - `rqueue --help` stays quick

    app = get_app(ctx)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    try:
        serve(app, address, port, token, names)
    except RQueueError as exc:
        fail(str(exc), 1)


@click.command(context_settings=CONTEXT)
@click.option("-d", "--dump", is_flag=True, help="Print every event as it comes, one line each.")
@click.option("--json", "as_json", is_flag=True, help="With --dump: one JSON object per line, as received.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many events.")
@click.pass_context
def events(ctx: click.Context, dump: bool, as_json: bool, timeout: float | None, limit: int | None) -> None:
    """Watch the workers' and producers' events (Celery's event protocol), like `celery events --dump`."""
    import json  # noqa: PLC0415 - `rqueue --help` stays quick

    from rqueue.events import EventReceiver, format_event  # noqa: PLC0415
    from rqueue.events.dump import TaskNames  # noqa: PLC0415

    if not dump:
        fail("rqueue events prints the event stream with --dump; for a live view, run Flower (see docs/events.md)")
    app = get_app(ctx)
    names = TaskNames()
    click.echo("-> evdump: starting capture...")
    try:
        with EventReceiver(app) as receiver:
            for event in receiver.itercapture(limit=limit, timeout_s=timeout):
                click.echo(json.dumps(event, default=repr) if as_json else format_event(event, names))
    except KeyboardInterrupt:
        return
    except RQueueError as exc:
        fail(str(exc), 1)
