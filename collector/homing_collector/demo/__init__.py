"""Demo data: a simulated shop app, so that a first run shows a living dashboard.

Devices install the app over the date range and come back less and less (retention
decay), in sessions recorded as the SDK records them. They browse, search, fill carts and
buy (`_monetization.purchase`), some of them on several devices of one user. A share of
the devices is offline for days and uploads late, and push campaigns are sent, delivered
and opened: two of old, and two stored campaigns (demo/campaigns.py), an A/B campaign
with a holdout and a live event-triggered campaign.

Everything goes through the collector's own ingest path, PutEvents batch by PutEvents
batch, each checked and stored as if it had arrived at its upload time: the same checks,
the same storage calls, and so the same rollups as real traffic. The same seed gives the
same data for the same last day.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from homing_collector import ingest
from homing_collector.demo import campaigns
from homing_collector.demo.simulation import (
    DemoOptions,
    DemoSummary,
    PushMessage,
    simulate,
    simulate_with_campaigns,
)
from homing_collector.storage import seed
from homing_collector.storage.base import Storage

__all__ = ["DemoOptions", "DemoSummary", "PushMessage", "load", "simulate"]

# Jobs queued at once: the storage's writer commits many of them together.
_CONCURRENT_BATCHES = 256


async def load(
    storage: Storage, app_id: str, options: DemoOptions, *, now: datetime | None = None
) -> DemoSummary:
    """Simulate the demo app's traffic and store it in `app_id` through the ingest path."""
    now = now or datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    batches, pushes, summary, (ab, event) = simulate_with_campaigns(
        options, last_day=now.date(), now_ms=now_ms
    )
    await campaigns.store(storage, app_id, ab, event, now)
    pending = []
    for arrival_ms, body in batches:
        checked = ingest.check_events(
            body, body_size=0, now=arrival_ms / 1000, summarize=storage.rollups
        )
        rejected = [
            status["Message"]
            for item in checked.results.values()
            for status in (item["EndpointItemResponse"], *item["EventsItemResponse"].values())
            if status["StatusCode"] != 202
        ]
        if rejected:
            raise ValueError(f"the demo made an event the collector rejects: {rejected[0]}")
        # Queued in arrival order; the writer commits many batches at once.
        pending.append(ingest.store_events(storage, app_id, checked))
        if len(pending) >= _CONCURRENT_BATCHES:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    summary.pushes_stored = await seed.put_push_messages(storage, app_id, pushes)
    return summary
