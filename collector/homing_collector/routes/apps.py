from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import whole_number
from homing_collector.errors import bad_request, not_found
from homing_collector.models.apps import MAX_APP_NAME_LENGTH, MAX_PAGE_SIZE
from homing_collector.routes._common import begin, gateway, json
from homing_collector.storage.base import AppRecord

ARN_PREFIX = "arn:aws:mobiletargeting:homing:000000000000:apps/"


def application_response(app: AppRecord) -> dict[str, object]:
    return {
        "Arn": ARN_PREFIX + app.id,
        "Id": app.id,
        "Name": app.name,
        "tags": app.tags,
        "CreationDate": app.created_at,
    }


def new_app(name: object, tags: object = None) -> AppRecord:
    if type(name) is not str or not name.strip():
        raise ValueError("Name: is required and must be a non-empty string")
    if len(name) > MAX_APP_NAME_LENGTH:
        raise ValueError(f"Name: is longer than {MAX_APP_NAME_LENGTH} characters")
    tags = {} if tags is None else tags
    if type(tags) is not dict or any(
        type(key) is not str or type(value) is not str for key, value in tags.items()
    ):
        raise ValueError("tags: must be an object of string -> string")
    now = datetime.now(timezone.utc)
    return AppRecord(
        id=uuid.uuid4().hex,
        name=name,
        created_at=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        tags=tags,
    )


def check_new_app(payload: Any) -> AppRecord:
    payload = payload if type(payload) is dict else {}
    try:
        return new_app(payload.get("Name"), payload.get("tags"))
    except ValueError as exc:
        raise bad_request(str(exc)) from None


async def create_app(request: Request) -> Response:
    call = await begin(request)
    app: AppRecord = call.checked
    await call.storage.create_app(app)
    return json(application_response(app), 201)


async def get_app(request: Request) -> Response:
    call = await begin(request)
    app = await call.storage.get_app(call.app_id)
    assert app is not None  # begin() answered 404 otherwise
    return json(application_response(app))


def check_page(query: QueryParams) -> int:
    size = whole_number(query.get("page-size", "100"))
    if size is None or not 1 <= size <= MAX_PAGE_SIZE:
        raise bad_request(f"page-size: must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return size


async def get_apps(request: Request) -> Response:
    call = await begin(request)
    size: int = call.checked
    apps = await call.storage.list_apps(after=request.query_params.get("token"), limit=size + 1)
    body: dict[str, object] = {"Item": [application_response(app) for app in apps[:size]]}
    if len(apps) > size:
        body["NextToken"] = apps[size - 1].id
    return json(body)


async def delete_app(request: Request) -> Response:
    call = await begin(request)
    app = await call.storage.delete_app(call.app_id)
    if app is None:
        raise not_found(f"Application {call.app_id} does not exist")
    # Its devices' streams end now; those held by other workers, at their next heartbeat.
    gateway(request).close_app(call.app_id)
    return json(application_response(app))
