"""SQL of the in-process event-stream hooks' cursors (homing_collector.hooks.hook_stream).

A cursor is the rowid of the last event given to a named hook, over the events of every
application: rowids follow the order in which transactions commit, as for the webhook
event streams (storage/outbox.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from homing_collector.storage.base import HookRow
from homing_collector.storage.values import join_values


def ensure(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, int]:
    """The cursors of `names`; a name seen for the first time starts after the events
    stored until now (its hook gets what is stored from then on)."""
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()
    conn.executemany(
        "INSERT INTO hook_cursors (name, cursor) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        [(name, last) for name in names],
    )
    return {name: get(conn, name) for name in names}


def get(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT cursor FROM hook_cursors WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def rows(conn: sqlite3.Connection, after: int, limit: int) -> list[HookRow]:
    """Up to `limit` events of any application stored after rowid `after`, in order."""
    found = conn.execute(
        "SELECT rowid, app_id, endpoint_id, event_id, arrival, body FROM events"
        " WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (after, limit),
    ).fetchall()
    return [HookRow(*row) for row in found]


def endpoint_bodies(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], bytes]:
    """The stored bodies of the (application id, endpoint id) pairs that exist."""
    found = join_values(
        conn,
        "app_id, endpoint_id",
        list(dict.fromkeys(keys)),
        "SELECT app_id, endpoint_id, body FROM v JOIN endpoints USING (app_id, endpoint_id)",
    )
    return {(app_id, endpoint_id): body for app_id, endpoint_id, body in found}


def advance(conn: sqlite3.Connection, name: str, after: int, to: int) -> bool:
    """Move the cursor from `after` to `to`; False if it was no longer at `after`."""
    cursor = conn.execute(
        "UPDATE hook_cursors SET cursor = ? WHERE name = ? AND cursor = ?", (to, name, after)
    )
    return cursor.rowcount > 0


def lag(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, int]:
    """Per name: the events stored after its cursor (rowids, so an upper bound)."""
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()
    return {name: max(0, last - get(conn, name)) for name in names}


def events_deleted(conn: sqlite3.Connection) -> None:
    """After events were deleted, in the same transaction: a cursor past the largest rowid
    left moves back to it, or it would skip the new events that take the freed rowids
    (see storage/outbox.py's events_deleted)."""
    conn.execute(
        "UPDATE hook_cursors SET cursor = (SELECT coalesce(max(rowid), 0) FROM events)"
        " WHERE cursor > (SELECT coalesce(max(rowid), 0) FROM events)"
    )
