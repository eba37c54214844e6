"""Pinpoint's GetApplicationSettings and UpdateApplicationSettings: the app-wide `Limits`
and `QuietTime` that campaigns inherit, and the `CampaignHook` that campaigns without a
`Hook` of their own call."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import WireError
from homing_collector.campaigns.campaign_shapes import (
    CampaignHook,
    CampaignLimits,
    QuietTime,
    WriteApplicationSettingsRequest,
)
from homing_collector.campaigns.channels import check_hook
from homing_collector.campaigns.decode import convert
from homing_collector.errors import bad_request
from homing_collector.models.segments import ApplicationSettingsResource
from homing_collector.routes._common import begin


def check_settings(payload: Any) -> WriteApplicationSettingsRequest:
    try:
        return convert(payload, WriteApplicationSettingsRequest)
    except WireError as exc:
        raise bad_request(str(exc)) from None


def settings_response(app_id: str, settings: str, modified_at: str) -> Response:
    stored = convert(orjson.loads(settings), WriteApplicationSettingsRequest)
    body = ApplicationSettingsResource(
        ApplicationId=app_id,
        LastModifiedDate=modified_at,
        CampaignHook=stored.CampaignHook or CampaignHook(),
        Limits=stored.Limits or CampaignLimits(),
        QuietTime=stored.QuietTime or QuietTime(),
        JourneyLimits=stored.JourneyLimits,
    )
    return Response(msgspec.json.encode(body), media_type="application/json")


async def get_settings(request: Request) -> Response:
    call = await begin(request)
    stored = await call.storage.get_app_settings(call.app_id)
    if stored is None:
        # Never updated: nothing set, as of the application's creation.
        app = await call.storage.get_app(call.app_id)
        assert app is not None  # begin() answered 404 otherwise
        return settings_response(call.app_id, "{}", app.created_at)
    return settings_response(call.app_id, *stored)


async def update_settings(request: Request) -> Response:
    call = await begin(request)
    update: WriteApplicationSettingsRequest = call.checked
    try:
        allow_http = request.app.state.settings.hooks_allow_http
        check_hook(
            update.CampaignHook,
            "CampaignHook",
            allow_http=allow_http,
            registry=request.app.state.hooks.registry,
        )
    except WireError as exc:
        raise bad_request(str(exc)) from None
    # Each member given replaces the stored one; the others stay as they were.
    members = msgspec.to_builtins(update)
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    settings = await call.storage.update_app_settings(call.app_id, members, now)
    return settings_response(call.app_id, settings, now)
