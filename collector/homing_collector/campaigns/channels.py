"""Where a campaign's messages go besides the push gateway, and who is asked first.

- A treatment's **custom channel** is its own `CustomDeliveryConfiguration`, else the
  campaign's, else a `Hook` in Pinpoint's deprecated DELIVERY mode (the campaign's, else
  the application settings' `CampaignHook`), which Homing runs as a custom channel for
  endpoints of every type. Endpoints whose `ChannelType` is in `EndpointTypes` go to it.
  A treatment with a `CustomMessage` and CUSTOM among its `EndpointTypes`, or with no
  push message at all, delivers only this way: its other endpoints are skipped as
  ENDPOINT_CHANNEL_MISMATCH.
- The **FILTER hook** is the campaign's `Hook` in FILTER mode, else the settings'
  `CampaignHook`; it is asked about every batch before delivery.

Each is a webhook URL, or `hook:NAME`, the in-process hook of that name
(hooks/registry.py); either is checked when written.

Endpoints a FILTER hook leaves out are counted as FILTERED_OUT_BY_HOOK in the
activity's ExecutionMetrics; those of a batch the hook failed (no answer in 3 attempts,
or an answer that cannot be decoded) as FILTER_HOOK_FAILED.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from homing.wire import WireError
from homing_collector.hooks.errors import HookConfigError
from homing_collector.hooks.payloads import (
    MAX_ENDPOINTS_PER_CALL,
    check_campaign_hook,
    check_target,
)
from homing_collector.hooks.registry import Registry

from .campaign_shapes import (
    CampaignHook,
    CustomDeliveryConfiguration,
    MessageConfiguration,
    WriteCampaignRequest,
)

CUSTOM = "CUSTOM"
FILTERED_OUT_BY_HOOK = "FILTERED_OUT_BY_HOOK"
FILTER_HOOK_FAILED = "FILTER_HOOK_FAILED"
PUSH_MESSAGES = ("DefaultMessage", "GCMMessage", "APNSMessage")


@dataclass(frozen=True)
class CustomChannel:
    url: str
    endpoint_types: frozenset[str] | None  # None: endpoints of every channel type
    data: str  # the treatment's CustomMessage.Data, sent as given
    only: bool  # the treatment sends no push: the endpoints it does not take get nothing

    def takes(self, channel_type: object) -> bool:
        return self.endpoint_types is None or channel_type in self.endpoint_types


def has_push(config: MessageConfiguration | None) -> bool:
    return config is not None and any(getattr(config, n) is not None for n in PUSH_MESSAGES)


def effective_hook(campaign: CampaignHook | None, app: CampaignHook | None) -> CampaignHook | None:
    """The campaign's hook if it sets one, else the application's default."""
    for hook in (campaign, app):
        if hook is not None and hook.Mode is not None and hook.WebUrl:
            return hook
    return None


def filter_url(hook: CampaignHook | None) -> str | None:
    return hook.WebUrl if hook is not None and hook.Mode == "FILTER" else None


def custom_channel(
    config: MessageConfiguration | None,
    delivery: CustomDeliveryConfiguration | None,
    hook: CampaignHook | None,
) -> CustomChannel | None:
    """A treatment's custom channel, from its message and its (or the campaign's)
    `CustomDeliveryConfiguration`, else from a DELIVERY `hook`; None if it has none."""
    custom = config.CustomMessage if config is not None else None
    data = (custom.Data if custom is not None else None) or ""
    if delivery is not None:
        types = frozenset(delivery.EndpointTypes) if delivery.EndpointTypes else None
        only = not has_push(config) or (
            custom is not None and types is not None and CUSTOM in types
        )
        return CustomChannel(delivery.DeliveryUri, types, data, only)
    if hook is not None and hook.Mode == "DELIVERY" and hook.WebUrl:
        return CustomChannel(hook.WebUrl, None, data, True)
    return None


def check_hook(
    hook: CampaignHook | None,
    field: str,
    *,
    allow_http: bool = False,
    registry: Registry | None = None,
) -> None:
    """The rules of a `Hook` or `CampaignHook`; raise WireError naming the field.
    `allow_http`: the operator lets hooks be http:// URLs to any host; `registry`: the
    in-process hooks a `hook:NAME` WebUrl may name (None: names are not looked up)."""
    if hook is None:
        return
    try:
        check_campaign_hook(
            msgspec.to_builtins(hook), field, allow_http=allow_http, registry=registry
        )
    except HookConfigError as exc:
        raise WireError(exc.field, exc.rule) from None


def check_channels(
    request: WriteCampaignRequest, *, allow_http: bool = False, registry: Registry | None = None
) -> None:
    """The rules of a campaign's hook and custom channels; raise WireError naming the
    field and the rule."""
    check_hook(request.Hook, "Hook", allow_http=allow_http, registry=registry)
    delivery_hook = request.Hook is not None and request.Hook.Mode == "DELIVERY"
    _check_delivery(
        request.CustomDeliveryConfiguration, "CustomDeliveryConfiguration", allow_http, registry
    )
    _check_custom_message(
        request.MessageConfiguration,
        request.CustomDeliveryConfiguration is not None or delivery_hook,
        "CustomDeliveryConfiguration",
    )
    for index, treatment in enumerate(request.AdditionalTreatments or []):
        prefix = f"AdditionalTreatments[{index}]"
        _check_delivery(
            treatment.CustomDeliveryConfiguration,
            f"{prefix}.CustomDeliveryConfiguration",
            allow_http,
            registry,
        )
        _check_custom_message(
            treatment.MessageConfiguration,
            treatment.CustomDeliveryConfiguration is not None
            or request.CustomDeliveryConfiguration is not None
            or delivery_hook,
            f"{prefix}.CustomDeliveryConfiguration",
        )


def delivers_custom(request: WriteCampaignRequest) -> bool:
    """Whether the campaign has a custom channel of its own (and so needs no push)."""
    return request.CustomDeliveryConfiguration is not None or (
        request.Hook is not None and request.Hook.Mode == "DELIVERY"
    )


def _check_delivery(
    delivery: CustomDeliveryConfiguration | None,
    field: str,
    allow_http: bool,
    registry: Registry | None,
) -> None:
    if delivery is None:
        return
    try:
        check_target(
            delivery.DeliveryUri,
            f"{field}.DeliveryUri",
            "custom_delivery",
            allow_http=allow_http,
            registry=registry,
        )
    except HookConfigError as exc:
        raise WireError(exc.field, exc.rule) from None


def _check_custom_message(config: MessageConfiguration | None, channel: bool, field: str) -> None:
    if config is not None and config.CustomMessage is not None and not channel:
        raise WireError(
            field,
            "is required when the MessageConfiguration has a CustomMessage: it names the "
            "https:// URL or the in-process hook (DeliveryUri) that receives the message",
        )


T = TypeVar("T")


def unique_batches(items: Iterable[T], key: Callable[[T], str]) -> Iterator[list[T]]:
    """`items` in batches of at most 50 whose keys (endpoint ids) differ, each in the
    first batch with room that lacks its key: an event-triggered campaign may send one
    endpoint several times in a chunk, for the several events of one PutEvents call, and
    the n-th send of each endpoint goes in the n-th call with the others', rather than
    each in a call of its own. Each batch keeps the order of `items`."""
    batches: list[list[T]] = []
    last: dict[str, int] = {}  # key -> the batch it went in last: those after lack it
    # The batches before `open_from` are full: a key new to the chunk starts its search
    # there rather than at the first batch, so that a chunk of n sends costs O(n).
    open_from = 0
    for item in items:
        k = key(item)
        at = max(last.get(k, -1) + 1, open_from)
        while at < len(batches) and len(batches[at]) == MAX_ENDPOINTS_PER_CALL:
            at += 1
        if at == len(batches):
            batches.append([])
        batches[at].append(item)
        last[k] = at
        while open_from < len(batches) and len(batches[open_from]) == MAX_ENDPOINTS_PER_CALL:
            open_from += 1
    yield from batches


def definition(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    """An endpoint as hooks get it: its definition, under its id in `Endpoints`."""
    return {k: v for k, v in endpoint.items() if k != "Id"}


def delivery_configuration(
    request: WriteCampaignRequest, treatment: str
) -> CustomDeliveryConfiguration | None:
    """A treatment's custom channel settings: its own, else the campaign's."""
    if treatment != "0":
        chosen = (request.AdditionalTreatments or [])[int(treatment) - 1]
        if chosen.CustomDeliveryConfiguration is not None:
            return chosen.CustomDeliveryConfiguration
    return request.CustomDeliveryConfiguration


def message_configuration(config: MessageConfiguration | None) -> dict[str, Any]:
    """A treatment's MessageConfiguration as a FILTER hook gets it: the members set."""
    return {} if config is None else msgspec.to_builtins(config)
