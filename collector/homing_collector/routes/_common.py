"""What every Pinpoint route does first: authenticate and authorise from the headers,
then read the body and check it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from homing import limits
from homing_collector.auth import (
    Principal,
    Signature,
    authenticate,
    authorize,
    verify_signature,
)
from homing_collector.body import parse_json, read_body
from homing_collector.errors import PinpointError, not_found, request_id, too_many_requests
from homing_collector.metrics import Metrics
from homing_collector.operation import operation_of
from homing_collector.push.gateway import Gateway
from homing_collector.quotas import Quotas, Rates, Refusal
from homing_collector.sealing import SecretsKey
from homing_collector.storage.base import Storage
from homing_collector.validation import (
    check_body,
    check_query,
    check_query_no_nul,
)


@dataclass
class Call:
    request: Request
    principal: Principal
    app_id: str
    payload: Any
    body_size: int
    checked: Any = None  # what the operation's own check returned
    before: Any = None  # what begin's before_body returned

    @property
    def storage(self) -> Storage:
        return storage(self.request)

    @property
    def request_id(self) -> str:
        return request_id(self.request)


def storage(request: Request) -> Storage:
    return request.app.state.storage  # type: ignore[no-any-return]


def secrets_key(request: Request) -> SecretsKey | None:
    """The key that seals SigV4 secrets in the database, if the collector has one."""
    return request.app.state.secrets_key  # type: ignore[no-any-return]


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


def quotas(request: Request) -> Quotas:
    return request.app.state.quotas  # type: ignore[no-any-return]


async def _rates(request: Request, app_id: str | None) -> Rates:
    """The quotas of the application's keys and of the application (None: no app)."""
    limits_ = quotas(request)
    if app_id is None:
        return limits_.defaults
    return limits_.cached(app_id) or limits_.remember(
        app_id, await storage(request).get_app_quotas(app_id)
    )


async def check_event_quota(call: Call, count: int) -> None:
    """Raise 429 if `count` more events would put the key or the app over its quota."""
    rates = await _rates(call.request, call.app_id)
    refusal = quotas(call.request).events(rates, call.principal.access_key_id, call.app_id, count)
    if refusal is not None:
        raise _refused(call.request, refusal)


def _refused(request: Request, refusal: Refusal) -> PinpointError:
    """The 429 for a request over a quota, counted in /metrics."""
    metrics(request).quota_refusals[refusal.what] += 1
    return too_many_requests(refusal.message, refusal.retry_after)


def gateway(request: Request) -> Gateway:
    return request.app.state.push  # type: ignore[no-any-return]


# A check of the route's own that the headers can decide, run before the body is read:
# (request, principal, app id) -> its result, Call.before.
BeforeBody = Callable[[Request, Principal, str], Awaitable[Any]]


async def admit(
    request: Request, before_body: BeforeBody | None = None
) -> tuple[Principal, Signature | None, str | None, Any]:
    """Who calls, allowed to call this operation on this application (which exists), and
    what `before_body` returned; all from the headers, before the body is read. A SigV4
    signature must then be checked against the body."""
    op = operation_of(request)
    app_id = request.path_params.get("application_id") if op.app_scoped else None
    # Everything the headers can decide comes before the body, so that an anonymous or
    # unauthorised client cannot make the server read, and inflate, up to the size limit.
    try:
        # The application is read with the key, in one round trip; said only once the
        # caller may know.
        principal, signature, app_found = await authenticate(
            request, storage(request), secrets_key=secrets_key(request), app_id=app_id
        )
        authorize(principal, op, app_id)
        if app_id is not None and not app_found:
            raise not_found(f"Application {app_id} does not exist")
        rates = await _rates(request, app_id)
        refusal = quotas(request).requests(rates, principal.access_key_id, app_id)
        if refusal is not None:
            raise _refused(request, refusal)
        before = (
            None if before_body is None else await before_body(request, principal, app_id or "")
        )
    except PinpointError as exc:
        exc.body_unread = announces_body(request)
        raise
    return principal, signature, app_id, before


async def begin(request: Request, before_body: BeforeBody | None = None) -> Call:
    op = operation_of(request)
    principal, signature, app_id, before = await admit(request, before_body)
    raw, body = await read_body(request, limits.MAX_REQUEST_BYTES)
    if signature is not None:
        verify_signature(request, signature, raw)  # it covers the body's hash
    payload = checked = None
    check_query_no_nul(request.query_params)
    if op.request is not None:
        payload = parse_json(body)
        checked = op.check(payload) if op.check is not None else None
        check_body(payload, op.request)
    if op.query is not None:
        checked = op.check(request.query_params) if op.check is not None else None
        check_query(request.query_params, op.query)
    return Call(request, principal, app_id or "", payload, len(body), checked, before)


def announces_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length.strip() != "0") or (
        "transfer-encoding" in request.headers
    )


def json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def accepted(call: Call) -> Response:
    return json({"Message": "Accepted", "RequestID": call.request_id}, 202)
