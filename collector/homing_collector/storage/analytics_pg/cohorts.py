"""The SQL of an_retention (analytics/cohorts.py), on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from homing_collector.storage.analytics_pg import Connection, columns, run


def add_counts(conn: Connection, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, kind, phase, cohort, offset, count) rows to what an_retention holds."""
    ordered = sorted(rows_, key=lambda row: tuple(row[:5]))
    if ordered:
        run(
            conn,
            "INSERT INTO an_retention AS r (app_id, kind, phase, cohort, day_offset, count)"
            " SELECT * FROM unnest(%b::text[], %s::int[], %s::int[], %s::bigint[], %s::int[],"
            " %s::bigint[]) ON CONFLICT (app_id, kind, phase, cohort, day_offset)"
            " DO UPDATE SET count = r.count + excluded.count",
            columns(ordered, 6),
        )
