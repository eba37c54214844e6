"""PutEvents: the batch, each event, and the statuses it answers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from homing import limits
from homing_collector.models.endpoints import PublicEndpoint
from homing_collector.models.types import Id, PlainString, Timestamp

EventKey = Annotated[str, Meta(min_length=1, max_length=limits.MAX_EVENT_KEY_LENGTH)]
EventType = Annotated[str, Meta(min_length=1, max_length=limits.MAX_EVENT_TYPE_LENGTH)]


class Session(Struct, omit_defaults=True, kw_only=True):
    Id: Id
    StartTimestamp: Timestamp
    StopTimestamp: Timestamp | None = None
    Duration: Annotated[int, Meta(ge=0, lt=2**31)] | None = None


class Event(Struct, omit_defaults=True, kw_only=True):
    """One event. `Attributes` and `Metrics` hold at most MAX_EVENT_KEYS keys together,
    and a StopTimestamp is not before its StartTimestamp: rules JSON Schema cannot say."""

    EventType: EventType
    Timestamp: Timestamp
    Attributes: (
        Annotated[
            dict[
                EventKey,
                Annotated[str, Meta(max_length=limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH)],
            ],
            Meta(max_length=limits.MAX_EVENT_KEYS),
        ]
        | None
    ) = None
    Metrics: Annotated[dict[EventKey, float], Meta(max_length=limits.MAX_EVENT_KEYS)] | None = None
    Session: Session | None = None
    AppPackageName: PlainString | None = None
    AppTitle: PlainString | None = None
    AppVersionCode: PlainString | None = None
    SdkName: PlainString | None = None
    ClientSdkVersion: PlainString | None = None


class EventsBatch(Struct, omit_defaults=True):
    """What each endpoint id of a batch maps to. It is judged with its events, each on
    its own: one that breaks a rule gets a 400 status in the answer, and the request is
    still 202."""

    Endpoint: PublicEndpoint | None = None
    Events: dict[str, Event] | None = None


class EventsRequest(Struct):
    # Each value is an EventsBatch, and is judged alone: the request itself only needs
    # an object of at most MAX_ENDPOINTS_PER_BATCH entries.
    BatchItem: Annotated[
        dict[str, Any],
        Meta(
            max_length=limits.MAX_ENDPOINTS_PER_BATCH,
            description="Endpoint id -> EventsBatch. Each entry, and each of its events, "
            "is judged on its own and answered with its own status; see EventsResponse.",
        ),
    ]


class ItemStatus(Struct):
    StatusCode: Literal[202, 400]
    Message: str


class EventsItem(Struct):
    EndpointItemResponse: ItemStatus
    EventsItemResponse: dict[str, ItemStatus]


class EventsResponse(Struct):
    Results: dict[str, EventsItem]
