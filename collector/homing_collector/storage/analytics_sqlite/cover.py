"""The SQL of an_cover: coverage deltas per window length (analytics/cover.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any


def add_deltas(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, kind, span, hour, delta) rows to what an_cover holds."""
    conn.executemany(
        "INSERT INTO an_cover (app_id, kind, span, hour, delta) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (app_id, kind, span, hour) DO UPDATE SET delta = delta + excluded.delta",
        rows,
    )


def deltas_up_to(
    conn: sqlite3.Connection, app_id: str, kind: int, span: int, last: int
) -> Iterator[tuple[int, int]]:
    """(hour, delta) of one window length, up to hour `last`, in order of hour."""
    return conn.execute(
        "SELECT hour, delta FROM an_cover WHERE app_id = ? AND kind = ? AND span = ?"
        " AND hour <= ? ORDER BY hour",
        (app_id, kind, span, last),
    )
