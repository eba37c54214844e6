"""`homing-collector migrate-db` of a big SQLite database, timed per table.

1. The source: a copy of --source (in a temporary directory, so that the original, and
   the files SQLite keeps beside it, are only read), else a fresh database of --events
   events (1,000,000) loaded as bench/analytics_queries.py loads its own.
2. The target: --db-url, which must be empty; else a throwaway cluster, started with
   initdb and pg_ctl as the tests do (tests/pg.py), and removed afterwards.
3. Runs `homing-collector migrate-db --json` once (with --kill-at-batch N, a first run is
   killed in its Nth batch of events, and the run that resumes it is the one timed), and prints
   each table's rows, seconds and rows per second, the command's CPU time per row and,
   on a cluster of its own, the server's (its processes, including the backends that
   have ended). The command itself checks that the target's counts equal the source's.
4. Asks the source and the copy bench/analytics_queries.py's queries (the last 30 days of
   its load) and prints whether every answer is the same.

Run from the repository's root:

    python bench/migrate_db.py [--source analytics.db | --events 1000000]
        [--batch-rows 10000] [--kill-at-batch N] [--db-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from homing_collector.migrate_db import KILL_AT_BATCH

ROOT = Path(__file__).resolve().parent.parent


def _server_cpu(pid: int) -> float:
    """CPU seconds of a postmaster, its living processes and those it has reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / ticks  # utime, stime, cutime, cstime
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                own = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(own[11]) + int(own[12])) / ticks
    return total


def _source(args: argparse.Namespace, directory: Path) -> Path:
    path = directory / "source.db"
    if args.source:
        print(f"copying {args.source} ...", flush=True)
        shutil.copy(args.source, path)
        wal = Path(f"{args.source}-wal")
        if wal.exists():
            shutil.copy(wal, f"{path}-wal")
        return path
    sys.path.insert(0, str(ROOT / "bench"))
    from analytics_queries import load

    print(f"loading {args.events:,} events ...", flush=True)
    seconds = load(path, args.events)
    print(f"  loaded in {seconds:.0f} s", flush=True)
    return path


def _run(
    source: Path, url: str, batch_rows: int, server: int | None, kill_at: int = 0
) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = _server_cpu(server) if server else 0.0
    started = time.perf_counter()
    env = {**os.environ, KILL_AT_BATCH: f"events:{kill_at}"} if kill_at else None
    done = subprocess.run(
        [sys.executable, "-m", "homing_collector", "migrate-db", "--from", str(source),
         "--to", url, "--batch-rows", str(batch_rows), "--json"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if kill_at:
        if done.returncode != -signal.SIGKILL:
            raise SystemExit(f"migrate-db was not killed: {done.returncode} {done.stderr}")
        print(f"killed (SIGKILL) in its batch {kill_at} after {wall:.1f} s; resuming ...")
        return {}
    if done.returncode not in (0, 3):
        raise SystemExit(f"migrate-db exited {done.returncode}: {done.stderr}")
    summary: dict[str, Any] = json.loads(done.stdout)
    summary["wall"] = wall
    summary["client_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary["server_cpu"] = _server_cpu(server) - server_before if server else None
    return summary


def _answers(storage: Any) -> dict[str, Any]:
    """The answers of bench/analytics_queries.py's queries (the last 30 days of its load,
    read from the events table: no columnar copy here) from `storage`."""
    sys.path.insert(0, str(ROOT / "bench"))
    import analytics_queries as bench_queries

    from homing_collector.analytics.params import Range

    end = bench_queries.FIRST_DAY + timedelta(days=bench_queries.DAYS - 1)
    q = Range(end - timedelta(days=29), end, ZoneInfo("UTC"), "users", end)

    async def run() -> dict[str, Any]:
        await storage.start()
        try:
            if await storage.get_app(bench_queries.APP) is None:
                return {}
            return {
                name: await storage.analytics_read(query)
                for name, _, query, _, _ in bench_queries.cases(q, None)
            }
        finally:
            await storage.close()

    return asyncio.run(run())


def _compare_analytics(source: Path, url: str) -> int:
    """Ask the source and the copy the same analytics; print what differs."""
    from homing_collector.storage.postgres import PostgresStorage
    from homing_collector.storage.sqlite import SQLiteStorage

    started = time.perf_counter()
    before = _answers(SQLiteStorage(source))
    after = _answers(PostgresStorage(url))
    if not before:
        print("\nanalytics: the source has no application of bench/analytics_queries.py's load")
        return 0
    differ = [name for name in before if before[name] != after.get(name)]
    print(f"\nanalytics of the last 30 days, {len(before)} queries, asked of both "
          f"({time.perf_counter() - started:.0f} s): "
          + ("the same answers" if not differ else f"DIFFERENT: {', '.join(differ)}"))  # fmt: skip
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="a SQLite database to copy (read only)")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events to load when there is no --source")  # fmt: skip
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--kill-at-batch", type=int, default=0, metavar="N",
                        help="first kill a run (SIGKILL) in its Nth batch of events, then "
                        "time the run that resumes it")  # fmt: skip
    parser.add_argument("--db-url", help="an empty PostgreSQL database (default: a cluster "
                        "of its own)")  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.pg import throwaway_database

    with tempfile.TemporaryDirectory(prefix="homing-migrate-bench-") as directory:
        source = _source(args, Path(directory))
        size = source.stat().st_size
        with throwaway_database(args.db_url) as (url, cluster):
            server = cluster.postmaster_pid if cluster else None
            if args.kill_at_batch:
                _run(source, url, args.batch_rows, server, args.kill_at_batch)
            summary = _run(source, url, args.batch_rows, server)
            compared = _compare_analytics(source, url)
    rows = sum(t["this_run"] for t in summary["tables"].values())
    print(f"\nmigrate-db of {size / 1e6:,.0f} MB, batches of {args.batch_rows:,} rows:")
    print(f"  {'table':<22} {'rows':>12} {'seconds':>9} {'rows/s':>10}")
    for name, table in sorted(summary["tables"].items(), key=lambda item: -item[1]["this_run"]):
        if table["this_run"]:
            rate = table["this_run"] / table["seconds"] if table["seconds"] else float("nan")
            print(f"  {name:<22} {table['this_run']:>12,} {table['seconds']:>9.1f} {rate:>10,.0f}")
    for name, count in summary["not_copied"].items():
        print(f"  {name:<22} {count:>12,}  not copied: PostgreSQL has no such table")
    print(f"  {'all':<22} {rows:>12,} {summary['wall']:>9.1f} {rows / summary['wall']:>10,.0f}"
          "  (wall, with start-up and the final counts)")  # fmt: skip
    print(
        f"  migrate-db CPU: {summary['client_cpu']:.1f} s, "
        f"{summary['client_cpu'] / max(rows, 1) * 1e6:.1f} us per row"
    )
    if summary["server_cpu"] is not None:
        print(
            f"  PostgreSQL CPU: {summary['server_cpu']:.1f} s, "
            f"{summary['server_cpu'] / max(rows, 1) * 1e6:.1f} us per row"
        )
    if summary["mismatched"]:
        print(f"  COUNTS DIFFER: {summary['mismatched']}")
        return 1
    return compared


if __name__ == "__main__":
    sys.exit(main())
