"""Analytics routes: parse the parameters, run a query off the event loop, answer JSON."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from homing_collector.analytics import kpis, params, queries
from homing_collector.analytics.days import ParamError
from homing_collector.errors import bad_request, not_found
from homing_collector.routes._common import Call, begin, json

Query = Callable[[sqlite3.Connection], dict[str, Any]]
RangeQuery = Callable[[sqlite3.Connection, str, params.Range], dict[str, Any]]


async def _answer(request: Request, build: Callable[[Call], Query]) -> Response:
    call = await begin(request)
    if not call.storage.rollups:
        raise not_found("Analytics are off on this collector (HOMING_ROLLUPS=0)")
    try:
        query = build(call)
        return json(await call.storage.analytics_read(query))
    except ParamError as exc:
        raise bad_request(str(exc)) from None


def _get(call: Call) -> params.Get:
    return call.request.query_params.get


def _get_list(call: Call) -> params.GetList:
    return call.request.query_params.getlist


def _over_range(run: RangeQuery) -> Callable[[Request], Awaitable[Response]]:
    """A route whose only parameters are the date range's."""

    async def route(request: Request) -> Response:
        def build(call: Call) -> Query:
            q = params.parse_range(_get(call))
            return lambda conn: run(conn, call.app_id, q)

        return await _answer(request, build)

    return route


usage = _over_range(queries.usage)
retention = _over_range(queries.retention)
revenue = _over_range(queries.revenue)
campaigns = _over_range(queries.campaigns)


async def demographics(request: Request) -> Response:
    def build(call: Call) -> Query:
        dimension = params.parse_dimension(_get(call))
        return lambda conn: queries.demographics(conn, call.app_id, dimension)

    return await _answer(request, build)


async def events(request: Request) -> Response:
    def build(call: Call) -> Query:
        q = params.parse_range(_get(call))
        f = params.parse_event_filters(_get(call), _get_list(call))
        return lambda conn: queries.events(conn, call.app_id, q, f)

    return await _answer(request, build)


async def funnel(request: Request) -> Response:
    def build(call: Call) -> Query:
        q = params.parse_range(_get(call))
        steps = params.parse_steps(_get_list(call))
        window = params.parse_window(_get(call))
        return lambda conn: queries.funnel(conn, call.app_id, q, steps, window)

    return await _answer(request, build)


async def date_range_kpi(request: Request) -> Response:
    def build(call: Call) -> Query:
        name = call.request.path_params["kpi_name"]
        if not kpis.known(name):
            raise not_found(
                f"kpi-name: {name[:80]!r} is not a KPI of this collector; one of "
                + ", ".join(kpis.NAMES)
            )
        start, end = kpis.parse_times(_get(call))
        return lambda conn: kpis.date_range_kpi(conn, call.app_id, name, start, end)

    return await _answer(request, build)
