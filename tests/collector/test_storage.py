"""SQLiteStorage in-process, on a real file: what the database files do over time."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from homing_collector.storage import sqlite as sqlite_storage
from homing_collector.storage.base import AppRecord
from homing_collector.storage.sqlite import SQLiteStorage


def test_the_wal_file_shrinks_back_once_a_long_read_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 256 * 1024
    monkeypatch.setattr(sqlite_storage, "_WAL_SIZE_LIMIT", limit)
    db = tmp_path / "homing.db"
    wal = tmp_path / "homing.db-wal"

    async def scenario() -> tuple[int, int]:
        storage = SQLiteStorage(db)
        await storage.start()
        try:
            with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as reader:
                # A long read (a big analytics query, a backup): checkpoints cannot reach
                # past it, so the WAL grows with every write meanwhile.
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM apps").fetchone()
                for n in range(40):
                    await storage.create_app(
                        AppRecord(f"app{n}", "big", "2026-11-29T00:00:00Z", {"k": "x" * 50_000})
                    )
                grown = wal.stat().st_size
                reader.execute("COMMIT")
            # The checkpointer catches up after the next commits; the write after that
            # starts the WAL over, and the file is cut back.
            for n in range(100):
                await storage.create_app(AppRecord(f"small{n}", "s", "2026-11-29T00:00:00Z"))
                if wal.stat().st_size <= limit:
                    break
                await asyncio.sleep(0.05)
            return grown, wal.stat().st_size
        finally:
            await storage.close()

    grown, after = asyncio.run(scenario())
    assert grown > 4 * limit
    assert after <= limit


def test_migrations_are_listed_in_the_order_of_their_versions() -> None:
    # migrate() skips every version at or below the highest applied, so one listed after
    # a higher version would never run on a fresh database.
    from homing_collector.storage.migrations import SQLITE_MIGRATIONS, migrate

    versions = [version for version, _ in SQLITE_MIGRATIONS]
    assert versions == sorted(set(versions))
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        assert migrate(conn) == versions[-1]
        applied = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert applied == versions
