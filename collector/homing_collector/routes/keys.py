"""Homing's own addition: an application's keys, over HTTP (admin of the app, or root)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homing_collector.auth import generate_key
from homing_collector.errors import bad_request, not_found
from homing_collector.models.apps import APP_ROLES
from homing_collector.routes._common import begin, gateway, json, secrets_key
from homing_collector.storage.base import KeyRecord


def key_response(key: KeyRecord) -> dict[str, object]:
    return {
        "AccessKeyId": key.access_key_id,
        "ApplicationId": key.app_id,
        "Role": key.role,
        "CreationDate": key.created_at,
        "RevokedDate": key.revoked_at,
    }


def check_role(payload: Any) -> str:
    role = payload.get("Role") if type(payload) is dict else None
    if role not in APP_ROLES:
        raise bad_request(f"Role: is required and must be one of {', '.join(APP_ROLES)}")
    return str(role)


async def create_key(request: Request) -> Response:
    call = await begin(request)
    key = generate_key(call.checked, call.app_id, secrets_key=secrets_key(request))
    await call.storage.create_key(key.record)
    return json(
        {
            **key_response(key.record),
            "SecretAccessKey": key.secret,
            "Token": key.token,
        },
        201,
    )


async def list_keys(request: Request) -> Response:
    call = await begin(request)
    keys = await call.storage.list_keys(call.app_id)
    return json({"Item": [key_response(key) for key in keys]})


async def revoke_key(request: Request) -> Response:
    call = await begin(request)
    access_key_id = request.path_params["access_key_id"]
    key = await call.storage.get_key(access_key_id)
    if key is None or key.app_id != call.app_id:
        raise not_found(f"Key {access_key_id} does not exist in application {call.app_id}")
    if key.revoked_at is None:
        revoked_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        await call.storage.revoke_key(access_key_id, revoked_at)
        gateway(request).close_key(access_key_id)  # revoking takes effect at once
        key = await call.storage.get_key(access_key_id)
        assert key is not None
    return json(key_response(key))
