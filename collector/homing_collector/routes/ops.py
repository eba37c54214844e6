from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from homing import limits
from homing.wire import format_timestamp
from homing_collector.body import parse_json, read_body
from homing_collector.routes._common import json, metrics, storage


async def healthz(request: Request) -> Response:
    store = storage(request)
    await store.get_app("")  # the database answers
    if store.full_since is not None:
        return json({
            "status": "degraded",
            "reason": "the disk is full: writes are answered 503 until space is freed",
            "since": format_timestamp(store.full_since),
        })  # fmt: skip
    return json({"status": "ok"})


async def prometheus(request: Request) -> Response:
    return PlainTextResponse(
        metrics(request).render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


async def openapi(request: Request) -> Response:
    return json(request.app.state.openapi)


async def parse_only(request: Request) -> Response:
    """The ingest path without storage: a ceiling for benchmarks (`--bench-routes`)."""
    _raw, body = await read_body(request, limits.MAX_REQUEST_BYTES)
    parse_json(body)
    return json({"Results": {}}, 202)
