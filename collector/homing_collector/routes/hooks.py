"""Event streams (PutEventStream, GetEventStream, DeleteEventStream) and Homing's own
hook routes: the application's signing secrets and its dead letters."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import whole_number
from homing_collector.errors import bad_request, not_found
from homing_collector.hooks.errors import HookConfigError
from homing_collector.hooks.outbox import Outbox, now_text
from homing_collector.hooks.signing import new_secret
from homing_collector.hooks.streams import check_destination
from homing_collector.models import hooks as h
from homing_collector.routes._common import begin
from homing_collector.settings import Settings
from homing_collector.storage.base import EventStreamRecord, HookSecrets

DEFAULT_PAGE_SIZE = 100


def _encode(body: Any) -> Response:
    return Response(msgspec.json.encode(body), media_type="application/json")


def _outbox(request: Request) -> Outbox:
    return request.app.state.outbox  # type: ignore[no-any-return]


# -- event streams -------------------------------------------------------------------------


def check_write_stream(payload: Any) -> None:
    if type(payload) is not dict:
        raise bad_request("The body must be a WriteEventStream object")
    for name in ("DestinationStreamArn", "RoleArn"):
        if type(payload.get(name)) is not str:
            raise bad_request(f"{name}: is required and must be a string")


def stream_response(record: EventStreamRecord) -> Response:
    return _encode(
        h.EventStream(
            ApplicationId=record.app_id,
            DestinationStreamArn=record.destination,
            RoleArn=record.role_arn,
            LastModifiedDate=record.last_modified,
            LastUpdatedBy=record.last_updated_by,
        )
    )


async def put_event_stream(request: Request) -> Response:
    call = await begin(request)
    settings: Settings = request.app.state.settings
    allowed = [settings.stream_dir] if settings.stream_dir is not None else []
    try:
        destination = check_destination(
            call.payload["DestinationStreamArn"], allowed, allow_http=settings.hooks_allow_http
        )
    except HookConfigError as exc:
        raise bad_request(str(exc)) from None
    record = await call.storage.put_event_stream(
        call.app_id, destination, call.payload["RoleArn"], now_text(),
        call.principal.access_key_id,
    )  # fmt: skip
    # The first call it gets is signed: make the secret now, so the admin can read it.
    await call.storage.hook_secrets(call.app_id, create=new_secret(), now=now_text())
    return stream_response(record)


async def get_event_stream(request: Request) -> Response:
    call = await begin(request)
    record = await call.storage.get_event_stream(call.app_id)
    if record is None:
        raise not_found(f"Application {call.app_id} has no event stream")
    return stream_response(record)


async def delete_event_stream(request: Request) -> Response:
    call = await begin(request)
    record = await call.storage.delete_event_stream(call.app_id)
    if record is None:
        raise not_found(f"Application {call.app_id} has no event stream")
    return stream_response(record)


# -- signing secrets -----------------------------------------------------------------------


def secrets_response(app_id: str, found: HookSecrets) -> Response:
    return _encode(
        h.HookSecretsResponse(
            ApplicationId=app_id,
            Secret=found.current,
            PreviousSecret=found.previous,
            RotatedDate=found.rotated_at,
        )
    )


async def get_secrets(request: Request) -> Response:
    call = await begin(request)
    found = await call.storage.hook_secrets(call.app_id, create=new_secret(), now=now_text())
    assert found is not None
    return secrets_response(call.app_id, found)


async def rotate_secrets(request: Request) -> Response:
    call = await begin(request)
    found = await call.storage.rotate_hook_secrets(call.app_id, new_secret(), now_text())
    _outbox(request).forget_keys(call.app_id)
    return secrets_response(call.app_id, found)


async def end_rotation(request: Request) -> Response:
    call = await begin(request)
    found = await call.storage.end_hook_rotation(call.app_id)
    if found is None:
        found = await call.storage.hook_secrets(call.app_id, create=new_secret(), now=now_text())
        assert found is not None
    _outbox(request).forget_keys(call.app_id)
    return secrets_response(call.app_id, found)


# -- dead letters --------------------------------------------------------------------------


def check_page(query: QueryParams) -> int:
    size = whole_number(query.get("page-size", str(DEFAULT_PAGE_SIZE)))
    if size is None or not 1 <= size <= h.MAX_PAGE_SIZE:
        raise bad_request(f"page-size: must be a whole number from 1 to {h.MAX_PAGE_SIZE}")
    return size


def _date(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def list_dead_letters(request: Request) -> Response:
    call = await begin(request)
    size: int = call.checked
    token = request.query_params.get("token")
    after = int(token) if token else 0
    found = await call.storage.dead_letters(call.app_id, after=after, limit=size + 1)
    items = [
        h.DeadLetter(
            Id=d.id,
            Destination=d.destination,
            Attempts=d.attempts,
            CreationDate=_date(d.created_at) or "",
            DeadLetterDate=_date(d.dead_at) or "",
            FirstAttemptDate=_date(d.first_attempt_at),
            LastError=d.last_error,
        )
        for d in found[:size]
    ]
    next_token = str(found[size - 1].seq) if len(found) > size else None
    return _encode(h.DeadLettersResponse(Item=items, NextToken=next_token))


async def replay_dead_letter(request: Request) -> Response:
    call = await begin(request)
    delivery_id = request.path_params["delivery_id"]
    outbox = _outbox(request)
    count = await call.storage.replay_dead_letters(call.app_id, [delivery_id], outbox.clock())
    if count == 0:
        raise not_found(f"Application {call.app_id} has no dead letter {delivery_id}")
    outbox.wake()
    return _encode(h.ReplayResponse(count))


async def replay_dead_letters(request: Request) -> Response:
    call = await begin(request)
    outbox = _outbox(request)
    count = await call.storage.replay_dead_letters(call.app_id, None, outbox.clock())
    outbox.wake()
    return _encode(h.ReplayResponse(count))
