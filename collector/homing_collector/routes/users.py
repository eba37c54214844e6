from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from homing_collector.errors import not_found
from homing_collector.routes._common import begin, json


async def get_user_endpoints(request: Request) -> Response:
    call = await begin(request)
    user_id = request.path_params["user_id"]
    items = await call.storage.get_user_endpoints(call.app_id, user_id)
    if not items:
        raise not_found(f"User {user_id} has no endpoints in application {call.app_id}")
    return json({"Item": items})


async def delete_user_endpoints(request: Request) -> Response:
    call = await begin(request)
    user_id = request.path_params["user_id"]
    items = await call.storage.delete_user_endpoints(call.app_id, user_id)
    if not items:
        raise not_found(f"User {user_id} has no endpoints in application {call.app_id}")
    return json({"Item": items}, 202)
