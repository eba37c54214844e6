"""The analytics routes' query parameters, checked; a bad one raises ParamError naming it."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from homing.wire import whole_number
from homing_collector.analytics.days import MAX_DAYS, ParamError
from homing_collector.storage import endpoint_values

Get = Callable[[str], str | None]
GetList = Callable[[str], Sequence[str]]

DIMENSIONS = tuple(endpoint_values.DIMENSIONS)  # and attribute:<name>
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "=": lambda a, b: a == b,
}
MAX_STEPS = 10
MAX_WINDOW = 90 * 86400
# The dates a range may name. The queries reach 29 days before a start (usage's lookback),
# 30 days after an end (retention) and the day after that; within these bounds every such
# date stays in datetime's years 1 to 9999, and no event is older than the epoch.
FIRST_DATE = date(1970, 1, 1)
LAST_DATE = date(9998, 12, 31)


@dataclass(frozen=True)
class Range:
    start: date
    end: date
    zone: ZoneInfo
    by: str  # "users" or "endpoints"
    today: date

    @property
    def tz(self) -> str:
        return self.zone.key

    def head(self) -> dict[str, str]:
        return {"start": str(self.start), "end": str(self.end), "tz": self.tz, "by": self.by}


@dataclass(frozen=True)
class MetricFilter:
    name: str
    op: str
    value: float

    def test(self, metrics: dict[str, float]) -> bool:
        got = metrics.get(self.name)
        return got is not None and OPERATORS[self.op](got, self.value)


@dataclass(frozen=True)
class EventFilters:
    event_types: tuple[str, ...] = ()
    breakdown: str | None = None
    include: tuple[tuple[str, frozenset[str]], ...] = ()
    exclude: tuple[tuple[str, frozenset[str]], ...] = ()
    metrics: tuple[MetricFilter, ...] = ()

    @property
    def needs_scan(self) -> bool:
        return bool(self.breakdown or self.include or self.exclude or self.metrics)

    def keep(self, attributes: dict[str, str], metrics: dict[str, float]) -> bool:
        for name, values in self.include:
            if attributes.get(name) not in values:
                return False
        for name, values in self.exclude:
            if attributes.get(name) in values:
                return False
        return all(f.test(metrics) for f in self.metrics)


@dataclass(frozen=True)
class Step:
    event_type: str
    attributes: tuple[tuple[str, str], ...] = field(default=())

    def matches(self, event_type: str, attributes: dict[str, str]) -> bool:
        return event_type == self.event_type and all(
            attributes.get(name) == value for name, value in self.attributes
        )


def parse_range(get: Get, now: datetime | None = None) -> Range:
    tz_name = get("tz") or "UTC"
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ParamError(f"tz: {tz_name[:60]!r} is not an IANA time zone name") from None
    today = (now or datetime.now(zone)).astimezone(zone).date()
    end = _date(get, "end") or today
    start = _date(get, "start") or end - timedelta(days=29)
    check_span(start, end, "start", "end")
    by = get("by") or "users"
    if by not in ("users", "endpoints"):
        raise ParamError(f"by: must be users or endpoints, not {by[:40]!r}")
    return Range(start, end, zone, by, today)


def check_date(day: date, name: str) -> date:
    if not FIRST_DATE <= day <= LAST_DATE:
        raise ParamError(f"{name}: {day} is not a date from {FIRST_DATE} to {LAST_DATE}")
    return day


def check_span(start: date, end: date, start_name: str, end_name: str) -> None:
    """A range of days must run forward and hold at most MAX_DAYS."""
    if start > end:
        raise ParamError(f"{start_name}: {start} is after {end_name} ({end})")
    if (end - start).days + 1 > MAX_DAYS:
        raise ParamError(
            f"{start_name}: the range is {(end - start).days + 1} days; at most {MAX_DAYS}"
        )


def _date(get: Get, name: str) -> date | None:
    raw = get(name)
    if raw is None or raw == "":
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError
        day = date.fromisoformat(raw)
    except ValueError:
        raise ParamError(f"{name}: {raw[:40]!r} is not a date as YYYY-MM-DD") from None
    return check_date(day, name)


def parse_dimension(get: Get) -> str:
    raw = get("dimension") or ""
    if raw in DIMENSIONS or (raw.startswith("attribute:") and len(raw) > len("attribute:")):
        return raw
    raise ParamError(
        f"dimension: must be one of {', '.join(DIMENSIONS)} or attribute:<name>, not {raw[:60]!r}"
    )


def _attribute_values(raw: str, name: str) -> tuple[str, frozenset[str]]:
    attribute, sep, values = raw.partition(":")
    if not sep or not attribute or not values:
        raise ParamError(f"{name}: {raw[:60]!r} must be <attribute>:<value>[,<value>...]")
    return attribute, frozenset(values.split(","))


_METRIC = re.compile(r"([^<>=!]+)(>=|<=|!=|>|<|=)(.+)")


def _metric_filter(raw: str) -> MetricFilter:
    match = _METRIC.fullmatch(raw)
    value = None
    if match:
        try:
            value = float(match.group(3))
        except ValueError:
            value = None
    if match is None or value is None or not math.isfinite(value):
        raise ParamError(
            f"metric: {raw[:60]!r} must be <name><op><number>, op one of >, >=, <, <=, =, !="
        )
    return MetricFilter(match.group(1), match.group(2), value)


def parse_event_filters(get: Get, get_list: GetList) -> EventFilters:
    breakdown = get("breakdown")
    if breakdown == "":
        raise ParamError("breakdown: must name an event attribute")
    return EventFilters(
        event_types=tuple(t for t in get_list("event_type") if t),
        breakdown=breakdown,
        include=tuple(_attribute_values(raw, "include") for raw in get_list("include")),
        exclude=tuple(_attribute_values(raw, "exclude") for raw in get_list("exclude")),
        metrics=tuple(_metric_filter(raw) for raw in get_list("metric")),
    )


def parse_steps(get_list: GetList) -> list[Step]:
    steps = []
    for raw in get_list("step"):
        event_type, *conditions = raw.split(";")
        if not event_type:
            raise ParamError(f"step: {raw[:60]!r} must start with an event type")
        attributes = []
        for condition in conditions:
            name, sep, value = condition.partition("=")
            if not sep or not name:
                raise ParamError(f"step: {condition[:60]!r} must be <attribute>=<value>")
            attributes.append((name, value))
        steps.append(Step(event_type, tuple(attributes)))
    if not 2 <= len(steps) <= MAX_STEPS:
        raise ParamError(f"step: give from 2 to {MAX_STEPS} steps, not {len(steps)}")
    return steps


def parse_window(get: Get) -> int:
    window = whole_number(get("window") or "86400")
    if window is None or not 1 <= window <= MAX_WINDOW:
        raise ParamError(f"window: must be a whole number of seconds from 1 to {MAX_WINDOW}")
    return window
