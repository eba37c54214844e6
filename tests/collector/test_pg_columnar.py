"""A collector's own columnar copy of events on PostgreSQL (storage/pg_columnar.py) and
its sealer: whatever is sealed, late, deleted, expired or half-written, the funnels and
the filtered event counts read through the copy answer what they answer from the events
table alone, at every moment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from homing_collector import ingest, sealer
from homing_collector.analytics import queries
from homing_collector.analytics.params import Range
from homing_collector.storage.base import AppRecord
from tests.collector import analytics_data as gen
from tests.collector.test_columnar import FILTERS, RANGES, STEPS, same

APP = "app1"
TODAY = date(2026, 11, 1)

psycopg = pytest.importorskip("psycopg")

from homing_collector.pg_sealer import PgSealer  # noqa: E402
from homing_collector.storage import pg_columnar  # noqa: E402
from homing_collector.storage.postgres import PostgresStorage  # noqa: E402


@pytest.fixture
def data() -> gen.Data:
    return gen.generate(seed=3, devices=30)


class World:
    def __init__(self, url: str, root: Path, data: gen.Data) -> None:
        self.url = url
        self.root = root
        self.data = data
        self.devices = {d.endpoint_id: d for d in data.devices}
        self.storage = PostgresStorage(url, columnar=root)
        self.sealer = PgSealer(self.storage)
        self.clock = 1_000_000.0
        self.sealer.clock = lambda: self.clock
        self.copy = pg_columnar.Copy(root)

    async def put(self, events: list[gen.Event]) -> None:
        for body in gen.batches(events, self.devices):
            raw = orjson.dumps(body)
            report = await ingest.put_events(self.storage, APP, orjson.loads(raw),
                                             body_size=len(raw))  # fmt: skip
            assert report is not None

    async def answers(self, copy: Path | None) -> list[Any]:
        def ask(conn: Any) -> list[Any]:
            out: list[Any] = []
            for start, end, tz in RANGES:
                for by in ("users", "endpoints"):
                    q = Range(start, end, ZoneInfo(tz), by, TODAY)
                    for f in FILTERS:
                        out.append(queries.events(conn, APP, q, f, copy=copy))
                    for steps in STEPS:
                        for window in (1, 600, 86400):
                            out.append(queries.funnel(conn, APP, q, steps, window, copy=copy))
            return out

        return await self.storage.analytics_read(ask)

    async def check(self) -> None:
        """The answers through the copy are those from the events table alone."""
        got, want = await self.answers(self.root), await self.answers(None)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert same(a, b), (a, b)
        assert any(row["count"] for answer in want for row in answer.get("breakdown", []))

    async def plan(self, day: int) -> pg_columnar.Plan:
        """The plan of one whole day, as a query would make it now."""
        return await self.storage.analytics_read(
            lambda conn: pg_columnar.plan(conn, self.copy, APP, day * 24, day * 24 + 24)
        )

    def sealed(self) -> dict[int, pg_columnar.SealedDay]:
        return {day: s for (_app, day), s in self.copy.days(APP).items()}

    def copied(self) -> dict[int, list[tuple[str, str, int]]]:
        """The events each sealed day's files hold, as (endpoint, type, ts)."""
        import duckdb

        out = {}
        for day, s in self.sealed().items():
            rows = []
            for entry in s.files:
                path = self.root / entry[0]
                rows += duckdb.sql(
                    f"SELECT endpoint_id, event_type, ts FROM read_parquet('{path}')"
                ).fetchall()
            out[day] = sorted(rows)
        return out

    async def stored(self) -> dict[int, list[tuple[str, str, int]]]:
        rows = await self.storage.analytics_read(
            lambda conn: conn.execute(
                "SELECT hour, endpoint_id, event_type, ts FROM events WHERE app_id = %s", (APP,)
            ).fetchall()
        )
        out: dict[int, list[tuple[str, str, int]]] = {}
        for hour, endpoint_id, event_type, ts in rows:
            out.setdefault(hour // 24, []).append((endpoint_id, event_type, ts))
        return {day: sorted(found) for day, found in out.items()}

    async def copies_are_exact(self) -> None:
        stored = await self.stored()
        for day, rows in self.copied().items():
            assert rows == stored.get(day, []), day


@pytest.fixture
def world(postgres_url: str, tmp_path: Path, data: gen.Data) -> Iterator[World]:
    yield World(postgres_url, tmp_path / "copy", data)


def run(world: World, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await world.storage.start()
        try:
            await world.storage.create_app(AppRecord(APP, "test", "2026-09-01T00:00:00Z"))
            await scenario()
        finally:
            await world.storage.close()

    asyncio.run(main())


def test_sealed_days_answer_as_the_events_table_does(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.check()  # nothing sealed yet
        await world.sealer.seal_all()
        days = world.sealed()
        assert len(days) > 40 and all(len(s.files) == 1 for s in days.values())
        assert days.keys() == (await world.stored()).keys()
        await world.copies_are_exact()
        assert not (await world.plan(min(days))).open
        await world.check()

    run(world, scenario)


def test_late_events_are_read_from_the_tail_then_sealed_into_new_files(world: World) -> None:
    events = world.data.events
    late = [e for i, e in enumerate(events) if i % 4 == 0]  # spread over every day
    early = [e for i, e in enumerate(events) if i % 4 != 0]

    async def scenario() -> None:
        await world.put(early)
        await world.sealer.seal_all()
        before = world.sealed()
        await world.put(late)
        await world.put(world.data.resent)  # stored once
        await world.check()  # sealed files, and the tails from the events table
        assert not await world.sealer.step()  # the late events go into new files
        after = world.sealed()
        assert any(len(after[day].files) == 2 for day in before)
        await world.copies_are_exact()
        await world.check()
        # More late files than MOST_FILES: the day's files are merged into one.
        for i in range(sealer.MOST_FILES + 1):
            await world.put([gen.Event(e.endpoint_id, f"again{i}-{e.event_id}", e.body)
                             for e in late[:5]])  # fmt: skip
            await world.sealer.step()
        files = [s.files for s in world.sealed().values()]
        assert all(len(names) <= sealer.MOST_FILES for names in files)
        assert any("/m" in entry[0] for names in files for entry in names)  # merged
        await world.copies_are_exact()
        await world.check()

    run(world, scenario)


def test_events_of_a_transaction_under_way_while_a_day_is_sealed_are_in_its_tail(
    world: World,
) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        day = world.data.events[0].ts // 3_600_000 // 24
        # A transaction stores an event (as PutEvents does) and commits only after the
        # day is sealed: the sealer's snapshot did not see it.
        from homing_collector.storage import pg_streams

        writer = psycopg.connect(world.url)
        try:
            writer.execute(
                "INSERT INTO events (app_id, hour, endpoint_id, event_id, event_type, ts,"
                " arrival, session_id, body, pos) SELECT app_id, hour, endpoint_id,"
                " 'under-way', event_type, ts, arrival, session_id, body,"
                f" {pg_streams.NEXT_POSITION} FROM events WHERE app_id = %s AND hour >= %s"
                " AND hour < %s LIMIT 1",
                (APP, day * 24, day * 24 + 24),
            )
            await world.sealer.seal_all()
            assert day in world.sealed()
            writer.commit()
        finally:
            writer.close()
        plan = await world.plan(day)
        assert not plan.open and plan.tails
        await world.check()
        await world.sealer.step()
        await world.copies_are_exact()
        await world.check()

    run(world, scenario)


def test_deleting_an_endpoint_or_a_user_unseals_their_days_until_copied_again(
    world: World,
) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        gone = world.data.events[-1].endpoint_id
        days = {e.ts // 3_600_000 // 24 for e in world.data.events if e.endpoint_id == gone}
        await world.storage.delete_endpoint(APP, gone)
        for day in days:
            assert (await world.plan(day)).open  # read from the events table
        await world.check()
        again = [e for e in world.data.events if e.endpoint_id == world.data.events[0].endpoint_id]
        await world.put([gen.Event(e.endpoint_id, "re-" + e.event_id, e.body) for e in again])
        await world.check()
        await world.sealer.seal_all()
        await world.copies_are_exact()
        assert all(e != gone for rows in world.copied().values() for e, _, _ in rows)
        await world.check()
        user = next(d.user_id for d in world.data.devices if d.user_id)
        assert await world.storage.delete_user_endpoints(APP, user)
        await world.check()
        await world.sealer.seal_all()
        await world.copies_are_exact()
        await world.check()

    run(world, scenario)


def test_a_copy_made_across_a_deletion_is_never_read(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        day = world.data.events[0].ts // 3_600_000 // 24
        gone = world.data.events[0].endpoint_id
        # The sealer's snapshot is taken, then the endpoint is deleted, then the day is
        # copied from that snapshot: its files hold the deleted events.
        reader = psycopg.connect(world.url)
        try:
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SELECT 1 FROM events LIMIT 1")
            await world.storage.delete_endpoint(APP, gone)
            await asyncio.to_thread(pg_columnar.seal_day, reader, world.copy, APP, day)
            reader.rollback()
        finally:
            reader.close()
        assert any(e == gone for e, _, _ in world.copied()[day])
        assert (await world.plan(day)).open
        await world.check()
        await world.sealer.seal_all()  # unsealed, then copied again
        await world.copies_are_exact()
        await world.check()

    run(world, scenario)


def test_expired_events_unseal_their_days(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        cutoff = int(gen.BASE.timestamp()) // 3600 + 30 * 24 + 7  # day 30, 07:00 UTC
        # A sweep cut short: the first batch only, then all of them.
        assert await world.storage.delete_expired_events(APP, cutoff, 100)
        await world.check()
        while await world.storage.delete_expired_events(APP, cutoff, 100):
            pass
        await world.check()
        await world.sealer.seal_all()
        assert min(world.sealed()) == cutoff // 24
        await world.copies_are_exact()
        await world.check()
        # The expired days' files go once no query can be reading them.
        files = set(world.root.rglob("*.parquet"))
        await world.sealer.sweep(world.root)
        world.clock += sealer.GRACE
        assert await world.sealer.sweep(world.root) > 10
        assert set(world.root.rglob("*.parquet")) < files
        await world.check()

    run(world, scenario)


def test_an_application_deleted_and_made_again_is_not_read_from_the_copy(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        assert await world.storage.delete_app(APP) is not None
        await world.storage.create_app(AppRecord(APP, "again", "2026-09-01T00:00:00Z"))
        half = world.data.events[: len(world.data.events) // 2]
        await world.put(half)
        await world.check()
        await world.sealer.seal_all()
        await world.copies_are_exact()
        await world.check()

    run(world, scenario)


def test_users_changed_after_sealing_count_in_funnels_by_users(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        # Two endpoints take one new user, a third loses its own: their sealed events
        # count under their users as they are now.
        devices = [d for d in world.data.devices if d.user_id][:3]
        for i, device in enumerate(devices):
            user = {"UserId": "someone-new"} if i < 2 else {}
            device.profile = {**device.profile, "User": user}
            event = next(e for e in world.data.events if e.endpoint_id == device.endpoint_id)
            await world.put([gen.Event(device.endpoint_id, "user-" + event.event_id, event.body)])
        await world.check()
        await world.sealer.seal_all()
        await world.check()

    run(world, scenario)


def test_a_copy_of_another_database_is_never_read(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        day = min(world.sealed())
        assert not (await world.plan(day)).open
        source = world.copy.source()
        assert source
        with world.copy.state(write=True) as conn:
            conn.execute("UPDATE source SET db = 'another'")
        assert (await world.plan(day)).open
        await world.check()
        await world.sealer.seal_all()  # started again
        assert world.copy.source() == source
        assert not (await world.plan(day)).open
        await world.check()

    run(world, scenario)


def test_the_collectors_share_no_copy(world: World, tmp_path: Path) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        other = PostgresStorage(world.url, columnar=tmp_path / "other")
        await other.start()
        try:
            day = min(world.sealed())
            plan = await other.analytics_read(
                lambda conn: pg_columnar.plan(
                    conn, pg_columnar.Copy(tmp_path / "other"), APP, day * 24, day * 24 + 24
                )
            )
            assert plan.open and not plan.files
        finally:
            await other.close()

    run(world, scenario)


def test_one_process_of_those_sharing_a_directory_seals(tmp_path: Path) -> None:
    storage = PostgresStorage("postgresql://unused/db", columnar=tmp_path / "copy")
    first, second = PgSealer(storage), PgSealer(storage)
    try:
        assert first._holds_lock(tmp_path / "copy")
        assert not second._holds_lock(tmp_path / "copy")
    finally:
        asyncio.run(first.close())
    assert second._holds_lock(tmp_path / "copy")  # once the first has gone
    asyncio.run(second.close())


def test_queries_answer_without_a_usable_directory(
    postgres_url: str, tmp_path: Path, data: gen.Data
) -> None:
    (tmp_path / "a-file").write_text("")
    world = World(postgres_url, tmp_path / "a-file" / "copy", data)  # cannot be made

    async def scenario() -> None:
        await world.put(world.data.events[:2000])
        with pytest.raises(OSError):
            await world.sealer.step()
        await world.check()

    run(world, scenario)
