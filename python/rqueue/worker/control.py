"""The worker's end of remote control: receives broadcast commands, runs them, replies.

Commands and replies use kombu's pidbox shapes (``{"method", "arguments", "destination", ...}``
in, ``{hostname: {"ok": ...} | {"error": ...} | data}`` out), so ``celery inspect``/``control`` and
``rqueue inspect``/``control`` reach the same workers on Redis. One server per node: in the
prefork supervisor, or in the worker process of the threads and solo pools.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from rqueue import __version__
from rqueue.control import duplicate_nodename_message
from rqueue.exceptions import BrokerError, ConfigurationError, DuplicateNodenameWarning, RQueueError
from rqueue.urls import describe, mask_password

if TYPE_CHECKING:
    from rqueue.brokers.base import Mailbox
    from rqueue.worker import Worker
    from rqueue.worker.consumer import Consumer
    from rqueue.worker.events import Heart

logger = logging.getLogger("rqueue.worker")

#: After the broker failed, how long the server waits before listening again.
RELISTEN_PAUSE_S = 1.0
#: While the broker stays away, how often that is said again (the retries in between log at DEBUG).
OUTAGE_REMINDER_S = 60.0
#: How long the processes of a node get to report (a child busy in a long task still answers:
#: its report thread runs beside the task).
REPORT_TIMEOUT_S = 0.5


class Processes(Protocol):
    """The processes that run a node's tasks, as remote control sees and steers them."""

    def reports(self, timeout_s: float) -> list[dict[str, Any]]:
        """One report per process: ``pid``, ``active``, ``reserved``, ``scheduled``, ``processed``."""

    def set_queues(self, queues: list[str]) -> None:
        """Consume these queues from now on."""

    def revoke(self, task_ids: list[str]) -> None:
        """Skip these tasks from now on (the broker also tells them, within about a second)."""

    def terminate(self, task_id: str, signum: int) -> bool:
        """Stop the task if it is running here; False when it is not running (or cannot be stopped)."""

    def set_time_limit(self, task_name: str, soft: float | None, hard: float | None) -> None:
        """Override a task's time limits."""

    def warm_shutdown(self) -> None:
        """Stop the node once its running tasks finish."""

    def resize(self, method: str, args: dict[str, Any]) -> str:
        """``pool_grow``, ``pool_shrink`` or ``autoscale``: the ``ok`` reply; ControlError when
        this pool cannot."""

    def size(self) -> dict[str, Any]:
        """``inspect stats``' ``pool`` entries about its size: ``max-concurrency``, ``autoscaler``."""

    def counts(self) -> tuple[int, int]:
        """``(active, processed)``: tasks running now and run since the start, cheaply (heartbeats)."""


class InProcess:
    """The one process of the threads and solo pools, steered from a thread beside its consumer."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def reports(self, timeout_s: float) -> list[dict[str, Any]]:
        return [self.consumer.report()]

    def set_queues(self, queues: list[str]) -> None:
        self.consumer.set_queues(queues)

    def revoke(self, task_ids: list[str]) -> None:
        """Nothing more to do: the worker's revoked set is this consumer's."""

    def terminate(self, task_id: str, signum: int) -> bool:
        raise ControlError(
            f"cannot terminate {task_id}: the threads and solo pools run tasks inside the worker process, "
            "where they cannot be stopped; it is flagged as revoked (the prefork pool terminates running tasks)"
        )

    def set_time_limit(self, task_name: str, soft: float | None, hard: float | None) -> None:
        raise ControlError("time limits can be changed at run time with the prefork pool only")

    def warm_shutdown(self) -> None:
        self.consumer.stop()

    def resize(self, method: str, args: dict[str, Any]) -> str:
        raise ControlError(f"{method}: the threads and solo pools have a fixed size; the prefork pool can be resized")

    def size(self) -> dict[str, Any]:
        return {"max-concurrency": self.consumer.threads}

    def counts(self) -> tuple[int, int]:
        executors = list(self.consumer.executors)
        active = sum(1 for e in executors if e.current is not None)
        return active, sum(sum(e.processed.values()) for e in executors)


class ControlError(RQueueError):
    """A command that cannot be carried out; its message is the error reply."""


class _Outage:
    """The control server's view of an unreachable broker: said once when it starts, again every
    OUTAGE_REMINDER_S while it lasts, and once when it ends (not at every retry)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.said_at = 0.0

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = self.said_at = now
            logger.warning("Remote control lost the broker (%s); listening again every %.0f s", exc, RELISTEN_PAUSE_S)
        elif now - self.said_at >= OUTAGE_REMINDER_S:
            self.said_at = now
            logger.warning("Remote control: the broker is still unreachable after %.0f s (%s)", now - self.since, exc)
        else:
            logger.debug("Remote control: the broker is still unreachable (%s)", exc)

    def over(self) -> None:
        if self.since is not None:
            logger.info("Remote control is listening again (the broker was away %.1f s)", time.monotonic() - self.since)
            self.since = None


class ControlServer:
    """Serves remote-control commands for one worker node."""

    def __init__(self, worker: Worker, processes: Processes) -> None:
        self.worker = worker
        self.app = worker.app
        self.hostname = worker.hostname
        self.processes = processes
        self.started = time.monotonic()
        self.mailbox: Mailbox | None = None
        #: The node's heartbeat, ticked on each ``serve`` (set by the worker once it has one).
        self.heart: Heart | None = None
        self._retry_at = 0.0
        self._outage = _Outage()
        self._probe: DuplicateProbe | None = None
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": lambda args: {"ok": "pong"},
            "rate_limit": self.rate_limit,
            "time_limit": self.time_limit,
            "revoke": self.revoke,
            "shutdown": self.shutdown,
            "add_consumer": self.add_consumer,
            "cancel_consumer": self.cancel_consumer,
            "active": lambda args: self._gather("active"),
            "reserved": lambda args: self._gather("reserved"),
            "scheduled": lambda args: self._gather("scheduled"),
            "registered": lambda args: sorted(self.app.tasks),
            "stats": self.stats,
            "active_queues": self.active_queues,
            "revoked": lambda args: sorted(self.worker.revoked_ids()),
            "conf": self.conf,
            "report": lambda args: {"ok": self.worker.banner()},
            "pool_grow": lambda args: {"ok": self.processes.resize("pool_grow", args)},
            "pool_shrink": lambda args: {"ok": self.processes.resize("pool_shrink", args)},
            "autoscale": lambda args: {"ok": self.processes.resize("autoscale", args)},
            "enable_events": self.enable_events,
            "disable_events": self.disable_events,
            "heartbeat": self.heartbeat,
        }

    # -- receiving ----------------------------------------------------------------------------------

    def listen(self) -> None:
        """Start receiving commands; a broker that is away now is retried by ``serve``."""
        try:
            mailbox = self.app.broker.mailbox()
            if self._probe is None:
                self._probe = DuplicateProbe(mailbox, self.hostname)
            mailbox.listen()  # after the probe's ping: this node does not hear (and answer) its own
            self.mailbox = mailbox
        except (BrokerError, OSError) as exc:
            self._broker_away(exc)
            return
        self._outage.over()

    def _broker_away(self, exc: BaseException) -> None:
        self.mailbox = None
        self._retry_at = time.monotonic() + RELISTEN_PAUSE_S
        self._outage.failed(exc)

    def serve(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for commands and carry out those addressed to this node."""
        if self.heart is not None:
            try:
                self.heart.tick()
            except Exception:  # the broker away: the heartbeat logs it; commands are served anyway
                logger.exception("Sending the heartbeat failed")
        if self.mailbox is None:
            if time.monotonic() < self._retry_at:
                time.sleep(timeout_s)
                return
            self.listen()
            if self.mailbox is None:
                return
        if self._probe is not None and not self._probe.done:
            timeout_s = max(0.0, timeout_s - self._probe.check())
        try:
            commands = self.mailbox.commands(timeout_s)
        except (BrokerError, OSError) as exc:
            self._broker_away(exc)
            return
        for command in commands:
            try:
                self.handle(command)
            except Exception:  # anyone who reaches the broker can post: nothing posted may stop the node
                logger.exception("Control message %.200r could not be handled", command)

    def serve_until(self, stopped: Callable[[], bool], poll_s: float = 0.1) -> None:
        """Serve commands until ``stopped()`` (the control thread of the threads and solo pools)."""
        while not stopped():
            self.serve(poll_s)

    def handle(self, command: Any) -> None:
        """Run one command if it is well-formed and addressed here; reply when asked to."""
        if not isinstance(command, dict) or not isinstance(command.get("method"), str):
            logger.warning("Ignoring a malformed control message: %.200r", command)
            return
        if not self._addressed_here(command):
            return
        method = command["method"]
        arguments = command.get("arguments") or {}
        reply = self.dispatch(method, arguments if isinstance(arguments, dict) else {})
        reply_to, ticket = command.get("reply_to"), command.get("ticket")
        if isinstance(reply_to, dict) and ticket and self.mailbox is not None:
            try:
                self.mailbox.reply(reply_to, str(ticket), {self.hostname: reply})
            except (BrokerError, OSError, KeyError, TypeError) as exc:
                logger.warning("Could not reply to control command %s: %s", method, exc)

    def dispatch(self, method: str, arguments: dict[str, Any]) -> Any:
        """The reply to one command: its data, ``{"ok": ...}``, or ``{"error": ...}``."""
        handler = self.handlers.get(method)
        if handler is None:
            return {"error": f"unknown command {method!r}"}
        try:
            return handler(arguments)
        except (ControlError, ConfigurationError) as exc:
            return {"error": str(exc)}
        except Exception as exc:  # a bug here must not stop the worker; the client hears of it
            logger.exception("Control command %s failed", method)
            return {"error": mask_password(f"{type(exc).__name__}: {exc}")}

    def _addressed_here(self, command: dict[str, Any]) -> bool:
        destination = command.get("destination")
        if destination:
            return isinstance(destination, (list, tuple)) and self.hostname in destination
        pattern, matcher = command.get("pattern"), command.get("matcher")
        if pattern:
            if matcher == "pcre":
                try:
                    return re.search(str(pattern), self.hostname) is not None
                except re.error:
                    return False
            return fnmatch.fnmatchcase(self.hostname, str(pattern))
        return True

    # -- control ------------------------------------------------------------------------------------

    def rate_limit(self, args: dict[str, Any]) -> dict[str, str]:
        name = str(args.get("task_name", ""))
        self._task(name)
        rate = args.get("rate_limit")
        self.worker.rate_limits.set(name, rate)
        if self.worker.rate_limits.get(name) is None:
            logger.info("Rate limit of tasks of type %s disabled", name)
            return {"ok": "rate limit disabled successfully"}
        logger.info("New rate limit for tasks of type %s: %s", name, rate)
        return {"ok": "new rate limit set successfully"}

    def time_limit(self, args: dict[str, Any]) -> dict[str, str]:
        name = str(args.get("task_name", ""))
        self._task(name)
        soft, hard = _seconds(args.get("soft"), "soft"), _seconds(args.get("hard"), "hard")
        if soft is not None and hard is not None and soft >= hard:
            raise ControlError(f"the soft time limit ({soft} s) must be below the hard one ({hard} s)")
        self.processes.set_time_limit(name, soft, hard)
        logger.info("New time limits for tasks of type %s: soft=%s hard=%s", name, soft, hard)
        return {"ok": "time limits set successfully"}

    def revoke(self, args: dict[str, Any]) -> dict[str, str]:
        raw = args.get("task_id")
        ids = [raw] if isinstance(raw, str) else [str(i) for i in raw or []]
        if not ids:
            raise ControlError("revoke needs a task id")
        self.worker.revoke_locally(ids)
        self.processes.revoke(ids)
        if not args.get("terminate"):
            return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}
        signum = _signal(args.get("signal"))
        stopped = [task_id for task_id in ids if self.processes.terminate(task_id, signum)]
        return {"ok": f"tasks {', '.join(ids)} flagged as revoked; terminated: {', '.join(stopped) or 'none running'}"}

    def shutdown(self, args: dict[str, Any]) -> dict[str, str]:
        logger.warning("Got shutdown from remote control")
        self.processes.warm_shutdown()
        return {"ok": "shutdown signal sent"}

    def add_consumer(self, args: dict[str, Any]) -> dict[str, str]:
        queue = _queue_name(args)
        if queue in self.worker.queues:
            return {"ok": f"already consuming from {queue!r}"}
        self.app.broker.prepare_consumer([queue], bool(self.app.conf.broker_allow_eviction))
        self.worker.queues.append(queue)
        self.processes.set_queues(list(self.worker.queues))
        logger.info("Started consuming from %s", queue)
        return {"ok": f"add consumer {queue}"}

    def cancel_consumer(self, args: dict[str, Any]) -> dict[str, str]:
        queue = _queue_name(args)
        if queue not in self.worker.queues:
            raise ControlError(f"not consuming from {queue!r}")
        if len(self.worker.queues) == 1:
            raise ControlError(f"{queue!r} is the only queue this worker consumes; use shutdown to stop it")
        self.worker.queues.remove(queue)
        self.processes.set_queues(list(self.worker.queues))
        logger.info("Stopped consuming from %s", queue)
        return {"ok": f"no longer consuming from {queue}"}

    # -- events -------------------------------------------------------------------------------------

    def enable_events(self, args: dict[str, Any]) -> dict[str, str]:
        _no_arguments("enable_events", args)
        if self.worker.events.set(True):
            logger.info("Events of group {task} enabled by remote.")
            return {"ok": "task events enabled"}
        return {"ok": "task events already enabled"}

    def disable_events(self, args: dict[str, Any]) -> dict[str, str]:
        _no_arguments("disable_events", args)
        if self.worker.events.set(False):
            logger.info("Events of group {task} disabled by remote.")
            return {"ok": "task events disabled"}
        return {"ok": "task events already disabled"}

    def heartbeat(self, args: dict[str, Any]) -> dict[str, str]:
        """Send a heartbeat now (a monitor that just started asks every worker)."""
        if self.heart is None:
            raise ControlError("this node sends no heartbeats yet: it is still starting")
        self.heart.beat()
        return {"ok": "heartbeat sent"}

    # -- inspect ------------------------------------------------------------------------------------

    def _gather(self, key: str) -> list[Any]:
        return [item for report in self.processes.reports(REPORT_TIMEOUT_S) for item in report.get(key, [])]

    def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        """Celery's ``inspect stats`` fields (what Flower's worker page shows), plus ``rss_kib``."""
        reports = self.processes.reports(REPORT_TIMEOUT_S)
        total: dict[str, int] = {}
        for report in reports:
            for name, count in report.get("processed", {}).items():
                total[name] = total.get(name, 0) + count
        pids = [report["pid"] for report in reports]
        worker = self.worker
        conf = self.app.conf
        size = self.processes.size()
        max_tasks = conf.worker_max_tasks_per_child
        heart = self.heart
        return {
            "hostname": self.hostname,
            "pid": os.getpid(),
            "version": __version__,
            "clock": str(heart.dispatcher.clock_value() if heart is not None else 0),
            "uptime": round(time.monotonic() - self.started, 3),
            "total": total,
            "pool": {
                "implementation": worker.pool,
                **size,
                "processes": pids,
                "max-tasks-per-child": max_tasks if max_tasks is not None else "N/A",
                "put-guarded-by-semaphore": False,
                "timeouts": [conf.task_soft_time_limit or 0, conf.task_time_limit or 0],
                "writes": _writes(reports),
            },
            "prefetch_count": int(size["max-concurrency"]) * int(conf.worker_prefetch_multiplier),
            "broker": _broker_info(self.app.broker_url, conf),
            "rusage": _rusage(),
            "rss_kib": {str(pid): rss for pid in [os.getpid(), *pids] if (rss := _rss_kib(pid)) is not None},
        }

    def active_queues(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """The queues consumed, with every field of kombu's ``Queue.as_dict`` (Flower's worker page
        reads ``exclusive``, ``no_ack``, ``alias``, ``queue_arguments`` ... and fails without them)."""
        conf = self.app.conf
        declared = {name: entry for entry in conf.task_queues or () if (name := _entry_name(entry)) is not None}
        return [_queue_info(q, declared.get(q), conf.task_default_exchange) for q in self.worker.queues]

    def conf(self, args: dict[str, Any]) -> dict[str, Any]:
        """The settings set explicitly (every one ``with_defaults``), URLs with passwords masked."""
        conf = self.app.conf
        settings = conf.as_dict() if args.get("with_defaults") else conf.explicit()
        settings.update(broker_url=self.app.broker_url, result_backend=self.app.backend_url)
        return {name: _json_safe(name, value) for name, value in sorted(settings.items())}

    def _task(self, name: str) -> None:
        if name not in self.app.tasks:
            raise ControlError(f"unknown task {name!r}")


class DuplicateProbe:
    """At start, a ping addressed to this node's own name, sent before the node listens: any answer
    comes from another live node of the same name, and is logged as Celery's DuplicateNodenameWarning.
    Its replies are collected a little at a time while serving, so the worker does not start later."""

    #: How long answers are awaited (Celery's mingle waits 1 s; a busy prefork supervisor answers
    #: between its checks of the children).
    WAIT_S = 2.0
    #: The longest one check blocks.
    STEP_S = 0.02

    def __init__(self, mailbox: Mailbox, hostname: str) -> None:
        self.mailbox = mailbox
        self.hostname = hostname
        self.ticket = str(uuid.uuid4())
        self.reply_to = mailbox.reply_address()
        self.deadline = time.monotonic() + self.WAIT_S
        self.done = False
        command: dict[str, Any] = {
            "method": "ping",
            "arguments": {},
            "destination": [hostname],
            "pattern": None,
            "matcher": None,
        }
        mailbox.broadcast({**command, "ticket": self.ticket, "reply_to": self.reply_to}, self.WAIT_S)

    def check(self) -> float:
        """Look for answers for at most ``STEP_S``; the seconds it took."""
        started = time.monotonic()
        try:
            found = self.mailbox.replies(self.reply_to, self.ticket, self.STEP_S, 1)
        except (BrokerError, OSError):
            found = []
        if any(isinstance(r, dict) and self.hostname in r for r in found):
            message = duplicate_nodename_message([self.hostname])
            logger.warning("%s: %s", DuplicateNodenameWarning.__name__, message)
            self.close()
        elif time.monotonic() >= self.deadline:
            self.close()
        return time.monotonic() - started

    def close(self) -> None:
        self.done = True
        with contextlib.suppress(BrokerError, OSError):
            self.mailbox.close_replies(self.reply_to)


def _no_arguments(method: str, args: dict[str, Any]) -> None:
    if args:
        raise ControlError(f"{method} takes no arguments, got {', '.join(sorted(map(str, args)))}")


def _queue_name(args: dict[str, Any]) -> str:
    queue = args.get("queue")
    if not isinstance(queue, str) or not queue:
        raise ControlError("a queue name is required")
    return queue


def _seconds(value: Any, which: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ControlError(f"invalid {which} time limit {value!r}: expected seconds") from None
    if not seconds > 0:
        raise ControlError(f"invalid {which} time limit {value!r}: must be positive")
    return seconds


def _signal(name: Any) -> int:
    if name is None:
        return int(signal.SIGTERM)
    if isinstance(name, int):
        return name
    text = str(name).upper()
    text = text if text.startswith("SIG") else f"SIG{text}"
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise ControlError(f"unknown signal {name!r}") from None


def _json_safe(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return mask_password(value) if "url" in name or "backend" in name else value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(name, v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(name, v) for k, v in value.items()}
    return repr(value)


def _entry_name(entry: Any) -> str | None:
    """The queue name of a ``task_queues`` entry (a name, a dict or a kombu Queue)."""
    if isinstance(entry, str):
        return entry
    name = entry.get("name") if isinstance(entry, dict) else getattr(entry, "name", None)
    return name if isinstance(name, str) else None


def _queue_info(name: str, entry: Any, default_exchange: str) -> dict[str, Any]:
    """One queue as kombu's ``Queue.as_dict(recurse=True)`` shows it, from its ``task_queues``
    entry when it has one (dict keys or Queue attributes), else Celery's automatic declaration."""
    if isinstance(entry, dict):
        get = entry.get
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(entry, key, default) if entry is not None and not isinstance(entry, str) else default

    exchange = get("exchange")
    if exchange is None or isinstance(exchange, str):
        exchange_name = exchange if isinstance(exchange, str) else (default_exchange or name)
        exchange_info = {
            "name": exchange_name,
            "type": get("exchange_type") or "direct",
            "arguments": None,
            "durable": True,
            "passive": False,
            "auto_delete": False,
            "delivery_mode": None,
            "no_declare": False,
        }
    else:  # a kombu Exchange
        exchange_info = {
            "name": getattr(exchange, "name", ""),
            "type": getattr(exchange, "type", "direct"),
            "arguments": getattr(exchange, "arguments", None),
            "durable": getattr(exchange, "durable", True),
            "passive": getattr(exchange, "passive", False),
            "auto_delete": getattr(exchange, "auto_delete", False),
            "delivery_mode": getattr(exchange, "delivery_mode", None),
            "no_declare": getattr(exchange, "no_declare", False),
        }
    return {
        "name": name,
        "exchange": exchange_info,
        "routing_key": get("routing_key") or name,
        "queue_arguments": get("queue_arguments"),
        "binding_arguments": get("binding_arguments"),
        "consumer_arguments": get("consumer_arguments"),
        "durable": get("durable", True),
        "exclusive": get("exclusive", False),
        "auto_delete": get("auto_delete", False),
        "no_ack": get("no_ack", False),
        "alias": get("alias"),
        "bindings": [],
        "no_declare": get("no_declare"),
        "expires": get("expires"),
        "message_ttl": get("message_ttl"),
        "max_length": get("max_length"),
        "max_length_bytes": get("max_length_bytes"),
        "max_priority": get("max_priority"),
    }


def _writes(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """How the tasks were shared among the processes, as Celery's prefork pool shows it
    (``writes``: shares as percentages, raw counts, processes running one now)."""
    counts = [sum(report.get("processed", {}).values()) for report in reports]
    total = sum(counts)

    def share(n: float) -> str:
        return f"{n / total * 100:.2f}%" if total else "0.00%"

    return {
        "total": total,
        "avg": share(total / len(counts)) if counts else "0.00%",
        "all": ", ".join(share(n) for n in counts),
        "raw": ", ".join(str(n) for n in counts),
        "strategy": "fair",
        "inqueues": {"total": len(reports), "active": sum(1 for report in reports if report.get("active"))},
    }


def _broker_info(url: str | None, conf: Any) -> dict[str, Any]:
    """The broker connection as Celery's ``stats`` shows it (``broker``), password left out."""
    from urllib.parse import urlsplit  # noqa: PLC0415 - inspect stats only

    info: dict[str, Any] = {"transport": describe(url or "")}
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError:
        return info
    info.update(
        hostname=parts.hostname,
        userid=parts.username,
        virtual_host=parts.path.lstrip("/") or "/",
        port=port,
        insist=False,
        ssl=parts.scheme in ("rediss", "amqps"),
        connect_timeout=conf.broker_connection_timeout,
        heartbeat=conf.broker_heartbeat,
        transport_options=_json_safe("broker_transport_options", conf.broker_transport_options),
        login_method=None,
        uri_prefix=None,
        failover_strategy="round-robin",
    )
    return info


def _rusage() -> dict[str, Any]:
    """This process's resource usage, as Celery's ``stats`` shows it (``rusage``; empty where unknown)."""
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:
        return {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    names = ("utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap")
    more = ("inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")
    return {name: getattr(usage, f"ru_{name}") for name in (*names, *more)}


def _rss_kib(pid: int) -> int | None:
    """Resident memory of a process in KiB (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
