"""Every analytics figure against a brute-force computation over the raw generated events.

The data (analytics_data.py) goes through PutEvents on a live collector, with late uploads
and resent batches; then an endpoint and a user are deleted. The expected figures are
computed here in plain Python from the generated events that remain, never from the
rollups.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import statistics
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from homing_collector.analytics import kpis
from tests.collector import analytics_data as gen
from tests.conftest import App, LiveCollector, live_on, sql

START, END = date(2026, 9, 1), date(2026, 10, 31)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put_events(live: LiveCollector, app: App, events: dict[str, Any]) -> dict[str, int]:
    """PutEvents for one endpoint, "dev"; the status of each event."""
    response = httpx.post(
        f"{live.url}/v1/apps/{app.id}/events",
        json={"BatchItem": {"dev": {"Endpoint": {}, "Events": events}}},
        headers=bearer(app.ingest.token),
        timeout=30,
    )
    assert response.status_code == 202, response.text
    statuses = response.json()["Results"]["dev"]["EventsItemResponse"]
    return {event_id: status["StatusCode"] for event_id, status in statuses.items()}


class World:
    def __init__(self, live: LiveCollector, app: App, data: gen.Data, deleted: set[str]) -> None:
        self.live, self.app, self.data = live, app, data
        self.devices = {d.endpoint_id: d for d in data.devices if d.endpoint_id not in deleted}
        self.events = [e for e in data.events if e.endpoint_id not in deleted]

    def get(self, route: str, **params: Any) -> dict[str, Any]:
        response = httpx.get(
            f"{self.live.url}/v1/apps/{self.app.id}/analytics/{route}",
            params=params,
            headers=bearer(self.app.admin.token),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def subject(self, endpoint_id: str, by: str) -> str:
        if by == "endpoints":
            return endpoint_id
        user = self.devices[endpoint_id].user_id
        return "e:" + endpoint_id if user is None else "u:" + user


@pytest.fixture(scope="module")
def world(collector: LiveCollector) -> World:
    app = collector.create_app("analytics")
    data = gen.generate()
    devices = {d.endpoint_id: d for d in data.devices}
    with httpx.Client(base_url=collector.url, headers=bearer(app.ingest.token)) as client:
        for body in gen.batches(data.events + data.resent, devices):
            response = client.post(f"/v1/apps/{app.id}/events", json=body, timeout=30)
            assert response.status_code == 202, response.text
            for item in response.json()["Results"].values():
                assert all(s["StatusCode"] == 202 for s in item["EventsItemResponse"].values())
    # Delete one endpoint without a user, one endpoint of a user with two, and a user.
    alone = next(d for d in data.devices if d.user_id is None)
    pair = next(d for d in data.devices if d.user_id is not None)
    doomed_user = next(
        d.user_id for d in reversed(data.devices) if d.user_id and d.user_id != pair.user_id
    )
    admin = bearer(app.admin.token)
    for path in (f"endpoints/{alone.endpoint_id}", f"endpoints/{pair.endpoint_id}",
                 f"users/{doomed_user}"):  # fmt: skip
        response = httpx.delete(f"{collector.url}/v1/apps/{app.id}/{path}", headers=admin)
        assert response.status_code == 202, response.text
    deleted = {alone.endpoint_id, pair.endpoint_id}
    deleted |= {d.endpoint_id for d in data.devices if d.user_id == doomed_user}
    sibling = [d for d in data.devices if d.user_id == pair.user_id and d is not pair]
    assert sibling, "the data must have a user with two endpoints"
    return World(collector, app, data, deleted)


# -- brute force ------------------------------------------------------------------------


def local_date(ts_ms: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, zone).date()


def days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def raw_sessions(w: World) -> list[tuple[str, int, int]]:
    spans: dict[tuple[str, str], list[int]] = {}
    for e in w.events:
        session = e.body["Session"]
        start = gen.ms(datetime.fromisoformat(session["StartTimestamp"].replace("Z", "+00:00")))
        stop = e.ts
        if "StopTimestamp" in session:
            stop = gen.ms(datetime.fromisoformat(session["StopTimestamp"].replace("Z", "+00:00")))
        span = spans.setdefault((e.endpoint_id, session["Id"]), [start, stop])
        span[0], span[1] = min(span[0], start), max(span[1], stop)
    return [(endpoint, a, b) for (endpoint, _), (a, b) in spans.items()]


def merged(w: World) -> list[tuple[str, int, int]]:
    out: list[list[Any]] = []
    for endpoint, start, stop in sorted(raw_sessions(w)):
        if out and out[-1][0] == endpoint and start - out[-1][2] <= 5000:
            out[-1][2] = max(out[-1][2], stop)
        else:
            out.append([endpoint, start, stop])
    return [(a, b, c) for a, b, c in out]


def expected_usage(w: World, start: date, end: date, tz: str, by: str) -> dict[str, Any]:
    zone = ZoneInfo(tz)
    active: dict[date, set[str]] = {}
    first: dict[str, date] = {}
    for e in w.events:
        day, who = local_date(e.ts, zone), w.subject(e.endpoint_id, by)
        active.setdefault(day, set()).add(who)
        first[who] = min(first.get(who, day), day)
    lengths: dict[date, list[float]] = {}
    for _endpoint, a, b in merged(w):
        lengths.setdefault(local_date(a, zone), []).append((b - a) / 1000)
    rows = []
    for day in days(start, end):

        def window(n: int, day: date = day) -> set[str]:
            return set().union(*(active.get(day - timedelta(days=i), set()) for i in range(n)))

        dau, mau = len(active.get(day, ())), len(window(30))
        ls = lengths.get(day, [])
        rows.append({
            "date": str(day), "active": dau, "new": sum(1 for d in first.values() if d == day),
            "wau": len(window(7)), "mau": mau, "sticky_factor": dau / mau if mau else None,
            "sessions": len(ls), "sessions_per_active": len(ls) / dau if dau else None,
            "avg_session_seconds": statistics.mean(ls) if ls else None,
            "median_session_seconds": statistics.median(ls) if ls else None,
        })  # fmt: skip
    every = [x for day in days(start, end) for x in lengths.get(day, [])]
    avg = sum(r["active"] for r in rows) / len(rows)
    total_active = sum(r["active"] for r in rows)
    summary = {
        "avg_daily_active": avg, "mau": rows[-1]["mau"],
        "sticky_factor": avg / rows[-1]["mau"] if rows[-1]["mau"] else None,
        "new": sum(r["new"] for r in rows), "sessions": len(every),
        "sessions_per_active": len(every) / total_active if total_active else None,
        "avg_session_seconds": statistics.mean(every) if every else None,
        "median_session_seconds": statistics.median(every) if every else None,
    }  # fmt: skip
    return {"days": rows, "summary": summary}


def close(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, x) in enumerate(zip(got, want, strict=True)):
            close(g, x, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=2e-3), where
    else:
        assert got == want, where


RANGES = [
    (START, END, "UTC"),
    (date(2026, 10, 1), date(2026, 10, 31), "Europe/Berlin"),  # DST ends on October 25
    (date(2026, 9, 10), date(2026, 10, 9), "Asia/Tokyo"),
    (date(2026, 9, 20), date(2026, 10, 19), "America/Los_Angeles"),
    # Two hours of daylight saving time: windows the coverage deltas do not keep.
    (date(2026, 10, 10), date(2026, 10, 31), "Antarctica/Troll"),
]


@pytest.mark.parametrize("by", ["users", "endpoints"])
@pytest.mark.parametrize(("start", "end", "tz"), RANGES)
def test_usage_matches_brute_force(world: World, start: date, end: date, tz: str, by: str) -> None:
    got = world.get("usage", start=str(start), end=str(end), tz=tz, by=by)
    want = expected_usage(world, start, end, tz, by)
    assert got["start"] == str(start) and got["tz"] == tz and got["by"] == by
    assert sum(d["active"] for d in want["days"]) > 0 and want["summary"]["sessions"] > 0
    # Medians come from a histogram of 5%-wide buckets: within 2.5% of the exact value.
    for got_row, want_row in [*zip(got["days"], want["days"], strict=True),
                              (got["summary"], want["summary"])]:  # fmt: skip
        exact = want_row.pop("median_session_seconds")
        median = got_row.pop("median_session_seconds")
        assert (median is None) == (exact is None)
        if exact is not None:
            assert median == pytest.approx(exact, rel=0.026, abs=0.03), want_row
    close(got["days"], want["days"], "days")
    close(got["summary"], want["summary"], "summary")


@pytest.mark.parametrize("by", ["users", "endpoints"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Asia/Tokyo", "America/Sao_Paulo"])
def test_retention_matches_brute_force(world: World, tz: str, by: str) -> None:
    zone = ZoneInfo(tz)
    start, end = date(2026, 9, 1), date(2026, 9, 30)
    active: dict[str, set[date]] = {}
    for e in world.events:
        active.setdefault(world.subject(e.endpoint_id, by), set()).add(local_date(e.ts, zone))
    cohorts = []
    pooled = {7: [0, 0], 14: [0, 0], 30: [0, 0]}
    for day in days(start, end):
        members = [seen for seen in active.values() if min(seen) == day]
        retained = []
        for k in range(1, 31):
            back = sum(1 for seen in members if day + timedelta(days=k) in seen)
            retained.append(back / len(members) if members else None)
        cohorts.append({"date": str(day), "size": len(members), "retained": retained})
        for n, totals in pooled.items():
            totals[1] += len(members)
            totals[0] += sum(
                1 for seen in members
                if any(day + timedelta(days=k) in seen for k in range(1, n + 1))
            )  # fmt: skip
    got = world.get("retention", start=str(start), end=str(end), tz=tz, by=by)
    assert sum(c["size"] for c in cohorts) > 5
    close(got["cohorts"], cohorts, "cohorts")
    close(got["rates"], {f"d{n}": r / s if s else None for n, (r, s) in pooled.items()}, "rates")


@pytest.mark.parametrize("dimension", ["platform", "country", "make", "attribute:plan"])
def test_demographics_match_the_endpoints(world: World, dimension: str) -> None:
    groups: dict[Any, tuple[set[str], set[str]]] = {}
    for device in world.devices.values():
        if dimension == "attribute:plan":
            value = device.profile["Attributes"]["plan"][0]
        elif dimension == "country":
            value = device.profile.get("Location", {}).get("Country")
        else:
            value = device.profile["Demographic"][dimension.capitalize()]
        endpoints, users = groups.setdefault(value, (set(), set()))
        endpoints.add(device.endpoint_id)
        users.add(world.subject(device.endpoint_id, "users"))
    got = world.get("demographics", dimension=dimension)
    assert {r["value"]: (r["endpoints"], r["users"]) for r in got["rows"]} == {
        value: (len(e), len(u)) for value, (e, u) in groups.items()
    }
    assert [r["endpoints"] for r in got["rows"]] == sorted(
        (r["endpoints"] for r in got["rows"]), reverse=True
    )


def expected_events(
    w: World, start: date, end: date, tz: str, keep: Any = None, breakdown: str | None = None,
    types: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    zone = ZoneInfo(tz)
    totals: dict[str, int] = {}
    series: dict[tuple[str, str], int] = {}
    split: dict[Any, int] = {}
    metrics: dict[str, list[float]] = {}
    for e in w.events:
        day = local_date(e.ts, zone)
        if not start <= day <= end or (types and e.type not in types):
            continue
        attributes, values = e.body.get("Attributes", {}), e.body.get("Metrics", {})
        if keep is not None and not keep(attributes, values):
            continue
        totals[e.type] = totals.get(e.type, 0) + 1
        series[(str(day), e.type)] = series.get((str(day), e.type), 0) + 1
        if breakdown:
            split[attributes.get(breakdown)] = split.get(attributes.get(breakdown), 0) + 1
        for name, value in values.items():
            metrics.setdefault(name, []).append(value)
    sessions = sum(1 for _e, a, _b in merged(w) if start <= local_date(a, zone) <= end)
    return {
        "types": sorted(
            ({"event_type": t, "count": c} for t, c in totals.items()),
            key=lambda r: (-r["count"], r["event_type"]),
        ),
        "series": [
            {"date": d, "event_type": t, "count": c} for (d, t), c in sorted(series.items())
        ],
        "breakdown": sorted(
            ({"value": v, "count": c} for v, c in split.items()),
            key=lambda r: (-r["count"], str(r["value"])),
        ),
        "metrics": [
            {
                "name": name,
                "count": len(vs),
                "min": min(vs),
                "max": max(vs),
                "avg": sum(vs) / len(vs),
                "sum": sum(vs),
                "per_session_avg": sum(vs) / sessions,
            }
            for name, vs in sorted(metrics.items())
        ],
    }


@pytest.mark.parametrize(("start", "end", "tz"), RANGES[:2])
def test_event_counts_and_metrics_match_brute_force(
    world: World, start: date, end: date, tz: str
) -> None:
    got = world.get("events", start=str(start), end=str(end), tz=tz)
    want = expected_events(world, start, end, tz)
    assert len(want["metrics"]) >= 4
    for key in ("types", "series", "breakdown", "metrics"):
        close(got[key], want[key], key)
    one = world.get("events", start=str(start), end=str(end), tz=tz, event_type="level.complete")
    close(one["metrics"], expected_events(world, start, end, tz, types=("level.complete",))[
        "metrics"], "metrics of one type")  # fmt: skip


def test_event_filters_and_breakdown_match_brute_force(world: World) -> None:
    params = httpx.QueryParams(
        [("start", str(START)), ("end", str(END)), ("tz", "Asia/Tokyo"), ("breakdown", "level"),
         ("include", "level:forest,cave"), ("exclude", "screen:cart"), ("metric", "score>=500"),
         ("event_type", "level.complete")]
    )  # fmt: skip
    got = world.get("events", **dict(params.multi_items()))

    def keep(attributes: dict[str, str], metrics: dict[str, float]) -> bool:
        return (
            attributes.get("level") in ("forest", "cave")
            and attributes.get("screen") != "cart"
            and metrics.get("score", -1) >= 500
        )

    want = expected_events(world, START, END, "Asia/Tokyo", keep, "level", ("level.complete",))
    assert want["types"][0]["count"] > 10
    for key in ("types", "series", "breakdown", "metrics"):
        close(got[key], want[key], key)
    # Without the filters the breakdown counts the events without the attribute as null.
    plain = world.get("events", start=str(START), end=str(END), breakdown="level")
    want = expected_events(world, START, END, "UTC", None, "level")
    close(plain["breakdown"], want["breakdown"], "breakdown")
    assert any(row["value"] is None for row in plain["breakdown"])


def test_funnel_matches_brute_force(world: World) -> None:
    steps = [("_session.start", {}), ("screen.view", {"screen": "shop"}),
             ("_monetization.purchase", {})]  # fmt: skip
    window = 600
    for by in ("users", "endpoints"):
        got = httpx.get(
            f"{world.live.url}/v1/apps/{world.app.id}/analytics/funnel",
            params=[("start", str(START)), ("end", str(END)), ("by", by), ("window", window),
                    ("step", "_session.start"), ("step", "screen.view;screen=shop"),
                    ("step", "_monetization.purchase")],
            headers=bearer(world.app.admin.token),
        ).json()  # fmt: skip
        timelines: dict[str, list[gen.Event]] = {}
        for e in world.events:
            timelines.setdefault(world.subject(e.endpoint_id, by), []).append(e)
        reached = [0, 0, 0]
        for events in timelines.values():
            events.sort(key=lambda e: e.ts)
            best = 0
            for i, first in enumerate(events):
                if first.type != steps[0][0]:
                    continue
                depth = 1
                for e in events[i + 1 :]:
                    if e.ts - first.ts > window * 1000 or depth == 3:
                        break
                    kind, attrs = steps[depth]
                    if e.type == kind and all(
                        e.body.get("Attributes", {}).get(k) == v for k, v in attrs.items()
                    ):
                        depth += 1
                best = max(best, depth)
            for k in range(best):
                reached[k] += 1
        assert reached[2] > 0
        assert [s["count"] for s in got["steps"]] == reached
        assert [s["conversion"] for s in got["steps"]] == [
            pytest.approx(r / reached[0], abs=1e-4) for r in reached
        ]
        assert got["steps"][1]["drop_off"] == pytest.approx(1 - reached[1] / reached[0], abs=1e-4)
        assert got["steps"][0]["drop_off"] == 0


@pytest.mark.parametrize("by", ["users", "endpoints"])
@pytest.mark.parametrize(("start", "end", "tz"), RANGES[1:3])
def test_revenue_matches_brute_force(
    world: World, start: date, end: date, tz: str, by: str
) -> None:
    zone = ZoneInfo(tz)
    purchases, revenue, active = 0, {}, set()
    per_day: dict[str, list[Any]] = {}
    for e in world.events:
        day = local_date(e.ts, zone)
        if not start <= day <= end:
            continue
        active.add(world.subject(e.endpoint_id, by))
        if e.type != "_monetization.purchase":
            continue
        currency = e.body["Attributes"].get("_currency", "UNKNOWN")
        m = e.body["Metrics"]
        amount = m["_item_price"] * m.get("_quantity", 1.0)
        purchases += 1
        revenue[currency] = revenue.get(currency, 0.0) + amount
        row = per_day.setdefault(str(day), [0, {}])
        row[0] += 1
        row[1][currency] = row[1].get(currency, 0.0) + amount
    got = world.get("revenue", start=str(start), end=str(end), tz=tz, by=by)
    assert purchases > 10 and "UNKNOWN" in revenue
    assert got["purchases"] == purchases
    close(got["revenue"], revenue, "revenue")
    close(got["revenue_per_user"], {c: v / len(active) for c, v in revenue.items()}, "per user")
    close(got["days"], [{"date": d, "purchases": p, "revenue": r}
                        for d, (p, r) in sorted(per_day.items())], "days")  # fmt: skip


def test_campaign_opens_match_brute_force(world: World) -> None:
    got = world.get("campaigns", start=str(START), end=str(END))
    opens = [e for e in world.events if e.type == "_campaign.opened_notification"]
    starts = raw_sessions(world)
    after = sum(
        1 for o in opens
        if any(ep == o.endpoint_id and o.ts - 60_000 <= a <= o.ts + 1_800_000
               for ep, a, _b in starts)
    )  # fmt: skip
    assert len(opens) > 3
    assert (got["sent"], got["delivered"], got["opened"]) == (0, 0, len(opens))
    assert got["sessions_after_open"] == after
    per: dict[str, int] = {}
    for o in opens:
        per[o.body["Attributes"]["campaign_id"]] = (
            per.get(o.body["Attributes"]["campaign_id"], 0) + 1
        )
    assert {c["campaign_id"]: c["opened"] for c in got["campaigns"]} == per
    assert got["delivery_rate"] is None


def test_boto3_date_range_kpi(world: World) -> None:
    client = world.live.client(world.app.admin)
    usage = expected_usage(world, date(2026, 10, 1), date(2026, 10, 7), "UTC", "users")
    answer = client.get_application_date_range_kpi(
        ApplicationId=world.app.id,
        KpiName="homing-daily-active-users-grouped-by-date",
        StartTime=datetime(2026, 10, 1),
        EndTime=datetime(2026, 10, 7, 23),
    )["ApplicationDateRangeKpiResponse"]
    assert answer["KpiName"] == "homing-daily-active-users-grouped-by-date"
    rows = answer["KpiResult"]["Rows"]
    assert [r["GroupedBys"][0]["Value"] for r in rows] == [d["date"] for d in usage["days"]]
    assert [float(r["Values"][0]["Value"]) for r in rows] == [d["active"] for d in usage["days"]]
    assert rows[0]["Values"][0]["Key"] == "DailyActiveUsers"
    total = client.get_application_date_range_kpi(
        ApplicationId=world.app.id, KpiName="homing-sessions",
        StartTime=datetime(2026, 10, 1), EndTime=datetime(2026, 10, 7),
    )["ApplicationDateRangeKpiResponse"]["KpiResult"]["Rows"]  # fmt: skip
    assert total[0]["GroupedBys"] == []
    assert float(total[0]["Values"][0]["Value"]) == usage["summary"]["sessions"] > 0
    rate = client.get_application_date_range_kpi(
        ApplicationId=world.app.id, KpiName="successful-delivery-rate",
        StartTime=datetime(2026, 10, 1), EndTime=datetime(2026, 10, 7),
    )["ApplicationDateRangeKpiResponse"]["KpiResult"]["Rows"]  # fmt: skip
    assert rate[0]["Values"][0] == {"Key": "SuccessfulDeliveryRate", "Type": "Double",
                                    "Value": "0.0"}  # fmt: skip
    with pytest.raises(client.exceptions.NotFoundException, match="no-such-kpi"):
        client.get_application_date_range_kpi(ApplicationId=world.app.id, KpiName="no-such-kpi")


@pytest.mark.parametrize(
    ("route", "params", "named"),
    [
        ("usage", {"tz": "Mars/Olympus"}, "tz"),
        ("usage", {"tz": "Asia/Kolkata"}, "tz"),
        ("usage", {"start": "2026-13-01"}, "start"),
        ("usage", {"end": "yesterday"}, "end"),
        ("usage", {"start": "2026-10-02", "end": "2026-10-01"}, "start"),
        ("usage", {"start": "2020-01-01", "end": "2026-01-01"}, "start"),
        # Dates at the calendar's edges: the lookback, lookahead and the day after the end
        # would fall off it.
        ("usage", {"start": "9999-12-31"}, "start"),
        ("usage", {"end": "0001-01-01"}, "end"),
        ("usage", {"start": "0001-01-01", "end": "1970-01-05"}, "start"),
        ("usage", {"start": "1969-12-31", "end": "1970-01-05"}, "start"),
        ("usage", {"start": "9999-12-31", "end": "9999-12-31"}, "end"),
        ("usage", {"start": "9998-12-30", "end": "9999-01-01"}, "end"),
        ("events", {"start": "9999-12-31", "end": "9999-12-31"}, "end"),
        ("events", {"end": "0001-01-01"}, "end"),
        ("campaigns", {"start": "9999-12-31", "end": "9999-12-31"}, "end"),
        ("funnel", {"step": ["a", "b"], "start": "9999-12-31", "end": "9999-12-31"}, "end"),
        ("retention", {"start": "9999-12-31", "end": "9999-12-31"}, "end"),
        ("retention", {"end": "0001-01-01"}, "end"),
        ("revenue", {"end": "0001-01-01"}, "end"),
        ("retention", {"by": "devices"}, "by"),
        ("demographics", {"dimension": "shoe_size"}, "dimension"),
        ("events", {"include": "level"}, "include"),
        ("events", {"metric": "score~5"}, "metric"),
        ("events", {"metric": "score>=nan"}, "metric"),
        ("funnel", {"step": "only-one"}, "step"),
        ("funnel", {"step": ["a", "b"], "window": "-3"}, "window"),
        ("funnel", {"step": ["a", "b"], "window": "\u00b2"}, "window"),  # a digit to isdigit()
        ("funnel", {"step": ["a", "b"], "window": "\u0663"}, "window"),  # Arabic-Indic 3
        ("funnel", {"step": ["a", "b"], "window": "9" * 5000}, "window"),  # too long for int()
        # Given but empty is not left out: the OpenAPI document allows no empty value.
        ("revenue", {"by": ""}, "by"),
        ("usage", {"start": ""}, "start"),
        ("usage", {"tz": ""}, "tz"),
        ("funnel", {"step": ["a", "b"], "window": ""}, "window"),
        ("events", {"breakdown": ""}, "breakdown"),
        ("demographics", {"dimension": ""}, "dimension"),
        # No stored text holds a NUL (PostgreSQL's cannot): refused on both backends alike.
        ("funnel", {"step": ["a\x00", "b"]}, "step"),
        ("events", {"breakdown": "level\x00"}, "breakdown"),
        ("events", {"include": "level=a\x00b"}, "include"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    world: World, route: str, params: dict[str, Any], named: str
) -> None:
    response = httpx.get(
        f"{world.live.url}/v1/apps/{world.app.id}/analytics/{route}",
        params=params,
        headers=bearer(world.app.admin.token),
    )
    assert response.status_code == 400, response.text
    assert response.json()["Message"].startswith(f"{named}:")
    assert response.headers["x-amzn-ErrorType"] == "BadRequestException"


def test_analytics_need_an_admin_key(world: World) -> None:
    response = httpx.get(
        f"{world.live.url}/v1/apps/{world.app.id}/analytics/usage",
        headers=bearer(world.app.ingest.token),
    )
    assert response.status_code == 403
    assert "admin" in response.json()["Message"]


def test_rollups_off_stores_events_and_answers_404(
    start_collector: Callable[..., LiveCollector], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMING_ROLLUPS", "0")
    live = start_collector(tmp_path / "off.db")
    app = live.create_app("off")
    data = gen.generate(seed=3, devices=3)
    devices = {d.endpoint_id: d for d in data.devices}
    body = gen.batches(data.events[:100], devices)[0]
    response = httpx.post(
        f"{live.url}/v1/apps/{app.id}/events", json=body, headers=bearer(app.ingest.token)
    )
    assert response.status_code == 202
    response = httpx.get(
        f"{live.url}/v1/apps/{app.id}/analytics/usage", headers=bearer(app.admin.token)
    )
    assert response.status_code == 404
    assert "HOMING_ROLLUPS" in response.json()["Message"]
    with contextlib.closing(sqlite3.connect(live.db)) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (100,)
        assert db.execute("SELECT count(*) FROM an_counts").fetchone() == (0,)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"start-time": "last tuesday"}, "start-time"),
        ({"end-time": "2026-10-01T00:00:00Z", "start-time": "2026-10-02T00:00:00Z"}, "start-time"),
        ({"page-size": "zero"}, "page-size"),
        (
            {"start-time": "9999-12-31T23:59:59-14:00", "end-time": "9999-12-31T23:59:59-14:00"},
            "start-time",
        ),
        ({"end-time": "9999-12-31T23:59:59-14:00"}, "end-time"),
        ({"end-time": "0001-01-01T00:00:00+14:00"}, "end-time"),
        ({"end-time": "0001-01-07T00:00:00Z"}, "end-time"),
        ({"start-time": "1969-12-31T00:00:00Z", "end-time": "1970-01-02T00:00:00Z"}, "start-time"),
        ({"page-size": "\u00b2"}, "page-size"),
        ({"page-size": "9" * 5000}, "page-size"),
    ],
)
def test_bad_kpi_parameters_are_400_naming_them(
    world: World, params: dict[str, str], named: str
) -> None:
    response = httpx.get(
        f"{world.live.url}/v1/apps/{world.app.id}/kpis/daterange/homing-sessions",
        params=params,
        headers=bearer(world.app.admin.token),
    )
    assert response.status_code == 400, response.text
    assert response.json()["Message"].startswith(f"{named}:")


def test_push_figures_come_from_the_push_gateways_messages(collector: LiveCollector) -> None:
    app = collector.create_app("push")
    day = datetime(2026, 10, 5, tzinfo=ZoneInfo("UTC"))
    rows = []
    for i in range(40):
        created = gen.ms(day + timedelta(hours=i))  # two days of messages
        delivered = created + 5000 if i % 4 else None
        campaign = ("spring", "autumn", None)[i % 3]
        rows.append((app.id, f"ep{i % 7}", i, f"m{i}", False, "{}", campaign, created,
                     created + 86_400_000, delivered))  # fmt: skip
    for row in rows:
        sql(collector, "INSERT INTO push_messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    opens = {}
    for i in range(6):
        at = day + timedelta(hours=3 * i, minutes=1)
        opens[f"o{i}"] = {"EventType": "_campaign.opened_notification", "Timestamp": gen.iso(at),
                          "Attributes": {"campaign_id": "spring"}}  # fmt: skip
    response = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/events",
        json={"BatchItem": {"ep1": {"Endpoint": {}, "Events": opens}}},
        headers=bearer(app.ingest.token),
    )
    assert response.status_code == 202
    got = httpx.get(
        f"{collector.url}/v1/apps/{app.id}/analytics/campaigns",
        params={"start": "2026-10-05", "end": "2026-10-06"},
        headers=bearer(app.admin.token),
    ).json()
    delivered = [r for r in rows if r[9] is not None]
    assert (got["sent"], got["delivered"], got["opened"]) == (40, len(delivered), 6)
    assert got["delivery_rate"] == pytest.approx(len(delivered) / 40, abs=1e-4)
    assert got["open_rate"] == pytest.approx(6 / len(delivered), abs=1e-4)
    per = {c["campaign_id"]: (c["sent"], c["delivered"], c["opened"]) for c in got["campaigns"]}
    assert per == {
        name: (sum(1 for r in rows if r[6] == name),
               sum(1 for r in delivered if r[6] == name), 6 if name == "spring" else 0)
        for name in ("spring", "autumn")
    }  # fmt: skip
    assert [(d["date"], d["sent"]) for d in got["days"]] == [("2026-10-05", 24), ("2026-10-06", 16)]

    client = collector.client(app.admin)

    def kpi(name: str) -> list[dict[str, Any]]:
        return client.get_application_date_range_kpi(  # type: ignore[no-any-return]
            ApplicationId=app.id, KpiName=name,
            StartTime=datetime(2026, 10, 5), EndTime=datetime(2026, 10, 6),
        )["ApplicationDateRangeKpiResponse"]["KpiResult"]["Rows"]  # fmt: skip

    assert float(kpi("successful-delivery-rate")[0]["Values"][0]["Value"]) == pytest.approx(
        len(delivered) / 40
    )
    assert float(kpi("unique-deliveries")[0]["Values"][0]["Value"]) == len(
        {r[1] for r in delivered}
    )
    assert float(kpi("push-open-rate")[0]["Values"][0]["Value"]) == pytest.approx(
        6 / len(delivered)
    )
    by_date = kpi("unique-deliveries-grouped-by-date")
    assert [r["GroupedBys"][0]["Value"] for r in by_date] == ["2026-10-05", "2026-10-06"]
    assert [float(r["Values"][0]["Value"]) for r in by_date] == [
        len({r[1] for r in delivered if r[7] < gen.ms(day + timedelta(days=1))}),
        len({r[1] for r in delivered if r[7] >= gen.ms(day + timedelta(days=1))}),
    ]


def test_sessions_that_seem_to_end_before_they_start_are_stored_and_counted(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("clock skew")
    at = "2026-10-05T10:00:00.000Z"

    def put(events: dict[str, Any]) -> dict[str, int]:
        return put_events(collector, app, events)

    # A stop before the start is refused, by name; its neighbour is stored.
    got = put({
        "stop": {"EventType": "_session.stop", "Timestamp": at,
                 "Session": {"Id": "s1", "StartTimestamp": at,
                             "StopTimestamp": "2026-10-05T09:59:00.000Z"}},
        "next": {"EventType": "screen.view", "Timestamp": at,
                 "Session": {"Id": "s2", "StartTimestamp": at}},
    })  # fmt: skip
    assert got == {"stop": 400, "next": 202}
    # An event stamped before its session's start (a device clock set back) is stored,
    # beside another session that starts at the same moment, now and on a later batch.
    early = "2026-10-05T09:59:00.000Z"
    assert put({
        "early": {"EventType": "screen.view", "Timestamp": early,
                  "Session": {"Id": "s3", "StartTimestamp": at}},
        "same": {"EventType": "screen.view", "Timestamp": at,
                 "Session": {"Id": "s4", "StartTimestamp": at}},
    }) == {"early": 202, "same": 202}  # fmt: skip
    assert put({
        "later": {"EventType": "screen.view", "Timestamp": early,
                  "Session": {"Id": "s5", "StartTimestamp": at}},
    }) == {"later": 202}  # fmt: skip
    usage = httpx.get(
        f"{collector.url}/v1/apps/{app.id}/analytics/usage",
        params={"start": "2026-10-05", "end": "2026-10-05"},
        headers=bearer(app.admin.token),
        timeout=30,
    )
    assert usage.status_code == 200, usage.text
    assert usage.json()["days"][0]["active"] == 1


def test_sums_past_the_largest_float_never_fail_a_batch_or_a_deletion(
    collector: LiveCollector,
) -> None:
    """Metric values may be any finite float, so sums can overflow to +inf and -inf, and the
    two added make no number: such a sum counts as 0 instead of failing the write (an
    infinite one is answered as null, as JSON has no infinity)."""
    app = collector.create_app("overflow")
    admin = bearer(app.admin.token)
    at = "2026-10-05T10:00:00.000Z"

    def put(endpoint_id: str, events: dict[str, dict[str, Any]]) -> None:
        response = httpx.post(
            f"{collector.url}/v1/apps/{app.id}/events",
            json={"BatchItem": {endpoint_id: {"Endpoint": {}, "Events": events}}},
            headers=bearer(app.ingest.token),
            timeout=30,
        )
        assert response.status_code == 202, response.text

    def metric(value: float, n: int, ts: str = at) -> dict[str, dict[str, Any]]:
        return {f"{value}-{i}": {"EventType": "x", "Timestamp": ts, "Metrics": {"m": value}}
                for i in range(n)}  # fmt: skip

    def purchase(price: float, quantity: float) -> dict[str, Any]:
        return {"EventType": "_monetization.purchase", "Timestamp": at,
                "Metrics": {"_item_price": price, "_quantity": quantity}}  # fmt: skip

    def get(route: str) -> dict[str, Any]:
        response = httpx.get(
            f"{collector.url}/v1/apps/{app.id}/analytics/{route}",
            params={"start": "2026-10-05", "end": "2026-10-05"},
            headers=admin,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def delete(endpoint_id: str) -> None:
        response = httpx.delete(
            f"{collector.url}/v1/apps/{app.id}/endpoints/{endpoint_id}", headers=admin
        )
        assert response.status_code == 202, response.text

    def summed() -> tuple[int, float | None, float, float]:
        (m,) = get("events")["metrics"]
        return m["count"], m["sum"], m["min"], m["max"]

    put("plus", metric(1e308, 2))  # the hour's sum is +inf
    put("minus", metric(-1e308, 1))  # still +inf, and the hour's minimum
    put("all", metric(-1e308, 2))  # +inf + -inf
    assert summed() == (5, 0, -1e308, 1e308)
    put("big", metric(9e307, 3))  # +inf on its own, within the extremes
    assert summed() == (8, None, -1e308, 1e308)
    put("later", metric(-1e308, 2, "2026-10-05T11:00:00.000Z"))  # -inf an hour later
    assert summed() == (10, 0, -1e308, 1e308)
    delete("big")  # +inf - +inf
    assert summed() == (7, None, -1e308, 1e308)  # 0 and -inf
    delete("later")
    assert summed() == (5, 0, -1e308, 1e308)
    # Both in one batch, then across batches.
    put("buyer", {"a": purchase(1e308, 1e308), "b": purchase(-1e308, 1e308)})
    assert get("revenue")["revenue"] == {"UNKNOWN": 0}
    put("rich", {"c": purchase(1e308, 10)})
    assert get("revenue")["revenue"] == {"UNKNOWN": None}
    put("poor", {"d": purchase(-1e308, 10)})
    put("richer", {"e": purchase(1e308, 10)})
    delete("rich")  # +inf - +inf
    assert get("revenue")["purchases"] == 4
    assert sql(
        collector,
        "SELECT an_metrics.sum, amount FROM an_metrics JOIN an_revenue USING (app_id, hour)"
        " WHERE app_id = ? AND name = 'm'",
        (app.id,),
    ) == [(0.0, 0.0)]


def test_deleting_an_endpoint_counts_users_as_the_remaining_endpoints_have_them(
    collector: LiveCollector,
) -> None:
    """User figures are kept by the user an endpoint had when its events came in; after a
    deletion they are what the remaining events and the remaining endpoints' users give,
    even where an endpoint logged in, or changed user, after its events."""
    app = collector.create_app("user changes")
    admin = bearer(app.admin.token)
    url = f"{collector.url}/v1/apps/{app.id}"

    def put(endpoint_id: str, day: int) -> None:
        at = f"2026-10-0{day}T10:00:00.000Z"
        response = httpx.post(
            f"{url}/events",
            json={"BatchItem": {endpoint_id: {"Endpoint": {}, "Events": {
                f"{endpoint_id}-{day}": {"EventType": "x", "Timestamp": at}}}}},
            headers=bearer(app.ingest.token),
            timeout=30,
        )  # fmt: skip
        assert response.status_code == 202, response.text

    def log_in(endpoint_id: str, user_id: str) -> None:
        response = httpx.put(
            f"{url}/endpoints/{endpoint_id}",
            json={"User": {"UserId": user_id}},
            headers=bearer(app.ingest.token),
        )
        assert response.status_code == 202, response.text

    def delete(path: str) -> None:
        assert httpx.delete(f"{url}/{path}", headers=admin).status_code == 202

    put("control", 1)
    put("anonymous", 1)  # then logs in, as apps do, and the user is deleted
    log_in("anonymous", "A")
    put("switched", 2)  # events under one user, then another
    log_in("switched", "B1")
    put("switched", 3)
    log_in("switched", "B2")
    put("sibling", 4)  # anonymous, then logs in as the user of a deleted endpoint
    log_in("sibling", "C")
    log_in("doomed", "C")
    put("doomed", 5)
    delete("users/A")
    delete("users/B2")
    delete("endpoints/doomed")
    usage = httpx.get(
        f"{url}/analytics/usage",
        params={"start": "2026-10-01", "end": "2026-10-05", "by": "users"},
        headers=admin,
        timeout=30,
    ).json()
    # Left: control (anonymous) on day 1 and sibling (user C) on day 4.
    assert [day["active"] for day in usage["days"]] == [1, 0, 0, 1, 0]
    assert usage["summary"]["mau"] == 2


@pytest.mark.parametrize("route", ["usage", "events", "campaigns", "retention", "revenue"])
def test_the_first_and_last_dates_accepted_are_answered(world: World, route: str) -> None:
    for start, end in (("1970-01-01", "1970-01-01"), ("9998-12-31", "9998-12-31")):
        got = world.get(route, start=start, end=end)
        assert got.get("start", start) == start


def test_the_first_and_last_kpi_days_accepted_are_answered(world: World) -> None:
    for start_time, end_time in (
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
        ("9998-12-31T23:59:59Z", "9998-12-31T23:59:59Z"),
    ):
        response = httpx.get(
            f"{world.live.url}/v1/apps/{world.app.id}/kpis/daterange/homing-sessions",
            params={"start-time": start_time, "end-time": end_time},
            headers=bearer(world.app.admin.token),
        )
        assert response.status_code == 200, response.text


def test_funnel_steps_may_happen_at_the_same_moment(collector: LiveCollector) -> None:
    app = collector.create_app("same moment")
    at, later = "2026-10-05T10:00:00.000Z", "2026-10-05T10:00:01.000Z"
    events = {
        # Sent in the reverse order of the steps, all but the last at one moment.
        "c": {"EventType": "c", "Timestamp": at},
        "b": {"EventType": "b", "Timestamp": at},
        "a": {"EventType": "a", "Timestamp": at},
        "d": {"EventType": "d", "Timestamp": later},
    }
    assert set(put_events(collector, app, events).values()) == {202}
    got = httpx.get(
        f"{collector.url}/v1/apps/{app.id}/analytics/funnel",
        params=[("start", "2026-10-05"), ("end", "2026-10-05"), ("by", "endpoints"),
                *[("step", step) for step in "abcd"]],
        headers=bearer(app.admin.token),
        timeout=30,
    )  # fmt: skip
    assert got.status_code == 200, got.text
    assert [step["count"] for step in got.json()["steps"]] == [1, 1, 1, 1]


def test_a_funnel_of_steps_with_many_attribute_conditions_is_answered(
    collector: LiveCollector,
) -> None:
    # Each condition was one more nested CASE in the query, until SQLite's parser ran out
    # of stack: a 500 for a request the document allows.
    app = collector.create_app("many conditions")
    attributes = {f"k{i}": f"v{i}" for i in range(20)}
    events = {
        t: {"EventType": t, "Timestamp": f"2026-10-05T10:00:0{n}.000Z", "Attributes": attributes}
        for n, t in enumerate("abcdefgh")
    }
    assert set(put_events(collector, app, events).values()) == {202}
    conditions = ";".join(f"k{i}=v{i}" for i in range(20))
    got = httpx.get(
        f"{collector.url}/v1/apps/{app.id}/analytics/funnel",
        params=[("start", "2026-10-05"), ("end", "2026-10-05"), ("by", "endpoints"),
                *[("step", f"{t};{conditions}") for t in "abcdefgh"],
                ("step", "a;k0=other")],
        headers=bearer(app.admin.token),
        timeout=30,
    )  # fmt: skip
    assert got.status_code == 200, got.text
    assert [step["count"] for step in got.json()["steps"]] == [1] * 8 + [0]


def test_a_session_days_ahead_is_counted_on_its_events_day(collector: LiveCollector) -> None:
    # An event stamped more than 24 h ahead is stored as arriving now; its session, which
    # the same wrong clock stamped, goes with it rather than days ahead.
    from datetime import timezone

    app = collector.create_app("clock ahead")
    ahead = (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    event = {"EventType": "screen.view", "Timestamp": ahead,
             "Session": {"Id": "s", "StartTimestamp": ahead}}  # fmt: skip
    assert put_events(collector, app, {"e": event}) == {"e": 202}
    today = datetime.now(timezone.utc).date()
    usage = httpx.get(
        f"{collector.url}/v1/apps/{app.id}/analytics/usage",
        params={"start": str(today - timedelta(days=1)), "end": str(today + timedelta(days=4))},
        headers=bearer(app.admin.token),
        timeout=30,
    ).json()
    by_day = {day["date"]: (day["active"], day["sessions"]) for day in usage["days"]}
    # The request may straddle midnight: the event's day is today or yesterday.
    assert sorted(v for v in by_day.values() if v != (0, 0)) == [(1, 1)], by_day


# Every analytics route and KPI the dashboard reads, as (path, query parameters).
_SAME_QUERIES: list[tuple[str, list[tuple[str, str]]]] = [
    *[("analytics/usage", [("start", str(START)), ("end", str(END)), ("tz", tz), ("by", by)])
      for tz in ("UTC", "America/New_York") for by in ("users", "endpoints")],
    *[("analytics/retention", [("start", "2026-09-01"), ("end", "2026-09-30"), ("by", by)])
      for by in ("users", "endpoints")],
    *[("analytics/demographics", [("dimension", dimension)])
      for dimension in ("platform", "country", "model", "app_version", "attribute:plan")],
    ("analytics/events", [("start", str(START)), ("end", str(END)), ("tz", "Asia/Tokyo")]),
    ("analytics/events", [("start", str(START)), ("end", str(END)), ("breakdown", "level"),
                          ("include", "level:forest,cave"), ("exclude", "screen:cart"),
                          ("metric", "score>=500")]),
    *[("analytics/funnel", [("start", str(START)), ("end", str(END)), ("by", by),
                            ("window", "600"), ("step", "_session.start"),
                            ("step", "screen.view;screen=shop"),
                            ("step", "_monetization.purchase")])
      for by in ("users", "endpoints")],
    ("analytics/revenue", [("start", str(START)), ("end", str(END)), ("tz", "Europe/Paris")]),
    ("analytics/campaigns", [("start", str(START)), ("end", str(END))]),
    *[(f"kpis/daterange/{kpi}", [("start-time", "2026-09-01T00:00:00Z"),
                                 ("end-time", "2026-10-31T00:00:00Z")])
      for kpi in kpis.NAMES],
]  # fmt: skip


def test_both_backends_answer_every_query_alike(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The same events into a collector on SQLite and one on PostgreSQL (with a deletion
    between): every analytics answer is the same JSON."""
    data = gen.generate(seed=11, devices=12)
    devices = {d.endpoint_id: d for d in data.devices}
    answers = []
    for backend in ("sqlite", "postgresql"):
        with live_on(backend, request, tmp_path / backend) as live:
            app = live.create_app("alike")
            with httpx.Client(base_url=live.url, headers=bearer(app.ingest.token)) as client:
                for body in gen.batches(data.events + data.resent, devices):
                    response = client.post(f"/v1/apps/{app.id}/events", json=body, timeout=30)
                    assert response.status_code == 202, response.text
            admin = bearer(app.admin.token)
            gone = next(d for d in data.devices if d.user_id is not None)
            response = httpx.delete(
                f"{live.url}/v1/apps/{app.id}/endpoints/{gone.endpoint_id}", headers=admin
            )
            assert response.status_code == 202, response.text
            got = {}
            for path, params in _SAME_QUERIES:
                response = httpx.get(
                    f"{live.url}/v1/apps/{app.id}/{path}", params=params, headers=admin, timeout=60
                )
                assert response.status_code == 200, (backend, path, response.text)
                # The same answer but for the application's id.
                got[(path, str(params))] = json.loads(response.text.replace(app.id, "APP"))
            answers.append(got)
    sqlite_answers, postgres_answers = answers
    assert any(value for value in sqlite_answers.values())
    for key, want in sqlite_answers.items():
        assert postgres_answers[key] == want, key
