"""Copy a SQLite database into PostgreSQL: the SQL of `homing-collector migrate-db`.

Generic: every table present in both schemas is copied, with the columns present in
both, in the order of its SQLite key (the rowid, or the primary key of a table WITHOUT
ROWID), in batches, each a COPY and the batch's last key committed together in one
transaction of the target. A copy killed halfway loses only its open batch, which
PostgreSQL rolls back, and the next run goes on after the last key committed: no row
twice, none missing.

The progress is a table the command creates in the target (`migrate_db_progress`), not a
migration of the collector's schema: it is the copy's bookkeeping, which no collector
reads, and it may be dropped once the copy is checked.

The source is opened read-only, and each run reads it in one transaction: what it
copies is the database as it was when the run started.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from homing_collector.storage.migrations import SQLITE_MIGRATIONS
from homing_collector.storage.pg_schema import PG_MIGRATIONS

PROGRESS = "migrate_db_progress"

# An event's position in PostgreSQL (pg_streams.py) is its transaction's, shifted: all
# positive. SQLite's is its rowid, which the event streams' and hooks' cursors name. A
# copied event takes its rowid less this offset: the copied events keep their order,
# before every event stored in PostgreSQL later, and a copied cursor, shifted alike,
# still stands after the events it had taken and before those it had not.
POSITION_OFFSET = 1 << 62

# PostgreSQL columns that take a value computed from the SQLite row, not a column of it.
EXPRESSIONS: dict[str, dict[str, str]] = {
    "events": {"pos": f"rowid - {POSITION_OFFSET}"},
    "event_streams": {"cursor": f"cursor - {POSITION_OFFSET}"},
    "hook_cursors": {"cursor": f"cursor - {POSITION_OFFSET}"},
}

# SQLite tables that are not copied, and why.
SKIPPED = {
    "schema_migrations": "each database records its own schema's version",
    # The columnar copy's bookkeeping (storage/columnar.py): its watermark, the Parquet
    # files of sealed days, the endpoints' numbers in them. On PostgreSQL each collector
    # makes a copy of its own (storage/pg_columnar.py); the files stay beside the SQLite file.
    "columnar_state": "the columnar copy's state (its sealer's watermark)",
    "columnar_days": "the columnar copy's Parquet files",
    "columnar_endpoints": "the columnar copy's endpoint numbers",
    # Leases name processes of the source's collectors, which never run on the target.
    "task_leases": "leases held by the source's own processes",
}


class MigrateError(Exception):
    """The copy cannot start or go on: a message for a person, in one line."""


@dataclass
class TablePlan:
    name: str
    columns: list[str]  # PostgreSQL's column names, in COPY order
    selected: list[str]  # the SQLite expression of each, then the key's columns
    key_width: int
    source_rows: int
    source_only: list[str] = field(default_factory=list)  # SQLite columns not copied


@dataclass
class TableResult:
    name: str
    source_rows: int
    copied: int = 0  # by every run of this copy
    this_run: int = 0
    seconds: float = 0.0
    target_rows: int | None = None  # counted at the end, when the target held nothing else
    source_only: list[str] = field(default_factory=list)


@dataclass
class Source:
    path: Path
    conn: sqlite3.Connection
    identity: str  # when its schema was first made: the same for every run on it
    version: int
    tables: list[str]  # in the order they were made
    data_version: int


def open_source(path: Path) -> Source:
    """The SQLite database at `path`, opened read-only, if it is a Homing database at this
    collector's schema version."""
    if not path.is_file():
        raise MigrateError(f"--from: no file {path}")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY rowid"
            )
        ]
    except sqlite3.Error as exc:
        raise MigrateError(f"--from: {path} is not a SQLite database: {exc}") from None
    if "schema_migrations" not in names or "apps" not in names:
        conn.close()
        raise MigrateError(f"--from: {path} is not a Homing database (it has no apps table)")
    version, identity = conn.execute(
        "SELECT max(version), min(CASE WHEN version = 1 THEN applied_at END) FROM schema_migrations"
    ).fetchone()
    latest = SQLITE_MIGRATIONS[-1][0]
    if version != latest:
        conn.close()
        if version > latest:
            raise MigrateError(
                f"--from: {path} is at schema version {version}, newer than this collector's "
                f"{latest}: run the migrate-db of the collector that wrote it"
            )
        raise MigrateError(
            f"--from: {path} is at schema version {version}, older than this collector's "
            f"{latest}; the copy never changes its source, so migrate it first: stop its "
            f"collector, then run this version's `homing-collector --db {path} apps list` "
            "once (it brings the schema up to date), and copy again"
        )
    (data_version,) = conn.execute("PRAGMA data_version").fetchone()
    tables = [n for n in names if not n.startswith("sqlite_")]
    return Source(path, conn, str(identity), int(version), tables, int(data_version))


@contextlib.contextmanager
def snapshot(source: Source) -> Iterator[None]:
    """Read the source in one transaction, begun now (a deferred BEGIN would take its
    snapshot at the first read)."""
    source.conn.execute("BEGIN")
    try:
        source.conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        yield
    finally:
        source.conn.execute("COMMIT")


def source_changed(source: Source) -> bool:
    """Whether another connection committed to the source since it was opened."""
    (now,) = source.conn.execute("PRAGMA data_version").fetchone()
    return int(now) != source.data_version


def live_leases(source: Source, now_ms: int) -> list[tuple[str, str]]:
    """The background tasks that a process holds a lease of on the source: (task, holder)."""
    rows = source.conn.execute(
        "SELECT name, owner FROM task_leases WHERE expires_at > ? ORDER BY name", (now_ms,)
    )
    return [(name, owner) for name, owner in rows]


def homing_tables() -> set[str]:
    """The tables that the collector's PostgreSQL migrations make."""
    found = set()
    for _, statements in PG_MIGRATIONS:
        found.update(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", statements))
    return found | {"schema_migrations", PROGRESS}


def target_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    ).fetchall()
    return sorted(row[0] for row in rows)


def previous_run(conn: psycopg.Connection[Any], identity: str) -> bool:
    """Whether a run of a copy of this same source has started on the target."""
    if PROGRESS not in target_tables(conn):
        return False
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE source = %s)").format(
        sql.Identifier(PROGRESS)
    )
    row = conn.execute(query, (identity,)).fetchone()
    return bool(row and row[0])


def tables_with_rows(conn: psycopg.Connection[Any], names: Iterable[str]) -> list[str]:
    """Those of `names` that hold a row."""
    found = []
    for name in names:
        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(name))
        row = conn.execute(query).fetchone()
        if row and row[0]:
            found.append(name)
    return found


def apps_in_both(conn: psycopg.Connection[Any], source: Source) -> list[str]:
    ids = [row[0] for row in source.conn.execute("SELECT id FROM apps ORDER BY id")]
    rows = conn.execute("SELECT id FROM apps WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall()
    return [row[0] for row in rows]


def create_progress(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (source text NOT NULL, table_name text NOT NULL,"
            " last_key text, copied bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT"
            " false, updated_at text NOT NULL, PRIMARY KEY (source, table_name))"
        ).format(sql.Identifier(PROGRESS))
    )


def _pg_columns(conn: psycopg.Connection[Any]) -> dict[str, dict[str, tuple[str, bool]]]:
    """Per table of the target: its columns, each with its type and whether a row must
    give it a value."""
    rows = conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable = 'NO' AND column_default"
        " IS NULL AND is_identity = 'NO' FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ).fetchall()
    columns: dict[str, dict[str, tuple[str, bool]]] = {}
    for table, column, kind, required in rows:
        columns.setdefault(table, {})[column] = (kind, bool(required))
    return columns


def _read_as(column: str, kind: str) -> str:
    """The SQLite expression that reads `column` as PostgreSQL's type `kind` takes it."""
    quoted = _quote(column)
    if kind == "boolean":  # SQLite keeps 0 or 1, or any integer meant as true
        return f"({quoted} != 0)"
    if kind == "bytea":  # a text value stored in a BLOB column: its UTF-8 bytes
        return f"CAST({quoted} AS BLOB)"
    return quoted


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plan(source: Source, conn: psycopg.Connection[Any]) -> tuple[list[TablePlan], dict[str, int]]:
    """What to copy: a plan per table in both; and the rows of those PostgreSQL lacks."""
    target = _pg_columns(conn)
    plans, missing = [], {}
    for name in source.tables:
        if name in SKIPPED:
            continue
        (rows,) = source.conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()
        if name not in target:
            missing[name] = int(rows)
            continue
        info = source.conn.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
        sqlite_columns = [row[1] for row in info]
        primary = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5]]
        without_rowid = source.conn.execute(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", (name,)
        ).fetchone()[0]
        key = primary if without_rowid else ["rowid"]
        mapped = EXPRESSIONS.get(name, {})
        columns, selected = [], []
        for column, (kind, required) in target[name].items():
            if column in mapped:
                columns.append(column)
                selected.append(mapped[column])
            elif column in sqlite_columns:
                columns.append(column)
                selected.append(_read_as(column, kind))
            elif required:
                raise MigrateError(
                    f"table {name}: PostgreSQL's column {column} needs a value that SQLite's "
                    "table does not hold; this version of migrate-db cannot copy it"
                )
        plans.append(
            TablePlan(
                name,
                columns,
                selected + [_quote(k) if k != "rowid" else "rowid" for k in key],
                len(key),
                int(rows),
                [c for c in sqlite_columns if c not in columns],
            )
        )
    return plans, missing


def progress_of(conn: psycopg.Connection[Any], identity: str) -> dict[str, tuple[Any, int, bool]]:
    """Per table: its last key copied (a list, or None), its rows copied, whether done."""
    query = sql.SQL("SELECT table_name, last_key, copied, done FROM {} WHERE source = %s").format(
        sql.Identifier(PROGRESS)
    )
    rows = conn.execute(query, (identity,)).fetchall()
    return {
        name: (json.loads(key) if key is not None else None, int(copied), bool(done))
        for name, key, copied, done in rows
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def copy_table(
    source: Source,
    conn: psycopg.Connection[Any],
    table: TablePlan,
    *,
    batch_rows: int,
    done_before: tuple[Any, int, bool] | None,
    shown: Callable[[int], None],
    kill_at_batch: Callable[[], bool] = lambda: False,
) -> TableResult:
    """Copy the rows of `table` after the last key committed, batch by batch."""
    last_key, copied, done = done_before or (None, 0, False)
    result = TableResult(table.name, table.source_rows, copied, source_only=table.source_only)
    if done:
        _catch_up_sequences(conn, table)  # again: a run may have died just before it
        return result
    progress = sql.Identifier(PROGRESS)
    if done_before is None:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (source, table_name, updated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING"
            ).format(progress),
            (source.identity, table.name, _now()),
        )
    key_columns = table.selected[-table.key_width :]
    select = f"SELECT {', '.join(table.selected)} FROM {_quote(table.name)}"
    after = f" WHERE ({', '.join(key_columns)}) > ({', '.join('?' * table.key_width)})"
    order = f" ORDER BY {', '.join(key_columns)} LIMIT ?"
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, table.columns))
    )
    update = sql.SQL(
        "UPDATE {} SET last_key = %s, copied = copied + %s, done = %s, updated_at = %s"
        " WHERE source = %s AND table_name = %s"
    ).format(progress)
    width = len(table.columns)
    started = time.monotonic()

    def fetch(key: list[Any] | None) -> list[Any]:
        if key is None:
            return source.conn.execute(select + order, (batch_rows,)).fetchall()
        return source.conn.execute(select + after + order, (*key, batch_rows)).fetchall()

    # The next batch is read from SQLite while this one is written to PostgreSQL.
    with ThreadPoolExecutor(1, thread_name_prefix="homing-migrate-read") as reader:
        pending = reader.submit(fetch, last_key)
        finished = False
        while not finished:
            rows = pending.result()
            finished = len(rows) < batch_rows
            if rows:
                last_key = list(rows[-1][width:])
            if not finished:
                pending = reader.submit(fetch, last_key)
            with conn.transaction():
                if rows:
                    with conn.cursor().copy(copy) as writer:
                        for n, row in enumerate(rows):
                            writer.write_row(row[:width])
                            if n == len(rows) // 2 and kill_at_batch():
                                _kill_self()
                conn.execute(
                    update,
                    (json.dumps(last_key), len(rows), finished, _now(), source.identity,
                     table.name),
                )  # fmt: skip
            result.copied += len(rows)
            result.this_run += len(rows)
            shown(len(rows))
    _catch_up_sequences(conn, table)
    result.seconds = time.monotonic() - started
    return result


def _kill_self() -> None:
    """Die at once, as `kill -9` does (a test of resuming chooses the moment)."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def _catch_up_sequences(conn: psycopg.Connection[Any], table: TablePlan) -> None:
    """Move the sequences of identity columns (the outbox's seq) past the copied values,
    so that a row stored later takes a new number."""
    for column in table.columns:
        row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table.name, column)).fetchone()
        if not row or row[0] is None:
            continue
        query = sql.SQL(
            "SELECT setval(%s, greatest(max({c}), (SELECT last_value FROM {s})))"
            " FROM {t} HAVING max({c}) IS NOT NULL"
        ).format(
            c=sql.Identifier(column),
            s=sql.SQL(row[0]),  # a name PostgreSQL itself quoted
            t=sql.Identifier(table.name),
        )
        conn.execute(query, (row[0],))


def count_rows(conn: psycopg.Connection[Any], names: Sequence[str]) -> dict[str, int]:
    counts = {}
    for name in names:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
        found = row.fetchone()
        counts[name] = int(found[0]) if found else 0
    return counts
