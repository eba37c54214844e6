"""The SDK's real HTTP path against pytest-httpserver, which injects the faults.

A real `homing.Analytics` (httpx's own transport, SQLite in tmp_path) talks to a fake
collector on loopback that answers 500, 429 with Retry-After, answers too late, or drops
the connection without a word, and then recovers. The uploader thread runs on simulated
time: its waits advance the clock instead of sleeping, so minutes of backoff take
milliseconds and every gap between attempts can be measured exactly.
"""

from __future__ import annotations

import gzip
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import homing
import homing._uploader
from homing import _json

APP_ID = "app-faults"
TOKEN = "hm_ingest_faults"
EVENTS_PATH = f"/v1/apps/{APP_ID}/events"
START = 1_800_000_000.0  # 2027-01-15T08:00:00Z, where simulated time begins


class SimulatedTime:
    """A clock that the uploader's waits move forward, up to a limit the test sets.

    The uploader thread runs freely until its next wake-up would pass the limit; there it
    parks, and `run_for()` returns, so the test looks at a thread that stands still.
    """

    def __init__(self, start: float = START) -> None:
        self.now = start
        self._end = start  # the thread parks at once until the test lets time run
        self._cond = threading.Condition()
        self._parked = threading.Event()

    def __call__(self) -> float:
        return self.now

    def run_for(self, seconds: float) -> None:
        """Let `seconds` of simulated time pass; return once the uploader has parked."""
        with self._cond:
            self._end += seconds
            self._parked.clear()
            self._cond.notify_all()
        assert self._parked.wait(10), "the uploader did not reach the end of simulated time"

    def wait(self, wake: threading.Event, seconds: float) -> bool:
        # The uploader's `wait` hook: the same contract as threading.Event.wait.
        with self._cond:
            target = self.now + seconds
            while not wake.is_set():
                if target <= self._end:
                    self.now = target
                    return False
                # Time runs on to the limit while the thread sleeps through it.
                self.now = self._end
                self._parked.set()
                # close() and a full batch set `wake`, an Event that cannot notify us:
                # look again soon.
                self._cond.wait(0.02)
            return True


@dataclass
class Received:
    at: float  # simulated time of arrival
    headers: dict[str, str]
    body: dict[str, Any]  # the decompressed PutEvents request

    @property
    def event_ids(self) -> list[str]:
        return [eid for item in self.body["BatchItem"].values() for eid in item["Events"]]


Fault = Callable[[Request], Response]


@dataclass
class FakeCollector:
    """Records each PutEvents request, then answers with the next fault or, if none, 202."""

    clock: SimulatedTime
    faults: list[Fault] = field(default_factory=list)
    always: Fault | None = None  # answers every request while set
    requests: list[Received] = field(default_factory=list)
    reject: str = "Rejected"  # events of this type get a per-event 400

    def __call__(self, request: Request) -> Response:
        assert request.headers.get("Content-Encoding") == "gzip"
        body = _json.loads(gzip.decompress(request.get_data()))
        self.requests.append(Received(self.clock(), dict(request.headers), body))
        if self.always is not None:
            return self.always(request)
        if self.faults:
            return self.faults.pop(0)(request)
        return self.accept(body)

    def accept(self, body: dict[str, Any]) -> Response:
        # Per-event statuses built from the request, as the collector builds them.
        results = {}
        for endpoint_id, item in body["BatchItem"].items():
            statuses = {}
            for event_id, event in item["Events"].items():
                if event["EventType"] == self.reject:
                    statuses[event_id] = {"StatusCode": 400, "Message": "EventType: not wanted"}
                else:
                    statuses[event_id] = {"StatusCode": 202, "Message": "Accepted"}
            results[endpoint_id] = {
                "EndpointItemResponse": {"StatusCode": 202, "Message": "Accepted"},
                "EventsItemResponse": statuses,
            }
        return Response(_json.dumps({"Results": results}), 202, mimetype="application/json")

    def ids_sent(self) -> list[str]:
        return [eid for received in self.requests for eid in received.event_ids]


def status(code: int, headers: dict[str, str] | None = None) -> Fault:
    def answer(request: Request) -> Response:
        body = _json.dumps({"Message": f"injected {code}", "RequestID": "r-1"})
        return Response(body, code, headers=headers, mimetype="application/json")

    return answer


def drop(request: Request) -> Response:
    # werkzeug's server treats a ConnectionError from the app as a dropped connection: it
    # closes the socket without writing a byte, which is what a crashed proxy looks like.
    raise ConnectionResetError("connection dropped on purpose")


def slow(release: threading.Event, then: FakeCollector) -> Fault:
    # Answers only once the test says so (bounded), long after the client gave up.
    def answer(request: Request) -> Response:
        release.wait(10)
        return then.accept(_json.loads(gzip.decompress(request.get_data())))

    return answer


@pytest.fixture
def sim() -> SimulatedTime:
    return SimulatedTime()


@pytest.fixture
def server(httpserver: HTTPServer, sim: SimulatedTime) -> Iterator[FakeCollector]:
    fake = FakeCollector(sim)
    httpserver.expect_request(EVENTS_PATH, method="POST").respond_with_handler(fake)
    # UpdateEndpoint, sent before the events whenever the profile changed: always fine here.
    httpserver.expect_request(
        re.compile(r"/v1/apps/[^/]+/endpoints/[^/]+"), method="PUT"
    ).respond_with_json({"Message": "Accepted", "RequestID": "r-2"}, status=202)
    yield fake
    httpserver.check_assertions()  # an assert in FakeCollector, e.g. a body not gzipped
    # Only the injected drops may have failed inside the server; anything else is a bug.
    errors = httpserver.handler_errors
    assert all(isinstance(e, ConnectionResetError) for e in errors), errors
    httpserver.clear_handler_errors()


@pytest.fixture
def make(
    httpserver: HTTPServer, server: FakeCollector, sim: SimulatedTime, tmp_path: Path
) -> Iterator[Callable[..., homing.Analytics]]:
    """Analytics on the fake collector, with the real transport, on simulated time."""
    made: list[homing.Analytics] = []

    def make_one(**options: Any) -> homing.Analytics:
        options.setdefault("data_dir", tmp_path / "sdk")
        options.setdefault("flush_interval", 60.0)
        options.setdefault("shutdown_timeout", 0.5)
        analytics = homing.Analytics(APP_ID, httpserver.url_for("/"), TOKEN, clock=sim, **options)
        # Analytics takes a clock but no wait hook, and schedules on the monotonic clock:
        # hand the uploader the simulated ones before its thread starts (the store is
        # empty, so no thread runs yet).
        uploader = analytics._uploader
        assert uploader._thread is None
        uploader._wait = sim.wait
        uploader.monotonic = sim
        uploader._next_flush = sim() + uploader.flush_interval
        made.append(analytics)
        return analytics

    yield make_one
    for analytics in made:
        analytics.close()


def record(analytics: homing.Analytics, n: int, event_type: str = "Tap") -> None:
    for i in range(n):
        analytics.record_event(event_type, attributes={"i": str(i)}, metrics={"n": i})


def test_the_request_is_gzip_putevents_with_the_profile_and_a_bearer_token(
    make: Callable[..., homing.Analytics], server: FakeCollector
) -> None:
    analytics = make(app_title="Faults", app_version_code="7")
    analytics.record_event("Item Bought", attributes={"item": "XYZ"}, metrics={"price": 1.99})
    result = analytics.flush(timeout=5)
    assert (result.sent, result.remaining, result.error) == (1, 0, None)

    [received] = server.requests
    assert received.headers["Authorization"] == f"Bearer {TOKEN}"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["User-Agent"].startswith("homing-python/")
    [(endpoint_id, item)] = received.body["BatchItem"].items()
    assert endpoint_id == analytics._endpoint.id
    profile = item["Endpoint"]
    assert profile["ChannelType"] == "CUSTOM"
    assert profile["Demographic"]["AppVersion"] == "7"
    assert profile["EffectiveDate"].endswith("Z")
    [(event_id, event)] = item["Events"].items()
    assert len(event_id) == 36
    assert event["EventType"] == "Item Bought"
    assert event["Attributes"] == {"item": "XYZ"}
    assert event["Metrics"] == {"price": 1.99}
    assert event["AppTitle"] == "Faults" and event["SdkName"] == "homing-python"
    assert event["Timestamp"] == "2027-01-15T08:00:00.000Z"  # the simulated clock's time


def test_500_keeps_every_event_and_backs_off(
    make: Callable[..., homing.Analytics], server: FakeCollector, sim: SimulatedTime
) -> None:
    server.always = status(500)
    analytics = make(flush_interval=60.0)
    record(analytics, 5)
    sim.run_for(600)

    times = [received.at for received in server.requests]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert times[0] - START == 60.0  # the first upload waits for the interval
    assert len(gaps) >= 5, "the uploader gave up retrying"
    for attempt, gap in enumerate(gaps, start=1):
        # Exponential with full jitter: at least 1 s (never a tight loop), at most
        # 2**(attempt-1) s, and never longer than the flush interval.
        assert 1.0 <= gap <= min(2 ** (attempt - 1), 60.0) + 1e-6, (attempt, gaps)
    assert all(r.event_ids == server.requests[0].event_ids for r in server.requests)
    assert len(server.requests[0].event_ids) == 5
    stats = analytics.stats()
    assert (stats.queued, stats.sent, stats.rejected, stats.dropped) == (5, 0, 0, {})
    assert stats.last_error is not None and stats.last_error.startswith("500")

    server.always = None  # the collector recovers: the next retry, within 60 s, delivers
    sent_before = len(server.requests)
    sim.run_for(60)
    assert len(server.requests) == sent_before + 1
    stats = analytics.stats()
    assert (stats.queued, stats.sent, stats.rejected) == (0, 5, 0)
    sim.run_for(59)  # back to the normal interval: nothing more to send, nothing sent
    assert len(server.requests) == sent_before + 1


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured(
    make: Callable[..., homing.Analytics],
    server: FakeCollector,
    sim: SimulatedTime,
    form: str,
) -> None:
    def too_many(request: Request) -> Response:
        wait = "45"
        if form == "http-date":
            wait = format_datetime(datetime.fromtimestamp(sim() + 45, timezone.utc), usegmt=True)
        return status(429, {"Retry-After": wait})(request)

    server.faults = [too_many]
    # Retry-After is longer than the flush interval, which caps the backoff: it still wins.
    analytics = make(flush_interval=10.0)
    record(analytics, 3)
    sim.run_for(44.9 + 10)  # 10 s to the first attempt, then 44.9 s of Retry-After
    assert len(server.requests) == 1
    assert analytics.stats().queued == 3
    assert analytics.stats().last_error == "429: injected 429"

    sim.run_for(0.2)
    first, second = server.requests
    assert second.at - first.at == pytest.approx(45.0)
    assert second.event_ids == first.event_ids
    assert (analytics.stats().queued, analytics.stats().sent) == (0, 3)


def test_a_slow_answer_keeps_the_events_and_they_are_sent_again_once(
    make: Callable[..., homing.Analytics], server: FakeCollector
) -> None:
    release = threading.Event()
    server.faults = [slow(release, server)]
    analytics = make()
    record(analytics, 4)
    started = time.monotonic()
    # With a deadline the read timeout is what is left of it: the answer comes too late.
    result = analytics.flush(timeout=0.5)
    assert time.monotonic() - started < 3
    assert result.sent == 0 and result.remaining == 4
    assert result.error is not None and "ReadTimeout" in result.error
    release.set()  # the late answer goes out to a socket nobody reads any more

    result = analytics.flush(timeout=5)
    assert (result.sent, result.remaining, result.error) == (4, 0, None)
    late, again = server.requests
    # The collector stored the late batch and dedups the resend by event id: the SDK
    # must send exactly the same ids, once more, and never again.
    assert sorted(again.event_ids) == sorted(late.event_ids) and len(set(late.event_ids)) == 4
    assert analytics.flush(timeout=5).sent == 0
    assert len(server.requests) == 2


def test_the_uploader_gives_up_on_a_slow_answer_and_resends_after_its_backoff(
    make: Callable[..., homing.Analytics],
    server: FakeCollector,
    sim: SimulatedTime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The background path has no deadline: the SDK's own read timeout (10 s) bounds it.
    # Shortened here, so that the answer is late without the test waiting 10 s.
    monkeypatch.setattr(homing._uploader, "TIMEOUT", httpx.Timeout(0.3, connect=5.0))
    release = threading.Event()
    server.faults = [slow(release, server)]
    analytics = make(flush_interval=60.0)
    record(analytics, 4)
    sim.run_for(60)  # the first upload times out; the retry is due 1 s later
    assert len(server.requests) == 1
    stats = analytics.stats()
    assert (stats.queued, stats.sent) == (4, 0)
    assert stats.last_error is not None and stats.last_error.startswith("ReadTimeout")
    release.set()

    sim.run_for(1)
    late, again = server.requests
    assert again.at - late.at == pytest.approx(1.0)
    assert again.event_ids == late.event_ids
    assert (analytics.stats().queued, analytics.stats().sent) == (0, 4)


def test_a_dropped_connection_keeps_the_events_then_all_are_delivered(
    make: Callable[..., homing.Analytics], server: FakeCollector
) -> None:
    server.faults = [drop, drop]
    analytics = make()
    record(analytics, 3)
    record(analytics, 2, event_type="Rejected")
    for _ in range(2):
        result = analytics.flush(timeout=5)
        assert result.sent == 0 and result.remaining == 5
        assert result.error is not None and "RemoteProtocolError" in result.error
    assert analytics.stats().queued == 5

    result = analytics.flush(timeout=5)  # the collector is back
    assert (result.sent, result.rejected, result.remaining, result.error) == (3, 2, 0, None)
    stats = analytics.stats()
    assert (stats.queued, stats.sent, stats.rejected, stats.dropped) == (0, 3, 2, {})
    assert stats.last_error == "rejected: EventType: not wanted"
    first, second, delivered = server.requests
    assert first.event_ids == second.event_ids == delivered.event_ids
    assert analytics.flush(timeout=5).sent == 0
    assert len(server.requests) == 3


def test_every_fault_in_a_row_then_recovery_delivers_each_event_once(
    make: Callable[..., homing.Analytics], server: FakeCollector, sim: SimulatedTime
) -> None:
    # The background thread alone, through 500, a drop, 503, and 429, then 202s with
    # per-event 400s; 250 events make three batches (100 is the batch limit).
    server.faults = [status(500), drop, status(503), status(429, {"Retry-After": "120"})]
    analytics = make(flush_interval=60.0)
    record(analytics, 240)
    record(analytics, 10, event_type="Rejected")
    sim.run_for(3600)

    stats = analytics.stats()
    assert (stats.queued, stats.sent, stats.rejected, stats.dropped) == (0, 240, 10, {})
    failed, delivered = server.requests[:4], server.requests[4:]
    assert [len(r.event_ids) for r in delivered] == [100, 100, 50]
    ids = [eid for r in delivered for eid in r.event_ids]
    assert len(ids) == len(set(ids)) == 250
    assert all(r.event_ids == failed[0].event_ids for r in failed)
    assert delivered[0].at - failed[-1].at == pytest.approx(120.0)


def test_close_waits_for_the_batch_in_flight_within_the_shutdown_timeout(
    make: Callable[..., homing.Analytics], server: FakeCollector, tmp_path: Path
) -> None:
    # The thread's request is answered 0.3 s into close(): close() must wait for it
    # (within shutdown_timeout), or the stored batch stays on disk and goes again later.
    release = threading.Event()
    server.faults = [slow(release, server)]
    analytics = make(shutdown_timeout=5.0)
    record(analytics, 100)  # a full batch wakes the uploader thread
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.requests) == 1
    timer = threading.Timer(0.3, release.set)
    timer.start()
    started = time.monotonic()
    try:
        result = analytics.close()
    finally:
        timer.cancel()
        release.set()
    assert time.monotonic() - started < 5
    assert result.error is None and result.remaining == 0
    assert analytics.stats().queued == 0 and analytics.stats().sent == 100
    assert len(server.requests) == 1
    again = homing.Analytics(
        APP_ID, "http://127.0.0.1:9", TOKEN, data_dir=tmp_path / "sdk", network_policy=lambda: False
    )
    try:
        assert again.stats().queued == 0, "the batch the collector stored is sent again"
    finally:
        again.close()
