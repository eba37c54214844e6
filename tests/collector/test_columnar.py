"""The columnar copy of events (storage/columnar.py) and its sealer: whatever is sealed,
late, deleted or half-written, the funnel and the filtered event counts read through the
copy answer what they answer from the events table alone."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson
import pytest

from homing_collector import ingest, sealer
from homing_collector.analytics import queries
from homing_collector.analytics.params import EventFilters, MetricFilter, Range, Step
from homing_collector.sealer import Sealer
from homing_collector.storage import columnar
from homing_collector.storage.analytics_sqlite import pending as rollups_pending
from homing_collector.storage.base import AppRecord, StorageError
from homing_collector.storage.columnar_process import ColumnarProcess
from homing_collector.storage.sqlite import SQLiteStorage
from tests.collector import analytics_data as gen

T = TypeVar("T")
APP = "app1"
TODAY = date(2026, 11, 1)
RANGES = [
    (date(2026, 9, 1), date(2026, 10, 31), "UTC"),
    (date(2026, 9, 10), date(2026, 9, 24), "Asia/Tokyo"),
    (date(2026, 10, 20), date(2026, 10, 31), "America/Los_Angeles"),  # across a DST change
    (date(2026, 9, 14), date(2026, 9, 14), "Pacific/Kiritimati"),  # UTC+14, one day
]
FILTERS = [
    EventFilters(breakdown="level"),
    EventFilters(breakdown="screen", event_types=("screen.view", "level.complete")),
    EventFilters(
        event_types=("level.complete",),
        breakdown="level",
        include=(("level", frozenset({"forest", "cave"})),),
        exclude=(("screen", frozenset({"cart"})),),
        metrics=(MetricFilter("score", ">=", 500.0),),
    ),
    EventFilters(exclude=(("screen", frozenset({"home", "shop"})),)),
    EventFilters(metrics=(MetricFilter("load_ms", "<", 300.0), MetricFilter("load_ms", "!=", 5))),
]
STEPS = [
    [Step("_session.start"), Step("screen.view", (("screen", "shop"),)),
     Step("_monetization.purchase")],
    [Step("screen.view"), Step("screen.view", (("screen", "cart"),)), Step("screen.view")],
]  # fmt: skip


@pytest.fixture
def data() -> gen.Data:
    return gen.generate(seed=3, devices=30)


class World:
    def __init__(self, db: Path, data: gen.Data) -> None:
        self.db = db
        self.data = data
        self.devices = {d.endpoint_id: d for d in data.devices}
        self.storage = SQLiteStorage(db, columnar_copy=True)
        self.sealer = Sealer(self.storage)
        self.clock = 1_000_000.0
        self.sealer.clock = lambda: self.clock

    async def put(self, events: list[gen.Event]) -> None:
        for body in gen.batches(events, self.devices):
            raw = orjson.dumps(body)
            report = await ingest.put_events(self.storage, APP, orjson.loads(raw),
                                             body_size=len(raw))  # fmt: skip
            assert report is not None

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = sqlite3.connect(self.db)
        try:
            return fn(conn)
        finally:
            conn.close()

    def answers(self, copy: Path | None) -> list[Any]:
        out: list[Any] = []
        # The rollups' entries folded in, as a read through the storage has them.
        fold = sqlite3.connect(self.db, isolation_level=None)
        try:
            fold.execute("BEGIN IMMEDIATE")
            rollups_pending.settle(fold)
            fold.execute("COMMIT")
        finally:
            fold.close()

        def ask(conn: sqlite3.Connection) -> None:
            for start, end, tz in RANGES:
                for by in ("users", "endpoints"):
                    q = Range(start, end, ZoneInfo(tz), by, TODAY)
                    for f in FILTERS:
                        out.append(queries.events(conn, APP, q, f, copy=copy))
                    for steps in STEPS:
                        for window in (1, 600, 86400):
                            out.append(queries.funnel(conn, APP, q, steps, window, copy=copy))

        self.read(ask)
        return out

    def check(self) -> None:
        """The answers through the copy are those from the events table alone."""
        assert self.storage.columnar is not None
        got, want = self.answers(self.storage.columnar), self.answers(None)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert same(a, b), (a, b)
        assert any(row["count"] for answer in want for row in answer.get("breakdown", []))

    def sealed(self) -> dict[int, list[str]]:
        """The names of the files of each sealed day."""
        return self.read(
            lambda conn: {
                day: [entry[0] for entry in orjson.loads(files)]
                for day, files in conn.execute(
                    "SELECT day, files FROM columnar_days WHERE app_id = ?", (APP,)
                )
            }
        )

    def watermark(self) -> int:
        return int(
            self.read(lambda c: c.execute("SELECT watermark FROM columnar_state").fetchone()[0])
        )

    def tail(self) -> int:
        """Events of sealed days past the watermark."""
        days = set(self.sealed())
        w = self.watermark()
        rows = self.read(
            lambda c: c.execute("SELECT hour FROM events WHERE rowid > ?", (w,)).fetchall()
        )
        return sum(1 for (hour,) in rows if hour // 24 in days)

    def copied(self) -> dict[int, list[tuple[str, str, int]]]:
        """The events each sealed day's files hold, as (endpoint, type, ts)."""
        import duckdb

        root = self.storage.columnar
        assert root is not None
        out = {}
        for day, files in self.sealed().items():
            rows = []
            for name in files:
                rows += duckdb.sql(
                    f"SELECT endpoint_id, event_type, ts FROM read_parquet('{root / name}')"
                ).fetchall()
            out[day] = sorted(rows)
        return out

    def stored(self, day: int) -> list[tuple[str, str, int]]:
        return sorted(
            self.read(
                lambda c: c.execute(
                    "SELECT endpoint_id, event_type, ts FROM events WHERE app_id = ?"
                    " AND hour >= ? AND hour < ?",
                    (APP, day * 24, day * 24 + 24),
                ).fetchall()
            )
        )


def same(a: Any, b: Any) -> bool:
    """Equal, but for the last bits of sums of floats added in another order."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return a == pytest.approx(b, rel=1e-9, abs=1e-6)
    return bool(a == b)


@pytest.fixture
def world(tmp_path: Path, data: gen.Data) -> Iterator[World]:
    yield World(tmp_path / "homing.db", data)


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
        world.check()  # nothing sealed yet
        await world.sealer.seal_all()
        days = world.sealed()
        assert len(days) > 40 and all(len(files) == 1 for files in days.values())
        assert world.tail() == 0
        # Each day's file holds exactly that day's events.
        for day, rows in world.copied().items():
            assert rows == world.stored(day)
        world.check()

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
        assert world.tail() == len(late)
        world.check()  # sealed files, and the tail from the events table
        assert await world.sealer.step()  # the late events go into new files
        assert world.tail() == 0
        after = world.sealed()
        assert any(len(after[day]) == 2 for day in before)
        for day, rows in world.copied().items():
            assert rows == world.stored(day)
        world.check()
        # More late files than MOST_FILES: the day's files are merged into one.
        for i in range(sealer.MOST_FILES):
            await world.put([gen.Event(e.endpoint_id, f"again{i}-{e.event_id}", e.body)
                             for e in late[:5]])  # fmt: skip
            await world.sealer.step()
        await world.sealer.seal_all()
        files = world.sealed().values()
        assert all(len(names) <= sealer.MOST_FILES for names in files)
        assert any("-m" in name for names in files for name in names)  # merged
        for day, rows in world.copied().items():
            assert rows == world.stored(day)
        world.check()

    run(world, scenario)


def test_deleting_an_endpoint_unseals_its_days_until_they_are_copied_again(
    world: World,
) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        # The last events stored are of this endpoint: their rowids come again.
        last = world.data.events[-1].endpoint_id
        ahead = world.watermark()
        await world.storage.delete_endpoint(APP, last)
        assert world.watermark() < ahead
        world.check()  # its days are read from the events table
        assert world.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]) > 0
        again = [e for e in world.data.events if e.endpoint_id == world.data.events[0].endpoint_id]
        await world.put([gen.Event(e.endpoint_id, "re-" + e.event_id, e.body) for e in again])
        world.check()  # the new rows reuse rowids of the deleted ones, and are counted
        await world.sealer.seal_all()
        for day, rows in world.copied().items():
            assert rows == world.stored(day)
            assert all(endpoint != last for endpoint, _, _ in rows)
        world.check()

    run(world, scenario)


def test_retention_drops_the_copy_of_expired_days(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        root = world.storage.columnar
        assert root is not None
        files = {p for p in root.rglob("*.parquet")}
        cutoff = int(gen.BASE.timestamp()) // 3600 + 30 * 24 + 7  # day 30, 07:00 UTC
        while await world.storage.delete_expired_events(APP, cutoff, 100):
            pass
        first = cutoff // 24
        assert all(day > first for day in world.sealed())  # the cut day is read from SQLite
        world.check()
        await world.sealer.seal_all()
        assert min(world.sealed()) == first
        for day, rows in world.copied().items():
            assert rows == world.stored(day)
        world.check()
        # The expired days' files go once no query can be reading them.
        await world.sealer.sweep(root)
        gone = files - set(root.rglob("*.parquet"))
        assert not gone
        world.clock += sealer.GRACE
        await world.sealer.sweep(root)
        gone = files - set(root.rglob("*.parquet"))
        cut = str(columnar.EPOCH + timedelta(days=first))
        assert gone == {p for p in files if p.parent.name <= cut}
        assert len(gone) > 10
        world.check()

    run(world, scenario)


def test_a_copy_made_across_a_deletion_or_a_crash_is_never_counted(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events[: len(world.data.events) // 2])
        await world.sealer.seal_all()
        await world.put(world.data.events[len(world.data.events) // 2 :])
        root = world.storage.columnar
        assert root is not None
        conn = sqlite3.connect(world.db)
        try:
            made = columnar.append(conn, root, 10**9)  # copied, not committed: a crash
        finally:
            conn.close()
        assert made is not None and made.written
        world.check()
        # A deletion between the copy and its commit: the commit is refused.
        await world.storage.delete_endpoint(APP, world.data.events[0].endpoint_id)
        assert not await world.storage.seal_events(lambda conn: made)
        assert not any(p.exists() for p in made.written)
        world.check()
        await world.sealer.seal_all()
        for day, rows in world.copied().items():
            assert rows == world.stored(day)
        world.check()

    run(world, scenario)


def test_deleting_the_copy_loses_nothing(world: World) -> None:
    import shutil

    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        root = world.storage.columnar
        assert root is not None
        before = world.sealed()
        shutil.rmtree(root)  # nothing else: the days name files that are gone
        world.check()  # read from the events table
        await world.sealer.seal_all()
        after = world.sealed()
        assert after.keys() == before.keys() and after != before  # copied again
        for day, rows in world.copied().items():
            assert rows == world.stored(day)
        world.check()
        # A copy forgotten by the database, as the docs say to do after a VACUUM.
        world.read(lambda c: c.execute("DELETE FROM columnar_days") and c.commit())
        world.check()
        await world.sealer.seal_all()
        assert len(world.sealed()) > 40
        world.check()

    run(world, scenario)


def _entries(world: World) -> dict[int, list[list[Any]]]:
    return world.read(
        lambda conn: {
            day: orjson.loads(files)
            for day, files in conn.execute(
                "SELECT day, files FROM columnar_days WHERE app_id = ?", (APP,)
            )
        }
    )


def _numbers(world: World) -> dict[str, int]:
    rows = world.read(
        lambda c: c.execute("SELECT endpoint_id, n FROM columnar_endpoints").fetchall()
    )
    return dict(rows)


def test_files_of_the_first_layout_are_read_from_the_events_table_then_copied_again(
    world: World,
) -> None:
    """A copy made before the files had endpoint numbers: its days answer from the events
    table, and the sealer copies each of them again."""
    import duckdb

    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        root = world.storage.columnar
        assert root is not None
        old = _entries(world)

        # The files as the first layout wrote and named them, no number given yet.
        def downgrade(conn: sqlite3.Connection) -> None:
            for day, entries in old.items():
                for entry in entries:
                    path = root / entry[0]
                    entry[0] = entry[0].removesuffix(columnar._SUFFIX) + ".parquet"
                    duckdb.sql(
                        f"COPY (SELECT * EXCLUDE (ep) FROM read_parquet('{path}'))"
                        f" TO '{root / entry[0]}' (FORMAT parquet)"
                    )
                    path.unlink()
                conn.execute(
                    "UPDATE columnar_days SET files = ? WHERE app_id = ? AND day = ?",
                    (orjson.dumps(entries).decode(), APP, day),
                )
            conn.execute("DELETE FROM columnar_endpoints")
            conn.commit()

        world.read(downgrade)
        world.check()
        unsealed = world.read(lambda c: columnar.unsealed_days(c, root))
        assert sorted(day for _, day in unsealed) == sorted(old)
        await world.sealer.seal_all()
        again = _entries(world)
        assert again.keys() == old.keys()
        assert all(e[0].endswith(columnar._SUFFIX) for entries in again.values() for e in entries)
        for day, rows in world.copied().items():
            assert rows == world.stored(day)
        assert set(_numbers(world)) == {e.endpoint_id for e in world.data.events}
        world.check()

    run(world, scenario)


def test_a_duckdb_that_writes_parquet_1_alone_still_makes_the_copy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DuckDB without Parquet 2's option: the files are written in Parquet 1's
    encodings, and answer alike."""
    import duckdb

    duck = columnar._duck()
    refused: list[str] = []

    class Older:
        def execute(self, sql: str, *args: Any) -> Any:
            if "PARQUET_VERSION" in sql:
                refused.append(sql)
                raise duckdb.BinderException("Unrecognized option for PARQUET: parquet_version")
            return duck.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(duck, name)

    monkeypatch.setattr(columnar, "_duck", Older)

    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        assert refused
        for d, rows in world.copied().items():
            assert rows == world.stored(d)
        world.check()

    run(world, scenario)


def test_files_of_the_second_layout_are_read_until_the_sealer_has_copied_the_other_days(
    world: World,
) -> None:
    """Files of layout 2 (the columns of this one, in Parquet 1's encodings): their days
    answer from them, not from the events table, and the sealer copies them again once
    the days that queries read from the events table are copied."""
    import duckdb

    async def scenario() -> None:
        await world.put(world.data.events)
        await world.sealer.seal_all()
        root = world.storage.columnar
        assert root is not None
        old = _entries(world)
        encodings = (
            "SELECT DISTINCT encodings FROM parquet_metadata('{}') WHERE path_in_schema = 'ts'"
        )

        def downgrade(conn: sqlite3.Connection) -> None:
            for day, entries in old.items():
                for entry in entries:
                    path = root / entry[0]
                    assert "DELTA_BINARY_PACKED" in str(
                        duckdb.sql(encodings.format(path)).fetchall()
                    )
                    entry[0] = entry[0].removesuffix(columnar._SUFFIX) + ".l2.parquet"
                    duckdb.sql(
                        f"COPY (SELECT * FROM read_parquet('{path}')) TO '{root / entry[0]}'"
                        " (FORMAT parquet, PARQUET_VERSION V1)"
                    )
                    path.unlink()
                conn.execute(
                    "UPDATE columnar_days SET files = ? WHERE app_id = ? AND day = ?",
                    (orjson.dumps(entries).decode(), APP, day),
                )
            conn.commit()

        world.read(downgrade)
        first, last = min(old), max(old)
        plan = world.read(lambda c: columnar.plan(c, root, APP, first * 24, (last + 1) * 24))
        opened = {h // 24 for lo, hi in plan.open for h in range(lo, hi)}
        assert not opened & old.keys()  # the days without events alone
        assert sorted(p.path.name for p in plan.files) == sorted(
            Path(e[0]).name for entries in old.values() for e in entries
        )
        world.check()
        # A day that queries read from the events table goes first, then the others.
        day = last - 1
        world.read(lambda c: (c.execute("DELETE FROM columnar_days WHERE day = ?", (day,)),
                              c.commit()))  # fmt: skip
        unsealed = world.read(lambda c: columnar.unsealed_days(c, root))
        assert [d for _, d in unsealed] == [day, *sorted(set(old) - {day}, reverse=True)]
        await world.sealer.seal_all()
        again = _entries(world)
        assert again.keys() == old.keys()
        for entries in again.values():
            for e in entries:
                assert e[0].endswith(columnar._SUFFIX)
                assert "DELTA_BINARY_PACKED" in str(
                    duckdb.sql(encodings.format(root / e[0])).fetchall()
                )
        for d, rows in world.copied().items():
            assert rows == world.stored(d)
        world.check()

    run(world, scenario)


def test_endpoints_numbered_after_the_copy_was_made(world: World) -> None:
    """Events of endpoints the sealer has not numbered yet, one of them of a user whose
    other endpoint is in the files, are read from the tail with numbers of the query's
    own; then the sealer numbers them."""
    devices = world.data.devices
    assert devices[0].user_id is not None and devices[0].user_id == devices[1].user_id
    assert devices[2].user_id is None
    later = {devices[1].endpoint_id, devices[2].endpoint_id}
    first = [e for e in world.data.events if e.endpoint_id not in later]
    then = [e for e in world.data.events if e.endpoint_id in later]

    async def scenario() -> None:
        await world.put(first)
        await world.sealer.seal_all()
        numbers = _numbers(world)
        assert devices[0].endpoint_id in numbers and not later & set(numbers)
        assert sorted(numbers.values()) == list(range(1, len(numbers) + 1))
        await world.put(then)
        assert world.tail() > 0
        world.check()
        await world.sealer.seal_all()
        assert world.tail() == 0
        after = _numbers(world)
        assert later <= set(after) and all(after[e] == n for e, n in numbers.items())
        assert sorted(after.values()) == list(range(1, len(after) + 1))
        world.check()
        # A numbered endpoint deleted keeps its number; its events and its user go.
        await world.storage.delete_endpoint(APP, devices[0].endpoint_id)
        world.check()
        await world.sealer.seal_all()
        assert _numbers(world) == after
        world.check()
        # An application deleted: its numbers go with it.
        await world.storage.delete_app(APP)
        assert _numbers(world) == {}

    run(world, scenario)


def test_two_copies_numbering_the_same_endpoints_do_not_both_commit(world: World) -> None:
    async def scenario() -> None:
        await world.put(world.data.events)
        root = world.storage.columnar
        assert root is not None
        days = world.read(lambda c: columnar.unsealed_days(c, root))
        conn = sqlite3.connect(world.db, isolation_level=None)
        try:
            moved = columnar.append(conn, root, 10**9)  # the watermark past every event
            assert moved is not None and not moved.days
            conn.execute("BEGIN IMMEDIATE")
            assert columnar.commit(conn, moved)
            conn.execute("COMMIT")
            a = columnar.rebuild(conn, root, *days[0])
            b = columnar.rebuild(conn, root, *days[1])
            assert a.numbers[APP][1] and b.numbers[APP][1]
            conn.execute("BEGIN IMMEDIATE")
            assert columnar.commit(conn, a)
            assert not columnar.commit(conn, b)  # its numbers may be a's, for others
            conn.execute("COMMIT")
            b.discard()
        finally:
            conn.close()
        world.check()
        await world.sealer.seal_all()
        numbers = _numbers(world)
        assert sorted(numbers.values()) == list(range(1, len(numbers) + 1))
        world.check()

    run(world, scenario)


@pytest.mark.parametrize("seed", range(6))
def test_funnels_of_events_at_the_same_moments_walk_as_the_events_table_does(
    world: World, seed: int
) -> None:
    """Steps of one type, events matching several steps, many events of one moment: the
    walk in SQL (columnar.funnel_depths) against the one in Python, over sealed files, the
    tail and unsealed days at once."""
    import random

    rng = random.Random(seed)
    devices = world.data.devices[:8]
    base = gen.BASE + timedelta(days=10)
    moments = [base + timedelta(seconds=rng.choice([0, 1, 2, 30, 600, 3599, 90_000]))
               for _ in range(12)]  # fmt: skip
    events = []
    for n in range(400):
        device = rng.choice(devices)
        attributes = {"x": rng.choice(["1", "2"])} if rng.random() < 0.8 else {}
        if rng.random() < 0.5:  # a name that differs in case only: an attribute of its own
            attributes["X"] = rng.choice(["1", "2"])
        body = {"EventType": rng.choice(["a", "b", "c"]), "Timestamp": gen.iso(rng.choice(moments)),
                "Attributes": attributes}  # fmt: skip
        events.append(gen.Event(device.endpoint_id, f"e{n}", body))
    funnels = [
        [Step("a"), Step("a")],
        [Step("a"), Step("a", (("x", "1"),)), Step("b"), Step("a")],
        [Step("a", (("x", "2"),)), Step("a"), Step("a", (("x", "2"),)), Step("c")],
        [Step("b"), Step("c"), Step("b"), Step("c"), Step("b")],
        [Step("a", (("X", "1"),)), Step("b", (("x", "2"), ("X", "2")))],
        # No event matches two steps: the walk by levels.
        [Step("a"), Step("b"), Step("c")],
        [Step("c"), Step("a", (("x", "1"),)), Step("b"), Step("a", (("x", "2"),))],
        # Apart, with attributes: an event of a step's type without its attributes
        # matches no step; an attribute no file has a column for matches nothing.
        [Step("b"), Step("a", (("x", "1"),)), Step("c", (("X", "2"),))],
        [Step("a"), Step("b", (("none", "1"),)), Step("c")],
    ]

    def answers(copy: Path | None) -> list[Any]:
        def ask(conn: sqlite3.Connection) -> list[Any]:
            out = []
            for by in ("users", "endpoints"):
                q = Range(date(2026, 9, 10), date(2026, 9, 13), ZoneInfo("UTC"), by, TODAY)
                for steps in funnels:
                    for window in (1, 2, 600, 86400):
                        got = queries.funnel(conn, APP, q, steps, window, copy=copy)
                        out.append([s["count"] for s in got["steps"]])
            return out

        return world.read(ask)

    async def scenario() -> None:
        await world.put(events[:200])
        await world.sealer.seal_all()
        await world.put(events[200:300])  # the tail
        await world.sealer.step()
        await world.put(events[300:])
        assert world.tail() > 0
        want = answers(None)
        assert any(counts[-1] for counts in want)
        assert answers(world.storage.columnar) == want
        # Endpoints that change users after their events were sealed count for their
        # users of now: three as one user, one with no user any more.
        world.read(
            lambda c: (
                c.executemany(
                    "UPDATE endpoints SET user_id = ? WHERE endpoint_id = ?",
                    [("moved", d.endpoint_id) for d in devices[1:4]]
                    + [(None, d.endpoint_id) for d in devices[4:5] if d.user_id]
                    + [("moved-too", d.endpoint_id) for d in devices[5:6] if not d.user_id],
                )
                and c.commit()
            )
        )
        moved = answers(None)
        assert moved != want
        assert answers(world.storage.columnar) == moved
        # One day unsealed by a deletion: read from SQLite, the others from the files.
        await world.storage.delete_endpoint(APP, devices[0].endpoint_id)
        want = answers(None)
        assert answers(world.storage.columnar) == want

    run(world, scenario)


def test_funnels_by_users_join_endpoints_the_sealer_has_not_numbered_yet(world: World) -> None:
    """A user's endpoints, some sealed with numbers and some whose events only the events
    table holds (numbered for the query alone), and endpoints of the app with no event in
    the range: the funnel by users through the copy answers what the events table does,
    and counts each user once."""
    sealed, fresh = world.data.devices[:6], world.data.devices[6:12]
    for i, device in enumerate(sealed + fresh):
        device.user_id = f"user-{i % 4}" if i % 5 else None
    steps = [Step("a"), Step("b"), Step("c")]
    base = gen.BASE + timedelta(days=3)

    def journey(device: gen.Device, start: int) -> list[gen.Event]:
        moment = base + timedelta(minutes=start)
        return [
            gen.Event(device.endpoint_id, f"{device.endpoint_id}-{start}-{k}",
                      {"EventType": kind, "Timestamp": gen.iso(moment + timedelta(minutes=k))})
            for k, kind in enumerate("abc"[: 1 + start % 3])
        ]  # fmt: skip

    def answers(copy: Path | None) -> list[list[int]]:
        def ask(conn: sqlite3.Connection) -> list[list[int]]:
            out = []
            for by in ("users", "endpoints"):
                q = Range(date(2026, 9, 1), date(2026, 9, 30), ZoneInfo("UTC"), by, TODAY)
                got = queries.funnel(conn, APP, q, steps, 3600, copy=copy)
                out.append([step["count"] for step in got["steps"]])
            return out

        return world.read(ask)

    async def scenario() -> None:
        # Events a month before the range: their endpoints are numbered, and not in it.
        early = [gen.Event(d.endpoint_id, f"{d.endpoint_id}-early",
                           {"EventType": "a", "Timestamp": gen.iso(base - timedelta(days=40))})
                 for d in world.data.devices[12:]]  # fmt: skip
        await world.put(early + [e for i, d in enumerate(sealed) for e in journey(d, i)])
        await world.sealer.seal_all()
        await world.put([e for i, d in enumerate(fresh) for e in journey(d, i + 1)])
        numbered = set(_numbers(world))
        assert {d.endpoint_id for d in sealed} <= numbered
        assert not numbered & {d.endpoint_id for d in fresh}
        want = answers(None)
        by_users, by_endpoints = want
        assert by_users[0] < by_endpoints[0]  # endpoints of one user counted once
        assert by_users[-1] > 0
        assert answers(world.storage.columnar) == want

    run(world, scenario)


def test_queries_write_nothing_beside_the_copy(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The funnels and event counts through the copy, with events past its watermark and
    endpoints not numbered yet, leave the copy's directory as they found it (it may be
    read-only): their temporary files go to the system's temporary directory, and go."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    made: list[str] = []
    rows_csv = columnar._rows_csv

    def counted(rows: Any) -> tuple[Path, int]:
        path, size = rows_csv(rows)
        made.append(str(path))
        return path, size

    monkeypatch.setattr(columnar, "_rows_csv", counted)

    def listing(root: Path) -> list[tuple[str, int]]:
        return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))

    async def scenario() -> None:
        half = len(world.data.devices) // 2
        early = {d.endpoint_id for d in world.data.devices[:half]}
        await world.put([e for e in world.data.events if e.endpoint_id in early])
        await world.sealer.seal_all()
        await world.put([e for e in world.data.events if e.endpoint_id not in early])
        root = world.storage.columnar
        assert root is not None
        before = listing(root)
        world.check()
        assert listing(root) == before
        assert made and all(path.startswith(str(scratch)) for path in made)
        assert list(scratch.iterdir()) == []

    run(world, scenario)


@pytest.mark.parametrize("key_bits", [63, 1])
@pytest.mark.parametrize("seed", range(4))
def test_the_walk_by_levels_finds_the_depths_of_the_walk_by_asof_joins(
    seed: int, key_bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timelines where no event matches two steps, many events at the same moments: the
    walk by levels (columnar._walk_levels) against the one by ASOF joins and the one in
    Python (queries._depths), for windows from none to all; its keys as BIGINTs, and as
    HUGEINTs where they would not fit (key_bits 1)."""
    import random

    monkeypatch.setattr(columnar, "_KEY_BITS", key_bits)

    rng = random.Random(seed)
    n = rng.choice([2, 3, 4])
    moments = sorted(rng.sample(range(50), 12))
    rows = [(rng.randrange(30), rng.choice(moments), 1 << rng.randrange(n), rid)
            for rid in range(1, 1500)]  # fmt: skip
    rows += [(30, moment, 2, 1500 + i) for i, moment in enumerate(moments)]  # no start
    rows += [(-3, moments[0], 1, 1600), (-3, moments[1], 2, 1601)]  # a subject below 0
    duck = columnar._duck()
    values = ", ".join(f"({subj}, {t}, {m}, {rid})" for subj, t, m, rid in rows)
    duck.execute(
        f"CREATE OR REPLACE TEMP TABLE r AS SELECT * FROM (VALUES {values}) AS v(subj, t, m, rid)"
    )
    deepest = 0
    try:
        for window in (0, 1, 3, 10, 1000):
            levels = dict(columnar._walk_levels(duck, n, window))
            assert levels == dict(columnar._walk_asof(duck, n, window))
            walked: dict[int, int] = {}
            timeline = [(str(subj), t, m, rid) for subj, t, m, rid in rows]
            for best in queries._depths(timeline, {}, n, window):
                if best:
                    walked[best] = walked.get(best, 0) + 1
            assert levels == walked
            deepest = max(deepest, *levels)
    finally:
        for table in ("r", "rk", "x", *(f"{t}{k}" for k in range(1, n) for t in "cl")):
            duck.execute(f"DROP TABLE IF EXISTS {table}")
    assert deepest == n


def _users_beside_numbers(world: World) -> dict[str, str | None]:
    """Each numbered endpoint's user in columnar_endpoints; the same as the endpoint's."""
    rows = world.read(
        lambda c: c.execute(
            "SELECT c.endpoint_id, c.user_id, e.user_id FROM columnar_endpoints c"
            " LEFT JOIN endpoints e USING (app_id, endpoint_id)"
        ).fetchall()
    )
    assert [(endpoint, kept) for endpoint, kept, now in rows if kept != now] == []
    return {endpoint: kept for endpoint, kept, _now in rows}


def test_users_given_changed_or_deleted_after_sealing_count_in_funnels_by_users(
    world: World,
) -> None:
    """Endpoints sealed with their users, whose users then change through PutEvents, go,
    or come back with the endpoint: funnels by users through the copy count each endpoint
    under its user of now, as the events table does."""
    devices = world.data.devices[:8]
    steps = [Step("a"), Step("b")]
    base = gen.BASE + timedelta(days=3)

    def profile(device: gen.Device, user: str | None) -> None:
        device.profile = {k: v for k, v in device.profile.items() if k != "User"}
        if user is not None:
            device.profile["User"] = {"UserId": user}

    def events(kinds: str, tag: str) -> list[gen.Event]:
        return [
            gen.Event(d.endpoint_id, f"{d.endpoint_id}-{tag}-{k}", {"EventType": kind,
                      "Timestamp": gen.iso(base + timedelta(hours=i, minutes=k))})
            for i, d in enumerate(devices) for k, kind in enumerate(kinds[: 1 + i % 2])
        ]  # fmt: skip

    def answers(copy: Path | None) -> list[int]:
        def ask(conn: sqlite3.Connection) -> list[int]:
            q = Range(date(2026, 9, 1), date(2026, 9, 30), ZoneInfo("UTC"), "users", TODAY)
            return [
                s["count"] for s in queries.funnel(conn, APP, q, steps, 3600, copy=copy)["steps"]
            ]

        return world.read(ask)

    async def scenario() -> None:
        for i, d in enumerate(devices):
            profile(d, f"user-{i % 3}" if i % 4 else None)
        await world.put(events("ab", "first"))
        await world.sealer.seal_all()
        users = _users_beside_numbers(world)
        assert {users[d.endpoint_id] for d in devices} == {None, "user-0", "user-1", "user-2"}
        before = answers(None)
        assert answers(world.storage.columnar) == before
        # Users change through the endpoints that PutEvents carries, with events of
        # another type: a user for an endpoint without one, a new user, another one.
        profile(devices[0], "user-2")
        profile(devices[1], "user-new")
        profile(devices[2], "user-1")
        await world.put(events("z", "again"))
        users = _users_beside_numbers(world)
        assert [users[d.endpoint_id] for d in devices[:3]] == ["user-2", "user-new", "user-1"]
        changed = answers(None)
        assert changed != before
        assert answers(world.storage.columnar) == changed
        # An endpoint deleted keeps its number without a user; made again, it has one.
        await world.storage.delete_endpoint(APP, devices[3].endpoint_id)
        assert _users_beside_numbers(world)[devices[3].endpoint_id] is None
        assert answers(world.storage.columnar) == answers(None)
        profile(devices[3], "user-back")
        await world.put(events("ab", "back"))
        assert _users_beside_numbers(world)[devices[3].endpoint_id] == "user-back"
        await world.sealer.seal_all()
        assert answers(world.storage.columnar) == answers(None)

    run(world, scenario)


def test_funnels_by_users_keep_the_user_map_until_a_numbered_endpoint_changes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A funnel by users reads the numbered endpoints' users once, again only after one
    of them changed users or went, and the endpoints numbered since alone: each next
    funnel counts the users of now, as the events table does; events alone change
    nothing."""
    devices = world.data.devices[:10]
    steps = [Step("a"), Step("b")]
    base = gen.BASE + timedelta(days=3)
    reads: list[int] = []  # the largest number known before each read
    numbered = columnar.Numbering._numbered_users

    def counted(self: columnar.Numbering, after: int) -> Iterator[tuple[int, str]]:
        reads.append(after)
        return numbered(self, after)

    monkeypatch.setattr(columnar.Numbering, "_numbered_users", counted)

    def profile(device: gen.Device, user: str | None) -> None:
        device.profile = {k: v for k, v in device.profile.items() if k != "User"}
        if user is not None:
            device.profile["User"] = {"UserId": user}

    def events(group: list[gen.Device], tag: str) -> list[gen.Event]:
        return [
            gen.Event(d.endpoint_id, f"{d.endpoint_id}-{tag}-{k}", {"EventType": kind,
                      "Timestamp": gen.iso(base + timedelta(hours=i, minutes=k))})
            for i, d in enumerate(group) for k, kind in enumerate("ab"[: 1 + i % 2])
        ]  # fmt: skip

    def answers(copy: Path | None) -> list[int]:
        def ask(conn: sqlite3.Connection) -> list[int]:
            q = Range(date(2026, 9, 1), date(2026, 9, 30), ZoneInfo("UTC"), "users", TODAY)
            return [
                s["count"] for s in queries.funnel(conn, APP, q, steps, 3600, copy=copy)["steps"]
            ]

        return world.read(ask)

    def agree(*then: int) -> list[int]:
        want = answers(None)
        assert answers(world.storage.columnar) == want
        assert answers(world.storage.columnar) == want
        assert reads == [*then]
        return want

    async def scenario() -> None:
        for i, d in enumerate(devices):
            profile(d, f"user-{i % 3}" if i % 4 else None)
        await world.put(events(devices[:6], "first"))
        await world.sealer.seal_all()
        first = agree(0)
        await world.put(events(devices[:6], "more"))  # the same users: the same map
        await world.sealer.seal_all()
        agree(0)
        profile(devices[1], "user-0")  # one user fewer
        await world.put(events(devices[1:2], "moved"))
        assert agree(0, 0) != first
        await world.storage.delete_endpoint(APP, devices[2].endpoint_id)
        agree(0, 0, 0)
        # Not numbered yet, and read apart: one without a user, one of a new user.
        profile(devices[6], None)
        profile(devices[7], "user-fresh")
        await world.put(events(devices[6:8], "new"))
        agree(0, 0, 0)
        top = max(_numbers(world).values())
        await world.sealer.seal_all()  # numbered now, above the others: read alone
        assert max(_numbers(world).values()) > top
        agree(0, 0, 0, top)
        # A new user, and one with numbered endpoints already, as the sealer numbers them.
        profile(devices[8], "user-0")
        profile(devices[9], "user-newer")
        await world.put(events(devices[8:10], "newer"))
        top = max(_numbers(world).values())
        await world.sealer.seal_all()
        agree(0, 0, 0, reads[3], top)
        # The funnels wrote their tables in any order; this thread's sealer writes in order.
        (kept,) = (
            columnar._duck()
            .execute("SELECT current_setting('preserve_insertion_order')")
            .fetchall()[0]
        )
        assert kept is True

    run(world, scenario)


def test_the_migration_gives_numbered_endpoints_their_users(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database numbered before migration 19: the users are filled in beside the
    numbers, and kept from then on."""
    from homing_collector.storage import migrations

    conn = sqlite3.connect(world.db, isolation_level=None)
    try:
        monkeypatch.setattr(
            migrations, "SQLITE_MIGRATIONS", [m for m in migrations.SQLITE_MIGRATIONS if m[0] < 19]
        )
        assert migrations.migrate(conn) == 18
        conn.executemany(
            "INSERT INTO endpoints (app_id, endpoint_id, user_id, body) VALUES (?, ?, ?, '{}')",
            [(APP, f"e{i}", f"u{i % 3}" if i % 2 else None) for i in range(10)],
        )
        conn.executemany(
            "INSERT INTO columnar_endpoints (app_id, endpoint_id, n) VALUES (?, ?, ?)",
            [(APP, f"e{i}", i + 1) for i in range(0, 12, 2)]  # e10: deleted since
            + [(APP, f"e{i}", i + 1) for i in range(1, 10, 2)],
        )
        monkeypatch.undo()
        assert migrations.migrate(conn) >= 19
        assert _users_beside_numbers(world) == {
            f"e{i}": f"u{i % 3}" if i % 2 else None for i in range(11)
        }
        conn.execute("UPDATE endpoints SET user_id = 'v' WHERE endpoint_id IN ('e1', 'e2')")
        conn.execute("DELETE FROM endpoints WHERE endpoint_id = 'e3'")
        users = _users_beside_numbers(world)
        assert (users["e1"], users["e2"], users["e3"]) == ("v", "v", None)
    finally:
        conn.close()


@pytest.mark.parametrize("clash", [False, True], ids=["struct", "names-differing-in-case"])
def test_the_files_hold_each_event_as_stored_whatever_its_text(world: World, clash: bool) -> None:
    """Quotes, commas, newlines, control characters, dots and non-ASCII letters in ids,
    types and names come through the sealer's CSV lines and its reading of each body
    unchanged; with two names that differ in case alone too."""
    endpoint_ids = ['dev,"1"', "dev\u00e9 2", "plain"]
    names = ['say "hi"', "it's", "a.b", "comma,name", "\u00fcber"] + (["Case", "case"] * clash)
    events: dict[str, list[tuple[str, dict[str, Any]]]] = {e: [] for e in endpoint_ids}
    for n in range(60):
        endpoint_id = endpoint_ids[n % 3]
        body = {
            "EventType": ['buy "now"', "line\nbreak", "x,y", "ctl\x01\x01"][n % 4],
            "Timestamp": gen.iso(gen.BASE + timedelta(hours=n)),
            "Attributes": {name: f'{name} = "{n}",\n\u00e9\x01' for name in names[n % 4 :]},
            "Metrics": {"int": n, "float": n / 7, "big": 2**53 + n} if n % 5 else {},
        }
        events[endpoint_id].append((f"e{n}", body))

    async def scenario() -> None:
        for endpoint_id, items in events.items():
            payload = {"BatchItem": {endpoint_id: {"Endpoint": {}, "Events": dict(items)}}}
            raw = orjson.dumps(payload)
            report = await ingest.put_events(world.storage, APP, orjson.loads(raw),
                                             body_size=len(raw))  # fmt: skip
            assert report.accepted == len(items)
        # The first copy of each day (rebuild), then events that arrive after it (append).
        await world.sealer.seal_all()
        late = {e: [(f"late-{i}", {**b, "EventType": "late"}) for i, b in items[:3]]
                for e, items in events.items()}  # fmt: skip
        for endpoint_id, items in late.items():
            payload = {"BatchItem": {endpoint_id: {"Events": dict(items)}}}
            raw = orjson.dumps(payload)
            await ingest.put_events(world.storage, APP, orjson.loads(raw), body_size=len(raw))
        await world.sealer.seal_all()
        assert world.tail() == 0

    run(world, scenario)
    import duckdb

    root = world.storage.columnar
    assert root is not None
    copied = []
    for files in world.read(lambda c: [orjson.loads(f) for (f,) in
                                       c.execute("SELECT files FROM columnar_days")]):  # fmt: skip
        for entry in files:
            part = columnar.Part.of(root, entry)
            for row in duckdb.sql(f"SELECT * FROM read_parquet('{part.path}')").fetchall():
                n_a = len(part.attributes)
                attributes = {
                    k: v
                    for k, v in zip(part.attributes, row[5 : 5 + n_a], strict=True)
                    if v is not None
                }
                metrics = {
                    k: v for k, v in zip(part.metrics, row[5 + n_a :], strict=True) if v is not None
                }
                copied.append((row[2], row[3], row[4], attributes, metrics))
    stored = []
    for endpoint_id, event_type, ts, body in world.read(
        lambda c: c.execute("SELECT endpoint_id, event_type, ts, body FROM events").fetchall()
    ):
        event = orjson.loads(body)
        metrics = {k: float(v) for k, v in event.get("Metrics", {}).items()}
        stored.append((endpoint_id, event_type, ts, event.get("Attributes", {}), metrics))
    assert len(stored) == 60 + 9
    key = orjson.dumps
    assert sorted(copied, key=key) == sorted(stored, key=key)


def test_copies_made_in_a_process_of_their_own(tmp_path: Path, data: gen.Data) -> None:
    """As `serve` makes them: the sealer's copies made by a child process answer as the
    events table does; a child killed mid-work commits nothing, and the next copy starts
    another."""
    world = World(tmp_path / "homing.db", data)
    world.storage = SQLiteStorage(world.db, columnar_copy=True, columnar_process=True)
    world.sealer = Sealer(world.storage)
    world.sealer.clock = lambda: world.clock
    half = len(world.data.events) // 2

    async def scenario() -> None:
        await world.put(world.data.events[:half])
        await world.sealer.seal_all()
        assert world.sealed() and world.tail() == 0
        world.check()
        await world.put(world.data.events[half:])
        assert world.tail() > 0
        root = world.storage.columnar
        assert root is not None
        child = ColumnarProcess(world.db)
        try:
            copy = asyncio.ensure_future(
                child.run(partial(columnar.append, root=root, limit=10**9))
            )
            while child.pid is None:
                await asyncio.sleep(0.001)
            os.kill(child.pid, signal.SIGKILL)
            with pytest.raises(StorageError, match="stopped"):
                await copy
            again = await child.run(partial(columnar.append, root=root, limit=1))
            assert again is not None and again.rows <= 1
            again.discard()
        finally:
            await child.close()
        world.check()
        await world.sealer.seal_all()
        assert world.tail() == 0
        world.check()

    run(world, scenario)
