"""boto3, with botocore's own SigV4 signing, against a live `homing-collector serve`."""

from __future__ import annotations

import gzip
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import httpx
import pytest

from homing import limits
from tests.conftest import App, LiveCollector


def now_iso(delta: timedelta = timedelta()) -> str:
    moment = datetime.now(timezone.utc) + delta
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event(event_type: str = "Item Bought", **extra: Any) -> dict[str, Any]:
    return {"EventType": event_type, "Timestamp": now_iso(), **extra}


def stored_events(collector: LiveCollector, app_id: str) -> list[tuple[str, str, int, bytes]]:
    rows = collector.query(
        "SELECT endpoint_id, event_id, ts, body FROM events WHERE app_id = ?", app_id
    )
    return [(endpoint_id, event_id, ts, bytes(body)) for endpoint_id, event_id, ts, body in rows]


@pytest.fixture(scope="module")
def app(collector: LiveCollector) -> App:
    return collector.create_app("boto3")


@pytest.fixture(scope="module")
def admin(collector: LiveCollector, app: App) -> Any:
    return collector.client(app.admin)


@pytest.fixture(scope="module")
def ingest(collector: LiveCollector, app: App) -> Any:
    return collector.client(app.ingest, region="ap-southeast-2")


@pytest.fixture(scope="module")
def root(collector: LiveCollector) -> Any:
    return collector.client(collector.root_key(), region="us-east-1")


def put(client: Any, app_id: str, batch: dict[str, Any]) -> dict[str, Any]:
    response = client.put_events(ApplicationId=app_id, EventsRequest={"BatchItem": batch})
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    return response["EventsResponse"]["Results"]  # type: ignore[no-any-return]


# -- PutEvents ---------------------------------------------------------------------------


def test_put_events_stores_and_reports_each_event(
    collector: LiveCollector, app: App, ingest: Any
) -> None:
    endpoint_id = str(uuid.uuid4())
    results = put(
        ingest,
        app.id,
        {
            endpoint_id: {
                "Endpoint": {"Demographic": {"Platform": "Linux"}},
                "Events": {
                    "e1": event(Attributes={"item": "XYZ"}, Metrics={"price": 1.99}),
                    "e2": event(
                        "_session.start",
                        Session={"Id": "s1", "StartTimestamp": now_iso()},
                        AppPackageName="com.example",
                        SdkName="homing-python",
                    ),
                },
            }
        },
    )
    assert results[endpoint_id]["EndpointItemResponse"] == {
        "StatusCode": 202,
        "Message": "Accepted",
    }
    statuses = results[endpoint_id]["EventsItemResponse"]
    assert {k: v["StatusCode"] for k, v in statuses.items()} == {"e1": 202, "e2": 202}
    rows = {row[1] for row in stored_events(collector, app.id) if row[0] == endpoint_id}
    assert rows == {"e1", "e2"}


def test_batch_mixing_valid_events_with_each_quota_broken(
    collector: LiveCollector, app: App
) -> None:
    ingest = collector.client(app.ingest, validate=False)
    endpoint_id = str(uuid.uuid4())
    too_many_keys = {f"a{i}": "v" for i in range(30)}
    too_many_metrics = {f"m{i}": float(i) for i in range(11)}
    events = {
        "ok-1": event(),
        "ok-40-keys": event(
            Attributes={f"a{i}": "v" for i in range(20)}, Metrics={f"m{i}": i for i in range(20)}
        ),
        "ok-limits": event(Attributes={"k" * 50: "v" * 200}),
        "keys-41": event(Attributes=too_many_keys, Metrics=too_many_metrics),
        "key-51": event(Attributes={"k" * 51: "v"}),
        "metric-key-51": event(Metrics={"m" * 51: 1.0}),
        "value-201": event(Attributes={"colour": "v" * 201}),
        "bad-timestamp": {"EventType": "x", "Timestamp": "yesterday"},
        "no-timestamp": {"EventType": "x"},
        "no-type": {"Timestamp": now_iso()},
        "ok-2": event(),
    }
    results = put(ingest, app.id, {endpoint_id: {"Endpoint": {}, "Events": events}})
    statuses = results[endpoint_id]["EventsItemResponse"]
    assert set(statuses) == set(events)
    accepted = {k for k, v in statuses.items() if v["StatusCode"] == 202}
    assert accepted == {"ok-1", "ok-40-keys", "ok-limits", "ok-2"}
    expected_words = {
        "keys-41": ("41", "40"),
        "key-51": ("51", "50"),
        "metric-key-51": ("Metrics", "50"),
        "value-201": ("Attributes.colour", "200"),
        "bad-timestamp": ("Timestamp", "ISO-8601"),
        "no-timestamp": ("Timestamp", "required"),
        "no-type": ("EventType", "required"),
    }
    for event_id, words in expected_words.items():
        assert statuses[event_id]["StatusCode"] == 400, event_id
        for word in words:
            assert word in statuses[event_id]["Message"], (event_id, statuses[event_id])
    stored = {row[1] for row in stored_events(collector, app.id) if row[0] == endpoint_id}
    assert stored == accepted


def test_non_finite_metric_is_rejected_alone(collector: LiveCollector, app: App) -> None:
    # boto3 cannot send a non-finite metric; other clients can, as a number too big for a
    # double or as a string. Either is a 400 for that event alone.
    body = (
        b'{"BatchItem": {"ep-nan": {"Endpoint": {}, "Events": {'
        b'"big": {"EventType": "x", "Timestamp": "2026-11-28T10:00:00Z", "Metrics": {"m": 1e999}},'
        b'"nan": {"EventType": "x", "Timestamp": "2026-11-28T10:00:00Z", "Metrics": {"m": "NaN"}},'
        b'"ok": {"EventType": "x", "Timestamp": "2026-11-28T10:00:00Z"}}}}}'
    )
    response = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/events",
        content=body,
        headers={"Authorization": f"Bearer {app.ingest.token}"},
    )
    assert response.status_code == 202
    statuses = response.json()["Results"]["ep-nan"]["EventsItemResponse"]
    assert statuses["ok"]["StatusCode"] == 202
    assert statuses["big"]["StatusCode"] == 400
    assert "finite" in statuses["big"]["Message"]
    assert statuses["nan"]["StatusCode"] == 400
    assert "Metrics.m" in statuses["nan"]["Message"]


def test_more_than_100_events_is_a_bad_request(app: App, ingest: Any) -> None:
    events = {str(i): event() for i in range(limits.MAX_EVENTS_PER_REQUEST + 1)}
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.put_events(
            ApplicationId=app.id,
            EventsRequest={"BatchItem": {"ep": {"Endpoint": {}, "Events": events}}},
        )
    assert "101" in str(info.value) and "100" in str(info.value)


def test_replayed_batch_is_stored_once(collector: LiveCollector, app: App, ingest: Any) -> None:
    endpoint_id = str(uuid.uuid4())
    batch = {
        endpoint_id: {"Endpoint": {}, "Events": {str(uuid.uuid4()): event() for _ in range(5)}}
    }
    first = put(ingest, app.id, batch)
    again = put(ingest, app.id, batch)
    assert first == again
    assert all(v["StatusCode"] == 202 for v in again[endpoint_id]["EventsItemResponse"].values())
    rows = [row for row in stored_events(collector, app.id) if row[0] == endpoint_id]
    assert len(rows) == 5


def test_same_event_id_on_two_endpoints_is_two_events(
    collector: LiveCollector, app: App, ingest: Any
) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    put(
        ingest,
        app.id,
        {
            a: {"Endpoint": {}, "Events": {"shared": event()}},
            b: {"Endpoint": {}, "Events": {"shared": event()}},
        },
    )
    rows = [row for row in stored_events(collector, app.id) if row[0] in (a, b)]
    assert len(rows) == 2


def test_a_nul_character_is_refused_where_it_is_and_nowhere_else(
    collector: LiveCollector, app: App
) -> None:
    """No stored text may hold U+0000 (PostgreSQL's cannot): the event or endpoint that
    holds one is refused, naming where, on both backends; the rest of the batch is stored."""
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    endpoint_id = f"nul-{uuid.uuid4().hex[:8]}"
    events = {
        "ok": event(),
        "type": event("Bought\x00"),
        "value": event(Attributes={"color": "red\x00"}),
        "key": event(Metrics={"a\x00b": 1.0}),
        "escaped": event(Attributes={"path": "C:\\u0000"}),  # a backslash, then "u0000"
    }
    answer = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/events",
        json={"BatchItem": {endpoint_id: {
            "Endpoint": {"Attributes": {"team": ["a\x00"]}}, "Events": events}}},
        headers=headers,
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    result = answer.json()["Results"][endpoint_id]
    statuses = result["EventsItemResponse"]
    assert statuses["ok"]["StatusCode"] == statuses["escaped"]["StatusCode"] == 202
    for event_id, where in [("type", "Event.EventType"), ("value", "Event.Attributes.color"),
                            ("key", "Event.Metrics.a\x00b")]:  # fmt: skip
        assert statuses[event_id]["StatusCode"] == 400
        assert statuses[event_id]["Message"] == (
            f"{where}: must not contain the NUL character (U+0000)"
        )
    assert result["EndpointItemResponse"]["StatusCode"] == 400
    assert (
        "Endpoint.Attributes.team.0: must not contain" in result["EndpointItemResponse"]["Message"]
    )
    stored = {row[1] for row in stored_events(collector, app.id) if row[0] == endpoint_id}
    assert stored == {"ok", "escaped"}
    # A query parameter that holds one is refused too.
    admin = {"Authorization": f"Bearer {app.admin.token}"}
    listed = httpx.get(
        f"{collector.url}/v1/apps/{app.id}/segments", params={"token": "a\x00"}, headers=admin
    )
    assert listed.status_code == 400, listed.text
    assert listed.json()["Message"].startswith("token: must not contain the NUL")


NUL_IN_ENDPOINT = [  # where a NUL goes, and the field a 400 names
    ({"User": {"UserId": "u\x00"}}, "User.UserId"),
    ({"User": {"UserAttributes": {"team": ["a\x00"]}}}, "User.UserAttributes.team.0"),
    ({"User": {"UserAttributes": {"t\x00": ["a"]}}}, "User.UserAttributes.t\x00"),
    ({"Demographic": {"Platform": "ios\x00"}}, "Demographic.Platform"),
    ({"Demographic": {"Locale": "\x00"}}, "Demographic.Locale"),
    ({"Location": {"Country": "FR\x00"}}, "Location.Country"),
    ({"Attributes": {"color": ["red\x00"]}}, "Attributes.color.0"),
    ({"Metrics": {"m\x00": 1.0}}, "Metrics.m\x00"),
    ({"Address": "a\x00"}, "Address"),
    ({"RequestId": "\x00"}, "RequestId"),
]


@pytest.mark.parametrize(("update", "field"), NUL_IN_ENDPOINT)
def test_an_endpoint_update_with_a_nul_is_refused_naming_the_field(
    collector: LiveCollector, app: App, update: dict[str, Any], field: str
) -> None:
    """PostgreSQL's text cannot hold U+0000: on both backends, UpdateEndpoint and
    UpdateEndpointsBatch refuse an endpoint that holds one with a 400 naming where, and
    store nothing. (A user id is an id, without control characters.)"""
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    endpoint_id = f"nul-{uuid.uuid4().hex[:8]}"
    rule = (
        "must not contain control characters"
        if field == "User.UserId"
        else "must not contain the NUL character (U+0000)"
    )
    body = {"ChannelType": "CUSTOM", "Address": "x", **update}
    answer = httpx.put(
        f"{collector.url}/v1/apps/{app.id}/endpoints/{endpoint_id}", json=body, headers=headers
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["Message"] == f"EndpointRequest.{field}: {rule}"
    items = [{"Id": f"{endpoint_id}-ok", "ChannelType": "CUSTOM"}, {"Id": endpoint_id, **body}]
    answer = httpx.put(
        f"{collector.url}/v1/apps/{app.id}/endpoints", json={"Item": items}, headers=headers
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["Message"] == f"Item[1].{field}: {rule}"
    stored = collector.query(
        "SELECT endpoint_id FROM endpoints WHERE app_id = ? AND endpoint_id LIKE ?",
        app.id,
        f"{endpoint_id}%",
    )
    assert stored == []


def test_timestamp_far_in_the_future_is_stored_as_arrival_time(
    collector: LiveCollector, app: App, ingest: Any
) -> None:
    endpoint_id = str(uuid.uuid4())
    future = now_iso(timedelta(days=3))
    near_future = now_iso(timedelta(hours=23))
    put(
        ingest,
        app.id,
        {
            endpoint_id: {
                "Endpoint": {},
                "Events": {
                    "far": {"EventType": "x", "Timestamp": future},
                    "near": {"EventType": "x", "Timestamp": near_future},
                },
            }
        },
    )
    rows = {row[1]: row for row in stored_events(collector, app.id) if row[0] == endpoint_id}
    now_ms = datetime.now(timezone.utc).timestamp() * 1000
    assert abs(rows["far"][2] - now_ms) < 60_000
    assert future.encode() in rows["far"][3]  # the original is kept
    near_ms = datetime.fromisoformat(near_future.replace("Z", "+00:00")).timestamp() * 1000
    assert rows["near"][2] == int(near_ms)


def test_event_type_limit_per_app(collector: LiveCollector, ingest: Any) -> None:
    app = collector.create_app("types")
    client = collector.client(app.ingest)
    total = limits.MAX_EVENT_TYPES_PER_APP
    for start in range(0, total, 100):
        results = put(
            client,
            app.id,
            {
                "ep": {
                    "Endpoint": {},
                    "Events": {
                        f"t{i}": event(f"type-{i}") for i in range(start, min(start + 100, total))
                    },
                }
            },
        )
        assert all(v["StatusCode"] == 202 for v in results["ep"]["EventsItemResponse"].values())
    results = put(
        client,
        app.id,
        {
            "ep": {
                "Endpoint": {},
                "Events": {
                    "new": event("one-too-many"),
                    "known": event("type-7"),
                },
            }
        },
    )
    statuses = results["ep"]["EventsItemResponse"]
    assert statuses["known"]["StatusCode"] == 202
    assert statuses["new"]["StatusCode"] == 400
    assert "1500" in statuses["new"]["Message"] and "EventType" in statuses["new"]["Message"]


def test_endpoint_in_batch_updates_endpoint_and_bad_endpoint_keeps_events(
    app: App, ingest: Any, admin: Any
) -> None:
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    results = put(
        ingest,
        app.id,
        {
            good: {
                "Endpoint": {"User": {"UserId": "batch-user"}, "Attributes": {"plan": ["pro"]}},
                "Events": {"a": event()},
            },
            bad: {"Endpoint": {"OptOut": "SOMETIMES"}, "Events": {"b": event()}},
        },
    )
    assert results[good]["EndpointItemResponse"]["StatusCode"] == 202
    assert results[bad]["EndpointItemResponse"]["StatusCode"] == 400
    assert "OptOut" in results[bad]["EndpointItemResponse"]["Message"]
    assert results[bad]["EventsItemResponse"]["b"]["StatusCode"] == 202
    endpoint = admin.get_endpoint(ApplicationId=app.id, EndpointId=good)["EndpointResponse"]
    assert endpoint["User"]["UserId"] == "batch-user"
    assert endpoint["Attributes"] == {"plan": ["pro"]}


def test_ids_that_go_in_urls_may_not_contain_a_slash(
    collector: LiveCollector, app: App, ingest: Any, admin: Any
) -> None:
    # GetEndpoint, DeleteEndpoint and GetUserEndpoints take these ids as one path segment:
    # an id with "/" could be stored but never read, updated or deleted by its URL.
    results = put(
        ingest,
        app.id,
        {
            "a/b": {"Endpoint": {}, "Events": {"e": event()}},
            "slash-user": {"Endpoint": {"User": {"UserId": "u/1"}}, "Events": {"e": event()}},
        },
    )
    rejected = results["a/b"]["EndpointItemResponse"]
    assert rejected["StatusCode"] == 400 and rejected["Message"].startswith("BatchItem:")
    assert "/" in rejected["Message"]
    assert results["a/b"]["EventsItemResponse"]["e"]["StatusCode"] == 400
    rejected = results["slash-user"]["EndpointItemResponse"]
    assert rejected["StatusCode"] == 400
    assert rejected["Message"].startswith("Endpoint.User.UserId:")
    assert results["slash-user"]["EventsItemResponse"]["e"]["StatusCode"] == 202
    assert all(row[0] != "a/b" for row in stored_events(collector, app.id))

    for items, field in (
        ([{"Id": "fine"}, {"Id": "c/d"}], "Item[1].Id"),
        ([{"Id": "fine", "User": {"UserId": "u/2"}}], "Item[0].User.UserId"),
    ):
        with pytest.raises(ingest.exceptions.BadRequestException) as info:
            ingest.update_endpoints_batch(
                ApplicationId=app.id, EndpointBatchRequest={"Item": items}
            )
        assert info.value.response["Error"]["Message"].startswith(f"{field}:")
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoint(
            ApplicationId=app.id, EndpointId="e", EndpointRequest={"User": {"UserId": "u/3"}}
        )
    assert info.value.response["Error"]["Message"].startswith("EndpointRequest.User.UserId:")
    for endpoint_id in ("a/b", "c/d", "fine", "e"):
        with pytest.raises(admin.exceptions.NotFoundException):
            admin.get_endpoint(ApplicationId=app.id, EndpointId=endpoint_id)
    # Event and session ids never appear in a URL: they may hold "/".
    session = {"Id": "s/1", "StartTimestamp": now_iso()}
    results = put(
        ingest,
        app.id,
        {"ok": {"Endpoint": {}, "Events": {"e/1": event("_session.start", Session=session)}}},
    )
    assert results["ok"]["EventsItemResponse"]["e/1"]["StatusCode"] == 202


# -- Endpoints and users -----------------------------------------------------------------


def test_update_endpoint_merges_and_keeps_identity(app: App, ingest: Any, admin: Any) -> None:
    endpoint_id = str(uuid.uuid4())
    ingest.update_endpoint(
        ApplicationId=app.id,
        EndpointId=endpoint_id,
        EndpointRequest={
            "ChannelType": "CUSTOM",
            "Address": "device-1",
            "Attributes": {"colour": ["red"], "size": ["L"]},
            "Metrics": {"score": 1.0},
            "Demographic": {"Platform": "Linux", "Locale": "en_GB"},
            "Location": {"Country": "GB", "Latitude": 51.5, "Longitude": -0.12},
            "User": {"UserId": "alice", "UserAttributes": {"tier": ["gold"]}},
        },
    )
    first = admin.get_endpoint(ApplicationId=app.id, EndpointId=endpoint_id)["EndpointResponse"]
    assert first["Id"] == endpoint_id and first["ApplicationId"] == app.id
    assert first["EndpointStatus"] == "ACTIVE" and first["OptOut"] == "NONE"
    assert 0 <= int(first["CohortId"]) <= 99
    response = ingest.update_endpoint(
        ApplicationId=app.id,
        EndpointId=endpoint_id,
        EndpointRequest={
            "Attributes": {"colour": ["blue", "green"]},
            "Demographic": {"PlatformVersion": "6.1"},
            "OptOut": "ALL",
            "EndpointStatus": "INACTIVE",
            "User": {"UserAttributes": {"age": ["40"]}},
        },
    )
    assert response["MessageBody"]["Message"] == "Accepted"
    second = admin.get_endpoint(ApplicationId=app.id, EndpointId=endpoint_id)["EndpointResponse"]
    assert second["Attributes"] == {"colour": ["blue", "green"], "size": ["L"]}
    assert second["Demographic"] == {
        "Platform": "Linux",
        "Locale": "en_GB",
        "PlatformVersion": "6.1",
    }
    assert second["Metrics"] == {"score": 1.0}
    assert second["User"] == {
        "UserId": "alice",
        "UserAttributes": {"tier": ["gold"], "age": ["40"]},
    }
    assert second["OptOut"] == "ALL" and second["EndpointStatus"] == "INACTIVE"
    assert second["Location"]["Country"] == "GB" and second["Address"] == "device-1"
    for kept in ("CreationDate", "CohortId"):
        assert second[kept] == first[kept]
    assert second["EffectiveDate"] >= first["EffectiveDate"]


def test_update_endpoint_bad_input_names_the_field(app: App, ingest: Any) -> None:
    cases = [
        ({"Attributes": {"a" * 51: ["x"]}}, "Attributes"),
        ({"Attributes": {"a": ["x" * 101]}}, "100"),
        ({"Attributes": {"a": [str(i) for i in range(51)]}}, "50"),
        ({"ChannelType": "PIGEON"}, "ChannelType"),
        ({"Location": {"Latitude": 91.0}}, "Location.Latitude"),
        ({"EffectiveDate": "soon"}, "EffectiveDate"),
    ]
    for request, word in cases:
        with pytest.raises(ingest.exceptions.BadRequestException) as info:
            ingest.update_endpoint(ApplicationId=app.id, EndpointId="bad", EndpointRequest=request)
        assert word in str(info.value), (request, str(info.value))


def test_endpoint_over_15_kb_is_rejected(app: App, ingest: Any) -> None:
    attributes = {f"attr{i}": ["v" * 100] * 5 for i in range(40)}  # about 20 KB
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoint(
            ApplicationId=app.id, EndpointId="huge", EndpointRequest={"Attributes": attributes}
        )
    assert "15360" in str(info.value)


def test_update_endpoints_batch(app: App, ingest: Any, admin: Any) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    ingest.update_endpoints_batch(
        ApplicationId=app.id,
        EndpointBatchRequest={
            "Item": [
                {"Id": endpoint_id, "User": {"UserId": "batch-bob"}, "ChannelType": "CUSTOM"}
                for endpoint_id in ids
            ]
        },
    )
    items = admin.get_user_endpoints(ApplicationId=app.id, UserId="batch-bob")
    assert sorted(e["Id"] for e in items["EndpointsResponse"]["Item"]) == sorted(ids)
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoints_batch(
            ApplicationId=app.id,
            EndpointBatchRequest={"Item": [{"Id": "fine"}, {"Id": "x", "OptOut": "MAYBE"}]},
        )
    assert "Item[1].OptOut" in str(info.value)
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_endpoint(ApplicationId=app.id, EndpointId="fine")  # all or nothing


def test_user_has_at_most_15_endpoints(app: App, ingest: Any, admin: Any) -> None:
    for i in range(limits.MAX_ENDPOINTS_PER_USER):
        ingest.update_endpoint(
            ApplicationId=app.id,
            EndpointId=f"carol-{i}",
            EndpointRequest={"User": {"UserId": "carol"}},
        )
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoint(
            ApplicationId=app.id,
            EndpointId="carol-16",
            EndpointRequest={"User": {"UserId": "carol"}},
        )
    assert "User.UserId" in str(info.value) and "15" in str(info.value)
    # Updating one of the 15 again is fine.
    ingest.update_endpoint(
        ApplicationId=app.id,
        EndpointId="carol-3",
        EndpointRequest={"User": {"UserId": "carol"}, "Attributes": {"x": ["y"]}},
    )
    items = admin.get_user_endpoints(ApplicationId=app.id, UserId="carol")["EndpointsResponse"]
    assert len(items["Item"]) == limits.MAX_ENDPOINTS_PER_USER


def test_update_endpoints_batch_names_the_item_that_fails_when_stored(
    app: App, ingest: Any, admin: Any
) -> None:
    attributes = {f"attr{i}": ["v" * 100] * 5 for i in range(40)}  # about 20 KB
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoints_batch(
            ApplicationId=app.id,
            EndpointBatchRequest={
                "Item": [{"Id": "small-0"}, {"Id": "big-1", "Attributes": attributes}]
            },
        )
    message = info.value.response["Error"]["Message"]
    assert message.startswith("Item[1].Endpoint:") and "15360" in message
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_endpoint(ApplicationId=app.id, EndpointId="small-0")  # all or nothing

    items = [{"Id": f"dave-{i}", "User": {"UserId": "dave"}} for i in range(16)]
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoints_batch(
            ApplicationId=app.id, EndpointBatchRequest={"Item": [{"Id": "first"}, *items]}
        )
    message = info.value.response["Error"]["Message"]
    assert message.startswith("Item[16].User.UserId:") and "15" in message
    # The same endpoint twice in a batch: the item is still the one that broke the rule.
    items = [*items[:15], {"Id": "dave-0", "Attributes": {"a": ["b"]}}, *items[15:]]
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoints_batch(ApplicationId=app.id, EndpointBatchRequest={"Item": items})
    assert info.value.response["Error"]["Message"].startswith("Item[16].User.UserId:")
    # ... and when the item that breaks it is the second of its endpoint id.
    full = [{"Id": f"fay-{i}", "User": {"UserId": "fay"}} for i in range(15)]
    ingest.update_endpoints_batch(ApplicationId=app.id, EndpointBatchRequest={"Item": full})
    again = [{"Id": "x1", "Attributes": {"a": ["b"]}}, {"Id": "x2"},
             {"Id": "x1", "User": {"UserId": "fay"}}]  # fmt: skip
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoints_batch(ApplicationId=app.id, EndpointBatchRequest={"Item": again})
    assert info.value.response["Error"]["Message"].startswith("Item[2].User.UserId:")


def test_delete_user_endpoints_deletes_endpoints_and_events(
    collector: LiveCollector, app: App, ingest: Any, admin: Any
) -> None:
    phone, laptop, other = (str(uuid.uuid4()) for _ in range(3))
    put(
        ingest,
        app.id,
        {
            phone: {"Endpoint": {"User": {"UserId": "dave"}}, "Events": {"p1": event()}},
            laptop: {"Endpoint": {"User": {"UserId": "dave"}}, "Events": {"l1": event()}},
            other: {"Endpoint": {"User": {"UserId": "erin"}}, "Events": {"o1": event()}},
        },
    )
    listed = admin.get_user_endpoints(ApplicationId=app.id, UserId="dave")
    assert {e["Id"] for e in listed["EndpointsResponse"]["Item"]} == {phone, laptop}
    deleted = admin.delete_user_endpoints(ApplicationId=app.id, UserId="dave")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert {e["Id"] for e in deleted["EndpointsResponse"]["Item"]} == {phone, laptop}
    remaining = {row[0] for row in stored_events(collector, app.id)}
    assert phone not in remaining and laptop not in remaining and other in remaining
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_user_endpoints(ApplicationId=app.id, UserId="dave")
    assert admin.get_endpoint(ApplicationId=app.id, EndpointId=other)["EndpointResponse"]


def test_delete_endpoint(app: App, ingest: Any, admin: Any) -> None:
    ingest.update_endpoint(ApplicationId=app.id, EndpointId="doomed", EndpointRequest={})
    response = admin.delete_endpoint(ApplicationId=app.id, EndpointId="doomed")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["EndpointResponse"]["Id"] == "doomed"
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_endpoint(ApplicationId=app.id, EndpointId="doomed")
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.delete_endpoint(ApplicationId=app.id, EndpointId="doomed")


# -- Apps ----------------------------------------------------------------------------------


def test_apps_with_root_credential(root: Any) -> None:
    created = root.create_app(CreateApplicationRequest={"Name": "via-boto3", "tags": {"team": "a"}})
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    app = created["ApplicationResponse"]
    assert (
        app["Name"] == "via-boto3"
        and app["tags"] == {"team": "a"}
        and app["Arn"].endswith(app["Id"])
    )
    assert root.get_app(ApplicationId=app["Id"])["ApplicationResponse"] == app
    seen, token = [], None
    while True:
        page = root.get_apps(PageSize="2", **({"Token": token} if token else {}))
        seen += [a["Id"] for a in page["ApplicationsResponse"]["Item"]]
        token = page["ApplicationsResponse"].get("NextToken")
        if not token:
            break
    assert app["Id"] in seen and len(seen) == len(set(seen)) >= 2
    assert root.delete_app(ApplicationId=app["Id"])["ApplicationResponse"]["Id"] == app["Id"]
    with pytest.raises(root.exceptions.NotFoundException):
        root.get_app(ApplicationId=app["Id"])
    with pytest.raises(root.exceptions.BadRequestException):
        root.create_app(CreateApplicationRequest={"Name": ""})


def test_get_apps_page_size_must_be_ascii_digits(collector: LiveCollector) -> None:
    headers = {"Authorization": f"Bearer {collector.root_key().token}"}
    for size in ("\u00b2", "\u0663", "\uff11", "9" * 5000, "0", "1001", "-1", ""):
        response = httpx.get(
            f"{collector.url}/v1/apps", params={"page-size": size}, headers=headers
        )
        assert response.status_code == 400, (size, response.text)
        assert response.headers["x-amzn-ErrorType"] == "BadRequestException"
        assert response.json()["Message"].startswith("page-size:")
    response = httpx.get(f"{collector.url}/v1/apps", params={"page-size": "1"}, headers=headers)
    assert response.status_code == 200 and len(response.json()["Item"]) <= 1


def test_admin_reads_its_app_but_cannot_manage_apps(app: App, admin: Any) -> None:
    assert admin.get_app(ApplicationId=app.id)["ApplicationResponse"]["Id"] == app.id
    for call in (
        lambda: admin.get_apps(),
        lambda: admin.create_app(CreateApplicationRequest={"Name": "nope"}),
        lambda: admin.delete_app(ApplicationId=app.id),
    ):
        with pytest.raises(admin.exceptions.ForbiddenException):
            call()


def test_deleting_an_app_deletes_its_data_and_keys(collector: LiveCollector, root: Any) -> None:
    doomed = collector.create_app("doomed")
    client = collector.client(doomed.ingest)
    put(client, doomed.id, {"ep": {"Endpoint": {}, "Events": {"e": event()}}})
    root.delete_app(ApplicationId=doomed.id)
    assert stored_events(collector, doomed.id) == []
    with pytest.raises(client.exceptions.ForbiddenException):
        put(client, doomed.id, {"ep": {"Endpoint": {}, "Events": {"e": event()}}})


# -- Authentication and authorisation ------------------------------------------------------


def test_ingest_key_may_only_send(app: App, ingest: Any) -> None:
    calls = [
        lambda: ingest.get_endpoint(ApplicationId=app.id, EndpointId="x"),
        lambda: ingest.delete_endpoint(ApplicationId=app.id, EndpointId="x"),
        lambda: ingest.get_user_endpoints(ApplicationId=app.id, UserId="alice"),
        lambda: ingest.delete_user_endpoints(ApplicationId=app.id, UserId="alice"),
        lambda: ingest.get_app(ApplicationId=app.id),
        lambda: ingest.get_apps(),
    ]
    for call in calls:
        with pytest.raises(ingest.exceptions.ForbiddenException) as info:
            call()
        assert "ingest" in str(info.value) or "root" in str(info.value)


def test_nothing_crosses_apps(collector: LiveCollector, app: App, admin: Any) -> None:
    other = collector.create_app("other")
    other_admin = collector.client(other.admin)
    admin.update_endpoint(ApplicationId=app.id, EndpointId="mine", EndpointRequest={})
    for call in (
        lambda: other_admin.get_endpoint(ApplicationId=app.id, EndpointId="mine"),
        lambda: other_admin.put_events(ApplicationId=app.id, EventsRequest={"BatchItem": {}}),
        lambda: other_admin.update_endpoint(
            ApplicationId=app.id, EndpointId="mine", EndpointRequest={}
        ),
        lambda: other_admin.get_app(ApplicationId=app.id),
        lambda: collector.client(other.ingest).put_events(
            ApplicationId=app.id, EventsRequest={"BatchItem": {}}
        ),
    ):
        with pytest.raises(other_admin.exceptions.ForbiddenException):
            call()
    with pytest.raises(other_admin.exceptions.NotFoundException):
        other_admin.get_endpoint(ApplicationId=other.id, EndpointId="mine")


def test_bad_credentials_are_forbidden(collector: LiveCollector, app: App) -> None:
    from tests.conftest import Credentials

    wrong_secret = Credentials(app.admin.access_key_id, "not-the-secret", "")
    unknown = Credentials("HMAUNKNOWNKEY0000000", "whatever", "")
    for creds in (wrong_secret, unknown):
        client = collector.client(creds)
        with pytest.raises(client.exceptions.ForbiddenException):
            client.get_app(ApplicationId=app.id)
    url = f"{collector.url}/v1/apps/{app.id}"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 403
        assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"
        assert response.json()["Message"]


def test_bearer_tokens(collector: LiveCollector, app: App) -> None:
    url = f"{collector.url}/v1/apps/{app.id}"
    response = httpx.get(url, headers={"Authorization": f"Bearer {app.admin.token}"})
    assert response.status_code == 200 and response.json()["Id"] == app.id
    response = httpx.get(url, headers={"Authorization": f"Bearer {app.ingest.token}"})
    assert response.status_code == 403


def test_sigv4_clock_skew(collector: LiveCollector, app: App) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    creds = BotoCredentials(app.admin.access_key_id, app.admin.secret_access_key)
    url = f"{collector.url}/v1/apps/{app.id}"

    def signed_get(skew: timedelta) -> httpx.Response:
        request = AWSRequest(method="GET", url=url)
        signer = SigV4Auth(creds, "mobiletargeting", "sa-east-1")
        moment = datetime.now(timezone.utc).replace(tzinfo=None) + skew
        # The client's clock is wrong, not the server's.
        with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
            signer.add_auth(request)
        return httpx.get(url, headers=dict(request.headers.items()))

    assert signed_get(timedelta(minutes=14)).status_code == 200
    assert signed_get(timedelta(minutes=-14)).status_code == 200
    late = signed_get(timedelta(minutes=16))
    assert late.status_code == 403 and "skew" in late.json()["Message"]
    assert signed_get(timedelta(minutes=-16)).status_code == 403

    wrong_service = AWSRequest(method="GET", url=url)
    SigV4Auth(creds, "execute-api", "us-east-1").add_auth(wrong_service)
    response = httpx.get(url, headers=dict(wrong_service.headers.items()))
    assert response.status_code == 403 and "mobiletargeting" in response.json()["Message"]


def test_tampered_body_fails_the_signature(collector: LiveCollector, app: App) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    url = f"{collector.url}/v1/apps/{app.id}/endpoints/tamper"
    request = AWSRequest(method="PUT", url=url, data=b'{"OptOut": "NONE"}')
    SigV4Auth(
        BotoCredentials(app.admin.access_key_id, app.admin.secret_access_key),
        "mobiletargeting",
        "us-west-2",
    ).add_auth(request)
    headers = dict(request.headers.items())
    headers.pop("Content-Length", None)
    assert httpx.put(url, content=b'{"OptOut": "ALL"}', headers=headers).status_code == 403
    assert httpx.put(url, content=b'{"OptOut": "NONE"}', headers=headers).status_code == 202


def test_signature_with_non_ascii_characters_is_forbidden(
    collector: LiveCollector, app: App
) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    url = f"{collector.url}/v1/apps/{app.id}"
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(
        BotoCredentials(app.admin.access_key_id, app.admin.secret_access_key),
        "mobiletargeting",
        "eu-west-1",
    ).add_auth(request)
    headers: dict[str, Any] = dict(request.headers.items())
    authorization = headers["Authorization"]
    signature = authorization.split("Signature=")[1]
    for forged in ("\xe9" * 64, signature[:-1] + "\xe9", signature.upper(), signature + "0"):
        headers["Authorization"] = authorization.replace(signature, forged).encode("latin-1")
        response = httpx.get(url, headers=headers)
        assert response.status_code == 403, forged
        assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"
        assert "signature" in response.json()["Message"]
    headers["Authorization"] = authorization
    assert httpx.get(url, headers=headers).status_code == 200


def test_revoked_key_stops_at_once(collector: LiveCollector) -> None:
    app = collector.create_app("revoke")
    client = collector.client(app.admin)
    assert client.get_app(ApplicationId=app.id)
    collector.cli("keys", "revoke", app.admin.access_key_id)
    with pytest.raises(client.exceptions.ForbiddenException) as info:
        client.get_app(ApplicationId=app.id)
    assert "revoked" in str(info.value)
    response = httpx.get(
        f"{collector.url}/v1/apps/{app.id}", headers={"Authorization": f"Bearer {app.admin.token}"}
    )
    assert response.status_code == 403


# -- Errors and bad input ------------------------------------------------------------------


def test_bad_request_exception_by_name(app: App, ingest: Any) -> None:
    with pytest.raises(ingest.exceptions.BadRequestException) as info:
        ingest.update_endpoint(
            ApplicationId=app.id, EndpointId="e", EndpointRequest={"EndpointStatus": "ASLEEP"}
        )
    error = info.value.response["Error"]
    assert error["Code"] == "BadRequestException"
    assert "EndpointStatus" in error["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert info.value.response["ResponseMetadata"]["RequestId"]


def test_unknown_app_is_not_found(collector: LiveCollector, root: Any) -> None:
    with pytest.raises(root.exceptions.NotFoundException):
        root.get_app(ApplicationId="0" * 32)
    with pytest.raises(root.exceptions.NotFoundException):
        root.delete_app(ApplicationId="0" * 32)


def test_root_key_may_do_what_admin_can_on_every_app(app: App, root: Any) -> None:
    assert root.get_app(ApplicationId=app.id)["ApplicationResponse"]["Id"] == app.id
    root.update_endpoint(ApplicationId=app.id, EndpointId="by-root", EndpointRequest={})
    found = root.get_endpoint(ApplicationId=app.id, EndpointId="by-root")
    assert found["EndpointResponse"]["Id"] == "by-root"
    with pytest.raises(root.exceptions.NotFoundException):
        root.get_user_endpoints(ApplicationId=app.id, UserId="nobody")


def test_malformed_json_and_wrong_types(collector: LiveCollector, app: App) -> None:
    url = f"{collector.url}/v1/apps/{app.id}/events"
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    for body, word in (
        (b"{not json", "JSON"),
        (b"", "empty"),
        (b"[]", "BatchItem"),
        (b'{"BatchItem": []}', "BatchItem"),
        (b'{"BatchItem": {"ep": {"Endpoint": {}, "Events": []}}}', None),
    ):
        response = httpx.post(url, content=body, headers=headers)
        if word is None:
            assert response.status_code == 202
            assert response.json()["Results"]["ep"]["EndpointItemResponse"]["StatusCode"] == 400
            continue
        assert response.status_code == 400, body
        assert response.headers["x-amzn-ErrorType"] == "BadRequestException"
        assert word in response.json()["Message"]
        assert response.json()["RequestID"] == response.headers["x-amzn-RequestId"]


def test_unknown_route_and_wrong_method(collector: LiveCollector, app: App) -> None:
    response = httpx.get(f"{collector.url}/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["x-amzn-ErrorType"] == "NotFoundException"
    response = httpx.patch(f"{collector.url}/v1/apps/{app.id}/events")
    assert response.status_code == 405
    assert response.headers["x-amzn-ErrorType"] == "MethodNotAllowedException"
    assert "PATCH" in response.json()["Message"]


def test_oversized_body_is_413(collector: LiveCollector, app: App) -> None:
    url = f"{collector.url}/v1/apps/{app.id}/events"
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    body = b'{"BatchItem": {"x": "' + b"a" * limits.MAX_REQUEST_BYTES + b'"}}'
    response = httpx.post(url, content=body, headers=headers)
    assert response.status_code == 413
    assert response.headers["x-amzn-ErrorType"] == "PayloadTooLargeException"

    def chunks() -> Any:  # no Content-Length: the limit holds while streaming
        for _ in range(5):
            yield b"a" * (1024 * 1024)

    response = httpx.post(url, content=chunks(), headers=headers)
    assert response.status_code == 413


def test_gzip_bodies_and_gzip_bombs(collector: LiveCollector, app: App) -> None:
    url = f"{collector.url}/v1/apps/{app.id}/events"
    headers = {"Authorization": f"Bearer {app.ingest.token}", "Content-Encoding": "gzip"}
    endpoint_id = str(uuid.uuid4())
    import orjson

    body = orjson.dumps({"BatchItem": {endpoint_id: {"Endpoint": {}, "Events": {"g": event()}}}})
    response = httpx.post(url, content=gzip.compress(body), headers=headers)
    assert response.status_code == 202
    assert response.json()["Results"][endpoint_id]["EventsItemResponse"]["g"]["StatusCode"] == 202

    bomb = gzip.compress(b"{" + b" " * (200 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < limits.MAX_REQUEST_BYTES
    response = httpx.post(url, content=bomb, headers=headers, timeout=30)
    assert response.status_code == 413
    assert "inflated" in response.json()["Message"]

    response = httpx.post(url, content=b"not gzip at all", headers=headers)
    assert response.status_code == 400 and "gzip" in response.json()["Message"]
    response = httpx.post(url, content=gzip.compress(body)[:-12], headers=headers)
    assert response.status_code == 400


def test_botocore_raises_payload_too_large_by_name(app: App, ingest: Any) -> None:
    # 100 events of 45,000 characters each: within the event count, over 4 MB.
    events = {str(i): event(AppTitle="t" * 45_000) for i in range(100)}
    with pytest.raises(ingest.exceptions.PayloadTooLargeException) as info:
        ingest.put_events(
            ApplicationId=app.id,
            EventsRequest={"BatchItem": {"ep": {"Endpoint": {}, "Events": events}}},
        )
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
