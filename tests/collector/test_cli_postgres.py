"""The CLI's commands on a PostgreSQL database: each does there what it does on SQLite
(tests of their details run on SQLite elsewhere: test_history.py, test_imports.py,
test_secrets.py, test_cli.py)."""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from homing_collector.cli import main as cli_main
from homing_collector.sealing import is_sealed
from tests.collector.test_history import make_records, write_archives


@pytest.fixture
def db(postgres_url: str) -> str:
    return postgres_url


def cli(db: str, *args: str) -> tuple[int, str, str]:
    """Run `homing-collector --db DB ARGS` here: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["--db", db, *args])
    return code, out.getvalue(), err.getvalue()


def query(db: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db) as conn:
        return [tuple(row) for row in conn.execute(sql, params)]


def new_app(db: str) -> str:
    code, out, err = cli(db, "apps", "create", "pg", "--json")
    assert code == 0, err
    return str(json.loads(out)["application_id"])


def test_pinpoint_history_is_imported_once_and_exported_again(db: str, tmp_path: Path) -> None:
    app_id = new_app(db)
    now_ms = int(time.time() * 1000)
    records = make_records(400, now_ms - 5 * 86_400_000)
    write_archives(tmp_path / "archive", records)

    code, out, err = cli(db, "import", "pinpoint-events", app_id, str(tmp_path / "archive"))
    assert code == 0, err
    assert "400 events stored, 0 already stored" in out
    code, out, err = cli(db, "import", "pinpoint-events", app_id, str(tmp_path / "archive"))
    assert code == 0, err
    assert "0 events stored, 400 already stored" in out
    assert query(db, "SELECT count(*) FROM events WHERE app_id = %s", app_id) == [(400,)]

    exported = tmp_path / "events.ndjson"
    code, out, err = cli(db, "export", "events", app_id, "--out", str(exported))
    assert code == 0, err
    lines = [orjson.loads(line) for line in exported.read_bytes().splitlines()]
    assert len(lines) == 400
    assert {line["event_type"] for line in lines} == {r["event_type"] for r in records}

    code, out, err = cli(db, "import", "pinpoint-events", "no-such-app", str(exported))
    assert code == 1 and "no application no-such-app" in err


def test_endpoints_and_segments_are_imported(db: str, tmp_path: Path) -> None:
    app_id = new_app(db)
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_bytes(
        b"".join(
            orjson.dumps(row) + b"\n"
            for row in [
                {"Id": "ep-1", "ChannelType": "GCM", "Address": "t-1", "User": {"UserId": "u-1"}},
                {"Id": "ep-2", "ChannelType": "PIGEON"},
                {"Id": "ep-3", "ChannelType": "CUSTOM", "Address": "x"},
                # PostgreSQL's text holds no NUL: refused, not a failed import.
                {"Id": "ep-4", "ChannelType": "CUSTOM", "Demographic": {"Platform": "a\x00"}},
            ]
        )
    )
    code, out, err = cli(db, "import", "pinpoint-endpoints", app_id, str(endpoints))
    assert code == 1  # two rows refused, and said
    assert "2 endpoints stored, 2 refused" in out and "ChannelType" in err
    assert ":4: Demographic.Platform: must not contain the NUL character (U+0000)" in err
    stored = query(db, "SELECT endpoint_id, user_id FROM endpoints WHERE app_id = %s", app_id)
    assert sorted(stored) == [("ep-1", "u-1"), ("ep-3", None)]

    people = tmp_path / "people.csv"
    people.write_text("Id,ChannelType,Address\ncli-1,CUSTOM,a\ncli-2,CUSTOM,b\n")
    code, out, err = cli(db, "segments", "import", app_id, str(people), "--json")
    assert code == 0, err
    job = json.loads(out)
    assert job["JobStatus"] == "COMPLETED" and job["TotalProcessed"] == 2
    [(segments,)] = query(db, "SELECT count(*) FROM segments WHERE app_id = %s", app_id)
    assert segments == 1


def test_retention_dead_letters_and_secrets(db: str, tmp_path: Path) -> None:
    app_id = new_app(db)
    code, out, err = cli(db, "apps", "retention", app_id, "--days", "30")
    assert code == 0, err
    code, out, err = cli(db, "apps", "retention", app_id)
    assert code == 0 and "for 30 days" in out

    code, out, err = cli(db, "hooks", "dead-letters", app_id, "--json")
    assert code == 0 and json.loads(out) == []
    code, out, err = cli(db, "hooks", "replay", app_id, "no-such-delivery")
    assert code == 1 and "no dead letter no-such-delivery" in err

    key = tmp_path / "secrets.key"
    assert cli(db, "secrets", "new-key", str(key))[0] == 0
    code, out, err = cli(db, "secrets", "encrypt", "--secrets-key-file", str(key))
    assert code == 0 and "Sealed 2 of 2" in out, (out, err)
    stored = query(db, "SELECT secret FROM keys WHERE app_id = %s", app_id)
    assert len(stored) == 2 and all(is_sealed(secret) for (secret,) in stored)


def test_demo_loads_an_app_into_postgresql(db: str) -> None:
    code, out, err = cli(db, "demo", "--devices", "20", "--days", "3", "--json")
    assert code == 0, err
    demo = json.loads(out)
    app_id = demo["application_id"]
    [(events,)] = query(db, "SELECT count(*) FROM events WHERE app_id = %s", app_id)
    assert events == demo["summary"]["events"] > 0
    [(devices,)] = query(db, "SELECT count(*) FROM endpoints WHERE app_id = %s", app_id)
    assert devices == 20
