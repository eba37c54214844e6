from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homing_collector.push import messages, send
from homing_collector.routes._common import begin, gateway, json


async def send_messages(request: Request) -> Response:
    call = await begin(request)
    parsed: messages.SendRequest = call.checked
    targets = [
        send.Target(endpoint_id, override) for endpoint_id, override in parsed.targets.items()
    ]
    found = await call.storage.get_endpoints(call.app_id, list(parsed.targets))
    results = await send.send(gateway(request), call.app_id, parsed, targets, found)
    return json({
        "ApplicationId": call.app_id,
        "RequestId": call.request_id,
        "EndpointResult": dict(zip(parsed.targets, results, strict=True)),
    })  # fmt: skip


async def send_users_messages(request: Request) -> Response:
    call = await begin(request)
    parsed: messages.SendRequest = call.checked
    targets: list[send.Target] = []
    owners: list[str] = []
    found = {}
    for user_id, override in parsed.targets.items():
        for endpoint in await call.storage.get_user_endpoints(call.app_id, user_id):
            targets.append(send.Target(endpoint["Id"], override))
            owners.append(user_id)
            found[endpoint["Id"]] = endpoint
    results = await send.send(gateway(request), call.app_id, parsed, targets, found)
    by_user: dict[str, dict[str, send.Result]] = {user_id: {} for user_id in parsed.targets}
    for user_id, target, result in zip(owners, targets, results, strict=True):
        by_user[user_id][target.endpoint_id] = result
    return json({"ApplicationId": call.app_id, "RequestId": call.request_id, "Result": by_user})


def check_endpoints(payload: Any) -> messages.SendRequest:
    return messages.parse(payload, targets="Endpoints")


def check_users(payload: Any) -> messages.SendRequest:
    return messages.parse(payload, targets="Users")
