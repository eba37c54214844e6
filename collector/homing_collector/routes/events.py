from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from homing_collector import ingest
from homing_collector.routes._common import begin, json, metrics


async def put_events(request: Request) -> Response:
    call = await begin(request)
    checked = ingest.check_events(
        call.payload, body_size=call.body_size, summarize=call.storage.rollups
    )
    # Free the parsed body now, while it is still in the CPU's caches, not once the commit
    # is done: freeing thousands of objects gone cold costs several times more.
    call.payload = None
    report = await ingest.store_events(call.storage, call.app_id, checked)
    counters = metrics(request).events
    counters["accepted"] += report.accepted
    counters["rejected"] += report.rejected
    return json(report.response, 202)
