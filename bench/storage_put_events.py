"""PutEvents at the storage level: PostgresStorage beside SQLiteStorage, in the same run.

Calls `put_events` directly (no HTTP), from `--tasks` concurrent tasks in one process, with
the batches that bench/collector_ingest.py sends (100 events of one endpoint each, every
event id a fresh UUID), checked by the collector's own ingest code before the clock
starts. Each case writes into a fresh database: a new SQLite file (with the events writer
process, as `serve` runs it, and the rollups on, as by default), and a new database on
the PostgreSQL server that `--postgres` names (made and dropped by the bench; the URL's
user must be allowed CREATE DATABASE), with the rollups on, then off (what keeping them
costs there). With `--rounds`, the cases alternate.

Printed per case: events stored per second, and the CPU time of the whole machine per
stored event (this process, SQLite's writer process or PostgreSQL's server, and whatever
else ran meanwhile: on a shared machine, compare cases of the same run only), and this
process's own share (SQLite's writer process and PostgreSQL's server excluded).
PostgreSQL's figure is issue 17's target: at least 60% of SQLite's events per second.

    python bench/storage_put_events.py --postgres postgresql://USER@HOST:PORT/postgres
        [--batches 2000] [--tasks 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import psycopg

from homing import limits
from homing.wire import format_timestamp
from homing_collector import endpoints, ingest
from homing_collector.storage.base import AppRecord, Storage
from homing_collector.storage.postgres import PostgresStorage
from homing_collector.storage.sqlite import SQLiteStorage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import collector_ingest as load

APP_ID = "b" * 32


def _machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def _drive(storage: Storage, batches: list[Any], tasks: int) -> int:
    """Store every batch, from `tasks` tasks; return the events stored."""
    stored = 0
    todo = iter(batches)

    async def worker() -> None:
        nonlocal stored
        for checked in todo:
            result = await storage.put_events(
                APP_ID, checked.updates, checked.rows,
                merge=partial(endpoints.merge, APP_ID, now=format_timestamp(checked.now)),
                max_event_types=limits.MAX_EVENT_TYPES_PER_APP,
                max_user_endpoints=limits.MAX_ENDPOINTS_PER_USER,
                summary=checked.summary if storage.rollups else None,
            )  # fmt: skip
            stored += result.stored

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return stored


def _case(
    make: Callable[[], Storage], batches: list[Any], args: argparse.Namespace
) -> tuple[float, float, float]:
    async def run() -> tuple[int, float, float, float]:
        storage = make()
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP_ID, "bench", "2026-01-01T00:00:00Z"))
            cpu, ours, started = _machine_cpu(), time.process_time(), time.monotonic()
            stored = await _drive(storage, batches, args.tasks)
            if stored != len(batches) * load.EVENTS_PER_BATCH:
                raise RuntimeError(f"{stored} events stored of {len(batches)} batches")
            elapsed = time.monotonic() - started
            return stored, elapsed, _machine_cpu() - cpu, time.process_time() - ours
        finally:
            await storage.close()

    stored, elapsed, cpu, ours = asyncio.run(run())
    return stored / elapsed, 1e6 * cpu / stored, 1e6 * ours / stored


def _postgres_database(admin_url: str, name: str, *, drop: bool) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if drop:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, help="URL of a database to connect to")
    parser.add_argument("--batches", type=int, default=2000, help="batches of 100 per case")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent put_events calls")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    count = args.batches
    bodies = load.make_batches(17, count * 3 * args.rounds, gzip=False)
    checked = [
        ingest.check_events(orjson.loads(body), body_size=len(body), summarize=True)
        for body in bodies
    ]
    results: dict[str, list[tuple[float, float, float]]] = {
        "sqlite": [], "postgres": [], "pg no rollups": []
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="homing-bench-") as tmp:
        for n in range(args.rounds):
            pool = checked[3 * n * count : (3 * n + 1) * count]
            path = Path(tmp) / f"round{n}.db"
            results["sqlite"].append(
                _case(lambda path=path: SQLiteStorage(path, events_process=True), pool, args)
            )
            for k, (case, rollups) in enumerate((("postgres", True), ("pg no rollups", False))):
                pool = checked[(3 * n + 1 + k) * count : (3 * n + 2 + k) * count]
                name = f"homing_bench_{os.getpid()}_{n}_{k}"
                url = _postgres_database(args.postgres, name, drop=False)
                try:
                    make = partial(PostgresStorage, url, rollups=rollups)
                    results[case].append(_case(make, pool, args))
                finally:
                    _postgres_database(args.postgres, name, drop=True)
    print(f"{args.tasks} tasks, {count} batches of 100 events per case, {args.rounds} round(s),"
          " medians; the analytics rollups kept but where it says no rollups")  # fmt: skip
    print(f"{'backend':<14}{'events/s':>10}{'machine CPU us/event':>22}{'this process':>14}")
    medians = {}
    for backend, figures in results.items():
        rate, cpu, ours = (statistics.median(column) for column in zip(*figures, strict=True))
        medians[backend] = rate
        print(f"{backend:<14}{rate:>10,.0f}{cpu:>22.1f}{ours:>14.1f}")
    print(f"PostgreSQL stores {medians['postgres'] / medians['sqlite']:.0%} of SQLite's events/s"
          " (issue 17's target: at least 60%)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
