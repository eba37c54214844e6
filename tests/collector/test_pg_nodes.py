"""Several `homing-collector serve` processes on one PostgreSQL database.

Real processes on loopback, on a database of the tests' own cluster (tests/pg.py): what
one node acknowledges or queues, the others see, and what one of them must do alone (a
campaign's run, the schema's migration) is done once.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.collector.push_stream import Stream
from tests.collector.test_campaign_runs import (
    MESSAGE,
    add_endpoints,
    android_segment,
    wait_for_activity,
)
from tests.conftest import App, LiveCollector, run_cli

Nodes = Callable[..., list[LiveCollector]]
PATH_PARAMETERS_IN = re.compile(r"\{(\w+)\}")


@pytest.fixture(autouse=True)
def quick_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Push streams send heartbeats often, so that a test knows soon that one is open."""
    monkeypatch.setenv("HOMING_PUSH_HEARTBEAT", "0.3")


@pytest.fixture
def start_nodes(postgres_url: str, tmp_path: Path) -> Iterator[Nodes]:
    """A factory: start_nodes(count, *extra_args) -> that many nodes, started together."""
    started: list[LiveCollector] = []

    def start(count: int, *extra_args: str) -> list[LiveCollector]:
        nodes = [
            LiveCollector(tmp_path / f"node-{len(started) + i}.db", db_url=postgres_url,
                          extra_args=extra_args)
            for i in range(count)
        ]  # fmt: skip
        started.extend(node.launch() for node in nodes)
        return [node.wait_ready() for node in nodes]

    yield start
    for node in started:
        with contextlib.suppress(Exception):
            node.stop(signal.SIGKILL, timeout=10)


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def stored_event_ids(url: str, app_id: str) -> Counter[str]:
    rows = query(url, "SELECT event_id FROM events WHERE app_id = %s", (app_id,))
    return Counter(row[0] for row in rows)


def events(ids: list[str], at: str) -> dict[str, dict[str, Any]]:
    return {event_id: {"EventType": "tap", "Timestamp": at} for event_id in ids}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def test_nodes_starting_together_migrate_once(start_nodes: Nodes, postgres_url: str) -> None:
    from homing_collector.storage import pg_schema

    nodes = start_nodes(3)
    versions = [row[0] for row in query(postgres_url, "SELECT version FROM schema_migrations")]
    # Each defined migration, once.
    assert sorted(versions) == [version for version, _sql in pg_schema.PG_MIGRATIONS]
    for node in nodes:
        assert httpx.get(node.url + "/healthz", timeout=10).status_code == 200


def test_three_nodes_store_each_event_once_and_a_push_crosses_nodes(
    start_nodes: Nodes, postgres_url: str
) -> None:
    a, b, c = start_nodes(3)
    app = a.create_app("nodes")
    at = now_iso()
    shared = [f"shared-{i}" for i in range(5)]  # sent through every node
    own: list[str] = []
    for index, node in enumerate((a, b, c)):
        ids = [f"node{index}-{i}" for i in range(20)]
        own += ids
        answer = node.client(app.ingest).put_events(
            ApplicationId=app.id,
            EventsRequest={"BatchItem": {"device-1": {
                "Endpoint": {"ChannelType": "CUSTOM"}, "Events": events(ids + shared, at)}}},
        )  # fmt: skip
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert stored_event_ids(postgres_url, app.id) == Counter(dict.fromkeys(own + shared, 1))

    admin_a = a.client(app.admin)
    admin_a.update_endpoint(ApplicationId=app.id, EndpointId="phone",
                            EndpointRequest={"ChannelType": "CUSTOM"})  # fmt: skip
    with Stream(b.url, app.id, "phone", app.ingest.token) as stream:
        stream.backlog()
        answer = admin_a.send_messages(
            ApplicationId=app.id,
            MessageRequest={
                "Endpoints": {"phone": {}},
                "MessageConfiguration": {"DefaultPushNotificationMessage": {"Title": "Hi"}},
            },
        )
        message_id = answer["MessageResponse"]["EndpointResult"]["phone"]["MessageId"]
        [message] = stream.messages(1, timeout=10)
    assert message.data["MessageId"] == message_id

    for node in (a, b, c):
        assert httpx.get(node.url + "/healthz", timeout=10).status_code == 200
        assert "homing_" in httpx.get(node.url + "/metrics", timeout=10).text


def test_sdk_and_boto3_clients_spread_over_three_nodes_at_once_store_each_event_once(
    start_nodes: Nodes, postgres_url: str, tmp_path: Path
) -> None:
    import homing

    nodes = start_nodes(3)
    app = nodes[0].create_app("spread")
    failures: list[BaseException] = []
    flushed: dict[int, Any] = {}
    at = now_iso()

    def sdk(index: int, node: LiveCollector) -> None:
        with homing.Analytics(app.id, node.url, app.ingest.token, shutdown_timeout=1.0,
                              data_dir=tmp_path / f"sdk-{index}") as analytics:  # fmt: skip
            for n in range(150):
                analytics.record_event("sdk", attributes={"client": str(index), "n": str(n)})
            flushed[index] = analytics.flush(timeout=60)

    def boto(index: int, node: LiveCollector) -> None:
        client = node.client(app.ingest)
        for batch in range(6):
            ids = [f"boto{index}-{batch}-{i}" for i in range(25)]
            request = {"BatchItem": {f"boto-{index}": {
                "Endpoint": {"ChannelType": "CUSTOM"}, "Events": events(ids, at)}}}  # fmt: skip
            answer = client.put_events(ApplicationId=app.id, EventsRequest=request)
            assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
            if batch == 0:  # the same batch again, through another node
                other = nodes[(index + 1) % len(nodes)].client(app.ingest)
                other.put_events(ApplicationId=app.id, EventsRequest=request)

    def run(work: Callable[[int, LiveCollector], None], index: int, node: LiveCollector) -> None:
        try:
            work(index, node)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [
        threading.Thread(target=run, args=(work, index, node))
        for work in (sdk, boto)
        for index, node in enumerate(nodes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures
    assert all(result.remaining == 0 for result in flushed.values()), flushed

    boto_ids = Counter(
        row[0] for row in query(
            postgres_url, "SELECT event_id FROM events WHERE app_id = %s AND event_type = 'tap'",
            (app.id,),
        )
    )  # fmt: skip
    expected = [f"boto{i}-{b}-{e}" for i in range(3) for b in range(6) for e in range(25)]
    assert boto_ids == Counter(dict.fromkeys(expected, 1))
    recorded = Counter(
        (body["Attributes"]["client"], body["Attributes"]["n"])
        for (raw,) in query(
            postgres_url, "SELECT body FROM events WHERE app_id = %s AND event_type = 'sdk'",
            (app.id,),
        )
        for body in [orjson.loads(raw)]
    )  # fmt: skip
    assert recorded == Counter({(str(i), str(n)): 1 for i in range(3) for n in range(150)})


def test_analytics_of_events_sent_through_two_nodes_read_through_a_third(
    start_nodes: Nodes,
) -> None:
    a, b, c = start_nodes(3, "--no-access-log")
    app = a.create_app("analytics")
    day = "2026-10-05"
    for node, endpoint_id in ((a, "phone"), (b, "tablet"), (a, "watch")):
        events = {
            f"{endpoint_id}-{i}": {"EventType": "level.start", "Timestamp": f"{day}T1{i}:00:00Z"}
            for i in range(3)
        }
        answer = httpx.post(
            f"{node.url}/v1/apps/{app.id}/events",
            json={"BatchItem": {endpoint_id: {"Endpoint": {}, "Events": events}}},
            headers={"Authorization": f"Bearer {app.ingest.token}"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
    admin = {"Authorization": f"Bearer {app.admin.token}"}
    usage = httpx.get(
        f"{c.url}/v1/apps/{app.id}/analytics/usage",
        params={"start": day, "end": day, "by": "endpoints"},
        headers=admin,
        timeout=10,
    )
    assert usage.status_code == 200, usage.text
    assert [row["active"] for row in usage.json()["days"]] == [3]
    counts = httpx.get(
        f"{c.url}/v1/apps/{app.id}/analytics/events",
        params={"start": day, "end": day},
        headers=admin,
        timeout=10,
    ).json()
    assert counts["types"] == [{"event_type": "level.start", "count": 9}]


def test_polling_instead_of_listen_still_delivers_across_nodes(
    start_nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMING_PG_LISTEN", "0")
    a, b = start_nodes(2)
    app = a.create_app("polling")
    admin = a.client(app.admin)
    admin.update_endpoint(ApplicationId=app.id, EndpointId="phone",
                          EndpointRequest={"ChannelType": "CUSTOM"})  # fmt: skip
    with Stream(b.url, app.id, "phone", app.ingest.token) as stream:
        stream.backlog()
        admin.send_messages(
            ApplicationId=app.id,
            MessageRequest={
                "Endpoints": {"phone": {}},
                "MessageConfiguration": {"DefaultPushNotificationMessage": {"Title": "Hi"}},
            },
        )
        assert len(stream.messages(1, timeout=10)) == 1


def test_a_node_killed_mid_traffic_loses_no_acknowledged_event_and_stores_none_twice(
    start_nodes: Nodes, postgres_url: str
) -> None:
    a, b = start_nodes(2)
    app = a.create_app("kill")
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    acknowledged: set[str] = set()
    retried = 0
    # Killed from another thread, while a batch may be on its way to it or being stored.
    killer = threading.Timer(0.05, lambda: a.process and a.process.send_signal(signal.SIGKILL))
    try:
        with httpx.Client(timeout=5) as client:
            for batch in range(80):
                if batch == 30:
                    killer.start()
                ids = [f"b{batch}-{i}" for i in range(25)]
                body = orjson.dumps({"BatchItem": {f"device-{batch % 7}": {
                    "Endpoint": {}, "Events": events(ids, now_iso())}}})  # fmt: skip
                # As the SDK does: what got no 202 is sent again, here to the other node.
                for target in (a if batch % 2 else b, b, b, b):
                    try:
                        answer = client.post(f"{target.url}/v1/apps/{app.id}/events",
                                             content=body, headers=headers)  # fmt: skip
                    except httpx.TransportError:
                        retried += 1
                        continue
                    if answer.status_code == 202:
                        acknowledged.update(ids)
                        break
                    retried += 1
                time.sleep(0.01)
    finally:
        killer.cancel()
    assert a.process is not None and a.process.wait(10) == -signal.SIGKILL
    stored = stored_event_ids(postgres_url, app.id)
    assert len(acknowledged) == 80 * 25
    assert set(stored) == acknowledged
    assert max(stored.values()) == 1
    assert retried >= 1  # some batches did meet the dead node


def test_a_campaign_scheduled_while_two_nodes_run_executes_once(
    start_nodes: Nodes, postgres_url: str
) -> None:
    a, b = start_nodes(2)
    app: App = a.create_app("campaign")
    admin = a.client(app.admin)
    android = add_endpoints(admin, app, 60)
    segment_id = android_segment(admin, app)
    # Both schedulers see it due at the same moment.
    soon = datetime.now(timezone.utc) + timedelta(seconds=2)
    campaign = admin.create_campaign(
        ApplicationId=app.id,
        WriteCampaignRequest={
            "Name": f"soon-{uuid.uuid4().hex[:6]}",
            "SegmentId": segment_id,
            "Schedule": {"StartTime": soon.isoformat(), "Frequency": "ONCE"},
            "MessageConfiguration": MESSAGE,
        },
    )["CampaignResponse"]
    activity = wait_for_activity(b.client(app.admin), app, campaign["Id"], timeout=30)
    assert activity["SuccessfulEndpointCount"] == len(android)
    time.sleep(1.5)  # a second run, were there one, would have started by now
    items = admin.get_campaign_activities(ApplicationId=app.id, CampaignId=campaign["Id"])
    assert len(items["ActivitiesResponse"]["Item"]) == 1
    rows = query(
        postgres_url,
        "SELECT endpoint_id FROM push_messages WHERE app_id = %s AND campaign_id = %s",
        (app.id, campaign["Id"]),
    )
    assert Counter(row[0] for row in rows) == Counter(dict.fromkeys(android, 1))


def test_the_cli_manages_apps_and_keys(postgres_url: str) -> None:
    app = orjson.loads(run_cli("--db", postgres_url, "apps", "create", "cli", "--json"))
    assert app["application_id"] in run_cli("--db", postgres_url, "apps", "list")
    root = orjson.loads(run_cli("--db", postgres_url, "keys", "create", "--root", "--json"))
    listed = orjson.loads(run_cli("--db", postgres_url, "keys", "list", "--json"))
    assert {key["access_key_id"] for key in listed} == {
        root["access_key_id"], app["ingest"]["access_key_id"], app["admin"]["access_key_id"]
    }  # fmt: skip
    run_cli("--db", postgres_url, "keys", "revoke", root["access_key_id"])
    listed = orjson.loads(run_cli("--db", postgres_url, "keys", "list", "--json"))
    assert [key["revoked_at"] is not None for key in listed if key["role"] == "root"] == [True]


def test_no_read_answers_500(start_nodes: Nodes) -> None:
    from homing_collector.analytics import kpis
    from homing_collector.dashboard import ASSETS, PAGE
    from homing_collector.routes import OPERATIONS

    [node] = start_nodes(1, "--no-access-log")
    app = node.create_app("sweep")
    root = node.root_key()
    values = {
        "application_id": app.id, "kpi_name": kpis.NAMES[0], "version": "1",
        "name": sorted(ASSETS.keys() - {PAGE})[0],
    }  # fmt: skip
    statuses: dict[str, int] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {root.token}"}, timeout=10) as client:
        for operation in OPERATIONS:
            if operation.method != "GET" or operation.name == "OpenPushStream":
                continue
            path = operation.path
            for name in PATH_PARAMETERS_IN.findall(path):
                path = path.replace(f"{{{name}}}", values.get(name, "missing"))
            answer = client.get(node.url + path)
            statuses[operation.name] = answer.status_code
    assert all(status < 500 for status in statuses.values()), statuses
    analytics = {name: s for name, s in statuses.items() if "Analytics" in name or "Kpi" in name}
    assert analytics and 200 in analytics.values(), analytics
    assert statuses["GetApp"] == statuses["Health"] == statuses["Metrics"] == 200
