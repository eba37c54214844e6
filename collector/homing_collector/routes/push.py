from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homing.wire import WireError, check_id, push_seq
from homing_collector.errors import bad_request
from homing_collector.push import epoch_ms
from homing_collector.push.messages import MAX_ACKS
from homing_collector.push.stream import PushStream
from homing_collector.routes._common import begin, gateway, json
from homing_collector.routes.endpoints import _endpoint_id


async def open_stream(request: Request) -> Response:
    call = await begin(request)
    endpoint_id = _endpoint_id(request)
    if request.method == "HEAD":  # the headers only: a stream would never end
        return Response(media_type="text/event-stream", headers={"cache-control": "no-store"})
    push = gateway(request)
    last_event_id = request.headers.get("last-event-id", "").strip()
    if last_event_id:
        seq = push_seq(last_event_id)
        if seq is None:
            raise bad_request(
                "Last-Event-ID: must be a whole number, the id (seq) of the last message "
                "the device handled"
            )
        acknowledged = await call.storage.ack_push_through(
            call.app_id, endpoint_id, seq, now_ms=epoch_ms()
        )
        push.metrics.push["delivered"] += acknowledged
    return PushStream(push, call.app_id, endpoint_id, call.principal.access_key_id)


def check_acks(payload: Any) -> list[str]:
    ids = payload.get("MessageIds") if type(payload) is dict else None
    if type(ids) is not list or not 1 <= len(ids) <= MAX_ACKS:
        raise bad_request(f"MessageIds: is required and must be a list of 1 to {MAX_ACKS} ids")
    try:
        for index, message_id in enumerate(ids):
            check_id(message_id, f"MessageIds[{index}]")
    except WireError as exc:
        raise bad_request(str(exc)) from None
    return ids


async def acknowledge(request: Request) -> Response:
    call = await begin(request)
    endpoint_id = _endpoint_id(request)
    acknowledged = await call.storage.ack_push(
        call.app_id, endpoint_id, call.checked, now_ms=epoch_ms()
    )
    gateway(request).metrics.push["delivered"] += acknowledged
    return json({"Acknowledged": acknowledged}, 202)
