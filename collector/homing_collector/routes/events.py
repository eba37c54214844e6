from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from homing_collector import device, ingest
from homing_collector.routes._common import begin, check_event_quota, json, metrics


async def put_events(request: Request) -> Response:
    call = await begin(request)
    await check_event_quota(call, call.checked.events)
    checked = ingest.check_events(
        call.payload,
        body_size=call.body_size,
        summarize=call.storage.rollups,
        envelope=call.checked,
    )
    # Free the parsed body now, while it is still in the CPU's caches, not once the commit
    # is done: freeing thousands of objects gone cold costs several times more. The
    # envelope holds the body's BatchItem, so it goes too: nothing else may keep it.
    call.payload = call.checked = None
    # The device credentials are checked by the write itself: PostgreSQL reads them in
    # the transaction that writes the batch, rather than in a round trip of their own.
    # Those of the endpoints whose id was refused do not matter: nothing of theirs is
    # stored, and such an id may be one the database cannot even hold (a lone surrogate).
    proof = device.check(request, call.principal, checked.endpoint_ids)
    report = await ingest.store_events(call.storage, call.app_id, checked, proof=proof)
    # After the commit, with no I/O: event-triggered campaigns (campaigns.triggers).
    request.app.state.scheduler.triggers.offer(
        call.app_id, checked.rows, report.response["Results"],
        from_admin=call.principal.role != "ingest",
    )  # fmt: skip
    counters = metrics(request).events
    counters["accepted"] += report.accepted
    counters["rejected"] += report.rejected
    if report.locked:  # events of devices with a credential, sent without it: counted apart
        results = report.response["Results"]
        counters["accepted_without_device_credential"] += sum(
            1
            for endpoint_id in report.locked
            for status in results[endpoint_id]["EventsItemResponse"].values()
            if status["StatusCode"] == 202
        )
    return json(report.response, 202)
