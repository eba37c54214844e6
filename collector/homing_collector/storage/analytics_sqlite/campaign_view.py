"""The SQL of one campaign's figures (analytics/campaign_view.py): its events, and the
sessions and purchases that follow its opens."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from homing_collector.storage.analytics_sqlite import opens as opens_sql
from homing_collector.storage.values import join_values


def typed_events(
    conn: sqlite3.Connection, app_id: str, lo_hour: int, hi_hour: int, types: Sequence[str]
) -> Iterator[tuple[str, str, int, bytes]]:
    """(endpoint id, event type, ts, body) of the app's events of `types` in the hours."""
    marks = ", ".join("?" * len(types))
    return conn.execute(
        f"SELECT endpoint_id, event_type, ts, body FROM events WHERE app_id = ?"
        f" AND hour >= ? AND hour < ? AND event_type IN ({marks})",
        (app_id, lo_hour, hi_hour, *types),
    )


def sessions_near(
    conn: sqlite3.Connection,
    windows: Sequence[tuple[int, str, str, int]],
    before_ms: int,
    after_ms: int,
) -> Iterator[tuple[int, str, str, int]]:
    """(i, endpoint id, session id, start ms) of the sessions of each (i, app, endpoint, ts)
    that start from `before_ms` before ts to `after_ms` after it."""
    return join_values(
        conn, "i, app_id, endpoint_id, ts", windows,
        "SELECT v.i, s.endpoint_id, s.session_id, s.start_ms FROM v"
        " JOIN an_sessions s INDEXED BY an_sessions_day"
        " ON s.app_id = v.app_id AND s.endpoint_id = v.endpoint_id"
        f" AND {opens_sql.near_sessions('v.ts', str(int(before_ms)), str(int(after_ms)))}",
    )  # fmt: skip


def events_after(
    conn: sqlite3.Connection,
    windows: Sequence[tuple[int, str, str, int, int, int]],
    event_type: str,
    after_ms: int,
) -> Iterator[tuple[int, str, str]]:
    """(i, endpoint id, event id) of the events of `event_type` of each (i, app, endpoint,
    ts, first hour, last hour) from ts to `after_ms` after it (within those hours)."""
    quoted = event_type.replace("'", "''")  # a constant in the SQL, as the planner likes
    return join_values(
        conn, "i, app_id, endpoint_id, ts, lo_hour, hi_hour", windows,
        "SELECT v.i, e.endpoint_id, e.event_id FROM v JOIN events e"
        " ON e.app_id = v.app_id AND e.hour >= v.lo_hour AND e.hour <= v.hi_hour"
        f" AND e.endpoint_id = v.endpoint_id AND e.event_type = '{quoted}'"
        f" AND e.ts >= v.ts AND e.ts <= v.ts + {int(after_ms)}",
    )  # fmt: skip
