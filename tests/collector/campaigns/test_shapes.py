"""Request shapes: wire names, bounds and cross-field rules, with errors naming the field."""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

import botocore
import msgspec
import pytest

from homing.wire import WireError
from homing_collector.campaigns import campaign_shapes as cs
from homing_collector.campaigns import shapes
from homing_collector.campaigns.decode import decode


def error(body: Any, shape: type[Any]) -> tuple[str, str]:
    with pytest.raises(WireError) as info:
        decode(json.dumps(body).encode(), shape)
    return info.value.field, info.value.rule


def test_a_full_segment_round_trips_with_wire_names() -> None:
    body = {
        "Name": "returning iOS buyers",
        "Dimensions": {
            "Demographic": {"Platform": {"DimensionType": "INCLUSIVE", "Values": ["ios"]}},
            "Location": {
                "Country": {"Values": ["FR"]},
                "GPSPoint": {
                    "Coordinates": {"Latitude": 48.85, "Longitude": 2.35},
                    "RangeInKilometers": 20.0,
                },
            },
            "Behavior": {"Recency": {"Duration": "DAY_7", "RecencyType": "ACTIVE"}},
            "Attributes": {"plan": {"AttributeType": "CONTAINS", "Values": ["pro"]}},
            "UserAttributes": {
                "signup": {
                    "AttributeType": "BETWEEN",
                    "Values": ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"],
                }
            },
            "Metrics": {"orders": {"ComparisonOperator": "GREATER_THAN", "Value": 2.0}},
        },
        "SegmentGroups": {
            "Include": "ANY",
            "Groups": [
                {
                    "SourceSegments": [{"Id": "s1", "Version": 2}],
                    "SourceType": "ALL",
                    "Type": "NONE",
                }
            ],
        },
    }
    segment = decode(json.dumps(body).encode(), shapes.WriteSegmentRequest)
    assert segment.Dimensions is not None and segment.Dimensions.Location is not None
    assert segment.Dimensions.Location.GPSPoint is not None
    assert msgspec.to_builtins(segment) == body


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        (
            {
                "Dimensions": {
                    "Demographic": {"Platform": {"Values": ["ios"], "DimensionType": "X"}}
                }
            },
            "Dimensions.Demographic.Platform.DimensionType",
            "'X' is not one of EXCLUSIVE, INCLUSIVE",
        ),
        (
            {"Dimensions": {"Attributes": {"ok": {"Values": ["a"]}, "colour": {"Values": []}}}},
            "Dimensions.Attributes.colour.Values",
            "must be an array of length >= 1",
        ),
        (
            {
                "Dimensions": {
                    "Attributes": {"d": {"AttributeType": "BETWEEN", "Values": ["2026-01-01"]}}
                }
            },
            "Dimensions.Attributes.d.Values",
            "BETWEEN takes two ISO-8601 times, the earlier first",
        ),
        (
            {
                "Dimensions": {
                    "UserAttributes": {"d": {"AttributeType": "AFTER", "Values": ["soon"]}}
                }
            },
            "Dimensions.UserAttributes.d.Values",
            "'soon' is not an ISO-8601 timestamp such as 2026-11-28T17:50:41.123Z",
        ),
        (
            {"Dimensions": {"Metrics": {"m": {"ComparisonOperator": "GT", "Value": 1}}}},
            "Dimensions.Metrics.m.ComparisonOperator",
            "'GT' is not one of EQUAL, GREATER_THAN, GREATER_THAN_OR_EQUAL, LESS_THAN, "
            "LESS_THAN_OR_EQUAL",
        ),
        (
            {"Dimensions": {"Metrics": {"m": {"ComparisonOperator": "EQUAL"}}}},
            "Dimensions.Metrics.m.Value",
            "is required",
        ),
        (
            {
                "Dimensions": {
                    "Location": {"GPSPoint": {"Coordinates": {"Latitude": 91, "Longitude": 0}}}
                }
            },
            "Dimensions.Location.GPSPoint.Coordinates.Latitude",
            "must be a number <= 90.0",
        ),
        (
            {"SegmentGroups": {"Groups": [{}, {"SourceSegments": [{"Version": 1}]}]}},
            "SegmentGroups.Groups[1].SourceSegments[0].Id",
            "is required",
        ),
        (
            {"Dimensions": {"Attributes": {"": {"Values": ["a"]}}}},
            "Dimensions.Attributes",
            "each name must be a string of length >= 1",
        ),
        (
            {"Dimensions": {"Demographic": {"Platform": {"Values": "ios"}}}},
            "Dimensions.Demographic.Platform.Values",
            "must be an array, not a string",
        ),
        (
            {"Dimensions": {"Attributes": {f"a{i}": {"Values": ["x"]} for i in range(101)}}},
            "Dimensions",
            "the segment has 101; the limit is 100",
        ),
    ],
)
def test_segment_errors_name_the_field(body: Any, field: str, rule: str) -> None:
    assert error(body, shapes.WriteSegmentRequest) == (field, rule)


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"Schedule": {}}, "Schedule.StartTime", "is required"),
        (
            {"Schedule": {"StartTime": "IMMEDIATE", "Frequency": "EVENT"}},
            "Schedule.EventFilter",
            "is required when Frequency is EVENT",
        ),
        (
            {"Schedule": {"StartTime": "2026-12-02T00:00:00Z", "EndTime": "2026-12-01T00:00:00Z"}},
            "Schedule.EndTime",
            "must be after StartTime",
        ),
        (
            {
                "Schedule": {
                    "StartTime": "IMMEDIATE",
                    "QuietTime": {"Start": "24:00", "End": "07:00"},
                }
            },
            "Schedule.QuietTime.Start",
            "must be a time of day as HH:MM, 24-hour, such as 07:30 or 22:00",
        ),
        (
            {"Schedule": {"StartTime": "IMMEDIATE", "QuietTime": {"Start": "22:00"}}},
            "Schedule.QuietTime.End",
            "quiet time needs both Start and End, or neither",
        ),
        (
            {"Schedule": {"StartTime": "IMMEDIATE", "Timezone": "UTC+15"}},
            "Schedule.Timezone",
            "UTC+15 is beyond UTC-14..UTC+14",
        ),
        (
            {"Schedule": {"StartTime": "IMMEDIATE", "Timezone": "Europe/Paris"}},
            "Schedule.Timezone",
            "must be a UTC offset such as UTC, UTC+05:30 or UTC-07",
        ),
        ({"Limits": {"Daily": 101}}, "Limits.Daily", "must be an integer <= 100"),
        ({"Limits": {"Daily": "3"}}, "Limits.Daily", "must be an integer, not a string"),
        ({"Limits": {"MaximumDuration": 59}}, "Limits.MaximumDuration", "must be an integer >= 60"),
        (
            {"Limits": {"MessagesPerSecond": 0}},
            "Limits.MessagesPerSecond",
            "must be an integer >= 1",
        ),
        ({"HoldoutPercent": 101}, "HoldoutPercent", "must be an integer <= 100"),
        (
            {
                "HoldoutPercent": 50,
                "AdditionalTreatments": [{"SizePercent": 30}, {"SizePercent": 30}],
            },
            "AdditionalTreatments",
            "HoldoutPercent plus the SizePercent of the treatments is 110; it must be at most "
            "100, and treatment 0 gets the rest",
        ),
        ({"AdditionalTreatments": [{}]}, "AdditionalTreatments[0].SizePercent", "is required"),
        (
            {"AdditionalTreatments": [{"SizePercent": 1}] * 5},
            "AdditionalTreatments",
            "must be an array of length <= 4",
        ),
        (
            {"MessageConfiguration": {"GCMMessage": {"Action": "LAUNCH"}}},
            "MessageConfiguration.GCMMessage.Action",
            "'LAUNCH' is not one of DEEP_LINK, OPEN_APP, URL",
        ),
        ([], "", "must be an object, not an array"),
    ],
)
def test_campaign_errors_name_the_field(body: Any, field: str, rule: str) -> None:
    assert error(body, cs.WriteCampaignRequest) == (field, rule)


def test_malformed_json_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="the body is not valid JSON"):
        decode(b'{"Name": ', shapes.WriteSegmentRequest)


def test_the_shapes_cover_botocores_members() -> None:
    """Every member botocore's model gives these shapes exists here under its wire name."""
    path = os.path.join(os.path.dirname(botocore.__file__), "data/pinpoint/2016-12-01")
    with gzip.open(os.path.join(path, "service-2.json.gz")) as f:
        model = json.load(f)["shapes"]
    ours: dict[str, type[msgspec.Struct]] = {
        name: getattr(shapes, name, None) or getattr(cs, name)
        for name in [
            "SegmentDimensions", "SegmentGroupList", "SegmentGroup", "SegmentReference",
            "SetDimension", "AttributeDimension", "MetricDimension", "RecencyDimension",
            "GPSPointDimension", "GPSCoordinates", "SegmentBehaviors", "SegmentDemographics",
            "SegmentLocation", "EventDimensions", "CampaignEventFilter", "WriteSegmentRequest",
            "Schedule", "QuietTime", "CampaignLimits", "WriteTreatmentResource",
            "MessageConfiguration", "Message", "WriteCampaignRequest", "CampaignHook",
            "WriteApplicationSettingsRequest", "CustomDeliveryConfiguration",
        ]
    }  # fmt: skip
    for name, struct in ours.items():
        wire = set(model[name]["members"])
        assert set(struct.__struct_encode_fields__) == wire, name
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        ours_required = {f.encode_name for f in info.fields if f.required}
        assert set(model[name].get("required", [])) == ours_required, name
        # and every enum the model declares is the Literal here
        for field in info.fields:
            member = model[name]["members"][field.encode_name]
            enum = model[member["shape"]].get("enum")
            if enum and field.encode_name != "Frequency":
                kind = field.type
                if isinstance(kind, msgspec.inspect.UnionType):
                    kind = next(
                        t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)
                    )
                assert isinstance(kind, msgspec.inspect.LiteralType), (name, field.encode_name)
                assert set(kind.values) == set(enum), (name, field.encode_name)


def test_json_schema_carries_the_bounds() -> None:
    schema = msgspec.json.schema(cs.WriteCampaignRequest)
    limits = schema["$defs"]["CampaignLimits"]["properties"]
    assert {"type": "integer", "minimum": 0, "maximum": 100} in limits["Daily"]["anyOf"]
    assert schema["$defs"]["Schedule"]["required"] == ["StartTime"]
