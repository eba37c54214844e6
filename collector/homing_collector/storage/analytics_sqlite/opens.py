"""The SQL of an_opens: the notification opens (analytics/opens.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any


def insert(conn: sqlite3.Connection, opens: Sequence[Sequence[Any]]) -> None:
    """Store (app id, endpoint id, ts, campaign id) rows."""
    conn.executemany(
        "INSERT INTO an_opens (app_id, endpoint_id, ts, campaign_id) VALUES (?, ?, ?, ?)", opens
    )


def in_range(
    conn: sqlite3.Connection, app_id: str, lo_ms: int, hi_ms: int
) -> list[tuple[str, int, str | None]]:
    """(endpoint id, Timestamp, campaign id) of the opens in [lo_ms, hi_ms)."""
    return conn.execute(
        "SELECT endpoint_id, ts, campaign_id FROM an_opens WHERE app_id = ? AND ts >= ? AND ts < ?",
        (app_id, lo_ms, hi_ms),
    ).fetchall()


# The sessions are indexed by the day they start on, `start_ms / 86400000` (migration
# 19): a query spells the expression as the index does for SQLite to use it.
DAY_MS = 86_400_000


def near_sessions(ts: str, before: str, after: str) -> str:
    """SQL that is true for the sessions `s` that start from `before` ms before `ts` to
    `after` ms after (three SQL expressions). With a test of s.endpoint_id, SQLite seeks
    them in the days the window spans (at most two: it is shorter than a day) in index
    an_sessions_day."""
    return (
        f"s.start_ms / {DAY_MS} IN (({ts} - {before}) / {DAY_MS}, ({ts} + {after}) / {DAY_MS})"
        f" AND s.start_ms >= {ts} - {before} AND s.start_ms <= {ts} + {after}"
    )


def followed_by_session(
    conn: sqlite3.Connection, app_id: str, lo_ms: int, hi_ms: int, before_ms: int, after_ms: int
) -> int:
    """How many opens in [lo_ms, hi_ms) have a session of their endpoint that starts from
    `before_ms` before to `after_ms` after, in one statement. Each open seeks its window in
    the sessions that start on the days it spans (at most two: it is shorter than a day),
    by endpoint and start (index an_sessions_day): the part of the index it reads is that
    of the range's days. By endpoint alone, each open read a page of its own in the index
    of every session ever (bench/analytics_queries.py, 30 days of 150: 150 ms of CPU, 60
    ms by day)."""
    (count,) = conn.execute(
        "SELECT count(*) FROM an_opens o WHERE o.app_id = :app AND o.ts >= :lo AND o.ts < :hi"
        " AND EXISTS (SELECT 1 FROM an_sessions s INDEXED BY an_sessions_day"
        " WHERE s.app_id = o.app_id AND s.endpoint_id = o.endpoint_id"
        f" AND {near_sessions('o.ts', ':before', ':after')})",
        {"app": app_id, "lo": lo_ms, "hi": hi_ms, "before": before_ms, "after": after_ms},
    ).fetchone()
    return int(count)


def remove_endpoint(conn: sqlite3.Connection, app_id: str, endpoint_id: str) -> None:
    conn.execute("DELETE FROM an_opens WHERE app_id = ? AND endpoint_id = ?", (app_id, endpoint_id))


def deleted(conn: sqlite3.Connection, opens: Sequence[Sequence[Any]]) -> None:
    """Forget one row for each (app id, endpoint id, ts, campaign id) given."""
    conn.executemany(
        "DELETE FROM an_opens WHERE rowid = (SELECT rowid FROM an_opens WHERE app_id = ?"
        " AND endpoint_id = ? AND ts = ? AND campaign_id IS ? LIMIT 1)",
        opens,
    )
