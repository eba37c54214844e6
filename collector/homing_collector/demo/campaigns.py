"""The demo's stored campaigns: an A/B campaign with a holdout, sent once, and a live
event-triggered campaign, both to the segment of push devices.

They are stored as CreateSegment and CreateCampaign store theirs, with the ids the
simulation gave them, so that the history's `_campaign.*` events name real campaigns.
The A/B campaign's run is in the past and in the history already: it is planned as done,
and the scheduler does not send it again. The event campaign runs until 30 days from now,
so events that arrive from devices trigger it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

from homing.wire import format_timestamp
from homing_collector.campaigns.campaign_shapes import WriteCampaignRequest
from homing_collector.campaigns.decode import convert
from homing_collector.campaigns.shapes import WriteSegmentRequest
from homing_collector.demo.shop import AB_CAMPAIGN, EVENT_CAMPAIGN
from homing_collector.demo.simulation import StoredCampaign
from homing_collector.storage.base import CampaignRecord, SegmentRecord, Storage

SEGMENT_ID = "demo-push-devices"


def _stamp(ms: int) -> str:
    return format_timestamp(ms / 1000)


def _message(title: str, body: str) -> dict[str, Any]:
    section = {"Title": title, "Body": body, "Action": "OPEN_APP"}
    return {"APNSMessage": section, "GCMMessage": section}


def _requests(ab: StoredCampaign, event: StoredCampaign, now_ms: int) -> list[dict[str, Any]]:
    _name, _before, _hour, holdout, treatments = AB_CAMPAIGN
    (control, _size, _rate), *others = treatments
    _event_name, event_type, _started, _open_rate = EVENT_CAMPAIGN
    return [
        {
            "Name": ab.name,
            "SegmentId": SEGMENT_ID,
            "HoldoutPercent": holdout,
            "TreatmentName": control,
            "MessageConfiguration": _message("Spring sale", "New arrivals for spring."),
            "Schedule": {"StartTime": _stamp(ab.start_ms), "Frequency": "ONCE"},
            "AdditionalTreatments": [
                {
                    "SizePercent": size,
                    "TreatmentName": name,
                    "MessageConfiguration": _message(
                        "Spring sale: 20% off", "{{User.UserId}}, 20% off everything today."
                    ),
                }
                for name, size, _rate in others
            ],
        },
        {
            "Name": event.name,
            "SegmentId": SEGMENT_ID,
            "MessageConfiguration": _message(
                "Still thinking it over?", "Your {{Attributes.category}} pick is in your cart."
            ),
            "Limits": {"Daily": 1},
            "Schedule": {
                "StartTime": _stamp(event.start_ms),
                "EndTime": _stamp(now_ms + 30 * 86_400_000),
                "Frequency": "EVENT",
                "EventFilter": {
                    "FilterType": "ENDPOINT",
                    "Dimensions": {
                        "EventType": {"DimensionType": "INCLUSIVE", "Values": [event_type]}
                    },
                },
            },
        },
    ]


async def store(
    storage: Storage,
    app_id: str,
    ab: StoredCampaign,
    event: StoredCampaign,
    now: datetime,
) -> None:
    """Store the segment of push devices and the two campaigns."""
    now_ms = int(now.timestamp() * 1000)
    created = _stamp(min(ab.start_ms, event.start_ms) - 86_400_000)
    segment = convert(
        {"Name": "Push devices", "Dimensions": {"Demographic": {"Channel": {
            "DimensionType": "INCLUSIVE", "Values": ["APNS", "GCM"]}}}},
        WriteSegmentRequest,
    )  # fmt: skip
    await storage.create_segment(
        SegmentRecord(
            app_id=app_id, id=SEGMENT_ID, version=1, created_at=created, modified_at=created,
            request=msgspec.json.encode(segment).decode(),
        ),
        [],
    )  # fmt: skip
    for stored, body in zip((ab, event), _requests(ab, event, now_ms), strict=True):
        request = convert(body, WriteCampaignRequest)
        at = _stamp(stored.start_ms - 3_600_000)
        await storage.create_campaign(
            CampaignRecord(
                app_id=app_id, id=stored.id, version=1, created_at=at, modified_at=at,
                request=msgspec.json.encode(request).decode(), segment_id=SEGMENT_ID,
                state="SCHEDULED",
            ),
            None,
        )  # fmt: skip
    # The A/B campaign's one run is in the history: planned as done, never sent again.
    planned = max(now, datetime.now(timezone.utc)) + timedelta(seconds=1)
    await storage.plan_runs(app_id, ab.id, 1, [], [], int(planned.timestamp() * 1000), True)
