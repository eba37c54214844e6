"""The in-place upgrade of a big database made by the release before the event layout
changed (migration 6), timed, with every event checked.

1. Builds --db as that release left it: migrations 1 to 5, and the applications,
   endpoints, events and rollups of --source (a database of this release, such as the
   one bench/analytics_queries.py loads), the events in the order they arrived.
2. Times the upgrade: `migrate()`, as the collector runs it at start, up to this
   release's schema. Then times the sealer's copy of every day into the columnar copy,
   which the collector does in the background after the upgrade, while it serves.
3. Checks that no event was lost or changed: the count, Timestamps, arrival times and
   body lengths of each application's hours before and after the upgrade, and the rows
   of the columnar copy.

    python bench/upgrade.py --source analytics.db --db old.db [--keep]

--db needs room for about twice --source while migration 6 copies the events.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import orjson

from homing_collector.storage import columnar
from homing_collector.storage.migrations import SQLITE_MIGRATIONS, migrate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analytics_queries import seal

OLD_VERSION = 5  # the release before migration 6 stored events in this schema
# Per application and UTC hour, what identifies its events; the layout does not change it.
FINGERPRINT = (
    "SELECT app_id, ts / 3600000 - (ts < 0 AND ts % 3600000 != 0) AS hour, count(*),"
    " sum(ts), sum(arrival), sum(length(body)), count(DISTINCT endpoint_id)"
    " FROM events GROUP BY 1, 2 ORDER BY 1, 2"
)


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA {schema}.table_info({table})")]


def build_old(source: Path, path: Path) -> float:
    """Write `path` as the release before migration 6 would hold `source`'s data."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -2000000")
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    conn.execute("BEGIN")
    for version, sql in SQLITE_MIGRATIONS:
        if version > OLD_VERSION:
            break
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (version,))
    conn.execute("COMMIT")
    conn.execute("ATTACH DATABASE ? AS src", (source.resolve().as_uri() + "?mode=ro",))
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM main.sqlite_master WHERE type = 'table'"
            " AND name NOT IN ('schema_migrations') AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in tables:
        columns = _columns(conn, "main", table)
        missing = set(columns) - set(_columns(conn, "src", table))
        if missing:
            raise SystemExit(f"{source}: table {table} lacks {sorted(missing)}")
        listed = ", ".join(columns)
        # In the order they arrived: the rowid of this release's events table.
        order = " ORDER BY rowid" if table == "events" else ""
        print(f"  copying {table} ...", flush=True)
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO main.{table} ({listed}) SELECT {listed} FROM src.{table}{order}")
        conn.execute("COMMIT")
    conn.execute("DETACH DATABASE src")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


def fingerprint(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True) as conn:
        rows = conn.execute(FINGERPRINT).fetchall()
    conn.close()
    return rows


def columnar_rows(path: Path) -> int:
    """The rows of the files that the columnar copy's days list."""
    with sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True) as conn:
        listed = [entry[0] for (files,) in conn.execute("SELECT files FROM columnar_days")
                  for entry in orjson.loads(files)]  # fmt: skip
    conn.close()
    if not listed:
        return 0
    root = columnar.directory(path)
    files = [str(root / name) for name in listed]
    found = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet({files!r})").fetchone()
    return int(found[0]) if found else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a database of this release")
    parser.add_argument("--db", type=Path, required=True, help="the old database to build")
    parser.add_argument("--keep", action="store_true", help="keep --db and its copy afterwards")
    args = parser.parse_args()
    if args.db.exists():
        raise SystemExit(f"{args.db} exists; give a new path")
    try:
        print(f"building {args.db.name} as the release before migration 6 left it ...")
        built = build_old(args.source, args.db)
        before = fingerprint(args.db)
        events = sum(row[2] for row in before)
        size = args.db.stat().st_size
        print(f"built in {built:.0f} s: {events:,} events, {size / 1e6:,.0f} MB")

        conn = sqlite3.connect(args.db, isolation_level=None)
        started = time.perf_counter()
        version = migrate(conn)
        migrated = time.perf_counter() - started
        conn.close()
        print(
            f"migrate() from version {OLD_VERSION} to {version}: {migrated:.0f} s"
            f" ({events / migrated:,.0f} events/s); the collector serves once it returns"
        )
        sealed = seal(args.db)
        print(
            f"then the sealer's columnar copy, in the background: {sealed:.0f} s"
            f" ({events / sealed:,.0f} events/s)"
        )
        after = fingerprint(args.db)
        copied = columnar_rows(args.db)
        same = before == after
        print(
            f"events per application and hour the same after the upgrade: {'yes' if same else 'NO'}"
            f"; {sum(row[2] for row in after):,} events in the table, {copied:,} in the"
            " columnar copy"
        )
        return 0 if same and copied == events else 1
    finally:
        if not args.keep:
            for path in args.db.parent.glob(args.db.name + "*"):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()


if __name__ == "__main__":
    raise SystemExit(main())
