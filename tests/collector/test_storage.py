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


def test_analytics_reads_keep_their_connections_and_always_see_the_latest_writes(
    tmp_path: Path,
) -> None:
    """Connections are kept between reads (their page caches warm), never one that a read
    left inside a transaction or that failed, and none after close()."""
    seen: list[sqlite3.Connection] = []

    def apps(conn: sqlite3.Connection) -> int:
        seen.append(conn)
        return int(conn.execute("SELECT count(*) FROM apps").fetchone()[0])

    def left_open(conn: sqlite3.Connection) -> int:
        seen.append(conn)
        conn.execute("BEGIN")
        return int(conn.execute("SELECT count(*) FROM apps").fetchone()[0])

    def fails(conn: sqlite3.Connection) -> int:
        seen.append(conn)
        raise RuntimeError("a query that failed")

    async def scenario() -> list[int]:
        storage = SQLiteStorage(tmp_path / "homing.db")
        await storage.start()
        counts = []
        try:
            for n, fn in enumerate([apps, apps, left_open, apps, fails, apps, apps]):
                await storage.create_app(AppRecord(f"app{n}", "a", "2026-12-07T00:00:00Z"))
                with contextlib.suppress(RuntimeError):
                    counts.append(await storage.analytics_read(fn))
            # Two reads at once: two connections, both kept.
            both = await asyncio.gather(*(storage.analytics_read(apps) for _ in range(2)))
            counts += both
        finally:
            await storage.close()
        return counts

    counts = asyncio.run(scenario())
    assert counts == [1, 2, 3, 4, 6, 7, 7, 7]  # the fifth failed
    assert seen[0] is seen[1] is seen[2]  # kept between reads
    assert seen[3] is not seen[2]  # that one was left in a transaction: closed
    assert seen[4] is seen[3] and seen[5] is not seen[4]  # closed after it failed
    assert seen[5] is seen[6]
    for conn in seen:  # close() closed those it kept, and the others were closed at once
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


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
