"""SQL of import jobs and of the members of imported segments, run by SQLiteStorage
(writes in its writer thread).

A job is a row in `import_jobs`. Each endpoint id it imported is a row in
`import_members`, with its ChannelType: the members of the segment the job defined or
updated, whose versions name the job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from homing.wire import WireError
from homing_collector.storage import segments
from homing_collector.storage.base import (
    ApplicationGone,
    EndpointUpdate,
    ImportJobRecord,
    ImportRow,
    SegmentRecord,
    SegmentReferenceError,
    UserEndpointLimit,
)

COLUMNS = (
    "app_id, job_id, created_at, definition, status, total_pieces, segment_id,"
    " completed_pieces, failed_pieces, total_processed, total_failures, failures,"
    " completed_at, owner, heartbeat"
)
_TERMINAL = ("COMPLETED", "FAILED")
# (conn, endpoint update) -> the stored endpoint after it; raises as UpdateEndpoint does.
Upsert = Callable[[sqlite3.Connection, EndpointUpdate], None]


def create(conn: sqlite3.Connection, record: ImportJobRecord) -> None:
    conn.execute(
        f"INSERT INTO import_jobs ({COLUMNS}) VALUES ({', '.join('?' * 15)})", job_values(record)
    )


def save(conn: sqlite3.Connection, record: ImportJobRecord) -> None:
    conn.execute(
        "UPDATE import_jobs SET status = ?, total_pieces = ?, segment_id = ?,"
        " completed_pieces = ?, failed_pieces = ?, total_processed = ?, total_failures = ?,"
        " failures = ?, completed_at = ?, owner = ?, heartbeat = ?"
        " WHERE app_id = ? AND job_id = ?",
        (*job_values(record)[4:], record.app_id, record.id),
    )


def get(conn: sqlite3.Connection, app_id: str, job_id: str) -> ImportJobRecord | None:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM import_jobs WHERE app_id = ? AND job_id = ?", (app_id, job_id)
    ).fetchone()
    return job_record(row) if row else None


def page(
    conn: sqlite3.Connection, app_id: str, segment_id: str | None, after: str | None, limit: int
) -> list[ImportJobRecord]:
    where = "app_id = ? AND job_id > ?"
    args: tuple[Any, ...] = (app_id, after or "")
    if segment_id is not None:
        where += " AND segment_id = ?"
        args += (segment_id,)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM import_jobs WHERE {where} ORDER BY job_id LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [job_record(row) for row in rows]


def unfinished(conn: sqlite3.Connection) -> list[ImportJobRecord]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM import_jobs WHERE status NOT IN (?, ?)", _TERMINAL
    ).fetchall()
    return [job_record(row) for row in rows]


def import_rows(
    conn: sqlite3.Connection,
    app_id: str,
    job_id: str,
    rows: Sequence[ImportRow],
    upsert: Upsert | None,
    *,
    members: bool,
) -> list[tuple[ImportRow, str]]:
    """Store each row (through `upsert`, unless None) and note its members (if
    `members`); return the rows refused, with why. `upsert` raises before it writes
    anything, so a refused row leaves nothing behind."""
    _check_app(conn, app_id)
    refused: list[tuple[ImportRow, str]] = []
    found_members: list[tuple[str, str, str, str | None]] = []
    for item in rows:
        if item.endpoint_id is None:
            user_id = item.update["User"]["UserId"]
            found = conn.execute(
                "SELECT endpoint_id, body FROM endpoints INDEXED BY endpoints_user WHERE app_id = ?"
                " AND user_id = ?",
                (app_id, user_id),
            ).fetchall()
            if not found:
                refused.append(
                    (item, f"User.UserId: user {user_id!r} has no endpoints in this application")
                )
            for endpoint_id, body in found:
                channel = orjson.loads(body).get("ChannelType")
                found_members.append((app_id, job_id, endpoint_id, channel))
            continue
        if upsert is not None:
            try:
                upsert(conn, EndpointUpdate(item.endpoint_id, item.update))
            except (WireError, UserEndpointLimit) as exc:
                refused.append((item, str(exc)))
                continue
        found_members.append((app_id, job_id, item.endpoint_id, item.update.get("ChannelType")))
    if not members:
        return refused
    conn.executemany(
        "INSERT INTO import_members (app_id, job_id, endpoint_id, channel) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, job_id, endpoint_id) DO UPDATE SET"
        " channel = coalesce(excluded.channel, channel)",
        found_members,
    )
    return refused


def member_counts(conn: sqlite3.Connection, app_id: str, job_id: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT coalesce(channel, ''), count(*) FROM import_members"
        " WHERE app_id = ? AND job_id = ? GROUP BY 1",
        (app_id, job_id),
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def members_after(
    conn: sqlite3.Connection, app_id: str, job_id: str, after: str | None, limit: int
) -> list[str]:
    rows = conn.execute(
        "SELECT endpoint_id FROM import_members WHERE app_id = ? AND job_id = ?"
        " AND endpoint_id > ? ORDER BY endpoint_id LIMIT ?",
        (app_id, job_id, after or "", limit),
    ).fetchall()
    return [row[0] for row in rows]


def finish(
    conn: sqlite3.Connection, record: ImportJobRecord, segment: SegmentRecord | None
) -> None:
    _check_app(conn, record.app_id)
    if segment is not None:
        if segments.get(conn, segment.app_id, segment.id, None) is None:
            if segment.version != 1:
                raise SegmentReferenceError(
                    "SegmentId", f"segment {segment.id} was deleted while the job ran"
                )
            segments.create(conn, segment, [])
        else:
            segments.update(
                conn, segment.app_id, segment.id, segment.request, segment.modified_at, []
            )
    save(conn, record)


def delete_segment(conn: sqlite3.Connection, app_id: str, segment_id: str) -> None:
    """The members of the segment's jobs; the jobs stay listed."""
    conn.execute(
        "DELETE FROM import_members WHERE app_id = ? AND job_id IN"
        " (SELECT job_id FROM import_jobs WHERE app_id = ? AND segment_id = ?)",
        (app_id, app_id, segment_id),
    )


def delete_app(conn: sqlite3.Connection, app_id: str) -> None:
    conn.execute("DELETE FROM import_members WHERE app_id = ?", (app_id,))
    conn.execute("DELETE FROM import_jobs WHERE app_id = ?", (app_id,))


def _check_app(conn: sqlite3.Connection, app_id: str) -> None:
    if conn.execute("SELECT 1 FROM apps WHERE id = ?", (app_id,)).fetchone() is None:
        raise ApplicationGone(f"application {app_id} was deleted while the job ran")


def job_values(record: ImportJobRecord) -> tuple[Any, ...]:
    """The row of `record`, in the order of COLUMNS (every backend's)."""
    return (
        record.app_id, record.id, record.created_at, record.definition, record.status,
        record.total_pieces, record.segment_id, record.completed_pieces, record.failed_pieces,
        record.total_processed, record.total_failures, orjson.dumps(record.failures).decode(),
        record.completed_at, record.owner, record.heartbeat,
    )  # fmt: skip


def job_record(row: tuple[Any, ...]) -> ImportJobRecord:
    """The record of a row of COLUMNS (every backend's)."""
    return ImportJobRecord(
        app_id=row[0],
        id=row[1],
        created_at=row[2],
        definition=row[3],
        status=row[4],
        total_pieces=row[5],
        segment_id=row[6],
        completed_pieces=row[7],
        failed_pieces=row[8],
        total_processed=row[9],
        total_failures=row[10],
        failures=orjson.loads(row[11]),
        completed_at=row[12],
        owner=row[13],
        heartbeat=row[14],
    )
