"""Campaigns call their hooks, on a live collector with real loopback receivers that
verify every call with the `standardwebhooks` package: a custom channel gets every
endpoint of the segment once, at most 50 a call, through the outbox; a FILTER hook is
asked first, and what it keeps, as it changed it, is what is sent."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from homing_collector.settings import Settings
from tests.collector.hooks.receiver import Answer, Receiver, always, serving
from tests.collector.hooks.test_event_stream import secret_of, wait_for
from tests.collector.test_campaign_runs import (
    purchase,
    pushes,
    put_events,
    send_events,
    wait_for_activity,
)
from tests.conftest import App, LiveCollector

# The tests here start their own collectors, on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_backends

DATA = '{"kind": "welcome"}'
PAYLOAD_FIELDS = {
    "Message", "Data", "ApplicationId", "CampaignId", "TreatmentId", "ActivityId",
    "ScheduledTime", "Endpoints",
}  # fmt: skip


@pytest.fixture
def live(
    start_collector: Callable[..., LiveCollector], monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveCollector]:
    # A filter hook that does not answer is cut off after a second, not Pinpoint's 15.
    monkeypatch.setenv("HOMING_HOOK_TIMEOUT", "1")
    yield start_collector()


def add_endpoints(admin: Any, app: App, count: int, channel: str, prefix: str) -> list[str]:
    ids = []
    for start in range(0, count, 100):
        items = []
        for i in range(start, min(count, start + 100)):
            ids.append(f"{prefix}-{i:04d}")
            items.append({
                "Id": ids[-1],
                "ChannelType": channel,
                "Address": f"{prefix}-{i}@example.com",
                "Demographic": {"Platform": "linux"},
                "Attributes": {"Greeting": ["hello"]},
            })  # fmt: skip
        admin.update_endpoints_batch(ApplicationId=app.id, EndpointBatchRequest={"Item": items})
    return ids


def linux_segment(admin: Any, app: App) -> str:
    response = admin.create_segment(
        ApplicationId=app.id,
        WriteSegmentRequest={
            "Name": "linux",
            "Dimensions": {"Demographic": {"Platform": {"Values": ["linux"]}}},
        },
    )
    return response["SegmentResponse"]["Id"]  # type: ignore[no-any-return]


def create(admin: Any, app: App, segment_id: str, **request: Any) -> dict[str, Any]:
    body = {
        "Name": "hooks",
        "SegmentId": segment_id,
        "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
        **request,
    }
    response = admin.create_campaign(ApplicationId=app.id, WriteCampaignRequest=body)
    return response["CampaignResponse"]  # type: ignore[no-any-return]


def custom_campaign(url: str, types: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "CustomDeliveryConfiguration": {"DeliveryUri": url, "EndpointTypes": types},
        "MessageConfiguration": {"CustomMessage": {"Data": DATA}},
        **extra,
    }


def calls(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every call the receiver got, each verified with `secret` (raises if one is not)."""
    return [
        Webhook(secret).verify(got.body, got.headers)  # type: ignore[misc]
        for got in receiver.received
    ]


def delivered(receiver: Receiver, secret: str) -> Counter[str]:
    """How many times each endpoint reached the custom channel, once duplicates of a
    webhook-id (retries of one batch) are dropped."""
    seen: dict[str, dict[str, Any]] = {}
    for got in receiver.received:
        seen[got.headers["webhook-id"]] = Webhook(secret).verify(got.body, got.headers)
    return Counter(e for payload in seen.values() for e in payload["Endpoints"])


def metrics_of(activity: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in activity["ExecutionMetrics"].items()}


def hook_counts(live: LiveCollector, url: str) -> tuple[int, int]:
    """/metrics' attempts and failures for the destination `url`."""
    text = httpx.get(f"{live.url}/metrics").text
    found = {}
    for name in ("homing_hook_attempts_total", "homing_hook_failures_total"):
        prefix = f'{name}{{destination="{url}"}} '
        [line] = [line for line in text.splitlines() if line.startswith(prefix)]
        found[name] = int(line.removeprefix(prefix))
    return found["homing_hook_attempts_total"], found["homing_hook_failures_total"]


def test_a_custom_channel_gets_every_endpoint_once_in_signed_batches_of_50(
    live: LiveCollector,
) -> None:
    app = live.create_app("custom")
    admin = live.client(app.admin)
    custom = add_endpoints(admin, app, 120, "CUSTOM", "cust")
    gcm = add_endpoints(admin, app, 10, "GCM", "gcm")
    with serving(always(Answer(200))) as [receiver]:
        secret = secret_of(live, app)
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            receiver.url, ["CUSTOM"]))  # fmt: skip
        activity = wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(lambda: sum(delivered(receiver, secret).values()) >= len(custom))
        time.sleep(0.5)  # nothing more comes
        payloads = calls(receiver, secret)
        assert delivered(receiver, secret) == Counter(dict.fromkeys(custom, 1))
    assert len(payloads) == 3 and all(len(p["Endpoints"]) <= 50 for p in payloads)
    for payload in payloads:
        assert set(payload) == PAYLOAD_FIELDS
        assert payload["Data"] == DATA and payload["Message"] == {}
        assert payload["ApplicationId"] == app.id
        assert payload["CampaignId"] == campaign["Id"]
        assert payload["ActivityId"] == activity["Id"]
        assert payload["TreatmentId"] == "0"
        assert payload["ScheduledTime"] == activity["ScheduledStart"]
        for endpoint in payload["Endpoints"].values():
            assert endpoint["ChannelType"] == "CUSTOM"
            assert endpoint["Attributes"] == {"Greeting": ["hello"]}
    # With CUSTOM among its EndpointTypes and a CustomMessage, the campaign sends no push.
    assert pushes(live, app.id, campaign["Id"]) == Counter()
    assert activity["TotalEndpointCount"] == activity["SuccessfulEndpointCount"] == len(custom)
    assert metrics_of(activity) == {
        "ENDPOINT_PRODUCED": len(custom) + len(gcm),
        "ENDPOINT_CHANNEL_MISMATCH": len(gcm),
    }
    events = send_events(live, app.id)
    assert sorted(e["Attributes"]["delivery_type"] for e in events) == ["CUSTOM"] * len(custom)
    assert {e["Attributes"]["campaign_send_status"] for e in events} == {"SUCCESS"}
    assert {e["Attributes"]["campaign_activity_id"] for e in events} == {activity["Id"]}
    rows = live.query(
        "SELECT endpoint_id FROM events WHERE app_id = ? AND event_type = '_campaign.send'", app.id
    )
    assert sorted(row[0] for row in rows) == custom


def test_a_treatment_with_its_own_custom_channel_uses_it(live: LiveCollector) -> None:
    app = live.create_app("custom-ab")
    admin = live.client(app.admin)
    custom = add_endpoints(admin, app, 60, "EMAIL", "mail")
    with serving(always(Answer(200)), always(Answer(200))) as [first, second]:
        secret = secret_of(live, app)
        treatment = {
            "SizePercent": 50,
            "CustomDeliveryConfiguration": {"DeliveryUri": second.url, "EndpointTypes": ["EMAIL"]},
            "MessageConfiguration": {"CustomMessage": {"Data": "B"}},
        }
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            first.url, ["EMAIL"], AdditionalTreatments=[treatment]))  # fmt: skip
        wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(
            lambda: (
                sum((delivered(first, secret) + delivered(second, secret)).values()) >= len(custom)
            )
        )
        a, b = calls(first, secret), calls(second, secret)
        assert delivered(first, secret) + delivered(second, secret) == Counter(
            dict.fromkeys(custom, 1)
        )
    assert a and b
    assert {(p["TreatmentId"], p["Data"]) for p in a} == {("0", DATA)}
    assert {(p["TreatmentId"], p["Data"]) for p in b} == {("1", "B")}


def test_a_delivery_hook_is_a_custom_channel(live: LiveCollector) -> None:
    app = live.create_app("delivery-hook")
    admin = live.client(app.admin)
    custom = add_endpoints(admin, app, 5, "SMS", "sms")
    with serving(always(Answer(200))) as [receiver]:
        secret = secret_of(live, app)
        campaign = create(admin, app, linux_segment(admin, app),
            Hook={"Mode": "DELIVERY", "WebUrl": receiver.url},
            MessageConfiguration={"CustomMessage": {"Data": DATA}},
        )  # fmt: skip
        wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(lambda: sum(delivered(receiver, secret).values()) >= len(custom))
        assert delivered(receiver, secret) == Counter(dict.fromkeys(custom, 1))
        assert {p["Data"] for p in calls(receiver, secret)} == {DATA}


def keep_even_and_rewrite(_n: int, body: bytes) -> Answer:
    """A FILTER hook: keeps the endpoints whose number is even, and greets them anew."""
    sent = orjson.loads(body)["Endpoints"]
    kept = {}
    for endpoint_id, endpoint in sent.items():
        if int(endpoint_id.rsplit("-", 1)[1]) % 2 == 0:
            kept[endpoint_id] = {**endpoint, "Attributes": {"Greeting": [f"hi {endpoint_id}"]}}
    return Answer(200, body=orjson.dumps(kept))


def test_a_filter_hook_keeps_and_changes_what_the_custom_channel_gets(
    live: LiveCollector,
) -> None:
    app = live.create_app("filter-custom")
    admin = live.client(app.admin)
    custom = add_endpoints(admin, app, 120, "CUSTOM", "cust")
    kept = [e for e in custom if int(e[-4:]) % 2 == 0]
    with serving(keep_even_and_rewrite, always(Answer(200))) as [hook, channel]:
        secret = secret_of(live, app)
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            channel.url, ["CUSTOM"], Hook={"Mode": "FILTER", "WebUrl": hook.url}))  # fmt: skip
        activity = wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(lambda: sum(delivered(channel, secret).values()) >= len(kept))
        time.sleep(0.5)
        asked = calls(hook, secret)
        got = calls(channel, secret)
        assert delivered(channel, secret) == Counter(dict.fromkeys(kept, 1))
    assert Counter(e for p in asked for e in p["Endpoints"]) == Counter(dict.fromkeys(custom, 1))
    for request in asked:
        assert len(request["Endpoints"]) <= 50
        assert request["MessageConfiguration"] == {"CustomMessage": {"Data": DATA}}
        assert request["CampaignId"] == campaign["Id"] and request["ActivityId"] == activity["Id"]
        assert "Message" not in request and "Data" not in request
    for payload in got:
        for endpoint_id, endpoint in payload["Endpoints"].items():
            assert endpoint["Attributes"] == {"Greeting": [f"hi {endpoint_id}"]}
    assert metrics_of(activity) == {
        "ENDPOINT_PRODUCED": len(custom),
        "FILTERED_OUT_BY_HOOK": len(custom) - len(kept),
    }
    assert activity["TotalEndpointCount"] == len(kept)
    assert len(send_events(live, app.id)) == len(kept)


def test_an_event_campaign_asks_its_filter_and_calls_its_custom_channel_per_event(
    live: LiveCollector,
) -> None:
    app = live.create_app("event-custom")
    admin = live.client(app.admin)
    custom = add_endpoints(admin, app, 3, "CUSTOM", "cust")
    with serving(keep_even_and_rewrite, always(Answer(200))) as [hook, channel]:
        secret = secret_of(live, app)
        schedule = {
            "StartTime": "IMMEDIATE",
            "Frequency": "EVENT",
            "EventFilter": {"FilterType": "ENDPOINT",
                            "Dimensions": {"EventType": {"Values": ["purchase"]}}},
        }  # fmt: skip
        create(admin, app, linux_segment(admin, app), **custom_campaign(
            channel.url, ["CUSTOM"], Schedule=schedule,
            Hook={"Mode": "FILTER", "WebUrl": hook.url}))  # fmt: skip
        time.sleep(1)  # the filters reach every process within a second
        # Two events of one endpoint: two messages, in two calls (an id once per call).
        put_events(live.url, app.id, app.ingest.token, {
            custom[0]: {"e1": purchase(1.0), "e2": purchase(2.0)},
            custom[1]: {"e3": purchase(1.0)},  # odd: the hook drops it
        })  # fmt: skip
        assert wait_for(lambda: sum(delivered(channel, secret).values()) >= 2)
        time.sleep(0.5)
        assert delivered(channel, secret) == Counter({custom[0]: 2})
        for payload in calls(channel, secret):
            [endpoint] = payload["Endpoints"].values()
            assert endpoint["Attributes"] == {"Greeting": [f"hi {custom[0]}"]}
        assert len(calls(hook, secret)) >= 2


def test_an_event_campaign_sends_the_matches_of_a_window_in_one_call_within_its_caps(
    start_collector: Callable[..., LiveCollector], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMING_TRIGGER_WINDOW", "2")
    live = start_collector()
    app = live.create_app("event-window")
    admin = live.client(app.admin)
    custom = add_endpoints(admin, app, 6, "CUSTOM", "cust")
    with serving(always(Answer(200))) as [channel]:
        secret = secret_of(live, app)
        schedule = {
            "StartTime": "IMMEDIATE",
            "Frequency": "EVENT",
            "EventFilter": {"FilterType": "ENDPOINT",
                            "Dimensions": {"EventType": {"Values": ["purchase"]}}},
        }  # fmt: skip
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            channel.url, ["CUSTOM"], Schedule=schedule, Limits={"Total": 2}))  # fmt: skip
        time.sleep(1)  # the filters reach every process within a second
        # Two purchases of each endpoint, in one PutEvents call each. The first two
        # matches go at once, and being two they open a window: the others come within
        # it and go together, the first purchase of each endpoint in one call, the second
        # in another. A third purchase is capped.
        for i, endpoint_id in enumerate(custom):
            put_events(live.url, app.id, app.ingest.token,
                       {endpoint_id: {f"a{i}": purchase(1.0), f"b{i}": purchase(2.0)}})  # fmt: skip
        put_events(live.url, app.id, app.ingest.token, {custom[1]: {"c1": purchase(3.0)}})
        wanted = Counter(dict.fromkeys(custom, 2))
        assert wait_for(lambda: sum(delivered(channel, secret).values()) >= wanted.total())
        time.sleep(2.5)  # a window more: nothing else comes
        payloads = calls(channel, secret)
        assert delivered(channel, secret) == wanted
    assert sorted(len(p["Endpoints"]) for p in payloads) == [1, 1, 5, 5]
    [activity] = admin.get_campaign_activities(ApplicationId=app.id, CampaignId=campaign["Id"])[
        "ActivitiesResponse"
    ]["Item"]
    assert activity["TotalEndpointCount"] == wanted.total()
    assert metrics_of(activity)["TOTAL_CAP"] == 1
    events = send_events(live, app.id)
    assert [e["Attributes"]["delivery_type"] for e in events] == ["CUSTOM"] * wanted.total()
    rows = live.query(
        "SELECT endpoint_id FROM events WHERE app_id = ? AND event_type = '_campaign.send'", app.id
    )
    assert Counter(row[0] for row in rows) == wanted


def push_titles(collector: LiveCollector, app_id: str, campaign_id: str) -> dict[str, str]:
    rows = collector.query(
        "SELECT endpoint_id, payload FROM push_messages WHERE app_id = ? AND campaign_id = ?",
        app_id,
        campaign_id,
    )
    return {
        endpoint_id: orjson.loads(payload)["Data"]["pinpoint.notification.title"]
        for endpoint_id, payload in rows
    }


def test_the_settings_filter_hook_changes_what_a_push_is_personalised_with(
    live: LiveCollector,
) -> None:
    app = live.create_app("filter-push")
    admin = live.client(app.admin)
    gcm = add_endpoints(admin, app, 70, "GCM", "gcm")
    kept = [e for e in gcm if int(e[-4:]) % 2 == 0]
    with serving(keep_even_and_rewrite) as [hook]:
        secret = secret_of(live, app)
        admin.update_application_settings(
            ApplicationId=app.id,
            WriteApplicationSettingsRequest={
                "CampaignHook": {"Mode": "FILTER", "WebUrl": hook.url}
            },
        )
        message = {"DefaultMessage": {"Title": "{{Attributes.Greeting}}", "Body": "b"}}
        campaign = create(admin, app, linux_segment(admin, app), MessageConfiguration=message)
        activity = wait_for_activity(admin, app, campaign["Id"])
        assert len(calls(hook, secret)) == 2
    assert push_titles(live, app.id, campaign["Id"]) == {e: f"hi {e}" for e in kept}
    assert metrics_of(activity)["FILTERED_OUT_BY_HOOK"] == len(gcm) - len(kept)


def test_a_filter_answer_that_cannot_be_decoded_fails_its_batch(live: LiveCollector) -> None:
    app = live.create_app("filter-garbage")
    admin = live.client(app.admin)
    custom = add_endpoints(admin, app, 60, "CUSTOM", "cust")

    def garbage_for_the_first(_n: int, body: bytes) -> Answer:
        sent = orjson.loads(body)["Endpoints"]
        if custom[0] in sent:
            return Answer(200, body=b"<html>not json</html>")
        return Answer(200, body=orjson.dumps(sent))

    with serving(garbage_for_the_first, always(Answer(200))) as [hook, channel]:
        secret = secret_of(live, app)
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            channel.url, ["CUSTOM"], Hook={"Mode": "FILTER", "WebUrl": hook.url}))  # fmt: skip
        activity = wait_for_activity(admin, app, campaign["Id"])
        asked = calls(hook, secret)
        [failed] = [set(p["Endpoints"]) for p in asked if custom[0] in p["Endpoints"]]
        good = [e for e in custom if e not in failed]
        assert wait_for(lambda: sum(delivered(channel, secret).values()) >= len(good))
        time.sleep(0.5)
        assert delivered(channel, secret) == Counter(dict.fromkeys(good, 1))
    # A 200 with an undecodable body is an answer: it is not asked again.
    assert len(asked) == 2
    assert hook_counts(live, hook.url) == (2, 1)
    assert metrics_of(activity) == {
        "ENDPOINT_PRODUCED": len(custom),
        "FILTER_HOOK_FAILED": len(failed),
    }
    assert activity["TotalEndpointCount"] == len(good)


def test_a_filter_hook_that_does_not_answer_is_tried_three_times(live: LiveCollector) -> None:
    app = live.create_app("filter-slow")
    admin = live.client(app.admin)
    custom = add_endpoints(admin, app, 10, "CUSTOM", "cust")
    with serving(always(Answer(200, delay=3)), always(Answer(200))) as [hook, channel]:
        secret = secret_of(live, app)
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            channel.url, ["CUSTOM"], Hook={"Mode": "FILTER", "WebUrl": hook.url}))  # fmt: skip
        activity = wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(lambda: len(hook.received) == 3, timeout=15)
        asked = calls(hook, secret)
        ids = {got.headers["webhook-id"] for got in hook.received}
        assert channel.received == []
    assert len(asked) == 3 and len(ids) == 1  # one message, three attempts
    assert hook_counts(live, hook.url) == (3, 3)
    assert metrics_of(activity) == {
        "ENDPOINT_PRODUCED": len(custom),
        "FILTER_HOOK_FAILED": len(custom),
    }
    assert activity["TotalEndpointCount"] == 0


@pytest.mark.parametrize(
    ("request_", "field", "rule"),
    [
        ({"Hook": {"LambdaFunctionName": "my-filter", "Mode": "FILTER"}},
         "Hook.LambdaFunctionName", "set WebUrl"),
        ({"Hook": {"Mode": "FILTER", "WebUrl": "http://hooks.example.com/f"}},
         "Hook.WebUrl", "HOMING_HOOKS_ALLOW_HTTP"),
        ({"CustomDeliveryConfiguration": {"DeliveryUri": "arn:aws:lambda:us-east-1:1:function:f"},
          "MessageConfiguration": {"CustomMessage": {"Data": "x"}}},
         "CustomDeliveryConfiguration.DeliveryUri", "https://"),
        ({"AdditionalTreatments": [{"SizePercent": 10, "CustomDeliveryConfiguration": {
            "DeliveryUri": "ftp://x.example/f"}}]},
         "AdditionalTreatments[0].CustomDeliveryConfiguration.DeliveryUri", "https://"),
        ({"MessageConfiguration": {"CustomMessage": {"Data": "x"}}},
         "CustomDeliveryConfiguration", "CustomMessage"),
    ],
)  # fmt: skip
def test_hooks_breaking_the_rules_are_a_400_naming_the_field(
    live: LiveCollector, request_: dict[str, Any], field: str, rule: str
) -> None:
    app = live.create_app("hook-rules")
    admin = live.client(app.admin)
    segment_id = linux_segment(admin, app)
    body = {"MessageConfiguration": {"DefaultMessage": {"Title": "t", "Body": "b"}}, **request_}
    with pytest.raises(admin.exceptions.BadRequestException) as caught:
        create(admin, app, segment_id, **body)
    message = caught.value.response["Error"]["Message"]
    assert message.startswith(f"{field}: ") and rule in message, message
    # The same rules hold for an update.
    push = {"DefaultMessage": {"Title": "t", "Body": "b"}}
    campaign = create(admin, app, segment_id, MessageConfiguration=push)
    with pytest.raises(admin.exceptions.BadRequestException) as caught:
        admin.update_campaign(
            ApplicationId=app.id, CampaignId=campaign["Id"], WriteCampaignRequest=request_
        )
    assert caught.value.response["Error"]["Message"].startswith(f"{field}: ")


def test_the_operator_may_allow_http_hooks_to_any_host(
    start_collector: Callable[..., LiveCollector], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (Settings.from_env({}).hooks_allow_http, Settings.from_env({}).hook_timeout) == (
        False, 15.0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="HOMING_HOOK_TIMEOUT='0'"):
        Settings.from_env({"HOMING_HOOK_TIMEOUT": "0"})
    monkeypatch.setenv("HOMING_HOOKS_ALLOW_HTTP", "1")
    live = start_collector()
    app = live.create_app("http-hooks")
    admin = live.client(app.admin)
    url = "http://hooks.internal.example/h"
    # Paused, with no endpoints and no events: nothing calls the URL off this machine.
    campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
        url, ["CUSTOM"], Hook={"Mode": "FILTER", "WebUrl": url}, IsPaused=True))  # fmt: skip
    assert campaign["CustomDeliveryConfiguration"]["DeliveryUri"] == url
    admin.update_application_settings(
        ApplicationId=app.id,
        WriteApplicationSettingsRequest={"CampaignHook": {"Mode": "FILTER", "WebUrl": url}},
    )
    stream = admin.put_event_stream(
        ApplicationId=app.id, WriteEventStream={"DestinationStreamArn": url, "RoleArn": "r"}
    )
    assert stream["EventStream"]["DestinationStreamArn"] == url
    # Still not a Lambda function, nor another scheme.
    with pytest.raises(admin.exceptions.BadRequestException):
        create(admin, app, linux_segment(admin, app), **custom_campaign("ftp://x.example/", []))


def test_a_settings_hook_with_a_lambda_function_is_a_400_naming_it(live: LiveCollector) -> None:
    app = live.create_app("settings-hook")
    admin = live.client(app.admin)
    with pytest.raises(admin.exceptions.BadRequestException) as caught:
        admin.update_application_settings(
            ApplicationId=app.id,
            WriteApplicationSettingsRequest={"CampaignHook": {"LambdaFunctionName": "f"}},
        )
    message = caught.value.response["Error"]["Message"]
    assert message.startswith("CampaignHook.LambdaFunctionName: ") and "WebUrl" in message
    fresh = admin.get_application_settings(ApplicationId=app.id)["ApplicationSettingsResource"]
    assert fresh["CampaignHook"] == {}
