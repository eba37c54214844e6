"""The demographic counters (storage/endpoint_values.py) against a count of the endpoints
themselves, after every kind of endpoint write, on a real SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from homing_collector import endpoints
from homing_collector.analytics import queries
from homing_collector.storage import migrations
from homing_collector.storage.base import (
    AppRecord,
    EndpointUpdate,
    ImportRow,
    Storage,
    UserEndpointLimit,
)
from homing_collector.storage.endpoint_values import DIMENSIONS
from homing_collector.storage.sqlite import SQLiteStorage
from tests.conftest import BACKENDS

NOW = "2026-12-01T00:00:00.000Z"
APPS = ("app-a", "app-b")
IDS = [f"ep{n}" for n in range(12)]
USERS = ["ann", "bob", "cy", "dee"]
MAX_USER_ENDPOINTS = 2  # low, so that some writes are refused
Counts = dict[Any, tuple[int, int]]


@dataclass
class Backend:
    """Storages on one database (not started), and connections to read it directly."""

    make: Callable[[], Storage]
    connect: Callable[[], contextlib.AbstractContextManager[Any]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        db = tmp_path / "homing.db"
        return Backend(lambda: SQLiteStorage(db), lambda: contextlib.closing(sqlite3.connect(db)))
    import psycopg

    from homing_collector.storage.postgres import PostgresStorage

    url: str = request.getfixturevalue("postgres_url")
    return Backend(lambda: PostgresStorage(url), lambda: psycopg.connect(url, autocommit=True))


def one(conn: Any, statement: str, params: tuple[Any, ...]) -> Any:
    """The first column of the first row of a statement written with ? marks."""
    if not isinstance(conn, sqlite3.Connection):
        statement = statement.replace("?", "%s")
    return conn.execute(statement, params).fetchone()[0]


def scanned(conn: Any, app_id: str, dimension: str) -> Counts:
    """(endpoints, users) of each value, counted in the endpoints' bodies."""
    section, field = DIMENSIONS[dimension]
    users = "count(DISTINCT coalesce('u:' || user_id, 'e:' || endpoint_id))"
    if isinstance(conn, sqlite3.Connection):
        rows = conn.execute(
            f"SELECT json_extract(body, '$.{section}.{field}') AS v, count(*), {users}"
            " FROM endpoints WHERE app_id = ? GROUP BY v",
            (app_id,),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT body::jsonb -> %s ->> %s AS v, count(*), {users} FROM endpoints"
            " WHERE app_id = %s GROUP BY v",
            (section, field, app_id),
        ).fetchall()
    return {v: (e, u) for v, e, u in rows}


def counted(conn: Any, app_id: str, dimension: str) -> Counts:
    rows = queries.demographics(conn, app_id, dimension)["rows"]
    assert [r["endpoints"] for r in rows] == sorted((r["endpoints"] for r in rows), reverse=True)
    got = {r["value"]: (r["endpoints"], r["users"]) for r in rows}
    assert len(got) == len(rows)
    return got


def counted_all(conn: Any) -> dict[tuple[str, str], Counts]:
    return {(app_id, d): counted(conn, app_id, d) for app_id in APPS for d in DIMENSIONS}


async def read_counts(storage: Storage) -> dict[tuple[str, str], Counts]:
    """The counters as the analytics read them (on PostgreSQL, what is pending folded)."""
    return await storage.analytics_read(counted_all)


def assert_exact(conn: Any, what: str, got: dict[tuple[str, str], Counts] | None = None) -> None:
    """The counters (`got`, or read on `conn`) against the endpoints `conn` holds."""
    if got is None:
        got = counted_all(conn)
    for app_id in APPS:
        for dimension in DIMENSIONS:
            assert got[(app_id, dimension)] == scanned(conn, app_id, dimension), (
                what, app_id, dimension,
            )  # fmt: skip
    # Rows that count nothing are gone, not left at zero.
    assert one(conn, "SELECT count(*) FROM endpoint_values WHERE endpoints <= 0", ()) == 0, what


def profile(rng: random.Random) -> dict[str, Any]:
    """An endpoint update that sets some demographics, maybe a country and a user."""
    update: dict[str, Any] = {"ChannelType": "GCM"}
    demographic = {
        field: rng.choice(["", "a", "b", f"{field}-{rng.randrange(3)}"])
        for _, (section, field) in DIMENSIONS.items()
        if section == "Demographic" and rng.random() < 0.5
    }
    if demographic:
        update["Demographic"] = demographic
    if rng.random() < 0.3:
        update["Location"] = {"Country": rng.choice(["US", "DE", ""])}
    if rng.random() < 0.4:
        update["User"] = {"UserId": rng.choice(USERS)}
    if rng.random() < 0.2:
        update["Attributes"] = {"plan": [rng.choice(["free", "pro"])]}
    return update


async def write(storage: Storage, rng: random.Random) -> str:
    """One endpoint write of a kind chosen at random; return its kind, or "refused"."""
    app_id, endpoint_id = rng.choice(APPS), rng.choice(IDS)
    merge = partial(endpoints.merge, app_id, now=NOW)
    item = EndpointUpdate(endpoint_id, profile(rng))  # type: ignore[arg-type]
    kind = rng.choice(["update", "update", "ingest", "import", "delete", "delete_user"])
    try:
        if kind == "update":
            await storage.update_endpoints(
                app_id, [item], merge=merge, max_user_endpoints=MAX_USER_ENDPOINTS
            )
        elif kind == "ingest":
            await storage.put_events(
                app_id, [item], [], merge=merge, max_event_types=100,
                max_user_endpoints=MAX_USER_ENDPOINTS,
            )  # fmt: skip
        elif kind == "import":
            row = ImportRow(0, endpoint_id, item.update)
            await storage.import_endpoints(
                app_id, "job", [row], merge=merge, max_user_endpoints=MAX_USER_ENDPOINTS,
                register=True, members=False,
            )  # fmt: skip
        elif kind == "delete":
            await storage.delete_endpoint(app_id, endpoint_id)
        else:
            await storage.delete_user_endpoints(app_id, rng.choice(USERS))
    except UserEndpointLimit:
        return "refused"  # refused whole: the counters must not have moved either
    return kind


async def create_apps(storage: Storage) -> None:
    for app_id in APPS:
        await storage.create_app(AppRecord(app_id, app_id, NOW))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counters_stay_exact_through_every_kind_of_endpoint_write(
    backend: Backend, seed: int
) -> None:
    rng = random.Random(seed)

    async def scenario() -> None:
        storage = backend.make()
        await storage.start()
        try:
            await create_apps(storage)
            kinds: set[str] = set()
            with backend.connect() as conn:
                for step in range(60):
                    # Several writes at once share a transaction: the same endpoint may
                    # be written twice in it.
                    done = await asyncio.gather(
                        *(write(storage, rng) for _ in range(rng.randrange(1, 6)))
                    )
                    kinds.update(done)
                    assert_exact(conn, f"step {step}", await read_counts(storage))
                assert kinds == {"update", "ingest", "import", "delete", "delete_user", "refused"}
                held = "SELECT count(*) FROM endpoint_values WHERE app_id = ?"
                assert one(conn, held, (APPS[0],)) > 0
                await storage.delete_app(APPS[0])
                assert one(conn, held, (APPS[0],)) == 0
                assert_exact(conn, "after the app was deleted", await read_counts(storage))
        finally:
            await storage.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("rollups", [True, False], ids=["rollups", "no-rollups"])
def test_postgres_counts_wait_to_be_folded_and_every_read_folds_them(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, rollups: bool
) -> None:
    """An endpoint write appends what it adds to the counters; a read through any
    collector, before any background fold, counts every write committed before it."""
    import psycopg

    from homing_collector.storage.analytics_pg import pending
    from homing_collector.storage.postgres import PostgresStorage

    monkeypatch.setattr(pending, "FOLD_SECONDS", 3600.0)  # no fold but the reads'
    app_id = APPS[0]
    merge = partial(endpoints.merge, app_id, now=NOW)

    def update(endpoint_id: str, **fields: Any) -> list[EndpointUpdate]:
        return [EndpointUpdate(endpoint_id, fields)]  # type: ignore[arg-type]

    def platforms(conn: Any) -> Counts:
        return counted(conn, app_id, "platform")

    async def scenario() -> None:
        writer, reader = (PostgresStorage(postgres_url, rollups=rollups) for _ in range(2))
        await writer.start()
        await reader.start()
        try:
            await create_apps(writer)
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                android = {"Platform": "android"}
                await writer.update_endpoints(
                    app_id, update("e1", Demographic=android, User={"UserId": "u"}),
                    merge=merge, max_user_endpoints=5,
                )  # fmt: skip
                await writer.put_events(
                    app_id, update("e2", Demographic=android, User={"UserId": "u"}), [],
                    merge=merge, max_event_types=100, max_user_endpoints=5,
                )  # fmt: skip
                # Appended, not added yet: no transaction waits on the value's row.
                assert one(conn, "SELECT count(*) FROM endpoint_values", ()) == 0
                assert await reader.analytics_read(platforms) == {"android": (2, 1)}
                await writer.update_endpoints(
                    app_id, update("e1", Demographic={"Platform": "ios"}),
                    merge=merge, max_user_endpoints=5,
                )  # fmt: skip
                assert await reader.analytics_read(platforms) == {"android": (1, 1), "ios": (1, 1)}
                assert await writer.delete_endpoint(app_id, "e2") is not None
                assert await reader.analytics_read(platforms) == {"ios": (1, 1)}
                await writer.update_endpoints(
                    app_id, update("e3", Demographic=android), merge=merge, max_user_endpoints=5
                )
                await writer.delete_user_endpoints(app_id, "u")
                assert await writer.analytics_read(platforms) == {"android": (1, 1)}
                assert (
                    one(conn, "SELECT count(*) FROM endpoint_values WHERE endpoints <= 0", ()) == 0
                )
                assert one(conn, "SELECT count(*) FROM endpoint_values_pending", ()) == 0
        finally:
            await reader.close()
            await writer.close()

    asyncio.run(scenario())


def test_the_migration_counts_the_endpoints_stored_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "homing.db"
    rng = random.Random(7)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        monkeypatch.setattr(
            migrations,
            "SQLITE_MIGRATIONS",
            [m for m in migrations.SQLITE_MIGRATIONS if m[0] < 17],
        )
        assert migrations.migrate(conn) == 16
        for app_id in APPS:
            conn.execute(
                "INSERT INTO apps (id, name, created_at) VALUES (?, ?, ?)", (app_id, app_id, NOW)
            )
            for endpoint_id in IDS:
                body = endpoints.merge(app_id, endpoint_id, None, profile(rng), now=NOW)  # type: ignore[arg-type]
                user_id = (body.get("User") or {}).get("UserId")
                conn.execute(
                    "INSERT INTO endpoints (app_id, endpoint_id, user_id, body)"
                    " VALUES (?, ?, ?, ?)",
                    (app_id, endpoint_id, user_id, orjson.dumps(body).decode()),
                )
        monkeypatch.undo()
        assert migrations.migrate(conn) >= 17
        assert_exact(conn, "migrated")

    async def more() -> None:
        # The writes after go on from what the migration counted.
        storage = SQLiteStorage(db)
        await storage.start()
        try:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                for step in range(40):
                    await write(storage, rng)
                    assert_exact(conn, f"step {step} after the migration")
        finally:
            await storage.close()

    asyncio.run(more())


def test_attributes_are_counted_from_the_bodies(backend: Backend) -> None:
    async def scenario() -> dict[str, Any]:
        storage = backend.make()
        await storage.start()
        try:
            await create_apps(storage)
            merge = partial(endpoints.merge, APPS[0], now=NOW)
            updates = [
                EndpointUpdate(
                    "e1", {"Attributes": {"plan": ["pro", "beta"]}, "User": {"UserId": "u"}}
                ),
                EndpointUpdate("e2", {"Attributes": {"plan": ["pro"]}, "User": {"UserId": "u"}}),
                EndpointUpdate("e3", {"Attributes": {"other": ["x"]}}),
            ]  # type: ignore[typeddict-item]
            await storage.update_endpoints(APPS[0], updates, merge=merge, max_user_endpoints=5)
            with backend.connect() as conn:
                return queries.demographics(conn, APPS[0], "attribute:plan")
        finally:
            await storage.close()

    got = asyncio.run(scenario())
    assert got["rows"] == [
        {"value": "pro", "endpoints": 2, "users": 1},
        {"value": "beta", "endpoints": 1, "users": 1},
        {"value": None, "endpoints": 1, "users": 1},
    ]
