"""A stored segment's endpoints: its definition, with the source segments it is based on
resolved through their stored versions, compiled once and run over the application's
endpoints one chunk at a time. No SQL: it reads through the storage protocol, so the
scheduler can call it on any backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from homing_collector.storage.base import Endpoint, SegmentRecord, Storage

from .decode import decode
from .imported import ImportedSegment, imported
from .segments import Predicate, compile_segment, member_of
from .shapes import WriteSegmentRequest

CHUNK = 1000  # endpoints read at a time


class SegmentResolutionError(LookupError):
    """A segment, or a source segment it is based on, is missing, or the sources lead back
    to where they started."""


Key = tuple[str, int | None]  # (segment id, version; None: the latest)


async def segment_predicate(
    storage: Storage, app_id: str, segment_id: str, version: int | None = None, *, now: datetime
) -> Predicate:
    """The membership test of a stored segment version (the latest when `version` is None),
    as of `now`. Raises `SegmentResolutionError`."""
    definitions, members = await _load(storage, app_id, (segment_id, version))
    compiled: dict[Key, Predicate] = {key: member_of(ids) for key, ids in members.items()}
    in_progress: set[Key] = set()

    def compile_key(key: Key) -> Predicate:
        if key in compiled:
            return compiled[key]
        if key in in_progress:
            raise SegmentResolutionError(f"segment {key[0]} is based on itself")
        in_progress.add(key)
        request = definitions[key]
        predicate = compile_segment(
            request.Dimensions,
            request.SegmentGroups,
            now=now,
            sources=lambda ref_id, ref_version: compile_key((ref_id, ref_version)),
        )
        in_progress.discard(key)
        compiled[key] = predicate
        return predicate

    return compile_key((segment_id, version))


async def segment_endpoints(
    storage: Storage,
    app_id: str,
    segment_id: str,
    version: int | None = None,
    *,
    now: datetime,
    chunk: int = CHUNK,
) -> AsyncIterator[Endpoint]:
    """The endpoints in the segment, by id, each with its `Id`; at most `chunk` endpoints
    are held at a time."""
    record = await storage.get_segment(app_id, segment_id, version)
    imported_as = imported(record) if record is not None else None
    if imported_as is not None:
        async for endpoint in imported_endpoints(storage, app_id, imported_as, chunk=chunk):
            yield endpoint
        return
    member = await segment_predicate(storage, app_id, segment_id, version, now=now)
    after: str | None = None
    while True:
        rows = await storage.endpoints_after(app_id, after=after, limit=chunk)
        for endpoint_id, endpoint in rows:
            endpoint["Id"] = endpoint_id
            if member(endpoint):
                yield endpoint
        if len(rows) < chunk:
            return
        after = rows[-1][0]


async def imported_endpoints(
    storage: Storage, app_id: str, segment: ImportedSegment, *, chunk: int = CHUNK
) -> AsyncIterator[Endpoint]:
    """The stored endpoints among an imported segment's members, by id, each with its
    `Id`: a member imported without RegisterEndpoints, or deleted since, has none."""
    after: str | None = None
    while True:
        ids = await storage.import_members_after(
            app_id, segment.ImportJobId, after=after, limit=chunk
        )
        found = await storage.get_endpoints(app_id, ids)
        for endpoint_id in ids:
            endpoint = found.get(endpoint_id)
            if endpoint is not None:
                endpoint["Id"] = endpoint_id
                yield endpoint
        if len(ids) < chunk:
            return
        after = ids[-1]


def definition(record: SegmentRecord) -> WriteSegmentRequest:
    """The request a stored version was made from."""
    return decode(record.request, WriteSegmentRequest)


async def _load(
    storage: Storage, app_id: str, root: Key
) -> tuple[dict[Key, WriteSegmentRequest], dict[Key, frozenset[str]]]:
    """Every definition reachable from `root`, each read once; a key seen twice is not
    read again, so a cycle ends the walk (and `segment_predicate` reports it). An imported
    segment is given by its members' ids instead, all of them in memory."""
    found: dict[Key, WriteSegmentRequest] = {}
    members: dict[Key, frozenset[str]] = {}
    pending = [root]
    while pending:
        key = pending.pop()
        if key in found:
            continue
        record = await storage.get_segment(app_id, key[0], key[1])
        if record is None:
            which = f"version {key[1]} of segment {key[0]}" if key[1] else f"segment {key[0]}"
            raise SegmentResolutionError(f"{which} does not exist")
        imported_as = imported(record)
        if imported_as is not None:
            members[key] = await _member_ids(storage, app_id, imported_as)
            found[key] = WriteSegmentRequest()
            continue
        request = found[key] = definition(record)
        for group in (request.SegmentGroups.Groups or []) if request.SegmentGroups else []:
            pending += [(ref.Id, ref.Version) for ref in group.SourceSegments or []]
    return found, members


async def _member_ids(storage: Storage, app_id: str, segment: ImportedSegment) -> frozenset[str]:
    ids: list[str] = []
    while True:
        page = await storage.import_members_after(
            app_id, segment.ImportJobId, after=ids[-1] if ids else None, limit=CHUNK * 10
        )
        ids += page
        if len(page) < CHUNK * 10:
            return frozenset(ids)
