"""``rqueue control`` and ``rqueue inspect``: remote control of live workers, Celery's way.

Each worker's reply is printed as ``-> name@host: OK`` (or ``ERROR``) with the reply below; the
exit code is non-zero when no worker replied in time or any replied with an error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rqueue.brokers.base import RevocationStore, capability
from rqueue.cli import CONTEXT, fail, get_app
from rqueue.control import DEFAULT_TIMEOUT_S, duplicate_nodename_message
from rqueue.exceptions import RQueueError
from rqueue.utils.log import printable

F = TypeVar("F", bound=Callable[..., Any])


def _target_options(fun: F) -> F:
    """``--destination``, ``--timeout`` and ``--json``, shared by every control and inspect command."""
    fun = click.option("--json", "as_json", is_flag=True, help="Print the replies as JSON.")(fun)
    fun = click.option(
        "-t",
        "--timeout",
        type=click.FloatRange(min=0.01),
        default=DEFAULT_TIMEOUT_S,
        show_default=True,
        help="Seconds to wait for replies.",
    )(fun)
    return click.option(
        "-d", "--destination", help="Comma-separated worker names (name@host) to address [default: all]."
    )(fun)


def _destinations(destination: str | None) -> list[str] | None:
    return [d.strip() for d in destination.split(",") if d.strip()] if destination else None


def _run(
    ctx: click.Context, method: str, arguments: dict[str, Any], destination: str | None, timeout: float, as_json: bool
) -> None:
    app = get_app(ctx)
    try:
        replies = app.control.broadcast(
            method, arguments, destination=_destinations(destination), reply=True, timeout=timeout
        )
    except RQueueError as exc:
        fail(str(exc), 1)
    _show(replies, timeout, as_json)


def _warn_duplicates(replies: list[dict[str, Any]]) -> None:
    """Celery's DuplicateNodenameWarning, on stderr: several workers answered under one name."""
    names = [name for reply in replies for name in reply]
    dupes = {name for name in names if names.count(name) > 1}
    if dupes:
        click.echo(f"Warning: {printable(duplicate_nodename_message(sorted(dupes)))}", err=True)


def _show(replies: list[dict[str, Any]] | None, timeout: float, as_json: bool) -> None:
    merged: dict[str, Any] = {}
    for reply in replies or []:
        merged.update(reply)
    if not merged:
        fail(f"No workers replied within {timeout:g} s", 1)
    _warn_duplicates(replies or [])
    if as_json:
        click.echo(json.dumps(merged, indent=2, sort_keys=True, default=repr))
    else:
        for hostname in sorted(merged):
            _print_reply(hostname, merged[hostname])
        click.echo(f"\n{len(merged)} node{'s' if len(merged) != 1 else ''} online.")
    if any(isinstance(r, dict) and "error" in r for r in merged.values()):
        sys.exit(1)


def _print_reply(hostname: str, reply: Any) -> None:
    if isinstance(reply, dict) and set(reply) == {"error"}:
        click.echo(f"-> {hostname}: ERROR")
        click.echo(f"    {printable(str(reply['error']))}")
        return
    click.echo(f"-> {hostname}: OK")
    if isinstance(reply, dict) and set(reply) == {"ok"}:
        click.echo(f"    {printable(str(reply['ok']))}")
    elif isinstance(reply, list):
        if not reply:
            click.echo("    - empty -")
        for item in reply:
            shown = printable(item) if isinstance(item, str) else json.dumps(item, sort_keys=True, default=repr)
            click.echo(f"    * {shown}")
    else:
        text = json.dumps(reply, indent=4, sort_keys=True, default=repr)
        click.echo("\n".join(f"    {line}" for line in text.splitlines()))


# -- control ------------------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def control() -> None:
    """Change live workers: rate and time limits, revoke, queues, pool size, shutdown."""


@control.command(name="rate_limit", context_settings=CONTEXT)
@click.argument("task_name")
@click.argument("rate")
@_target_options
@click.pass_context
def rate_limit(
    ctx: click.Context, task_name: str, rate: str, destination: str | None, timeout: float, as_json: bool
) -> None:
    """Set TASK_NAME's rate limit at once (10/s, 10/m, 10/h, a number per second; 0 removes it)."""
    _run(ctx, "rate_limit", {"task_name": task_name, "rate_limit": rate}, destination, timeout, as_json)


@control.command(name="time_limit", context_settings=CONTEXT)
@click.argument("task_name")
@click.argument("soft", type=float)
@click.argument("hard", type=float, required=False)
@_target_options
@click.pass_context
def time_limit(
    ctx: click.Context,
    task_name: str,
    soft: float,
    hard: float | None,
    destination: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Set TASK_NAME's soft (and hard) time limit in seconds (prefork workers)."""
    _run(ctx, "time_limit", {"task_name": task_name, "soft": soft, "hard": hard}, destination, timeout, as_json)


@control.command(context_settings=CONTEXT)
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Also stop it if running (prefork workers).")
@click.option(
    "--signal",
    "signal_name",
    default="SIGTERM",
    show_default=True,
    help="SIGKILL kills the task's child at once; any other raises TaskTerminated in the task (killed after 5 s).",
)
@_target_options
@click.pass_context
def revoke(
    ctx: click.Context,
    task_ids: tuple[str, ...],
    terminate: bool,
    signal_name: str,
    destination: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Revoke tasks: workers skip them (recorded in the broker too, for workers that are offline)."""
    app = get_app(ctx)
    try:
        replies = app.control.revoke(
            list(task_ids),
            terminate=terminate,
            signal=signal_name,
            destination=_destinations(destination),
            reply=True,
            timeout=timeout,
        )
    except RQueueError as exc:
        fail(str(exc), 1)
    if not replies and capability(app.broker, RevocationStore) is not None:
        # Stored in the broker: every worker that starts or polls skips the tasks all the same.
        ids = ", ".join(printable(i) for i in task_ids)
        click.echo(f"Revoked {ids}: stored in the broker; no live worker replied within {timeout:g} s.")
        return
    _show(replies, timeout, as_json)


@control.command(context_settings=CONTEXT)
@_target_options
@click.pass_context
def shutdown(ctx: click.Context, destination: str | None, timeout: float, as_json: bool) -> None:
    """Warm shutdown of the workers: running tasks finish first."""
    _run(ctx, "shutdown", {}, destination, timeout, as_json)


@control.command(name="add_consumer", context_settings=CONTEXT)
@click.argument("queue")
@_target_options
@click.pass_context
def add_consumer(ctx: click.Context, queue: str, destination: str | None, timeout: float, as_json: bool) -> None:
    """Make workers consume QUEUE as well."""
    _run(ctx, "add_consumer", {"queue": queue}, destination, timeout, as_json)


@control.command(name="cancel_consumer", context_settings=CONTEXT)
@click.argument("queue")
@_target_options
@click.pass_context
def cancel_consumer(ctx: click.Context, queue: str, destination: str | None, timeout: float, as_json: bool) -> None:
    """Make workers stop consuming QUEUE."""
    _run(ctx, "cancel_consumer", {"queue": queue}, destination, timeout, as_json)


@control.command(name="pool_grow", context_settings=CONTEXT)
@click.argument("n", type=click.IntRange(min=1), default=1)
@_target_options
@click.pass_context
def pool_grow(ctx: click.Context, n: int, destination: str | None, timeout: float, as_json: bool) -> None:
    """Start N more prefork processes (not while autoscaling)."""
    _run(ctx, "pool_grow", {"n": n}, destination, timeout, as_json)


@control.command(name="pool_shrink", context_settings=CONTEXT)
@click.argument("n", type=click.IntRange(min=1), default=1)
@_target_options
@click.pass_context
def pool_shrink(ctx: click.Context, n: int, destination: str | None, timeout: float, as_json: bool) -> None:
    """Stop N prefork processes once their tasks finish (not while autoscaling)."""
    _run(ctx, "pool_shrink", {"n": n}, destination, timeout, as_json)


@control.command(context_settings=CONTEXT)
@click.argument("max_size", metavar="MAX", type=click.IntRange(min=1))
@click.argument("min_size", metavar="MIN", type=click.IntRange(min=1))
@_target_options
@click.pass_context
def autoscale(
    ctx: click.Context, max_size: int, min_size: int, destination: str | None, timeout: float, as_json: bool
) -> None:
    """Scale autoscaling workers between MIN and MAX processes from now on."""
    if min_size > max_size:
        raise click.BadParameter(f"MIN ({min_size}) must not exceed MAX ({max_size})", param_hint="MIN")
    _run(ctx, "autoscale", {"max": max_size, "min": min_size}, destination, timeout, as_json)


@control.command(name="enable_events", context_settings=CONTEXT)
@_target_options
@click.pass_context
def enable_events(ctx: click.Context, destination: str | None, timeout: float, as_json: bool) -> None:
    """Make workers send task events from now on (Flower, `rqueue events`)."""
    _run(ctx, "enable_events", {}, destination, timeout, as_json)


@control.command(name="disable_events", context_settings=CONTEXT)
@_target_options
@click.pass_context
def disable_events(ctx: click.Context, destination: str | None, timeout: float, as_json: bool) -> None:
    """Make workers stop sending task events (heartbeats go on)."""
    _run(ctx, "disable_events", {}, destination, timeout, as_json)


@control.command(context_settings=CONTEXT)
@_target_options
@click.pass_context
def heartbeat(ctx: click.Context, destination: str | None, timeout: float, as_json: bool) -> None:
    """Make workers send a heartbeat event now."""
    _run(ctx, "heartbeat", {}, destination, timeout, as_json)


# -- inspect ------------------------------------------------------------------------------------------

INSPECT = {
    "ping": "Ask every worker to answer.",
    "active": "Tasks running now.",
    "reserved": "Tasks prefetched and not started yet.",
    "scheduled": "Tasks held until a time (rate-limited, waiting for their turn).",
    "registered": "Task names each worker knows.",
    "stats": "Process ids, uptime, tasks processed, pool, prefetch, broker, memory.",
    "active_queues": "Queues each worker consumes.",
    "revoked": "Revoked task ids each worker knows.",
    "conf": "Each worker's explicit settings (passwords masked).",
}


@click.group(context_settings=CONTEXT)
def inspect() -> None:
    """Ask live workers what they run, hold and know."""


def _inspect_command(method: str, doc: str) -> None:
    @_target_options
    @click.pass_context
    def command(ctx: click.Context, destination: str | None, timeout: float, as_json: bool) -> None:
        _run(ctx, method, {}, destination, timeout, as_json)

    command.__doc__ = doc
    inspect.command(name=method, context_settings=CONTEXT)(command)


for _method, _doc in INSPECT.items():
    _inspect_command(_method, _doc)


# -- status -------------------------------------------------------------------------------------------

#: ``celery status``'s exit code when no worker answers (``os.EX_UNAVAILABLE``).
EXIT_NO_NODES = 69


@click.command(context_settings=CONTEXT)
@_target_options
@click.pass_context
def status(ctx: click.Context, destination: str | None, timeout: float, as_json: bool) -> None:
    """Show the workers that are online (each answers a ping)."""
    app = get_app(ctx)
    try:
        replies = app.control.ping(destination=_destinations(destination), timeout=timeout)
    except RQueueError as exc:
        fail(str(exc), 1)
    merged = {name: answer for reply in replies for name, answer in reply.items()}
    nodes = sorted(merged)
    if not nodes:
        fail(f"No nodes replied within time constraint ({timeout:g} s)", EXIT_NO_NODES)
    if as_json:  # the count goes to stderr: stdout stays one JSON document
        click.echo(json.dumps(merged, sort_keys=True, default=repr))
    else:
        for name in nodes:
            click.echo(f"->  {printable(name)}: OK")
    _warn_duplicates(replies)
    click.echo(f"\n{len(nodes)} node{'s' if len(nodes) != 1 else ''} online.", err=as_json)
