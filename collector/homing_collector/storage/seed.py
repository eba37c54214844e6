"""Rows that only demo data writes directly: the push messages of its simulated campaigns.

The push gateway owns the `push_messages` table. A database made before it existed has
no such table; then there is nothing to write, and the campaigns show through their
`_campaign.*` events alone.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from homing_collector.storage.base import Storage
from homing_collector.storage.sqlite import SQLiteStorage


class PushRow(Protocol):
    endpoint_id: str
    message_id: str
    campaign_id: str
    created_ms: int
    expires_ms: int
    delivered_ms: int | None


logger = logging.getLogger("homing_collector")

_COLUMNS = (
    "app_id", "endpoint_id", "seq", "message_id", "silent", "payload", "campaign_id",
    "created_at", "expires_at", "delivered_at",
)  # fmt: skip


async def put_push_messages(storage: Storage, app_id: str, rows: Sequence[PushRow]) -> bool:
    """Store `rows` in the push gateway's table; False if this database has none."""
    if not isinstance(storage, SQLiteStorage) or not rows:
        return False

    def job(conn: sqlite3.Connection) -> bool:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(push_messages)")}
        if not set(_COLUMNS) <= columns:
            return False
        seqs: dict[str, int] = {}
        values: list[tuple[Any, ...]] = []
        for row in sorted(rows, key=lambda r: (r.endpoint_id, r.created_ms)):
            if row.endpoint_id not in seqs:
                (last,) = conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM push_messages"
                    " WHERE app_id = ? AND endpoint_id = ?",
                    (app_id, row.endpoint_id),
                ).fetchone()
                seqs[row.endpoint_id] = last
            seqs[row.endpoint_id] += 1
            payload = {
                "title": "Homing Shop",
                "body": f"News from {row.campaign_id}",
                "data": {"campaign_id": row.campaign_id},
            }
            values.append(
                (app_id, row.endpoint_id, seqs[row.endpoint_id], row.message_id, 0,
                 orjson.dumps(payload).decode(), row.campaign_id, row.created_ms,
                 row.expires_ms, row.delivered_ms)
            )  # fmt: skip
        # The gateway's table may ask for more than these columns: then write nothing.
        conn.execute("SAVEPOINT demo_push")
        try:
            conn.executemany(
                f"INSERT INTO push_messages ({', '.join(_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(_COLUMNS))})",
                values,
            )
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO demo_push")
            conn.execute("RELEASE demo_push")
            logger.warning("demo pushes not stored in push_messages: %s", exc)
            return False
        conn.execute("RELEASE demo_push")
        return True

    return await storage._write(job)
