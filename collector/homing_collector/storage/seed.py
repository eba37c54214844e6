"""Rows that only demo data writes directly: the push messages of its simulated campaigns,
in the push gateway's own table, so that campaign analytics count them as sent."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

from homing_collector.push import messages
from homing_collector.storage.base import Storage
from homing_collector.storage.sqlite import SQLiteStorage


class PushRow(Protocol):
    endpoint_id: str
    message_id: str
    campaign_id: str
    created_ms: int
    expires_ms: int
    delivered_ms: int | None


_COLUMNS = (
    "app_id", "endpoint_id", "seq", "message_id", "silent", "payload", "campaign_id",
    "created_at", "expires_at", "delivered_at",
)  # fmt: skip


async def put_push_messages(storage: Storage, app_id: str, rows: Sequence[PushRow]) -> bool:
    """Store `rows` in the push gateway's table; False if this storage is not SQLite."""
    if not isinstance(storage, SQLiteStorage) or not rows:
        return False

    def job(conn: sqlite3.Connection) -> bool:
        by_endpoint: dict[str, list[PushRow]] = {}
        for row in sorted(rows, key=lambda r: (r.endpoint_id, r.created_ms)):
            by_endpoint.setdefault(row.endpoint_id, []).append(row)
        values: list[tuple[Any, ...]] = []
        for endpoint_id, sent in by_endpoint.items():
            # The gateway numbers each endpoint's messages from its counter in
            # push_endpoints: take numbers from it too, so that its next one is new.
            (last,) = conn.execute(
                "INSERT INTO push_endpoints (app_id, endpoint_id, last_seq)"
                " VALUES (?, ?, ?) ON CONFLICT (app_id, endpoint_id) DO UPDATE"
                " SET last_seq = last_seq + excluded.last_seq RETURNING last_seq",
                (app_id, endpoint_id, len(sent)),
            ).fetchone()
            for seq, row in enumerate(sent, start=last - len(sent) + 1):
                values.append(
                    (app_id, endpoint_id, seq, row.message_id, 0, _payload(row),
                     row.campaign_id, row.created_ms, row.expires_ms, row.delivered_ms)
                )  # fmt: skip
        conn.executemany(
            f"INSERT INTO push_messages ({', '.join(_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(_COLUMNS))})",
            values,
        )
        return True

    return await storage._write(job)


def _payload(row: PushRow) -> str:
    """What the push stream sends for the message: a campaign push that opens the app."""
    push = messages.Push(title="Homing Shop", body="New in the shop this week", silent=False)
    context = {
        "campaign_id": row.campaign_id,
        "campaign_activity_id": f"{row.campaign_id}-activity-1",
        "treatment_id": "0",
    }
    payload, _campaign = messages.render(
        push, messages.Override(), context, message_id=row.message_id,
        expires_at_ms=row.expires_ms,
    )  # fmt: skip
    return payload
