"""``rqueue.schedules``: crontab next-run times against a table (DST days in Europe/Oslo and
America/New_York included), Celery's field syntax, intervals, and catching up after downtime."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from rqueue.exceptions import ScheduleError
from rqueue.schedules import as_schedule, crontab, schedule

UTC = timezone.utc
OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]  # year, month, day, ...


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


#: (crontab, zone, after, the next runs in UTC). 2026: Oslo springs forward on 29 March at 01:00Z
#: (02:00 -> 03:00) and falls back on 25 October at 01:00Z (03:00 -> 02:00); New York on 8 March
#: at 07:00Z (02:00 -> 03:00) and 1 November at 06:00Z (02:00 -> 01:00).
TABLE = [
    # plain fields, in UTC
    (crontab(minute="*/15"), UTC, utc(2026, 12, 5, 12, 7), [utc(2026, 12, 5, 12, 15), utc(2026, 12, 5, 12, 30)]),
    (crontab(minute="5/15"), UTC, utc(2026, 12, 5, 12, 21), [utc(2026, 12, 5, 12, 35), utc(2026, 12, 5, 12, 50)]),
    (
        crontab(0, "8-18/4"),
        UTC,
        utc(2026, 12, 5, 8, 0),
        [utc(2026, 12, 5, 12), utc(2026, 12, 5, 16), utc(2026, 12, 6, 8)],
    ),
    (crontab(0, "*/6"), UTC, utc(2026, 12, 5, 7), [utc(2026, 12, 5, 12), utc(2026, 12, 5, 18)]),
    (crontab(0, 9, day_of_week="mon-fri"), UTC, utc(2026, 12, 4, 10), [utc(2026, 12, 7, 9), utc(2026, 12, 8, 9)]),
    (crontab(0, 0, day_of_week=0), UTC, utc(2026, 12, 5), [utc(2026, 12, 6), utc(2026, 12, 13)]),
    (crontab(0, 0, day_of_week="7"), UTC, utc(2026, 12, 5), [utc(2026, 12, 6)]),
    (crontab(0, 12, day_of_week="fri-mon"), UTC, utc(2026, 12, 7, 13), [utc(2026, 12, 11, 12), utc(2026, 12, 12, 12)]),
    (crontab(0, 0, day_of_month=1, month_of_year="jan,jul"), UTC, utc(2026, 3, 1), [utc(2026, 7, 1), utc(2027, 1, 1)]),
    (crontab(0, 0, day_of_month=29, month_of_year="feb"), UTC, utc(2026, 3, 1), [utc(2028, 2, 29)]),
    (crontab(0, 0, "sat", 1), UTC, utc(2026, 12, 5), [utc(2027, 5, 1)]),  # Celery: day of week AND of month
    (crontab([0, 30], [1, 13]), UTC, utc(2026, 12, 5, 1, 0), [utc(2026, 12, 5, 1, 30), utc(2026, 12, 5, 13)]),
    # a time zone without DST that day
    (crontab(30, 2), OSLO, utc(2026, 12, 5, 2), [utc(2026, 12, 6, 1, 30)]),
    # Oslo, spring forward: 02:30 does not exist; it runs once, at 03:30 CEST (01:30Z)
    (crontab(30, 2), OSLO, utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]),
    # Oslo, fall back: 02:30 happens twice; it runs once, at the first (CEST, 00:30Z)
    (crontab(30, 2), OSLO, utc(2026, 10, 24, 12), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
    # every hour keeps its pace in real time across both changes
    (crontab(0), OSLO, utc(2026, 3, 29, 0, 30), [utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)]),
    (crontab(0), OSLO, utc(2026, 10, 24, 23, 30), [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)]),
    # New York, spring forward: 02:30 EST does not exist; once, at 03:30 EDT (07:30Z)
    (crontab(30, 2), NEW_YORK, utc(2026, 3, 7, 12), [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]),
    # New York, fall back: 01:30 happens twice; once, at 01:30 EDT (05:30Z)
    (crontab(30, 1), NEW_YORK, utc(2026, 10, 31, 12), [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
    # New York weekdays at 09:00 local, across the spring change
    (crontab(0, 9, "mon-fri"), NEW_YORK, utc(2026, 3, 6, 15), [utc(2026, 3, 9, 13), utc(2026, 3, 10, 13)]),
]


@pytest.mark.parametrize(("cron", "zone", "after", "expected"), TABLE, ids=[f"{c!r}@{z}" for c, z, *_ in TABLE])
def test_crontab_next_runs_match_the_table(
    cron: crontab, zone: object, after: datetime, expected: list[datetime]
) -> None:
    runs, when = [], after
    for _ in expected:
        when = cron.next_after(when, zone)  # type: ignore[arg-type]  # a tzinfo
        runs.append(when)
    assert runs == expected


@pytest.mark.parametrize(
    ("zone", "start", "end"),
    [
        (OSLO, utc(2026, 3, 28), utc(2026, 3, 31)),
        (OSLO, utc(2026, 10, 24), utc(2026, 10, 27)),
        (NEW_YORK, utc(2026, 3, 7, 12), utc(2026, 3, 10, 12)),
        (NEW_YORK, utc(2026, 10, 31, 12), utc(2026, 11, 3, 12)),
    ],
)
def test_crontab_daily_job_runs_once_a_day_across_dst(zone: object, start: datetime, end: datetime) -> None:
    cron = crontab(30, 2 if zone is OSLO else 1)
    runs, when = [], start
    while (when := cron.next_after(when, zone)) < end:  # type: ignore[arg-type]
        runs.append(when)
    assert len(runs) == 3, runs


def test_crontab_latest_missed_run_is_found_without_walking_every_run() -> None:
    cron = crontab()  # every minute
    last = ms(utc(2026, 1, 1))
    now = ms(utc(2026, 12, 5, 12, 0, 30))
    assert cron.latest_ms(last, now, UTC) == ms(utc(2026, 12, 5, 12, 0))
    assert cron.latest_ms(now - 10_000, now, UTC) is None
    monthly = crontab(0, 0, day_of_month=1)
    assert monthly.latest_ms(ms(utc(2025, 1, 1)), ms(utc(2026, 12, 5)), UTC) == ms(utc(2026, 12, 1))


def test_schedule_interval_ticks_and_catch_up() -> None:
    every = schedule(timedelta(seconds=10))
    assert every.first_ms(1_000, UTC) == 11_000
    assert every.next_ms(11_000, UTC) == 21_000
    assert every.latest_ms(11_000, 20_999, UTC) is None
    assert every.latest_ms(11_000, 75_000, UTC) == 71_000  # 5 missed: one run, on the schedule's grid
    assert schedule(10, relative=True).first_ms(12_345, UTC) == 20_000
    assert as_schedule(2.5) == schedule(2.5)
    assert repr(schedule(30)) == "<freq: 30 seconds>"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"minute": "61"}, "minute", "61 is out of range 0-59"),
        ({"hour": "mon"}, "hour", "'mon' is not a number"),
        ({"day_of_week": "mon-funday"}, "day_of_week", "'funday' is not a number or one of sun"),
        ({"minute": "*/0"}, "minute", "the step '0' is not a positive number"),
        ({"month_of_year": 13}, "month_of_year", "13 is out of range 1-12"),
        ({"minute": "1,,2"}, "minute", "an empty item"),
        ({"day_of_month": 30, "month_of_year": 2}, "day_of_month", "never happens"),
    ],
)
def test_crontab_bad_field_names_the_field(fields: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as caught:
        crontab(**fields).check()  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize("value", [-1, 0, timedelta(seconds=-5), float("nan")])
def test_schedule_non_positive_interval_is_refused(value: float | timedelta) -> None:
    with pytest.raises(ScheduleError, match="at least 1 ms") as caught:
        as_schedule(value).check()
    assert caught.value.field == "schedule"


def test_as_schedule_refuses_what_is_not_a_schedule() -> None:
    with pytest.raises(ScheduleError, match="expected seconds, a timedelta, a crontab"):
        as_schedule("every day")


def test_as_schedule_reads_celerys_crontab_and_schedule() -> None:
    celery_schedules = pytest.importorskip("celery.schedules")
    converted = as_schedule(celery_schedules.crontab(minute="*/15", hour="9-17", day_of_week="mon-fri"))
    assert converted == crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")
    assert as_schedule(celery_schedules.schedule(timedelta(seconds=30))) == schedule(30)
