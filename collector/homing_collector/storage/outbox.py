"""The SQL of hooks (migration 11): signing secrets, the outbox, disabled destinations
and event streams, run by SQLiteStorage (writes in its writer thread).

A delivery is `pending` until it is `delivered` or `dead` (dead-lettered). A process
takes pending deliveries that are due by writing its name and a lease time on them
(`claim`), and every later write of a delivery names that owner, so a process whose
lease ran out (it hung, or was killed) cannot overwrite what another one did since.
`ordered` deliveries (an event stream's batches) go one at a time per application and
destination, oldest first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from homing_collector.storage.base import (
    DeadLetter,
    Delivery,
    EventStreamRecord,
    HookSecrets,
    NewDelivery,
    StreamValues,
)
from homing_collector.storage.columnar import snapshot
from homing_collector.storage.values import join_values

# The events a stream's pass looks through at most for one application, so that a pass
# costs the same however many events other applications sent meanwhile.
SCAN_WINDOW = 20_000
_DELIVERY = (
    "seq, id, app_id, destination, ordered, body, content_type, content_encoding, attempts,"
    " created_at, first_attempt_at"
)


# -- secrets -------------------------------------------------------------------------------


def secrets(conn: sqlite3.Connection, app_id: str) -> HookSecrets | None:
    row = conn.execute(
        "SELECT current, previous, rotated_at FROM hook_secrets WHERE app_id = ?", (app_id,)
    ).fetchone()
    return HookSecrets(*row) if row else None


def ensure_secrets(conn: sqlite3.Connection, app_id: str, new: str, now: str) -> HookSecrets:
    """The application's secrets; `new` becomes its first if it has none."""
    conn.execute(
        "INSERT OR IGNORE INTO hook_secrets (app_id, current, rotated_at) VALUES (?, ?, ?)",
        (app_id, new, now),
    )
    found = secrets(conn, app_id)
    assert found is not None
    return found


def rotate_secrets(conn: sqlite3.Connection, app_id: str, new: str, now: str) -> HookSecrets:
    """`new` signs from now on, beside the current secret, which becomes the previous."""
    conn.execute(
        "INSERT INTO hook_secrets (app_id, current, rotated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (app_id) DO UPDATE SET previous = current, current = excluded.current,"
        " rotated_at = excluded.rotated_at",
        (app_id, new, now),
    )
    found = secrets(conn, app_id)
    assert found is not None
    return found


def end_rotation(conn: sqlite3.Connection, app_id: str) -> HookSecrets | None:
    conn.execute("UPDATE hook_secrets SET previous = NULL WHERE app_id = ?", (app_id,))
    return secrets(conn, app_id)


# -- deliveries ----------------------------------------------------------------------------


def enqueue(conn: sqlite3.Connection, deliveries: Sequence[NewDelivery], now: float) -> None:
    conn.executemany(
        "INSERT INTO outbox (id, app_id, destination, ordered, body, content_type,"
        " content_encoding, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (d.id, d.app_id, d.destination, int(d.ordered), d.body, d.content_type,
             d.content_encoding, now, now)
            for d in deliveries
        ],
    )  # fmt: skip


# Whether a delivery goes to an in-process hook (`hook:NAME`), for a worker that takes
# only those (:hooks true), or all but those (false), or all (NULL).
_HOOKS = "(:hooks IS NULL OR (substr(o.destination, 1, 5) = 'hook:') = :hooks)"


def due(conn: sqlite3.Connection, now: float, hooks: bool | None = None) -> bool:
    """Whether some delivery is due and not leased: a read, before a claim writes."""
    row = conn.execute(
        "SELECT 1 FROM outbox o WHERE state = 'pending' AND next_attempt_at <= :now"
        f" AND (lease_until IS NULL OR lease_until < :now) AND {_HOOKS} LIMIT 1",
        {"now": now, "hooks": hooks},
    ).fetchone()
    return row is not None


def claim(
    conn: sqlite3.Connection,
    owner: str,
    now: float,
    lease_until: float,
    *,
    limit: int,
    per_destination: int,
    busy: Sequence[str],
    held: Sequence[int] = (),
    hooks: bool | None = None,
) -> list[Delivery]:
    """Lease up to `limit` due deliveries to `owner`: at most `per_destination` for each
    destination, none for the `busy` ones, none for a disabled one, none of those `held`
    (in flight in this process, whatever their lease says), and of ordered ones only the
    oldest pending of its application and destination; with `hooks`, only those to
    in-process hooks (True) or none of them (False)."""
    claimed = conn.execute(
        f"""
        UPDATE outbox SET lease_owner = :owner, lease_until = :until
        WHERE seq IN (
            SELECT seq FROM (
                SELECT o.seq, o.next_attempt_at, row_number() OVER (
                    PARTITION BY o.destination ORDER BY o.next_attempt_at, o.seq) AS n
                FROM outbox o
                WHERE o.state = 'pending' AND o.next_attempt_at <= :now
                  AND (o.lease_until IS NULL OR o.lease_until < :now)
                  AND o.seq NOT IN (SELECT value FROM json_each(:held))
                  AND o.destination NOT IN (SELECT value FROM json_each(:busy))
                  AND {_HOOKS}
                  AND NOT EXISTS (SELECT 1 FROM hook_destinations d
                                  WHERE d.app_id = o.app_id AND d.destination = o.destination)
                  AND (o.ordered = 0 OR NOT EXISTS (
                      SELECT 1 FROM outbox p WHERE p.state = 'pending'
                      AND p.app_id = o.app_id AND p.destination = o.destination
                      AND p.seq < o.seq))
            ) WHERE n <= :per_destination ORDER BY next_attempt_at, seq LIMIT :limit
        )
        RETURNING seq
        """,
        {
            "owner": owner,
            "until": lease_until,
            "now": now,
            "busy": _json_list(busy),
            "held": orjson.dumps(list(held)).decode(),
            "per_destination": per_destination,
            "limit": limit,
            "hooks": hooks,
        },
    ).fetchall()
    if not claimed:
        return []
    # The deliveries read apart, in the same transaction: SQLite keeps what RETURNING
    # gives in a table of its own before the first row comes, an event stream's batch
    # of 2,000 records (180 KB) copied there too (measured: 1.0 ms of CPU a claim of
    # one such batch with its body returned, 0.75 with it read apart).
    rows = conn.execute(
        f"SELECT {_DELIVERY} FROM outbox WHERE seq IN (SELECT value FROM json_each(?))"
        " ORDER BY seq",
        (orjson.dumps([seq for (seq,) in claimed]).decode(),),
    ).fetchall()
    return [Delivery(*row) for row in rows]


def lease_owners(conn: sqlite3.Connection, now: float) -> list[str]:
    """The owners of leases that have not run out."""
    rows = conn.execute(
        "SELECT DISTINCT lease_owner FROM outbox WHERE state = 'pending'"
        " AND lease_until >= ? AND lease_owner IS NOT NULL",
        (now,),
    ).fetchall()
    return [row[0] for row in rows]


def release(conn: sqlite3.Connection, owners: Sequence[str]) -> int:
    """End the leases of owners known to be gone: their deliveries are due again."""
    cursor = conn.execute(
        "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE state = 'pending'"
        " AND lease_owner IN (SELECT value FROM json_each(?))",
        (_json_list(owners),),
    )
    return cursor.rowcount


def delivered(conn: sqlite3.Connection, seq: int, owner: str, now: float, first: float) -> bool:
    # The body goes: it was the receiver's to keep. The row stays a while, for counts.
    cursor = conn.execute(
        "UPDATE outbox SET state = 'delivered', body = x'', attempts = attempts + 1,"
        " first_attempt_at = coalesce(first_attempt_at, ?), finished_at = ?,"
        " lease_owner = NULL, lease_until = NULL, last_error = NULL"
        " WHERE seq = ? AND lease_owner = ? AND state = 'pending'",
        (first, now, seq, owner),
    )
    return cursor.rowcount > 0


def retry(
    conn: sqlite3.Connection,
    seq: int,
    owner: str,
    first: float,
    next_attempt_at: float,
    error: str,
) -> bool:
    cursor = conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, first_attempt_at = coalesce("
        "first_attempt_at, ?), next_attempt_at = ?, last_error = ?, lease_owner = NULL,"
        " lease_until = NULL WHERE seq = ? AND lease_owner = ? AND state = 'pending'",
        (first, next_attempt_at, error, seq, owner),
    )
    return cursor.rowcount > 0


def dead(
    conn: sqlite3.Connection, seq: int, owner: str, first: float, now: float, error: str
) -> bool:
    cursor = conn.execute(
        "UPDATE outbox SET state = 'dead', attempts = attempts + 1, first_attempt_at ="
        " coalesce(first_attempt_at, ?), finished_at = ?, last_error = ?, lease_owner = NULL,"
        " lease_until = NULL WHERE seq = ? AND lease_owner = ? AND state = 'pending'",
        (first, now, error, seq, owner),
    )
    return cursor.rowcount > 0


def disable(
    conn: sqlite3.Connection,
    seq: int,
    owner: str,
    first: float,
    now: float,
    error: str,
) -> bool:
    """The destination answered 410: disable it for the delivery's application, and
    dead-letter what still waits for it there, to be replayed once it is enabled again."""
    row = conn.execute(
        "SELECT app_id, destination FROM outbox WHERE seq = ? AND lease_owner = ?"
        " AND state = 'pending'",
        (seq, owner),
    ).fetchone()
    if row is None:
        return False
    dead(conn, seq, owner, first, now, error)
    app_id, destination = row
    conn.execute(
        "INSERT OR REPLACE INTO hook_destinations (app_id, destination, disabled_at, reason)"
        " VALUES (?, ?, ?, ?)",
        (app_id, destination, now, error),
    )
    conn.execute(
        "UPDATE outbox SET state = 'dead', finished_at = ?, last_error = ?, lease_owner = NULL,"
        " lease_until = NULL WHERE app_id = ? AND destination = ? AND state = 'pending'",
        (now, f"not sent: the destination was disabled ({error})", app_id, destination),
    )
    return True


def dead_letters(conn: sqlite3.Connection, app_id: str, after: int, limit: int) -> list[DeadLetter]:
    rows = conn.execute(
        "SELECT seq, id, destination, attempts, created_at, first_attempt_at, finished_at,"
        " last_error FROM outbox WHERE app_id = ? AND state = 'dead' AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (app_id, after, limit),
    ).fetchall()
    return [DeadLetter(*row) for row in rows]


def replay(conn: sqlite3.Connection, app_id: str, ids: Sequence[str] | None, now: float) -> int:
    """Make dead deliveries (the ones named, or all) pending again, due now, with a fresh
    retry budget, and enable their destinations again; return how many."""
    where = "app_id = ? AND state = 'dead'"
    params: list[Any] = [app_id]
    if ids is not None:
        where += " AND id IN (SELECT value FROM json_each(?))"
        params.append(_json_list(ids))
    conn.execute(
        "DELETE FROM hook_destinations WHERE app_id = ? AND destination IN"
        f" (SELECT destination FROM outbox WHERE {where})",
        [app_id, *params],
    )
    cursor = conn.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, first_attempt_at = NULL,"
        f" next_attempt_at = ?, finished_at = NULL WHERE {where}",
        [now, *params],
    )
    return cursor.rowcount


def purge_delivered(conn: sqlite3.Connection, before: float, limit: int = 1000) -> int:
    cursor = conn.execute(
        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE state = 'delivered'"
        " AND finished_at < ? LIMIT ?)",
        (before, limit),
    )
    return cursor.rowcount


def pending_count(conn: sqlite3.Connection, app_id: str, destination: str) -> int:
    (count,) = conn.execute(
        "SELECT count(*) FROM outbox WHERE app_id = ? AND destination = ? AND state = 'pending'",
        (app_id, destination),
    ).fetchone()
    return int(count)


def disabled(conn: sqlite3.Connection, app_id: str, destination: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM hook_destinations WHERE app_id = ? AND destination = ?",
            (app_id, destination),
        ).fetchone()
        is not None
    )


# The application of an event, as a stream reads it: `+` keeps SQLite from reading the
# events through the application's index (every event it ever stored, then sorted by
# rowid: a pass cost what the table held), so it reads the rowid range after the cursor.
_NOT_BY_APP = "+app_id"


def gauges(conn: sqlite3.Connection) -> dict[str, Any]:
    """Per destination: pending deliveries and the creation time of the oldest, and dead
    ones; per event stream: the events not yet taken, and the arrival (ms) of the oldest."""
    pending = conn.execute(
        "SELECT destination, count(*), min(created_at) FROM outbox WHERE state = 'pending'"
        " GROUP BY destination"
    ).fetchall()
    dead_rows = conn.execute(
        "SELECT destination, count(*) FROM outbox WHERE state = 'dead' GROUP BY destination"
    ).fetchall()
    streams = []
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()
    for app_id, destination, after in conn.execute(
        "SELECT app_id, destination, cursor FROM event_streams"
    ).fetchall():
        oldest = conn.execute(
            f"SELECT arrival FROM events WHERE rowid > ? AND {_NOT_BY_APP} = ? AND rowid <= ?"
            " ORDER BY rowid LIMIT 1",
            (after, app_id, after + SCAN_WINDOW),
        ).fetchone()
        streams.append((app_id, destination, max(0, last - after), oldest[0] if oldest else None))
    return {"pending": pending, "dead": dead_rows, "streams": streams}


# -- event streams -------------------------------------------------------------------------


_STREAM = "app_id, destination, role_arn, last_modified, last_updated_by, cursor"


def get_stream(conn: sqlite3.Connection, app_id: str) -> EventStreamRecord | None:
    row = conn.execute(
        f"SELECT {_STREAM} FROM event_streams WHERE app_id = ?", (app_id,)
    ).fetchone()
    return EventStreamRecord(*row) if row else None


def list_streams(conn: sqlite3.Connection) -> list[EventStreamRecord]:
    rows = conn.execute(f"SELECT {_STREAM} FROM event_streams ORDER BY app_id").fetchall()
    return [EventStreamRecord(*row) for row in rows]


def put_stream(
    conn: sqlite3.Connection,
    app_id: str,
    destination: str,
    role_arn: str,
    modified: str,
    by: str,
) -> EventStreamRecord:
    """Create the stream from the events stored after now, or change where it goes; the
    destination is enabled again if it had answered 410."""
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()
    conn.execute(
        "INSERT INTO event_streams (app_id, destination, role_arn, last_modified,"
        " last_updated_by, cursor) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (app_id) DO UPDATE"
        " SET destination = excluded.destination, role_arn = excluded.role_arn,"
        " last_modified = excluded.last_modified, last_updated_by = excluded.last_updated_by",
        (app_id, destination, role_arn, modified, by, last),
    )
    conn.execute(
        "DELETE FROM hook_destinations WHERE app_id = ? AND destination = ?",
        (app_id, destination),
    )
    found = get_stream(conn, app_id)
    assert found is not None
    return found


def delete_stream(conn: sqlite3.Connection, app_id: str) -> EventStreamRecord | None:
    found = get_stream(conn, app_id)
    conn.execute("DELETE FROM event_streams WHERE app_id = ?", (app_id,))
    return found


def stream_rows(
    conn: sqlite3.Connection, app_id: str, after: int, limit: int
) -> tuple[list[StreamValues], int]:
    """Up to `limit` of the application's events stored after rowid `after`, in the order
    they were stored, as SQLite gives their rows (a StreamRow's values, in plain tuples),
    looking through at most SCAN_WINDOW events of all applications; and the rowid the
    stream may move to: the last one returned, or the end of the window if it held none
    of the application's (then the window's end, or the table's).

    Both reads are one snapshot: the table's end, read after the rows outside it, could
    take in events that another writer committed in between, and a cursor moved there
    would skip them."""
    with snapshot(conn):
        return _stream_rows(conn, app_id, after, limit)


def _stream_rows(
    conn: sqlite3.Connection, app_id: str, after: int, limit: int
) -> tuple[list[StreamValues], int]:
    rows: list[StreamValues] = conn.execute(
        "SELECT rowid, endpoint_id, event_id, arrival, body FROM events"
        f" WHERE rowid > ? AND rowid <= ? AND {_NOT_BY_APP} = ? ORDER BY rowid LIMIT ?",
        (after, after + SCAN_WINDOW, app_id, limit),
    ).fetchall()
    if len(rows) == limit:
        return rows, rows[-1][0]
    # None of the application's after these in the window: skip the rest of it.
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()
    to = max(after, min(after + SCAN_WINDOW, last))
    return rows, max(to, rows[-1][0] if rows else 0)


def endpoint_bodies(
    conn: sqlite3.Connection, app_id: str, endpoint_ids: Sequence[str]
) -> dict[str, bytes]:
    """The bodies of a batch's endpoints. Its statements are padded, so that a few of them,
    prepared once and kept, serve batches of any number of endpoints: with 300 to 1,500
    endpoints a batch, as streams of many devices' events have, 2.4 ms of CPU a batch
    where one prepared for each batch took 3.0 (0.3 us a record of 2,000)."""
    rows = [(app_id, endpoint_id) for endpoint_id in dict.fromkeys(endpoint_ids)]
    return dict(
        join_values(
            conn,
            "app_id, endpoint_id",
            rows,
            "SELECT endpoint_id, body FROM v JOIN endpoints USING (app_id, endpoint_id)",
            pad=True,
        )
    )


def advance_stream(
    conn: sqlite3.Connection,
    app_id: str,
    after: int,
    to: int,
    deliveries: Sequence[NewDelivery],
    now: float,
) -> bool:
    """Move the stream's cursor from `after` to `to` and queue the deliveries that carry
    the events between, in one transaction; False (and nothing written) if the cursor is
    no longer at `after` (another process moved it) or the stream is gone."""
    cursor = conn.execute(
        "UPDATE event_streams SET cursor = ? WHERE app_id = ? AND cursor = ?", (to, app_id, after)
    )
    if cursor.rowcount == 0:
        return False
    enqueue(conn, deliveries, now)
    return True


def advance_stream_leased(
    conn: sqlite3.Connection,
    app_id: str,
    after: int,
    to: int,
    delivery: NewDelivery,
    now: float,
    owner: str,
    lease_until: float,
) -> Delivery | bool:
    """advance_stream with one delivery, leased to `owner` in the same transaction if
    `claim` would lease it now: its destination is not disabled and no older delivery of
    its application and destination is pending. Returns it as leased, so that the process
    that queued it makes it without a claim that reads its body back; else whether the
    cursor moved, as advance_stream (the delivery then waits for a claim)."""
    if not advance_stream(conn, app_id, after, to, [delivery], now):
        return False
    leased = conn.execute(
        "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE seq = last_insert_rowid()"
        " AND NOT EXISTS (SELECT 1 FROM hook_destinations d"
        "                 WHERE d.app_id = outbox.app_id AND d.destination = outbox.destination)"
        " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.state = 'pending'"
        "                 AND p.app_id = outbox.app_id AND p.destination = outbox.destination"
        "                 AND p.seq < outbox.seq)"
        " RETURNING seq",
        (owner, lease_until),
    ).fetchone()
    if leased is None:
        return True
    d = delivery
    return Delivery(
        leased[0], d.id, d.app_id, d.destination, int(d.ordered), d.body, d.content_type,
        d.content_encoding, 0, now, None,
    )  # fmt: skip


def events_deleted(conn: sqlite3.Connection) -> None:
    """After events were deleted, in the same transaction: SQLite gives a new row the
    rowid after the largest left, so if the last rows went, their rowids come again, and
    a cursor past them would skip the new events. Such a cursor moves back to the largest
    rowid left, which it had already passed."""
    conn.execute(
        "UPDATE event_streams SET cursor = (SELECT coalesce(max(rowid), 0) FROM events)"
        " WHERE cursor > (SELECT coalesce(max(rowid), 0) FROM events)"
    )


def delete_app(conn: sqlite3.Connection, app_id: str) -> None:
    for table in ("outbox", "hook_secrets", "hook_destinations", "event_streams"):
        conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))


def _json_list(values: Sequence[str] | Sequence[int]) -> str:
    return orjson.dumps(list(values)).decode()
