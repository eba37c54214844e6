"""The endpoint profile: merge, validation, persistence, coalescing, when it is sent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import homing
from homing._credential import HEADER, DeviceCredential
from homing._device import Probe
from homing._endpoint import Endpoint
from homing._network import coerce_policy
from homing._store import Store
from homing._uploader import Uploader
from homing.wire import format_timestamp
from tests.sdk.conftest import FakeClock, FakeCollector, decode

Make = Callable[..., homing.Analytics]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_update_endpoint_merges_like_the_collector(make_analytics: Make) -> None:
    analytics = make_analytics(app_version_code="3.1")
    analytics.update_endpoint(
        attributes={"interests": ["cooking", "cycling"], "plan": "pro"},
        metrics={"purchases": 3},
        location={"Country": "FR", "city": "Lyon", "latitude": 45.76},
        opt_out=False,
        address="device-token",
    )
    analytics.update_endpoint(attributes={"plan": ["free"], "interests": []}, metrics={"visits": 1})
    analytics.identify("user-42", team=["red"], level="3")
    analytics.identify("user-42", level="4")
    profile = analytics.endpoint_profile()
    assert profile["Attributes"] == {"plan": ["free"]}  # [] removed it
    assert profile["Metrics"] == {"purchases": 3, "visits": 1}
    assert profile["Location"] == {"Country": "FR", "City": "Lyon", "Latitude": 45.76}
    assert profile["OptOut"] == "NONE" and profile["Address"] == "device-token"
    assert profile["User"] == {"UserId": "user-42",
                               "UserAttributes": {"team": ["red"], "level": ["4"]}}  # fmt: skip
    assert profile["ChannelType"] == "CUSTOM"
    assert profile["Demographic"]["AppVersion"] == "3.1"
    assert profile["Demographic"]["Platform"]  # probed from this machine
    analytics.update_endpoint(demographic={"model": "Kiosk 2"}, opt_out=True)
    profile = analytics.endpoint_profile()
    assert profile["Demographic"]["Model"] == "Kiosk 2" and profile["OptOut"] == "ALL"
    assert profile["Demographic"]["AppVersion"] == "3.1"


def test_the_profile_and_the_id_survive_a_restart(make_analytics: Make) -> None:
    first = make_analytics()
    first.update_endpoint(attributes={"plan": "pro"}, user_id="u1")
    endpoint_id = first.endpoint_id
    first.close()
    second = make_analytics()
    assert second.endpoint_id == endpoint_id
    second.update_endpoint(attributes={"colour": "blue"})
    assert second.endpoint_profile()["Attributes"] == {"plan": ["pro"], "colour": ["blue"]}
    assert second.endpoint_profile()["User"] == {"UserId": "u1"}


@pytest.mark.parametrize(
    ("update", "field", "rule"),
    [
        ({"attributes": {"x" * 51: "a"}}, "Attributes", "51 characters; the limit is 50"),
        ({"attributes": {"tags": [str(i) for i in range(51)]}}, "Attributes.tags",
         "51 values; the limit is 50"),
        ({"attributes": {"tag": "v" * 101}}, "Attributes.tag", "101 characters; the limit is 100"),
        ({"attributes": {"tag": 3}}, "Attributes.tag", "not int"),
        ({"attributes": ["a"]}, "Attributes", "must be a mapping"),
        ({"user_attributes": {"n": [1]}}, "User.UserAttributes.n", "values must be strings"),
        ({"metrics": {"score": "high"}}, "Metrics.score", "int or a float"),
        ({"metrics": {"score": True}}, "Metrics.score", "int or a float"),
        ({"metrics": {"score": float("nan")}}, "Metrics.score", "finite"),
        ({"opt_out": "SOME"}, "OptOut", '"ALL" or "NONE"'),
        ({"channel_type": "PIGEON"}, "ChannelType", "must be one of"),
        ({"location": {"Latitude": 91}}, "Location.Latitude", "between -90 and 90"),
        ({"location": {"street": "x"}}, "Location.street", "not a Location field"),
        ({"demographic": {"Shoe": "44"}}, "Demographic.Shoe", "not a Demographic field"),
        ({"user_id": ""}, "User.UserId", "non-empty"),
        ({"user_id": "team/42"}, "User.UserId", '"/"'),
        ({"address": 5}, "Address", "must be a string"),
    ],
)  # fmt: skip
def test_a_bad_update_raises_at_once_and_changes_nothing(
    make_analytics: Make, update: dict[str, Any], field: str, rule: str
) -> None:
    analytics = make_analytics()
    analytics.update_endpoint(attributes={"plan": "pro"})
    before = analytics.endpoint_profile()
    with pytest.raises(homing.InvalidEndpointError) as raised:
        analytics.update_endpoint(**update)
    assert raised.value.field == field
    assert rule in raised.value.rule
    assert isinstance(raised.value, ValueError)
    assert analytics.endpoint_profile() == before


def test_an_endpoint_over_15_kb_is_refused(make_analytics: Make) -> None:
    analytics = make_analytics()
    for batch in range(4):
        names = {f"a{batch}_{i}": ["v" * 100] * 10 for i in range(3)}
        analytics.update_endpoint(attributes=names)  # about 3 KB each
    with pytest.raises(homing.InvalidEndpointError, match="limit is 15360"):
        analytics.update_endpoint(attributes={f"b{i}": ["v" * 100] * 10 for i in range(3)})
    with pytest.raises(homing.InvalidEndpointError):
        analytics.identify(42)  # type: ignore[arg-type]


def test_offline_updates_coalesce_into_one_update_endpoint(
    make_analytics: Make, fake: FakeCollector
) -> None:
    online = [False]
    analytics = make_analytics(network_policy=lambda: online[0])
    analytics.update_endpoint(attributes={"a": "1"})
    analytics.update_endpoint(attributes={"b": "2"})
    analytics.identify("user-7")
    time.sleep(0.2)  # the uploader thread was woken each time, and sent nothing
    assert fake.endpoint_requests == []
    online[0] = True
    assert analytics.flush(timeout=5).error is None
    [profile] = fake.profiles()
    assert profile["Attributes"] == {"a": ["1"], "b": ["2"]}
    assert profile["User"] == {"UserId": "user-7"}
    assert fake.endpoint_requests[0].url.path == (
        f"/v1/apps/app1/endpoints/{analytics.endpoint_id}"
    )
    assert fake.endpoint_requests[0].headers["authorization"] == "Bearer hm_ingest_test"
    analytics.flush(timeout=5)
    assert len(fake.endpoint_requests) == 1  # nothing changed: nothing sent again


def test_a_failed_update_endpoint_is_retried_and_events_still_go(
    make_analytics: Make, fake: FakeCollector
) -> None:
    answers = [503, 202]
    fake.endpoint_handler = lambda request: httpx.Response(answers.pop(0), json={"Message": "x"})
    online = [False]  # the update's own background send finds no network
    analytics = make_analytics(network_policy=lambda: online[0])
    analytics.update_endpoint(metrics={"m": 1})
    time.sleep(0.1)
    online[0] = True
    analytics.record_event("Tap")
    result = analytics.flush(timeout=5)
    assert (result.sent, result.error) == (1, None)
    # The profile rode along with the batch, and stays due for UpdateEndpoint.
    [(_, item)] = decode(fake.requests[0])["BatchItem"].items()
    assert item["Endpoint"]["Metrics"] == {"m": 1}
    analytics.flush(timeout=5)
    assert len(fake.endpoint_requests) == 2 and answers == []
    analytics.flush(timeout=5)
    assert len(fake.endpoint_requests) == 2


def test_a_change_while_the_profile_is_in_flight_is_sent_next(tmp_path: Path) -> None:
    state: dict[str, Any] = {}
    endpoint = Endpoint(state, app_version_code="1")
    pending = endpoint.pending(1.0)
    assert pending is not None
    version, _ = pending
    endpoint.update(2.0, attributes={"late": "yes"})
    endpoint.mark_sent(version)  # the answer for the older profile
    again = endpoint.pending(3.0)
    assert again is not None and again[1]["Attributes"] == {"late": ["yes"]}
    endpoint.mark_sent(again[0])
    assert endpoint.pending(4.0) is None
    # Reloaded from the same state: nothing due, same id.
    reloaded = Endpoint(state, app_version_code="1")
    assert reloaded.pending(5.0) is None and reloaded.id == endpoint.id
    # An app upgrade changes the automatic demographic: the profile is due again.
    upgraded = Endpoint(state, app_version_code="2")
    due = upgraded.pending(6.0)
    assert due is not None and due[1]["Demographic"]["AppVersion"] == "2"


def test_the_probe_is_injectable(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/timezone").write_text("Pacific/Auckland\n")
    probe = Probe(root=tmp_path, system=lambda: "Linux", release=lambda: "5.10",
                  environ={}, locale_name=lambda: "mi_NZ", is_android=lambda: False)  # fmt: skip
    profile = Endpoint({}, probe=probe).profile(0.0)
    expected = {"Platform": "Linux", "PlatformVersion": "5.10", "Locale": "mi_NZ",
                "Timezone": "Pacific/Auckland"}  # fmt: skip
    assert profile["Demographic"] == expected


def test_each_session_start_sends_the_profile(make_analytics: Make, fake: FakeCollector) -> None:
    analytics = make_analytics()
    analytics.start_session()
    wait_for(lambda: len(fake.endpoint_requests) == 1)
    analytics.stop_session()
    analytics.start_session()
    wait_for(lambda: len(fake.endpoint_requests) == 2)
    assert fake.requests == []  # events still wait for the flush interval


def test_the_profile_rides_along_with_every_batch(
    make_analytics: Make, fake: FakeCollector
) -> None:
    analytics = make_analytics()
    analytics.identify("rider", plan="pro")
    analytics.record_event("One")
    analytics.flush(timeout=5)
    analytics.update_endpoint(attributes={"colour": "red"})
    analytics.record_event("Two")
    analytics.flush(timeout=5)
    endpoints = [
        item["Endpoint"] for r in fake.requests for item in decode(r)["BatchItem"].values()
    ]
    assert [e["User"]["UserId"] for e in endpoints] == ["rider", "rider"]
    assert "Attributes" not in endpoints[0] and endpoints[1]["Attributes"] == {"colour": ["red"]}


def test_an_update_survives_kill_9_once_it_returned(tmp_path: Path) -> None:
    script = f"""
import os, signal, homing
a = homing.Analytics("app1", "http://127.0.0.1:9", "hm_ingest_x", data_dir={str(tmp_path)!r},
                     network_policy=lambda: False)
a.update_endpoint(attributes={{"saved": "yes"}}, user_id="killed")
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    analytics = homing.Analytics("app1", "http://127.0.0.1:9", "hm_ingest_x", data_dir=tmp_path,
                                 network_policy=lambda: False)  # fmt: skip
    try:
        profile = analytics.endpoint_profile()
        assert profile["Attributes"] == {"saved": ["yes"]}
        assert profile["User"] == {"UserId": "killed"}
        assert analytics._endpoint.pending(0.0) is not None  # still due for the collector
    finally:
        analytics.close()
    assert os.path.exists(tmp_path / "state.sqlite3")


def test_an_update_after_close_is_dropped_and_counted(make_analytics: Make) -> None:
    analytics = make_analytics()
    analytics.close()
    analytics.update_endpoint(attributes={"late": "yes"})
    assert analytics.stats().dropped == {"closed": 1}
    reopened = make_analytics()
    assert "Attributes" not in reopened.endpoint_profile()


_names = st.sampled_from(["a", "b", "c", "plan"])
# Text the SDK takes: a NUL is refused at the call site (InvalidEndpointError).
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=5)
_values = st.one_of(st.none(), _text, st.lists(_text, max_size=3))
_updates = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "attributes": st.dictionaries(_names, _values, max_size=3),
            "metrics": st.dictionaries(_names, st.integers(-5, 5), max_size=3),
            "user_attributes": st.dictionaries(_names, _values, max_size=3),
            "user_id": st.sampled_from(["u1", "u2"]),
            "opt_out": st.booleans(),
            "location": st.fixed_dictionaries({}, optional={"City": _text}),
        },
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(_updates)
def test_the_sdk_merges_exactly_as_the_collector_does(updates: list[dict[str, Any]]) -> None:
    from homing_collector.endpoints import merge as collector_merge

    endpoint = Endpoint({}, probe=Probe(root=Path("/nonexistent"), environ={},
                                        locale_name=lambda: None))  # fmt: skip
    stored = None
    for update in updates:
        endpoint.update(1.0, **update)
        # What the collector holds after each UpdateEndpoint the uploader sends.
        pending = endpoint.pending(1.0)
        if pending is not None:
            stored = collector_merge("app", endpoint.id, stored, pending[1], now="t")
            endpoint.mark_sent(pending[0])
    if stored is None:
        return
    profile = endpoint.profile(1.0)
    assert profile.get("Attributes", {}) == stored.get("Attributes", {})
    assert profile.get("Metrics") == stored.get("Metrics")
    assert profile.get("OptOut", "NONE") == stored["OptOut"]
    user = profile.get("User", {})
    assert user.get("UserId") == stored.get("User", {}).get("UserId")
    assert user.get("UserAttributes", {}) == stored.get("User", {}).get("UserAttributes", {})


def test_a_cleared_attribute_is_removed_and_the_collector_is_told(
    make_analytics: Make, fake: FakeCollector
) -> None:
    analytics = make_analytics()
    analytics.update_endpoint(
        attributes={"interests": ["cooking"]}, user_attributes={"plan": "pro"}
    )
    analytics.flush()
    analytics.update_endpoint(attributes={"interests": None}, user_attributes={"plan": []})
    profile = analytics.endpoint_profile()
    assert "interests" not in profile["Attributes"]
    assert "plan" not in profile["User"]["UserAttributes"]
    analytics.flush()
    # The collector merges: only an explicit [] removes what it holds.
    sent = fake.profiles()[-1]
    assert sent["Attributes"] == {"interests": []}
    assert sent["User"]["UserAttributes"] == {"plan": []}
    analytics.record_event("e")
    analytics.flush()
    # Once the collector has it, the clear is not repeated with later batches.
    [item] = decode(fake.requests[-1])["BatchItem"].values()
    assert item["Endpoint"]["Attributes"] == {}


def test_a_clear_refused_with_its_update_goes_with_the_next_one(
    make_analytics: Make, fake: FakeCollector
) -> None:
    analytics = make_analytics()
    analytics.update_endpoint(attributes={"plan": "pro", "team": "red"})
    analytics.flush()
    refuse = [True]

    def endpoint_handler(request: httpx.Request) -> httpx.Response:
        if refuse.pop() if refuse else False:  # the collector refuses this one for good
            return httpx.Response(400, json={"Message": "User.UserId: some rule"})
        return httpx.Response(202, json={"Message": "Accepted"})

    fake.endpoint_handler = endpoint_handler
    analytics.update_endpoint(attributes={"plan": None})
    analytics.flush()  # refused: 400
    analytics.update_endpoint(user_id="user-42")
    analytics.flush()  # accepted: it must still remove "plan" there
    assert fake.profiles()[-1]["Attributes"] == {"plan": [], "team": ["red"]}
    assert "plan" not in analytics.endpoint_profile()["Attributes"]


def test_cleared_attributes_do_not_count_against_the_size_limit(make_analytics: Make) -> None:
    analytics = make_analytics(network_policy=lambda: False)
    for i in range(300):
        analytics.update_endpoint(attributes={f"tmp_attribute_name_{i:04d}": ["x"]})
        analytics.update_endpoint(attributes={f"tmp_attribute_name_{i:04d}": None})
    analytics.update_endpoint(attributes={f"b{n:03d}": ["x" * 90] for n in range(100)})
    assert len(analytics.endpoint_profile()["Attributes"]) == 100


def test_a_profile_the_collector_refuses_is_counted_and_not_sent_again(
    make_analytics: Make, fake: FakeCollector
) -> None:
    fake.endpoint_handler = lambda request: httpx.Response(
        400, json={"Message": "Demographic.Model: too long", "RequestID": "r"}
    )
    online = [False]
    analytics = make_analytics(network_policy=lambda: online[0])
    analytics.update_endpoint(attributes={"a": "1"})
    online[0] = True
    analytics.flush(timeout=5)
    analytics.flush(timeout=5)
    assert len(fake.endpoint_requests) == 1
    stats = analytics.stats()
    assert stats.dropped == {"endpoint_rejected": 1}
    assert stats.last_error == "endpoint: 400: Demographic.Model: too long"
    analytics.update_endpoint(attributes={"a": "2"})  # a change is sent again
    analytics.flush(timeout=5)
    assert len(fake.endpoint_requests) == 2


def test_a_profile_the_sdk_accepts_fits_the_collectors_size_limit(
    make_analytics: Make, clock: FakeClock
) -> None:
    # The collector measures the endpoint it stores, with the fields it adds itself.
    from homing_collector.endpoints import merge as collector_merge

    analytics = make_analytics(network_policy=lambda: False)
    for n in range(200):  # about 100 bytes more each time, until the SDK refuses
        try:
            analytics.update_endpoint(attributes={f"a{n:03d}": ["x" * 90]})
        except homing.InvalidEndpointError as exc:
            assert "15360" in str(exc)
            break
    else:
        pytest.fail("the SDK never refused the profile")
    pending = analytics._endpoint.pending(clock())
    assert pending is not None
    now = format_timestamp(clock())
    collector_merge("app1", analytics.endpoint_id, None, pending[1], now=now)  # no WireError


def test_an_update_refused_while_the_credential_was_being_issued_goes_again_with_it(
    tmp_path: Path, fake: FakeCollector
) -> None:
    # The push thread is issued the device credential while UpdateEndpoint is in flight
    # without it: the collector refuses the bare key's change, and the uploader sends the
    # profile again at once, with the credential, rather than leave an error behind.
    credential = DeviceCredential(url="http://collector.test/credential", state={})
    answers: list[str | None] = []

    def issue() -> None:  # what ensure() does on the push thread
        credential._secret = "issued-meanwhile"

    fake.endpoint_handler = _refusing_the_bare_key(answers, issue)
    endpoint = Endpoint({}, app_version_code="1")
    uploader = _uploader(tmp_path, fake, endpoint, credential)
    try:
        assert uploader.send_endpoint(None) is None
        assert answers == [None, "issued-meanwhile"]
        assert uploader.counters.last_error is None and endpoint.pending(1.0) is None

        # A 403 that a credential cannot cure is not sent again: it waits for the next send.
        fake.endpoint_handler = lambda request: httpx.Response(403, json={"Message": "no"})
        endpoint.update(2.0, attributes={"a": "b"})
        uploader.send_endpoint(None)
        assert len(fake.endpoint_requests) == 3 and endpoint.pending(3.0) is not None
    finally:
        uploader.close(timeout=1)


def test_an_update_refused_while_the_credential_is_still_on_its_way_waits_for_it(
    tmp_path: Path, fake: FakeCollector
) -> None:
    # The collector has issued the credential, and refuses the bare key's change, but the
    # push thread's request for it has not had its answer yet: the uploader waits for that
    # answer, then sends the profile with the credential, and leaves no error behind.
    credential = DeviceCredential(url="http://collector.test/credential", state={})
    answers: list[str | None] = []
    asking = threading.Event()

    def push_thread_asks() -> None:  # what ensure() does, its answer 0.3 s away
        with credential._lock:
            asking.set()
            time.sleep(0.3)
            credential._secret = "issued"

    fake.endpoint_handler = _refusing_the_bare_key(answers)
    endpoint = Endpoint({}, app_version_code="1")
    uploader = _uploader(tmp_path, fake, endpoint, credential)
    push = threading.Thread(target=push_thread_asks)
    push.start()
    try:
        assert asking.wait(5)
        assert uploader.send_endpoint(time.monotonic() + 5) is None
        assert answers == [None, "issued"]
        assert uploader.counters.last_error is None and endpoint.pending(1.0) is None
    finally:
        push.join()
        uploader.close(timeout=1)


def _refusing_the_bare_key(
    answers: list[str | None], meanwhile: Callable[[], None] = lambda: None
) -> Callable[[httpx.Request], httpx.Response]:
    """An UpdateEndpoint handler that refuses the bare ingest key as a collector does once
    it has issued the device credential, and accepts the credential; `answers` gets each
    request's credential header. `meanwhile` runs before each refusal."""

    def handler(request: httpx.Request) -> httpx.Response:
        answers.append(request.headers.get(HEADER))
        if HEADER not in request.headers:
            meanwhile()
            message = "ChannelType: endpoint e has a device credential: only the device ..."
            return httpx.Response(403, json={"Message": message, "RequestID": "r"})
        return httpx.Response(202, json={"Message": "Accepted", "RequestID": "r"})

    return handler


def _uploader(
    tmp_path: Path, fake: FakeCollector, endpoint: Endpoint, credential: DeviceCredential
) -> Uploader:
    """An uploader of `endpoint`'s profile to `fake`, with the device credential."""
    return Uploader(
        store=Store(tmp_path / "events.sqlite3"),
        url="http://collector.test/v1/apps/a/events",
        endpoint=endpoint,
        endpoint_url="http://collector.test/v1/apps/a/endpoints/e",
        api_key="hm_ingest_x",
        endpoint_id=endpoint.id,
        profile=lambda: endpoint.outgoing(0.0),
        policy=coerce_policy("any"),
        flush_interval=60.0,
        transport=fake.transport,
        credential=credential,
    )
