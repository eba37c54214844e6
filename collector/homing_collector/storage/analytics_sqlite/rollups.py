"""The SQL of the rollups (analytics/rollups.py), written by the folds of the entries
that ingest appends (analytics_sqlite/pending.py): who was active when
(an_active, an_subjects, an_user_keys), counts, metrics, revenue and sessions.

Writes take rows that the analytics have added up, and run as one `executemany` each:
the fewer statements, the faster ingestion.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from homing_collector.storage import events as events_sql
from homing_collector.storage.values import join_values

TABLES = (
    "an_active", "an_subjects", "an_cover", "an_retention", "an_counts", "an_metrics", "an_revenue",
    "an_sessions", "an_visits", "an_visit_hours", "an_visit_lengths", "an_opens",
)  # fmt: skip


def lock_subjects(conn: sqlite3.Connection, subjects: Iterable[tuple[str, int, str]]) -> None:
    """Nothing to lock: SQLite has one writer, whose transactions run one at a time."""


def users_of(
    conn: sqlite3.Connection, pairs: Sequence[tuple[str, str]]
) -> Iterator[tuple[str, str, str | None]]:
    """(app, endpoint, user id) of each (app, endpoint) that the endpoints table holds."""
    return join_values(
        conn, "app_id, endpoint_id", pairs,
        "SELECT e.app_id, e.endpoint_id, e.user_id FROM v JOIN endpoints e"
        " ON e.app_id = v.app_id AND e.endpoint_id = v.endpoint_id",
        pad=True,
    )  # fmt: skip


def subject_spans(
    conn: sqlite3.Connection, subjects: Sequence[tuple[str, int, str]]
) -> Iterator[tuple[str, int, str, int, int]]:
    """(app, kind, key, first hour, last hour) of the (app, kind, key) already seen."""
    return join_values(
        conn, "app_id, kind, key", subjects,
        "SELECT s.app_id, s.kind, s.key, s.first_hour, s.last_hour FROM v JOIN an_subjects s"
        " ON s.app_id = v.app_id AND s.kind = v.kind AND s.key = v.key",
        pad=True,
    )  # fmt: skip


def active_hours(
    conn: sqlite3.Connection, app_id: str, kind: int, key: str, up_to: int | None = None
) -> list[int]:
    """The hours a subject was active in; up to hour `up_to` if given."""
    if up_to is None:
        rows = conn.execute(
            "SELECT hour FROM an_active WHERE app_id = ? AND kind = ? AND key = ?",
            (app_id, kind, key),
        )
    else:
        rows = conn.execute(
            "SELECT hour FROM an_active WHERE app_id = ? AND kind = ? AND key = ? AND hour <= ?",
            (app_id, kind, key, up_to),
        )
    return [row[0] for row in rows]


def active_near(
    conn: sqlite3.Connection, ranges: Sequence[tuple[str, int, str, int, int]]
) -> Iterator[tuple[str, int, str, int]]:
    """(app, kind, key, hour) of the active hours from lo to hi of each
    (app, kind, key, lo, hi)."""
    return join_values(
        conn, "app_id, kind, key, lo, hi", ranges,
        "SELECT a.app_id, a.kind, a.key, a.hour FROM v JOIN an_active a"
        " ON a.app_id = v.app_id AND a.kind = v.kind AND a.key = v.key"
        " AND a.hour >= v.lo AND a.hour <= v.hi",
        pad=True,
    )  # fmt: skip


def add_activity(
    conn: sqlite3.Connection,
    active: Iterable[tuple[str, int, int, str]],
    spans: Iterable[tuple[str, int, str, int, int]],
) -> None:
    """Store (app, kind, hour, key) active hours, and widen each (app, kind, key, first
    hour, last hour) subject to take in its new hours."""
    conn.executemany(
        "INSERT OR IGNORE INTO an_active (app_id, kind, hour, key) VALUES (?, ?, ?, ?)", active
    )
    conn.executemany(
        "INSERT INTO an_subjects (app_id, kind, key, first_hour, last_hour)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_id, kind, key) DO UPDATE"
        " SET first_hour = min(first_hour, excluded.first_hour),"
        " last_hour = max(last_hour, excluded.last_hour)"
        # An update that changes nothing still rewrites its page, and every page a
        # commit touches is written to the WAL: most batches come from a subject
        # already seen that hour.
        " WHERE excluded.first_hour < first_hour OR excluded.last_hour > last_hour",
        spans,
    )


def add_counts(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, hour, event type, count) rows."""
    conn.executemany(
        "INSERT INTO an_counts (app_id, hour, event_type, count) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, hour, event_type) DO UPDATE SET count = count + excluded.count",
        rows,
    )


def add_metrics(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, hour, event type, name, count, sum, min, max) rows; a sum that is no
    number counts as 0 (see analytics.rollups.add_sums)."""
    conn.executemany(
        "INSERT INTO an_metrics (app_id, hour, event_type, name, count, sum, min, max)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (app_id, hour, event_type, name) DO UPDATE"
        " SET count = count + excluded.count, sum = coalesce(sum + excluded.sum, 0),"
        " min = min(min, excluded.min), max = max(max, excluded.max)",
        rows,
    )


def add_sessions(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Widen each (app, endpoint, session id, start, stop) session to take in its span."""
    conn.executemany(
        "INSERT INTO an_sessions (app_id, endpoint_id, session_id, start_ms, stop_ms)"
        " VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (app_id, endpoint_id, session_id) DO UPDATE"
        " SET start_ms = min(start_ms, excluded.start_ms),"
        " stop_ms = max(stop_ms, excluded.stop_ms)"
        " WHERE excluded.start_ms < start_ms OR excluded.stop_ms > stop_ms",
        rows,
    )


def add_revenue(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, hour, currency, purchases, amount) rows."""
    conn.executemany(
        "INSERT INTO an_revenue (app_id, hour, currency, purchases, amount)"
        " VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (app_id, hour, currency) DO UPDATE"
        " SET purchases = purchases + excluded.purchases,"
        " amount = coalesce(amount + excluded.amount, 0)",
        rows,
    )


def endpoint_events(conn: sqlite3.Connection, app_id: str, endpoint_id: str) -> list[Any]:
    """The stored rows (the events table's columns, in the writer's order) of one endpoint."""
    return conn.execute(
        events_sql.endpoint_select(
            "e.app_id, e.endpoint_id, e.event_id, e.event_type, e.ts, e.arrival, e.session_id,"
            " e.body"
        ),
        {"app": app_id, "endpoint": endpoint_id},
    ).fetchall()


def remove_sessions(conn: sqlite3.Connection, app_id: str, endpoint_id: str) -> None:
    conn.execute(
        "DELETE FROM an_sessions WHERE app_id = ? AND endpoint_id = ?", (app_id, endpoint_id)
    )


def note_user_key(conn: sqlite3.Connection, app_id: str, endpoint_id: str, key: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO an_user_keys (app_id, endpoint_id, key) VALUES (?, ?, ?)",
        (app_id, endpoint_id, key),
    )


def noted_keys(conn: sqlite3.Connection, app_id: str, endpoint_id: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT key FROM an_user_keys WHERE app_id = ? AND endpoint_id = ?",
            (app_id, endpoint_id),
        )
    ]


def forget_notes(conn: sqlite3.Connection, app_id: str, endpoint_ids: Iterable[str]) -> None:
    conn.executemany(
        "DELETE FROM an_user_keys WHERE app_id = ? AND endpoint_id = ?",
        [(app_id, endpoint_id) for endpoint_id in endpoint_ids],
    )


def endpoint_users(
    conn: sqlite3.Connection, app_id: str, *, endpoint_id: str | None = None,
    user_id: str | None = None,
) -> list[tuple[str, str | None]]:  # fmt: skip
    """(endpoint id, user id) of the endpoint `endpoint_id`, or of those of user `user_id`."""
    if endpoint_id is not None:
        return conn.execute(
            "SELECT endpoint_id, user_id FROM endpoints WHERE app_id = ? AND endpoint_id = ?",
            (app_id, endpoint_id),
        ).fetchall()
    return conn.execute(
        "SELECT endpoint_id, user_id FROM endpoints INDEXED BY endpoints_user WHERE app_id = ?"
        " AND user_id = ?",
        (app_id, user_id),
    ).fetchall()


def noted_under(conn: sqlite3.Connection, app_id: str, key: str) -> list[tuple[str, str | None]]:
    """(endpoint id, user id now) of the endpoints noted under user key `key`."""
    return conn.execute(
        "SELECT e.endpoint_id, e.user_id FROM an_user_keys k JOIN endpoints e"
        " ON e.app_id = k.app_id AND e.endpoint_id = k.endpoint_id"
        " WHERE k.app_id = ? AND k.key = ?",
        (app_id, key),
    ).fetchall()


def forget_subject(conn: sqlite3.Connection, app_id: str, kind: int, key: str) -> list[int]:
    """Delete a subject's active hours, returned."""
    return [
        row[0]
        for row in conn.execute(
            "DELETE FROM an_active WHERE app_id = ? AND kind = ? AND key = ? RETURNING hour",
            (app_id, kind, key),
        ).fetchall()
    ]


def forget_span(conn: sqlite3.Connection, app_id: str, kind: int, key: str) -> None:
    conn.execute(
        "DELETE FROM an_subjects WHERE app_id = ? AND kind = ? AND key = ?", (app_id, kind, key)
    )


def subtract_counts(conn: sqlite3.Connection, app_id: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """Take (count, app, hour, event type) away; drop the counts that reach 0."""
    conn.executemany(
        "UPDATE an_counts SET count = count - ? WHERE app_id = ? AND hour = ? AND event_type = ?",
        rows,
    )
    conn.execute("DELETE FROM an_counts WHERE app_id = ? AND count <= 0", (app_id,))


def subtract_revenue(
    conn: sqlite3.Connection, app_id: str, rows: Iterable[tuple[Any, ...]]
) -> None:
    """Take (purchases, amount, app, hour, currency) away; drop what has no purchase left."""
    conn.executemany(
        "UPDATE an_revenue SET purchases = purchases - ?, amount = coalesce(amount - ?, 0)"
        " WHERE app_id = ? AND hour = ? AND currency = ?",
        rows,
    )
    conn.execute("DELETE FROM an_revenue WHERE app_id = ? AND purchases <= 0", (app_id,))


def metric_extremes(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, int, str, str]]
) -> Iterator[tuple[str, int, str, str, float, float]]:
    """(app, hour, event type, name, min, max) of the stored metrics of these keys."""
    return join_values(
        conn, "app_id, hour, event_type, name", keys,
        "SELECT m.app_id, m.hour, m.event_type, m.name, m.min, m.max FROM v JOIN an_metrics m"
        " ON m.app_id = v.app_id AND m.hour = v.hour AND m.event_type = v.event_type"
        " AND m.name = v.name",
    )  # fmt: skip


def subtract_metrics(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Take (count, sum, app, hour, event type, name) away."""
    conn.executemany(
        "UPDATE an_metrics SET count = count - ?, sum = coalesce(sum - ?, 0) WHERE app_id = ?"
        " AND hour = ? AND event_type = ? AND name = ?",
        rows,
    )


def forget_metrics(conn: sqlite3.Connection, keys: Iterable[tuple[Any, ...]]) -> None:
    """Delete the (app, hour, event type, name) metrics."""
    conn.executemany(
        "DELETE FROM an_metrics WHERE app_id = ? AND hour = ? AND event_type = ? AND name = ?",
        keys,
    )


def events_besides(
    conn: sqlite3.Connection, app_id: str, hours: Sequence[int], types: Sequence[str],
    endpoint_id: str,
) -> list[Any]:  # fmt: skip
    """The stored rows of these hours and types of every endpoint but one, without their
    session id (NULL)."""
    return conn.execute(
        f"SELECT app_id, endpoint_id, event_id, event_type, ts, arrival, NULL, body FROM events"
        f" WHERE app_id = ? AND hour IN ({','.join('?' * len(hours))})"
        f" AND event_type IN ({','.join('?' * len(types))}) AND endpoint_id != ?",
        (app_id, *hours, *types, endpoint_id),
    ).fetchall()


def insert_metrics(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Store (app, hour, event type, name, count, sum, min, max) rows afresh."""
    conn.executemany(
        "INSERT INTO an_metrics (app_id, hour, event_type, name, count, sum, min, max)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def remove_app(conn: sqlite3.Connection, app_id: str) -> None:
    for table in (*TABLES, "an_user_keys", "an_pending"):
        conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))
