"""Homing's own addition: an endpoint's device credential (see homing_collector.device)."""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import Response

from homing_collector import device
from homing_collector.errors import PinpointError, not_found
from homing_collector.routes._common import begin, gateway, json
from homing_collector.routes.endpoints import _endpoint_id


async def create_credential(request: Request) -> Response:
    call = await begin(request)
    endpoint_id = _endpoint_id(request)
    secret = device.new_secret()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # An ingest key gets one only for an endpoint that has none: whoever holds the app's
    # ingest key must not take a device's place. An admin key reissues.
    replace = device.is_admin(call.principal)
    stored = await call.storage.set_device_credential(
        call.app_id, endpoint_id, device.hash_secret(secret), now, replace=replace
    )
    if not stored:
        raise PinpointError(
            409,
            f"Endpoint {endpoint_id} already has a device credential; an admin key can "
            "reissue it (CreateDeviceCredential) or revoke it (RevokeDeviceCredential)",
        )
    # Streams opened before, with the bare ingest key or the old credential, end now.
    gateway(request).close_endpoint(call.app_id, endpoint_id)
    return json(
        {
            "ApplicationId": call.app_id,
            "EndpointId": endpoint_id,
            "DeviceCredential": secret,
            "CreationDate": now,
        },
        201,
    )


async def revoke_credential(request: Request) -> Response:
    call = await begin(request)
    endpoint_id = _endpoint_id(request)
    if not await call.storage.delete_device_credential(call.app_id, endpoint_id):
        raise not_found(f"Endpoint {endpoint_id} has no device credential")
    gateway(request).close_endpoint(call.app_id, endpoint_id)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return json({"ApplicationId": call.app_id, "EndpointId": endpoint_id, "RevokedDate": now})
