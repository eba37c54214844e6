"""The demographic counters (storage/endpoint_values.py) on PostgreSQL: kept by each
endpoint write, in its transaction, and read by the demographics panel.

Several collectors may write endpoints of one value at once: the counter rows go in the
order of their key, as every rollup's do (analytics_pg/rollups.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import psycopg

from homing_collector.storage import endpoint_values
from homing_collector.storage.analytics_pg import Connection, columns, rows

Body = dict[str, Any]


async def changed(
    conn: psycopg.AsyncConnection[Any],
    app_id: str,
    endpoint_id: str,
    before: Body | None,
    after: Body | None,
) -> None:
    """Count a write of one endpoint (see storage/endpoint_values.changed)."""
    users = endpoint_values.users_to_read(before, after)
    if users is None:
        return
    # What a user's other endpoints hold is read, then counted: another collector writing
    # an endpoint of the same user meanwhile would count from what it read before this
    # commits. The user's lock (the one that storage/postgres.py takes to count a user's
    # endpoints) makes the second wait, then read what the first wrote.
    for user_id in sorted(set(users)):
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            ("\x1f".join(("user", app_id, user_id)),),
        )
    others = {}
    for user_id in users:
        cursor = await conn.execute(
            "SELECT endpoint_id, body FROM endpoints WHERE app_id = %s AND user_id = %s",
            (app_id, user_id),
        )
        others[user_id] = endpoint_values.held(await cursor.fetchall(), endpoint_id)
    added, emptied = endpoint_values.deltas(app_id, before, after, others)
    pending = _PENDING.get()
    if pending is None:
        pending = Pending()
        pending.add(added, emptied)
        await pending.write(conn)
    else:
        pending.add(added, emptied)


class Pending:
    """The counts that a transaction's endpoint writes add, written at its end (`deferred`)."""

    def __init__(self) -> None:
        self.deltas: dict[tuple[str, str, str], list[int]] = {}
        self.emptied: set[tuple[str, str, str]] = set()

    def add(self, added: list[endpoint_values.Delta], emptied: list[tuple[str, str, str]]) -> None:
        for app_id, dimension, value, *counts in added:
            got = self.deltas.setdefault((app_id, dimension, value), [0, 0, 0])
            for i, count in enumerate(counts):
                got[i] += count
        self.emptied.update(emptied)

    async def write(self, conn: psycopg.AsyncConnection[Any]) -> None:
        added = sorted((*key, *counts) for key, counts in self.deltas.items() if any(counts))
        if added:
            await conn.execute(
                "INSERT INTO endpoint_values AS v"
                " (app_id, dimension, value, endpoints, anonymous, users)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[],"
                " %s::bigint[], %s::bigint[]) ON CONFLICT (app_id, dimension, value) DO UPDATE"
                " SET endpoints = v.endpoints + excluded.endpoints,"
                " anonymous = v.anonymous + excluded.anonymous, users = v.users + excluded.users",
                columns(added, 6),
            )
        if self.emptied:
            await conn.execute(
                "DELETE FROM endpoint_values v USING unnest(%s::text[], %s::text[], %s::text[])"
                " AS e(app_id, dimension, value) WHERE v.app_id = e.app_id"
                " AND v.dimension = e.dimension AND v.value = e.value AND v.endpoints = 0",
                columns(sorted(self.emptied), 3),
            )


_PENDING: ContextVar[Pending | None] = ContextVar("homing_endpoint_values", default=None)


@contextlib.asynccontextmanager
async def deferred(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """Gather the counts of the endpoint writes made inside, and write them when it ends
    (unless it raises), in one statement. Every collector that makes an endpoint with a
    value adds to that value's row, which its transaction then holds until it commits:
    written last, it holds it for the commit only, not for the rest of its work."""
    pending = Pending()
    token = _PENDING.set(pending)
    try:
        yield
        await pending.write(conn)
    finally:
        _PENDING.reset(token)


def counts(conn: Connection, app_id: str, dimension: str) -> list[tuple[str | None, int, int]]:
    """(value, endpoints, users) of each value of a dimension of DIMENSIONS."""
    return [
        (endpoint_values.value_of(key), endpoints, users)
        for key, endpoints, users in rows(
            conn,
            "SELECT value, endpoints, anonymous + users FROM endpoint_values"
            " WHERE app_id = %s AND dimension = %s",
            (app_id, dimension),
        )
    ]
