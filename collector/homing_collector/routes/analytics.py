"""Analytics routes: parse the parameters, run a query off the event loop, answer JSON.

Each route's `check_*` reads its query parameters (the route table runs it first, then the
query model); the route runs the query with what it returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import WireError, check_url_id
from homing_collector.analytics import campaign_view, kpis, params, queries
from homing_collector.analytics.days import ParamError
from homing_collector.errors import bad_request, not_found, not_implemented
from homing_collector.routes._common import Call, begin, json
from homing_collector.storage.analytics_backend import Connection

Query = Callable[[Connection], dict[str, Any]]
RangeQuery = Callable[[Connection, str, params.Range], dict[str, Any]]
Check = Callable[[QueryParams], Any]


def _named(check: Check) -> Check:
    """`check`, with a ParamError (which starts with the parameter's name) as a 400."""

    def run(query: QueryParams) -> Any:
        try:
            return check(query)
        except ParamError as exc:
            raise bad_request(str(exc)) from None

    return run


async def _answer(
    request: Request,
    build: Callable[[Call], Query],
    found: Callable[[Call], Awaitable[None]] | None = None,
) -> Response:
    call = await begin(request)
    if not call.storage.analytics:
        raise not_implemented("Analytics (queries, KPIs, the dashboard's data)", call.storage.name)
    if not call.storage.rollups:
        raise not_found("Analytics are off on this collector (HOMING_ROLLUPS=0)")
    if found is not None:
        await found(call)  # what the path names exists, or 404
    try:
        return json(await call.storage.analytics_read(build(call)))
    except ParamError as exc:  # a time zone without whole-hour offsets over the range
        raise bad_request(str(exc)) from None


check_range = _named(lambda query: params.parse_range(query.get))
check_dimension = _named(lambda query: params.parse_dimension(query.get))
check_events = _named(
    lambda query: (
        params.parse_range(query.get),
        params.parse_event_filters(query.get, query.getlist),
    )
)
check_funnel = _named(
    lambda query: (
        params.parse_range(query.get),
        params.parse_steps(query.getlist),
        params.parse_window(query.get),
    )
)
check_kpi = _named(lambda query: kpis.parse_times(query.get))


def _over_range(run: RangeQuery) -> Callable[[Request], Awaitable[Response]]:
    """A route whose only parameters are the date range's (see check_range)."""

    async def route(request: Request) -> Response:
        return await _answer(
            request, lambda call: lambda conn: run(conn, call.app_id, call.checked)
        )

    return route


usage = _over_range(queries.usage)
retention = _over_range(queries.retention)
revenue = _over_range(queries.revenue)
campaigns = _over_range(queries.campaigns)


async def demographics(request: Request) -> Response:
    def build(call: Call) -> Query:
        return lambda conn: queries.demographics(conn, call.app_id, call.checked)

    return await _answer(request, build)


async def events(request: Request) -> Response:
    def build(call: Call) -> Query:
        q, f = call.checked
        return lambda conn: queries.events(conn, call.app_id, q, f, copy=call.storage.columnar)

    return await _answer(request, build)


async def funnel(request: Request) -> Response:
    def build(call: Call) -> Query:
        q, steps, window = call.checked
        return lambda conn: queries.funnel(
            conn, call.app_id, q, steps, window, copy=call.storage.columnar
        )

    return await _answer(request, build)


async def date_range_kpi(request: Request) -> Response:
    def build(call: Call) -> Query:
        name = call.request.path_params["kpi_name"]
        if not kpis.known(name):
            raise not_found(
                f"kpi-name: {name[:80]!r} is not a KPI of this collector; one of "
                + ", ".join(kpis.NAMES)
            )
        start, end = call.checked
        return lambda conn: kpis.date_range_kpi(conn, call.app_id, name, start, end)

    return await _answer(request, build)


def treatment_names(request_json: str) -> dict[str, str | None]:
    """A stored campaign's treatment ids ("0" is the base) with their TreatmentName."""
    request = orjson.loads(request_json)
    names: dict[str, str | None] = {"0": request.get("TreatmentName")}
    for i, treatment in enumerate(request.get("AdditionalTreatments") or [], start=1):
        names[str(i)] = treatment.get("TreatmentName")
    return names


async def campaign(request: Request) -> Response:
    """One campaign's figures; a deleted campaign's events still answer (no names)."""
    campaign_id: str = request.path_params["campaign_id"]
    try:  # not looked up when unknown, so checked as an id: a 400 names the rule
        check_url_id(campaign_id, "campaign-id")
    except WireError as exc:
        raise bad_request(str(exc)) from None
    names: dict[str, str | None] = {}
    title: list[str | None] = [None]

    async def found(call: Call) -> None:
        record = await call.storage.get_campaign(call.app_id, campaign_id)
        if record is not None:
            names.update(treatment_names(record.request))
            title[0] = orjson.loads(record.request).get("Name")

    def build(call: Call) -> Query:
        return lambda conn: campaign_view.campaign(
            conn, call.app_id, campaign_id, call.checked, names, name=title[0]
        )

    return await _answer(request, build, found)


async def campaign_date_range_kpi(request: Request) -> Response:
    campaign_id: str = request.path_params["campaign_id"]

    async def found(call: Call) -> None:
        if await call.storage.get_campaign(call.app_id, campaign_id) is None:
            raise not_found(f"Campaign {campaign_id} does not exist in application {call.app_id}")

    def build(call: Call) -> Query:
        name = call.request.path_params["kpi_name"]
        if name not in kpis.CAMPAIGN_NAMES:
            raise not_found(
                f"kpi-name: {name[:80]!r} is not a campaign KPI of this collector; one of "
                + ", ".join(kpis.CAMPAIGN_NAMES)
            )
        start, end = call.checked
        return lambda conn: kpis.date_range_kpi(
            conn, call.app_id, name, start, end, campaign_id=campaign_id
        )

    return await _answer(request, build, found)
