"""Endpoints: what UpdateEndpoint, UpdateEndpointsBatch and PutEvents take, and answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from msgspec import Meta, Struct

from homing import limits
from homing.wire import CHANNEL_TYPES, ENDPOINT_STATUSES, OPT_OUT_VALUES
from homing_collector.models.types import NO_NUL, Id, PlainString, Timestamp, UrlId

AttributeName = Annotated[
    str,
    Meta(
        min_length=1, max_length=limits.MAX_ENDPOINT_ATTRIBUTE_NAME_LENGTH, extra_json_schema=NO_NUL
    ),
]
AttributeValues = Annotated[
    list[
        Annotated[
            str,
            Meta(max_length=limits.MAX_ENDPOINT_ATTRIBUTE_VALUE_LENGTH, extra_json_schema=NO_NUL),
        ]
    ],
    Meta(max_length=limits.MAX_ENDPOINT_ATTRIBUTE_VALUES),
]
Attributes = dict[AttributeName, AttributeValues]
Metrics = dict[AttributeName, float]
if TYPE_CHECKING:  # enums built from homing.wire's sets, which mypy cannot follow
    ChannelType = str
    EndpointStatus = str
    OptOut = str
else:
    ChannelType = Literal[tuple(sorted(CHANNEL_TYPES))]
    EndpointStatus = Literal[tuple(sorted(ENDPOINT_STATUSES))]
    OptOut = Literal[tuple(sorted(OPT_OUT_VALUES))]
Latitude = Annotated[float, Meta(ge=-90, le=90)]
Longitude = Annotated[float, Meta(ge=-180, le=180)]


class EndpointDemographic(Struct, omit_defaults=True):
    AppVersion: PlainString | None = None
    Locale: PlainString | None = None
    Make: PlainString | None = None
    Model: PlainString | None = None
    ModelVersion: PlainString | None = None
    Platform: PlainString | None = None
    PlatformVersion: PlainString | None = None
    Timezone: PlainString | None = None


class EndpointLocation(Struct, omit_defaults=True):
    City: PlainString | None = None
    Country: PlainString | None = None
    PostalCode: PlainString | None = None
    Region: PlainString | None = None
    Latitude: Latitude | None = None
    Longitude: Longitude | None = None


class EndpointUser(Struct, omit_defaults=True):
    UserId: UrlId | None = None
    UserAttributes: Attributes | None = None


class EndpointRequest(Struct, omit_defaults=True, kw_only=True):
    """An update, merged into the stored endpoint; null leaves a field as it is."""

    Address: PlainString | None = None
    Attributes: Attributes | None = None
    ChannelType: ChannelType | None = None
    Demographic: EndpointDemographic | None = None
    EffectiveDate: Timestamp | None = None
    EndpointStatus: EndpointStatus | None = None
    Location: EndpointLocation | None = None
    Metrics: Metrics | None = None
    OptOut: OptOut | None = None
    RequestId: PlainString | None = None
    User: EndpointUser | None = None


class PublicEndpoint(EndpointRequest, kw_only=True):
    """The Endpoint of a PutEvents batch item."""


class EndpointBatchItem(EndpointRequest, kw_only=True):
    Id: UrlId


class EndpointBatchRequest(Struct):
    Item: Annotated[list[EndpointBatchItem], Meta(max_length=limits.MAX_ENDPOINTS_PER_BATCH)]


class EndpointResponse(EndpointRequest, kw_only=True):
    ApplicationId: str
    Id: Id
    CohortId: str
    CreationDate: Timestamp


class EndpointsResponse(Struct):
    Item: list[EndpointResponse]


class MessageBody(Struct):
    Message: str
    RequestID: str
