"""SendMessages and SendUsersMessages bodies: checked, then rendered as push payloads.

A push stream carries Pinpoint's FCM-style data map (`pinpoint.notification.title`, ...),
so that a device reads pushes from Homing and from FCM/APNs with one parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from homing.wire import WireError, check_id, format_timestamp
from homing_collector.errors import bad_request

MAX_TARGETS = 100  # endpoints per SendMessages, users per SendUsersMessages
MAX_ACKS = 100  # message ids per AcknowledgePushMessages
MAX_TTL_SECONDS = 2_419_200  # 28 days, FCM's longest
MAX_DATA_BYTES = 4096  # the data map as JSON, FCM's payload limit
ACTIONS = ("OPEN_APP", "DEEP_LINK", "URL")
APNS_CHANNELS = frozenset({"APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX"})
CAMPAIGN_KEYS = ("campaign_id", "campaign_activity_id", "treatment_id")

PUSH_SECTIONS = ("DefaultPushNotificationMessage", "GCMMessage", "APNSMessage")
_OTHER_SECTIONS = ("ADMMessage", "BaiduMessage", "DefaultMessage", "EmailMessage",
                   "SMSMessage", "VoiceMessage")  # fmt: skip
_TEXT_FIELDS = ("Title", "Body", "Url")


@dataclass(frozen=True)
class Push:
    """One message section, or the default one with a channel's section laid over it."""

    title: str | None = None
    body: str | None = None
    action: str | None = None
    url: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    silent: bool | None = None  # None: not given; push_for() gives True or False
    ttl: int | None = None  # seconds; only the channel sections have one


@dataclass(frozen=True)
class Override:
    """An EndpointSendConfiguration: what one endpoint or user gets differently."""

    title: str | None = None
    body: str | None = None
    context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendRequest:
    default: Push | None
    gcm: Push | None
    apns: Push | None
    context: dict[str, str]
    targets: dict[str, Override]  # endpoint id (or user id) -> override, in request order

    def push_for(self, channel_type: str | None) -> Push:
        """The message for an endpoint of this channel: its own section over the default.

        GCM endpoints prefer GCMMessage and APNs ones APNSMessage; any other endpoint
        (a push stream's CUSTOM one, say) takes GCMMessage, else APNSMessage.
        """
        apns = channel_type in APNS_CHANNELS
        channel = (self.apns or self.gcm) if apns else (self.gcm or self.apns)
        base = self.default or Push()
        if channel is None:
            return replace(base, silent=bool(base.silent))
        return Push(
            title=_first(channel.title, base.title),
            body=_first(channel.body, base.body),
            action=_first(channel.action, base.action),
            url=_first(channel.url, base.url),
            data={**base.data, **channel.data},
            silent=bool(_first(channel.silent, base.silent)),
            ttl=channel.ttl,
        )


def _first(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def parse(payload: Any, *, targets: str) -> SendRequest:
    """Check a MessageRequest (`targets="Endpoints"`) or a SendUsersMessageRequest
    (`targets="Users"`); raise 400 naming the field and the rule."""
    try:
        return _parse(payload, targets)
    except WireError as exc:
        raise bad_request(str(exc)) from None


def _parse(payload: Any, targets_field: str) -> SendRequest:
    if type(payload) is not dict:
        raise WireError("body", "must be a JSON object")
    for name in ("TemplateConfiguration", "Addresses"):
        if payload.get(name) is not None:
            raise WireError(
                name,
                "is not supported: Homing sends to endpoint ids and user ids only"
                if name == "Addresses"
                else "is not supported: Homing has no message templates",
            )
    config = payload.get("MessageConfiguration")
    if type(config) is not dict:
        raise WireError("MessageConfiguration", "is required and must be an object")
    for name in _OTHER_SECTIONS:
        if config.get(name) is not None:
            raise WireError(
                f"MessageConfiguration.{name}",
                "is not supported: Homing sends push notifications only "
                "(DefaultPushNotificationMessage, GCMMessage, APNSMessage)",
            )
    sections = {
        name: _section(config.get(name), f"MessageConfiguration.{name}", name != PUSH_SECTIONS[0])
        for name in PUSH_SECTIONS
    }
    if all(section is None for section in sections.values()):
        raise WireError(
            "MessageConfiguration",
            "needs DefaultPushNotificationMessage, GCMMessage or APNSMessage",
        )
    context = _string_map(payload.get("Context"), "Context")
    trace_id = payload.get("TraceId")
    if trace_id is not None and type(trace_id) is not str:
        raise WireError("TraceId", "must be a string")
    raw_targets = payload.get(targets_field)
    if type(raw_targets) is not dict or not raw_targets:
        raise WireError(targets_field, "is required and must be a non-empty object")
    if len(raw_targets) > MAX_TARGETS:
        raise WireError(
            targets_field, f"has {len(raw_targets)} entries; the limit is {MAX_TARGETS} per request"
        )
    targets = {}
    for target_id, value in raw_targets.items():
        check_id(target_id, targets_field)
        targets[target_id] = _override(value, f"{targets_field}.{target_id}")
    request = SendRequest(
        sections[PUSH_SECTIONS[0]], sections["GCMMessage"], sections["APNSMessage"], context,
        targets,
    )  # fmt: skip
    # What each endpoint gets is its channel's push with its own override laid over it:
    # every one of those must fit, and none is sent unless all do.
    pushes = [request.push_for("GCM")]
    if (apns := request.push_for("APNS")) != pushes[0]:
        pushes.append(apns)
    for push in pushes:
        size = _size(_data(push, Override(), context))
        # When it is Context's campaign keys that tip it over, the error names Context.
        fits_without = (
            size > MAX_DATA_BYTES
            and context
            and _size(_data(push, Override(), {})) <= MAX_DATA_BYTES
        )
        _check_size(size, "Context" if fits_without else "MessageConfiguration", "")
    for target_id, override in targets.items():
        if override != Override():
            for push in pushes:
                _check_size(
                    _size(_data(push, override, context)),
                    f"{targets_field}.{target_id}",
                    " with its TitleOverride, BodyOverride and Context",
                )
    return request


def _size(data: dict[str, str]) -> int:
    return len(orjson.dumps(data))


def _check_size(size: int, field_name: str, overrides: str) -> None:
    if size > MAX_DATA_BYTES:
        raise WireError(
            field_name,
            "the push's data (Data with the title, body, url and the campaign keys of Context)"
            f"{overrides} is {size} bytes as JSON; the limit is {MAX_DATA_BYTES}",
        )


def _texts(value: Any, field_name: str, names: tuple[str, ...]) -> dict[str, str | None]:
    """Check a message section or override, an object, and return its text fields."""
    if type(value) is not dict:
        raise WireError(field_name, "must be an object")
    for name in ("RawContent", "Substitutions"):
        if value.get(name) is not None:
            raise WireError(f"{field_name}.{name}", "is not supported by Homing")
    texts = {}
    for name in names:
        text = value.get(name)
        if text is not None and type(text) is not str:
            raise WireError(f"{field_name}.{name}", "must be a string")
        texts[name] = text
    return texts


def _section(value: Any, field_name: str, has_ttl: bool) -> Push | None:
    if value is None:
        return None
    texts = _texts(value, field_name, _TEXT_FIELDS)
    action = value.get("Action")
    if action is not None and action not in ACTIONS:
        raise WireError(f"{field_name}.Action", f"must be one of {', '.join(ACTIONS)}")
    silent = value.get("SilentPush")
    if silent is not None and type(silent) is not bool:
        raise WireError(f"{field_name}.SilentPush", "must be true or false")
    ttl = value.get("TimeToLive") if has_ttl else None
    if type(ttl) is float and ttl.is_integer():  # 60.0 is a whole number, as JSON says
        ttl = int(ttl)
    if ttl is not None and (type(ttl) is not int or not 0 <= ttl <= MAX_TTL_SECONDS):
        raise WireError(
            f"{field_name}.TimeToLive",
            f"must be a whole number of seconds from 0 to {MAX_TTL_SECONDS}",
        )
    return Push(
        title=texts["Title"],
        body=texts["Body"],
        action=action,
        url=texts["Url"],
        data=_string_map(value.get("Data"), f"{field_name}.Data"),
        silent=silent,
        ttl=ttl,
    )


def _override(value: Any, field_name: str) -> Override:
    if value is None:
        return Override()
    texts = _texts(value, field_name, ("TitleOverride", "BodyOverride"))
    return Override(
        texts["TitleOverride"],
        texts["BodyOverride"],
        _string_map(value.get("Context"), f"{field_name}.Context"),
    )


def _string_map(value: Any, field_name: str) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is not dict or any(type(v) is not str for v in value.values()):
        raise WireError(field_name, "must be an object of string -> string")
    return value


def _data(push: Push, override: Override, context: dict[str, str]) -> dict[str, str]:
    data = dict(push.data)
    title = _first(override.title, push.title)
    body = _first(override.body, push.body)
    pinpoint = {
        "pinpoint.notification.title": title,
        "pinpoint.notification.body": body,
        "pinpoint.notification.silentPush": "1" if push.silent else "0",
    }
    action = push.action or ("URL" if push.url else None if push.silent else "OPEN_APP")
    if action == "OPEN_APP":
        pinpoint["pinpoint.openApp"] = "true"
    elif action == "URL":
        pinpoint["pinpoint.url"] = push.url
    elif action == "DEEP_LINK":
        pinpoint["pinpoint.deeplink"] = push.url
    merged_context = {**context, **override.context} if override.context else context
    for key in CAMPAIGN_KEYS:
        pinpoint[f"pinpoint.campaign.{key}"] = merged_context.get(key)
    data.update((key, value) for key, value in pinpoint.items() if value)
    return data


def render(
    push: Push,
    override: Override,
    context: dict[str, str],
    *,
    message_id: str,
    expires_at_ms: int,
) -> tuple[str, str | None]:
    """The stream's JSON for one endpoint, and the campaign id it carries."""
    data = _data(push, override, context)
    payload = {
        "MessageId": message_id,
        "Silent": bool(push.silent),
        "ExpiresAt": format_timestamp(expires_at_ms / 1000),
        "Data": data,
    }
    return orjson.dumps(payload).decode(), data.get("pinpoint.campaign.campaign_id")
