"""Which backend's statements serve an analytics connection.

`homing_collector.analytics` holds the definitions and the arithmetic once; each backend
keeps the same functions over its own SQL (storage/analytics_sqlite/,
storage/analytics_pg/). `statements(conn)` names the modules of `conn`'s backend.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from homing_collector.storage import columnar
from homing_collector.storage import endpoint_values as sqlite_endpoint_values
from homing_collector.storage.analytics_sqlite import campaign_view as sqlite_campaign_view
from homing_collector.storage.analytics_sqlite import cohorts as sqlite_cohorts
from homing_collector.storage.analytics_sqlite import cover as sqlite_cover
from homing_collector.storage.analytics_sqlite import opens as sqlite_opens
from homing_collector.storage.analytics_sqlite import queries as sqlite_queries
from homing_collector.storage.analytics_sqlite import rollups as sqlite_rollups
from homing_collector.storage.analytics_sqlite import visits as sqlite_visits

# A connection the analytics read and write through: SQLite's, or PostgreSQL's (a
# synchronous psycopg connection, or analytics_pg.InTransaction). Typed loosely here so
# that this module does not need psycopg, which only PostgreSQL's users install.
Connection = sqlite3.Connection | Any


@dataclass(frozen=True)
class Statements:
    campaign_view: ModuleType
    cohorts: ModuleType
    cover: ModuleType
    endpoint_values: ModuleType
    opens: ModuleType
    queries: ModuleType
    rollups: ModuleType
    visits: ModuleType


SQLITE = Statements(
    campaign_view=sqlite_campaign_view, cohorts=sqlite_cohorts, cover=sqlite_cover,
    endpoint_values=sqlite_endpoint_values, opens=sqlite_opens, queries=sqlite_queries,
    rollups=sqlite_rollups, visits=sqlite_visits,
)  # fmt: skip
_postgres: Statements | None = None


def _postgres_statements() -> Statements:
    global _postgres
    if _postgres is None:
        # Imported on first use: psycopg is installed only for PostgreSQL.
        from homing_collector.storage.analytics_pg import (
            campaign_view,
            cohorts,
            cover,
            endpoint_values,
            opens,
            queries,
            rollups,
            visits,
        )

        _postgres = Statements(
            campaign_view=campaign_view, cohorts=cohorts, cover=cover,
            endpoint_values=endpoint_values, opens=opens, queries=queries, rollups=rollups,
            visits=visits,
        )  # fmt: skip
    return _postgres


def statements(conn: Connection) -> Statements:
    """The statements of `conn`'s backend."""
    if isinstance(conn, sqlite3.Connection):
        return SQLITE
    return _postgres_statements()


@contextlib.contextmanager
def snapshot(conn: Connection) -> Iterator[None]:
    """One read transaction, so that what is read agrees. PostgreSQL's analytics_read runs
    every query in one (repeatable read) already."""
    if isinstance(conn, sqlite3.Connection):
        with columnar.snapshot(conn):
            yield
    else:
        yield
