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
a change sets the clock back before `Start`, it ends at the change; where a change
repeats the window's hours, a message due in the repeat waits again.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from .campaign_shapes import QuietTime
from .schedule import clock_instant, offset_change


def quiet_until(quiet: QuietTime | None, at: datetime, zone: ZoneInfo | None) -> datetime | None:
    """If `at` is inside the quiet window for an endpoint in `zone`, the instant the window
    ends (UTC); None when the message may go at `at`.

    >>> from datetime import timezone
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
        # Across midnight: the window ends tomorrow, unless the clock is set back tonight
        # and reads End again today (Paris, 02:59 CEST back to 02:00 CET, End 02:30).
        if clock_instant(datetime.combine(day, end), zone, after=at) <= at:
            day += timedelta(days=1)
    elif now >= end:
        return None
    until = clock_instant(datetime.combine(day, end), zone, after=at)
    if at.astimezone(zone).utcoffset() != until.astimezone(zone).utcoffset():
        # A DST change before End may set the clock back before Start, out of the window
        # (Paris, 03:00 back to 02:00, for a window of 02:45 to 03:00).
        change = offset_change(zone, at, until)
        if change < until and quiet_until(quiet, change, zone) is None:
            return change
    # A DST change may jump the clock past End and Start at once, back into the window.
    return quiet_until(quiet, until, zone) or until


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
