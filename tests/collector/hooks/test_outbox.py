"""The durable outbox and its delivery worker, against real receivers on loopback.

Every call a receiver gets is verified with the standardwebhooks package.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

import orjson
from standardwebhooks import Webhook

from homing_collector.hooks.outbox import Outbox
from homing_collector.hooks.retry import RetryPolicy
from homing_collector.hooks.streams import StreamPump, Taker
from homing_collector.metrics import Metrics
from homing_collector.storage.base import AppRecord, Delivery, NewDelivery
from homing_collector.storage.sqlite import SQLiteStorage
from tests.collector.closing import check_closes_as_woken
from tests.collector.hooks.receiver import Answer, Received, always, serving

APP = "a" * 32
FAST = RetryPolicy(first_delay=0.05, max_delay=0.2, budget=60, jitter=0)


class Clock:
    """A clock the test moves; it starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def open_storage(path: Path) -> SQLiteStorage:
    storage = SQLiteStorage(path)
    await storage.start()
    if await storage.get_app(APP) is None:
        await storage.create_app(AppRecord(APP, "hooks", "2026-12-01T00:00:00Z"))
    return storage


def deliveries(url: str, count: int, prefix: str = "msg_") -> list[NewDelivery]:
    return [
        NewDelivery(f"{prefix}{i}", APP, url, orjson.dumps({"n": i}), "application/json")
        for i in range(count)
    ]


def verified(received: list[Received], *secrets: str) -> list[dict[str, int]]:
    """The bodies, once each call is verified with every one of `secrets`."""
    bodies = []
    for got in received:
        for secret in secrets:
            bodies.append(Webhook(secret).verify(got.body, got.headers))
    return bodies[:: len(secrets)]


async def until(condition: Callable[[], object], timeout: float = 20, tick: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(tick)


def next_due(path: Path) -> float | None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (due,) = db.execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'"
        ).fetchone()
    return due  # type: ignore[no-any-return]


def run(tmp_path: Path, scenario: Callable[[SQLiteStorage], Awaitable[None]]) -> None:
    async def main() -> None:
        storage = await open_storage(tmp_path / "hooks.db")
        try:
            await scenario(storage)
        finally:
            await storage.close()

    asyncio.run(main())


async def until_true(condition: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def started(storage: SQLiteStorage, **options: object) -> Outbox:
    outbox = Outbox(storage, Metrics(), poll_interval=0.01, **options)  # type: ignore[arg-type]
    await outbox.start()
    return outbox


def test_503s_then_200_everything_arrives_once_and_nothing_is_dead(tmp_path: Path) -> None:
    run(tmp_path, _test_503s_then_200_everything_arrives_once_and_nothing_is_dead)


async def _test_503s_then_200_everything_arrives_once_and_nothing_is_dead(
    storage: SQLiteStorage,
) -> None:
    def script(n: int, _body: bytes) -> Answer:
        if n == 3:  # a 429 asking for a second: the next try waits that long
            return Answer(429, (("retry-after", "1"),))
        return Answer(503) if n < 12 else Answer(200)

    with serving(script) as (receiver,):
        outbox = await started(storage, policy=FAST, concurrency=2)
        try:
            await storage.enqueue_deliveries(deliveries(receiver.url, 20), time.time())
            outbox.wake()
            await until(lambda: sum(1 for r in receiver.received if r.at) >= 32)
            await until(lambda: outbox.metrics.hook_attempts[(receiver.url, "delivered")] == 20)
        finally:
            await outbox.close()
    secrets = await storage.hook_secrets(APP)
    assert secrets is not None
    bodies = verified(receiver.received, secrets.current)
    assert sorted(b["n"] for b in bodies) == sorted([*range(20), *[b["n"] for b in bodies[:12]]])
    ids = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert set(ids) == {f"msg_{i}" for i in range(20)}
    assert sum(ids.values()) == 32  # 12 refused and tried again, each id delivered once
    assert await storage.dead_letters(APP, after=0, limit=10) == []
    # Retry-After was honoured: a second at least before that delivery's next attempt.
    refused = receiver.received[3]
    later = [
        r for r in receiver.received[4:] if r.headers["webhook-id"] == refused.headers["webhook-id"]
    ]
    assert later[0].at - refused.at >= 0.95
    gauges = (await outbox_gauges(storage))["pending"]
    assert gauges == {}


async def outbox_gauges(storage: SQLiteStorage) -> dict[str, object]:
    outbox = Outbox(storage, Metrics())
    await outbox.read_gauges()
    return outbox.metrics.hook_gauges


def test_always_500_is_dead_lettered_after_the_budget_then_replayed(tmp_path: Path) -> None:
    run(tmp_path, _test_always_500_is_dead_lettered_after_the_budget_then_replayed)


async def _test_always_500_is_dead_lettered_after_the_budget_then_replayed(
    storage: SQLiteStorage,
) -> None:
    healthy = False

    def script(_n: int, _body: bytes) -> Answer:
        return Answer(200 if healthy else 500, body=b"down for maintenance")

    clock = Clock()
    start = clock.now
    with serving(script) as (receiver,):
        outbox = await started(storage, clock=clock)  # the default policy: 24 h
        try:
            await storage.enqueue_deliveries(deliveries(receiver.url, 3), clock())
            outbox.wake()
            # Time jumps to each retry as it falls due, once the worker is idle.
            while len(await storage.dead_letters(APP, after=0, limit=10)) < 3:
                await asyncio.sleep(0.02)
                due = next_due(storage.path)
                if outbox.in_flight == 0 and due is not None and due > clock.now:
                    clock.now = due
                    outbox.wake()
            assert clock.now - start <= 24 * 3600
            dead = await storage.dead_letters(APP, after=0, limit=10)
            assert [d.id for d in dead] == ["msg_0", "msg_1", "msg_2"]
            for letter in dead:
                assert 15 <= letter.attempts <= 25, letter
                assert letter.last_error is not None
                assert "down for maintenance" in letter.last_error
                assert "retry budget" in letter.last_error
                assert letter.first_attempt_at == letter.created_at
                # The last retry fell within the longest wait (2 h, +20% jitter) of the end.
                assert 24 * 3600 - 2.4 * 3600 <= letter.dead_at - letter.created_at <= 24 * 3600
            calls = len(receiver.received)
            assert calls == sum(d.attempts for d in dead)
            await outbox.read_gauges()
            assert outbox.metrics.hook_gauges["dead"] == {receiver.url: 3}
            rendered = outbox.metrics.render()
            assert f'homing_hook_dead_letters{{destination="{receiver.url}"}} 3' in rendered
            assert f'homing_hook_failures_total{{destination="{receiver.url}"}} {calls}' in rendered

            healthy = True
            assert await storage.replay_dead_letters(APP, ["msg_1"], clock()) == 1
            assert await storage.replay_dead_letters(APP, None, clock()) == 2
            outbox.wake()
            await until(lambda: len(receiver.received) == calls + 3)
            await until(lambda: outbox.metrics.hook_attempts[(receiver.url, "delivered")] == 3)
        finally:
            await outbox.close()
    assert await storage.dead_letters(APP, after=0, limit=10) == []
    secrets = await storage.hook_secrets(APP)
    assert secrets is not None
    # Signed at the test clock's times, a day ahead: standardwebhooks's verify() would
    # call them too new, so compare with its sign() at the times the headers give.
    webhook = Webhook(secrets.current)
    for got in receiver.received:
        moment = datetime.fromtimestamp(int(got.headers["webhook-timestamp"]), timezone.utc)
        expected = webhook.sign(got.headers["webhook-id"], moment, got.body.decode())
        assert expected in got.headers["webhook-signature"].split(" ")


def test_a_410_disables_the_destination_and_a_replay_enables_it(tmp_path: Path) -> None:
    run(tmp_path, _test_a_410_disables_the_destination_and_a_replay_enables_it)


async def _test_a_410_disables_the_destination_and_a_replay_enables_it(
    storage: SQLiteStorage,
) -> None:
    gone = True

    def script(_n: int, _body: bytes) -> Answer:
        return Answer(410 if gone else 200)

    with serving(script, always(Answer(200))) as (leaving, staying):
        outbox = await started(storage, concurrency=1)
        try:
            await storage.enqueue_deliveries(
                deliveries(leaving.url, 5) + deliveries(staying.url, 5, "other_"), time.time()
            )
            outbox.wake()
            await until(lambda: len(staying.received) == 5)
            await until(lambda: len(leaving.received) == 1)

            async def all_dead() -> bool:
                return len(await storage.dead_letters(APP, after=0, limit=10)) == 5

            await until_true(all_dead)
            assert len(leaving.received) == 1  # the others are never sent
            assert await storage.destination_disabled(APP, leaving.url)
            dead = await storage.dead_letters(APP, after=0, limit=10)
            assert sorted(d.id for d in dead) == [f"msg_{i}" for i in range(5)]
            assert all("410" in (d.last_error or "") for d in dead)

            gone = False
            assert await storage.replay_dead_letters(APP, None, time.time()) == 5
            assert not await storage.destination_disabled(APP, leaving.url)
            outbox.wake()
            await until(lambda: len(leaving.received) == 6)
        finally:
            await outbox.close()


def test_a_slow_receiver_does_not_hold_back_the_others(tmp_path: Path) -> None:
    run(tmp_path, _test_a_slow_receiver_does_not_hold_back_the_others)


async def _test_a_slow_receiver_does_not_hold_back_the_others(
    storage: SQLiteStorage,
) -> None:
    with serving(always(Answer(200, delay=3.0)), always(Answer(200))) as (slow, fast):
        outbox = await started(storage, concurrency=2)
        try:
            await storage.enqueue_deliveries(deliveries(slow.url, 6, "slow_"), time.time())
            await storage.enqueue_deliveries(deliveries(fast.url, 30, "fast_"), time.time())
            outbox.wake()
            await until(lambda: len(fast.received) == 30)
            assert len(slow.received) == 0  # none of the slow one's answers came yet
            await until(lambda: len(slow.received) == 6)
        finally:
            await outbox.close()
    assert slow.max_in_flight <= 2  # its own bound, held while it was slow
    assert max(r.at for r in fast.received) < min(r.at for r in slow.received)


def test_both_secrets_sign_during_a_rotation(tmp_path: Path) -> None:
    run(tmp_path, _test_both_secrets_sign_during_a_rotation)


async def _test_both_secrets_sign_during_a_rotation(
    storage: SQLiteStorage,
) -> None:
    with serving(always(Answer(204))) as (receiver,):
        outbox = await started(storage)
        try:
            first = await outbox.keys(APP)
            rotated = await storage.rotate_hook_secrets(APP, "whsec_" + "A" * 43 + "=", "now")
            assert rotated.previous == first.current
            outbox.forget_keys(APP)
            await storage.enqueue_deliveries(deliveries(receiver.url, 1), time.time())
            outbox.wake()
            await until(lambda: len(receiver.received) == 1)
            verified(receiver.received, rotated.current, first.current)
            ended = await storage.end_hook_rotation(APP)
            assert ended is not None and ended.previous is None
            outbox.forget_keys(APP)
            await storage.enqueue_deliveries(deliveries(receiver.url, 1, "late_"), time.time())
            outbox.wake()
            await until(lambda: len(receiver.received) == 2)
        finally:
            await outbox.close()
    assert len(receiver.received[1].headers["webhook-signature"].split(" ")) == 1
    verified(receiver.received[1:], rotated.current)


def test_two_processes_never_make_the_same_delivery(tmp_path: Path) -> None:
    """As with serve --workers 2: two storages and two workers on one database file."""
    asyncio.run(_two_processes(tmp_path))


async def _two_processes(tmp_path: Path) -> None:
    first = await open_storage(tmp_path / "shared.db")
    second = await open_storage(tmp_path / "shared.db")
    with serving(always(Answer(200, delay=0.01))) as (receiver,):
        outboxes = [await started(first), await started(second)]
        try:
            await first.enqueue_deliveries(deliveries(receiver.url, 200), time.time())
            for outbox in outboxes:
                outbox.wake()
            await until(lambda: len(receiver.received) >= 200)
            await asyncio.sleep(0.3)  # time for any second delivery to show
        finally:
            for outbox in outboxes:
                await outbox.close()
            await first.close()
            await second.close()
    ids = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert len(ids) == 200 and set(ids.values()) == {1}
    both = [sum(o.metrics.hook_attempts.values()) for o in outboxes]
    assert sum(both) == 200


def test_a_worker_takes_the_hooks_the_rest_or_all(tmp_path: Path) -> None:
    """The event-stream process takes every delivery but those to `hook:NAME`, which
    only the collector's process can make; a worker that is told neither takes all."""

    async def scenario(storage: SQLiteStorage) -> None:
        now = time.time()
        await storage.enqueue_deliveries(
            deliveries("http://127.0.0.1:9/a", 2, "web_") + deliveries("hook:mailer", 2, "hook_"),
            now,
        )

        async def claim(owner: str, hooks: bool | None) -> list[str]:
            found = await storage.claim_deliveries(
                owner, now, now + 60, limit=10, per_destination=10, busy=[], hooks=hooks
            )
            return sorted(d.id for d in found)

        assert await storage.deliveries_due(now, hooks=True)
        assert await claim("collector", True) == ["hook_0", "hook_1"]
        assert not await storage.deliveries_due(now, hooks=True)
        assert await storage.deliveries_due(now, hooks=False)
        assert await claim("stream process", False) == ["web_0", "web_1"]
        assert not await storage.deliveries_due(now)
        await storage.enqueue_deliveries(
            deliveries("hook:crm", 1, "crm_") + deliveries("https://x.example/", 1, "x_"), now
        )
        assert await claim("another", None) == ["crm_0", "x_0"]

    run(tmp_path, scenario)


class NothingDue:
    """A worker's source with nothing due, which says when the worker has looked."""

    def __init__(self) -> None:
        self.looked = asyncio.Event()

    async def deliveries_due(self, now: float) -> bool:
        self.looked.set()
        return False

    async def claim_deliveries(self, *args: object, **kwargs: object) -> list[object]:
        raise AssertionError("nothing is due")


def test_a_worker_closed_as_it_is_woken_stops(tmp_path: Path) -> None:
    """The worker is closed as it is woken, as when the last delivery of a test settles
    (its end wakes the loop) while the collector stops. The cancellation must end the
    loop: with `asyncio.wait_for` (Python 3.11) the wait returned instead, the loop went
    on, and close() waited for it forever."""

    async def scenario(storage: SQLiteStorage) -> None:
        source = NothingDue()
        outbox = Outbox(storage, Metrics(), source=source, chores=False, poll_interval=60)  # type: ignore[arg-type]
        await outbox.start()
        await source.looked.wait()  # its loop waits now, for a wake or the next poll

        await check_closes_as_woken(outbox, "worker")

    run(tmp_path, scenario)


# -- a stream's batch leased as it is queued -------------------------------------------------


def test_a_batch_is_leased_as_it_is_queued_only_when_a_claim_would_take_it(
    tmp_path: Path,
) -> None:
    """The event-stream process leases its batch to its own worker in the transaction that
    queues it, but only when a claim would: not behind an older pending batch of the same
    stream (they go in order), nor to a disabled destination."""

    async def scenario(storage: SQLiteStorage) -> None:
        url = "http://127.0.0.1:9/stream"
        await storage.put_event_stream(APP, url, "", "2026-12-01T00:00:00Z", "root")
        now = time.time()

        def batch(n: int) -> NewDelivery:
            return NewDelivery(f"batch_{n}", APP, url, b"gz", "application/x-ndjson", "gzip",
                               ordered=True)  # fmt: skip

        lease = ("me", now + 60)
        first = await storage.advance_event_stream_leased(APP, 0, 5, batch(0), now, *lease)
        assert isinstance(first, Delivery)
        assert (first.id, first.body, first.attempts, first.ordered) == ("batch_0", b"gz", 0, 1)
        # Leased: no claim takes it while the lease lasts.
        assert not await storage.deliveries_due(now)
        # The next one waits for the first, still pending: queued, not leased.
        assert await storage.advance_event_stream_leased(APP, 5, 9, batch(1), now, *lease) is True
        # A cursor that moved meanwhile: nothing is queued.
        assert await storage.advance_event_stream_leased(APP, 5, 9, batch(9), now, *lease) is False
        assert await storage.settle_delivery(first, "me", "delivered", now=now)
        (second,) = await storage.claim_deliveries(
            "me", now, now + 60, limit=10, per_destination=10, busy=[]
        )
        assert second.id == "batch_1"
        assert await storage.settle_delivery(second, "me", "delivered", now=now)
        third = await storage.advance_event_stream_leased(APP, 9, 12, batch(2), now, *lease)
        assert isinstance(third, Delivery)
        assert await storage.settle_delivery(third, "me", "disable", now=now)
        # A disabled destination: queued, not leased.
        assert await storage.advance_event_stream_leased(APP, 12, 15, batch(3), now, *lease) is True
        with contextlib.closing(sqlite3.connect(tmp_path / "hooks.db")) as db:
            rows = db.execute("SELECT id, state, lease_owner FROM outbox ORDER BY seq").fetchall()
            (cursor,) = db.execute("SELECT cursor FROM event_streams").fetchone()
        assert rows == [
            ("batch_0", "delivered", None),
            ("batch_1", "delivered", None),
            ("batch_2", "dead", None),
            ("batch_3", "pending", None),
        ]
        assert cursor == 15

    run(tmp_path, scenario)


def test_the_stream_process_makes_its_batches_without_claiming_them(tmp_path: Path) -> None:
    """The pump hands each batch it leased to its worker, which makes it at once; a batch
    behind another waits for a claim, as before."""
    path = tmp_path / "hooks.db"

    async def scenario(storage: SQLiteStorage) -> None:
        with serving(always(Answer(200))) as (receiver,):
            await storage.put_event_stream(APP, receiver.url, "", "2026-12-01T00:00:00Z", "r")
            with contextlib.closing(sqlite3.connect(path)) as db:
                db.executemany(
                    "INSERT INTO events (app_id, endpoint_id, event_id, event_type, ts, arrival,"
                    " body, hour) VALUES (?, 'device-1', ?, 'play', 0, 0, ?, 0)",
                    [(APP, f"e{i}", orjson.dumps({"EventType": "play",
                      "Timestamp": "2026-12-01T00:00:00.000Z"})) for i in range(3)],
                )  # fmt: skip
                db.commit()
            source = NothingDue()  # its claims fail the test
            outbox = Outbox(storage, Metrics(), source=source, chores=False, poll_interval=60)  # type: ignore[arg-type]
            await outbox.start()
            pump = StreamPump(storage, wake=outbox.wake, clock=time.time,
                              taker=Taker(storage, outbox))  # fmt: skip
            try:
                assert await pump.pass_once()
                await until(lambda: len(receiver.received) == 1)
                await until(lambda: outbox.metrics.hook_attempts[(receiver.url, "delivered")] == 1)
            finally:
                await outbox.close()
            lines = gzip.decompress(receiver.received[0].body).splitlines()
            assert [orjson.loads(line)["event_id"] for line in lines] == ["e0", "e1", "e2"]
            with contextlib.closing(sqlite3.connect(path)) as db:
                assert db.execute("SELECT state FROM outbox").fetchall() == [("delivered",)]

    run(tmp_path, scenario)
