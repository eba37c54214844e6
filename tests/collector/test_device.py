"""Device credentials: once an endpoint has one, its push stream and acks need it, and
the bare ingest key can no longer change where and to whom its pushes go."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.collector.push_stream import Stream
from tests.conftest import App, LiveCollector

HEADER = "X-Homing-Device-Credential"


def bearer(token: str, credential: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if credential is not None:
        headers[HEADER] = credential
    return headers


@pytest.fixture
def app(collector: LiveCollector) -> App:
    return collector.create_app("device")


def endpoint_url(collector: LiveCollector, app: App, endpoint_id: str) -> str:
    return f"{collector.url}/v1/apps/{app.id}/endpoints/{endpoint_id}"


def stream_status(url: str, headers: dict[str, str]) -> tuple[int, str]:
    with httpx.stream("GET", f"{url}/stream", headers=headers, timeout=10) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, response.json()["Message"]
        return 200, ""


def ack(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/stream/acks", json={"MessageIds": ["m-1"]}, headers=headers)


def claim(url: str, token: str) -> httpx.Response:
    return httpx.post(f"{url}/credential", headers=bearer(token))


def test_stream_and_acks_need_the_credential_once_issued(
    collector: LiveCollector, app: App
) -> None:
    url = endpoint_url(collector, app, "phone-1")
    assert stream_status(url, bearer(app.ingest.token))[0] == 200  # none yet: as before
    assert ack(url, bearer(app.ingest.token)).status_code == 202

    issued = claim(url, app.ingest.token)
    assert issued.status_code == 201
    secret = issued.json()["DeviceCredential"]
    assert issued.json()["EndpointId"] == "phone-1" and secret.startswith("hm_device_")
    again = claim(url, app.ingest.token)  # the ingest key cannot take the device's place
    assert again.status_code == 409 and "already has" in again.json()["Message"]

    status, message = stream_status(url, bearer(app.ingest.token))
    assert status == 403 and HEADER in message
    assert stream_status(url, bearer(app.ingest.token, "hm_device_guess"))[0] == 403
    assert stream_status(url, bearer(app.ingest.token, secret)) == (200, "")
    assert stream_status(url, bearer(app.admin.token)) == (200, "")
    refused = ack(url, bearer(app.ingest.token))
    assert refused.status_code == 403 and HEADER in refused.json()["Message"]
    assert ack(url, bearer(app.ingest.token, secret)).status_code == 202
    # Another endpoint of the same app is not concerned.
    other = endpoint_url(collector, app, "phone-2")
    assert stream_status(other, bearer(app.ingest.token))[0] == 200


def test_a_stream_opened_before_the_claim_ends_with_it(collector: LiveCollector, app: App) -> None:
    with Stream(collector.url, app.id, "early", app.ingest.token) as stream:
        assert stream.response.status_code == 200
        assert stream.next() is not None  # retry:
        ended = threading.Event()

        def read_to_the_end() -> None:
            while stream.next() is not None:
                pass
            ended.set()

        reader = threading.Thread(target=read_to_the_end, daemon=True)
        reader.start()
        assert claim(endpoint_url(collector, app, "early"), app.ingest.token).status_code == 201
        assert ended.wait(10), "the stream opened with the bare ingest key is still open"


def put(url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.put(url, json=body, headers=headers)


def test_the_bare_ingest_key_cannot_change_the_locked_fields(
    collector: LiveCollector, app: App
) -> None:
    url = endpoint_url(collector, app, "locked")
    profile = {"ChannelType": "CUSTOM", "Address": "device-a", "User": {"UserId": "alice"}}
    assert put(url, profile, bearer(app.ingest.token)).status_code == 202
    secret = claim(url, app.ingest.token).json()["DeviceCredential"]
    bare = bearer(app.ingest.token)

    for field, change in [("Address", {"Address": "device-b"}),
                          ("User", {"User": {"UserId": "mallory"}}),
                          ("User", {"User": {"UserAttributes": {"name": ["Mallory"]}}}),
                          ("OptOut", {"OptOut": "ALL"}),
                          ("ChannelType", {"ChannelType": "GCM"})]:  # fmt: skip
        refused = put(url, change, bare)
        assert refused.status_code == 403, change
        assert refused.json()["Message"].startswith(f"{field}: "), refused.json()
    # The same values, and the other fields, still go with the bare key.
    assert put(url, {**profile, "Attributes": {"plan": ["pro"]}}, bare).status_code == 202
    batch = httpx.put(
        f"{collector.url}/v1/apps/{app.id}/endpoints",
        json={"Item": [{"Id": "free", "Address": "x"}, {"Id": "locked", "OptOut": "ALL"}]},
        headers=bare,
    )
    assert batch.status_code == 403 and batch.json()["Message"].startswith("Item[1].OptOut: ")
    # The device itself, and an admin key, may.
    assert put(url, {"Address": "device-c"}, bearer(app.ingest.token, secret)).status_code == 202
    assert put(url, {"OptOut": "ALL"}, bearer(app.admin.token)).status_code == 202
    stored = httpx.get(url, headers=bearer(app.admin.token)).json()
    assert (stored["Address"], stored["OptOut"], stored["User"]["UserId"]) == (
        "device-c", "ALL", "alice"
    )  # fmt: skip
    assert stored["Attributes"] == {"plan": ["pro"]}


def _series(text: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


def test_put_events_from_the_bare_key_are_kept_and_counted_apart(
    collector: LiveCollector, app: App
) -> None:
    url = endpoint_url(collector, app, "counted")
    secret = claim(url, app.ingest.token).json()["DeviceCredential"]
    metric = "homing_events_without_device_credential_total"
    before = _series(httpx.get(f"{collector.url}/metrics").text)[metric]
    event = {"EventType": "tap", "Timestamp": "2026-11-28T10:00:00Z"}
    batch = {"BatchItem": {
        "counted": {"Endpoint": {"Address": "stolen"}, "Events": {"e1": event, "e2": event}},
        "open": {"Endpoint": {"Address": "fine"}, "Events": {"e3": event}},
    }}  # fmt: skip
    answer = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/events", json=batch, headers=bearer(app.ingest.token)
    )
    assert answer.status_code == 202
    results = answer.json()["Results"]
    assert results["counted"]["EndpointItemResponse"]["StatusCode"] == 400
    assert results["counted"]["EndpointItemResponse"]["Message"].startswith("Address: ")
    assert {r["StatusCode"] for r in results["counted"]["EventsItemResponse"].values()} == {202}
    assert results["open"]["EndpointItemResponse"]["StatusCode"] == 202
    after = _series(httpx.get(f"{collector.url}/metrics").text)[metric]
    assert after - before == 2
    # With the credential, the same batch changes the endpoint and counts nothing apart.
    answer = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/events",
        json=batch,
        headers=bearer(app.ingest.token, secret),
    )
    assert answer.json()["Results"]["counted"]["EndpointItemResponse"]["StatusCode"] == 202
    assert _series(httpx.get(f"{collector.url}/metrics").text)[metric] == after


def test_put_events_with_a_refused_endpoint_id_stores_the_others(
    collector: LiveCollector, app: App
) -> None:
    """The endpoints' credentials are read for the ids that passed their rules only: one
    the database cannot hold (a NUL) is answered 400 on its own, as any refused id."""
    url = endpoint_url(collector, app, "kept")
    secret = claim(url, app.ingest.token).json()["DeviceCredential"]
    event = {"EventType": "tap", "Timestamp": "2026-11-28T10:00:00Z"}
    batch = {"BatchItem": {
        "bad\u0000id": {"Endpoint": {"Address": "x"}, "Events": {"e1": event}},
        "kept": {"Endpoint": {"Address": "mine"}, "Events": {"e2": event}},
    }}  # fmt: skip
    for headers, status in [(bearer(app.ingest.token), 400),
                            (bearer(app.ingest.token, secret), 202),
                            (bearer(app.admin.token), 202)]:  # fmt: skip
        answer = httpx.post(f"{collector.url}/v1/apps/{app.id}/events", json=batch, headers=headers)
        assert answer.status_code == 202, answer.text
        results = answer.json()["Results"]
        assert results["bad\u0000id"]["EndpointItemResponse"]["StatusCode"] == 400
        assert results["bad\u0000id"]["EventsItemResponse"]["e1"]["StatusCode"] == 400
        assert results["kept"]["EndpointItemResponse"]["StatusCode"] == status
        assert results["kept"]["EventsItemResponse"]["e2"]["StatusCode"] == 202


def test_admin_revokes_and_reissues_and_delete_endpoint_removes(
    collector: LiveCollector, app: App
) -> None:
    url = endpoint_url(collector, app, "tablet")
    assert put(url, {"Address": "t"}, bearer(app.ingest.token)).status_code == 202
    first = claim(url, app.ingest.token).json()["DeviceCredential"]
    revoke = httpx.delete(f"{url}/credential", headers=bearer(app.ingest.token))
    assert revoke.status_code == 403  # an admin's call
    revoke = httpx.delete(f"{url}/credential", headers=bearer(app.admin.token))
    assert revoke.status_code == 200 and revoke.json()["EndpointId"] == "tablet"
    assert httpx.delete(f"{url}/credential", headers=bearer(app.admin.token)).status_code == 404
    # The old credential is refused, saying so, so that the SDK asks for a new one.
    status, message = stream_status(url, bearer(app.ingest.token, first))
    assert status == 403 and "has no device credential" in message
    assert stream_status(url, bearer(app.ingest.token))[0] == 200  # back to no credential

    second = claim(url, app.ingest.token).json()["DeviceCredential"]
    reissued = claim(url, app.admin.token)
    assert reissued.status_code == 201
    third = reissued.json()["DeviceCredential"]
    assert len({first, second, third}) == 3
    assert stream_status(url, bearer(app.ingest.token, second))[0] == 403
    assert stream_status(url, bearer(app.ingest.token, third))[0] == 200

    assert httpx.delete(url, headers=bearer(app.admin.token)).status_code == 202
    assert claim(url, app.ingest.token).status_code == 201  # DeleteEndpoint removed it


def test_other_apps_keys_cannot_claim(collector: LiveCollector, app: App) -> None:
    other = collector.create_app("device-other")
    url = endpoint_url(collector, app, "foreign")
    assert claim(url, other.ingest.token).status_code == 403
    assert claim(url, other.admin.token).status_code == 403
    assert claim(url, app.ingest.token).status_code == 201
