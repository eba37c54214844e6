"""Dashboard queries on PostgreSQL beside the same on SQLite, in the same run.

Loads the demo's simulated traffic (`homing_collector.demo`, --devices over --days days)
through the ingest path, rollups kept at ingest, into a fresh SQLite file and a fresh
PostgreSQL database, then times the dashboard's queries on each (the median of --runs
runs, through each storage's `analytics_read`) and checks that both answer alike. SQLite
has no columnar copy here, so both read the raw events for the funnel and the breakdown:
the comparison is of the engines, not of DuckDB.

Printed: the load's events per second and this process's CPU time per event (the
PostgreSQL server's own CPU not included: it is another process), and per query the
wall time on each backend. On a machine shared with other work, compare figures of the
same run only.

Without --postgres the bench starts a throwaway cluster (tests/pg.py: fsync off, so its
commits cost less than a real server's).

    python bench/pg_analytics.py [--devices 6000] [--days 60] [--runs 5]
        [--postgres postgresql://USER@HOST:PORT/DB]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from homing_collector import demo
from homing_collector.analytics import params, queries
from homing_collector.demo.simulation import DemoOptions
from homing_collector.storage.base import AppRecord, Storage
from homing_collector.storage.sqlite import SQLiteStorage

ROOT = Path(__file__).resolve().parent.parent
APP = "b" * 32
NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)


def _queries(days: int) -> dict[str, Callable[[Any], Any]]:
    last = NOW.date().isoformat()
    first = (NOW.date().fromordinal(NOW.date().toordinal() - min(days, 30) + 1)).isoformat()

    def window(**extra: str) -> params.Range:
        return params.parse_range({"start": first, "end": last, **extra}.get, NOW)

    steps = params.parse_steps(
        lambda _: ["_session.start", "product.view", "_monetization.purchase"]
    )
    breakdown = params.parse_event_filters(
        {"breakdown": "category", "event_type": "product.view"}.get, lambda _: []
    )
    return {
        "usage (30 days, by users)": lambda c: queries.usage(c, APP, window(by="users")),
        "retention (30 days, by users)": lambda c: queries.retention(c, APP, window(by="users")),
        "funnel of 3 steps (30 days, by users)": lambda c: queries.funnel(
            c, APP, window(by="users"), steps, 3600
        ),
        "events of one type, broken down (30 days)": lambda c: queries.events(
            c, APP, window(), breakdown
        ),
    }


async def _load(storage: Storage, options: DemoOptions) -> tuple[int, float, float]:
    await storage.start()
    await storage.create_app(AppRecord(APP, "bench", NOW.isoformat()))
    wall, cpu = time.perf_counter(), time.process_time()
    summary = await demo.load(storage, APP, options, now=NOW)
    return summary.events, time.perf_counter() - wall, time.process_time() - cpu


async def _time(storage: Storage, query: Callable[[Any], Any], runs: int) -> tuple[float, Any]:
    took = []
    answer = None
    for _ in range(runs):
        start = time.perf_counter()
        answer = await storage.analytics_read(query)
        took.append(time.perf_counter() - start)
    return statistics.median(took), answer


async def _bench(url: str, options: DemoOptions, runs: int, directory: Path) -> None:
    from homing_collector.storage.postgres import PostgresStorage

    backends: dict[str, Storage] = {
        "SQLite": SQLiteStorage(directory / "bench.db", events_process=True),
        "PostgreSQL": PostgresStorage(url),
    }
    answers: dict[str, dict[str, Any]] = {}
    timings: dict[str, dict[str, float]] = {}
    try:
        for name, storage in backends.items():
            events, wall, cpu = await _load(storage, options)
            print(f"{name}: loaded {events} events in {wall:.1f} s ({events / wall:,.0f}/s),"
                  f" {cpu / events * 1e6:.0f} us of this process's CPU per event")  # fmt: skip
        for label, query in _queries(options.days).items():
            for name, storage in backends.items():
                took, answer = await _time(storage, query, runs)
                timings.setdefault(label, {})[name] = took
                answers.setdefault(label, {})[name] = answer
    finally:
        for storage in backends.values():
            await storage.close()
    print(f"\n| query ({options.devices} devices, {options.days} days) | SQLite | PostgreSQL |")
    print("|---|---|---|")
    for label, took in timings.items():
        same = answers[label]["SQLite"] == answers[label]["PostgreSQL"]
        print(f"| {label} | {took['SQLite'] * 1000:.0f} ms | {took['PostgreSQL'] * 1000:.0f} ms"
              f"{'' if same else ' (answers differ!)'} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=6000, help="simulated devices")
    parser.add_argument("--days", type=int, default=60, help="days of traffic")
    parser.add_argument("--runs", type=int, default=5, help="runs per query; the median counts")
    parser.add_argument("--postgres", help="URL of an empty database (else a throwaway cluster)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.pg import throwaway_database

    options = DemoOptions(devices=args.devices, days=args.days, seed=1)
    directory = Path(tempfile.mkdtemp(prefix="homing-pg-analytics-"))
    try:
        with throwaway_database(args.postgres) as (url, _):
            asyncio.run(_bench(url, options, args.runs, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
