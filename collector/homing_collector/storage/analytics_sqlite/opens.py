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


def followed_by_session(
    conn: sqlite3.Connection, app_id: str, lo_ms: int, hi_ms: int, before_ms: int, after_ms: int
) -> int:
    """How many opens in [lo_ms, hi_ms) have a session of their endpoint that starts from
    `before_ms` before to `after_ms` after, in one statement. Each open seeks its window in
    its endpoint's sessions by their start (index an_sessions_endpoint_start): through
    an_sessions' key, it read all the endpoint's sessions, more for an older endpoint
    (bench/analytics_queries.py, 5 million events over 150 days: twice the time)."""
    (count,) = conn.execute(
        "SELECT count(*) FROM an_opens o WHERE o.app_id = ? AND o.ts >= ? AND o.ts < ?"
        " AND EXISTS (SELECT 1 FROM an_sessions s INDEXED BY an_sessions_endpoint_start"
        " WHERE s.app_id = o.app_id AND s.endpoint_id = o.endpoint_id"
        " AND s.start_ms >= o.ts - ? AND s.start_ms <= o.ts + ?)",
        (app_id, lo_ms, hi_ms, before_ms, after_ms),
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
