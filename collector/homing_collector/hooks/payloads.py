"""Pinpoint's payloads for custom channels and campaign FILTER hooks, and their checks.

Both are Pinpoint's own shapes (Amazon Pinpoint Developer Guide, "Creating custom
channels" and "Customizing segments with AWS Lambda"), so a receiver written for
Pinpoint's webhooks reads them unchanged:

- The custom channel gets `Message`, `Data` (the campaign's `CustomMessage.Data`),
  `ApplicationId`, `CampaignId`, `TreatmentId`, `ActivityId`, `ScheduledTime` and
  `Endpoints`, a map of endpoint id -> endpoint definition, at most 50 per call.
- The FILTER hook gets the same, with `MessageConfiguration` in place of `Message` and
  `Data`, and answers with the endpoints to keep, as the same map, possibly changed.
  An answer that cannot be decoded fails that batch.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from homing.wire import WireError, check_endpoint_size, format_timestamp
from homing_collector.hooks.errors import HookConfigError, HookResponseError
from homing_collector.hooks.registry import (
    NAME_RULE,
    Registry,
    hook_name,
    how_to_register,
    is_campaign_name,
)

Endpoint = dict[str, Any]

MAX_ENDPOINTS_PER_CALL = 50
# Pinpoint's filter hook contract: 15 s to answer, at most 3 attempts.
FILTER_TIMEOUT = 15.0
FILTER_MAX_ATTEMPTS = 3
HOOK_MODES = frozenset({"FILTER", "DELIVERY"})
# Per-endpoint overrides a filter hook may add (Pinpoint honours them for push and SMS).
_OVERRIDES = ("TitleOverride", "BodyOverride")


@dataclass(frozen=True)
class CampaignRun:
    """Which run of which campaign a call is for."""

    application_id: str
    campaign_id: str
    activity_id: str
    scheduled_time: datetime | float  # when the campaign was executed (Unix seconds)
    treatment_id: str = "0"  # "0" for the default treatment, as Pinpoint numbers them

    def fields(self) -> dict[str, str]:
        return {
            "ApplicationId": self.application_id,
            "CampaignId": self.campaign_id,
            "TreatmentId": self.treatment_id,
            "ActivityId": self.activity_id,
            "ScheduledTime": format_timestamp(self.scheduled_time),
        }


def batches(
    endpoints: Iterable[tuple[str, Endpoint]], size: int = MAX_ENDPOINTS_PER_CALL
) -> Iterator[dict[str, Endpoint]]:
    """Endpoints in maps of at most `size`, in the order given (read lazily, so a whole
    segment need not be in memory)."""
    if not 1 <= size <= MAX_ENDPOINTS_PER_CALL:
        raise ValueError(f"size: must be 1 to {MAX_ENDPOINTS_PER_CALL}, not {size}")
    batch: dict[str, Endpoint] = {}
    for endpoint_id, endpoint in endpoints:
        batch[endpoint_id] = endpoint
        if len(batch) == size:
            yield batch
            batch = {}
    if batch:
        yield batch


def custom_delivery_payload(
    run: CampaignRun,
    data: str,
    endpoints: Mapping[str, Endpoint],
    message: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of one custom channel call."""
    _check_batch(endpoints)
    return {
        "Message": dict(message or {}),
        "Data": data,
        **run.fields(),
        "Endpoints": dict(endpoints),
    }


def filter_request(
    run: CampaignRun,
    message_configuration: Mapping[str, Any],
    endpoints: Mapping[str, Endpoint],
) -> dict[str, Any]:
    """The body of one FILTER hook call."""
    _check_batch(endpoints)
    return {
        "MessageConfiguration": dict(message_configuration),
        **run.fields(),
        "Endpoints": dict(endpoints),
    }


def parse_filter_response(body: bytes, sent: Mapping[str, Endpoint]) -> dict[str, Endpoint]:
    """The endpoints a FILTER hook kept, from its answer; HookResponseError fails the batch.

    The answer must be a JSON object of endpoint id -> endpoint definition. Ids left out
    are dropped; the definitions given replace the ones sent. An id that was not sent is
    refused: a filter may keep, drop or change endpoints, never add recipients.
    """
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HookResponseError(
            f"the filter hook's answer is not JSON ({exc}); it must be an object of "
            "endpoint id -> endpoint definition"
        ) from None
    return check_filter_answer(answer, sent, "a JSON ")


def check_filter_answer(
    answer: object, sent: Mapping[str, Endpoint], kind: str = "a "
) -> dict[str, Endpoint]:
    """A FILTER hook's decoded answer, checked as parse_filter_response says (an
    in-process filter hook's answer too); HookResponseError fails the batch."""
    if type(answer) is not dict:
        raise HookResponseError(
            f"the filter hook's answer is {kind}{type(answer).__name__}; it must be an "
            "object of endpoint id -> endpoint definition"
        )
    for endpoint_id, endpoint in answer.items():
        if endpoint_id not in sent:
            raise HookResponseError(
                f"Endpoints.{endpoint_id}: was not in the batch sent; a filter hook may keep, "
                "drop or change the endpoints it gets, not add others"
            )
        if type(endpoint) is not dict:
            raise HookResponseError(
                f"Endpoints.{endpoint_id}: must be an endpoint definition (an object), "
                f"not {type(endpoint).__name__}"
            )
        for name in _OVERRIDES:
            if name in endpoint and type(endpoint[name]) is not str:
                raise HookResponseError(f"Endpoints.{endpoint_id}.{name}: must be a string")
        try:
            check_endpoint_size(endpoint)
        except WireError as exc:
            raise HookResponseError(f"Endpoints.{endpoint_id}: {exc.rule}") from None
    return answer


@dataclass(frozen=True)
class CampaignHook:
    mode: str  # FILTER, or DELIVERY: Pinpoint's deprecated mode, run as a custom channel
    web_url: str


def check_campaign_hook(
    hook: object,
    field: str = "Hook",
    *,
    allow_http: bool = False,
    registry: Registry | None = None,
) -> CampaignHook | None:
    """Check a `CampaignHook` (a campaign's `Hook` or the settings' `CampaignHook`).

    None or an empty object means no hook. `WebUrl` is checked by check_target, against
    the filter hooks of `registry` in FILTER mode and its custom delivery hooks in
    DELIVERY mode. HookConfigError names the field and the rule, for a 400 answer.
    """
    if hook is None:
        return None
    if type(hook) is not dict:
        raise HookConfigError(field, "must be an object with Mode and WebUrl")
    if hook.get("LambdaFunctionName"):
        raise HookConfigError(
            f"{field}.LambdaFunctionName",
            "Homing cannot invoke AWS Lambda functions; serve the function at an HTTPS URL "
            "(a Lambda function URL works) and set WebUrl to it instead",
        )
    mode, web_url = hook.get("Mode"), hook.get("WebUrl")
    if mode is None and web_url is None:
        return None
    if mode not in HOOK_MODES:
        raise HookConfigError(f"{field}.Mode", f"must be one of FILTER, DELIVERY, not {mode!r}")
    if web_url is None:
        raise HookConfigError(f"{field}.WebUrl", "is required: the HTTPS URL to call")
    kind = "filter" if mode == "FILTER" else "custom_delivery"
    checked = check_target(
        web_url, f"{field}.WebUrl", kind, allow_http=allow_http, registry=registry
    )
    return CampaignHook(mode, checked)


def check_target(
    url: object,
    field: str,
    kind: str,
    *,
    allow_http: bool = False,
    registry: Registry | None = None,
) -> str:
    """Where a campaign calls out (a hook's `WebUrl`, a `DeliveryUri`): a webhook URL, as
    check_web_url says, or `hook:NAME`, naming an in-process hook of `kind` ("filter" or
    "custom_delivery") that `registry` holds. With no `registry` only the name's form is
    checked: a stored campaign's names were looked up when they were written."""
    name = hook_name(url) if type(url) is str else None
    if name is None:
        try:
            return check_web_url(url, field, allow_http=allow_http)
        except HookConfigError as exc:
            raise HookConfigError(
                field, f"{exc.rule}; or hook:NAME, to call the in-process {kind} hook NAME"
            ) from None
    if not is_campaign_name(name):
        raise HookConfigError(
            field,
            f"hook:NAME must give a hook's name after the colon ({NAME_RULE}), as in "
            f"hook:crm, not {str(url)[:100]!r}",
        )
    if registry is not None and registry.named(kind, name) is None:
        missing = registry.missing(kind, name)
        raise HookConfigError(field, f"{missing}; {how_to_register(kind, name)}")
    return str(url)


def check_web_url(url: object, field: str, *, allow_http: bool = False) -> str:
    """An `https://` URL; `http://` only to a loopback host or when the operator allows it."""
    if type(url) is not str or not url:
        raise HookConfigError(field, "must be an https:// URL")
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        scheme, host = "", None
    if scheme not in ("https", "http") or not host:
        hint = "" if "://" in url else " (a Lambda function name or ARN cannot be called)"
        raise HookConfigError(field, f"must be an https:// URL, not {url[:100]!r}{hint}")
    if scheme == "http" and not (allow_http or _is_loopback(host)):
        raise HookConfigError(
            field,
            "must use https://; http:// is allowed only to a loopback address, unless the "
            "collector's operator allows it (HOMING_HOOKS_ALLOW_HTTP=1)",
        )
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_batch(endpoints: Mapping[str, Endpoint]) -> None:
    if not endpoints:
        raise ValueError("Endpoints: a call carries at least one endpoint")
    if len(endpoints) > MAX_ENDPOINTS_PER_CALL:
        raise ValueError(
            f"Endpoints: {len(endpoints)} endpoints; at most {MAX_ENDPOINTS_PER_CALL} per "
            "call (use batches())"
        )
