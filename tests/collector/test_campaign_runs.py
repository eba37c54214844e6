"""Campaign runs against a live `homing-collector serve`: the scheduler resolves the
segment, splits it into treatments and holdout, and pushes each endpoint once, even
across a kill -9."""

from __future__ import annotations

import contextlib
import math
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest

from tests.collector.push_stream import Stream
from tests.collector.test_analytics_rollups import PgConn, assert_rollups_match_events
from tests.conftest import App, LiveCollector

MESSAGE = {
    "DefaultMessage": {"Title": "Hi {{User.UserAttributes.FirstName}}", "Body": "Sale"},
    "GCMMessage": {"Body": "Sale on {{Demographic.Platform}}", "TimeToLive": 3600},
}


def add_endpoints(admin: Any, app: App, count: int, prefix: str = "device") -> list[str]:
    """`count` endpoints, every other one on android; returns the android ones' ids."""
    android = []
    for start in range(0, count, 100):
        items = []
        for i in range(start, min(count, start + 100)):
            endpoint_id = f"{prefix}-{i:05d}"
            platform = "android" if i % 2 == 0 else "ios"
            if platform == "android":
                android.append(endpoint_id)
            items.append({
                "Id": endpoint_id,
                "ChannelType": "GCM",
                "Demographic": {"Platform": platform},
                "User": {"UserId": f"user-{i}", "UserAttributes": {"FirstName": [f"Ada{i}"]}},
            })  # fmt: skip
        admin.update_endpoints_batch(ApplicationId=app.id, EndpointBatchRequest={"Item": items})
    return android


def android_segment(admin: Any, app: App) -> str:
    response = admin.create_segment(
        ApplicationId=app.id,
        WriteSegmentRequest={
            "Name": "android",
            "Dimensions": {"Demographic": {"Platform": {"Values": ["android"]}}},
        },
    )
    return response["SegmentResponse"]["Id"]  # type: ignore[no-any-return]


def immediate(admin: Any, app: App, segment_id: str, **extra: Any) -> dict[str, Any]:
    request = {
        "Name": "now",
        "SegmentId": segment_id,
        "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
        "MessageConfiguration": MESSAGE,
        **extra,
    }
    response = admin.create_campaign(ApplicationId=app.id, WriteCampaignRequest=request)
    return response["CampaignResponse"]  # type: ignore[no-any-return]


def wait_for_activity(
    admin: Any, app: App, campaign_id: str, state: str = "COMPLETED", timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        items = admin.get_campaign_activities(ApplicationId=app.id, CampaignId=campaign_id)[
            "ActivitiesResponse"
        ]["Item"]
        if items and items[-1]["State"] == state:
            return items[-1]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


def pushes(collector: LiveCollector, app_id: str, campaign_id: str) -> Counter[str]:
    """How many pushes of the campaign each endpoint has stored."""
    rows = collector.query(
        "SELECT endpoint_id FROM push_messages WHERE app_id = ? AND campaign_id = ?",
        app_id,
        campaign_id,
    )
    return Counter(row[0] for row in rows)


def send_events(collector: LiveCollector, app_id: str) -> list[dict[str, Any]]:
    rows = collector.query(
        "SELECT body FROM events WHERE app_id = ? AND event_type = '_campaign.send'", app_id
    )
    return [orjson.loads(row[0]) for row in rows]


def test_an_immediate_campaign_reaches_every_endpoint_of_its_segment_once(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("campaign-run")
    admin = collector.client(app.admin)
    android = add_endpoints(admin, app, 300)
    segment_id = android_segment(admin, app)
    with Stream(collector.url, app.id, android[0], app.ingest.token) as stream:
        campaign = immediate(admin, app, segment_id)
        [message] = stream.messages(1)
    data = message.data["Data"]
    assert data["pinpoint.campaign.campaign_id"] == campaign["Id"]
    assert data["pinpoint.campaign.treatment_id"] == "0"
    assert data["pinpoint.notification.title"] == "Hi Ada0"
    assert data["pinpoint.notification.body"] == "Sale on android"

    activity = wait_for_activity(admin, app, campaign["Id"])
    assert pushes(collector, app.id, campaign["Id"]) == Counter(dict.fromkeys(android, 1))
    assert activity["CampaignId"] == campaign["Id"]
    assert data["pinpoint.campaign.campaign_activity_id"] == activity["Id"]
    assert activity["TotalEndpointCount"] == activity["SuccessfulEndpointCount"] == len(android)
    assert activity["ExecutionMetrics"] == {"ENDPOINT_PRODUCED": str(len(android))}
    assert activity["Result"] == "SUCCESS"
    assert activity["ScheduledStart"] <= activity["Start"] <= activity["End"]
    read = admin.get_campaign(ApplicationId=app.id, CampaignId=campaign["Id"])
    assert read["CampaignResponse"]["State"] == {"CampaignStatus": "COMPLETED"}

    events = send_events(collector, app.id)
    assert len(events) == len(android)
    # Analytics count the sends, but a send is not the endpoint's activity. (An analytics
    # route first: on PostgreSQL it folds what is pending into the rollups.)
    usage = httpx.get(
        f"{collector.url}/v1/apps/{app.id}/analytics/usage",
        headers={"Authorization": f"Bearer {app.admin.token}"},
    )
    assert usage.status_code == 200, usage.text
    on = PgConn(collector.db_url) if collector.db_url else sqlite3.connect(collector.db)
    with contextlib.closing(on) as conn:
        assert_rollups_match_events(conn, app.id)
        active = conn.execute("SELECT count(*) FROM an_active WHERE app_id = ?", (app.id,))
        assert active.fetchone() == (0,)
    assert {e["Attributes"]["campaign_activity_id"] for e in events} == {activity["Id"]}
    # Nothing runs twice: a later look at the schedule adds no activity.
    time.sleep(1.5)
    items = admin.get_campaign_activities(ApplicationId=app.id, CampaignId=campaign["Id"])
    assert len(items["ActivitiesResponse"]["Item"]) == 1
    assert pushes(collector, app.id, campaign["Id"]) == Counter(dict.fromkeys(android, 1))


def test_opted_out_inactive_and_holdout_endpoints_are_counted_not_sent(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("campaign-skips")
    admin = collector.client(app.admin)
    android = add_endpoints(admin, app, 40)
    admin.update_endpoint(
        ApplicationId=app.id, EndpointId=android[0], EndpointRequest={"OptOut": "ALL"}
    )
    admin.update_endpoint(
        ApplicationId=app.id, EndpointId=android[1], EndpointRequest={"EndpointStatus": "INACTIVE"}
    )
    campaign = immediate(admin, app, android_segment(admin, app), HoldoutPercent=30)
    activity = wait_for_activity(admin, app, campaign["Id"])
    metrics = {k: int(v) for k, v in activity["ExecutionMetrics"].items()}
    assert metrics["ENDPOINT_PRODUCED"] == len(android)
    assert metrics.get("ENDPOINT_INACTIVE") == 1
    sent = pushes(collector, app.id, campaign["Id"])
    assert android[0] not in sent and android[1] not in sent
    assert sum(sent.values()) == activity["TotalEndpointCount"]
    skipped = sum(v for k, v in metrics.items() if k != "ENDPOINT_PRODUCED")
    assert activity["TotalEndpointCount"] + skipped == len(android)


def test_an_ab_campaign_with_holdout_splits_within_binomial_error_and_sticks(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("campaign-ab")
    admin = collector.client(app.admin)
    android = add_endpoints(admin, app, 4000)  # 2,000 in the segment
    segment_id = android_segment(admin, app)
    message_b = {"DefaultMessage": {"Title": "B", "Body": "b"}}
    treatments = [{"SizePercent": 30, "TreatmentName": "B", "MessageConfiguration": message_b}]
    campaign = immediate(admin, app, segment_id, HoldoutPercent=20, AdditionalTreatments=treatments)
    activity = wait_for_activity(admin, app, campaign["Id"])
    n = len(android)
    holdout = int(activity["ExecutionMetrics"]["TREATMENT_HOLDOUT"])
    by_treatment = treatment_of(collector, app.id, campaign["Id"])
    counts = Counter(by_treatment.values())
    for observed, share in ((holdout, 0.2), (counts["0"], 0.5), (counts["1"], 0.3)):
        sigma = math.sqrt(n * share * (1 - share))
        assert abs(observed - n * share) < 4 * sigma, (observed, share)
    assert holdout + counts["0"] + counts["1"] == n

    # A second run of the same campaign puts every endpoint in the same treatment.
    soon = datetime.now(timezone.utc) + timedelta(seconds=2)
    again = admin.update_campaign(
        ApplicationId=app.id, CampaignId=campaign["Id"],
        WriteCampaignRequest={"Schedule": {"StartTime": soon.isoformat(), "Frequency": "ONCE"}},
    )  # fmt: skip
    assert again["CampaignResponse"]["Version"] == 2
    deadline = time.monotonic() + 60
    while True:
        items = admin.get_campaign_activities(ApplicationId=app.id, CampaignId=campaign["Id"])
        done = [a for a in items["ActivitiesResponse"]["Item"] if a["State"] == "COMPLETED"]
        if len(done) == 2:
            break
        assert time.monotonic() < deadline, items
        time.sleep(0.1)
    second = treatment_of(collector, app.id, campaign["Id"], activity=done[1]["Id"])
    assert second == by_treatment
    assert int(done[1]["ExecutionMetrics"]["TREATMENT_HOLDOUT"]) == holdout


def treatment_of(
    collector: LiveCollector, app_id: str, campaign_id: str, activity: str | None = None
) -> dict[str, str]:
    rows = collector.query(
        "SELECT body, endpoint_id FROM events WHERE app_id = ? AND event_type = '_campaign.send'",
        app_id,
    )
    found = {}
    for body, endpoint_id in rows:
        attributes = orjson.loads(body)["Attributes"]
        if attributes["campaign_id"] != campaign_id:
            continue
        if activity is None or attributes["campaign_activity_id"] == activity:
            if activity is None and endpoint_id in found:
                continue
            found[endpoint_id] = attributes["treatment_id"]
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_a_kill_9_mid_run_then_a_restart_sends_each_endpoint_exactly_once(
    start_collector: Callable[..., LiveCollector], workers: int
) -> None:
    live = start_collector(None, "--workers", str(workers))
    app = live.create_app("campaign-crash")
    admin = live.client(app.admin)
    android = add_endpoints(admin, app, 10_000)  # 5,000 in the segment
    # A send rate well below the segment's size: the run is under way when it is killed.
    campaign = immediate(
        admin, app, android_segment(admin, app), Limits={"MessagesPerSecond": 2000}
    )
    deadline = time.monotonic() + 60
    while sum(pushes(live, app.id, campaign["Id"]).values()) < 500:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert live.process is not None
    live.process.kill()
    live.process.wait(timeout=10)
    sent_before = sum(pushes(live, app.id, campaign["Id"]).values())
    assert sent_before < len(android), "the run ended before the kill: nothing was tested"

    restarted = start_collector(live.db, "--workers", str(workers))
    admin = restarted.client(app.admin)
    activity = wait_for_activity(admin, app, campaign["Id"], timeout=90)
    sent = pushes(live, app.id, campaign["Id"])
    assert sent == Counter(dict.fromkeys(android, 1))
    assert activity["TotalEndpointCount"] == len(android)
    assert len(send_events(live, app.id)) == len(android)
    restarted.stop(signal.SIGTERM)


def put_events(url: str, app_id: str, token: str, events: dict[str, dict[str, Any]]) -> None:
    """PutEvents: {endpoint id: {event id: event}}."""
    body = {"BatchItem": {endpoint_id: {"Endpoint": {}, "Events": items}
                          for endpoint_id, items in events.items()}}  # fmt: skip
    response = httpx.post(
        f"{url}/v1/apps/{app_id}/events",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.text


def purchase(amount: float, sku: str = "A-1", session: str | None = None) -> dict[str, Any]:
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {"EventType": "purchase", "Timestamp": now, "Attributes": {"sku": sku},
             "Metrics": {"amount": amount}}  # fmt: skip
    if session is not None:
        event["Session"] = {"Id": session, "StartTimestamp": now}
    return event


def event_campaign(
    admin: Any, app: App, segment_id: str, filter_type: str, **extra: Any
) -> dict[str, Any]:
    request = {
        "Name": "thanks",
        "SegmentId": segment_id,
        "Schedule": {
            "StartTime": "IMMEDIATE",
            "Frequency": "EVENT",
            "EventFilter": {
                "FilterType": filter_type,
                "Dimensions": {
                    "EventType": {"Values": ["purchase"]},
                    "Attributes": {"sku": {"Values": ["A-1"]}},
                    "Metrics": {"amount": {"ComparisonOperator": "GREATER_THAN", "Value": 5}},
                },
            },
        },
        "MessageConfiguration": {"DefaultMessage": {"Title": "Thanks", "Body": "for {{Id}}"}},
        **extra,
    }
    response = admin.create_campaign(ApplicationId=app.id, WriteCampaignRequest=request)
    return response["CampaignResponse"]  # type: ignore[no-any-return]


def wait_for_pushes(
    collector: LiveCollector, app_id: str, campaign_id: str, count: int
) -> Counter[str]:
    deadline = time.monotonic() + 10
    while sum((found := pushes(collector, app_id, campaign_id)).values()) < count:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def test_an_event_campaign_pushes_to_the_endpoint_that_sent_a_matching_event(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("campaign-event")
    admin = collector.client(app.admin)
    add_endpoints(admin, app, 6)  # device-00000, -00002, -00004 on android
    campaign = event_campaign(admin, app, android_segment(admin, app), "ENDPOINT")
    assert campaign["State"] == {"CampaignStatus": "SCHEDULED"}
    time.sleep(1)  # the filters reach every process within a second
    with Stream(collector.url, app.id, "device-00000", app.ingest.token) as stream:
        put_events(collector.url, app.id, app.ingest.token, {
            "device-00000": {"e1": purchase(9.5)},
            "device-00002": {"e2": purchase(1.0), "e3": purchase(9.5, sku="B-2")},
            "device-00001": {"e4": purchase(9.5)},  # ios: outside the segment
        })  # fmt: skip
        [message] = stream.messages(1)
    data = message.data["Data"]
    assert data["pinpoint.campaign.campaign_id"] == campaign["Id"]
    assert data["pinpoint.notification.body"] == "for device-00000"
    time.sleep(0.5)
    assert pushes(collector, app.id, campaign["Id"]) == Counter({"device-00000": 1})
    # The same event sent again is answered once; a second purchase is a second message.
    put_events(collector.url, app.id, app.ingest.token, {"device-00000": {"e1": purchase(9.5)}})
    put_events(collector.url, app.id, app.ingest.token, {"device-00000": {"e5": purchase(7.0)}})
    assert wait_for_pushes(collector, app.id, campaign["Id"], 2) == Counter({"device-00000": 2})
    [activity] = admin.get_campaign_activities(ApplicationId=app.id, CampaignId=campaign["Id"])[
        "ActivitiesResponse"
    ]["Item"]
    assert activity["TotalEndpointCount"] == 2
    assert activity["ExecutionMetrics"]["FILTERED_OUT_BY_SEGMENT"] == "1"


def test_the_session_limit_caps_an_event_campaigns_messages_per_session_of_the_endpoint(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("campaign-session-cap")
    admin = collector.client(app.admin)
    add_endpoints(admin, app, 2)  # device-00000 on android
    segment_id = android_segment(admin, app)
    campaign = event_campaign(admin, app, segment_id, "ENDPOINT", Limits={"Session": 2})
    time.sleep(1)
    # Three matching events of one session in one batch, then one of another session,
    # then one outside any session: the cap holds inside the batch, per session.
    put_events(collector.url, app.id, app.ingest.token, {"device-00000": {
        f"e{i}": purchase(9.5, session="s1") for i in range(3)}})  # fmt: skip
    put_events(collector.url, app.id, app.ingest.token,
               {"device-00000": {"e3": purchase(9.5, session="s2")}})  # fmt: skip
    put_events(collector.url, app.id, app.ingest.token, {"device-00000": {"e4": purchase(9.5)}})
    assert wait_for_pushes(collector, app.id, campaign["Id"], 4) == Counter({"device-00000": 4})
    # One more event of the first session, in a later batch: still capped.
    put_events(collector.url, app.id, app.ingest.token,
               {"device-00000": {"e5": purchase(9.5, session="s1")}})  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        [activity] = admin.get_campaign_activities(ApplicationId=app.id, CampaignId=campaign["Id"])[
            "ActivitiesResponse"
        ]["Item"]
        if activity["ExecutionMetrics"].get("SESSION_CAP") == "2":
            break
        assert time.monotonic() < deadline, activity
        time.sleep(0.05)
    assert pushes(collector, app.id, campaign["Id"]) == Counter({"device-00000": 4})
    assert activity["TotalEndpointCount"] == 4


def test_a_total_cap_holds_for_matches_of_one_batch(collector: LiveCollector) -> None:
    app = collector.create_app("campaign-total-batch")
    admin = collector.client(app.admin)
    add_endpoints(admin, app, 2)
    campaign = event_campaign(
        admin, app, android_segment(admin, app), "ENDPOINT", Limits={"Total": 1}
    )
    time.sleep(1)
    put_events(collector.url, app.id, app.ingest.token, {"device-00000": {
        "e1": purchase(9.5), "e2": purchase(8.0)}})  # fmt: skip
    assert wait_for_pushes(collector, app.id, campaign["Id"], 1) == Counter({"device-00000": 1})
    time.sleep(0.5)
    assert pushes(collector, app.id, campaign["Id"]) == Counter({"device-00000": 1})


def test_a_system_filter_matches_only_events_sent_with_an_admin_key(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("campaign-system-event")
    admin = collector.client(app.admin)
    add_endpoints(admin, app, 4)
    campaign = event_campaign(admin, app, android_segment(admin, app), "SYSTEM")
    time.sleep(1)
    put_events(collector.url, app.id, app.ingest.token, {"device-00000": {"e1": purchase(9.5)}})
    put_events(collector.url, app.id, app.admin.token, {"device-00002": {"e2": purchase(9.5)}})
    assert wait_for_pushes(collector, app.id, campaign["Id"], 1) == Counter({"device-00002": 1})
    time.sleep(0.5)
    assert pushes(collector, app.id, campaign["Id"]) == Counter({"device-00002": 1})


def test_campaign_kpis_count_the_campaigns_own_messages(collector: LiveCollector) -> None:
    app = collector.create_app("campaign-kpis")
    admin = collector.client(app.admin)
    android = add_endpoints(admin, app, 20)
    segment_id = android_segment(admin, app)
    campaign = immediate(admin, app, segment_id)
    other = immediate(admin, app, segment_id)
    wait_for_activity(admin, app, campaign["Id"])
    wait_for_activity(admin, app, other["Id"])
    # The first endpoint's device acknowledges the campaign's message: it is delivered.
    [(message_id,)] = collector.query(
        "SELECT message_id FROM push_messages WHERE app_id = ? AND campaign_id = ?"
        " AND endpoint_id = ?",
        app.id,
        campaign["Id"],
        android[0],
    )
    response = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/endpoints/{android[0]}/stream/acks",
        json={"MessageIds": [message_id]},
        headers={"Authorization": f"Bearer {app.ingest.token}"},
    )
    assert response.status_code == 202, response.text

    def kpi(campaign_id: str, name: str) -> list[dict[str, Any]]:
        answer = admin.get_campaign_date_range_kpi(
            ApplicationId=app.id, CampaignId=campaign_id, KpiName=name
        )["CampaignDateRangeKpiResponse"]
        assert (answer["CampaignId"], answer["KpiName"]) == (campaign_id, name)
        return answer["KpiResult"]["Rows"]  # type: ignore[no-any-return]

    [row] = kpi(campaign["Id"], "unique-deliveries")
    assert row["Values"] == [{"Key": "UniqueDeliveries", "Type": "Double", "Value": "1.0"}]
    [row] = kpi(campaign["Id"], "successful-delivery-rate")
    assert float(row["Values"][0]["Value"]) == pytest.approx(1 / len(android))
    [row] = kpi(other["Id"], "unique-deliveries")
    assert row["Values"][0]["Value"] == "0.0"
    days = kpi(campaign["Id"], "unique-deliveries-grouped-by-date")
    assert sum(float(d["Values"][0]["Value"]) for d in days) == 1.0
    assert all(d["GroupedBys"][0]["Key"] == "Date" for d in days)
    for campaign_id, name in (("nope", "unique-deliveries"),
                              (campaign["Id"], "homing-daily-active-users")):  # fmt: skip
        with pytest.raises(admin.exceptions.NotFoundException):
            kpi(campaign_id, name)
