"""The SQL of an_visits, an_visit_hours and an_visit_lengths (analytics/visits.py), on
PostgreSQL: the functions of storage/analytics_sqlite/visits.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from homing_collector.storage.analytics_pg import Connection, columns, rows, run
from homing_collector.storage.analytics_pg.rollups import BY_KEY


def chains_near(
    conn: Connection, ranges: Sequence[tuple[str, str, int, int]]
) -> list[tuple[str, str, int, int]]:
    """(app, endpoint, start, stop) of the chains of each (app, endpoint, lo, hi) that
    start from lo to hi."""
    if not ranges:
        return []
    return rows(
        conn,
        "SELECT v.app_id, v.endpoint_id, c.start_ms, c.stop_ms"
        " FROM unnest(%b::text[], %b::text[], %s::bigint[], %s::bigint[])"
        " AS v(app_id, endpoint_id, lo, hi) CROSS JOIN LATERAL (SELECT start_ms, stop_ms"
        " FROM an_visits c WHERE c.app_id = v.app_id AND c.endpoint_id = v.endpoint_id"
        f" AND c.start_ms >= v.lo AND c.start_ms <= v.hi {BY_KEY}) AS c",
        columns(ranges, 4),
    )


def replace_chains(
    conn: Connection,
    removed: Sequence[tuple[str, str, int]],
    added: Sequence[tuple[str, str, int, int]],
) -> None:
    """Delete the (app, endpoint, start) chains, then store the (app, endpoint, start, stop)."""
    if removed:
        run(
            conn,
            "DELETE FROM an_visits WHERE ctid = ANY(ARRAY(SELECT c.ctid"
            " FROM unnest(%b::text[], %b::text[], %s::bigint[]) AS v(app_id, endpoint_id, start_ms)"
            " CROSS JOIN LATERAL (SELECT ctid FROM an_visits c WHERE c.app_id = v.app_id"
            f" AND c.endpoint_id = v.endpoint_id AND c.start_ms = v.start_ms {BY_KEY}) AS c))",
            columns(sorted(removed), 3),
        )
    if added:
        run(
            conn,
            "INSERT INTO an_visits (app_id, endpoint_id, start_ms, stop_ms)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %s::bigint[], %s::bigint[])",
            columns(sorted(added), 4),
        )


def add_stats(
    conn: Connection, hours: Iterable[tuple[Any, ...]], lengths: Iterable[tuple[Any, ...]]
) -> None:
    """Add (app, hour, count, total ms) and (app, hour, bucket, count) rows."""
    by_hour = sorted(hours, key=lambda row: tuple(row[:2]))
    if by_hour:
        run(
            conn,
            "INSERT INTO an_visit_hours AS h (app_id, hour, count, total_ms)"
            " SELECT * FROM unnest(%b::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
            " ON CONFLICT (app_id, hour) DO UPDATE SET count = h.count + excluded.count,"
            " total_ms = h.total_ms + excluded.total_ms",
            columns(by_hour, 4),
        )
    by_bucket = sorted(lengths, key=lambda row: tuple(row[:3]))
    if by_bucket:
        run(
            conn,
            "INSERT INTO an_visit_lengths AS l (app_id, hour, bucket, count)"
            " SELECT * FROM unnest(%b::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
            " ON CONFLICT (app_id, hour, bucket) DO UPDATE SET count = l.count + excluded.count",
            columns(by_bucket, 4),
        )


def remove_endpoint(conn: Connection, app_id: str, endpoint_id: str) -> list[Any]:
    """Delete the endpoint's chains; return their (start, stop)."""
    return rows(
        conn,
        "DELETE FROM an_visits WHERE app_id = %s AND endpoint_id = %s RETURNING start_ms, stop_ms",
        (app_id, endpoint_id),
    )
