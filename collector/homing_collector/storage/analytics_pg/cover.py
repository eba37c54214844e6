"""The SQL of an_cover (analytics/cover.py), on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from homing_collector.storage.analytics_pg import Connection, columns, rows, run


def add_deltas(conn: Connection, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, kind, span, hour, delta) rows to what an_cover holds."""
    ordered = sorted(rows_, key=lambda row: tuple(row[:4]))
    if ordered:
        run(
            conn,
            "INSERT INTO an_cover AS c (app_id, kind, span, hour, delta)"
            " SELECT * FROM unnest(%b::text[], %s::int[], %s::bigint[], %s::bigint[],"
            " %s::bigint[]) ON CONFLICT (app_id, kind, span, hour)"
            " DO UPDATE SET delta = c.delta + excluded.delta",
            columns(ordered, 5),
        )


def deltas_up_to(
    conn: Connection, app_id: str, kind: int, span: int, last: int
) -> list[tuple[int, int]]:
    """(hour, delta) of one window length, up to hour `last`, in order of hour."""
    return rows(
        conn,
        "SELECT hour, delta FROM an_cover WHERE app_id = %s AND kind = %s AND span = %s"
        " AND hour <= %s ORDER BY hour",
        (app_id, kind, span, last),
    )
