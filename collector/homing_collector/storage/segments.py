"""SQL of segments and their versions, and of application settings, run by SQLiteStorage
(writes in its writer thread).

A segment is a row in `segments` (its latest version, creation time and tags) and one row
per version in `segment_versions`, holding the request that made it, as JSON. Versions
never change once written: campaigns pin them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from homing_collector.storage.base import (
    Endpoint,
    SegmentRecord,
    SegmentReference,
    SegmentReferenceError,
)
from homing_collector.storage.versioned import Versioned

_COLUMNS = "s.app_id, s.segment_id, v.version, s.created_at, v.created_at, v.request, s.tags"
_VERSIONED = Versioned("segments s", "segment_versions", "segment_id", _COLUMNS)


def create(
    conn: sqlite3.Connection,
    record: SegmentRecord,
    references: Sequence[SegmentReference],
) -> SegmentRecord:
    check_references(conn, record.app_id, record.id, references)
    conn.execute(
        "INSERT INTO segments (app_id, segment_id, version, created_at, tags)"
        " VALUES (?, ?, 1, ?, ?)",
        (record.app_id, record.id, record.created_at, orjson.dumps(record.tags).decode()),
    )
    _add_version(conn, record.app_id, record.id, 1, record.modified_at, record.request)
    return record


def update(
    conn: sqlite3.Connection,
    app_id: str,
    segment_id: str,
    request: str,
    modified_at: str,
    references: Sequence[SegmentReference],
) -> SegmentRecord | None:
    if get(conn, app_id, segment_id, None) is None:
        return None
    check_references(conn, app_id, segment_id, references)
    row = conn.execute(
        "UPDATE segments SET version = version + 1 WHERE app_id = ? AND segment_id = ?"
        " RETURNING version",
        (app_id, segment_id),
    ).fetchone()
    _add_version(conn, app_id, segment_id, row[0], modified_at, request)
    return get(conn, app_id, segment_id, None)


def delete(conn: sqlite3.Connection, app_id: str, segment_id: str) -> SegmentRecord | None:
    record = get(conn, app_id, segment_id, None)
    if record is None:
        return None
    conn.execute(
        "DELETE FROM segment_versions WHERE app_id = ? AND segment_id = ?", (app_id, segment_id)
    )
    conn.execute("DELETE FROM segments WHERE app_id = ? AND segment_id = ?", (app_id, segment_id))
    return record


def delete_app(conn: sqlite3.Connection, app_id: str) -> None:
    """Everything of the application's that the campaign engine keeps."""
    conn.execute("DELETE FROM segment_versions WHERE app_id = ?", (app_id,))
    conn.execute("DELETE FROM segments WHERE app_id = ?", (app_id,))
    conn.execute("DELETE FROM app_settings WHERE app_id = ?", (app_id,))


def get_settings(conn: sqlite3.Connection, app_id: str) -> tuple[str, str] | None:
    """(settings as JSON, when last changed), if the application has any."""
    row = conn.execute(
        "SELECT settings, modified_at FROM app_settings WHERE app_id = ?", (app_id,)
    ).fetchone()
    return (row[0], row[1]) if row else None


def update_settings(
    conn: sqlite3.Connection, app_id: str, update: dict[str, Any], modified_at: str
) -> str:
    """Replace each member `update` gives, keep the others; return the settings as JSON."""
    stored = get_settings(conn, app_id)
    settings = {**(orjson.loads(stored[0]) if stored else {}), **update}
    text = orjson.dumps(settings).decode()
    conn.execute(
        "INSERT INTO app_settings (app_id, settings, modified_at) VALUES (?, ?, ?)"
        " ON CONFLICT (app_id) DO UPDATE SET settings = excluded.settings,"
        " modified_at = excluded.modified_at",
        (app_id, text, modified_at),
    )
    return text


def get(
    conn: sqlite3.Connection, app_id: str, segment_id: str, version: int | None
) -> SegmentRecord | None:
    """The segment at `version`, or at its latest when None."""
    row = _VERSIONED.get(conn, app_id, segment_id, version)
    return _record(row) if row else None


def page(
    conn: sqlite3.Connection, app_id: str, after: str | None, limit: int
) -> list[SegmentRecord]:
    """The latest version of each segment, by id."""
    return [_record(row) for row in _VERSIONED.page(conn, app_id, after, limit)]


def versions(
    conn: sqlite3.Connection, app_id: str, segment_id: str, after: int, limit: int
) -> list[SegmentRecord]:
    """The versions after `after`, oldest first."""
    rows = _VERSIONED.versions_after(conn, app_id, segment_id, after, limit)
    return [_record(row) for row in rows]


def endpoints_after(
    conn: sqlite3.Connection, app_id: str, after: str | None, limit: int
) -> list[tuple[str, Endpoint]]:
    """Up to `limit` endpoints of the app, by id, after the id `after`: one chunk of a
    walk over all of them that never holds more than a chunk."""
    rows = conn.execute(
        "SELECT endpoint_id, body FROM endpoints WHERE app_id = ? AND endpoint_id > ?"
        " ORDER BY endpoint_id LIMIT ?",
        (app_id, after or "", limit),
    ).fetchall()
    return [(row[0], orjson.loads(row[1])) for row in rows]


def check_references(
    conn: sqlite3.Connection,
    app_id: str,
    segment_id: str,
    references: Sequence[SegmentReference],
) -> None:
    """Each reference names a stored segment (and version), and none leads back to the
    latest version of `segment_id`, which is the one being written: that would be a cycle.

    Stored versions were checked the same way when written, so the graph behind them has
    no cycle of its own; the walk still keeps a set of what it saw.
    """
    for ref in references:
        if ref.id == segment_id and ref.version is None:
            raise SegmentReferenceError(
                ref.field + ".Id", "a segment cannot be based on its own latest version"
            )
        found = get(conn, app_id, ref.id, ref.version)
        if found is None:
            if ref.version is not None and get(conn, app_id, ref.id, None) is not None:
                raise SegmentReferenceError(
                    ref.field + ".Version", f"segment {ref.id} has no version {ref.version}"
                )
            raise SegmentReferenceError(
                ref.field + ".Id", f"segment {ref.id} does not exist in this application"
            )
        if _reaches(conn, app_id, found, segment_id):
            raise SegmentReferenceError(
                ref.field + ".Id",
                f"segment {ref.id} is based on the latest version of segment {segment_id},"
                " so this would be a cycle",
            )


def _reaches(conn: sqlite3.Connection, app_id: str, start: SegmentRecord, target: str) -> bool:
    seen: set[tuple[str, int | None]] = set()
    stack = [start]
    while stack:
        record = stack.pop()
        for ref_id, ref_version in source_segments(record.request):
            if ref_id == target and ref_version is None:
                return True
            if (ref_id, ref_version) in seen:
                continue
            seen.add((ref_id, ref_version))
            found = get(conn, app_id, ref_id, ref_version)
            if found is not None:
                stack.append(found)
    return False


def source_segments(request: str) -> Iterator[tuple[str, int | None]]:
    """The (id, version) of each source segment a stored request names."""
    groups = (orjson.loads(request).get("SegmentGroups") or {}).get("Groups") or []
    for group in groups:
        for ref in group.get("SourceSegments") or []:
            yield ref["Id"], ref.get("Version")


def _add_version(
    conn: sqlite3.Connection,
    app_id: str,
    segment_id: str,
    version: int,
    created_at: str,
    request: str,
) -> None:
    conn.execute(
        "INSERT INTO segment_versions (app_id, segment_id, version, created_at, request)"
        " VALUES (?, ?, ?, ?, ?)",
        (app_id, segment_id, version, created_at, request),
    )


def _record(row: tuple[Any, ...]) -> SegmentRecord:
    return SegmentRecord(
        app_id=row[0],
        id=row[1],
        version=row[2],
        created_at=row[3],
        modified_at=row[4],
        request=row[5],
        tags=orjson.loads(row[6]),
    )
