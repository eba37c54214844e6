"""SQLiteStorage in-process, on a real file: what the database files do over time."""

from __future__ import annotations

import asyncio
import contextlib
import os
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


if sqlite_storage.fcntl is not None:
    from fcntl import LOCK_EX, LOCK_NB, LOCK_UN, flock


class _CommitsDuringCheckpoints:
    """The checkpointer's connection, with a writer whose transaction runs across each
    checkpoint (it began before, and commits after), unless the checkpointer holds the
    writers' file lock: then the writer waits, as the events writer does."""

    def __init__(self, db: Path, writer: sqlite3.Connection) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.writer = writer
        self.lock = os.open(f"{db}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self.held: list[bool] = []  # whether writers were held, at each checkpoint

    def execute(self, sql: str) -> sqlite3.Cursor:
        if not sql.startswith("PRAGMA wal_checkpoint"):
            return self.conn.execute(sql)
        try:
            flock(self.lock, LOCK_EX | LOCK_NB)
        except BlockingIOError:
            self.held.append(True)
            return self.conn.execute(sql)
        self.held.append(False)
        self.writer.execute("BEGIN IMMEDIATE")
        _insert_rows(self.writer, 3)
        cursor = self.conn.execute(sql)
        self.writer.execute("COMMIT")
        flock(self.lock, LOCK_UN)
        return cursor

    def close(self) -> None:
        self.conn.close()
        os.close(self.lock)


def _insert_rows(conn: sqlite3.Connection, count: int) -> None:
    conn.executemany("INSERT INTO t (x) VALUES (randomblob(20000))", [()] * count)


def _commit_rows(conn: sqlite3.Connection, count: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    _insert_rows(conn, count)
    conn.execute("COMMIT")


def _wal_frames(db: Path) -> int:
    """The frames in the WAL since it last started over."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (frames,) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1:2]
    return int(frames)


@pytest.mark.skipif(sqlite_storage.fcntl is None, reason="the writers' file lock is POSIX")
@pytest.mark.parametrize("catch_up", [True, False])
def test_a_checkpoint_that_writers_outran_catches_up_and_the_wal_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catch_up: bool
) -> None:
    """Under steady ingestion writers commit while every checkpoint runs, so a PASSIVE
    checkpoint alone never finds the whole WAL copied, and the WAL never starts over: the
    file grew by every page written. Once it is large, the checkpointer copies the rest
    with the writers held, and the next commit starts the WAL from its beginning."""
    monkeypatch.setattr(sqlite_storage, "_CATCH_UP_BYTES", 256 * 1024)
    db = tmp_path / "homing.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as writer:
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("CREATE TABLE t (x BLOB)")
        _commit_rows(writer, 40)
        checkpointer = _CommitsDuringCheckpoints(db, writer)
        lock = os.open(f"{db}-writer.lock", os.O_RDWR)  # the checkpointer's own
        try:
            held = sqlite_storage.checkpoint(
                checkpointer,  # type: ignore[arg-type]
                lock if catch_up else None,
            )
        finally:
            checkpointer.close()
            os.close(lock)
        _commit_rows(writer, 1)
        frames = _wal_frames(db)
    if catch_up:
        assert held
        # Writers committed during the first two checkpoints; the last one held them.
        assert checkpointer.held == [False, False, True]
        assert frames < 10  # the WAL started over: it holds the last commit alone
    else:
        assert not held and checkpointer.held == [False]
        assert frames > 100  # every page written since the start


def test_a_storage_checkpoints_no_more_often_than_its_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event-stream process's storage checkpoints seldom (its commits are few, and
    the collector's checkpoints copy them too): after a checkpoint, the next waits for
    the interval however many commits come meanwhile."""
    calls: list[int] = []
    real = sqlite_storage.checkpoint

    def counted(conn: sqlite3.Connection, lock: int | None) -> bool:
        calls.append(1)
        return real(conn, lock)

    monkeypatch.setattr(sqlite_storage, "checkpoint", counted)

    async def scenario() -> tuple[int, int]:
        storage = SQLiteStorage(tmp_path / "homing.db", checkpoint_interval=3600.0)
        await storage.start()
        try:
            await storage.create_app(AppRecord("first", "a", "2026-11-29T00:00:00Z"))
            for _ in range(200):  # the first commit's checkpoint, whenever it runs
                if calls:
                    break
                await asyncio.sleep(0.01)
            first = len(calls)
            for n in range(20):
                await storage.create_app(AppRecord(f"app{n}", "a", "2026-11-29T00:00:00Z"))
                await asyncio.sleep(0.02)  # more than the default interval, 0.1 s, in all
            return first, len(calls)
        finally:
            await storage.close()

    first, after = asyncio.run(scenario())
    assert first == 1
    assert after == 1
