"""The demographic counters (storage/endpoint_values.py) on PostgreSQL: what each
endpoint write adds to them is appended by its transaction to endpoint_values_pending
(migration 10), folded into endpoint_values with the rollups' pending entries
(storage/analytics_pg/pending.py), and read by the demographics panel once folded.

Every collector that makes an endpoint of one value adds to that value's row: adding to
it in the endpoint's transaction made the collectors' transactions wait on one another's
lock of the row, each until the other's commit. An appended row conflicts with nothing;
the counters are sums, so the order the deltas are folded in changes nothing, and what
a write adds is worked out from the endpoints table alone (the user's other endpoints),
never from the counters. A read folds first (PostgresStorage.analytics_read): it counts
every write committed before it began.
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
    await count(conn, app_id, before, after, others)


async def count(
    conn: psycopg.AsyncConnection[Any],
    app_id: str,
    before: Body | None,
    after: Body | None,
    others: dict[str, set[tuple[str, str]]],
) -> None:
    """Count a write of one endpoint, given what `endpoint_values.held` says of the other
    endpoints of each user of `endpoint_values.users_to_read`, read under the user's
    lock."""
    added, _emptied = endpoint_values.deltas(app_id, before, after, others)
    pending = _PENDING.get()
    if pending is None:
        pending = Pending()
        pending.add(added)
        await pending.write(conn)
    else:
        pending.add(added)


class Pending:
    """The counts that a transaction's endpoint writes add, written at its end (`deferred`)."""

    def __init__(self) -> None:
        self.deltas: dict[tuple[str, str, str], list[int]] = {}

    def add(self, added: list[endpoint_values.Delta]) -> None:
        for app_id, dimension, value, *counts in added:
            got = self.deltas.setdefault((app_id, dimension, value), [0, 0, 0])
            for i, count in enumerate(counts):
                got[i] += count

    async def write(self, conn: psycopg.AsyncConnection[Any]) -> None:
        added = [(*key, *counts) for key, counts in self.deltas.items() if any(counts)]
        if added:
            await conn.execute(
                "INSERT INTO endpoint_values_pending"
                " (app_id, dimension, value, endpoints, anonymous, users)"
                " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[],"
                " %b::bigint[], %b::bigint[])",
                columns(added, 6),
            )


_PENDING: ContextVar[Pending | None] = ContextVar("homing_endpoint_values", default=None)


@contextlib.asynccontextmanager
async def deferred(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """Gather the counts of the endpoint writes made inside, and append them when it ends
    (unless it raises), in one statement."""
    pending = Pending()
    token = _PENDING.set(pending)
    try:
        yield
        await pending.write(conn)
    finally:
        _PENDING.reset(token)


async def fold(conn: psycopg.AsyncConnection[Any]) -> None:
    """Add the pending counts to the counters, in the caller's transaction, which holds
    pending.FOLD_LOCK: nothing else writes the counters meanwhile (so their rows need no
    order)."""
    # Every pending row this statement sees, and only those: one appended meanwhile
    # waits for the next fold.
    cursor = await conn.execute(
        "WITH taken AS (DELETE FROM endpoint_values_pending"
        " RETURNING app_id, dimension, value, endpoints, anonymous, users),"
        " summed AS (SELECT app_id, dimension, value, sum(endpoints)::bigint AS endpoints,"
        " sum(anonymous)::bigint AS anonymous, sum(users)::bigint AS users FROM taken"
        " GROUP BY app_id, dimension, value),"
        " added AS (INSERT INTO endpoint_values AS v"
        " (app_id, dimension, value, endpoints, anonymous, users)"
        " SELECT * FROM summed WHERE endpoints <> 0 OR anonymous <> 0 OR users <> 0"
        " ON CONFLICT (app_id, dimension, value) DO UPDATE"
        " SET endpoints = v.endpoints + excluded.endpoints,"
        " anonymous = v.anonymous + excluded.anonymous, users = v.users + excluded.users"
        " RETURNING v.app_id, v.dimension, v.value, v.endpoints)"
        " SELECT app_id, dimension, value FROM added WHERE endpoints = 0"
    )
    emptied = await cursor.fetchall()
    if emptied:  # a value no endpoint has any more: its row goes
        await conn.execute(
            "DELETE FROM endpoint_values v USING unnest(%b::text[], %b::text[], %b::text[])"
            " AS e(app_id, dimension, value) WHERE v.app_id = e.app_id"
            " AND v.dimension = e.dimension AND v.value = e.value AND v.endpoints = 0",
            columns(emptied, 3),
        )


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
