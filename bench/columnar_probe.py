"""The dashboard's two slowest queries on SQLite beside DuckDB over a Parquet copy.

A probe for issue 13's choice of engine, not a feature: it copies the events of a
database built by bench/analytics_queries.py (`--db PATH`) into one Parquet file (through
CSV, with each event's Attributes as a MAP and its Metrics as a MAP), then times, in one
run, the breakdown and the 3-step funnel of bench/analytics_queries.py with the
collector's own queries beside the same questions asked of DuckDB. DuckDB's funnel counts,
by endpoint, the chains step 1 <= step 2 <= step 3 within the window (ASOF joins).

    pip install duckdb   # not a dependency of Homing
    python bench/analytics_queries.py --days 30 --no-naive --ingest-rounds 0 --db a10m.db
    python bench/columnar_probe.py a10m.db [--parquet DIR] [--runs 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from homing_collector.analytics import queries
from homing_collector.analytics.params import EventFilters, Range, Step

APP = "benchapp"
FIRST_DAY = date(2026, 6, 1)  # as bench/analytics_queries.py loads
WINDOW_MS = 3_600_000
STEPS = [Step("_session.start"), Step("screen.view", (("screen", "shop"),)),
         Step("_monetization.purchase")]  # fmt: skip
LEVELS = EventFilters(
    event_types=("level.complete",), breakdown="level",
    include=(("level", frozenset({"forest", "cave"})),),
)  # fmt: skip


def export(conn: sqlite3.Connection, duck: Any, parquet: Path) -> None:
    started = time.perf_counter()
    text = parquet.with_suffix(".csv")
    with text.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["app_id", "endpoint_id", "event_id", "event_type", "ts", "body"])
        cursor = conn.execute(
            "SELECT app_id, endpoint_id, event_id, event_type, ts, CAST(body AS TEXT) FROM events"
        )
        while rows := cursor.fetchmany(50_000):
            writer.writerows(rows)
    written = time.perf_counter()
    columns = ("{'app_id': 'VARCHAR', 'endpoint_id': 'VARCHAR', 'event_id': 'VARCHAR', "
               "'event_type': 'VARCHAR', 'ts': 'BIGINT', 'body': 'VARCHAR'}")  # fmt: skip
    duck.execute(f"""
        COPY (SELECT app_id, endpoint_id, event_id, event_type, ts,
                     CAST(json_extract(body, '$.Attributes') AS MAP(VARCHAR, VARCHAR))
                         AS attributes,
                     CAST(json_extract(body, '$.Metrics') AS MAP(VARCHAR, DOUBLE)) AS metrics
              FROM read_csv('{text}', header = true, columns = {columns})
              ORDER BY app_id, ts)
        TO '{parquet}' (FORMAT parquet)""")  # fmt: skip
    text.unlink()
    print(f"copied: CSV {written - started:.0f} s, Parquet {time.perf_counter() - written:.0f} s, "
          f"{parquet.stat().st_size / 1e6:,.0f} MB")  # fmt: skip


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    import duckdb  # type: ignore[import-not-found, unused-ignore]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path, help="a database bench/analytics_queries.py built")
    parser.add_argument("--parquet", type=Path, help="where to keep the copy (default: beside)")
    parser.add_argument("--runs", type=int, default=3, help="runs per query; the median counts")
    parser.add_argument("--days", type=int, default=30, help="the days the database spans")
    args = parser.parse_args()
    conn = sqlite3.connect(args.db.resolve().as_uri() + "?mode=ro", uri=True)
    conn.execute("PRAGMA cache_size = -65536")
    duck = duckdb.connect()
    duck.execute(f"SET threads = {os.cpu_count() or 1}")
    parquet = args.parquet or args.db.with_suffix(".parquet")
    if not parquet.exists():
        export(conn, duck, parquet)
    end = FIRST_DAY + timedelta(days=args.days - 1)
    start = end - timedelta(days=29)
    lo = int(datetime(start.year, start.month, start.day, tzinfo=timezone.utc).timestamp()) * 1000
    hi = lo + 30 * 86_400_000
    scan = f"read_parquet('{parquet}') WHERE app_id = '{APP}' AND ts >= {lo} AND ts < {hi}"
    rows = []

    users = Range(start, end, ZoneInfo("UTC"), "users", end)
    sqlite_s, got = timed(lambda: queries.events(conn, APP, users, LEVELS), 1)
    duck_s, duck_got = timed(lambda: duck.sql(
        f"SELECT attributes['level'], count(*) FROM {scan} AND event_type = 'level.complete'"
        " AND attributes['level'] IN ('forest', 'cave') GROUP BY ALL ORDER BY ALL"
    ).fetchall(), args.runs)  # fmt: skip
    rows.append(("events filtered, breakdown", sqlite_s, duck_s,
                 sorted((r["value"], r["count"]) for r in got["breakdown"]), duck_got))  # fmt: skip

    endpoints = Range(start, end, ZoneInfo("UTC"), "endpoints", end)
    sqlite_s, got = timed(lambda: queries.funnel(conn, APP, endpoints, STEPS, 3600), 1)
    funnel = f"""
        WITH e AS (SELECT endpoint_id, ts, event_type, attributes FROM {scan}
                   AND event_type IN ('_session.start', 'screen.view', '_monetization.purchase')),
        s1 AS (SELECT endpoint_id, ts AS t1 FROM e WHERE event_type = '_session.start'),
        s2 AS (SELECT endpoint_id, ts AS t2 FROM e
               WHERE event_type = 'screen.view' AND attributes['screen'] = 'shop'),
        s3 AS (SELECT endpoint_id, ts AS t3 FROM e WHERE event_type = '_monetization.purchase'),
        j2 AS (SELECT s1.endpoint_id, t1, t2 FROM s1 ASOF LEFT JOIN s2
               ON s1.endpoint_id = s2.endpoint_id AND s2.t2 >= s1.t1),
        j3 AS (SELECT j2.endpoint_id, t1, t2, t3 FROM j2 ASOF LEFT JOIN s3
               ON j2.endpoint_id = s3.endpoint_id AND s3.t3 >= j2.t2),
        d AS (SELECT max(CASE WHEN t3 - t1 <= {WINDOW_MS} THEN 3
                              WHEN t2 - t1 <= {WINDOW_MS} THEN 2 ELSE 1 END) AS depth
              FROM j3 GROUP BY endpoint_id)
        SELECT count(*), count(*) FILTER (depth >= 2), count(*) FILTER (depth >= 3) FROM d"""
    duck_s, duck_got = timed(lambda: duck.sql(funnel).fetchall(), args.runs)
    rows.append(("funnel of 3 steps, by endpoint", sqlite_s, duck_s,
                 [step["count"] for step in got["steps"]], list(duck_got[0])))  # fmt: skip

    print(f"{'query':32}{'SQLite':>12}{'DuckDB':>12}  answers (SQLite / DuckDB)")
    for name, sqlite_s, duck_s, expected, answer in rows:
        print(
            f"{name:32}{sqlite_s * 1000:>10,.0f} ms{duck_s * 1000:>9,.0f} ms  {expected} / {answer}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
