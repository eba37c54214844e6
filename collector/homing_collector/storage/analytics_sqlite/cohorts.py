"""The SQL of an_retention: retention per cohort day and offset (analytics/cohorts.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any


def add_counts(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, kind, phase, cohort, offset, count) rows to what an_retention holds."""
    conn.executemany(
        "INSERT INTO an_retention (app_id, kind, phase, cohort, day_offset, count)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (app_id, kind, phase, cohort, day_offset)"
        " DO UPDATE SET count = count + excluded.count",
        rows,
    )
