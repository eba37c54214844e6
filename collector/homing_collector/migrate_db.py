"""`homing-collector migrate-db`: move a deployment from SQLite to PostgreSQL.

The rules, in the order they are checked:
- `--to` is a postgresql:// (or postgres://) URL; anything else is refused, naming the flag;
- `--from` is a Homing SQLite database at this collector's schema version, opened
  read-only: an older one must be migrated first (by this version's collector), since the
  copy never changes its source;
- the target holds nothing but a copy of this same source, which is then resumed; or it
  is empty (no tables, or only the collector's, without rows). Else it is refused, unless
  `--into-existing` is given: then the source's applications are added to what the target
  holds, provided none of them is there already (one application's rows are never merged
  from two databases). A table of the target that is not the collector's is refused too.
- a collector serving the source while it is copied is warned about, not refused: the
  copy holds the source as it was when the run started (storage/sqlite_to_pg.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homing_collector.lifetime import alive
from homing_collector.progress import Progress
from homing_collector.settings import postgres_url, redacted
from homing_collector.storage import sqlite_to_pg as copying
from homing_collector.storage.sqlite_to_pg import MigrateError, TableResult

# Test-only: kill this process (SIGKILL) halfway through the COPY of its Nth batch of the
# table TABLE ("TABLE:N"), so that a test can resume a copy killed at a chosen point.
KILL_AT_BATCH = "HOMING_MIGRATE_DB_KILL_AT_BATCH"
DEFAULT_BATCH_ROWS = 10_000


@dataclass
class Summary:
    source: str
    target: str
    resumed: bool
    tables: list[TableResult] = field(default_factory=list)
    not_copied: dict[str, int] = field(default_factory=dict)  # tables PostgreSQL lacks
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mismatched(self) -> list[str]:
        return [
            t.name
            for t in self.tables
            if t.target_rows is not None and t.target_rows != t.source_rows
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "resumed": self.resumed,
            "seconds": round(self.seconds, 3),
            "tables": {
                t.name: {
                    "source_rows": t.source_rows,
                    "copied": t.copied,
                    "this_run": t.this_run,
                    "seconds": round(t.seconds, 3),
                    "target_rows": t.target_rows,
                    "columns_not_copied": t.source_only,
                }
                for t in self.tables
            },
            "not_copied": self.not_copied,
            "skipped": self.skipped,
            "mismatched": self.mismatched,
            "warnings": self.warnings,
        }


def check_url(url: str) -> None:
    if not postgres_url(url):
        scheme = url.partition(":")[0] if ":" in url else ""
        named = f"{scheme}: URLs name" if scheme else f"{url!r} names"
        raise MigrateError(
            f"--to: {named} no database migrate-db can copy into; give a postgresql:// URL "
            "(schemes accepted: postgresql, postgres)"
        )


def migrate_db(
    source_path: Path,
    url: str,
    *,
    into_existing: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Progress | None = None,
    warn: Callable[[str], None] = lambda line: None,
) -> Summary:
    """Copy the SQLite database at `source_path` into the PostgreSQL database at `url`."""
    check_url(url)
    try:
        import psycopg
    except ImportError:
        raise MigrateError(
            'PostgreSQL\'s driver is not installed: pip install "homing[postgres]"'
        ) from None
    started = time.monotonic()
    source = copying.open_source(source_path)
    summary = Summary(str(source_path), redacted(url), resumed=False, skipped=copying.SKIPPED)

    def warning(line: str) -> None:
        summary.warnings.append(line)
        warn(line)

    serving = _serving(copying.live_leases(source, int(time.time() * 1000)))
    if serving:
        warning(
            f"a collector is serving the source ({serving}): the copy holds what was "
            "stored when it started; stop the collectors first for a copy with nothing "
            "missing"
        )
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        source.conn.close()
        raise MigrateError(f"--to: cannot connect to {redacted(url)}: {exc}") from None
    try:
        with conn:
            summary.resumed = copying.previous_run(conn, source.identity)
            if not summary.resumed:
                _check_target(conn, source, into_existing)
            asyncio.run(_migrate_schema(url))
            copying.create_progress(conn)
            # One read transaction for the whole run: the source as it was when it started.
            with copying.snapshot(source):
                plans, summary.not_copied = copying.plan(source, conn)
                _copy(source, conn, plans, summary, batch_rows, progress)
            if not into_existing:
                counts = copying.count_rows(conn, [t.name for t in summary.tables])
                for table in summary.tables:
                    table.target_rows = counts[table.name]
            if copying.source_changed(source):
                warning(
                    "the source changed while it was copied: what was written after the run "
                    "started is not in the copy; stop its collectors, then copy into a new "
                    "database"
                )
    except psycopg.errors.UniqueViolation as exc:
        # A copy never writes a row twice: the target held it already (--into-existing),
        # or PostgreSQL's table has a unique key that SQLite's lacks.
        where = f"table {exc.diag.table_name}: {exc.diag.message_detail or exc}"
        raise MigrateError(
            f"a row of the source is in the target already ({where}); the target's row was "
            "left as it was"
            if into_existing
            else f"two rows of the source have one key in PostgreSQL ({where})"
        ) from None
    except psycopg.Error as exc:
        raise MigrateError(f"the copy stopped: {exc}; run it again to go on") from None
    finally:
        if progress is not None:
            progress.done()
        source.conn.close()
    summary.seconds = time.monotonic() - started
    return summary


def _serving(leases: list[tuple[str, str]]) -> str:
    """Who holds a background task's lease on the source and may be serving it; a holder
    named as a process of this host that is gone is not (its lease outlives it)."""
    host = socket.gethostname()
    found = []
    for task, holder in leases:
        parts = holder.split(":")
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            if alive(int(parts[1])):
                found.append(f"process {parts[1]} holds its {task} task")
        else:
            found.append(f"{holder} held its {task} task lately")
    return "; ".join(dict.fromkeys(found))


def _check_target(conn: Any, source: copying.Source, into_existing: bool) -> None:
    tables = copying.target_tables(conn)
    foreign = [t for t in tables if t not in copying.homing_tables()]
    if foreign and not into_existing:
        raise MigrateError(
            f"--to: the database holds tables that are not the collector's ({', '.join(foreign)}); "
            "give an empty database, or --into-existing to add to it"
        )
    ours = [t for t in tables if t not in foreign and t != "schema_migrations"]
    holding = copying.tables_with_rows(conn, ours)
    if holding and not into_existing:
        raise MigrateError(
            "--to: the database already holds data that is not a copy of this source (rows "
            f"in {', '.join(holding)}); give an empty database, or --into-existing to add "
            "this source's applications to it"
        )
    if "apps" in tables:
        both = copying.apps_in_both(conn, source)
        if both:
            raise MigrateError(
                f"--to: the application {both[0]} is in both databases"
                + (f" (and {len(both) - 1} more)" if len(both) > 1 else "")
                + ": migrate-db does not merge one application's data from two databases"
            )


async def _migrate_schema(url: str) -> None:
    import psycopg

    from homing_collector.storage.pg_schema import migrate

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)


def _copy(
    source: copying.Source,
    conn: Any,
    plans: list[copying.TablePlan],
    summary: Summary,
    batch_rows: int,
    progress: Progress | None,
) -> None:
    before = copying.progress_of(conn, source.identity)
    total = sum(p.source_rows for p in plans)
    done = sum(before[p.name][1] for p in plans if p.name in before)
    kill_table, _, kill_at = (os.environ.get(KILL_AT_BATCH) or ":0").rpartition(":")
    batches = 0
    run_started = time.monotonic()
    run_rows = 0

    current = ""

    def kill_now() -> bool:
        return current == kill_table and batches + 1 == int(kill_at)

    for table in plans:
        current, batches = table.name, 0

        def shown(rows: int, name: str = table.name) -> None:
            nonlocal done, batches, run_rows
            done += rows
            run_rows += rows
            batches += 1
            if progress is not None:
                rate = run_rows / max(1e-9, time.monotonic() - run_started)
                progress.update(
                    f"{done:,} of {total:,} rows ({rate:,.0f}/s), {name}",
                    done / total if total else None,
                )

        summary.tables.append(
            copying.copy_table(
                source,
                conn,
                table,
                batch_rows=batch_rows,
                done_before=before.get(table.name),
                shown=shown,
                kill_at_batch=kill_now,
            )
        )
