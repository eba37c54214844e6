"""The notification opens kept at ingest (analytics/opens.py) against the stored events,
through the retention sweep (on SQLite and PostgreSQL) and the migration that fills them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from homing_collector import endpoints
from homing_collector.analytics import opens, queries, rollups
from homing_collector.analytics.params import Range
from homing_collector.storage import events as events_sql
from homing_collector.storage import migrations
from homing_collector.storage.analytics_sqlite import opens as opens_sql
from homing_collector.storage.analytics_sqlite import rollups as rollups_sql
from homing_collector.storage.base import AppRecord, EventRow
from homing_collector.storage.sqlite import SQLiteStorage

APP = "a"
T0 = 1_790_000_000_000  # ms, on an hour
HOUR_MS = 3_600_000


def event_rows(seed: int, n: int = 400) -> list[tuple[Any, ...]]:
    """Rows of the events table over 48 hours; about one in four an open, some of them
    without a campaign id."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ts = T0 + rng.randrange(48 * HOUR_MS)
        kind = rng.choice([opens.OPENED, "screen", "screen", "level"])
        body: dict[str, Any] = {"EventType": kind, "Timestamp": "x"}
        if kind == opens.OPENED and rng.random() < 0.8:
            body["Attributes"] = {"campaign_id": rng.choice(["c1", "c2", "c3"])}
        endpoint = f"e{rng.randrange(8)}"
        rows.append((APP, endpoint, f"{i:x}", kind, ts, ts, None, orjson.dumps(body)))
    return rows


def scanned(conn: Any) -> list[tuple[Any, ...]]:
    """(endpoint, ts, campaign id) of the open events stored, read from their bodies."""
    found = []
    mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"
    for endpoint_id, ts, body in conn.execute(
        f"SELECT endpoint_id, ts, body FROM events WHERE app_id = {mark} AND event_type = {mark}",
        (APP, opens.OPENED),
    ).fetchall():
        found.append(
            (endpoint_id, ts, (orjson.loads(body).get("Attributes") or {}).get("campaign_id"))
        )
    return sorted(found, key=repr)


def kept(conn: Any) -> list[tuple[Any, ...]]:
    return sorted(opens.in_range(conn, APP, T0 - HOUR_MS, T0 + 49 * HOUR_MS), key=repr)


def insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        conn.execute(events_sql.insert_sql(1), row)


def test_opens_go_with_the_events_the_retention_sweep_deletes(tmp_path: Path) -> None:
    db = tmp_path / "homing.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        migrations.migrate(conn)
        conn.execute("INSERT INTO apps (id, name, created_at) VALUES (?, 'a', 'x')", (APP,))
        rows = event_rows(1)
        conn.execute("BEGIN")
        insert(conn, rows)
        rollups.apply(conn, rows)
        conn.execute("COMMIT")
        assert kept(conn) == scanned(conn)
        before = len(scanned(conn))
        assert before > 50

    async def sweep() -> None:
        storage = SQLiteStorage(db)
        await storage.start()
        try:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                # A few events at a time, as the sweeper does: the opens of the hours it has
                # not reached yet stay, those of the hours it emptied go.
                while await storage.delete_expired_events(APP, T0 // HOUR_MS + 24, 37):
                    assert kept(conn) == scanned(conn)
                assert 0 < len(kept(conn)) < before
                assert min(ts for _e, ts, _c in kept(conn)) >= T0 + 24 * HOUR_MS
        finally:
            await storage.close()

    asyncio.run(sweep())


def test_on_postgresql_opens_go_with_the_events_the_retention_sweep_deletes(
    postgres_url: str,
) -> None:
    import psycopg

    from homing_collector.storage.postgres import PostgresStorage

    async def sweep() -> None:
        storage = PostgresStorage(postgres_url)
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "a", "x"))
            rows = [EventRow(*row[1:]) for row in event_rows(1)]
            stored = await storage.put_events(
                APP, [], rows, merge=partial(endpoints.merge, APP, now="x"),
                max_event_types=10, max_user_endpoints=10,
            )  # fmt: skip
            assert stored.stored == len(rows)
            await storage.fold_rollups()  # the opens are folded in after the commit
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                assert kept(conn) == scanned(conn)
                before = len(scanned(conn))
                assert before > 50
                while await storage.delete_expired_events(APP, T0 // HOUR_MS + 24, 37):
                    assert kept(conn) == scanned(conn)
                assert 0 < len(kept(conn)) < before
                assert min(ts for _e, ts, _c in kept(conn)) >= T0 + 24 * HOUR_MS
        finally:
            await storage.close()

    asyncio.run(sweep())


def test_the_migration_fills_the_opens_of_the_events_stored_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "homing.db", isolation_level=None)) as conn:
        monkeypatch.setattr(
            migrations, "SQLITE_MIGRATIONS", [m for m in migrations.SQLITE_MIGRATIONS if m[0] < 17]
        )
        assert migrations.migrate(conn) == 16
        insert(conn, event_rows(2))
        monkeypatch.undo()
        assert migrations.migrate(conn) >= 17
        assert len(kept(conn)) > 50
        assert kept(conn) == scanned(conn)
        assert (None in {c for _e, _t, c in kept(conn)}) and (
            "c1" in {c for _e, _t, c in kept(conn)}
        )
        # The opens stored after count from there.
        more = [(*row[:2], "n" + row[2], *row[3:]) for row in event_rows(3)]
        conn.execute("BEGIN")
        insert(conn, more)
        rollups.apply(conn, more)
        conn.execute("COMMIT")
        assert kept(conn) == scanned(conn)


def test_the_campaigns_panel_counts_the_range_alone(tmp_path: Path) -> None:
    """Messages, opens and sessions on the days before, in and after the range: the panel
    counts those of the range, and an open's session where it is, across midnight too."""
    day = 86_400_000
    start = date(2026, 10, 5)
    lo = (start - date(1970, 1, 1)).days * day  # the first ms of the range, in UTC
    rng = random.Random(4)
    messages, open_rows, sessions = [], [], []
    for i in range(300):
        ts = lo - 3 * day + rng.randrange(9 * day)  # three days each side of the range
        endpoint = f"e{rng.randrange(12)}"
        delivered = ts + 5000 if i % 3 else None
        messages.append((APP, endpoint, i, f"m{i}", 0, "{}", rng.choice(["c1", None]), ts,
                         ts + day, delivered))  # fmt: skip
        if i % 2:
            open_rows.append((APP, endpoint, ts + 60_000, rng.choice(["c1", "c2", None])))
        if i % 3 == 0:
            # A session from two minutes before the open to 40 minutes after it.
            sessions.append((APP, endpoint, f"s{i}", ts + rng.randrange(-120_000, 2_400_000),
                             ts + 3_000_000))  # fmt: skip
    # Opens a little after and before midnight, their sessions on the day before or after.
    for k, midnight in enumerate((lo, lo + day, lo + 3 * day)):
        open_rows += [(APP, "x", midnight + 30_000, "c1"), (APP, "y", midnight - 600_000, "c1")]
        sessions += [(APP, "x", f"b{k}", midnight - 15_000, midnight + 60_000),
                     (APP, "y", f"a{k}", midnight + 900_000, midnight + 960_000)]  # fmt: skip
    with contextlib.closing(sqlite3.connect(tmp_path / "homing.db", isolation_level=None)) as conn:
        migrations.migrate(conn)
        conn.executemany(
            "INSERT INTO push_messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", messages
        )
        opens_sql.insert(conn, open_rows)
        rollups_sql.add_sessions(conn, sessions)
        got = queries.campaigns(
            conn, APP, Range(start, start + timedelta(days=2), ZoneInfo("UTC"), "users", start)
        )
    hi = lo + 3 * day
    sent = [m for m in messages if lo <= m[7] < hi]
    opened = [o for o in open_rows if lo <= o[2] < hi]
    after = [
        o for o in opened
        if any(s[1] == o[1] and o[2] - 60_000 <= s[3] <= o[2] + 1_800_000 for s in sessions)
    ]  # fmt: skip
    assert 0 < len(sent) < len(messages) and 0 < len(opened) < len(open_rows)
    assert 0 < len(after) < len(opened)
    assert (got["sent"], got["delivered"], got["opened"], got["sessions_after_open"]) == (
        len(sent), sum(1 for m in sent if m[9] is not None), len(opened), len(after)
    )  # fmt: skip
    per: dict[str, list[int]] = {}
    for m in sent:
        if m[6] is not None:
            per.setdefault(m[6], [0, 0, 0])[0] += 1
            per[m[6]][1] += m[9] is not None
    for o in opened:
        if o[3] is not None:
            per.setdefault(o[3], [0, 0, 0])[2] += 1
    assert {c["campaign_id"]: [c["sent"], c["delivered"], c["opened"]]
            for c in got["campaigns"]} == per  # fmt: skip
    assert [d["date"] for d in got["days"]] == [str(start + timedelta(days=k)) for k in range(3)]
