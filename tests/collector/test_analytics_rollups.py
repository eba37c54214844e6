"""The rollups' incremental pieces against brute force, in any order of arrival."""

from __future__ import annotations

import asyncio
import pickle
import random
import sqlite3
from typing import Any

import orjson
import pytest

from homing_collector import ingest
from homing_collector.analytics import cover, opens, rollups, visits
from homing_collector.storage import events as events_sql
from homing_collector.storage import values
from homing_collector.storage.analytics_sqlite import rollups as rollups_sql
from homing_collector.storage.migrations import migrate
from tests.collector import analytics_data
from tests.conftest import BACKENDS


def assert_rollups_match_events(conn: sqlite3.Connection | PgConn, app_id: str) -> None:
    """Event counts per hour and type, and active endpoints per hour, as the raw events
    say; used after kills and restarts."""
    counts = conn.execute(
        "SELECT hour, event_type, count FROM an_counts WHERE app_id = ? AND count != 0"
        " ORDER BY 1, 2",
        (app_id,),
    ).fetchall()
    raw = conn.execute(
        "SELECT ts / 3600000, event_type, count(*) FROM events WHERE app_id = ?"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        (app_id,),
    ).fetchall()
    assert counts == raw
    assert sum(row[2] for row in raw) > 0
    active = conn.execute(
        "SELECT hour, key FROM an_active WHERE app_id = ? AND kind = 0 ORDER BY 1, 2", (app_id,)
    ).fetchall()
    raw_active = conn.execute(
        "SELECT DISTINCT ts / 3600000, endpoint_id FROM events WHERE app_id = ?"
        f" AND event_type NOT IN ({', '.join('?' * len(rollups.NOT_ACTIVITY))})"
        " ORDER BY 1, 2",
        (app_id, *sorted(rollups.NOT_ACTIVITY)),
    ).fetchall()
    assert active == raw_active


class PgConn:
    """A PostgreSQL connection (autocommit, migrated) that takes the ? marks of the SQL
    here; the rollups run their own statements through it (storage/analytics_pg/)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: Any) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), list(rows))

    def close(self) -> None:
        self.conn.close()


def _pg_database(request: pytest.FixtureRequest) -> PgConn:
    from homing_collector.storage.postgres import PostgresStorage
    from tests.pg import create_database, drop_database

    cluster = request.getfixturevalue("postgres_cluster")
    url = create_database(cluster)

    async def migrated() -> None:
        storage = PostgresStorage(url)
        await storage.start()
        await storage.close()

    asyncio.run(migrated())
    db = PgConn(url)

    def drop() -> None:
        db.conn.close()
        drop_database(cluster, url)

    request.addfinalizer(drop)
    return db


def new_database(request: pytest.FixtureRequest, backend: str) -> Any:
    """An empty, migrated database of `backend`, dropped after the test."""
    if backend == "postgresql":
        return _pg_database(request)
    db = sqlite3.connect(":memory:", isolation_level=None)
    migrate(db)
    return db


@pytest.fixture(params=BACKENDS)
def conn(request: pytest.FixtureRequest) -> Any:
    return new_database(request, request.param)


def active_hours(conn: Any) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for key, hour in conn.execute("SELECT key, hour FROM an_active WHERE app_id = 'a'"):
        out.setdefault(key, set()).add(hour)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_window_counts_match_brute_force_in_any_arrival_order(conn: Any, seed: int) -> None:
    rng = random.Random(seed)
    truth: dict[str, set[int]] = {}
    for subject in range(30):
        hours = {rng.randrange(0, 2000) for _ in range(rng.randrange(1, 40))}
        truth[f"s{subject}"] = hours
    arrivals = [(key, hour) for key, hours in truth.items() for hour in hours]
    arrivals += rng.sample(arrivals, 50)  # some hours arrive twice
    rng.shuffle(arrivals)
    for i in range(0, len(arrivals), 37):
        batch: dict[tuple[str, int, str], set[int]] = {}
        for key, hour in arrivals[i : i + 37]:
            batch.setdefault(("a", rollups.ENDPOINT, key), set()).add(hour)
        rollups._activity(conn, batch)
    # Forget one subject, as deleting its endpoint does.
    rollups._forget_subject(conn, "a", rollups.ENDPOINT, "s0")
    del truth["s0"]
    assert active_hours(conn) == truth
    windows = [(rng.randrange(-800, 2100), rng.choice(cover.SPANS)) for _ in range(300)]
    got = cover.counts(conn, "a", rollups.ENDPOINT, windows)
    want = [
        sum(1 for hours in truth.values() if any(start <= h < start + span for h in hours))
        for start, span in windows
    ]
    assert got == want
    assert max(want) > 5
    assert cover.counts(conn, "a", rollups.ENDPOINT, [(5, 48)]) == [None]  # not kept


@pytest.mark.parametrize("seed", range(4))
def test_session_chains_match_the_5_second_rule_in_any_arrival_order(conn: Any, seed: int) -> None:
    rng = random.Random(seed)
    sessions: dict[tuple[str, str], tuple[int, int]] = {}
    t = 0
    for i in range(200):
        t += rng.choice([rng.randrange(0, 6000), rng.randrange(4000, 6500), 3_600_000])
        length = rng.randrange(0, 600_000)
        sessions[(rng.choice("xy"), f"s{i}")] = (t, t + length)
    # A session's events arrive in pieces: its start first or last, in shuffled batches.
    pieces = []
    for (endpoint, sid), (start, stop) in sessions.items():
        middle = rng.randrange(start, stop + 1)
        pieces += [(endpoint, sid, start, middle), (endpoint, sid, start, stop)]
    rng.shuffle(pieces)
    for i in range(0, len(pieces), 23):
        spans: visits.Spans = {}
        for endpoint, sid, start, stop in pieces[i : i + 23]:
            span = spans.setdefault(("a", endpoint, sid), [start, stop])
            span[0], span[1] = min(span[0], start), max(span[1], stop)
        visits.update(conn, spans)
    for endpoint in "xy":
        expected: list[list[int]] = []
        for (ep, _sid), (start, stop) in sorted(sessions.items(), key=lambda item: item[1]):
            if ep != endpoint:
                continue
            if expected and start - expected[-1][1] <= visits.GAP_MS:
                expected[-1][1] = max(expected[-1][1], stop)
            else:
                expected.append([start, stop])
        got = conn.execute(
            "SELECT start_ms, stop_ms FROM an_visits WHERE app_id = 'a' AND endpoint_id = ?"
            " ORDER BY start_ms",
            (endpoint,),
        ).fetchall()
        assert got == [tuple(chain) for chain in expected]
    (count, total) = conn.execute(
        "SELECT sum(count), sum(total_ms) FROM an_visit_hours WHERE app_id = 'a'"
    ).fetchone()
    chains = conn.execute("SELECT count(*), sum(stop_ms - start_ms) FROM an_visits").fetchone()
    assert (count, total) == chains
    (histogram,) = conn.execute("SELECT sum(count) FROM an_visit_lengths").fetchone()
    assert histogram == count
    assert count < len(sessions)  # some did chain


def test_median_from_the_histogram_is_within_its_bucket() -> None:
    rng = random.Random(1)
    for size in (1, 2, 7, 100, 1001):
        lengths = [rng.randrange(0, 3_600_000) for _ in range(size)]
        histogram: dict[int, int] = {}
        for length in lengths:
            histogram[visits.bucket(length)] = histogram.get(visits.bucket(length), 0) + 1
        ordered = sorted(lengths)
        exact = (ordered[(size - 1) // 2] + ordered[size // 2]) / 2000
        assert visits.median(histogram) == pytest.approx(exact, rel=0.026, abs=0.03)
    assert visits.median({}) is None


def _fill(conn: Any, rows: list[tuple[object, ...]], users: dict[str, str | None]) -> None:
    if isinstance(conn, PgConn):
        conn.executemany(
            "INSERT INTO endpoints (app_id, endpoint_id, user_id, body) VALUES ('a', ?, ?, '{}')"
            " ON CONFLICT DO NOTHING",
            [(endpoint, user) for endpoint, user in users.items()],
        )
        conn.executemany(
            "INSERT INTO events (app_id, endpoint_id, event_id, event_type, ts, arrival,"
            " session_id, body, hour, pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            [(*row, int(row[4]) // 3_600_000) for row in rows],  # type: ignore[call-overload]
        )
    else:
        conn.executemany(
            "INSERT OR IGNORE INTO endpoints (app_id, endpoint_id, user_id, body) VALUES"
            " ('a', ?, ?, '{}')",
            [(endpoint, user) for endpoint, user in users.items()],
        )
        conn.executemany(events_sql.insert_sql(1), rows)
    rollups.apply(conn, rows)


def _tables(conn: Any) -> dict[str, list[tuple[object, ...]]]:
    nonzero = {
        "an_counts": "count != 0", "an_cover": "delta != 0", "an_revenue": "purchases != 0",
        "an_visit_hours": "count != 0", "an_visit_lengths": "count != 0",
    }  # fmt: skip
    out = {}
    for table in rollups_sql.TABLES:
        rows = conn.execute(
            f"SELECT * FROM {table} WHERE {nonzero.get(table, '1 = 1')} ORDER BY 1, 2, 3, 4"
        ).fetchall()
        out[table] = [tuple(round(v, 6) if isinstance(v, float) else v for v in row)
                      for row in rows]  # fmt: skip
    return out


def test_removing_an_endpoint_leaves_the_rollups_of_the_others(
    conn: Any, request: pytest.FixtureRequest
) -> None:
    import orjson

    rng = random.Random(5)
    users: dict[str, str | None] = {"e0": "u0", "e1": "u0", "e2": "u1", "e3": None, "e4": "u2"}
    rows = []
    for endpoint in users:
        t = 1_700_000_000_000 + rng.randrange(0, 3_600_000)
        for i in range(150):
            t += rng.randrange(1000, 120_000)
            sid = f"{endpoint}-{i // 10}"
            kind = rng.choice(["screen", "level", "_monetization.purchase", opens.OPENED])
            body = {"EventType": kind, "Timestamp": "x",
                    "Session": {"Id": sid, "StartTimestamp": "2023-11-14T22:13:20.000Z"},
                    "Metrics": {"score": float(rng.randrange(100)), "_item_price": 1.5},
                    "Attributes": {"_currency": rng.choice(["USD", "EUR"]),
                                   "campaign_id": rng.choice(["c1", "c2"])}}  # fmt: skip
            rows.append(("a", endpoint, f"{endpoint}{i}", kind, t, t, sid, orjson.dumps(body)))
    rng.shuffle(rows)
    _fill(conn, rows, users)
    rollups.remove_endpoint(conn, "a", "e0", "u0")
    conn.execute("DELETE FROM events WHERE endpoint_id = 'e0'")
    conn.execute("DELETE FROM endpoints WHERE endpoint_id = 'e0'")
    fresh = new_database(request, "postgresql" if isinstance(conn, PgConn) else "sqlite")
    del users["e0"]
    _fill(fresh, [row for row in rows if row[1] != "e0"], users)
    got, want = _tables(conn), _tables(fresh)
    for table in rollups_sql.TABLES:
        assert got[table] == want[table], table
    assert want["an_metrics"] and want["an_revenue"] and want["an_visits"] and want["an_opens"]
    assert any(row[1] == "e0" and row[3] == opens.OPENED for row in rows)  # gone with e0


@pytest.mark.parametrize("seed", range(3))
def test_retention_counts_match_brute_force_for_every_phase(conn: Any, seed: int) -> None:
    rng = random.Random(seed)
    truth: dict[str, set[int]] = {}
    for subject in range(25):
        start = rng.randrange(0, 600)
        truth[f"s{subject}"] = {start + rng.randrange(0, 900) for _ in range(rng.randrange(1, 30))}
    arrivals = [(key, hour) for key, hours in truth.items() for hour in hours]
    rng.shuffle(arrivals)  # first hours arrive late too: subjects change cohorts
    for i in range(0, len(arrivals), 11):
        batch: dict[tuple[str, int, str], set[int]] = {}
        for key, hour in arrivals[i : i + 11]:
            batch.setdefault(("a", rollups.ENDPOINT, key), set()).add(hour)
        rollups._activity(conn, batch)
    rollups._forget_subject(conn, "a", rollups.ENDPOINT, "s0")
    del truth["s0"]
    got: dict[tuple[int, int, int], int] = {}
    for phase, cohort, k, count in conn.execute(
        "SELECT phase, cohort, day_offset, count FROM an_retention WHERE count != 0"
    ):
        got[(phase, cohort, k)] = count
    want: dict[tuple[int, int, int], int] = {}
    for hours in truth.values():
        first = min(hours)
        for phase in range(24):
            cohort = (first - phase) // 24
            days = {(h - phase) // 24 - cohort for h in hours} & set(range(1, 31))
            for k in days:
                want[(phase, cohort, k)] = want.get((phase, cohort, k), 0) + 1
            if days:
                key = (phase, cohort, -min(days))
                want[key] = want.get(key, 0) + 1
    assert got == want
    assert len(want) > 100


def rollup_tables(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    def rounded(row: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(round(x, 6) if isinstance(x, float) else x for x in row)

    return {
        table: [rounded(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4")]
        for table in rollups_sql.TABLES
    }


def test_summaries_made_at_ingest_give_the_rollups_of_the_stored_rows() -> None:
    """The collector sums up each batch while it checks it, and the writer adds those
    summaries up; the writer's own path parses the stored bodies. Both must agree, one
    transaction per batch or several batches in one."""
    data = analytics_data.generate(seed=3)
    devices = {device.endpoint_id: device for device in data.devices}
    bodies = analytics_data.batches(data.events, devices)
    # Purchases and stops in every batch, so each summary carries revenue and sessions.
    assert sum(1 for e in data.events if e.type == rollups.PURCHASE) > 5
    checked = [
        ingest.check_events(body, body_size=len(orjson.dumps(body)), summarize=True)
        for body in bodies
    ]
    assert all(c.rejected == 0 for c in checked)
    parsed, summed = (sqlite3.connect(":memory:", isolation_level=None) for _ in range(2))
    for db in (parsed, summed):
        migrate(db)
        db.executemany(
            "INSERT INTO endpoints (app_id, endpoint_id, user_id, body) VALUES ('a', ?, ?, '{}')",
            [(d.endpoint_id, d.user_id) for d in data.devices],
        )
    for start in range(0, len(checked), 3):  # three batches per transaction
        group = checked[start : start + 3]
        rollups.apply(parsed, [("a", *row) for c in group for row in c.rows])
        rollups.apply_summaries(summed, [("a", c.summary) for c in group if c.summary])
    expected = rollup_tables(parsed)
    assert sum(len(rows) for rows in expected.values()) > 100
    # Sums of metrics may differ in the last bits: they are added up in another order.
    assert rollup_tables(summed) == expected


def test_a_summary_survives_the_trip_to_the_writer_process() -> None:
    body = {"BatchItem": {"e1": {"Events": {"x": {
        "EventType": "a", "Timestamp": "2026-11-28T10:00:00Z", "Metrics": {"m": 2.5},
        "Session": {"Id": "s1", "StartTimestamp": "2026-11-28T09:59:00Z"},
    }, "y": {
        "EventType": opens.OPENED, "Timestamp": "2026-11-28T10:00:00Z",
        "Attributes": {"campaign_id": "c1"},
    }}}}}  # fmt: skip
    summary = ingest.check_events(body, body_size=200, summarize=True).summary
    assert summary is not None
    copy = pickle.loads(pickle.dumps(summary))
    for name in ("hours", "counts", "metrics", "revenue", "sessions", "opens"):
        assert getattr(copy, name) == getattr(summary, name), name
    assert copy.opens == [("e1", 1795860000000, "c1")]
    assert copy.sessions == {("e1", "s1"): [1795859940000, 1795860000000]}
    copy.add("e1", "a", 1795860000000, "s1", body["BatchItem"]["e1"]["Events"]["x"])
    assert copy.counts == {(498850, "a"): 2, (498850, opens.OPENED): 1}


def test_join_values_runs_many_keys_in_several_statements() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER, b INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(n, n * n) for n in range(10_000)])
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    keys = [(n, n + 1) for n in range(0, 10_000, 2)]  # 5,000 keys of 2: 10,000 variables
    got = list(
        values.join_values(
            conn, "lo, hi", keys, "SELECT t.b FROM v JOIN t ON t.a BETWEEN lo AND hi"
        )
    )
    assert sorted(b for (b,) in got) == [n * n for n in range(10_000)]
    assert len(statements) == 2
