"""Push: SendMessages and SendUsersMessages through boto3, push streams, acks, TTL, bounds.

One collector serves the module, with a short heartbeat (the tests read up to the first
heartbeat to know they have seen a stream's backlog) and a queue of 5 per endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import orjson
import pytest

from homing import PushMessage
from homing._network import coerce_policy
from homing._push import Push
from tests.collector.push_stream import Stream
from tests.conftest import App, LiveCollector

# The tests here start their own collectors, on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_backends

QUEUE_LIMIT = 5
HEARTBEAT = 0.3


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCollector]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOMING_PUSH_QUEUE_LIMIT", str(QUEUE_LIMIT))
        env.setenv("HOMING_PUSH_HEARTBEAT", str(HEARTBEAT))
        collector = LiveCollector(tmp_path_factory.mktemp("push") / "push.db").start()
    yield collector
    collector.stop()


@pytest.fixture(scope="module")
def app(live: LiveCollector) -> App:
    return live.create_app("push")


@pytest.fixture(scope="module")
def admin(live: LiveCollector, app: App) -> Any:
    return live.client(app.admin)


def new_id() -> str:
    return str(uuid.uuid4())


def endpoint(admin: Any, app: App, endpoint_id: str | None = None, **fields: Any) -> str:
    endpoint_id = endpoint_id or new_id()
    admin.update_endpoint(
        ApplicationId=app.id,
        EndpointId=endpoint_id,
        EndpointRequest={"ChannelType": "CUSTOM", **fields},
    )
    return endpoint_id


def push(title: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"DefaultPushNotificationMessage": {"Title": title, "Body": "Body", **extra}}


def send(admin: Any, app: App, endpoint_ids: list[str], config: dict[str, Any],
         **request: Any) -> dict[str, Any]:  # fmt: skip
    response = admin.send_messages(
        ApplicationId=app.id,
        MessageRequest={
            "Endpoints": {endpoint_id: {} for endpoint_id in endpoint_ids},
            "MessageConfiguration": config,
            **request,
        },
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    answer = response["MessageResponse"]
    assert answer["ApplicationId"] == app.id
    return answer["EndpointResult"]  # type: ignore[no-any-return]


def open_stream(live: LiveCollector, app: App, endpoint_id: str, **options: Any) -> Stream:
    return Stream(live.url, app.id, endpoint_id, app.ingest.token, **options)


@contextlib.contextmanager
def connected(live: LiveCollector, app: App, endpoint_id: str) -> Iterator[Stream]:
    """An open stream whose backlog has been read: sends from now on are live."""
    with open_stream(live, app, endpoint_id) as stream:
        stream.backlog()
        yield stream


def ack(
    live: LiveCollector, app: App, endpoint_id: str, ids: Any, token: str = ""
) -> httpx.Response:
    return httpx.post(
        f"{live.url}/v1/apps/{app.id}/endpoints/{endpoint_id}/stream/acks",
        json={"MessageIds": ids},
        headers={"Authorization": f"Bearer {token or app.ingest.token}"},
        timeout=10,
    )


def metric(live: LiveCollector, name: str) -> float:
    for line in httpx.get(live.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


# -- SendMessages statuses ---------------------------------------------------------------


def test_each_delivery_status(live: LiveCollector, app: App, admin: Any) -> None:
    online = endpoint(admin, app, Address="device-online")
    offline = endpoint(admin, app)
    inactive = endpoint(admin, app, EndpointStatus="INACTIVE")
    opted_out = endpoint(admin, app, OptOut="ALL")
    same_address = endpoint(admin, app, Address="device-online")
    missing = new_id()
    with connected(live, app, online) as stream:
        results = send(admin, app, [online, offline, inactive, opted_out, same_address, missing],
                       push())  # fmt: skip
        received = stream.messages(1)
    statuses = {key: (r["DeliveryStatus"], r["StatusCode"]) for key, r in results.items()}
    assert statuses == {
        online: ("SUCCESSFUL", 200),
        offline: ("TEMPORARY_FAILURE", 202),
        inactive: ("PERMANENT_FAILURE", 404),
        opted_out: ("OPT_OUT", 403),
        same_address: ("DUPLICATE", 409),
        missing: ("PERMANENT_FAILURE", 404),
    }
    ids = [result["MessageId"] for result in results.values()]
    assert len(set(ids)) == len(ids) and all(uuid.UUID(i) for i in ids)
    assert all(result["StatusMessage"] for result in results.values())
    assert results[online]["Address"] == "device-online"
    assert received[0].data["MessageId"] == results[online]["MessageId"]


def test_live_message_carries_the_contract_payload(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    config = {
        "DefaultPushNotificationMessage": {
            "Title": "Default title", "Body": "Default body", "Action": "URL",
            "Url": "https://example.com/sale", "Data": {"shared": "default", "only": "default"},
        },
        "GCMMessage": {"Title": "Sale", "Data": {"shared": "gcm"}, "TimeToLive": 600},
    }  # fmt: skip
    context = {"campaign_id": "c-1", "campaign_activity_id": "a-1", "treatment_id": "0"}
    with connected(live, app, device) as stream:
        before = time.time()
        results = send(admin, app, [device], config, Context=context)
        [event] = stream.messages(1)
    assert results[device]["DeliveryStatus"] == "SUCCESSFUL"
    assert event.event == "push" and event.id == 1
    assert set(event.data) == {"MessageId", "Silent", "ExpiresAt", "Data"}
    assert event.data["MessageId"] == results[device]["MessageId"]
    assert event.data["Silent"] is False
    expires = event.data["ExpiresAt"]
    assert expires.endswith("Z")
    expires_at = time.mktime(time.strptime(expires[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before + 590 < expires_at < before + 610  # GCMMessage.TimeToLive
    assert event.data["Data"] == {
        "shared": "gcm",
        "only": "default",
        "pinpoint.notification.title": "Sale",
        "pinpoint.notification.body": "Default body",
        "pinpoint.notification.silentPush": "0",
        "pinpoint.url": "https://example.com/sale",
        "pinpoint.campaign.campaign_id": "c-1",
        "pinpoint.campaign.campaign_activity_id": "a-1",
        "pinpoint.campaign.treatment_id": "0",
    }


LINE_BREAKS_OF_SPLITLINES = ["line\u2028separator", "para\u2029graph", "next\x85line"]


def test_a_title_with_a_unicode_line_separator_goes_escaped(
    live: LiveCollector, app: App, admin: Any
) -> None:
    # Valid JSON either way, but a client that splits lines like str.splitlines() would
    # cut the message in two at the raw character; SSE allows CR and LF only.
    device = endpoint(admin, app)
    for title in LINE_BREAKS_OF_SPLITLINES:
        send(admin, app, [device], push(title))
    with httpx.stream(
        "GET", f"{live.url}/v1/apps/{app.id}/endpoints/{device}/stream",
        headers={"Authorization": f"Bearer {app.ingest.token}"}, timeout=10,
    ) as response:  # fmt: skip
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if body.count(b"event: push") == 3 and body.endswith(b"\n\n"):
                break
    text = body.decode()
    assert not {"\u2028", "\u2029", "\x85"} & set(text)
    assert "\\u2028" in text and "\\u2029" in text and "\\u0085" in text
    data = [orjson.loads(line[6:]) for line in text.split("\n") if line.startswith("data: ")]
    assert [d["Data"]["pinpoint.notification.title"] for d in data] == LINE_BREAKS_OF_SPLITLINES


def test_the_sdk_receives_a_title_with_a_unicode_line_separator_once(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    stream_url = f"{live.url}/v1/apps/{app.id}/endpoints/{device}/stream"
    got: list[PushMessage] = []
    receiver = Push(stream_url=stream_url, acks_url=stream_url + "/acks",
                    api_key=app.ingest.token, state={}, policy=coerce_policy("any"),
                    record=lambda *a: None)  # fmt: skip
    receiver.max_backoff = 0.2
    receiver.on_push(got.append)
    receiver.start()
    try:
        for title in LINE_BREAKS_OF_SPLITLINES:
            send(admin, app, [device], push(title))
        deadline = time.monotonic() + 5
        while receiver.stats().received < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(HEARTBEAT * 2)  # a message cut in two, or handled twice, would show by now
    finally:
        receiver.stop()
    assert [m.title for m in got] == LINE_BREAKS_OF_SPLITLINES
    assert receiver.stats().errors == 0


def test_deep_link_and_open_app_actions(live: LiveCollector, app: App, admin: Any) -> None:
    device = endpoint(admin, app)
    with connected(live, app, device) as stream:
        send(admin, app, [device], push(Action="DEEP_LINK", Url="myapp://offer/7"))
        send(admin, app, [device], push())
        deep, plain = stream.messages(2)
    assert deep.data["Data"]["pinpoint.deeplink"] == "myapp://offer/7"
    assert "pinpoint.url" not in deep.data["Data"]
    assert plain.data["Data"]["pinpoint.openApp"] == "true"
    assert (deep.id, plain.id) == (1, 2)


def test_silent_push_reaches_an_opted_out_endpoint(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app, OptOut="ALL")
    with connected(live, app, device) as stream:
        visible = send(admin, app, [device], push())
        silent_push = {"APNSMessage": {"SilentPush": True, "Data": {"setting": "dark"}}}
        silent = send(admin, app, [device], silent_push)
        [event] = stream.messages(1)
    assert visible[device]["DeliveryStatus"] == "OPT_OUT"
    assert silent[device]["DeliveryStatus"] == "SUCCESSFUL"
    assert event.data["MessageId"] == silent[device]["MessageId"]
    assert event.data["Silent"] is True
    assert event.data["Data"] == {"setting": "dark", "pinpoint.notification.silentPush": "1"}


def test_a_channel_section_overrides_the_default_one_field_by_field(
    live: LiveCollector, app: App, admin: Any
) -> None:
    gcm = endpoint(admin, app, ChannelType="GCM")
    apns = endpoint(admin, app, ChannelType="APNS")
    config = {
        "DefaultPushNotificationMessage": {"Title": "default", "Body": "b", "SilentPush": True},
        "GCMMessage": {"Title": "gcm", "SilentPush": False},
        "APNSMessage": {"Title": "apns"},
    }
    with connected(live, app, gcm) as on_gcm, connected(live, app, apns) as on_apns:
        send(admin, app, [gcm, apns], config)
        [to_gcm], [to_apns] = on_gcm.messages(1), on_apns.messages(1)
    assert to_gcm.data["Silent"] is False
    assert to_gcm.data["Data"]["pinpoint.notification.title"] == "gcm"
    assert to_apns.data["Silent"] is True  # APNSMessage leaves SilentPush to the default
    assert to_apns.data["Data"]["pinpoint.notification.title"] == "apns"
    assert to_apns.data["Data"]["pinpoint.notification.body"] == "b"


def test_send_users_messages_reaches_every_endpoint_of_each_user(
    live: LiveCollector, app: App, admin: Any
) -> None:
    user = new_id()
    phone = endpoint(admin, app, User={"UserId": user})
    desktop = endpoint(admin, app, User={"UserId": user})
    other = endpoint(admin, app, User={"UserId": new_id()})
    with connected(live, app, phone) as phone_stream, connected(live, app, desktop) as desk:
        response = admin.send_users_messages(
            ApplicationId=app.id,
            SendUsersMessageRequest={
                "Users": {user: {"TitleOverride": "For you"}, "nobody": {}},
                "MessageConfiguration": push(),
            },
        )
        [on_phone] = phone_stream.messages(1)
        [on_desktop] = desk.messages(1)
    answer = response["SendUsersMessageResponse"]
    assert answer["ApplicationId"] == app.id
    result = answer["Result"]
    assert set(result) == {user, "nobody"} and result["nobody"] == {}
    assert set(result[user]) == {phone, desktop}
    assert {r["DeliveryStatus"] for r in result[user].values()} == {"SUCCESSFUL"}
    assert on_phone.data["MessageId"] == result[user][phone]["MessageId"]
    assert on_desktop.data["MessageId"] == result[user][desktop]["MessageId"]
    assert on_phone.data["Data"]["pinpoint.notification.title"] == "For you"
    with open_stream(live, app, other) as stream:
        assert stream.backlog() == []


# -- store and forward -------------------------------------------------------------------


def test_offline_message_is_forwarded_on_connect_within_its_ttl_and_not_after(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    short = send(admin, app, [device], {"GCMMessage": {"Title": "short", "TimeToLive": 1}})
    long = send(admin, app, [device], {"GCMMessage": {"Title": "long", "TimeToLive": 600}})
    assert short[device]["DeliveryStatus"] == long[device]["DeliveryStatus"] == "TEMPORARY_FAILURE"
    with open_stream(live, app, device) as stream:
        within = stream.backlog()
    assert [e.data["MessageId"] for e in within] == [
        short[device]["MessageId"], long[device]["MessageId"],
    ]  # fmt: skip
    time.sleep(1.2)
    with open_stream(live, app, device) as stream:
        after = stream.backlog()
    assert [e.data["MessageId"] for e in after] == [long[device]["MessageId"]]


def test_ttl_zero_reaches_an_open_stream(live: LiveCollector, app: App, admin: Any) -> None:
    device = endpoint(admin, app)
    with connected(live, app, device) as stream:
        now = send(admin, app, [device], {"GCMMessage": {"TimeToLive": 0}})
        [event] = stream.messages(1)
    assert now[device]["DeliveryStatus"] == "SUCCESSFUL"
    assert event.data["MessageId"] == now[device]["MessageId"]


def test_unacknowledged_messages_are_sent_again_and_acked_ones_never(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    first = send(admin, app, [device], push("one"))[device]["MessageId"]
    second = send(admin, app, [device], push("two"))[device]["MessageId"]
    for _ in range(2):  # reconnecting without an ack: everything again
        with open_stream(live, app, device) as stream:
            assert [e.data["MessageId"] for e in stream.backlog()] == [first, second]
    answer = ack(live, app, device, [first, "unknown-id"])
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"Acknowledged": 1}
    assert ack(live, app, device, [first]).json() == {"Acknowledged": 0}
    with open_stream(live, app, device) as stream:
        assert [e.data["MessageId"] for e in stream.backlog()] == [second]
    rows = live.query(
        "SELECT message_id, delivered_at IS NOT NULL FROM push_messages"
        " WHERE app_id = ? AND endpoint_id = ? ORDER BY seq",
        app.id,
        device,
    )
    assert rows == [(first, 1), (second, 0)]


def test_last_event_id_acknowledges_every_message_up_to_it(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    ids = [send(admin, app, [device], push(str(n)))[device]["MessageId"] for n in range(3)]
    with open_stream(live, app, device) as stream:
        backlog = stream.backlog()
    assert [e.id for e in backlog] == [1, 2, 3]
    with open_stream(live, app, device, last_event_id=2) as stream:
        assert [e.data["MessageId"] for e in stream.backlog()] == [ids[2]]
    # It held: without the header, 1 and 2 stay acknowledged.
    with open_stream(live, app, device) as stream:
        assert [e.id for e in stream.backlog()] == [3]
    # An id the endpoint never had acknowledges nothing.
    with open_stream(live, app, device, last_event_id=4) as stream:
        assert [e.id for e in stream.backlog()] == [3]
    with open_stream(live, app, new_id(), last_event_id=1) as stream:
        assert stream.backlog() == []


def test_the_queue_of_an_endpoint_is_bounded_dropping_the_oldest(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    dropped_before = metric(live, 'homing_push_messages_total{outcome="dropped"}')
    ids = [send(admin, app, [device], push(str(n)))[device]["MessageId"]
           for n in range(QUEUE_LIMIT + 2)]  # fmt: skip
    with open_stream(live, app, device) as stream:
        backlog = stream.backlog()
    assert [e.data["MessageId"] for e in backlog] == ids[2:]
    assert [e.id for e in backlog] == list(range(3, QUEUE_LIMIT + 3))
    assert metric(live, 'homing_push_messages_total{outcome="dropped"}') == dropped_before + 2
    [(dropped,)] = live.query(
        "SELECT dropped FROM push_endpoints WHERE app_id = ? AND endpoint_id = ?",
        app.id,
        device,
    )
    assert dropped == 2


def test_delete_endpoint_deletes_its_queued_messages(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    send(admin, app, [device], push("before"))
    admin.delete_endpoint(ApplicationId=app.id, EndpointId=device)
    endpoint(admin, app, device)
    after = send(admin, app, [device], push("after"))[device]["MessageId"]
    with open_stream(live, app, device) as stream:
        backlog = stream.backlog()
    # Only the new message, numbered on: an old Last-Event-ID cannot acknowledge it.
    assert [(e.id, e.data["MessageId"]) for e in backlog] == [(2, after)]


def test_delete_user_endpoints_and_delete_app_delete_queued_messages(
    live: LiveCollector, app: App, admin: Any
) -> None:
    def queued(app_id: str) -> int:
        [(count,)] = live.query("SELECT count(*) FROM push_messages WHERE app_id = ?", app_id)
        return int(count)

    other = live.create_app("deleted")
    other_admin = live.client(other.admin)
    user = new_id()
    devices = [endpoint(other_admin, other, User={"UserId": user}) for _ in range(2)]
    kept = endpoint(other_admin, other)
    send(other_admin, other, [*devices, kept], push())
    assert queued(other.id) == 3
    other_admin.delete_user_endpoints(ApplicationId=other.id, UserId=user)
    assert queued(other.id) == 1
    live.client(live.root_key()).delete_app(ApplicationId=other.id)
    assert queued(other.id) == 0


def test_stream_starts_with_retry_and_sends_heartbeats(live: LiveCollector, app: App) -> None:
    for _ in range(3):  # each stream's headers are its own
        with open_stream(live, app, new_id()) as stream:
            assert len(stream.response.headers.get_list("x-amzn-requestid")) == 1
    with open_stream(live, app, new_id()) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"] == "text/event-stream"
        assert stream.response.headers["cache-control"] == "no-store"
        first = stream.next()
        assert first is not None and first.retry == 5000
        started = time.monotonic()
        pings = [stream.next(), stream.next()]
        elapsed = time.monotonic() - started
    assert all(p is not None and p.comment == "ping" for p in pings)
    assert HEARTBEAT <= elapsed < 10  # two pings, one heartbeat apart at least


def test_head_of_a_stream_answers_at_once(live: LiveCollector, app: App) -> None:
    answer = httpx.head(
        f"{live.url}/v1/apps/{app.id}/endpoints/{new_id()}/stream",
        headers={"Authorization": f"Bearer {app.ingest.token}"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")


def test_metrics_count_streams_and_messages(live: LiveCollector, app: App, admin: Any) -> None:
    device = endpoint(admin, app)

    def streams_become(count: int) -> bool:
        deadline = time.monotonic() + 10
        while metric(live, "homing_push_streams") != count and time.monotonic() < deadline:
            time.sleep(0.05)  # the server notices a disconnect on its own time
        return metric(live, "homing_push_streams") == count

    assert streams_become(0)  # the other tests' streams are closed
    sent = metric(live, 'homing_push_messages_total{outcome="sent"}')
    delivered = metric(live, 'homing_push_messages_total{outcome="delivered"}')
    with connected(live, app, device) as stream:
        assert metric(live, "homing_push_streams") == 1
        message_id = send(admin, app, [device], push())[device]["MessageId"]
        stream.messages(1)
    assert ack(live, app, device, [message_id]).json() == {"Acknowledged": 1}
    assert metric(live, 'homing_push_messages_total{outcome="sent"}') == sent + 1
    assert metric(live, 'homing_push_messages_total{outcome="delivered"}') == delivered + 1
    assert streams_become(0)


# -- who may do what ---------------------------------------------------------------------


def test_ingest_key_opens_its_stream_and_acks_but_cannot_send(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    ingest = live.client(app.ingest)
    with pytest.raises(ingest.exceptions.ForbiddenException, match="needs an admin key"):
        send(ingest, app, [device], push())
    with pytest.raises(ingest.exceptions.ForbiddenException, match="needs an admin key"):
        ingest.send_users_messages(
            ApplicationId=app.id,
            SendUsersMessageRequest={"Users": {"u": {}}, "MessageConfiguration": push()},
        )
    message_id = send(admin, app, [device], push())[device]["MessageId"]
    with open_stream(live, app, device) as stream:
        assert stream.response.status_code == 200
        assert [e.data["MessageId"] for e in stream.backlog()] == [message_id]
    assert ack(live, app, device, [message_id]).json() == {"Acknowledged": 1}


def test_nothing_crosses_from_one_app_to_another(live: LiveCollector, app: App, admin: Any) -> None:
    other = live.create_app("other")
    device = endpoint(admin, app)
    message_id = send(admin, app, [device], push())[device]["MessageId"]
    url = f"{live.url}/v1/apps/{app.id}/endpoints/{device}/stream"
    for token in (other.ingest.token, other.admin.token):
        answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 403, answer.text
        assert ack(live, app, device, [message_id], token).status_code == 403
    with pytest.raises(Exception, match="Forbidden"):
        send(live.client(other.admin), app, [device], push())
    # Its own endpoint ids in another app are other endpoints: nothing waits there.
    with open_stream(live, other, device) as stream:
        assert stream.backlog() == []
    with open_stream(live, app, device) as stream:
        assert [e.data["MessageId"] for e in stream.backlog()] == [message_id]


# -- validation --------------------------------------------------------------------------

GOOD = push()
LIMIT = 4096  # bytes of data, FCM's limit
BAD_SENDS = [
    ({"MessageConfiguration": GOOD}, "Endpoints"),
    ({"Endpoints": {}, "MessageConfiguration": GOOD}, "Endpoints"),
    ({"Endpoints": {str(n): {} for n in range(101)}, "MessageConfiguration": GOOD}, "Endpoints"),
    ({"Endpoints": {"e": {}}}, "MessageConfiguration"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": {}}, "MessageConfiguration"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": {"SMSMessage": {"Body": "x"}}},
     "MessageConfiguration.SMSMessage"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": {"GCMMessage": {"TimeToLive": -1}}},
     "MessageConfiguration.GCMMessage.TimeToLive"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": {"APNSMessage": {"TimeToLive": 2419201}}},
     "MessageConfiguration.APNSMessage.TimeToLive"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": {"GCMMessage": {"TimeToLive": "60"}}},
     "MessageConfiguration.GCMMessage.TimeToLive"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": push(Action="SHOUT")},
     "MessageConfiguration.DefaultPushNotificationMessage.Action"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": push(SilentPush="yes")},
     "MessageConfiguration.DefaultPushNotificationMessage.SilentPush"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": push(Data={"n": 1})},
     "MessageConfiguration.DefaultPushNotificationMessage.Data"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": push(Data={"k": "x" * 5000})},
     "MessageConfiguration"),
    # The limit is in bytes, and holds for each endpoint's push with its override.
    ({"Endpoints": {"e": {}, "f": {"BodyOverride": "\u00e9" * 2100}},
      "MessageConfiguration": GOOD}, "Endpoints.f"),
    ({"Endpoints": {"e": {"Context": {"campaign_id": "c" * 4100}}},
      "MessageConfiguration": GOOD}, "Endpoints.e"),
    ({"Endpoints": {"e": {"TitleOverride": "t" * 3000}},
      "MessageConfiguration": {"GCMMessage": {"Title": "Hi"}, "APNSMessage": {"Body": "b" * 1100}}},
     "Endpoints.e"),
    ({"Endpoints": {"e": "x"}, "MessageConfiguration": GOOD}, "Endpoints.e"),
    ({"Endpoints": {"e": {"TitleOverride": 3}}, "MessageConfiguration": GOOD},
     "Endpoints.e.TitleOverride"),
    ({"Endpoints": {"e": {}}, "MessageConfiguration": GOOD, "Context": {"a": 1}}, "Context"),
    # The request's Context puts its campaign keys in every push's data.
    ({"Endpoints": {"e": {}}, "Context": {"campaign_id": "c" * 5000},
      "MessageConfiguration": {"GCMMessage": {}}}, "Context"),
    ({"Endpoints": {"e": {}}, "Context": {"campaign_id": "c" * 2000},
      "MessageConfiguration": push(Data={"k": "x" * 2100})}, "Context"),
    ({"Endpoints": {"e": {}}, "Context": {"campaign_id": "c"},
      "MessageConfiguration": push(Data={"k": "x" * 5000})}, "MessageConfiguration"),
    ({"Addresses": {"+15550100": {}}, "Endpoints": {"e": {}}, "MessageConfiguration": GOOD},
     "Addresses"),
    ([1, 2], "body"),
]  # fmt: skip
BAD_USER_SENDS = [
    ({"MessageConfiguration": GOOD}, "Users"),
    ({"Users": {str(n): {} for n in range(101)}, "MessageConfiguration": GOOD}, "Users"),
    ({"Users": {"u": {}}, "MessageConfiguration": {"GCMMessage": {"TimeToLive": 1.5}}},
     "MessageConfiguration.GCMMessage.TimeToLive"),
    ({"Users": {"u": {"TitleOverride": "x" * 4100}}, "MessageConfiguration": GOOD}, "Users.u"),
    ({"Users": {"u": {}}, "Context": {"treatment_id": "t" * 4100}, "MessageConfiguration": GOOD},
     "Context"),
]  # fmt: skip


def bad_request(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.headers["x-amzn-ErrorType"] == "BadRequestException"
    assert answer.json()["Message"].startswith(field + ":"), answer.json()


@pytest.mark.parametrize(("body", "field"), BAD_SENDS, ids=[f for _, f in BAD_SENDS])
def test_send_messages_names_the_field_it_rejects(
    live: LiveCollector, app: App, body: Any, field: str
) -> None:
    headers = {"Authorization": f"Bearer {app.admin.token}"}
    answer = httpx.post(
        f"{live.url}/v1/apps/{app.id}/messages", json=body, headers=headers, timeout=10
    )
    bad_request(answer, field)


def test_the_data_limit_is_4096_bytes_for_each_endpoint_with_its_override(
    live: LiveCollector, app: App, admin: Any
) -> None:
    device = endpoint(admin, app)
    headers = {"Authorization": f"Bearer {app.admin.token}"}

    def send_with_body(body: str) -> httpx.Response:
        request = {"Endpoints": {device: {"BodyOverride": body}}, "MessageConfiguration": GOOD}
        return httpx.post(
            f"{live.url}/v1/apps/{app.id}/messages", json=request, headers=headers, timeout=10
        )

    def delivered() -> dict[str, str]:
        with open_stream(live, app, device) as stream:
            [event] = stream.backlog()
        assert ack(live, app, device, [event.data["MessageId"]]).status_code == 202
        data: dict[str, str] = event.data["Data"]
        return data

    # What the data takes besides the body, measured on a push with a one-byte body.
    assert send_with_body("b").status_code == 200
    rest = len(orjson.dumps(delivered())) - 1
    # Up to the limit in bytes, with two-byte characters: 4,096 bytes go through.
    fits = "\u00e9" * ((LIMIT - rest) // 2) + "b" * ((LIMIT - rest) % 2)
    answer = send_with_body(fits)
    assert answer.status_code == 200, answer.text
    data = delivered()
    assert data["pinpoint.notification.body"] == fits
    assert len(orjson.dumps(data)) == LIMIT
    # One byte more is refused, naming the endpoint whose override is too big.
    bad_request(send_with_body(fits + "b"), f"Endpoints.{device}")


@pytest.mark.parametrize(("body", "field"), BAD_USER_SENDS, ids=[f for _, f in BAD_USER_SENDS])
def test_send_users_messages_names_the_field_it_rejects(
    live: LiveCollector, app: App, body: Any, field: str
) -> None:
    headers = {"Authorization": f"Bearer {app.admin.token}"}
    answer = httpx.post(
        f"{live.url}/v1/apps/{app.id}/users-messages", json=body, headers=headers, timeout=10
    )
    bad_request(answer, field)


def test_boto3_raises_bad_request_for_a_bad_ttl(live: LiveCollector, app: App) -> None:
    admin = live.client(app.admin, validate=False)
    with pytest.raises(admin.exceptions.BadRequestException, match="TimeToLive"):
        send(admin, app, ["e"], {"GCMMessage": {"TimeToLive": -5}})


@pytest.mark.parametrize(
    ("ids", "field"),
    [([], "MessageIds"), (["x"] * 101, "MessageIds"), ("abc", "MessageIds"),
     ([""], "MessageIds[0]"), (["ok", 7], "MessageIds[1]")],
)  # fmt: skip
def test_acks_name_the_field_they_reject(
    live: LiveCollector, app: App, ids: Any, field: str
) -> None:
    bad_request(ack(live, app, "device", ids), field)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "99999999999999999999"])
def test_a_bad_last_event_id_is_a_bad_request(live: LiveCollector, app: App, value: str) -> None:
    answer = httpx.get(
        f"{live.url}/v1/apps/{app.id}/endpoints/device/stream",
        headers={"Authorization": f"Bearer {app.ingest.token}", "Last-Event-ID": value},
        timeout=10,
    )
    bad_request(answer, "Last-Event-ID")


def test_the_sdk_with_a_cursor_the_collector_refuses_starts_again_and_receives(
    live: LiveCollector, app: App, admin: Any
) -> None:
    # The cursor an older SDK saved from an `id:` over 2**63-1: sent as Last-Event-ID, the
    # collector answers 400 to every reconnect.
    device = endpoint(admin, app)
    send(admin, app, [device], push("after the reset"))
    stream_url = f"{live.url}/v1/apps/{app.id}/endpoints/{device}/stream"
    state: dict[str, Any] = {"cursor": {"last_seq": 99999999999999999999, "seen": []}}
    got: list[PushMessage] = []
    receiver = Push(stream_url=stream_url, acks_url=stream_url + "/acks",
                    api_key=app.ingest.token, state=state, policy=coerce_policy("any"),
                    record=lambda *a: None)  # fmt: skip
    receiver.max_backoff = 0.2
    receiver.on_push(got.append)
    receiver.start()
    try:
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        receiver.stop()
    assert [m.title for m in got] == ["after the reset"]
    assert state["cursor"]["last_seq"] == 1


# -- crashes, shutdown, several processes ------------------------------------------------


def test_kill_9_after_a_send_loses_nothing(start_collector: Callable[..., LiveCollector]) -> None:
    first = start_collector()
    app = first.create_app("crash")
    admin = first.client(app.admin)
    device = endpoint(admin, app)
    results = send(admin, app, [device], push("survives"))
    assert results[device]["DeliveryStatus"] == "TEMPORARY_FAILURE"
    short = send(admin, app, [device], {"GCMMessage": {"TimeToLive": 1}})[device]["MessageId"]
    assert first.process is not None
    first.process.kill()
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    time.sleep(1.1)  # the second message expires while the collector is down
    restarted = start_collector(first.db)
    with open_stream(restarted, app, device) as stream:
        [event] = stream.messages(1)
    assert event.data["MessageId"] == results[device]["MessageId"]
    assert event.data["Data"]["pinpoint.notification.title"] == "survives"
    # Expired messages are deleted when the collector starts, and then every minute.
    deadline = time.monotonic() + 10
    while metric(restarted, 'homing_push_messages_total{outcome="expired"}') < 1:
        assert time.monotonic() < deadline, "the expired message was not purged at startup"
        time.sleep(0.05)
    ids = [row[0] for row in restarted.query("SELECT message_id FROM push_messages")]
    assert short not in ids and results[device]["MessageId"] in ids


def test_sigterm_ends_open_streams_and_exits_promptly(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector()
    app = live.create_app("shutdown")
    streams = [open_stream(live, app, new_id()) for _ in range(3)]
    try:
        for stream in streams:
            assert stream.next() is not None  # retry: the stream is open
        assert live.process is not None
        started = time.monotonic()
        live.process.send_signal(signal.SIGTERM)
        assert live.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        for stream in streams:  # each ended cleanly, not cut off
            while (event := stream.next()) is not None:
                assert event.comment == "ping"
    finally:
        for stream in streams:
            stream.close()


def test_a_message_sent_through_one_worker_reaches_streams_held_by_another(
    start_collector: Callable[..., LiveCollector], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMING_PUSH_HEARTBEAT", str(HEARTBEAT))
    live = start_collector(None, "--workers", "2")
    app = live.create_app("workers")
    admin = live.client(app.admin)
    devices = [endpoint(admin, app) for _ in range(8)]
    # Each stream is its own connection; the kernel spreads them over both workers.
    streams = [open_stream(live, app, device) for device in devices]
    try:
        for stream in streams:
            stream.backlog()
        received: dict[str, str] = {}

        def read(device: str, stream: Stream) -> None:
            with contextlib.suppress(Exception):  # the stream closed under it: a failure below
                received[device] = stream.messages(1)[0].data["MessageId"]

        readers = [
            threading.Thread(target=read, args=pair) for pair in zip(devices, streams, strict=True)
        ]
        for reader in readers:
            reader.start()
        # Fresh connections for each send, so that sends go through both workers too.
        results = {}
        for device in devices:
            results.update(send(live.client(app.admin), app, [device], push()))
        deadline = time.monotonic() + 10
        for reader in readers:
            reader.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for stream in streams:
            stream.close()
    assert received == {device: results[device]["MessageId"] for device in devices}


def test_the_api_md_example_sends(live: LiveCollector, app: App, admin: Any) -> None:
    from tests.collector.test_docs import ROOT, code_blocks, section

    (example,) = code_blocks(section((ROOT / "docs" / "api.md").read_text(), "Push"), "python")
    device = endpoint(admin, app)
    with connected(live, app, device) as stream:
        exec(example.replace("ENDPOINT-ID", device), {"client": admin, "app_id": app.id})
        [event] = stream.messages(1)
    assert event.data["Data"]["pinpoint.url"] == "https://example.com/sale"
    assert event.data["Data"]["pinpoint.campaign.campaign_id"] == "spring-sale"


def test_a_workers_poll_wakes_only_the_streams_behind_the_newest_message() -> None:
    # The poll looks back POLL_OVERLAP_MS, so it keeps finding messages that streams
    # already have: those streams must not read the database again for them.
    from homing_collector.metrics import Metrics
    from homing_collector.push.gateway import Gateway

    class Storage:
        async def push_changes(self, since_ms: int) -> list[tuple[str, str, int]]:
            return [("app", "current", 7), ("app", "behind", 9), ("app", "elsewhere", 3)]

    class FakeStream:
        def __init__(self, endpoint_id: str, last_seq: int) -> None:
            self.key = ("app", endpoint_id)
            self.last_seq = last_seq
            self.fetches = 0

        def request_fetch(self) -> None:
            self.fetches += 1

    gateway = Gateway(
        cast(Any, Storage()), Metrics(), heartbeat=1, queue_limit=10, default_ttl=60, shared=True
    )
    current, behind, other = FakeStream("current", 7), FakeStream("behind", 8), FakeStream("x", 0)
    for stream in (current, behind, other):
        gateway.attach(cast(Any, stream))
    asyncio.run(gateway._poll()())
    assert (current.fetches, behind.fetches, other.fetches) == (0, 1, 0)


def test_revoking_a_key_or_deleting_its_app_ends_the_streams_it_opened(
    live: LiveCollector, app: App, admin: Any
) -> None:
    keys_url = f"{live.url}/v1/apps/{app.id}/keys"
    headers = {"Authorization": f"Bearer {app.admin.token}"}

    def new_key() -> dict[str, Any]:
        answer = httpx.post(keys_url, json={"Role": "ingest"}, headers=headers, timeout=10)
        assert answer.status_code == 201, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def revoke_elsewhere(access_key_id: str) -> None:
        # As the CLI or another worker does: in the database, unseen by this process.
        live.query(
            "UPDATE keys SET revoked_at = '2026-01-01T00:00:00+00:00' WHERE access_key_id = ?",
            access_key_id,
        )

    def ends_within(stream: Stream, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (event := stream.next()) is not None:
            assert event.event != "push", "a push reached a stream of a revoked key"
            assert time.monotonic() < deadline, "the stream is still open"

    # Through the HTTP API: at once, before the next heartbeat.
    key, device = new_key(), endpoint(admin, app)
    with Stream(live.url, app.id, device, key["Token"]) as stream:
        stream.backlog()
        revoked = httpx.delete(f"{keys_url}/{key['AccessKeyId']}", headers=headers, timeout=10)
        assert revoked.status_code == 200
        send(admin, app, [device], push())
        assert stream.next() is None
    # By another process (the CLI, another worker): by the next heartbeat or so.
    key, device = new_key(), endpoint(admin, app)
    with Stream(live.url, app.id, device, key["Token"]) as stream:
        stream.backlog()
        revoke_elsewhere(key["AccessKeyId"])
        ends_within(stream, 10 * HEARTBEAT)
        send(admin, app, [device], push())
        assert stream.next() is None
    # ... even while pushes keep the stream busy, so that it never has to send a heartbeat.
    key, device = new_key(), endpoint(admin, app)
    with Stream(live.url, app.id, device, key["Token"]) as stream:
        stream.backlog()
        revoke_elsewhere(key["AccessKeyId"])
        stop = threading.Event()

        def keep_sending() -> None:
            while not stop.is_set():
                send(admin, app, [device], push())
                stop.wait(HEARTBEAT / 3)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            deadline = time.monotonic() + 10 * HEARTBEAT
            while stream.next() is not None:
                assert time.monotonic() < deadline, "the busy stream is still open"
        finally:
            stop.set()
            sender.join()
    # DeleteApp ends the streams of the app's keys.
    doomed = live.create_app("doomed")
    device = endpoint(live.client(doomed.admin), doomed)
    with open_stream(live, doomed, device) as stream:
        stream.backlog()
        answer = httpx.delete(
            f"{live.url}/v1/apps/{doomed.id}",
            headers={"Authorization": f"Bearer {live.root_key().token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        ends_within(stream, 10 * HEARTBEAT)


def test_deleting_an_app_ends_its_streams_at_once(
    start_collector: Callable[..., LiveCollector], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A heartbeat far away: only DeleteApp itself can end the stream in time.
    monkeypatch.setenv("HOMING_PUSH_HEARTBEAT", "120")
    live = start_collector(None)
    doomed, kept = live.create_app("doomed"), live.create_app("kept")
    device = endpoint(live.client(doomed.admin), doomed)
    other = endpoint(live.client(kept.admin), kept)
    with (
        Stream(live.url, doomed.id, device, doomed.ingest.token, timeout=10) as stream,
        Stream(live.url, kept.id, other, kept.ingest.token, timeout=10) as bystander,
    ):
        # (No backlog(): it reads until the first heartbeat. The streams are attached
        # once their headers have come.)
        answer = httpx.delete(
            f"{live.url}/v1/apps/{doomed.id}",
            headers={"Authorization": f"Bearer {live.root_key().token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        while (event := stream.next()) is not None:  # ended, long before a heartbeat
            assert event.event != "push", event
        # Another application's stream stays open and still gets its pushes.
        send(live.client(kept.admin), kept, [other], push())
        [message] = bystander.messages(1)
        assert message.event == "push"
