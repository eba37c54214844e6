from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import homing
from homing import _json
from homing._state import State
from homing._store import Store
from tests.sdk.conftest import FakeClock, FakeCollector, accept_all, decode

Make = Callable[..., homing.Analytics]


def wait_until_empty(analytics: homing.Analytics) -> None:
    deadline = time.monotonic() + 10
    while analytics.stats().queued and time.monotonic() < deadline:
        time.sleep(0.01)
    assert analytics.stats().queued == 0


def test_the_public_surface_is_sorted_and_complete() -> None:
    assert homing.__all__ == sorted(homing.__all__)
    for name in homing.__all__:
        assert getattr(homing, name) is not None
    assert issubclass(homing.InvalidEventError, homing.HomingError)
    assert issubclass(homing.ConfigurationError, ValueError)


def test_record_then_flush(make_analytics: Make, fake: FakeCollector) -> None:
    analytics = make_analytics(app_title="Shop", app_version_code="7")
    analytics.record_event("Item Bought", attributes={"item": "XYZ"}, metrics={"price": 1.99})
    assert analytics.stats().queued == 1
    result = analytics.flush()
    assert (result.sent, result.remaining, result.error) == (1, 0, None)
    [event] = fake.events()
    assert event["EventType"] == "Item Bought"
    assert event["AppTitle"] == "Shop"
    assert event["SdkName"] == "homing-python"
    stats = analytics.stats()
    assert (stats.queued, stats.sent, stats.rejected, stats.dropped) == (0, 1, 0, {})


def test_each_batch_carries_the_endpoint_profile(make_analytics: Make, fake: FakeCollector) -> None:
    analytics = make_analytics(app_version_code="7")
    analytics.record_event("e")
    analytics.flush()
    [(_, item)] = decode(fake.requests[0])["BatchItem"].items()
    assert item["Endpoint"]["ChannelType"] == "CUSTOM"
    assert item["Endpoint"]["Demographic"]["AppVersion"] == "7"
    assert "EffectiveDate" in item["Endpoint"]


def test_the_endpoint_id_is_stable_across_restarts(make_analytics: Make) -> None:
    first = make_analytics()
    endpoint_id = first._endpoint.id
    first.close()
    assert make_analytics()._endpoint.id == endpoint_id


def test_invalid_events_raise_and_are_not_stored(make_analytics: Make) -> None:
    analytics = make_analytics()
    with pytest.raises(homing.InvalidEventError, match=r"Attributes\.k: must be a string"):
        analytics.record_event("e", attributes={"k": 3})  # type: ignore[dict-item]
    assert analytics.stats().queued == 0


def test_global_attributes_and_metrics(make_analytics: Make, fake: FakeCollector) -> None:
    analytics = make_analytics()
    analytics.set_global_attribute("plan", "pro")
    analytics.set_global_metric("build", 42)
    analytics.record_event("a", attributes={"plan": "free"})
    analytics.remove_global_attribute("plan")
    analytics.remove_global_metric("build")
    analytics.record_event("b")
    analytics.flush()
    a, b = fake.events()
    assert a["Attributes"] == {"plan": "free"} and a["Metrics"] == {"build": 42}
    assert "Attributes" not in b and "Metrics" not in b


@pytest.mark.parametrize(("key", "value"), [("k" * 51, "v"), ("k", "v" * 201), ("k", 1), (1, "v")])
def test_a_bad_global_attribute_raises_at_once(
    make_analytics: Make, key: object, value: object
) -> None:
    with pytest.raises(homing.InvalidEventError):
        make_analytics().set_global_attribute(key, value)  # type: ignore[arg-type]


def test_a_bool_global_metric_raises(make_analytics: Make) -> None:
    with pytest.raises(homing.InvalidEventError, match="not bool"):
        make_analytics().set_global_metric("m", True)


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (("", "http://c.test", "k"), {}, "app_id"),
        (("a", "ftp://c.test", "k"), {}, "http:// or https://"),
        (("a", "not a url", "k"), {}, "http:// or https://"),
        (("a", "http://c.test", ""), {}, "api_key"),
        (("a", "http://c.test", "k"), {"flush_interval": 0}, "flush_interval"),
        (("a", "http://c.test", "k"), {"shutdown_timeout": -1}, "shutdown_timeout"),
        (("a", "http://c.test", "k"), {"max_storage_bytes": 10}, "max_storage_bytes"),
        (("a", "http://c.test", "k"), {"app_title": "t" * 5000}, "AppTitle"),
        (("a", "http://c.test", "k"), {"network_policy": "sometimes"}, "network policy"),
    ],
)
def test_bad_configuration_raises(
    tmp_path: Path, args: tuple[str, ...], kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(homing.ConfigurationError, match=words):
        homing.Analytics(*args, data_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_sessions_are_recorded_and_events_carry_them(
    make_analytics: Make, fake: FakeCollector, clock: FakeClock
) -> None:
    analytics = make_analytics()
    with analytics.session():
        clock.advance(2)
        analytics.record_event("inside")
        clock.advance(3)
    analytics.record_event("outside")
    analytics.flush()
    start, inside, stop, outside = fake.events()
    assert start["EventType"] == "_session.start"
    assert inside["Session"]["Id"] == start["Session"]["Id"]
    assert stop["EventType"] == "_session.stop" and stop["Session"]["Duration"] == 5000
    assert "Session" not in outside


def test_pause_and_resume(make_analytics: Make, fake: FakeCollector, clock: FakeClock) -> None:
    analytics = make_analytics()
    analytics.start_session()
    analytics.pause_session()
    clock.advance(1)
    analytics.resume_session()
    analytics.stop_session()
    analytics.flush()
    kinds = [e["EventType"] for e in fake.events()]
    assert kinds == ["_session.start", "_session.pause", "_session.resume", "_session.stop"]


def test_a_clock_set_back_during_a_session_loses_no_session_event(
    make_analytics: Make, fake: FakeCollector, clock: FakeClock
) -> None:
    analytics = make_analytics()
    analytics.start_session()
    clock.advance(-30)  # NTP steps the wall clock back
    analytics.pause_session()
    analytics.resume_session()
    analytics.stop_session()
    analytics.flush()
    got = fake.events()
    kinds = [e["EventType"] for e in got]
    assert kinds == ["_session.start", "_session.pause", "_session.resume", "_session.stop"]
    start, pause = got[0]["Session"], got[1]["Session"]
    assert pause["StopTimestamp"] == start["StartTimestamp"] and pause["Duration"] == 0


def test_a_session_left_open_is_closed_at_the_next_start(
    make_analytics: Make, fake: FakeCollector, clock: FakeClock
) -> None:
    first = make_analytics()
    first.start_session()
    first._closed = True  # as if the process died: no close(), no stop
    first._store.close()
    first._state.close()
    clock.advance(100)
    second = make_analytics()
    second.flush()
    kinds = [e["EventType"] for e in fake.events()]
    assert kinds == ["_session.start", "_session.stop"]


def test_a_full_store_drops_the_oldest_and_stats_say_so(make_analytics: Make) -> None:
    analytics = make_analytics(max_storage_bytes=64 * 1024, network_policy=lambda: False)
    for i in range(2000):
        analytics.record_event("e", attributes={"i": str(i)})
    stats = analytics.stats()
    assert stats.dropped["storage_full"] > 0
    assert stats.queued + stats.dropped["storage_full"] == 2000


def test_a_corrupt_store_does_not_stop_the_app(tmp_path: Path, make_analytics: Make) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.sqlite3").write_bytes(os.urandom(8192))
    analytics = make_analytics()
    analytics.record_event("e")
    assert analytics.stats().queued == 1


def test_a_corrupt_state_file_does_not_stop_the_app(tmp_path: Path, make_analytics: Make) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.sqlite3").write_bytes(b"garbage" * 1000)
    analytics = make_analytics()
    analytics.record_event("e")
    with analytics.session():
        pass
    assert analytics.stats().queued == 3


def test_the_network_policy_gates_uploads(make_analytics: Make, fake: FakeCollector) -> None:
    online = False
    analytics = make_analytics(network_policy=lambda: online)
    analytics.record_event("e")
    result = analytics.flush()
    assert result.sent == 0 and result.remaining == 1 and result.error
    assert fake.requests == []
    online = True
    assert analytics.flush().sent == 1


def test_close_flushes_and_is_idempotent(make_analytics: Make, fake: FakeCollector) -> None:
    with make_analytics() as analytics:
        analytics.record_event("e")
    assert len(fake.events()) == 1
    assert analytics.close().error == "closed"
    analytics.record_event("late")  # dropped, counted, not raised
    assert analytics.stats().dropped == {"closed": 1}


def test_close_is_bounded_when_the_collector_hangs(make_analytics: Make) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("hung")  # what a bounded read would end in

    analytics = make_analytics(transport=httpx.MockTransport(hang), shutdown_timeout=0.5)
    analytics.record_event("e")
    result = analytics.close()
    assert result.remaining == 1


def test_record_event_from_many_threads(make_analytics: Make, fake: FakeCollector) -> None:
    analytics = make_analytics()

    def work(n: int) -> None:
        for i in range(200):
            analytics.record_event("e", attributes={"t": str(n), "i": str(i)})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    analytics.flush()
    wait_until_empty(analytics)  # the woken uploader thread may still have a batch
    seen = {(e["Attributes"]["t"], e["Attributes"]["i"]) for e in fake.events()}
    assert len(seen) == 1600
    assert len(fake.events()) == 1600


def test_the_100th_event_wakes_the_uploader(make_analytics: Make, fake: FakeCollector) -> None:
    analytics = make_analytics(flush_interval=3600.0)
    for _ in range(100):
        analytics.record_event("e")
    wait_until_empty(analytics)
    assert len(fake.events()) == 100


def test_after_fork_the_child_uploads_on_its_own(make_analytics: Make, tmp_path: Path) -> None:
    analytics = make_analytics()
    analytics.record_event("parent")
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking with threads (the uploader's is running).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            sent: list[str] = []

            def handler(request: httpx.Request) -> httpx.Response:
                if request.method == "PUT":  # UpdateEndpoint
                    return httpx.Response(202, json={})
                for item in decode(request)["BatchItem"].values():
                    sent.extend(e["EventType"] for e in item["Events"].values())
                return accept_all(request)

            analytics._uploader._transport = httpx.MockTransport(handler)
            analytics.record_event("child")
            analytics.flush(timeout=5)
            os.write(write, ",".join(sorted(sent)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        sent = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert sent == "child,parent"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_another_thread_holds_the_session_lock(make_analytics: Make) -> None:
    # The thread that holds the lock does not exist in the child: without a fresh lock
    # there, the child's first session call or event would wait forever.
    analytics = make_analytics()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with analytics._sessions._lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        read, write = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a threaded process may deadlock the child:
            # that is the very case under test.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                with analytics.session():
                    analytics.record_event("child")
                os.write(write, str(analytics.stats().queued).encode())
                code = 0
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join()
    os.close(write)
    # Bounded: a deadlocked child is killed and the test fails instead of hanging.
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read)
        pytest.fail("the child deadlocked on the session lock")
    with os.fdopen(read) as pipe:
        queued = pipe.read()
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert queued == "3"  # _session.start, child, _session.stop


def test_flush_and_stats_after_close_report_what_stayed_on_disk(make_analytics: Make) -> None:
    analytics = make_analytics(network_policy=lambda: False, shutdown_timeout=0.2)
    analytics.record_event("a")
    analytics.record_event("b")
    assert analytics.close().remaining == 2
    # The store is released: these must answer from what close() saw, not raise.
    assert analytics.flush() == homing.FlushResult(remaining=2, error="closed")
    assert analytics.stats().queued == 2


def test_an_event_recorded_while_close_runs_is_dropped_as_closed_not_as_corrupt(
    make_analytics: Make, tmp_path: Path
) -> None:
    # record_event() passed its closed check just before close() released the store.
    analytics = make_analytics(network_policy=lambda: False)
    for _ in range(5):
        analytics.record_event("before")
    inside, go = threading.Event(), threading.Event()
    real_put = analytics._store.put

    def put_after_close(event_id: str, body: bytes) -> bool:
        inside.set()
        go.wait(10)
        return real_put(event_id, body)

    analytics._store.put = put_after_close  # type: ignore[method-assign]
    recording = threading.Thread(target=analytics.record_event, args=("during",))
    recording.start()
    assert inside.wait(10)
    analytics.close()
    go.set()
    recording.join(10)
    data = tmp_path / "data"
    assert [p.name for p in data.iterdir() if ".corrupt-" in p.name] == []
    assert analytics.stats().dropped == {"closed": 1}
    again = make_analytics(network_policy=lambda: False)
    assert again.stats().queued == 5


def test_a_string_that_is_not_utf_8_is_refused_at_the_call_site(make_analytics: Make) -> None:
    # os.fsdecode turns undecodable bytes into lone surrogates, which JSON cannot carry.
    analytics = make_analytics(network_policy=lambda: False)
    with pytest.raises(homing.InvalidEventError) as raised:
        analytics.set_global_attribute("plan", "pro\ud800")
    assert raised.value.field == "Attributes.plan"
    analytics.record_event("Ok")  # the bad global attribute was not kept
    with pytest.raises(homing.InvalidEventError) as raised:
        analytics.record_event("Bad", attributes={"x": "\ud800"})
    assert raised.value.field == "Attributes.x"
    for update, field in [
        ({"attributes": {"x": "\ud800"}}, "Attributes.x"),
        ({"user_attributes": {"x": ["\ud800"]}}, "User.UserAttributes.x"),
        ({"user_id": "u\ud800"}, "User.UserId"),
    ]:
        with pytest.raises(homing.InvalidEndpointError) as bad_endpoint:
            analytics.update_endpoint(**update)  # type: ignore[arg-type]
        assert bad_endpoint.value.field == field
    assert analytics.stats().queued == 1


def test_a_forked_child_never_stops_or_clears_the_session_it_inherited(
    make_analytics: Make, tmp_path: Path
) -> None:
    # The child's side of a fork, in this process: what the fork hook and then the exit
    # hook do in the child.
    analytics = make_analytics(network_policy=lambda: False)
    analytics.start_session()
    session = analytics._sessions.current()
    assert session is not None
    analytics._after_fork_in_child()
    analytics.record_event("child")
    analytics.close()
    stored = Store(tmp_path / "data" / "events.sqlite3")
    try:
        rows = stored.claim(100, 10**6)
    finally:
        stored.close()
    events = [_json.loads(row.body) for row in rows]
    assert [e["EventType"] for e in events] == ["_session.start", "child"]
    assert events[1]["Session"]["Id"] == session["Id"]  # the child's events carry it
    state = State(tmp_path / "data" / "state.sqlite3")
    try:
        assert state.table("session")["session"]["id"] == session["Id"]  # still saved
    finally:
        state.close()


def test_session_calls_after_close_do_nothing_and_never_reopen_the_state(
    make_analytics: Make, tmp_path: Path
) -> None:
    analytics = make_analytics(network_policy=lambda: False)
    analytics.close()
    threads = threading.active_count()
    analytics.start_session()
    analytics.pause_session()
    analytics.resume_session()
    with analytics.session():
        pass
    analytics.stop_session()
    assert threading.active_count() == threads  # no state file reopened (sqlitedict thread)
    assert analytics._state._tables == {}
    assert analytics.stats().dropped == {}
    again = make_analytics(network_policy=lambda: False)  # no phantom session to recover
    assert again.stats().queued == 0
