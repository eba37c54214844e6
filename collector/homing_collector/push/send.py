"""Sending a push to endpoints: each gets a status, as Pinpoint's EndpointMessageResult.

A message is committed before the answer, and only then written to an open stream:
an acknowledged send survives a crash, and a device never sees a message that the
database could lose.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from homing_collector.push import epoch_ms
from homing_collector.push.gateway import Gateway
from homing_collector.push.messages import Override, SendRequest, render
from homing_collector.storage.base import Endpoint, PushMessage, QueuedPush

Result = dict[str, Any]


@dataclass(frozen=True)
class Target:
    endpoint_id: str
    override: Override


def _result(status: str, code: int, message_id: str, text: str, address: Any) -> Result:
    result: Result = {
        "DeliveryStatus": status,
        "StatusCode": code,
        "MessageId": message_id,
        "StatusMessage": text,
    }
    if isinstance(address, str) and address:
        result["Address"] = address
    return result


async def send(
    gateway: Gateway,
    app_id: str,
    request: SendRequest,
    targets: list[Target],
    endpoints: dict[str, Endpoint],
) -> list[Result]:
    """One result per target, in order."""
    now_ms = epoch_ms()
    results: list[Result | None] = []
    queued: list[tuple[int, PushMessage, str | None]] = []  # (result index, message, address)
    addresses: dict[tuple[Any, str], str] = {}  # (channel, address) -> first endpoint id
    for target in targets:
        endpoint_id = target.endpoint_id
        message_id = str(uuid.uuid4())
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None:
            results.append(_result("PERMANENT_FAILURE", 404, message_id,
                                   f"Endpoint {endpoint_id} does not exist", None))  # fmt: skip
            continue
        address = endpoint.get("Address")
        if endpoint.get("EndpointStatus") == "INACTIVE":
            results.append(_result("PERMANENT_FAILURE", 404, message_id,
                                   f"Endpoint {endpoint_id} is INACTIVE", address))  # fmt: skip
            continue
        push = request.push_for(endpoint.get("ChannelType"))
        if endpoint.get("OptOut") == "ALL" and not push.silent:
            results.append(_result(
                "OPT_OUT", 403, message_id,
                f"Endpoint {endpoint_id} has opted out (OptOut ALL); only silent pushes reach it",
                address,
            ))  # fmt: skip
            continue
        if isinstance(address, str) and address:
            first = addresses.setdefault((endpoint.get("ChannelType"), address), endpoint_id)
            if first != endpoint_id:
                results.append(_result(
                    "DUPLICATE", 409, message_id,
                    f"Endpoint {endpoint_id} has the same Address as endpoint {first} of this "
                    "request, which gets the message",
                    address,
                ))  # fmt: skip
                continue
        ttl = gateway.default_ttl if push.ttl is None else push.ttl
        # A TimeToLive of 0 (FCM: "now or never") lives one second, so that a stream open
        # now has the time to write it before it expires.
        expires_at = now_ms + max(ttl, 1) * 1000
        payload, campaign_id = render(
            push, target.override, request.context, message_id=message_id,
            expires_at_ms=expires_at,
        )  # fmt: skip
        message = PushMessage(
            endpoint_id, message_id, bool(push.silent), payload, campaign_id, expires_at
        )
        queued.append((len(results), message, address))
        results.append(None)

    if queued:
        outcome = await gateway.storage.queue_push(
            app_id, [message for _, message, _ in queued], queue_limit=gateway.queue_limit
        )
        # No await from here on: streams must hear of messages in commit order.
        gateway.metrics.push["queued"] += len(queued)
        gateway.metrics.push["dropped"] += outcome.dropped
        for (index, message, address), seq in zip(queued, outcome.seqs, strict=True):
            item = QueuedPush(seq, message.payload, message.expires_at)
            if gateway.offer(app_id, message.endpoint_id, item):
                results[index] = _result("SUCCESSFUL", 200, message.message_id,
                                         "Written to an open push stream", address)  # fmt: skip
            else:
                results[index] = _result(
                    "TEMPORARY_FAILURE", 202, message.message_id,
                    "Queued: the endpoint has no open push stream; it gets the message when "
                    "it connects, until the message expires",
                    address,
                )  # fmt: skip
    return [result for result in results if result is not None]
