"""The analytics routes' query parameters and answers (the dashboard's JSON API)."""

from __future__ import annotations

import functools
import zoneinfo
from typing import TYPE_CHECKING, Annotated, Literal

from msgspec import Meta, Struct

from homing_collector.analytics.days import MAX_DAYS
from homing_collector.analytics.params import (
    DIMENSIONS,
    FIRST_DATE,
    LAST_DATE,
    MAX_STEPS,
    MAX_WINDOW,
    OPERATORS,
)
from homing_collector.models.types import Count, Rate, described, whole


@functools.cache
def time_zones() -> tuple[str, ...]:
    """The IANA names `tz` takes: those of this system's time zone database."""
    return tuple(sorted(zoneinfo.available_timezones()))


def _year_at_least(first: int, last: int) -> str:
    """A regex for the 4-digit years from `first` to `last`: 1970 to 9998."""
    assert (first, last) == (1970, 9998), "write the pattern again for new bounds"
    return r"(19[7-9]\d|[2-8]\d{3}|9[0-8]\d{2}|99[0-8]\d|999[0-8])"


Date = Annotated[
    str,
    Meta(
        pattern=described(
            _year_at_least(FIRST_DATE.year, LAST_DATE.year) + r"-\d{2}-\d{2}",
            f"a date as YYYY-MM-DD from {FIRST_DATE} to {LAST_DATE}",
        ),
        extra_json_schema={"format": "date"},
        description=f"YYYY-MM-DD, from {FIRST_DATE} to {LAST_DATE}",
    ),
]
if TYPE_CHECKING:  # an enum read from the system's time zone database
    TimeZone = str
else:
    TimeZone = Literal[time_zones()]
By = Literal["users", "endpoints"]
RANGE_RULES = (
    f"`start` must not be after `end`, and the range holds at most {MAX_DAYS} days; `tz` "
    "must have whole-hour offsets from UTC over the range. Otherwise the answer is 400, "
    "naming the parameter."
)


class RangeQuery(Struct, omit_defaults=True):
    # In the order the parameters are checked, so that the first broken one is named.
    tz: TimeZone | None = None
    end: Date | None = None
    start: Date | None = None
    by: By | None = None


class DemographicsQuery(Struct):
    dimension: Annotated[
        str,
        Meta(
            pattern=whole("|".join(DIMENSIONS) + r"|attribute:[\s\S]+"),
            description="One of " + ", ".join(DIMENSIONS) + ", or attribute:<name>",
        ),
    ]


_OPS = "|".join(sorted(OPERATORS, key=len, reverse=True))


class EventsQuery(RangeQuery, omit_defaults=True):
    event_type: list[str] | None = None
    breakdown: Annotated[str, Meta(min_length=1)] | None = None
    include: list[Annotated[str, Meta(pattern=whole(r"[^:]+:[\s\S]+"))]] | None = None
    exclude: list[Annotated[str, Meta(pattern=whole(r"[^:]+:[\s\S]+"))]] | None = None
    metric: (
        list[
            Annotated[
                str,
                Meta(
                    pattern=whole(rf"[^<>=!]+({_OPS})[\s\S]+"),
                    description="<name><op><number>, op one of " + ", ".join(OPERATORS),
                ),
            ]
        ]
        | None
    ) = None


class FunnelQuery(RangeQuery, omit_defaults=True, kw_only=True):
    step: Annotated[
        list[Annotated[str, Meta(pattern=whole(r"[^;]+(;[^;=]+=[^;]*)*"))]],
        Meta(
            min_length=2,
            max_length=MAX_STEPS,
            description="<event type>[;<attribute>=<value>...], in order",
        ),
    ]
    window: Annotated[int, Meta(ge=1, le=MAX_WINDOW)] | None = None


class KpiQuery(Struct, omit_defaults=True, rename="kebab"):
    start_time: Annotated[str, Meta(extra_json_schema={"format": "date-time"})] | None = None
    end_time: Annotated[str, Meta(extra_json_schema={"format": "date-time"})] | None = None
    next_token: str | None = None
    page_size: Annotated[int, Meta(ge=1)] | None = None


class SessionFigures(Struct, kw_only=True):
    sessions: Count
    sessions_per_active: float | None
    avg_session_seconds: float | None
    median_session_seconds: float | None


class UsageDay(SessionFigures, kw_only=True):
    date: str
    active: Count
    new: Count
    wau: Count
    mau: Count
    sticky_factor: float | None


class UsageSummary(SessionFigures, kw_only=True):
    avg_daily_active: float
    mau: Count
    sticky_factor: float | None
    new: Count


class RangeHead(Struct, kw_only=True):
    start: str
    end: str
    tz: str
    by: str


class AnalyticsUsage(RangeHead, kw_only=True):
    days: list[UsageDay]
    summary: UsageSummary


class Cohort(Struct):
    date: str
    size: Count
    retained: Annotated[list[Rate | None], Meta(max_length=30)]


class RetentionRates(Struct):
    d7: Rate | None
    d14: Rate | None
    d30: Rate | None


class AnalyticsRetention(RangeHead, kw_only=True):
    cohorts: list[Cohort]
    rates: RetentionRates


class DemographicsRow(Struct):
    value: str | None
    endpoints: Count
    users: Count


class AnalyticsDemographics(Struct):
    dimension: str
    rows: list[DemographicsRow]


class EventTypeCount(Struct):
    event_type: str
    count: Count


class EventDay(Struct):
    date: str
    event_type: str
    count: Count


class BreakdownRow(Struct):
    value: str | None
    count: Count


class MetricFigures(Struct):
    name: str
    count: Count
    min: float
    max: float
    avg: float
    sum: float
    per_session_avg: float | None


class AnalyticsEvents(RangeHead, kw_only=True):
    types: list[EventTypeCount]
    series: list[EventDay]
    breakdown: list[BreakdownRow]
    metrics: list[MetricFigures]


class FunnelStep(Struct):
    event_type: str
    attributes: dict[str, str]
    count: Count
    conversion: Rate | None
    drop_off: Rate | None


class AnalyticsFunnel(RangeHead, kw_only=True):
    window: Count
    steps: list[FunnelStep]


class RevenueDay(Struct):
    date: str
    purchases: Count
    revenue: dict[str, float | None]


class AnalyticsRevenue(RangeHead, kw_only=True):
    purchases: Count
    revenue: dict[str, float | None]
    revenue_per_user: dict[str, float | None]
    days: list[RevenueDay]


class CampaignFigures(Struct):
    campaign_id: str
    sent: Count
    delivered: Count
    opened: Count


class CampaignDay(Struct):
    date: str
    sent: Count
    delivered: Count
    opened: Count


class AnalyticsCampaigns(RangeHead, kw_only=True):
    sent: Count
    delivered: Count
    opened: Count
    delivery_rate: Rate | None
    open_rate: float | None
    sessions_after_open: Count
    campaigns: list[CampaignFigures]
    days: list[CampaignDay]


class CampaignHour(Struct):
    hour: Annotated[str, Meta(description="the hour's start, in the range's time zone")]
    sessions: Count


class CampaignViewFigures(Struct, kw_only=True):
    sent: Count
    delivered: Count
    opened: Count
    devices_targeted: Count
    delivery_rate: Rate | None
    open_rate: float | None
    users_opened: Count
    sessions_after_open: Count
    purchases_after_open: Count
    sessions_per_user: float | None
    purchases_per_user: float | None
    sessions_by_hour: list[CampaignHour]


class TreatmentFigures(CampaignViewFigures, kw_only=True):
    treatment_id: str
    treatment_name: str | None


class AnalyticsCampaign(CampaignViewFigures, kw_only=True):
    start: str
    end: str
    tz: str
    by: str
    campaign_id: str
    name: str | None
    treatments: list[TreatmentFigures]


class KpiValue(Struct):
    Key: str
    Type: str
    Value: str


class KpiRow(Struct):
    GroupedBys: list[KpiValue]
    Values: list[KpiValue]


class KpiResult(Struct):
    Rows: list[KpiRow]


class ApplicationDateRangeKpiResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    KpiName: str
    StartTime: str
    EndTime: str
    KpiResult: KpiResult
    NextToken: str | None = None


class CampaignDateRangeKpiResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    CampaignId: str
    KpiName: str
    StartTime: str
    EndTime: str
    KpiResult: KpiResult
    NextToken: str | None = None
