"""The rollups' pending entries on PostgreSQL (an_pending, migration 9).

A PutEvents transaction does not add to the rollups itself: it appends what its events
add (their `Summary`, with the user key each endpoint had then) to an_pending, a table
that takes inserts without conflicts. One collector at a time folds the entries into the
rollup tables (`fold`, under an advisory lock: another takes over if it dies), every
FOLD_SECONDS, adding up many transactions' worth in one; concurrent ingest transactions
no longer wait on one another's locks of the same hot rollup rows. bench/
collector_ingest.py --postgres: see docs/deployment.md.

No answer is ever read from unfolded rollups:

- an analytics read folds first (PostgresStorage.analytics_read): what was answered 202
  before the read began is in the rollups it reads;
- what takes events out of the rollups (deleting endpoints, an application, expired
  events) takes GATE exclusively and folds first, in its own transaction: it subtracts
  from rollups that hold every event it deletes. A transaction that stores events
  (PutEvents, a campaign's sends) holds GATE shared from its start, so none commits an
  entry in between.

Nothing else writes the rollups: each fold, and each deletion, holds FOLD_LOCK until it
commits, so that they never run at once.

The demographic counters' pending counts (endpoint_values_pending, migration 10) are
folded by the same folds, first: they are sums that no deletion reads, so only the reads
need them folded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from homing_collector.analytics import rollups
from homing_collector.analytics.pending import encode, parts
from homing_collector.analytics.rollups import Summary
from homing_collector.storage import analytics_pg
from homing_collector.storage.analytics_pg import endpoint_values as values_pg

Connection = psycopg.AsyncConnection[Any]

FOLD_SECONDS = 0.5  # between a collector's folds, when entries are waiting
FOLD_ROWS = 2_000  # entries folded in one transaction by the background fold
# Fixed numbers, the same in every process: the advisory locks' names.
FOLD_LOCK = 0x686F6D696E6701  # one folder at a time
GATE = 0x686F6D696E6702  # shared by ingest, exclusive for what takes events out


async def stage(
    conn: Connection,
    summaries: Sequence[tuple[str, Summary]],
    known: dict[str, dict[str, str | None]],
) -> None:
    """Append the summaries (application, summary), each endpoint's activity under the
    user it has now: `known` gives some endpoints' user ids (application -> endpoint id ->
    user id or None), the others are read from the endpoints table."""
    wanted = sorted(
        {
            (app_id, endpoint_id)
            for app_id, summary in summaries
            for endpoint_id in summary.hours
            if endpoint_id not in known.get(app_id, {})
        }
    )
    found: dict[tuple[str, str], str | None] = {}
    if wanted:
        cursor = await conn.execute(
            "SELECT v.app_id, v.endpoint_id, e.user_id FROM unnest(%b::text[], %b::text[])"
            " AS v(app_id, endpoint_id) LEFT JOIN LATERAL (SELECT user_id FROM endpoints e"
            " WHERE e.app_id = v.app_id AND e.endpoint_id = v.endpoint_id OFFSET 0) AS e"
            " ON true",
            analytics_pg.columns(wanted, 2),
        )
        found = {(app_id, e): user_id for app_id, e, user_id in await cursor.fetchall()}
    apps, entries = [], []
    for app_id, summary in summaries:
        given = known.get(app_id, {})
        keys = {
            e: rollups.user_key(e, given[e] if e in given else found.get((app_id, e)))
            for e in summary.hours
        }
        apps.append(app_id)
        entries.append(encode(summary, keys))
    await conn.execute(
        "INSERT INTO an_pending (app_id, summary) SELECT * FROM unnest(%b::text[], %b::bytea[])",
        (apps, entries),
    )


async def share_gate(conn: Connection) -> None:
    """Hold GATE shared until the transaction ends: taken first by ingest."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (GATE,))


async def settle(conn: Connection) -> None:
    """Hold GATE exclusively until the transaction ends, and fold every entry in it:
    taken first by what takes events out of the rollups."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (GATE,))
    while await fold(conn, wait=True):
        pass


async def fold(conn: Connection, *, wait: bool, limit: int = FOLD_ROWS) -> int:
    """Fold every pending count of the demographic counters (analytics_pg/
    endpoint_values.py) and up to `limit` entries into the rollups, in the caller's
    transaction; return how many entries. Without `wait`, fold nothing (0) if another
    transaction is folding."""
    if wait:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (FOLD_LOCK,))
    else:
        cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (FOLD_LOCK,))
        row = await cursor.fetchone()
        if not (row and row[0]):
            return 0
    await values_pg.fold(conn)  # at once: it has no limit
    # The oldest entries, taken out in the statement that reads them (the ids of entries
    # committed meanwhile may lie below these: the fold takes the ids it read).
    cursor = await conn.execute(
        "DELETE FROM an_pending WHERE id = ANY(ARRAY(SELECT id FROM an_pending ORDER BY id"
        " LIMIT %s)) RETURNING id, app_id, summary",
        (limit,),
    )
    found = sorted(await cursor.fetchall())
    if not found:
        return 0
    # Added up as SQLite's fold adds them (analytics/rollups.py's apply_entries), from
    # the entries' rows: no Summary is made of each. Without the subjects' locks
    # (rollups.lock_subjects): whatever else writes the rollups (the deletions, through
    # `settle`) holds FOLD_LOCK too, and a lock per user and endpoint of thousands of
    # entries would fill the server's lock table.
    entries = [(app_id, parts(data)) for _id, app_id, data in found]
    await analytics_pg.call(conn, rollups.apply_entries, entries, subject_locks=False)
    return len(found)


# The tables whose rows a fold looks up by key. Until a table is analyzed the planner
# knows nothing of its columns, and may look a key up through another index that shares
# its first columns, reading every row of the application: a new deployment's folds took
# 23 ms to read ~100 batches' subjects through an_subjects_first, 0.4 ms through the
# primary key once analyzed (bench/collector_ingest.py --postgres --statements), and
# autovacuum may analyze a new table only a minute after it filled.
LOOKED_UP = ("an_subjects", "an_active")
YOUNG_ROWS = 100  # rows of a table never analyzed that `analyze_young` waits for


async def analyze_young(conn: Connection) -> bool:
    """ANALYZE those of LOOKED_UP that were never analyzed and hold YOUNG_ROWS rows or
    more (skipped if another holds them: autovacuum, say); return whether any was never
    analyzed."""
    cursor = await conn.execute(
        "SELECT relname, n_live_tup >= %s FROM pg_stat_user_tables"
        " WHERE schemaname = current_schema() AND relname = ANY(%s)"
        " AND last_analyze IS NULL AND last_autoanalyze IS NULL",
        (YOUNG_ROWS, list(LOOKED_UP)),
    )
    young = await cursor.fetchall()
    grown = [name for name, full in young if full]
    if grown:
        await conn.execute(f"ANALYZE (SKIP_LOCKED) {', '.join(grown)}")
    return bool(young)


async def waiting(conn: Connection) -> bool:
    """Whether any entry, or any count of the demographic counters, waits to be folded."""
    cursor = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM an_pending) OR EXISTS (SELECT 1 FROM endpoint_values_pending)"
    )
    row = await cursor.fetchone()
    return bool(row and row[0])
