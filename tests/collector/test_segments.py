"""Pinpoint's segment operations through boto3, with botocore's own signing and shapes,
against a live `homing-collector serve`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import App, LiveCollector

DEMOGRAPHIC = {
    "AppVersion": {"Values": ["2.0", "2.1"]},
    "Channel": {"Values": ["GCM"], "DimensionType": "INCLUSIVE"},
    "DeviceType": {"Values": ["phone"]},
    "Make": {"Values": ["LG"], "DimensionType": "EXCLUSIVE"},
    "Model": {"Values": ["G6"]},
    "Platform": {"Values": ["android"]},
}
LOCATION = {
    "Country": {"Values": ["FR", "DE"]},
    "GPSPoint": {
        "Coordinates": {"Latitude": 48.8566, "Longitude": 2.3522},
        "RangeInKilometers": 50.0,
    },
}
ATTRIBUTE_OPERATORS = {
    "INCLUSIVE": ["pro"],
    "EXCLUSIVE": ["banned"],
    "CONTAINS": ["York"],
    "BEFORE": ["2026-01-01T00:00:00Z"],
    "AFTER": ["2025-01-01"],
    "ON": ["2026-03-15T00:00:00Z"],
    "BETWEEN": ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"],
}
# One segment per dimension type, each as boto3 sends it.
DIMENSIONS: dict[str, dict[str, Any]] = {
    "demographic": {"Demographic": DEMOGRAPHIC},
    "location": {"Location": LOCATION},
    "recency": {"Behavior": {"Recency": {"Duration": "DAY_7", "RecencyType": "ACTIVE"}}},
    "attributes": {
        "Attributes": {
            f"a-{op.lower()}": {"AttributeType": op, "Values": values}
            for op, values in ATTRIBUTE_OPERATORS.items()
        }
    },
    "user-attributes": {
        "UserAttributes": {"plan": {"AttributeType": "INCLUSIVE", "Values": ["pro", "team"]}}
    },
    "metrics": {
        "Metrics": {
            f"m-{op.lower()}": {"ComparisonOperator": op, "Value": 2.5}
            for op in (
                "GREATER_THAN",
                "LESS_THAN",
                "GREATER_THAN_OR_EQUAL",
                "LESS_THAN_OR_EQUAL",
                "EQUAL",
            )
        }
    },
}


@pytest.fixture(scope="module")
def app(collector: LiveCollector) -> App:
    return collector.create_app("segments")


@pytest.fixture(scope="module")
def admin(collector: LiveCollector, app: App) -> Any:
    return collector.client(app.admin)


def create(admin: Any, app: App, request: dict[str, Any]) -> dict[str, Any]:
    response = admin.create_segment(ApplicationId=app.id, WriteSegmentRequest=request)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 201
    return response["SegmentResponse"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", DIMENSIONS)
def test_each_dimension_type_round_trips_through_every_operation(
    admin: Any, app: App, kind: str
) -> None:
    dimensions = DIMENSIONS[kind]
    created = create(admin, app, {"Name": kind, "Dimensions": dimensions, "tags": {"k": kind}})
    segment_id = created["Id"]
    assert created["ApplicationId"] == app.id
    assert created["Arn"].endswith(f":apps/{app.id}/segments/{segment_id}")
    assert created["Arn"].startswith("arn:aws:mobiletargeting:")
    assert (created["Name"], created["Version"], created["SegmentType"]) == (kind, 1, "DIMENSIONAL")
    assert created["Dimensions"] == dimensions
    assert created["tags"] == {"k": kind}
    assert created["CreationDate"] == created["LastModifiedDate"]

    read = admin.get_segment(ApplicationId=app.id, SegmentId=segment_id)["SegmentResponse"]
    assert read == created

    changed = {"Demographic": {"Platform": {"Values": ["ios"]}}}
    updated = admin.update_segment(
        ApplicationId=app.id,
        SegmentId=segment_id,
        WriteSegmentRequest={"Name": f"{kind}-2", "Dimensions": changed, "tags": {"x": "y"}},
    )["SegmentResponse"]
    assert (updated["Id"], updated["Version"], updated["Name"]) == (segment_id, 2, f"{kind}-2")
    assert updated["Dimensions"] == changed
    assert updated["CreationDate"] == created["CreationDate"]
    assert updated["LastModifiedDate"] >= created["LastModifiedDate"]
    assert updated["tags"] == {"k": kind}  # an update leaves tags alone, as in Pinpoint

    old = admin.get_segment_version(ApplicationId=app.id, SegmentId=segment_id, Version="1")
    assert old["SegmentResponse"] == created
    versions = admin.get_segment_versions(ApplicationId=app.id, SegmentId=segment_id)
    assert [v["Version"] for v in versions["SegmentsResponse"]["Item"]] == [1, 2]
    assert versions["SegmentsResponse"]["Item"][0]["Dimensions"] == dimensions

    deleted = admin.delete_segment(ApplicationId=app.id, SegmentId=segment_id)
    assert deleted["SegmentResponse"] == updated
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_segment(ApplicationId=app.id, SegmentId=segment_id)
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_segment_version(ApplicationId=app.id, SegmentId=segment_id, Version="1")


def test_segment_groups_over_source_segments(admin: Any, app: App) -> None:
    base = create(admin, app, {"Name": "base", "Dimensions": DIMENSIONS["metrics"]})
    admin.update_segment(
        ApplicationId=app.id, SegmentId=base["Id"], WriteSegmentRequest={"Name": "base-2"}
    )
    groups = {
        "Include": "ANY",
        "Groups": [
            {
                "SourceSegments": [{"Id": base["Id"], "Version": 1}, {"Id": base["Id"]}],
                "SourceType": "ALL",
                "Dimensions": [DIMENSIONS["demographic"], DIMENSIONS["location"]],
                "Type": "ANY",
            },
            {"Dimensions": [DIMENSIONS["recency"]], "Type": "NONE"},
        ],
    }
    created = create(admin, app, {"Name": "grouped", "SegmentGroups": groups})
    assert created["SegmentGroups"] == groups
    read = admin.get_segment(ApplicationId=app.id, SegmentId=created["Id"])["SegmentResponse"]
    assert read["SegmentGroups"] == groups


def test_listing_pages_through_every_segment_and_version(collector: LiveCollector) -> None:
    app = collector.create_app("segments-paging")
    admin = collector.client(app.admin)
    made = sorted(create(admin, app, {"Name": f"s{i}"})["Id"] for i in range(5))
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"Token": token} if token else {}
        page = admin.get_segments(ApplicationId=app.id, PageSize="2", **kwargs)
        seen += [item["Id"] for item in page["SegmentsResponse"]["Item"]]
        pages += 1
        token = page["SegmentsResponse"].get("NextToken")
        if not token:
            break
    assert (seen, pages) == (made, 3)

    for n in range(4):
        admin.update_segment(
            ApplicationId=app.id, SegmentId=made[0], WriteSegmentRequest={"Name": f"v{n + 2}"}
        )
    first = admin.get_segment_versions(ApplicationId=app.id, SegmentId=made[0], PageSize="3")
    rest = admin.get_segment_versions(
        ApplicationId=app.id,
        SegmentId=made[0],
        PageSize="3",
        Token=first["SegmentsResponse"]["NextToken"],
    )
    names = [v["Name"] for p in (first, rest) for v in p["SegmentsResponse"]["Item"]]
    assert names[1:] == ["v2", "v3", "v4", "v5"]
    assert [v["Version"] for p in (first, rest) for v in p["SegmentsResponse"]["Item"]] == [
        1, 2, 3, 4, 5,
    ]  # fmt: skip
    assert "NextToken" not in rest["SegmentsResponse"]
    listed = admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"]
    assert {s["Id"]: s["Version"] for s in listed}[made[0]] == 5


def at(path: str, value: Any) -> dict[str, Any]:
    """{"A": {"B": value}} from "A.B"."""
    for name in reversed(path.split(".")):
        value = {name: value}
    return value  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (at("Dimensions.Demographic.Platform", {"Values": ["ios"], "DimensionType": "SOME"}),
         "Dimensions.Demographic.Platform.DimensionType"),
        (at("Dimensions.Demographic.Platform", {"DimensionType": "INCLUSIVE"}),
         "Dimensions.Demographic.Platform.Values"),
        (at("Dimensions.Behavior.Recency", {"Duration": "DAY_2", "RecencyType": "ACTIVE"}),
         "Dimensions.Behavior.Recency.Duration"),
        (at("Dimensions.Location.GPSPoint.Coordinates", {"Latitude": 91, "Longitude": 0}),
         "Dimensions.Location.GPSPoint.Coordinates.Latitude"),
        (at("Dimensions.Attributes.when", {"AttributeType": "BETWEEN", "Values": ["2026-01-01"]}),
         "Dimensions.Attributes.when.Values"),
        (at("Dimensions.UserAttributes.when", {"AttributeType": "AFTER", "Values": ["soon"]}),
         "Dimensions.UserAttributes.when.Values"),
        (at("Dimensions.Metrics.n", {"ComparisonOperator": "ABOUT", "Value": 1}),
         "Dimensions.Metrics.n.ComparisonOperator"),
        (at("SegmentGroups.Groups", [{"SourceSegments": [{"Id": "no-such-segment"}]}]),
         "SegmentGroups.Groups[0].SourceSegments[0].Id"),
        (at("SegmentGroups.Include", "MOST"), "SegmentGroups.Include"),
    ],
)  # fmt: skip
def test_a_bad_segment_is_a_400_naming_the_field(
    collector: LiveCollector, app: App, request_: dict[str, Any], field: str
) -> None:
    admin = collector.client(app.admin, validate=False)
    with pytest.raises(admin.exceptions.BadRequestException) as info:
        admin.create_segment(ApplicationId=app.id, WriteSegmentRequest=request_)
    assert info.value.response["Error"]["Message"].startswith(f"{field}:")


def test_a_missing_source_version_and_a_cycle_are_400s(admin: Any, app: App) -> None:
    base = create(admin, app, {"Name": "base"})
    with pytest.raises(admin.exceptions.BadRequestException) as info:
        create(admin, app, {"SegmentGroups": {"Groups": [
            {"SourceSegments": [{"Id": base["Id"]}]},
            {"SourceSegments": [{"Id": base["Id"], "Version": 7}]},
        ]}})  # fmt: skip
    message = info.value.response["Error"]["Message"]
    assert message.startswith("SegmentGroups.Groups[1].SourceSegments[0].Version:"), message
    on_base = create(admin, app, {"SegmentGroups": {"Groups": [
        {"SourceSegments": [{"Id": base["Id"]}]}]}})  # fmt: skip
    with pytest.raises(admin.exceptions.BadRequestException) as info:
        admin.update_segment(
            ApplicationId=app.id,
            SegmentId=base["Id"],
            WriteSegmentRequest={"SegmentGroups": {"Groups": [
                {"SourceSegments": [{"Id": on_base["Id"]}]}]}},
        )  # fmt: skip
    assert "cycle" in info.value.response["Error"]["Message"]
    # Nothing was stored by the refused update.
    read = admin.get_segment(ApplicationId=app.id, SegmentId=base["Id"])["SegmentResponse"]
    assert read["Version"] == 1


def test_unknown_segments_and_versions_are_404s(admin: Any, app: App) -> None:
    segment = create(admin, app, {"Name": "one"})
    for call, kwargs in [
        (admin.get_segment, {"SegmentId": "nope"}),
        (admin.delete_segment, {"SegmentId": "nope"}),
        (admin.get_segment_versions, {"SegmentId": "nope"}),
        (admin.get_segment_version, {"SegmentId": "nope", "Version": "1"}),
        (admin.get_segment_version, {"SegmentId": segment["Id"], "Version": "2"}),
        (admin.update_segment, {"SegmentId": "nope", "WriteSegmentRequest": {"Name": "x"}}),
    ]:
        with pytest.raises(admin.exceptions.NotFoundException):
            call(ApplicationId=app.id, **kwargs)
    with pytest.raises(admin.exceptions.BadRequestException) as info:
        admin.get_segment_version(ApplicationId=app.id, SegmentId=segment["Id"], Version="x")
    assert info.value.response["Error"]["Message"].startswith("version:")


def test_an_ingest_key_may_not_touch_segments(collector: LiveCollector, app: App) -> None:
    ingest = collector.client(app.ingest)
    with pytest.raises(ingest.exceptions.ForbiddenException):
        ingest.create_segment(ApplicationId=app.id, WriteSegmentRequest={"Name": "x"})
    with pytest.raises(ingest.exceptions.ForbiddenException):
        ingest.get_segments(ApplicationId=app.id)


def test_deleting_the_app_deletes_its_segments(collector: LiveCollector) -> None:
    app = collector.create_app("segments-doomed")
    admin = collector.client(app.admin)
    create(admin, app, {"Name": "gone"})
    root = collector.client(collector.root_key())
    root.delete_app(ApplicationId=app.id)
    assert collector.query("SELECT count(*) FROM segments WHERE app_id = ?", app.id) == [(0,)]


# -- application settings ----------------------------------------------------------------


def test_application_settings_are_stored_and_merged_member_by_member(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("settings")
    admin = collector.client(app.admin)
    fresh = admin.get_application_settings(ApplicationId=app.id)["ApplicationSettingsResource"]
    assert fresh["ApplicationId"] == app.id
    assert (fresh["Limits"], fresh["QuietTime"], fresh["CampaignHook"]) == ({}, {}, {})

    limits = {"Daily": 3, "Total": 10, "MessagesPerSecond": 50, "MaximumDuration": 3600,
              "Session": 2}  # fmt: skip
    hook = {"Mode": "FILTER", "WebUrl": "https://hooks.example.com/c"}
    first = admin.update_application_settings(
        ApplicationId=app.id,
        WriteApplicationSettingsRequest={
            "Limits": limits,
            "QuietTime": {"Start": "22:00", "End": "07:00"},
            "CampaignHook": hook,
        },
    )["ApplicationSettingsResource"]
    assert (first["Limits"], first["CampaignHook"]) == (limits, hook)
    assert first["QuietTime"] == {"Start": "22:00", "End": "07:00"}
    # A member not given stays as it was; one given replaces the stored one whole.
    second = admin.update_application_settings(
        ApplicationId=app.id, WriteApplicationSettingsRequest={"Limits": {"Daily": 5}}
    )["ApplicationSettingsResource"]
    assert second["Limits"] == {"Daily": 5}
    assert second["QuietTime"] == first["QuietTime"] and second["CampaignHook"] == hook
    assert second["LastModifiedDate"] >= first["LastModifiedDate"]
    read = admin.get_application_settings(ApplicationId=app.id)["ApplicationSettingsResource"]
    assert read == second


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"Limits": {"Daily": 101}}, "Limits.Daily"),
        ({"Limits": {"MessagesPerSecond": 0}}, "Limits.MessagesPerSecond"),
        ({"Limits": {"MaximumDuration": 59}}, "Limits.MaximumDuration"),
        ({"QuietTime": {"Start": "25:00", "End": "07:00"}}, "QuietTime.Start"),
        ({"QuietTime": {"Start": "22:00"}}, "QuietTime.End"),
        ({"CampaignHook": {"Mode": "SOMETIMES"}}, "CampaignHook.Mode"),
    ],
)
def test_bad_application_settings_are_400s_naming_the_field(
    collector: LiveCollector, app: App, request_: dict[str, Any], field: str
) -> None:
    admin = collector.client(app.admin, validate=False)
    with pytest.raises(admin.exceptions.BadRequestException) as info:
        admin.update_application_settings(
            ApplicationId=app.id, WriteApplicationSettingsRequest=request_
        )
    assert info.value.response["Error"]["Message"].startswith(f"{field}:")
    ingest = collector.client(app.ingest)
    with pytest.raises(ingest.exceptions.ForbiddenException):
        ingest.get_application_settings(ApplicationId=app.id)
