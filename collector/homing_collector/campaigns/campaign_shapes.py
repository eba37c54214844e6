"""Pinpoint's campaign request shapes (botocore `pinpoint` 2016-12-01), as msgspec Structs.

Same conventions as `shapes`: wire names, `Literal` enums, `msgspec.Meta` bounds, and
rules spanning fields in `__post_init__`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import msgspec

from homing.wire import parse_timestamp

from .shapes import CampaignEventFilter, Shape
from .treatments import MAX_TREATMENTS, check_sizes

Frequency = Literal["ONCE", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "EVENT", "IN_APP_EVENT"]
Action = Literal["OPEN_APP", "DEEP_LINK", "URL"]
EndpointType = Literal[
    "PUSH", "GCM", "APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX", "ADM", "SMS",
    "VOICE", "EMAIL", "BAIDU", "CUSTOM", "IN_APP",
]  # fmt: skip

IMMEDIATE = "IMMEDIATE"
# "HH:MM", 24-hour, with the leading zero (the model's QuietTime text).
ClockTime = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="a time of day as HH:MM, 24-hour, such as 07:30 or 22:00",
    ),
]
# The model lists UTC, UTC+01 ... UTC+13, UTC-02 ... UTC-11 with some half hours; the
# pattern takes any whole or half offset written that way, and `utc_offset` bounds it.
UtcOffsetName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^UTC([+-][0-9]{1,2}(:[0-5][0-9])?)?$",
        description="a UTC offset such as UTC, UTC+05:30 or UTC-07",
    ),
]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
MAX_ADDITIONAL_TREATMENTS = MAX_TREATMENTS - 1


class QuietTime(Shape):
    Start: ClockTime | None = None
    End: ClockTime | None = None

    def __post_init__(self) -> None:
        if (self.Start is None) != (self.End is None):
            raise ValueError("End: quiet time needs both Start and End, or neither")


StartTimeValue = Annotated[
    str, msgspec.Meta(description="IMMEDIATE, or an ISO-8601 time such as 2026-12-01T09:00:00Z")
]


class Schedule(Shape):
    StartTime: StartTimeValue
    EndTime: str | None = None
    EventFilter: CampaignEventFilter | None = None
    Frequency: Frequency | None = None  # None is ONCE
    IsLocalTime: bool | None = None
    QuietTime: QuietTime | None = None
    Timezone: UtcOffsetName | None = None

    def __post_init__(self) -> None:
        start = None if self.StartTime == IMMEDIATE else timestamp(self.StartTime, "StartTime")
        if self.EndTime is not None:
            end = timestamp(self.EndTime, "EndTime")
            if start is not None and end <= start:
                raise ValueError("EndTime: must be after StartTime")
        if self.Timezone is not None:
            utc_offset(self.Timezone)
        if self.Frequency == "EVENT" and self.EventFilter is None:
            raise ValueError("EventFilter: is required when Frequency is EVENT")
        if self.Frequency == "IN_APP_EVENT":
            raise ValueError(
                "Frequency: IN_APP_EVENT is for in-app messages, which Homing does not serve"
            )


class CampaignLimits(Shape):
    # Bounds from the model's text; 0 for Daily, Total and Session means no cap, as in the
    # console's in-app caps.
    Daily: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    MaximumDuration: Annotated[int, msgspec.Meta(ge=60)] | None = None
    MessagesPerSecond: Annotated[int, msgspec.Meta(ge=1, le=20_000)] | None = None
    Total: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    Session: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Message(Shape):
    Action: Action | None = None
    Body: str | None = None
    ImageIconUrl: str | None = None
    ImageSmallIconUrl: str | None = None
    ImageUrl: str | None = None
    JsonBody: str | None = None
    MediaUrl: str | None = None
    RawContent: str | None = None
    SilentPush: bool | None = None
    TimeToLive: Annotated[int, msgspec.Meta(ge=0)] | None = None
    Title: str | None = None
    Url: str | None = None


class MessageHeader(Shape):
    Name: str | None = None
    Value: str | None = None


class CampaignEmailMessage(Shape):
    Body: str | None = None
    FromAddress: str | None = None
    Headers: Annotated[list[MessageHeader], msgspec.Meta(max_length=15)] | None = None
    HtmlBody: str | None = None
    Title: str | None = None


class CampaignSmsMessage(Shape):
    Body: str | None = None
    MessageType: Literal["TRANSACTIONAL", "PROMOTIONAL"] | None = None
    OriginationNumber: str | None = None
    SenderId: str | None = None
    EntityId: str | None = None
    TemplateId: str | None = None


class CampaignCustomMessage(Shape):
    Data: Annotated[str, msgspec.Meta(max_length=5 * 1024)] | None = None


class MessageConfiguration(Shape):
    ADMMessage: Message | None = None
    APNSMessage: Message | None = None
    BaiduMessage: Message | None = None
    CustomMessage: CampaignCustomMessage | None = None
    DefaultMessage: Message | None = None
    EmailMessage: CampaignEmailMessage | None = None
    GCMMessage: Message | None = None
    SMSMessage: CampaignSmsMessage | None = None
    # Stored as given: Homing serves no in-app messages.
    InAppMessage: dict[str, Any] | None = None


class CustomDeliveryConfiguration(Shape):
    DeliveryUri: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            description="Homing: an https:// URL that receives the custom channel's calls "
            "(http:// only to a loopback address), or hook:NAME, the in-process "
            "custom_delivery hook of that name",
        ),
    ]
    EndpointTypes: list[EndpointType] | None = None


class Template(Shape):
    Name: str | None = None
    Version: str | None = None


class TemplateConfiguration(Shape):
    EmailTemplate: Template | None = None
    PushTemplate: Template | None = None
    SMSTemplate: Template | None = None
    VoiceTemplate: Template | None = None
    InAppTemplate: Template | None = None


class CampaignHook(Shape):
    LambdaFunctionName: str | None = None
    Mode: Literal["DELIVERY", "FILTER"] | None = None
    WebUrl: Annotated[
        str | None,
        msgspec.Meta(
            description="Homing: an https:// URL (http:// only to a loopback address), or "
            "hook:NAME, the in-process hook of that name (a filter hook in FILTER mode, a "
            "custom_delivery hook in DELIVERY mode)"
        ),
    ] = None


class WriteTreatmentResource(Shape):
    SizePercent: Percent
    CustomDeliveryConfiguration: CustomDeliveryConfiguration | None = None
    MessageConfiguration: MessageConfiguration | None = None
    Schedule: Schedule | None = None
    TemplateConfiguration: TemplateConfiguration | None = None
    TreatmentDescription: str | None = None
    TreatmentName: str | None = None


class WriteCampaignRequest(Shape):
    AdditionalTreatments: (
        Annotated[list[WriteTreatmentResource], msgspec.Meta(max_length=MAX_ADDITIONAL_TREATMENTS)]
        | None
    ) = None
    CustomDeliveryConfiguration: CustomDeliveryConfiguration | None = None
    Description: str | None = None
    HoldoutPercent: Percent | None = None
    Hook: CampaignHook | None = None
    IsPaused: bool | None = None
    Limits: CampaignLimits | None = None
    MessageConfiguration: MessageConfiguration | None = None
    Name: str | None = None
    Priority: int | None = None
    Schedule: Schedule | None = None
    SegmentId: str | None = None
    SegmentVersion: Annotated[int, msgspec.Meta(ge=1)] | None = None
    TemplateConfiguration: TemplateConfiguration | None = None
    TreatmentDescription: str | None = None
    TreatmentName: str | None = None
    tags: dict[str, str] | None = None

    def __post_init__(self) -> None:
        sizes = [t.SizePercent for t in self.AdditionalTreatments or []]
        check_sizes(self.HoldoutPercent or 0, sizes)


class WriteApplicationSettingsRequest(Shape):
    CampaignHook: CampaignHook | None = None
    CloudWatchMetricsEnabled: bool | None = None
    EventTaggingEnabled: bool | None = None
    Limits: CampaignLimits | None = None
    QuietTime: QuietTime | None = None
    # Journeys are not served; the settings are kept as given.
    JourneyLimits: dict[str, Any] | None = None


def timestamp(value: str, field: str) -> datetime:
    """An ISO-8601 member (`StartTime`, `EndTime`); one without an offset is UTC."""
    return parse_timestamp(value, field)


def utc_offset(name: str) -> timezone:
    """`Schedule.Timezone` ("UTC", "UTC+05:30", "UTC-07") as a fixed offset."""
    if name == "UTC":
        return timezone.utc
    sign = -1 if name[3] == "-" else 1
    hours, _, minutes = name[4:].partition(":")
    offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
    if offset > timedelta(hours=14):
        raise ValueError(f"Timezone: {name} is beyond UTC-14..UTC+14")
    return timezone(sign * offset)
