"""Quiet time: the daily window, in the endpoint's local time, when no message is sent.

Pinpoint (botocore `pinpoint` 2016-12-01, Schedule.QuietTime): quiet time applies only
when the endpoint's `Demographic.Timezone` is valid and its local time is at or after
`Start` and at or before `End`; otherwise the message goes out. Pinpoint then drops the
message; Homing holds it until the window ends (`delivery` drops it only when that passes
`MaximumDuration`).

Homing's decisions: `Start` later than `End` is a window across midnight (22:00 to
07:00); the window ends at `End` exactly, so a message due at 07:00 is sent at 07:00;
`Start` equal to `End` is no window. Across DST changes the window is read as Pinpoint's
rule reads it, by the clock: where a change skips `End`, the window ends at the change,
when the clock jumps past `End` (unless it lands past `Start`, back in the window); where
a change repeats the window's hours, a message due in the repeat waits again.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from .campaign_shapes import QuietTime


def quiet_until(quiet: QuietTime | None, at: datetime, zone: ZoneInfo | None) -> datetime | None:
    """If `at` is inside the quiet window for an endpoint in `zone`, the instant the window
    ends (UTC); None when the message may go at `at`.

    >>> from zoneinfo import ZoneInfo
    >>> night = QuietTime(Start="22:00", End="07:00")
    >>> at = datetime(2026, 12, 6, 22, 30, tzinfo=timezone.utc)  # 23:30 in Paris
    >>> quiet_until(night, at, ZoneInfo("Europe/Paris")).isoformat()
    '2026-12-07T06:00:00+00:00'
    """
    if quiet is None or quiet.Start is None or quiet.End is None or zone is None:
        return None
    start, end = _clock(quiet.Start), _clock(quiet.End)
    if start == end:
        return None
    local = at.astimezone(zone)
    now = local.time().replace(tzinfo=None)
    day = local.date()
    if start < end:
        if not start <= now < end:
            return None
    elif now >= start:
        day += timedelta(days=1)  # across midnight: the window ends tomorrow
    elif now >= end:
        return None
    until = _first_after(datetime.combine(day, end), zone, at)
    # A DST change may jump the clock past End and Start at once, back into the window.
    return quiet_until(quiet, until, zone) or until


def _first_after(wall: datetime, zone: ZoneInfo, at: datetime) -> datetime:
    """The instant after `at` when the clocks in `zone` read `wall`, or pass it."""
    first = wall.replace(tzinfo=zone).astimezone(timezone.utc)
    if first.astimezone(zone).replace(tzinfo=None) != wall:
        # A DST change skips `wall`: the window ends at the change, the first instant
        # whose clock time is past it.
        return _change(zone, wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc), first)
    if first > at:
        return first
    # A DST change repeats `wall` and `at` is in the repeat: the second time it is read.
    return wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)


def _change(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first second in (`before`, `after`] with the offset `after` has."""
    offset = after.astimezone(zone).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            after = middle
        else:
            before = middle
    return after.replace(microsecond=0)


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
