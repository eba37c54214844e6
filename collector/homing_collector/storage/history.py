"""The SQL of history: reading an application's events in key order (for an export),
each application's retention period, deleting expired events, and task leases
(migration 13).

Expired events are deleted by whole hours of the events table's key (see events.py),
lowest first, so an hour is either all there or all gone once a sweep is done: the
rollups of an hour never mix events that are stored with events that are not.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from homing_collector.analytics.opens import OPENED, Open
from homing_collector.storage.events import HOUR_MS

DAY_MS = 24 * HOUR_MS


class StoredEvent(NamedTuple):
    """One stored event, in the order of the events table's key."""

    hour: int
    endpoint_id: str
    event_id: str
    event_type: str
    ts: int
    arrival: int
    body: bytes

    @property
    def key(self) -> tuple[int, str, str, str, int]:
        """Where a page ends; the next page starts after it."""
        return (self.hour, self.endpoint_id, self.event_id, self.event_type, self.ts)


def cutoff_hour(now_ms: int, days: int) -> int:
    """The first hour an application that keeps `days` days of events still keeps."""
    return (now_ms - days * DAY_MS) // HOUR_MS


def events_page(
    conn: sqlite3.Connection,
    app_id: str,
    lo_ms: int,
    hi_ms: int,
    after: tuple[int, str, str, str, int] | None,
    limit: int,
) -> list[StoredEvent]:
    """Up to `limit` events of the app with lo_ms <= ts < hi_ms, in key order, after the
    key `after`: a walk over the range by the unique index, one page at a time."""
    lo_hour, hi_hour = lo_ms // HOUR_MS, (hi_ms - 1) // HOUR_MS + 1
    start = after or (lo_hour, "", "", "", -(2**63))
    rows = conn.execute(
        "SELECT hour, endpoint_id, event_id, event_type, ts, arrival, body FROM events"
        " WHERE app_id = ? AND (hour, endpoint_id, event_id, event_type, ts) > (?, ?, ?, ?, ?)"
        " AND hour < ? AND ts >= ? AND ts < ?"
        " ORDER BY hour, endpoint_id, event_id, event_type, ts LIMIT ?",
        (app_id, *start, hi_hour, lo_ms, hi_ms, limit),
    ).fetchall()
    return [StoredEvent(*row) for row in rows]


def get_retention(conn: sqlite3.Connection, app_id: str) -> int | None:
    row = conn.execute(
        "SELECT events_days FROM app_retention WHERE app_id = ?", (app_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def set_retention(
    conn: sqlite3.Connection, app_id: str, days: int | None, modified_at: str
) -> int | None:
    if days is None:
        conn.execute("DELETE FROM app_retention WHERE app_id = ?", (app_id,))
        return None
    conn.execute(
        "INSERT INTO app_retention (app_id, events_days, modified_at) VALUES (?, ?, ?)"
        " ON CONFLICT (app_id) DO UPDATE SET events_days = excluded.events_days,"
        " modified_at = excluded.modified_at",
        (app_id, days, modified_at),
    )
    return days


def policies(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """(application id, days) of every application that does not keep events forever."""
    rows = conn.execute("SELECT app_id, events_days FROM app_retention ORDER BY app_id")
    return [(app_id, int(days)) for app_id, days in rows.fetchall()]


def delete_expired(
    conn: sqlite3.Connection, app_id: str, before_hour: int, limit: int
) -> tuple[int, list[Open]]:
    """Delete up to `limit` events of the app in hours before `before_hour`, the lowest
    hours first; return how many, and the notification opens among them (an hour may
    be left half done). The rows are found by the key's (app, hour) prefix, so the cost
    is what is deleted, however many events are kept."""
    deleted = conn.execute(
        "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events"
        " WHERE app_id = ? AND hour < ? ORDER BY hour LIMIT ?)"
        f" RETURNING event_type = '{OPENED}', endpoint_id, ts, CASE WHEN event_type ="
        f" '{OPENED}' THEN json_extract(CAST(body AS TEXT), '$.Attributes.campaign_id') END",
        (app_id, before_hour, limit),
    ).fetchall()
    return len(deleted), [(app_id, *row[1:]) for row in deleted if row[0]]


def take_lease(conn: sqlite3.Connection, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
    """Take or renew the lease `name` for `owner` until now + ttl, unless another owner
    holds it and it has not expired; return whether `owner` holds it."""
    row = conn.execute(
        "INSERT INTO task_leases (name, owner, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
        " expires_at = excluded.expires_at"
        " WHERE task_leases.owner = excluded.owner OR task_leases.expires_at < ?"
        " RETURNING owner",
        (name, owner, now_ms + ttl_ms, now_ms),
    ).fetchone()
    return row is not None
