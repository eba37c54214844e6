"""Pinpoint's segment operations: CreateSegment, GetSegment(s), UpdateSegment,
DeleteSegment, GetSegmentVersion(s). Every write stores a new version."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import WireError, whole_number
from homing_collector.campaigns.decode import convert
from homing_collector.campaigns.imported import imported
from homing_collector.campaigns.imported import stored as stored_import
from homing_collector.campaigns.resolve import definition
from homing_collector.campaigns.shapes import WriteSegmentRequest
from homing_collector.errors import bad_request, not_found
from homing_collector.models.segments import MAX_PAGE_SIZE, SegmentResponse, SegmentsResponse
from homing_collector.routes._common import Call, begin
from homing_collector.routes.apps import ARN_PREFIX
from homing_collector.storage.base import SegmentRecord, SegmentReference, SegmentReferenceError

DEFAULT_PAGE_SIZE = 100


def check_segment(payload: Any) -> WriteSegmentRequest:
    try:
        return convert(payload, WriteSegmentRequest)
    except WireError as exc:
        raise bad_request(str(exc)) from None


def check_page(query: QueryParams) -> int:
    size = whole_number(query.get("page-size", str(DEFAULT_PAGE_SIZE)))
    if size is None or not 1 <= size <= MAX_PAGE_SIZE:
        raise bad_request(f"page-size: must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return size


def segment_response(record: SegmentRecord) -> SegmentResponse:
    imported_as = imported(record)
    if imported_as is not None:
        return SegmentResponse(
            ApplicationId=record.app_id,
            Arn=f"{ARN_PREFIX}{record.app_id}/segments/{record.id}",
            CreationDate=record.created_at,
            Id=record.id,
            SegmentType="IMPORT",
            Version=record.version,
            LastModifiedDate=record.modified_at,
            tags=record.tags,
            Name=imported_as.Name,
            ImportDefinition=imported_as.ImportDefinition,
        )
    request = definition(record)
    return SegmentResponse(
        ApplicationId=record.app_id,
        Arn=f"{ARN_PREFIX}{record.app_id}/segments/{record.id}",
        CreationDate=record.created_at,
        Id=record.id,
        SegmentType="DIMENSIONAL",
        Version=record.version,
        LastModifiedDate=record.modified_at,
        tags=record.tags,
        Name=request.Name,
        Dimensions=request.Dimensions,
        SegmentGroups=request.SegmentGroups,
    )


def references(request: WriteSegmentRequest) -> list[SegmentReference]:
    """Each distinct source segment the request names, where it first names it: the
    storage checks each one, so a body that repeats one reference many times costs one
    check."""
    groups = (request.SegmentGroups.Groups or []) if request.SegmentGroups else []
    found: dict[tuple[str, int | None], SegmentReference] = {}
    for g, group in enumerate(groups):
        for s, ref in enumerate(group.SourceSegments or []):
            field = f"SegmentGroups.Groups[{g}].SourceSegments[{s}]"
            found.setdefault((ref.Id, ref.Version), SegmentReference(field, ref.Id, ref.Version))
    return list(found.values())


async def create_segment(request: Request) -> Response:
    call = await begin(request)
    segment: WriteSegmentRequest = call.checked
    now = _now()
    record = SegmentRecord(
        app_id=call.app_id,
        id=uuid.uuid4().hex,
        version=1,
        created_at=now,
        modified_at=now,
        request=_stored(segment),
        tags=segment.tags or {},
    )
    try:
        await call.storage.create_segment(record, references(segment))
    except SegmentReferenceError as exc:
        raise bad_request(str(exc)) from None
    return _answer(segment_response(record), 201)


async def update_segment(request: Request) -> Response:
    call = await begin(request)
    segment_id = _segment_id(request)
    segment: WriteSegmentRequest = call.checked
    # As in Pinpoint, tags are not changed by an update (the model deprecates them there).
    stored = _stored(segment)
    latest = await call.storage.get_segment(call.app_id, segment_id)
    imported_as = imported(latest) if latest is not None else None
    if imported_as is not None:
        # An imported segment keeps its members (another import replaces them); an update
        # may rename it.
        if segment.Dimensions is not None or segment.SegmentGroups is not None:
            raise bad_request(
                "Dimensions: an imported segment's endpoints come from its import; to filter "
                "them, create a segment with it as a SourceSegments entry"
            )
        stored = stored_import(msgspec.structs.replace(imported_as, Name=segment.Name))
    try:
        record = await call.storage.update_segment(
            call.app_id, segment_id, stored, _now(), references(segment)
        )
    except SegmentReferenceError as exc:
        raise bad_request(str(exc)) from None
    return _answer(segment_response(_found(call, segment_id, record)))


async def get_segment(request: Request) -> Response:
    call = await begin(request)
    segment_id = _segment_id(request)
    record = await call.storage.get_segment(call.app_id, segment_id)
    return _answer(segment_response(_found(call, segment_id, record)))


async def get_segment_version(request: Request) -> Response:
    call = await begin(request)
    segment_id = _segment_id(request)
    version = whole_number(request.path_params["version"], 9)
    if version is None or version < 1:
        raise bad_request("version: must be a whole number from 1")
    record = await call.storage.get_segment(call.app_id, segment_id, version)
    if record is None and await call.storage.get_segment(call.app_id, segment_id) is not None:
        raise not_found(f"Segment {segment_id} has no version {version}")
    return _answer(segment_response(_found(call, segment_id, record)))


async def get_segments(request: Request) -> Response:
    call = await begin(request)
    size: int = call.checked
    records = await call.storage.list_segments(
        call.app_id, after=request.query_params.get("token"), limit=size + 1
    )
    return _page(records, size, lambda record: record.id)


async def get_segment_versions(request: Request) -> Response:
    call = await begin(request)
    segment_id = _segment_id(request)
    size: int = call.checked
    token = request.query_params.get("token")
    after = 0 if token is None else whole_number(token, 9)
    if after is None:
        raise bad_request("token: must be a NextToken from an earlier page")
    records = await call.storage.list_segment_versions(
        call.app_id, segment_id, after=after, limit=size + 1
    )
    if not records and await call.storage.get_segment(call.app_id, segment_id) is None:
        raise not_found(f"Segment {segment_id} does not exist")
    return _page(records, size, lambda record: str(record.version))


async def delete_segment(request: Request) -> Response:
    call = await begin(request)
    segment_id = _segment_id(request)
    record = await call.storage.delete_segment(call.app_id, segment_id)
    return _answer(segment_response(_found(call, segment_id, record)))


def _segment_id(request: Request) -> str:
    # Segment ids are the collector's own: any other string is simply not found.
    return request.path_params["segment_id"]  # type: ignore[no-any-return]


def _found(call: Call, segment_id: str, record: SegmentRecord | None) -> SegmentRecord:
    if record is None:
        raise not_found(f"Segment {segment_id} does not exist in application {call.app_id}")
    return record


def _stored(segment: WriteSegmentRequest) -> str:
    # Tags live beside the versions, not in them.
    return msgspec.json.encode(msgspec.structs.replace(segment, tags=None)).decode()


def _now() -> str:
    now = datetime.now(timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _page(records: list[SegmentRecord], size: int, token: Any) -> Response:
    body = SegmentsResponse(Item=[segment_response(record) for record in records[:size]])
    if len(records) > size:
        body.NextToken = token(records[size - 1])
    return _answer(body)


def _answer(body: Any, status_code: int = 200) -> Response:
    return Response(
        msgspec.json.encode(body), status_code=status_code, media_type="application/json"
    )
