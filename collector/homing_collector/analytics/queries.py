"""The analytics queries. Each takes a read connection and answers a JSON-ready dict.

The definitions are in docs/analytics.md. Usage, retention, event counts, metrics,
revenue and the opens of campaigns read only the rollups (see rollups.py); demographics
read the counters of storage/endpoint_values.py; breakdowns, filters and funnels read
the stored events of the range. The statements are storage's (storage/analytics_sqlite/).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from homing_collector.analytics import cohorts, cover, opens, visits
from homing_collector.analytics.cohorts import DAYS as RETENTION_DAYS  # what an_retention holds
from homing_collector.analytics.days import HOUR_MS, Grid, grid
from homing_collector.analytics.params import EventFilters, Range, Step
from homing_collector.analytics.rollups import ENDPOINT, USER, add_sums, user_key
from homing_collector.storage import columnar, endpoint_values
from homing_collector.storage.analytics_backend import Connection, snapshot, statements


def _kind(q: Range) -> int:
    return USER if q.by == "users" else ENDPOINT


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def _distinct_per_window(
    conn: Connection, app_id: str, kind: int, windows: Sequence[tuple[int, int]]
) -> list[int]:
    """How many distinct subjects were active in each [lo, hi) of UTC hours."""
    if not windows:
        return []
    result = [0] * len(windows)
    for i, count in statements(conn).queries.distinct_per_window(conn, app_id, kind, windows):
        result[i] = count
    return result


def _windows(
    conn: Connection, app_id: str, kind: int, windows: Sequence[tuple[int, int]]
) -> list[int]:
    """Distinct subjects active in each [lo, hi) of UTC hours: from the coverage deltas, or
    counted in an_active for a window length they do not keep."""
    got = cover.counts(conn, app_id, kind, [(lo, hi - lo) for lo, hi in windows])
    missing = [i for i, count in enumerate(got) if count is None]
    if missing:
        counted = _distinct_per_window(conn, app_id, kind, [windows[i] for i in missing])
        for i, count in zip(missing, counted, strict=True):
            got[i] = count
    return [count or 0 for count in got]


def _sessions_by_day(
    conn: Connection, app_id: str, g: Grid, first: int, n: int
) -> tuple[list[int], list[int], list[dict[int, int]]]:
    """Per day first..first+n-1 of the grid: sessions, their total ms, length histogram."""
    counts, totals = [0] * n, [0] * n
    histograms: list[dict[int, int]] = [{} for _ in range(n)]
    days = [(i, g.lo(first + i), g.lo(first + i + 1)) for i in range(n)]
    for day, count, total in statements(conn).queries.visits_by_day(conn, app_id, days):
        counts[day], totals[day] = count, total
    for day, index, count in statements(conn).queries.visit_lengths_by_day(conn, app_id, days):
        if count:
            histograms[day][index] = count
    return counts, totals, histograms


def _seconds(total_ms: int, count: int) -> float | None:
    return round(total_ms / count / 1000, 3) if count else None


def usage(conn: Connection, app_id: str, q: Range) -> dict[str, Any]:
    kind = _kind(q)
    look = grid(q.zone, q.start - timedelta(days=29), q.end)  # day 29 is q.start
    n = (q.end - q.start).days + 1
    idx = range(29, 29 + n)
    windows = [(look.lo(i - back), look.lo(i + 1)) for back in (0, 6, 29) for i in idx]
    counted = _windows(conn, app_id, kind, windows)
    dau, wau, mau = counted[:n], counted[n : 2 * n], counted[2 * n :]
    new = _new_per_day(conn, app_id, kind, look, 29, n)
    sessions_per_day, totals, histograms = _sessions_by_day(conn, app_id, look, 29, n)
    days = []
    for i in range(n):
        sessions = sessions_per_day[i]
        days.append(
            {
                "date": str(look.date(29 + i)),
                "active": dau[i],
                "new": new[i],
                "wau": wau[i],
                "mau": mau[i],
                "sticky_factor": _ratio(dau[i], mau[i]),
                "sessions": sessions,
                "sessions_per_active": _ratio(sessions, dau[i]),
                "avg_session_seconds": _seconds(totals[i], sessions),
                "median_session_seconds": visits.median(histograms[i]),
            }
        )
    every: dict[int, int] = {}
    for histogram in histograms:
        for index, count in histogram.items():
            every[index] = every.get(index, 0) + count
    sessions = sum(sessions_per_day)
    avg_active = round(sum(dau) / n, 4)
    summary = {
        "avg_daily_active": avg_active,
        "mau": mau[-1],
        "sticky_factor": _ratio(avg_active, mau[-1]),
        "new": sum(new),
        "sessions": sessions,
        "sessions_per_active": _ratio(sessions, sum(dau)),
        "avg_session_seconds": _seconds(sum(totals), sessions),
        "median_session_seconds": visits.median(every),
    }
    return {**q.head(), "days": days, "summary": summary}


def _new_per_day(
    conn: Connection, app_id: str, kind: int, g: Grid, first: int, n: int
) -> list[int]:
    """How many subjects were first active on each of the n days of `g` from `first`."""
    new = [0] * n
    for hour, count in statements(conn).queries.new_per_hour(
        conn, app_id, kind, g.lo(first), g.lo(first + n)
    ):
        new[g.day_of_hour(hour) - first] += count
    return new


def retention(conn: Connection, app_id: str, q: Range) -> dict[str, Any]:
    n = (q.end - q.start).days + 1
    g = grid(q.zone, q.start, q.end + timedelta(days=RETENTION_DAYS))
    if all(b - a == 24 for a, b in itertools.pairwise(g.bounds)):
        return _kept_retention(conn, app_id, q, g, n)
    return _counted_retention(conn, app_id, q, g, n)


def _answer_retention(
    q: Range,
    g: Grid,
    sizes: list[int],
    retained: list[list[int]],
    back: list[dict[int, int]],
) -> dict[str, Any]:
    """The answer from cohort sizes, who was active on each day after, and who first came
    back on each day after."""
    n = len(sizes)
    complete = (q.today - q.start).days  # the index of today: later days are not over
    rates = {}
    for days in (7, 14, 30):
        eligible = [c for c in range(n) if c + days <= complete]
        size = sum(sizes[c] for c in eligible)
        came = sum(count for c in eligible for k, count in back[c].items() if k <= days)
        rates[f"d{days}"] = _ratio(came, size)
    by_cohort = []
    for c in range(n):
        row: list[float | None] = [
            (_ratio(retained[c][k - 1], sizes[c]) if c + k <= complete else None)
            for k in range(1, RETENTION_DAYS + 1)
        ]
        by_cohort.append({"date": str(g.date(c)), "size": sizes[c], "retained": row})
    return {**q.head(), "cohorts": by_cohort, "rates": rates}


def _kept_retention(conn: Connection, app_id: str, q: Range, g: Grid, n: int) -> dict[str, Any]:
    """From an_retention: the zone's offset is the same all along, its days one phase."""
    kind = _kind(q)
    phase = g.bounds[0] % 24
    first = (g.bounds[0] - phase) // 24
    sizes = _new_per_day(conn, app_id, kind, g, 0, n)
    retained = [[0] * RETENTION_DAYS for _ in range(n)]
    back: list[dict[int, int]] = [{} for _ in range(n)]
    for cohort, k, count in statements(conn).queries.kept_retention(
        conn, app_id, kind, phase, first, first + n
    ):
        if k > 0:
            retained[cohort - first][k - 1] = count
        else:
            back[cohort - first][-k] = count
    return _answer_retention(q, g, sizes, retained, back)


def _counted_retention(conn: Connection, app_id: str, q: Range, g: Grid, n: int) -> dict[str, Any]:
    """From an_active, for a zone whose offset changes in the range."""
    kind = _kind(q)
    members: dict[str, tuple[int, set[int]]] = {}
    first = (g.lo(0), g.lo(n))
    for key, first_hour in statements(conn).queries.first_hours(conn, app_id, kind, *first):
        members[key] = (g.day_of_hour(first_hour), set())
    for key, hour in statements(conn).queries.later_hours(
        conn, app_id, kind, first, (g.lo(1), g.lo(g.days))
    ):
        members[key][1].add(g.day_of_hour(hour))
    sizes = [0] * n
    retained = [[0] * RETENTION_DAYS for _ in range(n)]
    back: list[dict[int, int]] = [{} for _ in range(n)]
    for cohort, active in members.values():
        sizes[cohort] += 1
        after = cohorts.offsets(cohort, active)
        for k in after:
            retained[cohort][k - 1] += 1
        if after:
            k = min(after)
            back[cohort][k] = back[cohort].get(k, 0) + 1
    return _answer_retention(q, g, sizes, retained, back)


def demographics(conn: Connection, app_id: str, dimension: str) -> dict[str, Any]:
    counted: Iterable[tuple[str | None, int, int]]
    if dimension in endpoint_values.DIMENSIONS:
        counted = statements(conn).endpoint_values.counts(conn, app_id, dimension)
    else:
        counted = _count_attribute(conn, app_id, dimension[len("attribute:") :])
    ordered = sorted(counted, key=lambda row: (-row[1], row[0] is None, str(row[0])))
    rows = [{"value": v, "endpoints": e, "users": u} for v, e, u in ordered]
    return {"dimension": dimension, "rows": rows}


def _count_attribute(conn: Connection, app_id: str, name: str) -> list[tuple[str | None, int, int]]:
    """(value, endpoints, users) of a custom attribute, from every endpoint's body (see
    storage/endpoint_values.py for why it has no counters)."""
    groups: dict[str | None, tuple[set[str], set[str]]] = {}
    for endpoint_id, user_id, body in statements(conn).queries.endpoint_bodies(conn, app_id):
        values = (orjson.loads(body).get("Attributes") or {}).get(name) or [None]
        for value in dict.fromkeys(values):
            endpoints, users = groups.setdefault(value, (set(), set()))
            endpoints.add(endpoint_id)
            users.add(user_key(endpoint_id, user_id))
    return [(value, len(endpoints), len(users)) for value, (endpoints, users) in groups.items()]


def _plan(conn: Connection, app_id: str, g: Grid, copy: Path | None) -> Any:
    """Where the events of the range are read from: a plan of the backend's columnar copy
    (storage/columnar.py, storage/pg_columnar.py), None without one."""
    if copy is None:
        return None
    return statements(conn).queries.plan(conn, copy, app_id, g.lo(0), g.lo(g.days))


def session_count(conn: Connection, app_id: str, g: Grid) -> int:
    return int(statements(conn).queries.session_count(conn, app_id, g.lo(0), g.lo(g.days)))


def _add_metric(
    metrics: dict[str, list[float]], name: str, count: int, total: float, low: float, high: float
) -> None:
    agg = metrics.get(name)
    if agg is None:
        metrics[name] = [count, total, low, high]
    else:
        agg[0] += count
        agg[1] += total
        agg[2] = min(agg[2], low)
        agg[3] = max(agg[3], high)


def events(
    conn: Connection,
    app_id: str,
    q: Range,
    f: EventFilters,
    *,
    copy: Path | None = None,
) -> dict[str, Any]:
    """Event counts and metrics; with filters or a breakdown, read from the events of
    the range: from the columnar copy at `copy` (see storage/columnar.py) where it has
    them, else from the events table."""
    g = grid(q.zone, q.start, q.end)
    lo, hi = g.lo(0), g.lo(g.days)
    totals: dict[str, int] = {}
    series: dict[tuple[int, str], int] = {}
    breakdown: dict[str | None, int] = {}
    metrics: dict[str, list[float]] = {}  # name -> [count, sum, min, max]
    if not f.needs_scan:
        for hour, event_type, count in statements(conn).queries.counts(
            conn, app_id, lo, hi, f.event_types
        ):
            totals[event_type] = totals.get(event_type, 0) + count
            key = (g.day_of_hour(hour), event_type)
            series[key] = series.get(key, 0) + count
        for name, count, total, low, high in statements(conn).queries.metrics(
            conn, app_id, lo, hi, f.event_types
        ):
            metrics[name] = [count, total, low, high]
    else:
        include = [sorted(values) for _name, values in f.include]
        with snapshot(conn):
            p = _plan(conn, app_id, g, copy)
            for event_type, ts, body in statements(conn).queries.scan_events(
                conn, app_id, lo, hi, p, f.event_types, include
            ):
                event = orjson.loads(body)
                attributes = event.get("Attributes") or {}
                values = event.get("Metrics") or {}
                if not f.keep(attributes, values):
                    continue
                totals[event_type] = totals.get(event_type, 0) + 1
                key = (g.day_of_ms(ts), event_type)
                series[key] = series.get(key, 0) + 1
                if f.breakdown:
                    value = attributes.get(f.breakdown)
                    breakdown[value] = breakdown.get(value, 0) + 1
                for name, number in values.items():
                    _add_metric(metrics, name, 1, number, number, number)
        if p is not None:
            counted = columnar.count_events(p.files, lo * HOUR_MS, hi * HOUR_MS, f)
            for hour, event_type, count in counted.hours:
                totals[event_type] = totals.get(event_type, 0) + count
                key = (g.day_of_hour(hour), event_type)
                series[key] = series.get(key, 0) + count
            for value, count in counted.breakdown:
                breakdown[value] = breakdown.get(value, 0) + count
            for name, count, total, low, high in counted.metrics:
                _add_metric(metrics, name, count, total, low, high)
    sessions = session_count(conn, app_id, g) if metrics else 0
    answer: dict[str, Any] = {
        **q.head(),
        "types": [
            {"event_type": t, "count": c}
            for t, c in sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        ],
        "series": [
            {"date": str(g.date(day)), "event_type": t, "count": c}
            for (day, t), c in sorted(series.items())
        ],
        "metrics": [
            {
                "name": name,
                "count": int(count),
                "min": low,
                "max": high,
                "avg": round(total / count, 6),
                "sum": round(total, 6),
                "per_session_avg": _ratio(total, sessions),
            }
            for name, (count, total, low, high) in sorted(metrics.items())
        ],
    }
    if f.breakdown:
        answer["breakdown"] = [
            {"value": v, "count": c}
            for v, c in sorted(breakdown.items(), key=lambda item: (-item[1], str(item[0])))
        ]
    else:
        answer["breakdown"] = []
    return answer


def funnel(
    conn: Connection,
    app_id: str,
    q: Range,
    steps: list[Step],
    window: int,
    *,
    copy: Path | None = None,
) -> dict[str, Any]:
    """The funnel of `steps`; the events are read from the columnar copy at `copy`
    where it has them, else from the events table."""
    g = grid(q.zone, q.start, q.end)
    reached = [0] * len(steps)
    window_ms = window * 1000
    with snapshot(conn):
        p = _plan(conn, app_id, g, copy)
        rows: Iterable[tuple[str, int, int, int]] = statements(conn).queries.funnel_rows(
            conn, app_id, g.lo(0), g.lo(g.days), p, steps
        )
        if p is not None and copy is not None:
            # DuckDB walks the timelines: of the sealed days' files and of these rows,
            # their endpoints numbered as the files' are.
            numbering = statements(conn).queries.numbering(conn, copy, app_id)
            depths = columnar.funnel_depths(
                p.files, g.lo(0) * HOUR_MS, g.lo(g.days) * HOUR_MS, steps, window_ms,
                ((numbering.of(e), ts, m, rid) for e, ts, m, rid in rows),
                numbering.users() if q.by == "users" else None, copy,
            )  # fmt: skip
            for best, count in depths.items():
                for k in range(best):
                    reached[k] += count
        else:
            users: dict[str, str] = {}
            if q.by == "users":
                users = {
                    e: user_key(e, user)
                    for e, user in statements(conn).queries.endpoint_users(conn, app_id)
                }
            for best in _depths(rows, users, len(steps), window_ms):
                for k in range(best):
                    reached[k] += 1
    out = []
    for k, step in enumerate(steps):
        out.append(
            {
                "event_type": step.event_type,
                "attributes": dict(step.attributes),
                "count": reached[k],
                "conversion": _ratio(reached[k], reached[0]),
                "drop_off": 0.0 if k == 0 else _drop(reached[k], reached[k - 1]),
            }
        )
    return {**q.head(), "window": window, "steps": out}


def _depths(
    rows: Iterable[tuple[str, int, int, int]], users: dict[str, str], n: int, window_ms: int
) -> Iterator[int]:
    """The deepest step each subject reached, from (endpoint id, Timestamp, steps matched
    as bits, rowid) of the events that match a step. (storage.columnar.funnel_depths says
    the same in SQL.)"""
    timelines: dict[str, list[tuple[int, int, int]]] = {}
    for endpoint_id, ts, matched, _rowid in rows:
        # (user_key is not called for each row: a default argument would be.)
        subject = (users.get(endpoint_id) or user_key(endpoint_id, None)) if users else endpoint_id
        # (moment, lowest step matched, steps matched): see below for the order.
        timelines.setdefault(subject, []).append((ts, matched & -matched, matched))
    for timeline in timelines.values():
        # A step may happen at the same moment as the one before it: events of one moment
        # go in the order of the steps they match, and each start looks from its moment on.
        timeline.sort()
        times = [t for t, _, _ in timeline]
        best = 0
        for i, (t0, _, matched) in enumerate(timeline):
            if not matched & 1:
                continue
            depth = 1
            for j in range(bisect.bisect_left(times, t0), len(timeline)):
                t, _, m = timeline[j]
                if t - t0 > window_ms or depth == n:
                    break
                if j != i and m >> depth & 1:
                    depth += 1
            best = max(best, depth)
            if best == n:
                break
        yield best


def _drop(count: int, before: int) -> float | None:
    ratio = _ratio(count, before)
    return None if ratio is None else round(1 - ratio, 4)


def revenue(conn: Connection, app_id: str, q: Range) -> dict[str, Any]:
    g = grid(q.zone, q.start, q.end)
    lo, hi = g.lo(0), g.lo(g.days)
    purchases = 0
    totals: dict[str, float] = {}
    days: dict[int, list[Any]] = {}
    for hour, currency, count, amount in statements(conn).queries.revenue(conn, app_id, lo, hi):
        purchases += count
        totals[currency] = add_sums(totals.get(currency, 0.0), amount)
        day = days.setdefault(g.day_of_hour(hour), [0, {}])
        day[0] += count
        day[1][currency] = add_sums(day[1].get(currency, 0.0), amount)
    (active,) = _windows(conn, app_id, _kind(q), [(lo, hi)])
    return {
        **q.head(),
        "purchases": purchases,
        "revenue": {c: round(v, 6) for c, v in sorted(totals.items())},
        "revenue_per_user": {c: _ratio(v, active) for c, v in sorted(totals.items())},
        "days": [
            {
                "date": str(g.date(day)),
                "purchases": count,
                "revenue": {c: round(v, 6) for c, v in sorted(amounts.items())},
            }
            for day, (count, amounts) in sorted(days.items())
        ],
    }


def push_messages(
    conn: Connection, app_id: str, lo_ms: int, hi_ms: int
) -> list[tuple[str, str | None, int, int | None]]:
    """(endpoint id, campaign id, created_at, delivered_at) of messages queued in range."""
    found: list[tuple[str, str | None, int, int | None]] = statements(conn).queries.push_messages(
        conn, app_id, lo_ms, hi_ms
    )
    return found


def campaigns(conn: Connection, app_id: str, q: Range) -> dict[str, Any]:
    g = grid(q.zone, q.start, q.end)
    lo_ms, hi_ms = g.lo(0) * HOUR_MS, g.lo(g.days) * HOUR_MS
    per: dict[str, list[int]] = {}
    days: dict[int, list[int]] = {}
    sent = delivered = 0
    for _endpoint, campaign_id, created, delivered_at in push_messages(conn, app_id, lo_ms, hi_ms):
        got = delivered_at is not None
        sent += 1
        delivered += got
        day = days.setdefault(g.day_of_ms(created), [0, 0, 0])
        day[0] += 1
        day[1] += got
        if campaign_id is not None:
            c = per.setdefault(campaign_id, [0, 0, 0])
            c[0] += 1
            c[1] += got
    opened = opens.in_range(conn, app_id, lo_ms, hi_ms)
    for _endpoint, ts, campaign_id in opened:
        days.setdefault(g.day_of_ms(ts), [0, 0, 0])[2] += 1
        if campaign_id is not None:
            per.setdefault(campaign_id, [0, 0, 0])[2] += 1
    after = opens.followed_by_session(conn, app_id, lo_ms, hi_ms)
    return {
        **q.head(),
        "sent": sent,
        "delivered": delivered,
        "opened": len(opened),
        "delivery_rate": _ratio(delivered, sent),
        "open_rate": _ratio(len(opened), delivered),
        "sessions_after_open": after,
        "campaigns": [
            {"campaign_id": cid, "sent": s, "delivered": d, "opened": o}
            for cid, (s, d, o) in sorted(per.items())
        ],
        "days": [
            {"date": str(g.date(day)), "sent": s, "delivered": d, "opened": o}
            for day, (s, d, o) in sorted(days.items())
        ],
    }
