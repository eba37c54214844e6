"""The storage protocol's answers, the same on SQLite and on PostgreSQL.

Every test here runs once per backend through the `backend` fixture: SQLite on a file in
tmp_path, PostgreSQL on a fresh database of the tests' own cluster (tests/pg.py). A test
that holds for one backend and not the other is a difference the collector would show
its clients. Concurrent writers are several storages on one database, as several
collectors are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from standardwebhooks import Webhook

from homing_collector import device, endpoints
from homing_collector.storage.analytics_sqlite import pending as rollups_pending
from homing_collector.storage.base import (
    ApplicationGone,
    AppRecord,
    CampaignRecord,
    CampaignSend,
    Delivery,
    DeviceCheck,
    EndpointUpdate,
    EventRow,
    HookSecrets,
    ImportJobRecord,
    ImportRow,
    IngestResult,
    KeyRecord,
    NewDelivery,
    PastSend,
    PushMessage,
    PushQueued,
    SegmentRecord,
    SegmentReference,
    SegmentReferenceError,
    Storage,
    UserEndpointLimit,
)
from homing_collector.storage.sqlite import SQLiteStorage

T = TypeVar("T")
APP = "a" * 32
OTHER = "b" * 32
NOW = "2026-12-01T00:00:00.000Z"
HOUR = 3_600_000
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
Backend = Callable[[], Storage]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Makes storages (not started) on one database; each call is another collector."""
    if request.param == "sqlite":
        return lambda: SQLiteStorage(tmp_path / "homing.db")
    from homing_collector.storage.postgres import PostgresStorage

    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresStorage(url)


def run(backend: Backend, scenario: Callable[[Storage], Awaitable[T]]) -> T:
    """Run `scenario` on a started storage (with APP and OTHER made), then close it."""

    async def main() -> T:
        storage = backend()
        await storage.start()
        try:
            for app_id in (APP, OTHER):
                await storage.create_app(AppRecord(app_id, f"app {app_id[0]}", NOW, {"k": "v"}))
            return await scenario(storage)
        finally:
            await storage.close()

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def collectors(backend: Backend, count: int) -> AsyncIterator[list[Storage]]:
    """`count` more storages on the database, started together: other collectors, each
    writing on its own connection, so that their transactions overlap."""
    storages = [backend() for _ in range(count)]
    await asyncio.gather(*(storage.start() for storage in storages))
    try:
        yield storages
    finally:
        for storage in storages:
            await storage.close()


merge = partial(endpoints.merge, APP, now=NOW)


def update(endpoint_id: str, **fields: Any) -> EndpointUpdate:
    return EndpointUpdate(endpoint_id, fields)


def event(endpoint_id: str, event_id: str, event_type: str = "play", at: int = T0) -> EventRow:
    # The body as the collector stores it; SQLite's rollups read its Session.
    body = orjson.dumps({"EventType": event_type, "Id": event_id, "Session": {"Id": "s1"}})
    return EventRow(endpoint_id, event_id, event_type, at, at + 5, "s1", body)


async def put(
    storage: Storage,
    events: Sequence[EventRow],
    updates: Sequence[EndpointUpdate] = (),
    *,
    app_id: str = APP,
    max_event_types: int = 100,
    max_user_endpoints: int = 15,
    proof: DeviceCheck | None = None,
) -> IngestResult:
    return await storage.put_events(
        app_id,
        updates,
        events,
        merge=partial(endpoints.merge, app_id, now=NOW),
        max_event_types=max_event_types,
        max_user_endpoints=max_user_endpoints,
        device=proof,
    )


async def stored_events(storage: Storage, app_id: str = APP) -> list[tuple[str, str, str]]:
    page = await storage.events_page(app_id, T0 - 100 * HOUR, T0 + 100 * HOUR, after=None,
                                     limit=10_000)  # fmt: skip
    return [(row.endpoint_id, row.event_id, row.event_type) for row in page]


# -- apps and keys ----------------------------------------------------------------------


def test_apps_are_made_read_listed_by_id_and_deleted_with_their_data(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        assert await storage.get_app(APP) == AppRecord(APP, "app a", NOW, {"k": "v"})
        assert await storage.get_app("c" * 32) is None
        for app_id in ("c" * 32, "C" * 32, "0" * 32):
            await storage.create_app(AppRecord(app_id, "more", NOW))
        listed = [app.id for app in await storage.list_apps(after=None, limit=10)]
        # Byte order, as SQLite sorts: digits, then upper case, then lower case.
        assert listed == ["0" * 32, "C" * 32, APP, OTHER, "c" * 32]
        assert [app.id for app in await storage.list_apps(after="C" * 32, limit=2)] == [APP, OTHER]

        key = KeyRecord("AKAPP", APP, "ingest", "secret", "sha-app", NOW)
        await storage.create_key(key)
        await update_endpoints(storage, [update("e1", Attributes={"a": ["1"]})])
        await put(storage, [event("e1", "ev1")])
        await storage.update_app_quotas(APP, {"quota_app_events": 5}, NOW)
        deleted = await storage.delete_app(APP)
        assert deleted is not None and deleted.id == APP
        assert await storage.get_app(APP) is None
        assert await storage.delete_app(APP) is None
        assert await storage.get_key("AKAPP") is None
        assert await storage.get_endpoint(APP, "e1") is None
        assert await stored_events(storage) == []
        assert await storage.get_app_quotas(APP) == {}
        assert await storage.get_app(OTHER) is not None

    run(backend, scenario)


def test_keys_are_found_by_id_and_token_listed_revoked_once_and_rewritten(
    backend: Backend,
) -> None:
    async def scenario(storage: Storage) -> None:
        root = KeyRecord("AKROOT", None, "root", "s-root", "sha-root", "2026-01-01T00:00:00Z")
        admin = KeyRecord("AKADMIN", APP, "admin", "s-admin", "sha-admin", "2026-01-02T00:00:00Z")
        ingest = KeyRecord("AKINGEST", APP, "ingest", "s-in", "sha-in", "2026-01-03T00:00:00Z")
        for key in (ingest, root, admin):
            await storage.create_key(key)
        assert await storage.get_key("AKADMIN") == admin
        assert await storage.get_key_by_token("sha-root") == root
        assert await storage.get_key("nope") is None
        assert await storage.list_keys() == [root, admin, ingest]
        assert await storage.list_keys(APP) == [admin, ingest]
        assert await storage.list_keys(OTHER) == []

        assert await storage.revoke_key("AKINGEST", "2026-02-01T00:00:00Z") is True
        assert await storage.revoke_key("AKINGEST", "2026-03-01T00:00:00Z") is False
        revoked = await storage.get_key("AKINGEST")
        assert revoked is not None and revoked.revoked_at == "2026-02-01T00:00:00Z"

        # A request's key and application, read together.
        assert await storage.get_caller("token_sha256", "sha-admin", APP) == (admin, True)
        assert await storage.get_caller("access_key_id", "AKROOT", OTHER) == (root, True)
        assert await storage.get_caller("access_key_id", "AKROOT", "c" * 32) == (root, False)
        assert await storage.get_caller("access_key_id", "AKROOT", None) == (root, False)
        assert await storage.get_caller("access_key_id", "AKINGEST", APP) == (revoked, True)
        assert (await storage.get_caller("token_sha256", "nope", APP))[0] is None
        assert (await storage.get_caller("access_key_id", "sha-root", APP))[0] is None

        def seal(access_key_id: str, secret: str) -> str:
            return secret if access_key_id == "AKROOT" else f"sealed:{secret}"

        assert await storage.rewrite_secrets(seal) == 2
        assert [key.secret for key in await storage.list_keys()] == [
            "s-root", "sealed:s-admin", "sealed:s-in",
        ]  # fmt: skip

        def fail_on_root(access_key_id: str, secret: str) -> str:
            # Both backends rewrite another key before they reach this one.
            if access_key_id == "AKROOT":
                raise ValueError("cannot open it")
            return "changed"

        with pytest.raises(ValueError, match="cannot open it"):
            await storage.rewrite_secrets(fail_on_root)
        # All or none: the keys rewritten before the failure are as they were.
        assert [key.secret for key in await storage.list_keys()] == [
            "s-root", "sealed:s-admin", "sealed:s-in",
        ]  # fmt: skip

    run(backend, scenario)


# -- endpoints and users ----------------------------------------------------------------


async def update_endpoints(
    storage: Storage, items: Sequence[EndpointUpdate], *, max_user_endpoints: int = 15
) -> None:
    await storage.update_endpoints(APP, items, merge=merge, max_user_endpoints=max_user_endpoints)


def test_an_update_merges_into_the_stored_endpoint(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        first = update("e1", ChannelType="GCM", Attributes={"color": ["red"], "size": ["L"]})
        await update_endpoints(storage, [first])
        await update_endpoints(storage, [update("e1", Attributes={"color": ["blue"]})])
        stored = await storage.get_endpoint(APP, "e1")
        assert stored is not None
        assert stored["ChannelType"] == "GCM"
        assert stored["Attributes"] == {"color": ["blue"], "size": ["L"]}
        assert stored["CreationDate"] == NOW
        assert await storage.get_endpoint(OTHER, "e1") is None
        assert await storage.get_endpoints(APP, ["e1", "nope", "e1"]) == {"e1": stored}

    run(backend, scenario)


def test_users_link_endpoints_up_to_the_limit_all_or_nothing(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        user = {"UserId": "u1"}
        await update_endpoints(
            storage, [update("e1", User=user), update("e2", User=user)], max_user_endpoints=2
        )
        with pytest.raises(UserEndpointLimit, match=r"User\.UserId"):
            # e4 is fine alone, e3 is one too many: neither is stored.
            await update_endpoints(
                storage,
                [update("e4", Address="x"), update("e3", User=user)],
                max_user_endpoints=2,
            )
        assert await storage.get_endpoint(APP, "e4") is None
        assert [e["Id"] for e in await storage.get_user_endpoints(APP, "u1")] == ["e1", "e2"]

        # PutEvents keeps the events and the other endpoints, and names the one refused.
        result = await put(storage, [event("e3", "ev1")],
                           [update("e3", User=user), update("e5", Address="y")],
                           max_user_endpoints=2)  # fmt: skip
        assert result.stored == 1
        assert list(result.endpoint_errors) == ["e3"]
        assert "limit is 2" in result.endpoint_errors["e3"]
        assert await storage.get_endpoint(APP, "e5") is not None

        # Moving an endpoint to another user frees its place.
        await update_endpoints(storage, [update("e2", User={"UserId": "u2"})], max_user_endpoints=2)
        await update_endpoints(storage, [update("e3", User=user)], max_user_endpoints=2)
        assert [e["Id"] for e in await storage.get_user_endpoints(APP, "u1")] == ["e1", "e3"]

    run(backend, scenario)


def test_deleting_endpoints_takes_their_events_and_credentials(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        user = {"UserId": "u1"}
        await update_endpoints(storage, [update(f"e{n}", User=user) for n in range(1, 4)])
        await update_endpoints(storage, [update("e9", Address="x")])
        await put(storage, [event(f"e{n}", f"ev{n}") for n in (1, 2, 3, 9)])
        assert await storage.set_device_credential(APP, "e1", "sha1", NOW, replace=False)

        deleted = await storage.delete_endpoint(APP, "e1")
        assert deleted is not None and deleted["Id"] == "e1"
        assert await storage.delete_endpoint(APP, "e1") is None
        assert await storage.device_credentials(APP, ["e1"]) == {}
        assert await stored_events(storage) == [("e2", "ev2", "play"), ("e3", "ev3", "play"),
                                                ("e9", "ev9", "play")]  # fmt: skip

        gone = await storage.delete_user_endpoints(APP, "u1")
        assert sorted(e["Id"] for e in gone) == ["e2", "e3"]
        assert await storage.get_user_endpoints(APP, "u1") == []
        assert await stored_events(storage) == [("e9", "ev9", "play")]
        pairs = await storage.endpoints_after(APP, after=None, limit=10)
        assert [endpoint_id for endpoint_id, _ in pairs] == ["e9"]

    run(backend, scenario)


def test_endpoints_are_walked_in_id_order_one_page_at_a_time(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        ids = ["b", "a", "B", "10", "9", "é"]
        await update_endpoints(storage, [update(endpoint_id, Address="x") for endpoint_id in ids])
        walked: list[str] = []
        after = None
        while page := await storage.endpoints_after(APP, after=after, limit=2):
            walked += [endpoint_id for endpoint_id, _ in page]
            after = page[-1][0]
        assert walked == sorted(ids, key=lambda text: text.encode())

    run(backend, scenario)


def test_concurrent_updates_of_one_new_endpoint_all_merge(backend: Backend) -> None:
    # Several collectors make the same endpoint at once, each with its own attribute: a
    # read-then-write without a lock would keep one of them.
    async def scenario(storage: Storage) -> None:
        async with collectors(backend, 8) as writers:
            await asyncio.gather(*(
                writers[n % 8].update_endpoints(
                    APP, [update("e1", Attributes={f"a{n}": ["x"]})], merge=merge,
                    max_user_endpoints=15,
                )
                for n in range(24)
            ))  # fmt: skip
        stored = await storage.get_endpoint(APP, "e1")
        assert stored is not None
        assert sorted(stored["Attributes"]) == sorted(f"a{n}" for n in range(24))

    run(backend, scenario)


def test_concurrent_links_to_one_user_stop_at_the_limit(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        async with collectors(backend, 10) as writers:
            outcomes = await asyncio.gather(*(
                writers[n].update_endpoints(
                    APP, [update(f"e{n}", User={"UserId": "u1"})], merge=merge,
                    max_user_endpoints=3,
                )
                for n in range(10)
            ), return_exceptions=True)  # fmt: skip
        refused = [o for o in outcomes if isinstance(o, UserEndpointLimit)]
        assert len(refused) == 7, outcomes
        assert len(await storage.get_user_endpoints(APP, "u1")) == 3

    run(backend, scenario)


def test_batches_linking_users_in_opposite_orders_all_store(backend: Backend) -> None:
    # Each batch locks its users one after the other, in the order of its endpoints: two
    # batches in opposite orders can deadlock, and the one the database aborts runs again.
    async def scenario(storage: Storage) -> int:
        async with collectors(backend, 8) as writers:
            await asyncio.gather(*(
                writers[n % 8].update_endpoints(
                    APP,
                    [update(f"e{n}-{k}", User={"UserId": f"u{(k + n) % 4}"}) for k in range(4)],
                    merge=merge, max_user_endpoints=100,
                )
                for n in range(16)
            ))  # fmt: skip
        return sum([len(await storage.get_user_endpoints(APP, f"u{k}")) for k in range(4)])

    assert run(backend, scenario) == 64


# -- events -----------------------------------------------------------------------------


def test_an_event_sent_again_is_stored_once(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        batch = [event("e1", "ev1"), event("e1", "ev2"), event("e2", "ev1")]
        assert (await put(storage, batch)).stored == 3
        assert (await put(storage, batch)).stored == 0
        # Mixed: two sent before, two new (one of them twice in the batch).
        mixed = [event("e1", "ev2"), event("e1", "ev3"), event("e2", "ev1"), event("e3", "ev1"),
                 event("e1", "ev3")]  # fmt: skip
        assert (await put(storage, mixed)).stored == 2
        # The same ids in another application are other events.
        assert (await put(storage, batch, app_id=OTHER)).stored == 3
        assert await stored_events(storage) == [
            ("e1", "ev1", "play"), ("e1", "ev2", "play"), ("e1", "ev3", "play"),
            ("e2", "ev1", "play"), ("e3", "ev1", "play"),
        ]  # fmt: skip

    run(backend, scenario)


def test_concurrent_collectors_store_a_resent_event_once(backend: Backend) -> None:
    async def scenario(storage: Storage) -> tuple[int, int]:
        shared = [event(f"e{n % 5}", f"shared{n}") for n in range(50)]
        async with collectors(backend, 6) as writers:
            results = await asyncio.gather(*(
                put(writers[n % 6], [*shared, event("e0", f"own{n}")]) for n in range(12)
            ))  # fmt: skip
        return sum(result.stored for result in results), len(await stored_events(storage))

    stored, kept = run(backend, scenario)
    assert stored == kept == 50 + 12


def test_new_event_types_stop_at_the_applications_limit(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        first = await put(storage, [event("e1", "ev1", "a"), event("e1", "ev2", "b")],
                          max_event_types=3)  # fmt: skip
        assert (first.stored, first.rejected_types) == (2, set())
        second = await put(storage, [event("e1", "ev3", "c"), event("e1", "ev4", "d"),
                                     event("e1", "ev5", "a")], max_event_types=3)  # fmt: skip
        # One place was left: c or d takes it, the other is refused with its events.
        assert second.stored == 2
        assert len(second.rejected_types) == 1
        assert second.rejected_types < {"c", "d"}
        # Another application counts its own types.
        other = await put(storage, [event("e1", "ev1", "x")], app_id=OTHER, max_event_types=1)
        assert (other.stored, other.rejected_types) == (1, set())

    run(backend, scenario)


def test_concurrent_new_event_types_stop_at_the_limit(backend: Backend) -> None:
    async def scenario(storage: Storage) -> int:
        async with collectors(backend, 10) as writers:
            results = await asyncio.gather(*(
                put(writers[n], [event("e1", f"ev{n}", f"type{n}")], max_event_types=4)
                for n in range(10)
            ))  # fmt: skip
        assert sum(result.stored for result in results) == 4
        return len({t for result in results for t in result.rejected_types})

    assert run(backend, scenario) == 6


def test_stored_events_are_committed_when_the_call_returns(backend: Backend) -> None:
    async def scenario(storage: Storage) -> list[tuple[str, str, str]]:
        await put(storage, [event("e1", "ev1")])
        async with collectors(backend, 1) as (reader,):  # on a connection of its own
            return await stored_events(reader)

    assert run(backend, scenario) == [("e1", "ev1", "play")]


def test_a_write_goes_on_when_its_caller_is_cancelled(backend: Backend) -> None:
    # A client that hangs up after sending may retry; its first try must not be half
    # there, and closing the storage (a shutdown) waits for it.
    async def scenario(storage: Storage) -> None:
        writes = [asyncio.ensure_future(put(storage, [event("e1", f"ev{n}")])) for n in range(5)]
        await asyncio.sleep(0)  # each is under way
        for write in writes:
            write.cancel()
        await asyncio.gather(*writes, return_exceptions=True)

    async def stored() -> list[tuple[str, str, str]]:
        async with collectors(backend, 1) as (storage,):
            return await stored_events(storage)

    run(backend, scenario)
    assert len(asyncio.run(stored())) == 5


def test_expired_events_go_by_whole_hours_lowest_first(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await put(storage, [event("e1", f"ev{h}", at=T0 + h * HOUR) for h in range(5)])
        first_kept = T0 // HOUR + 3
        assert await storage.delete_expired_events(APP, first_kept, 2) == 2
        assert await storage.delete_expired_events(APP, first_kept, 2) == 1
        assert await storage.delete_expired_events(APP, first_kept, 2) == 0
        assert [e for _, e, _ in await stored_events(storage)] == ["ev3", "ev4"]

    run(backend, scenario)


# -- push store-and-forward -------------------------------------------------------------


def push(endpoint_id: str, message_id: str, expires_at: int = 10_000) -> PushMessage:
    payload = orjson.dumps({"id": message_id}).decode()
    return PushMessage(endpoint_id, message_id, False, payload, None, expires_at)


def test_pushes_are_numbered_per_endpoint_for_good_and_bounded(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        queued = await storage.queue_push(
            APP, [push("e1", "m1"), push("e2", "m2"), push("e1", "m3")], queue_limit=3
        )
        assert queued == PushQueued([1, 1, 2], 0)
        queued = await storage.queue_push(APP, [push("e1", f"m{n}") for n in (4, 5)],
                                          queue_limit=3)  # fmt: skip
        assert queued == PushQueued([3, 4], 1)  # m1, the oldest, is dropped
        pending = await storage.pending_push(APP, "e1", after_seq=0, now_ms=0)
        assert [item.seq for item in pending] == [2, 3, 4]
        assert orjson.loads(pending[0].payload) == {"id": "m3"}
        assert await storage.pending_push(OTHER, "e1", after_seq=0, now_ms=0) == []

        assert await storage.ack_push(APP, "e1", ["m3", "nope"], now_ms=1) == 1
        assert await storage.ack_push(APP, "e1", ["m3"], now_ms=1) == 0
        assert [i.seq for i in await storage.pending_push(APP, "e1", after_seq=2, now_ms=0)] == [
            3, 4,
        ]  # fmt: skip
        # Through a seq the endpoint never had: nothing (another database counted it).
        assert await storage.ack_push_through(APP, "e1", 9, now_ms=1) == 0
        assert await storage.ack_push_through(APP, "e1", 3, now_ms=1) == 1
        assert [i.seq for i in await storage.pending_push(APP, "e1", after_seq=0, now_ms=0)] == [4]

        # Deleting the endpoint drops its messages, not its numbers.
        await update_endpoints(storage, [update("e1", Address="x")])
        await storage.delete_endpoint(APP, "e1")
        assert await storage.pending_push(APP, "e1", after_seq=0, now_ms=0) == []
        assert (await storage.queue_push(APP, [push("e1", "m6")], queue_limit=3)).seqs == [5]

    run(backend, scenario)


def test_expired_pushes_are_purged_and_recent_ones_reported(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await storage.queue_push(APP, [push("e1", "old", expires_at=100)], queue_limit=10)
        later = [push("e1", "new", expires_at=10**15), push("e2", "x", expires_at=10**15)]
        await storage.queue_push(APP, later, queue_limit=10)
        assert await storage.pending_push(APP, "e1", after_seq=0, now_ms=100) == [
            (2, orjson.dumps({"id": "new"}).decode(), 10**15)
        ]
        assert await storage.purge_push(100) == 1
        assert await storage.purge_push(100) == 0
        reported = await storage.push_changes(0)
        # SQLite answers None when nothing was committed since its last call; not here.
        assert sorted(reported or []) == [(APP, "e1", 2), (APP, "e2", 1)]

    run(backend, scenario)


def test_a_push_another_collector_queues_ends_the_wait_for_pushes_at_once(
    postgres_url: str,
) -> None:
    # PostgreSQL's NOTIFY wakes the streams of every collector at the commit; SQLite has
    # no such thing (its push_wait sleeps), so this is PostgreSQL's alone.
    from homing_collector.storage.postgres import PostgresStorage

    async def scenario(storage: Storage) -> None:
        assert isinstance(storage, PostgresStorage)
        async with collectors(lambda: PostgresStorage(postgres_url), 1) as [writer]:
            for _ in range(100):  # its LISTEN connection is opened in the background
                if storage._listening:
                    break
                await asyncio.sleep(0.05)
            await storage.push_changes(0)  # what came before: read
            waiting = asyncio.create_task(storage.push_wait(60))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # nothing was queued
            await writer.queue_push(APP, [push("e1", "m1")], queue_limit=10)
            await asyncio.wait_for(waiting, 10)
            assert await storage.push_changes(0) == [(APP, "e1", 1)]

    run(lambda: PostgresStorage(postgres_url), scenario)


def test_collectors_pushing_at_once_number_each_message_once(backend: Backend) -> None:
    async def scenario(storage: Storage) -> list[int]:
        async with collectors(backend, 8) as writers:
            queued = await asyncio.gather(*(
                writers[n % 8].queue_push(
                    APP, [push("e1", f"m{n}a"), push(f"e{n % 3}", f"m{n}b")], queue_limit=1000
                )
                for n in range(24)
            ))  # fmt: skip
        assert sum(result.dropped for result in queued) == 0
        pending = await storage.pending_push(APP, "e1", after_seq=0, now_ms=0)
        return [item.seq for item in pending]

    # e1 gets one message from every send, and one more from every third.
    assert run(backend, scenario) == list(range(1, 24 + 8 + 1))


# -- segments ---------------------------------------------------------------------------


def segment_request(*sources: tuple[str, int | None]) -> str:
    refs = [{"Id": i} if v is None else {"Id": i, "Version": v} for i, v in sources]
    groups = {"Groups": [{"SourceSegments": refs}]} if refs else {}
    return orjson.dumps({"Name": "s", "SegmentGroups": groups}).decode()


def refs(*sources: tuple[str, int | None]) -> list[SegmentReference]:
    return [SegmentReference(f"Groups[0].SourceSegments[{n}]", i, v)
            for n, (i, v) in enumerate(sources)]  # fmt: skip


async def new_segment(storage: Storage, segment_id: str, *sources: tuple[str, int | None]) -> None:
    record = SegmentRecord(APP, segment_id, 1, NOW, NOW, segment_request(*sources), {"t": "1"})
    await storage.create_segment(record, refs(*sources))


async def change_segment(
    storage: Storage, segment_id: str, *sources: tuple[str, int | None]
) -> SegmentRecord | None:
    return await storage.update_segment(
        APP, segment_id, segment_request(*sources), "later", refs(*sources)
    )


def test_segments_keep_every_version(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        for segment_id in ("s2", "s1", "s3"):
            await new_segment(storage, segment_id)
        updated = await change_segment(storage, "s1", ("s2", 1))
        assert updated is not None
        assert (updated.version, updated.created_at, updated.modified_at) == (2, NOW, "later")
        assert updated.tags == {"t": "1"}
        assert await change_segment(storage, "nope") is None

        first = await storage.get_segment(APP, "s1", 1)
        assert first is not None and first.request == segment_request()
        latest = await storage.get_segment(APP, "s1")
        assert latest == updated
        assert await storage.get_segment(APP, "s1", 3) is None
        assert await storage.get_segment(OTHER, "s1") is None
        listed = await storage.list_segments(APP, after=None, limit=2)
        assert [(s.id, s.version) for s in listed] == [("s1", 2), ("s2", 1)]
        assert [s.id for s in await storage.list_segments(APP, after="s2", limit=2)] == ["s3"]
        versions = await storage.list_segment_versions(APP, "s1", after=0, limit=10)
        assert [s.version for s in versions] == [1, 2]
        assert [s.version for s in await storage.list_segment_versions(
            APP, "s1", after=1, limit=10)] == [2]  # fmt: skip

        deleted = await storage.delete_segment(APP, "s1")
        assert deleted == updated
        assert await storage.delete_segment(APP, "s1") is None
        assert await storage.get_segment(APP, "s1", 1) is None

    run(backend, scenario)


def test_segment_references_must_exist_and_make_no_cycle(backend: Backend) -> None:
    async def scenario(storage: Storage) -> list[str]:
        await new_segment(storage, "a")
        await new_segment(storage, "b", ("a", None))
        errors = []
        for segment_id, sources in (
            ("c", [("nope", None)]),
            ("c", [("a", 7)]),
            ("a", [("b", None)]),  # b is based on a's latest: a cycle
            ("a", [("a", None)]),
        ):
            try:
                if segment_id == "c":
                    await new_segment(storage, segment_id, *sources)
                else:
                    await change_segment(storage, segment_id, *sources)
            except SegmentReferenceError as exc:
                errors.append(str(exc))
        assert await storage.get_segment(APP, "c") is None
        latest = await storage.get_segment(APP, "a")
        assert latest is not None and latest.version == 1
        # Based on an older version of itself: no cycle.
        assert await change_segment(storage, "a", ("a", 1)) is not None
        return errors

    errors = run(backend, scenario)
    assert errors == [
        "Groups[0].SourceSegments[0].Id: segment nope does not exist in this application",
        "Groups[0].SourceSegments[0].Version: segment a has no version 7",
        "Groups[0].SourceSegments[0].Id: segment b is based on the latest version of segment"
        " a, so this would be a cycle",
        "Groups[0].SourceSegments[0].Id: a segment cannot be based on its own latest version",
    ]


def test_collectors_basing_two_segments_on_each_other_at_once_make_no_cycle(
    backend: Backend,
) -> None:
    async def scenario(storage: Storage) -> list[list[bool]]:
        pairs = [(f"a{n}", f"b{n}") for n in range(8)]  # each pair a chance to race
        for a, b in pairs:
            await new_segment(storage, a)
            await new_segment(storage, b)
        async with collectors(backend, 2) as (one, two):
            outcomes = await asyncio.gather(*(
                change for a, b in pairs
                for change in (change_segment(one, a, (b, None)), change_segment(two, b, (a, None)))
            ), return_exceptions=True)  # fmt: skip
        refused = [isinstance(outcome, SegmentReferenceError) for outcome in outcomes]
        return [sorted(refused[n : n + 2]) for n in range(0, len(refused), 2)]

    assert run(backend, scenario) == [[False, True]] * 8


# -- import jobs ------------------------------------------------------------------------


def job(
    job_id: str, status: str = "CREATED", segment_id: str | None = "imported"
) -> ImportJobRecord:
    return ImportJobRecord(APP, job_id, NOW, '{"Format": "CSV"}', status, 2,
                           segment_id=segment_id, owner="me", heartbeat=1)  # fmt: skip


async def import_rows(
    storage: Storage, job_id: str, rows: Sequence[ImportRow], *, register: bool = True
) -> list[tuple[ImportRow, str]]:
    return await storage.import_endpoints(APP, job_id, rows, merge=merge, max_user_endpoints=2,
                                          register=register, members=True)  # fmt: skip


def test_import_jobs_are_saved_listed_and_found_unfinished(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        for job_id, status in (("j2", "CREATED"), ("j1", "COMPLETED"), ("j3", "PROCESSING")):
            await storage.create_import_job(job(job_id, status, "s1" if job_id != "j3" else None))
        progressed = dataclasses.replace(job("j2", "PROCESSING", "s1"), completed_pieces=1,
                                         total_processed=10, failures=["row 3: bad"])  # fmt: skip
        await storage.save_import_job(progressed)
        assert await storage.get_import_job(APP, "j2") == progressed
        assert await storage.get_import_job(OTHER, "j2") is None
        listed = await storage.list_import_jobs(APP, segment_id=None, after=None, limit=10)
        assert [j.id for j in listed] == ["j1", "j2", "j3"]
        of_s1 = await storage.list_import_jobs(APP, segment_id="s1", after="j1", limit=10)
        assert [j.id for j in of_s1] == ["j2"]
        assert sorted(j.id for j in await storage.unfinished_import_jobs()) == ["j2", "j3"]

    run(backend, scenario)


def test_imported_rows_are_stored_and_become_members_unless_refused(backend: Backend) -> None:
    async def scenario(storage: Storage) -> list[tuple[int, str]]:
        await storage.create_import_job(job("j1"))
        await update_endpoints(storage, [update("old", ChannelType="APNS", User={"UserId": "u9"})])
        user = {"UserId": "u1"}
        rows = [
            ImportRow(1, "e1", {"ChannelType": "GCM", "Address": "a", "User": user}),
            ImportRow(2, "e2", {"ChannelType": "GCM", "Address": "b", "User": user}),
            ImportRow(3, "e3", {"ChannelType": "GCM", "Address": "c", "User": user}),  # 3rd
            ImportRow(4, None, {"User": {"UserId": "u9"}}),  # the user's stored endpoints
            ImportRow(5, None, {"User": {"UserId": "nobody"}}),
            ImportRow(6, "e4", {"Address": "d"}),
        ]
        refused = await import_rows(storage, "j1", rows)
        assert await storage.get_endpoint(APP, "e3") is None
        stored = await storage.get_endpoint(APP, "e1")
        assert stored is not None and stored["ChannelType"] == "GCM"
        assert await storage.import_member_counts(APP, "j1") == {"GCM": 2, "APNS": 1, "": 1}
        members = await storage.import_members_after(APP, "j1", after=None, limit=3)
        assert members == ["e1", "e2", "e4"]
        assert await storage.import_members_after(APP, "j1", after="e4", limit=3) == ["old"]
        # Imported again without storing the endpoints: members only, counted once.
        assert await import_rows(storage, "j1", rows[:2], register=False) == []
        assert await storage.import_member_counts(APP, "j1") == {"GCM": 2, "APNS": 1, "": 1}
        return [(row.row, message.split(":")[0]) for row, message in refused]

    assert run(backend, scenario) == [(3, "User.UserId"), (5, "User.UserId")]


def test_a_finished_import_writes_its_segment_with_the_job(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await storage.create_import_job(job("j1"))
        segment = SegmentRecord(APP, "imported", 1, NOW, NOW, segment_request(), {})
        await storage.finish_import_job(job("j1", "COMPLETED"), segment)
        created = await storage.get_segment(APP, "imported")
        assert created is not None and created.version == 1
        saved = await storage.get_import_job(APP, "j1")
        assert saved is not None and saved.status == "COMPLETED"
        # A second job updates it: the next version.
        await storage.create_import_job(job("j2"))
        again = dataclasses.replace(segment, version=2, modified_at="later")
        await storage.finish_import_job(job("j2", "COMPLETED"), again)
        latest = await storage.get_segment(APP, "imported")
        assert latest is not None and latest.version == 2
        # The segment deleted while a third job ran: refused, and the job not saved.
        await storage.create_import_job(job("j3"))
        await storage.delete_segment(APP, "imported")
        with pytest.raises(SegmentReferenceError, match="deleted while the job ran"):
            await storage.finish_import_job(job("j3", "COMPLETED"), again)
        unsaved = await storage.get_import_job(APP, "j3")
        assert unsaved is not None and unsaved.status == "CREATED"
        # The application deleted while a job ran.
        await storage.delete_app(APP)
        with pytest.raises(ApplicationGone):
            await import_rows(storage, "j3", [ImportRow(1, "e1", {"Address": "a"})])
        # Its job finishing then saves nothing: neither the job nor a segment.
        with pytest.raises(ApplicationGone):
            await storage.finish_import_job(job("j3", "COMPLETED"), None)
        with pytest.raises(ApplicationGone):
            await storage.finish_import_job(job("j3", "COMPLETED"), segment)
        assert await storage.get_import_job(APP, "j3") is None
        assert await storage.get_segment(APP, "imported") is None

    run(backend, scenario)


# -- campaigns --------------------------------------------------------------------------


def campaign_record(campaign_id: str, segment_id: str = "s1") -> CampaignRecord:
    request = orjson.dumps({"Name": campaign_id, "SegmentId": segment_id}).decode()
    return CampaignRecord(APP, campaign_id, 1, NOW, NOW, request, segment_id, "SCHEDULED",
                          {"t": "1"})  # fmt: skip


def request_of(record: CampaignRecord | None) -> dict[str, Any]:
    assert record is not None
    found: dict[str, Any] = orjson.loads(record.request)
    return found


def never_dead(owner: str) -> bool:
    return False


def test_campaigns_keep_every_version_and_go_with_their_segment(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await new_segment(storage, "s1")
        await change_segment(storage, "s1")
        await new_segment(storage, "s2")
        made = await storage.create_campaign(campaign_record("c1"), None)
        assert (made.version, made.state, made.tags) == (1, "SCHEDULED", {"t": "1"})
        assert request_of(made)["SegmentVersion"] == 2  # the segment's latest
        pinned = await storage.create_campaign(campaign_record("c0"), 1)
        assert request_of(pinned)["SegmentVersion"] == 1
        with pytest.raises(SegmentReferenceError, match="has no version 3"):
            await storage.create_campaign(campaign_record("c9"), 3)
        with pytest.raises(SegmentReferenceError, match="segment s9 does not exist"):
            await storage.create_campaign(campaign_record("c9", "s9"), None)

        def refuse_nameless(request: dict[str, Any]) -> None:
            if not request.get("Name"):
                raise ValueError("Name: required")

        with pytest.raises(ValueError, match="Name"):
            await storage.update_campaign(APP, "c1", {"Name": ""}, "later", refuse_nameless)
        changed = await storage.update_campaign(
            APP, "c1", {"SegmentId": "s2", "Description": "d"}, "later", refuse_nameless
        )
        assert changed is not None and changed.version == 2 and changed.segment_id == "s2"
        assert request_of(changed)["SegmentVersion"] == 1  # s2's latest, not s1's pin
        assert changed.modified_at == "later" and changed.created_at == NOW
        assert await storage.update_campaign(APP, "c9", {}, "later", refuse_nameless) is None
        assert request_of(await storage.get_campaign(APP, "c1", 1))["SegmentId"] == "s1"
        assert await storage.get_campaign(APP, "c1", 3) is None
        assert await storage.get_campaign(OTHER, "c1") is None
        listed = await storage.list_campaigns(APP, after=None, limit=10)
        assert [(c.id, c.version) for c in listed] == [("c0", 1), ("c1", 2)]
        assert [c.id for c in await storage.list_campaigns(APP, after="c0", limit=10)] == ["c1"]
        versions = await storage.list_campaign_versions(APP, "c1", after=0, limit=10)
        assert [c.version for c in versions] == [1, 2]
        assert sorted((c.id, v) for c, v in await storage.campaigns_to_plan()) == [
            ("c0", None), ("c1", None)
        ]  # fmt: skip

        # As in Pinpoint, deleting a segment deletes the campaigns that target it.
        assert await storage.delete_segment(APP, "s1") is not None
        assert await storage.get_campaign(APP, "c0") is None
        deleted = await storage.delete_campaign(APP, "c1")
        assert deleted is not None and deleted.version == 2
        assert await storage.delete_campaign(APP, "c1") is None
        assert await storage.list_campaigns(APP, after=None, limit=10) == []

    run(backend, scenario)


def send(endpoint_id: str, status: str = "SENT", at_ms: int = T0, **fields: Any) -> CampaignSend:
    return CampaignSend(endpoint_id, status, None, at_ms, **fields)


def test_a_run_is_planned_claimed_written_and_finished(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await new_segment(storage, "s1")
        await storage.create_campaign(campaign_record("c1"), None)
        # Planned for another version: the campaign changed meanwhile, nothing is added.
        await storage.plan_runs(APP, "c1", 2, [T0], [], T0, False)
        assert await storage.list_activities(APP, "c1", after=0, limit=10) == []
        for _ in range(2):  # planned twice, as two collectors may: each run is added once
            await storage.plan_runs(APP, "c1", 1, [T0, T0 + HOUR], [T0 - HOUR], T0 + HOUR,
                                    True, lead_ms=1000)  # fmt: skip
        runs = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert [(a.scheduled_ms, a.state, a.result) for a in runs] == [
            (T0 - HOUR, "CANCELLED", "FAIL"), (T0, "PENDING", None), (T0 + HOUR, "PENDING", None)
        ]  # fmt: skip
        assert runs[0].metrics == {"MISSED": 1}
        assert (await storage.get_campaign(APP, "c1")).state == "SCHEDULED"  # type: ignore[union-attr]
        assert await storage.campaigns_to_plan() == []  # finished planning

        assert await storage.claim_activity("n1", T0 - 2000, 60_000, dead=never_dead) is None
        run1 = await storage.claim_activity("n1", T0 - 1000, 60_000, dead=never_dead)
        assert run1 is not None and (run1.scheduled_ms, run1.state) == (T0, "RUNNING")
        assert (await storage.get_campaign(APP, "c1")).state == "EXECUTING"  # type: ignore[union-attr]
        assert await storage.claim_activity("n2", T0, 60_000, dead=never_dead) is None

        message = push("e1", "m1")
        written = await storage.write_campaign_chunk(
            run1, "n1",
            [send("e1", message=message, event=event("e1", "x1", "_campaign.send"),
                  session_id="s9"),
             send("e2", "DEFERRED", at_ms=T0 + 5000),
             send("e3", "TREATMENT_HOLDOUT")],
            cursor="e3", lease_until_ms=T0 + 60_000, queue_limit=10,
        )  # fmt: skip
        assert written.lease_held and written.queued == [(message, 1)]
        assert [p.seq for p in await storage.pending_push(APP, "e1", after_seq=0, now_ms=0)] == [1]
        assert ("e1", "x1", "_campaign.send") in await stored_events(storage)
        assert await storage.campaign_sends(APP, "c1", ["e1", "e2", "e4"]) == {
            "e1": [PastSend(T0, "s9")]
        }
        assert await storage.deferred_sends(APP, "c1", run1.id, now_ms=T0, limit=10) == (
            [], T0 + 5000
        )  # fmt: skip
        assert await storage.deferred_sends(APP, "c1", run1.id, now_ms=T0 + 5000, limit=10) == (
            ["e2"], None
        )  # fmt: skip
        # Sent again after a crash: an endpoint with a final row is left alone, a held
        # back one is written now, and counted once.
        again = await storage.write_campaign_chunk(
            run1, "n1", [send("e1", message=push("e1", "m2")), send("e2")],
            cursor=None, lease_until_ms=T0 + 60_000, queue_limit=10,
        )  # fmt: skip
        assert again.lease_held and again.queued == []
        # Another collector, which holds no lease on the run, writes nothing.
        lost = await storage.write_campaign_chunk(
            run1, "n2", [send("e5")], cursor="e5", lease_until_ms=T0, queue_limit=10
        )
        assert not lost.lease_held

        await storage.finish_activity(run1, "n1", not_before_ms=T0 + 5000, now="end")
        waiting = (await storage.list_activities(APP, "c1", after=T0 - 1, limit=1))[0]
        assert (waiting.state, waiting.cursor, waiting.total, waiting.successful) == (
            "RUNNING", "e3", 2, 2
        )  # fmt: skip
        assert waiting.metrics == {"SENT": 2, "TREATMENT_HOLDOUT": 1}
        assert await storage.claim_activity("n2", T0 + 4000, 60_000, dead=never_dead) is None
        again_claimed = await storage.claim_activity("n2", T0 + 5000, 60_000, dead=never_dead)
        assert again_claimed is not None and again_claimed.id == run1.id
        await storage.finish_activity(run1, "n1", not_before_ms=None, now="end")  # not n1's
        assert (await storage.list_activities(APP, "c1", after=T0 - 1, limit=1))[0].ended_at is None
        await storage.finish_activity(run1, "n2", not_before_ms=None, now="end")
        done = (await storage.list_activities(APP, "c1", after=T0 - 1, limit=1))[0]
        assert (done.state, done.result, done.ended_at) == ("COMPLETED", "SUCCESS", "end")
        assert (await storage.get_campaign(APP, "c1")).state == "PENDING_NEXT_RUN"  # type: ignore[union-attr]

        run2 = await storage.claim_activity("n1", T0 + HOUR, 60_000, dead=never_dead)
        assert run2 is not None and run2.scheduled_ms == T0 + HOUR
        await storage.finish_activity(run2, "n1", not_before_ms=None, now="end", result="FAIL")
        assert (await storage.get_campaign(APP, "c1")).state == "COMPLETED"  # type: ignore[union-attr]

    run(backend, scenario)


def test_an_event_activity_is_made_once_and_its_sends_kept_per_event(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await new_segment(storage, "s1")
        await storage.create_campaign(campaign_record("c1"), None)
        async with collectors(backend, 4) as others:
            made = await asyncio.gather(*(
                others[n % 4].event_activity(APP, "c1", 1, T0, NOW) for n in range(8)
            ))  # fmt: skip
        assert len({activity.id for activity in made}) == 1
        activity = made[0]
        assert activity.state == "RUNNING"
        # The scheduler never claims it.
        assert await storage.claim_activity("n1", T0 + 10 * HOUR, 1000, dead=never_dead) is None

        def deliveries(sends: Sequence[CampaignSend]) -> list[NewDelivery]:
            return [NewDelivery(f"d-{s.trigger}", APP, "https://h.example/c", b"{}", "text/json")
                    for s in sends]  # fmt: skip

        sends = [send("e1", trigger="x1", custom={"Id": "e1"}),
                 send("e1", trigger="x2", custom={"Id": "e1"})]  # fmt: skip
        for _ in range(2):  # each event answered once, however often it is written
            written = await storage.write_campaign_chunk(
                activity, None, sends, cursor=None, lease_until_ms=0, queue_limit=10,
                custom=deliveries,
            )  # fmt: skip
            assert written.lease_held
        assert await storage.pending_deliveries(APP, "https://h.example/c") == 2
        assert len((await storage.campaign_sends(APP, "c1", ["e1"]))["e1"]) == 2

        await put(storage, [event("e1", "r1", at=T0), event("e1", "r2", at=T0 + HOUR)])
        recent = await storage.recent_events(APP, lo_ms=T0, hi_ms=T0 + HOUR, since_arrival_ms=0)
        assert [row.event_id for row in recent] == ["r1"]
        assert recent[0].body == event("e1", "r1").body
        late = await storage.recent_events(
            APP, lo_ms=T0, hi_ms=T0 + 2 * HOUR, since_arrival_ms=T0 + 6
        )
        assert [row.event_id for row in late] == ["r2"]

    run(backend, scenario)


def test_a_large_chunk_records_and_counts_each_send_once(backend: Backend) -> None:
    """A chunk's records go in few statements: each send is still stored once, a final
    record is kept, a DEFERRED one replaced, and only what was stored now is counted,
    pushed, evented or delivered; a key twice in one chunk is recorded as its first."""

    async def scenario(storage: Storage) -> None:
        await new_segment(storage, "s1")
        await storage.create_campaign(campaign_record("c1"), None)
        await storage.plan_runs(APP, "c1", 1, [T0], [], T0, True)
        run1 = await storage.claim_activity("n1", T0, 60_000, dead=never_dead)
        assert run1 is not None
        ids = [f"e{n:04d}" for n in range(1100)]  # more than one statement's worth
        first = [send(e, "DEFERRED", at_ms=T0 + 5000) if n % 3 == 0
                 else send(e, message=push(e, f"m-{e}"), event=event(e, f"x-{e}", "_campaign.send"))
                 if n % 3 == 1 else send(e, "TREATMENT_HOLDOUT")
                 for n, e in enumerate(ids)]  # fmt: skip
        written = await storage.write_campaign_chunk(
            run1, "n1", first, cursor=ids[-1], lease_until_ms=T0 + 60_000, queue_limit=10
        )
        assert [m.message_id for m, _ in written.queued] == [f"m-{e}" for e in ids[1::3]]
        # Again, every one of them now sent: only the DEFERRED ones are stored and count.
        again = await storage.write_campaign_chunk(
            run1, "n1",
            [send(e, message=push(e, f"n-{e}"), event=event(e, f"y-{e}", "_campaign.send"))
             for e in ids],
            cursor=None, lease_until_ms=T0 + 60_000, queue_limit=10,
        )  # fmt: skip
        assert [m.message_id for m, _ in again.queued] == [f"n-{e}" for e in ids[::3]]
        [activity] = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert (activity.total, activity.successful) == (734, 734)  # 367 + 367
        assert activity.metrics == {"SENT": 734, "TREATMENT_HOLDOUT": 366}
        sends = await storage.campaign_sends(APP, "c1", ids)
        assert sum(len(found) for found in sends.values()) == 734
        assert all(len(found) == 1 for found in sends.values())
        stored = {row[1] for row in await stored_events(storage)}
        assert stored == {f"x-{e}" for e in ids[1::3]} | {f"y-{e}" for e in ids[::3]}

        events = await storage.event_activity(APP, "c1", 1, T0 + HOUR, NOW)

        def deliveries(sends: Sequence[CampaignSend]) -> list[NewDelivery]:
            url = "https://h.example/c"
            return [NewDelivery(f"d-{s.endpoint_id}", APP, url, b"{}", "text/json") for s in sends]

        twice = [
            send("e0001", trigger="t1", custom={}, event=event("e0001", "z1", "_campaign.send")),
            send("e0001", trigger="t1", custom={}, event=event("e0001", "z2", "_campaign.send")),
            send("e0002", trigger="t1", custom={}, event=event("e0002", "z3", "_campaign.send")),
        ]
        held = await storage.write_campaign_chunk(
            events, None, twice, cursor=None, lease_until_ms=0, queue_limit=10, custom=deliveries
        )
        assert held.lease_held
        assert await storage.pending_deliveries(APP, "https://h.example/c") == 2
        [_, answered] = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert answered.metrics == {"SENT": 2} and answered.total == 2
        assert {"z1", "z3"} <= {row[1] for row in await stored_events(storage)}
        assert "z2" not in {row[1] for row in await stored_events(storage)}

    run(backend, scenario)


def test_a_campaigns_rollup_entries_are_folded_by_the_events_writer(tmp_path: Path) -> None:
    """A `_campaign.send` event's rollups entry is left to the events writer process, which
    folds every writer's with PutEvents' own: the collector's writer thread would fold
    PutEvents' entries of the moment with it, in the collector's process. It folds them
    itself later, should no PutEvents come; at once when it writes the events itself."""

    async def scenario(storage: Storage) -> float | None:
        assert isinstance(storage, SQLiteStorage)
        await new_segment(storage, "s1")
        await storage.create_campaign(campaign_record("c1"), None)
        activity = await storage.event_activity(APP, "c1", 1, T0, NOW)
        sent = send("e1", trigger="x1", event=event("e1", "z1", "_campaign.send"))
        written = await storage.write_campaign_chunk(
            activity, None, [sent], cursor=None, lease_until_ms=0, queue_limit=10
        )
        assert written.lease_held
        return storage.fold_wait()

    alone = run(lambda: SQLiteStorage(tmp_path / "alone.db"), scenario)
    beside = run(lambda: SQLiteStorage(tmp_path / "beside.db", events_process=True), scenario)
    assert alone is not None and alone <= rollups_pending.FOLD_SECONDS
    assert beside is not None and beside > 10 * rollups_pending.FOLD_SECONDS


def test_collectors_claiming_at_once_take_each_run_once(backend: Backend) -> None:
    async def scenario(storage: Storage) -> list[str]:
        await new_segment(storage, "s1")
        await storage.create_campaign(campaign_record("c1"), None)
        await storage.plan_runs(APP, "c1", 1, [T0 + n for n in range(3)], [], T0, True)
        async with collectors(backend, 8) as nodes:
            claimed = await asyncio.gather(*(
                nodes[n % 8].claim_activity(f"n{n}", T0 + 10, 60_000, dead=never_dead)
                for n in range(24)
            ))  # fmt: skip
        return [activity.id for activity in claimed if activity is not None]

    taken = run(backend, scenario)
    assert len(taken) == 3 and len(set(taken)) == 3


def test_a_dead_holders_run_is_taken_over_and_it_writes_no_more(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await new_segment(storage, "s1")
        await storage.create_campaign(campaign_record("c1"), None)
        await storage.plan_runs(APP, "c1", 1, [T0], [], T0, True)
        held = await storage.claim_activity("n1", T0, 1000, dead=never_dead)
        assert held is not None
        async with collectors(backend, 1) as (other,):
            assert await other.claim_activity("n2", T0 + 1000, 1000, dead=never_dead) is None
            # Its holder is known to be gone: taken at once.
            taken = await other.claim_activity("n2", T0 + 500, 1000, dead=lambda o: o == "n1")
            assert taken is not None and taken.id == held.id
            # Or its lease ran out: taken then.
            assert await other.claim_activity("n3", T0 + 1500, 1000, dead=never_dead) is None
            again = await other.claim_activity("n3", T0 + 1501, 1000, dead=never_dead)
            assert again is not None and again.id == held.id
        for owner in ("n1", "n2"):
            written = await storage.write_campaign_chunk(
                held, owner, [send("e1")], cursor="e1", lease_until_ms=T0 + 9000, queue_limit=10
            )
            assert not written.lease_held
        assert await storage.campaign_sends(APP, "c1", ["e1"]) == {}

    run(backend, scenario)


def test_two_collectors_schedulers_send_each_endpoint_once(backend: Backend) -> None:
    # The campaign schedulers of two collectors on one database, running at the same
    # instants: the run is claimed by one, and every endpoint gets the message once, the
    # one held back by quiet time too, when its window ends.
    from datetime import datetime, timedelta, timezone

    from homing_collector.campaigns.scheduler import Scheduler
    from homing_collector.metrics import Metrics
    from homing_collector.push.gateway import Gateway

    start = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)  # 21:00 in Tokyo
    clock = [start]

    async def scenario(storage: Storage) -> None:
        zones = {f"e{n:02}": {} for n in range(20)} | {"tokyo": {"Timezone": "Asia/Tokyo"}}
        await storage.update_endpoints(
            APP,
            [update(endpoint_id, ChannelType="GCM", Demographic={"Platform": "android", **zone})
             for endpoint_id, zone in zones.items()],
            merge=merge, max_user_endpoints=15,
        )  # fmt: skip
        await new_segment(storage, "everyone")
        request = {"Name": "c1", "SegmentId": "everyone",
                   "MessageConfiguration": {"DefaultMessage": {"Title": "Hi", "Body": "Sale"}},
                   "Schedule": {"StartTime": "IMMEDIATE",
                                "QuietTime": {"Start": "20:00", "End": "08:00"}}}  # fmt: skip
        stamp = start.isoformat().replace("+00:00", "Z")
        await storage.create_campaign(CampaignRecord(
            APP, "c1", 1, stamp, stamp, orjson.dumps(request).decode(), "everyone", "SCHEDULED"
        ), None)  # fmt: skip
        async with collectors(backend, 2) as nodes:
            schedulers = [
                Scheduler(node, Gateway(node, Metrics(), heartbeat=20, queue_limit=100,
                                        default_ttl=3600, shared=False),
                          clock=lambda: clock[0])
                for node in nodes
            ]  # fmt: skip
            for later in (timedelta(0), timedelta(seconds=1), timedelta(hours=11)):
                clock[0] = start + later
                await asyncio.gather(*(scheduler.run_once() for scheduler in schedulers))
        for endpoint_id in zones:
            queued = await storage.pending_push(APP, endpoint_id, after_seq=0, now_ms=0)
            assert [item.seq for item in queued] == [1], endpoint_id
        [activity] = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert (activity.state, activity.total, activity.metrics) == (
            "COMPLETED", 21, {"SENT": 21}
        )  # fmt: skip
        record = await storage.get_campaign(APP, "c1")
        assert record is not None and record.state == "COMPLETED"

    run(backend, scenario)


# -- webhooks and the outbox ------------------------------------------------------------


def delivery(n: int, destination: str = "https://h.example/a", **fields: Any) -> NewDelivery:
    return NewDelivery(f"msg_{n}", APP, destination, f"body {n}".encode(), "application/json",
                       **fields)  # fmt: skip


async def claim(storage: Storage, owner: str, now: float, **limits: Any) -> list[Delivery]:
    options: dict[str, Any] = {"limit": 100, "per_destination": 100, "busy": ()} | limits
    return await storage.claim_deliveries(owner, now, now + 30, **options)


def test_hook_secrets_are_made_once_rotated_and_the_rotation_ended(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        assert await storage.hook_secrets(APP) is None
        made = await storage.hook_secrets(APP, create="whsec_1", now="t1")
        assert made == HookSecrets("whsec_1", None, "t1")
        assert await storage.hook_secrets(APP, create="whsec_x", now="t2") == made
        rotated = await storage.rotate_hook_secrets(APP, "whsec_2", "t3")
        assert rotated == HookSecrets("whsec_2", "whsec_1", "t3")
        assert await storage.end_hook_rotation(APP) == HookSecrets("whsec_2", None, "t3")
        assert await storage.end_hook_rotation(OTHER) is None
        assert await storage.rotate_hook_secrets(OTHER, "whsec_o", "t4") == HookSecrets(
            "whsec_o", None, "t4"
        )
        await storage.delete_app(OTHER)
        assert await storage.hook_secrets(OTHER) is None

    run(backend, scenario)


def test_deliveries_are_retried_dead_lettered_replayed_and_purged(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await storage.enqueue_deliveries([delivery(n) for n in range(3)], 100.0)
        assert not await storage.deliveries_due(99.0)
        assert await storage.deliveries_due(100.0)
        first = await claim(storage, "p1", 100.0, per_destination=2)
        assert [(d.id, d.attempts, d.body) for d in first] == [
            ("msg_0", 0, b"body 0"), ("msg_1", 0, b"body 1")
        ]  # fmt: skip
        assert await storage.lease_owners(100.0) == ["p1"]
        assert [d.id for d in await claim(storage, "p2", 101.0)] == ["msg_2"]
        assert await claim(storage, "p3", 101.0) == []  # all leased
        retried, dead = first
        assert await storage.settle_delivery(retried, "p1", "retry", now=102.0,
                                             next_attempt_at=200.0, error="503")  # fmt: skip
        assert not await storage.settle_delivery(retried, "p1", "delivered", now=103.0)
        assert await storage.settle_delivery(dead, "p1", "dead", now=104.0, error="400")
        assert await claim(storage, "p3", 120.0) == []  # msg_0 not due, msg_2 leased
        assert await storage.release_leases(["p2"]) == 1
        (again,) = await claim(storage, "p3", 120.0)
        assert again.id == "msg_2"
        assert await storage.settle_delivery(again, "p3", "delivered", now=151.0)
        (later,) = await claim(storage, "p3", 200.0)
        assert (later.id, later.attempts, later.first_attempt_at) == ("msg_0", 1, 102.0)
        assert await storage.settle_delivery(later, "p3", "delivered", now=201.0)

        letters = await storage.dead_letters(APP, after=0, limit=10)
        assert [(d.id, d.attempts, d.first_attempt_at, d.dead_at, d.last_error)
                for d in letters] == [("msg_1", 1, 104.0, 104.0, "400")]  # fmt: skip
        assert await storage.dead_letters(APP, after=letters[0].seq, limit=10) == []
        assert await storage.dead_letters(OTHER, after=0, limit=10) == []
        assert await storage.pending_deliveries(APP, "https://h.example/a") == 0
        gauges = await storage.hook_gauges()
        assert list(gauges["pending"]) == []
        assert [tuple(row) for row in gauges["dead"]] == [("https://h.example/a", 1)]

        assert await storage.replay_dead_letters(APP, ["msg_9"], 300.0) == 0
        assert await storage.replay_dead_letters(APP, ["msg_1"], 300.0) == 1
        assert await storage.pending_deliveries(APP, "https://h.example/a") == 1
        gauges = await storage.hook_gauges()
        assert [tuple(row) for row in gauges["pending"]] == [("https://h.example/a", 1, 100.0)]
        (replayed,) = await claim(storage, "p4", 300.0)
        assert (replayed.id, replayed.attempts, replayed.first_attempt_at) == ("msg_1", 0, None)
        assert await storage.purge_deliveries(151.0) == 0
        assert await storage.purge_deliveries(152.0) == 1  # msg_2, delivered at 151

    run(backend, scenario)


def test_a_gone_destination_is_disabled_until_replayed(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        gone, kept = "https://gone.example/", "https://kept.example/"
        await storage.enqueue_deliveries(
            [delivery(0, gone), delivery(1, gone), delivery(2, kept)], 100.0
        )
        busy = await claim(storage, "p1", 100.0, busy=[kept], limit=1)
        assert [d.id for d in busy] == ["msg_0"]
        assert await storage.settle_delivery(busy[0], "p1", "disable", now=101.0, error="410")
        assert await storage.destination_disabled(APP, gone)
        assert not await storage.destination_disabled(OTHER, gone)
        assert [d.id for d in await claim(storage, "p1", 102.0)] == ["msg_2"]
        letters = await storage.dead_letters(APP, after=0, limit=10)
        assert [(d.id, d.last_error) for d in letters] == [
            ("msg_0", "410"), ("msg_1", "not sent: the destination was disabled (410)")
        ]  # fmt: skip
        assert await storage.replay_dead_letters(APP, None, 103.0) == 2
        assert not await storage.destination_disabled(APP, gone)
        claimed = await claim(storage, "p2", 103.0, held=[letters[1].seq])
        assert [d.id for d in claimed] == ["msg_0"]

    run(backend, scenario)


def test_ordered_deliveries_go_one_at_a_time_oldest_first(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        stream = "file:///tmp/stream"
        await storage.enqueue_deliveries([delivery(n, stream, ordered=True) for n in range(3)], 1.0)
        (head,) = await claim(storage, "p1", 1.0)
        assert (head.id, head.ordered) == ("msg_0", 1)
        assert await claim(storage, "p2", 1.0) == []
        assert await storage.settle_delivery(head, "p1", "retry", now=1.0, next_attempt_at=5.0)
        assert await claim(storage, "p2", 2.0) == []  # the head waits: so does the rest
        assert await storage.settle_delivery(
            (await claim(storage, "p2", 5.0))[0], "p2", "delivered", now=5.0
        )
        assert [d.id for d in await claim(storage, "p2", 5.0)] == ["msg_1"]

    run(backend, scenario)


def test_collectors_claiming_deliveries_at_once_never_share_one(backend: Backend) -> None:
    async def scenario(storage: Storage) -> list[str]:
        await storage.enqueue_deliveries(
            [delivery(n, f"https://h{n % 4}.example/") for n in range(120)], 1.0
        )
        async with collectors(backend, 8) as nodes:

            async def drain(n: int) -> list[str]:
                taken: list[str] = []
                while batch := await claim(nodes[n], f"p{n}", 1.0, limit=5, per_destination=2):
                    taken.extend(d.id for d in batch)
                return taken

            drained = await asyncio.gather(*(drain(n) for n in range(8)))
        return [delivery_id for taken in drained for delivery_id in taken]

    taken = run(backend, scenario)
    assert sorted(taken) == sorted(f"msg_{n}" for n in range(120))  # each once, none left


def test_two_collectors_outboxes_deliver_each_call_once(backend: Backend) -> None:
    # The outbox workers of two collectors on one database, against a real receiver on
    # loopback that refuses the first calls: every call arrives signed, and is answered
    # 200 once, whichever collector made it.
    from homing_collector.hooks.outbox import Outbox
    from homing_collector.hooks.retry import RetryPolicy
    from homing_collector.metrics import Metrics
    from tests.collector.hooks.receiver import Answer, serving

    def script(n: int, _body: bytes) -> Answer:
        return Answer(503) if n < 6 else Answer(200)

    async def scenario(storage: Storage) -> list[tuple[str, int]]:
        fast = RetryPolicy(first_delay=0.05, max_delay=0.2, budget=60, jitter=0)
        with serving(script) as (receiver,):
            async with collectors(backend, 2) as nodes:
                workers = [Outbox(node, Metrics(), policy=fast, poll_interval=0.01)
                           for node in nodes]  # fmt: skip
                for worker in workers:
                    await worker.start()
                try:
                    await storage.enqueue_deliveries(
                        [NewDelivery(f"msg_{n}", APP, receiver.url, orjson.dumps({"n": n}),
                                     "application/json") for n in range(30)],
                        time.time(),
                    )  # fmt: skip
                    for worker in workers:
                        worker.wake()
                    deadline = time.monotonic() + 30
                    while sum(w.metrics.hook_attempts[(receiver.url, "delivered")]
                              for w in workers) < 30:  # fmt: skip
                        assert time.monotonic() < deadline, "timed out"
                        await asyncio.sleep(0.02)
                finally:
                    for worker in workers:
                        await worker.close()
        secrets = await storage.hook_secrets(APP)
        assert secrets is not None
        for got in receiver.received:
            Webhook(secrets.current).verify(got.body, got.headers)
        assert await storage.pending_deliveries(APP, receiver.url) == 0
        return [(got.headers["webhook-id"], n) for n, got in enumerate(receiver.received)]

    calls = run(backend, scenario)
    answered = Counter(delivery_id for delivery_id, n in calls if n >= 6)
    assert answered == {f"msg_{n}": 1 for n in range(30)}
    assert len(calls) == 36  # the 6 refused, tried again


# -- event streams and in-process hooks -------------------------------------------------


def event_ids(rows: Sequence[Any], bodies: dict[Any, bytes]) -> tuple[list[str], list[Any]]:
    """A stream's `build`: the events' ids in the order read, and whose bodies came. A
    row is a HookRow, or a StreamRow's values (SQLite's: a plain tuple); either way, the
    event id is third from its end."""
    return [row[-3] for row in rows], sorted(bodies)


def test_an_event_stream_reads_its_applications_events_in_order_once_moved(
    backend: Backend,
) -> None:
    async def scenario(storage: Storage) -> None:
        await put(storage, [event("e1", "before")], [update("e1", ChannelType="GCM")])
        made = await storage.put_event_stream(APP, "file:///tmp/s", "role", NOW, "me")
        assert await storage.list_event_streams() == [made]
        await put(storage, [event("e1", f"x{n}", at=T0 + n) for n in range(3)])
        await put(storage, [event("e9", "theirs")], app_id=OTHER)
        await put(storage, [event("e2", f"y{n}", at=T0 + n) for n in range(2)])

        (ids, bodies), to = await storage.read_event_stream(APP, made.cursor, 4, event_ids)
        assert (ids, bodies) == (["x0", "x1", "x2", "y0"], ["e1"])
        delivery = NewDelivery("m1", APP, made.destination, b"batch", "text/plain", None, True)
        assert await storage.advance_event_stream(APP, made.cursor, to, [delivery], 1.0)
        assert not await storage.advance_event_stream(APP, made.cursor, to, [delivery], 1.0)
        assert await storage.pending_deliveries(APP, made.destination) == 1

        (ids, _), end = await storage.read_event_stream(APP, to, 4, event_ids)
        assert ids == ["y1"]
        assert await storage.advance_event_stream(APP, to, end, [], 1.0)
        assert (await storage.read_event_stream(APP, end, 4, event_ids))[0] == ([], [])
        ((app_id, destination, _, oldest),) = (await storage.hook_gauges())["streams"]
        assert (app_id, destination, oldest) == (APP, made.destination, None)

        await put(storage, [event("e1", "z")])
        ((_, _, lag, oldest),) = (await storage.hook_gauges())["streams"]
        assert (lag, oldest) == (1, T0 + 5)
        gone = await storage.delete_event_stream(APP)
        assert gone is not None and gone.cursor == end
        assert await storage.get_event_stream(APP) is None

    run(backend, scenario)


def test_hook_cursors_give_every_applications_events_in_order(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await put(storage, [event("e1", "before")])
        first = (await storage.open_hook_cursors(["h"]))["h"]
        await put(
            storage, [event("e1", "a0"), event("e1", "a1")], [update("e1", ChannelType="GCM")]
        )
        await put(storage, [event("e2", "b0")], app_id=OTHER)
        assert await storage.hook_lag(["h"]) == {"h": 3}

        (ids, bodies), after, to = await storage.read_hook_stream("h", 2, event_ids)
        assert (ids, bodies, after) == (["a0", "a1"], [(APP, "e1")], first)
        assert await storage.advance_hook_cursor("h", after, to)
        assert not await storage.advance_hook_cursor("h", after, to)
        assert await storage.open_hook_cursors(["h"]) == {"h": to}
        (ids, _), after, end = await storage.read_hook_stream("h", 2, event_ids)
        assert (ids, after) == (["b0"], to)
        assert await storage.advance_hook_cursor("h", to, end)
        assert await storage.hook_lag(["h"]) == {"h": 0}
        assert (await storage.read_hook_stream("h", 2, event_ids))[1:] == (end, end)

    run(backend, scenario)


def test_a_cursor_stays_before_the_events_stored_after_others_are_deleted(
    backend: Backend,
) -> None:
    async def scenario(storage: Storage) -> None:
        await storage.open_hook_cursors(["h"])
        await put(storage, [event("e1", "old", at=T0 - 10 * HOUR), event("e1", "read")])
        (_, _), after, to = await storage.read_hook_stream("h", 10, event_ids)
        assert await storage.advance_hook_cursor("h", after, to)
        # The last events go; the next ones must still come (SQLite gives their rowids
        # again, so it moves the cursor back).
        await storage.delete_endpoint(APP, "e1")
        await put(storage, [event("e2", "new")])
        (ids, _), _, _ = await storage.read_hook_stream("h", 10, event_ids)
        assert ids == ["new"]

    run(backend, scenario)


def test_postgres_cursors_skip_no_transaction_that_commits_after_later_ones(
    postgres_url: str,
) -> None:
    # A transaction that started first and commits last: a cursor moved past the events
    # of those that committed before it (a sequence's numbers would put it there) must
    # still give its events.
    import psycopg

    from homing_collector.storage.pg_streams import NEXT_POSITION
    from homing_collector.storage.postgres import PostgresStorage

    async def read_all(storage: Storage, seen: list[str]) -> None:
        (ids, _), after, to = await storage.read_hook_stream("h", 100, event_ids)
        seen.extend(ids)
        assert await storage.advance_hook_cursor("h", after, to)

    async def scenario() -> None:
        storage = PostgresStorage(postgres_url)
        await storage.start()
        await storage.create_app(AppRecord(APP, "app", NOW, {}))
        await storage.open_hook_cursors(["h"])
        seen: list[str] = []
        async with await psycopg.AsyncConnection.connect(postgres_url) as slow:
            # Started first: its transaction id is below the one that commits next.
            await slow.execute("SELECT pg_current_xact_id()")
            await put(storage, [event("e1", "fast")])
            await read_all(storage, seen)
            await slow.execute(
                "INSERT INTO events (app_id, hour, endpoint_id, event_id, event_type, ts,"
                f" arrival, session_id, body, pos) VALUES (%s, 0, 'e2', 'slow', 'play', 0, 0,"
                f" NULL, '', {NEXT_POSITION})",
                (APP,),
            )
            await slow.commit()
        await put(storage, [event("e1", "after")])
        await read_all(storage, seen)
        await storage.close()
        assert sorted(seen) == ["after", "fast", "slow"]

    asyncio.run(scenario())


def test_a_hook_reading_while_collectors_write_at_once_misses_nothing(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await storage.open_hook_cursors(["h"])
        seen: list[str] = []

        async def drain() -> None:
            (ids, _), after, to = await storage.read_hook_stream("h", 7, event_ids)
            seen.extend(ids)
            assert await storage.advance_hook_cursor("h", after, to)

        async with collectors(backend, 4) as writers:

            async def write(n: int, writer: Storage) -> None:
                for batch in range(5):
                    await put(writer, [event(f"e{n}", f"{n}-{batch}-{k}") for k in range(3)])

            writing = asyncio.gather(*(write(n, w) for n, w in enumerate(writers)))
            while not writing.done():
                await drain()
                await asyncio.sleep(0)
            await writing
        for _ in range(20):
            await drain()
        assert sorted(seen) == sorted(f"{n}-{b}-{k}" for n in range(4) for b in range(5)
                                      for k in range(3))  # fmt: skip

    run(backend, scenario)


def test_postgres_a_stream_made_while_a_write_is_under_way_gets_its_events(
    postgres_url: str,
) -> None:
    import psycopg

    from homing_collector.storage.pg_streams import NEXT_POSITION
    from homing_collector.storage.postgres import PostgresStorage

    async def scenario() -> None:
        storage = PostgresStorage(postgres_url)
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "app", NOW, {}))
            async with await psycopg.AsyncConnection.connect(postgres_url) as slow:
                await slow.execute(
                    "INSERT INTO events (app_id, hour, endpoint_id, event_id, event_type, ts,"
                    " arrival, session_id, body, pos) VALUES (%s, 0, 'e2', 'under way', 'play',"
                    f" 0, 0, NULL, '', {NEXT_POSITION})",
                    (APP,),
                )
                # Committed first, by a later transaction: the stored event after which
                # a stream would start, were it to start after the last one committed.
                await put(storage, [event("e1", "committed")])
                made = await storage.put_event_stream(APP, "file:///tmp/s", "r", NOW, "me")
                first = (await storage.open_hook_cursors(["h"]))["h"]
                await slow.commit()
            (ids, _), _ = await storage.read_event_stream(APP, made.cursor, 10, event_ids)
            assert "under way" in ids  # "committed" may come too: at least once
            assert (await storage.read_hook_stream("h", 10, event_ids))[0][0] == ids
            assert first == made.cursor
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_in_process_event_stream_hooks_run_on_each_backend(backend: Backend) -> None:
    from homing_collector import Hooks
    from homing_collector.hooks.hook_stream import HookStreams
    from homing_collector.hooks.registry import Registry
    from homing_collector.hooks.runner import HookRunner
    from homing_collector.metrics import Metrics

    async def scenario(storage: Storage) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []

        async def hook(records: list[dict[str, Any]]) -> None:
            got.extend(records)

        registry = Registry()
        registry.add_given([Hooks(event_stream=hook, name="h")])
        runner = HookRunner(registry, Metrics())
        streams = HookStreams(storage, runner, idle_interval=0.01, batch_events=2)
        await put(storage, [event("e1", "before")])
        await streams.start()
        try:
            updates = [update("e1", ChannelType="GCM")]
            body = {"EventType": "play", "Timestamp": "2025-12-01T00:00:00.000Z"}
            rows = [
                EventRow("e1", f"x{n}", "play", T0, T0 + 5, None, orjson.dumps(body))
                for n in range(5)
            ]
            await put(storage, rows, updates)
            deadline = time.monotonic() + 10
            while len(got) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await streams.close()
            await runner.close()
        return got

    got = run(backend, scenario)
    assert [record["event_id"] for record in got] == [f"x{n}" for n in range(5)]
    assert got[0]["endpoint"]["ChannelType"] == "GCM"


def test_an_event_streams_pump_queues_every_event_in_order_on_each_backend(
    backend: Backend,
) -> None:
    import gzip

    from homing_collector.hooks.streams import StreamPump

    async def scenario(storage: Storage) -> list[str]:
        pump = StreamPump(storage, wake=lambda: None, clock=lambda: 1.0, batch_events=2)
        await storage.put_event_stream(APP, "file:///tmp/stream", "role", NOW, "me")
        body = {"EventType": "play", "Timestamp": "2025-12-01T00:00:00.000Z"}
        for n in range(5):
            row = EventRow("e1", f"x{n}", "play", T0 + n, T0 + 5, None, orjson.dumps(body))
            await put(storage, [row._replace(event_id=f"o{n}")], app_id=OTHER)
            await put(storage, [row])
        while await pump.pass_once():
            pass
        sent: list[str] = []
        while batch := await claim(storage, "me", 2.0):
            for delivery in batch:
                lines = gzip.decompress(delivery.body).splitlines()
                sent += [orjson.loads(line)["event_id"] for line in lines]
                assert await storage.settle_delivery(delivery, "me", "delivered", now=2.0)
        return sent

    assert run(backend, scenario) == [f"x{n}" for n in range(5)]


def test_postgres_push_queued_by_one_collector_is_reported_to_another_at_once(
    postgres_url: str,
) -> None:
    from homing_collector.storage.postgres import PostgresStorage

    async def reported(storage: Storage, within: float) -> list[tuple[str, str, int]] | None:
        deadline = time.monotonic() + within
        while (changes := await storage.push_changes(0)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return changes

    async def scenario() -> None:
        sender, holder, poller = (PostgresStorage(postgres_url, listen=listen)
                                  for listen in (True, True, False))  # fmt: skip
        for storage in (sender, holder, poller):
            await storage.start()
        try:
            await sender.create_app(AppRecord(APP, "app", NOW, {}))
            # Its first calls read, until its LISTEN is on; then none, as nothing is queued.
            deadline = time.monotonic() + 5.0
            while await holder.push_changes(0) == [] and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert await holder.push_changes(0) is None
            assert await poller.push_changes(0) == []  # without LISTEN: always reads
            await sender.queue_push(APP, [push("e1", "m1", expires_at=10**15)], queue_limit=5)
            # At its commit: well within the bound, which only tells "soon" from "never".
            assert await reported(holder, 2.0) == [(APP, "e1", 1)]
            assert await holder.push_changes(0) is None
            assert await poller.push_changes(0) == [(APP, "e1", 1)]
        finally:
            for storage in (sender, holder, poller):
                await storage.close()

    asyncio.run(scenario())


def test_postgres_push_changes_read_while_the_listen_connection_is_lost(
    postgres_url: str,
) -> None:
    import psycopg

    from homing_collector.storage.postgres import PUSH_CHANNEL, PostgresStorage

    async def quiet(storage: Storage) -> bool:
        """Whether push_changes comes to answer None (LISTEN on, nothing queued)."""
        deadline = time.monotonic() + 10
        while await storage.push_changes(0) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return await storage.push_changes(0) is None

    async def scenario() -> None:
        storage = PostgresStorage(postgres_url)
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "app", NOW, {}))
            assert await quiet(storage)
            async with await psycopg.AsyncConnection.connect(postgres_url) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query = %s AND pid <> pg_backend_pid()",
                    (f"LISTEN {PUSH_CHANNEL}",),
                )
            await asyncio.sleep(0.2)
            # A NOTIFY sent now would reach nobody: every call reads meanwhile.
            await storage.queue_push(APP, [push("e1", "m1", expires_at=10**15)], queue_limit=5)
            assert await storage.push_changes(0) == [(APP, "e1", 1)]
            assert await quiet(storage)  # listening again
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_deleting_an_application_takes_its_campaigns_and_deliveries(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        await new_segment(storage, "s1")
        await storage.create_campaign(campaign_record("c1"), None)
        await storage.plan_runs(APP, "c1", 1, [T0], [], T0, True)
        await storage.enqueue_deliveries([delivery(0)], 1.0)
        await storage.hook_secrets(APP, create="whsec_1", now="t1")
        assert await storage.delete_app(APP) is not None
        await storage.create_app(AppRecord(APP, "again", NOW))
        assert await storage.get_campaign(APP, "c1") is None
        assert await storage.list_activities(APP, "c1", after=0, limit=10) == []
        assert await storage.claim_activity("n1", T0, 1000, dead=never_dead) is None
        assert await storage.pending_deliveries(APP, "https://h.example/a") == 0
        assert await storage.hook_secrets(APP) is None
        assert await claim(storage, "p1", 1.0) == []

    run(backend, scenario)


# -- settings, quotas, retention, credentials, leases -----------------------------------


def test_settings_quotas_and_retention_keep_what_an_update_does_not_name(
    backend: Backend,
) -> None:
    async def scenario(storage: Storage) -> None:
        assert await storage.get_app_settings(APP) is None
        await storage.update_app_settings(APP, {"Limits": {"Daily": 1}, "QuietTime": {}}, NOW)
        text = await storage.update_app_settings(APP, {"Limits": {"Daily": 2}}, "later")
        assert orjson.loads(text) == {"Limits": {"Daily": 2}, "QuietTime": {}}
        assert await storage.get_app_settings(APP) == (text, "later")

        assert await storage.get_app_quotas(APP) == {}
        await storage.update_app_quotas(APP, {"a": 1, "b": 2}, NOW)
        assert await storage.update_app_quotas(APP, {"a": None, "c": 3}, NOW) == {"b": 2, "c": 3}
        assert await storage.get_app_quotas(APP) == {"b": 2, "c": 3}
        assert await storage.get_app_quotas(OTHER) == {}

        assert await storage.get_retention(APP) is None
        assert await storage.update_retention(APP, 30, NOW) == 30
        assert await storage.update_retention(OTHER, 7, NOW) == 7
        assert await storage.retention_policies() == [(APP, 30), (OTHER, 7)]
        assert await storage.update_retention(APP, None, NOW) is None
        assert await storage.retention_policies() == [(OTHER, 7)]

    run(backend, scenario)


def test_a_device_credential_is_kept_unless_replaced(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        assert await storage.set_device_credential(APP, "e1", "sha1", NOW, replace=False)
        assert not await storage.set_device_credential(APP, "e1", "sha2", NOW, replace=False)
        assert await storage.device_credentials(APP, ["e1", "e2"]) == {"e1": "sha1"}
        assert await storage.set_device_credential(APP, "e1", "sha3", NOW, replace=True)
        assert await storage.device_credentials(APP, ["e1"]) == {"e1": "sha3"}
        assert await storage.device_credentials(OTHER, ["e1"]) == {}
        assert await storage.delete_device_credential(APP, "e1")
        assert not await storage.delete_device_credential(APP, "e1")

    run(backend, scenario)


def test_put_events_checks_each_batchs_device_credential_on_its_own(backend: Backend) -> None:
    """Batches written at once (PostgreSQL: in one transaction, which reads the stored
    credentials of all of them): a batch that does not prove an endpoint's credential
    cannot change its locked fields, its other updates and events are stored, and the
    other batches, of the same endpoints or not, are answered as each alone."""

    async def scenario(storage: Storage) -> None:
        def proof(secret: str | None, *ids: str) -> DeviceCheck:
            return device.proof(None if secret is None else device.hash_secret(secret), ids)

        await update_endpoints(storage, [update("e1", Address="a1"), update("e2", Address="a2")])
        other_merge = partial(endpoints.merge, OTHER, now=NOW)
        await storage.update_endpoints(
            OTHER, [update("e1", Address="o1")], merge=other_merge, max_user_endpoints=15
        )
        for app_id, endpoint_id, secret in [
            (APP, "e1", "s1"),
            (APP, "e2", "s2"),
            (OTHER, "e1", "o1"),
            (APP, "unstored", "s9"),
        ]:
            sha = device.hash_secret(secret)
            assert await storage.set_device_credential(app_id, endpoint_id, sha, NOW, replace=False)
        batches = [
            # No credential: e1 is locked, e3 (none stored) is not.
            (APP, proof(None, "e1", "e3"), [update("e1", Address="x"), update("e3", Address="y")],
             [event("e1", "a"), event("e3", "b")]),
            # e2's own credential: e2 only, although the group holds e1's too.
            (APP, proof("s2", "e2"), [update("e2", Address="z")], [event("e2", "c")]),
            # Another endpoint's credential proves nothing of e1.
            (APP, proof("s2", "e1"), [update("e1", OptOut="ALL")], [event("e1", "d")]),
            # The same endpoint id in another application, with its own credential.
            (OTHER, proof("o1", "e1"), [update("e1", Address="o2")], [event("e1", "e")]),
            # An admin key (no check) changes anything.
            (APP, None, [update("e2", OptOut="ALL")], []),
            # A credential claimed before the endpoint was stored locks it too.
            (APP, proof(None, "unstored"), [update("unstored", Address="u")],
             [event("unstored", "f")]),
        ]  # fmt: skip
        results = await asyncio.gather(
            *(
                put(storage, events, updates, app_id=app_id, proof=check)
                for app_id, check, updates, events in batches
            )
        )
        assert [result.locked for result in results] == [
            {"e1"}, set(), {"e1"}, set(), set(), {"unstored"}
        ]  # fmt: skip
        assert [sorted(result.endpoint_errors) for result in results] == [
            ["e1"], [], ["e1"], [], [], ["unstored"]
        ]  # fmt: skip
        assert results[0].endpoint_errors["e1"].startswith("Address: ")
        assert results[2].endpoint_errors["e1"].startswith("OptOut: ")
        assert results[5].endpoint_errors["unstored"].startswith("Address: ")
        assert [result.stored for result in results] == [2, 1, 1, 1, 0, 1]
        stored = await storage.get_endpoints(APP, ["e1", "e2", "e3", "unstored"])
        assert {e: body["Address"] for e, body in stored.items()} == {
            "e1": "a1", "e2": "z", "e3": "y"
        }  # fmt: skip
        assert stored["e1"].get("OptOut") != "ALL" and stored["e2"]["OptOut"] == "ALL"
        other = await storage.get_endpoints(OTHER, ["e1"])
        assert other["e1"]["Address"] == "o2"
        assert len(await stored_events(storage)) == 5

    run(backend, scenario)


def test_a_lease_has_one_holder_until_it_runs_out(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        assert await storage.take_lease("sweep", "a", 1_000, 100)
        assert not await storage.take_lease("sweep", "b", 1_050, 100)
        assert await storage.take_lease("sweep", "a", 1_090, 100)  # renewed to 1_190
        assert not await storage.take_lease("sweep", "b", 1_150, 100)
        assert await storage.take_lease("sweep", "b", 1_200, 100)
        assert await storage.take_lease("other", "a", 1_200, 100)

        # Many collectors race for a free lease: one wins.
        async with collectors(backend, 8) as rivals:
            taken = await asyncio.gather(*(
                rivals[n % 8].take_lease("race", f"owner{n}", 5_000, 1_000) for n in range(16)
            ))  # fmt: skip
        assert taken.count(True) == 1

    run(backend, scenario)


def test_collectors_starting_together_on_an_empty_database_all_start(backend: Backend) -> None:
    async def scenario() -> list[AppRecord]:
        storages = [backend() for _ in range(4)]
        await asyncio.gather(*(storage.start() for storage in storages))
        try:
            await asyncio.gather(*(
                storage.create_app(AppRecord(f"{n}" * 32, "app", NOW))
                for n, storage in enumerate(storages)
            ))  # fmt: skip
            return await storages[0].list_apps(after=None, limit=10)
        finally:
            for storage in storages:
                await storage.close()

    assert [app.id for app in asyncio.run(scenario())] == [f"{n}" * 32 for n in range(4)]


def test_postgres_migrations_run_once_however_many_start(postgres_url: str) -> None:
    import psycopg

    from homing_collector.storage.pg_schema import PG_MIGRATIONS
    from homing_collector.storage.postgres import PostgresStorage

    async def scenario() -> None:
        storages = [PostgresStorage(postgres_url) for _ in range(6)]
        await asyncio.gather(*(storage.start() for storage in storages))
        for storage in storages:
            await storage.close()

    asyncio.run(scenario())
    with psycopg.connect(postgres_url) as conn:
        applied = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [version for (version,) in applied] == [version for version, _ in PG_MIGRATIONS]


def test_postgres_stores_each_event_under_its_hour_and_application(postgres_url: str) -> None:
    # The hour is worked out by the server, rounded down as Python's // rounds (a
    # Timestamp before 1970 too); two applications' batches written in one statement.
    import psycopg

    from homing_collector.storage.events import HOUR_MS
    from homing_collector.storage.postgres import PostgresStorage

    stamps = [-3_600_001, -3_600_000, -1, 0, 1, 3_599_999, 3_600_000, T0]

    async def scenario(storage: Storage) -> list[IngestResult]:
        return list(await asyncio.gather(*(
            put(storage, [event("e1", f"ev{n}", at=at) for n, at in enumerate(stamps)],
                app_id=app_id)
            for app_id in (APP, OTHER)
        )))  # fmt: skip

    results = run(lambda: PostgresStorage(postgres_url), scenario)
    assert [result.stored for result in results] == [len(stamps)] * 2
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT app_id, ts, hour FROM events ORDER BY 1, 2").fetchall()
    assert rows == [(app_id, at, at // HOUR_MS) for app_id in sorted((APP, OTHER))
                    for at in sorted(stamps)]  # fmt: skip


def test_postgres_runs_again_a_write_aborted_to_break_a_deadlock(postgres_url: str) -> None:
    # Two writes that lock two rows in opposite orders: PostgreSQL aborts one of them,
    # and the storage runs it again instead of failing it (two schedulers planning the
    # same runs at once did this).
    from psycopg import AsyncConnection

    from homing_collector.storage.postgres import PostgresStorage

    async def scenario() -> list[int]:
        storage = PostgresStorage(postgres_url)
        await storage.start()
        try:
            await storage._write(
                lambda conn: conn.execute(
                    "CREATE TABLE pair (id int PRIMARY KEY, n int NOT NULL);"
                    " INSERT INTO pair VALUES (1, 0), (2, 0)"
                )
            )
            both = asyncio.Barrier(2)
            runs = Counter[int]()

            def crossing(first: int, second: int) -> Callable[[AsyncConnection], Awaitable[None]]:
                async def work(conn: AsyncConnection) -> None:
                    runs[first] += 1
                    await conn.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (first,))
                    if runs[first] == 1:
                        await both.wait()  # each holds its first row, then wants the other's
                    await conn.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (second,))

                return work

            await asyncio.gather(storage._write(crossing(1, 2)), storage._write(crossing(2, 1)))
            rows = await storage._rows("SELECT n FROM pair ORDER BY id")
            # One of them ran again (on a busy machine the second may also have met the
            # first's retry, and run again too); the sums below say each counted once.
            assert max(runs.values()) >= 2
            return [n for (n,) in rows]
        finally:
            await storage.close()

    assert asyncio.run(scenario()) == [2, 2]


def test_postgres_has_every_method_of_the_storage_protocol() -> None:
    # A method added to the protocol without its PostgreSQL side would fail only when
    # a collector on PostgreSQL first calls it.
    from homing_collector.storage.postgres import PostgresStorage

    for name, method in vars(Storage).items():
        if inspect.iscoroutinefunction(method):
            ours = getattr(PostgresStorage, name, None)
            assert ours is not None, name
            assert inspect.signature(ours).parameters.keys() == (
                inspect.signature(method).parameters.keys()
            ), name


def test_postgres_analytics_read_is_one_read_only_snapshot(postgres_url: str) -> None:
    import psycopg

    from homing_collector.storage.postgres import PostgresStorage

    def read(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
        first = conn.execute("SELECT count(*) FROM apps").fetchone()
        with psycopg.connect(postgres_url, autocommit=True) as other:  # commits meanwhile
            other.execute("INSERT INTO apps (id, name, created_at) VALUES ('x', 'x', 'now')")
        again = conn.execute("SELECT count(*) FROM apps").fetchone()
        try:
            conn.execute("DELETE FROM apps")
        except psycopg.errors.ReadOnlySqlTransaction:
            return (first, again, "read only")
        return (first, again, "wrote")

    async def scenario() -> tuple[Any, ...]:
        storage = PostgresStorage(postgres_url)
        await storage.start()
        try:
            return await storage.analytics_read(read)
        finally:
            await storage.close()

    assert asyncio.run(scenario()) == ((0,), (0,), "read only")
