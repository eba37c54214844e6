"""SQL of segments and their versions, and of application settings, run by SQLiteStorage
(writes in its writer thread).

A segment is a row in `segments` (its latest version, creation time and tags) and one row
per version in `segment_versions`, holding the request that made it, as JSON. Versions
never change once written: campaigns pin them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from homing_collector.storage.base import Endpoint, SegmentRecord, SegmentReference
from homing_collector.storage.segment_references import reference_checks
from homing_collector.storage.versioned import Versioned

_COLUMNS = "s.app_id, s.segment_id, v.version, s.created_at, v.created_at, v.request, s.tags"
VERSIONED = Versioned("segments s", "segment_versions", "segment_id", _COLUMNS)


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
    row = VERSIONED.get(conn, app_id, segment_id, version)
    return _record(row) if row else None


def page(
    conn: sqlite3.Connection, app_id: str, after: str | None, limit: int
) -> list[SegmentRecord]:
    """The latest version of each segment, by id."""
    return [_record(row) for row in VERSIONED.page(conn, app_id, after, limit)]


def versions(
    conn: sqlite3.Connection, app_id: str, segment_id: str, after: int, limit: int
) -> list[SegmentRecord]:
    """The versions after `after`, oldest first."""
    rows = VERSIONED.versions_after(conn, app_id, segment_id, after, limit)
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
    """Raise SegmentReferenceError unless the references keep the rules of
    segment_references.py."""
    checks = reference_checks(segment_id, references)
    try:
        wanted = next(checks)
        while True:
            wanted = checks.send(get(conn, app_id, *wanted))
    except StopIteration:
        pass


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
