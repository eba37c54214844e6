"""Importing Pinpoint history (`import pinpoint-events`, `import pinpoint-endpoints`),
exporting it (`export events`), and retention, against real SQLite files and a live
collector."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from homing import limits
from homing.wire import format_timestamp
from homing_collector import history
from homing_collector.cli import main as cli_main
from homing_collector.hooks.records import to_record
from homing_collector.retention import Sweeper
from homing_collector.storage.sqlite import SQLiteStorage
from tests.conftest import LiveCollector, run_cli

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
TYPES = ["_session.start", "_session.stop", "Played", "Level Up", "_monetization.purchase"]


def cli(*args: str) -> tuple[int, str, str]:
    """Run `homing-collector ARGS` here: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(args))
    return code, out.getvalue(), err.getvalue()


def new_app(db: Path, name: str = "history") -> str:
    data = json.loads(run_cli("--db", str(db), "apps", "create", name, "--json"))
    return str(data["application_id"])


def make_records(count: int, start_ms: int, *, seed: int = 3) -> list[dict[str, Any]]:
    """Firehose-style records of `count` events over about four days from `start_ms`;
    every tenth without an event_id, as Pinpoint's own records come."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        at = start_ms + n * (4 * DAY_MS // count)
        event_type = TYPES[rng.randrange(len(TYPES))]
        event: dict[str, Any] = {
            "EventType": event_type,
            "Timestamp": format_timestamp(at / 1000),
            "Attributes": {"level": str(rng.randrange(9))},
            "Metrics": {"score": rng.randrange(1000)},
            "Session": {"Id": f"s-{n // 7}", "StartTimestamp": format_timestamp(at / 1000 - 60)},
        }
        if event_type == "_monetization.purchase":
            event["Attributes"]["_currency"] = "EUR"
            event["Metrics"] = {"_item_price": 2.5, "_quantity": 2}
        endpoint = {
            "ChannelType": "CUSTOM",
            "Demographic": {"Platform": rng.choice(["android", "ios"]), "AppVersion": "1.2"},
            "User": {"UserId": f"user-{n % 50}"},
        }
        record = to_record("x" * 32, f"ep-{n % 120}", f"ev-{n}", event, endpoint, at + 500)
        if n % 10 == 0:
            del record["event_id"]
        records.append(record)
    return records


def write_archives(directory: Path, records: list[dict[str, Any]]) -> None:
    """Four files: gzip and plain, one record a line and concatenated."""
    directory.mkdir(parents=True, exist_ok=True)
    quarter = len(records) // 4
    parts = [records[i * quarter : (i + 1) * quarter if i < 3 else None] for i in range(4)]
    lines = [b"".join(orjson.dumps(r) + b"\n" for r in part) for part in parts]
    joined = [b"".join(orjson.dumps(r) for r in part) for part in parts]
    (directory / "2026" / "01").mkdir(parents=True)
    (directory / "2026" / "01" / "part-1.gz").write_bytes(gzip.compress(lines[0]))
    (directory / "2026" / "01" / "part-2").write_bytes(joined[1])
    (directory / "part-3.gz").write_bytes(gzip.compress(joined[2]))
    (directory / "part-4.json").write_bytes(lines[3])


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchall()


def brute_counts(records: list[dict[str, Any]]) -> Counter[tuple[int, str]]:
    """(hour, event type) -> events, straight from the records."""
    return Counter((r["event_timestamp"] // HOUR_MS, r["event_type"]) for r in records)


def rollup_counts(db: Path, app_id: str) -> Counter[tuple[int, str]]:
    rows = query(db, "SELECT hour, event_type, count FROM an_counts WHERE app_id = ?", app_id)
    return Counter({(hour, event_type): count for hour, event_type, count in rows})


def stored_events(db: Path, app_id: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = query(
        db,
        "SELECT endpoint_id, event_id, event_type, ts, arrival, session_id, body FROM events"
        " WHERE app_id = ?",
        app_id,
    )
    return {(r[0], r[1]): (*r[2:6], orjson.loads(r[6])) for r in rows}


def test_an_archive_imported_twice_is_stored_once_with_rollups_that_match(
    tmp_path: Path, start_collector: Any
) -> None:
    db = tmp_path / "history.db"
    app_id = new_app(db)
    start_ms = (int(time.time() * 1000) // DAY_MS - 8) * DAY_MS
    records = make_records(4000, start_ms)
    write_archives(tmp_path / "archive", records)

    code, out, err = cli("--db", str(db), "import", "pinpoint-events", app_id,
                         str(tmp_path / "archive"))  # fmt: skip
    assert code == 0, err
    assert "4,000 events stored, 0 already stored" in out
    code, out, err = cli("--db", str(db), "import", "pinpoint-events", app_id,
                         str(tmp_path / "archive"))  # fmt: skip
    assert code == 0, err
    assert "0 events stored, 4,000 already stored" in out

    events = stored_events(db, app_id)
    assert len(events) == len(records) == len(query(db, "SELECT 1 FROM events"))
    assert rollup_counts(db, app_id) == brute_counts(records)
    (purchases, amount), = query(
        db, "SELECT sum(purchases), sum(amount) FROM an_revenue WHERE app_id = ?", app_id
    )  # fmt: skip
    bought = sum(r["event_type"] == "_monetization.purchase" for r in records)
    assert (purchases, amount) == (bought, 5.0 * bought)
    # Each endpoint's profile comes from its records.
    (body,) = query(db, "SELECT body FROM endpoints WHERE app_id = ? AND endpoint_id = 'ep-7'",
                    app_id)[0]  # fmt: skip
    endpoint = orjson.loads(body)
    last = [r for r in records if r["client"]["client_id"] == "ep-7"][-1]
    assert endpoint["User"] == last["endpoint"]["User"]
    assert endpoint["Demographic"]["AppVersion"] == "1.2"

    # The analytics a running collector answers: every type's total, by brute force.
    live = start_collector(db)
    admin = json.loads(run_cli("--db", str(db), "keys", "create", "--app", app_id,
                               "--role", "admin", "--json"))  # fmt: skip
    first = datetime.fromtimestamp(start_ms / 1000, timezone.utc).date()
    today = datetime.now(timezone.utc).date()
    request = urllib.request.Request(
        f"{live.url}/v1/apps/{app_id}/analytics/events?start={first}&end={today}",
        headers={"Authorization": f"Bearer {admin['token']}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        analytics = json.loads(answer.read())
    totals = {row["event_type"]: row["count"] for row in analytics["types"]}
    expected = Counter(r["event_type"] for r in records)
    assert totals, analytics
    for event_type, count in totals.items():
        assert count == expected[event_type], event_type


def test_refused_records_are_reported_by_file_and_line(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    app_id = new_app(db)
    good = make_records(3, int(time.time() * 1000) - DAY_MS)
    bad_type = {**good[1], "event_type": ""}
    no_client = {k: v for k, v in good[2].items() if k != "client"}
    lines = [orjson.dumps(good[0]), b"{not json", orjson.dumps(bad_type),
             orjson.dumps(no_client), b"[1, 2]"]  # fmt: skip
    path = tmp_path / "bad.json"
    path.write_bytes(b"\n".join(lines) + b"\n")

    code, out, err = cli("--db", str(db), "import", "pinpoint-events", app_id, str(path))
    assert code == 1
    refused = [line for line in err.splitlines() if line.startswith(str(path))]
    assert [line.split(":")[1] for line in refused] == ["2", "3", "4", "5"]
    assert f"{path}:3: EventType: is required and must be a non-empty string" in refused
    assert f"{path}:4: client.client_id: " in refused[2]
    assert "1 events stored" in out and "4 records refused" in out
    assert len(stored_events(db, app_id)) == 1


def test_event_types_past_the_limit_are_refused_by_file_and_line(tmp_path: Path) -> None:
    # The second batch holds the end of the first file and the start of the second, where
    # the application reaches its limit of event types: each refusal names its own file.
    limit = limits.MAX_EVENT_TYPES_PER_APP
    records = make_records(limit + 20, int(time.time() * 1000) - DAY_MS)
    for n, record in enumerate(records):
        record["event_type"] = f"type-{n}"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records[: limit - 50]))
    second.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records[limit - 50 :]))
    db = tmp_path / "history.db"
    app_id = new_app(db)
    refused: list[str] = []

    async def run() -> history.ImportStats:
        storage = SQLiteStorage(db)
        await storage.start()
        try:
            return await history.import_events(
                storage, app_id, [first, second], report=lambda r: refused.append(str(r)),
                batch_events=limit - 60,
            )  # fmt: skip
        finally:
            await storage.close()

    stats = asyncio.run(run())
    assert stats.stored == limit and stats.refused == 20
    # Which of the second batch's new types come too late is the storage's choice; each
    # refusal must name the file and line of a record of its type.
    where = {}
    for refusal in refused:
        path, line, message = refusal.split(":", 2)
        assert f"is new and the application already has {limit} event types" in message
        where[int(message.split("'")[1].removeprefix("type-"))] = (path, int(line))
    assert len(where) == 20 and any(n >= limit - 50 for n in where)
    for n, found in where.items():
        assert found == ((str(first), n + 1) if n < limit - 50 else (str(second), n - limit + 51))


def test_a_truncated_gzip_file_keeps_what_it_held_and_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    app_id = new_app(db)
    records = make_records(4000, int(time.time() * 1000) - 5 * DAY_MS)  # some MiB
    whole = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in records))
    path = tmp_path / "cut.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    code, out, err = cli("--db", str(db), "import", "pinpoint-events", app_id, str(path))
    assert code == 1
    (refused,) = [line for line in err.splitlines() if line.startswith(str(path))]
    assert "the file cannot be read further" in refused
    stored = len(stored_events(db, app_id))
    assert 0 < stored < len(records)
    assert f"{stored:,} events stored" in out


def test_missing_paths_and_apps_are_one_line_errors(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    app_id = new_app(db)
    code, _, err = cli("--db", str(db), "import", "pinpoint-events", app_id, str(tmp_path / "no"))
    assert code == 1 and "no such file or directory" in err
    (tmp_path / "empty.json").write_bytes(b"")
    code, _, err = cli("--db", str(db), "import", "pinpoint-events", "nope",
                       str(tmp_path / "empty.json"))  # fmt: skip
    assert code == 1 and "no application nope" in err


def test_export_then_import_into_an_empty_app_reproduces_the_events(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    source, target = new_app(db, "source"), new_app(db, "target")
    start_ms = (int(time.time() * 1000) // DAY_MS - 6) * DAY_MS
    records = make_records(2500, start_ms, seed=11)
    write_archives(tmp_path / "archive", records)
    code, _, err = cli("--db", str(db), "import", "pinpoint-events", source,
                       str(tmp_path / "archive"))  # fmt: skip
    assert code == 0, err

    exported = tmp_path / "export.ndjson.gz"
    code, out, err = cli("--db", str(db), "export", "events", source, "--out", str(exported))
    assert code == 0, err
    assert "Exported 2,500 events" in out
    code, _, err = cli("--db", str(db), "import", "pinpoint-events", target, str(exported))
    assert code == 0, err
    assert stored_events(db, target) == stored_events(db, source)
    assert rollup_counts(db, target) == rollup_counts(db, source)

    # A range: --since and --until, to stdout.
    since = format_timestamp((start_ms + DAY_MS) / 1000)
    until = format_timestamp((start_ms + 2 * DAY_MS) / 1000)
    code, out, err = cli("--db", str(db), "export", "events", source, "--since", since,
                         "--until", until, "--out", str(tmp_path / "day.ndjson"))  # fmt: skip
    assert code == 0, err
    day = [orjson.loads(line) for line in (tmp_path / "day.ndjson").read_bytes().splitlines()]
    expected = [r for r in records if start_ms + DAY_MS <= r["event_timestamp"]
                < start_ms + 2 * DAY_MS]  # fmt: skip
    assert len(day) == len(expected) > 0
    assert all(r["application"]["app_id"] == source for r in day)
    # To stdout, the summary to stderr, as a pipe would take it.
    piped = subprocess.run(
        [sys.executable, "-m", "homing_collector", "--db", str(db), "export", "events", source,
         "--since", since, "--until", until],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert [orjson.loads(line) for line in piped.stdout.splitlines()] == day
    assert piped.stderr.decode().strip() == f"Exported {len(day):,} events."
    code, _, err = cli("--db", str(db), "export", "events", source, "--since", "yesterday")
    assert code == 1 and "--since: 'yesterday' is not an ISO-8601 timestamp" in err


def test_endpoints_import_merges_like_update_endpoint_and_reports_rows(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    app_id = new_app(db)
    rows = [
        {"Id": "ep-1", "ChannelType": "GCM", "Address": "token-1", "User": {"UserId": "u-1"},
         "Attributes": {"plan": ["pro"]}, "Demographic": {"Platform": "android"},
         "CreationDate": "2024-01-01T00:00:00.000Z", "ApplicationId": "pinpoint-app"},
        {"Id": "ep-2", "ChannelType": "PIGEON"},
        {"Id": "ep-1", "Attributes": {"team": ["a"]}},
        {"ChannelType": "EMAIL"},
    ]  # fmt: skip
    path = tmp_path / "endpoints.json.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(row) + b"\n" for row in rows)))
    code, out, err = cli("--db", str(db), "import", "pinpoint-endpoints", app_id, str(path))
    assert code == 1
    refused = [line for line in err.splitlines() if line.startswith(str(path))]
    assert len(refused) == 2
    assert refused[0].startswith(f"{path}:2: ChannelType: ")
    assert refused[1].startswith(f"{path}:4: Id: is required")
    assert "2 endpoints stored, 2 refused" in out
    ((body,),) = query(db, "SELECT body FROM endpoints WHERE app_id = ?", app_id)
    endpoint = orjson.loads(body)
    assert endpoint["Attributes"] == {"plan": ["pro"], "team": ["a"]}  # merged
    assert endpoint["ApplicationId"] == app_id and endpoint["Id"] == "ep-1"
    assert endpoint["User"] == {"UserId": "u-1"}


def test_retention_deletes_only_expired_raw_events_and_keeps_rollups(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    app_id, other = new_app(db), new_app(db, "other")
    now_ms = int(time.time() * 1000)
    records = make_records(3000, now_ms - 40 * DAY_MS) + make_records(1000, now_ms - 4 * DAY_MS)
    for n, record in enumerate(records):
        record["event_id"] = f"ev-{n}"
    write_archives(tmp_path / "archive", records)
    for app in (app_id, other):
        code, _, err = cli("--db", str(db), "import", "pinpoint-events", app,
                           str(tmp_path / "archive"))  # fmt: skip
        assert code == 0, err
    before = rollup_counts(db, app_id)
    assert run_cli("--db", str(db), "apps", "retention", app_id, "--days", "30").startswith(
        f"Application {app_id} keeps its raw events for 30 days"
    )

    async def sweep() -> int:
        storage = SQLiteStorage(db)
        await storage.start()
        try:
            return await Sweeper(storage, batch_rows=333).sweep()
        finally:
            await storage.close()

    cutoff = (now_ms - 30 * DAY_MS) // HOUR_MS
    expired = [r for r in records if r["event_timestamp"] // HOUR_MS < cutoff]
    assert 0 < len(expired) < len(records)
    assert asyncio.run(sweep()) == len(expired)
    kept = stored_events(db, app_id)
    assert {event_id for _, event_id in kept} == {
        r["event_id"] for r in records if r["event_timestamp"] // HOUR_MS >= cutoff
    }
    assert len(stored_events(db, other)) == len(records)  # another app keeps its own
    assert rollup_counts(db, app_id) == before  # the dashboard's history stays
    assert asyncio.run(sweep()) == 0

    # An import skips what retention would delete, so it is never counted twice.
    code, out, err = cli("--db", str(db), "import", "pinpoint-events", app_id,
                         str(tmp_path / "archive"))  # fmt: skip
    assert code == 0, err
    assert f"{len(expired):,} older than the retention period" in out
    assert "0 events stored" in out
    assert rollup_counts(db, app_id) == before


def test_retention_through_the_api_the_cli_and_a_running_collector(
    tmp_path: Path, start_collector: Any
) -> None:
    db = tmp_path / "history.db"
    app_id = new_app(db)
    keys = json.loads(run_cli("--db", str(db), "apps", "create", "keys-of", "--json"))
    admin = json.loads(run_cli("--db", str(db), "keys", "create", "--app", app_id,
                               "--role", "admin", "--json"))  # fmt: skip
    ingest = json.loads(run_cli("--db", str(db), "keys", "create", "--app", app_id, "--json"))
    now_ms = int(time.time() * 1000)
    records = make_records(400, now_ms - 20 * DAY_MS) + make_records(100, now_ms - 2 * DAY_MS)
    for n, record in enumerate(records):
        record["event_id"] = f"ev-{n}"
    write_archives(tmp_path / "archive", records)
    code, _, err = cli("--db", str(db), "import", "pinpoint-events", app_id,
                       str(tmp_path / "archive"))  # fmt: skip
    assert code == 0, err
    live: LiveCollector = start_collector(db)
    url = f"{live.url}/v1/apps/{app_id}/retention"

    def call(method: str, token: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert call("GET", admin["token"]) == (200, {"ApplicationId": app_id, "EventsDays": None})
    assert call("GET", ingest["token"])[0] == 403
    assert call("PUT", keys["admin"]["token"], {"EventsDays": 5})[0] == 403  # another app's
    status, body = call("PUT", admin["token"], {"EventsDays": 0})
    assert status == 400 and "EventsDays" in body["Message"]
    status, body = call("PUT", admin["token"], {"Days": 5})
    assert status == 400
    status, body = call("PUT", admin["token"], {"EventsDays": 2.5})
    assert status == 400 and "EventsDays" in body["Message"]
    assert call("PUT", admin["token"], {"EventsDays": 12.0})[1]["EventsDays"] == 12
    assert call("PUT", admin["token"], {"EventsDays": 10}) == (
        200, {"ApplicationId": app_id, "EventsDays": 10},
    )  # fmt: skip
    assert run_cli("--db", str(db), "apps", "retention", app_id).startswith(
        f"Application {app_id} keeps its raw events for 10 days"
    )
    # The running collector's sweeper deletes what expired, and nothing else.
    deadline = time.monotonic() + 30
    while len(stored_events(db, app_id)) != 100 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {e for _, e in stored_events(db, app_id)} == {f"ev-{n}" for n in range(400, 500)}
    run_cli("--db", str(db), "apps", "retention", app_id, "--forever")
    assert call("GET", admin["token"]) == (200, {"ApplicationId": app_id, "EventsDays": None})
    code, _, err = cli("--db", str(db), "apps", "retention", app_id, "--days", "0")
    assert code == 1 and "--days must be from 1 to 36500" in err
    code, _, err = cli("--db", str(db), "apps", "retention", "nope", "--days", "3")
    assert code == 1 and "no application nope" in err


def test_one_process_holds_the_retention_lease_until_it_expires(tmp_path: Path) -> None:
    async def run() -> list[bool]:
        storage = SQLiteStorage(tmp_path / "lease.db")
        await storage.start()
        try:
            return [
                await storage.take_lease("retention", "a", 1_000, 500),
                await storage.take_lease("retention", "b", 1_200, 500),  # a holds it
                await storage.take_lease("retention", "a", 1_400, 500),  # a renews it
                await storage.take_lease("retention", "b", 1_800, 500),  # still a's
                await storage.take_lease("retention", "b", 1_901, 500),  # a's expired
                await storage.take_lease("retention", "a", 2_000, 500),
            ]
        finally:
            await storage.close()

    assert asyncio.run(run()) == [True, False, True, False, True, False]


def test_an_import_beside_a_running_collector_loses_nothing_of_either(
    tmp_path: Path, start_collector: Any
) -> None:
    db = tmp_path / "history.db"
    app_id = new_app(db)
    ingest = json.loads(run_cli("--db", str(db), "keys", "create", "--app", app_id, "--json"))
    live: LiveCollector = start_collector(db)
    start_ms = (int(time.time() * 1000) // DAY_MS - 3) * DAY_MS
    records = make_records(3000, start_ms, seed=5)
    write_archives(tmp_path / "archive", records)
    sent: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}

    def send_live() -> None:
        # PutEvents while the import runs: another endpoint's events, 50 per request.
        for batch in range(20):
            events = {}
            for n in range(50):
                at = start_ms + (batch * 50 + n) * 60_000
                events[f"live-{batch}-{n}"] = {
                    "EventType": "Live", "Timestamp": format_timestamp(at / 1000),
                }  # fmt: skip
            body = json.dumps({"BatchItem": {"live-device": {"Endpoint": {}, "Events": events}}})
            request = urllib.request.Request(
                f"{live.url}/v1/apps/{app_id}/events", data=body.encode(), method="POST",
                headers={"Authorization": f"Bearer {ingest['token']}",
                         "Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 202
            sent.extend(events.values())

    sender = threading.Thread(target=send_live)
    sender.start()
    outcome["code"], outcome["out"], outcome["err"] = cli(
        "--db", str(db), "import", "pinpoint-events", app_id, str(tmp_path / "archive")
    )
    sender.join(60)
    assert outcome["code"] == 0, outcome["err"]
    assert len(stored_events(db, app_id)) == len(records) + len(sent) == 4000
    expected = brute_counts(records)
    expected.update((e_ms // HOUR_MS, "Live") for e_ms in (
        int(datetime.fromisoformat(e["Timestamp"].replace("Z", "+00:00")).timestamp() * 1000)
        for e in sent
    ))  # fmt: skip
    assert rollup_counts(db, app_id) == expected


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere() -> None:
    from homing_collector.progress import Progress

    terminal = io.StringIO()
    bar = Progress(terminal, tty=True, every=0)
    bar.update("10 records", 0.5)
    bar.message("a.json:3: EventType: is required")
    bar.update("20 records", 1.0)
    bar.done()
    text = terminal.getvalue()
    assert "[###############...............]  50% 10 records" in text
    assert "\r\x1b[Ka.json:3: EventType: is required\n" in text
    assert text.endswith("\r\x1b[K")

    log = io.StringIO()
    plain = Progress(log, tty=False, plain_every=3600)
    plain.update("first", 0.1, force=True)
    plain.update("too soon", 0.2)  # lines come every plain_every seconds at most
    plain.message("b.json:1: not valid JSON")
    plain.done()
    assert log.getvalue() == "first\nb.json:1: not valid JSON\n"


def test_with_workers_one_process_sweeps(tmp_path: Path, start_collector: Any) -> None:
    db = tmp_path / "history.db"
    app_id = new_app(db)
    now_ms = int(time.time() * 1000)
    records = make_records(600, now_ms - 30 * DAY_MS) + make_records(200, now_ms - 2 * DAY_MS)
    for n, record in enumerate(records):
        record["event_id"] = f"ev-{n}"
    write_archives(tmp_path / "archive", records)
    code, _, err = cli("--db", str(db), "import", "pinpoint-events", app_id,
                       str(tmp_path / "archive"))  # fmt: skip
    assert code == 0, err
    run_cli("--db", str(db), "apps", "retention", app_id, "--days", "7")
    before = rollup_counts(db, app_id)
    live: LiveCollector = start_collector(db, "--workers", "2")
    deadline = time.monotonic() + 30
    while len(stored_events(db, app_id)) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {e for _, e in stored_events(db, app_id)} == {f"ev-{n}" for n in range(600, 800)}
    assert rollup_counts(db, app_id) == before
    ((name, owner),) = query(db, "SELECT name, owner FROM task_leases")
    assert name == "retention" and owner
    assert live.log is not None

    def sweeps() -> list[str]:
        assert live.log is not None
        return [line for line in live.log.read_text().splitlines() if "Retention: del" in line]

    while not sweeps() and time.monotonic() < deadline:  # logged once the sweep is done
        time.sleep(0.1)
    time.sleep(1.5)  # the other worker's first sweep, were it to sweep too
    assert len(sweeps()) == 1 and sweeps()[0].endswith("deleted 600 expired events")


def test_an_import_the_storage_cannot_finish_says_so_in_a_line(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from homing_collector.storage.base import StorageFull

    db = tmp_path / "history.db"
    app_id = new_app(db)
    write_archives(tmp_path / "archive", make_records(400, int(time.time() * 1000) - DAY_MS))

    async def full(*args: Any, **kwargs: Any) -> Any:
        raise StorageFull("the disk is full")

    monkeypatch.setattr(SQLiteStorage, "put_events", full)
    code, _, err = cli("--db", str(db), "import", "pinpoint-events", app_id,
                       str(tmp_path / "archive"))  # fmt: skip
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "homing-collector: the import stopped: the disk is full; run it again to store the rest"
    )
