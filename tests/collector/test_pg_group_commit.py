"""PostgreSQL's put_events() writes the batches waiting in one collector together, in one
transaction: each batch's answer, the events, the endpoints and the rollups must be those
of the same batches written one by one, and a group that fails is written again batch by
batch, so that one batch's failure is its own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import orjson
import psycopg
import pytest

from homing_collector import endpoints
from homing_collector.analytics import opens
from homing_collector.analytics.rollups import summarize
from homing_collector.storage import postgres
from homing_collector.storage.analytics_pg.rollups import TABLES
from homing_collector.storage.base import AppRecord, EndpointUpdate, EventRow, IngestResult
from homing_collector.storage.postgres import PostgresStorage
from tests.pg import Cluster, create_database, drop_database

APPS = ("a" * 32, "b" * 32)
NOW = "2026-12-01T00:00:00.000Z"
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
MAX_TYPES = 6
MAX_USER_ENDPOINTS = 3
# Rows that add nothing: the same rollups whether or not they were written.
NONZERO = {
    "an_counts": "count != 0", "an_cover": "delta != 0", "an_revenue": "purchases != 0",
    "an_visit_hours": "count != 0", "an_visit_lengths": "count != 0",
}  # fmt: skip


class Batch:
    def __init__(self, app_id: str, updates: list[EndpointUpdate], events: list[EventRow]):
        self.app_id, self.updates, self.events = app_id, updates, events

    async def put(self, storage: PostgresStorage) -> IngestResult:
        rows = [(self.app_id, *row) for row in self.events]
        return await storage.put_events(
            self.app_id,
            self.updates,
            self.events,
            merge=partial(endpoints.merge, self.app_id, now=NOW),
            max_event_types=MAX_TYPES,
            max_user_endpoints=MAX_USER_ENDPOINTS,
            summary=summarize(rows)[0][1] if rows else None,
        )


def _event(rng: random.Random, endpoint_id: str, event_id: str, kind: str) -> EventRow:
    at = T0 + rng.randrange(0, 6 * 3_600_000)
    session = f"{endpoint_id}-{rng.randrange(3)}"
    body = {
        "EventType": kind,
        "Id": event_id,
        "Timestamp": "x",
        "Session": {"Id": session, "StartTimestamp": "2025-12-01T00:00:00.000Z"},
        "Metrics": {"score": float(rng.randrange(100)), "_item_price": 1.5},
        "Attributes": {"_currency": "USD", "campaign_id": rng.choice(["c1", "c2"])},
    }
    return EventRow(endpoint_id, event_id, kind, at, at + 5, session, orjson.dumps(body))


def batches(seed: int) -> list[Batch]:
    """Mixed applications and users; a duplicate of an event of another batch; an
    endpoint update past the users' limit; new types past the applications' limit."""
    rng = random.Random(seed)
    kinds = ["screen", "level", "_monetization.purchase", opens.OPENED, "_session.start"]
    out = []
    for n in range(16):  # one group: the limits refuse as they would in this order
        app_id = APPS[n % 2]
        updates, events = [], []
        for k in range(rng.randrange(1, 4)):
            endpoint_id = f"e{rng.randrange(12)}"
            user = {"User": {"UserId": f"u{rng.randrange(4)}"}} if rng.random() < 0.5 else {}
            updates.append(EndpointUpdate(endpoint_id, {"ChannelType": "GCM", **user}))
            for i in range(rng.randrange(1, 8)):
                events.append(_event(rng, endpoint_id, f"{n}-{k}-{i}", rng.choice(kinds)))
        out.append(Batch(app_id, updates, events))
    out[5].events.append(out[3].events[0])  # the same application's, sent again
    # A fourth endpoint for one user: refused.
    for k in range(MAX_USER_ENDPOINTS + 1):
        out[8].updates.append(EndpointUpdate(f"x{k}", {"User": {"UserId": "many"}}))
    # New types past the limit, in a batch with types already known.
    out[11].events.extend(_event(rng, "e1", f"new-{i}", f"custom.{i}") for i in range(MAX_TYPES))
    return out


async def _storage(url: str) -> PostgresStorage:
    storage = PostgresStorage(url, listen=False)
    await storage.start()
    for app_id in APPS:
        await storage.create_app(AppRecord(app_id, f"app {app_id[0]}", NOW, {"k": "v"}))
    return storage


def _contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with psycopg.connect(url) as conn:
        for table in (*TABLES, "an_user_keys"):
            where = NONZERO.get(table, "true")
            rows = conn.execute(f"SELECT * FROM {table} WHERE {where}").fetchall()
            rounded = [
                tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows
            ]
            out[table] = sorted(rounded, key=repr)
        out["events"] = conn.execute(
            "SELECT app_id, endpoint_id, event_id, event_type, ts, body FROM events"
            " ORDER BY 1, 2, 3"
        ).fetchall()
        out["endpoints"] = conn.execute(
            "SELECT app_id, endpoint_id, user_id, body FROM endpoints ORDER BY 1, 2"
        ).fetchall()
        out["event_types"] = conn.execute(
            "SELECT app_id, event_type FROM event_types ORDER BY 1, 2"
        ).fetchall()
        # The demographic counters, folded when the storage closed.
        out["endpoint_values"] = conn.execute(
            "SELECT * FROM endpoint_values ORDER BY 1, 2, 3"
        ).fetchall()
    return out


@pytest.fixture
def second_url(postgres_cluster: Cluster) -> Any:
    url = create_database(postgres_cluster)
    yield url
    drop_database(postgres_cluster, url)


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each group of batches written in one transaction."""
    sizes: list[int] = []
    put_group = postgres._put_group

    async def spy(group: Sequence[Any], rollups: bool, conn: Any) -> Any:
        sizes.append(len(group))
        return await put_group(group, rollups, conn)

    monkeypatch.setattr(postgres, "_put_group", spy)
    return sizes


def _run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


@pytest.mark.parametrize("seed", range(2))
def test_concurrent_batches_grouped_answer_and_count_as_one_by_one(
    postgres_url: str, second_url: str, groups: list[int], seed: int
) -> None:
    sent = batches(seed)

    async def together() -> list[IngestResult]:
        storage = await _storage(postgres_url)
        try:
            return list(await asyncio.gather(*(batch.put(storage) for batch in sent)))
        finally:
            await storage.close()

    async def one_by_one() -> list[IngestResult]:
        storage = await _storage(second_url)
        try:
            return [await batch.put(storage) for batch in sent]
        finally:
            await storage.close()

    grouped = _run(together)
    assert max(groups) > 1  # batches were written together
    groups.clear()
    alone = _run(one_by_one)
    assert set(groups) == {1}
    assert grouped == alone
    assert alone[5].stored == len(sent[5].events) - 1  # the duplicate
    assert "many" in next(iter(alone[8].endpoint_errors.values()))
    assert alone[11].rejected_types and not alone[10].rejected_types
    got, want = _contents(postgres_url), _contents(second_url)
    assert want["an_counts"] and want["an_metrics"] and want["an_cover"]
    assert want["endpoint_values"]
    for table, rows in want.items():
        assert got[table] == rows, table


def test_a_failed_group_is_written_again_batch_by_batch(
    postgres_url: str, groups: list[int]
) -> None:
    sent = batches(7)[:8]
    bad = sent[4]
    # Its summary is made, but its Timestamp does not fit the column: the database refuses.
    bad.events.append(bad.events[0]._replace(event_id="huge", timestamp_ms=1 << 70))

    async def main() -> list[IngestResult | BaseException]:
        storage = await _storage(postgres_url)
        try:
            return list(
                await asyncio.gather(
                    *(batch.put(storage) for batch in sent), return_exceptions=True
                )
            )
        finally:
            await storage.close()

    results = _run(main)
    assert max(groups) > 1 and groups.count(1) >= len(sent)  # then each alone
    assert isinstance(results[4], Exception)
    for batch, result in zip(sent, results, strict=True):
        if batch is not bad:
            assert isinstance(result, IngestResult)
            assert result.stored == len(batch.events) - (batch is sent[5])  # its duplicate
    stored = _contents(postgres_url)["events"]
    assert len(stored) == sum(len(batch.events) for batch in sent if batch is not bad) - 1


def test_a_cancelled_caller_leaves_its_batch_to_its_group(
    postgres_url: str, groups: list[int]
) -> None:
    sent = batches(3)[:6]

    async def main() -> list[IngestResult | BaseException]:
        storage = await _storage(postgres_url)
        try:
            tasks = [asyncio.ensure_future(batch.put(storage)) for batch in sent]
            await asyncio.sleep(0)  # each batch queued, none written yet
            tasks[2].cancel()
            return list(await asyncio.gather(*tasks, return_exceptions=True))
        finally:
            await storage.close()

    results = _run(main)
    assert isinstance(results[2], asyncio.CancelledError)
    assert max(groups) > 1
    stored = {row[2] for row in _contents(postgres_url)["events"]}
    assert {row.event_id for row in sent[2].events} <= stored
    assert len(stored) == len({row.event_id for batch in sent for row in batch.events})


def test_a_pending_entry_keeps_its_summary_whole() -> None:
    """What ingestion appends to an_pending reads back as the same summary, a sum that
    overflowed to infinity, an open without a campaign and the user keys included."""
    from homing_collector.analytics import pending

    rng = random.Random(5)
    rows = [
        (APPS[0], *_event(rng, f"e{n % 3}", f"id-{n}", kind))
        for n, kind in enumerate(["screen", "_monetization.purchase", opens.OPENED] * 5)
    ]
    huge = orjson.dumps({"EventType": "screen", "Metrics": {"score": 1.5e308}})
    rows += [(APPS[0], "e1", f"big-{n}", "screen", T0, T0, None, huge) for n in range(2)]
    rows.append((APPS[0], "e2", "open", opens.OPENED, T0, T0, None, b'{"EventType": "x"}'))
    [(_app, summary)] = summarize(rows)
    users = {"e0": "u:someone", "e1": "e:e1", "e2": "e:e2"}
    back, users_back = pending.decode(pending.encode(summary, users))
    assert users_back == users
    assert back.metrics[(T0 // 3_600_000, "screen", "score")][1] == float("inf")
    for name in ("hours", "counts", "metrics", "revenue", "sessions", "opens"):
        assert getattr(back, name) == getattr(summary, name), name


def test_a_fold_of_many_entries_adds_what_folding_each_alone_adds(
    postgres_url: str, second_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold adds many pending entries up at once (rollups.apply_entries): the same
    endpoints and users over and over, the users of endpoints changing between entries.
    The rollups it leaves are those of folding each entry alone, in turn."""
    from homing_collector.storage.analytics_pg import pending

    monkeypatch.setattr(pending, "FOLD_SECONDS", 3600.0)  # only the folds below
    sent = [batch for seed in range(4) for batch in batches(seed)]

    async def store(url: str, limit: int) -> list[int]:
        storage = await _storage(url)
        try:
            for batch in sent:  # one entry each
                await batch.put(storage)
            folds = []
            while folded := await storage._transaction(
                partial(pending.fold, wait=True, limit=limit)
            ):
                folds.append(folded)
            return folds
        finally:
            await storage.close()

    at_once = _run(partial(store, postgres_url, pending.FOLD_ROWS))
    one_by_one = _run(partial(store, second_url, 1))
    assert len(at_once) == 1 and at_once[0] > 40
    assert one_by_one == [1] * at_once[0]
    assert _contents(postgres_url) == _contents(second_url)


def test_an_endpoints_events_are_deleted_through_the_key_hour_by_hour(postgres_url: str) -> None:
    """Migration 12: no index of the events by endpoint (each stored event paid for it),
    and pending entries kept uncompressed. Deleting an endpoint still takes its events
    of every hour, and no other endpoint's, nor another application's of the same id."""
    rng = random.Random(3)
    hours = (0, 1, 30, 24 * 40)  # 40 days apart at most

    def events(endpoint_id: str) -> list[EventRow]:
        out = []
        for hour in hours:
            row = _event(rng, endpoint_id, f"{endpoint_id}-{hour}", "screen")
            at = T0 + hour * 3_600_000 + rng.randrange(3_600_000)
            out.append(row._replace(timestamp_ms=at, arrival_ms=at + 5))
        return out

    async def main() -> None:
        storage = await _storage(postgres_url)
        try:
            for app_id in APPS:
                for endpoint_id in ("e1", "e2"):
                    update = EndpointUpdate(endpoint_id, {"ChannelType": "GCM"})
                    await Batch(app_id, [update], events(endpoint_id)).put(storage)
            assert await storage.delete_endpoint(APPS[0], "e1") is not None
        finally:
            await storage.close()

    _run(main)
    with psycopg.connect(postgres_url) as conn:
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'events' ORDER BY 1"
        ).fetchall()
        assert indexes == [("events_pkey",), ("events_pos",)]
        (options,) = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'an_pending'"
        ).fetchone() or (None,)
        assert options == ["toast_tuple_target=8160"]
        left = conn.execute(
            "SELECT app_id, endpoint_id, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert left == [(APPS[0], "e2", 4), (APPS[1], "e1", 4), (APPS[1], "e2", 4)]
        deleted = conn.execute(
            "SELECT day, count FROM events_deleted WHERE app_id = %s ORDER BY day", (APPS[0],)
        ).fetchall()
        assert deleted == [(T0 // 86_400_000 + day, 1) for day in (0, 1, 40)]
