"""Local days as runs of UTC hours, the rollups' buckets."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

MAX_DAYS = 366
HOUR_MS = 3_600_000


class ParamError(ValueError):
    """A query parameter breaks a rule; the message starts with its name."""


@dataclass(frozen=True)
class Grid:
    """Consecutive local days from `first`; day i is UTC hours [bounds[i], bounds[i+1])."""

    first: date
    bounds: list[int]

    @property
    def days(self) -> int:
        return len(self.bounds) - 1

    def date(self, index: int) -> date:
        return self.first + timedelta(days=index)

    def lo(self, index: int) -> int:
        return self.bounds[max(0, min(index, self.days))]

    def day_of_hour(self, hour: int) -> int:
        """The index of the day holding `hour`; -1 before the grid, `days` after it."""
        return bisect.bisect_right(self.bounds, hour) - 1

    def day_of_ms(self, ms: int) -> int:
        """The index of the day holding a moment; exact to the millisecond."""
        return self.day_of_hour(ms // HOUR_MS)


def grid(zone: ZoneInfo, first: date, last: date, *, name: str = "tz") -> Grid:
    """Days `first`..`last` inclusive in `zone`; ParamError if a midnight is not on a UTC
    hour (a zone with a half-hour offset)."""
    bounds = []
    day = first
    while day <= last + timedelta(days=1):
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        seconds = int(midnight.timestamp())
        if seconds % 3600:
            raise ParamError(
                f"{name}: {zone.key!r} is {_offset(midnight)} from UTC on {day}; only zones "
                "with whole-hour offsets are supported"
            )
        bounds.append(seconds // 3600)
        day += timedelta(days=1)
    return Grid(first, bounds)


def _offset(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta()
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
