"""The SQL of an_opens (analytics/opens.py), on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from homing_collector.storage.analytics_pg import Connection, columns, rows, run


def insert(conn: Connection, opens: Sequence[Sequence[Any]]) -> None:
    """Store (app id, endpoint id, ts, campaign id) rows."""
    if opens:
        run(
            conn,
            "INSERT INTO an_opens (app_id, endpoint_id, ts, campaign_id)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %s::bigint[], %b::text[])",
            columns(opens, 4),
        )


def in_range(
    conn: Connection, app_id: str, lo_ms: int, hi_ms: int
) -> list[tuple[str, int, str | None]]:
    """(endpoint id, Timestamp, campaign id) of the opens in [lo_ms, hi_ms)."""
    return rows(
        conn,
        "SELECT endpoint_id, ts, campaign_id FROM an_opens WHERE app_id = %s AND ts >= %s"
        " AND ts < %s",
        (app_id, lo_ms, hi_ms),
    )


def followed_by_session(
    conn: Connection, app_id: str, lo_ms: int, hi_ms: int, before_ms: int, after_ms: int
) -> int:
    """How many opens in [lo_ms, hi_ms) have a session of their endpoint that starts from
    `before_ms` before to `after_ms` after, in one statement."""
    found = rows(
        conn,
        "SELECT count(*) FROM an_opens o WHERE o.app_id = %s AND o.ts >= %s AND o.ts < %s"
        " AND EXISTS (SELECT 1 FROM an_sessions s"
        " WHERE s.app_id = o.app_id AND s.endpoint_id = o.endpoint_id"
        " AND s.start_ms >= o.ts - %s AND s.start_ms <= o.ts + %s)",
        (app_id, lo_ms, hi_ms, before_ms, after_ms),
    )
    return int(found[0][0])


def remove_endpoint(conn: Connection, app_id: str, endpoint_id: str) -> None:
    run(conn, "DELETE FROM an_opens WHERE app_id = %s AND endpoint_id = %s",
        (app_id, endpoint_id))  # fmt: skip


def deleted(conn: Connection, opens: Sequence[Sequence[Any]]) -> None:
    """Forget one row for each (app id, endpoint id, ts, campaign id) given."""
    for app_id, endpoint_id, ts, campaign_id in opens:
        run(
            conn,
            "DELETE FROM an_opens WHERE ctid = (SELECT ctid FROM an_opens WHERE app_id = %s"
            " AND endpoint_id = %s AND ts = %s AND campaign_id IS NOT DISTINCT FROM %s LIMIT 1)",
            (app_id, endpoint_id, ts, campaign_id),
        )
