"""An imported segment's stored version: its name, Pinpoint's `ImportDefinition`, and the
import job whose endpoint ids are its members. A dimensional version stores a
WriteSegmentRequest instead; `imported` tells the two apart."""

from __future__ import annotations

import msgspec

from homing_collector.models.imports import SegmentImportResource
from homing_collector.storage.base import SegmentRecord


class ImportedSegment(msgspec.Struct, omit_defaults=True, kw_only=True):
    ImportDefinition: SegmentImportResource
    ImportJobId: str  # the members are the endpoint ids this job imported
    Name: str | None = None


def imported(record: SegmentRecord) -> ImportedSegment | None:
    """The version's import, if it is a version of an imported segment."""
    # A cheap test first: most versions are dimensional, and hold no such key anywhere.
    if '"ImportDefinition"' not in record.request:
        return None
    data = msgspec.json.decode(record.request)
    if "ImportDefinition" not in data:
        return None  # a dimensional one, with an attribute of that name
    return msgspec.convert(data, ImportedSegment)


def stored(segment: ImportedSegment) -> str:
    return msgspec.json.encode(segment).decode()
