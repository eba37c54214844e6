from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from homing_collector import ingest
from homing_collector.routes._common import begin, json, metrics


async def put_events(request: Request) -> Response:
    call = await begin(request, "PutEvents", with_body=True)
    report = await ingest.put_events(
        call.storage, call.app_id, call.payload, body_size=call.body_size
    )
    counters = metrics(request).events
    counters["accepted"] += report.accepted
    counters["rejected"] += report.rejected
    return json(report.response, 202)
