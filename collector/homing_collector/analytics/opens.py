"""The notification opens, kept at ingest beside the other rollups (see rollups.py).

an_opens (migration 17) holds one row per stored `_campaign.opened_notification` event:
(app_id, ts, endpoint_id, campaign_id), the campaign id being the event's `campaign_id`
attribute. The campaigns panel and the KPIs read the opens of a range from its index,
in the order of ts, instead of each event's body from the events table: those bodies
lie far apart in a big table, so reading them cost more as the table grew, whatever the
range. The rows go with their events: when the endpoint is deleted, and when the events
expire (unlike the other rollups, which stay).
"""

from __future__ import annotations

from collections.abc import Sequence

from homing_collector.storage.analytics_backend import Connection, statements

OPENED = "_campaign.opened_notification"
OPEN_SESSION_BEFORE_MS = 60_000
OPEN_SESSION_AFTER_MS = 30 * 60_000

Open = tuple[str, str, int, str | None]  # (app id, endpoint id, ts, campaign id)


def write(conn: Connection, opens: Sequence[Open]) -> None:
    statements(conn).opens.insert(conn, opens)


def in_range(
    conn: Connection, app_id: str, lo_ms: int, hi_ms: int
) -> list[tuple[str, int, str | None]]:
    """(endpoint id, Timestamp, campaign id) of the opens in [lo_ms, hi_ms)."""
    found: list[tuple[str, int, str | None]] = statements(conn).opens.in_range(
        conn, app_id, lo_ms, hi_ms
    )
    return found


def followed_by_session(conn: Connection, app_id: str, lo_ms: int, hi_ms: int) -> int:
    """How many opens in [lo_ms, hi_ms) have a session of their endpoint that starts from
    a minute before to 30 minutes after."""
    return int(
        statements(conn).opens.followed_by_session(
            conn, app_id, lo_ms, hi_ms, OPEN_SESSION_BEFORE_MS, OPEN_SESSION_AFTER_MS
        )
    )


def remove_endpoint(conn: Connection, app_id: str, endpoint_id: str) -> None:
    statements(conn).opens.remove_endpoint(conn, app_id, endpoint_id)


def deleted(conn: Connection, opens: Sequence[Open]) -> None:
    """Forget one row for each open event deleted (by the retention sweep)."""
    statements(conn).opens.deleted(conn, opens)
