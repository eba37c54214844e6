"""What every Pinpoint route does first: read the body, authenticate, authorise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from homing import limits
from homing_collector.auth import Principal, authenticate, authorize
from homing_collector.body import parse_json, read_body
from homing_collector.errors import not_found, request_id
from homing_collector.metrics import Metrics
from homing_collector.operation import operation_of
from homing_collector.push.gateway import Gateway
from homing_collector.storage.base import Storage
from homing_collector.validation import check_body, check_query


@dataclass
class Call:
    request: Request
    principal: Principal
    app_id: str
    payload: Any
    body_size: int
    checked: Any = None  # what the operation's own check returned

    @property
    def storage(self) -> Storage:
        return storage(self.request)

    @property
    def request_id(self) -> str:
        return request_id(self.request)


def storage(request: Request) -> Storage:
    return request.app.state.storage  # type: ignore[no-any-return]


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


def gateway(request: Request) -> Gateway:
    return request.app.state.push  # type: ignore[no-any-return]


async def begin(request: Request) -> Call:
    op = operation_of(request)
    raw, body = await read_body(request, limits.MAX_REQUEST_BYTES)
    principal = await authenticate(request, raw, storage(request))
    app_id = request.path_params.get("application_id") if op.app_scoped else None
    authorize(principal, op, app_id)
    if app_id is not None and await storage(request).get_app(app_id) is None:
        raise not_found(f"Application {app_id} does not exist")
    payload = checked = None
    if op.request is not None:
        payload = parse_json(body)
        checked = op.check(payload) if op.check is not None else None
        check_body(payload, op.request)
    if op.query is not None:
        checked = op.check(request.query_params) if op.check is not None else None
        check_query(request.query_params, op.query)
    return Call(request, principal, app_id or "", payload, len(body), checked)


def json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def accepted(call: Call) -> Response:
    return json({"Message": "Accepted", "RequestID": call.request_id}, 202)
