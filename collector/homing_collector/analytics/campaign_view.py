"""One campaign's figures, in all and per treatment, from its stored `_campaign.*` events.

The collector records `_campaign.send` for each message a campaign sends; the SDK records
`_campaign.received_foreground` or `_campaign.received_background` when the message
arrives and `_campaign.opened_notification` when the user opens it. Each carries the
campaign's `campaign_id`, `campaign_activity_id` and `treatment_id`. The definitions are
in docs/analytics.md ("One campaign").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from homing_collector.analytics.days import HOUR_MS, grid
from homing_collector.analytics.opens import (
    OPEN_SESSION_AFTER_MS,
    OPEN_SESSION_BEFORE_MS,
    OPENED,
)
from homing_collector.analytics.params import Range
from homing_collector.campaigns.delivery import CAMPAIGN_SEND
from homing_collector.storage.analytics_backend import Connection, statements

RECEIVED = ("_campaign.received_foreground", "_campaign.received_background")
PURCHASE = "_monetization.purchase"
# A purchase counts after an open when it comes within this long after it.
PURCHASE_AFTER_MS = OPEN_SESSION_AFTER_MS
_TYPES = (CAMPAIGN_SEND, *RECEIVED, OPENED)


@dataclass
class _Group:
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    targeted: set[str] = field(default_factory=set)
    openers: set[str] = field(default_factory=set)
    opens: list[tuple[str, int]] = field(default_factory=list)  # (endpoint id, ts)
    sessions: dict[tuple[str, str], int] = field(default_factory=dict)  # -> start ms
    purchases: set[tuple[str, str]] = field(default_factory=set)  # (endpoint, event id)


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def _campaign_events(
    conn: Connection, app_id: str, campaign_id: str, lo_hour: int, hi_hour: int
) -> Iterable[tuple[str, str, int, str]]:
    """(endpoint id, event type, ts, treatment id) of the campaign's events in the hours."""
    for endpoint_id, event_type, ts, body in statements(conn).campaign_view.typed_events(
        conn, app_id, lo_hour, hi_hour, _TYPES
    ):
        attributes = orjson.loads(body).get("Attributes") or {}
        if attributes.get("campaign_id") != campaign_id:
            continue
        treatment = attributes.get("treatment_id")
        yield endpoint_id, event_type, ts, treatment if isinstance(treatment, str) else "0"


def _after_opens(conn: Connection, app_id: str, groups: list[_Group]) -> None:
    """Fill each group's sessions and purchases that follow its opens."""
    windows = [
        (i, app_id, endpoint_id, ts)
        for i, g in enumerate(groups)
        for endpoint_id, ts in g.opens
    ]  # fmt: skip
    for i, endpoint_id, session_id, start_ms in statements(conn).campaign_view.sessions_near(
        conn, windows, OPEN_SESSION_BEFORE_MS, OPEN_SESSION_AFTER_MS
    ):
        groups[i].sessions[(endpoint_id, session_id)] = start_ms
    hour_windows = [
        (i, app_id, endpoint_id, ts, ts // HOUR_MS, (ts + PURCHASE_AFTER_MS) // HOUR_MS)
        for i, app_id, endpoint_id, ts in windows
    ]
    for i, endpoint_id, event_id in statements(conn).campaign_view.events_after(
        conn, hour_windows, PURCHASE, PURCHASE_AFTER_MS
    ):
        groups[i].purchases.add((endpoint_id, event_id))


def _figures(g: _Group, q: Range) -> dict[str, Any]:
    by_hour: dict[int, int] = {}
    for start_ms in g.sessions.values():
        hour = start_ms // HOUR_MS
        by_hour[hour] = by_hour.get(hour, 0) + 1
    users = len(g.openers)
    return {
        "sent": g.sent,
        "delivered": g.delivered,
        "opened": g.opened,
        "devices_targeted": len(g.targeted),
        "delivery_rate": _ratio(g.delivered, g.sent),
        "open_rate": _ratio(g.opened, g.delivered),
        "users_opened": users,
        "sessions_after_open": len(g.sessions),
        "purchases_after_open": len(g.purchases),
        "sessions_per_user": _ratio(len(g.sessions), users),
        "purchases_per_user": _ratio(len(g.purchases), users),
        "sessions_by_hour": [
            {
                "hour": datetime.fromtimestamp(hour * 3600, timezone.utc)
                .astimezone(q.zone)
                .isoformat(timespec="minutes"),
                "sessions": count,
            }
            for hour, count in sorted(by_hour.items())
        ],
    }


def campaign(
    conn: Connection,
    app_id: str,
    campaign_id: str,
    q: Range,
    names: dict[str, str | None],
    *,
    name: str | None = None,
) -> dict[str, Any]:
    """The campaign's figures over the range, in all and per treatment.

    `names` maps the campaign's treatment ids to their TreatmentName (empty if the
    campaign is not stored any more); its treatments are listed even before they send.
    `name` is the stored campaign's Name.
    """
    g = grid(q.zone, q.start, q.end)
    total = _Group()
    per: dict[str, _Group] = {treatment: _Group() for treatment in names}
    for endpoint_id, event_type, ts, treatment in _campaign_events(
        conn, app_id, campaign_id, g.lo(0), g.lo(g.days)
    ):
        for group in (total, per.setdefault(treatment, _Group())):
            if event_type == CAMPAIGN_SEND:
                group.sent += 1
                group.targeted.add(endpoint_id)
            elif event_type == OPENED:
                group.opened += 1
                group.openers.add(endpoint_id)
                group.opens.append((endpoint_id, ts))
            else:
                group.delivered += 1
    ordered = sorted(per.items(), key=lambda item: (len(item[0]), item[0]))
    _after_opens(conn, app_id, [total, *(group for _t, group in ordered)])
    return {
        **q.head(),
        "campaign_id": campaign_id,
        "name": name,
        **_figures(total, q),
        "treatments": [
            {
                "treatment_id": treatment,
                "treatment_name": names.get(treatment),
                **_figures(group, q),
            }
            for treatment, group in ordered
        ],
    }
