"""Homing's own: an application's quotas, where the server's defaults do not suit it."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import format_timestamp
from homing_collector.models.apps import QuotasResource, QuotasUpdate
from homing_collector.quotas import NAMES, Rates
from homing_collector.routes._common import begin, quotas


def _answer(app_id: str, rates: Rates, own: dict[str, int]) -> Response:
    body = QuotasResource(
        ApplicationId=app_id,
        **{name: getattr(rates, field) for name, field in NAMES.items()},
        Own=sorted(own),
    )
    return Response(msgspec.json.encode(body), media_type="application/json")


async def get_quotas(request: Request) -> Response:
    call = await begin(request)
    own = await call.storage.get_app_quotas(call.app_id)
    return _answer(call.app_id, quotas(request).remember(call.app_id, own), own)


async def update_quotas(request: Request) -> Response:
    call = await begin(request)
    update = msgspec.convert(call.payload, QuotasUpdate)
    changes = {
        name: value for name in NAMES if (value := getattr(update, name)) is not msgspec.UNSET
    }
    now = format_timestamp(datetime.now(timezone.utc))
    own = await call.storage.update_app_quotas(call.app_id, changes, now)
    # This worker at once; the others within OWN_TTL_SECONDS.
    return _answer(call.app_id, quotas(request).remember(call.app_id, own), own)
