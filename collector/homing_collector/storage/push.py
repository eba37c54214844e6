"""SQL of push store-and-forward, run by SQLiteStorage (writes in its writer thread)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from homing_collector.storage.base import PushMessage, PushQueued, QueuedPush


def queue(
    conn: sqlite3.Connection,
    app_id: str,
    messages: Sequence[PushMessage],
    queue_limit: int,
    now_ms: int,
) -> PushQueued:
    seqs: list[int] = []
    dropped = 0
    for message in messages:
        (seq,) = conn.execute(
            "INSERT INTO push_endpoints (app_id, endpoint_id, last_seq) VALUES (?, ?, 1)"
            " ON CONFLICT (app_id, endpoint_id) DO UPDATE SET last_seq = last_seq + 1"
            " RETURNING last_seq",
            (app_id, message.endpoint_id),
        ).fetchone()
        conn.execute(
            "INSERT INTO push_messages (app_id, endpoint_id, seq, message_id, silent, payload,"
            " campaign_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (app_id, message.endpoint_id, seq, message.message_id, int(message.silent),
             message.payload, message.campaign_id, now_ms, message.expires_at),
        )  # fmt: skip
        seqs.append(seq)
        dropped += _bound(conn, app_id, message.endpoint_id, queue_limit)
    return PushQueued(seqs, dropped)


def _bound(conn: sqlite3.Connection, app_id: str, endpoint_id: str, limit: int) -> int:
    (count,) = conn.execute(
        "SELECT count(*) FROM push_messages"
        " WHERE app_id = ? AND endpoint_id = ? AND delivered_at IS NULL",
        (app_id, endpoint_id),
    ).fetchone()
    if count <= limit:
        return 0
    excess = count - limit
    conn.execute(
        "DELETE FROM push_messages WHERE app_id = ? AND endpoint_id = ? AND seq IN"
        " (SELECT seq FROM push_messages WHERE app_id = ? AND endpoint_id = ?"
        "  AND delivered_at IS NULL ORDER BY seq LIMIT ?)",
        (app_id, endpoint_id, app_id, endpoint_id, excess),
    )
    conn.execute(
        "UPDATE push_endpoints SET dropped = dropped + ? WHERE app_id = ? AND endpoint_id = ?",
        (excess, app_id, endpoint_id),
    )
    return int(excess)


def pending(
    conn: sqlite3.Connection, app_id: str, endpoint_id: str, after_seq: int, now_ms: int
) -> list[QueuedPush]:
    rows = conn.execute(
        "SELECT seq, payload, expires_at FROM push_messages"
        " WHERE app_id = ? AND endpoint_id = ? AND delivered_at IS NULL AND seq > ?"
        " AND expires_at > ? ORDER BY seq",
        (app_id, endpoint_id, after_seq, now_ms),
    ).fetchall()
    return [QueuedPush(*row) for row in rows]


def ack(
    conn: sqlite3.Connection,
    app_id: str,
    endpoint_id: str,
    message_ids: Sequence[str],
    now_ms: int,
) -> int:
    marks = ", ".join("?" * len(message_ids))
    cursor = conn.execute(
        "UPDATE push_messages SET delivered_at = ? WHERE app_id = ? AND endpoint_id = ?"
        f" AND delivered_at IS NULL AND message_id IN ({marks})",
        (now_ms, app_id, endpoint_id, *message_ids),
    )
    return cursor.rowcount


def ack_through(
    conn: sqlite3.Connection, app_id: str, endpoint_id: str, seq: int, now_ms: int
) -> int:
    row = conn.execute(
        "SELECT last_seq FROM push_endpoints WHERE app_id = ? AND endpoint_id = ?",
        (app_id, endpoint_id),
    ).fetchone()
    if row is None or seq > row[0]:
        # An id this endpoint never had: the device counted against another database (a
        # restored backup, another collector). Acknowledging would drop unseen messages.
        return 0
    cursor = conn.execute(
        "UPDATE push_messages SET delivered_at = ?"
        " WHERE app_id = ? AND endpoint_id = ? AND delivered_at IS NULL AND seq <= ?",
        (now_ms, app_id, endpoint_id, seq),
    )
    return cursor.rowcount


def purge(conn: sqlite3.Connection, now_ms: int) -> int:
    cursor = conn.execute(
        "DELETE FROM push_messages WHERE delivered_at IS NULL AND expires_at <= ?", (now_ms,)
    )
    return cursor.rowcount


def recent(conn: sqlite3.Connection, since_ms: int) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT app_id, endpoint_id, max(seq) FROM push_messages"
        " WHERE delivered_at IS NULL AND created_at >= ? GROUP BY app_id, endpoint_id",
        (since_ms,),
    ).fetchall()
    return [(row[0], row[1], row[2]) for row in rows]


def delete_endpoint(conn: sqlite3.Connection, app_id: str, endpoint_id: str) -> None:
    # The sequence row stays: a device that comes back under the same id must not see
    # old numbers again, or its Last-Event-ID would acknowledge new messages.
    conn.execute(
        "DELETE FROM push_messages WHERE app_id = ? AND endpoint_id = ?", (app_id, endpoint_id)
    )
