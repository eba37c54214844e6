"""The PostgreSQL statements of the analytics rollups and queries.

The same functions as storage/analytics_sqlite/, over PostgreSQL's SQL: the analytics
(`homing_collector.analytics`) pick the module of their connection's backend through
storage/analytics_backend.py, and add up the same way on both.

The analytics code is synchronous. Queries run in a thread on a connection of a small
synchronous pool (PostgresStorage.analytics_read). The rollups are kept at ingest in the
transaction that stores the events, which an asynchronous connection holds: there the
analytics run in a thread too, on `InTransaction`, which sends each statement to the
event loop to run on that connection while the transaction's coroutine waits for the
thread. Statements go through `rows` and `run`, which take either.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")
Row = tuple[Any, ...]


class InTransaction:
    """A synchronous face on an asynchronous connection's open transaction, for code that
    runs in another thread while the loop's coroutine that holds the transaction awaits
    it (`call`).

    Each trip from the thread to the loop and the server costs: writes, whose results
    nobody reads, wait in `pending` and go with the next read, or at the end of `call`,
    all in one pipeline (one round trip to the server). They still run in their order,
    before anything read after them."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        loop: asyncio.AbstractEventLoop,
        *,
        subject_locks: bool = True,
    ) -> None:
        self.conn = conn
        self.loop = loop
        self.pending: list[tuple[str, Any]] = []
        # Whether rollups.lock_subjects locks (see there): not where nothing else writes.
        self.subject_locks = subject_locks

    async def flush(self) -> None:
        """Run the pending writes."""
        pending, self.pending = self.pending, []
        if len(pending) == 1:
            await self.conn.execute(*pending[0])
        elif pending:
            async with self.conn.pipeline():
                for sql, params in pending:
                    await self.conn.execute(sql, params)

    async def _rows(self, sql: str, params: Any) -> list[Row]:
        pending, self.pending = self.pending, []
        if not pending:
            cursor = await self.conn.execute(sql, params)
        else:  # the pending writes, then the read, in one round trip
            async with self.conn.pipeline():
                for write, values in pending:
                    await self.conn.execute(write, values)
                cursor = await self.conn.execute(sql, params)
        return await cursor.fetchall() if cursor.description is not None else []

    def rows(self, sql: str, params: Any) -> list[Row]:
        return asyncio.run_coroutine_threadsafe(self._rows(sql, params), self.loop).result()

    def defer(self, sql: str, params: Any) -> None:
        self.pending.append((sql, params))


Connection = psycopg.Connection[Any] | InTransaction


# The threads the analytics run in during a write: threads of their own, as many as the
# transactions that may wait for one (each holds a pooled connection, and the locks it
# took, meanwhile), where asyncio's default executor has a few per processor.
_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="homing-rollups")


async def call(
    conn: psycopg.AsyncConnection[Any],
    fn: Callable[..., T],
    *args: Any,
    subject_locks: bool = True,
) -> T:
    """Run `fn(InTransaction(conn), *args)` in a thread, in `conn`'s transaction."""
    loop = asyncio.get_running_loop()
    bridge = InTransaction(conn, loop, subject_locks=subject_locks)
    result = await loop.run_in_executor(_THREADS, partial(fn, bridge, *args))
    await bridge.flush()
    return result


def rows(conn: Connection, sql: str, params: Any = ()) -> list[Row]:
    """The rows of one statement."""
    if isinstance(conn, InTransaction):
        return conn.rows(sql, params)
    return conn.execute(sql, params).fetchall()


def stream(conn: Connection, sql: str, params: Any = ()) -> Iterator[Row]:
    """The rows of one read of many (the events of a range), fetched a page at a time
    through a server-side cursor rather than all at once."""
    if isinstance(conn, InTransaction):
        yield from conn.rows(sql, params)
        return
    with conn.cursor(name=f"homing_scan_{next(_CURSORS)}") as cursor:
        cursor.itersize = _PAGE
        cursor.execute(sql, params)
        yield from cursor


_PAGE = 5000  # rows per fetch of `stream`
_CURSORS = itertools.count()  # names them: two may be open in one transaction


def run(conn: Connection, sql: str, params: Any = ()) -> None:
    """Run one statement that writes; in a transaction of the writer's, with the next
    read (see InTransaction)."""
    if isinstance(conn, InTransaction):
        conn.defer(sql, params)
    else:
        conn.execute(sql, params)


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as `width` lists, one per column, for `unnest(%s::type[], ...)`."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
