"""SQL of campaigns, their versions, activities and send records, run by SQLiteStorage
(writes in its writer thread).

A campaign is a row in `campaigns` (latest version, creation time, tags, the segment it
targets, its state, and how far its runs are planned) and one row per version in
`campaign_versions`, holding the request that made it, as JSON.

Each run is a row of `campaign_activities`, which is also the scheduler's job: a process
takes its lease (`lease_owner`, `lease_until_ms`), walks the segment one chunk at a time
and writes each chunk's `campaign_sends` rows, pushes, events, counts and cursor in one
transaction. The rows' key (campaign, endpoint, activity) and the cursor make a run
resumable after a kill -9 without sending any endpoint twice. The key, endpoint first,
also finds an endpoint's past sends for its caps; on PostgreSQL an index does.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from homing_collector.storage import events as events_sql
from homing_collector.storage import push
from homing_collector.storage.base import (
    ActivityRecord,
    CampaignRecord,
    CampaignSend,
    ChunkWritten,
    EventRow,
    PastSend,
    PushMessage,
    SegmentReferenceError,
)
from homing_collector.storage.versioned import Versioned

_COLUMNS = (
    "c.app_id, c.campaign_id, v.version, c.created_at, v.created_at, v.request, c.segment_id,"
    " c.state, c.tags"
)
VERSIONED = Versioned("campaigns c", "campaign_versions", "campaign_id", _COLUMNS)
_JOIN = VERSIONED.join
_ACTIVITY = (
    "app_id, campaign_id, activity_id, version, scheduled_ms, state, started_at, ended_at,"
    " result, cursor, total, successful, metrics"
)
HOUR_MS = events_sql.HOUR_MS
OPEN = ("PENDING", "RUNNING")
# The not_before_ms of an event-triggered campaign's activity: the scheduler never claims it.
NEVER = 1 << 62
SENT = "SENT"
DEFERRED = "DEFERRED"


def segment_version(
    conn: sqlite3.Connection, app_id: str, segment_id: str, version: int | None
) -> int:
    """The version a campaign pins: `version`, checked, or the segment's latest."""
    row = conn.execute(
        "SELECT version FROM segments WHERE app_id = ? AND segment_id = ?", (app_id, segment_id)
    ).fetchone()
    return pinned_version(segment_id, None if row is None else int(row[0]), version)


def pinned_version(segment_id: str, latest: int | None, version: int | None) -> int:
    """`version` checked against the segment's `latest` (None: no such segment), or the
    latest when None; every backend's check."""
    if latest is None:
        raise SegmentReferenceError(
            "SegmentId", f"segment {segment_id} does not exist in this application"
        )
    if version is None:
        return latest
    if not 1 <= version <= latest:
        raise SegmentReferenceError(
            "SegmentVersion", f"segment {segment_id} has no version {version}"
        )
    return version


def create(conn: sqlite3.Connection, record: CampaignRecord, version: int | None) -> CampaignRecord:
    request = orjson.loads(record.request)
    request["SegmentVersion"] = segment_version(conn, record.app_id, record.segment_id, version)
    text = orjson.dumps(request).decode()
    conn.execute(
        "INSERT INTO campaigns (app_id, campaign_id, version, created_at, segment_id, state,"
        " tags) VALUES (?, ?, 1, ?, ?, ?, ?)",
        (record.app_id, record.id, record.created_at, record.segment_id, record.state,
         orjson.dumps(record.tags).decode()),
    )  # fmt: skip
    _add_version(conn, record.app_id, record.id, 1, record.modified_at, text)
    found = get(conn, record.app_id, record.id, None)
    assert found is not None
    return found


def update(
    conn: sqlite3.Connection,
    app_id: str,
    campaign_id: str,
    update: dict[str, Any],
    modified_at: str,
    check: Callable[[dict[str, Any]], None],
) -> CampaignRecord | None:
    latest = get(conn, app_id, campaign_id, None)
    if latest is None:
        return None
    request = {**orjson.loads(latest.request), **update}
    if "SegmentId" in update and "SegmentVersion" not in update:
        request.pop("SegmentVersion", None)  # another segment: its latest version
    check(request)
    segment_id = request["SegmentId"]
    request["SegmentVersion"] = segment_version(
        conn, app_id, segment_id, request.get("SegmentVersion")
    )
    row = conn.execute(
        "UPDATE campaigns SET version = version + 1, segment_id = ?, finished = 0,"
        " state = CASE WHEN state = 'COMPLETED' THEN 'PENDING_NEXT_RUN' ELSE state END"
        " WHERE app_id = ? AND campaign_id = ? RETURNING version",
        (segment_id, app_id, campaign_id),
    ).fetchone()
    _add_version(conn, app_id, campaign_id, row[0], modified_at, orjson.dumps(request).decode())
    return get(conn, app_id, campaign_id, None)


def delete(conn: sqlite3.Connection, app_id: str, campaign_id: str) -> CampaignRecord | None:
    record = get(conn, app_id, campaign_id, None)
    if record is None:
        return None
    for table in ("campaign_sends", "campaign_activities", "campaign_versions", "campaigns"):
        conn.execute(
            f"DELETE FROM {table} WHERE app_id = ? AND campaign_id = ?", (app_id, campaign_id)
        )
    return record


def delete_for_segment(conn: sqlite3.Connection, app_id: str, segment_id: str) -> None:
    """Delete the campaigns that target a segment being deleted, as Pinpoint does."""
    rows = conn.execute(
        "SELECT campaign_id FROM campaigns WHERE app_id = ? AND segment_id = ?",
        (app_id, segment_id),
    ).fetchall()
    for (campaign_id,) in rows:
        delete(conn, app_id, campaign_id)


def delete_app(conn: sqlite3.Connection, app_id: str) -> None:
    for table in ("campaign_sends", "campaign_activities", "campaign_versions", "campaigns"):
        conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))


def get(
    conn: sqlite3.Connection, app_id: str, campaign_id: str, version: int | None
) -> CampaignRecord | None:
    """The campaign at `version`, or at its latest when None."""
    row = VERSIONED.get(conn, app_id, campaign_id, version)
    return _record(row) if row else None


def page(
    conn: sqlite3.Connection, app_id: str, after: str | None, limit: int
) -> list[CampaignRecord]:
    """The latest version of each campaign, by id."""
    return [_record(row) for row in VERSIONED.page(conn, app_id, after, limit)]


def versions(
    conn: sqlite3.Connection, app_id: str, campaign_id: str, after: int, limit: int
) -> list[CampaignRecord]:
    """The versions after `after`, oldest first."""
    rows = VERSIONED.versions_after(conn, app_id, campaign_id, after, limit)
    return [_record(row) for row in rows]


def activities(
    conn: sqlite3.Connection, app_id: str, campaign_id: str, after: int, limit: int
) -> list[ActivityRecord]:
    rows = conn.execute(
        f"SELECT {_ACTIVITY} FROM campaign_activities WHERE app_id = ? AND campaign_id = ?"
        " AND scheduled_ms > ? ORDER BY scheduled_ms LIMIT ?",
        (app_id, campaign_id, after, limit),
    ).fetchall()
    return [_activity(row) for row in rows]


# -- the scheduler ------------------------------------------------------------------------


def to_plan(conn: sqlite3.Connection) -> list[tuple[CampaignRecord, int | None]]:
    rows = conn.execute(
        f"SELECT {_COLUMNS}, c.planned_ms FROM {_JOIN}"
        " WHERE c.finished = 0 AND v.version = c.version"
    ).fetchall()
    return [(_record(row[:9]), row[9]) for row in rows]


def plan_runs(
    conn: sqlite3.Connection,
    app_id: str,
    campaign_id: str,
    version: int,
    runs_ms: Sequence[int],
    missed_ms: Sequence[int],
    planned_ms: int,
    finished: bool,
    now: str,
    *,
    lead_ms: int = 0,
) -> None:
    row = conn.execute(
        "SELECT version FROM campaigns WHERE app_id = ? AND campaign_id = ?",
        (app_id, campaign_id),
    ).fetchone()
    if row is None or row[0] != version:
        return  # deleted or changed since it was read: the next tick plans it again
    for scheduled, state in [*((ms, "PENDING") for ms in runs_ms),
                             *((ms, "CANCELLED") for ms in missed_ms)]:  # fmt: skip
        conn.execute(
            "INSERT OR IGNORE INTO campaign_activities (app_id, campaign_id, activity_id,"
            " version, scheduled_ms, state, not_before_ms, ended_at, result, metrics)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (app_id, campaign_id, uuid.uuid4().hex, version, scheduled, state, scheduled - lead_ms,
             now if state == "CANCELLED" else None, "FAIL" if state == "CANCELLED" else None,
             '{"MISSED": 1}' if state == "CANCELLED" else "{}"),
        )  # fmt: skip
    conn.execute(
        "UPDATE campaigns SET planned_ms = max(coalesce(planned_ms, 0), ?), finished = ?"
        " WHERE app_id = ? AND campaign_id = ?",
        (planned_ms, int(finished), app_id, campaign_id),
    )
    _settle_state(conn, app_id, campaign_id)


def claim(
    conn: sqlite3.Connection,
    owner: str,
    now_ms: int,
    lease_ms: int,
    dead: Callable[[str], bool],
    now: str,
) -> ActivityRecord | None:
    rows = conn.execute(
        "SELECT app_id, campaign_id, activity_id, lease_owner, lease_until_ms"
        " FROM campaign_activities WHERE state IN ('PENDING', 'RUNNING')"
        " AND not_before_ms <= ? ORDER BY not_before_ms LIMIT 50",
        (now_ms,),
    ).fetchall()
    for app_id, campaign_id, activity_id, holder, until in rows:
        if holder is not None and until is not None and until >= now_ms and not dead(holder):
            continue
        conn.execute(
            "UPDATE campaign_activities SET lease_owner = ?, lease_until_ms = ?,"
            " state = 'RUNNING', started_at = coalesce(started_at, ?)"
            " WHERE app_id = ? AND campaign_id = ? AND activity_id = ?",
            (owner, now_ms + lease_ms, now, app_id, campaign_id, activity_id),
        )
        conn.execute(
            "UPDATE campaigns SET state = 'EXECUTING' WHERE app_id = ? AND campaign_id = ?",
            (app_id, campaign_id),
        )
        row = conn.execute(
            f"SELECT {_ACTIVITY} FROM campaign_activities"
            " WHERE app_id = ? AND campaign_id = ? AND activity_id = ?",
            (app_id, campaign_id, activity_id),
        ).fetchone()
        return _activity(row)
    return None


def sends_of(
    conn: sqlite3.Connection, app_id: str, campaign_id: str, endpoint_ids: Sequence[str]
) -> dict[str, list[PastSend]]:
    found: dict[str, list[PastSend]] = {}
    for i in range(0, len(endpoint_ids), 500):
        part = endpoint_ids[i : i + 500]
        rows = conn.execute(
            "SELECT endpoint_id, at_ms, session_id FROM campaign_sends"
            " WHERE app_id = ? AND campaign_id = ? AND status = 'SENT'"
            f" AND endpoint_id IN ({', '.join('?' * len(part))})",
            (app_id, campaign_id, *part),
        ).fetchall()
        for endpoint_id, at_ms, session_id in rows:
            found.setdefault(endpoint_id, []).append(PastSend(at_ms, session_id))
    return found


def deferred(
    conn: sqlite3.Connection,
    app_id: str,
    campaign_id: str,
    activity_id: str,
    now_ms: int,
    limit: int,
) -> tuple[list[str], int | None]:
    key = (app_id, campaign_id, activity_id)
    rows = conn.execute(
        "SELECT endpoint_id FROM campaign_sends WHERE app_id = ? AND campaign_id = ?"
        " AND activity_id = ? AND status = 'DEFERRED' AND at_ms <= ? LIMIT ?",
        (*key, now_ms, limit),
    ).fetchall()
    (later,) = conn.execute(
        "SELECT min(at_ms) FROM campaign_sends WHERE app_id = ? AND campaign_id = ?"
        " AND activity_id = ? AND status = 'DEFERRED' AND at_ms > ?",
        (*key, now_ms),
    ).fetchone()
    return [row[0] for row in rows], later


def recent_events(
    conn: sqlite3.Connection, app_id: str, lo_ms: int, hi_ms: int, since_arrival_ms: int
) -> list[EventRow]:
    """The app's events that happened in [lo_ms, hi_ms) and arrived at or after
    `since_arrival_ms`: read by time, an hour of the events index at a time."""
    sql, params = events_sql.in_range(
        "e.endpoint_id, e.event_id, e.event_type, e.ts, e.arrival, e.session_id, e.body", []
    )
    rows = conn.execute(
        sql + " AND e.arrival >= :since",
        {**params, "app": app_id, "lo": lo_ms // HOUR_MS, "hi": hi_ms // HOUR_MS + 1,
         "lo_ms": lo_ms, "hi_ms": hi_ms, "since": since_arrival_ms},
    ).fetchall()  # fmt: skip
    return [EventRow(*row) for row in rows]


def event_activity(
    conn: sqlite3.Connection,
    app_id: str,
    campaign_id: str,
    version: int,
    scheduled_ms: int,
    now: str,
) -> ActivityRecord:
    conn.execute(
        "INSERT OR IGNORE INTO campaign_activities (app_id, campaign_id, activity_id, version,"
        " scheduled_ms, state, started_at, not_before_ms, metrics)"
        " VALUES (?, ?, ?, ?, ?, 'RUNNING', ?, ?, '{}')",
        (app_id, campaign_id, uuid.uuid4().hex, version, scheduled_ms, now, NEVER),
    )
    row = conn.execute(
        f"SELECT {_ACTIVITY} FROM campaign_activities"
        " WHERE app_id = ? AND campaign_id = ? AND scheduled_ms = ?",
        (app_id, campaign_id, scheduled_ms),
    ).fetchone()
    return _activity(row)


def write_chunk(
    conn: sqlite3.Connection,
    activity: ActivityRecord,
    owner: str | None,
    sends: Sequence[CampaignSend],
    cursor: str | None,
    lease_until_ms: int,
    queue_limit: int,
    now_ms: int,
) -> tuple[ChunkWritten, list[Any], list[CampaignSend]]:
    """The chunk's result, the `_campaign.send` event rows to insert with it, and the
    new SENT rows for a custom channel, whose deliveries go with it."""
    key = (activity.app_id, activity.campaign_id, activity.id)
    row = conn.execute(
        "SELECT lease_owner, metrics FROM campaign_activities"
        " WHERE app_id = ? AND campaign_id = ? AND activity_id = ?",
        key,
    ).fetchone()
    if row is None or (owner is not None and row[0] != owner):
        return ChunkWritten(lease_held=False), [], []
    metrics: dict[str, int] = orjson.loads(row[1])
    messages: list[PushMessage] = []
    custom: list[CampaignSend] = []
    events: list[Any] = []
    sent = 0
    for send in _recorded(conn, activity, sends):
        metrics[send.status] = metrics.get(send.status, 0) + 1
        if send.status == SENT:
            sent += 1
        if send.message is not None:
            messages.append(send.message)
        if send.custom is not None and send.status == SENT:
            custom.append(send)
        if send.event is not None:
            events.extend((activity.app_id, *send.event))
    queued = push.queue(conn, activity.app_id, messages, queue_limit, now_ms)
    conn.execute(
        "UPDATE campaign_activities SET metrics = ?, total = total + ?,"
        " successful = successful + ?, cursor = coalesce(?, cursor), lease_until_ms = ?"
        " WHERE app_id = ? AND campaign_id = ? AND activity_id = ?",
        (orjson.dumps(metrics).decode(), sent, sent, cursor, lease_until_ms, *key),
    )
    return ChunkWritten(True, list(zip(messages, queued.seqs, strict=True))), events, custom


_INSERT_SENDS = (
    "INSERT INTO campaign_sends (app_id, campaign_id, activity_id, endpoint_id, status,"
    " treatment_id, at_ms, message_id, session_id) VALUES "
)
# A record already final is kept: only a DEFERRED one is replaced, when it is sent or
# skipped at last. The rows RETURNING names are those stored by this statement.
_UPSERT_SENDS = (
    " ON CONFLICT (app_id, campaign_id, endpoint_id, activity_id) DO UPDATE SET"
    " status = excluded.status, treatment_id = excluded.treatment_id,"
    " at_ms = excluded.at_ms, message_id = excluded.message_id"
    " WHERE campaign_sends.status = 'DEFERRED'"
)
_ONE_SEND = _INSERT_SENDS + "(?, ?, ?, ?, ?, ?, ?, ?, ?)" + _UPSERT_SENDS + " RETURNING 1"
_SENDS_PER_STATEMENT = 1024  # 9,216 variables, within SQLite's 32,766 since 3.32


def send_activity_id(activity: ActivityRecord, send: CampaignSend) -> str:
    """The activity a send is recorded under: an event-triggered one's, per event."""
    return activity.id if send.trigger is None else f"{activity.id}:{send.trigger}"


def _send_values(activity: ActivityRecord, send: CampaignSend, activity_id: str) -> tuple[Any, ...]:
    return (
        activity.app_id, activity.campaign_id, activity_id, send.endpoint_id, send.status,
        send.treatment_id, send.at_ms, send.message.message_id if send.message else None,
        send.session_id,
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _many_sends(count: int) -> str:
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count)
    return f"{_INSERT_SENDS}{rows}{_UPSERT_SENDS} RETURNING activity_id, endpoint_id"


def _recorded(
    conn: sqlite3.Connection, activity: ActivityRecord, sends: Sequence[CampaignSend]
) -> list[CampaignSend]:
    """Record `sends` and return those to count, in order: the ones stored now (not a
    record already final) that are final themselves (not DEFERRED).

    The records go in a few multi-row statements rather than one statement per send:
    each statement's RETURNING names the keys it stored. Two sends of one key in a chunk
    (one event matched twice) go one statement each, in order, as the first is kept."""
    keys = [(send_activity_id(activity, send), send.endpoint_id) for send in sends]
    if len(set(keys)) < len(keys):
        counted = []
        for send, (activity_id, _) in zip(sends, keys, strict=True):
            written = conn.execute(_ONE_SEND, _send_values(activity, send, activity_id))
            if written.fetchone() is not None and send.status != DEFERRED:
                counted.append(send)
        return counted
    stored: set[tuple[str, str]] = set()
    start = 0
    while start < len(sends):
        # Statements of a power of two rows (100 sends: 64, 32 and 4), so that the eleven
        # statements are prepared once and cached: the number of sends of an event-
        # triggered campaign's pass varies, and preparing a statement fitting each pass
        # exactly cost half as much again as inserting its rows.
        count = min(len(sends) - start, _SENDS_PER_STATEMENT)
        count = 1 << (count.bit_length() - 1)
        values: list[Any] = []
        for i in range(start, start + count):
            values.extend(_send_values(activity, sends[i], keys[i][0]))
        cursor = conn.execute(_many_sends(count), values)
        stored.update(cursor.fetchall())
        start += count
    return [
        send for send, key in zip(sends, keys, strict=True)
        if send.status != DEFERRED and key in stored
    ]  # fmt: skip


def finish(
    conn: sqlite3.Connection,
    activity: ActivityRecord,
    owner: str,
    not_before_ms: int | None,
    now: str,
    result: str,
) -> None:
    key = (activity.app_id, activity.campaign_id, activity.id)
    if not_before_ms is None:
        conn.execute(
            "UPDATE campaign_activities SET state = 'COMPLETED', result = ?,"
            " ended_at = ?, lease_owner = NULL, lease_until_ms = NULL"
            " WHERE app_id = ? AND campaign_id = ? AND activity_id = ? AND lease_owner = ?",
            (result, now, *key, owner),
        )
    else:
        conn.execute(
            "UPDATE campaign_activities SET not_before_ms = ?, lease_owner = NULL,"
            " lease_until_ms = NULL"
            " WHERE app_id = ? AND campaign_id = ? AND activity_id = ? AND lease_owner = ?",
            (not_before_ms, *key, owner),
        )
    _settle_state(conn, activity.app_id, activity.campaign_id)


def _settle_state(conn: sqlite3.Connection, app_id: str, campaign_id: str) -> None:
    """The campaign's state from its activities: EXECUTING while one has started,
    SCHEDULED while one waits and none ran, COMPLETED when no run is left, else
    PENDING_NEXT_RUN."""
    conn.execute(
        "UPDATE campaigns SET state = CASE"
        " WHEN EXISTS (SELECT 1 FROM campaign_activities a WHERE a.app_id = campaigns.app_id"
        "   AND a.campaign_id = campaigns.campaign_id AND a.state = 'RUNNING') THEN 'EXECUTING'"
        " WHEN NOT EXISTS (SELECT 1 FROM campaign_activities a WHERE a.app_id = campaigns.app_id"
        "   AND a.campaign_id = campaigns.campaign_id AND a.state = 'COMPLETED') THEN"
        "   CASE WHEN finished AND NOT EXISTS (SELECT 1 FROM campaign_activities a"
        "     WHERE a.app_id = campaigns.app_id AND a.campaign_id = campaigns.campaign_id"
        "     AND a.state = 'PENDING') THEN 'COMPLETED' ELSE 'SCHEDULED' END"
        " WHEN finished AND NOT EXISTS (SELECT 1 FROM campaign_activities a"
        "   WHERE a.app_id = campaigns.app_id AND a.campaign_id = campaigns.campaign_id"
        "   AND a.state = 'PENDING') THEN 'COMPLETED'"
        " ELSE 'PENDING_NEXT_RUN' END"
        " WHERE app_id = ? AND campaign_id = ?",
        (app_id, campaign_id),
    )


def _add_version(
    conn: sqlite3.Connection,
    app_id: str,
    campaign_id: str,
    version: int,
    created_at: str,
    request: str,
) -> None:
    conn.execute(
        "INSERT INTO campaign_versions (app_id, campaign_id, version, created_at, request)"
        " VALUES (?, ?, ?, ?, ?)",
        (app_id, campaign_id, version, created_at, request),
    )


def _record(row: tuple[Any, ...]) -> CampaignRecord:
    return CampaignRecord(
        app_id=row[0],
        id=row[1],
        version=row[2],
        created_at=row[3],
        modified_at=row[4],
        request=row[5],
        segment_id=row[6],
        state=row[7],
        tags=orjson.loads(row[8]),
    )


def _activity(row: tuple[Any, ...]) -> ActivityRecord:
    return ActivityRecord(
        app_id=row[0],
        campaign_id=row[1],
        id=row[2],
        version=row[3],
        scheduled_ms=row[4],
        state=row[5],
        started_at=row[6],
        ended_at=row[7],
        result=row[8],
        cursor=row[9],
        total=row[10],
        successful=row[11],
        metrics=orjson.loads(row[12]),
    )
