"""When a campaign runs: its run instants, and each endpoint's own instant in local time.

Pinpoint (botocore `pinpoint` 2016-12-01, Schedule): `StartTime` is IMMEDIATE or an
ISO-8601 time, `Frequency` ONCE, HOURLY, DAILY, WEEKLY, MONTHLY or EVENT, `EndTime` ends
the recurrence, and `IsLocalTime` delivers at the scheduled clock time in each endpoint's
`Demographic.Timezone`, with `Timezone` the offset the start time is written for. An
endpoint without a valid time zone is not targeted by a local-time campaign (user guide,
campaigns-troubleshooting) and is counted under ENDPOINT_MISSING_TIMEZONE.

Homing's decisions where the documents are silent:

- IMMEDIATE starts when the campaign is created (`created`); a recurring IMMEDIATE
  campaign recurs from there.
- Runs are `StartTime + n * period`, up to and including `EndTime`. MONTHLY keeps the
  start's day of the month, or the month's last day when it has fewer days (a campaign
  started on 31 January runs on 28 February, then 31 March), and its clock time, both
  read in the `Timezone` offset (UTC when not given).
- The scheduled clock time is the run's time read in the `Timezone` offset. For a local
  -time campaign it is then read in the endpoint's zone: 09:00 at UTC-05 becomes 09:00 in
  Paris. A clock time that a DST change skips is sent at the change, when the clock jumps
  past it (02:30 goes at 03:00); one that a DST change repeats at its first reading.
- EVENT campaigns have no runs: events trigger them (`event_filter`).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from homing.wire import parse_timestamp

from .campaign_shapes import IMMEDIATE, Schedule, utc_offset

PERIODS = {
    "HOURLY": timedelta(hours=1),
    "DAILY": timedelta(days=1),
    "WEEKLY": timedelta(weeks=1),
}


def start_time(schedule: Schedule, *, created: datetime) -> datetime:
    """The first run's instant: `StartTime`, or `created` for IMMEDIATE."""
    if schedule.StartTime == IMMEDIATE:
        return created
    return parse_timestamp(schedule.StartTime, "StartTime")


def end_time(schedule: Schedule) -> datetime | None:
    return None if schedule.EndTime is None else parse_timestamp(schedule.EndTime, "EndTime")


def run_times(schedule: Schedule, *, created: datetime) -> Iterator[datetime]:
    """Every run instant in order; endless for a recurring campaign without `EndTime`."""
    frequency = schedule.Frequency or "ONCE"
    if frequency in ("EVENT", "IN_APP_EVENT"):
        return
    start, end = start_time(schedule, created=created), end_time(schedule)
    n = 0
    while True:
        run = _nth_run(schedule, start, n)
        if run is None or (end is not None and run > end):
            return
        yield run
        if frequency == "ONCE":
            return
        n += 1


def next_run(schedule: Schedule, after: datetime, *, created: datetime) -> datetime | None:
    """The first run strictly after `after`, or None when the campaign has no more.

    >>> s = Schedule(StartTime="2026-01-31T09:00:00Z", Frequency="MONTHLY")
    >>> after = datetime(2026, 2, 1, tzinfo=timezone.utc)
    >>> next_run(s, after, created=after).isoformat()
    '2026-02-28T09:00:00+00:00'
    """
    frequency = schedule.Frequency or "ONCE"
    if frequency in ("EVENT", "IN_APP_EVENT"):
        return None
    start, end = start_time(schedule, created=created), end_time(schedule)
    if after < start:
        n = 0
    elif frequency == "ONCE":
        return None
    elif frequency == "MONTHLY":
        wall = start.astimezone(_offset(schedule))
        later = after.astimezone(_offset(schedule))
        n = max(0, (later.year - wall.year) * 12 + later.month - wall.month - 1)
    else:
        n = int((after - start) / PERIODS[frequency])
    run = _nth_run(schedule, start, n)
    while run is not None and run <= after:
        n += 1
        run = _nth_run(schedule, start, n)
    return None if run is None or (end is not None and run > end) else run


def runs_between(
    schedule: Schedule, after: datetime, until: datetime, *, created: datetime
) -> list[datetime]:
    """The runs in (`after`, `until`]: those due since the scheduler last looked, such as
    the ones missed while the collector was down."""
    runs = []
    run = next_run(schedule, after, created=created)
    while run is not None and run <= until:
        runs.append(run)
        run = next_run(schedule, run, created=created)
    return runs


def endpoint_zone(name: object) -> ZoneInfo | None:
    """An endpoint's `Demographic.Timezone` as an IANA zone, or None when it is missing
    or not a zone this machine knows."""
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    return _zone(name)


# The clocks that read a time first and last: UTC+14 (Kiribati) and UTC-12.
_FIRST_ZONE = timedelta(hours=14)
_LAST_ZONE = timedelta(hours=-12)


def local_spread(schedule: Schedule) -> tuple[timedelta, timedelta]:
    """How long before, and after, a run's instant its clock time comes somewhere on Earth:
    a local-time run starts that long ahead, so that the first zones get it on time, and
    is late only that long after. (0, 0) unless the campaign runs in local time.

    >>> local_spread(Schedule(StartTime="IMMEDIATE", IsLocalTime=True, Timezone="UTC-05"))
    (datetime.timedelta(seconds=68400), datetime.timedelta(seconds=25200))
    """
    if not schedule.IsLocalTime or schedule.Frequency == "EVENT":
        return timedelta(0), timedelta(0)
    offset = _offset(schedule).utcoffset(None)
    return _FIRST_ZONE - offset, offset - _LAST_ZONE


def local_instant(run: datetime, schedule: Schedule, zone: ZoneInfo) -> datetime:
    """When a local-time campaign's `run` reaches an endpoint in `zone`: the same clock
    time as the run has in the schedule's `Timezone` offset, read in `zone`."""
    return clock_instant(run.astimezone(_offset(schedule)).replace(tzinfo=None), zone)


def clock_instant(wall: datetime, zone: ZoneInfo, *, after: datetime | None = None) -> datetime:
    """The first instant (after `after`, when given) at which the clocks in `zone` read
    the naive time `wall`, or jump past it."""
    first = wall.replace(tzinfo=zone).astimezone(timezone.utc)
    if first.astimezone(zone).replace(tzinfo=None) != wall:
        # A DST change skips `wall`: the change itself, when the clock jumps past it.
        return offset_change(
            zone, wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc), first
        )
    if after is None or first > after:
        return first
    # A DST change repeats `wall` and `after` is in the repeat: its second reading.
    return wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)


def offset_change(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first second in (`before`, `after`] with the offset `after` has in `zone`."""
    offset = after.astimezone(zone).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            after = middle
        else:
            before = middle
    return after.replace(microsecond=0)


def _nth_run(schedule: Schedule, start: datetime, n: int) -> datetime | None:
    """The run `n` periods after `start`; None past the year 9999."""
    frequency = schedule.Frequency or "ONCE"
    try:
        if frequency == "MONTHLY":
            return add_months(start.astimezone(_offset(schedule)), n).astimezone(start.tzinfo)
        if frequency == "ONCE":
            return start
        return start + n * PERIODS[frequency]
    except (OverflowError, ValueError):
        return None


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and clock time `months` later, or that month's last day."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _offset(schedule: Schedule) -> timezone:
    return utc_offset(schedule.Timezone or "UTC")


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
