"""Periodic tasks: the ``beat_schedule`` entries, and the beat that sends them, one leader at a time.

Any number of beats may run (``rqueue beat`` on several nodes, ``rqueue worker -B`` on every
worker): they elect one leader through the broker (``rqueue.brokers.base.BeatStore``). The leader
holds a lease of ``beat_lease_s`` (3 s by default) and renews it every third of that; the others
try to take it every sixth, so a leader that dies is replaced at most ``beat_lease_s * 7/6``
(3.5 s) after its last renewal. The last tick sent of each entry lives in the broker too, so a new
leader continues where the old one stopped.

A tick is sent by ``BeatStore.beat_send``: one atomic broker step that checks the sender still
holds the lease and that the tick is later than the entry's last one, records it and publishes the
message. A deposed leader (paused, cut off) is refused, and an unanswered send can be retried:
no tick is sent twice. Ticks missed while no beat ran are sent once (the latest), with a warning.
On RabbitMQ, which cannot hold the lease, it lives in a Redis or SQLite result backend, and a tick
is recorded there before its message is published (``SplitBeatStore``): still never twice, but a
leader killed between the two steps loses that one tick.

Entries are checked at start-up: an unknown task, a bad crontab field, a negative interval or a
bad option is a ``ScheduleError`` naming the entry and the field.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from rqueue.brokers import open_broker
from rqueue.brokers.base import BeatStore, Broker, capability
from rqueue.exceptions import BrokerError, ConfigurationError, RQueueError, ScheduleError
from rqueue.options import SEND_OPTIONS
from rqueue.schedules import Schedule, as_schedule
from rqueue.sending import SendPlan
from rqueue.urls import mask_password

if TYPE_CHECKING:
    from rqueue.app import App

logger = logging.getLogger("rqueue.beat")

#: The keys a ``beat_schedule`` entry may have (Celery's).
ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"})
#: Send options a periodic entry must not set: each tick is a new task with its own id.
FORBIDDEN_OPTIONS = frozenset({"task_id", "link", "link_error", "chain", "chord", "group_id", "group_index"})
#: The leader renews its lease this many times per lease period.
RENEWALS_PER_LEASE = 3
#: A follower tries to take the lease this many times per lease period.
TRIES_PER_LEASE = 6
#: The longest sleep between two rounds, whatever the schedule (stop requests are seen at once).
MAX_SLEEP_S = 5.0
#: Task ids of ticks are uuid5 of the schedule, entry and tick in this namespace: a tick's id is
#: known in advance, and a second message for one tick would be visibly a duplicate.
TICK_ID_NAMESPACE = uuid.UUID("0b6f7c1e-4f5d-5d1a-9a53-7e0c2d8b6a41")


@dataclass(frozen=True)
class Entry:
    """One periodic task, checked."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


def schedule_timezone(app: App) -> tzinfo:
    """The zone crontabs are read in: the ``timezone`` setting (UTC by default)."""
    name = str(app.conf.timezone or "UTC")
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"timezone {name!r} is not a known time zone (e.g. 'Europe/Oslo'); on a system without a time "
            "zone database, pip install tzdata"
        ) from None


def schedule_name(app: App) -> str:
    """The name the schedule's lease and state are kept under in the broker (the app's main name):
    beats of one app elect one leader; apps with other names sharing a broker do not interfere."""
    return app.main or "default"


def load_entries(app: App) -> list[Entry]:
    """The app's ``beat_schedule``, checked: ScheduleError naming the entry and field otherwise."""
    raw = app.conf.beat_schedule or {}
    entries = []
    for name, spec in raw.items():
        if not isinstance(name, str) or not name:
            raise ScheduleError(f"entry names must be non-empty strings, got {name!r}", field="name")
        try:
            entries.append(_entry(app, name, spec))
        except ScheduleError as exc:
            raise exc.for_entry(name) from None
    return entries


def _entry(app: App, name: str, spec: object) -> Entry:
    if not isinstance(spec, Mapping):
        raise ScheduleError(f"expected a dict with 'task' and 'schedule', got {type(spec).__name__}", field=None)
    unknown = set(spec) - ENTRY_KEYS
    if unknown:
        raise ScheduleError(
            f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; an entry has {', '.join(sorted(ENTRY_KEYS))}",
            field=sorted(map(str, unknown))[0],
        )
    task = spec.get("task")
    if not isinstance(task, str) or not task:
        raise ScheduleError(f"'task' must name a task, got {task!r}", field="task")
    if task not in app.tasks and app.builtin(task) is None:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise ScheduleError(f"task {task!r} is not registered (registered: {known})", field="task")
    if "schedule" not in spec:
        raise ScheduleError("'schedule' is missing (seconds, a timedelta or a crontab)", field="schedule")
    sched = as_schedule(spec["schedule"])
    if spec.get("relative") and hasattr(sched, "relative"):
        sched.relative = True
    sched.check()
    args, kwargs, options = spec.get("args") or (), spec.get("kwargs") or {}, spec.get("options") or {}
    if not isinstance(args, (list, tuple)):
        raise ScheduleError(f"'args' must be a list or tuple, got {type(args).__name__} {args!r}", field="args")
    if not isinstance(kwargs, Mapping):
        raise ScheduleError(f"'kwargs' must be a dict, got {type(kwargs).__name__} {kwargs!r}", field="kwargs")
    if not isinstance(options, Mapping):
        raise ScheduleError(f"'options' must be a dict, got {type(options).__name__} {options!r}", field="options")
    bad = (set(options) - SEND_OPTIONS) | (set(options) & FORBIDDEN_OPTIONS)
    if bad:
        raise ScheduleError(
            f"option(s) {', '.join(sorted(bad))} cannot be used (send options: queue, priority, expires, ...)",
            field="options",
        )
    entry = Entry(name, task, sched, tuple(args), dict(kwargs), dict(options))
    try:  # encode once now: arguments the serializer cannot take fail at start, not at each tick
        _plan(app, entry).outgoing(entry.args, entry.kwargs)
    except (RQueueError, TypeError, ValueError) as exc:
        raise ScheduleError(f"cannot be sent: {exc}", field="options") from None
    return entry


def _plan(app: App, entry: Entry, task_id: str | None = None) -> SendPlan:
    options: dict[str, Any] = dict(entry.options)
    if task_id is not None:
        options["task_id"] = task_id
    return SendPlan(app, entry.task, None, options)  # type: ignore[arg-type]  # checked against SEND_OPTIONS


def beat_store(app: App, broker: Broker) -> BeatStore:
    """Where the beat keeps its lease and state and sends its messages: the broker itself (Redis,
    SQLite, PostgreSQL: one atomic step per run), or, on a broker that cannot hold them (RabbitMQ), a
    Redis, SQLite or PostgreSQL result backend beside it (``SplitBeatStore``). ConfigurationError
    otherwise."""
    store = capability(broker, BeatStore)
    if store is not None:
        return store
    backend_url = app.backend_url
    state: BeatStore | None = None
    if backend_url:
        with contextlib.suppress(ConfigurationError):  # a result backend that is no broker scheme (rpc://)
            state = capability(open_broker(backend_url, app.conf), BeatStore)
    if state is None:
        backend = mask_password(backend_url) if backend_url else "disabled"
        raise ConfigurationError(
            f"periodic tasks (rqueue beat, worker -B) need a broker that can elect their leader (Redis, "
            f"SQLite or PostgreSQL), or beside {mask_password(broker.url)} a Redis, SQLite or PostgreSQL "
            "result_backend to hold the "
            f"leader lease (result_backend is {backend})"
        )
    logger.info("beat: the lease and the runs live in the result backend %s", mask_password(str(backend_url)))
    return SplitBeatStore(state, broker)


#: ``SplitBeatStore.beat_send``: the run was recorded but its message could not be published.
LOST = -2


class SplitBeatStore(BeatStore):
    """A beat on a broker that cannot elect (RabbitMQ): the lease and the runs live in ``state``
    (the Redis or SQLite result backend), and a run's message is published to ``broker`` after
    the run was recorded under the lease. Two steps instead of one: a run is still never sent
    twice, but a leader that dies between them (or a publish that fails) loses that one run."""

    def __init__(self, state: BeatStore, broker: Broker) -> None:
        self.state = state
        self.broker = broker

    def beat_lease(self, name: str, token: str, ttl_ms: int) -> bool:
        return self.state.beat_lease(name, token, ttl_ms)

    def beat_release(self, name: str, token: str) -> bool:
        return self.state.beat_release(name, token)

    def beat_runs(self, name: str) -> dict[str, int]:
        return self.state.beat_runs(name)

    def beat_claim(self, name: str, token: str, entry: str, tick_ms: int) -> int:
        return self.state.beat_claim(name, token, entry, tick_ms)

    def beat_send(  # noqa: PLR0913 - BeatStore's signature
        self,
        name: str,
        token: str,
        entry: str,
        tick_ms: int,
        queue: str,
        payload: bytes,
        priority: int,
        eta_ms: int | None,
    ) -> int:
        code = self.state.beat_claim(name, token, entry, tick_ms)
        if code != 1:
            return code
        try:
            self.broker.publish(queue, payload, priority, eta_ms)
        except BrokerError as exc:
            # Publishing again could send the run twice (the broker may have it): it is given up.
            logger.error("Scheduler: %s was recorded but could not be published (%s); this run is skipped", entry, exc)
            return LOST
        return 1


def tick_task_id(schedule: str, entry: str, tick_ms: int) -> str:
    """The task id of one tick: the same in every beat, different for every tick."""
    return str(uuid.uuid5(TICK_ID_NAMESPACE, f"{schedule}\x00{entry}\x00{tick_ms}"))


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class Beat:
    """Sends the app's periodic tasks while it holds the schedule's lease.

    Args:
        app: The application (finalized here: its ``on_after_configure`` receivers may add entries).
        broker: Where the lease, the state and the messages go (default: a connection of its own
            to the app's broker).
        clock_ms: The wall clock in epoch ms (tests inject one).
        node: Names this beat in the lease token and the logs (default ``host/pid``).
    """

    def __init__(
        self,
        app: App,
        *,
        broker: Broker | None = None,
        clock_ms: Callable[[], int] = _epoch_ms,
        node: str | None = None,
    ) -> None:
        app.finalize()
        self.app = app
        self.tz = schedule_timezone(app)
        self.entries = load_entries(app)
        self.broker = broker if broker is not None else open_broker(app.broker_url, app.conf)
        self.store = beat_store(app, self.broker)
        self.name = schedule_name(app)
        self.clock_ms = clock_ms
        self.node = node or f"{socket.gethostname()}/{os.getpid()}"
        self.token = f"{self.node}/{uuid.uuid4().hex[:8]}"
        lease_s = float(app.conf.beat_lease_s)
        self.lease_ms = max(1, round(lease_s * 1000))
        self.renew_s = lease_s / RENEWALS_PER_LEASE
        self.retry_s = lease_s / TRIES_PER_LEASE
        self.leader = False
        self._elect_at = 0.0  # monotonic time of the next lease call
        self._last: dict[str, int | None] = {}
        self._next: dict[str, int] = {}
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- running -------------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until ``stop()``; gives the lease up on the way out."""
        logger.info(
            "beat: starting (schedule %r: %d entr%s; lease %gs)",
            self.name,
            len(self.entries),
            "y" if len(self.entries) == 1 else "ies",
            self.lease_ms / 1000,
        )
        try:
            while not self._stop.is_set():
                try:
                    wait = self.tick()
                except Exception:  # a bug or a surprise must not end the schedule: log, step aside, retry
                    logger.exception("beat: unexpected error; retrying in %gs", self.retry_s)
                    self.close()
                    self._elect_at = time.monotonic() + self.retry_s
                    wait = self.retry_s
                self._stop.wait(wait)
        finally:
            self.close()

    def start_thread(self) -> threading.Thread:
        """Run in a daemon thread (``worker -B``)."""
        self._thread = threading.Thread(target=self.run, name="rqueue-beat", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop (and join the thread ``start_thread`` made)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def close(self) -> None:
        """Give the lease up if held, so another beat takes over at once."""
        if not self.leader:
            return
        self.leader = False
        try:
            self.store.beat_release(self.name, self.token)
            logger.info("beat: %s gave up the lease of schedule %r", self.node, self.name)
        except BrokerError as exc:
            logger.warning("beat: could not give the lease up (it lapses in %gs): %s", self.lease_ms / 1000, exc)

    def tick(self) -> float:
        """One round: keep or seek the lease; as leader send what is due. Seconds until the next round."""
        if time.monotonic() >= self._elect_at:
            self._elect()
        if not self.leader:
            return max(0.0, self._elect_at - time.monotonic())
        now = self.clock_ms()
        for entry in self.entries:
            if not self.leader:
                break
            if self._next[entry.name] <= now:
                self._send_due(entry, now)
        until_elect = self._elect_at - time.monotonic()
        if not self.leader:
            return max(0.0, until_elect)
        until_due = (min(self._next.values(), default=now + 3_600_000) - self.clock_ms()) / 1000
        return max(0.0, min(until_elect, until_due, MAX_SLEEP_S))

    # -- leadership ----------------------------------------------------------------------------------

    def _elect(self) -> None:
        try:
            held = self.store.beat_lease(self.name, self.token, self.lease_ms)
            if held and not self.leader:
                self._load_state()
        except BrokerError as exc:
            if not self._failing:
                logger.warning("beat: the broker is not answering (%s); retrying", exc)
            self._failing = True
            held = False
        else:
            if self._failing:
                logger.info("beat: the broker answers again")
            self._failing = False
        if held and not self.leader:
            logger.info("beat: %s is now the leader of schedule %r", self.node, self.name)
        elif self.leader and not held:
            logger.warning("beat: %s lost the lease of schedule %r; another beat leads now", self.node, self.name)
        self.leader = held
        self._elect_at = time.monotonic() + (self.renew_s if held else self.retry_s)

    def _load_state(self) -> None:
        """The last tick of every entry, from the broker (another leader may have sent since)."""
        runs = self.store.beat_runs(self.name)
        now = self.clock_ms()
        for entry in self.entries:
            last = runs.get(entry.name)
            self._last[entry.name] = last
            if last is None:
                self._next[entry.name] = entry.schedule.first_ms(now, self.tz)
            else:
                self._next[entry.name] = entry.schedule.next_ms(last, self.tz)

    # -- sending -------------------------------------------------------------------------------------

    def _send_due(self, entry: Entry, now: int) -> None:
        due = self._next[entry.name]
        last = self._last.get(entry.name)
        # The latest run due by now: `due` itself, or a later one when runs were missed.
        tick = entry.schedule.latest_ms(due if last is None else last, now, self.tz) or due
        if tick > due:
            logger.warning(
                "Scheduler: %s (%s) missed its runs from %s to %s (no beat was leading); sending it once now",
                entry.name,
                entry.task,
                self._local(due),
                self._local(tick),
            )
        try:
            message = _plan(self.app, entry, tick_task_id(self.name, entry.name, tick)).outgoing(
                entry.args, entry.kwargs
            )
        except (RQueueError, TypeError, ValueError) as exc:  # checked at start; a changed route may still fail
            logger.error("Scheduler: cannot send %s (%s): %s; skipping this run", entry.name, entry.task, exc)
            self._sent(entry, tick)
            return
        try:
            code = self.store.beat_send(
                self.name,
                self.token,
                entry.name,
                tick,
                message.queue,
                message.payload,
                message.priority,
                message.eta_ms,
            )
        except BrokerError as exc:
            # Sent or not: the next try is refused as already sent if it was, so none is lost or doubled.
            logger.warning("Scheduler: sending %s (%s) failed: %s; trying again", entry.name, entry.task, exc)
            self._elect_at = 0.0
            return
        if code == 1:
            logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
            self._sent(entry, tick)
        elif code == LOST:
            self._sent(entry, tick)
        elif code == -1:
            logger.info("Scheduler: %s (%s) at %s was sent already", entry.name, entry.task, self._local(tick))
            try:
                self._load_state()
            except BrokerError as exc:
                logger.warning("beat: could not read the schedule's state (%s); retrying", exc)
                self._elect_at = 0.0
                self.leader = False
        else:
            logger.warning("beat: %s lost the lease of schedule %r; another beat leads now", self.node, self.name)
            self.leader = False
            self._elect_at = time.monotonic() + self.retry_s

    def _sent(self, entry: Entry, tick: int) -> None:
        self._last[entry.name] = tick
        self._next[entry.name] = entry.schedule.next_ms(tick, self.tz)

    def _local(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, self.tz).isoformat(timespec="seconds")

    # -- listing -------------------------------------------------------------------------------------

    def describe(self) -> list[tuple[Entry, int | None, int]]:
        """``(entry, last tick or None, next tick)`` of every entry, from the broker's state."""
        runs = self.store.beat_runs(self.name)
        now = self.clock_ms()
        rows = []
        for entry in self.entries:
            last = runs.get(entry.name)
            upcoming = entry.schedule.first_ms(now, self.tz) if last is None else entry.schedule.next_ms(last, self.tz)
            rows.append((entry, last, max(upcoming, now) if last is not None else upcoming))  # missed: due now
        return rows

    def listing(self) -> list[str]:
        """One line per entry: name, task, schedule, last and next run (in the app's time zone)."""
        lines = []
        for entry, last, upcoming in self.describe():
            when = self._local(upcoming)
            before = self._local(last) if last is not None else "never"
            lines.append(f"{entry.name}\t{entry.task}\t{entry.schedule!r}\tlast: {before}\tnext: {when}")
        return lines
