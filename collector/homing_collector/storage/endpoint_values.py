"""SQL of the demographic counters: how many endpoints, and how many users, have each
value of each demographic dimension, kept exact by every endpoint write.

The demographics panel reads one row per value from here instead of reading every
endpoint's body, so that it costs the same at 400,000 endpoints as at 1,000. Each row
counts the value's endpoints, those of them without a UserId (each its own user), and
the distinct UserIds of the others. A write gives the endpoint's bodies before and after
and the differences go in by the same transaction; a user is counted under a value
while one of its endpoints has it, which the user's other endpoints tell (a user has at
most 15, found by the index endpoints_user).

Custom attributes have no counters: an endpoint may hold any attribute name, and the
panel's row for endpoints without an attribute would need every endpoint write to touch
every attribute name the application uses. The panel counts them from the bodies.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

# dimension -> (section, field) of an endpoint. Migration 17 filled the counters of these
# seven from the endpoints stored before: one added here needs a migration that fills it.
DIMENSIONS = {
    "platform": ("Demographic", "Platform"),
    "platform_version": ("Demographic", "PlatformVersion"),
    "app_version": ("Demographic", "AppVersion"),
    "make": ("Demographic", "Make"),
    "model": ("Demographic", "Model"),
    "country": ("Location", "Country"),
    "locale": ("Demographic", "Locale"),
}

Body = dict[str, Any]


def _key(value: Any) -> str:
    """The stored form of a value: a primary key column cannot be NULL, and "" is a value
    (migration 17 writes the same form in SQL)."""
    return "" if value is None else "=" + str(value)


def value_of(key: str) -> str | None:
    return None if key == "" else key[1:]


def _keys(body: Body) -> list[str]:
    """The stored value of each of DIMENSIONS, in their order."""
    return [_key((body.get(section) or {}).get(field)) for section, field in DIMENSIONS.values()]


def _user(body: Body | None) -> str | None:
    user_id: str | None = ((body or {}).get("User") or {}).get("UserId")
    return user_id


def held(rows: Iterable[tuple[str, str]], endpoint_id: str) -> set[tuple[str, str]]:
    """(dimension, stored value) of the (endpoint id, body) of a user's endpoints, but
    `endpoint_id`'s."""
    found: set[tuple[str, str]] = set()
    for other, body in rows:
        if other != endpoint_id:
            found.update(zip(DIMENSIONS, _keys(orjson.loads(body)), strict=True))
    return found


def _held_by_others(
    conn: sqlite3.Connection, app_id: str, endpoint_id: str, user_id: str
) -> set[tuple[str, str]]:
    """(dimension, stored value) of the user's endpoints other than `endpoint_id`."""
    # Without the index named, SQLite may read the app's every endpoint by the key's prefix.
    return held(
        conn.execute(
            "SELECT endpoint_id, body FROM endpoints INDEXED BY endpoints_user WHERE app_id = ?"
            " AND user_id = ?",
            (app_id, user_id),
        ),
        endpoint_id,
    )


def users_to_read(before: Body | None, after: Body | None) -> list[str] | None:
    """The users whose other endpoints a write from `before` to `after` must read to be
    counted (see `deltas`), or None if it changes no counter (most updates)."""
    old_user, new_user = _user(before), _user(after)
    old = _keys(before) if before is not None else None
    new = _keys(after) if after is not None else None
    if old == new and old_user == new_user:
        return None
    return [user_id for user_id in (old_user, new_user) if user_id is not None]


Delta = tuple[str, str, str, int, int, int]  # (app, dimension, value, endpoints, anonymous, users)


def deltas(
    app_id: str,
    before: Body | None,
    after: Body | None,
    others: dict[str, set[tuple[str, str]]],
) -> tuple[list[Delta], list[tuple[str, str, str]]]:
    """What a write from `before` to `after` adds to the counters, and the (app,
    dimension, value) it may have emptied; `others` holds what `held` says of each user
    of `users_to_read`."""
    old_user, new_user = _user(before), _user(after)
    old = _keys(before) if before is not None else None
    new = _keys(after) if after is not None else None
    counted: dict[tuple[str, str], list[int]] = {}  # -> [endpoints, anonymous, users]
    for keys, user_id, sign in ((old, old_user, -1), (new, new_user, 1)):
        if keys is None:
            continue
        for dimension, key in zip(DIMENSIONS, keys, strict=True):
            counts = counted.setdefault((dimension, key), [0, 0, 0])
            counts[0] += sign
            if user_id is None:
                counts[1] += sign
            elif (dimension, key) not in others[user_id]:
                counts[2] += sign
    rows = [
        (app_id, dimension, key, counts[0], counts[1], counts[2])
        for (dimension, key), counts in counted.items()
        if any(counts)
    ]
    emptied = [(app_id, *vkey) for vkey, counts in counted.items() if counts[0] < 0]
    return rows, emptied


def changed(
    conn: sqlite3.Connection,
    app_id: str,
    endpoint_id: str,
    before: Body | None,
    after: Body | None,
) -> None:
    """Count a write of one endpoint, from its body before (None: created) and after
    (None: deleted). Call it right after the write, before the next one: the endpoints
    table must hold every other endpoint as the counters have it."""
    users = users_to_read(before, after)
    if users is None:
        return  # what changed is counted nowhere (most updates)
    others = {user_id: _held_by_others(conn, app_id, endpoint_id, user_id) for user_id in users}
    rows, emptied = deltas(app_id, before, after, others)
    if not rows:
        return
    # One statement, whose text is one of few: an upsert per value cost more than the
    # endpoint's own write (each statement and each table a commit touches costs).
    conn.execute(_upsert_sql(len(rows)), [x for row in rows for x in row])
    if emptied:
        conn.executemany(
            "DELETE FROM endpoint_values WHERE app_id = ? AND dimension = ? AND value = ?"
            " AND endpoints = 0",
            emptied,
        )


@functools.cache
def _upsert_sql(rows: int) -> str:
    """Add rows of (app, dimension, value, endpoints, anonymous, users) to the counts."""
    return (
        "INSERT INTO endpoint_values (app_id, dimension, value, endpoints, anonymous, users)"
        f" VALUES {', '.join(['(?, ?, ?, ?, ?, ?)'] * rows)} ON CONFLICT DO UPDATE SET"
        " endpoints = endpoints + excluded.endpoints,"
        " anonymous = anonymous + excluded.anonymous, users = users + excluded.users"
    )


def counts(
    conn: sqlite3.Connection, app_id: str, dimension: str
) -> list[tuple[str | None, int, int]]:
    """(value, endpoints, users) of each value of a dimension of DIMENSIONS."""
    return [
        (value_of(key), endpoints, users)
        for key, endpoints, users in conn.execute(
            "SELECT value, endpoints, anonymous + users FROM endpoint_values"
            " WHERE app_id = ? AND dimension = ?",
            (app_id, dimension),
        )
    ]


def delete_app(conn: sqlite3.Connection, app_id: str) -> None:
    conn.execute("DELETE FROM endpoint_values WHERE app_id = ?", (app_id,))
