"""Pinpoint's segment request shapes (botocore `pinpoint` 2016-12-01), as msgspec Structs.

Attribute names are the wire names, so a Struct reads like the model and encodes to it.
Enums are `Literal` types and bounds are `msgspec.Meta`, so the same declarations decode
requests and generate their JSON Schema. Rules that span fields are checked in
`__post_init__`, whose `ValueError` msgspec reports with the path; `decode.decode` turns
both kinds into one ``field: rule`` message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from homing.wire import parse_timestamp


class Shape(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Base of every request shape: unset members are left out when encoding.

    Optional members default to None, not to Pinpoint's default, so that a shape encodes
    back to what was sent; the engine applies the defaults.
    """


# Pinpoint's console caps a segment at 100 values in all and each value at 100 characters
# (UG segments-building); event attribute values go to 200 (homing.limits), so the longer.
Value = Annotated[str, msgspec.Meta(max_length=200)]
Values = Annotated[list[Value], msgspec.Meta(min_length=1, max_length=100)]
AttributeName = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]

DimensionType = Literal["INCLUSIVE", "EXCLUSIVE"]
AttributeType = Literal["INCLUSIVE", "EXCLUSIVE", "CONTAINS", "BEFORE", "AFTER", "ON", "BETWEEN"]
ComparisonOperator = Literal[
    "GREATER_THAN", "LESS_THAN", "GREATER_THAN_OR_EQUAL", "LESS_THAN_OR_EQUAL", "EQUAL"
]
RecencyDuration = Literal["HR_24", "DAY_7", "DAY_14", "DAY_30"]
RecencyType = Literal["ACTIVE", "INACTIVE"]
Combine = Literal["ALL", "ANY", "NONE"]
FilterType = Literal["SYSTEM", "ENDPOINT"]

DATE_OPERATORS = frozenset({"BEFORE", "AFTER", "ON", "BETWEEN"})


class SetDimension(Shape):
    Values: Values
    DimensionType: DimensionType | None = None  # None is INCLUSIVE


class AttributeDimension(Shape):
    Values: Values
    AttributeType: AttributeType | None = None  # None is INCLUSIVE

    def __post_init__(self) -> None:
        if self.AttributeType not in DATE_OPERATORS:
            return
        instants = [date_value(value) for value in self.Values]
        if self.AttributeType == "BETWEEN" and (len(instants) != 2 or instants[0] > instants[1]):
            raise ValueError("Values: BETWEEN takes two ISO-8601 times, the earlier first")


class MetricDimension(Shape):
    ComparisonOperator: ComparisonOperator
    Value: float


class RecencyDimension(Shape):
    Duration: RecencyDuration
    RecencyType: RecencyType


class SegmentBehaviors(Shape):
    Recency: RecencyDimension | None = None


class SegmentDemographics(Shape):
    AppVersion: SetDimension | None = None
    Channel: SetDimension | None = None
    DeviceType: SetDimension | None = None
    Make: SetDimension | None = None
    Model: SetDimension | None = None
    Platform: SetDimension | None = None


class GPSCoordinates(Shape):
    Latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    Longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]


class GPSPointDimension(Shape):
    Coordinates: GPSCoordinates
    # Half of the Earth's circumference: every point on Earth is within it.
    RangeInKilometers: Annotated[float, msgspec.Meta(ge=0, le=20_038)] | None = None


class SegmentLocation(Shape):
    Country: SetDimension | None = None
    GPSPoint: GPSPointDimension | None = None


class SegmentDimensions(Shape):
    Attributes: dict[AttributeName, AttributeDimension] | None = None
    Behavior: SegmentBehaviors | None = None
    Demographic: SegmentDemographics | None = None
    Location: SegmentLocation | None = None
    Metrics: dict[AttributeName, MetricDimension] | None = None
    UserAttributes: dict[AttributeName, AttributeDimension] | None = None


class SegmentReference(Shape):
    Id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    Version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class SegmentGroup(Shape):
    Dimensions: list[SegmentDimensions] | None = None
    SourceSegments: list[SegmentReference] | None = None
    SourceType: Combine | None = None
    Type: Combine | None = None


class SegmentGroupList(Shape):
    Groups: list[SegmentGroup] | None = None
    Include: Combine | None = None


class WriteSegmentRequest(Shape):
    Name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    Dimensions: SegmentDimensions | None = None
    SegmentGroups: SegmentGroupList | None = None
    tags: dict[str, str] | None = None

    def __post_init__(self) -> None:
        # Pinpoint: at most 100 dimensions per segment, not adjustable (DG quotas).
        count = count_dimensions(self.Dimensions)
        for group in (self.SegmentGroups.Groups or []) if self.SegmentGroups else []:
            count += sum(count_dimensions(d) for d in group.Dimensions or [])
        if count > MAX_DIMENSIONS:
            raise ValueError(f"Dimensions: the segment has {count}; the limit is {MAX_DIMENSIONS}")


class EventDimensions(Shape):
    Attributes: dict[AttributeName, AttributeDimension] | None = None
    EventType: SetDimension | None = None
    Metrics: dict[AttributeName, MetricDimension] | None = None


class CampaignEventFilter(Shape):
    Dimensions: EventDimensions
    FilterType: FilterType


MAX_DIMENSIONS = 100


def count_dimensions(dimensions: SegmentDimensions | None) -> int:
    """How many criteria a SegmentDimensions holds, as Pinpoint's 100-dimension quota counts."""
    if dimensions is None:
        return 0
    count = sum(len(m or {}) for m in (dimensions.Attributes, dimensions.UserAttributes))
    count += len(dimensions.Metrics or {})
    if dimensions.Behavior is not None and dimensions.Behavior.Recency is not None:
        count += 1
    for part in (dimensions.Demographic, dimensions.Location):
        if part is not None:
            count += sum(getattr(part, name) is not None for name in part.__struct_fields__)
    return count


def date_value(value: str) -> datetime:
    """A BEFORE/AFTER/ON/BETWEEN criterion: Pinpoint reads it as an ISO_INSTANT; a date alone
    is its midnight UTC, the console's default time."""
    return parse_timestamp(value, "Values")
