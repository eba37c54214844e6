"""PostgreSQL's SQL of event streams and in-process hook cursors (storage/postgres.py).

SQLite's cursor is an event's rowid, which its one writer hands out in commit order. Here
many transactions store events at once, and a number taken from a sequence can commit
after a larger one: a cursor moved past the larger would skip the smaller for good. So
an event's position (`pos`, migration 7) is the id of the transaction that stored it,
shifted left by RANK_BITS, plus the event's rank in that transaction, and a reader takes,
in position order, only the events of transactions older than the oldest one still
running (`pg_snapshot_xmin`, read in the reader's own statement): each of those has
ended, so no event can appear behind a cursor later. A long transaction anywhere on the
server holds the readers back (late, never lost).

Transaction ids only grow (xid8 never wraps), so deleting events never brings a position
back: unlike SQLite's, the cursors stay where they are when events are deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from homing_collector.storage.base import EventStreamRecord, HookRow, StreamRow
from homing_collector.storage.outbox import SCAN_WINDOW

Connection = psycopg.AsyncConnection[Any]

RANK_BITS = 20  # a transaction stores at most 2^20 events; ids up to 2^43 fit in a bigint
MAX_RANK = (1 << RANK_BITS) - 1

# The first position of the oldest transaction still running: every event before it was
# stored by a transaction that has ended.
_HORIZON = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {RANK_BITS})"

# The position of this transaction's next event: after its own events stored so far (a
# transaction may insert events twice), else its first.
NEXT_POSITION = (
    f"(SELECT coalesce(max(e.pos) + 1, x.base) FROM (SELECT pg_current_xact_id()::text::bigint"
    f" << {RANK_BITS} AS base) x LEFT JOIN events e ON e.pos >= x.base"
    f" AND e.pos <= x.base + {MAX_RANK} GROUP BY x.base)"
)

_new_row = tuple.__new__


async def _value(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    cursor = await conn.execute(sql, params)
    row = await cursor.fetchone()
    return row[0] if row else None


async def start(conn: Connection) -> int:
    """A new cursor: before the events of every transaction still running, so that events
    whose writes were under way are not skipped (some already committed may come again)."""
    return int(await _value(conn, f"SELECT {_HORIZON} - 1"))


async def rows_after(conn: Connection, after: int, limit: int) -> list[HookRow]:
    """Up to `limit` events of any application after position `after`, in order."""
    cursor = await conn.execute(
        "SELECT pos, app_id, endpoint_id, event_id, arrival, body FROM events"
        f" WHERE pos > %s AND pos < {_HORIZON} ORDER BY pos LIMIT %s",
        (after, limit),
    )
    return [HookRow(*row) for row in await cursor.fetchall()]


async def stream_rows(
    conn: Connection, app_id: str, after: int, limit: int
) -> tuple[list[StreamRow], int]:
    """Up to `limit` of the application's events after `after`, looking through at most
    SCAN_WINDOW events of all applications (as SQLite's stream does); and the position the
    stream may move to: the last one returned, or the end of the window if it held fewer."""
    cursor = await conn.execute(
        "WITH w AS MATERIALIZED (SELECT pos, app_id FROM events"
        f"  WHERE pos > %s AND pos < {_HORIZON} ORDER BY pos LIMIT %s)"
        " SELECT top.pos, r.pos, r.endpoint_id, r.event_id, r.arrival, r.body"
        " FROM (SELECT max(pos) AS pos FROM w) top LEFT JOIN LATERAL ("
        "  SELECT e.pos, e.endpoint_id, e.event_id, e.arrival, e.body FROM w"
        "  JOIN events e ON e.pos = w.pos AND e.app_id = w.app_id"
        "  WHERE w.app_id = %s ORDER BY w.pos LIMIT %s) r ON true ORDER BY r.pos",
        (after, SCAN_WINDOW, app_id, limit),
    )
    found = await cursor.fetchall()
    # tuple.__new__ makes each StreamRow in C (storage/outbox.py's stream_rows).
    rows = [_new_row(StreamRow, row[1:]) for row in found if row[1] is not None]
    if len(rows) == limit:
        return rows, rows[-1].rowid
    end = found[0][0] if found and found[0][0] is not None else after
    return rows, max(after, end)


async def endpoint_bodies(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], bytes]:
    """The stored bodies of the (application id, endpoint id) pairs that exist."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    cursor = await conn.execute(
        "SELECT e.app_id, e.endpoint_id, e.body FROM unnest(%s::text[], %s::text[]) k(a, id)"
        " JOIN endpoints e ON e.app_id = k.a AND e.endpoint_id = k.id",
        ([app_id for app_id, _ in unique], [endpoint_id for _, endpoint_id in unique]),
    )
    return {(a, e): body.encode() for a, e, body in await cursor.fetchall()}


# -- event streams -------------------------------------------------------------------------

_STREAM = "app_id, destination, role_arn, last_modified, last_updated_by, cursor"


async def get_stream(conn: Connection, app_id: str) -> EventStreamRecord | None:
    cursor = await conn.execute(f"SELECT {_STREAM} FROM event_streams WHERE app_id = %s", (app_id,))
    row = await cursor.fetchone()
    return EventStreamRecord(*row) if row else None


async def list_streams(conn: Connection) -> list[EventStreamRecord]:
    cursor = await conn.execute(f"SELECT {_STREAM} FROM event_streams ORDER BY app_id")
    return [EventStreamRecord(*row) for row in await cursor.fetchall()]


async def put_stream(
    conn: Connection, app_id: str, destination: str, role_arn: str, modified: str, by: str
) -> EventStreamRecord:
    """Create the stream from the events stored from now on, or change where it goes; the
    destination is enabled again if it had answered 410."""
    first = await start(conn)
    await conn.execute(
        f"INSERT INTO event_streams ({_STREAM}) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (app_id) DO UPDATE SET destination = excluded.destination,"
        " role_arn = excluded.role_arn, last_modified = excluded.last_modified,"
        " last_updated_by = excluded.last_updated_by",
        (app_id, destination, role_arn, modified, by, first),
    )
    await conn.execute(
        "DELETE FROM hook_destinations WHERE app_id = %s AND destination = %s",
        (app_id, destination),
    )
    found = await get_stream(conn, app_id)
    assert found is not None
    return found


async def delete_stream(conn: Connection, app_id: str) -> EventStreamRecord | None:
    cursor = await conn.execute(
        f"DELETE FROM event_streams WHERE app_id = %s RETURNING {_STREAM}", (app_id,)
    )
    row = await cursor.fetchone()
    return EventStreamRecord(*row) if row else None


async def move_stream(conn: Connection, app_id: str, after: int, to: int) -> bool:
    """Move the stream's cursor from `after` to `to`; False if it was no longer there."""
    cursor = await conn.execute(
        "UPDATE event_streams SET cursor = %s WHERE app_id = %s AND cursor = %s",
        (to, app_id, after),
    )
    return cursor.rowcount > 0


async def stream_gauges(conn: Connection) -> list[tuple[str, str, int, int | None]]:
    """Per stream: the events of any application after its cursor (an upper bound of
    those not yet taken), and the arrival (ms) of its application's oldest in the window."""
    cursor = await conn.execute(
        "SELECT s.app_id, s.destination,"
        " (SELECT count(*) FROM events WHERE pos > s.cursor),"
        " (SELECT w.arrival FROM (SELECT pos, app_id, arrival FROM events"
        f"   WHERE pos > s.cursor AND pos < {_HORIZON} ORDER BY pos LIMIT %s) w"
        "  WHERE w.app_id = s.app_id ORDER BY w.pos LIMIT 1)"
        " FROM event_streams s ORDER BY s.app_id",
        (SCAN_WINDOW,),
    )
    return [(a, d, int(lag), oldest) for a, d, lag, oldest in await cursor.fetchall()]


# -- in-process hooks' cursors -------------------------------------------------------------


async def ensure_cursors(conn: Connection, names: Sequence[str]) -> dict[str, int]:
    """The cursors of `names`; a name seen for the first time starts from now on."""
    first = await start(conn)
    async with conn.cursor() as insert:
        await insert.executemany(
            "INSERT INTO hook_cursors (name, cursor) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            [(name, first) for name in names],
        )
    return {name: await get_cursor(conn, name) for name in names}


async def get_cursor(conn: Connection, name: str) -> int:
    found = await _value(conn, "SELECT cursor FROM hook_cursors WHERE name = %s", (name,))
    return int(found) if found is not None else 0


async def move_cursor(conn: Connection, name: str, after: int, to: int) -> bool:
    cursor = await conn.execute(
        "UPDATE hook_cursors SET cursor = %s WHERE name = %s AND cursor = %s", (to, name, after)
    )
    return cursor.rowcount > 0


async def lag(conn: Connection, names: Sequence[str]) -> dict[str, int]:
    """Per name: the events stored after its cursor (those of running transactions too)."""
    result = {}
    for name in names:
        after = await get_cursor(conn, name)
        result[name] = int(
            await _value(conn, "SELECT count(*) FROM events WHERE pos > %s", (after,))
        )
    return result
