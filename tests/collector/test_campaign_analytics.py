"""One campaign's figures (GET .../analytics/campaigns/{campaign_id}) against brute force.

Generated devices receive an A/B campaign and another campaign: `_campaign.send`,
receipts, opens inside sessions, purchases, and sessions that come too late to count.
Everything goes through PutEvents on a live collector; the expected figures are counted
here in plain Python from the generated events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.collector.analytics_data import iso, ms
from tests.conftest import App, LiveCollector

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
OPEN_BEFORE, OPEN_AFTER = 60_000, 30 * 60_000


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Event:
    endpoint_id: str
    event_id: str
    type: str
    ts: int
    attributes: dict[str, str]
    session: tuple[str, int] | None  # (id, start ms)


def generate(seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []
    n = 0

    def add(ep: str, kind: str, at: int, attrs: dict[str, str], session: Any = None) -> None:
        nonlocal n
        n += 1
        events.append(Event(ep, f"e{n}", kind, at, attrs, session))

    for i in range(60):
        ep = f"ep{i}"
        for campaign, treatments in (("ab", ("0", "1", "2")), ("other", ("0",))):
            if rng.random() < 0.2:
                continue  # not targeted (or held out)
            treatment = rng.choice(treatments)
            attrs = {
                "campaign_id": campaign,
                "campaign_activity_id": f"{campaign}-a1",
                "treatment_id": treatment,
            }
            sent = ms(START) + rng.randrange(0, 3 * 86_400_000)
            add(ep, "_campaign.send", sent, attrs)
            if rng.random() < 0.15:  # a second run reaches it again
                add(ep, "_campaign.send", sent + 86_400_000, attrs)
            if rng.random() < 0.2:
                continue  # not delivered
            kind = rng.choice(["_campaign.received_background", "_campaign.received_foreground"])
            add(ep, kind, sent + rng.randrange(500, 60_000), attrs)
            if rng.random() < 0.4:
                continue  # not opened
            opened = sent + rng.randrange(60_000, 600_000)
            session = (f"s-{ep}-{campaign}", opened - rng.randrange(0, 50_000))
            add(ep, "_session.start", session[1], {}, session)
            add(ep, "_campaign.opened_notification", opened, attrs, session)
            if rng.random() < 0.5:
                add(
                    ep,
                    "_monetization.purchase",
                    opened + rng.randrange(10_000, 600_000),
                    {"_currency": "USD", "_product_id": "p1"},
                    session,
                )
            if rng.random() < 0.3:  # a purchase long after: not after the open
                later = (f"l-{ep}-{campaign}", opened + 40 * 60_000)
                add(ep, "_session.start", later[1], {}, later)
                add(
                    ep,
                    "_monetization.purchase",
                    later[1] + 5_000,
                    {"_currency": "USD", "_product_id": "p2"},
                    later,
                )
            if rng.random() < 0.3:  # a second session soon after the open
                soon = (f"n-{ep}-{campaign}", opened + 20 * 60_000)
                add(ep, "_session.start", soon[1], {}, soon)
    # A message before the range and one of the campaign in another app's name: not counted.
    add("ep0", "_campaign.send", ms(START) - 3_600_000, {"campaign_id": "ab", "treatment_id": "0"})
    return events


def body_of(e: Event) -> dict[str, Any]:
    body: dict[str, Any] = {
        "EventType": e.type,
        "Timestamp": iso(datetime.fromtimestamp(e.ts / 1000, timezone.utc)),
    }
    if e.attributes:
        body["Attributes"] = e.attributes
    if e.type == "_monetization.purchase":
        body["Metrics"] = {"_item_price": 10.0, "_quantity": 1}
    if e.session is not None:
        body["Session"] = {
            "Id": e.session[0],
            "StartTimestamp": iso(datetime.fromtimestamp(e.session[1] / 1000, timezone.utc)),
        }
    return body


@pytest.fixture(scope="module")
def world(collector: LiveCollector) -> tuple[App, list[Event]]:
    app = collector.create_app("campaign-view")
    events = generate()
    per: dict[str, list[Event]] = {}
    for e in events:
        per.setdefault(e.endpoint_id, []).append(e)
    with httpx.Client(base_url=collector.url, headers=bearer(app.ingest.token)) as client:
        for ep, mine in per.items():
            for lo in range(0, len(mine), 100):
                chunk = mine[lo : lo + 100]
                response = client.post(
                    f"/v1/apps/{app.id}/events",
                    json={
                        "BatchItem": {
                            ep: {"Endpoint": {}, "Events": {e.event_id: body_of(e) for e in chunk}}
                        }
                    },
                )
                assert response.status_code == 202, response.text
                statuses = response.json()["Results"][ep]["EventsItemResponse"]
                assert all(s["StatusCode"] == 202 for s in statuses.values()), statuses
    return app, events


def expected(events: list[Event], campaign: str, treatment: str | None) -> dict[str, Any]:
    lo, hi = ms(START), ms(START + timedelta(days=7))

    def mine(e: Event) -> bool:
        return (
            e.attributes.get("campaign_id") == campaign
            and lo <= e.ts < hi
            and (treatment is None or e.attributes.get("treatment_id") == treatment)
        )

    sends = [e for e in events if e.type == "_campaign.send" and mine(e)]
    received = [e for e in events if e.type.startswith("_campaign.received_") and mine(e)]
    opens = [e for e in events if e.type == "_campaign.opened_notification" and mine(e)]
    sessions = {(e.endpoint_id, e.session[0]): e.session[1] for e in events if e.session}
    after = {
        key: start
        for key, start in sessions.items()
        for o in opens
        if key[0] == o.endpoint_id and o.ts - OPEN_BEFORE <= start <= o.ts + OPEN_AFTER
    }
    purchases = {
        p.event_id
        for p in events
        if p.type == "_monetization.purchase"
        for o in opens
        if p.endpoint_id == o.endpoint_id and o.ts <= p.ts <= o.ts + OPEN_AFTER
    }
    users = len({o.endpoint_id for o in opens})
    by_hour: dict[int, int] = {}
    for start in after.values():
        by_hour[start // 3_600_000] = by_hour.get(start // 3_600_000, 0) + 1

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "sent": len(sends),
        "delivered": len(received),
        "opened": len(opens),
        "devices_targeted": len({e.endpoint_id for e in sends}),
        "delivery_rate": ratio(len(received), len(sends)),
        "open_rate": ratio(len(opens), len(received)),
        "users_opened": users,
        "sessions_after_open": len(after),
        "purchases_after_open": len(purchases),
        "sessions_per_user": ratio(len(after), users),
        "purchases_per_user": ratio(len(purchases), users),
        "sessions_by_hour": [
            {
                "hour": datetime.fromtimestamp(h * 3600, timezone.utc).isoformat(
                    timespec="minutes"
                ),
                "sessions": c,
            }
            for h, c in sorted(by_hour.items())
        ],
    }


def get(collector: LiveCollector, app: App, campaign: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{collector.url}/v1/apps/{app.id}/analytics/campaigns/{campaign}",
        params={"start": "2026-10-01", "end": "2026-10-07", **params},
        headers=bearer(app.admin.token),
        timeout=30,
    )


@pytest.mark.parametrize("campaign", ["ab", "other"])
def test_campaign_figures_match_brute_force(
    collector: LiveCollector, world: tuple[App, list[Event]], campaign: str
) -> None:
    app, events = world
    response = get(collector, app, campaign)
    assert response.status_code == 200, response.text
    got = response.json()
    want = expected(events, campaign, None)
    assert want["sessions_after_open"] > 5 and want["purchases_after_open"] > 3
    assert want["sent"] > want["devices_targeted"]  # some endpoints got two sends
    assert {k: got[k] for k in want} == want
    treatments = ("0", "1", "2") if campaign == "ab" else ("0",)
    assert [t["treatment_id"] for t in got["treatments"]] == list(treatments)
    for t in got["treatments"]:
        assert t["treatment_name"] is None  # the campaign is not stored
        assert {k: t[k] for k in want} == expected(events, campaign, t["treatment_id"])
    assert (got["campaign_id"], got["name"]) == (campaign, None)


def test_hours_are_shown_in_the_ranges_time_zone(
    collector: LiveCollector, world: tuple[App, list[Event]]
) -> None:
    app, _events = world
    utc = get(collector, app, "ab").json()["sessions_by_hour"]
    tokyo = get(collector, app, "ab", tz="Asia/Tokyo", start="2026-10-01", end="2026-10-08")
    assert tokyo.status_code == 200, tokyo.text
    hours = tokyo.json()["sessions_by_hour"]
    assert [h["sessions"] for h in hours] == [h["sessions"] for h in utc]
    assert all(h["hour"].endswith("+09:00") for h in hours)


def test_an_unknown_campaign_has_no_figures_and_a_bad_range_is_400(
    collector: LiveCollector, world: tuple[App, list[Event]]
) -> None:
    app, _events = world
    got = get(collector, app, "nothing").json()
    assert (got["sent"], got["treatments"], got["sessions_by_hour"]) == (0, [], [])
    response = get(collector, app, "ab", start="2026-10-09")
    assert response.status_code == 400
    assert response.json()["Message"].startswith("start")
    too_long = get(collector, app, "x" * 300)
    assert too_long.status_code == 400
    assert too_long.json()["Message"].startswith("campaign-id:")
    denied = httpx.get(
        f"{collector.url}/v1/apps/{app.id}/analytics/campaigns/ab",
        headers=bearer(app.ingest.token),
    )
    assert denied.status_code == 403


def test_a_stored_campaign_names_its_treatments(collector: LiveCollector) -> None:
    app = collector.create_app("campaign-names")
    client = collector.client(app.admin)
    segment = client.create_segment(
        ApplicationId=app.id, WriteSegmentRequest={"Name": "all", "Dimensions": {}}
    )["SegmentResponse"]["Id"]
    message = {"APNSMessage": {"Title": "Hi", "Body": "there"}}
    created = client.create_campaign(
        ApplicationId=app.id,
        WriteCampaignRequest={
            "Name": "ab",
            "SegmentId": segment,
            "TreatmentName": "control",
            "MessageConfiguration": message,
            "HoldoutPercent": 10,
            "Schedule": {"StartTime": "2099-01-01T00:00:00Z", "Frequency": "ONCE"},
            "AdditionalTreatments": [
                {"SizePercent": 45, "TreatmentName": "emoji", "MessageConfiguration": message}
            ],
        },
    )["CampaignResponse"]
    response = get(collector, app, created["Id"])
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["name"] == "ab"
    assert [(t["treatment_id"], t["treatment_name"], t["sent"]) for t in got["treatments"]] == [
        ("0", "control", 0),
        ("1", "emoji", 0),
    ]
