"""PostgreSQL storage: many collectors on one database.

Each write is one transaction on a pooled connection (psycopg 3, psycopg-pool), committed
before its coroutine returns, with `synchronous_commit` on: what a route acknowledges is
on the server's disk. A write, once started, goes on even if its request is cancelled,
as SQLite's writer thread does; only the answer is lost.

Other collectors write to the same rows at the same time, so nothing is cached and every
read-modify-write locks what it reads: endpoints with SELECT ... FOR UPDATE (in id order,
so that two batches cannot deadlock on them), and the per-application limits (event
types, endpoints per user) with a transaction-level advisory lock on the application or
user, taken only when a new type or a new link may cross the limit. Every transaction
takes its locks in one order: endpoints, then users (by id), then the application's
types. Should PostgreSQL still break a deadlock or a serialization conflict, the
transaction runs again whole.

PutEvents batches that wait in one process are written together: the first caller's task
takes every batch waiting (up to _GROUP_BATCHES), writes them in order in one transaction,
their rollups appended together at its end, and answers each once it is committed; a lone
batch is written at once. Should the group fail, each of its batches is written again
alone, so that one batch's error is its own. The device credentials the batches check
(base.DeviceCheck), the users they may link and the event types they bring are read or
locked in one statement for the group each, not in statements of each request's own;
the endpoints it merges are written together, in one statement, and its events are
inserted in one, a plain INSERT under a savepoint (again with ON CONFLICT DO NOTHING if
one of them was stored before).

Work that one collector of several must do alone (a campaign's run, a webhook delivery)
is leased on its row, the rows read FOR UPDATE SKIP LOCKED: collectors claiming at once
take different rows, and one whose lease ran out (it hung, or was killed) is taken over.

The transaction that writes endpoints appends what they add to the demographic
counters to a pending table, and the transaction that stores events appends what they
add to the analytics rollups to another; one collector at a time folds both into the
counters and rollups, before every analytics read and deletion too
(storage/analytics_pg/pending.py), the rollups by
analytics/rollups.py's arithmetic over storage/analytics_pg/'s statements (it runs in a
thread there, its statements sent back to the transaction's connection). Analytics
queries run in a thread on a connection of a small synchronous pool, in one
repeatable-read transaction each. Filters, breakdowns and funnels read the stored
events, or a columnar copy of them that each collector keeps for itself
(storage/pg_columnar.py, pg_sealer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout, TooManyRequests

from homing_collector.analytics import rollups as rollups_math
from homing_collector.analytics.opens import OPENED
from homing_collector.lifetime import wait_set
from homing_collector.push import epoch_ms
from homing_collector.storage import analytics_pg, endpoint_values, pg_streams
from homing_collector.storage import campaigns as campaigns_sql
from homing_collector.storage import imports as imports_sql
from homing_collector.storage import segments as segments_sql
from homing_collector.storage.analytics_pg import endpoint_values as values_pg
from homing_collector.storage.analytics_pg import opens as opens_pg
from homing_collector.storage.analytics_pg import pending
from homing_collector.storage.analytics_pg import rollups as rollups_pg
from homing_collector.storage.base import (
    ActivityRecord,
    ApplicationGone,
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
    SegmentReferenceError,
    StorageUnavailable,
    StreamRow,
    StreamValues,
    UserEndpointLimit,
    user_ids,
)
from homing_collector.storage.columnar import HOURS_PER_DAY
from homing_collector.storage.events import HOUR_MS
from homing_collector.storage.history import StoredEvent
from homing_collector.storage.pg_columnar import APP_DAY
from homing_collector.storage.pg_schema import migrate
from homing_collector.storage.segment_references import reference_checks

if TYPE_CHECKING:
    from pathlib import Path

    from homing_collector.analytics.rollups import Summary

T = TypeVar("T")
Connection = psycopg.AsyncConnection[Any]
logger = logging.getLogger("homing_collector")

PUSH_CHANNEL = "homing_push"  # NOTIFY'd by each transaction that queues pushes
_RELISTEN_SECONDS = 1.0  # between attempts to listen again after the connection was lost

_ATTEMPTS = 5  # runs of a transaction that PostgreSQL aborted to break a deadlock
# put_events() batches of one process written together: at most this many in one
# transaction, and this many such transactions at once. bench/collector_ingest.py
# --postgres --statements: with 1 rather than 2, groups of 4 batches rather than 2, the
# rollup upserts waiting less on one another's locks (an_cover 0.5 ms a call, not 4),
# 62 us of CPU per event rather than 73.
_GROUP_BATCHES = 16
_GROUP_EVENTS = 2_000  # events; pg_streams.MAX_RANK is the hard limit
_GROUP_WRITERS = 1
_KEY_COLUMNS = "access_key_id, app_id, role, secret, token_sha256, created_at, revoked_at"
_EVENT_KEY = "hour, endpoint_id, event_id, event_type, ts"


class PostgresStorage:
    name = "PostgreSQL"
    analytics = True
    columnar: Path | None = None
    full_since: float | None = None  # PostgreSQL's own full disk is its operator's alarm

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 10,
        max_pending: int = 4096,
        listen: bool = True,
        rollups: bool = True,
        max_readers: int = 4,
        columnar: Path | None = None,
    ) -> None:
        self.url = url
        # This collector's columnar copy of events (storage/pg_columnar.py), if it keeps one.
        self.columnar = columnar
        self.rollups = rollups  # analytics rollups kept at ingest (HOMING_ROLLUPS)
        self.max_readers = max_readers  # analytics queries at once, each a connection
        self._readers: ConnectionPool[psycopg.Connection[Any]] | None = None
        self.max_connections = max_connections
        self.max_pending = max_pending  # requests waiting for a connection, then 429
        # LISTEN for queued pushes on a connection of its own; False reads the recent
        # pushes at every push_changes() instead, for a pooler that hands each
        # transaction another server connection (PgBouncer in transaction mode).
        self.listen = listen
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._writes: set[asyncio.Task[Any]] = set()  # under way, awaited by close()
        self._waiting: list[_Batch] = []  # put_events() batches for the next group
        self._grouping = 0  # tasks writing groups of batches
        self._listener: asyncio.Task[None] | None = None
        self._folder: asyncio.Task[None] | None = None  # folds the rollups' entries
        self._listening = False  # LISTEN is in effect: a NOTIFY sets _pushed
        self._pushed = True  # a push may have been queued since the last push_changes()
        self._push_event = asyncio.Event()  # set with _pushed by a NOTIFY, for push_wait()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.max_connections,
            max_waiting=self.max_pending,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
        )
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._readers = ConnectionPool(
            self.url,
            min_size=0,
            max_size=self.max_readers,
            max_waiting=self.max_pending,
            kwargs={"autocommit": True},
            configure=_configure_reader,
            open=True,
        )
        if self.listen:
            self._listener = asyncio.create_task(self._listen())
        self._folder = asyncio.create_task(self._fold_now_and_then())

    async def _listen(self) -> None:
        """Set _pushed at each push queued by any collector, for as long as this runs."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {PUSH_CHANNEL}")
                    self._listening = True
                    self._pushed = True  # those queued while nobody listened
                    self._push_event.set()
                    async for _ in conn.notifies():
                        self._pushed = True
                        self._push_event.set()
            except psycopg.Error as exc:  # the connection lost, or refused
                logger.warning("PostgreSQL: LISTEN %s lost (%s); polling", PUSH_CHANNEL, exc)
            finally:
                self._listening = False
            await asyncio.sleep(_RELISTEN_SECONDS)

    async def close(self) -> None:
        """Close the pool once the writes under way are committed."""
        for task in (self._listener, self._folder):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._listener = self._folder = None
        # Those of cancelled requests too: the pool would not wait for them.
        await asyncio.gather(*self._writes, return_exceptions=True)
        if self._pool is not None:
            with contextlib.suppress(StorageUnavailable, Overloaded, psycopg.Error):
                await self.fold_rollups()  # left to the next fold otherwise
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._readers is not None:
            await asyncio.to_thread(self._readers.close)
            self._readers = None

    def _connections(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            raise RuntimeError("PostgresStorage.start() has not been awaited")
        return self._pool

    async def _write(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work` in one transaction and return once it is committed."""
        # The write goes on even if the request is cancelled; only the answer is lost.
        task = asyncio.ensure_future(self._transaction(work))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _transaction(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with (
                    self._connections().connection() as conn,
                    conn.transaction(),
                    values_pg.deferred(conn),  # the counters' counts appended last
                ):
                    return await work(conn)
            except (errors.TransactionRollback, errors.DeadlockDetected, _Raced):
                # A deadlock or serialization failure, rolled back whole: `work` reads
                # everything it needs again, so it can simply run again. (psycopg makes
                # DeadlockDetected an OperationalError, not a TransactionRollback.)
                if attempt == _ATTEMPTS:
                    raise StorageUnavailable("the database aborted the write; retry") from None
            except TooManyRequests as exc:
                raise Overloaded(str(exc)) from exc
            except (PoolTimeout, errors.OperationalError) as exc:
                raise StorageUnavailable(f"the database is unavailable: {exc}") from exc
        raise AssertionError("unreachable")

    async def _write_row(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run one writing statement in its own transaction; return its first row."""

        async def work(conn: Connection) -> tuple[Any, ...] | None:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()

        return await self._write(work)

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async def work(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

        return await self._reading(work)

    async def _reading(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work`'s reads on a pooled connection, each statement on its own."""
        try:
            async with self._connections().connection() as conn:
                return await work(conn)
        except TooManyRequests as exc:
            raise Overloaded(str(exc)) from exc
        except (PoolTimeout, errors.OperationalError) as exc:
            raise StorageUnavailable(f"the database is unavailable: {exc}") from exc

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    # -- apps and keys --------------------------------------------------------------------

    async def create_app(self, app: AppRecord) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(
                "INSERT INTO apps (id, name, tags, created_at) VALUES (%s, %s, %s, %s)",
                (app.id, app.name, orjson.dumps(app.tags).decode(), app.created_at),
            )

        await self._write(work)

    async def get_app(self, app_id: str) -> AppRecord | None:
        row = await self._row(
            "SELECT id, name, created_at, tags FROM apps WHERE id = %s", (app_id,)
        )
        return _app(row) if row else None

    async def list_apps(self, *, after: str | None, limit: int) -> list[AppRecord]:
        rows = await self._rows(
            "SELECT id, name, created_at, tags FROM apps WHERE id > %s ORDER BY id LIMIT %s",
            (after or "", limit),
        )
        return [_app(row) for row in rows]

    async def delete_app(self, app_id: str) -> AppRecord | None:
        async def work(conn: Connection) -> AppRecord | None:
            await pending.settle(conn)  # no ingest transaction stages for it meanwhile
            cursor = await conn.execute(
                "DELETE FROM apps WHERE id = %s RETURNING id, name, created_at, tags", (app_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            for table in _APP_TABLES:
                await conn.execute(f"DELETE FROM {table} WHERE app_id = %s", (app_id,))
            # The columnar copies' days of the application are void (storage/pg_columnar.py).
            await conn.execute(
                "DELETE FROM events_deleted WHERE app_id = %s AND day <> %s", (app_id, APP_DAY)
            )
            await conn.execute(
                "INSERT INTO events_deleted (app_id, day, count) VALUES (%s, %s, 1)"
                " ON CONFLICT (app_id, day) DO UPDATE SET count = events_deleted.count + 1",
                (app_id, APP_DAY),
            )
            return _app(row)

        return await self._write(work)

    async def create_key(self, key: KeyRecord) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(
                f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (key.access_key_id, key.app_id, key.role, key.secret, key.token_sha256,
                 key.created_at, key.revoked_at),
            )  # fmt: skip

        await self._write(work)

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        row = await self._row(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE access_key_id = %s", (access_key_id,)
        )
        return KeyRecord(*row) if row else None

    async def get_key_by_token(self, token_sha256: str) -> KeyRecord | None:
        row = await self._row(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE token_sha256 = %s", (token_sha256,)
        )
        return KeyRecord(*row) if row else None

    async def get_caller(
        self, column: KeyColumn, value: str, app_id: str | None
    ) -> tuple[KeyRecord | None, bool]:
        """One statement, where the key and the application were two round trips."""
        column = "token_sha256" if column == "token_sha256" else "access_key_id"
        row = await self._row(
            f"SELECT {_KEY_COLUMNS}, EXISTS (SELECT FROM apps WHERE id = %s)"
            f" FROM (SELECT) one LEFT JOIN keys ON {column} = %s",
            (app_id, value),
        )
        if row is None or row[0] is None:
            return None, False
        return KeyRecord(*row[:-1]), bool(row[-1])

    async def list_keys(self, app_id: str | None = None) -> list[KeyRecord]:
        if app_id is None:
            rows = await self._rows(
                f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at, access_key_id"
            )
        else:
            rows = await self._rows(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE app_id = %s"
                " ORDER BY created_at, access_key_id",
                (app_id,),
            )
        return [KeyRecord(*row) for row in rows]

    async def revoke_key(self, access_key_id: str, revoked_at: str) -> bool:
        async def work(conn: Connection) -> bool:
            cursor = await conn.execute(
                "UPDATE keys SET revoked_at = %s WHERE access_key_id = %s AND revoked_at IS NULL",
                (revoked_at, access_key_id),
            )
            return cursor.rowcount > 0

        return await self._write(work)

    async def rewrite_secrets(self, rewrite: Callable[[str, str], str]) -> int:
        async def work(conn: Connection) -> int:
            cursor = await conn.execute(
                "SELECT access_key_id, secret FROM keys ORDER BY access_key_id FOR UPDATE"
            )
            changed = [
                (new, access_key_id)
                for access_key_id, secret in await cursor.fetchall()
                if (new := rewrite(access_key_id, secret)) != secret
            ]
            if changed:
                async with conn.cursor() as update:
                    await update.executemany(
                        "UPDATE keys SET secret = %s WHERE access_key_id = %s", changed
                    )
            return len(changed)

        return await self._write(work)

    # -- events and endpoints -------------------------------------------------------------

    async def put_events(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        events: Sequence[EventRow],
        *,
        merge: EndpointMerge,
        max_event_types: int,
        max_user_endpoints: int,
        summary: Summary | None = None,
        device: DeviceCheck | None = None,
    ) -> IngestResult:
        """`summary`, if given, is what `events` add to the rollups. `device` is checked
        in the group's transaction, against the credentials stored then."""
        answer: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        limits = (max_event_types, max_user_endpoints)
        batch = _Batch(app_id, endpoints, events, merge, *limits, summary, answer, device)
        self._waiting.append(batch)
        if self._grouping < _GROUP_WRITERS:  # else a writer under way takes it next
            self._grouping += 1
            task = asyncio.ensure_future(self._write_groups())
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        # Answered after its group's commit; a cancelled request loses only the answer.
        return await asyncio.shield(batch.result)

    async def _write_groups(self) -> None:
        """Write the batches waiting, a group of them in each transaction, until none is
        left: concurrent batches' rollups wait on the same rows' locks, one transaction
        after the other, and each transaction costs its statements and its commit."""
        group: list[_Batch] = []
        try:
            while self._waiting:
                group = _take_group(self._waiting)
                try:
                    results = await self._transaction(partial(_put_group, group, self.rollups))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if len(group) == 1:
                        group[0].result.set_exception(exc)
                        continue
                    # Each batch alone, so that one batch's failure is its own.
                    logger.warning("a group of %d batches failed; writing each alone", len(group))
                    await self._write_alone(group)
                else:
                    for batch, result in zip(group, results, strict=True):
                        batch.result.set_result(result)
        except asyncio.CancelledError:
            for batch in group:
                if not batch.result.done():
                    batch.result.cancel()
            raise
        finally:
            self._grouping -= 1

    async def _write_alone(self, group: Sequence[_Batch]) -> None:
        for batch in group:
            try:
                result = await self._transaction(partial(_put_group, [batch], self.rollups))
            except Exception as exc:
                batch.result.set_exception(exc)
            else:
                batch.result.set_result(result[0])

    async def update_endpoints(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        *,
        merge: EndpointMerge,
        max_user_endpoints: int,
    ) -> None:
        async def work(conn: Connection) -> None:
            await _upsert_endpoints(
                conn, app_id, endpoints, merge, max_user_endpoints, refuse=False
            )

        await self._write(work)

    async def get_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None:
        row = await self._row(
            "SELECT body FROM endpoints WHERE app_id = %s AND endpoint_id = %s",
            (app_id, endpoint_id),
        )
        return orjson.loads(row[0]) if row else None

    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None:
        async def work(conn: Connection) -> Endpoint | None:
            await pending.settle(conn)  # the rollups it takes the events out of
            deleted = await _delete_endpoints(conn, app_id, [endpoint_id])
            return deleted[0] if deleted else None

        return await self._write(work)

    async def get_user_endpoints(self, app_id: str, user_id: str) -> list[Endpoint]:
        rows = await self._rows(
            "SELECT body FROM endpoints WHERE app_id = %s AND user_id = %s ORDER BY endpoint_id",
            (app_id, user_id),
        )
        return [orjson.loads(row[0]) for row in rows]

    async def delete_user_endpoints(self, app_id: str, user_id: str) -> list[Endpoint]:
        async def work(conn: Connection) -> list[Endpoint]:
            await pending.settle(conn)  # the rollups it takes the events out of
            cursor = await conn.execute(
                "SELECT endpoint_id FROM endpoints WHERE app_id = %s AND user_id = %s"
                " ORDER BY endpoint_id",
                (app_id, user_id),
            )
            ids = [row[0] for row in await cursor.fetchall()]
            return await _delete_endpoints(conn, app_id, ids)

        return await self._write(work)

    async def get_endpoints(self, app_id: str, endpoint_ids: Sequence[str]) -> dict[str, Endpoint]:
        rows = await self._rows(
            "SELECT endpoint_id, body FROM endpoints WHERE app_id = %s AND endpoint_id = ANY(%s)",
            (app_id, list(dict.fromkeys(endpoint_ids))),
        )
        return {endpoint_id: orjson.loads(body) for endpoint_id, body in rows}

    async def endpoints_after(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[tuple[str, Endpoint]]:
        rows = await self._rows(
            "SELECT endpoint_id, body FROM endpoints WHERE app_id = %s AND endpoint_id > %s"
            " ORDER BY endpoint_id LIMIT %s",
            (app_id, after or "", limit),
        )
        return [(endpoint_id, orjson.loads(body)) for endpoint_id, body in rows]

    # -- application settings, quotas and retention ---------------------------------------

    async def get_app_settings(self, app_id: str) -> tuple[str, str] | None:
        row = await self._row(
            "SELECT settings, modified_at FROM app_settings WHERE app_id = %s", (app_id,)
        )
        return (row[0], row[1]) if row else None

    async def update_app_settings(
        self, app_id: str, update: dict[str, Any], modified_at: str
    ) -> str:
        async def work(conn: Connection) -> str:
            def change(stored: str | None) -> str:
                settings = {**(orjson.loads(stored) if stored else {}), **update}
                return orjson.dumps(settings).decode()

            return await _modify(conn, "app_settings", "settings", app_id, change, modified_at)

        return await self._write(work)

    async def get_app_quotas(self, app_id: str) -> dict[str, int]:
        row = await self._row("SELECT quotas FROM app_quotas WHERE app_id = %s", (app_id,))
        return orjson.loads(row[0]) if row else {}

    async def update_app_quotas(
        self, app_id: str, update: dict[str, int | None], modified_at: str
    ) -> dict[str, int]:
        async def work(conn: Connection) -> dict[str, int]:
            def change(stored: str | None) -> str:
                quotas = {**(orjson.loads(stored) if stored else {}), **update}
                kept = {name: value for name, value in quotas.items() if value is not None}
                return orjson.dumps(kept).decode()

            text = await _modify(conn, "app_quotas", "quotas", app_id, change, modified_at)
            quotas: dict[str, int] = orjson.loads(text)
            return quotas

        return await self._write(work)

    async def get_retention(self, app_id: str) -> int | None:
        row = await self._row("SELECT events_days FROM app_retention WHERE app_id = %s", (app_id,))
        return None if row is None else int(row[0])

    async def update_retention(
        self, app_id: str, events_days: int | None, modified_at: str
    ) -> int | None:
        async def work(conn: Connection) -> int | None:
            if events_days is None:
                await conn.execute("DELETE FROM app_retention WHERE app_id = %s", (app_id,))
            else:
                await conn.execute(
                    "INSERT INTO app_retention (app_id, events_days, modified_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT (app_id) DO UPDATE SET"
                    " events_days = excluded.events_days, modified_at = excluded.modified_at",
                    (app_id, events_days, modified_at),
                )
            return events_days

        return await self._write(work)

    async def retention_policies(self) -> list[tuple[str, int]]:
        rows = await self._rows("SELECT app_id, events_days FROM app_retention ORDER BY app_id")
        return [(app_id, int(days)) for app_id, days in rows]

    # -- history: export, retention sweeps, leases ----------------------------------------

    async def events_page(
        self,
        app_id: str,
        lo_ms: int,
        hi_ms: int,
        *,
        after: tuple[int, str, str, str, int] | None,
        limit: int,
    ) -> list[StoredEvent]:
        lo_hour, hi_hour = lo_ms // HOUR_MS, (hi_ms - 1) // HOUR_MS + 1
        start = after or (lo_hour, "", "", "", -(2**63))
        rows = await self._rows(
            f"SELECT {_EVENT_KEY}, arrival, body FROM events WHERE app_id = %s"
            f" AND ({_EVENT_KEY}) > (%s, %s, %s, %s, %s) AND hour < %s AND ts >= %s AND ts < %s"
            f" ORDER BY {_EVENT_KEY} LIMIT %s",
            (app_id, *start, hi_hour, lo_ms, hi_ms, limit),
        )
        return [
            StoredEvent(hour, endpoint_id, event_id, event_type, ts, arrival, bytes(body))
            for hour, endpoint_id, event_id, event_type, ts, arrival, body in rows
        ]

    async def delete_expired_events(self, app_id: str, before_hour: int, limit: int) -> int:
        async def work(conn: Connection) -> int:
            cursor = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM events WHERE app_id = %s AND hour < %s)",
                (app_id, before_hour),
            )
            row = await cursor.fetchone()
            if not (row and row[0]):
                return 0
            await pending.settle(conn)  # the opens it takes out of the rollups
            cursor = await conn.execute(
                f"DELETE FROM events WHERE app_id = %s AND ({_EVENT_KEY}) IN"
                f" (SELECT {_EVENT_KEY} FROM events WHERE app_id = %s AND hour < %s"
                f" ORDER BY {_EVENT_KEY} LIMIT %s)"
                " RETURNING event_type = %s, endpoint_id, ts, CASE WHEN event_type = %s"
                " THEN convert_from(body, 'UTF8')::jsonb -> 'Attributes' ->> 'campaign_id' END,"
                " hour",
                (app_id, app_id, before_hour, limit, OPENED, OPENED),
            )
            deleted = await cursor.fetchall()
            await conn.execute(
                f"WITH gone AS (SELECT unnest(%s::bigint[]) AS hour) {_COUNT_DELETED}",
                ([row[4] for row in deleted], app_id),
            )
            deleted = [row[:4] for row in deleted]
            opened = [(app_id, *row[1:]) for row in deleted if row[0]]
            if opened:  # analytics hook
                await analytics_pg.call(conn, opens_pg.deleted, opened)
            return len(deleted)

        return await self._write(work)

    async def take_lease(self, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        async def work(conn: Connection) -> bool:
            cursor = await conn.execute(
                "INSERT INTO task_leases (name, owner, expires_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at"
                " WHERE task_leases.owner = excluded.owner OR task_leases.expires_at < %s"
                " RETURNING owner",
                (name, owner, now_ms + ttl_ms, now_ms),
            )
            return await cursor.fetchone() is not None

        return await self._write(work)

    async def seal_events(self, work: Callable[[Any], Any]) -> bool:
        """There is no columnar copy on PostgreSQL: nothing is ever sealed."""
        return False

    # -- device credentials ---------------------------------------------------------------

    async def device_credentials(self, app_id: str, endpoint_ids: Sequence[str]) -> dict[str, str]:
        rows = await self._rows(
            "SELECT endpoint_id, secret_sha256 FROM device_credentials"
            " WHERE app_id = %s AND endpoint_id = ANY(%s)",
            (app_id, list(dict.fromkeys(endpoint_ids))),
        )
        return dict(rows)

    async def set_device_credential(
        self, app_id: str, endpoint_id: str, secret_sha256: str, created_at: str, *, replace: bool
    ) -> bool:
        conflict = (
            "DO UPDATE SET secret_sha256 = excluded.secret_sha256, created_at = excluded.created_at"
            if replace
            else "DO NOTHING"
        )

        async def work(conn: Connection) -> bool:
            cursor = await conn.execute(
                "INSERT INTO device_credentials (app_id, endpoint_id, secret_sha256, created_at)"
                f" VALUES (%s, %s, %s, %s) ON CONFLICT (app_id, endpoint_id) {conflict}",
                (app_id, endpoint_id, secret_sha256, created_at),
            )
            return cursor.rowcount > 0

        return await self._write(work)

    async def delete_device_credential(self, app_id: str, endpoint_id: str) -> bool:
        async def work(conn: Connection) -> bool:
            cursor = await conn.execute(
                "DELETE FROM device_credentials WHERE app_id = %s AND endpoint_id = %s",
                (app_id, endpoint_id),
            )
            return cursor.rowcount > 0

        return await self._write(work)

    # -- push store-and-forward ------------------------------------------------------------

    async def queue_push(
        self, app_id: str, messages: Sequence[PushMessage], *, queue_limit: int
    ) -> PushQueued:
        return await self._write(partial(_queue_push, app_id=app_id, messages=messages,
                                         queue_limit=queue_limit))  # fmt: skip

    async def pending_push(
        self, app_id: str, endpoint_id: str, *, after_seq: int, now_ms: int
    ) -> list[QueuedPush]:
        rows = await self._rows(
            "SELECT seq, payload, expires_at FROM push_messages"
            " WHERE app_id = %s AND endpoint_id = %s AND delivered_at IS NULL AND seq > %s"
            " AND expires_at > %s ORDER BY seq",
            (app_id, endpoint_id, after_seq, now_ms),
        )
        return [QueuedPush(*row) for row in rows]

    async def ack_push(
        self, app_id: str, endpoint_id: str, message_ids: Sequence[str], *, now_ms: int
    ) -> int:
        async def work(conn: Connection) -> int:
            cursor = await conn.execute(
                "UPDATE push_messages SET delivered_at = %s WHERE app_id = %s"
                " AND endpoint_id = %s AND delivered_at IS NULL AND message_id = ANY(%s)",
                (now_ms, app_id, endpoint_id, list(message_ids)),
            )
            return cursor.rowcount

        return await self._write(work)

    async def ack_push_through(
        self, app_id: str, endpoint_id: str, seq: int, *, now_ms: int
    ) -> int:
        async def work(conn: Connection) -> int:
            # Only up to the highest seq the endpoint ever had: a higher one was counted
            # against another database (a restored backup), and acknowledging through it
            # would drop messages the device never saw.
            cursor = await conn.execute(
                "UPDATE push_messages SET delivered_at = %s"
                " WHERE app_id = %s AND endpoint_id = %s AND delivered_at IS NULL AND seq <= %s"
                " AND %s <= (SELECT last_seq FROM push_endpoints"
                "            WHERE app_id = %s AND endpoint_id = %s)",
                (now_ms, app_id, endpoint_id, seq, seq, app_id, endpoint_id),
            )
            return cursor.rowcount

        return await self._write(work)

    async def purge_push(self, now_ms: int) -> int:
        async def work(conn: Connection) -> int:
            cursor = await conn.execute(
                "DELETE FROM push_messages WHERE delivered_at IS NULL AND expires_at <= %s",
                (now_ms,),
            )
            return cursor.rowcount

        return await self._write(work)

    async def push_wait(self, timeout: float) -> None:
        """Return at the next NOTIFY (or one since the last push_changes()), so that a
        stream held here is woken at the commit of another collector's push."""
        if not self._listening:
            await asyncio.sleep(timeout)
            return
        await wait_set(self._push_event, timeout)

    async def push_changes(self, since_ms: int) -> list[tuple[str, str, int]] | None:
        """None when no push was NOTIFY'd since the last call; without LISTEN (`listen`
        False, or its connection lost), never None: every call reads the recent pushes."""
        if self._listening and not self._pushed:
            return None
        self._pushed = False  # before the read: a NOTIFY during it makes the next one read
        self._push_event.clear()
        try:
            rows = await self._rows(
                "SELECT app_id, endpoint_id, max(seq) FROM push_messages"
                " WHERE delivered_at IS NULL AND created_at >= %s GROUP BY app_id, endpoint_id",
                (since_ms,),
            )
        except BaseException:
            self._pushed = True  # not read: the next call tries again
            raise
        return [(app_id, endpoint_id, int(seq)) for app_id, endpoint_id, seq in rows]

    # -- segments ---------------------------------------------------------------------------

    async def create_segment(
        self, record: SegmentRecord, references: Sequence[SegmentReference]
    ) -> SegmentRecord:
        return await self._write(partial(_create_segment, record=record, references=references))

    async def update_segment(
        self,
        app_id: str,
        segment_id: str,
        request: str,
        modified_at: str,
        references: Sequence[SegmentReference],
    ) -> SegmentRecord | None:
        async def work(conn: Connection) -> SegmentRecord | None:
            return await _update_segment(conn, app_id, segment_id, request, modified_at, references)

        return await self._write(work)

    async def get_segment(
        self, app_id: str, segment_id: str, version: int | None = None
    ) -> SegmentRecord | None:
        row = await self._row(*_SEGMENTS.get_query(app_id, segment_id, version))
        return _segment_record(row) if row else None

    async def list_segments(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[SegmentRecord]:
        rows = await self._rows(*_SEGMENTS.page_query(app_id, after, limit))
        return [_segment_record(row) for row in rows]

    async def list_segment_versions(
        self, app_id: str, segment_id: str, *, after: int, limit: int
    ) -> list[SegmentRecord]:
        rows = await self._rows(*_SEGMENTS.versions_query(app_id, segment_id, after, limit))
        return [_segment_record(row) for row in rows]

    async def delete_segment(self, app_id: str, segment_id: str) -> SegmentRecord | None:
        """As in Pinpoint, the campaigns that target the segment are deleted with it."""

        async def work(conn: Connection) -> SegmentRecord | None:
            await _lock(conn, "segments", app_id)
            record = await _segment(conn, app_id, segment_id, None)
            if record is not None:
                cursor = await conn.execute(
                    "SELECT campaign_id FROM campaigns WHERE app_id = %s AND segment_id = %s"
                    " ORDER BY campaign_id",
                    (app_id, segment_id),
                )
                for (campaign_id,) in await cursor.fetchall():
                    await _delete_campaign(conn, app_id=app_id, campaign_id=campaign_id)
                # The members of the segment's import jobs; the jobs stay listed.
                await conn.execute(
                    "DELETE FROM import_members WHERE app_id = %s AND job_id IN"
                    " (SELECT job_id FROM import_jobs WHERE app_id = %s AND segment_id = %s)",
                    (app_id, app_id, segment_id),
                )
                for table in ("segment_versions", "segments"):
                    await conn.execute(
                        f"DELETE FROM {table} WHERE app_id = %s AND segment_id = %s",
                        (app_id, segment_id),
                    )
            return record

        return await self._write(work)

    # -- import jobs ------------------------------------------------------------------------

    async def create_import_job(self, record: ImportJobRecord) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(
                f"INSERT INTO import_jobs ({imports_sql.COLUMNS})"
                f" VALUES ({', '.join(['%s'] * 15)})",
                imports_sql.job_values(record),
            )

        await self._write(work)

    async def save_import_job(self, record: ImportJobRecord) -> None:
        await self._write(partial(_save_import_job, record=record))

    async def get_import_job(self, app_id: str, job_id: str) -> ImportJobRecord | None:
        row = await self._row(
            f"SELECT {imports_sql.COLUMNS} FROM import_jobs WHERE app_id = %s AND job_id = %s",
            (app_id, job_id),
        )
        return imports_sql.job_record(row) if row else None

    async def list_import_jobs(
        self, app_id: str, *, segment_id: str | None, after: str | None, limit: int
    ) -> list[ImportJobRecord]:
        where = "app_id = %s AND job_id > %s"
        args: tuple[Any, ...] = (app_id, after or "")
        if segment_id is not None:
            where += " AND segment_id = %s"
            args += (segment_id,)
        rows = await self._rows(
            f"SELECT {imports_sql.COLUMNS} FROM import_jobs WHERE {where} ORDER BY job_id LIMIT %s",
            (*args, limit),
        )
        return [imports_sql.job_record(row) for row in rows]

    async def unfinished_import_jobs(self) -> list[ImportJobRecord]:
        rows = await self._rows(
            f"SELECT {imports_sql.COLUMNS} FROM import_jobs"
            " WHERE status NOT IN ('COMPLETED', 'FAILED') ORDER BY app_id, job_id"
        )
        return [imports_sql.job_record(row) for row in rows]

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
        async def work(conn: Connection) -> list[tuple[ImportRow, str]]:
            # The application's row, shared-locked: deleting it waits for this import.
            cursor = await conn.execute("SELECT 1 FROM apps WHERE id = %s FOR SHARE", (app_id,))
            if await cursor.fetchone() is None:
                raise ApplicationGone(f"application {app_id} was deleted while the job ran")
            refused: list[tuple[ImportRow, str]] = []
            found: list[tuple[str, str, str, str | None]] = []
            named: list[ImportRow] = []  # rows with an endpoint id, stored together

            async def store_named() -> None:
                if register and named:
                    updates = [EndpointUpdate(row.endpoint_id or "", row.update) for row in named]
                    failed = dict(await _upsert_endpoints(
                        conn, app_id, updates, merge, max_user_endpoints, refuse=True
                    ))  # fmt: skip
                    refused.extend((named[index], message) for index, message in failed.items())
                    named[:] = [row for index, row in enumerate(named) if index not in failed]
                found.extend((app_id, job_id, row.endpoint_id or "", row.update.get("ChannelType"))
                             for row in named)  # fmt: skip
                named.clear()

            for row in rows:
                if row.endpoint_id is not None:
                    named.append(row)
                    continue
                # A row that names only a user: the endpoints stored for it so far, those
                # of the rows before it included, are members.
                await store_named()
                user_id = row.update["User"]["UserId"]
                cursor = await conn.execute(
                    "SELECT endpoint_id, body FROM endpoints WHERE app_id = %s AND user_id = %s",
                    (app_id, user_id),
                )
                stored = await cursor.fetchall()
                if not stored:
                    message = f"User.UserId: user {user_id!r} has no endpoints in this application"
                    refused.append((row, message))
                found.extend((app_id, job_id, endpoint_id, orjson.loads(body).get("ChannelType"))
                             for endpoint_id, body in stored)  # fmt: skip
            await store_named()
            if members and found:
                async with conn.cursor() as insert:
                    await insert.executemany(
                        "INSERT INTO import_members (app_id, job_id, endpoint_id, channel)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (app_id, job_id, endpoint_id)"
                        " DO UPDATE SET channel = coalesce(excluded.channel,"
                        " import_members.channel)",
                        found,
                    )
            position = {id(row): n for n, row in enumerate(rows)}
            return sorted(refused, key=lambda item: position[id(item[0])])  # in file order

        return await self._write(work)

    async def import_member_counts(self, app_id: str, job_id: str) -> dict[str, int]:
        rows = await self._rows(
            "SELECT coalesce(channel, ''), count(*) FROM import_members"
            " WHERE app_id = %s AND job_id = %s GROUP BY 1",
            (app_id, job_id),
        )
        return {channel: int(count) for channel, count in rows}

    async def import_members_after(
        self, app_id: str, job_id: str, *, after: str | None, limit: int
    ) -> list[str]:
        rows = await self._rows(
            "SELECT endpoint_id FROM import_members WHERE app_id = %s AND job_id = %s"
            " AND endpoint_id > %s ORDER BY endpoint_id LIMIT %s",
            (app_id, job_id, after or "", limit),
        )
        return [row[0] for row in rows]

    async def finish_import_job(
        self, record: ImportJobRecord, segment: SegmentRecord | None
    ) -> None:
        async def work(conn: Connection) -> None:
            cursor = await conn.execute(
                "SELECT 1 FROM apps WHERE id = %s FOR SHARE", (record.app_id,)
            )
            if await cursor.fetchone() is None:
                raise ApplicationGone(f"application {record.app_id} was deleted while the job ran")
            if segment is not None:
                updated = await _update_segment(
                    conn, segment.app_id, segment.id, segment.request, segment.modified_at, []
                )
                if updated is None:
                    if segment.version != 1:
                        raise SegmentReferenceError(
                            "SegmentId", f"segment {segment.id} was deleted while the job ran"
                        )
                    await _create_segment(conn, record=segment, references=[])
            await _save_import_job(conn, record=record)

        await self._write(work)

    # -- campaigns ------------------------------------------------------------------------

    async def create_campaign(
        self, record: CampaignRecord, segment_version: int | None
    ) -> CampaignRecord:
        async def work(conn: Connection) -> CampaignRecord:
            # Under the segments' lock: the segment cannot be deleted before the campaign
            # that targets it is stored, which would leave the campaign behind.
            await _lock(conn, "segments", record.app_id)
            request = orjson.loads(record.request)
            request["SegmentVersion"] = await _pinned_version(
                conn, record.app_id, record.segment_id, segment_version
            )
            await conn.execute(
                "INSERT INTO campaigns (app_id, campaign_id, version, created_at, segment_id,"
                " state, tags) VALUES (%s, %s, 1, %s, %s, %s, %s)",
                (record.app_id, record.id, record.created_at, record.segment_id, record.state,
                 orjson.dumps(record.tags).decode()),
            )  # fmt: skip
            await _add_campaign_version(
                conn, record.app_id, record.id, 1, record.modified_at, orjson.dumps(request)
            )
            found = await _campaign(conn, record.app_id, record.id, None)
            assert found is not None
            return found

        return await self._write(work)

    async def update_campaign(
        self,
        app_id: str,
        campaign_id: str,
        update: dict[str, Any],
        modified_at: str,
        check: Callable[[dict[str, Any]], None],
    ) -> CampaignRecord | None:
        async def work(conn: Connection) -> CampaignRecord | None:
            await _lock(conn, "segments", app_id)
            cursor = await conn.execute(
                "SELECT 1 FROM campaigns WHERE app_id = %s AND campaign_id = %s FOR UPDATE",
                (app_id, campaign_id),
            )
            if await cursor.fetchone() is None:
                return None
            latest = await _campaign(conn, app_id, campaign_id, None)
            assert latest is not None
            request = {**orjson.loads(latest.request), **update}
            if "SegmentId" in update and "SegmentVersion" not in update:
                request.pop("SegmentVersion", None)  # another segment: its latest version
            check(request)
            segment_id = request["SegmentId"]
            request["SegmentVersion"] = await _pinned_version(
                conn, app_id, segment_id, request.get("SegmentVersion")
            )
            cursor = await conn.execute(
                "UPDATE campaigns SET version = version + 1, segment_id = %s, finished = false,"
                " state = CASE WHEN state = 'COMPLETED' THEN 'PENDING_NEXT_RUN' ELSE state END"
                " WHERE app_id = %s AND campaign_id = %s RETURNING version",
                (segment_id, app_id, campaign_id),
            )
            row = await cursor.fetchone()
            assert row is not None
            await _add_campaign_version(
                conn, app_id, campaign_id, row[0], modified_at, orjson.dumps(request)
            )
            return await _campaign(conn, app_id, campaign_id, None)

        return await self._write(work)

    async def get_campaign(
        self, app_id: str, campaign_id: str, version: int | None = None
    ) -> CampaignRecord | None:
        row = await self._row(*_CAMPAIGNS.get_query(app_id, campaign_id, version))
        return _campaign_record(row) if row else None

    async def list_campaigns(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[CampaignRecord]:
        rows = await self._rows(*_CAMPAIGNS.page_query(app_id, after, limit))
        return [_campaign_record(row) for row in rows]

    async def list_campaign_versions(
        self, app_id: str, campaign_id: str, *, after: int, limit: int
    ) -> list[CampaignRecord]:
        rows = await self._rows(*_CAMPAIGNS.versions_query(app_id, campaign_id, after, limit))
        return [_campaign_record(row) for row in rows]

    async def delete_campaign(self, app_id: str, campaign_id: str) -> CampaignRecord | None:
        return await self._write(partial(_delete_campaign, app_id=app_id, campaign_id=campaign_id))

    async def list_activities(
        self, app_id: str, campaign_id: str, *, after: int, limit: int
    ) -> list[ActivityRecord]:
        rows = await self._rows(
            f"SELECT {_ACTIVITY} FROM campaign_activities WHERE app_id = %s AND campaign_id = %s"
            " AND scheduled_ms > %s ORDER BY scheduled_ms LIMIT %s",
            (app_id, campaign_id, after, limit),
        )
        return [_activity(row) for row in rows]

    async def campaigns_to_plan(self) -> list[tuple[CampaignRecord, int | None]]:
        rows = await self._rows(
            f"SELECT {_CAMPAIGNS.columns}, c.planned_ms FROM {_CAMPAIGNS.join}"
            " WHERE NOT c.finished AND v.version = c.version ORDER BY c.app_id, c.campaign_id"
        )
        return [(_campaign_record(row[:9]), row[9]) for row in rows]

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

        async def work(conn: Connection) -> None:
            # The campaign's row, locked: an update cannot slip in between the check of
            # its version and the runs planned for that version.
            cursor = await conn.execute(
                "SELECT version FROM campaigns WHERE app_id = %s AND campaign_id = %s FOR UPDATE",
                (app_id, campaign_id),
            )
            row = await cursor.fetchone()
            if row is None or row[0] != version:
                return  # deleted or changed since it was read: the next tick plans it again
            planned = [(ms, "PENDING") for ms in runs_ms]
            planned += [(ms, "CANCELLED") for ms in missed_ms]
            async with conn.cursor() as insert:
                await insert.executemany(
                    "INSERT INTO campaign_activities (app_id, campaign_id, activity_id,"
                    " version, scheduled_ms, state, not_before_ms, ended_at, result, metrics)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(app_id, campaign_id, uuid.uuid4().hex, version, ms, state, ms - lead_ms,
                      now if state == "CANCELLED" else None,
                      "FAIL" if state == "CANCELLED" else None,
                      '{"MISSED": 1}' if state == "CANCELLED" else "{}")
                     for ms, state in planned],
                )  # fmt: skip
            await conn.execute(
                "UPDATE campaigns SET planned_ms = greatest(coalesce(planned_ms, 0), %s),"
                " finished = %s WHERE app_id = %s AND campaign_id = %s",
                (planned_ms, finished, app_id, campaign_id),
            )
            await _settle_campaign(conn, app_id, campaign_id)

        await self._write(work)

    async def claim_activity(
        self, owner: str, now_ms: int, lease_ms: int, *, dead: Callable[[str], bool]
    ) -> ActivityRecord | None:
        """The due activities are read unlocked; then the first free one is locked alone,
        SKIP LOCKED (another collector is claiming it, or writing a chunk of it), and
        checked free again as it is once locked: of collectors claiming at once, each
        takes another run, and a lease, once committed, is seen by every later claim."""
        now = _iso_now()

        def free(holder: str | None, until: int | None) -> bool:
            held = holder is not None and until is not None and until >= now_ms
            return not held or dead(holder or "")

        async def work(conn: Connection) -> ActivityRecord | None:
            cursor = await conn.execute(
                "SELECT app_id, campaign_id, activity_id, lease_owner, lease_until_ms"
                " FROM campaign_activities WHERE state IN ('PENDING', 'RUNNING')"
                " AND not_before_ms <= %s ORDER BY not_before_ms LIMIT 50",
                (now_ms,),
            )
            for app_id, campaign_id, activity_id, holder, until in await cursor.fetchall():
                if not free(holder, until):
                    continue  # its holder is at work: not ours
                key = (app_id, campaign_id, activity_id)
                cursor = await conn.execute(
                    "SELECT lease_owner, lease_until_ms FROM campaign_activities"
                    " WHERE app_id = %s AND campaign_id = %s AND activity_id = %s"
                    " AND state IN ('PENDING', 'RUNNING') AND not_before_ms <= %s"
                    " FOR UPDATE SKIP LOCKED",
                    (*key, now_ms),
                )
                locked = await cursor.fetchone()
                if locked is None or not free(*locked):
                    continue  # being claimed, or claimed or finished since it was read
                cursor = await conn.execute(
                    "UPDATE campaign_activities SET lease_owner = %s, lease_until_ms = %s,"
                    " state = 'RUNNING', started_at = coalesce(started_at, %s)"
                    " WHERE app_id = %s AND campaign_id = %s AND activity_id = %s"
                    f" RETURNING {_ACTIVITY}",
                    (owner, now_ms + lease_ms, now, app_id, campaign_id, activity_id),
                )
                claimed = await cursor.fetchone()
                assert claimed is not None
                await conn.execute(
                    "UPDATE campaigns SET state = 'EXECUTING' WHERE app_id = %s"
                    " AND campaign_id = %s",
                    (app_id, campaign_id),
                )
                return _activity(claimed)
            return None

        return await self._write(work)

    async def campaign_sends(
        self, app_id: str, campaign_id: str, endpoint_ids: Sequence[str]
    ) -> dict[str, list[PastSend]]:
        rows = await self._rows(
            "SELECT endpoint_id, at_ms, session_id FROM campaign_sends"
            " WHERE app_id = %s AND campaign_id = %s AND status = 'SENT'"
            " AND endpoint_id = ANY(%s)",
            (app_id, campaign_id, list(dict.fromkeys(endpoint_ids))),
        )
        found: dict[str, list[PastSend]] = {}
        for endpoint_id, at_ms, session_id in rows:
            found.setdefault(endpoint_id, []).append(PastSend(at_ms, session_id))
        return found

    async def deferred_sends(
        self, app_id: str, campaign_id: str, activity_id: str, *, now_ms: int, limit: int
    ) -> tuple[list[str], int | None]:
        key = (app_id, campaign_id, activity_id)
        rows = await self._rows(
            "SELECT endpoint_id FROM campaign_sends WHERE app_id = %s AND campaign_id = %s"
            " AND activity_id = %s AND status = 'DEFERRED' AND at_ms <= %s LIMIT %s",
            (*key, now_ms, limit),
        )
        later = await self._row(
            "SELECT min(at_ms) FROM campaign_sends WHERE app_id = %s AND campaign_id = %s"
            " AND activity_id = %s AND status = 'DEFERRED' AND at_ms > %s",
            (*key, now_ms),
        )
        return [row[0] for row in rows], later[0] if later else None

    async def recent_events(
        self, app_id: str, *, lo_ms: int, hi_ms: int, since_arrival_ms: int
    ) -> list[EventRow]:
        rows = await self._rows(
            "SELECT endpoint_id, event_id, event_type, ts, arrival, session_id, body"
            " FROM events WHERE app_id = %s AND hour >= %s AND hour < %s AND ts >= %s"
            " AND ts < %s AND arrival >= %s ORDER BY hour, endpoint_id, event_id, event_type, ts",
            (app_id, lo_ms // HOUR_MS, hi_ms // HOUR_MS + 1, lo_ms, hi_ms, since_arrival_ms),
        )
        return [
            EventRow(endpoint_id, event_id, event_type, ts, arrival, session_id, bytes(body))
            for endpoint_id, event_id, event_type, ts, arrival, session_id, body in rows
        ]

    async def event_activity(
        self, app_id: str, campaign_id: str, version: int, scheduled_ms: int, now: str
    ) -> ActivityRecord:
        async def work(conn: Connection) -> ActivityRecord:
            await conn.execute(
                "INSERT INTO campaign_activities (app_id, campaign_id, activity_id, version,"
                " scheduled_ms, state, started_at, not_before_ms, metrics)"
                " VALUES (%s, %s, %s, %s, %s, 'RUNNING', %s, %s, '{}') ON CONFLICT DO NOTHING",
                (app_id, campaign_id, uuid.uuid4().hex, version, scheduled_ms, now, _NEVER),
            )
            cursor = await conn.execute(
                f"SELECT {_ACTIVITY} FROM campaign_activities"
                " WHERE app_id = %s AND campaign_id = %s AND scheduled_ms = %s",
                (app_id, campaign_id, scheduled_ms),
            )
            row = await cursor.fetchone()
            assert row is not None
            return _activity(row)

        return await self._write(work)

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
        async def work(conn: Connection) -> ChunkWritten:
            return await _write_chunk(
                conn, activity, owner, sends, cursor, lease_until_ms, queue_limit, custom,
                rollups=self.rollups,
            )  # fmt: skip

        return await self._write(work)

    async def finish_activity(
        self,
        activity: ActivityRecord,
        owner: str,
        *,
        not_before_ms: int | None,
        now: str,
        result: str = "SUCCESS",
    ) -> None:
        key = (activity.app_id, activity.campaign_id, activity.id)

        async def work(conn: Connection) -> None:
            if not_before_ms is None:
                await conn.execute(
                    "UPDATE campaign_activities SET state = 'COMPLETED', result = %s,"
                    " ended_at = %s, lease_owner = NULL, lease_until_ms = NULL WHERE app_id = %s"
                    " AND campaign_id = %s AND activity_id = %s AND lease_owner = %s",
                    (result, now, *key, owner),
                )
            else:
                await conn.execute(
                    "UPDATE campaign_activities SET not_before_ms = %s, lease_owner = NULL,"
                    " lease_until_ms = NULL WHERE app_id = %s AND campaign_id = %s"
                    " AND activity_id = %s AND lease_owner = %s",
                    (not_before_ms, *key, owner),
                )
            await _settle_campaign(conn, activity.app_id, activity.campaign_id)

        await self._write(work)

    # -- webhooks and the outbox ------------------------------------------------------------

    async def hook_secrets(
        self, app_id: str, *, create: str | None = None, now: str = ""
    ) -> HookSecrets | None:
        found = await self._row(_SECRETS, (app_id,))
        if found is not None or create is None:
            return HookSecrets(*found) if found else None

        async def work(conn: Connection) -> HookSecrets:
            # The first of collectors making it at once is everyone's.
            await conn.execute(
                "INSERT INTO hook_secrets (app_id, current, rotated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (app_id, create, now),
            )
            return await _secrets(conn, app_id)

        return await self._write(work)

    async def rotate_hook_secrets(self, app_id: str, new: str, now: str) -> HookSecrets:
        async def work(conn: Connection) -> HookSecrets:
            await conn.execute(
                "INSERT INTO hook_secrets (app_id, current, rotated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (app_id) DO UPDATE SET previous = hook_secrets.current,"
                " current = excluded.current, rotated_at = excluded.rotated_at",
                (app_id, new, now),
            )
            return await _secrets(conn, app_id)

        return await self._write(work)

    async def end_hook_rotation(self, app_id: str) -> HookSecrets | None:
        row = await self._write_row(
            "UPDATE hook_secrets SET previous = NULL WHERE app_id = %s"
            " RETURNING current, previous, rotated_at",
            (app_id,),
        )
        return HookSecrets(*row) if row else None

    async def enqueue_deliveries(self, deliveries: Sequence[NewDelivery], now: float) -> None:
        await self._write(partial(_enqueue, deliveries=deliveries, now=now))

    async def deliveries_due(self, now: float) -> bool:
        row = await self._row(
            "SELECT 1 FROM outbox WHERE state = 'pending' AND next_attempt_at <= %s"
            " AND (lease_until IS NULL OR lease_until < %s) LIMIT 1",
            (now, now),
        )
        return row is not None

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
    ) -> list[Delivery]:
        """As on SQLite (storage/outbox.py's claim), and for collectors claiming at once:
        the picked rows are locked SKIP LOCKED, and their lease checked again on the row
        as it is once locked, so a row another collector is leasing is left to it, and
        one it leased since is seen leased."""

        async def work(conn: Connection) -> list[Delivery]:
            cursor = await conn.execute(
                _CLAIM,
                {"owner": owner, "until": lease_until, "now": now, "busy": list(busy),
                 "held": list(held), "per_destination": per_destination, "limit": limit},
            )  # fmt: skip
            rows = await cursor.fetchall()
            return sorted((_delivery(row) for row in rows), key=lambda d: d.seq)

        return await self._write(work)

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
        if state not in ("delivered", "retry", "dead", "disable"):
            raise ValueError(f"state: must be delivered, retry, dead or disable, not {state!r}")
        first = delivery.first_attempt_at if delivery.first_attempt_at is not None else now
        key = (delivery.app_id, delivery.seq, owner)

        # What each outcome sets, besides the attempt counted and the lease ended. A
        # delivered body goes: it was the receiver's to keep; the row stays, for counts.
        args: list[Any]
        if state == "delivered":
            sets, args = (
                "state = 'delivered', body = '', finished_at = %s, last_error = NULL",
                [now],
            )
        elif state == "retry":
            sets, args = "next_attempt_at = %s, last_error = %s", [next_attempt_at, error]
        else:  # dead, or disable: dead, and its destination disabled
            sets, args = "state = 'dead', finished_at = %s, last_error = %s", [now, error]

        async def work(conn: Connection) -> bool:
            cursor = await conn.execute(
                f"UPDATE outbox SET {sets}, attempts = attempts + 1,"
                " first_attempt_at = coalesce(first_attempt_at, %s), lease_owner = NULL,"
                " lease_until = NULL WHERE app_id = %s AND seq = %s AND lease_owner = %s"
                " AND state = 'pending' RETURNING destination",
                (*args, first, *key),
            )
            row = await cursor.fetchone()
            if row is not None and state == "disable":
                await _disable(conn, delivery.app_id, row[0], now, error)
            return row is not None

        return await self._write(work)

    async def lease_owners(self, now: float) -> list[str]:
        rows = await self._rows(
            "SELECT DISTINCT lease_owner FROM outbox WHERE state = 'pending'"
            " AND lease_until >= %s AND lease_owner IS NOT NULL ORDER BY 1",
            (now,),
        )
        return [row[0] for row in rows]

    async def release_leases(self, owners: Sequence[str]) -> int:
        async def work(conn: Connection) -> int:
            cursor = await conn.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL"
                " WHERE state = 'pending' AND lease_owner = ANY(%s::text[])",
                (list(owners),),
            )
            return cursor.rowcount

        return await self._write(work)

    async def dead_letters(self, app_id: str, *, after: int, limit: int) -> list[DeadLetter]:
        rows = await self._rows(
            "SELECT seq, id, destination, attempts, created_at, first_attempt_at, finished_at,"
            " last_error FROM outbox WHERE app_id = %s AND state = 'dead' AND seq > %s"
            " ORDER BY seq LIMIT %s",
            (app_id, after, limit),
        )
        return [DeadLetter(*row) for row in rows]

    async def replay_dead_letters(self, app_id: str, ids: Sequence[str] | None, now: float) -> int:
        """Make dead deliveries (the ones named, or all) pending again, due now, with a
        fresh retry budget, and enable their destinations again; return how many."""
        named = "" if ids is None else " AND id = ANY(%s::text[])"
        args: tuple[Any, ...] = (app_id,) if ids is None else (app_id, list(ids))

        async def work(conn: Connection) -> int:
            await conn.execute(
                "DELETE FROM hook_destinations WHERE app_id = %s AND destination IN"
                f" (SELECT destination FROM outbox WHERE app_id = %s AND state = 'dead'{named})",
                (app_id, *args),
            )
            cursor = await conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, first_attempt_at = NULL,"
                " next_attempt_at = %s, finished_at = NULL"
                f" WHERE app_id = %s AND state = 'dead'{named}",
                (now, *args),
            )
            return cursor.rowcount

        return await self._write(work)

    async def purge_deliveries(self, before: float) -> int:
        async def work(conn: Connection) -> int:
            cursor = await conn.execute(
                "DELETE FROM outbox WHERE (app_id, seq) IN (SELECT app_id, seq FROM outbox"
                " WHERE state = 'delivered' AND finished_at < %s LIMIT 1000)",
                (before,),
            )
            return cursor.rowcount

        return await self._write(work)

    async def hook_gauges(self) -> dict[str, Any]:
        pending = await self._rows(
            "SELECT destination, count(*), min(created_at) FROM outbox WHERE state = 'pending'"
            " GROUP BY destination ORDER BY destination"
        )
        dead = await self._rows(
            "SELECT destination, count(*) FROM outbox WHERE state = 'dead'"
            " GROUP BY destination ORDER BY destination"
        )
        streams = await self._reading(pg_streams.stream_gauges)
        return {"pending": pending, "dead": dead, "streams": streams}

    async def pending_deliveries(self, app_id: str, destination: str) -> int:
        row = await self._row(
            "SELECT count(*) FROM outbox WHERE app_id = %s AND destination = %s"
            " AND state = 'pending'",
            (app_id, destination),
        )
        return int(row[0]) if row else 0

    async def destination_disabled(self, app_id: str, destination: str) -> bool:
        row = await self._row(
            "SELECT 1 FROM hook_destinations WHERE app_id = %s AND destination = %s",
            (app_id, destination),
        )
        return row is not None

    # -- event streams and in-process hooks (SQL in pg_streams.py) -------------------------

    async def get_event_stream(self, app_id: str) -> EventStreamRecord | None:
        return await self._reading(partial(pg_streams.get_stream, app_id=app_id))

    async def list_event_streams(self) -> list[EventStreamRecord]:
        return await self._reading(pg_streams.list_streams)

    async def put_event_stream(
        self, app_id: str, destination: str, role_arn: str, modified: str, by: str
    ) -> EventStreamRecord:
        return await self._write(partial(pg_streams.put_stream, app_id=app_id,
                                         destination=destination, role_arn=role_arn,
                                         modified=modified, by=by))  # fmt: skip

    async def delete_event_stream(self, app_id: str) -> EventStreamRecord | None:
        return await self._write(partial(pg_streams.delete_stream, app_id=app_id))

    async def read_event_stream(
        self,
        app_id: str,
        after: int,
        limit: int,
        build: Callable[[Sequence[StreamValues], dict[str, bytes]], T],
    ) -> tuple[T, int]:
        async def read(conn: Connection) -> tuple[list[StreamRow], int, dict[str, bytes]]:
            rows, to = await pg_streams.stream_rows(conn, app_id, after, limit)
            keys = [(app_id, row.endpoint_id) for row in rows]
            found = await pg_streams.endpoint_bodies(conn, keys)
            return rows, to, {endpoint_id: body for (_, endpoint_id), body in found.items()}

        rows, to, bodies = await self._reading(read)
        return await asyncio.to_thread(build, rows, bodies), to

    async def advance_event_stream(
        self,
        app_id: str,
        after: int,
        to: int,
        deliveries: Sequence[NewDelivery],
        now: float,
    ) -> bool:
        """Move the cursor and queue the deliveries in one transaction; nothing is
        written if another process moved the cursor, or the stream is gone."""

        async def work(conn: Connection) -> bool:
            if not await pg_streams.move_stream(conn, app_id, after, to):
                return False
            await _enqueue(conn, deliveries, now)
            return True

        return await self._write(work)

    async def open_hook_cursors(self, names: Sequence[str]) -> dict[str, int]:
        return await self._write(partial(pg_streams.ensure_cursors, names=names))

    async def read_hook_stream(
        self,
        name: str,
        limit: int,
        build: Callable[[list[HookRow], dict[tuple[str, str], bytes]], T],
    ) -> tuple[T, int, int]:
        async def read(
            conn: Connection,
        ) -> tuple[int, list[HookRow], dict[tuple[str, str], bytes]]:
            after = await pg_streams.get_cursor(conn, name)
            rows = await pg_streams.rows_after(conn, after, limit)
            keys = [(row.app_id, row.endpoint_id) for row in rows]
            return after, rows, await pg_streams.endpoint_bodies(conn, keys)

        after, rows, bodies = await self._reading(read)
        records = await asyncio.to_thread(build, rows, bodies)
        return records, after, rows[-1].rowid if rows else after

    async def advance_hook_cursor(self, name: str, after: int, to: int) -> bool:
        return await self._write(partial(pg_streams.move_cursor, name=name, after=after, to=to))

    async def hook_lag(self, names: Sequence[str]) -> dict[str, int]:
        return await self._reading(partial(pg_streams.lag, names=names))

    # -- analytics queries ----------------------------------------------------------------

    async def fold_rollups(self) -> None:
        """Fold every pending entry into the rollups (storage/analytics_pg/pending.py)."""

        async def work(conn: Connection) -> None:
            while await pending.fold(conn, wait=True):
                pass

        if await self._reading(pending.waiting):
            await self._write(work)

    async def _fold_now_and_then(self) -> None:
        """Fold what waits every pending.FOLD_SECONDS, unless another collector is."""
        young = True  # a table the folds look up may not be analyzed yet
        while True:
            await asyncio.sleep(pending.FOLD_SECONDS)
            try:
                if await self._reading(pending.waiting):
                    await self._transaction(partial(pending.fold, wait=False))
                    if young:
                        young = await self._reading(pending.analyze_young)
            except Exception:  # the next tick, or another collector, tries again
                logger.exception("PostgreSQL: folding the rollups failed; retrying")

    async def analytics_read(self, fn: Callable[[Any], T]) -> T:
        """Run `fn` in a thread on a synchronous connection, in one read-only,
        repeatable-read transaction: what its statements read agrees."""
        if self._readers is None:
            raise RuntimeError("PostgresStorage.start() has not been awaited")
        readers = self._readers
        await self.fold_rollups()  # what was answered 202 before is in what it reads

        def run() -> T:
            with readers.connection() as conn, conn.transaction():
                return fn(conn)

        try:
            return await asyncio.to_thread(run)
        except TooManyRequests as exc:
            raise Overloaded(str(exc)) from exc
        except (PoolTimeout, errors.OperationalError) as exc:
            raise StorageUnavailable(f"the database is unavailable: {exc}") from exc


# After a deletion of events whose hours are in `gone`, with the application's id as its
# last parameter: one more for each day it took events of (storage/pg_columnar.py).
_COUNT_DELETED = (
    f"INSERT INTO events_deleted (app_id, day, count) SELECT %s,"
    f" floor(hour / {HOURS_PER_DAY}.0)::bigint, 1"
    " FROM gone GROUP BY 2 ON CONFLICT (app_id, day)"
    " DO UPDATE SET count = events_deleted.count + 1"
)
_COUNT_DELETED_NAMED = _COUNT_DELETED.replace("%s", "%(app)s")  # the id named `app`

# Every table of an application's data, which deleting the application empties.
_APP_TABLES = (
    "keys", "endpoints", "events", "event_types", "app_settings", "app_quotas",
    "app_retention", "device_credentials", "push_messages", "push_endpoints", "segments",
    "segment_versions", "import_jobs", "import_members", "campaigns", "campaign_versions",
    "campaign_activities", "campaign_sends", "hook_secrets", "outbox", "hook_destinations",
    "event_streams", *rollups_pg.TABLES, "an_user_keys", "an_pending", "endpoint_values",
    "endpoint_values_pending",
)  # fmt: skip


async def _configure(conn: Connection) -> None:
    # The 202 promise: a commit returns once it is on the server's disk, whatever the
    # server's default.
    await conn.execute("SET synchronous_commit = on")


def _configure_reader(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "SET default_transaction_isolation = 'repeatable read';"
        " SET default_transaction_read_only = on"
    )


def _app(row: tuple[Any, ...]) -> AppRecord:
    return AppRecord(id=row[0], name=row[1], created_at=row[2], tags=orjson.loads(row[3]))


async def _lock(conn: Connection, *key: str) -> None:
    """Take the transaction-level advisory lock named by `key` (released at commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("\x1f".join(key),))


async def _lock_all(conn: Connection, keys: Sequence[Sequence[str]]) -> None:
    """_lock() each of `keys`, in their order, in one statement."""
    if len(keys) == 1:
        await _lock(conn, *keys[0])
    elif keys:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM"
            " (SELECT k FROM unnest(%b::text[]) WITH ORDINALITY AS u(k, n) ORDER BY n) o",
            (["\x1f".join(key) for key in keys],),
        )


# One version of a segment: the head `s` joined to its versions `v`.
# The reads of one version, a page and the versions after one: SQLite's, with our mark.
_SEGMENTS = dataclasses.replace(segments_sql.VERSIONED, mark="%s")


def _segment_record(row: tuple[Any, ...]) -> SegmentRecord:
    app_id, segment_id, version, created_at, modified_at, request, tags = row
    return SegmentRecord(app_id, segment_id, version, created_at, modified_at, request,
                         orjson.loads(tags))  # fmt: skip


async def _segment(
    conn: Connection, app_id: str, segment_id: str, version: int | None
) -> SegmentRecord | None:
    cursor = await conn.execute(*_SEGMENTS.get_query(app_id, segment_id, version))
    row = await cursor.fetchone()
    return _segment_record(row) if row else None


async def _save_import_job(conn: Connection, *, record: ImportJobRecord) -> None:
    await conn.execute(
        "UPDATE import_jobs SET status = %s, total_pieces = %s, segment_id = %s,"
        " completed_pieces = %s, failed_pieces = %s, total_processed = %s,"
        " total_failures = %s, failures = %s, completed_at = %s, owner = %s, heartbeat = %s"
        " WHERE app_id = %s AND job_id = %s",
        (*imports_sql.job_values(record)[4:], record.app_id, record.id),
    )


async def _create_segment(
    conn: Connection, *, record: SegmentRecord, references: Sequence[SegmentReference]
) -> SegmentRecord:
    await _lock(conn, "segments", record.app_id)
    await _check_references(conn, record.app_id, record.id, references)
    await conn.execute(
        "INSERT INTO segments (app_id, segment_id, version, created_at, tags)"
        " VALUES (%s, %s, 1, %s, %s)",
        (record.app_id, record.id, record.created_at, orjson.dumps(record.tags).decode()),
    )
    await conn.execute(
        "INSERT INTO segment_versions (app_id, segment_id, version, created_at, request)"
        " VALUES (%s, %s, 1, %s, %s)",
        (record.app_id, record.id, record.modified_at, record.request),
    )
    return record


async def _update_segment(
    conn: Connection,
    app_id: str,
    segment_id: str,
    request: str,
    modified_at: str,
    references: Sequence[SegmentReference],
) -> SegmentRecord | None:
    await _lock(conn, "segments", app_id)
    if await _segment(conn, app_id, segment_id, None) is None:
        return None
    await _check_references(conn, app_id, segment_id, references)
    await conn.execute(
        "WITH head AS (UPDATE segments SET version = version + 1"
        " WHERE app_id = %s AND segment_id = %s RETURNING version)"
        " INSERT INTO segment_versions (app_id, segment_id, version, created_at, request)"
        " SELECT %s, %s, version, %s, %s FROM head",
        (app_id, segment_id, app_id, segment_id, modified_at, request),
    )
    return await _segment(conn, app_id, segment_id, None)


async def _check_references(
    conn: Connection, app_id: str, segment_id: str, references: Sequence[SegmentReference]
) -> None:
    """Raise SegmentReferenceError unless the references keep the rules of
    segment_references.py. The caller holds the application's segments lock: two
    collectors writing segments that name each other would otherwise both pass."""
    checks = reference_checks(segment_id, references)
    try:
        wanted = next(checks)
        while True:
            wanted = checks.send(await _segment(conn, app_id, *wanted))
    except StopIteration:
        pass


# -- campaigns (SQLite's side: storage/campaigns.py) ---------------------------------------

# One version of a campaign: the head `c` joined to its versions `v`.
_CAMPAIGNS = dataclasses.replace(campaigns_sql.VERSIONED, mark="%s")
_ACTIVITY = (
    "app_id, campaign_id, activity_id, version, scheduled_ms, state, started_at, ended_at,"
    " result, cursor, total, successful, metrics"
)
_NEVER = 1 << 62  # the not_before_ms of an event activity: the scheduler never claims it
_SENT, _DEFERRED = "SENT", "DEFERRED"


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _campaign_record(row: tuple[Any, ...]) -> CampaignRecord:
    app_id, campaign_id, version, created_at, modified_at, request, segment_id, state, tags = row
    return CampaignRecord(app_id, campaign_id, version, created_at, modified_at, request,
                          segment_id, state, orjson.loads(tags))  # fmt: skip


def _activity(row: tuple[Any, ...]) -> ActivityRecord:
    (app_id, campaign_id, activity_id, version, scheduled_ms, state, started_at, ended_at,
     result, cursor, total, successful, metrics) = row  # fmt: skip
    return ActivityRecord(app_id, campaign_id, activity_id, version, scheduled_ms, state,
                          started_at, ended_at, result, cursor, total, successful,
                          orjson.loads(metrics))  # fmt: skip


async def _campaign(
    conn: Connection, app_id: str, campaign_id: str, version: int | None
) -> CampaignRecord | None:
    cursor = await conn.execute(*_CAMPAIGNS.get_query(app_id, campaign_id, version))
    row = await cursor.fetchone()
    return _campaign_record(row) if row else None


async def _pinned_version(
    conn: Connection, app_id: str, segment_id: str, version: int | None
) -> int:
    """The segment version a campaign pins: `version`, checked, or the segment's latest.
    The caller holds the application's segments lock."""
    cursor = await conn.execute(
        "SELECT version FROM segments WHERE app_id = %s AND segment_id = %s", (app_id, segment_id)
    )
    row = await cursor.fetchone()
    return campaigns_sql.pinned_version(segment_id, None if row is None else int(row[0]), version)


async def _add_campaign_version(
    conn: Connection, app_id: str, campaign_id: str, version: int, created_at: str, request: bytes
) -> None:
    await conn.execute(
        "INSERT INTO campaign_versions (app_id, campaign_id, version, created_at, request)"
        " VALUES (%s, %s, %s, %s, %s)",
        (app_id, campaign_id, version, created_at, request.decode()),
    )


async def _delete_campaign(
    conn: Connection, *, app_id: str, campaign_id: str
) -> CampaignRecord | None:
    record = await _campaign(conn, app_id, campaign_id, None)
    if record is None:
        return None
    for table in ("campaign_sends", "campaign_activities", "campaign_versions", "campaigns"):
        await conn.execute(
            f"DELETE FROM {table} WHERE app_id = %s AND campaign_id = %s", (app_id, campaign_id)
        )
    return record


async def _settle_campaign(conn: Connection, app_id: str, campaign_id: str) -> None:
    """The campaign's state from its activities: EXECUTING while one has started,
    SCHEDULED while one waits and none ran, COMPLETED when no run is left, else
    PENDING_NEXT_RUN (as storage/campaigns.py settles it)."""
    await conn.execute(
        "WITH a AS (SELECT bool_or(state = 'RUNNING') AS running,"
        "  bool_or(state = 'COMPLETED') AS completed, bool_or(state = 'PENDING') AS pending"
        "  FROM campaign_activities WHERE app_id = %s AND campaign_id = %s)"
        " UPDATE campaigns SET state = CASE"
        " WHEN coalesce(a.running, false) THEN 'EXECUTING'"
        " WHEN finished AND NOT coalesce(a.pending, false) THEN 'COMPLETED'"
        " WHEN NOT coalesce(a.completed, false) THEN 'SCHEDULED'"
        " ELSE 'PENDING_NEXT_RUN' END"
        " FROM a WHERE app_id = %s AND campaign_id = %s",
        (app_id, campaign_id, app_id, campaign_id),
    )


async def _write_chunk(
    conn: Connection,
    activity: ActivityRecord,
    owner: str | None,
    sends: Sequence[CampaignSend],
    cursor: str | None,
    lease_until_ms: int,
    queue_limit: int,
    custom: Callable[[Sequence[CampaignSend]], Sequence[NewDelivery]] | None,
    *,
    rollups: bool,
) -> ChunkWritten:
    """write_campaign_chunk's transaction. The activity's row is locked first: a
    collector taking over the lease waits for the chunk, then sees where it stopped."""
    key = (activity.app_id, activity.campaign_id, activity.id)
    if rollups:  # first, as ingest takes it (storage/analytics_pg/pending.py)
        await pending.share_gate(conn)
    found = await conn.execute(
        "SELECT lease_owner, metrics FROM campaign_activities"
        " WHERE app_id = %s AND campaign_id = %s AND activity_id = %s FOR UPDATE",
        key,
    )
    row = await found.fetchone()
    if row is None or (owner is not None and row[0] != owner):
        return ChunkWritten(lease_held=False)
    metrics: dict[str, int] = orjson.loads(row[1])
    messages: list[PushMessage] = []
    fresh: list[CampaignSend] = []
    events: list[EventRow] = []
    sent = 0
    for send in await _recorded_sends(conn, activity, sends):
        metrics[send.status] = metrics.get(send.status, 0) + 1
        if send.status == _SENT:
            sent += 1
        if send.message is not None:
            messages.append(send.message)
        if send.custom is not None and send.status == _SENT:
            fresh.append(send)
        if send.event is not None:
            events.append(send.event)
    queued = await _queue_push(
        conn, app_id=activity.app_id, messages=messages, queue_limit=queue_limit
    )
    if fresh and custom is not None:
        # The custom channel's calls are committed with the sends they make.
        await _enqueue(conn, custom(fresh), time.time())
    if events:
        # The collector's own event types are not held to the per-app limit.
        await _admit_types(conn, activity.app_id, {row.event_type for row in events}, 1 << 30)
        new = await _insert_events(conn, activity.app_id, events)
        if new and rollups:  # analytics hook: folded later, as PutEvents' events are
            stored = _new_rows(activity.app_id, events, new)
            await pending.stage(conn, rollups_math.summarize(stored), {})
    await conn.execute(
        "UPDATE campaign_activities SET metrics = %s, total = total + %s,"
        " successful = successful + %s, cursor = coalesce(%s, cursor), lease_until_ms = %s"
        " WHERE app_id = %s AND campaign_id = %s AND activity_id = %s",
        (orjson.dumps(metrics).decode(), sent, sent, cursor, lease_until_ms, *key),
    )
    return ChunkWritten(True, list(zip(messages, queued.seqs, strict=True)))


_UPSERT_SENDS = (
    " ON CONFLICT (app_id, campaign_id, activity_id, endpoint_id) DO UPDATE SET"
    " status = excluded.status, treatment_id = excluded.treatment_id,"
    " at_ms = excluded.at_ms, message_id = excluded.message_id"
    " WHERE campaign_sends.status = 'DEFERRED'"
)
_ONE_SEND = (
    "INSERT INTO campaign_sends (app_id, campaign_id, activity_id, endpoint_id, status,"
    " treatment_id, at_ms, message_id, session_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)" + _UPSERT_SENDS + " RETURNING 1"
)
_MANY_SENDS = (
    "INSERT INTO campaign_sends (app_id, campaign_id, activity_id, endpoint_id, status,"
    " treatment_id, at_ms, message_id, session_id)"
    " SELECT %s, %s, u.* FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::bigint[], %s::text[], %s::text[]) AS u"
    + _UPSERT_SENDS
    + " RETURNING activity_id, endpoint_id"
)


async def _recorded_sends(
    conn: Connection, activity: ActivityRecord, sends: Sequence[CampaignSend]
) -> list[CampaignSend]:
    """Record `sends` and return those to count, in order (storage/campaigns.py's
    `_recorded`): one statement for the chunk, whose RETURNING names the keys it stored;
    one a send when a key comes twice in the chunk, which one statement may not update
    twice (and the first is kept)."""
    keys = [(campaigns_sql.send_activity_id(activity, send), send.endpoint_id) for send in sends]
    if len(set(keys)) < len(keys):
        counted = []
        for send, (activity_id, _) in zip(sends, keys, strict=True):
            written = await conn.execute(_ONE_SEND, (
                activity.app_id, activity.campaign_id, activity_id, send.endpoint_id,
                send.status, send.treatment_id, send.at_ms,
                send.message.message_id if send.message else None, send.session_id,
            ))  # fmt: skip
            if await written.fetchone() is not None and send.status != _DEFERRED:
                counted.append(send)
        return counted
    if not sends:
        return []
    written = await conn.execute(_MANY_SENDS, (
        activity.app_id, activity.campaign_id,
        [k[0] for k in keys], [k[1] for k in keys], [s.status for s in sends],
        [s.treatment_id for s in sends], [s.at_ms for s in sends],
        [s.message.message_id if s.message else None for s in sends],
        [s.session_id for s in sends],
    ))  # fmt: skip
    stored = {(row[0], row[1]) for row in await written.fetchall()}
    return [
        send for send, key in zip(sends, keys, strict=True)
        if send.status != _DEFERRED and key in stored
    ]  # fmt: skip


# -- hooks and the outbox (SQLite's side: storage/outbox.py) -------------------------------

_SECRETS = "SELECT current, previous, rotated_at FROM hook_secrets WHERE app_id = %s"
_DELIVERY = (
    "seq, id, app_id, destination, ordered, body, content_type, content_encoding, attempts,"
    " created_at, first_attempt_at"
)
# The due deliveries, ranked per destination as on SQLite, unlocked; then the ones picked,
# locked SKIP LOCKED with their lease checked again on the row as it is once locked; then
# leased. A window function cannot go with FOR UPDATE in one SELECT, hence the steps.
_CLAIM = f"""
    WITH due AS (
        SELECT o.app_id, o.seq, o.next_attempt_at, row_number() OVER (
            PARTITION BY o.destination ORDER BY o.next_attempt_at, o.seq) AS n
        FROM outbox o
        WHERE o.state = 'pending' AND o.next_attempt_at <= %(now)s
          AND (o.lease_until IS NULL OR o.lease_until < %(now)s)
          AND NOT o.seq = ANY(%(held)s::bigint[])
          AND NOT o.destination = ANY(%(busy)s::text[])
          AND NOT EXISTS (SELECT 1 FROM hook_destinations d
                          WHERE d.app_id = o.app_id AND d.destination = o.destination)
          AND (NOT o.ordered OR NOT EXISTS (
              SELECT 1 FROM outbox p WHERE p.state = 'pending'
              AND p.app_id = o.app_id AND p.destination = o.destination AND p.seq < o.seq))
    ), picked AS (
        SELECT o.app_id, o.seq FROM outbox o
        WHERE (o.app_id, o.seq) IN (
            SELECT app_id, seq FROM due WHERE n <= %(per_destination)s
            ORDER BY next_attempt_at, seq LIMIT %(limit)s)
          AND o.state = 'pending' AND (o.lease_until IS NULL OR o.lease_until < %(now)s)
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox o SET lease_owner = %(owner)s, lease_until = %(until)s
    FROM picked WHERE o.app_id = picked.app_id AND o.seq = picked.seq
    RETURNING {", ".join(f"o.{column.strip()}" for column in _DELIVERY.split(","))}
"""


def _delivery(row: tuple[Any, ...]) -> Delivery:
    values = list(row)
    values[4] = int(values[4])  # ordered, 0 or 1 as SQLite gives it
    values[5] = bytes(values[5])  # body
    return Delivery(*values)


async def _secrets(conn: Connection, app_id: str) -> HookSecrets:
    cursor = await conn.execute(_SECRETS, (app_id,))
    row = await cursor.fetchone()
    assert row is not None
    return HookSecrets(*row)


async def _enqueue(conn: Connection, deliveries: Sequence[NewDelivery], now: float) -> None:
    async with conn.cursor() as insert:
        await insert.executemany(
            "INSERT INTO outbox (id, app_id, destination, ordered, body, content_type,"
            " content_encoding, created_at, next_attempt_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(d.id, d.app_id, d.destination, d.ordered, d.body, d.content_type,
              d.content_encoding, now, now) for d in deliveries],
        )  # fmt: skip


async def _disable(conn: Connection, app_id: str, destination: str, now: float, error: str) -> None:
    """The destination answered 410: disable it for the application, and dead-letter what
    still waits for it there, to be replayed once it is enabled again."""
    await conn.execute(
        "INSERT INTO hook_destinations (app_id, destination, disabled_at, reason)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (app_id, destination) DO UPDATE SET"
        " disabled_at = excluded.disabled_at, reason = excluded.reason",
        (app_id, destination, now, error),
    )
    await conn.execute(
        "UPDATE outbox SET state = 'dead', finished_at = %s, last_error = %s,"
        " lease_owner = NULL, lease_until = NULL"
        " WHERE app_id = %s AND destination = %s AND state = 'pending'",
        (now, f"not sent: the destination was disabled ({error})", app_id, destination),
    )


async def _upsert_endpoints(
    conn: Connection,
    app_id: str,
    items: Sequence[EndpointUpdate],
    merge: EndpointMerge,
    max_user_endpoints: int,
    *,
    refuse: bool,
    held: _Held | None = None,
) -> list[tuple[int, str]]:
    """Merge each update into its endpoint. With `refuse`, an update that breaks a rule
    is left out, and returned as (its index, why); without, it raises and the
    transaction writes nothing. `held`: the locks _lock_endpoints() took for them, whose
    holder writes what they hold (_Held.write) before anything reads the endpoints
    again; without, they are written before this returns."""
    if not items:
        return []
    alone = held is None
    if held is None:
        held = await _lock_endpoints(conn, [(app_id, items)])
    refused = []
    for index, item in enumerate(items):
        try:
            await _upsert_endpoint(conn, app_id, item, merge, max_user_endpoints, held)
        except (UserEndpointLimit, ValueError) as exc:
            if not refuse:
                raise
            refused.append((index, str(exc)))
    if alone:
        await held.write(conn)
    return refused


class _Raced(Exception):
    """Another transaction made an endpoint that this one found missing and meant to
    make: this one runs again (PostgresStorage._transaction), and merges into it."""


@dataclasses.dataclass
class _Held:
    """The endpoints a transaction locked, with their bodies, and the users it locked;
    the endpoints of the users it read (`members`); what it merged into them, not written
    yet (`pending`). Each holds the writes made so far, those not written yet included."""

    bodies: dict[str, dict[str, str]]  # application -> endpoint id -> body
    users: dict[str, set[str]]  # application -> user ids
    members: dict[tuple[str, str], dict[str, str]] = dataclasses.field(default_factory=dict)
    # (application, endpoint id) -> (user id, body, whether its row is stored)
    pending: dict[tuple[str, str], tuple[str | None, str, bool]] = dataclasses.field(
        default_factory=dict
    )
    stored: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # rows in the table

    async def members_of(self, conn: Connection, app_id: str, user_id: str) -> dict[str, str]:
        """The user's endpoints (endpoint id -> body), read under the user's lock, taken
        now if it is not held yet: whoever links an endpoint to the user, or unlinks
        one from it, takes that lock first."""
        found = self.members.get((app_id, user_id))
        if found is None:
            locked = self.users.setdefault(app_id, set())
            if user_id not in locked:
                await _lock(conn, "user", app_id, user_id)
                locked.add(user_id)
            await self.read_members(conn, [(app_id, user_id)])
            found = self.members[(app_id, user_id)]
        return found

    async def read_members(self, conn: Connection, users: Sequence[tuple[str, str]]) -> None:
        """Read the endpoints of the (application, user id)s, whose locks are held, in
        one statement."""
        if not users:
            return
        cursor = await conn.execute(
            "SELECT v.app_id, v.user_id, e.endpoint_id, e.body FROM unnest(%b::text[],"
            " %b::text[]) AS v(app_id, user_id) CROSS JOIN LATERAL (SELECT endpoint_id, body"
            " FROM endpoints e WHERE e.app_id = v.app_id AND e.user_id = v.user_id OFFSET 0)"
            " AS e",
            analytics_pg.columns(users, 2),
        )
        wanted = set(users)
        for key in wanted:
            self.members[key] = {}
        for app_id, user_id, endpoint_id, body in await cursor.fetchall():
            self.members[(app_id, user_id)][endpoint_id] = body
        # What this transaction merged and holds to write is theirs already.
        for (app_id, endpoint_id), (user_id, body, _) in self.pending.items():
            for key in wanted:
                if key[0] != app_id:
                    continue
                if key[1] == user_id:
                    self.members[key][endpoint_id] = body
                else:
                    self.members[key].pop(endpoint_id, None)

    def merged(
        self, app_id: str, endpoint_id: str, old_user: str | None, user_id: str | None, body: str
    ) -> None:
        """Hold a merged endpoint until write()."""
        key = (app_id, endpoint_id)
        self.pending[key] = (user_id, body, key in self.stored)
        self.bodies.setdefault(app_id, {})[endpoint_id] = body
        if old_user is not None:
            self.members.get((app_id, old_user), {}).pop(endpoint_id, None)
        if user_id is not None and (app_id, user_id) in self.members:
            self.members[(app_id, user_id)][endpoint_id] = body

    async def write(self, conn: Connection) -> None:
        """Write the endpoints merged since the last write, in one statement: those
        stored are locked; should another transaction have made one of the others
        meanwhile, this one runs again (_Raced)."""
        if not self.pending:
            return
        rows = [(*key, *value) for key, value in self.pending.items()]
        self.stored.update(self.pending)
        self.pending = {}
        cursor = await conn.execute(
            "WITH v AS (SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[],"
            " %b::bool[]) AS v(app_id, endpoint_id, user_id, body, stored)),"
            " changed AS (UPDATE endpoints AS e SET user_id = v.user_id, body = v.body FROM v"
            " WHERE v.stored AND e.app_id = v.app_id AND e.endpoint_id = v.endpoint_id"
            " RETURNING 1),"
            " made AS (INSERT INTO endpoints (app_id, endpoint_id, user_id, body)"
            " SELECT app_id, endpoint_id, user_id, body FROM v WHERE NOT stored"
            " ON CONFLICT DO NOTHING RETURNING 1)"
            " SELECT (SELECT count(*) FROM changed) + (SELECT count(*) FROM made)",
            analytics_pg.columns(rows, 5),
        )
        row = await cursor.fetchone()
        if row is None or row[0] != len(rows):
            raise _Raced(f"{len(rows) - (row[0] if row else 0)} endpoints made meanwhile")


async def _lock_endpoints(
    conn: Connection, updates: Sequence[tuple[str, Sequence[EndpointUpdate]]]
) -> _Held:
    """Lock the endpoints that exist of the (application, updates), then the users the
    updates may link an endpoint to, and read those users' endpoints."""
    by_app: dict[str, list[EndpointUpdate]] = {}
    for app_id, items in updates:
        by_app.setdefault(app_id, []).extend(items)
    held = _Held({}, {})
    # In (application, id) order: transactions that share endpoints wait for one another
    # instead of deadlocking.
    for app_id in sorted(by_app):
        cursor = await conn.execute(
            "SELECT endpoint_id, body FROM endpoints WHERE app_id = %s"
            " AND endpoint_id = ANY(%s) ORDER BY endpoint_id FOR UPDATE",
            (app_id, sorted({item.endpoint_id for item in by_app[app_id]})),
        )
        held.bodies[app_id] = dict(await cursor.fetchall())
        held.stored.update((app_id, endpoint_id) for endpoint_id in held.bodies[app_id])
    # The users, locked in order too, before any is counted: two transactions that each
    # took one and waited for the other's would deadlock. One statement for them all.
    keys = []
    for app_id in sorted(by_app):
        locked = held.users[app_id] = set()
        for user_id in sorted(_new_users(by_app[app_id], held.bodies[app_id])):
            keys.append(("user", app_id, user_id))
            locked.add(user_id)
    await _lock_all(conn, keys)
    # Each is counted before an endpoint is linked to it (and its endpoints read for the
    # demographic counters): one statement for them all too.
    await held.read_members(conn, [(app_id, user_id) for _, app_id, user_id in keys])
    return held


async def _upsert_endpoint(
    conn: Connection,
    app_id: str,
    item: EndpointUpdate,
    merge: EndpointMerge,
    max_user_endpoints: int,
    held: _Held,
) -> None:
    # Rules are checked before anything is held to be written, so a refused update leaves
    # no trace.
    body = held.bodies.setdefault(app_id, {}).get(item.endpoint_id)
    existing = orjson.loads(body) if body is not None else None
    merged = merge(item.endpoint_id, existing, item.update)
    if merged is existing:
        return  # nothing changed
    user_id, old_user_id = user_ids(existing, merged)
    if user_id is not None and user_id != old_user_id:
        # The user's lock keeps two collectors from taking its last free place at once.
        count = len(await held.members_of(conn, app_id, user_id))
        if count >= max_user_endpoints:
            raise UserEndpointLimit(user_id, count, max_user_endpoints)
    if old_user_id is not None and user_id != old_user_id:  # analytics hook
        await analytics_pg.call(
            conn, rollups_math.user_changed, app_id, item.endpoint_id, old_user_id
        )
    # The demographic counters, from what the users' other endpoints hold (see
    # storage/endpoint_values.py).
    users = endpoint_values.users_to_read(existing, merged)
    if users is not None:
        others = {
            user: endpoint_values.held(
                (await held.members_of(conn, app_id, user)).items(), item.endpoint_id
            )
            for user in sorted(set(users))
        }
        await values_pg.count(conn, app_id, existing, merged, others)
    held.merged(app_id, item.endpoint_id, old_user_id, user_id, orjson.dumps(merged).decode())


def _new_users(items: Sequence[EndpointUpdate], bodies: dict[str, str]) -> set[str]:
    """The user ids that the updates give to endpoints stored with another user, or not
    stored: only merging an update decides, but it can link no other user."""
    users = set()
    for item in items:
        user_id = (item.update.get("User") or {}).get("UserId")
        if user_id is None:
            continue
        body = bodies.get(item.endpoint_id)
        if body is None or (orjson.loads(body).get("User") or {}).get("UserId") != user_id:
            users.add(user_id)
    return users


async def _admit_types(
    conn: Connection, app_id: str, types: set[str], limit: int, known: set[str] | None = None
) -> set[str]:
    """Register the event types the application has not seen, up to its limit; return
    the ones refused. `known`: types the application is known to have already."""
    if known is not None:
        types = types - known
    if not types:
        return set()
    known_sql = "SELECT event_type FROM event_types WHERE app_id = %s AND event_type = ANY(%s)"
    cursor = await conn.execute(known_sql, (app_id, list(types)))
    new = types - {row[0] for row in await cursor.fetchall()}
    if not new:
        return set()  # the common case: no lock
    await _lock(conn, "types", app_id)
    cursor = await conn.execute(known_sql, (app_id, list(new)))  # added while we waited?
    new -= {row[0] for row in await cursor.fetchall()}
    cursor = await conn.execute("SELECT count(*) FROM event_types WHERE app_id = %s", (app_id,))
    row = await cursor.fetchone()
    room = limit - (int(row[0]) if row else 0)
    admitted = sorted(new)[: max(room, 0)]
    if admitted:
        async with conn.cursor() as insert:
            now = datetime.now(timezone.utc).isoformat()
            await insert.executemany(
                "INSERT INTO event_types (app_id, event_type, created_at) VALUES (%s, %s, %s)",
                [(app_id, event_type, now) for event_type in admitted],
            )
    return new - set(admitted)


@dataclasses.dataclass
class _Batch:
    """One put_events() call, waiting for its group's transaction."""

    app_id: str
    endpoints: Sequence[EndpointUpdate]
    events: Sequence[EventRow]
    merge: EndpointMerge
    max_event_types: int
    max_user_endpoints: int
    summary: Summary | None
    result: asyncio.Future[IngestResult]
    device: DeviceCheck | None = None


def _take_group(waiting: list[_Batch]) -> list[_Batch]:
    """Take the first batches waiting, as many as one transaction writes (one at least)."""
    taken, events = 0, 0
    for batch in waiting:
        events += len(batch.events)
        if taken and (taken == _GROUP_BATCHES or events > _GROUP_EVENTS):
            break
        taken += 1
    group = waiting[:taken]
    del waiting[:taken]
    return group


async def _put_group(
    group: Sequence[_Batch], rollups: bool, conn: Connection
) -> list[IngestResult]:
    """Write the batches in order, as each would be alone, in the caller's transaction.

    Locks are taken in the module's order across the group: all its endpoints, then its
    users, then its applications' types, so that groups cannot deadlock one another. The
    rollups of all the batches are appended last, to be folded in later (see pending.py)."""
    results = [IngestResult() for _ in group]  # made again if the transaction runs again
    if rollups:
        await pending.share_gate(conn)
    held = await _lock_endpoints(conn, [(batch.app_id, batch.endpoints) for batch in group])
    credentials = await _device_credentials(conn, group)
    known = await _known_types(conn, group)
    if len({batch.app_id for batch in group}) > 1:
        await _lock_types(conn, group, known)
    staged = _Rollups()
    # The batches whose events are not inserted yet: the events of a group go in one
    # statement, before its rollups are staged (or before a batch changes the user of
    # an endpoint whose events are waiting), in the batches' order.
    waiting: list[tuple[_Batch, IngestResult, list[EventRow]]] = []
    for batch, result in zip(group, results, strict=True):
        app_id, endpoints, merge = batch.app_id, batch.endpoints, batch.merge
        if batch.device is not None:
            merge, result.locked = batch.device.merge(merge, credentials.get(app_id, {}))
        if staged.counts_user_of(app_id, endpoints, held.bodies.get(app_id, {})):
            # The rollups count events under their endpoint's user of the moment.
            await _insert_waiting(conn, waiting, staged if rollups else None)
            await held.write(conn)
            await staged.add(conn, held)
        refused = await _upsert_endpoints(
            conn, app_id, endpoints, merge, batch.max_user_endpoints, refuse=True, held=held
        )
        for index, message in refused:
            result.endpoint_errors[endpoints[index].endpoint_id] = message
        types = {event.event_type for event in batch.events}
        result.rejected_types = await _admit_types(
            conn, app_id, types, batch.max_event_types, known.get(app_id)
        )
        rows = [row for row in batch.events if row.event_type not in result.rejected_types]
        waiting.append((batch, result, rows))
        if rollups:  # whether or not they turn out new
            staged.endpoints.update((app_id, row.endpoint_id) for row in rows)
    await held.write(conn)  # the group's endpoints, in one statement
    await _insert_waiting(conn, waiting, staged if rollups else None)
    await staged.add(conn, held)
    return results


async def _insert_waiting(
    conn: Connection,
    waiting: list[tuple[_Batch, IngestResult, list[EventRow]]],
    staged: _Rollups | None,
) -> None:
    """Insert the events of the batches waiting, in one statement, and empty `waiting`.
    Each batch's result counts the rows that were new, of an event sent twice the first
    in the batches' order, the one the statement inserted, as if each batch had been
    inserted alone in turn; `staged` (None: no rollups) gets what the new rows add."""
    if not waiting:
        return
    parts = [(batch.app_id, rows) for batch, _, rows in waiting]
    fresh = (
        None if await _insert_new_events(conn, parts) else set(await _insert_events_of(conn, parts))
    )
    for batch, result, rows in waiting:
        app_id = batch.app_id
        if fresh is None:  # every row was new
            new = rows
        else:
            new = []
            for row in rows:
                key = (app_id, row.endpoint_id, row.event_id, row.event_type, row.timestamp_ms)
                if key in fresh:
                    fresh.remove(key)
                    new.append(row)
        result.stored = len(new)
        if new and staged is not None:  # analytics hook: only the rows just added, each once
            if batch.summary is not None and len(new) == len(batch.events):  # as summed
                staged.summaries.append((app_id, batch.summary))
            else:
                staged.rows.extend((app_id, *row) for row in new)
    waiting.clear()


async def _device_credentials(
    conn: Connection, group: Sequence[_Batch]
) -> dict[str, dict[str, str]]:
    """The device credentials stored for the endpoints of the group's batches that check
    them (application -> endpoint id -> SHA-256): one statement for the group, where each
    request used to read them in a round trip of its own before its write."""
    apps: list[str] = []
    ids: list[str] = []
    for batch in group:
        if batch.device is not None:
            unique = dict.fromkeys(batch.device.endpoint_ids)
            apps.extend([batch.app_id] * len(unique))
            ids.extend(unique)
    if not ids:
        return {}
    cursor = await conn.execute(
        "SELECT app_id, endpoint_id, secret_sha256 FROM device_credentials"
        " WHERE (app_id, endpoint_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
        (apps, ids),
    )
    found: dict[str, dict[str, str]] = {}
    for app_id, endpoint_id, secret in await cursor.fetchall():
        found.setdefault(app_id, {})[endpoint_id] = secret
    return found


@dataclasses.dataclass
class _Rollups:
    """What a group's batches add to the rollups, not added yet."""

    summaries: list[tuple[str, Summary]] = dataclasses.field(default_factory=list)
    rows: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)  # summed in the thread
    endpoints: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # of their events

    def counts_user_of(
        self, app_id: str, items: Sequence[EndpointUpdate], bodies: dict[str, str]
    ) -> bool:
        """Whether the updates may give an endpoint of these events another user than
        the one it has now (or one, if it is not stored)."""
        for item in items:
            if "User" not in item.update or (app_id, item.endpoint_id) not in self.endpoints:
                continue
            user_id = (item.update.get("User") or {}).get("UserId")
            body = bodies.get(item.endpoint_id)
            if body is None or (orjson.loads(body).get("User") or {}).get("UserId") != user_id:
                return True
        return False

    async def add(self, conn: Connection, held: _Held) -> None:
        """Append them to the rollups' pending entries (storage/analytics_pg/pending.py),
        each endpoint's activity under the user it has now."""
        if self.summaries or self.rows:
            summaries = [*self.summaries, *rollups_math.summarize(self.rows)]
            known: dict[str, dict[str, str | None]] = {}
            for app_id, summary in summaries:
                bodies = held.bodies.get(app_id, {})
                users = known.setdefault(app_id, {})
                for endpoint_id in summary.hours:
                    body = bodies.get(endpoint_id)
                    if body is not None and endpoint_id not in users:
                        users[endpoint_id] = (orjson.loads(body).get("User") or {}).get("UserId")
            await pending.stage(conn, summaries, known)
        self.summaries, self.rows, self.endpoints = [], [], set()


def _group_types(group: Sequence[_Batch]) -> dict[str, set[str]]:
    """Application -> the event types of the group's batches."""
    types: dict[str, set[str]] = {}
    for batch in group:
        types.setdefault(batch.app_id, set()).update(event.event_type for event in batch.events)
    return types


async def _known_types(conn: Connection, group: Sequence[_Batch]) -> dict[str, set[str]]:
    """Application -> those of the group's event types it has already, in one statement:
    the common case, every type known, needs no statement of each batch's then."""
    apps: list[str] = []
    types: list[str] = []
    for app_id, kinds in _group_types(group).items():
        apps.extend([app_id] * len(kinds))
        types.extend(kinds)
    known: dict[str, set[str]] = {}
    if types:
        cursor = await conn.execute(
            "SELECT app_id, event_type FROM event_types WHERE (app_id, event_type)"
            " IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
            (apps, types),
        )
        for app_id, event_type in await cursor.fetchall():
            known.setdefault(app_id, set()).add(event_type)
    return known


async def _lock_types(
    conn: Connection, group: Sequence[_Batch], known: dict[str, set[str]]
) -> None:
    """Lock, in application order, the types of each application the group may add a
    type to (`known`: those it has already): _admit_types() takes these locks again, as
    it would alone, in any order."""
    types = _group_types(group)
    for app_id in sorted(types):
        if types[app_id] - known.get(app_id, set()):
            await _lock(conn, "types", app_id)


async def _insert_events(
    conn: Connection, app_id: str, rows: Sequence[EventRow]
) -> list[tuple[str, str, str, int]]:
    """Insert the rows; return the (endpoint id, event id, type, Timestamp) of those that
    were new (an event sent before has the same key, and is left as it is)."""
    return [key[1:] for key in await _insert_events_of(conn, [(app_id, rows)])]


async def _insert_events_of(
    conn: Connection, parts: Sequence[tuple[str, Sequence[EventRow]]]
) -> list[tuple[str, str, str, str, int]]:
    """Insert the rows of each (application, rows), in order, each column as one array,
    in one statement; return the (application, endpoint id, event id, type, Timestamp)
    of those that were new: of an event sent before, or twice here, the one stored first.

    The arrays go in binary (%b): as text, every body is spelled out in hex and read
    back by the server. bench/storage_put_events.py: 131 -> 82 us of machine CPU per
    stored event, 54% -> 83% of SQLite's events/s."""
    insert = _event_columns(parts)
    if insert is None:
        return []
    cursor = await conn.execute(
        f"WITH stored AS ({insert[0]} ON CONFLICT DO NOTHING"
        " RETURNING app_id, endpoint_id, event_id, event_type, ts) SELECT * FROM stored",
        insert[1],
    )
    return await cursor.fetchall()


async def _insert_new_events(
    conn: Connection, parts: Sequence[tuple[str, Sequence[EventRow]]]
) -> bool:
    """Insert the rows of each (application, rows) as _insert_events_of() does, if none
    of them was stored before nor comes twice, and return True; else insert nothing and
    return False.

    The common case, events sent once, is a plain INSERT: ON CONFLICT looks each key up
    before it inserts the row, and confirms the row after, which cost the server 2.5 us
    of CPU per event of the ~8 that inserting one costs. An event sent again fails the
    statement, under a savepoint, and the caller inserts them again the other way."""
    insert = _event_columns(parts)
    if insert is None:
        return True
    await conn.execute("SAVEPOINT homing_events")
    try:
        await conn.execute(*insert)
    except errors.UniqueViolation:
        await conn.execute("ROLLBACK TO SAVEPOINT homing_events")
        return False
    return True


# Each event's position (storage/pg_streams.py): its transaction's, plus its rank; its
# hour, its Timestamp's (rounded down, as Python's // does).
_INSERT_EVENTS = (
    "INSERT INTO events (app_id, hour, endpoint_id, event_id, event_type, ts, arrival,"
    f" session_id, body, pos) SELECT {{app}}, CASE WHEN u.ts >= 0 THEN u.ts / {HOUR_MS}"
    f" ELSE (u.ts + 1) / {HOUR_MS} - 1 END, u.e, u.i, u.t, u.ts, u.a, u.s, u.b,"
    f" {pg_streams.NEXT_POSITION} + u.n - 1 FROM unnest({{apps}}%b::text[], %b::text[],"
    " %b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::bytea[])"
    " WITH ORDINALITY AS u({p}e, i, t, ts, a, s, b, n)"
)
# The application of every row, as one value (the common case) or one per row.
_INSERT_EVENTS_OF_ONE = _INSERT_EVENTS.format(app="%b::text", apps="", p="")
_INSERT_EVENTS_OF_MANY = _INSERT_EVENTS.format(app="u.p", apps="%b::text[], ", p="p, ")


def _event_columns(
    parts: Sequence[tuple[str, Sequence[EventRow]]],
) -> tuple[str, tuple[Any, ...]] | None:
    """The statement that inserts the rows of each (application, rows), and its
    parameters, each column one array; None if there are no rows."""
    rows: list[EventRow] = []
    for _app_id, part in parts:
        rows.extend(part)
    if not rows:
        return None
    if len(rows) > pg_streams.MAX_RANK:
        raise ValueError(f"rows: at most {pg_streams.MAX_RANK} events in one transaction")
    endpoint_ids, event_ids, types, stamps, arrivals, sessions, bodies = zip(*rows, strict=True)
    columns = (list(endpoint_ids), list(event_ids), list(types), list(stamps), list(arrivals),
               list(sessions), list(bodies))  # fmt: skip
    apps = {app_id for app_id, part in parts if part}
    if len(apps) == 1:
        return _INSERT_EVENTS_OF_ONE, (apps.pop(), *columns)
    each = [app_id for app_id, part in parts for _ in part]
    return _INSERT_EVENTS_OF_MANY, (each, *columns)


def _new_rows(
    app_id: str, rows: Sequence[EventRow], new: Sequence[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """The rows whose key is in `new`, the first of each key only, with their app."""
    fresh = set(new)
    stored = []
    for row in rows:
        key = (row.endpoint_id, row.event_id, row.event_type, row.timestamp_ms)
        if key in fresh:
            fresh.remove(key)
            stored.append((app_id, *row))
    return stored


async def _queue_push(
    conn: Connection, *, app_id: str, messages: Sequence[PushMessage], queue_limit: int
) -> PushQueued:
    """Store the messages, each endpoint's numbered after its last; then drop each
    endpoint's oldest unacknowledged ones beyond `queue_limit`."""
    # Stamped in the transaction, so that other collectors polling for new rows by
    # time (push_changes) see them in about the order they commit.
    now_ms = epoch_ms()
    by_endpoint: dict[str, list[PushMessage]] = {}
    for message in messages:
        by_endpoint.setdefault(message.endpoint_id, []).append(message)
    seqs: dict[str, int] = {}  # message id -> its seq
    dropped = 0
    rows = []
    # Each endpoint's counter row, locked in id order (no deadlock between two
    # sends to the same endpoints) until the commit: its messages are numbered
    # and bounded by one transaction at a time.
    for endpoint_id in sorted(by_endpoint):
        queued = by_endpoint[endpoint_id]
        cursor = await conn.execute(
            "INSERT INTO push_endpoints (app_id, endpoint_id, last_seq)"
            " VALUES (%s, %s, %s) ON CONFLICT (app_id, endpoint_id)"
            " DO UPDATE SET last_seq = push_endpoints.last_seq + excluded.last_seq"
            " RETURNING last_seq",
            (app_id, endpoint_id, len(queued)),
        )
        row = await cursor.fetchone()
        first = int(row[0]) - len(queued) + 1 if row else 1
        for seq, message in enumerate(queued, start=first):
            seqs[message.message_id] = seq
            rows.append((app_id, endpoint_id, seq, message.message_id, message.silent,
                         message.payload, message.campaign_id, now_ms,
                         message.expires_at))  # fmt: skip
    # Delivered to every collector's LISTEN at the commit (push_changes).
    await conn.execute("SELECT pg_notify(%s, '')", (PUSH_CHANNEL,))
    async with conn.cursor() as insert:
        await insert.executemany(
            "INSERT INTO push_messages (app_id, endpoint_id, seq, message_id, silent,"
            " payload, campaign_id, created_at, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    for endpoint_id in sorted(by_endpoint):
        dropped += await _bound_push(conn, app_id, endpoint_id, queue_limit)
    return PushQueued([seqs[message.message_id] for message in messages], dropped)


async def _bound_push(conn: Connection, app_id: str, endpoint_id: str, limit: int) -> int:
    """Drop the endpoint's oldest unacknowledged messages beyond `limit`; return how many."""
    cursor = await conn.execute(
        "DELETE FROM push_messages WHERE app_id = %s AND endpoint_id = %s AND seq IN"
        " (SELECT seq FROM push_messages WHERE app_id = %s AND endpoint_id = %s"
        "  AND delivered_at IS NULL ORDER BY seq DESC OFFSET %s)",
        (app_id, endpoint_id, app_id, endpoint_id, limit),
    )
    excess = cursor.rowcount
    if excess:
        await conn.execute(
            "UPDATE push_endpoints SET dropped = dropped + %s"
            " WHERE app_id = %s AND endpoint_id = %s",
            (excess, app_id, endpoint_id),
        )
    return excess


async def _delete_endpoints(conn: Connection, app_id: str, ids: list[str]) -> list[Endpoint]:
    deleted = []
    for endpoint_id in ids:
        # Even a credential claimed before its endpoint was made goes.
        await conn.execute(
            "DELETE FROM device_credentials WHERE app_id = %s AND endpoint_id = %s",
            (app_id, endpoint_id),
        )
        cursor = await conn.execute(
            "DELETE FROM endpoints WHERE app_id = %s AND endpoint_id = %s RETURNING body",
            (app_id, endpoint_id),
        )
        row = await cursor.fetchone()
        if row is None:
            continue
        endpoint = orjson.loads(row[0])
        await values_pg.changed(conn, app_id, endpoint_id, endpoint, None)
        await analytics_pg.call(  # analytics hook, before the events go
            conn, rollups_math.remove_endpoint, app_id, endpoint_id,
            (endpoint.get("User") or {}).get("UserId"),
        )  # fmt: skip
        await conn.execute(
            f"WITH gone AS (DELETE FROM events WHERE {rollups_pg.ENDPOINT_EVENTS}"
            f" RETURNING hour) {_COUNT_DELETED_NAMED}",
            {"app": app_id, "endpoint": endpoint_id},
        )
        # Its push counter stays: a device that comes back under the same id must not see
        # old numbers again, or its Last-Event-ID would acknowledge new messages.
        await conn.execute(
            "DELETE FROM push_messages WHERE app_id = %s AND endpoint_id = %s",
            (app_id, endpoint_id),
        )
        deleted.append(endpoint)
    return deleted


async def _modify(
    conn: Connection,
    table: str,
    column: str,
    app_id: str,
    change: Callable[[str | None], str],
    modified_at: str,
) -> str:
    """Replace the application's JSON in `table`.`column` by `change` of it, locked from
    the read to the write; return what was stored."""
    while True:
        cursor = await conn.execute(
            f"SELECT {column} FROM {table} WHERE app_id = %s FOR UPDATE", (app_id,)
        )
        row = await cursor.fetchone()
        text = change(row[0] if row else None)
        if row is not None:
            await conn.execute(
                f"UPDATE {table} SET {column} = %s, modified_at = %s WHERE app_id = %s",
                (text, modified_at, app_id),
            )
            return text
        cursor = await conn.execute(
            f"INSERT INTO {table} (app_id, {column}, modified_at) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            (app_id, text, modified_at),
        )
        if await cursor.fetchone() is not None:
            return text
        # Another collector stored the first one meanwhile: change that one instead.
