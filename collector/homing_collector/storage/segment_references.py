"""The rules of the source segments a segment's request names, apart from any database.

Each reference names a stored segment (and version), and none leads back to the latest
version of the segment being written: that would be a cycle. `reference_checks` is a
generator that asks its backend for each stored version it needs: it yields
(segment id, version or None for the latest) and is sent the stored record or None. It
raises `SegmentReferenceError` for the first reference that breaks a rule.

Stored versions were checked the same way when written, so the graph behind them has no
cycle of its own; the walk still keeps a set of what it saw.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence

import orjson

from homing_collector.storage.base import SegmentRecord, SegmentReference, SegmentReferenceError

Lookup = tuple[str, int | None]  # (segment id, version or None for the latest)
Checks = Generator[Lookup, SegmentRecord | None, None]


def reference_checks(segment_id: str, references: Sequence[SegmentReference]) -> Checks:
    for ref in references:
        if ref.id == segment_id and ref.version is None:
            raise SegmentReferenceError(
                ref.field + ".Id", "a segment cannot be based on its own latest version"
            )
        found = yield ref.id, ref.version
        if found is None:
            if ref.version is not None and (yield ref.id, None) is not None:
                raise SegmentReferenceError(
                    ref.field + ".Version", f"segment {ref.id} has no version {ref.version}"
                )
            raise SegmentReferenceError(
                ref.field + ".Id", f"segment {ref.id} does not exist in this application"
            )
        if (yield from _reaches(found, segment_id)):
            raise SegmentReferenceError(
                ref.field + ".Id",
                f"segment {ref.id} is based on the latest version of segment {segment_id},"
                " so this would be a cycle",
            )


def _reaches(start: SegmentRecord, target: str) -> Generator[Lookup, SegmentRecord | None, bool]:
    seen: set[Lookup] = set()
    stack = [start]
    while stack:
        record = stack.pop()
        for ref_id, ref_version in source_segments(record.request):
            if ref_id == target and ref_version is None:
                return True
            if (ref_id, ref_version) in seen:
                continue
            seen.add((ref_id, ref_version))
            found = yield ref_id, ref_version
            if found is not None:
                stack.append(found)
    return False


def source_segments(request: str) -> Iterator[Lookup]:
    """The (id, version) of each source segment a stored request names."""
    groups = (orjson.loads(request).get("SegmentGroups") or {}).get("Groups") or []
    for group in groups:
        for ref in group.get("SourceSegments") or []:
            yield ref["Id"], ref.get("Version")
