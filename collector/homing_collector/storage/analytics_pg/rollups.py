"""The SQL of the rollups kept at ingest (analytics/rollups.py), on PostgreSQL: the
functions of storage/analytics_sqlite/rollups.py.

Writes take the rows as arrays, one statement each. Several collectors upsert the same
rows at once (the counts of an hour, an active user): each statement's rows go in the
order of their key, and the statements in one order, so that two transactions wait for
one another instead of deadlocking.

A sum of +inf and -inf is NaN here where SQLite stores NULL: `finite` makes it 0, as
analytics.rollups.add_sums has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from homing_collector.storage.analytics_pg import Connection, InTransaction, columns, rows, run

TABLES = (
    "an_active", "an_subjects", "an_cover", "an_retention", "an_counts", "an_metrics", "an_revenue",
    "an_sessions", "an_visits", "an_visit_hours", "an_visit_lengths", "an_opens",
)  # fmt: skip


# Ends a LATERAL subquery that looks up one key (or a range of one) of the rows an array
# of keys gives: OFFSET 0 keeps the planner from making it a join, which it would run as a
# hash join over the whole table while the table is young or its statistics old.
BY_KEY = "OFFSET 0"


def finite(expression: str) -> str:
    """SQL of `expression`, a double, or 0 where it is NaN or NULL."""
    return f"coalesce(nullif({expression}, 'NaN'::float8), 0)"


def _sorted(rows: Iterable[Sequence[Any]], key_width: int) -> list[Sequence[Any]]:
    return sorted(rows, key=lambda row: tuple(row[:key_width]))


def lock_subjects(conn: Connection, subjects: Iterable[tuple[str, int, str]]) -> None:
    """Take the transaction's lock on each (app, kind, key) subject, in order. The rollups
    read what is known of a subject (its first and last hour, its hours around new ones)
    and write what follows from it: two collectors counting the same user at once would
    each count it as new. The second waits for the first's commit, then reads it."""
    if isinstance(conn, InTransaction) and not conn.subject_locks:
        return
    keys = sorted({f"an\x1f{app}\x1f{kind}\x1f{key}" for app, kind, key in subjects})
    if keys:  # taken with the next read, before it, in the same round trip
        run(
            conn,
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
            " FROM (SELECT k FROM unnest(%b::text[]) AS k ORDER BY k) AS s",
            (keys,),
        )


def users_of(
    conn: Connection, pairs: Sequence[tuple[str, str]]
) -> list[tuple[str, str, str | None]]:
    """(app, endpoint, user id) of each (app, endpoint) that the endpoints table holds."""
    if not pairs:
        return []
    return rows(
        conn,
        "SELECT v.app_id, v.endpoint_id, e.user_id FROM unnest(%b::text[], %b::text[])"
        " AS v(app_id, endpoint_id) CROSS JOIN LATERAL (SELECT user_id FROM endpoints e"
        f" WHERE e.app_id = v.app_id AND e.endpoint_id = v.endpoint_id {BY_KEY}) AS e",
        columns(pairs, 2),
    )


def subject_spans(
    conn: Connection, subjects: Sequence[tuple[str, int, str]]
) -> list[tuple[str, int, str, int, int]]:
    """(app, kind, key, first hour, last hour) of the (app, kind, key) already seen."""
    if not subjects:
        return []
    return rows(
        conn,
        "SELECT v.app_id, v.kind, v.key, s.first_hour, s.last_hour"
        " FROM unnest(%b::text[], %s::int[], %b::text[]) AS v(app_id, kind, key)"
        " CROSS JOIN LATERAL (SELECT first_hour, last_hour FROM an_subjects s"
        f" WHERE s.app_id = v.app_id AND s.kind = v.kind AND s.key = v.key {BY_KEY}) AS s",
        columns(subjects, 3),
    )


def active_hours(
    conn: Connection, app_id: str, kind: int, key: str, up_to: int | None = None
) -> list[int]:
    """The hours a subject was active in; up to hour `up_to` if given."""
    found = rows(
        conn,
        "SELECT hour FROM an_active WHERE app_id = %s AND kind = %s AND key = %s AND hour <= %s",
        (app_id, kind, key, 2**62 if up_to is None else up_to),
    )
    return [row[0] for row in found]


def active_near(
    conn: Connection, ranges: Sequence[tuple[str, int, str, int, int]]
) -> list[tuple[str, int, str, int]]:
    """(app, kind, key, hour) of the active hours from lo to hi of each
    (app, kind, key, lo, hi)."""
    if not ranges:
        return []
    return rows(
        conn,
        "SELECT v.app_id, v.kind, v.key, a.hour"
        " FROM unnest(%b::text[], %s::int[], %b::text[], %s::bigint[], %s::bigint[])"
        " AS v(app_id, kind, key, lo, hi) CROSS JOIN LATERAL (SELECT hour FROM an_active a"
        " WHERE a.app_id = v.app_id AND a.kind = v.kind AND a.key = v.key"
        f" AND a.hour >= v.lo AND a.hour <= v.hi {BY_KEY}) AS a",
        columns(ranges, 5),
    )


def add_activity(
    conn: Connection,
    active: Iterable[tuple[str, int, int, str]],
    spans: Iterable[tuple[str, int, str, int, int]],
) -> None:
    """Store (app, kind, hour, key) active hours, and widen each (app, kind, key, first
    hour, last hour) subject to take in its new hours."""
    hours = _sorted(active, 4)
    if hours:
        run(
            conn,
            "INSERT INTO an_active (app_id, kind, hour, key)"
            " SELECT * FROM unnest(%b::text[], %s::int[], %s::bigint[], %b::text[])"
            " ON CONFLICT DO NOTHING",
            columns(hours, 4),
        )
    widened = _sorted(spans, 3)
    if widened:
        run(
            conn,
            "INSERT INTO an_subjects AS s (app_id, kind, key, first_hour, last_hour)"
            " SELECT * FROM unnest(%b::text[], %s::int[], %b::text[], %s::bigint[], %s::bigint[])"
            " ON CONFLICT (app_id, kind, key) DO UPDATE"
            " SET first_hour = least(s.first_hour, excluded.first_hour),"
            " last_hour = greatest(s.last_hour, excluded.last_hour)"
            " WHERE excluded.first_hour < s.first_hour OR excluded.last_hour > s.last_hour",
            columns(widened, 5),
        )


def add_counts(conn: Connection, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, hour, event type, count) rows."""
    ordered = _sorted(rows_, 3)
    if ordered:
        run(
            conn,
            "INSERT INTO an_counts AS c (app_id, hour, event_type, count)"
            " SELECT * FROM unnest(%b::text[], %s::bigint[], %b::text[], %s::bigint[])"
            " ON CONFLICT (app_id, hour, event_type)"
            " DO UPDATE SET count = c.count + excluded.count",
            columns(ordered, 4),
        )


def add_metrics(conn: Connection, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, hour, event type, name, count, sum, min, max) rows; a sum that is no
    number counts as 0 (see analytics.rollups.add_sums)."""
    ordered = _sorted(rows_, 4)
    if ordered:
        run(
            conn,
            "INSERT INTO an_metrics AS m (app_id, hour, event_type, name, count, sum, min, max)"
            " SELECT * FROM unnest(%b::text[], %s::bigint[], %b::text[], %b::text[],"
            " %s::bigint[], %s::float8[], %s::float8[], %s::float8[])"
            " ON CONFLICT (app_id, hour, event_type, name) DO UPDATE"
            f" SET count = m.count + excluded.count, sum = {finite('m.sum + excluded.sum')},"
            " min = least(m.min, excluded.min), max = greatest(m.max, excluded.max)",
            columns(ordered, 8),
        )


def add_sessions(conn: Connection, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Widen each (app, endpoint, session id, start, stop) session to take in its span."""
    ordered = _sorted(rows_, 3)
    if ordered:
        run(
            conn,
            "INSERT INTO an_sessions AS s (app_id, endpoint_id, session_id, start_ms, stop_ms)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %s::bigint[], %s::bigint[])"
            " ON CONFLICT (app_id, endpoint_id, session_id) DO UPDATE"
            " SET start_ms = least(s.start_ms, excluded.start_ms),"
            " stop_ms = greatest(s.stop_ms, excluded.stop_ms)"
            " WHERE excluded.start_ms < s.start_ms OR excluded.stop_ms > s.stop_ms",
            columns(ordered, 5),
        )


def add_revenue(conn: Connection, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Add (app, hour, currency, purchases, amount) rows."""
    ordered = _sorted(rows_, 3)
    if ordered:
        run(
            conn,
            "INSERT INTO an_revenue AS r (app_id, hour, currency, purchases, amount)"
            " SELECT * FROM unnest(%b::text[], %s::bigint[], %b::text[], %s::bigint[],"
            " %s::float8[]) ON CONFLICT (app_id, hour, currency) DO UPDATE"
            " SET purchases = r.purchases + excluded.purchases,"
            f" amount = {finite('r.amount + excluded.amount')}",
            columns(ordered, 5),
        )


_EVENT_COLUMNS = "app_id, endpoint_id, event_id, event_type, ts, arrival, session_id, body"


# The hours that application %(app)s has events in, an array, each hour found by one
# seek of the events' key from the one before. An endpoint's events are those of its key
# (app, hour, endpoint) in each of these hours (migration 12 dropped the index of the
# events by endpoint, which every stored event paid for: as SQLite finds them).
APP_HOURS = (
    "ARRAY(WITH RECURSIVE h(hour) AS (SELECT min(hour) FROM events WHERE app_id = %(app)s"
    " UNION ALL SELECT (SELECT min(hour) FROM events WHERE app_id = %(app)s AND hour > h.hour)"
    " FROM h WHERE h.hour IS NOT NULL) SELECT hour FROM h WHERE hour IS NOT NULL)"
)
# The events of endpoint %(endpoint)s of application %(app)s, for "FROM events WHERE ...".
ENDPOINT_EVENTS = f"app_id = %(app)s AND hour = ANY({APP_HOURS}) AND endpoint_id = %(endpoint)s"


def endpoint_events(conn: Connection, app_id: str, endpoint_id: str) -> list[Any]:
    """The stored rows (the events table's columns, in the writer's order) of one endpoint."""
    return rows(
        conn,
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE {ENDPOINT_EVENTS}",
        {"app": app_id, "endpoint": endpoint_id},
    )


def remove_sessions(conn: Connection, app_id: str, endpoint_id: str) -> None:
    run(conn, "DELETE FROM an_sessions WHERE app_id = %s AND endpoint_id = %s",
        (app_id, endpoint_id))  # fmt: skip


def note_user_key(conn: Connection, app_id: str, endpoint_id: str, key: str) -> None:
    run(
        conn,
        "INSERT INTO an_user_keys (app_id, endpoint_id, key) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (app_id, endpoint_id, key),
    )


def noted_keys(conn: Connection, app_id: str, endpoint_id: str) -> list[str]:
    found = rows(
        conn,
        "SELECT key FROM an_user_keys WHERE app_id = %s AND endpoint_id = %s",
        (app_id, endpoint_id),
    )
    return [row[0] for row in found]


def forget_notes(conn: Connection, app_id: str, endpoint_ids: Iterable[str]) -> None:
    run(
        conn,
        "DELETE FROM an_user_keys WHERE app_id = %s AND endpoint_id = ANY(%s)",
        (app_id, list(endpoint_ids)),
    )


def endpoint_users(
    conn: Connection, app_id: str, *, endpoint_id: str | None = None,
    user_id: str | None = None,
) -> list[tuple[str, str | None]]:  # fmt: skip
    """(endpoint id, user id) of the endpoint `endpoint_id`, or of those of user `user_id`."""
    if endpoint_id is not None:
        return rows(
            conn,
            "SELECT endpoint_id, user_id FROM endpoints WHERE app_id = %s AND endpoint_id = %s",
            (app_id, endpoint_id),
        )
    return rows(
        conn,
        "SELECT endpoint_id, user_id FROM endpoints WHERE app_id = %s AND user_id = %s",
        (app_id, user_id),
    )


def noted_under(conn: Connection, app_id: str, key: str) -> list[tuple[str, str | None]]:
    """(endpoint id, user id now) of the endpoints noted under user key `key`."""
    return rows(
        conn,
        "SELECT e.endpoint_id, e.user_id FROM an_user_keys k JOIN endpoints e"
        " ON e.app_id = k.app_id AND e.endpoint_id = k.endpoint_id"
        " WHERE k.app_id = %s AND k.key = %s",
        (app_id, key),
    )


def forget_subject(conn: Connection, app_id: str, kind: int, key: str) -> list[int]:
    """Delete a subject's active hours, returned."""
    found = rows(
        conn,
        "DELETE FROM an_active WHERE app_id = %s AND kind = %s AND key = %s RETURNING hour",
        (app_id, kind, key),
    )
    return [row[0] for row in found]


def forget_span(conn: Connection, app_id: str, kind: int, key: str) -> None:
    run(conn, "DELETE FROM an_subjects WHERE app_id = %s AND kind = %s AND key = %s",
        (app_id, kind, key))  # fmt: skip


def subtract_counts(conn: Connection, app_id: str, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Take (count, app, hour, event type) away; drop the counts that reach 0."""
    ordered = sorted(rows_, key=lambda row: tuple(row[1:]))
    if ordered:
        run(
            conn,
            "UPDATE an_counts c SET count = c.count - v.n"
            " FROM unnest(%s::bigint[], %b::text[], %s::bigint[], %b::text[])"
            " AS v(n, app_id, hour, event_type)"
            " WHERE c.app_id = v.app_id AND c.hour = v.hour AND c.event_type = v.event_type",
            columns(ordered, 4),
        )
    run(conn, "DELETE FROM an_counts WHERE app_id = %s AND count <= 0", (app_id,))


def subtract_revenue(conn: Connection, app_id: str, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Take (purchases, amount, app, hour, currency) away; drop what has no purchase left."""
    ordered = sorted(rows_, key=lambda row: tuple(row[2:]))
    if ordered:
        run(
            conn,
            "UPDATE an_revenue r SET purchases = r.purchases - v.n,"
            f" amount = {finite('r.amount - v.amount')}"
            " FROM unnest(%s::bigint[], %s::float8[], %b::text[], %s::bigint[], %b::text[])"
            " AS v(n, amount, app_id, hour, currency)"
            " WHERE r.app_id = v.app_id AND r.hour = v.hour AND r.currency = v.currency",
            columns(ordered, 5),
        )
    run(conn, "DELETE FROM an_revenue WHERE app_id = %s AND purchases <= 0", (app_id,))


def metric_extremes(
    conn: Connection, keys: Sequence[tuple[str, int, str, str]]
) -> list[tuple[str, int, str, str, float, float]]:
    """(app, hour, event type, name, min, max) of the stored metrics of these keys."""
    if not keys:
        return []
    return rows(
        conn,
        "SELECT v.app_id, v.hour, v.event_type, v.name, m.min, m.max"
        " FROM unnest(%b::text[], %s::bigint[], %b::text[], %b::text[])"
        " AS v(app_id, hour, event_type, name) CROSS JOIN LATERAL (SELECT min, max"
        " FROM an_metrics m WHERE m.app_id = v.app_id AND m.hour = v.hour"
        f" AND m.event_type = v.event_type AND m.name = v.name {BY_KEY}) AS m",
        columns(keys, 4),
    )


def subtract_metrics(conn: Connection, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Take (count, sum, app, hour, event type, name) away."""
    ordered = sorted(rows_, key=lambda row: tuple(row[2:]))
    if ordered:
        run(
            conn,
            "UPDATE an_metrics m SET count = m.count - v.n,"
            f" sum = {finite('m.sum - v.total')}"
            " FROM unnest(%s::bigint[], %s::float8[], %b::text[], %s::bigint[], %b::text[],"
            " %b::text[]) AS v(n, total, app_id, hour, event_type, name)"
            " WHERE m.app_id = v.app_id AND m.hour = v.hour AND m.event_type = v.event_type"
            " AND m.name = v.name",
            columns(ordered, 6),
        )


def forget_metrics(conn: Connection, keys: Iterable[tuple[Any, ...]]) -> None:
    """Delete the (app, hour, event type, name) metrics."""
    ordered = _sorted(keys, 4)
    if ordered:
        run(
            conn,
            "DELETE FROM an_metrics m USING unnest(%b::text[], %s::bigint[], %b::text[],"
            " %b::text[]) AS v(app_id, hour, event_type, name)"
            " WHERE m.app_id = v.app_id AND m.hour = v.hour AND m.event_type = v.event_type"
            " AND m.name = v.name",
            columns(ordered, 4),
        )


def events_besides(
    conn: Connection, app_id: str, hours: Sequence[int], types: Sequence[str],
    endpoint_id: str,
) -> list[Any]:  # fmt: skip
    """The stored rows of these hours and types of every endpoint but one, without their
    session id (NULL)."""
    return rows(
        conn,
        "SELECT app_id, endpoint_id, event_id, event_type, ts, arrival, NULL, body FROM events"
        " WHERE app_id = %s AND hour = ANY(%s) AND event_type = ANY(%s) AND endpoint_id <> %s",
        (app_id, list(hours), list(types), endpoint_id),
    )


def insert_metrics(conn: Connection, rows_: Iterable[tuple[Any, ...]]) -> None:
    """Store (app, hour, event type, name, count, sum, min, max) rows afresh."""
    ordered = _sorted(rows_, 4)
    if ordered:
        run(
            conn,
            "INSERT INTO an_metrics (app_id, hour, event_type, name, count, sum, min, max)"
            " SELECT * FROM unnest(%b::text[], %s::bigint[], %b::text[], %b::text[],"
            " %s::bigint[], %s::float8[], %s::float8[], %s::float8[])",
            columns(ordered, 8),
        )


def remove_app(conn: Connection, app_id: str) -> None:
    for table in (*TABLES, "an_user_keys"):
        run(conn, f"DELETE FROM {table} WHERE app_id = %s", (app_id,))
