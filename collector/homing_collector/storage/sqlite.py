"""SQLite storage: one file, WAL mode, one writer thread with group commit.

Every write is a job for the writer thread. The thread takes all the jobs waiting, runs
them in one transaction, commits once, and only then wakes the coroutines that wait on
them. Many concurrent requests share one commit, and a request is answered only after its
rows are on disk. Reads use a second connection and never wait for the writer (WAL).

The writer thread gives up the GIL for every SQLite call and then waits to take it back
while the event loop runs Python, so it makes few calls per commit: the events of
consecutive PutEvents jobs go in together, many rows per INSERT, and endpoints that send
batch after batch are not read back each time. A job that fails is rolled back alone.

With ``events_process=True`` (what ``serve`` uses on POSIX systems), PutEvents batches go to
a child process that runs the same writer code (see events_process.py), so that writing
them no longer competes with the event loop for the GIL; under ``serve --workers``, one
such process that every worker shares (use_events_writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import socket
import sqlite3
import threading
import time

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import orjson

from homing_collector.analytics import opens, rollups
from homing_collector.analytics.pending import Staged, encode_summary
from homing_collector.push import epoch_ms
from homing_collector.storage import (
    campaigns,
    columnar,
    device,
    endpoint_values,
    history,
    hook_cursors,
    imports,
    push,
    segments,
)
from homing_collector.storage import events as events_sql
from homing_collector.storage import outbox as outbox_sql
from homing_collector.storage.analytics_sqlite import pending as rollups_pending
from homing_collector.storage.base import (
    ActivityRecord,
    AppRecord,
    CampaignRecord,
    CampaignSend,
    ChunkWritten,
    DeadLetter,
    Delivery,
    DeviceCheck,
    Endpoint,
    EndpointMerge,
    EndpointUpdate,
    EventRow,
    EventStreamRecord,
    HookRow,
    HookSecrets,
    ImportJobRecord,
    ImportRow,
    IngestResult,
    KeyColumn,
    KeyRecord,
    NewDelivery,
    Overloaded,
    PastSend,
    PushMessage,
    PushQueued,
    QueuedPush,
    SegmentRecord,
    SegmentReference,
    StorageError,
    StorageFull,
    StreamValues,
    UserEndpointLimit,
    user_ids,
)
from homing_collector.storage.columnar import Sealed
from homing_collector.storage.columnar_process import ColumnarProcess
from homing_collector.storage.events_process import EventsProcess
from homing_collector.storage.migrations import migrate

logger = logging.getLogger("homing_collector")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

_STOP = object()
_MAX_JOBS_PER_COMMIT = 512
_CHECKPOINT_INTERVAL = 0.1  # seconds, at least, between two checkpoints
# The WAL grows while a long read keeps checkpoints from reaching its end; when it starts
# over, SQLite cuts the file back to this. Steady ingestion stays under it (see checkpoint).
_WAL_SIZE_LIMIT = 64 << 20
# WAL, in bytes, past which a checkpoint that the writers outran catches up with them held.
_CATCH_UP_BYTES = 32 << 20
_CATCH_UP_PASSES = 3  # checkpoints at most, each of what was committed during the last
_CATCH_UP_REST = 1 << 20  # bytes committed during one, below which writers are held
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_SQLITE_FULL = 13  # the primary result code; sqlite3.SQLITE_FULL from Python 3.11
_IDLE_READERS = 2  # analytics_read connections kept open between reads
# Seconds from a campaign's staged rollups' entries to this writer's own fold of them,
# when an events writer process (which folds every writer's) is at work: a backstop, for
# when no PutEvents come.
_FOLD_BESIDE_EVENTS_WRITER = 5.0


class SQLiteStorage:
    name = "SQLite"
    analytics = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        max_pending: int = 4096,
        events_process: bool = False,
        rollups: bool = True,
        columnar_copy: bool = False,
        columnar_process: bool = False,
        checkpoint_interval: float = _CHECKPOINT_INTERVAL,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.max_pending = max_pending
        self.rollups = rollups  # analytics rollups kept at ingest (HOMING_ROLLUPS)
        # Seconds, at least, between two checkpoints of this process after its commits.
        self.checkpoint_interval = checkpoint_interval
        # Where the columnar copy of sealed events is (HOMING_COLUMNAR); None: no copy.
        self.columnar: Path | None = columnar.directory(path) if columnar_copy else None
        # The sealer's copies are made in a process of their own (see columnar_process.py)
        # when there is one; else in a thread.
        self._sealing: ColumnarProcess | None = None
        if self.columnar is not None and columnar_process and os.name == "posix":
            self._sealing = ColumnarProcess(self.path)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        # analytics_read's connections kept between reads, and whether to keep them.
        self._analytics_idle: list[sqlite3.Connection] = []
        self._analytics_lock = threading.Lock()
        self._analytics_open = True
        # Writer thread only: caches of what is committed, and the events of this
        # transaction's PutEvents jobs that are not inserted yet.
        self._types: dict[str, set[str]] = {}  # event types known per app
        self._bodies = _EndpointBodies(_MAX_CACHED_ENDPOINTS)
        # PutEvents rows waiting for _flush, with their job's result and rollups summary.
        self._deferred: list[tuple[list[Any], IngestResult, tuple[str, Staged] | None]] = []
        # When the rollups' entries this writer staged are due to be folded (monotonic
        # time; see analytics_sqlite/pending.py), if any wait.
        self._fold_at: float | None = None
        self._data_version = -1
        self._rows_per_insert = 1
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._write_lock: int | None = None  # fd of the file lock that orders writers
        self._lock_depth = 0  # writers_held() calls that hold it
        self._checkpointer: threading.Thread | None = None
        self._committed = threading.Event()  # set by the writer, cleared by the checkpointer
        self._stopping = threading.Event()
        # When a commit last found the disk full (time.time()), until one succeeds again.
        self.full_since: float | None = None
        # PutEvents batches go to a writer process of their own when there is one.
        self._want_events_process = events_process and os.name == "posix"
        self._events: EventsProcess | None = None
        self._events_connection: socket.socket | None = None  # see use_events_writer
        self._push_version = -1  # the reader's data_version at the last push_changes()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = threading.Thread(target=self._run, name="homing-sqlite-writer", daemon=True)
        self._writer.start()
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self._startup_error is not None:
            raise self._startup_error
        self._reader = self._connect()
        if self._sealing is not None:
            await self._sealing.start()
        if self._want_events_process:
            connection, self._events_connection = self._events_connection, None
            events = EventsProcess(
                self.path,
                self.synchronous,
                self.max_pending,
                rollups=self.rollups,
                connection=connection,
            )
            try:
                await events.start()
            except Exception:
                logger.exception("The events writer process did not start; writing in-process")
            else:
                self._events = events

    @property
    def wants_events_process(self) -> bool:
        """Whether PutEvents batches are to be written by a process of their own."""
        return self._want_events_process

    def use_events_writer(self, connection: socket.socket) -> None:
        """Before start: write PutEvents batches through the events writer at the other
        end of `connection` (events_process.start_shared: serve --workers starts one for
        all its workers), not one of this storage's own."""
        self._events_connection = connection

    async def close(self) -> None:
        """Finish every queued write, then close. Nothing queued is dropped."""
        if self._events is not None:
            await self._events.close()
            self._events = None
        if self._sealing is not None:
            await self._sealing.close()
        if self._writer is not None:
            self._jobs.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._checkpointer is not None:
            self._stopping.set()
            self._committed.set()
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        with self._analytics_lock:
            self._analytics_open = False
            idle, self._analytics_idle = self._analytics_idle, []
        for conn in idle:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        # Room for the INSERT of every batch size (see _insert_sql) beside the other statements.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        # Takes effect on a new, empty database only; an existing one keeps its page size.
        # 16 KB pages make fewer, larger writes to the WAL: measured, about a quarter less
        # CPU in the writer per stored event than the default 4 KB.
        conn.execute("PRAGMA page_size = 16384")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        return conn

    # -- the writer thread ---------------------------------------------------------------

    def open_writer(self, *, migrate_schema: bool = True) -> sqlite3.Connection:
        """The writer's connection, and the file lock that orders it with other writers."""
        if fcntl is not None:
            self._write_lock = os.open(f"{self.path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            # Writers of other processes (serve --workers) may be setting up the same new
            # file: switching it to WAL while one of them migrates fails at once with
            # "database is locked", whatever the busy timeout.
            fcntl.flock(self._write_lock, fcntl.LOCK_EX)
        try:
            conn = self._connect()
            if migrate_schema:
                migrate(conn)
        finally:
            if self._write_lock is not None:
                fcntl.flock(self._write_lock, fcntl.LOCK_UN)
        self._rows_per_insert = _rows_per_insert(conn)
        # Checkpoints run in their own thread (see _checkpoint), not inside a commit.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        if rollups_pending.waiting(conn):  # left by a writer that stopped: folded at once
            self._fold_at = time.monotonic()
        return conn

    def close_writer(self, conn: sqlite3.Connection) -> None:
        conn.close()
        if self._write_lock is not None:
            os.close(self._write_lock)
            self._write_lock = None

    def _run(self) -> None:
        try:
            conn = self.open_writer()
            # Its connection is opened here, so that a failure stops the start: the
            # writers leave checkpoints to it alone (wal_autocheckpoint = 0).
            self._checkpointer = threading.Thread(
                target=self._checkpoint,
                args=(self._connect(),),
                name="homing-sqlite-checkpointer",
                daemon=True,
            )
            self._checkpointer.start()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        while not stopping:
            try:
                batch = [self._jobs.get(timeout=self.fold_wait())]
            except queue.Empty:  # idle, and the rollups' entries are due
                self.fold_entries(conn)
                continue
            while len(batch) < _MAX_JOBS_PER_COMMIT:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                # Jobs queued after the stop marker still run: nothing accepted is dropped.
                batch = [job for job in batch if job is not _STOP]
            if batch:
                self._commit(conn, batch)
            if self.fold_wait() == 0.0:
                self.fold_entries(conn)
        if self._fold_at is not None:  # what is left, rather than leave it to the next
            self.fold_entries(conn, everything=True)
        self.close_writer(conn)

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        outcomes = self.commit_jobs(conn, [(fn, flush_first) for fn, flush_first, _, _ in batch])
        self._committed.set()
        with self._pending_lock:
            self._pending -= len(batch)
        # One wake-up per event loop and commit, not one per job.
        settle: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_fn, _flush_first, future, loop), (value, ok) in zip(batch, outcomes, strict=True):
            settle.setdefault(loop, []).append((future, value, ok))
        for loop, items in settle.items():
            loop.call_soon_threadsafe(_settle, items)

    def commit_jobs(
        self, conn: sqlite3.Connection, batch: list[tuple[Job, bool]]
    ) -> list[tuple[Any, bool]]:
        """Run (job, flush_first) pairs in one transaction; return (result or error, ok) each."""
        with self.writers_held():
            return self._commit_jobs(conn, batch)

    @contextlib.contextmanager
    def writers_held(self) -> Iterator[None]:
        """Hold the file lock that orders writers (that of open_writer), if any; may nest.

        Writers of other processes (serve --workers, the events writer process) queue on
        it in the kernel and wake the moment it is free; SQLite's own busy handler would
        sleep and poll."""
        if self._write_lock is None:
            yield
            return
        if self._lock_depth == 0:
            fcntl.flock(self._write_lock, fcntl.LOCK_EX)
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                fcntl.flock(self._write_lock, fcntl.LOCK_UN)

    def _commit_jobs(
        self, conn: sqlite3.Connection, batch: list[tuple[Job, bool]]
    ) -> list[tuple[Any, bool]]:
        try:
            outcomes = self._run_jobs(conn, batch)
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._forget()
            if is_disk_full(exc):
                if self.full_since is None:
                    self.full_since = time.time()
                    logger.error(
                        "The disk of %s is full: writes are refused with 503 until space "
                        "is freed", self.path,
                    )  # fmt: skip
                exc = StorageFull("the disk is full")
            else:
                logger.exception(
                    "SQLite commit failed; %d writes are answered with an error", len(batch)
                )
            outcomes = [(exc, False)] * len(batch)
        else:
            if self.full_since is not None:
                logger.warning("The disk of %s has room again: writes go on", self.path)
                self.full_since = None
        return outcomes

    def fold_wait(self) -> float | None:
        """Seconds until the rollups' entries this writer staged are due to be folded
        (0: now), or None if none wait."""
        if self._fold_at is None:
            return None
        return max(0.0, self._fold_at - time.monotonic())

    def fold_entries(self, conn: sqlite3.Connection, *, everything: bool = False) -> None:
        """Fold the rollups' entries (up to FOLD_ROWS, or `everything`) in a transaction
        of their own; those of every writer, not only this one's."""
        self._fold_at = None
        fold = rollups_pending.settle if everything else rollups_pending.fold
        [(value, ok)] = self.commit_jobs(conn, [(fold, False)])
        if not ok:  # the next fold retries
            if not isinstance(value, StorageFull):
                logger.error("Folding the analytics rollups' entries failed: %s", value)
            self._fold_at = time.monotonic() + rollups_pending.FOLD_SECONDS
        elif not everything and value >= rollups_pending.FOLD_ROWS:  # more are waiting
            self._fold_at = time.monotonic()

    def _staged(self, wait: float = rollups_pending.FOLD_SECONDS) -> None:
        """Note that this writer staged rollups' entries: they are due `wait` seconds on."""
        if self._fold_at is None:
            self._fold_at = time.monotonic() + wait

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy committed pages from the WAL into the database file, beside the writer.

        Left to SQLite, the commit that crosses the WAL's size limit runs the checkpoint
        itself, and every write queued behind it waits: measured, about half the writer's
        time on a large database. Here a PASSIVE checkpoint (it never blocks the writer or
        readers) runs after commits, at most every CHECKPOINT_INTERVAL, in C without the GIL,
        and catches up with the writers held when they outran it (see checkpoint).
        """
        # An open file description of its own: the writer thread's does not exclude it.
        lock = None
        if fcntl is not None:
            lock = os.open(f"{self.path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not self._stopping.is_set():
                self._committed.wait()
                self._committed.clear()
                if self._stopping.is_set():
                    break
                try:
                    checkpoint(conn, lock)
                except sqlite3.Error as exc:
                    if not is_disk_full(exc):  # the writer says when the disk is full
                        logger.exception("SQLite checkpoint failed; the next one will retry")
                self._stopping.wait(self.checkpoint_interval)
        finally:
            conn.close()
            if lock is not None:
                os.close(lock)

    def _run_jobs(
        self, conn: sqlite3.Connection, batch: list[tuple[Job, bool]]
    ) -> list[tuple[Any, bool]]:
        """Run the jobs in one transaction and commit; return (result or error, ok) each.

        Jobs almost never fail, so they first run back to back. If one raises, that
        attempt is rolled back and the jobs run again, each in its own savepoint, so a
        failed job leaves no trace and the others still commit. A job may thus run twice:
        it must act on nothing but `conn` and the writer's caches, which are cleared.
        """
        conn.execute("BEGIN IMMEDIATE")
        self._revalidate(conn)
        try:
            outcomes: list[tuple[Any, bool]] = []
            for fn, flush_first in batch:
                if flush_first:
                    self._flush(conn)
                outcomes.append((fn(conn), True))
            self._flush(conn)
        except Exception as exc:
            if is_disk_full(exc):
                raise  # no job is to blame: every one would fail alike
            conn.execute("ROLLBACK")
            self._forget()
            conn.execute("BEGIN IMMEDIATE")
            outcomes = []
            for fn, _flush_first in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = fn(conn)
                    self._flush(conn, alone=True)
                    conn.execute("RELEASE job")
                    outcomes.append((value, True))
                except Exception as exc:
                    if is_disk_full(exc):
                        raise
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self._forget()
                    outcomes.append((exc, False))
        conn.execute("COMMIT")
        return outcomes

    def _revalidate(self, conn: sqlite3.Connection) -> None:
        # data_version changes when another connection (the CLI, another process) has
        # committed; the caches may then hold what it changed. Read inside the transaction,
        # so nobody else can commit until this one ends.
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:
            self._types.clear()
            self._bodies.clear()
            self._data_version = version

    def _forget(self) -> None:
        # After a rollback the caches may hold what it undid.
        self._types.clear()
        self._bodies.clear()
        self._deferred.clear()

    def _flush(self, conn: sqlite3.Connection, *, alone: bool = False) -> None:
        """Insert the deferred events of PutEvents jobs and tell each job how many it stored.

        `alone` says that the job runs in a savepoint of its own (see _run_jobs)."""
        if not self._deferred:
            return
        deferred, self._deferred = self._deferred, []
        values = list(chain.from_iterable(rows for rows, _, _ in deferred))
        if not alone:
            before = conn.total_changes
            _insert_events(conn, values, self._rows_per_insert)
            stored = conn.total_changes - before
            if stored == len(values) // _EVENT_COLUMNS or stored == 0:
                if stored and self.rollups:  # analytics hook: every row is new
                    staged = [summary for _, _, summary in deferred if summary is not None]
                    if len(staged) == len(deferred):  # as the collector summed them up
                        rollups_pending.stage(conn, staged)
                    else:
                        rollups_pending.stage_summaries(
                            conn, rollups.summarize(rollups.iter_rows(values, _EVENT_COLUMNS))
                        )
                    self._staged()
                for rows, result, _ in deferred:
                    result.stored = len(rows) // _EVENT_COLUMNS if stored else 0
                return
            # Some events were stored before (a client sent them again), and the table
            # cannot tell which rows are new. The transaction is run again, each job in a
            # savepoint of its own, where the INSERT returns what it stored.
            raise _SomeStoredBefore
        new = _insert_events(conn, values, self._rows_per_insert, returning=True)
        if self.rollups and new:  # analytics hook: only the rows just added, each once
            rollups_pending.stage_summaries(
                conn, rollups.summarize(rollups.new_rows(values, _EVENT_COLUMNS, new))
            )
            self._staged()
        for rows, result, _ in deferred:
            count = 0
            for i in range(0, len(rows), _EVENT_COLUMNS):
                key = tuple(rows[i : i + rollups.KEY_WIDTH])
                if key in new:
                    new.remove(key)
                    count += 1
            result.stored = count

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, flush_first: bool = True) -> T:
        """Run `fn` in the writer thread and return once its transaction is committed.

        `flush_first=False` says that `fn` neither reads nor changes stored events, so the
        events deferred by earlier jobs of the transaction need not be inserted before it.
        """
        with self._pending_lock:
            if self._pending >= self.max_pending:
                raise Overloaded(f"{self._pending} writes are waiting")
            self._pending += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, flush_first, future, loop))
        # The write goes on even if the request is cancelled; only the answer is lost.
        return await asyncio.shield(future)

    async def fold_rollups(self) -> None:
        """Fold every entry of the rollups that waits (storage/analytics_sqlite/pending.py)."""
        if rollups_pending.waiting(self._read()):
            await self._write(rollups_pending.settle)

    async def analytics_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run an analytics query as `read_in_thread` does, once the rollups' entries
        that wait are folded: what was answered 202 before is in what it reads."""
        await self.fold_rollups()
        return await self.read_in_thread(fn)

    async def read_in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a long read, such as an analytics query, in a thread on a connection of its
        own, so that it neither blocks the event loop nor waits for the writer.

        Up to _IDLE_READERS of these connections are kept between reads, each with its
        page cache: a query then finds the pages that the last one read (the endpoints a
        funnel joins, say) in its cache rather than parsing them from the file again.
        Measured at 50M events: the user join of a funnel took 800 ms of CPU on a new
        connection, 360 ms on a kept one."""

        def run() -> T:
            with self._analytics_lock:
                conn = self._analytics_idle.pop() if self._analytics_idle else None
            if conn is None:
                conn = sqlite3.connect(
                    self.path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False
                )
                conn.execute("PRAGMA busy_timeout = 10000")
                conn.execute("PRAGMA cache_size = -65536")
            keep = False
            try:
                result = fn(conn)
                # A read left open would hold its snapshot, and the WAL, until the next.
                keep = not conn.in_transaction
                return result
            finally:
                with self._analytics_lock:
                    keep = keep and len(self._analytics_idle) < _IDLE_READERS
                    if keep and self._analytics_open:
                        self._analytics_idle.append(conn)
                    else:
                        conn.close()

        return await asyncio.to_thread(run)

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("SQLiteStorage.start() has not been awaited")
        return self._reader

    # -- apps and keys -------------------------------------------------------------------

    async def create_app(self, app: AppRecord) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO apps (id, name, tags, created_at) VALUES (?, ?, ?, ?)",
                (app.id, app.name, orjson.dumps(app.tags).decode(), app.created_at),
            )

        await self._write(job)

    async def get_app(self, app_id: str) -> AppRecord | None:
        row = (
            self._read()
            .execute("SELECT id, name, created_at, tags FROM apps WHERE id = ?", (app_id,))
            .fetchone()
        )
        return _app(row) if row else None

    async def list_apps(self, *, after: str | None, limit: int) -> list[AppRecord]:
        rows = (
            self._read()
            .execute(
                "SELECT id, name, created_at, tags FROM apps WHERE id > ? ORDER BY id LIMIT ?",
                (after or "", limit),
            )
            .fetchall()
        )
        return [_app(row) for row in rows]

    async def delete_app(self, app_id: str) -> AppRecord | None:
        def job(conn: sqlite3.Connection) -> AppRecord | None:
            row = conn.execute(
                "SELECT id, name, created_at, tags FROM apps WHERE id = ?", (app_id,)
            ).fetchone()
            if row is None:
                return None
            rollups_pending.settle(conn)  # analytics hook: no entry of it is left over
            rollups.remove_app(conn, app_id)
            endpoint_values.delete_app(conn, app_id)
            segments.delete_app(conn, app_id)
            imports.delete_app(conn, app_id)
            campaigns.delete_app(conn, app_id)
            for table in (
                "events", "endpoints", "event_types", "keys", "push_messages", "push_endpoints",
                "app_quotas", "app_retention",
            ):  # fmt: skip
                conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))
            conn.execute("DELETE FROM apps WHERE id = ?", (app_id,))
            device.delete_app(conn, app_id)
            outbox_sql.delete_app(conn, app_id)
            outbox_sql.events_deleted(conn)
            hook_cursors.events_deleted(conn)
            columnar.app_deleted(conn, app_id)
            self._types.pop(app_id, None)
            self._bodies.drop_app(app_id)
            return _app(row)

        return await self._write(job)

    async def create_key(self, key: KeyRecord) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO keys (access_key_id, app_id, role, secret, token_sha256, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key.access_key_id, key.app_id, key.role, key.secret, key.token_sha256,
                 key.created_at),
            )  # fmt: skip

        await self._write(job)

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        return self._key("access_key_id", access_key_id)

    async def get_key_by_token(self, token_sha256: str) -> KeyRecord | None:
        return self._key("token_sha256", token_sha256)

    async def get_caller(
        self, column: KeyColumn, value: str, app_id: str | None
    ) -> tuple[KeyRecord | None, bool]:
        key = self._key(column, value)
        if key is None or app_id is None:
            return key, False
        return key, await self.get_app(app_id) is not None

    def _key(self, column: str, value: str) -> KeyRecord | None:
        row = (
            self._read()
            .execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE {column} = ?", (value,))
            .fetchone()
        )
        return KeyRecord(*row) if row else None

    async def list_keys(self, app_id: str | None = None) -> list[KeyRecord]:
        if app_id is None:
            rows = self._read().execute(
                f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at, access_key_id"
            )
        else:
            rows = self._read().execute(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE app_id = ?"
                " ORDER BY created_at, access_key_id",
                (app_id,),
            )
        return [KeyRecord(*row) for row in rows.fetchall()]

    async def revoke_key(self, access_key_id: str, revoked_at: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE keys SET revoked_at = ? WHERE access_key_id = ? AND revoked_at IS NULL",
                (revoked_at, access_key_id),
            )
            return cursor.rowcount > 0

        return await self._write(job)

    async def rewrite_secrets(self, rewrite: Callable[[str, str], str]) -> int:
        def job(conn: sqlite3.Connection) -> int:
            changed = 0
            for access_key_id, secret in conn.execute(
                "SELECT access_key_id, secret FROM keys"
            ).fetchall():
                new = rewrite(access_key_id, secret)
                if new != secret:
                    conn.execute(
                        "UPDATE keys SET secret = ? WHERE access_key_id = ?", (new, access_key_id)
                    )
                    changed += 1
            return changed

        return await self._write(job)

    # -- events and endpoints ------------------------------------------------------------

    async def put_events(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        events: Sequence[EventRow],
        *,
        merge: EndpointMerge,
        max_event_types: int,
        max_user_endpoints: int,
        summary: rollups.Summary | None = None,
        device: DeviceCheck | None = None,
    ) -> IngestResult:
        locked: frozenset[str] = frozenset()
        if device is not None:  # a read on this process's own connection: no round trip
            stored = await self.device_credentials(app_id, device.endpoint_ids)
            merge, locked = device.merge(merge, stored)
        result = await self._put_events(
            app_id, endpoints, events, merge, max_event_types, max_user_endpoints, summary
        )
        result.locked = locked
        return result

    async def _put_events(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        events: Sequence[EventRow],
        merge: EndpointMerge,
        max_event_types: int,
        max_user_endpoints: int,
        summary: rollups.Summary | None,
    ) -> IngestResult:
        # Work that needs no database is done here, on the event loop: the writer thread
        # has to win the GIL back after every statement, so the less Python it runs, the
        # sooner it commits. The summary goes to the writer as it is staged: its bytes
        # pass to a writer process as they are.
        values: list[Any] = []
        extend, app = values.extend, (app_id,)
        for event in events:  # no (app_id, *event) tuple per event, as a comprehension makes
            extend(app)
            extend(event)
        staged = None if summary is None or not self.rollups else encode_summary(summary)
        if self._events is not None and self._events.usable():
            try:
                result = await self._events.put_events(
                    app_id, endpoints, values, merge, max_event_types, max_user_endpoints, staged
                )
            except StorageFull:
                if self.full_since is None:
                    self.full_since = time.time()
                raise
            self.full_since = None
            self._committed.set()  # the child's commits need checkpoints too
            return result
        job = self.put_events_job(
            app_id, endpoints, values, merge, max_event_types, max_user_endpoints, staged
        )
        return await self._write(job, flush_first=False)

    def put_events_job(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        values: list[Any],
        merge: EndpointMerge,
        max_event_types: int,
        max_user_endpoints: int,
        summary: Staged | None = None,
    ) -> Job:
        """The writer's part of PutEvents; `values` holds each event's columns in a row,
        and `summary`, if given, what they add to the rollups (encode_summary)."""
        types = set(values[3::_EVENT_COLUMNS])

        def job(conn: sqlite3.Connection) -> IngestResult:
            result = IngestResult()
            for item in endpoints:
                # No savepoint needed: _upsert_endpoint raises these before it writes.
                try:
                    _upsert_endpoint(conn, app_id, item, merge, max_user_endpoints, self._bodies)
                except (UserEndpointLimit, ValueError) as exc:
                    result.endpoint_errors[item.endpoint_id] = str(exc)
            known = self._known_types(conn, app_id)
            for event_type in types - known:
                if not _add_type(conn, app_id, event_type, max_event_types):
                    result.rejected_types.add(event_type)
                    continue
                known.add(event_type)
            rejected = result.rejected_types
            rows = values
            if rejected:
                rows = [
                    value
                    for start in range(0, len(values), _EVENT_COLUMNS)
                    if values[start + 3] not in rejected
                    for value in values[start : start + _EVENT_COLUMNS]
                ]
            # Inserted, and counted, by _flush. The summary holds the rows as sent.
            self._deferred.append((rows, result, None if rejected or summary is None
                                   else (app_id, summary)))  # fmt: skip
            return result

        return job

    def _known_types(self, conn: sqlite3.Connection, app_id: str) -> set[str]:
        known = self._types.get(app_id)
        if known is None:
            rows = conn.execute("SELECT event_type FROM event_types WHERE app_id = ?", (app_id,))
            known = self._types[app_id] = {row[0] for row in rows}
        return known

    async def update_endpoints(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        *,
        merge: EndpointMerge,
        max_user_endpoints: int,
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            for item in endpoints:
                _upsert_endpoint(conn, app_id, item, merge, max_user_endpoints, self._bodies)

        await self._write(job)

    async def get_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None:
        row = (
            self._read()
            .execute(
                "SELECT body FROM endpoints WHERE app_id = ? AND endpoint_id = ?",
                (app_id, endpoint_id),
            )
            .fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None:
        def job(conn: sqlite3.Connection) -> Endpoint | None:
            deleted = _delete_endpoints(conn, app_id, [endpoint_id], self._bodies)
            return deleted[0] if deleted else None

        return await self._write(job)

    async def get_user_endpoints(self, app_id: str, user_id: str) -> list[Endpoint]:
        rows = (
            self._read()
            .execute(
                "SELECT body FROM endpoints INDEXED BY endpoints_user WHERE app_id = ?"
                " AND user_id = ? ORDER BY endpoint_id",
                (app_id, user_id),
            )
            .fetchall()
        )
        return [orjson.loads(row[0]) for row in rows]

    async def delete_user_endpoints(self, app_id: str, user_id: str) -> list[Endpoint]:
        def job(conn: sqlite3.Connection) -> list[Endpoint]:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT endpoint_id FROM endpoints INDEXED BY endpoints_user WHERE app_id = ?"
                    " AND user_id = ?",
                    (app_id, user_id),
                )
            ]
            return _delete_endpoints(conn, app_id, ids, self._bodies)

        return await self._write(job)

    async def get_endpoints(self, app_id: str, endpoint_ids: Sequence[str]) -> dict[str, Endpoint]:
        found: dict[str, Endpoint] = {}
        ids = list(dict.fromkeys(endpoint_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = (
                self._read()
                .execute(
                    "SELECT endpoint_id, body FROM endpoints WHERE app_id = ? AND endpoint_id"
                    f" IN ({', '.join('?' * len(chunk))})",
                    (app_id, *chunk),
                )
                .fetchall()
            )
            found.update((row[0], orjson.loads(row[1])) for row in rows)
        return found

    # -- segments (SQL in segments.py) ---------------------------------------------------

    async def create_segment(
        self, record: SegmentRecord, references: Sequence[SegmentReference]
    ) -> SegmentRecord:
        return await self._write(
            lambda conn: segments.create(conn, record, references), flush_first=False
        )

    async def update_segment(
        self,
        app_id: str,
        segment_id: str,
        request: str,
        modified_at: str,
        references: Sequence[SegmentReference],
    ) -> SegmentRecord | None:
        return await self._write(
            lambda conn: segments.update(
                conn, app_id, segment_id, request, modified_at, references
            ),
            flush_first=False,
        )

    async def get_segment(
        self, app_id: str, segment_id: str, version: int | None = None
    ) -> SegmentRecord | None:
        return segments.get(self._read(), app_id, segment_id, version)

    async def list_segments(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[SegmentRecord]:
        return segments.page(self._read(), app_id, after, limit)

    async def list_segment_versions(
        self, app_id: str, segment_id: str, *, after: int, limit: int
    ) -> list[SegmentRecord]:
        return segments.versions(self._read(), app_id, segment_id, after, limit)

    async def delete_segment(self, app_id: str, segment_id: str) -> SegmentRecord | None:
        return await self._write(
            lambda conn: _delete_segment(conn, app_id, segment_id), flush_first=False
        )

    # -- campaigns (SQL in campaigns.py) --------------------------------------------------

    async def create_campaign(
        self, record: CampaignRecord, segment_version: int | None
    ) -> CampaignRecord:
        return await self._write(
            lambda conn: campaigns.create(conn, record, segment_version), flush_first=False
        )

    async def update_campaign(
        self,
        app_id: str,
        campaign_id: str,
        update: dict[str, Any],
        modified_at: str,
        check: Callable[[dict[str, Any]], None],
    ) -> CampaignRecord | None:
        return await self._write(
            lambda conn: campaigns.update(conn, app_id, campaign_id, update, modified_at, check),
            flush_first=False,
        )

    async def get_campaign(
        self, app_id: str, campaign_id: str, version: int | None = None
    ) -> CampaignRecord | None:
        return campaigns.get(self._read(), app_id, campaign_id, version)

    async def list_campaigns(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[CampaignRecord]:
        return campaigns.page(self._read(), app_id, after, limit)

    async def list_campaign_versions(
        self, app_id: str, campaign_id: str, *, after: int, limit: int
    ) -> list[CampaignRecord]:
        return campaigns.versions(self._read(), app_id, campaign_id, after, limit)

    async def delete_campaign(self, app_id: str, campaign_id: str) -> CampaignRecord | None:
        return await self._write(
            lambda conn: campaigns.delete(conn, app_id, campaign_id), flush_first=False
        )

    async def list_activities(
        self, app_id: str, campaign_id: str, *, after: int, limit: int
    ) -> list[ActivityRecord]:
        return campaigns.activities(self._read(), app_id, campaign_id, after, limit)

    async def campaigns_to_plan(self) -> list[tuple[CampaignRecord, int | None]]:
        return campaigns.to_plan(self._read())

    async def plan_runs(
        self,
        app_id: str,
        campaign_id: str,
        version: int,
        runs_ms: Sequence[int],
        missed_ms: Sequence[int],
        planned_ms: int,
        finished: bool,
        *,
        lead_ms: int = 0,
    ) -> None:
        now = _iso_now()
        await self._write(
            lambda conn: campaigns.plan_runs(
                conn,
                app_id,
                campaign_id,
                version,
                runs_ms,
                missed_ms,
                planned_ms,
                finished,
                now,
                lead_ms=lead_ms,
            ),
            flush_first=False,
        )

    async def claim_activity(
        self, owner: str, now_ms: int, lease_ms: int, *, dead: Callable[[str], bool]
    ) -> ActivityRecord | None:
        now = _iso_now()
        return await self._write(
            lambda conn: campaigns.claim(conn, owner, now_ms, lease_ms, dead, now),
            flush_first=False,
        )

    async def campaign_sends(
        self, app_id: str, campaign_id: str, endpoint_ids: Sequence[str]
    ) -> dict[str, list[PastSend]]:
        return campaigns.sends_of(self._read(), app_id, campaign_id, endpoint_ids)

    async def deferred_sends(
        self, app_id: str, campaign_id: str, activity_id: str, *, now_ms: int, limit: int
    ) -> tuple[list[str], int | None]:
        return campaigns.deferred(self._read(), app_id, campaign_id, activity_id, now_ms, limit)

    async def recent_events(
        self, app_id: str, *, lo_ms: int, hi_ms: int, since_arrival_ms: int
    ) -> list[EventRow]:
        return campaigns.recent_events(self._read(), app_id, lo_ms, hi_ms, since_arrival_ms)

    async def event_activity(
        self, app_id: str, campaign_id: str, version: int, scheduled_ms: int, now: str
    ) -> ActivityRecord:
        return await self._write(
            lambda conn: campaigns.event_activity(
                conn, app_id, campaign_id, version, scheduled_ms, now
            ),
            flush_first=False,
        )

    async def write_campaign_chunk(
        self,
        activity: ActivityRecord,
        owner: str | None,
        sends: Sequence[CampaignSend],
        *,
        cursor: str | None,
        lease_until_ms: int,
        queue_limit: int,
        custom: Callable[[Sequence[CampaignSend]], Sequence[NewDelivery]] | None = None,
    ) -> ChunkWritten:
        # An events writer process folds every writer's rollups entries, PutEvents' with
        # these, FOLD_SECONDS after it staged; left to the writer thread, the fold after
        # each event-triggered pass took in PutEvents' entries of the moment, and their
        # CPU, into the collector's own process.
        beside = self._events is not None and self._events.usable()
        fold_wait = _FOLD_BESIDE_EVENTS_WRITER if beside else rollups_pending.FOLD_SECONDS

        def job(conn: sqlite3.Connection) -> ChunkWritten:
            written, values, fresh = campaigns.write_chunk(
                conn, activity, owner, sends, cursor, lease_until_ms, queue_limit, epoch_ms()
            )
            if fresh and custom is not None:
                # The custom channel's calls are committed with the sends they make.
                outbox_sql.enqueue(conn, custom(fresh), time.time())
            if values:
                # The collector's own event types are not held to the per-app limit.
                for event_type in set(values[3::_EVENT_COLUMNS]):
                    _add_type(conn, activity.app_id, event_type, 1 << 30)
                    self._types.setdefault(activity.app_id, set()).add(event_type)
                _insert_events(conn, values, self._rows_per_insert, powers=True)
                if self.rollups:  # analytics hook: event ids are new, so every row is
                    rollups_pending.stage_summaries(
                        conn, rollups.summarize(rollups.iter_rows(values, _EVENT_COLUMNS))
                    )
                    self._staged(fold_wait)
            return written

        return await self._write(job)

    async def finish_activity(
        self,
        activity: ActivityRecord,
        owner: str,
        *,
        not_before_ms: int | None,
        now: str,
        result: str = "SUCCESS",
    ) -> None:
        await self._write(
            lambda conn: campaigns.finish(conn, activity, owner, not_before_ms, now, result),
            flush_first=False,
        )

    async def endpoints_after(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[tuple[str, Endpoint]]:
        return segments.endpoints_after(self._read(), app_id, after, limit)

    async def get_app_settings(self, app_id: str) -> tuple[str, str] | None:
        return segments.get_settings(self._read(), app_id)

    async def update_app_settings(
        self, app_id: str, update: dict[str, Any], modified_at: str
    ) -> str:
        return await self._write(
            lambda conn: segments.update_settings(conn, app_id, update, modified_at),
            flush_first=False,
        )

    # -- import jobs (SQL in imports.py) -------------------------------------------------

    async def create_import_job(self, record: ImportJobRecord) -> None:
        await self._write(lambda conn: imports.create(conn, record), flush_first=False)

    async def save_import_job(self, record: ImportJobRecord) -> None:
        await self._write(lambda conn: imports.save(conn, record), flush_first=False)

    async def get_import_job(self, app_id: str, job_id: str) -> ImportJobRecord | None:
        return imports.get(self._read(), app_id, job_id)

    async def list_import_jobs(
        self, app_id: str, *, segment_id: str | None, after: str | None, limit: int
    ) -> list[ImportJobRecord]:
        return imports.page(self._read(), app_id, segment_id, after, limit)

    async def unfinished_import_jobs(self) -> list[ImportJobRecord]:
        return imports.unfinished(self._read())

    async def import_endpoints(
        self,
        app_id: str,
        job_id: str,
        rows: Sequence[ImportRow],
        *,
        merge: EndpointMerge,
        max_user_endpoints: int,
        register: bool,
        members: bool,
    ) -> list[tuple[ImportRow, str]]:
        def upsert(conn: sqlite3.Connection, item: EndpointUpdate) -> None:
            _upsert_endpoint(conn, app_id, item, merge, max_user_endpoints, self._bodies)

        return await self._write(
            lambda conn: imports.import_rows(
                conn, app_id, job_id, rows, upsert if register else None, members=members
            )
        )

    async def import_member_counts(self, app_id: str, job_id: str) -> dict[str, int]:
        return imports.member_counts(self._read(), app_id, job_id)

    async def import_members_after(
        self, app_id: str, job_id: str, *, after: str | None, limit: int
    ) -> list[str]:
        return imports.members_after(self._read(), app_id, job_id, after, limit)

    async def finish_import_job(
        self, record: ImportJobRecord, segment: SegmentRecord | None
    ) -> None:
        await self._write(lambda conn: imports.finish(conn, record, segment), flush_first=False)

    # -- quotas ---------------------------------------------------------------------------

    async def get_app_quotas(self, app_id: str) -> dict[str, int]:
        row = (
            self._read()
            .execute("SELECT quotas FROM app_quotas WHERE app_id = ?", (app_id,))
            .fetchone()
        )
        return orjson.loads(row[0]) if row else {}

    async def update_app_quotas(
        self, app_id: str, update: dict[str, int | None], modified_at: str
    ) -> dict[str, int]:
        def job(conn: sqlite3.Connection) -> dict[str, int]:
            row = conn.execute(
                "SELECT quotas FROM app_quotas WHERE app_id = ?", (app_id,)
            ).fetchone()
            quotas = {**(orjson.loads(row[0]) if row else {}), **update}
            quotas = {name: value for name, value in quotas.items() if value is not None}
            conn.execute(
                "INSERT INTO app_quotas (app_id, quotas, modified_at) VALUES (?, ?, ?)"
                " ON CONFLICT (app_id) DO UPDATE SET quotas = excluded.quotas,"
                " modified_at = excluded.modified_at",
                (app_id, orjson.dumps(quotas).decode(), modified_at),
            )
            return quotas

        return await self._write(job, flush_first=False)

    # -- history: export, retention, leases (SQL in history.py) --------------------------

    async def events_page(
        self,
        app_id: str,
        lo_ms: int,
        hi_ms: int,
        *,
        after: tuple[int, str, str, str, int] | None,
        limit: int,
    ) -> list[history.StoredEvent]:
        return await self.read_in_thread(
            lambda conn: history.events_page(conn, app_id, lo_ms, hi_ms, after, limit)
        )

    async def get_retention(self, app_id: str) -> int | None:
        return history.get_retention(self._read(), app_id)

    async def update_retention(
        self, app_id: str, events_days: int | None, modified_at: str
    ) -> int | None:
        return await self._write(
            lambda conn: history.set_retention(conn, app_id, events_days, modified_at),
            flush_first=False,
        )

    async def retention_policies(self) -> list[tuple[str, int]]:
        return history.policies(self._read())

    async def delete_expired_events(self, app_id: str, before_hour: int, limit: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            deleted, opened = history.delete_expired(conn, app_id, before_hour, limit)
            if opened:  # analytics hook: the opens it takes out of the rollups are in
                rollups_pending.settle(conn)
                opens.deleted(conn, opened)
            # An old event that arrived last (an import of history) holds the largest
            # rowid: the event streams' cursors must not stay past it.
            outbox_sql.events_deleted(conn)
            hook_cursors.events_deleted(conn)
            if deleted:
                columnar.expired(conn, app_id, before_hour)
            return deleted

        return await self._write(job)

    async def seal_events(self, work: Callable[[sqlite3.Connection], Sealed | None]) -> bool:
        if self.columnar is None:
            return False
        if self._sealing is not None:  # a process of its own, a read snapshot
            sealed = await self._sealing.run(work)
        else:
            sealed = await self.read_in_thread(work)  # a thread of its own, a read snapshot
        if sealed is None:
            return False
        try:
            done = await self._write(lambda conn: columnar.commit(conn, sealed), flush_first=False)
        except BaseException:
            sealed.discard()
            raise
        if not done:
            sealed.discard()
        return done

    async def take_lease(self, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        return await self._write(
            lambda conn: history.take_lease(conn, name, owner, now_ms, ttl_ms), flush_first=False
        )

    # -- device credentials (SQL in device.py) -------------------------------------------

    async def device_credentials(self, app_id: str, endpoint_ids: Sequence[str]) -> dict[str, str]:
        return device.read(self._read(), app_id, endpoint_ids)

    async def set_device_credential(
        self, app_id: str, endpoint_id: str, secret_sha256: str, created_at: str, *, replace: bool
    ) -> bool:
        return await self._write(
            lambda conn: device.store(
                conn, app_id, endpoint_id, secret_sha256, created_at, replace=replace
            )
        )

    async def delete_device_credential(self, app_id: str, endpoint_id: str) -> bool:
        return await self._write(lambda conn: device.delete(conn, app_id, endpoint_id))

    # -- push store-and-forward (SQL in push.py) -----------------------------------------

    async def queue_push(
        self, app_id: str, messages: Sequence[PushMessage], *, queue_limit: int
    ) -> PushQueued:
        def job(conn: sqlite3.Connection) -> PushQueued:
            # Stamped in the transaction, so that other processes polling for new rows by
            # time (push_changes) see them in about the order they commit.
            now_ms = epoch_ms()
            return push.queue(conn, app_id, messages, queue_limit, now_ms)

        return await self._write(job, flush_first=False)

    async def pending_push(
        self, app_id: str, endpoint_id: str, *, after_seq: int, now_ms: int
    ) -> list[QueuedPush]:
        return push.pending(self._read(), app_id, endpoint_id, after_seq, now_ms)

    async def ack_push(
        self, app_id: str, endpoint_id: str, message_ids: Sequence[str], *, now_ms: int
    ) -> int:
        return await self._write(
            lambda conn: push.ack(conn, app_id, endpoint_id, message_ids, now_ms),
            flush_first=False,
        )

    async def ack_push_through(
        self, app_id: str, endpoint_id: str, seq: int, *, now_ms: int
    ) -> int:
        return await self._write(
            lambda conn: push.ack_through(conn, app_id, endpoint_id, seq, now_ms),
            flush_first=False,
        )

    async def purge_push(self, now_ms: int) -> int:
        return await self._write(lambda conn: push.purge(conn, now_ms), flush_first=False)

    async def push_wait(self, timeout: float) -> None:
        await asyncio.sleep(timeout)  # no process tells another of its commits

    async def push_changes(self, since_ms: int) -> list[tuple[str, str, int]] | None:
        conn = self._read()
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if version == self._push_version:
            return None
        self._push_version = version
        return push.recent(conn, since_ms)

    # -- hooks (SQL in outbox.py) ----------------------------------------------------------

    async def hook_secrets(
        self, app_id: str, *, create: str | None = None, now: str = ""
    ) -> HookSecrets | None:
        found = outbox_sql.secrets(self._read(), app_id)
        if found is not None or create is None:
            return found
        return await self._write(
            lambda conn: outbox_sql.ensure_secrets(conn, app_id, create, now), flush_first=False
        )

    async def rotate_hook_secrets(self, app_id: str, new: str, now: str) -> HookSecrets:
        return await self._write(
            lambda conn: outbox_sql.rotate_secrets(conn, app_id, new, now), flush_first=False
        )

    async def end_hook_rotation(self, app_id: str) -> HookSecrets | None:
        return await self._write(
            lambda conn: outbox_sql.end_rotation(conn, app_id), flush_first=False
        )

    async def enqueue_deliveries(self, deliveries: Sequence[NewDelivery], now: float) -> None:
        await self._write(lambda conn: outbox_sql.enqueue(conn, deliveries, now), flush_first=False)

    async def deliveries_due(self, now: float, *, hooks: bool | None = None) -> bool:
        """`hooks`: only deliveries to in-process hooks (True), or none of them (False)."""
        return outbox_sql.due(self._read(), now, hooks)

    async def claim_deliveries(
        self,
        owner: str,
        now: float,
        lease_until: float,
        *,
        limit: int,
        per_destination: int,
        busy: Sequence[str],
        held: Sequence[int] = (),
        hooks: bool | None = None,
    ) -> list[Delivery]:
        return await self._write(
            lambda conn: outbox_sql.claim(
                conn, owner, now, lease_until, limit=limit, per_destination=per_destination,
                busy=busy, held=held, hooks=hooks,
            ),
            flush_first=False,
        )  # fmt: skip

    async def settle_delivery(
        self,
        delivery: Delivery,
        owner: str,
        state: str,
        *,
        now: float,
        next_attempt_at: float = 0.0,
        error: str = "",
    ) -> bool:
        seq = delivery.seq
        first = delivery.first_attempt_at if delivery.first_attempt_at is not None else now

        def job(conn: sqlite3.Connection) -> bool:
            if state == "delivered":
                return outbox_sql.delivered(conn, seq, owner, now, first)
            if state == "retry":
                return outbox_sql.retry(conn, seq, owner, first, next_attempt_at, error)
            if state == "dead":
                return outbox_sql.dead(conn, seq, owner, first, now, error)
            if state == "disable":
                return outbox_sql.disable(conn, seq, owner, first, now, error)
            raise ValueError(f"state: must be delivered, retry, dead or disable, not {state!r}")

        return await self._write(job, flush_first=False)

    async def lease_owners(self, now: float) -> list[str]:
        return outbox_sql.lease_owners(self._read(), now)

    async def release_leases(self, owners: Sequence[str]) -> int:
        return await self._write(lambda conn: outbox_sql.release(conn, owners), flush_first=False)

    async def dead_letters(self, app_id: str, *, after: int, limit: int) -> list[DeadLetter]:
        return outbox_sql.dead_letters(self._read(), app_id, after, limit)

    async def replay_dead_letters(self, app_id: str, ids: Sequence[str] | None, now: float) -> int:
        return await self._write(
            lambda conn: outbox_sql.replay(conn, app_id, ids, now), flush_first=False
        )

    async def purge_deliveries(self, before: float) -> int:
        return await self._write(
            lambda conn: outbox_sql.purge_delivered(conn, before), flush_first=False
        )

    async def hook_gauges(self) -> dict[str, Any]:
        return outbox_sql.gauges(self._read())

    async def pending_deliveries(self, app_id: str, destination: str) -> int:
        return outbox_sql.pending_count(self._read(), app_id, destination)

    async def destination_disabled(self, app_id: str, destination: str) -> bool:
        return outbox_sql.disabled(self._read(), app_id, destination)

    async def get_event_stream(self, app_id: str) -> EventStreamRecord | None:
        return outbox_sql.get_stream(self._read(), app_id)

    async def list_event_streams(self) -> list[EventStreamRecord]:
        return outbox_sql.list_streams(self._read())

    async def put_event_stream(
        self, app_id: str, destination: str, role_arn: str, modified: str, by: str
    ) -> EventStreamRecord:
        # flush_first: the cursor starts after the events committed before it.
        return await self._write(
            lambda conn: outbox_sql.put_stream(conn, app_id, destination, role_arn, modified, by)
        )

    async def delete_event_stream(self, app_id: str) -> EventStreamRecord | None:
        return await self._write(
            lambda conn: outbox_sql.delete_stream(conn, app_id), flush_first=False
        )

    async def read_event_stream(
        self,
        app_id: str,
        after: int,
        limit: int,
        build: Callable[[Sequence[StreamValues], dict[str, bytes]], T],
    ) -> tuple[T, int]:
        def read(conn: sqlite3.Connection) -> tuple[T, int]:
            rows, to = outbox_sql.stream_rows(conn, app_id, after, limit)
            bodies = outbox_sql.endpoint_bodies(conn, app_id, [row[1] for row in rows])
            return build(rows, bodies), to

        return await self.read_in_thread(read)

    async def advance_event_stream(
        self,
        app_id: str,
        after: int,
        to: int,
        deliveries: Sequence[NewDelivery],
        now: float,
    ) -> bool:
        return await self._write(
            lambda conn: outbox_sql.advance_stream(conn, app_id, after, to, deliveries, now),
            flush_first=False,
        )

    async def advance_event_stream_leased(
        self,
        app_id: str,
        after: int,
        to: int,
        delivery: NewDelivery,
        now: float,
        owner: str,
        lease_until: float,
    ) -> Delivery | bool:
        """advance_event_stream with one delivery, leased to `owner` if it is due to be
        made now (see outbox_sql.advance_stream_leased)."""
        return await self._write(
            lambda conn: outbox_sql.advance_stream_leased(
                conn, app_id, after, to, delivery, now, owner, lease_until
            ),
            flush_first=False,
        )

    async def open_hook_cursors(self, names: Sequence[str]) -> dict[str, int]:
        # flush_first: a new cursor starts after the events committed before it.
        return await self._write(lambda conn: hook_cursors.ensure(conn, names))

    async def read_hook_stream(
        self,
        name: str,
        limit: int,
        build: Callable[[list[HookRow], dict[tuple[str, str], bytes]], T],
    ) -> tuple[T, int, int]:
        def read(conn: sqlite3.Connection) -> tuple[T, int, int]:
            after = hook_cursors.get(conn, name)
            rows = hook_cursors.rows(conn, after, limit)
            bodies = hook_cursors.endpoint_bodies(conn, [(r.app_id, r.endpoint_id) for r in rows])
            return build(rows, bodies), after, rows[-1].rowid if rows else after

        return await self.read_in_thread(read)

    async def advance_hook_cursor(self, name: str, after: int, to: int) -> bool:
        return await self._write(
            lambda conn: hook_cursors.advance(conn, name, after, to), flush_first=False
        )

    async def hook_lag(self, names: Sequence[str]) -> dict[str, int]:
        return hook_cursors.lag(self._read(), names)


_KEY_COLUMNS = "access_key_id, app_id, role, secret, token_sha256, created_at, revoked_at"


def check_can_open(path: Path) -> None:
    """Open the database file once and read its header, creating its folder, so that a
    path that cannot hold a database, or a file that is not one, fails here with OSError
    or StorageError before any other work starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(str(exc)) from None


def is_disk_full(exc: BaseException) -> bool:
    """Whether SQLite failed because the database, or its WAL, could not grow."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if not isinstance(exc, sqlite3.Error):
        return False
    code: int | None = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 and later
    if code is not None:
        return code & 0xFF == _SQLITE_FULL
    return "database or disk is full" in str(exc)


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _delete_segment(conn: sqlite3.Connection, app_id: str, segment_id: str) -> SegmentRecord | None:
    # As in Pinpoint, a campaign whose segment is deleted is deleted (its state DELETED).
    campaigns.delete_for_segment(conn, app_id, segment_id)
    imports.delete_segment(conn, app_id, segment_id)
    return segments.delete(conn, app_id, segment_id)


def _settle(items: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, value, ok in items:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _app(row: tuple[Any, ...]) -> AppRecord:
    return AppRecord(id=row[0], name=row[1], created_at=row[2], tags=orjson.loads(row[3]))


class _EndpointBodies:
    """Endpoint bodies as the writer last read or wrote them, so that an endpoint that
    sends batch after batch is not read back for each one. Only as good as the
    invalidation around it: see SQLiteStorage._revalidate and _forget."""

    def __init__(self, limit: int) -> None:
        self._bodies: dict[tuple[str, str], str] = {}
        self._limit = limit

    def get(self, app_id: str, endpoint_id: str) -> str | None:
        return self._bodies.get((app_id, endpoint_id))

    def put(self, app_id: str, endpoint_id: str, body: str) -> None:
        if len(self._bodies) >= self._limit:
            self._bodies.clear()  # cheaper than keeping order for an LRU; refills as it goes
        self._bodies[(app_id, endpoint_id)] = body

    def drop(self, app_id: str, endpoint_id: str) -> None:
        self._bodies.pop((app_id, endpoint_id), None)

    def drop_app(self, app_id: str) -> None:
        self._bodies = {key: body for key, body in self._bodies.items() if key[0] != app_id}

    def clear(self) -> None:
        self._bodies.clear()


def _upsert_endpoint(
    conn: sqlite3.Connection,
    app_id: str,
    item: EndpointUpdate,
    merge: EndpointMerge,
    max_user_endpoints: int,
    bodies: _EndpointBodies,
) -> None:
    body = bodies.get(app_id, item.endpoint_id)
    if body is None:
        row = conn.execute(
            "SELECT body FROM endpoints WHERE app_id = ? AND endpoint_id = ?",
            (app_id, item.endpoint_id),
        ).fetchone()
        if row is not None:
            body = row[0]
            bodies.put(app_id, item.endpoint_id, body)
    existing = orjson.loads(body) if body is not None else None
    merged = merge(item.endpoint_id, existing, item.update)
    if merged is existing:
        return  # nothing changed
    user_id, old_user_id = user_ids(existing, merged)
    if user_id is not None and user_id != old_user_id:
        (count,) = conn.execute(
            "SELECT count(*) FROM endpoints INDEXED BY endpoints_user WHERE app_id = ?"
            " AND user_id = ?",
            (app_id, user_id),
        ).fetchone()
        if count >= max_user_endpoints:
            raise UserEndpointLimit(user_id, count, max_user_endpoints)
    if old_user_id is not None and user_id != old_user_id:
        rollups.user_changed(conn, app_id, item.endpoint_id, old_user_id)  # analytics hook
    body = orjson.dumps(merged).decode()
    conn.execute(
        "INSERT INTO endpoints (app_id, endpoint_id, user_id, body) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, endpoint_id) DO UPDATE SET user_id = excluded.user_id,"
        " body = excluded.body",
        (app_id, item.endpoint_id, user_id, body),
    )
    endpoint_values.changed(conn, app_id, item.endpoint_id, existing, merged)
    bodies.put(app_id, item.endpoint_id, body)


def _delete_endpoints(
    conn: sqlite3.Connection, app_id: str, ids: list[str], bodies: _EndpointBodies
) -> list[Endpoint]:
    deleted = []
    if ids:  # analytics hook: the rollups it takes events out of hold every one
        rollups_pending.settle(conn)
    for endpoint_id in ids:
        bodies.drop(app_id, endpoint_id)
        device.delete(conn, app_id, endpoint_id)  # even one claimed before its endpoint
        row = conn.execute(
            "DELETE FROM endpoints WHERE app_id = ? AND endpoint_id = ? RETURNING body",
            (app_id, endpoint_id),
        ).fetchone()
        if row is None:
            continue
        endpoint = orjson.loads(row[0])
        endpoint_values.changed(conn, app_id, endpoint_id, endpoint, None)
        rollups.remove_endpoint(  # analytics hook, before the events go
            conn, app_id, endpoint_id, (endpoint.get("User") or {}).get("UserId")
        )
        hours = events_sql.delete_endpoint(conn, app_id, endpoint_id)
        outbox_sql.events_deleted(conn)
        hook_cursors.events_deleted(conn)
        columnar.events_deleted(conn, app_id, {columnar.day_of_hour(hour) for hour in hours})
        push.delete_endpoint(conn, app_id, endpoint_id)
        deleted.append(endpoint)
    return deleted


_EVENT_COLUMNS = events_sql.WIDTH
_MAX_CACHED_ENDPOINTS = 50_000  # endpoint bodies, about 1 KB each


def checkpoint(conn: sqlite3.Connection, lock: int | None) -> bool:
    """Copy the WAL into the database file (PASSIVE). If it holds CATCH_UP_BYTES or more,
    copy what writers committed meanwhile, then the rest with them held at `lock` (the
    file lock that orders writers; None: never). Returns whether it held them.

    A commit starts the WAL again from its beginning only when a checkpoint has copied
    all of it. A PASSIVE checkpoint copies what was committed when it began; under steady
    ingestion writers commit every few milliseconds while it runs, so it never finds the
    WAL all copied, and the file grows with every page written until ingestion pauses:
    measured, 416 MB for 130,000 events in 10 s. Here, once the WAL is large, checkpoints
    copy what was committed during the one before, up to CATCH_UP_PASSES times while that
    is CATCH_UP_REST or more, and a last one the rest with writers waiting on the file
    lock (not in SQLite's busy handler, which sleeps): its copying, and the syncs of the
    WAL and of the database file that a checkpoint makes (synchronous=NORMAL), are what
    a commit may wait. A reader that still reads an older snapshot keeps any checkpoint
    from copying past it, and the WAL from starting over."""
    _, log, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    # `log` counts frames as of the snapshot it copied; writers may have
    # committed more since.
    if lock is None or fcntl is None or log < 0:
        return False
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    if log * page_size < _CATCH_UP_BYTES:
        return False
    for _ in range(_CATCH_UP_PASSES):
        _, later, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if later < log:  # started over meanwhile (or not WAL any more)
            return False
        if (later - log) * page_size < _CATCH_UP_REST:
            break
        log = later
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
    return True


def _rows_per_insert(conn: sqlite3.Connection) -> int:
    if hasattr(conn, "getlimit"):  # Python 3.11
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    else:
        limit = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
    return max(1, min(1024, limit // _EVENT_COLUMNS))


class _SomeStoredBefore(Exception):
    """A batch of events held some stored before; see SQLiteStorage._flush."""


def _insert_events(
    conn: sqlite3.Connection,
    values: list[Any],
    max_rows: int,
    *,
    returning: bool = False,
    powers: bool = False,
) -> set[tuple[Any, ...]]:
    """Insert rows given as one flat list of values; with `returning`, return the keys
    (app, endpoint, event id, type, Timestamp) of the rows stored.

    Many rows go in one statement: one statement per row (executemany) made the writer
    thread wait for the GIL after every row. Up to 128 rows, a statement fits the batch
    exactly (a PutEvents batch is at most 100 events); above, statements of 256, 512 and
    1024 rows keep the number of distinct cached statements small. With `powers`, every
    statement is of a power of two rows (100: 64, 32 and 4), for callers whose numbers of
    rows vary (a campaign's `_campaign.send` events), so that none is prepared each time.
    """
    start, total = 0, len(values) // _EVENT_COLUMNS
    stored: set[tuple[Any, ...]] = set()
    while start < total:
        rows = min(total - start, max_rows)
        if rows > 128 or powers:
            rows = 1 << (rows.bit_length() - 1)
        end = start + rows
        cursor = conn.execute(
            events_sql.insert_sql(rows, returning=returning),
            values[start * _EVENT_COLUMNS : end * _EVENT_COLUMNS],
        )
        if returning:
            stored.update(cursor.fetchall())
        start = end
    return stored


def _add_type(conn: sqlite3.Connection, app_id: str, event_type: str, limit: int) -> bool:
    """Register a new event type unless the app is at its limit. Another process may have
    added it already, so the database, not the cache, decides."""
    if conn.execute(
        "SELECT 1 FROM event_types WHERE app_id = ? AND event_type = ?", (app_id, event_type)
    ).fetchone():
        return True
    (count,) = conn.execute(
        "SELECT count(*) FROM event_types WHERE app_id = ?", (app_id,)
    ).fetchone()
    if count >= limit:
        return False
    conn.execute(
        "INSERT INTO event_types (app_id, event_type, created_at) VALUES (?, ?, ?)",
        (app_id, event_type, datetime.now(timezone.utc).isoformat()),
    )
    return True
