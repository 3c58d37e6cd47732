"""The worker: banner, logging, pidfile, signals, and the pool that runs tasks."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from rqueue import __version__, signals
from rqueue.brokers.base import LeaseRecovery, capability
from rqueue.config import default_queues, parse_autoscale
from rqueue.control import revocation_expiry_ms
from rqueue.exceptions import ConfigurationError
from rqueue.urls import describe
from rqueue.utils.log import TASK_LOGGER_NAME, EscapeUntrusted, redirect_stdouts
from rqueue.worker import failpoint
from rqueue.worker.consumer import Consumer
from rqueue.worker.control import ControlServer, InProcess
from rqueue.worker.events import EventSwitch, Heart
from rqueue.worker.hooks import Hooks, WorkerHook
from rqueue.worker.metrics import WorkerMetrics
from rqueue.worker.pool import PreforkPool, install_shutdown_handlers
from rqueue.worker.ratelimit import RateLimits
from rqueue.worker.state import Revoked
from rqueue.worker.timelimit import install_soft_limit_handler, main_guard_target

if TYPE_CHECKING:
    from rqueue.app import App
    from rqueue.beat import Beat

POOLS = ("prefork", "threads", "solo", "asyncio")
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
logger = logging.getLogger("rqueue.worker")


class PidfileError(ConfigurationError):
    """The pidfile cannot be used: not writable, or held by a live worker."""


class Worker:
    """A worker node: consumes queues with a pool of processes or threads until told to stop.

    Args:
        app: The application whose tasks run here.
        queues: Queue names to consume (default: ``task_queues`` or the default queue).
        concurrency: Child processes (prefork), threads, or tasks running at once on the event loop
            (asyncio); default ``worker_concurrency``, else the CPU count (asyncio: 100).
        pool: ``prefork``, ``threads``, ``solo`` or ``asyncio``; None (the default) chooses asyncio
            when every task of the app is an ``async def``, else prefork (threads without fork()).
        hostname: Node name, ``name@host`` (default ``rqueue@<host>``).
        pidfile: Write the pid here; refuse to start when a live worker holds it.
        statedb: Keep the revoked task ids in this file across restarts.
        hooks: Called at the worker's hook points in every process (``rqueue.worker.hooks``).
        beat: Also run the periodic task scheduler in a thread of this process (``-B``); beats
            on every node elect one leader, so each run is sent once.
        metrics_port: Serve Prometheus metrics of the node on this port (``rqueue.worker.metrics``).
        metrics_address: The address the metrics endpoint binds to.
        task_events: Send task events (``-E``; default ``worker_send_task_events``). Heartbeats
            are sent either way; ``enable_events``/``disable_events`` switch them at run time.

    Attributes:
        rate_limits: The node's task rate limits, shared by every process and thread of the
            worker; ``worker.rate_limits.set("tasks.add", "10/m")`` changes one at once.

    Raises:
        RateLimitError: a task's ``rate_limit`` (decorator, annotations or default) is invalid.
    """

    def __init__(  # noqa: PLR0913 - the worker options, each named
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        hostname: str | None = None,
        pidfile: str | None = None,
        statedb: str | None = None,
        hooks: Sequence[WorkerHook] = (),
        redirect_stdouts: bool = False,
        beat: bool = False,
        metrics_port: int | None = None,
        metrics_address: str = "127.0.0.1",
        task_events: bool | None = None,
    ) -> None:
        if pool is not None and pool not in POOLS:
            raise ConfigurationError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        if pool == "prefork" and not hasattr(os, "fork"):
            raise ConfigurationError("the prefork pool needs fork(), which this platform lacks; use --pool threads")
        self.app = app
        app.finalize()  # imports, include, autodiscovered modules: every task registered from here on
        conf = app.conf
        #: Why the pool was chosen automatically (logged at start), when it was.
        self.pool_choice: str | None = None
        if pool is None:
            pool, self.pool_choice = choose_pool(app)
        self.queues = list(queues or default_queues(conf))
        self.pool = pool
        #: ``worker_autoscale`` (``--autoscale``) as (max, min): the prefork pool starts at min.
        self.autoscale = parse_autoscale("worker_autoscale", conf.worker_autoscale) if pool == "prefork" else None
        if self.autoscale is not None:
            self.concurrency = self.autoscale[1]
        else:
            self.concurrency = (
                1 if pool == "solo" else int(concurrency or conf.worker_concurrency or _default_concurrency(pool))
            )
        self.hostname = hostname or f"rqueue@{socket.gethostname()}"
        self.pidfile = pidfile
        self.statedb = statedb
        #: Log ``print()`` output after the banner (a worker logging to a file: it would be lost).
        self.redirect_stdouts = redirect_stdouts
        #: Made before the prefork pool forks: the children write where the endpoint reads.
        self.metrics = (
            WorkerMetrics(app, self.queues, self.hostname, metrics_port, metrics_address)
            if metrics_port is not None
            else None
        )
        if task_events is None:
            task_events = bool(conf.worker_send_task_events)
        #: Whether the node sends task events now; made here, before the prefork pool forks, so
        #: the control commands that switch it reach every child.
        self.events = EventSwitch(task_events)
        self.hooks = Hooks([*hooks, self.metrics] if self.metrics is not None else hooks, events=self.events)
        self.heart: Heart | None = None
        #: Set once the worker takes work (``worker_ready``); tests running a worker in a thread wait on it.
        self.ready = threading.Event()
        self.consumer: Consumer | None = None
        # Made here, before the prefork pool forks, so its shared memory reaches every child.
        self.rate_limits = RateLimits(app)
        # Checked now (a bad entry stops the worker at start); its thread starts once the pool has
        # forked its children (``_ready``), and it uses a broker connection of its own.
        self.beat: Beat | None = None
        if beat:
            from rqueue.beat import Beat  # noqa: PLC0415 - only -B loads the scheduler

            self.beat = Beat(app)

    def banner(self) -> str:
        """What the worker prints at start: version, app, broker and backend (passwords masked), tasks."""
        app = self.app
        backend = app.backend_url
        tasks = "\n".join(f"  . {name}" for name in sorted(app.tasks)) or "  (none)"
        queues = "\n".join(f".> {q}" for q in self.queues)
        return (
            f"\n -------------- {self.hostname} v{__version__}\n"
            f"--- ***** -----\n"
            f"[config]\n"
            f".> app:         {app.main or '__main__'}\n"
            f".> transport:   {describe(app.broker_url)}\n"
            f".> results:     {describe(backend) if backend else 'disabled://'}\n"
            f".> concurrency: {self._concurrency_text()}\n"
            f"{self._beat_text()}"
            f"\n[queues]\n{queues}\n"
            f"\n[tasks]\n{tasks}\n"
        )

    def _beat_text(self) -> str:
        """The banner's beat line with ``-B``: the schedule's size and lease."""
        if self.beat is None:
            return ""
        count = len(self.beat.entries)
        return (
            f".> beat:        {count} periodic task{'s' if count != 1 else ''}, lease {self.beat.lease_ms / 1000:g}s\n"
        )

    def _concurrency_text(self) -> str:
        if self.autoscale is not None:
            return f"{self.autoscale[1]}-{self.autoscale[0]} ({self.pool}, autoscale)"
        return f"{self.concurrency} ({self.pool})"

    def start(self, out: TextIO | None = None) -> int:
        """Run until shutdown; returns the process exit code."""
        failpoint.check()
        self._take_pidfile()
        signals.worker_init.send(sender=self)
        self.app.broker.prepare_consumer(self.queues, bool(self.app.conf.broker_allow_eviction))
        self.revoked = Revoked(self.app.broker, self.statedb)
        try:
            print(self.banner(), file=out or sys.stdout, flush=True)
            if self.redirect_stdouts and self.app.conf.worker_redirect_stdouts:
                try:
                    redirect_stdouts(self.app.conf.worker_redirect_stdouts_level)
                except ValueError as exc:
                    raise ConfigurationError(str(exc)) from None
            if self.pool_choice is not None:
                logger.info("%s", self.pool_choice)
            self._warn_unenforced_options()
            self._log_rate_limits()
            if self.metrics is not None:
                self.metrics.serve()
            if self.pool == "prefork":
                pool = PreforkPool(
                    self.app, self.queues, self.hostname, self.concurrency, self.revoked, self.rate_limits, self.hooks
                )
                if self.autoscale is not None:
                    pool.autoscale = self.autoscale
                if self.metrics is not None:
                    pool.on_child_exit.append(self.metrics.child_exited)
                control = ControlServer(self, pool)
                control.listen()
                self.heart = control.heart = Heart(self.app.broker, self.hostname, pool.counts)

                def on_signal(signum: int) -> None:
                    self._announce_shutdown(signum, pool.shutdown + 1)
                    pool.signal(signum)

                install_shutdown_handlers(on_signal)
                return pool.run(on_ready=self._ready, on_idle=control.serve)
            return self._run_in_process(self.revoked)
        finally:
            if self.beat is not None:
                self.beat.stop()
            if self.metrics is not None:
                self.metrics.close()
            if self.heart is not None:
                self._stop_heart(self.heart)
            self.revoked.save()
            self._release_pidfile()
            signals.worker_shutdown.send(sender=self)

    def _ready(self) -> None:
        if self.beat is not None:
            self.beat.start_thread()
        if self.heart is not None:
            try:
                self.heart.start()
            except Exception:  # monitoring must not keep the node from working
                logger.exception("Could not send the worker-online event")
        logger.info("%s ready.", self.hostname)
        self.ready.set()
        signals.worker_ready.send(sender=self)

    def reload(self) -> None:
        """Celery's test workers reload the app to see tasks registered after they started. An rqueue
        worker looks tasks up in the app's registry as each message arrives, so a worker running in
        this process sees them already; this only imports modules added to ``include`` since."""
        self.app.import_default_modules()

    def stop(self) -> None:
        """Warm shutdown of a worker running in this process (solo or threads pool, e.g. in a thread
        of a test): running tasks finish, prefetched messages go back. ``start()`` then returns."""
        if self.consumer is None:
            raise RuntimeError("stop() stops a solo or threads worker started in this process")
        self.consumer.stop()

    def _announce_shutdown(self, signum: int, count: int) -> None:
        """``worker_shutting_down`` on the first signal (warm) and the second (cold); an embedded
        beat stops at once and gives its lease up (another node's beat takes over)."""
        if self.beat is not None:
            self.beat.stop(timeout_s=0)
        if count <= 2:
            how = "Warm" if count == 1 else "Cold"
            signals.worker_shutting_down.send(sender=self.hostname, sig=_signal_name(signum), how=how, exitcode=0)

    def revoke_locally(self, task_ids: list[str]) -> None:
        """Revoke at once in this process (remote control); children are told by the pool."""
        self.revoked.add(task_ids, revocation_expiry_ms(self.app.conf))

    def revoked_ids(self) -> list[str]:
        """The unexpired revoked task ids this node knows."""
        self.revoked.refresh()
        return list(self.revoked.ids)

    def _run_in_process(self, revoked: Revoked) -> int:  # noqa: PLR0915 - the signals of one process, inline
        consumer: Consumer
        if self.pool == "asyncio":
            from rqueue.worker.aio import AsyncioConsumer, AsyncProcesses  # noqa: PLC0415 - only -P asyncio

            aio = consumer = AsyncioConsumer(
                self.app,
                self.queues,
                self.hostname,
                revoked,
                self.concurrency,
                rate_limits=self.rate_limits,
                hooks=self.hooks,
            )
            processes: InProcess = AsyncProcesses(aio)
        else:
            aio = None
            threads = self.concurrency if self.pool == "threads" else 1
            consumer = Consumer(
                self.app,
                self.queues,
                self.hostname,
                revoked,
                threads=threads,
                rate_limits=self.rate_limits,
                hooks=self.hooks,
            )
            processes = InProcess(consumer)
        received = 0

        def finish_cold() -> None:
            # Stop fetching first: a fetching thread would take back at once what is returned
            # (an idle one is woken by it), and then die with it, holding it until it expires.
            consumer.transport.stop()
            recovery = capability(self.app.broker, LeaseRecovery)
            if recovery is not None:  # else the broker takes them back when this process's connections drop
                recovery.requeue_owner(consumer.owner, int(self.app.conf.broker_max_deliveries))
            logging.shutdown()
            os._exit(1)

        def on_signal(signum: int) -> None:
            nonlocal received
            received += 1
            self._announce_shutdown(signum, received)
            if received == 1:
                soft_s = float(self.app.conf.worker_soft_shutdown_timeout or 0.0)
                if soft_s > 0:
                    logger.warning(
                        "Warm shutdown: running tasks have %gs to finish (worker_soft_shutdown_timeout), "
                        "then their messages go back to the queue",
                        soft_s,
                    )
                    timer = threading.Timer(soft_s, on_signal, args=(signum,))
                    timer.daemon = True  # the process ends without it once the tasks finish
                    timer.start()
                else:
                    logger.warning("Warm shutdown: waiting for running tasks (signal again for a cold shutdown)")
                consumer.stop()
            elif received == 2 and aio is not None:
                logger.warning("Cold shutdown: running tasks are cancelled; their messages go back to the queue")
                aio.cold_stop(finish_cold)  # cancelled first: their finally blocks run, then the process ends
            else:
                logger.warning("Cold shutdown: running tasks stop; their messages go back to the queue")
                finish_cold()

        if threading.current_thread() is threading.main_thread():
            if aio is not None:  # handled as callbacks of its event loop, not between two bytecodes of it
                aio.on_signal = on_signal
            else:
                install_shutdown_handlers(on_signal)
                install_soft_limit_handler(main_guard_target(lambda: consumer.main_guard))
        self.consumer = consumer
        control = ControlServer(self, processes)
        control.listen()
        self.heart = control.heart = Heart(self.app.broker, self.hostname, processes.counts)
        threading.Thread(target=control.serve_until, args=(lambda: consumer.stopping,), daemon=True).start()
        if self.pool == "solo":  # Celery's solo pool announces its one process too
            signals.worker_process_init.send(sender=None)
        self._ready()
        consumer.run()
        logger.info("Worker %s stopped.", self.hostname)
        return 0 if consumer.failure is None else 1

    def _stop_heart(self, heart: Heart) -> None:
        """``worker-offline``, once the node's tasks are done (their last events sent first)."""
        try:
            heart.stop()
        except Exception:
            logger.exception("Could not send the worker-offline event")

    def _warn_unenforced_options(self) -> None:
        """Say so when tasks set hard time limits this pool cannot enforce, rather than ignore them quietly."""
        if self.pool != "prefork" and self.app.conf.worker_autoscale is not None:
            logger.warning(
                "worker_autoscale (--autoscale) applies to the prefork pool only; the %s pool has a fixed size",
                self.pool,
            )
        if self.pool == "asyncio":
            self._warn_unenforced_async()
            return
        hard_unenforced = self.pool != "prefork"
        default_hard = self.app.conf.task_time_limit
        if hard_unenforced and default_hard is not None:
            logger.warning(
                "task_time_limit is set, but the %s pool does not enforce hard time limits (only prefork does); "
                "soft time limits are enforced",
                self.pool,
            )
        for name, task in sorted(self.app.tasks.items()):
            hard = task.option("time_limit")
            if hard_unenforced and hard is not None and hard != default_hard:
                logger.warning(
                    "Task %s sets time_limit, which the %s pool does not enforce (only prefork does); "
                    "its soft_time_limit is enforced",
                    name,
                    self.pool,
                )

    def _warn_unenforced_async(self) -> None:
        """The asyncio pool enforces hard time limits on coroutines only: say so for sync tasks."""
        from rqueue.worker.aio import is_coroutine_task  # noqa: PLC0415 - only -P asyncio

        default_hard = self.app.conf.task_time_limit
        for name, task in sorted(self.app.tasks.items()):
            if name.startswith("celery.") or is_coroutine_task(task):
                continue
            if task.option("time_limit") is not None:
                logger.warning(
                    "Task %s is a sync task with a hard time limit%s, which the asyncio pool does not enforce on "
                    "sync tasks (they run in threads); its soft_time_limit is enforced",
                    name,
                    " (task_time_limit)" if task.option("time_limit") == default_hard else "",
                )

    def _log_rate_limits(self) -> None:
        limits = self.rate_limits.limits()
        if not limits:
            return
        if not self.rate_limits.enabled:
            logger.info("Rate limits are disabled (worker_disable_rate_limits): %d task(s) run unlimited", len(limits))
            return
        for name, rate in sorted(limits.items()):
            logger.info("Task %s: rate limit %g/s for this worker node", name, rate)

    # -- pidfile ----------------------------------------------------------------------------------------

    def _take_pidfile(self) -> None:
        if self.pidfile:
            self.pidfile = take_pidfile(self.pidfile)

    def _release_pidfile(self) -> None:
        if self.pidfile:
            release_pidfile(self.pidfile)


def choose_pool(app: App) -> tuple[str, str | None]:
    """The pool of a worker started without one: ``asyncio`` when every task the app registered
    (Celery's built-in ``celery.*`` tasks aside) is an ``async def``, else ``prefork`` (``threads``
    where there is no fork()). Returns the pool and, for asyncio, the line the worker logs."""
    from rqueue.worker.aio import is_coroutine_task  # noqa: PLC0415 - asyncio loaded only here

    own = [task for name, task in app.tasks.items() if not name.startswith("celery.")]
    if own and all(is_coroutine_task(task) for task in own):
        return "asyncio", f"Every task ({len(own)}) is an async def: using the asyncio pool (-P asyncio)"
    return ("prefork" if hasattr(os, "fork") else "threads"), None


def _default_concurrency(pool: str) -> int:
    if pool == "asyncio":
        from rqueue.worker.aio import DEFAULT_CONCURRENCY  # noqa: PLC0415

        return DEFAULT_CONCURRENCY
    return os.cpu_count() or 1


def take_pidfile(path: str) -> str:
    """Create the pidfile exclusively, never through a symbolic link (a worker run as root must
    not be made to overwrite another file); a stale one (its worker is gone) is removed first.
    One already holding this process's pid (made before privileges were dropped) is kept.
    Returns its absolute path."""
    path = os.path.abspath(path)
    for _ in range(3):
        other = _read_pidfile(path)
        if other == os.getpid():
            return path
        if other and _alive(other):
            raise PidfileError(f"pidfile {path} is held by a running worker (pid {other}); not starting a second one")
        if other is not None:  # stale (or unreadable): remove the entry itself, never a link's target
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue  # another worker created it meanwhile: look again
        except OSError as exc:
            raise PidfileError(f"pidfile {path} is not writable: {exc.strerror}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return path
    raise PidfileError(f"pidfile {path} keeps being created by another process; not starting")


def release_pidfile(path: str) -> None:
    """Remove the pidfile if it holds this process's pid (quietly: the worker is stopping)."""
    with contextlib.suppress(OSError, PidfileError):
        if _read_pidfile(path) == os.getpid():
            os.unlink(path)


def _read_pidfile(path: str) -> int | None:
    """The pid in a pidfile: None when there is none, 0 when it holds no pid; PidfileError for a
    symbolic link (refused: it could point anywhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise PidfileError(f"pidfile {path} is a symbolic link; refusing to use it (remove it first)") from None
        raise PidfileError(f"pidfile {path} is not readable: {exc.strerror}") from None
    with os.fdopen(fd) as fh:
        try:
            return int(fh.read(32).strip() or "0")
        except ValueError:
            return 0


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def setup_logging(loglevel: str, logfile: str | None, hijack_root_logger: bool = True) -> None:
    """stdlib logging for the worker: one format, to stderr or a file.

    A receiver of the ``setup_logging`` signal replaces this setup entirely (Celery's rule); with
    ``hijack_root_logger`` False the root logger keeps the handlers it has. The
    ``after_setup_logger`` and ``after_setup_task_logger`` receivers may then adjust the loggers.
    """
    level = logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise ConfigurationError(f"unknown log level {loglevel!r}; use debug, info, warning, error or critical")
    details = {"loglevel": level, "logfile": logfile, "format": LOG_FORMAT, "colorize": False}
    if signals.setup_logging:
        signals.setup_logging.send(sender=None, **details)
        return
    root = logging.getLogger()
    if hijack_root_logger or not root.handlers:
        handler: logging.Handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(EscapeUntrusted())
        root.handlers[:] = [handler]
    root.setLevel(level)
    signals.after_setup_logger.send(sender=None, logger=root, **details)
    signals.after_setup_task_logger.send(sender=None, logger=logging.getLogger(TASK_LOGGER_NAME), **details)
