"""``rqueue beat``: parse the options, then run ``rqueue.beat.Beat`` (or list its schedule)."""

from __future__ import annotations

import signal
import sys

import click

from rqueue.cli import CONTEXT, fail, get_app
from rqueue.exceptions import RQueueError


@click.command(context_settings=CONTEXT)
@click.option("-l", "--loglevel", default="warning", show_default=True, help="debug, info, warning, error, critical.")
@click.option("-f", "--logfile", type=click.Path(dir_okay=False), help="Log to this file instead of stderr.")
@click.option(
    "--pidfile", type=click.Path(dir_okay=False), help="Write the pid here; refuse if a live process holds it."
)
@click.option(
    "-s",
    "--schedule",
    "schedule_file",
    metavar="FILE",
    help="Accepted for Celery's sake and not used: the schedule's state lives in the broker.",
)
@click.option("--list", "list_only", is_flag=True, help="Print each entry with its last and next run, then exit.")
@click.pass_context
def beat(
    ctx: click.Context,
    loglevel: str,
    logfile: str | None,
    pidfile: str | None,
    schedule_file: str | None,
    list_only: bool,
) -> None:
    """Send the app's periodic tasks (beat_schedule). Safe to run on several nodes: they elect one
    leader through the broker, which sends each run once; if it dies, another takes over within
    beat_lease_s * 7/6 (3.5 s by default)."""
    from rqueue.beat import Beat  # noqa: PLC0415 - only the beat command loads the beat
    from rqueue.worker import release_pidfile, setup_logging, take_pidfile  # noqa: PLC0415

    app = get_app(ctx)
    try:
        setup_logging(loglevel, logfile, bool(app.conf.worker_hijack_root_logger))
        service = Beat(app)
        if list_only:
            for line in service.listing():
                click.echo(line)
            if not service.entries:
                click.echo("No periodic tasks (beat_schedule is empty).", err=True)
            return
        if schedule_file:
            click.echo(f"Note: -s {schedule_file} is not used; the schedule's state lives in the broker.", err=True)
        held = take_pidfile(pidfile) if pidfile else None
    except RQueueError as exc:
        fail(str(exc), 1)

    def on_signal(signum: int, frame: object) -> None:
        service.stop(timeout_s=0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        service.run()
    finally:
        if held:
            release_pidfile(held)
    sys.exit(0)
