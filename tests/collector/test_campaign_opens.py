"""The notification opens kept at ingest (analytics/opens.py) against the stored events,
through the retention sweep (on SQLite and PostgreSQL) and the migration that fills them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from homing_collector import endpoints
from homing_collector.analytics import opens, rollups
from homing_collector.storage import events as events_sql
from homing_collector.storage import migrations
from homing_collector.storage.base import AppRecord, EventRow
from homing_collector.storage.sqlite import SQLiteStorage

APP = "a"
T0 = 1_790_000_000_000  # ms, on an hour
HOUR_MS = 3_600_000


def event_rows(seed: int, n: int = 400) -> list[tuple[Any, ...]]:
    """Rows of the events table over 48 hours; about one in four an open, some of them
    without a campaign id."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ts = T0 + rng.randrange(48 * HOUR_MS)
        kind = rng.choice([opens.OPENED, "screen", "screen", "level"])
        body: dict[str, Any] = {"EventType": kind, "Timestamp": "x"}
        if kind == opens.OPENED and rng.random() < 0.8:
            body["Attributes"] = {"campaign_id": rng.choice(["c1", "c2", "c3"])}
        endpoint = f"e{rng.randrange(8)}"
        rows.append((APP, endpoint, f"{i:x}", kind, ts, ts, None, orjson.dumps(body)))
    return rows


def scanned(conn: Any) -> list[tuple[Any, ...]]:
    """(endpoint, ts, campaign id) of the open events stored, read from their bodies."""
    found = []
    mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"
    for endpoint_id, ts, body in conn.execute(
        f"SELECT endpoint_id, ts, body FROM events WHERE app_id = {mark} AND event_type = {mark}",
        (APP, opens.OPENED),
    ).fetchall():
        found.append(
            (endpoint_id, ts, (orjson.loads(body).get("Attributes") or {}).get("campaign_id"))
        )
    return sorted(found, key=repr)


def kept(conn: Any) -> list[tuple[Any, ...]]:
    return sorted(opens.in_range(conn, APP, T0 - HOUR_MS, T0 + 49 * HOUR_MS), key=repr)


def insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        conn.execute(events_sql.insert_sql(1), row)


def test_opens_go_with_the_events_the_retention_sweep_deletes(tmp_path: Path) -> None:
    db = tmp_path / "homing.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        migrations.migrate(conn)
        conn.execute("INSERT INTO apps (id, name, created_at) VALUES (?, 'a', 'x')", (APP,))
        rows = event_rows(1)
        conn.execute("BEGIN")
        insert(conn, rows)
        rollups.apply(conn, rows)
        conn.execute("COMMIT")
        assert kept(conn) == scanned(conn)
        before = len(scanned(conn))
        assert before > 50

    async def sweep() -> None:
        storage = SQLiteStorage(db)
        await storage.start()
        try:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                # A few events at a time, as the sweeper does: the opens of the hours it has
                # not reached yet stay, those of the hours it emptied go.
                while await storage.delete_expired_events(APP, T0 // HOUR_MS + 24, 37):
                    assert kept(conn) == scanned(conn)
                assert 0 < len(kept(conn)) < before
                assert min(ts for _e, ts, _c in kept(conn)) >= T0 + 24 * HOUR_MS
        finally:
            await storage.close()

    asyncio.run(sweep())


def test_on_postgresql_opens_go_with_the_events_the_retention_sweep_deletes(
    postgres_url: str,
) -> None:
    import psycopg

    from homing_collector.storage.postgres import PostgresStorage

    async def sweep() -> None:
        storage = PostgresStorage(postgres_url)
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "a", "x"))
            rows = [EventRow(*row[1:]) for row in event_rows(1)]
            stored = await storage.put_events(
                APP, [], rows, merge=partial(endpoints.merge, APP, now="x"),
                max_event_types=10, max_user_endpoints=10,
            )  # fmt: skip
            assert stored.stored == len(rows)
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                assert kept(conn) == scanned(conn)
                before = len(scanned(conn))
                assert before > 50
                while await storage.delete_expired_events(APP, T0 // HOUR_MS + 24, 37):
                    assert kept(conn) == scanned(conn)
                assert 0 < len(kept(conn)) < before
                assert min(ts for _e, ts, _c in kept(conn)) >= T0 + 24 * HOUR_MS
        finally:
            await storage.close()

    asyncio.run(sweep())


def test_the_migration_fills_the_opens_of_the_events_stored_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "homing.db", isolation_level=None)) as conn:
        monkeypatch.setattr(
            migrations, "SQLITE_MIGRATIONS", [m for m in migrations.SQLITE_MIGRATIONS if m[0] < 17]
        )
        assert migrations.migrate(conn) == 16
        insert(conn, event_rows(2))
        monkeypatch.undo()
        assert migrations.migrate(conn) >= 17
        assert len(kept(conn)) > 50
        assert kept(conn) == scanned(conn)
        assert (None in {c for _e, _t, c in kept(conn)}) and (
            "c1" in {c for _e, _t, c in kept(conn)}
        )
        # The opens stored after count from there.
        more = [(*row[:2], "n" + row[2], *row[3:]) for row in event_rows(3)]
        conn.execute("BEGIN")
        insert(conn, more)
        rollups.apply(conn, more)
        conn.execute("COMMIT")
        assert kept(conn) == scanned(conn)
