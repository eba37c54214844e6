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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")
Row = tuple[Any, ...]


class InTransaction:
    """A synchronous face on an asynchronous connection's open transaction, for code that
    runs in another thread while the loop's coroutine that holds the transaction awaits
    it (`call`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.loop = loop

    async def _rows(self, sql: str, params: Any) -> tuple[list[Row], int]:
        cursor = await self.conn.execute(sql, params)
        found = await cursor.fetchall() if cursor.description is not None else []
        return found, cursor.rowcount

    def execute(self, sql: str, params: Any = ()) -> tuple[list[Row], int]:
        future = asyncio.run_coroutine_threadsafe(self._rows(sql, params), self.loop)
        return future.result()


Connection = psycopg.Connection[Any] | InTransaction


async def call(conn: psycopg.AsyncConnection[Any], fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(InTransaction(conn), *args)` in a thread, in `conn`'s transaction."""
    bridge = InTransaction(conn, asyncio.get_running_loop())
    return await asyncio.to_thread(fn, bridge, *args)


def rows(conn: Connection, sql: str, params: Any = ()) -> list[Row]:
    """The rows of one statement."""
    if isinstance(conn, InTransaction):
        return conn.execute(sql, params)[0]
    return conn.execute(sql, params).fetchall()


def run(conn: Connection, sql: str, params: Any = ()) -> int:
    """Run one statement; return how many rows it changed."""
    if isinstance(conn, InTransaction):
        return conn.execute(sql, params)[1]
    return conn.execute(sql, params).rowcount


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as `width` lists, one per column, for `unnest(%s::type[], ...)`."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
