"""The payload parser against the shapes Amazon Pinpoint documents for FCM and APNs.

The fixtures are written out from the public documentation of Pinpoint's push
payloads: FCM data messages carry a flat map of ``pinpoint.*`` keys, APNs payloads an
``aps`` dictionary and a ``data.pinpoint`` object with the campaign and the deep link.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import homing
from homing.push import PushMessage, parse_payload

# An FCM data message from a Pinpoint campaign, as RemoteMessage.getData() returns it.
FCM_CAMPAIGN = {
    "pinpoint.notification.title": "Summer sale",
    "pinpoint.notification.body": "Everything 20% off until Sunday",
    "pinpoint.notification.silentPush": "0",
    "pinpoint.openApp": "true",
    "pinpoint.url": "https://shop.example/sale",
    "pinpoint.campaign.campaign_id": "3b5f0bd6a8b14b5a9b5c1e2f",
    "pinpoint.campaign.campaign_activity_id": "6c9d1e2f3a4b4c5d8e7f9a0b",
    "pinpoint.campaign.treatment_id": "0",
    "pinpoint.notification.imageUrl": "https://shop.example/banner.png",
    "coupon": "SUMMER20",
}

# A silent FCM push whose JSON body carries settings for the app.
FCM_SILENT = {
    "pinpoint.notification.silentPush": "1",
    "pinpoint.jsonBody": '{"refresh": "catalog", "ttl": 60}',
    "pinpoint.campaign.campaign_id": "c-silent",
    "pinpoint.campaign.campaign_activity_id": "a-silent",
    "pinpoint.campaign.treatment_id": "1",
}

# A direct message (SendMessages) with a deep link and no campaign.
FCM_DIRECT = {
    "pinpoint.notification.title": "Your order shipped",
    "pinpoint.notification.body": "Track it in the app",
    "pinpoint.deeplink": "shop://orders/1234",
    "pinpoint.notification.silentPush": "0",
    "order": "1234",
}

# An APNs alert from a campaign: the campaign sits under data.pinpoint.
APNS_CAMPAIGN = {
    "aps": {"alert": {"title": "Summer sale", "body": "Everything 20% off"}, "sound": "default"},
    "data": {
        "pinpoint": {
            "deeplink": "shop://sale",
            "campaign": {
                "campaign_id": "3b5f0bd6a8b14b5a9b5c1e2f",
                "campaign_activity_id": "6c9d1e2f3a4b4c5d8e7f9a0b",
                "treatment_id": "0",
            },
        }
    },
}

# An APNs background (silent) notification: content-available and nothing to show.
APNS_SILENT = {
    "aps": {"content-available": 1},
    "data": {"pinpoint": {"campaign": {"campaign_id": "c9", "treatment_id": "2"}}},
    "settings": {"theme": "dark"},
}

# A message of Homing's push stream: the FCM-style map under "Data".
STREAM = {
    "MessageId": "a1f1c2d3-0000-4000-8000-000000000001",
    "Silent": False,
    "ExpiresAt": "2026-12-26T10:00:00.000Z",
    "Data": {**FCM_DIRECT},
}


def test_an_fcm_campaign_message() -> None:
    message = parse_payload(FCM_CAMPAIGN)
    assert message == PushMessage(
        message_id=None,
        silent=False,
        title="Summer sale",
        body="Everything 20% off until Sunday",
        url="https://shop.example/sale",
        deeplink=None,
        open_app=True,
        data={"coupon": "SUMMER20"},
        campaign={
            "campaign_id": "3b5f0bd6a8b14b5a9b5c1e2f",
            "campaign_activity_id": "6c9d1e2f3a4b4c5d8e7f9a0b",
            "treatment_id": "0",
        },
    )
    assert message.raw is FCM_CAMPAIGN


def test_an_fcm_silent_push_carries_its_json_body_as_data() -> None:
    message = parse_payload(FCM_SILENT, message_id="0:1690000000000000%abc")
    assert message.silent is True
    assert message.message_id == "0:1690000000000000%abc"
    assert message.title is None and message.body is None
    assert message.data == {"refresh": "catalog", "ttl": 60}
    assert message.campaign == {"campaign_id": "c-silent", "campaign_activity_id": "a-silent",
                                "treatment_id": "1"}  # fmt: skip


def test_an_fcm_message_wrapped_with_its_notification_block() -> None:
    wrapped = {"data": FCM_DIRECT, "notification": {"title": "ignored", "body": "ignored"}}
    message = parse_payload(wrapped)
    assert (message.title, message.deeplink, message.data) == (
        "Your order shipped", "shop://orders/1234", {"order": "1234"}
    )  # fmt: skip
    only_notification = {"data": {"order": "9"}, "notification": {"title": "T", "body": "B"}}
    assert (parse_payload(only_notification).title, parse_payload(only_notification).body) == (
        "T", "B"
    )  # fmt: skip


def test_an_apns_campaign_alert() -> None:
    message = parse_payload(APNS_CAMPAIGN)
    assert (message.silent, message.title, message.body, message.deeplink) == (
        False, "Summer sale", "Everything 20% off", "shop://sale"
    )  # fmt: skip
    assert message.campaign["campaign_id"] == "3b5f0bd6a8b14b5a9b5c1e2f"
    assert message.campaign["treatment_id"] == "0"


def test_an_apns_background_notification_is_silent() -> None:
    message = parse_payload(APNS_SILENT)
    assert message.silent is True
    assert message.campaign == {"campaign_id": "c9", "treatment_id": "2"}
    assert message.data == {"settings": {"theme": "dark"}}
    assert parse_payload({"aps": {"alert": "Hello"}}).body == "Hello"
    assert parse_payload({"aps": {"alert": "Hello"}}).silent is False


def test_a_stream_message() -> None:
    message = parse_payload(STREAM)
    assert message.message_id == STREAM["MessageId"]
    assert message.expires_at == "2026-12-26T10:00:00.000Z"
    assert (message.silent, message.title, message.data) == (
        False, "Your order shipped", {"order": "1234"}
    )  # fmt: skip
    silent = {**STREAM, "Silent": True}
    assert parse_payload(silent).silent is True


@pytest.mark.parametrize("bad", [None, "text", ["a"], {"MessageId": "", "Data": {}}])
def test_a_payload_of_no_known_shape_raises_value_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_payload(bad)


def test_push_message_is_public_and_frozen() -> None:
    message = homing.PushMessage(title="t")
    with pytest.raises(AttributeError):
        message.title = "u"  # type: ignore[misc]


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=20))
def test_any_string_map_parses_and_splits_into_pinpoint_and_custom_keys(
    data: dict[str, str],
) -> None:
    message = parse_payload(data)
    for key, value in data.items():
        if key.startswith("pinpoint.campaign."):
            assert message.campaign[key.removeprefix("pinpoint.campaign.")] == value
        elif not key.startswith("pinpoint.") and key not in ("data", "aps"):
            assert message.data.get(key) == value or "pinpoint.jsonBody" in data
    flag = data.get("pinpoint.notification.silentPush")
    assert message.silent == (flag in ("1", "true", "True", "TRUE", "yes"))
