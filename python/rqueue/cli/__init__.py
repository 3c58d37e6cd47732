"""The ``rqueue`` command line: parses options and delegates; the work happens in the package."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, NoReturn

import click

from rqueue import __version__
from rqueue.brokers.base import DeadLetterAdmin, require
from rqueue.config import default_queues
from rqueue.exceptions import RQueueError
from rqueue.utils.log import printable

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr and an exit code; no traceback."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def load_app(spec: str) -> Any:
    """The App named by ``-A``, found as Celery finds it: ``module:attribute`` (or ``module.attribute``);
    else in the module its ``app``, then its ``celery`` attribute, then (a package) the same in its
    ``celery`` submodule (``proj/celery.py``), then the one App instance it holds. An unmodified
    ``celery.Celery`` app found the same way runs on rqueue (``rqueue.from_celery``)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    module = _import_for_app(spec, module_name, attr)
    if attr:
        found = getattr(module, attr, None)
        if not _is_app(found):
            fail(f"cannot load app {spec!r}: {module_name} has no App named {attr!r}")
    else:
        found = _app_in(module)
        if found is None and hasattr(module, "__path__"):
            submodule = f"{module_name}.celery"
            if importlib.util.find_spec(submodule) is not None:
                found = _app_in(_import_for_app(spec, submodule, ""))
        if found is None:
            fail(f"cannot load app {spec!r}: no App found in module {module_name} (use module:attribute)")
    from rqueue.from_celery import adopt, is_celery_app  # noqa: PLC0415 - `rqueue --help` stays quick

    if is_celery_app(found):
        try:
            return adopt(found)
        except RQueueError as exc:
            fail(f"cannot run Celery app {spec!r} on rqueue: {exc}")
    return found


def _is_app(obj: object) -> bool:
    from rqueue.app import App  # noqa: PLC0415 - `rqueue --help` stays quick
    from rqueue.from_celery import is_celery_app  # noqa: PLC0415

    return isinstance(obj, App) or is_celery_app(obj)


def _import_for_app(spec: str, module_name: str, attr: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        parent, _, last = module_name.rpartition(".")
        if parent and not attr and exc.name == module_name:  # ``proj.app``: an attribute, not a module
            holder = _import_for_app(spec, parent, "")
            if hasattr(holder, last):
                return holder
        fail(f"cannot load app {spec!r}: {exc}")
    except Exception as exc:  # the user's module raised while importing
        fail(f"cannot load app {spec!r}: importing {module_name} raised {type(exc).__name__}: {exc}")


def _app_in(module: Any) -> Any:
    for name in ("app", "celery"):
        candidate = getattr(module, name, None)
        if _is_app(candidate):
            return candidate
    apps = [v for v in vars(module).values() if _is_app(v)]
    return apps[0] if len(apps) == 1 else None


def node_name(template: str) -> str:
    """A ``-n`` node name with Celery's expansions (``rqueue.nodenames.host_format``)."""
    from rqueue.nodenames import host_format  # noqa: PLC0415 - `rqueue --help` stays quick

    try:
        return host_format(template)
    except RQueueError as exc:
        fail(str(exc))


def run_for_app(app: Any, argv: list[str]) -> None:
    """Run the command line with ``app`` as the application (``app.start()``, ``app.worker_main()``)."""
    cli.main(args=argv, prog_name="rqueue", obj={"app": app})


@click.group(context_settings=CONTEXT, invoke_without_command=False)
@click.option(
    "-A", "--app", "app_spec", metavar="MODULE[:ATTR]", help="The application: module, module:attr or package."
)
@click.option("--config", "config_module", metavar="MODULE", help="A settings module to load into the app.")
@click.option("-b", "--broker", help="The broker URL (instead of the app's broker_url).")
@click.option("--result-backend", help="The result backend URL (instead of the app's result_backend).")
@click.version_option(__version__, "--version", prog_name="rqueue", message="rqueue %(version)s")
@click.pass_context
def cli(
    ctx: click.Context, app_spec: str | None, config_module: str | None, broker: str | None, result_backend: str | None
) -> None:
    """rqueue: a Celery-compatible distributed task queue with a Rust hot path."""
    given = {"app_spec": app_spec, "config": config_module, "broker": broker, "result_backend": result_backend}
    ctx.obj = {**(ctx.obj or {}), **given}


def get_app(ctx: click.Context) -> Any:
    obj = ctx.find_root().obj or {}
    if obj.get("app") is not None and not obj.get("app_spec"):
        app = obj["app"]
    else:
        spec = obj.get("app_spec")
        if not spec:
            fail("no application given: pass -A MODULE (e.g. rqueue -A tasks worker)")
        app = load_app(spec)
    try:
        if obj.get("config"):
            app.config_from_object(obj["config"])
        if obj.get("broker"):
            app.conf.broker_url = obj["broker"]
        if obj.get("result_backend"):
            app.conf.result_backend = obj["result_backend"]
    except ImportError as exc:
        fail(f"--config {obj['config']}: cannot import it ({exc})")
    except RQueueError as exc:
        fail(str(exc))
    return app


@cli.command(name="help", context_settings=CONTEXT)
@click.pass_context
def help_(ctx: click.Context) -> None:
    """Show the commands and options."""
    click.echo(ctx.find_root().get_help())


@cli.command(context_settings=CONTEXT)
@click.option("-l", "--loglevel", default="warning", show_default=True, help="debug, info, warning, error, critical.")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Child processes, threads, or (asyncio) tasks running at once [default: CPUs; asyncio: 100].",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo", "asyncio"]),
    default=None,
    help="Run tasks in child processes, threads, the worker process itself, or on its event loop (asyncio) "
    "[default: asyncio when every task is an async def, else prefork (threads without fork())].",
)
@click.option("-Q", "--queues", help="Comma-separated queues to consume [default: task_queues or task_default_queue].")
@click.option("-X", "--exclude-queues", help="Comma-separated queues not to consume (of the default ones).")
@click.option(
    "-n", "--hostname", help="Node name: %h host name, %n its first part, %d its domain [default: rqueue@%h]."
)
@click.option(
    "--pidfile",
    type=click.Path(dir_okay=False),
    help="Write the pid here; refuse if a live worker holds it. Expands %p (node name), %n, %h, %d, %i.",
)
@click.option(
    "-S", "--statedb", type=click.Path(dir_okay=False), help="Keep revoked task ids in this file across restarts."
)
@click.option(
    "-f",
    "--logfile",
    type=click.Path(dir_okay=False),
    help="Log to this file instead of stderr. Expands %p (node name), %n, %h, %d; %i/%I: a file per prefork process.",
)
@click.option("-D", "--detach", is_flag=True, help="Run in the background (needs --logfile).")
@click.option("--uid", help="Run as this user (name or id; root only); the log file and pidfile become theirs.")
@click.option("--gid", help="Run as this group (name or id) [default with --uid: the user's group].")
@click.option("--umask", help="The umask of the worker's files (octal with a leading 0, e.g. 022).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Change to this directory before starting.")
@click.option("--allow-eviction", is_flag=True, help="Start even if Redis may evict messages (maxmemory-policy).")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1), help="Messages prefetched per process or thread.")
@click.option(
    "-O",
    "optimization",
    type=click.Choice(["fair", "default"]),
    help="fair: each process holds one message at a time (prefetch multiplier 1).",
)
@click.option("--disable-prefetch", is_flag=True, help="Hold only the messages being run (prefetch multiplier 1).")
@click.option("--autoscale", help="MAX,MIN: scale the prefork pool between MIN and MAX processes with the load.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), help="Replace a prefork child after N tasks.")
@click.option(
    "--max-memory-per-child", type=click.IntRange(min=1), help="Replace a prefork child once its RSS passes N KiB."
)
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), help="Hard time limit of every task, s.")
@click.option(
    "--soft-time-limit", type=click.FloatRange(min=0, min_open=True), help="Soft time limit of every task, s."
)
@click.option(
    "-E",
    "--task-events",
    is_flag=True,
    default=None,
    help="Send task events (Flower, `rqueue events`) [default: worker_send_task_events]; heartbeats are always sent.",
)
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics of this node on this port."
)
@click.option("--metrics-address", default="127.0.0.1", show_default=True, help="The address of --metrics-port.")
@click.option(
    "-B", "--beat", "with_beat", is_flag=True, help="Also run the periodic task scheduler (safe on every worker node)."
)
@click.pass_context
def worker(
    ctx: click.Context,
    loglevel: str,
    concurrency: int | None,
    pool: str | None,
    queues: str | None,
    exclude_queues: str | None,
    hostname: str | None,
    pidfile: str | None,
    statedb: str | None,
    logfile: str | None,
    detach: bool,
    uid: str | None,
    gid: str | None,
    umask: str | None,
    workdir: str | None,
    allow_eviction: bool,
    prefetch_multiplier: int | None,
    optimization: str | None,
    disable_prefetch: bool,
    autoscale: str | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    time_limit: float | None,
    soft_time_limit: float | None,
    with_beat: bool,
    task_events: bool | None,
    metrics_port: int | None,
    metrics_address: str,
) -> None:
    """Start a worker that runs the app's tasks."""
    from rqueue.nodenames import has_process_index, log_per_process  # noqa: PLC0415
    from rqueue.worker import Worker, setup_logging  # noqa: PLC0415 - only the worker command loads the worker

    log_template = logfile
    node = node_name(hostname or "rqueue@%h")
    logfile, pidfile = _become_worker_process(node, logfile, pidfile, detach, uid, gid, umask, workdir)
    app = get_app(ctx)
    try:
        setup_logging(loglevel, logfile, bool(app.conf.worker_hijack_root_logger))
        if log_template and has_process_index(log_template):
            log_per_process(os.path.abspath(log_template), node)
        if prefetch_multiplier:
            app.conf.worker_prefetch_multiplier = prefetch_multiplier
        if optimization == "fair" or disable_prefetch:
            app.conf.worker_prefetch_multiplier = 1
        if autoscale is not None:
            app.conf.worker_autoscale = autoscale
        if max_tasks_per_child is not None:
            app.conf.worker_max_tasks_per_child = max_tasks_per_child
        if max_memory_per_child is not None:
            app.conf.worker_max_memory_per_child = max_memory_per_child
        if time_limit is not None:
            app.conf.task_time_limit = time_limit
        if soft_time_limit is not None:
            app.conf.task_soft_time_limit = soft_time_limit
        if allow_eviction:
            app.conf.broker_allow_eviction = True
        queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
        if exclude_queues:
            excluded = {q.strip() for q in exclude_queues.split(",")}
            queue_list = [q for q in (queue_list or default_queues(app.conf)) if q not in excluded]
            if not queue_list:
                fail(f"-X {exclude_queues} leaves no queue to consume")
        code = Worker(
            app,
            queues=queue_list,
            concurrency=concurrency,
            pool=pool,
            hostname=node,
            pidfile=pidfile,
            statedb=statedb,
            redirect_stdouts=logfile is not None,
            beat=with_beat,
            task_events=task_events or None,
            metrics_port=metrics_port,
            metrics_address=metrics_address,
        ).start()
    except RQueueError as exc:
        fail(str(exc), 1)
    sys.exit(code)


def _become_worker_process(
    node: str,
    logfile: str | None,
    pidfile: str | None,
    detach: bool,
    uid: str | None,
    gid: str | None,
    umask: str | None,
    workdir: str | None,
) -> tuple[str | None, str | None]:
    """Expand ``%p``/``%n``/``%i``... in the log file and pidfile names (the main process's) and,
    with any daemon option, set the process up (``rqueue.worker.daemon``); the file names to use."""
    from rqueue.nodenames import node_format  # noqa: PLC0415
    from rqueue.worker.daemon import Daemon  # noqa: PLC0415

    try:
        logfile = node_format(logfile, node, index=0, what="--logfile") if logfile else None
        pidfile = node_format(pidfile, node, index=0, what="--pidfile") if pidfile else None
        daemon = Daemon(detach, logfile, pidfile, uid, gid, umask, workdir)
    except RQueueError as exc:
        fail(str(exc))
    if not (detach or uid or gid or umask is not None or workdir):
        return logfile, pidfile
    try:
        daemon.enter()  # with --detach, only the detached worker comes back
    except (RQueueError, OSError) as exc:
        fail(str(exc), 1)
    return daemon.logfile, daemon.pidfile


@cli.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("-a", "--args", "args_json", default="[]", help="Positional arguments as a JSON list.")
@click.option("-k", "--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object.")
@click.option("--countdown", type=float, help="Run no earlier than this many seconds from now.")
@click.option("--expires", type=float, help="Revoke if not started within this many seconds.")
@click.option("-Q", "--queue", help="Send to this queue.")
@click.option("--priority", type=click.IntRange(0, 9), help="0 (first) to 9 (last).")
@click.option("--serializer", help="json (default) or msgpack.")
@click.pass_context
def call(
    ctx: click.Context,
    name: str,
    args_json: str,
    kwargs_json: str,
    countdown: float | None,
    expires: float | None,
    queue: str | None,
    priority: int | None,
    serializer: str | None,
) -> None:
    """Send task NAME; prints its id."""
    args = _json_arg("--args", args_json, list)
    kwargs = _json_arg("--kwargs", kwargs_json, dict)
    app = get_app(ctx)
    try:
        result = app.send_task(
            name,
            args,
            kwargs,
            countdown=countdown,
            expires=expires,
            queue=queue,
            priority=priority,
            serializer=serializer,
        )
    except RQueueError as exc:
        fail(str(exc), 1)
    click.echo(result.id)


@cli.command(context_settings=CONTEXT)
@click.argument("task_id")
@click.option("--timeout", type=float, help="Wait this many seconds for the result (default: do not wait).")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show the traceback of a failed task.")
@click.pass_context
def result(ctx: click.Context, task_id: str, timeout: float | None, show_traceback: bool) -> None:
    """Print the state and result of TASK_ID."""
    app = get_app(ctx)
    res = app.AsyncResult(task_id)
    try:
        value = res.get(timeout=timeout, propagate=False) if timeout is not None else res.result
        state = res.state
    except RQueueError as exc:
        fail(str(exc), 1)
    if state == "SUCCESS":
        click.echo(repr(value))
    elif isinstance(value, BaseException):
        click.echo(f"{state}: {type(value).__name__}: {value}")
        if show_traceback and res.traceback:
            click.echo(res.traceback.rstrip())
        sys.exit(1)
    else:
        click.echo(state)


def confirm(question: str) -> None:
    """Ask ``question`` on a terminal (abort unless yes); with no terminal to ask on, refuse:
    deleting messages is never assumed to be wanted (``-f`` says it is)."""
    if not sys.stdin.isatty():
        fail(f"{question} Not without confirmation, and stdin is not a terminal: pass -f to go ahead", 1)
    click.confirm(question, abort=True)


@cli.command(context_settings=CONTEXT)
@click.option("-Q", "--queues", help="Comma-separated queues [default: the default queue].")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, queues: str | None, force: bool) -> None:
    """Delete every waiting message of the queues (running ones are kept)."""
    app = get_app(ctx)
    names = [q.strip() for q in queues.split(",")] if queues else default_queues(app.conf)
    if not force:
        confirm(f"Delete all waiting messages in {', '.join(names)}?")
    try:
        count = app.broker.purge(names)
    except RQueueError as exc:
        fail(str(exc), 1)
    click.echo(
        f"Purged {count} message{'s' if count != 1 else ''} from {len(names)} known task queue"
        f"{'s' if len(names) != 1 else ''}."
    )


@cli.group(context_settings=CONTEXT)
def dlq() -> None:
    """Inspect and replay dead-lettered messages (undecodable, unregistered, poison ...)."""


def _dlq_queue(ctx: click.Context, queue: str | None) -> tuple[DeadLetterAdmin, str]:
    """The broker's dead letters, and the queue to work on."""
    app = get_app(ctx)
    try:
        store = require(app.broker, DeadLetterAdmin, "rqueue dlq")
    except RQueueError as exc:
        fail(str(exc), 1)
    return store, queue or app.conf.task_default_queue


@dlq.command(name="list", context_settings=CONTEXT)
@click.option("-Q", "--queue", help="The queue [default: task_default_queue].")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_context
def dlq_list(ctx: click.Context, queue: str | None, limit: int) -> None:
    """List dead letters, oldest first: id, reason, deliveries, when, task."""
    store, name = _dlq_queue(ctx, queue)
    try:
        dead = store.dead_letters(name, limit)
    except RQueueError as exc:
        fail(str(exc), 1)
    for d in dead:
        when = datetime.fromtimestamp(d.dead_at_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{d.id}\t{d.reason}\t{d.deliveries}\t{when}Z\t{d.task()}")
    click.echo(f"{len(dead)} dead letter{'s' if len(dead) != 1 else ''} in {name}.", err=True)


@dlq.command(name="show", context_settings=CONTEXT)
@click.argument("dead_id")
@click.option("-Q", "--queue", help="The queue [default: task_default_queue].")
@click.pass_context
def dlq_show(ctx: click.Context, dead_id: str, queue: str | None) -> None:
    """Show one dead letter: reason, error, deliveries and the original message."""
    store, name = _dlq_queue(ctx, queue)
    try:
        found = [d for d in store.dead_letters(name, 1_000_000) if d.id == dead_id]
    except RQueueError as exc:
        fail(str(exc), 1)
    if not found:
        fail(f"no dead letter {dead_id!r} in queue {name!r} (see: rqueue -A ... dlq list -Q {name})", 1)
    d = found[0]
    error = printable(str(d.error))
    click.echo(f"id:          {d.id}\nqueue:       {printable(d.queue)}\nreason:      {d.reason}\nerror:       {error}")
    click.echo(f"deliveries:  {d.deliveries}\ntask:        {d.task()}\nmessage:")
    click.echo("\n".join(printable(line) for line in d.payload.decode("utf-8", "replace")[:10_000].splitlines()))


@dlq.command(name="requeue", context_settings=CONTEXT)
@click.argument("dead_ids", nargs=-1)
@click.option("-Q", "--queue", help="The queue [default: task_default_queue].")
@click.option("--all", "requeue_all", is_flag=True, help="Requeue every dead letter of the queue.")
@click.pass_context
def dlq_requeue(ctx: click.Context, dead_ids: tuple[str, ...], queue: str | None, requeue_all: bool) -> None:
    """Put dead letters back in their queue, to be delivered again."""
    if not dead_ids and not requeue_all:
        fail("name the dead letters to requeue (ids from dlq list), or pass --all")
    store, name = _dlq_queue(ctx, queue)
    try:
        ids = [d.id for d in store.dead_letters(name, 1_000_000)] if requeue_all else list(dead_ids)
        count = store.requeue_dead(name, ids)
    except RQueueError as exc:
        fail(str(exc), 1)
    click.echo(f"Requeued {count} dead letter{'s' if count != 1 else ''} to {name}.")


@dlq.command(name="purge", context_settings=CONTEXT)
@click.option("-Q", "--queue", help="The queue [default: task_default_queue].")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def dlq_purge(ctx: click.Context, queue: str | None, force: bool) -> None:
    """Delete every dead letter of the queue."""
    store, name = _dlq_queue(ctx, queue)
    if not force:
        confirm(f"Delete all dead letters of {name}?")
    try:
        count = store.purge_dead(name)
    except RQueueError as exc:
        fail(str(exc), 1)
    click.echo(f"Purged {count} dead letter{'s' if count != 1 else ''} from {name}.")


@cli.command(context_settings=CONTEXT)
@click.option(
    "-b",
    "--broker",
    metavar="URL",
    help="Broker to measure [default: a temporary SQLite file in a temporary directory, removed afterwards; "
    "never your rqueue.sqlite3].",
)
@click.option("--backend", metavar="URL", help="Result backend [default: the broker's].")
@click.option(
    "-n", "--tasks", type=click.IntRange(min=1), default=10_000, show_default=True, help="Tasks per scenario."
)
@click.option("-w", "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Per worker [default: CPUs; solo: 1].")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork", show_default=True)
@click.option(
    "--payload-bytes", type=click.IntRange(0, 512 * 1024), default=0, show_default=True, help="Argument size."
)
@click.option("--results/--no-results", default=False, show_default=True, help="Store results in drain/enqueue.")
@click.option(
    "-s",
    "--scenario",
    type=click.Choice(["drain", "enqueue", "roundtrip", "all"]),
    default="all",
    show_default=True,
    help="What to measure.",
)
@click.option("--roundtrips", type=click.IntRange(min=1), help="Round trips [default: min(tasks, 1000)].")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1), help="Passed to the workers.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also draw a PNG (rqueue[plot]).")
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal].")
def bench(
    broker: str | None,
    backend: str | None,
    tasks: int,
    workers: int,
    concurrency: int | None,
    pool: str,
    payload_bytes: int,
    results: bool,
    scenario: str,
    roundtrips: int | None,
    prefetch_multiplier: int | None,
    timeout_s: float,
    json_path: str | None,
    plot_path: str | None,
    progress: bool | None,
) -> None:
    """Measure throughput and latency with workers of its own (rqueue -A rqueue.bench.tasks worker).

    Uses its own queue (rqueue-bench-<run id>; on Redis also that key prefix), deletes what it put in
    the broker, and stops its workers when done or interrupted (Ctrl-C).
    """
    from rqueue.bench import BenchOptions  # noqa: PLC0415 - only the bench command loads the bench
    from rqueue.bench.command import run  # noqa: PLC0415 - only the bench command loads the bench

    options = BenchOptions(
        broker=broker,
        backend=backend,
        tasks=tasks,
        workers=workers,
        concurrency=concurrency,
        pool=pool,
        payload_bytes=payload_bytes,
        results=results,
        scenario=scenario,
        roundtrips=roundtrips,
        prefetch_multiplier=prefetch_multiplier,
        timeout_s=timeout_s,
        progress=progress,
    )
    try:
        code = run(options, json_path, plot_path, click.echo)
    except RQueueError as exc:
        fail(str(exc), 1)
    sys.exit(code)


def _json_arg(option: str, text: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option}: not valid JSON ({exc.msg}): {text!r}")
    if not isinstance(value, kind):
        fail(f"{option}: expected a JSON {'list' if kind is list else 'object'}, got {text!r}")
    return value


def _add_subcommands() -> None:
    """Commands kept in their own modules (they import this one for the shared helpers)."""
    from rqueue.cli.control import control, inspect, status  # noqa: PLC0415 - it imports this module's helpers

    cli.add_command(control)
    cli.add_command(inspect)
    cli.add_command(status)
    from rqueue.cli.ops import dashboard, events, report, shell  # noqa: PLC0415 - it imports this module's helpers

    cli.add_command(dashboard)
    cli.add_command(events)
    cli.add_command(report)
    cli.add_command(shell)
    from rqueue.cli.beat import beat  # noqa: PLC0415 - it imports this module's helpers

    cli.add_command(beat)


_add_subcommands()


def main() -> None:
    """Entry point of the ``rqueue`` script."""
    cli(prog_name="rqueue")
