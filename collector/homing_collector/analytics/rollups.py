"""Rollups kept current at ingest, in the transaction that stores the events.

Everything is bucketed by the UTC hour of the event's Timestamp (when it happened, not
when it arrived), so a day in any time zone with a whole-hour offset is a run of buckets.
The writer calls `apply` with the rows it has just inserted (never a duplicate), and the
storage's delete jobs call `remove_endpoint` and `remove_app`. Each call aggregates its
rows in Python first and then writes with a few `executemany` upserts: the writer thread
gives up the GIL for every statement, so the fewer statements, the faster ingestion.

Tables (migration 3):

- an_active(app_id, kind, hour, key): who was active in an hour. kind 0 is an endpoint
  (key = endpoint id), kind 1 a user (key = "u:" + UserId, or "e:" + endpoint id for an
  endpoint without a user);
- an_subjects(app_id, kind, key, first_hour): when each was first active;
- an_counts(app_id, hour, event_type, count);
- an_metrics(app_id, hour, event_type, name, count, sum, min, max);
- an_revenue(app_id, hour, currency, purchases, amount);
- an_sessions(app_id, endpoint_id, session_id, start_ms, stop_ms): one row per session.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import orjson

HOUR_MS = 3_600_000
ENDPOINT, USER = 0, 1
PURCHASE = "_monetization.purchase"
UNKNOWN_CURRENCY = "UNKNOWN"

# (app_id, endpoint_id, event_id, event_type, ts, arrival, session_id, body): the columns
# of the events table, as the writer inserts them.
Row = Sequence[Any]


class _Batch:
    """What a set of events adds to the rollups."""

    __slots__ = ("active", "counts", "first", "metrics", "revenue", "sessions")

    def __init__(self) -> None:
        self.active: set[tuple[str, int, int, str]] = set()
        self.first: dict[tuple[str, int, str], int] = {}
        self.counts: dict[tuple[str, int, str], int] = {}
        self.metrics: dict[tuple[str, int, str, str], list[float]] = {}
        self.revenue: dict[tuple[str, int, str], list[float]] = {}
        self.sessions: dict[tuple[str, str, str], list[int]] = {}


def user_key(endpoint_id: str, user_id: str | None) -> str:
    return "e:" + endpoint_id if user_id is None else "u:" + user_id


def _users(conn: sqlite3.Connection, rows: Sequence[Row]) -> dict[tuple[str, str], str]:
    """The user key of each (app, endpoint) of the rows, as the endpoints table says now."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        wanted.setdefault(row[0], set()).add(row[1])
    users: dict[tuple[str, str], str] = {}
    for app_id, ids in wanted.items():
        found: dict[str, str | None] = {}
        id_list = list(ids)
        for i in range(0, len(id_list), 500):
            chunk = id_list[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for endpoint_id, user_id in conn.execute(
                f"SELECT endpoint_id, user_id FROM endpoints WHERE app_id = ?"
                f" AND endpoint_id IN ({marks})",
                (app_id, *chunk),
            ):
                found[endpoint_id] = user_id
        for endpoint_id in ids:
            users[(app_id, endpoint_id)] = user_key(endpoint_id, found.get(endpoint_id))
    return users


def _parse_ms(value: Any) -> int | None:
    if type(value) is not str:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def aggregate(rows: Sequence[Row], users: dict[tuple[str, str], str]) -> _Batch:
    batch = _Batch()
    active, first, counts = batch.active, batch.first, batch.counts
    metrics, revenue, sessions = batch.metrics, batch.revenue, batch.sessions
    starts: dict[str, int | None] = {}  # StartTimestamp text -> ms, parsed once
    for row in rows:
        app_id, endpoint_id, event_type, ts = row[0], row[1], row[3], row[4]
        hour = ts // HOUR_MS
        user = users[(app_id, endpoint_id)]
        active.add((app_id, ENDPOINT, hour, endpoint_id))
        active.add((app_id, USER, hour, user))
        for key in ((app_id, ENDPOINT, endpoint_id), (app_id, USER, user)):
            known = first.get(key)
            if known is None or hour < known:
                first[key] = hour
        ckey = (app_id, hour, event_type)
        counts[ckey] = counts.get(ckey, 0) + 1
        event = orjson.loads(row[7])
        values = event.get("Metrics")
        if values:
            for name, value in values.items():
                mkey = (app_id, hour, event_type, name)
                agg = metrics.get(mkey)
                if agg is None:
                    metrics[mkey] = [1, value, value, value]
                else:
                    agg[0] += 1
                    agg[1] += value
                    if value < agg[2]:
                        agg[2] = value
                    if value > agg[3]:
                        agg[3] = value
        if row[6] is not None:
            session = event["Session"]
            start_text = session.get("StartTimestamp")
            if start_text in starts:
                start = starts[start_text]
            else:
                start = starts[start_text] = _parse_ms(start_text)
            stop = _parse_ms(session["StopTimestamp"]) if "StopTimestamp" in session else None
            start = ts if start is None else start
            stop = ts if stop is None else stop
            skey = (app_id, endpoint_id, row[6])
            span = sessions.get(skey)
            if span is None:
                sessions[skey] = [start, stop]
            else:
                if start < span[0]:
                    span[0] = start
                if stop > span[1]:
                    span[1] = stop
        if event_type == PURCHASE:
            currency = (event.get("Attributes") or {}).get("_currency") or UNKNOWN_CURRENCY
            m = values or {}
            amount = m.get("_item_price", 0.0) * m.get("_quantity", 1.0)
            rkey = (app_id, hour, currency)
            got = revenue.get(rkey)
            if got is None:
                revenue[rkey] = [1, amount]
            else:
                got[0] += 1
                got[1] += amount
    return batch


def apply(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Add newly stored events to the rollups, inside the caller's transaction."""
    if not rows:
        return
    batch = aggregate(rows, _users(conn, rows))
    conn.executemany(
        "INSERT OR IGNORE INTO an_active (app_id, kind, hour, key) VALUES (?, ?, ?, ?)",
        batch.active,
    )
    conn.executemany(
        "INSERT INTO an_subjects (app_id, kind, key, first_hour) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, kind, key) DO UPDATE"
        " SET first_hour = min(first_hour, excluded.first_hour)",
        [(*key, hour) for key, hour in batch.first.items()],
    )
    conn.executemany(
        "INSERT INTO an_counts (app_id, hour, event_type, count) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, hour, event_type) DO UPDATE SET count = count + excluded.count",
        [(*key, count) for key, count in batch.counts.items()],
    )
    if batch.metrics:
        conn.executemany(
            "INSERT INTO an_metrics (app_id, hour, event_type, name, count, sum, min, max)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (app_id, hour, event_type, name) DO UPDATE"
            " SET count = count + excluded.count, sum = sum + excluded.sum,"
            " min = min(min, excluded.min), max = max(max, excluded.max)",
            [(*key, *agg) for key, agg in batch.metrics.items()],
        )
    if batch.sessions:
        conn.executemany(
            "INSERT INTO an_sessions (app_id, endpoint_id, session_id, start_ms, stop_ms)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (app_id, endpoint_id, session_id) DO UPDATE"
            " SET start_ms = min(start_ms, excluded.start_ms),"
            " stop_ms = max(stop_ms, excluded.stop_ms)",
            [(*key, *span) for key, span in batch.sessions.items()],
        )
    if batch.revenue:
        conn.executemany(
            "INSERT INTO an_revenue (app_id, hour, currency, purchases, amount)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (app_id, hour, currency) DO UPDATE"
            " SET purchases = purchases + excluded.purchases, amount = amount + excluded.amount",
            [(*key, *got) for key, got in batch.revenue.items()],
        )


def remove_endpoint(
    conn: sqlite3.Connection, app_id: str, endpoint_id: str, user_id: str | None
) -> None:
    """Take an endpoint's events out of the rollups. Call before its events are deleted,
    after its row in `endpoints` is (the user's other endpoints are read from there)."""
    rows = conn.execute(
        "SELECT app_id, endpoint_id, event_id, event_type, ts, arrival, session_id, body"
        " FROM events WHERE app_id = ? AND endpoint_id = ?",
        (app_id, endpoint_id),
    ).fetchall()
    if rows:
        users = {(app_id, endpoint_id): user_key(endpoint_id, user_id)}
        _subtract(conn, app_id, endpoint_id, aggregate(rows, users))
    conn.execute(
        "DELETE FROM an_sessions WHERE app_id = ? AND endpoint_id = ?", (app_id, endpoint_id)
    )
    _forget_subject(conn, app_id, ENDPOINT, endpoint_id)
    key = user_key(endpoint_id, user_id)
    if user_id is None:
        _forget_subject(conn, app_id, USER, key)
        return
    # The user's activity is what its other endpoints still have.
    others = [
        row[0]
        for row in conn.execute(
            "SELECT endpoint_id FROM endpoints WHERE app_id = ? AND user_id = ?"
            " AND endpoint_id != ?",
            (app_id, user_id, endpoint_id),
        )
    ]
    _forget_subject(conn, app_id, USER, key)
    hours: set[int] = set()
    for other in others:
        hours.update(
            row[0]
            for row in conn.execute(
                "SELECT hour FROM an_active WHERE app_id = ? AND kind = ? AND key = ?",
                (app_id, ENDPOINT, other),
            )
        )
    if hours:
        conn.executemany(
            "INSERT OR IGNORE INTO an_active (app_id, kind, hour, key) VALUES (?, ?, ?, ?)",
            [(app_id, USER, hour, key) for hour in hours],
        )
        conn.execute(
            "INSERT INTO an_subjects (app_id, kind, key, first_hour) VALUES (?, ?, ?, ?)",
            (app_id, USER, key, min(hours)),
        )


def _forget_subject(conn: sqlite3.Connection, app_id: str, kind: int, key: str) -> None:
    conn.execute(
        "DELETE FROM an_active WHERE app_id = ? AND kind = ? AND key = ?", (app_id, kind, key)
    )
    conn.execute(
        "DELETE FROM an_subjects WHERE app_id = ? AND kind = ? AND key = ?", (app_id, kind, key)
    )


def _subtract(conn: sqlite3.Connection, app_id: str, endpoint_id: str, batch: _Batch) -> None:
    conn.executemany(
        "UPDATE an_counts SET count = count - ? WHERE app_id = ? AND hour = ? AND event_type = ?",
        [(count, *key) for key, count in batch.counts.items()],
    )
    conn.execute("DELETE FROM an_counts WHERE app_id = ? AND count <= 0", (app_id,))
    if batch.revenue:
        conn.executemany(
            "UPDATE an_revenue SET purchases = purchases - ?, amount = amount - ?"
            " WHERE app_id = ? AND hour = ? AND currency = ?",
            [(got[0], got[1], *key) for key, got in batch.revenue.items()],
        )
        conn.execute("DELETE FROM an_revenue WHERE app_id = ? AND purchases <= 0", (app_id,))
    if batch.metrics:
        _recompute_metrics(conn, app_id, endpoint_id, batch)


def _recompute_metrics(
    conn: sqlite3.Connection, app_id: str, endpoint_id: str, batch: _Batch
) -> None:
    """Count and sum subtract; a minimum or maximum does not, so the buckets that the
    removed events touched are computed again from the events that remain."""
    keys = set(batch.metrics)
    hours = {key[1] for key in keys}
    types = sorted({key[2] for key in keys})
    conn.executemany(
        "DELETE FROM an_metrics WHERE app_id = ? AND hour = ? AND event_type = ? AND name = ?",
        keys,
    )
    marks = ",".join("?" * len(types))
    remaining = conn.execute(
        f"SELECT app_id, endpoint_id, event_id, event_type, ts, arrival, NULL, body FROM events"
        f" WHERE app_id = ? AND event_type IN ({marks}) AND ts >= ? AND ts < ?"
        " AND endpoint_id != ?",
        (app_id, *types, min(hours) * HOUR_MS, (max(hours) + 1) * HOUR_MS, endpoint_id),
    ).fetchall()
    remaining = [row for row in remaining if row[4] // HOUR_MS in hours]
    users = {(row[0], row[1]): "" for row in remaining}
    again = aggregate(remaining, users).metrics
    conn.executemany(
        "INSERT INTO an_metrics (app_id, hour, event_type, name, count, sum, min, max)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*key, *again[key]) for key in keys if key in again],
    )


def remove_app(conn: sqlite3.Connection, app_id: str) -> None:
    for table in TABLES:
        conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))


TABLES = ("an_active", "an_subjects", "an_counts", "an_metrics", "an_revenue", "an_sessions")


def iter_rows(values: Sequence[Any], width: int) -> list[Row]:
    """The writer's flat list of column values, as rows."""
    return [values[i : i + width] for i in range(0, len(values), width)]


def new_rows(values: Sequence[Any], width: int, new: set[tuple[Any, ...]]) -> list[Row]:
    """The rows whose (app, endpoint, event id) is in `new`, the first of each only."""
    fresh = set(new)
    rows = []
    for row in iter_rows(values, width):
        key = (row[0], row[1], row[2])
        if key in fresh:
            fresh.remove(key)
            rows.append(row)
    return rows
