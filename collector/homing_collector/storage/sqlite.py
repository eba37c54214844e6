"""SQLite storage: one file, WAL mode, one writer thread with group commit.

Every write is a job for the writer thread. The thread takes all the jobs waiting, runs
each inside its own savepoint of one transaction, commits once, and only then wakes the
coroutines that wait on them. Many concurrent requests share one commit, and a request is
answered only after its rows are on disk. Reads use a second connection and never wait
for the writer (WAL).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import orjson

from homing_collector.storage.base import (
    AppRecord,
    Endpoint,
    EndpointMerge,
    EndpointUpdate,
    EventRow,
    IngestResult,
    KeyRecord,
    Overloaded,
    UserEndpointLimit,
)
from homing_collector.storage.migrations import migrate

logger = logging.getLogger("homing_collector")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

_STOP = object()
_MAX_JOBS_PER_COMMIT = 512
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteStorage:
    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL", max_pending: int = 4096
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.max_pending = max_pending
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._types: dict[str, set[str]] = {}  # event types known per app; writer thread only
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = threading.Thread(target=self._run, name="homing-sqlite-writer", daemon=True)
        self._writer.start()
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self._startup_error is not None:
            raise self._startup_error
        self._reader = self._connect()

    async def close(self) -> None:
        """Finish every queued write, then close. Nothing queued is dropped."""
        if self._writer is not None:
            self._jobs.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -65536")
        return conn

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = self._connect()
            migrate(conn)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        while not stopping:
            batch = [self._jobs.get()]
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
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        outcomes: list[tuple[Any, bool]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _future, _loop in batch:
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((fn(conn), True))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self._types.clear()
                    outcomes.append((exc, False))
            conn.execute("COMMIT")
        except Exception as exc:
            logger.exception(
                "SQLite commit failed; %d writes are answered with an error", len(batch)
            )
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._types.clear()
            outcomes = [(exc, False)] * len(batch)
        with self._pending_lock:
            self._pending -= len(batch)
        for (_fn, future, loop), (value, ok) in zip(batch, outcomes, strict=True):
            loop.call_soon_threadsafe(_settle, future, value, ok)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._pending_lock:
            if self._pending >= self.max_pending:
                raise Overloaded(f"{self._pending} writes are waiting")
            self._pending += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        # The write goes on even if the request is cancelled; only the answer is lost.
        return await asyncio.shield(future)

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
            for table in ("events", "endpoints", "event_types", "keys"):
                conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))
            conn.execute("DELETE FROM apps WHERE id = ?", (app_id,))
            self._types.pop(app_id, None)
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
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE app_id = ? ORDER BY created_at",
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
    ) -> IngestResult:
        def job(conn: sqlite3.Connection) -> IngestResult:
            result = IngestResult()
            for item in endpoints:
                conn.execute("SAVEPOINT endpoint")
                try:
                    _upsert_endpoint(conn, app_id, item, merge, max_user_endpoints)
                    conn.execute("RELEASE endpoint")
                except (UserEndpointLimit, ValueError) as exc:
                    conn.execute("ROLLBACK TO endpoint")
                    conn.execute("RELEASE endpoint")
                    result.endpoint_errors[item.endpoint_id] = str(exc)
            known = self._known_types(conn, app_id)
            for event_type in {event.event_type for event in events} - known:
                if not _add_type(conn, app_id, event_type, max_event_types):
                    result.rejected_types.add(event_type)
                    continue
                known.add(event_type)
            rows = [
                (app_id, e.endpoint_id, e.event_id, e.event_type, e.timestamp_ms, e.arrival_ms,
                 e.session_id, e.body)
                for e in events
                if e.event_type not in result.rejected_types
            ]  # fmt: skip
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events (app_id, endpoint_id, event_id, event_type, ts,"
                " arrival, session_id, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            result.stored = conn.total_changes - before
            return result

        return await self._write(job)

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
                _upsert_endpoint(conn, app_id, item, merge, max_user_endpoints)

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
            deleted = _delete_endpoints(conn, app_id, [endpoint_id])
            return deleted[0] if deleted else None

        return await self._write(job)

    async def get_user_endpoints(self, app_id: str, user_id: str) -> list[Endpoint]:
        rows = (
            self._read()
            .execute(
                "SELECT body FROM endpoints WHERE app_id = ? AND user_id = ? ORDER BY endpoint_id",
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
                    "SELECT endpoint_id FROM endpoints WHERE app_id = ? AND user_id = ?",
                    (app_id, user_id),
                )
            ]
            return _delete_endpoints(conn, app_id, ids)

        return await self._write(job)


_KEY_COLUMNS = "access_key_id, app_id, role, secret, token_sha256, created_at, revoked_at"


def _settle(future: asyncio.Future[Any], value: Any, ok: bool) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _app(row: tuple[Any, ...]) -> AppRecord:
    return AppRecord(id=row[0], name=row[1], created_at=row[2], tags=orjson.loads(row[3]))


def _upsert_endpoint(
    conn: sqlite3.Connection,
    app_id: str,
    item: EndpointUpdate,
    merge: EndpointMerge,
    max_user_endpoints: int,
) -> None:
    row = conn.execute(
        "SELECT body FROM endpoints WHERE app_id = ? AND endpoint_id = ?",
        (app_id, item.endpoint_id),
    ).fetchone()
    existing = orjson.loads(row[0]) if row else None
    merged = merge(item.endpoint_id, existing, item.update)
    if merged is existing:
        return  # nothing changed
    user_id = (merged.get("User") or {}).get("UserId")
    old_user_id = ((existing or {}).get("User") or {}).get("UserId")
    if user_id is not None and user_id != old_user_id:
        (count,) = conn.execute(
            "SELECT count(*) FROM endpoints WHERE app_id = ? AND user_id = ?", (app_id, user_id)
        ).fetchone()
        if count >= max_user_endpoints:
            raise UserEndpointLimit(
                f"User.UserId: user {user_id!r} already has {count} endpoints; "
                f"the limit is {max_user_endpoints} per user"
            )
    conn.execute(
        "INSERT INTO endpoints (app_id, endpoint_id, user_id, body) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, endpoint_id) DO UPDATE SET user_id = excluded.user_id,"
        " body = excluded.body",
        (app_id, item.endpoint_id, user_id, orjson.dumps(merged).decode()),
    )


def _delete_endpoints(conn: sqlite3.Connection, app_id: str, ids: list[str]) -> list[Endpoint]:
    deleted = []
    for endpoint_id in ids:
        row = conn.execute(
            "DELETE FROM endpoints WHERE app_id = ? AND endpoint_id = ? RETURNING body",
            (app_id, endpoint_id),
        ).fetchone()
        if row is None:
            continue
        conn.execute(
            "DELETE FROM events WHERE app_id = ? AND endpoint_id = ?", (app_id, endpoint_id)
        )
        deleted.append(orjson.loads(row[0]))
    return deleted


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
