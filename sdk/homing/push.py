"""Push messages: `PushMessage` and `parse_payload`, one parser for every payload shape.

It reads the Homing push stream's messages and the Pinpoint-format payloads that an app
gets from Firebase Cloud Messaging or APNs through its own push library:

- the stream: ``{"MessageId": ..., "Silent": ..., "ExpiresAt": ..., "Data": {...}}``;
- FCM's flat data map: ``{"pinpoint.notification.title": ..., "pinpoint.campaign.campaign_id":
  ..., "pinpoint.notification.silentPush": "1", ...}``, alone or under ``"data"``;
- APNs: ``{"aps": {"alert": {...}}, "data": {"pinpoint": {"deeplink": ..., "campaign": {...}}}}``.

>>> message = parse_payload({"pinpoint.notification.title": "Hi", "pinpoint.campaign.campaign_id": "c1"})
>>> message.title, message.silent, message.campaign
('Hi', False, {'campaign_id': 'c1'})
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from homing import _json

__all__ = ["CAMPAIGN_KEYS", "PushMessage", "parse_payload"]

CAMPAIGN_KEYS = ("campaign_id", "campaign_activity_id", "treatment_id")
_PREFIX = "pinpoint."
_CAMPAIGN_PREFIX = "pinpoint.campaign."
_TRUE = ("1", "true", "True", "TRUE", "yes")


@dataclass(frozen=True)
class PushMessage:
    """One push message, as the handlers get it.

    `data` holds the message's own keys (everything outside ``pinpoint.*``); `campaign`
    the campaign keys without their prefix (``campaign_id``, ``campaign_activity_id``,
    ``treatment_id``), empty when the message came from no campaign; `raw` the payload
    as it arrived.

    Example::

        @analytics.on_push
        def show(message: homing.PushMessage) -> None:
            print(message.title, message.body, message.data.get("order"))
    """

    message_id: str | None = None
    silent: bool = False
    title: str | None = None
    body: str | None = None
    url: str | None = None
    deeplink: str | None = None
    open_app: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    campaign: dict[str, str] = field(default_factory=dict)
    expires_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def parse_payload(payload: Mapping[str, Any], *, message_id: str | None = None) -> PushMessage:
    """Read a push payload of any supported shape; raise `ValueError` if it is none of them.

    `message_id` is the id the push service gave (FCM's ``RemoteMessage.getMessageId()``),
    used when the payload carries none.

    >>> parse_payload({"aps": {"content-available": 1},
    ...                "data": {"pinpoint": {"campaign": {"campaign_id": "c9"}}}}).silent
    True
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"a push payload must be a mapping, not {type(payload).__name__}")
    if "MessageId" in payload and "Data" in payload:
        return _from_stream(payload)
    data = payload.get("data")
    nested = isinstance(data, Mapping) and isinstance(data.get("pinpoint"), Mapping)
    if nested or isinstance(payload.get("aps"), Mapping):
        return _from_apns(payload, message_id)
    flat = payload
    if isinstance(data, Mapping) and not any(str(key).startswith(_PREFIX) for key in payload):
        flat = data  # an FCM message as {"data": {...}, "notification": {...}}
    return _from_flat(flat, payload, message_id, None)


def _from_stream(payload: Mapping[str, Any]) -> PushMessage:
    message_id = payload.get("MessageId")
    if not isinstance(message_id, str) or not message_id:
        raise ValueError("MessageId must be a non-empty string")
    if not isinstance(payload["Data"], Mapping):
        raise ValueError("Data must be an object of strings")
    silent = payload.get("Silent")
    return _from_flat(
        payload["Data"],
        payload,
        message_id,
        silent if isinstance(silent, bool) else None,
        expires_at=payload.get("ExpiresAt") if isinstance(payload.get("ExpiresAt"), str) else None,
    )


def _from_flat(
    data: Mapping[str, Any],
    raw: Mapping[str, Any],
    message_id: str | None,
    silent: bool | None,
    *,
    expires_at: str | None = None,
) -> PushMessage:
    custom: dict[str, Any] = {}
    campaign: dict[str, str] = {}
    for key, value in data.items():
        key = str(key)
        if key.startswith(_CAMPAIGN_PREFIX):
            if value is not None:
                campaign[key[len(_CAMPAIGN_PREFIX) :]] = str(value)
        elif not key.startswith(_PREFIX):
            custom[key] = value
    custom.update(_json_body(data.get("pinpoint.jsonBody")))
    notification = _map(raw.get("notification"))
    if silent is None:
        silent = str(data.get("pinpoint.notification.silentPush", "0")) in _TRUE
    return PushMessage(
        message_id=message_id or _text(data.get("pinpoint.messageId")),
        silent=silent,
        title=_text(data.get("pinpoint.notification.title")) or _text(notification.get("title")),
        body=_text(data.get("pinpoint.notification.body")) or _text(notification.get("body")),
        url=_text(data.get("pinpoint.url")),
        deeplink=_text(data.get("pinpoint.deeplink")),
        open_app=str(data.get("pinpoint.openApp", "")) in _TRUE,
        data=custom,
        campaign=campaign,
        expires_at=expires_at,
        raw=raw,
    )


def _from_apns(payload: Mapping[str, Any], message_id: str | None) -> PushMessage:
    aps = _map(payload.get("aps"))
    data = _map(payload.get("data"))
    pinpoint = _map(data.get("pinpoint"))
    alert = aps.get("alert")
    title = body = None
    if isinstance(alert, Mapping):
        title, body = _text(alert.get("title")), _text(alert.get("body"))
    elif isinstance(alert, str):
        body = alert
    # A background notification has content-available and nothing to show.
    silent = str(aps.get("content-available", "0")) == "1" and alert is None
    campaign = _map(pinpoint.get("campaign"))
    custom: dict[str, Any] = {k: v for k, v in payload.items() if k not in ("aps", "data")}
    custom.update({k: v for k, v in data.items() if k != "pinpoint"})
    custom.update(_json_body(data.get("jsonBody") or pinpoint.get("jsonBody")))
    return PushMessage(
        message_id=message_id,
        silent=silent,
        title=title,
        body=body,
        url=_text(pinpoint.get("url")),
        deeplink=_text(pinpoint.get("deeplink")),
        open_app=bool(pinpoint.get("openApp")) and str(pinpoint.get("openApp")) in _TRUE,
        data=custom,
        campaign={str(k): str(v) for k, v in campaign.items() if v is not None},
        raw=payload,
    )


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _json_body(value: object) -> dict[str, Any]:
    # A silent push's JSON body arrives as a string inside the data map.
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        return {}
    try:
        decoded = _json.loads(value)
    except _json.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)
