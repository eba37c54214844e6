"""Events laid out by hour (migration 6): what is stored once, deletion, and the upgrade
of a database made before it."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from homing import limits
from homing.wire import format_timestamp
from homing_collector import endpoints, ingest
from homing_collector.analytics import queries, rollups
from homing_collector.analytics.params import EventFilters, Range, Step
from homing_collector.analytics.pending import encode_summary
from homing_collector.storage import events as events_sql
from homing_collector.storage.analytics_sqlite import pending as rollups_pending
from homing_collector.storage.migrations import SQLITE_MIGRATIONS, migrate
from homing_collector.storage.sqlite import SQLiteStorage

APP = "a" * 32
START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _event(kind: str, moment: datetime, **attributes: str) -> dict[str, Any]:
    body: dict[str, Any] = {"EventType": kind, "Timestamp": _iso(moment)}
    if attributes:
        body["Attributes"] = attributes
    return body


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[SQLiteStorage, sqlite3.Connection]]:
    storage = SQLiteStorage(tmp_path / "db.sqlite", rollups=True)
    conn = storage.open_writer()
    conn.execute("INSERT INTO apps (id, name, created_at) VALUES (?, 'a', 'now')", (APP,))
    yield storage, conn
    storage.close_writer(conn)


def _job(storage: SQLiteStorage, batch: dict[str, dict[str, Any]]) -> Any:
    payload = {"BatchItem": {e: {"Endpoint": {}, "Events": evs} for e, evs in batch.items()}}
    body = orjson.dumps(payload)
    checked = ingest.check_events(orjson.loads(body), body_size=len(body), summarize=True,
                                  now=(START + timedelta(days=30)).timestamp())  # fmt: skip
    values = [value for row in checked.rows for value in (APP, *row)]
    merge = partial(endpoints.merge, APP, now=format_timestamp(checked.now))
    return storage.put_events_job(
        APP, checked.updates, values, merge, limits.MAX_EVENT_TYPES_PER_APP,
        limits.MAX_ENDPOINTS_PER_USER,
        None if checked.summary is None else encode_summary(checked.summary),
    )  # fmt: skip


def _commit(
    storage: SQLiteStorage, conn: sqlite3.Connection, *batches: dict[str, dict[str, Any]]
) -> list[int]:
    """Store the batches in one transaction; return how many events each stored."""
    outcomes = storage.commit_jobs(conn, [(_job(storage, batch), False) for batch in batches])
    assert all(ok for _, ok in outcomes), outcomes
    return [result.stored for result, _ in outcomes]


def _counted(conn: sqlite3.Connection) -> int:
    """The events the rollups count, once the entries that wait are folded."""
    conn.execute("BEGIN IMMEDIATE")
    rollups_pending.settle(conn)
    conn.execute("COMMIT")
    (count,) = conn.execute("SELECT coalesce(sum(count), 0) FROM an_counts").fetchone()
    return int(count)


def test_events_sent_again_among_new_ones_are_stored_and_counted_once(
    writer: tuple[SQLiteStorage, sqlite3.Connection],
) -> None:
    storage, conn = writer
    a, b, c, d = (_event("x", START + timedelta(hours=i)) for i in range(4))
    assert _commit(storage, conn, {"e1": {"a": a, "b": b}}) == [2]
    # In one transaction: a job with one old and one new event, then one that sends that
    # new event again with another; each new event goes to the first job that sent it.
    assert _commit(storage, conn, {"e1": {"a": a, "c": c}}, {"e1": {"c": c, "d": d}}) == [1, 1]
    assert _commit(storage, conn, {"e1": {"a": a, "b": b}}) == [0]
    rows = conn.execute("SELECT event_id FROM events ORDER BY event_id").fetchall()
    assert rows == [("a",), ("b",), ("c",), ("d",)]
    assert _counted(conn) == 4


def test_an_event_id_is_stored_once_per_endpoint_type_and_timestamp(
    writer: tuple[SQLiteStorage, sqlite3.Connection],
) -> None:
    storage, conn = writer
    first = _event("x", START + timedelta(minutes=10))
    assert _commit(storage, conn, {"e1": {"id": first}}) == [1]
    assert _commit(storage, conn, {"e1": {"id": first}}) == [0]
    same_hour = _event("x", START + timedelta(minutes=59))
    next_hour = _event("x", START + timedelta(hours=1))
    assert _commit(storage, conn, {"e1": {"id": same_hour}}, {"e1": {"id": next_hour}}) == [1, 1]
    other_type = _event("y", START + timedelta(minutes=10))
    assert _commit(storage, conn, {"e1": {"id": other_type}}) == [1]
    assert _commit(storage, conn, {"e2": {"id": first}}) == [1]
    assert _commit(storage, conn, {"e1": {"id": first}}, {"e1": {"id": other_type}}) == [0, 0]
    assert _counted(conn) == 5


def test_deleting_an_endpoint_removes_its_events_of_every_hour_and_type_only(
    writer: tuple[SQLiteStorage, sqlite3.Connection],
) -> None:
    storage, conn = writer
    rng = random.Random(3)
    batches: list[dict[str, dict[str, Any]]] = [{}, {}, {}]
    for n in range(300):
        endpoint = f"e{rng.randrange(4)}"
        moment = START - timedelta(hours=rng.randrange(24 * 20), seconds=rng.randrange(3600))
        batches[n % 3].setdefault(endpoint, {})[f"id{n}"] = _event(rng.choice("xyz"), moment)
    _commit(storage, conn, *batches)
    before = conn.execute("SELECT endpoint_id, count(*) FROM events GROUP BY 1").fetchall()
    assert len(before) == 4
    conn.execute("BEGIN")
    events_sql.delete_endpoint(conn, APP, "e2")
    conn.execute("COMMIT")
    after = conn.execute("SELECT endpoint_id, count(*) FROM events GROUP BY 1").fetchall()
    assert after == [row for row in before if row[0] != "e2"]


# -- the upgrade of a database made by the release before migration 6 --------------------


def _old_database(path: Path, rows: list[tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    for version, sql in SQLITE_MIGRATIONS:
        if version > 5:
            break
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (version,))
    conn.execute("INSERT INTO apps (id, name, created_at) VALUES (?, 'a', 'then')", (APP,))
    conn.executemany(
        "INSERT INTO endpoints (app_id, endpoint_id, user_id, body) VALUES (?, ?, ?, '{}')",
        [(APP, f"e{n}", f"u{n % 3}" if n % 2 else None) for n in range(12)],
    )
    conn.execute("BEGIN")
    # As the release before stored them: the columns of its events table, in its order.
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    rollups.apply(conn, rows)
    conn.execute("COMMIT")
    conn.close()


def _old_rows(seed: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    rows = []
    for n in range(600):
        endpoint = f"e{rng.randrange(12)}"
        moment = START + timedelta(days=rng.randrange(10), seconds=rng.randrange(86_400))
        if n % 50 == 0:
            moment = datetime(1969, 12, 31, 23, 30, tzinfo=timezone.utc)  # before 1970
        kind = rng.choice(["open", "view", "buy"])
        event = _event(kind, moment, screen=rng.choice(["home", "shop"]))
        event["Metrics"] = {"m": float(rng.randrange(100))}
        ts = int(moment.timestamp() * 1000)
        rows.append((APP, endpoint, f"id{n}", kind, ts, ts, None, orjson.dumps(event)))
    return rows


def _funnel_by_brute_force(rows: list[tuple[Any, ...]], window_ms: int) -> list[int]:
    users = {f"e{n}": (f"u:u{n % 3}" if n % 2 else f"e:e{n}") for n in range(12)}
    lo = int(START.timestamp() * 1000)
    hi = lo + 10 * 86_400_000
    steps = [("open", None), ("view", "shop"), ("buy", None)]
    timelines: dict[str, list[tuple[int, int]]] = {}
    for _app, endpoint, _id, kind, ts, _arrival, _sid, body in rows:
        if not lo <= ts < hi:
            continue
        screen = orjson.loads(body)["Attributes"]["screen"]
        for k, (want, attribute) in enumerate(steps):
            if kind == want and attribute in (None, screen):
                timelines.setdefault(users[endpoint], []).append((ts, k))
    reached = [0, 0, 0]
    for timeline in timelines.values():
        timeline.sort()
        best = 0
        for i, (t0, k0) in enumerate(timeline):
            if k0:
                continue
            depth = 1
            for j, (t, k) in enumerate(timeline):
                if j != i and t0 <= t <= t0 + window_ms and k == depth and depth < 3:
                    depth += 1
            best = max(best, depth)
        for k in range(best):
            reached[k] += 1
    return reached


@pytest.mark.parametrize("seed", range(2))
def test_a_database_of_the_release_before_upgrades_with_every_event(
    tmp_path: Path, seed: int
) -> None:
    rows = _old_rows(seed)
    path = tmp_path / "old.sqlite"
    _old_database(path, rows)
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == max(version for version, _ in SQLITE_MIGRATIONS)
    stored = conn.execute(f"SELECT {events_sql.COLUMNS}, hour FROM events").fetchall()
    assert sorted(row[:8] for row in stored) == sorted(rows)
    assert all(row[8] == row[4] // events_sql.HOUR_MS for row in stored)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    q = Range(START.date(), START.date() + timedelta(days=9), ZoneInfo("UTC"), "users",
              date(2026, 3, 10))  # fmt: skip
    steps = [Step("open"), Step("view", (("screen", "shop"),)), Step("buy")]
    got = queries.funnel(conn, APP, q, steps, 3600)
    assert [s["count"] for s in got["steps"]] == _funnel_by_brute_force(rows, 3_600_000)
    by_screen = queries.events(conn, APP, q, EventFilters(event_types=("view",),
                                                          breakdown="screen"))  # fmt: skip
    lo = int(START.timestamp() * 1000)
    expected: dict[str, int] = {}
    for row in rows:
        if row[3] == "view" and lo <= row[4] < lo + 10 * 86_400_000:
            screen = orjson.loads(row[7])["Attributes"]["screen"]
            expected[screen] = expected.get(screen, 0) + 1
    assert {b["value"]: b["count"] for b in by_screen["breakdown"]} == expected
    # The rollups were made before, from the same rows: they still agree with the events.
    (counted,) = conn.execute("SELECT sum(count) FROM an_counts").fetchone()
    assert counted == len(rows)
