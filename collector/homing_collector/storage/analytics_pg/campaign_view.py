"""The SQL of one campaign's figures (analytics/campaign_view.py), on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence

from homing_collector.storage.analytics_pg import Connection, columns, rows
from homing_collector.storage.analytics_pg.rollups import BY_KEY


def typed_events(
    conn: Connection, app_id: str, lo_hour: int, hi_hour: int, types: Sequence[str]
) -> list[tuple[str, str, int, bytes]]:
    """(endpoint id, event type, ts, body) of the app's events of `types` in the hours."""
    return rows(
        conn,
        "SELECT endpoint_id, event_type, ts, body FROM events WHERE app_id = %s"
        " AND hour >= %s AND hour < %s AND event_type = ANY(%s)",
        (app_id, lo_hour, hi_hour, list(types)),
    )


def sessions_near(
    conn: Connection,
    windows: Sequence[tuple[int, str, str, int]],
    before_ms: int,
    after_ms: int,
) -> list[tuple[int, str, str, int]]:
    """(i, endpoint id, session id, start ms) of the sessions of each (i, app, endpoint, ts)
    that start from `before_ms` before ts to `after_ms` after it."""
    if not windows:
        return []
    return rows(
        conn,
        "SELECT v.i, v.endpoint_id, s.session_id, s.start_ms"
        " FROM unnest(%s::bigint[], %b::text[], %b::text[], %s::bigint[])"
        " AS v(i, app_id, endpoint_id, ts) CROSS JOIN LATERAL (SELECT session_id, start_ms"
        " FROM an_sessions s WHERE s.app_id = v.app_id AND s.endpoint_id = v.endpoint_id"
        f" AND s.start_ms >= v.ts - %s AND s.start_ms <= v.ts + %s {BY_KEY}) AS s",
        (*columns(windows, 4), before_ms, after_ms),
    )


def events_after(
    conn: Connection,
    windows: Sequence[tuple[int, str, str, int, int, int]],
    event_type: str,
    after_ms: int,
) -> list[tuple[int, str, str]]:
    """(i, endpoint id, event id) of the events of `event_type` of each (i, app, endpoint,
    ts, first hour, last hour) from ts to `after_ms` after it (within those hours)."""
    if not windows:
        return []
    return rows(
        conn,
        "SELECT v.i, v.endpoint_id, e.event_id"
        " FROM unnest(%s::bigint[], %b::text[], %b::text[], %s::bigint[], %s::bigint[],"
        " %s::bigint[]) AS v(i, app_id, endpoint_id, ts, lo_hour, hi_hour)"
        " CROSS JOIN LATERAL (SELECT event_id FROM events e WHERE e.app_id = v.app_id"
        " AND e.hour >= v.lo_hour AND e.hour <= v.hi_hour AND e.endpoint_id = v.endpoint_id"
        f" AND e.event_type = %s AND e.ts >= v.ts AND e.ts <= v.ts + %s {BY_KEY}) AS e",
        (*columns(windows, 6), event_type, after_ms),
    )
