"""Import jobs: what a job will do (`plan`), where its file may come from (`local_file`),
and running it (`run`) through the storage protocol, a batch of rows at a time.

As in Pinpoint, a job goes CREATED, INITIALIZING, PROCESSING, COMPLETING, then COMPLETED,
or FAILED when its file cannot be read or the segment it defines would be empty. Rows
that break a rule are counted in `TotalFailures`, the first 100 messages kept in
`Failures`; they do not fail the job. A piece is `PIECE_BYTES` of the file.

A job runs in the process that took it. One left unfinished by a process that is gone (a
crash, a kill -9, a power cut) is marked FAILED when a collector starts or the job is
read (`fail_abandoned`): its file, an upload, went with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

import msgspec

from homing import limits
from homing.wire import WireError, format_timestamp
from homing_collector import endpoints
from homing_collector.models.imports import (
    ImportJobRequest,
    ImportJobResource,
    SegmentImportResource,
)
from homing_collector.storage.base import (
    ApplicationGone,
    ImportJobRecord,
    SegmentRecord,
    SegmentReferenceError,
    Storage,
)

from .import_files import ImportFileError, ImportReader
from .imported import ImportedSegment, imported, stored

logger = logging.getLogger("homing_collector")

PIECE_BYTES = 8 << 20
BATCH_ROWS = 500
MAX_FAILURES = 100  # messages kept, as Pinpoint keeps the first 100
MAX_IMPORT_BYTES = 1 << 30  # Pinpoint: 1 GB per import job
SAVE_EVERY = 0.5  # seconds between two saves of a running job's progress
STALE_AFTER_MS = 120_000  # a job of another host that has not been saved for this long
UPLOAD_HINT = (
    "upload the file with POST /v1/apps/{app}/jobs/import-upload?format=CSV (or JSON), or "
    "with: homing-collector segments import {app} FILE"
)
ABANDONED = "the collector stopped while the job ran; import the file again"
TERMINAL = ("COMPLETED", "FAILED")


@dataclass(frozen=True)
class Plan:
    resource: ImportJobResource
    register: bool
    segment: SegmentRecord | None  # the segment the job makes a new version of
    define: bool  # a new segment


async def plan(storage: Storage, app_id: str, request: ImportJobRequest) -> Plan:
    """What the job will do; raises `WireError` naming the member that makes it wrong.

    RegisterEndpoints left out means true, and DefineSegment left out means true when a
    SegmentName is given: what Pinpoint's console does."""
    register = request.RegisterEndpoints is not False
    define = request.DefineSegment or (
        request.DefineSegment is None and request.SegmentName is not None
    )
    segment = None
    if request.SegmentId is not None:
        segment = await storage.get_segment(app_id, request.SegmentId)
        if segment is None:
            raise WireError(
                "SegmentId", f"segment {request.SegmentId} does not exist in this application"
            )
        if imported(segment) is None:
            raise WireError(
                "SegmentId",
                f"segment {request.SegmentId} is dimensional; an import can only make a new "
                "version of an imported segment (leave SegmentId out to define a new one)",
            )
        define = False
    if not (register or define or segment):
        raise WireError(
            "RegisterEndpoints",
            "is false, and neither DefineSegment nor SegmentId is given: the job would do nothing",
        )
    resource = msgspec.convert(msgspec.to_builtins(request), ImportJobResource)
    return Plan(resource, register, segment, bool(define))


def local_file(url: str, allowed: Path | None, app_id: str) -> Path:
    """The file a file:// S3Url names, if it lies in the directory the operator allowed;
    raises `WireError` that says how to upload instead."""
    hint = UPLOAD_HINT.format(app=app_id)
    if not url.startswith("file://"):
        raise WireError("S3Url", f"Homing reads no S3 or other URLs: {hint}")
    if allowed is None:
        raise WireError(
            "S3Url",
            "file:// URLs are refused: the collector was started without --import-dir "
            f"(HOMING_IMPORT_DIR), the directory it may read them from; {hint}",
        )
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
        raise WireError("S3Url", f"must be file:///PATH, a path on the collector's host; {hint}")
    try:
        path = Path(unquote(parsed.path, errors="strict")).resolve()
        inside = path.is_relative_to(allowed.resolve())
        kind = "directory" if path.is_dir() else "file" if path.is_file() else None
        size = path.stat().st_size if kind == "file" and inside else 0
    except (OSError, ValueError) as exc:  # a NUL or undecodable bytes in the path, ...
        raise WireError("S3Url", f"cannot be read ({exc}); {hint}") from None
    if not inside:
        raise WireError("S3Url", f"names a file outside the import directory; {hint}")
    if kind == "directory":
        raise WireError("S3Url", "names a directory; name one file in it")
    if kind is None:
        raise WireError("S3Url", f"no file {unquote(parsed.path)!r} in the import directory")
    if size > MAX_IMPORT_BYTES:
        raise WireError("S3Url", f"the file is {size} bytes; the limit is {MAX_IMPORT_BYTES}")
    return path


def new_job(app_id: str, plan: Plan, size: int) -> ImportJobRecord:
    # Ids sort by creation time, so that listing by id lists oldest first.
    job_id = f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"
    return ImportJobRecord(
        app_id=app_id,
        id=job_id,
        created_at=format_timestamp(time.time()),
        definition=msgspec.json.encode(plan.resource).decode(),
        status="CREATED",
        total_pieces=max(1, math.ceil(size / PIECE_BYTES)),
        segment_id=plan.segment.id if plan.segment else None,
        owner=owner(),
        heartbeat=_now_ms(),
    )


def owner() -> str:
    """This process, as a job's owner: the host and the process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def run(storage: Storage, job: ImportJobRecord, plan: Plan, file: IO[bytes]) -> None:
    """Import `file` for `job`, then close it. The job ends COMPLETED or FAILED, whatever
    happens, unless the process itself ends first."""
    try:
        await _run(storage, job, plan, file)
    except asyncio.CancelledError:
        await _fail(storage, job, ABANDONED)
        raise
    except ApplicationGone:
        pass  # and its jobs with it
    except Exception as exc:
        logger.exception("Import job %s failed", job.id)
        with contextlib.suppress(Exception):
            await _fail(storage, job, f"the collector could not finish the job ({exc})")
    finally:
        file.close()


async def _run(storage: Storage, job: ImportJobRecord, plan: Plan, file: IO[bytes]) -> None:
    job.status = "INITIALIZING"  # until the first rows (and a CSV's header) are read
    await _save(storage, job)
    reader = ImportReader(file, plan.resource.Format)
    merge = partial(endpoints.merge, job.app_id, now=format_timestamp(time.time()))
    saved = time.monotonic()
    done = False
    while not done:
        # One batch at a time: reading the next while this one is stored was slower
        # (bench/segment_import.py), as both threads want the GIL most of the time.
        try:
            good, bad, done = await asyncio.to_thread(reader.batch, BATCH_ROWS)
        except (ImportFileError, OSError) as exc:
            await _fail(storage, job, str(exc))
            return
        refused = await storage.import_endpoints(
            job.app_id,
            job.id,
            good,
            merge=merge,
            max_user_endpoints=limits.MAX_ENDPOINTS_PER_USER,
            register=plan.register,
            members=plan.define or plan.segment is not None,
        ) if good else []  # fmt: skip
        failures = bad + [f"row {row.row}: {message}" for row, message in refused]
        job.total_processed += len(good) + len(bad)
        job.total_failures += len(failures)
        job.failures += failures[: max(0, MAX_FAILURES - len(job.failures))]
        job.completed_pieces = min(job.total_pieces - 1, reader.position // PIECE_BYTES)
        if job.status == "INITIALIZING":
            job.status = "PROCESSING"
            saved = 0.0
        if done or time.monotonic() - saved >= SAVE_EVERY:
            await _save(storage, job)
            saved = time.monotonic()
    job.status = "COMPLETING"
    await _save(storage, job)
    await _finish(storage, job, plan)


async def _finish(storage: Storage, job: ImportJobRecord, plan: Plan) -> None:
    segment = None
    if plan.define or plan.segment is not None:
        counts = await storage.import_member_counts(job.app_id, job.id)
        size = sum(counts.values())
        if size == 0:
            await _fail(storage, job, "no endpoint definition was imported, so no segment")
            return
        segment = _segment(job, plan, size, counts)
        job.segment_id = segment.id
    job.status = "COMPLETED"
    job.completed_pieces = job.total_pieces
    job.completed_at = format_timestamp(time.time())
    try:
        await storage.finish_import_job(job, segment)
    except SegmentReferenceError as exc:
        await _fail(storage, job, str(exc))


def _segment(job: ImportJobRecord, plan: Plan, size: int, counts: dict[str, int]) -> SegmentRecord:
    resource = plan.resource
    definition = SegmentImportResource(
        ExternalId=resource.ExternalId or "",
        Format=resource.Format,
        RoleArn=resource.RoleArn,
        S3Url=resource.S3Url,
        Size=size,
        ChannelCounts={channel: n for channel, n in counts.items() if channel},
    )
    now = format_timestamp(time.time())
    if plan.segment is not None:
        name = resource.SegmentName
        if name is None:
            previous = imported(plan.segment)
            name = previous.Name if previous else None
        request = ImportedSegment(ImportDefinition=definition, ImportJobId=job.id, Name=name)
        # Any version above 1: storage adds the next one.
        return SegmentRecord(
            job.app_id, plan.segment.id, plan.segment.version + 1, plan.segment.created_at,
            now, stored(request),
        )  # fmt: skip
    request = ImportedSegment(
        ImportDefinition=definition, ImportJobId=job.id, Name=resource.SegmentName
    )
    return SegmentRecord(job.app_id, uuid.uuid4().hex, 1, now, now, stored(request))


async def fail_abandoned(storage: Storage, jobs: list[ImportJobRecord] | None = None) -> None:
    """Mark FAILED each unfinished job (of `jobs`, else of all) whose process is gone."""
    if jobs is None:
        jobs = await storage.unfinished_import_jobs()
    for job in jobs:
        if job.status not in TERMINAL and abandoned(job):
            await _fail(storage, job, ABANDONED)


def abandoned(job: ImportJobRecord) -> bool:
    host, _, pid = job.owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass  # alive, someone else's: only the heartbeat can tell
    return _now_ms() - job.heartbeat > STALE_AFTER_MS


async def _fail(storage: Storage, job: ImportJobRecord, message: str) -> None:
    job.status = "FAILED"
    job.failed_pieces = job.total_pieces - job.completed_pieces
    job.completed_at = format_timestamp(time.time())
    if len(job.failures) < MAX_FAILURES:
        job.failures.append(message)
    await _save(storage, job)


async def _save(storage: Storage, job: ImportJobRecord) -> None:
    job.heartbeat = _now_ms()
    await storage.save_import_job(job)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ImportRunner:
    """The import jobs running in this process, in the background."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await fail_abandoned(self.storage)

    def submit(self, job: ImportJobRecord, plan: Plan, file: IO[bytes]) -> None:
        task = asyncio.create_task(run(self.storage, job, plan, file))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop the jobs still running; each is marked FAILED (its file goes too)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
