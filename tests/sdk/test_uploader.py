from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from homing import _json, limits
from homing._network import NetworkPolicy, coerce_policy
from homing._store import Store
from homing._uploader import Uploader
from tests.sdk.conftest import FakeClock, FakeCollector, accept_all, decode

ENDPOINT = "endpoint-1"


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Store:
    return Store(tmp_path / "events.sqlite3", clock=clock)


@pytest.fixture
def make_uploader(store: Store, clock: FakeClock, fake: FakeCollector) -> Callable[..., Uploader]:
    def make(
        policy: Any = "any", flush_interval: float = 60.0, wait: Any = None, monotonic: Any = None
    ) -> Uploader:
        # The fake clock is the wall clock and, unless `monotonic` is given, the scheduling one.
        return Uploader(
            store=store,
            url="http://collector.test/v1/apps/app1/events",
            api_key="hm_ingest_x",
            endpoint_id=ENDPOINT,
            profile=lambda: {"ChannelType": "CUSTOM"},
            policy=policy if isinstance(policy, NetworkPolicy) else coerce_policy(policy),
            flush_interval=flush_interval,
            clock=clock,
            monotonic=monotonic or clock,
            transport=fake.transport,
            wait=wait,
        )

    return make


def fill(store: Store, n: int, size: int = 0) -> None:
    for i in range(n):
        event = {"EventType": "e", "Timestamp": "2026-11-28T10:00:00.000Z", "n": i}
        if size:
            event["Attributes"] = {"pad": "x" * size}
        store.put(f"id{i:05d}", _json.dumps(event))


def statuses(codes: dict[str, int]) -> Callable[[httpx.Request], httpx.Response]:
    """Answer each event with the code in `codes` (202 when absent)."""

    def handler(request: httpx.Request) -> httpx.Response:
        events = decode(request)["BatchItem"][ENDPOINT]["Events"]
        answer = {
            event_id: {"StatusCode": codes.get(event_id, 202), "Message": "EventType: bad"}
            for event_id in events
        }
        return httpx.Response(202, json={"Results": {ENDPOINT: {"EventsItemResponse": answer}}})

    return handler


def error(status: int, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"Message": "nope", "RequestID": "r"}, headers=headers)

    return handler


def raising(exc: Exception) -> Callable[..., httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def test_a_batch_is_a_gzipped_putevents_request(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    fill(store, 3)
    result = make_uploader().drain(None)
    assert (result.sent, result.rejected, result.remaining, result.error) == (3, 0, 0, None)
    [request] = fake.requests
    assert request.method == "POST"
    assert str(request.url) == "http://collector.test/v1/apps/app1/events"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == "Bearer hm_ingest_x"
    body = _json.loads(gzip.decompress(request.content))
    item = body["BatchItem"][ENDPOINT]
    assert item["Endpoint"] == {"ChannelType": "CUSTOM"}
    assert list(item["Events"]) == ["id00000", "id00001", "id00002"]
    assert item["Events"]["id00001"]["n"] == 1
    assert store.count() == 0


def test_batches_hold_at_most_100_events(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    fill(store, 250)
    assert make_uploader().drain(None).sent == 250
    assert [len(decode(r)["BatchItem"][ENDPOINT]["Events"]) for r in fake.requests] == [
        100, 100, 50,
    ]  # fmt: skip


def test_batches_hold_at_most_512_kb(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    store.max_bytes = 10**8
    fill(store, 60, size=20_000)  # 60 x 20 KB = 1.2 MB
    assert make_uploader().drain(None).sent == 60
    assert len(fake.requests) >= 3
    for request in fake.requests:
        assert len(gzip.decompress(request.content)) <= limits.MAX_BATCH_BYTES


def test_per_event_400s_are_deleted_logged_and_counted(
    make_uploader: Callable[..., Uploader],
    store: Store,
    fake: FakeCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fill(store, 5)
    fake.handler = statuses({"id00001": 400, "id00003": 400})
    uploader = make_uploader()
    with caplog.at_level(logging.WARNING, "homing"):
        result = uploader.drain(None)
    assert (result.sent, result.rejected, result.remaining) == (3, 2, 0)
    assert (uploader.counters.sent, uploader.counters.rejected) == (3, 2)
    assert "rejected 2 event(s)" in caplog.text
    assert store.count() == 0


def test_events_without_a_result_are_kept(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    fill(store, 3)
    fake.handler = statuses({"id00002": 500})
    result = make_uploader().drain(None)
    assert (result.sent, result.remaining) == (2, 1)
    assert result.error is not None


@pytest.mark.parametrize(
    "handler",
    [
        error(500),
        error(503),
        error(429),
        error(408),
        raising(httpx.ConnectError("refused")),
        raising(httpx.ReadTimeout("slow")),
        lambda request: httpx.Response(202, content=b"not json"),
    ],
    ids=["500", "503", "429", "408", "connect", "timeout", "garbled"],
)
def test_transient_failures_keep_events_and_back_off_without_a_tight_loop(
    make_uploader: Callable[..., Uploader],
    store: Store,
    fake: FakeCollector,
    clock: FakeClock,
    handler: Callable[..., httpx.Response],
) -> None:
    fill(store, 150)
    fake.handler = handler
    uploader = make_uploader(flush_interval=60)
    result = uploader.drain(None)
    assert result.remaining == 150 and result.error
    assert len(fake.requests) == 1  # one failure ends the drain
    # An hour of simulated time, woken every second (as if 100 events kept arriving):
    for _ in range(3600):
        clock.advance(1)
        uploader.tick(woken=True)
    # Waits grow 1..2..4.. up to 60 s (full jitter, at least 1 s): far from 3,600 tries.
    assert 60 <= len(fake.requests) <= 400
    assert store.count() == 150
    fake.handler = accept_all
    clock.advance(3600)
    assert uploader.tick(woken=True) is not None
    assert store.count() == 0
    assert uploader.failures == 0


def test_retry_after_is_honoured(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    fill(store, 1)
    fake.handler = error(429, {"Retry-After": "120"})
    uploader = make_uploader(flush_interval=10)
    uploader.drain(None)
    start = clock.now
    while len(fake.requests) < 2:
        clock.advance(1)
        uploader.tick(woken=True)
    assert clock.now - start >= 120


def test_401_and_403_wait_long_and_are_logged_once(
    make_uploader: Callable[..., Uploader],
    store: Store,
    fake: FakeCollector,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fill(store, 3)
    fake.handler = error(403)
    uploader = make_uploader(flush_interval=60)
    with caplog.at_level(logging.INFO, "homing"):
        for _ in range(3 * 3600):
            clock.advance(1)
            uploader.tick(woken=True)
    # 10 x flush_interval = 600 s between attempts
    assert len(fake.requests) == 3 * 3600 // 600
    assert caplog.text.count("answered 403") == 1
    assert store.count() == 3
    assert uploader.counters.last_error == "403: nope"


def test_a_whole_request_400_drops_the_batch_and_counts_it(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    fill(store, 120)
    fake.handler = error(400)
    uploader = make_uploader()
    result = uploader.drain(None)
    assert result.remaining == 0
    assert uploader.counters.dropped == {"bad_request": 120}


def test_413_splits_the_batch(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    fill(store, 100)

    def small_only(request: httpx.Request) -> httpx.Response:
        if len(decode(request)["BatchItem"][ENDPOINT]["Events"]) > 30:
            return httpx.Response(413, json={"Message": "too big", "RequestID": "r"})
        return accept_all(request)

    fake.handler = small_only
    result = make_uploader().drain(None)
    assert (result.sent, result.remaining) == (100, 0)
    sizes = [len(decode(r)["BatchItem"][ENDPOINT]["Events"]) for r in fake.requests]
    assert sizes == [100, 50, 25, 25, 25, 25]


def test_nothing_is_sent_while_the_policy_says_no(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    online = False
    fill(store, 10)
    uploader = make_uploader(policy=lambda: online)
    for _ in range(10):
        clock.advance(60)
        uploader.tick(woken=True)
    assert uploader.drain(None).error
    assert fake.requests == []
    online = True
    assert uploader.drain(None).sent == 10


def test_the_interval_schedules_uploads(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    uploader = make_uploader(flush_interval=60)
    fill(store, 1)
    assert uploader.tick() is None  # not yet due
    clock.advance(61)
    result = uploader.tick()
    assert result is not None and result.sent == 1


def test_the_thread_uploads_when_woken(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    uploader = make_uploader(flush_interval=3600)
    uploader.start()
    fill(store, 100)
    uploader.notify()
    for _ in range(500):
        if store.count() == 0:
            break
        time.sleep(0.01)
    assert store.count() == 0
    assert uploader.close(1).remaining == 0


def test_a_full_batch_goes_at_once_when_a_profile_send_wakes_the_thread_too(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    # A session starts (the profile is due) as a batch fills: both wake the thread once.
    uploader = make_uploader(flush_interval=3600)
    fill(store, 100)
    uploader.notify_endpoint()
    uploader.notify()
    uploader.start()
    for _ in range(500):
        if store.count() == 0:
            break
        time.sleep(0.01)
    assert store.count() == 0, "the full batch waited for the next interval"
    assert uploader.close(1).remaining == 0


def test_the_thread_loop_backs_off_in_simulated_time(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    fill(store, 10)
    fake.handler = error(503)
    waits: list[float] = []
    done = threading.Event()

    def wait(event: threading.Event, seconds: float) -> bool:
        # Simulated sleep: the clock jumps, no real time passes.
        waits.append(seconds)
        clock.advance(seconds)
        if clock.now - start >= 6 * 3600:
            uploader._stopping = True
            done.set()
        return False

    uploader = make_uploader(flush_interval=60, wait=wait)
    start = clock.now
    uploader.start()
    assert done.wait(30)
    # Six hours of a failing collector: attempts spaced 1..60 s apart, never a spin.
    assert 6 * 60 <= len(fake.requests) <= 6 * 3600
    assert sum(1 for seconds in waits if seconds < 0.5) <= 2
    assert store.count() == 10


def test_retry_after_as_an_http_date(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    fill(store, 1)
    fake.handler = error(503, {"Retry-After": formatdate(clock.now + 300, usegmt=True)})
    uploader = make_uploader(flush_interval=10)
    uploader.drain(None)
    assert uploader.not_before - clock.now >= 299


def test_an_unknown_app_waits_long_like_a_bad_key(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    fill(store, 1)
    fake.handler = error(404)
    uploader = make_uploader(flush_interval=60)
    uploader.drain(None)
    assert uploader.not_before - clock.now == 600
    assert store.count() == 1


def _thread_waits(uploader: Uploader, waits: list[float], rounds: int) -> threading.Event:
    """A `wait` for the uploader thread that records each wait and stops after `rounds`."""
    done = threading.Event()

    def wait(event: threading.Event, seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) >= rounds:
            uploader._stopping = True
            done.set()
        return False

    uploader._wait = wait
    return done


def test_after_a_failure_the_thread_waits_for_the_interval_while_the_policy_says_no(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    online = True
    fill(store, 1)
    fake.handler = error(503)
    uploader = make_uploader(policy=lambda: online, flush_interval=60)
    uploader.drain(None)
    assert uploader.failures == 1
    online = False  # e.g. the device moved to a link the policy refuses
    clock.advance(3600)  # the backoff has long ended
    waits: list[float] = []
    done = _thread_waits(uploader, waits, 20)
    uploader.start()
    assert done.wait(10)
    # The first wait is the ended backoff; each one after it is the interval, never a spin.
    assert all(seconds >= 59 for seconds in waits[1:]), waits
    assert len(fake.requests) == 1


def test_after_a_failure_and_a_dropped_batch_the_thread_waits_for_the_interval(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    fill(store, 1)
    fake.handler = error(503)
    uploader = make_uploader(flush_interval=60)
    uploader.drain(None)
    clock.advance(3600)
    fake.handler = error(400)  # the retry is refused as a whole: dropped, the queue is empty
    waits: list[float] = []
    done = _thread_waits(uploader, waits, 20)
    uploader.start()
    assert done.wait(10)
    assert all(seconds >= 59 for seconds in waits[1:]), waits
    assert len(fake.requests) == 2
    assert uploader.counters.dropped == {"bad_request": 1}
    assert uploader.failures == 0


def test_a_wall_clock_stepped_back_does_not_hold_uploads(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector, clock: FakeClock
) -> None:
    # Scheduling follows the monotonic clock: NTP setting the wall clock back an hour must
    # not hold the next upload for that hour.
    uploader = make_uploader(flush_interval=0.05, monotonic=time.monotonic)
    fill(store, 1)
    clock.advance(-3600)
    uploader.start()
    try:
        deadline = time.monotonic() + 5
        while store.count() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.count() == 0, "the upload waited for the wall clock to catch up"
    finally:
        uploader.close(1)


def test_flush_waits_for_the_batch_the_thread_is_sending(
    make_uploader: Callable[..., Uploader], store: Store, fake: FakeCollector
) -> None:
    # The background upload holds the first 100 events in a request when flush() starts:
    # flush sends the other 50, then waits for that request, and reports what is left
    # once it is answered, not the events in flight as if nothing were sending them.
    fill(store, 150)
    uploader = make_uploader()
    in_request, answer = threading.Event(), threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        events = decode(request)["BatchItem"][ENDPOINT]["Events"]
        if len(events) == 100:  # the thread's
            in_request.set()
            assert answer.wait(10)
        else:  # flush's own 50: the thread's request is answered a little later
            threading.Timer(0.2, answer.set).start()
        return accept_all(request)

    fake.handler = handler
    thread = threading.Thread(target=uploader.tick, kwargs={"woken": True})
    thread.start()
    assert in_request.wait(10)
    result = uploader.drain(time.monotonic() + 10)
    thread.join(10)
    assert (result.sent, result.rejected, result.remaining, result.error) == (50, 0, 0, None)
    assert store.count() == 0
    assert len(fake.events()) == 150
