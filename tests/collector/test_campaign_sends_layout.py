"""The layout of campaigns' send records on SQLite (migration 22): keyed by campaign,
endpoint and activity, with no other index but that of the DEFERRED records, and the
migration that brings an older database to it with every record kept."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from homing_collector.storage import campaigns, migrations

APP = "0123456789abcdef0123456789abcdef"
CAMPAIGN = "fedcba9876543210fedcba9876543210"
ACTIVITY = "00112233445566778899aabbccddeeff"
COLUMNS = (
    "app_id, campaign_id, activity_id, endpoint_id, status, treatment_id, at_ms, message_id,"
    " session_id"
)
RECORDS = [
    # A scheduled run's: sent, held by quiet time until 5,000, over a cap.
    (APP, CAMPAIGN, ACTIVITY, "e1", "SENT", "0", 1_000, "m1", None),
    (APP, CAMPAIGN, ACTIVITY, "e2", "DEFERRED", "0", 5_000, None, None),
    (APP, CAMPAIGN, ACTIVITY, "e3", "FILTERED_OUT_BY_CAPS", None, 1_000, None, None),
    # An event-triggered campaign's, one per event: e1 sent twice, e4 outside the segment.
    (APP, CAMPAIGN, f"{ACTIVITY}:ev-b", "e1", "SENT", "0", 2_000, "m2", "s1"),
    (APP, CAMPAIGN, f"{ACTIVITY}:ev-a", "e1", "SENT", "0", 3_000, "m3", "s2"),
    (APP, CAMPAIGN, f"{ACTIVITY}:ev-c", "e4", "FILTERED_OUT_BY_SEGMENT", None, 2_000, None, None),
    (APP, "other", ACTIVITY, "e1", "SENT", "0", 1_000, "m4", None),
]


def _plan(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str:
    return " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def _check_layout(conn: sqlite3.Connection) -> None:
    info = conn.execute("PRAGMA table_info(campaign_sends)").fetchall()
    key = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5]]
    assert key == ["app_id", "campaign_id", "endpoint_id", "activity_id"]
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'campaign_sends'"
        " AND sql IS NOT NULL"
    ).fetchall()
    assert [name for name, _ in indexes] == ["campaign_sends_deferred"]
    assert "WHERE status = 'DEFERRED'" in indexes[0][1]
    # An endpoint's past sends, for the caps, by the key; the DEFERRED records of a run
    # by their index, however many others the campaign has.
    caps = _plan(
        conn,
        "SELECT endpoint_id, at_ms, session_id FROM campaign_sends WHERE app_id = ?"
        " AND campaign_id = ? AND status = 'SENT' AND endpoint_id IN (?, ?)",
        (APP, CAMPAIGN, "e1", "e2"),
    )
    assert "USING PRIMARY KEY (app_id=? AND campaign_id=? AND endpoint_id=?)" in caps, caps
    due = _plan(
        conn,
        "SELECT endpoint_id FROM campaign_sends WHERE app_id = ? AND campaign_id = ?"
        " AND activity_id = ? AND status = 'DEFERRED' AND at_ms <= ? LIMIT ?",
        (APP, CAMPAIGN, ACTIVITY, 9_000, 10),
    )
    assert "USING INDEX campaign_sends_deferred" in due, due


def test_send_records_are_found_by_their_key_and_only_deferred_ones_by_an_index(
    tmp_path: Path,
) -> None:
    """One B-tree per record but for DEFERRED ones: an event-triggered campaign's record,
    keyed by a random event id, dirties one page of the file, not two."""
    with contextlib.closing(sqlite3.connect(tmp_path / "h.db", isolation_level=None)) as conn:
        migrations.migrate(conn)
        _check_layout(conn)


def test_the_migration_keys_send_records_by_endpoint_and_keeps_every_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "h.db", isolation_level=None)) as conn:
        monkeypatch.setattr(
            migrations, "SQLITE_MIGRATIONS", [m for m in migrations.SQLITE_MIGRATIONS if m[0] < 22]
        )
        assert migrations.migrate(conn) == 21
        conn.executemany(f"INSERT INTO campaign_sends ({COLUMNS}) VALUES ({', '.join('?' * 9)})",
                         RECORDS)  # fmt: skip
        monkeypatch.undo()
        assert migrations.migrate(conn) >= 22

        assert sorted(conn.execute(f"SELECT {COLUMNS} FROM campaign_sends")) == sorted(RECORDS)
        _check_layout(conn)
        found = campaigns.sends_of(conn, APP, CAMPAIGN, ["e1", "e2", "e3", "e4"])
        assert {e: sorted(s) for e, s in found.items()} == {
            "e1": [(1_000, None), (2_000, "s1"), (3_000, "s2")]
        }
        assert campaigns.deferred(conn, APP, CAMPAIGN, ACTIVITY, 4_000, 10) == ([], 5_000)
        assert campaigns.deferred(conn, APP, CAMPAIGN, ACTIVITY, 5_000, 10) == (["e2"], None)
        # A record of the same key is still one record: a resent event is sent once, and
        # a DEFERRED one is replaced when it is sent at last.
        stored = campaigns._many_sends(2)
        again = [
            (APP, CAMPAIGN, f"{ACTIVITY}:ev-b", "e1", "SENT", "0", 9_000, "m9", "s1"),
            (APP, CAMPAIGN, ACTIVITY, "e2", "SENT", "0", 9_000, "m8", None),
        ]
        written = conn.execute(stored, [v for row in again for v in row]).fetchall()
        assert written == [(ACTIVITY, "e2")]
        (count,) = conn.execute("SELECT count(*) FROM campaign_sends").fetchone()
        assert count == len(RECORDS)
