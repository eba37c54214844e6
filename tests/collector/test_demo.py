"""`homing-collector demo`: simulated data, stored through the ingest path."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from homing import limits
from homing.wire import check_endpoint, check_event, parse_timestamp
from homing_collector.campaigns.treatments import assign
from homing_collector.demo import DemoOptions, simulate
from tests.conftest import LiveCollector, run_cli

NOW = datetime(2026, 11, 28, 15, 30, tzinfo=timezone.utc)
NOW_MS = int(NOW.timestamp() * 1000)


def events_of(batches: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, str, dict[str, Any]]]:
    """(arrival ms, endpoint id, event) of every event in the PutEvents bodies."""
    return [
        (arrival, endpoint_id, event)
        for arrival, body in batches
        for endpoint_id, item in body["BatchItem"].items()
        for event in item["Events"].values()
    ]


def test_the_same_seed_gives_the_same_data() -> None:
    options = DemoOptions(devices=40, days=20, seed=7)
    first = simulate(options, last_day=NOW.date(), now_ms=NOW_MS)
    again = simulate(options, last_day=NOW.date(), now_ms=NOW_MS)
    other = simulate(DemoOptions(devices=40, days=20, seed=8), last_day=NOW.date(), now_ms=NOW_MS)
    assert orjson.dumps(first[0]) == orjson.dumps(again[0])
    assert first[1] == again[1]
    assert orjson.dumps(first[0]) != orjson.dumps(other[0])


def test_the_simulation_looks_like_real_traffic() -> None:
    batches, pushes, summary = simulate(
        DemoOptions(devices=300, days=30, seed=3), last_day=NOW.date(), now_ms=NOW_MS
    )
    first_day = NOW.date() - timedelta(days=29)
    events = events_of(batches)
    assert summary.events == len(events) > 5000
    assert all(arrival <= NOW_MS for arrival, _ in batches)
    assert [arrival for arrival, _ in batches] == sorted(arrival for arrival, _ in batches)

    endpoints: dict[str, dict[str, Any]] = {}
    for _, body in batches:
        assert len(body["BatchItem"]) <= limits.MAX_ENDPOINTS_PER_BATCH
        for endpoint_id, item in body["BatchItem"].items():
            assert len(item["Events"]) <= limits.MAX_EVENTS_PER_REQUEST
            check_endpoint(item["Endpoint"], "Endpoint")
            endpoints[endpoint_id] = item["Endpoint"]
    assert len(endpoints) == summary.devices == 300

    types: Counter[str] = Counter()
    days: defaultdict[date, set[str]] = defaultdict(set)
    sessions: defaultdict[str, set[str]] = defaultdict(set)
    late = 0
    for arrival, endpoint_id, event in events:
        check_event(event)
        moment = parse_timestamp(event["Timestamp"])
        at_ms = int(moment.timestamp() * 1000)
        assert at_ms <= arrival, "an event arrives after it happened"
        late += arrival - at_ms > 86_400_000
        assert first_day <= moment.date() <= NOW.date()
        types[event["EventType"]] += 1
        days[moment.date()].add(endpoint_id)
        if event["EventType"] in ("_session.start", "_session.stop"):
            session = event["Session"]
            assert session["Id"].startswith(endpoint_id[-8:])
            sessions[session["Id"]].add(event["EventType"])
    assert late == summary.late_events > 0
    # Every session starts and stops, but those still running now.
    running = [sid for sid, kinds in sessions.items() if kinds == {"_session.start"}]
    assert all(kinds <= {"_session.start", "_session.stop"} for kinds in sessions.values())
    assert len(running) < len(sessions) / 50
    for sid in running:
        started = datetime.strptime(sid[-18:], "%Y%m%d-%H%M%S%f").replace(tzinfo=timezone.utc)
        assert NOW - started < timedelta(days=1), sid
    for name in ("screen.view", "product.view", "cart.add", "checkout.start",
                 "_monetization.purchase", "_campaign.received_background",
                 "_campaign.opened_notification"):  # fmt: skip
        assert types[name] > 0, name
    # A funnel: fewer people at each step.
    assert types["product.view"] > types["cart.add"] > types["checkout.start"]
    assert types["checkout.start"] > types["_monetization.purchase"] == summary.purchases
    assert types["_session.start"] == len(sessions)

    # Users with several devices; demographics of several kinds.
    per_user = Counter(e["User"]["UserId"] for e in endpoints.values() if "User" in e)
    assert max(per_user.values()) >= 2 and len(per_user) == summary.users
    for field in ("Platform", "Model", "AppVersion", "Locale"):
        assert len({e["Demographic"][field] for e in endpoints.values()}) >= 3, field
    assert len({e["Location"]["Country"] for e in endpoints.values()}) >= 5

    # Retention decays: of the devices that started in the first days, fewer are back
    # two weeks later than one day later.
    cohort = days[first_day] | days[first_day + timedelta(days=1)]
    back_soon = cohort & (days[first_day + timedelta(days=2)] | days[first_day + timedelta(3)])
    back_late = cohort & (days[first_day + timedelta(16)] | days[first_day + timedelta(17)])
    assert len(back_soon) > len(back_late)

    # Pushes: every opened notification is for a push delivered to that endpoint before.
    delivered: dict[tuple[str, str], int] = {}
    for p in pushes:
        if p.delivered_ms:  # the first delivery of the campaign to the endpoint
            key = (p.endpoint_id, p.campaign_id)
            delivered[key] = min(delivered.get(key, p.delivered_ms), p.delivered_ms)
    assert 0 < len(delivered) < len(pushes) == summary.pushes_sent
    # The collector's own `_campaign.send`, one per push, when it was sent.
    sends = [(arrival, e) for arrival, _, e in events if e["EventType"] == "_campaign.send"]
    assert len(sends) == len(pushes)
    for arrival, e in sends:
        assert parse_timestamp(e["Timestamp"]).timestamp() * 1000 == arrival
    for _, endpoint_id, event in events:
        if event["EventType"] == "_campaign.opened_notification":
            attributes = event["Attributes"]
            assert set(attributes) == {"campaign_id", "campaign_activity_id", "treatment_id"}
            key = (endpoint_id, attributes["campaign_id"])
            opened = parse_timestamp(event["Timestamp"]).timestamp() * 1000
            assert delivered[key] <= opened


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, args).fetchall()


def test_demo_command_loads_an_app_a_live_collector_serves(start_collector: Any) -> None:
    collector: LiveCollector = start_collector()
    out = run_cli("--db", str(collector.db), "demo", "--devices", "40", "--days", "10", "--json")
    demo = json.loads(out)
    app_id = demo["application_id"]
    assert demo["dashboard"].endswith(f"/dashboard?app={app_id}")
    summary = demo["summary"]
    ((stored,),) = _rows(collector.db, "SELECT count(*) FROM events WHERE app_id = ?", app_id)
    assert stored == summary["events"] > 0
    ((endpoints,),) = _rows(collector.db, "SELECT count(*) FROM endpoints WHERE app_id = ?", app_id)
    assert endpoints == summary["devices"] == 40
    ((late,),) = _rows(
        collector.db,
        "SELECT count(*) FROM events WHERE app_id = ? AND arrival - ts > 86400000",
        app_id,
    )
    assert late == summary["late_events"]

    headers = {"Authorization": f"Bearer {demo['admin']['token']}"}
    app = httpx.get(f"{collector.url}/v1/apps/{app_id}", headers=headers)
    assert app.status_code == 200 and app.json()["Name"] == "Homing Shop (demo)"
    (endpoint_id,) = _rows(
        collector.db, "SELECT endpoint_id FROM endpoints WHERE app_id = ? LIMIT 1", app_id
    )[0]
    endpoint = httpx.get(f"{collector.url}/v1/apps/{app_id}/endpoints/{endpoint_id}",
                         headers=headers).json()  # fmt: skip
    assert endpoint["Demographic"]["Platform"] in ("iOS", "Android", "Linux")


def test_demo_fills_the_push_tables(tmp_path: Path) -> None:
    db = tmp_path / "push.db"
    demo = json.loads(run_cli("--db", str(db), "demo", "--devices", "120", "--days", "40",
                              "--json"))  # fmt: skip
    app_id, summary = demo["application_id"], demo["summary"]
    assert summary["pushes_stored"] is True
    rows = _rows(
        db,
        "SELECT campaign_id, count(*), count(delivered_at) FROM push_messages WHERE app_id = ?"
        " GROUP BY campaign_id ORDER BY campaign_id",
        app_id,
    )
    campaigns = summary["campaigns"]
    assert sorted(row[0] for row in rows) == sorted(
        ["weekend-sale", "welcome-back", *campaigns.values()]
    )
    assert sum(row[1] for row in rows) == summary["pushes_sent"]
    assert sum(row[2] for row in rows) == summary["pushes_delivered"]
    # Numbered as the gateway numbers them: 1, 2, ... per endpoint, and its counter agrees.
    seqs = _rows(
        db,
        "SELECT m.endpoint_id, group_concat(m.seq), e.last_seq FROM push_messages m"
        " JOIN push_endpoints e USING (app_id, endpoint_id) WHERE app_id = ?"
        " GROUP BY m.endpoint_id",
        app_id,
    )
    assert len(seqs) == len({row[0] for row in seqs}) > 0
    for _, numbers, last in seqs:
        assert sorted(int(n) for n in numbers.split(",")) == list(range(1, last + 1))
    (payload,) = _rows(db, "SELECT payload FROM push_messages WHERE app_id = ? LIMIT 1", app_id)[0]
    data = json.loads(payload)["Data"]
    assert data["pinpoint.campaign.campaign_id"] in {"weekend-sale", "welcome-back",
                                                     *campaigns.values()}  # fmt: skip


def test_demo_stores_an_ab_and_a_live_event_campaign(start_collector: Any) -> None:
    collector: LiveCollector = start_collector()
    demo = json.loads(run_cli("--db", str(collector.db), "demo", "--devices", "300", "--days",
                              "30", "--json"))  # fmt: skip
    app_id, ids = demo["application_id"], demo["summary"]["campaigns"]
    ab, event = ids["Spring sale A/B"], ids["Cart reminder"]
    client = collector.client(collector.root_key())
    listed = client.get_campaigns(ApplicationId=app_id)["CampaignsResponse"]["Item"]
    by_id = {c["Id"]: c for c in listed}
    assert set(by_id) == {ab, event}
    assert by_id[ab]["HoldoutPercent"] == 20
    assert by_id[ab]["AdditionalTreatments"][0]["TreatmentName"] == "discount"
    assert by_id[event]["Schedule"]["Frequency"] == "EVENT"
    assert by_id[event]["State"]["CampaignStatus"] != "COMPLETED"  # live
    headers = {"Authorization": f"Bearer {demo['admin']['token']}"}

    def view(campaign_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{collector.url}/v1/apps/{app_id}/analytics/campaigns/{campaign_id}",
            params={"start": demo["summary"]["first_day"], "end": demo["summary"]["last_day"]},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    got = view(ab)
    treatments = {t["treatment_id"]: t for t in got["treatments"]}
    assert [t["treatment_name"] for t in got["treatments"]] == ["control", "discount"]
    assert all(t["sent"] > 10 and t["opened"] > 0 for t in treatments.values())
    # Treatment 0 gets 40% of the segment and "discount" 40%; the holdout 20% gets nothing.
    # Which endpoint gets which is sticky (a hash of the campaign and the endpoint): each
    # endpoint sent to got the treatment that assigns it, and the view counts them. (The
    # split itself is a few dozen devices, which the day the test runs on changes.)
    sent_to: defaultdict[str, set[str]] = defaultdict(set)
    for endpoint_id, body in _rows(
        collector.db,
        "SELECT endpoint_id, body FROM events WHERE app_id = ? AND event_type = '_campaign.send'",
        app_id,
    ):
        attributes = orjson.loads(body)["Attributes"]
        if attributes["campaign_id"] == ab:
            treatment = assign(ab, endpoint_id, holdout_percent=20, sizes=[40])
            assert attributes["treatment_id"] == treatment, endpoint_id
            sent_to[treatment].add(endpoint_id)
    assert {t: len(sent_to[t]) for t in ("0", "1")} == {
        t: treatments[t]["devices_targeted"] for t in ("0", "1")
    }
    reminders = view(event)
    assert reminders["sent"] > reminders["devices_targeted"] > 10  # once a day at most
    assert reminders["opened"] > 0 and reminders["sessions_after_open"] > 0
    # The A/B campaign's run is history: the scheduler does not send it again.
    time.sleep(1.5)
    ((sent,),) = _rows(collector.db, "SELECT count(*) FROM push_messages WHERE campaign_id = ?",
                       ab)  # fmt: skip
    assert sent == got["sent"]
    activities = client.get_campaign_activities(ApplicationId=app_id, CampaignId=ab)
    assert activities["ActivitiesResponse"]["Item"] == []


@pytest.mark.parametrize(("flag", "value"), [("--devices", "0"), ("--days", "0")])
def test_demo_refuses_nonsense(tmp_path: Path, flag: str, value: str, capsys: Any) -> None:
    from homing_collector.cli import main

    assert main(["--db", str(tmp_path / "x.db"), "demo", flag, value]) == 1
    assert flag.lstrip("-") in capsys.readouterr().err
