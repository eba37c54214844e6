"""Pinpoint's campaign operations through boto3, with botocore's own signing and shapes,
against a live `homing-collector serve`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.conftest import App, LiveCollector

MESSAGE = {"DefaultMessage": {"Title": "Hi {{User.UserAttributes.FirstName}}", "Body": "Sale"}}
EVENT_FILTER = {
    "FilterType": "ENDPOINT",
    "Dimensions": {
        "EventType": {"DimensionType": "INCLUSIVE", "Values": ["purchase"]},
        "Attributes": {"sku": {"AttributeType": "INCLUSIVE", "Values": ["A-1"]}},
        "Metrics": {"amount": {"ComparisonOperator": "GREATER_THAN", "Value": 5.0}},
    },
}


def later(hours: float = 1) -> str:
    moment = datetime.now(timezone.utc) + timedelta(hours=hours)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# A campaign of each frequency, as boto3 sends it.
SCHEDULES: dict[str, dict[str, Any]] = {
    "immediate": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
    "once": {"StartTime": later(2), "Frequency": "ONCE", "Timezone": "UTC+02"},
    "hourly": {"StartTime": later(1), "EndTime": later(30), "Frequency": "HOURLY"},
    "daily": {
        "StartTime": later(3),
        "Frequency": "DAILY",
        "IsLocalTime": True,
        "QuietTime": {"Start": "22:00", "End": "07:00"},
    },
    "weekly": {"StartTime": later(4), "Frequency": "WEEKLY", "EndTime": later(24 * 60)},
    "monthly": {"StartTime": later(5), "Frequency": "MONTHLY"},
    "event": {"StartTime": later(1), "Frequency": "EVENT", "EventFilter": EVENT_FILTER},
}


@pytest.fixture(scope="module")
def app(collector: LiveCollector) -> App:
    return collector.create_app("campaigns")


@pytest.fixture(scope="module")
def admin(collector: LiveCollector, app: App) -> Any:
    return collector.client(app.admin)


@pytest.fixture(scope="module")
def segment(admin: Any, app: App) -> dict[str, Any]:
    response = admin.create_segment(
        ApplicationId=app.id,
        WriteSegmentRequest={
            "Name": "android",
            "Dimensions": {"Demographic": {"Platform": {"Values": ["android"]}}},
        },
    )
    return response["SegmentResponse"]  # type: ignore[no-any-return]


def create(admin: Any, app: App, request: dict[str, Any]) -> dict[str, Any]:
    response = admin.create_campaign(ApplicationId=app.id, WriteCampaignRequest=request)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 201
    return response["CampaignResponse"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", SCHEDULES)
def test_each_frequency_round_trips_through_every_operation(
    admin: Any, app: App, segment: dict[str, Any], kind: str
) -> None:
    request = {
        "Name": kind,
        "SegmentId": segment["Id"],
        "Schedule": SCHEDULES[kind],
        "MessageConfiguration": MESSAGE,
        "Limits": {"Daily": 2, "MaximumDuration": 600},
        "tags": {"k": kind},
    }
    created = create(admin, app, request)
    campaign_id = created["Id"]
    assert created["ApplicationId"] == app.id
    assert created["Arn"].startswith("arn:aws:mobiletargeting:")
    assert created["Arn"].endswith(f":apps/{app.id}/campaigns/{campaign_id}")
    assert (created["Name"], created["Version"]) == (kind, 1)
    assert (created["SegmentId"], created["SegmentVersion"]) == (segment["Id"], 1)
    assert created["Schedule"] == SCHEDULES[kind]
    assert created["MessageConfiguration"] == MESSAGE
    assert created["Limits"] == {"Daily": 2, "MaximumDuration": 600}
    assert (created["HoldoutPercent"], created["IsPaused"]) == (0, False)
    assert created["AdditionalTreatments"] == []
    assert created["tags"] == {"k": kind}
    assert created["CreationDate"] == created["LastModifiedDate"]
    assert created["State"]["CampaignStatus"] in ("SCHEDULED", "EXECUTING", "COMPLETED")
    if kind != "immediate":
        assert created["State"] == {"CampaignStatus": "SCHEDULED"}

    read = admin.get_campaign(ApplicationId=app.id, CampaignId=campaign_id)["CampaignResponse"]
    assert {k: v for k, v in read.items() if k != "State"} == {
        k: v for k, v in created.items() if k != "State"
    }

    # An update replaces the members it gives and keeps the others.
    updated = admin.update_campaign(
        ApplicationId=app.id,
        CampaignId=campaign_id,
        WriteCampaignRequest={"Name": f"{kind}-2", "IsPaused": True, "tags": {"x": "y"}},
    )["CampaignResponse"]
    assert (updated["Id"], updated["Version"], updated["Name"]) == (campaign_id, 2, f"{kind}-2")
    assert updated["IsPaused"] is True
    assert updated["Schedule"] == SCHEDULES[kind]
    assert updated["tags"] == {"k": kind}
    assert updated["CreationDate"] == created["CreationDate"]
    if kind != "immediate":
        assert updated["State"] == {"CampaignStatus": "PAUSED"}

    old = admin.get_campaign_version(ApplicationId=app.id, CampaignId=campaign_id, Version="1")
    assert old["CampaignResponse"]["Name"] == kind
    assert old["CampaignResponse"]["Version"] == 1
    versions = admin.get_campaign_versions(ApplicationId=app.id, CampaignId=campaign_id)
    assert [v["Version"] for v in versions["CampaignsResponse"]["Item"]] == [1, 2]

    deleted = admin.delete_campaign(ApplicationId=app.id, CampaignId=campaign_id)
    assert deleted["CampaignResponse"]["Id"] == campaign_id
    assert deleted["CampaignResponse"]["State"] == {"CampaignStatus": "DELETED"}
    for call, kwargs in [
        (admin.get_campaign, {}),
        (admin.get_campaign_version, {"Version": "1"}),
        (admin.get_campaign_versions, {}),
        (admin.get_campaign_activities, {}),
        (admin.delete_campaign, {}),
    ]:
        with pytest.raises(admin.exceptions.NotFoundException):
            call(ApplicationId=app.id, CampaignId=campaign_id, **kwargs)


def test_an_ab_campaign_answers_its_treatments(
    admin: Any, app: App, segment: dict[str, Any]
) -> None:
    created = create(admin, app, {
        "SegmentId": segment["Id"],
        "Schedule": SCHEDULES["once"],
        "MessageConfiguration": MESSAGE,
        "HoldoutPercent": 20,
        "TreatmentName": "A",
        "AdditionalTreatments": [
            {"SizePercent": 40, "TreatmentName": "B",
             "MessageConfiguration": {"GCMMessage": {"Title": "B", "Body": "b"}}},
        ],
    })  # fmt: skip
    assert created["HoldoutPercent"] == 20
    assert created["TreatmentName"] == "A"
    [treatment] = created["AdditionalTreatments"]
    assert (treatment["Id"], treatment["SizePercent"], treatment["TreatmentName"]) == (
        "1", 40, "B",
    )  # fmt: skip
    assert treatment["State"] == created["DefaultState"] == {"CampaignStatus": "SCHEDULED"}


def test_listing_pages_through_every_campaign(
    collector: LiveCollector, segment: dict[str, Any]
) -> None:
    app = collector.create_app("campaigns-paging")
    admin = collector.client(app.admin)
    base = admin.create_segment(ApplicationId=app.id, WriteSegmentRequest={"Name": "all"})
    request = {
        "SegmentId": base["SegmentResponse"]["Id"],
        "Schedule": SCHEDULES["weekly"],
        "MessageConfiguration": MESSAGE,
    }
    made = sorted(create(admin, app, {**request, "Name": f"c{i}"})["Id"] for i in range(5))
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"Token": token} if token else {}
        page = admin.get_campaigns(ApplicationId=app.id, PageSize="2", **kwargs)
        seen += [item["Id"] for item in page["CampaignsResponse"]["Item"]]
        pages += 1
        token = page["CampaignsResponse"].get("NextToken")
        if not token:
            break
    assert (seen, pages) == (made, 3)
    for n in range(3):
        admin.update_campaign(
            ApplicationId=app.id, CampaignId=made[0], WriteCampaignRequest={"Name": f"v{n + 2}"}
        )
    first = admin.get_campaign_versions(ApplicationId=app.id, CampaignId=made[0], PageSize="3")
    rest = admin.get_campaign_versions(
        ApplicationId=app.id,
        CampaignId=made[0],
        PageSize="3",
        Token=first["CampaignsResponse"]["NextToken"],
    )
    versions = [v["Version"] for p in (first, rest) for v in p["CampaignsResponse"]["Item"]]
    assert versions == [1, 2, 3, 4]


def at(path: str, value: Any) -> dict[str, Any]:
    """{"A": {"B": value}} from "A.B"."""
    for name in reversed(path.split(".")):
        value = {name: value}
    return value  # type: ignore[no-any-return]


BAD = [
    (at("Schedule.Frequency", "YEARLY"), "Schedule.Frequency"),
    (at("Schedule.StartTime", "tomorrow"), "Schedule.StartTime"),
    ({"Schedule": {"StartTime": "IMMEDIATE", "Frequency": "EVENT"}}, "Schedule.EventFilter"),
    ({"Schedule": {"StartTime": "2020-01-01T00:00:00Z"}}, "Schedule.StartTime"),
    ({"Schedule": {"StartTime": later(2), "EndTime": later(1)}}, "Schedule.EndTime"),
    (at("Schedule.QuietTime", {"Start": "22:00"}), "Schedule.QuietTime.End"),
    (at("Limits.Daily", 101), "Limits.Daily"),
    (at("Limits.MaximumDuration", 10), "Limits.MaximumDuration"),
    ({"HoldoutPercent": 70, "AdditionalTreatments": [{"SizePercent": 40}]},
     "AdditionalTreatments"),
    ({"AdditionalTreatments": [{"SizePercent": 5}] * 5}, "AdditionalTreatments"),
    (at("MessageConfiguration.DefaultMessage.Action", "CALL"),
     "MessageConfiguration.DefaultMessage.Action"),
    ({"MessageConfiguration": {"EmailMessage": {"Body": "x"}}}, "MessageConfiguration"),
    ({"SegmentId": None}, "SegmentId"),
    ({"SegmentId": "no-such-segment"}, "SegmentId"),
    ({"SegmentVersion": 9}, "SegmentVersion"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field"), BAD)
def test_a_bad_campaign_is_a_400_naming_the_field(
    collector: LiveCollector, app: App, segment: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    admin = collector.client(app.admin, validate=False)
    request = {
        "SegmentId": segment["Id"],
        "Schedule": SCHEDULES["daily"],
        "MessageConfiguration": MESSAGE,
    }
    for name, value in change.items():
        if name == "Schedule":
            request[name] = {**request[name], **value}
        else:
            request[name] = value
    request = {k: v for k, v in request.items() if v is not None}
    with pytest.raises(admin.exceptions.BadRequestException) as info:
        admin.create_campaign(ApplicationId=app.id, WriteCampaignRequest=request)
    message = info.value.response["Error"]["Message"]
    assert message.startswith(f"{field}:"), message


def test_an_update_that_breaks_the_whole_is_a_400_and_stores_nothing(
    admin: Any, app: App, segment: dict[str, Any]
) -> None:
    created = create(admin, app, {
        "SegmentId": segment["Id"], "Schedule": SCHEDULES["once"], "MessageConfiguration": MESSAGE,
        "HoldoutPercent": 50,
    })  # fmt: skip
    with pytest.raises(admin.exceptions.BadRequestException) as info:
        admin.update_campaign(
            ApplicationId=app.id,
            CampaignId=created["Id"],
            WriteCampaignRequest={"AdditionalTreatments": [{"SizePercent": 60}]},
        )
    assert info.value.response["Error"]["Message"].startswith("AdditionalTreatments:")
    with pytest.raises(admin.exceptions.BadRequestException) as info:
        admin.update_campaign(
            ApplicationId=app.id,
            CampaignId=created["Id"],
            WriteCampaignRequest={"SegmentId": "gone"},
        )
    assert info.value.response["Error"]["Message"].startswith("SegmentId:")
    read = admin.get_campaign(ApplicationId=app.id, CampaignId=created["Id"])
    assert read["CampaignResponse"]["Version"] == 1
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.update_campaign(
            ApplicationId=app.id, CampaignId="nope", WriteCampaignRequest={"Name": "x"}
        )


def test_deleting_the_segment_deletes_its_campaigns(collector: LiveCollector) -> None:
    app = collector.create_app("campaigns-segment-gone")
    admin = collector.client(app.admin)
    segment = admin.create_segment(ApplicationId=app.id, WriteSegmentRequest={"Name": "s"})
    segment_id = segment["SegmentResponse"]["Id"]
    other = admin.create_segment(ApplicationId=app.id, WriteSegmentRequest={"Name": "o"})
    request = {"Schedule": SCHEDULES["daily"], "MessageConfiguration": MESSAGE}
    doomed = create(admin, app, {**request, "SegmentId": segment_id})
    kept = create(admin, app, {**request, "SegmentId": other["SegmentResponse"]["Id"]})
    admin.delete_segment(ApplicationId=app.id, SegmentId=segment_id)
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_campaign(ApplicationId=app.id, CampaignId=doomed["Id"])
    assert admin.get_campaign(ApplicationId=app.id, CampaignId=kept["Id"])["CampaignResponse"]

    root = collector.client(collector.root_key())
    root.delete_app(ApplicationId=app.id)
    assert collector.query("SELECT count(*) FROM campaigns WHERE app_id = ?", app.id) == [(0,)]


def test_an_ingest_key_may_not_touch_campaigns(collector: LiveCollector, app: App) -> None:
    ingest = collector.client(app.ingest)
    with pytest.raises(ingest.exceptions.ForbiddenException):
        ingest.get_campaigns(ApplicationId=app.id)
    with pytest.raises(ingest.exceptions.ForbiddenException):
        ingest.create_campaign(ApplicationId=app.id, WriteCampaignRequest={"Name": "x"})
