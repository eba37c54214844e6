"""Dashboard queries on a big SQLite file, each beside a naive scan of the raw events.

1. Loads --events generated events (10,000,000 by default) into a fresh SQLite file:
   simulated devices over --days days (90), with sessions, custom events with attributes
   and metrics, purchases, notification opens and retention decay. Each device's whole
   life goes in at once, so the events are not in time order; --churn sets how soon
   devices leave (a higher churn makes more devices for the same number of events). The
   rows go through the collector's own rollup code (`analytics.rollups.apply`), and the
   endpoints through its demographic counters (`storage.endpoint_values`), in batches,
   inside the transaction that inserts them, as the collector's writer does; only HTTP
   is skipped.
2. Times each dashboard query (the median of --runs runs) beside a naive scan of the raw
   events that computes the same figure, in the same run, and checks they agree.
   Before timing, the sealer copies the events into the columnar copy that the funnel
   and the filtered event counts read with DuckDB (storage/columnar.py); --no-columnar
   times them on the events table alone, --no-seal on the copy as it is (what it lacks
   is read from the events table), opening the database read-only. With --days 90 or
   more, the funnel is also timed over 90 days. --only times the queries whose names
   hold a word, e.g. --only funnel (repeat it for more).
3. Measures PutEvents ingestion through a live collector with rollups on and off
   (HOMING_ROLLUPS), beside the parse-only ceiling, reusing bench/collector_ingest.py.

    python bench/analytics_queries.py [--events 10000000] [--runs 5] [--ingest-duration 8]
        [--days 90] [--churn 0.12] [--db PATH] [--no-columnar | --no-seal] [--only TEXT]
        [--postgres URL [--pg-columnar DIR]]

With --postgres, the queries are also timed on a PostgreSQL database that holds a copy of
--db (`homing-collector migrate-db --from DB --to URL`), each answer compared with SQLite's;
with --pg-columnar DIR too, a second time through a collector's own columnar copy of it
in DIR (storage/pg_columnar.py), which its sealer makes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from itertools import cycle
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from homing_collector.analytics import kpis, queries, rollups
from homing_collector.analytics.params import EventFilters, Range, Step
from homing_collector.sealer import Sealer
from homing_collector.storage import columnar, endpoint_values
from homing_collector.storage.analytics_sqlite import rollups as rollups_sql
from homing_collector.storage.migrations import migrate
from homing_collector.storage.sqlite import SQLiteStorage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import collector_ingest as ingest

DAYS = 90
FIRST_DAY = date(2026, 6, 1)
APP = "benchapp"
DAY_MS = 86_400_000
CHURN = 0.12  # the chance that a device is not seen again after an active day
BATCH = 20_000
SCREENS = ["home", "shop", "cart", "profile", "search", "settings"]
LEVELS = ["forest", "cave", "sky", "sea"]
DEVICES = [
    ("android", "14", "Google", "Pixel 8"),
    ("android", "13", "Samsung", "SM-S911B"),
    ("ios", "17.4", "Apple", "iPhone15,2"),
    ("linux", "6.8", "Raspberry Pi", "4B"),
]


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _device_events(rng: random.Random, n: int, base_ms: int) -> Iterator[tuple[Any, ...]]:
    """(event_type, ts, session_id, body) of one device's life."""
    day = rng.randrange(DAYS)
    seq = 0
    while day < DAYS:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            start = base_ms + day * DAY_MS + rng.randrange(DAY_MS)
            sid = f"{n:08x}-{start}"
            opening = {"Id": sid, "StartTimestamp": _iso(start)}
            seq += 1
            yield (
                seq,
                "_session.start",
                start,
                sid,
                {"EventType": "_session.start", "Timestamp": _iso(start), "Session": opening},
            )
            t = start
            if rng.random() < 0.03:
                t += 1000
                seq += 1
                yield (
                    seq,
                    "_campaign.opened_notification",
                    t,
                    sid,
                    {
                        "EventType": "_campaign.opened_notification",
                        "Timestamp": _iso(t),
                        "Session": opening,
                        "Attributes": {"campaign_id": rng.choice(["c1", "c2"])},
                    },
                )
            for _ in range(int(rng.expovariate(1 / 8)) + 1):
                t += rng.randrange(1000, 120_000)
                r = rng.random()
                if r < 0.55:
                    kind = "screen.view"
                    extra: dict[str, Any] = {
                        "Attributes": {"screen": rng.choice(SCREENS)},
                        "Metrics": {"load_ms": rng.randrange(10, 900)},
                    }
                elif r < 0.97:
                    kind = "level.complete"
                    extra = {
                        "Attributes": {"level": rng.choice(LEVELS)},
                        "Metrics": {"score": rng.randrange(1000), "stars": rng.randrange(4)},
                    }
                else:
                    kind = "_monetization.purchase"
                    extra = {
                        "Attributes": {
                            "_currency": rng.choice(["USD", "EUR"]),
                            "_product_id": "gems",
                        },
                        "Metrics": {"_item_price": rng.choice([0.99, 4.99]), "_quantity": 1},
                    }
                seq += 1
                yield (
                    seq,
                    kind,
                    t,
                    sid,
                    {"EventType": kind, "Timestamp": _iso(t), "Session": opening, **extra},
                )
            t += rng.randrange(1000, 30_000)
            closing = {**opening, "StopTimestamp": _iso(t), "Duration": t - start}
            seq += 1
            yield (
                seq,
                "_session.stop",
                t,
                sid,
                {"EventType": "_session.stop", "Timestamp": _iso(t), "Session": closing},
            )
        if rng.random() < CHURN:
            return
        day += rng.choice((1, 1, 1, 2, 2, 3, 5, 7))


def load(path: Path, total: int) -> float:
    """Fill a fresh database with `total` events; return the seconds it took."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 16384")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    migrate(conn)
    by_hour = any(row[1] == "hour" for row in conn.execute("PRAGMA table_info(events)"))
    conn.execute(
        "INSERT INTO apps (id, name, created_at) VALUES (?, 'bench', '2026-06-01T00:00:00Z')",
        (APP,),
    )
    rng = random.Random(42)
    base_ms = int(datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day,
                           tzinfo=timezone.utc).timestamp() * 1000)  # fmt: skip
    rows: list[tuple[Any, ...]] = []
    endpoints: list[tuple[Any, ...]] = []
    stored = 0
    n = 0
    last_report = time.perf_counter()

    def flush() -> None:
        nonlocal rows, endpoints, stored
        conn.execute("BEGIN")
        for endpoint in endpoints:
            conn.execute(
                "INSERT INTO endpoints (app_id, endpoint_id, user_id, body) VALUES (?, ?, ?, ?)",
                endpoint,
            )
            endpoint_values.changed(conn, APP, endpoint[1], None, orjson.loads(endpoint[3]))
        if by_hour:  # migration 6 and later
            conn.executemany(
                "INSERT INTO events (app_id, endpoint_id, event_id, event_type, ts, arrival,"
                " session_id, body, hour) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*row, row[4] // 3_600_000) for row in rows],
            )
        else:  # a schema from before, to time its upgrade (--old-schema)
            conn.executemany(
                "INSERT INTO events (app_id, endpoint_id, event_id, event_type, ts, arrival,"
                " session_id, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        rollups.apply(conn, rows)  # the collector's own rollup code
        conn.execute("COMMIT")
        stored += len(rows)
        rows, endpoints = [], []

    while stored + len(rows) < total:
        endpoint_id = f"{rng.getrandbits(128):032x}"
        platform, version, make, model = DEVICES[n % len(DEVICES)]
        user = f"user-{n // 2}" if n % 5 < 3 else None  # some users have two devices
        body: dict[str, Any] = {
            "Id": endpoint_id, "ChannelType": "GCM",
            "Demographic": {"Platform": platform, "PlatformVersion": version, "Make": make,
                            "Model": model, "AppVersion": rng.choice(["1.0", "1.1", "2.0"])},
            "Location": {"Country": rng.choice(["US", "DE", "JP", "BR"])},
            "Attributes": {"plan": [rng.choice(["free", "pro"])]},
        }  # fmt: skip
        if user:
            body["User"] = {"UserId": user}
        endpoints.append((APP, endpoint_id, user, orjson.dumps(body).decode()))
        for seq, kind, ts, sid, event in _device_events(rng, n, base_ms):
            rows.append((APP, endpoint_id, f"{seq:x}", kind, ts, ts, sid, orjson.dumps(event)))
            if stored + len(rows) >= total:
                break
        n += 1
        if len(rows) >= BATCH:
            flush()
            if time.perf_counter() - last_report > 15:
                last_report = time.perf_counter()
                rate = stored / (last_report - started)
                print(f"  {stored:,} events, {n:,} devices, {rate:,.0f} events/s", flush=True)
    if rows or endpoints:
        flush()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()
    print(f"  {n:,} devices")
    return time.perf_counter() - started


# -- the queries and their naive peers ----------------------------------------------------


def _p50(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """The median wall time of `runs` calls, the median process CPU time (all threads:
    a machine shared with other work stretches the first, hardly the second), and the
    last answer."""
    times, cpu, result = [], [], None
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpu), result


def _naive_days(conn: sqlite3.Connection, q: Range, select: str, extra: str = "") -> list[Any]:
    """SELECT local day, <select> over the raw events of the range, grouped by day (the
    zone's offset at the start of the range, as a naive scan would do)."""
    start = datetime(q.start.year, q.start.month, q.start.day, tzinfo=q.zone)
    offset = int((start.utcoffset() or timedelta()).total_seconds())
    lo = int(start.timestamp() * 1000)
    hi = lo + ((q.end - q.start).days + 1) * DAY_MS
    return conn.execute(
        f"SELECT date((ts / 1000) + {offset}, 'unixepoch') AS d, {select} FROM events"
        f" WHERE app_id = ? AND ts >= ? AND ts < ? {extra} GROUP BY d ORDER BY d",
        (APP, lo, hi),
    ).fetchall()


def _range_ms(q: Range) -> tuple[int, int]:
    start = datetime(q.start.year, q.start.month, q.start.day, tzinfo=q.zone)
    lo = int(start.timestamp() * 1000)
    return lo, lo + ((q.end - q.start).days + 1) * DAY_MS


FUNNEL = [Step("_session.start"), Step("screen.view", (("screen", "shop"),)),
          Step("_monetization.purchase")]  # fmt: skip
FUNNEL_WINDOW = 3600


def _naive_funnel(c: sqlite3.Connection, q: Range) -> list[int]:
    """Users reaching each step of FUNNEL, from every raw event of the range, attributes
    read by SQLite's JSON functions: another route to the same definition."""
    lo, hi = _range_ms(q)
    users = dict(c.execute("SELECT endpoint_id, coalesce('u:' || user_id, 'e:' || endpoint_id)"
                           " FROM endpoints WHERE app_id = ?", (APP,)).fetchall())  # fmt: skip
    by_users = q.by == "users"
    timelines: dict[str, list[tuple[int, int]]] = {}
    for endpoint_id, kind, ts, screen in c.execute(
        "SELECT endpoint_id, event_type, ts, json_extract(CAST(body AS TEXT),"
        " '$.Attributes.screen') FROM events WHERE app_id = ? AND ts >= ? AND ts < ?",
        (APP, lo, hi),
    ):
        step = {"_session.start": 0, "_monetization.purchase": 2}.get(kind)
        if kind == "screen.view" and screen == "shop":
            step = 1
        if step is not None:
            subject = users.get(endpoint_id, "e:" + endpoint_id) if by_users else endpoint_id
            timelines.setdefault(subject, []).append((ts, step))
    reached = [0] * len(FUNNEL)
    for timeline in timelines.values():
        timeline.sort()
        best = 0
        for i, (t0, step) in enumerate(timeline):
            if step != 0:
                continue
            depth = 1
            for j, (t, s) in enumerate(timeline):
                if t < t0 or j == i:
                    continue
                if t - t0 > FUNNEL_WINDOW * 1000:
                    break
                if s == depth:
                    depth += 1
            best = max(best, min(depth, len(FUNNEL)))
        for k in range(best):
            reached[k] += 1
    return reached


def _naive_breakdown(c: sqlite3.Connection, q: Range) -> dict[str, int]:
    lo, hi = _range_ms(q)
    return dict(c.execute(
        "SELECT v, count(*) FROM (SELECT json_extract(CAST(body AS TEXT), '$.Attributes.level')"
        " AS v FROM events WHERE app_id = ? AND ts >= ? AND ts < ?"
        " AND event_type = 'level.complete') WHERE v IN ('forest', 'cave') GROUP BY v",
        (APP, lo, hi),
    ).fetchall())  # fmt: skip


def _naive_platforms(c: sqlite3.Connection) -> dict[str, int]:
    return dict(c.execute(
        "SELECT json_extract(body, '$.Demographic.Platform') AS v, count(*) FROM endpoints"
        " WHERE app_id = ? GROUP BY v", (APP,),
    ).fetchall())  # fmt: skip


def _naive_opens(c: sqlite3.Connection, q: Range) -> int:
    lo, hi = _range_ms(q)
    (count,) = c.execute(
        "SELECT count(*) FROM events NOT INDEXED WHERE app_id = ? AND ts >= ? AND ts < ?"
        " AND event_type = '_campaign.opened_notification'", (APP, lo, hi),
    ).fetchone()  # fmt: skip
    return int(count)


def cases(q: Range, copy: Path | None) -> list[tuple[str, bool, Callable[[sqlite3.Connection], Any],
                                  Callable[[sqlite3.Connection], Any] | None,
                                  Callable[[Any, Any], bool] | None]]:  # fmt: skip
    """(name, headline, query, naive peer, check(query result, naive result))."""
    users = q
    endpoints = Range(q.start, q.end, q.zone, "endpoints", q.today)
    long = Range(q.end - timedelta(days=89), q.end, q.zone, "users", q.today)

    def dau_check(got: Any, naive: Any) -> bool:
        return [d["active"] for d in got["days"]] == [row[1] for row in naive]

    def counts_check(got: Any, naive: Any) -> bool:
        return sum(t["count"] for t in got["types"]) == sum(row[1] for row in naive)

    def retention_naive(c: sqlite3.Connection) -> Any:
        # Days of activity per endpoint from the raw events, then cohorts by first day.
        days: dict[str, set[int]] = {}
        for endpoint_id, day in c.execute(
            "SELECT DISTINCT endpoint_id, ts / 86400000 FROM events WHERE app_id = ?", (APP,)
        ):
            days.setdefault(endpoint_id, set()).add(day)
        first_day = (q.start - date(1970, 1, 1)).days
        sizes = [0] * 30
        back7 = 0
        for active in days.values():
            cohort = min(active) - first_day
            if 0 <= cohort < 30:
                sizes[cohort] += 1
                if cohort + 7 <= 29 and any(min(active) + k in active for k in range(1, 8)):
                    back7 += 1
        eligible = sum(sizes[:23])
        return sizes, back7 / eligible if eligible else None

    def retention_check(got: Any, naive: Any) -> bool:
        sizes, d7 = naive
        return [c["size"] for c in got["cohorts"]] == sizes and got["rates"]["d7"] == (
            None if d7 is None else round(d7, 4)
        )

    def revenue_check(got: Any, naive: Any) -> bool:
        return got["purchases"] == sum(row[1] for row in naive)

    return [
        ("usage by users (DAU/WAU/MAU, new, sessions)", True,
         lambda c: queries.usage(c, APP, users),
         lambda c: _naive_days(
             c, users, "count(DISTINCT coalesce((SELECT 'u:' || n.user_id FROM endpoints n"
             " WHERE n.app_id = events.app_id AND n.endpoint_id = events.endpoint_id),"
             " 'e:' || endpoint_id))"),
         dau_check),
        ("usage by endpoints", True,
         lambda c: queries.usage(c, APP, endpoints),
         lambda c: _naive_days(c, endpoints, "count(DISTINCT endpoint_id)"),
         dau_check),
        ("retention by users", True,
         lambda c: queries.retention(c, APP, users), None, None),
        ("retention by endpoints", True,
         lambda c: queries.retention(c, APP, Range(q.start, q.end, q.zone, "endpoints", q.end)),
         retention_naive, retention_check),
        ("event counts and metrics", True,
         lambda c: queries.events(c, APP, users, EventFilters()),
         lambda c: _naive_days(c, users, "count(*)"),
         counts_check),
        ("revenue", True,
         lambda c: queries.revenue(c, APP, users),
         lambda c: _naive_days(c, users, "count(*)",
                               "AND event_type = '_monetization.purchase'"),
         revenue_check),
        ("KPI homing-daily-active-users-grouped-by-date", True,
         lambda c: kpis.date_range_kpi(c, APP, "homing-daily-active-users-grouped-by-date",
                                       q.end - timedelta(days=6), q.end), None, None),
        ("demographics: platform", False,
         lambda c: queries.demographics(c, APP, "platform"), _naive_platforms,
         lambda got, naive: {r["value"]: r["endpoints"] for r in got["rows"]} == naive),
        ("events filtered, breakdown", False,
         lambda c: queries.events(c, APP, users, EventFilters(
             event_types=("level.complete",), breakdown="level",
             include=(("level", frozenset({"forest", "cave"})),)), copy=copy),
         lambda c: _naive_breakdown(c, users),
         lambda got, naive: {r["value"]: r["count"] for r in got["breakdown"]} == naive),
        ("funnel of 3 steps", False,
         lambda c: queries.funnel(c, APP, users, FUNNEL, FUNNEL_WINDOW, copy=copy),
         lambda c: _naive_funnel(c, users),
         lambda got, naive: [s["count"] for s in got["steps"]] == naive),
        ("funnel of 3 steps, by endpoints", False,
         lambda c: queries.funnel(c, APP, endpoints, FUNNEL, FUNNEL_WINDOW, copy=copy),
         lambda c: _naive_funnel(c, endpoints),
         lambda got, naive: [s["count"] for s in got["steps"]] == naive),
        *([("funnel of 3 steps over 90 days", False,
            lambda c: queries.funnel(c, APP, long, FUNNEL, FUNNEL_WINDOW, copy=copy),
            lambda c: _naive_funnel(c, long),
            lambda got, naive: [s["count"] for s in got["steps"]] == naive)]
          if DAYS >= 90 else []),
        ("campaigns", False, lambda c: queries.campaigns(c, APP, users),
         lambda c: _naive_opens(c, users), lambda got, naive: got["opened"] == naive),
    ]  # fmt: skip


def seal(path: Path) -> float:
    """Copy the events into the columnar copy, as the collector's sealer does in the
    background; return the seconds it took."""
    started = time.perf_counter()

    async def run() -> None:
        storage = SQLiteStorage(path, columnar_copy=True)
        await storage.start()
        try:
            await Sealer(storage).seal_all()
        finally:
            await storage.close()

    asyncio.run(run())
    return time.perf_counter() - started


def time_queries(
    path: Path, runs: int, naive: bool, copy: Path | None, only: list[str]
) -> list[tuple[str, bool, float, float | None, str]]:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    conn.execute("PRAGMA cache_size = -65536")
    results = []
    for name, headline, fn, peer, check in cases(_last_30_days(), copy):
        if only and not any(part in name for part in only):
            continue
        fn(conn)  # warm the cache, as a dashboard in use would have it
        p50, cpu, got = _p50(lambda fn=fn: fn(conn), runs)
        naive_s, verdict = None, ""
        if naive and peer is not None:
            t = time.perf_counter()
            expected = peer(conn)
            naive_s = time.perf_counter() - t
            verdict = "agrees" if check is None or check(got, expected) else "DIFFERS"
        results.append((name, headline, p50, naive_s, verdict))
        print(f"  {name}: {p50 * 1000:.1f} ms, {cpu * 1000:.0f} ms of CPU"
              + (f" (naive scan {naive_s * 1000:,.0f} ms, {verdict})" if naive_s else ""),
              flush=True)  # fmt: skip
    conn.close()
    return results


def _last_30_days() -> Range:
    end = FIRST_DAY + timedelta(days=DAYS - 1)
    return Range(end - timedelta(days=29), end, ZoneInfo("UTC"), "users", end)


def seal_postgres(url: str, root: Path) -> float:
    """Make a collector's own columnar copy of the PostgreSQL database at `url` in `root`,
    as its sealer does in the background (pg_sealer.py); return the seconds it took."""
    from homing_collector.pg_sealer import PgSealer
    from homing_collector.storage.postgres import PostgresStorage

    started = time.perf_counter()

    async def run() -> None:
        storage = PostgresStorage(url, columnar=root)
        await storage.start()
        try:
            await PgSealer(storage).seal_all()
        finally:
            await storage.close()

    asyncio.run(run())
    return time.perf_counter() - started


def time_postgres(
    path: Path,
    url: str,
    runs: int,
    copy: Path | None,
    only: list[str],
    pg_copy: Path | None = None,
) -> list[tuple[str, bool, float, float | None, str]]:
    """Each query on PostgreSQL (a copy of `path` made by migrate-db), as the collector
    runs it there: a read-only, repeatable-read transaction on a kept connection; with
    `pg_copy`, through a collector's own columnar copy there (storage/pg_columnar.py).
    Each answer is compared with SQLite's answer to the same query, in the same run."""
    import psycopg

    lite = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    lite.execute("PRAGMA cache_size = -65536")
    pg = psycopg.connect(url)
    pg.read_only = True
    pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ

    def on_pg(fn: Callable[[Any], Any]) -> Any:
        with pg.transaction():
            return fn(pg)

    q = _last_30_days()
    results = []
    for (name, headline, fn, *_), (_, _, lite_fn, *_) in zip(
        cases(q, pg_copy), cases(q, copy), strict=True
    ):
        if only and not any(part in name for part in only):
            continue
        on_pg(fn)  # warm the cache, as a dashboard in use would have it
        p50, cpu, got = _p50(lambda fn=fn: on_pg(fn), runs)
        t = time.perf_counter()
        expected = lite_fn(lite)
        lite_s = time.perf_counter() - t
        verdict = "agrees" if got == expected else "DIFFERS"
        results.append((name, headline, p50, lite_s, verdict))
        print(f"  {name}: {p50 * 1000:.1f} ms, {cpu * 1000:.0f} ms of this process's CPU"
              f" (SQLite {lite_s * 1000:,.1f} ms, {verdict})", flush=True)  # fmt: skip
    pg.close()
    lite.close()
    return results


# -- ingestion with and without rollups, through a live collector -------------------------


async def ingest_rates(
    duration: float, warmup: float, clients: int, workdir: Path, *, rounds: int, max_rate: float
) -> dict[str, float]:
    per_case = int(max_rate * (duration + warmup) / ingest.EVENTS_PER_BATCH) + 1
    pool = ingest.build_pools(per_case * rounds)[False]
    rates: dict[str, list[float]] = {"ceiling": [], "rollups on": [], "rollups off": []}
    cpu: dict[str, list[float]] = {"ceiling": [], "rollups on": [], "rollups off": []}
    servers = {}
    for label, flag in (("rollups on", "1"), ("rollups off", "0")):
        db = workdir / f"ingest-{flag}.db"
        created = subprocess.run(
            [sys.executable, "-m", "homing_collector", "--db", str(db), "apps", "create",
             "bench", "--json"], check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        servers[label] = (db, json.loads(created.stdout))
    # Alternate the cases, twice, so that a neighbour's burst on a shared machine does not
    # land on one side only.
    for round_ in range(rounds):
        for label in ("rollups off", "rollups on", "ceiling"):
            db, app = servers["rollups on" if label == "ceiling" else label]
            os.environ["HOMING_ROLLUPS"] = "0" if label == "rollups off" else "1"
            process, port = ingest._start_server(sys.executable, db, workdir / "server.log", [])
            try:
                await ingest._wait_healthy(port)
                stored = label != "ceiling"
                path = f"/v1/apps/{app['application_id']}/events" + (
                    "" if stored else "-parse-only"
                )
                chunk = pool[round_ * per_case : (round_ + 1) * per_case]
                # The ceiling stores nothing, so it may go round its batches.
                bodies = iter(chunk) if stored else cycle(chunk)
                figures, counters = await ingest._run_case(
                    port=port, server_pid=process.pid, path=path,
                    token=app["ingest"]["token"], gzip=False, bodies=bodies, clients=clients,
                    warmup=warmup, duration=duration, stored=stored,
                )  # fmt: skip
            finally:
                ingest._stop_server(process)
            for error in counters.errors:
                print(f"  ! {label}: {error}")
            rates[label].append(figures.events_per_s)
            cpu[label].append(figures.server_cpu / max(figures.events_per_s, 1) * 1e6)
            print(f"  round {round_ + 1}, {label}: {figures.events_per_s:,.0f} events/s, "
                  f"{cpu[label][-1]:.1f} us of server CPU per event (server CPU "
                  f"{figures.server_cpu:.0%}, other processes {figures.other_cpu:.0%})",
                  flush=True)  # fmt: skip
    os.environ.pop("HOMING_ROLLUPS", None)
    result = {label: statistics.mean(values) for label, values in rates.items()}
    result.update({f"{label} cpu": statistics.mean(values) for label, values in cpu.items()})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events to load")
    parser.add_argument("--runs", type=int, default=5, help="runs per query; the median counts")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive scans")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="time only the queries whose name holds TEXT (repeat)")  # fmt: skip
    parser.add_argument("--ingest-duration", type=float, default=8.0,
                        help="seconds measured per ingestion case; 0 skips them")  # fmt: skip
    parser.add_argument("--ingest-rounds", type=int, default=3,
                        help="rounds of the three ingestion cases; 0 skips them")  # fmt: skip
    parser.add_argument("--max-rate", type=float, default=100_000,
                        help="events/s the pre-built batches can feed a stored case")  # fmt: skip
    parser.add_argument("--days", type=int, default=90, help="days the loaded events span")
    parser.add_argument(
        "--churn",
        type=float,
        default=0.12,
        help="chance that a device stops after an active day (more devices)",
    )
    parser.add_argument("--db", type=Path, help="reuse (or keep) this database file")
    parser.add_argument("--no-columnar", action="store_true",
                        help="read the events table alone: no columnar copy")  # fmt: skip
    parser.add_argument("--no-seal", action="store_true",
                        help="read the columnar copy as it is; change nothing in --db")  # fmt: skip
    parser.add_argument("--postgres", metavar="URL",
                        help="also time the queries on this PostgreSQL copy of --db, made "
                        "with `homing-collector migrate-db`")  # fmt: skip
    parser.add_argument("--pg-columnar", type=Path, metavar="DIR",
                        help="with --postgres, time them there again through a collector's "
                        "own columnar copy in DIR, sealed first")  # fmt: skip
    args = parser.parse_args()
    globals().update(DAYS=args.days, CHURN=args.churn)
    workdir = Path(tempfile.mkdtemp(prefix="homing-analytics-bench-"))
    db = args.db or workdir / "analytics.db"
    try:
        if not db.exists():
            print(f"loading {args.events:,} events into {db.name} ...", flush=True)
            seconds = load(db, args.events)
            print(f"loaded in {seconds:.0f} s ({args.events / seconds:,.0f} events/s with "
                  "rollups, no HTTP)")  # fmt: skip
        with sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True) as conn:
            (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
            sizes = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in rollups_sql.TABLES}  # fmt: skip
        conn.close()
        print(f"{count:,} events; rollup rows: "
              + ", ".join(f"{t} {n:,}" for t, n in sizes.items()))  # fmt: skip
        copy = None
        if args.no_seal and not args.no_columnar:
            copy = columnar.directory(db)
        elif not args.no_columnar:
            seconds = seal(db)
            copy = columnar.directory(db)
            size = sum(p.stat().st_size for p in copy.rglob("*.parquet"))
            print(f"sealed into the columnar copy in {seconds:.0f} s ({count / seconds:,.0f} "
                  f"events/s); {size / 1e6:,.0f} MB of Parquet beside "
                  f"{db.stat().st_size / 1e6:,.0f} MB of SQLite")  # fmt: skip
        print(f"queries over the last 30 days, median of {args.runs} runs"
              + (", columnar copy" if copy else ", events table alone") + ":")  # fmt: skip
        results = time_queries(db, args.runs, not args.no_naive, copy, args.only)
        slow = [name for name, headline, p50, _, _ in results if headline and p50 > 0.1]
        print(
            "headline queries within 100 ms: " + ("all" if not slow else "not " + ", ".join(slow))
        )
        if args.postgres:
            print(f"the same queries on PostgreSQL, median of {args.runs} runs, each answer "
                  "beside SQLite's:")  # fmt: skip
            on_pg = time_postgres(db, args.postgres, args.runs, copy, args.only)
            slow = [name for name, headline, p50, _, _ in on_pg if headline and p50 > 0.1]
            print("PostgreSQL headline queries within 100 ms: "
                  + ("all" if not slow else "not " + ", ".join(slow)))  # fmt: skip
            results += on_pg
            if args.pg_columnar:
                seconds = seal_postgres(args.postgres, args.pg_columnar)
                size = sum(p.stat().st_size for p in args.pg_columnar.rglob("*.parquet"))
                print(f"sealed into a collector's own columnar copy in {seconds:.0f} s; "
                      f"{size / 1e6:,.0f} MB of Parquet")  # fmt: skip
                print(f"the same queries on PostgreSQL through that copy, median of {args.runs}"
                      " runs, each answer beside SQLite's:")  # fmt: skip
                results += time_postgres(
                    db, args.postgres, args.runs, copy, args.only, args.pg_columnar
                )
        if args.ingest_duration > 0 and args.ingest_rounds > 0:
            print("PutEvents through a live collector, 16 clients:")
            rates = asyncio.run(
                ingest_rates(args.ingest_duration, 2.0, 16, workdir, rounds=args.ingest_rounds,
                             max_rate=args.max_rate)
            )  # fmt: skip
            print(f"rollups on {rates['rollups on']:,.0f} events/s, off "
                  f"{rates['rollups off']:,.0f} events/s: "
                  f"{rates['rollups on'] / rates['rollups off']:.1%} (target 80%); "
                  f"parse-only ceiling {rates['ceiling']:,.0f} events/s")  # fmt: skip
            print(f"server CPU per stored event: rollups on {rates['rollups on cpu']:.1f} us, "
                  f"off {rates['rollups off cpu']:.1f} us: off/on "
                  f"{rates['rollups off cpu'] / rates['rollups on cpu']:.1%} (what the rate "
                  "ratio would be on a server that has one core to itself)")  # fmt: skip
        return 1 if any(v == "DIFFERS" for *_, v in results) else 0
    finally:
        # The work directory holds the ingestion databases, and the loaded one unless
        # --db put it elsewhere to keep.
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
