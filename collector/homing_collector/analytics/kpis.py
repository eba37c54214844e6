"""Pinpoint's GetApplicationDateRangeKpi: push KPIs, and usage KPIs under Homing's names."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from homing.wire import WireError, format_timestamp, parse_timestamp, whole_number
from homing_collector.analytics import opens, queries
from homing_collector.analytics.days import HOUR_MS, ParamError, grid
from homing_collector.analytics.params import (
    FIRST_DATE,
    LAST_DATE,
    Get,
    Range,
    check_date,
    check_span,
)
from homing_collector.storage.analytics_backend import Connection

GROUPED = "-grouped-by-date"
UTC = ZoneInfo("UTC")

# name -> (value key, source): "push" KPIs from push messages and opens, the others from
# the usage query with by=users or by=endpoints.
_KPIS: dict[str, tuple[str, str]] = {
    "successful-delivery-rate": ("SuccessfulDeliveryRate", "push"),
    "unique-deliveries": ("UniqueDeliveries", "push"),
    "push-open-rate": ("PushOpenRate", "push"),
    "homing-daily-active-users": ("DailyActiveUsers", "users"),
    "homing-daily-active-endpoints": ("DailyActiveEndpoints", "endpoints"),
    "homing-monthly-active-users": ("MonthlyActiveUsers", "users"),
    "homing-monthly-active-endpoints": ("MonthlyActiveEndpoints", "endpoints"),
    "homing-sticky-factor": ("StickyFactor", "users"),
    "homing-new-users": ("NewUsers", "users"),
    "homing-sessions": ("Sessions", "users"),
}
NAMES = tuple(sorted([*_KPIS, *(name + GROUPED for name in _KPIS)]))
# GetCampaignDateRangeKpi: the push KPIs, of one campaign's messages.
CAMPAIGN_NAMES = tuple(name for name in NAMES if _KPIS[name.removesuffix(GROUPED)][1] == "push")


def known(name: str) -> bool:
    return name.removesuffix(GROUPED) in _KPIS


def parse_times(get: Get, now: datetime | None = None) -> tuple[date, date]:
    moments = {}
    for name in ("start-time", "end-time"):
        raw = get(name)
        if raw is not None:  # given empty is not left out
            try:
                moment = parse_timestamp(raw, name)
                moments[name] = check_date(moment.astimezone(timezone.utc).date(), name)
            except WireError as exc:
                raise ParamError(str(exc)) from None
            except OverflowError:  # 9999-12-31T23:59:59-14:00 is in the year 10000 in UTC
                raise ParamError(
                    f"{name}: {raw[:40]!r} is not a moment from {FIRST_DATE} to {LAST_DATE}"
                ) from None
    end = moments.get("end-time") or (now or datetime.now(timezone.utc)).date()
    start = moments.get("start-time") or end - timedelta(days=6)
    check_span(start, end, "start-time", "end-time")
    page_size = get("page-size")
    if page_size is not None and (whole_number(page_size) or 0) < 1:
        raise ParamError("page-size: must be a whole number, 1 or more")
    return start, end


def _push_days(
    conn: Connection, app_id: str, start: date, end: date, campaign_id: str | None
) -> list[dict[str, float]]:
    g = grid(UTC, start, end)
    lo_ms, hi_ms = g.lo(0) * HOUR_MS, g.lo(g.days) * HOUR_MS
    days: list[dict[str, Any]] = [
        {"sent": 0, "delivered": 0, "opened": 0, "endpoints": set()} for _ in range(g.days)
    ]
    for endpoint_id, campaign, created, delivered_at in queries.push_messages(
        conn, app_id, lo_ms, hi_ms
    ):
        if campaign_id is not None and campaign != campaign_id:
            continue
        day = days[g.day_of_ms(created)]
        day["sent"] += 1
        if delivered_at is not None:
            day["delivered"] += 1
            day["endpoints"].add(endpoint_id)
    for _endpoint, ts, campaign in opens.in_range(conn, app_id, lo_ms, hi_ms):
        if campaign_id is None or campaign == campaign_id:
            days[g.day_of_ms(ts)]["opened"] += 1
    return days


def _push_value(key: str, days: list[dict[str, Any]]) -> float:
    sent = sum(d["sent"] for d in days)
    delivered = sum(d["delivered"] for d in days)
    if key == "SuccessfulDeliveryRate":
        return delivered / sent if sent else 0.0
    if key == "PushOpenRate":
        return sum(d["opened"] for d in days) / delivered if delivered else 0.0
    endpoints: set[str] = set()
    for d in days:
        endpoints |= d["endpoints"]
    return float(len(endpoints))


_USAGE_DAY: dict[str, str] = {
    "DailyActiveUsers": "active",
    "DailyActiveEndpoints": "active",
    "MonthlyActiveUsers": "mau",
    "MonthlyActiveEndpoints": "mau",
    "StickyFactor": "sticky_factor",
    "NewUsers": "new",
    "Sessions": "sessions",
}
_USAGE_SUMMARY: dict[str, str] = {
    "DailyActiveUsers": "avg_daily_active",
    "DailyActiveEndpoints": "avg_daily_active",
    "MonthlyActiveUsers": "mau",
    "MonthlyActiveEndpoints": "mau",
    "StickyFactor": "sticky_factor",
    "NewUsers": "new",
    "Sessions": "sessions",
}


def _row(key: str, value: float | None, day: str | None) -> dict[str, Any]:
    grouped = [] if day is None else [{"Key": "Date", "Type": "String", "Value": day}]
    number = float(value or 0.0)
    return {"GroupedBys": grouped, "Values": [{"Key": key, "Type": "Double", "Value": str(number)}]}


def date_range_kpi(
    conn: Connection,
    app_id: str,
    name: str,
    start: date,
    end: date,
    *,
    campaign_id: str | None = None,
) -> dict[str, Any]:
    """The application's KPI, or with `campaign_id` the campaign's (a push KPI)."""
    grouped = name.endswith(GROUPED)
    key, source = _KPIS[name.removesuffix(GROUPED)]
    rows = []
    if source == "push":
        days = _push_days(conn, app_id, start, end, campaign_id)
        if grouped:
            rows = [
                _row(key, _push_value(key, [d]), str(start + timedelta(days=i)))
                for i, d in enumerate(days)
            ]
        else:
            rows = [_row(key, _push_value(key, days), None)]
    else:
        q = Range(start, end, UTC, source, end)
        answer = queries.usage(conn, app_id, q)
        if grouped:
            field = _USAGE_DAY[key]
            rows = [_row(key, day[field], day["date"]) for day in answer["days"]]
        else:
            rows = [_row(key, answer["summary"][_USAGE_SUMMARY[key]], None)]
    begin = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    finish = datetime(end.year, end.month, end.day, tzinfo=timezone.utc)
    return {
        "ApplicationId": app_id,
        **({} if campaign_id is None else {"CampaignId": campaign_id}),
        "KpiName": name,
        "StartTime": format_timestamp(begin),
        "EndTime": format_timestamp(finish),
        "KpiResult": {"Rows": rows},
    }
