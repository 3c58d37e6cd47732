"""``rqueue report`` and ``rqueue shell``: parse the options, then call ``rqueue.report`` and ``rqueue.shell``."""

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
