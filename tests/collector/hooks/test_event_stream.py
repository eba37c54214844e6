"""Event streams on a live collector: PutEventStream's rules, signed gzip NDJSON batches
of Pinpoint records at a real receiver, the file sink, and nothing lost across kill -9."""

from __future__ import annotations

import gzip
import json
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from homing_collector.hooks.streams import BATCH_EVENTS
from homing_collector.storage import outbox as outbox_sql
from homing_collector.storage.migrations import migrate
from tests.collector.hooks.receiver import Answer, Receiver, always, serving
from tests.conftest import App, LiveCollector

# The tests here start their own collectors, on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_backends


def records_of(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every record the receiver got, once each call is verified with `secret`."""
    found = []
    for got in receiver.received:
        Webhook(secret).verify(got.body, got.headers, json_parse=False)  # raises if not
        assert got.headers["content-encoding"] == "gzip"
        assert got.headers["content-type"] == "application/x-ndjson"
        found += [orjson.loads(line) for line in gzip.decompress(got.body).splitlines()]
    return found


def send_events(url: str, app: App, count: int, *, prefix: str = "e", per_batch: int = 100) -> None:
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for start in range(0, count, per_batch):
            events = {
                f"{prefix}{i}": {
                    "EventType": "play",
                    "Timestamp": "2026-12-01T10:00:00.000Z",
                    "Attributes": {"n": str(i)},
                }
                for i in range(start, min(count, start + per_batch))
            }
            body = {"BatchItem": {"device-1": {"Endpoint": {"Demographic": {"Platform": "linux"}},
                                              "Events": events}}}  # fmt: skip
            response = client.post(f"/v1/apps/{app.id}/events", content=orjson.dumps(body))
            assert response.status_code == 202, response.text


def secret_of(live: LiveCollector, app: App) -> str:
    response = httpx.get(
        f"{live.url}/v1/apps/{app.id}/hooks/secrets",
        headers={"Authorization": f"Bearer {app.admin.token}"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["Secret"])


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_put_get_delete_in_botocore_shapes(
    start_collector: Callable[..., LiveCollector], tmp_path: Path
) -> None:
    live = start_collector(None, "--stream-dir", str(tmp_path / "streams"))
    app = live.create_app()
    client = live.client(app.admin)
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_event_stream(ApplicationId=app.id)
    put = client.put_event_stream(
        ApplicationId=app.id,
        WriteEventStream={"DestinationStreamArn": "https://hooks.example.com/x", "RoleArn": "r"},
    )["EventStream"]
    assert put["ApplicationId"] == app.id
    assert put["DestinationStreamArn"] == "https://hooks.example.com/x"
    assert put["RoleArn"] == "r"
    assert put["LastUpdatedBy"] == app.admin.access_key_id
    assert put["LastModifiedDate"].endswith("Z")
    assert client.get_event_stream(ApplicationId=app.id)["EventStream"] == put
    assert client.delete_event_stream(ApplicationId=app.id)["EventStream"] == put
    with pytest.raises(client.exceptions.NotFoundException):
        client.delete_event_stream(ApplicationId=app.id)
    # An ingest key may not touch it.
    with pytest.raises(client.exceptions.ForbiddenException):
        live.client(app.ingest).get_event_stream(ApplicationId=app.id)


@pytest.mark.parametrize(
    ("destination", "rule"),
    [
        ("arn:aws:kinesis:us-east-1:123456789012:stream/s", "cannot write to Amazon Kinesis"),
        ("http://hooks.example.com/x", "http:// is allowed only to a loopback address"),
        ("ftp://hooks.example.com/x", "must be an https:// URL"),
        ("", "must be an https:// URL"),
        ("file:///etc", "a file:// directory must be one the operator allowed"),
        ("file://{streams}/../elsewhere", "a file:// directory must be one the operator allowed"),
        ("file://host/x", "must name an absolute local directory"),
    ],
)
def test_a_destination_breaking_the_rules_is_a_400_naming_it(
    collector_with_dir: tuple[LiveCollector, App, Path], destination: str, rule: str
) -> None:
    live, app, streams = collector_with_dir
    client = live.client(app.admin)
    with pytest.raises(client.exceptions.BadRequestException) as caught:
        client.put_event_stream(
            ApplicationId=app.id,
            WriteEventStream={
                "DestinationStreamArn": destination.format(streams=streams),
                "RoleArn": "arn:aws:iam::1:role/r",
            },
        )
    message = caught.value.response["Error"]["Message"]
    assert message.startswith("DestinationStreamArn: "), message
    assert rule in message


def test_a_body_without_the_fields_is_a_400_naming_them(
    collector_with_dir: tuple[LiveCollector, App, Path],
) -> None:
    live, app, _ = collector_with_dir
    headers = {"Authorization": f"Bearer {app.admin.token}"}
    for body, field in (({"RoleArn": "r"}, "DestinationStreamArn"),
                        ({"DestinationStreamArn": "https://a.example"}, "RoleArn")):  # fmt: skip
        response = httpx.post(f"{live.url}/v1/apps/{app.id}/eventstream", json=body,
                              headers=headers)  # fmt: skip
        assert response.status_code == 400
        assert response.json()["Message"].startswith(f"{field}: ")


@pytest.fixture(scope="module")
def collector_with_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("streams")
    live = LiveCollector(base / "c.db", extra_args=("--stream-dir", str(base / "streams")))
    live.start()
    try:
        yield live, live.create_app(), base / "streams"
    finally:
        live.stop()


def test_every_event_reaches_the_receiver_as_signed_records(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector()
    app = live.create_app()
    with serving(always(Answer(200))) as (receiver,):
        live.client(app.admin).put_event_stream(
            ApplicationId=app.id,
            WriteEventStream={"DestinationStreamArn": receiver.url, "RoleArn": "ignored"},
        )
        secret = secret_of(live, app)
        send_events(live.url, app, 1200)
        assert wait_for(lambda: len(records_of(receiver, secret)) >= 1200)
        records = records_of(receiver, secret)
        lag = f'homing_event_stream_lag_events{{application="{app.id}"}} 0'
        assert wait_for(lambda: lag in httpx.get(f"{live.url}/metrics").text)
        # The event-stream process makes the deliveries, and reports them within a second.
        attempts = f'homing_hook_attempts_total{{destination="{receiver.url}"}}'
        assert wait_for(lambda: attempts in httpx.get(f"{live.url}/metrics").text)
        metrics = httpx.get(f"{live.url}/metrics").text
    assert [r["event_id"] for r in records] == [f"e{i}" for i in range(1200)]  # in order
    first = records[0]
    assert first["event_type"] == "play"
    assert first["client"] == {"client_id": "device-1"}
    assert first["application"]["app_id"] == app.id
    assert first["attributes"] == {"n": "0"}
    assert first["device"]["platform"] == {"name": "linux"}
    assert first["event_timestamp"] == 1796119200000
    assert f'homing_hook_dead_letters{{destination="{receiver.url}"}} 0' in metrics
    assert f'homing_hook_attempts_total{{destination="{receiver.url}"}}' in metrics


def test_the_file_sink_writes_hourly_files(
    collector_with_dir: tuple[LiveCollector, App, Path],
) -> None:
    live, app, streams = collector_with_dir
    live.client(app.admin).put_event_stream(
        ApplicationId=app.id,
        WriteEventStream={"DestinationStreamArn": f"file://{streams}/out", "RoleArn": "r"},
    )
    send_events(live.url, app, 300, prefix="f")
    folder = streams / "out" / app.id

    def lines() -> list[dict[str, Any]]:
        # Only whole lines: the sink may be appending a batch while the file is read.
        texts = [path.read_text() for path in sorted(folder.glob("*.ndjson"))]
        return [json.loads(line) for text in texts
                for line in text[: text.rfind("\n") + 1].splitlines()]  # fmt: skip

    assert wait_for(lambda: folder.exists() and len(lines()) >= 300)
    assert sorted(r["event_id"] for r in lines()) == sorted(f"f{i}" for i in range(300))
    hour = time.strftime("%Y-%m-%d-%H", time.gmtime(lines()[0]["arrival_timestamp"] // 1000))
    assert (folder / f"{hour}.ndjson").exists()


def test_no_event_is_lost_across_kill_9(start_collector: Callable[..., LiveCollector]) -> None:
    live = start_collector()
    app = live.create_app()
    total = 3000
    with serving(always(Answer(200, delay=0.002))) as (receiver,):
        live.client(app.admin).put_event_stream(
            ApplicationId=app.id,
            WriteEventStream={"DestinationStreamArn": receiver.url, "RoleArn": "r"},
        )
        secret = secret_of(live, app)
        send_events(live.url, app, total // 2, per_batch=50)
        # Killed while the stream is behind: batches queued, in flight and not yet taken.
        assert wait_for(lambda: len(receiver.received) >= 1)
        assert live.process is not None
        live.process.kill()
        assert live.process.wait(10) == -signal.SIGKILL
        [(stored,)] = live.query("SELECT count(*) FROM events")
        assert stored == total // 2
        restarted = start_collector(live.db)
        send_events(restarted.url, app, total - total // 2, prefix="late", per_batch=50)

        def got() -> set[str]:
            return {r["event_id"] for r in records_of(receiver, secret)}

        if not wait_for(lambda: len(got()) >= total, timeout=60):
            rows = restarted.query(
                "SELECT seq, state, attempts, lease_owner, lease_until, last_error"
                " FROM outbox WHERE state != 'delivered'"
            )
            cursor = restarted.query("SELECT cursor FROM event_streams")
            raise AssertionError(f"{len(got())} of {total} arrived; outbox {rows}, {cursor}")
        ids = [r["event_id"] for r in records_of(receiver, secret)]
    expected = {f"e{i}" for i in range(total // 2)} | {
        f"late{i}" for i in range(total - total // 2)
    }
    assert set(ids) == expected
    # At least once: a batch in flight at the kill may come twice, with its webhook-id; a
    # batch holds what the stream found since its last pass, BATCH_EVENTS at most.
    webhook_ids = [got.headers["webhook-id"] for got in receiver.received]
    again = len(webhook_ids) - len(set(webhook_ids))
    assert len(ids) - len(expected) <= BATCH_EVENTS * again


def test_dead_letters_are_listed_and_replayed_by_the_api_and_the_cli(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector()
    app = live.create_app()
    admin = {"Authorization": f"Bearer {app.admin.token}"}
    refusing = True

    def script(_n: int, _body: bytes) -> Answer:
        # 400: refused for good, so dead-lettered at once, with no retry budget to wait for.
        return Answer(400 if refusing else 200, body=b"no such tenant")

    base = f"{live.url}/v1/apps/{app.id}/hooks/dead-letters"
    with serving(script) as (receiver,):
        live.client(app.admin).put_event_stream(
            ApplicationId=app.id,
            WriteEventStream={"DestinationStreamArn": receiver.url, "RoleArn": "r"},
        )

        def listed() -> list[dict[str, Any]]:
            answer = httpx.get(base, headers=admin)
            assert answer.status_code == 200, answer.text
            return list(answer.json()["Item"])

        secret = secret_of(live, app)
        for burst in range(3):
            send_events(live.url, app, 400, prefix=f"b{burst}-")
            # Each call refused is dead-lettered at once. How many calls a burst takes
            # depends on how the stream's passes meet the commits: wait for them all.
            assert wait_for(
                lambda burst=burst: (
                    len(records_of(receiver, secret)) == 400 * (burst + 1)
                    and len(listed()) == len(receiver.received)
                )
            )
        letters = listed()
        assert len(letters) >= 3
        assert {letter["Destination"] for letter in letters} == {receiver.url}
        assert all(letter["LastError"] == "400: no such tenant" for letter in letters)
        assert all(letter["Attempts"] == 1 for letter in letters)
        page = httpx.get(base, params={"page-size": "2"}, headers=admin).json()
        assert [i["Id"] for i in page["Item"]] == [i["Id"] for i in letters[:2]]
        rest = httpx.get(base, params={"token": page["NextToken"]}, headers=admin).json()
        assert [i["Id"] for i in rest["Item"]] == [i["Id"] for i in letters[2:]]
        bad = httpx.get(base, params={"page-size": "0"}, headers=admin)
        assert bad.status_code == 400 and bad.json()["Message"].startswith("page-size: ")

        printed = json.loads(live.cli("hooks", "dead-letters", app.id,
                                     "--json"))  # fmt: skip
        assert [row["id"] for row in printed] == [letter["Id"] for letter in letters]

        refusing = False
        one = httpx.post(f"{base}/{letters[0]['Id']}/replay", headers=admin)
        assert one.status_code == 200 and one.json() == {"Replayed": 1}
        missing = httpx.post(f"{base}/msg_nothing/replay", headers=admin)
        assert missing.status_code == 404
        assert f"Replaying {len(letters) - 1} dead letters" in live.cli(
            "hooks", "replay", app.id, "--all"
        )
        assert wait_for(lambda: len(records_of(receiver, secret)) >= 2400)
        assert listed() == []
        assert "No dead letters" in live.cli("hooks", "dead-letters", app.id)
    ids = [r["event_id"] for r in records_of(receiver, secret)]
    sent = [f"b{burst}-{i}" for burst in range(3) for i in range(400)]
    assert sorted(ids) == sorted(sent * 2)  # refused, then delivered


def test_with_two_workers_every_event_is_streamed_once(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector(None, "--workers", "2")
    app = live.create_app()
    with serving(always(Answer(200))) as (receiver,):
        live.client(app.admin).put_event_stream(
            ApplicationId=app.id,
            WriteEventStream={"DestinationStreamArn": receiver.url, "RoleArn": "r"},
        )
        secret = secret_of(live, app)
        for burst in range(4):
            send_events(live.url, app, 500, prefix=f"w{burst}-", per_batch=50)
            time.sleep(0.3)
        assert wait_for(lambda: len(records_of(receiver, secret)) >= 2000)
        time.sleep(1)  # time for a batch sent twice to show
        ids = [r["event_id"] for r in records_of(receiver, secret)]
    assert sorted(ids) == sorted(f"w{b}-{i}" for b in range(4) for i in range(500))
    assert ids == sorted(ids, key=lambda i: (int(i[1]), int(i.split("-")[1])))  # in order


def test_events_after_the_newest_were_deleted_are_still_streamed(
    start_collector: Callable[..., LiveCollector],
) -> None:
    """SQLite gives the rowids of deleted last rows again: the cursor must not skip them."""
    live = start_collector()
    app = live.create_app()
    admin = live.client(app.admin)
    with serving(always(Answer(200))) as (receiver,):
        admin.put_event_stream(
            ApplicationId=app.id,
            WriteEventStream={"DestinationStreamArn": receiver.url, "RoleArn": "r"},
        )
        secret = secret_of(live, app)
        send_events(live.url, app, 50, prefix="before")
        assert wait_for(lambda: len(records_of(receiver, secret)) == 50)
        admin.delete_endpoint(ApplicationId=app.id, EndpointId="device-1")  # the newest rows
        send_events(live.url, app, 20, prefix="after")
        assert wait_for(lambda: len(records_of(receiver, secret)) == 70)
        ids = [r["event_id"] for r in records_of(receiver, secret)]
    assert ids[50:] == [f"after{i}" for i in range(20)]


def test_events_after_retention_deleted_the_newest_are_still_streamed(
    start_collector: Callable[..., LiveCollector],
) -> None:
    """Retention may delete the rows of the largest rowids (history that arrived last):
    the stream's cursor must not skip the rowids SQLite then gives again."""
    live = start_collector()
    app = live.create_app()
    admin = live.client(app.admin)
    headers = {"Authorization": f"Bearer {app.admin.token}"}
    with serving(always(Answer(200))) as (receiver,):
        admin.put_event_stream(
            ApplicationId=app.id,
            WriteEventStream={"DestinationStreamArn": receiver.url, "RoleArn": "r"},
        )
        secret = secret_of(live, app)
        send_events(live.url, app, 50, prefix="old")  # six days old
        assert wait_for(lambda: len(records_of(receiver, secret)) == 50)
        answer = httpx.put(
            f"{live.url}/v1/apps/{app.id}/retention", json={"EventsDays": 1}, headers=headers
        )
        assert answer.status_code == 200, answer.text

        def stored() -> int:
            return int(live.query("SELECT count(*) FROM events")[0][0])

        assert wait_for(lambda: stored() == 0, timeout=30)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        events = {f"new{i}": {"EventType": "play", "Timestamp": now} for i in range(20)}
        response = httpx.post(
            f"{live.url}/v1/apps/{app.id}/events", json={"BatchItem": {"device-1": {
                "Events": events}}}, headers={"Authorization": f"Bearer {app.ingest.token}"},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        assert wait_for(lambda: len(records_of(receiver, secret)) == 70)
        ids = [r["event_id"] for r in records_of(receiver, secret)]
    assert ids[50:] == [f"new{i}" for i in range(20)]


APP_ID = "a" * 32


def test_a_stream_reads_the_events_after_its_cursor_by_rowid(tmp_path: Path) -> None:
    # A pass, and the lag in /metrics, must cost what they read, not what the application
    # holds: read through the application's index and sorted, every pass read every event.
    conn = sqlite3.connect(tmp_path / "plans.db", isolation_level=None)
    migrate(conn)
    conn.execute(
        "INSERT INTO apps (id, name, created_at, tags) VALUES (?, 'plans', '2026-12-01', '{}')",
        (APP_ID,),
    )
    outbox_sql.put_stream(conn, APP_ID, "https://example.com/", "", "2026-12-01", "root")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    outbox_sql.stream_rows(conn, APP_ID, 0, 100)
    outbox_sql.gauges(conn)
    conn.set_trace_callback(None)
    reads = [sql for sql in statements if "FROM events WHERE rowid >" in sql]
    assert len(reads) == 2, statements
    for sql in reads:
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING INTEGER PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, (sql, plan)


def test_a_pass_does_not_move_past_events_committed_while_it_reads(tmp_path: Path) -> None:
    """A pass that found fewer events than it may take moves the cursor to the end of what
    it looked through: that end must be read in the same snapshot as the events, or those
    committed in between (by another worker's writer) are skipped, never streamed."""
    path = tmp_path / "race.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")  # as the collector's: readers and a writer at once
    migrate(conn)
    conn.execute(
        "INSERT INTO apps (id, name, created_at, tags) VALUES (?, 'race', '2026-12-01', '{}')",
        (APP_ID,),
    )

    def store(db: sqlite3.Connection, ids: range) -> None:
        db.executemany(
            "INSERT INTO events (app_id, endpoint_id, event_id, event_type, ts, arrival, body,"
            " hour) VALUES (?, 'device-1', ?, 'play', 0, 0, '{}', 0)",
            [(APP_ID, f"e{i}") for i in ids],
        )

    store(conn, range(3))
    other = sqlite3.connect(path, isolation_level=None)
    commits = [range(3, 5)]

    def commit_between(sql: str) -> None:
        # Once the events were read, another writer commits two more.
        if "max(rowid)" in sql and commits:
            store(other, commits.pop())

    reader = sqlite3.connect(path, isolation_level=None)
    reader.set_trace_callback(commit_between)
    rows, to = outbox_sql.stream_rows(reader, APP_ID, 0, 100)
    assert not commits
    assert other.execute("SELECT count(*) FROM events").fetchone() == (5,)  # it committed
    assert [row[2] for row in rows] == ["e0", "e1", "e2"]
    assert to == 3  # not 5: e3 and e4 are for the next pass
    assert not reader.in_transaction
    rows, to = outbox_sql.stream_rows(reader, APP_ID, to, 100)
    assert [row[2] for row in rows] == ["e3", "e4"]
