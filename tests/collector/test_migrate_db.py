"""`homing-collector migrate-db`: a SQLite database copied into PostgreSQL.

The demo's database is copied into a database of the tests' own cluster (tests/pg.py),
then every table is compared row by row, and collectors serving each answer alike. A
copy killed (SIGKILL) halfway and run again ends equal. What cannot be copied is refused
with a message that says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from homing_collector.cli import main as cli_main
from tests.collector.push_stream import Stream
from tests.conftest import LiveCollector, run_cli

# What copy_table may leave out, and why: the same list the command prints.
BY_DESIGN = {"schema_migrations", "columnar_state", "columnar_days", "columnar_endpoints",
             "task_leases", "sqlite_sequence"}  # fmt: skip


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The demo's database (60 days, as `homing-collector demo` makes it), made once."""
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    demo = json.loads(run_cli("--db", str(db), "demo", "--json"))
    return db, demo


@pytest.fixture
def source(demo_db: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    copy = tmp_path / "source.db"
    shutil.copy(demo_db[0], copy)
    return copy


def migrate(*args: str) -> tuple[int, str, str]:
    """Run `homing-collector migrate-db ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["migrate-db", *args])
    return code, out.getvalue(), err.getvalue()


def pg_rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def sqlite_rows(db: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(query, params).fetchall()


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, bool):
        return int(value)
    return value


def assert_same_content(db: Path, url: str) -> dict[str, int]:
    """Every SQLite table that PostgreSQL has holds the same rows there, column by column
    (the positions of events and cursors compared by order); return the rows per table."""
    sqlite_tables = [row[0] for row in sqlite_rows(db, "SELECT name FROM sqlite_schema"
                                                   " WHERE type = 'table'")]  # fmt: skip
    pg_columns: dict[str, dict[str, str]] = {}
    for table, column, kind in pg_rows(url, "SELECT table_name, column_name, data_type FROM"
                                       " information_schema.columns"
                                       " WHERE table_schema = 'public'"):  # fmt: skip
        pg_columns.setdefault(table, {})[column] = kind
    counted = {}
    for table in sqlite_tables:
        if table in BY_DESIGN or table not in pg_columns:
            continue
        names = [row[1] for row in sqlite_rows(db, f"PRAGMA table_info({table})")]
        shared = [c for c in names if c in pg_columns[table] and c != "cursor"]
        listed = ", ".join(f'"{c}"' for c in shared)
        # A boolean is any integer in SQLite, true or false in PostgreSQL.
        read = ", ".join(f'("{c}" != 0)' if pg_columns[table][c] == "boolean" else f'"{c}"'
                         for c in shared)  # fmt: skip
        want = sorted(sqlite_rows(db, f"SELECT {read} FROM {table}"), key=repr)
        got = sorted(([_plain(v) for v in row] for row in
                      pg_rows(url, f"SELECT {listed} FROM {table}")), key=repr)  # fmt: skip
        assert [list(row) for row in want] == got, f"table {table} differs"
        counted[table] = len(want)
    # Events in the order of SQLite's rowid are in the order of PostgreSQL's positions.
    key = "app_id, endpoint_id, event_id, event_type, ts"
    assert sqlite_rows(db, f"SELECT {key} FROM events ORDER BY rowid") == [
        tuple(row) for row in pg_rows(url, f"SELECT {key} FROM events ORDER BY pos")
    ]
    # A cursor stands between the same events: as many at or before it on both sides.
    for table, name in (("event_streams", "app_id"), ("hook_cursors", "name")):
        for who, cursor in sqlite_rows(db, f"SELECT {name}, cursor FROM {table}"):
            ((before,),) = sqlite_rows(db, "SELECT count(*) FROM events WHERE rowid <= ?",
                                       (cursor,))  # fmt: skip
            ((pg_cursor,),) = pg_rows(url, f"SELECT cursor FROM {table} WHERE {name} = %s",
                                      (who,))  # fmt: skip
            ((pg_before,),) = pg_rows(url, "SELECT count(*) FROM events WHERE pos <= %s",
                                      (pg_cursor,))  # fmt: skip
            assert pg_before == before, f"{table} {who}: cursor moved"
    return counted


def fill_empty_tables(db: Path) -> list[str]:
    """A row in each table the demo leaves empty, of the column's type (booleans, blobs,
    reals, NULLs), so that every table's copy is exercised; return those tables."""
    special = {("outbox", "state"): "pending", ("keys", "role"): "admin"}
    filled = []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_schema"
                                                 " WHERE type = 'table'")]  # fmt: skip
        for table in tables:
            if table in BY_DESIGN or conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]:
                continue
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            values = []
            for _, column, kind, notnull, _, _ in info:
                if (table, column) in special:
                    values.append(special[(table, column)])
                elif not notnull and column not in ("body",):
                    values.append(None)
                elif kind == "INTEGER":
                    values.append(7)
                elif kind == "REAL":
                    values.append(1.25)
                elif kind == "BLOB":
                    values.append(b"\x00\xff\\x")
                else:
                    values.append(f"{table}.{column} \\ \t 'é'")
            marks = ", ".join("?" * len(values))
            conn.execute(f"INSERT INTO {table} VALUES ({marks})", values)
            filled.append(table)
        conn.commit()
    return filled


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_demo_is_copied_whole_and_the_source_is_left_as_it_was(
    source: Path, postgres_url: str
) -> None:
    filled = fill_empty_tables(source)
    assert "outbox" in filled and "event_streams" in filled  # the demo has none
    before = digest(source)
    code, out, err = migrate("--from", str(source), "--to", postgres_url, "--json")
    assert digest(source) == before
    summary = json.loads(out)
    # Tables PostgreSQL lacks (the rollups, until its schema has them) are named, not
    # dropped in silence: the exit code says so.
    assert code == (3 if summary["not_copied"] else 0), err
    for name in summary["not_copied"]:
        assert name in err
    counted = assert_same_content(source, postgres_url)
    assert set(counted) == set(summary["tables"])
    assert {"apps", "keys", "endpoints", "events", "push_messages", "push_endpoints",
            "segments", "segment_versions", "campaigns", "campaign_versions",
            "campaign_activities", "campaign_sends", "import_jobs", "import_members",
            "app_settings", "outbox", "event_streams", "hook_cursors"} <= set(counted)  # fmt: skip
    for name, table in summary["tables"].items():
        assert table["copied"] == table["source_rows"] == table["target_rows"] == counted[name]
    assert counted["events"] > 10_000 and summary["mismatched"] == []
    # The outbox's numbers go on after the copied ones.
    ((seq,),) = pg_rows(postgres_url, "SELECT nextval(pg_get_serial_sequence('outbox', 'seq'))")
    assert seq > sqlite_rows(source, "SELECT max(seq) FROM outbox")[0][0]

    # Run again: nothing is left to copy, and nothing is copied twice.
    code, out, _ = migrate("--from", str(source), "--to", postgres_url, "--json")
    again = json.loads(out)
    assert again["resumed"] is True
    assert all(t["this_run"] == 0 for t in again["tables"].values())
    assert assert_same_content(source, postgres_url) == counted


def api_answers(url: str, app_id: str, token: str, db: Path) -> dict[str, Any]:
    """What the collector at `url` answers about the application's data."""
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{url}/v1/apps/{app_id}"
    paths = ["", "/settings", "/segments", "/campaigns", "/jobs/import", "/quotas",
             "/retention", "/keys"]  # fmt: skip
    endpoints = [row[0] for row in sqlite_rows(
        db, "SELECT endpoint_id FROM endpoints ORDER BY endpoint_id LIMIT 25")]  # fmt: skip
    users = [row[0] for row in sqlite_rows(
        db, "SELECT DISTINCT user_id FROM endpoints WHERE user_id IS NOT NULL ORDER BY 1"
        " LIMIT 25")]  # fmt: skip
    paths += [f"/endpoints/{e}" for e in endpoints] + [f"/users/{u}" for u in users]
    for (segment,) in sqlite_rows(db, "SELECT segment_id FROM segments"):
        paths += [f"/segments/{segment}", f"/segments/{segment}/versions"]
    for (campaign,) in sqlite_rows(db, "SELECT campaign_id FROM campaigns"):
        paths += [f"/campaigns/{campaign}", f"/campaigns/{campaign}/versions",
                  f"/campaigns/{campaign}/activities"]  # fmt: skip
    answers = {}
    for path in paths:
        response = httpx.get(base + path, headers=headers, timeout=30)
        assert response.status_code == 200, f"{path}: {response.text}"
        answers[path] = response.json()
    return answers


def push_backlogs(url: str, app_id: str, token: str, endpoints: list[str]) -> dict[str, Any]:
    backlogs = {}
    for endpoint_id in endpoints:
        with Stream(url, app_id, endpoint_id, token) as stream:
            backlogs[endpoint_id] = [(e.id, e.data) for e in stream.backlog()]
    return backlogs


@pytest.fixture
def served(
    source: Path, demo_db: tuple[Path, dict[str, Any]], postgres_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[LiveCollector, LiveCollector]]:  # fmt: skip
    """The demo served from SQLite, and its copy served from PostgreSQL."""
    monkeypatch.setenv("HOMING_PUSH_HEARTBEAT", "0.3")
    lite = LiveCollector(source, extra_args=("--no-access-log",)).start()
    admin = demo_db[1]["admin"]["token"]
    app_id = demo_db[1]["application_id"]
    # Settings of its own, stored through the API, so that app_settings is not empty.
    response = httpx.put(f"{lite.url}/v1/apps/{app_id}/settings", timeout=30,
                         headers={"Authorization": f"Bearer {admin}"},
                         json={"CampaignHook": {}, "Limits": {"Daily": 3}})  # fmt: skip
    assert response.status_code == 200, response.text
    lite.stop()  # the copy is made with no collector writing to the source
    code, _, err = migrate("--from", str(source), "--to", postgres_url)
    assert code in (0, 3), err
    lite = LiveCollector(source, extra_args=("--no-access-log",)).start()
    pg = LiveCollector(tmp_path / "pg", db_url=postgres_url,
                       extra_args=("--no-access-log",)).start()  # fmt: skip
    yield lite, pg
    for node in (lite, pg):
        node.stop(signal.SIGKILL, timeout=10)


def test_the_copy_answers_as_the_source_did(
    served: tuple[LiveCollector, LiveCollector], demo_db: tuple[Path, dict[str, Any]],
    source: Path,
) -> None:  # fmt: skip
    lite, pg = served
    app_id, admin = demo_db[1]["application_id"], demo_db[1]["admin"]["token"]
    want = api_answers(lite.url, app_id, admin, source)
    assert want["/settings"]["Limits"] == {"Daily": 3}
    assert len(want) > 50
    assert api_answers(pg.url, app_id, admin, source) == want
    # Push queues: what a device finds waiting when it connects.
    waiting = [row[0] for row in sqlite_rows(
        source, "SELECT DISTINCT endpoint_id FROM push_messages WHERE delivered_at IS NULL"
        " ORDER BY 1 LIMIT 5")]  # fmt: skip
    ingest = demo_db[1]["ingest"]["token"]
    backlog = push_backlogs(lite.url, app_id, ingest, waiting)
    assert push_backlogs(pg.url, app_id, ingest, waiting) == backlog


ANALYTICS = {"/analytics/usage": {}, "/analytics/retention": {},
             "/analytics/demographics": {"dimension": "platform"},
             "/analytics/events": {"breakdown": "screen"}, "/analytics/revenue": {},
             "/analytics/campaigns": {},
             "/kpis/daterange/homing-daily-active-users-grouped-by-date": {},
             "/kpis/daterange/homing-sessions": {},
             "/kpis/daterange/push-open-rate": {}}  # fmt: skip


def test_the_copy_answers_the_analytics_as_the_source_did(
    served: tuple[LiveCollector, LiveCollector], demo_db: tuple[Path, dict[str, Any]],
) -> None:  # fmt: skip
    lite, pg = served
    app_id, admin = demo_db[1]["application_id"], demo_db[1]["admin"]["token"]
    summary = demo_db[1]["summary"]
    params = {"start": summary["first_day"], "end": summary["last_day"],
              "start-time": summary["first_day"] + "T00:00:00Z",
              "end-time": summary["last_day"] + "T23:59:59Z"}  # fmt: skip
    headers = {"Authorization": f"Bearer {admin}"}
    for path, more in ANALYTICS.items():
        answers = [httpx.get(f"{node.url}/v1/apps/{app_id}{path}", params={**params, **more},
                             headers=headers, timeout=60) for node in (lite, pg)]  # fmt: skip
        assert answers[0].status_code == 200, f"{path}: {answers[0].text}"
        assert answers[1].status_code == 200, f"{path}: {answers[1].text}"
        assert answers[1].json() == answers[0].json(), path
        assert _some_count(answers[0].json()), f"{path}: nothing counted: {answers[0].text}"


def _some_count(answer: Any) -> bool:
    """Whether a positive number (or a number's text) is anywhere in the answer."""
    if isinstance(answer, dict):
        return any(_some_count(v) for v in answer.values())
    if isinstance(answer, list):
        return any(_some_count(v) for v in answer)
    if isinstance(answer, str):  # KPIs give their values as text, as Pinpoint does
        try:
            return float(answer) > 0
        except ValueError:
            return False
    return isinstance(answer, (int, float)) and not isinstance(answer, bool) and answer > 0


def test_a_copy_killed_halfway_goes_on_to_the_same_result(source: Path, postgres_url: str) -> None:
    fill_empty_tables(source)
    command = [sys.executable, "-m", "homing_collector", "migrate-db", "--from", str(source),
               "--to", postgres_url, "--batch-rows", "500", "--json"]  # fmt: skip
    # Killed (SIGKILL) in the middle of the COPY of the 30th batch of the events.
    env = {**os.environ, "HOMING_MIGRATE_DB_KILL_AT_BATCH": "events:30"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ((events,),) = pg_rows(postgres_url, "SELECT count(*) FROM events")
    progress = dict(pg_rows(postgres_url, "SELECT table_name, copied FROM migrate_db_progress"))
    assert (
        0 < events == progress["events"] < sqlite_rows(source, "SELECT count(*) FROM events")[0][0]
    )
    assert events % 500 == 0  # the batch under way was rolled back whole

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    summary = json.loads(resumed.stdout)
    assert resumed.returncode == (3 if summary["not_copied"] else 0), resumed.stderr
    assert summary["resumed"] is True
    assert (
        summary["tables"]["events"]["this_run"]
        == summary["tables"]["events"]["source_rows"] - events
    )
    assert summary["tables"]["apps"]["this_run"] == 0  # copied before the kill
    counted = assert_same_content(source, postgres_url)
    for name, table in summary["tables"].items():
        assert table["copied"] == table["target_rows"] == counted[name]


def test_a_table_postgresql_lacks_is_named_not_dropped(source: Path, postgres_url: str) -> None:
    import psycopg

    fill_empty_tables(source)
    run_cli("--db", postgres_url, "apps", "list")  # makes the schema, and no rows
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE hook_destinations")
    code, out, err = migrate("--from", str(source), "--to", postgres_url, "--json")
    assert code == 3
    assert json.loads(out)["not_copied"]["hook_destinations"] == 1
    assert "hook_destinations" in err and "were not copied" in err
    code, out, _ = migrate("--from", str(source), "--to", postgres_url)
    assert code == 3
    assert re.search(r"hook_destinations +1 +NOT COPIED: PostgreSQL has no such table", out)


def test_what_is_written_to_the_source_during_the_copy_is_left_out_and_said(
    source: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from homing_collector.storage import sqlite_to_pg

    copy_table = sqlite_to_pg.copy_table
    writes = []

    def write_then_copy(*args: Any, **kwargs: Any) -> Any:
        if not writes:  # a collector stores a new application while the copy runs
            with contextlib.closing(sqlite3.connect(source)) as conn:
                conn.execute("INSERT INTO apps (id, name, created_at) VALUES ('late', 'x', 'y')")
                conn.commit()
            writes.append(1)
        return copy_table(*args, **kwargs)

    monkeypatch.setattr(sqlite_to_pg, "copy_table", write_then_copy)
    code, out, err = migrate("--from", str(source), "--to", postgres_url, "--json")
    assert code in (0, 3), err
    assert "the source changed while it was copied" in err
    assert json.loads(out)["tables"]["apps"]["copied"] == 1
    assert pg_rows(postgres_url, "SELECT id FROM apps WHERE id = 'late'") == []


def test_the_rollups_are_copied_with_the_rest(source: Path, postgres_url: str) -> None:
    """The rollups' tables have SQLite's column names on PostgreSQL (its migration 8): the
    generic copy takes them, keyed tables and one without a key (an_opens)."""
    code, out, err = migrate("--from", str(source), "--to", postgres_url, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["not_copied"] == {}, err
    counted = assert_same_content(source, postgres_url)
    assert counted["an_counts"] > 1000 and counted["an_opens"] > 10
    assert counted["endpoint_values"] > 10
    assert summary["tables"]["an_opens"]["target_rows"] == counted["an_opens"]


def test_a_url_that_is_not_postgresql_is_refused_naming_the_flag(source: Path) -> None:
    for url in ("mysql://db/homing", "sqlite:///var/lib/homing/homing.db", "homing.db"):
        code, _, err = migrate("--from", str(source), "--to", url)
        assert code == 1
        assert "--to:" in err and "postgresql://" in err and "postgresql, postgres" in err


def test_a_server_that_does_not_answer_is_named(source: Path) -> None:
    code, _, err = migrate("--from", str(source), "--to", "postgresql://homing@127.0.0.1:1/x")
    assert code == 1 and "--to: cannot connect to postgresql://homing@127.0.0.1:1/x" in err


def test_a_collector_serving_the_source_is_warned_about(source: Path, postgres_url: str) -> None:
    lite = LiveCollector(source, extra_args=("--no-access-log",)).start()
    try:
        assert lite.process is not None
        deadline = time.monotonic() + 20
        while not sqlite_rows(source, "SELECT 1 FROM task_leases"):
            assert time.monotonic() < deadline, "the collector took no lease"
            time.sleep(0.1)
        code, out, err = migrate("--from", str(source), "--to", postgres_url, "--json")
        assert code in (0, 3), err
        assert f"a collector is serving the source (process {lite.process.pid} holds" in err
        assert json.loads(out)["warnings"]
    finally:
        lite.stop()
    # Stopped, its leases outlive it, but not the warning: its process is gone.
    code, out, err = migrate("--from", str(source), "--to", postgres_url, "--json")
    assert code in (0, 3) and "serving" not in err
    assert json.loads(out)["warnings"] == []


def test_a_source_that_is_not_a_current_homing_database_is_refused(
    source: Path, tmp_path: Path, postgres_url: str
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database " * 100)
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
    with contextlib.closing(sqlite3.connect(source)) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = (SELECT max(version)"
                     " FROM schema_migrations)")  # fmt: skip
        conn.commit()
    cases = {
        tmp_path / "missing.db": "--from: no file",
        text: "is not a SQLite database",
        other: "is not a Homing database",
        source: "older than this collector's",
    }
    for path, message in cases.items():
        code, _, err = migrate("--from", str(path), "--to", postgres_url)
        assert code == 1 and message in err, err
    assert "migrate it first" in err
    assert pg_rows(postgres_url, "SELECT count(*) FROM information_schema.tables"
                   " WHERE table_schema = 'public'") == [(0,)]  # fmt: skip


def test_a_target_holding_other_data_is_refused_unless_told(
    source: Path, postgres_url: str, tmp_path: Path
) -> None:
    run_cli("--db", postgres_url, "apps", "create", "already-there")
    code, _, err = migrate("--from", str(source), "--to", postgres_url)
    assert code == 1
    assert "already holds data that is not a copy of this source" in err
    assert "--into-existing" in err
    ((apps,),) = pg_rows(postgres_url, "SELECT count(*) FROM apps")
    assert apps == 1

    code, _, err = migrate("--from", str(source), "--to", postgres_url, "--into-existing",
                             "--json")  # fmt: skip
    assert code in (0, 3), err
    ((apps,),) = pg_rows(postgres_url, "SELECT count(*) FROM apps")
    assert apps == 2

    # The same applications again, from another copy of the database: never merged.
    twin = tmp_path / "twin.db"
    shutil.copy(source, twin)
    with contextlib.closing(sqlite3.connect(twin)) as conn:
        conn.execute("UPDATE schema_migrations SET applied_at = 'another' WHERE version = 1")
        conn.commit()
    code, _, err = migrate("--from", str(twin), "--to", postgres_url, "--into-existing")
    assert code == 1 and "is in both databases" in err


def test_a_row_that_is_in_the_target_already_is_named(source: Path, postgres_url: str) -> None:
    import psycopg

    fill_empty_tables(source)
    ((name, _),) = sqlite_rows(source, "SELECT name, cursor FROM hook_cursors")
    run_cli("--db", postgres_url, "apps", "list")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO hook_cursors (name, cursor) VALUES (%s, 5)", (name,))
    code, _, err = migrate("--from", str(source), "--to", postgres_url, "--into-existing")
    assert code == 1
    assert "a row of the source is in the target already" in err and "hook_cursors" in err
    assert pg_rows(postgres_url, "SELECT cursor FROM hook_cursors") == [(5,)]


def test_a_target_with_tables_of_another_program_is_refused(
    source: Path, postgres_url: str
) -> None:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    code, _, err = migrate("--from", str(source), "--to", postgres_url)
    assert code == 1 and "not the collector's (invoices)" in err
