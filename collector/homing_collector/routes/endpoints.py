from __future__ import annotations

import time
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homing import limits
from homing.wire import WireError, check_endpoint, check_id, check_url_id, format_timestamp
from homing_collector import endpoints
from homing_collector.errors import bad_request, not_found
from homing_collector.routes._common import Call, accepted, begin, json
from homing_collector.storage.base import Endpoint, EndpointUpdate, UserEndpointLimit


def check_update(payload: Any) -> Endpoint:
    try:
        return check_endpoint(payload, "EndpointRequest")
    except WireError as exc:
        raise bad_request(str(exc)) from None


def check_batch(payload: Any) -> list[EndpointUpdate]:
    items = payload.get("Item") if type(payload) is dict else None
    if type(items) is not list:
        raise bad_request("Item: is required and must be a list of endpoints")
    if len(items) > limits.MAX_ENDPOINTS_PER_BATCH:
        raise bad_request(
            f"Item: has {len(items)} endpoints; the limit is {limits.MAX_ENDPOINTS_PER_BATCH}"
        )
    updates = []
    for index, item in enumerate(items):
        field = f"Item[{index}]"
        try:
            check_endpoint(item, field)
            check_url_id(item.get("Id"), f"{field}.Id")
        except WireError as exc:
            raise bad_request(str(exc)) from None
        updates.append(EndpointUpdate(item["Id"], {k: v for k, v in item.items() if k != "Id"}))
    return updates


async def update_endpoint(request: Request) -> Response:
    call = await begin(request)
    endpoint_id = _endpoint_id(request)
    await _store(call, [EndpointUpdate(endpoint_id, call.checked)])
    return accepted(call)


async def update_endpoints_batch(request: Request) -> Response:
    call = await begin(request)
    await _store(call, call.checked, batch=True)
    return accepted(call)


async def get_endpoint(request: Request) -> Response:
    call = await begin(request)
    endpoint_id = _endpoint_id(request)
    endpoint = await call.storage.get_endpoint(call.app_id, endpoint_id)
    if endpoint is None:
        raise not_found(f"Endpoint {endpoint_id} does not exist in application {call.app_id}")
    return json(endpoint)


async def delete_endpoint(request: Request) -> Response:
    call = await begin(request)
    endpoint_id = _endpoint_id(request)
    endpoint = await call.storage.delete_endpoint(call.app_id, endpoint_id)
    if endpoint is None:
        raise not_found(f"Endpoint {endpoint_id} does not exist in application {call.app_id}")
    return json(endpoint, 202)


async def _store(call: Call, updates: list[EndpointUpdate], *, batch: bool = False) -> None:
    merge = partial(endpoints.merge, call.app_id, now=format_timestamp(time.time()))
    # Some rules (the size after merging, a user's endpoint count) can only be checked as
    # each endpoint is stored. Storage stops at the first item that breaks one: the
    # update it merged last is that item's own (the same object), even if its endpoint id
    # comes twice in the batch.
    merged: list[Endpoint] = []

    def merge_and_note(endpoint_id: str, existing: Endpoint | None, update: Endpoint) -> Endpoint:
        merged.append(update)
        return merge(endpoint_id, existing, update)

    try:
        await call.storage.update_endpoints(
            call.app_id,
            updates,
            merge=merge_and_note,
            max_user_endpoints=limits.MAX_ENDPOINTS_PER_USER,
        )
    except (UserEndpointLimit, WireError) as exc:
        failed = merged[-1] if batch and merged else None
        index = next((i for i, u in enumerate(updates) if u.update is failed), None)
        if index is None:
            raise bad_request(str(exc)) from None
        raise bad_request(f"Item[{index}].{exc}") from None


def _endpoint_id(request: Request) -> str:
    try:
        return check_id(request.path_params["endpoint_id"], "EndpointId")
    except WireError as exc:
        raise bad_request(str(exc)) from None
