"""When periodic tasks run: ``schedule`` (every N seconds) and ``crontab``, with Celery's names and syntax.

``from celery.schedules import crontab`` becomes ``from rqueue.schedules import crontab``. Schedules
work in epoch milliseconds (UTC); a crontab is read as wall-clock time in the app's ``timezone``:

- a wall time the clock skips (spring forward, e.g. 02:30 in Europe/Oslo on the last Sunday of
  March) runs once, at the instant it would have had before the change (03:30 local), and
- a wall time that happens twice (fall back) runs once, at its first occurrence; only a crontab
  for every hour (``hour="*"``) also runs in the repeated hour, so it keeps its pace in real time.

A field that cannot be parsed is reported when the schedule is checked (``check``), which the
beat does at start-up for each entry, so the error names the entry as well as the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Protocol, runtime_checkable

from rqueue.exceptions import ScheduleError

#: How far ahead a crontab looks for its next run before it is declared never to run: 28 years
#: repeat every combination of weekday, day of month and leap year.
CRONTAB_HORIZON_DAYS = 28 * 366
#: Windows tried, shortest first, when looking for the latest missed run of a crontab: the first
#: window holding a run bounds the walk forward to the runs inside it.
_CATCH_UP_WINDOWS_S = (60, 3600, 86400, 32 * 86400, 367 * 86400)
#: More than any change of a zone's UTC offset in one day (DST shifts are 1 h, rarely 2 h).
_SHIFT_BOUND = timedelta(hours=3)

WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
MONTHS = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}


@runtime_checkable
class Schedule(Protocol):
    """What the beat needs of a schedule: ticks as epoch milliseconds."""

    def check(self) -> None:
        """Raise ScheduleError (naming the field) when the schedule cannot run."""

    def first_ms(self, now_ms: int, tz: tzinfo) -> int:
        """The first tick of an entry that never ran, when the beat starts at ``now_ms``."""

    def next_ms(self, after_ms: int, tz: tzinfo) -> int:
        """The first tick strictly after ``after_ms`` (the last one sent)."""

    def latest_ms(self, after_ms: int, now_ms: int, tz: tzinfo) -> int | None:
        """The last tick in ``(after_ms, now_ms]``: the one to send after missed ones; None if none is due."""


class schedule:  # noqa: N801 - Celery's name
    """Every ``run_every`` (seconds, or a timedelta), counted from the entry's last run; the first
    run is one interval after the beat starts. ``relative=True`` aligns the ticks to multiples
    of the interval since the epoch (a 1-hour schedule runs on the hour)."""

    def __init__(self, run_every: float | timedelta, relative: bool = False) -> None:
        self.run_every = run_every
        self.relative = relative

    @property
    def seconds(self) -> float:
        every = self.run_every
        return every.total_seconds() if isinstance(every, timedelta) else float(every)

    def check(self) -> None:
        every = self.run_every
        if isinstance(every, bool) or not isinstance(every, (int, float, timedelta)):
            raise ScheduleError(
                f"schedule: expected seconds (a number) or a timedelta, got {every!r}", field="schedule"
            )
        seconds = self.seconds
        if not math.isfinite(seconds) or seconds < 0.001:
            raise ScheduleError(f"schedule: the interval must be at least 1 ms, got {every!r}", field="schedule")

    @property
    def _ms(self) -> int:
        return max(1, round(self.seconds * 1000))

    def first_ms(self, now_ms: int, tz: tzinfo) -> int:
        if self.relative:
            return (now_ms // self._ms + 1) * self._ms
        return now_ms + self._ms

    def next_ms(self, after_ms: int, tz: tzinfo) -> int:
        return after_ms + self._ms

    def latest_ms(self, after_ms: int, now_ms: int, tz: tzinfo) -> int | None:
        if now_ms < after_ms + self._ms:
            return None
        return after_ms + (now_ms - after_ms) // self._ms * self._ms

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and (self.seconds, self.relative) == (other.seconds, other.relative)

    def __hash__(self) -> int:
        return hash((self.seconds, self.relative))

    def __repr__(self) -> str:
        return f"<freq: {_duration(self.seconds)}>"


class crontab:  # noqa: N801 - Celery's name
    """Cron-like: runs when every field matches (Celery's rule: day of week AND day of month).

    Each field takes ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, a list of these
    separated by commas, or an iterable of numbers. ``day_of_week`` is 0-6 with Sunday 0 (7 is
    Sunday too) or ``sun``..``sat``; ``month_of_year`` 1-12 or ``jan``..``dec``; names make ranges
    too (``mon-fri``). A range that wraps (``fri-mon``) runs through the end of the week.
    """

    #: ``(field, lowest, highest, names)``.
    FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
        ("minute", 0, 59, {}),
        ("hour", 0, 23, {}),
        ("day_of_week", 0, 7, WEEKDAYS),
        ("day_of_month", 1, 31, {}),
        ("month_of_year", 1, 12, MONTHS),
    )

    def __init__(
        self,
        minute: str | int | Iterable[int] = "*",
        hour: str | int | Iterable[int] = "*",
        day_of_week: str | int | Iterable[int] = "*",
        day_of_month: str | int | Iterable[int] = "*",
        month_of_year: str | int | Iterable[int] = "*",
    ) -> None:
        self.minute, self.hour, self.day_of_week = minute, hour, day_of_week
        self.day_of_month, self.month_of_year = day_of_month, month_of_year
        self._parsed: dict[str, frozenset[int]] | None = None

    def _sets(self) -> dict[str, frozenset[int]]:
        if self._parsed is None:
            parsed = {}
            for field, low, high, names in self.FIELDS:
                parsed[field] = _parse_field(field, getattr(self, field), low, high, names)
            parsed["day_of_week"] = frozenset(d % 7 for d in parsed["day_of_week"])  # 7 is Sunday
            self._parsed = parsed
            # A combination that never happens (February 30th) is found by looking for a run.
            if self._next_local(datetime(2000, 1, 1, tzinfo=timezone.utc), timezone.utc) is None:
                self._parsed = None
                raise ScheduleError(
                    f"crontab: day_of_month={self.day_of_month!r} with month_of_year={self.month_of_year!r} "
                    f"and day_of_week={self.day_of_week!r} never happens",
                    field="day_of_month",
                )
        return self._parsed

    def check(self) -> None:
        self._sets()

    def first_ms(self, now_ms: int, tz: tzinfo) -> int:
        return self.next_ms(now_ms, tz)

    def next_ms(self, after_ms: int, tz: tzinfo) -> int:
        found = self._next_local(_from_ms(after_ms), tz)
        if found is None:  # _sets() proved there is a run within the horizon
            raise ScheduleError(f"{self!r} has no run within {CRONTAB_HORIZON_DAYS} days", field="schedule")
        return _to_ms(found)

    def latest_ms(self, after_ms: int, now_ms: int, tz: tzinfo) -> int | None:
        first = self.next_ms(after_ms, tz)
        if first > now_ms:
            return None
        tick = first
        for window_s in _CATCH_UP_WINDOWS_S:
            start = max(after_ms, now_ms - window_s * 1000)
            candidate = self.next_ms(start, tz)
            if candidate <= now_ms:
                tick = max(tick, candidate)
                break
        while (following := self.next_ms(tick, tz)) <= now_ms:
            tick = following
        return tick

    def next_after(self, after: datetime, tz: tzinfo) -> datetime:
        """The first run strictly after ``after`` (aware), as an aware UTC datetime."""
        return _from_ms(self.next_ms(_to_ms(after), tz))

    def _next_local(self, after: datetime, tz: tzinfo) -> datetime | None:
        """The first run strictly after ``after`` (aware), in UTC; None within the horizon."""
        sets = self._sets() if self._parsed is None else self._parsed
        minutes, hours = sorted(sets["minute"]), sorted(sets["hour"])
        every_hour = len(hours) == 24
        # Wall dates start a day early: an instant's local date can be behind its UTC date. Wall
        # times more than a DST shift (< 3 h) before `after`, or after the best found, can't win.
        day = after.astimezone(tz).date() - timedelta(days=1)
        floor = after.astimezone(tz).replace(tzinfo=None) - _SHIFT_BOUND
        best: datetime | None = None
        last_day = day + timedelta(days=CRONTAB_HORIZON_DAYS)
        while day <= last_day:
            if self._day_matches(day, sets):
                ceiling = None if best is None else best.astimezone(tz).replace(tzinfo=None) + _SHIFT_BOUND
                for instant in _instants(day, hours, minutes, tz, every_hour, (floor, ceiling)):
                    if instant > after and (best is None or instant < best):
                        best = instant
            if best is not None and _to_date(best, tz) < day:
                return best  # a later wall date cannot hold an earlier instant (shifts are < 1 day)
            day += timedelta(days=1)
        return best

    @staticmethod
    def _day_matches(day: date, sets: dict[str, frozenset[int]]) -> bool:
        return (
            day.month in sets["month_of_year"]
            and day.day in sets["day_of_month"]
            and (day.isoweekday() % 7) in sets["day_of_week"]
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, crontab):
            return False
        try:
            return self._sets() == other._sets()
        except ScheduleError:
            return False

    def __hash__(self) -> int:
        return hash(tuple(str(getattr(self, field)) for field, *_ in self.FIELDS))

    def __repr__(self) -> str:
        fields = (self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year)
        return "<crontab: {} (m/h/dow/dom/moy)>".format(" ".join(_field_text(f) for f in fields))


def _instants(
    day: date,
    hours: list[int],
    minutes: list[int],
    tz: tzinfo,
    every_hour: bool,
    window: tuple[datetime, datetime | None],
) -> Iterable[datetime]:
    """The UTC instants of the wall times ``day hh:mm`` in ``tz`` within ``window``, naive wall
    times ``(floor, ceiling)`` (see the module doc for DST)."""
    floor, ceiling = window
    for hour in hours:
        if datetime(day.year, day.month, day.day, hour, 59) < floor:
            continue
        for minute in minutes:
            wall = datetime(day.year, day.month, day.day, hour, minute)
            if ceiling is not None and wall > ceiling:
                return
            first = wall.replace(tzinfo=tz)
            second = wall.replace(tzinfo=tz, fold=1)
            offset, offset_later = first.utcoffset(), second.utcoffset()
            assert offset is not None and offset_later is not None  # a zone always has an offset
            yield (wall - offset).replace(tzinfo=timezone.utc)
            if offset != offset_later and every_hour and _exists(wall - offset_later, wall, tz):
                yield (wall - offset_later).replace(tzinfo=timezone.utc)  # the repeated hour


def _exists(utc_naive: datetime, wall: datetime, tz: tzinfo) -> bool:
    """True when the UTC instant shows as ``wall`` in ``tz`` (false in a spring-forward gap)."""
    return utc_naive.replace(tzinfo=timezone.utc).astimezone(tz).replace(tzinfo=None) == wall


def _to_date(instant: datetime, tz: tzinfo) -> date:
    return instant.astimezone(tz).date()


def _parse_field(field: str, value: Any, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    """The numbers a crontab field stands for; ScheduleError naming the field otherwise."""
    if isinstance(value, bool):
        raise ScheduleError(f"crontab {field}={value!r}: expected a number, a string or numbers", field=field)
    if isinstance(value, int):
        return frozenset([_number(field, value, low, high, value)])
    if isinstance(value, str):
        found: set[int] = set()
        for part in value.replace(" ", "").lower().split(","):
            found.update(_parse_part(field, part, low, high, names, value))
        return frozenset(found)
    try:
        items = list(value)
    except TypeError:
        raise ScheduleError(f"crontab {field}={value!r}: expected a number, a string or numbers", field=field) from None
    found = set()
    for item in items:
        found.update(_parse_field(field, item, low, high, names))
    if not found:
        raise ScheduleError(f"crontab {field}={value!r}: names no value", field=field)
    return frozenset(found)


def _parse_part(field: str, part: str, low: int, high: int, names: dict[str, int], whole: str) -> list[int]:
    if not part:
        raise ScheduleError(f"crontab {field}={whole!r}: an empty item", field=field)
    span, _, step_text = part.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ScheduleError(
                f"crontab {field}={whole!r}: the step {step_text!r} is not a positive number", field=field
            )
        step = int(step_text)
    top = 6 if field == "day_of_week" else high  # '*' means every weekday once
    if span == "*":
        first, last = low, top
    elif "-" in span:
        start_text, _, end_text = span.partition("-")
        first = _value(field, start_text, low, high, names, whole)
        last = _value(field, end_text, low, high, names, whole)
    else:
        first = _value(field, span, low, high, names, whole)
        last = top if step_text else first  # Celery: '5/15' is 5, 20, 35, 50
    # A range that wraps (fri-mon, 22-2) runs through the top of the field.
    values = list(range(first, last + 1)) if last >= first else [*range(first, top + 1), *range(low, last + 1)]
    return values[::step]


def _value(field: str, text: str, low: int, high: int, names: dict[str, int], whole: str) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        known = f" or one of {', '.join(names)}" if names else ""
        raise ScheduleError(f"crontab {field}={whole!r}: {text!r} is not a number{known}", field=field)
    return _number(field, int(text), low, high, whole)


def _number(field: str, number: int, low: int, high: int, whole: object) -> int:
    if not low <= number <= high:
        raise ScheduleError(f"crontab {field}={whole!r}: {number} is out of range {low}-{high}", field=field)
    return number


def _field_text(value: object) -> str:
    if isinstance(value, (str, int)):
        return str(value)
    return ",".join(str(v) for v in sorted(value))  # type: ignore[call-overload]  # an iterable of numbers


def _duration(seconds: float) -> str:
    return f"{seconds:g} seconds" if seconds != 1 else "1 second"


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _to_ms(when: datetime) -> int:
    # Exact integer arithmetic: a float timestamp could round 12:00:00 to 11:59:59.999.
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def as_schedule(value: object) -> Schedule:
    """A schedule from what a ``beat_schedule`` entry holds: seconds, a timedelta, an rqueue
    schedule, or Celery's ``crontab``/``schedule`` (a config module still importing
    ``celery.schedules``). ScheduleError for anything else (``solar`` included)."""
    if isinstance(value, (schedule, crontab)):
        return value
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return schedule(value)
    kind = type(value)
    if kind.__module__.startswith("celery.schedules"):
        if kind.__name__ == "crontab":
            return crontab(
                *(
                    getattr(value, f"_orig_{f}")
                    for f in ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
                )
            )
        if kind.__name__ == "schedule":
            return schedule(value.run_every, relative=bool(getattr(value, "relative", False)))  # type: ignore[attr-defined]  # Celery's schedule
        raise ScheduleError(
            f"Celery's {kind.__name__} schedules are not supported by rqueue; use crontab or an interval",
            field="schedule",
        )
    if isinstance(value, Schedule):
        return value
    raise ScheduleError(
        f"expected seconds, a timedelta, a crontab or a schedule, got {type(value).__name__} {value!r}",
        field="schedule",
    )


__all__ = ["Schedule", "as_schedule", "crontab", "schedule"]
