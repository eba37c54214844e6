"""SendMessages, SendUsersMessages and the push streams' acknowledgements."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from homing_collector.models.types import Id
from homing_collector.push.messages import (
    ACTIONS,
    MAX_ACKS,
    MAX_DATA_BYTES,
    MAX_TARGETS,
    MAX_TTL_SECONDS,
    PUSH_SECTIONS,
)

DELIVERY_STATUSES = ("SUCCESSFUL", "TEMPORARY_FAILURE", "PERMANENT_FAILURE", "OPT_OUT", "DUPLICATE")
Action = Literal[ACTIONS]  # type: ignore[valid-type]
Unsupported = Annotated[None, Meta(description="Not supported by Homing: leave it out.")]


class DefaultPushNotificationMessage(Struct, omit_defaults=True):
    Title: str | None = None
    Body: str | None = None
    Action: Action | None = None
    Url: str | None = None
    Data: dict[str, str] | None = None
    SilentPush: bool | None = None
    RawContent: Unsupported = None
    Substitutions: Unsupported = None


class ChannelPushMessage(DefaultPushNotificationMessage, omit_defaults=True):
    # A number, not an integer: 60.0 is a whole number too, as JSON Schema says.
    TimeToLive: (
        Annotated[
            float,
            Meta(
                ge=0,
                le=MAX_TTL_SECONDS,
                multiple_of=1,
                description="Whole seconds the message waits for a device.",
            ),
        ]
        | None
    ) = None


class DirectMessageConfiguration(Struct, omit_defaults=True):
    DefaultPushNotificationMessage: DefaultPushNotificationMessage | None = None
    GCMMessage: ChannelPushMessage | None = None
    APNSMessage: ChannelPushMessage | None = None
    ADMMessage: Unsupported = None
    BaiduMessage: Unsupported = None
    DefaultMessage: Unsupported = None
    EmailMessage: Unsupported = None
    SMSMessage: Unsupported = None
    VoiceMessage: Unsupported = None


# At least one of the push sections, not null.
_ONE_SECTION = {
    "anyOf": [
        {"required": [name], "properties": {name: {"type": "object"}}} for name in PUSH_SECTIONS
    ]
}


class EndpointSendConfiguration(Struct, omit_defaults=True):
    TitleOverride: str | None = None
    BodyOverride: str | None = None
    Context: dict[str, str] | None = None
    RawContent: Unsupported = None
    Substitutions: Unsupported = None


Targets = Annotated[
    dict[Id, EndpointSendConfiguration | None], Meta(min_length=1, max_length=MAX_TARGETS)
]
_SIZE_RULE = (
    f"The push's data (Data with the title, body, url and the campaign keys of Context, "
    f"with each target's overrides) must be at most {MAX_DATA_BYTES} bytes as JSON."
)


class MessageRequest(Struct, omit_defaults=True, kw_only=True):
    MessageConfiguration: Annotated[
        DirectMessageConfiguration, Meta(extra_json_schema=_ONE_SECTION, description=_SIZE_RULE)
    ]
    Endpoints: Annotated[Targets, Meta(description="Endpoint id -> its overrides.")]
    Context: dict[str, str] | None = None
    TraceId: str | None = None
    Addresses: Unsupported = None
    TemplateConfiguration: Unsupported = None


class SendUsersMessageRequest(Struct, omit_defaults=True, kw_only=True):
    MessageConfiguration: Annotated[
        DirectMessageConfiguration, Meta(extra_json_schema=_ONE_SECTION, description=_SIZE_RULE)
    ]
    Users: Annotated[Targets, Meta(description="User id -> its overrides.")]
    Context: dict[str, str] | None = None
    TraceId: str | None = None
    TemplateConfiguration: Unsupported = None


class EndpointMessageResult(Struct, omit_defaults=True, kw_only=True):
    DeliveryStatus: Literal[DELIVERY_STATUSES]  # type: ignore[valid-type]
    StatusCode: Literal[200, 202, 403, 404, 409]
    MessageId: str | None = None
    StatusMessage: str | None = None
    Address: str | None = None


class MessageResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    RequestId: str | None = None
    EndpointResult: dict[str, EndpointMessageResult] | None = None


class SendUsersMessageResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    RequestId: str | None = None
    Result: (
        Annotated[
            dict[str, dict[str, EndpointMessageResult]],
            Meta(description="User id -> endpoint id -> result."),
        ]
        | None
    ) = None


class PushAcksRequest(Struct):
    MessageIds: Annotated[list[Id], Meta(min_length=1, max_length=MAX_ACKS)]


class PushAcksResponse(Struct):
    Acknowledged: Annotated[int, Meta(ge=0)]


PushStream = Annotated[
    Any,
    Meta(
        description="Server-Sent Events: `retry: 5000`, then one `push` event per message "
        "(`id: <seq>`, `data: {MessageId, Silent, ExpiresAt, Data}`) and `: ping` "
        "heartbeats. Send `Last-Event-ID: <seq>` to acknowledge every message up to that seq."
    ),
]
