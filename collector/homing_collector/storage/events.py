"""The SQL of the events table, found by time (migration 6).

Its unique index events_key is (app, UTC hour of Timestamp, endpoint, event id, type,
Timestamp):
- a range of days is a range of hours of the key, so a query reads what its range holds,
  whatever the table holds besides; the key has all a funnel reads but the body, and the
  rows (appended as they arrive) of an hour lie together;
- a new key lands among those of its hour and endpoint. A device sends its own events,
  of an hour or two, so a batch rewrites a few pages of the index, however many events
  are stored;
- a resent event has the same key, so it is stored once.

Reading one endpoint's events (to delete them) steps through the hours of the app, one
seek each, and looks the endpoint up in each.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence

HOUR_MS = 3_600_000
COLUMNS = "app_id, endpoint_id, event_id, event_type, ts, arrival, session_id, body"
WIDTH = 8  # values per row in the writer's flat lists, in the order of COLUMNS


def hour_sql(ts: str) -> str:
    """The UTC hour of the ms timestamp `ts`, rounded down (also before 1970)."""
    return f"({ts} / {HOUR_MS} - ({ts} < 0 AND {ts} % {HOUR_MS} != 0))"


@functools.cache
def insert_sql(rows: int, *, returning: bool = False) -> str:
    """INSERT OR IGNORE of `rows` rows of COLUMNS; with `returning`, the rows stored come
    back as (app_id, endpoint_id, event_id, event_type, ts)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT OR IGNORE INTO events ({COLUMNS}, hour) SELECT column1, column2, column3,"
        f" column4, column5, column6, column7, column8, {hour_sql('column5')}"
        f" FROM (VALUES {values})"
        + (" RETURNING app_id, endpoint_id, event_id, event_type, ts" if returning else "")
    )


# The hours from :lo up to, not including, :hi.
_RANGE = (
    "h(hour) AS (SELECT :lo WHERE :lo < :hi UNION ALL SELECT hour + 1 FROM h WHERE hour + 1 < :hi)"
)


# The hours that app :app has events in, each found by one seek from the one before.
_HOURS = """
    h(hour) AS (
        SELECT min(hour) FROM events WHERE app_id = :app
        UNION ALL
        SELECT (SELECT min(hour) FROM events WHERE app_id = :app AND hour > h.hour)
        FROM h WHERE h.hour IS NOT NULL
    )
"""


def hours_with_events() -> str:
    """SELECT the hours that app :app has events in, one seek each."""
    return f"WITH RECURSIVE {_HOURS} SELECT hour FROM h WHERE hour IS NOT NULL"


def endpoint_select(columns: str) -> str:
    """SELECT `columns` (of `e`) of the events of endpoint :endpoint of app :app."""
    return (
        f"WITH RECURSIVE {_HOURS} SELECT {columns} FROM h CROSS JOIN events e"
        " WHERE h.hour IS NOT NULL AND e.app_id = :app AND e.hour = h.hour"
        " AND e.endpoint_id = :endpoint"
    )


def delete_endpoint(conn: sqlite3.Connection, app_id: str, endpoint_id: str) -> list[int]:
    """Delete the events of one endpoint; return the UTC hours they were of."""
    params = {"app": app_id, "endpoint": endpoint_id}
    hours = conn.execute(endpoint_select("DISTINCT e.hour"), params).fetchall()
    conn.executemany(
        "DELETE FROM events WHERE app_id = ? AND hour = ? AND endpoint_id = ?",
        [(app_id, hour, endpoint_id) for (hour,) in hours],
    )
    return [hour for (hour,) in hours]


def in_range(columns: str, types: Sequence[str]) -> tuple[str, dict[str, object]]:
    """SELECT `columns` (of `e`) of app :app's events with :lo_ms <= ts < :hi_ms, which
    lie in hours :lo to :hi, read hour by hour; of `types` if any are given. Returns the
    SQL, which may go on with "AND ...", and the parameters that the types take."""
    params: dict[str, object] = {f"type{i}": t for i, t in enumerate(types)}
    typed = f" AND e.event_type IN ({', '.join(f':type{i}' for i in range(len(types)))})"
    return (
        f"WITH RECURSIVE {_RANGE} SELECT {columns} FROM h CROSS JOIN events e"
        " WHERE e.app_id = :app AND e.hour = h.hour AND e.ts >= :lo_ms AND e.ts < :hi_ms"
        + (typed if types else ""),
        params,
    )
