"""The analytics of PostgreSQL against SQLite's, where PostgreSQL differs: several
collectors count the same users at once, and a database written before migration 8 (no
analytics tables) gets the rollups, counters and opens of its events from it. Every
analytics answer must be the same as SQLite's for the same traffic."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from homing_collector import demo, ingest
from homing_collector.analytics import params, queries
from homing_collector.demo.simulation import DemoOptions
from homing_collector.storage import seed
from homing_collector.storage.base import AppRecord, Storage
from homing_collector.storage.endpoint_values import DIMENSIONS
from homing_collector.storage.sqlite import SQLiteStorage
from tests.collector import analytics_data

APP = "d" * 32
NOW = datetime(2026, 10, 20, 12, tzinfo=timezone.utc)
OPTIONS = DemoOptions(devices=40, days=20, seed=5)


DAYS = {"start": "2026-09-28", "end": "2026-10-20"}  # the demo's


def answers(conn: Any, days: dict[str, str] = DAYS) -> dict[str, Any]:
    """Every kind of analytics answer over `days`."""

    def _range(**extra: str) -> params.Range:
        return params.parse_range({**days, **extra}.get, NOW)

    got: dict[str, Any] = {}
    steps = params.parse_steps(lambda _name: ["_session.start", "_monetization.purchase"])
    no_filters = params.parse_event_filters({}.get, lambda _name: [])
    for by in ("users", "endpoints"):
        got[f"usage {by}"] = queries.usage(conn, APP, _range(by=by, tz="Europe/Paris"))
        got[f"retention {by}"] = queries.retention(conn, APP, _range(by=by))
        got[f"funnel {by}"] = queries.funnel(conn, APP, _range(by=by), steps, 3600)
    for dimension in DIMENSIONS:
        got[f"demographics {dimension}"] = queries.demographics(conn, APP, dimension)
    got["events"] = queries.events(conn, APP, _range(tz="Asia/Tokyo"), no_filters)
    got["revenue"] = queries.revenue(conn, APP, _range())
    got["campaigns"] = queries.campaigns(conn, APP, _range())
    return got


async def _answers_then_after_a_deletion(storage: Storage) -> tuple[Any, Any]:
    before = await storage.analytics_read(answers)
    [(endpoint_id, _body)] = await storage.endpoints_after(APP, after=None, limit=1)
    assert await storage.delete_endpoint(APP, endpoint_id) is not None
    return before, await storage.analytics_read(answers)


def test_migration_8_gives_the_analytics_of_the_events_stored_before(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from homing_collector.storage import pg_schema
    from homing_collector.storage.analytics_pg import endpoint_values as values_pg
    from homing_collector.storage.postgres import PostgresStorage

    async def on_sqlite() -> tuple[Any, Any]:
        storage = SQLiteStorage(tmp_path / "homing.db")
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "demo", NOW.isoformat()))
            await demo.load(storage, APP, OPTIONS, now=NOW)
            return await _answers_then_after_a_deletion(storage)
        finally:
            await storage.close()

    async def before_migration_8() -> None:
        # What a collector of the version before wrote: no rollups, no counters.
        storage = PostgresStorage(postgres_url, rollups=False)
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "demo", NOW.isoformat()))
            await demo.load(storage, APP, OPTIONS, now=NOW)
        finally:
            await storage.close()

    async def migrated() -> tuple[Any, Any]:
        storage = PostgresStorage(postgres_url)
        await storage.start()
        try:
            return await _answers_then_after_a_deletion(storage)
        finally:
            await storage.close()

    async def no_pushes(*_args: Any) -> bool:
        return False  # the demo's push gateway rows are written on SQLite only: on neither

    monkeypatch.setattr(seed, "put_push_messages", no_pushes)
    with monkeypatch.context() as patch:
        patch.setattr(pg_schema, "PG_MIGRATIONS", [m for m in pg_schema.PG_MIGRATIONS if m[0] < 8])

        async def not_counted(*_args: Any) -> None:
            return None

        patch.setattr(values_pg, "count", not_counted)
        asyncio.run(before_migration_8())
    want, want_after = asyncio.run(on_sqlite())
    got, got_after = asyncio.run(migrated())
    assert want["usage users"]["summary"]["mau"] > 10
    assert want["funnel users"]["steps"][1]["count"] > 0
    assert want["campaigns"]["opened"] > 0
    for key in want:
        assert got[key] == want[key], key
    assert want_after != want
    for key in want_after:
        assert got_after[key] == want_after[key], f"{key}, after a deletion"


def test_collectors_counting_the_same_users_at_once_count_each_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Batches of the same endpoints and users (and events sent twice) stored at once
    through three collectors give the rollups that one SQLite writer gives."""
    from homing_collector.storage.postgres import PostgresStorage

    data = analytics_data.generate(seed=9, devices=16)
    devices = {d.endpoint_id: d for d in data.devices}
    events = data.events + data.resent
    bodies = [
        body for i in range(0, len(events), 20)
        for body in analytics_data.batches(events[i : i + 20], devices)
    ]  # fmt: skip
    days = {"start": "2026-09-01", "end": "2026-10-31"}  # the data's (test_analytics.py)

    def checked() -> list[ingest.CheckedBatch]:
        return [ingest.check_events(body, body_size=0, summarize=True) for body in bodies]

    async def on_sqlite() -> dict[str, Any]:
        storage = SQLiteStorage(tmp_path / "homing.db")
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "same", NOW.isoformat()))
            for batch in checked():
                await ingest.store_events(storage, APP, batch)
            return await storage.analytics_read(partial(answers, days=days))
        finally:
            await storage.close()

    async def on_postgres() -> dict[str, Any]:
        nodes = [PostgresStorage(postgres_url) for _ in range(3)]
        for node in nodes:
            await node.start()
        try:
            await nodes[0].create_app(AppRecord(APP, "same", NOW.isoformat()))
            await asyncio.gather(*(
                ingest.store_events(nodes[i % 3], APP, batch) for i, batch in enumerate(checked())
            ))  # fmt: skip
            return await nodes[1].analytics_read(partial(answers, days=days))
        finally:
            for node in nodes:
                await node.close()

    assert len(bodies) > 50
    want = asyncio.run(on_sqlite())
    got = asyncio.run(on_postgres())
    assert want["usage users"]["summary"]["mau"] > 5
    for key in want:
        assert got[key] == want[key], key


def test_entries_not_folded_yet_are_folded_before_a_deletion_and_a_read(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingestion appends what it adds to the rollups, folded later: an endpoint deleted
    before the fold, and a read, give SQLite's answers all the same."""
    import psycopg

    from homing_collector.storage.analytics_pg import pending
    from homing_collector.storage.postgres import PostgresStorage

    monkeypatch.setattr(pending, "FOLD_SECONDS", 3600.0)  # no fold in the background
    data = analytics_data.generate(seed=4, devices=8)
    devices = {d.endpoint_id: d for d in data.devices}
    bodies = [
        body for i in range(0, len(data.events), 20)
        for body in analytics_data.batches(data.events[i : i + 20], devices)
    ]  # fmt: skip
    deleted = data.devices[0].endpoint_id
    days = {"start": "2026-09-01", "end": "2026-10-31"}  # the data's (test_analytics.py)

    async def run(storage: Storage, waiting: Any = None) -> dict[str, Any]:
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "fold", NOW.isoformat()))
            for body in bodies:
                batch = ingest.check_events(body, body_size=0, summarize=True)
                await ingest.store_events(storage, APP, batch)
            if waiting is not None:
                waiting()
            assert await storage.delete_endpoint(APP, deleted) is not None
            return await storage.analytics_read(partial(answers, days=days))
        finally:
            await storage.close()

    def entries() -> int:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT count(*) FROM an_pending").fetchone()
        return int(row[0]) if row else 0

    def nothing_folded() -> None:
        assert entries() > 0
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute("SELECT count(*) FROM an_counts").fetchone() == (0,)

    want = asyncio.run(run(SQLiteStorage(tmp_path / "homing.db")))
    got = asyncio.run(run(PostgresStorage(postgres_url), nothing_folded))
    assert want["usage users"]["summary"]["mau"] > 2
    for key in want:
        assert got[key] == want[key], key
    assert entries() == 0


def test_a_table_the_folds_look_up_is_analyzed_once_it_holds_rows(postgres_url: str) -> None:
    """A new deployment does not wait for autovacuum to give the planner what it needs to
    look an_subjects' keys up through their primary key."""
    import psycopg

    from homing_collector.storage.analytics_pg import pending
    from homing_collector.storage.postgres import PostgresStorage

    def analyzed() -> dict[str, bool]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables"
                " WHERE relname = ANY(%s)",
                (list(pending.LOOKED_UP),),
            ).fetchall()
        return dict(rows)

    async def scenario() -> list[bool]:
        storage = PostgresStorage(postgres_url)
        await storage.start()  # the schema
        await storage.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO an_subjects (app_id, kind, key, first_hour, last_hour)"
                " SELECT %s, 1, 'k' || n, 0, 0 FROM generate_series(1, %s) AS n",
                (APP, pending.YOUNG_ROWS),
            )
        answers = []
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            for _ in range(50):  # the inserting backend's counts reach the statistics soon
                answers.append(await pending.analyze_young(conn))
                if analyzed()["an_subjects"]:
                    break
                await asyncio.sleep(0.2)
        return answers

    answers = asyncio.run(scenario())
    assert analyzed() == {"an_subjects": True, "an_active": False}  # an_active is empty
    assert answers[-1] is True  # an_active is still to be analyzed
