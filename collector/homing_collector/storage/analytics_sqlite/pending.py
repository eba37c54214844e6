"""The rollups' pending entries on SQLite (an_pending, migration 21).

A transaction that stores events does not add to the rollups itself: it appends what
they add (an entry, analytics/pending.py: their `Summary`, with the user key each
endpoint has then) to an_pending, one row per batch. A writer folds the entries into the
rollups later, many at once, in a transaction of its own (`fold`): FOLD_SECONDS after it
staged the first entry not folded yet, whether more batches came meanwhile or not. The
rollup rows that every batch adds to (the counts, metrics and coverage of the hour) are
then written once per fold, not once per commit (bench/collector_cpu.py and
bench/wal_per_event.py: see docs/collector.md, Capacity).

No answer is ever read from unfolded rollups:

- an analytics read folds first (SQLiteStorage.analytics_read): what was answered 202
  before the read began is in the rollups it reads;
- what takes events out of the rollups (deleting endpoints, an application, expired
  events) folds first (`settle`), in its own transaction: it subtracts from rollups that
  hold every event it deletes. SQLite has one writer at a time, so no transaction commits
  an entry in between.

An entry commits with its events: one acknowledged is in an_pending or in the rollups,
whenever the collector is killed, and a writer that starts folds what it finds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from homing_collector.analytics import pending, rollups
from homing_collector.analytics.pending import Staged
from homing_collector.analytics.rollups import Summary
from homing_collector.storage.analytics_sqlite.rollups import users_of

FOLD_SECONDS = 0.2  # from the first entry a writer stages to the fold that takes it in
FOLD_ROWS = 2_000  # entries folded in one transaction


def stage(conn: sqlite3.Connection, staged: Sequence[tuple[str, Staged]]) -> None:
    """Append (application, (summary's parts, active endpoints)) entries, each endpoint's
    activity under the user it has now, in the endpoints table."""
    wanted = list({(app_id, e) for app_id, (_parts, active) in staged for e in active})
    found: dict[tuple[str, str], str | None] = {}
    if wanted:
        found = {(app_id, e): user_id for app_id, e, user_id in users_of(conn, wanted)}
    user_key = rollups.user_key
    conn.executemany(
        "INSERT INTO an_pending (app_id, summary) VALUES (?, ?)",
        [
            (app_id, pending.entry(parts, {e: user_key(e, found.get((app_id, e))) for e in active}))
            for app_id, (parts, active) in staged
        ],
    )


def stage_summaries(conn: sqlite3.Connection, summaries: Sequence[tuple[str, Summary]]) -> None:
    """Append (application, summary) entries (see `stage`)."""
    stage(conn, [(app_id, pending.encode_summary(summary)) for app_id, summary in summaries])


def fold(conn: sqlite3.Connection, limit: int = FOLD_ROWS) -> int:
    """Fold up to `limit` entries, the oldest first, into the rollups, in the caller's
    transaction; return how many."""
    found = conn.execute(
        "SELECT id, app_id, summary FROM an_pending ORDER BY id LIMIT ?", (limit,)
    ).fetchall()
    if not found:
        return 0
    rollups.apply_entries(conn, [(app_id, pending.parts(data)) for _id, app_id, data in found])
    # One writer at a time: no entry was appended below the last one read meanwhile.
    conn.execute("DELETE FROM an_pending WHERE id <= ?", (found[-1][0],))
    return len(found)


def settle(conn: sqlite3.Connection) -> int:
    """Fold every entry, in the caller's transaction (first thing in one that takes
    events out of the rollups); return how many."""
    total = 0
    while folded := fold(conn):
        total += folded
    return total


def waiting(conn: sqlite3.Connection) -> bool:
    """Whether any entry waits to be folded."""
    (found,) = conn.execute("SELECT EXISTS (SELECT 1 FROM an_pending)").fetchone()
    return bool(found)
