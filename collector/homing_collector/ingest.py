"""PutEvents: validate each event on its own, store the good ones, report on every one.

One bad event never rejects its neighbours: each event and each endpoint in a batch gets
its own status, 202 or 400 with the field and the rule it broke.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from homing import limits
from homing.wire import (
    NUL_RULE,
    WireError,
    check_endpoint,
    check_event,
    check_id,
    check_url_id,
    format_timestamp,
    nul_at,
)
from homing_collector import endpoints
from homing_collector.analytics.rollups import Summary
from homing_collector.errors import bad_request
from homing_collector.event_check import check_common
from homing_collector.storage.base import DeviceCheck, EndpointUpdate, EventRow, Storage

ACCEPTED = {"StatusCode": 202, "Message": "Accepted"}
_new_row = tuple.__new__


@dataclass
class IngestReport:
    response: dict[str, Any]
    accepted: int
    rejected: int
    locked: frozenset[str] = frozenset()  # endpoints the caller did not prove (device.check)


@dataclass
class CheckedBatch:
    """A PutEvents body once checked: what to store and the answer so far. It holds on to
    none of the parsed body but ids, endpoint updates and each event's JSON."""

    results: dict[str, Any]
    updates: list[EndpointUpdate]
    rows: list[EventRow]
    rejected: int
    now: float
    summary: Summary | None  # what the rows add to the analytics rollups, if asked for
    endpoint_ids: list[str]  # those of the results whose id passed its rules


def _rejected(message: str) -> dict[str, Any]:
    return {"StatusCode": 400, "Message": message}


async def put_events(
    storage: Storage, app_id: str, payload: Any, *, body_size: int, now: float | None = None
) -> IngestReport:
    return await store_events(storage, app_id, check_events(payload, body_size=body_size, now=now))


@dataclass(frozen=True)
class Envelope:
    batch: dict[str, Any]  # BatchItem: endpoint id -> entry, each still to be judged
    events: int  # how many events the entries hold, in all


def check_envelope(payload: Any) -> Envelope:
    """The rules of a PutEvents body as a whole; each entry is then judged on its own."""
    if type(payload) is not dict:
        raise bad_request("The body must be a JSON object with a BatchItem")
    batch = payload.get("BatchItem")
    if type(batch) is not dict:
        raise bad_request("BatchItem: is required and must be an object of endpoint id -> batch")
    if len(batch) > limits.MAX_ENDPOINTS_PER_BATCH:
        raise bad_request(
            f"BatchItem: the request has {len(batch)} endpoints; "
            f"the limit is {limits.MAX_ENDPOINTS_PER_BATCH} per request"
        )
    total = sum(
        len(item["Events"])
        for item in batch.values()
        if type(item) is dict and type(item.get("Events")) is dict
    )
    if total > limits.MAX_EVENTS_PER_REQUEST:
        raise bad_request(
            f"BatchItem: the request has {total} events; "
            f"the limit is {limits.MAX_EVENTS_PER_REQUEST} per request"
        )
    return Envelope(batch, total)


def check_events(
    payload: Any,
    *,
    body_size: int,
    now: float | None = None,
    summarize: bool = False,
    envelope: Envelope | None = None,
) -> CheckedBatch:
    """Check a PutEvents body, whose `envelope` may be checked already. With `summarize`,
    also sum up what its events add to the analytics rollups, while each is at hand, so
    that the writer need not parse it again."""
    batch = (envelope or check_envelope(payload)).batch

    now = time.time() if now is None else now
    now_ms = int(now * 1000)
    latest_ms = now_ms + limits.MAX_FUTURE_SKEW_SECONDS * 1000
    check_size = body_size > limits.MAX_EVENT_BYTES  # no event can be bigger than the body

    results: dict[str, Any] = {}
    updates: list[EndpointUpdate] = []
    rows: list[EventRow] = []
    rejected = 0
    summary = Summary() if summarize else None
    endpoint_ids: list[str] = []
    for endpoint_id, item in batch.items():
        statuses: dict[str, Any] = {}
        result: dict[str, Any] = {"EndpointItemResponse": ACCEPTED, "EventsItemResponse": statuses}
        results[endpoint_id] = result
        try:
            check_url_id(endpoint_id, "BatchItem")
            if type(item) is not dict:
                raise WireError(f"BatchItem.{endpoint_id}", "must be an object")
            events = item.get("Events", {})
            if type(events) is not dict:
                raise WireError("Events", "must be an object of event id -> event")
        except WireError as exc:
            result["EndpointItemResponse"] = _rejected(str(exc))
            if type(item) is dict and type(item.get("Events")) is dict:
                for event_id in item["Events"]:
                    statuses[event_id] = _rejected(f"BatchItem: endpoint id rejected: {exc}")
                    rejected += 1
            continue
        endpoint_ids.append(endpoint_id)
        try:
            endpoint = item.get("Endpoint")
            update = check_endpoint({} if endpoint is None else endpoint, "Endpoint")
            updates.append(EndpointUpdate(endpoint_id, update))
        except WireError as exc:
            result["EndpointItemResponse"] = _rejected(str(exc))
        common = check_common(events) if events else None
        if common is not None and not (
            check_size and any(len(body) > limits.MAX_EVENT_BYTES for *_, body in common)
        ):
            append = rows.append
            summed: list[tuple[str, int, str | None, dict[str, Any]]] = []
            # check_common keeps the order of `events`.
            for (event_id, event_type, timestamp_ms, session_id, body), event in zip(
                common, events.values(), strict=True
            ):
                if timestamp_ms > latest_ms:
                    timestamp_ms = now_ms
                # A NamedTuple's own __new__ is a Python function; tuple.__new__ is not.
                append(
                    _new_row(
                        EventRow,
                        (endpoint_id, event_id, event_type, timestamp_ms, now_ms, session_id, body),
                    )
                )
                summed.append((event_type, timestamp_ms, session_id, event))
            if summary is not None:
                summary.add_all(endpoint_id, summed)
            statuses.update(dict.fromkeys(events, ACCEPTED))
            continue
        for event_id, event in events.items():
            try:
                check_id(event_id, "Events")
                timestamp = check_event(event)
                body = orjson.dumps(event)
                if b"\\u0000" in body and (where := nul_at(event, "Event")) is not None:
                    raise WireError(where, NUL_RULE)  # JSON spells a NUL only so
                if check_size and len(body) > limits.MAX_EVENT_BYTES:
                    raise WireError(
                        "Event",
                        f"is {len(body)} bytes; the limit is {limits.MAX_EVENT_BYTES} bytes",
                    )
            except WireError as exc:
                statuses[event_id] = _rejected(str(exc))
                rejected += 1
                continue
            timestamp_ms = int(timestamp.timestamp() * 1000)
            if timestamp_ms > latest_ms:
                timestamp_ms = now_ms  # stored as arriving now; the body keeps the original
            session = event.get("Session")
            session_id = session["Id"] if session else None
            event_type = event["EventType"]
            # Positional: a hundred times per request, keywords cost twice as much.
            rows.append(
                EventRow(endpoint_id, event_id, event_type, timestamp_ms, now_ms, session_id, body)
            )
            if summary is not None:
                summary.add(endpoint_id, event_type, timestamp_ms, session_id, event)
            statuses[event_id] = ACCEPTED
    return CheckedBatch(results, updates, rows, rejected, now, summary, endpoint_ids)


async def store_events(
    storage: Storage, app_id: str, checked: CheckedBatch, *, proof: DeviceCheck | None = None
) -> IngestReport:
    """Store what `checked` holds. With `proof` (device.check), the endpoints whose
    device credential it does not prove keep their `device.LOCKED_FIELDS`: an update that
    changes one is answered 400 in its EndpointItemResponse, and its events are stored
    all the same; the report's `locked` names them."""
    results, rows, rejected = checked.results, checked.rows, checked.rejected
    outcome = await storage.put_events(
        app_id,
        checked.updates,
        rows,
        merge=partial(endpoints.merge, app_id, now=format_timestamp(checked.now)),
        max_event_types=limits.MAX_EVENT_TYPES_PER_APP,
        max_user_endpoints=limits.MAX_ENDPOINTS_PER_USER,
        summary=checked.summary,
        device=proof,
    )
    for endpoint_id, message in outcome.endpoint_errors.items():
        results[endpoint_id]["EndpointItemResponse"] = _rejected(message)
    accepted = len(rows)
    if outcome.rejected_types:
        for row in rows:
            if row.event_type in outcome.rejected_types:
                results[row.endpoint_id]["EventsItemResponse"][row.event_id] = _rejected(
                    f"EventType: {row.event_type!r} is new and the application already has "
                    f"{limits.MAX_EVENT_TYPES_PER_APP} event types, the limit"
                )
                accepted -= 1
                rejected += 1
    return IngestReport(
        {"Results": results}, accepted=accepted, rejected=rejected, locked=outcome.locked
    )
