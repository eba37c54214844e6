"""Homing's own: an application's retention period for raw events."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import format_timestamp
from homing_collector.models.retention import RetentionResource, RetentionUpdate
from homing_collector.routes._common import begin


def _answer(app_id: str, days: int | None) -> Response:
    body = RetentionResource(ApplicationId=app_id, EventsDays=days)
    return Response(msgspec.json.encode(body), media_type="application/json")


async def get_retention(request: Request) -> Response:
    call = await begin(request)
    return _answer(call.app_id, await call.storage.get_retention(call.app_id))


async def update_retention(request: Request) -> Response:
    call = await begin(request)
    update = msgspec.convert(call.payload, RetentionUpdate)
    now = format_timestamp(datetime.now(timezone.utc))
    wanted = None if update.EventsDays is None else int(update.EventsDays)
    days = await call.storage.update_retention(call.app_id, wanted, now)
    request.app.state.retention.wake()
    return _answer(call.app_id, days)
