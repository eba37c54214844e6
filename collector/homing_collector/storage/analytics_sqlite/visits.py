"""The SQL of an_visits, an_visit_hours and an_visit_lengths: sessions after the 5-second
rule (analytics/visits.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from homing_collector.storage.values import join_values


def chains_near(
    conn: sqlite3.Connection, ranges: Sequence[tuple[str, str, int, int]]
) -> Iterator[tuple[str, str, int, int]]:
    """(app, endpoint, start, stop) of the chains of each (app, endpoint, lo, hi) that
    start from lo to hi."""
    return join_values(
        conn, "app_id, endpoint_id, lo, hi", ranges,
        "SELECT c.app_id, c.endpoint_id, c.start_ms, c.stop_ms FROM v JOIN an_visits c"
        " ON c.app_id = v.app_id AND c.endpoint_id = v.endpoint_id"
        " AND c.start_ms >= v.lo AND c.start_ms <= v.hi",
        pad=True,
    )  # fmt: skip


def replace_chains(
    conn: sqlite3.Connection,
    removed: Sequence[tuple[str, str, int]],
    added: Sequence[tuple[str, str, int, int]],
) -> None:
    """Delete the (app, endpoint, start) chains, then store the (app, endpoint, start, stop)."""
    if removed:
        conn.executemany(
            "DELETE FROM an_visits WHERE app_id = ? AND endpoint_id = ? AND start_ms = ?",
            removed,
        )
    if added:
        conn.executemany(
            "INSERT INTO an_visits (app_id, endpoint_id, start_ms, stop_ms) VALUES (?, ?, ?, ?)",
            added,
        )


def add_stats(
    conn: sqlite3.Connection,
    hours: Iterable[tuple[Any, ...]],
    lengths: Iterable[tuple[Any, ...]],
) -> None:
    """Add (app, hour, count, total ms) and (app, hour, bucket, count) rows."""
    conn.executemany(
        "INSERT INTO an_visit_hours (app_id, hour, count, total_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, hour) DO UPDATE SET count = count + excluded.count,"
        " total_ms = total_ms + excluded.total_ms",
        hours,
    )
    conn.executemany(
        "INSERT INTO an_visit_lengths (app_id, hour, bucket, count) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, hour, bucket) DO UPDATE SET count = count + excluded.count",
        lengths,
    )


def remove_endpoint(conn: sqlite3.Connection, app_id: str, endpoint_id: str) -> list[Any]:
    """Delete the endpoint's chains; return their (start, stop)."""
    return conn.execute(
        "DELETE FROM an_visits WHERE app_id = ? AND endpoint_id = ? RETURNING start_ms, stop_ms",
        (app_id, endpoint_id),
    ).fetchall()
