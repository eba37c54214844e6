"""Campaigns end to end: boto3 creates them, SDK devices in other processes send events
and receive the pushes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import LiveCollector
from tests.e2e.test_push import Device
from tests.e2e.test_push import devices as devices  # the fixture


def purchase(amount: float) -> str:
    return "record " + json.dumps(
        {"event_type": "purchase", "attributes": {"sku": "A-1"}, "metrics": {"amount": amount}}
    )


def test_an_event_campaign_pushes_to_the_device_that_sent_a_matching_event_only(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    app = collector.create_app("e2e-event-campaign")
    android: dict[str, Any] = {"demographic": {"platform": "android"}}
    buyer = devices(collector, app, "buyer", update=android)
    browser = devices(collector, app, "browser", update=android)  # a purchase too small
    outsider = devices(collector, app, "outsider", update={"demographic": {"platform": "ios"}})
    admin = collector.client(app.admin)
    segment = admin.create_segment(ApplicationId=app.id, WriteSegmentRequest={
        "Name": "android",
        "Dimensions": {"Demographic": {"Platform": {"DimensionType": "INCLUSIVE",
                                                    "Values": ["android"]}}},
    })["SegmentResponse"]  # fmt: skip
    campaign = admin.create_campaign(ApplicationId=app.id, WriteCampaignRequest={
        "Name": "thanks",
        "SegmentId": segment["Id"],
        "Schedule": {
            "StartTime": "IMMEDIATE", "Frequency": "EVENT", "EndTime": "2099-01-01T00:00:00Z",
            "EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {
                "EventType": {"DimensionType": "INCLUSIVE", "Values": ["purchase"]},
                "Metrics": {"amount": {"ComparisonOperator": "GREATER_THAN", "Value": 5}},
            }},
        },
        "MessageConfiguration": {"DefaultMessage": {"Title": "Thanks", "Body": "for buying"}},
    })["CampaignResponse"]  # fmt: skip
    time.sleep(1)  # a new campaign's filter reaches every collector process within a second

    for device, amount in ((buyer, 9.5), (browser, 1.0), (outsider, 9.5)):
        device.command(purchase(amount))
        recorded = device.expect("recorded")
        assert recorded["error"] is None and recorded["sent"] >= 1, recorded

    push = buyer.expect("push", timeout=10)
    assert (push["title"], push["body"]) == ("Thanks", "for buying")
    assert push["campaign"]["campaign_id"] == campaign["Id"]
    assert push["campaign"]["treatment_id"] == "0"
    for device in (browser, outsider):
        assert [line for line in device.quiet(2) if line["kind"] == "push"] == []
    assert [line for line in buyer.quiet(0) if line["kind"] == "push"] == []  # exactly one
