"""SQLite's pending entries of the rollups (storage/analytics_sqlite/pending.py): a
PutEvents transaction appends an entry, a later fold adds many to the rollups, and no
read or deletion ever meets the rollups with entries left out."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from homing import limits
from homing.wire import format_timestamp
from homing_collector import endpoints, ingest
from homing_collector.analytics import opens, pending, rollups
from homing_collector.storage.analytics_sqlite import pending as rollups_pending
from homing_collector.storage.analytics_sqlite import rollups as rollups_sql
from homing_collector.storage.base import AppRecord
from homing_collector.storage.sqlite import SQLiteStorage
from tests.collector.test_analytics_rollups import _tables

APP = "a" * 32
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
NOW = (START + timedelta(days=20)).timestamp()


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _batch(rng: random.Random, endpoint_id: str, user_id: str | None, day: int) -> Any:
    """A checked PutEvents batch of one endpoint: counts, metrics, a session, purchases
    and opens, over a few hours of `day` (days after START)."""
    events = {}
    t = START + timedelta(days=day, minutes=rng.randrange(600))
    session = f"{endpoint_id}-{day}"
    for i in range(40):
        t += timedelta(seconds=rng.randrange(30, 900))
        kind = rng.choice(["screen", "level", rollups.PURCHASE, opens.OPENED])
        events[f"{endpoint_id}-{day}-{i}"] = {
            "EventType": kind, "Timestamp": _iso(t),
            "Session": {"Id": session, "StartTimestamp": _iso(START + timedelta(days=day))},
            "Metrics": {"score": float(rng.randrange(100)), "_item_price": 1.5},
            "Attributes": {"_currency": rng.choice(["USD", "EUR"]),
                           "campaign_id": rng.choice(["c1", "c2"])},
        }  # fmt: skip
    endpoint: dict[str, Any] = {"ChannelType": "GCM"}
    if user_id is not None:
        endpoint["User"] = {"UserId": user_id}
    body = orjson.dumps({"BatchItem": {endpoint_id: {"Endpoint": endpoint, "Events": events}}})
    checked = ingest.check_events(orjson.loads(body), body_size=len(body), now=NOW, summarize=True)
    assert checked.rejected == 0
    return checked


async def _put(storage: SQLiteStorage, checked: Any) -> None:
    result = await storage.put_events(
        APP, checked.updates, checked.rows,
        merge=partial(endpoints.merge, APP, now=format_timestamp(checked.now)),
        max_event_types=limits.MAX_EVENT_TYPES_PER_APP,
        max_user_endpoints=limits.MAX_ENDPOINTS_PER_USER, summary=checked.summary,
    )  # fmt: skip
    assert result.stored == len(checked.rows)


def _run(path: Path, work: Callable[[SQLiteStorage], Awaitable[Any]]) -> Any:
    """Run `work` on a started storage (its writer a thread of the test's process) of a
    database with the application APP."""

    async def scenario() -> Any:
        storage = SQLiteStorage(path)
        await storage.start()
        try:
            if await storage.get_app(APP) is None:
                await storage.create_app(AppRecord(APP, "a", "2026-03-01T00:00:00Z"))
            return await work(storage)
        finally:
            await storage.close()

    return asyncio.run(scenario())


def _waiting(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM an_pending").fetchone()[0])


def _folded_tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """The rollup tables, once every entry is folded (counts of 0 left out)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        rollups_pending.settle(db)
        db.execute("COMMIT")
        tables = _tables(db)
    tables["an_retention"] = [row for row in tables["an_retention"] if row[-1] != 0]
    return tables


@pytest.fixture(autouse=True)
def no_background_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries wait until something folds them: a writer's own fold never comes."""
    monkeypatch.setattr(rollups_pending, "FOLD_SECONDS", 3600.0)


def _batches(seed: int) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    users = {"e0": "u0", "e1": "u0", "e2": "u1", "e3": None}
    return {e: [_batch(rng, e, user, day) for day in (0, 1, 3)] for e, user in users.items()}


def test_a_batch_commits_an_entry_and_the_fold_adds_it_to_the_rollups(tmp_path: Path) -> None:
    batches = _batches(1)

    async def work(storage: SQLiteStorage) -> None:
        for checked in batches["e0"]:
            await _put(storage, checked)

    db = tmp_path / "db.sqlite"
    _run(db, work)
    # The storage folded what was left when it closed; the entries had waited until then.
    assert _waiting(db) == 0
    stored = tmp_path / "inline.sqlite"  # the same events, each batch applied at once
    with (
        contextlib.closing(sqlite3.connect(db)) as source,
        contextlib.closing(sqlite3.connect(stored, isolation_level=None)) as inline,
    ):
        source.backup(inline)
        for table in rollups_sql.TABLES:
            inline.execute(f"DELETE FROM {table}")
        for checked in batches["e0"]:
            rollups.apply_summaries(inline, [(APP, checked.summary)])
        assert _tables(source) == _tables(inline)
        assert _tables(inline)["an_counts"]


def test_the_ingest_transaction_leaves_the_rollups_alone(tmp_path: Path) -> None:
    batches = _batches(2)
    db = tmp_path / "db.sqlite"

    async def work(storage: SQLiteStorage) -> tuple[int, int]:
        for checked in batches["e1"]:
            await _put(storage, checked)
        with contextlib.closing(sqlite3.connect(db)) as raw:
            counted = raw.execute("SELECT count(*) FROM an_counts").fetchone()[0]
        return counted, _waiting(db)

    assert _run(db, work) == (0, len(batches["e1"]))


def test_an_analytics_read_folds_the_entries_first(tmp_path: Path) -> None:
    batches = _batches(3)
    db = tmp_path / "db.sqlite"

    def counted(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT coalesce(sum(count), 0) FROM an_counts").fetchone()[0])

    async def work(storage: SQLiteStorage) -> list[int]:
        seen = []
        for checked in batches["e2"]:
            await _put(storage, checked)
            assert _waiting(db) == 1
            seen.append(await storage.analytics_read(counted))
        return seen

    sizes = [len(checked.rows) for checked in batches["e2"]]
    assert _run(db, work) == [sum(sizes[: n + 1]) for n in range(len(sizes))]


def test_deleting_endpoints_folds_the_entries_first(tmp_path: Path) -> None:
    """The deletion takes its endpoints' events out of rollups that hold all of them: what
    is left is what storing the other endpoints' events alone makes."""
    batches = _batches(4)

    async def store(storage: SQLiteStorage, endpoint_ids: list[str]) -> None:
        for day in range(3):
            for e in endpoint_ids:
                await _put(storage, batches[e][day])

    async def store_and_delete(storage: SQLiteStorage) -> None:
        await store(storage, ["e0", "e1", "e2", "e3"])
        assert _waiting(tmp_path / "all.sqlite") == 12
        assert await storage.delete_endpoint(APP, "e3") is not None
        assert len(await storage.delete_user_endpoints(APP, "u0")) == 2

    _run(tmp_path / "all.sqlite", store_and_delete)
    _run(tmp_path / "kept.sqlite", partial(store, endpoint_ids=["e2"]))
    got, want = _folded_tables(tmp_path / "all.sqlite"), _folded_tables(tmp_path / "kept.sqlite")
    assert got == want
    assert want["an_counts"] and want["an_metrics"] and want["an_revenue"] and want["an_opens"]


def test_expiring_events_folds_the_entries_first(tmp_path: Path) -> None:
    """The opens of expired events leave an_opens even when their entry had not been
    folded in yet."""
    batches = _batches(5)
    db = tmp_path / "db.sqlite"
    cut = int((START + timedelta(days=2)).timestamp()) // 3600

    async def work(storage: SQLiteStorage) -> None:
        for e in ("e0", "e2"):
            for checked in batches[e]:
                await _put(storage, checked)
        while await storage.delete_expired_events(APP, cut, 7):
            pass

    _run(db, work)
    kept = _folded_tables(db)["an_opens"]
    with contextlib.closing(sqlite3.connect(db)) as raw:
        events = raw.execute(
            "SELECT endpoint_id, ts FROM events WHERE event_type = ? ORDER BY 1, 2", (opens.OPENED,)
        ).fetchall()
    assert kept and [(row[1], row[2]) for row in kept] == events
    assert min(ts for _, ts in events) >= cut * 3_600_000


def test_deleting_an_application_leaves_no_entry_to_fold(tmp_path: Path) -> None:
    batches = _batches(6)
    db = tmp_path / "db.sqlite"

    async def work(storage: SQLiteStorage) -> None:
        for checked in batches["e1"]:
            await _put(storage, checked)
        assert await storage.delete_app(APP) is not None

    _run(db, work)
    assert _waiting(db) == 0
    assert not any(_folded_tables(db).values())


def test_an_entry_counts_activity_under_the_user_of_its_time(tmp_path: Path) -> None:
    """An endpoint that changes users between two entries folded together: its hours
    before the change stay counted under the user it had then."""
    rng = random.Random(7)
    before, after = _batch(rng, "e9", "first", 0), _batch(rng, "e9", "second", 2)

    async def work(storage: SQLiteStorage) -> None:
        await _put(storage, before)
        await _put(storage, after)

    db = tmp_path / "db.sqlite"
    _run(db, work)
    active = _folded_tables(db)["an_active"]
    by_user: dict[str, set[int]] = {}
    for _app, kind, hour, key in active:
        if kind == rollups.USER:
            by_user.setdefault(key, set()).add(hour)
    assert by_user == {"u:first": set(before.summary.hours["e9"]),
                       "u:second": set(after.summary.hours["e9"])}  # fmt: skip


def test_an_entry_is_made_alike_on_both_backends() -> None:
    """The writer joins the collector's encoded summary to the user keys without decoding
    it; the entry is PostgreSQL's, byte for byte, and decodes to the same summary."""
    checked = _batch(random.Random(8), "e1", "u1", 0)
    users = {"e1": "u:u1"}
    parts, active = pending.encode_summary(checked.summary)
    assert active == ["e1"]
    data = pending.entry(parts, users)
    assert data == pending.encode(checked.summary, users)
    summary, keys = pending.decode(data)
    assert keys == users
    for name in ("hours", "counts", "metrics", "revenue", "sessions", "opens"):
        assert getattr(summary, name) == getattr(checked.summary, name), name
