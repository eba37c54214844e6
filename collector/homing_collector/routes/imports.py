"""Pinpoint's import jobs: CreateImportJob, GetImportJob(s), GetSegmentImportJobs; and
Homing's upload route, which takes the file as the request body, streamed to a temporary
file beside the database, never held in memory."""

from __future__ import annotations

import hashlib
import tempfile
from typing import IO, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import WireError, whole_number
from homing_collector.auth import verify_signature
from homing_collector.campaigns import import_jobs
from homing_collector.campaigns.decode import convert
from homing_collector.errors import PinpointError, bad_request, not_found
from homing_collector.models.imports import (
    ImportJobRequest,
    ImportJobResource,
    ImportJobResponse,
    ImportJobsResponse,
    UploadQuery,
)
from homing_collector.routes._common import Call, admit, begin, storage
from homing_collector.settings import Settings
from homing_collector.storage.base import ImportJobRecord, Storage
from homing_collector.validation import check_query


def check_job(payload: Any) -> ImportJobRequest:
    try:
        return convert(payload, ImportJobRequest)
    except WireError as exc:
        raise bad_request(str(exc)) from None


def job_response(record: ImportJobRecord) -> ImportJobResponse:
    return ImportJobResponse(
        ApplicationId=record.app_id,
        CreationDate=record.created_at,
        Definition=msgspec.json.decode(record.definition, type=ImportJobResource),
        Id=record.id,
        JobStatus=record.status,  # type: ignore[arg-type]
        Type="IMPORT",
        CompletedPieces=record.completed_pieces,
        CompletionDate=record.completed_at,
        FailedPieces=record.failed_pieces,
        Failures=record.failures or None,
        TotalFailures=record.total_failures,
        TotalPieces=record.total_pieces,
        TotalProcessed=record.total_processed,
    )


async def create_import_job(request: Request) -> Response:
    call = await begin(request)
    job_request: ImportJobRequest = call.checked
    plan = await _plan(call.storage, call.app_id, job_request)
    settings: Settings = request.app.state.settings
    try:
        path = import_jobs.local_file(job_request.S3Url, settings.import_dir, call.app_id)
        file: IO[bytes] = path.open("rb")
    except WireError as exc:
        raise bad_request(str(exc)) from None
    except OSError as exc:
        raise bad_request(f"S3Url: cannot be read ({exc.strerror})") from None
    return await _start(request, call.storage, call.app_id, plan, file, path.stat().st_size)


async def upload_import_job(request: Request) -> Response:
    _, signature, app_id, _ = await admit(request)
    store = storage(request)
    plan: import_jobs.Plan | None = None
    try:
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise bad_request(
                f"Content-Encoding {encoding!r}: send the file as it is, not compressed"
            )
        length = whole_number(request.headers.get("content-length"), max_digits=30)
        if length is not None and length > import_jobs.MAX_IMPORT_BYTES:
            raise _too_large()
        # A SigV4 signature covers the body, so that only after it has been read may the
        # query be judged; a bearer token is known good already.
        if signature is None:
            plan = await _upload_plan(store, app_id or "", request)
    except PinpointError as exc:
        exc.body_unread = True
        raise
    settings: Settings = request.app.state.settings
    # Unnamed, beside the database rather than in a temporary directory that may be
    # memory: the file is gone once closed, or if the process dies. On PostgreSQL there
    # is no database file: the system's temporary directory.
    spool_dir = None if settings.db_url else settings.db_path.parent
    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
    try:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > import_jobs.MAX_IMPORT_BYTES:
                raise _too_large()
            digest.update(chunk)
            spool.write(chunk)
        if signature is not None:
            verify_signature(request, signature, b"", payload_hash=digest.hexdigest())
            plan = await _upload_plan(store, app_id or "", request)
        if size == 0:
            raise bad_request("The body is empty: send the import file as the request body")
        spool.flush()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    assert plan is not None
    return await _start(request, store, app_id or "", plan, spool, size)


async def _upload_plan(store: Storage, app_id: str, request: Request) -> import_jobs.Plan:
    query: UploadQuery = check_query(request.query_params, UploadQuery)
    return await _plan(
        store,
        app_id,
        ImportJobRequest(
            Format=query.format,
            S3Url=f"upload://{query.file_name or 'body'}",
            RoleArn="",
            DefineSegment=query.define_segment is not False,
            RegisterEndpoints=query.register_endpoints,
            SegmentId=query.segment_id,
            SegmentName=query.segment_name,
        ),
    )


async def get_import_job(request: Request) -> Response:
    call = await begin(request)
    job_id: str = request.path_params["job_id"]
    record = await call.storage.get_import_job(call.app_id, job_id)
    if record is None:
        raise not_found(f"Import job {job_id} does not exist in application {call.app_id}")
    await import_jobs.fail_abandoned(call.storage, [record])
    return _answer(job_response(record))


async def get_import_jobs(request: Request) -> Response:
    call = await begin(request)
    return await _page(call, None)


async def get_segment_import_jobs(request: Request) -> Response:
    call = await begin(request)
    segment_id: str = request.path_params["segment_id"]
    if await call.storage.get_segment(call.app_id, segment_id) is None:
        raise not_found(f"Segment {segment_id} does not exist in application {call.app_id}")
    return await _page(call, segment_id)


async def _plan(store: Storage, app_id: str, request: ImportJobRequest) -> import_jobs.Plan:
    try:
        return await import_jobs.plan(store, app_id, request)
    except WireError as exc:
        raise bad_request(str(exc)) from None


async def _start(
    request: Request,
    store: Storage,
    app_id: str,
    plan: import_jobs.Plan,
    file: IO[bytes],
    size: int,
) -> Response:
    try:
        job = import_jobs.new_job(app_id, plan, size)
        await store.create_import_job(job)
        response = job_response(job)  # as created: the job runs on from here
    except BaseException:
        file.close()
        raise
    runner: import_jobs.ImportRunner = request.app.state.imports
    runner.submit(job, plan, file)
    return _answer(response, 201)


async def _page(call: Call, segment_id: str | None) -> Response:
    size: int = call.checked
    records = await call.storage.list_import_jobs(
        call.app_id,
        segment_id=segment_id,
        after=call.request.query_params.get("token"),
        limit=size + 1,
    )
    await import_jobs.fail_abandoned(call.storage, records[:size])
    body = ImportJobsResponse(Item=[job_response(record) for record in records[:size]])
    if len(records) > size:
        body.NextToken = records[size - 1].id
    return _answer(body)


def _too_large() -> PinpointError:
    error = PinpointError(
        413, f"The import file is larger than {import_jobs.MAX_IMPORT_BYTES} bytes, the limit"
    )
    error.body_unread = True
    return error


def _answer(body: Any, status_code: int = 200) -> Response:
    return Response(
        msgspec.json.encode(body), status_code=status_code, media_type="application/json"
    )
