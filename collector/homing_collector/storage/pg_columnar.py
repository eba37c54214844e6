"""The columnar copy of events on PostgreSQL: each collector's own (issue 17).

SQLite's copy (storage/columnar.py) keeps its state in the database, beside the events,
and one sealer per database writes it. On PostgreSQL, several collectors share the
database; each keeps a copy of its own instead, on its own disk, in a directory of its
own (settings.columnar_dir): the Parquet files of storage/columnar.py's layout, read by
the same DuckDB code, and a small SQLite file (`state.sqlite3`) that says what they hold.
Nothing of it is in PostgreSQL, so the collectors do not write to one another's, and
deleting a directory loses nothing: its sealer (pg_sealer.py) copies the days again.

What a sealed day's files hold is told by PostgreSQL's own transaction ids. A day is
copied in one repeatable-read transaction, whose snapshot (`pg_current_snapshot()`) is
kept with the day: the files hold exactly the events of that day visible in it. An
event's position (`pos`, pg_streams.py) is the id of the transaction that stored it,
shifted: the events of a sealed day that a later snapshot sees and the day's did not (the
tail) are those whose transaction the day's snapshot does not see as completed
(`pg_visible_in_snapshot`), and only events of transactions from the snapshot's xmin on
can be such, found through the index of positions. Events copied by migrate-db have
negative positions, older than any snapshot.

What takes events out is counted in PostgreSQL instead (`events_deleted`, PG migration
11), in the transaction that deletes them: per application and UTC day, the deletions
that took events of that day (deleting an endpoint, or a user's, expiry), and on day -1
the deletions of the application itself. A sealed day keeps the two counts its snapshot
had. A query (`plan`), in its own repeatable-read snapshot, reads the files of a sealed
day if both counts are still the ones kept, and then the day's tail from the events
table; any other day (not sealed, or sealed across a deletion) it reads from the events
table alone. So the answer is that of the events table at every moment, whatever the
sealer has done: no event of the files was deleted since (the counts would differ), and
the tail is every event stored since, in that query's snapshot.

Endpoints are numbered (`ep`) by the copy, in its state, for good; their users are read
from PostgreSQL's endpoints table by each query. The state names the database it
copies (its system identifier and the database's oid): a copy of another database, or
of one dropped and made again, is never read, and the sealer starts it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from homing_collector.storage import columnar
from homing_collector.storage.columnar import HOURS_PER_DAY, Part, Users
from homing_collector.storage.pg_streams import RANK_BITS

STATE = "state.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS source (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    db TEXT NOT NULL,
    token TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS days (
    app_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    files TEXT NOT NULL,
    snap TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    app_deleted INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    PRIMARY KEY (app_id, day)
);
CREATE TABLE IF NOT EXISTS endpoints (
    app_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (app_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS endpoints_n ON endpoints (app_id, n);
"""
# The database a copy is of: the cluster and the database in it.
_SOURCE = (
    "SELECT (SELECT system_identifier FROM pg_control_system())::text || ':' ||"
    " (SELECT oid FROM pg_database WHERE datname = current_database())::text"
)
# The rids of the rows a query reads from the events table: above those of the files (a
# day's rows numbered from 1), within the 48 bits that storage/columnar.py's walk keeps.
ROW_NUMBERS = 1 << 46
APP_DAY = -1  # the day of events_deleted that counts deletions of the application


def default_directory(base: Path, url: str) -> Path:
    """The directory of the copy of the database at `url` under `base`."""
    return base / ("pg-" + hashlib.sha256(url.encode()).hexdigest()[:16])


@dataclass(frozen=True)
class Numbers:
    """The endpoint numbers of an application, up to `top`, as of the copy's `token`.
    Never changed once made: read by queries in several threads."""

    token: str
    top: int
    known: dict[str, int]


_numbers: dict[tuple[str, str], Numbers] = {}
_numbers_lock = threading.Lock()
_KEPT_NUMBERS = 16  # applications' numbers kept in memory


@dataclass(frozen=True)
class SealedDay:
    files: list[Any]  # entries, as storage/columnar.py's columnar_days has them
    snap: str  # the snapshot the files were read in (text of a pg_snapshot)
    deleted: int  # events_deleted of the day, then
    app_deleted: int  # events_deleted of the application (APP_DAY), then
    rows: int  # events in the files


class Copy:
    """One collector's copy: its directory and the state in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / STATE

    @contextlib.contextmanager
    def state(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection to the state, in one transaction (IMMEDIATE if `write`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # A commit lost with the power leaves an earlier state, as right (see `plan`).
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def source(self) -> str | None:
        with self.state() as conn:
            row = conn.execute("SELECT db FROM source WHERE id = 0").fetchone()
        return str(row[0]) if row else None

    def reset(self, db: str) -> None:
        """Forget every sealed day and number: the copy is of database `db` from now on
        (the files, which nothing names any more, are swept)."""
        with self.state(write=True) as conn:
            conn.execute("DELETE FROM days")
            conn.execute("DELETE FROM endpoints")
            # A new token: numbers kept in memory (`numbers`) are of another numbering.
            conn.execute(
                "INSERT OR REPLACE INTO source (id, db, token) VALUES (0, ?, ?)",
                (db, secrets.token_hex(8)),
            )

    def days(self, app_id: str | None = None) -> dict[tuple[str, int], SealedDay]:
        with self.state() as conn:
            found = conn.execute(
                "SELECT app_id, day, files, snap, deleted, app_deleted, rows FROM days"
                + ("" if app_id is None else " WHERE app_id = ?"),
                () if app_id is None else (app_id,),
            ).fetchall()
        return {
            (a, int(d)): SealedDay(orjson.loads(f), s, int(x), int(y), int(r))
            for a, d, f, s, x, y, r in found
        }

    def numbers(self, app_id: str) -> Numbers:
        """The endpoint numbers of `app_id`: kept in memory across queries, and read again
        only above the largest known, since a number never changes (until `reset`, which
        gives the copy a new token)."""
        key = (str(self.root), app_id)
        with self.state() as conn:
            row = conn.execute("SELECT token FROM source WHERE id = 0").fetchone()
            token = str(row[0]) if row else ""
            kept = _numbers.get(key)
            if kept is None or kept.token != token:
                kept = Numbers(token, 0, {})
            found = conn.execute(
                "SELECT endpoint_id, n FROM endpoints WHERE app_id = ? AND n > ?",
                (app_id, kept.top),
            ).fetchall()
        if found:  # a new map: another query may be reading the one kept
            known = {**kept.known, **dict(found)}
            kept = Numbers(token, max(n for _e, n in found), known)
        with _numbers_lock:
            _numbers[key] = kept
            while len(_numbers) > _KEPT_NUMBERS:
                del _numbers[next(iter(_numbers))]
        return kept

    def number(self, app_id: str, endpoint_ids: Iterable[str]) -> dict[str, int]:
        """The numbers of `endpoint_ids`, those without one numbered now, for good (a
        number given to an endpoint whose file is never committed stays unused)."""
        wanted = list(endpoint_ids)
        with self.state(write=True) as conn:
            known = dict(
                conn.execute("SELECT endpoint_id, n FROM endpoints WHERE app_id = ?", (app_id,))
            )
            (top,) = conn.execute(
                "SELECT coalesce(max(n), 0) FROM endpoints WHERE app_id = ?", (app_id,)
            ).fetchone()
            new = [e for e in wanted if e not in known]
            given = {e: int(top) + 1 + i for i, e in enumerate(new)}
            conn.executemany(
                "INSERT INTO endpoints (app_id, endpoint_id, n) VALUES (?, ?, ?)",
                [(app_id, e, n) for e, n in given.items()],
            )
        known.update(given)
        return {e: int(known[e]) for e in wanted}

    def commit(
        self, app_id: str, day: int, before: list[Any] | None, after: SealedDay | None
    ) -> bool:
        """Make `after` the day's files (None: the day is not sealed any more) if its files
        are still `before` (None: not sealed); False: throw them away."""
        return not self.commit_many([(app_id, day, before, after)])

    def commit_many(
        self, changes: list[tuple[str, int, list[Any] | None, SealedDay | None]]
    ) -> set[tuple[str, int]]:
        """`commit` each of `changes` (app, day, before, after), in one transaction; return
        the days whose files were not `before` any more, which did not change."""
        refused = set()
        with self.state(write=True) as conn:
            for app_id, day, before, after in changes:
                row = conn.execute(
                    "SELECT files FROM days WHERE app_id = ? AND day = ?", (app_id, day)
                ).fetchone()
                if (orjson.loads(row[0]) if row else None) != before:
                    refused.add((app_id, day))
                elif after is None:
                    conn.execute("DELETE FROM days WHERE app_id = ? AND day = ?", (app_id, day))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO days (app_id, day, files, snap, deleted,"
                        " app_deleted, rows) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (app_id, day, orjson.dumps(after.files).decode(), after.snap,
                         after.deleted, after.app_deleted, after.rows),
                    )  # fmt: skip
        return refused

    def registered(self) -> set[str]:
        """Every file that a sealed day names, and the state's own files."""
        names = {entry[0] for sealed in self.days().values() for entry in sealed.files}
        return names | {STATE, STATE + "-wal", STATE + "-shm", ".sealer.lock"}


def _usable(root: Path, sealed: SealedDay) -> bool:
    return all(columnar._current(e) and (root / e[0]).exists() for e in sealed.files)


def _value(conn: psycopg.Connection[Any], query: str, params: Any = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _deletions(
    conn: psycopg.Connection[Any], app_id: str, first: int, last: int
) -> tuple[dict[int, int], int]:
    """events_deleted of the days [first, last] of `app_id`, and of the application."""
    found = {
        int(day): int(count)
        for day, count in conn.execute(
            "SELECT day, count FROM events_deleted WHERE app_id = %s"
            " AND (day = %s OR day >= %s AND day <= %s)",
            (app_id, APP_DAY, first, last),
        )
    }
    return found, found.pop(APP_DAY, 0)


# -- what a query reads ---------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Where the events of hours [lo, hi) of one application are read from: `files` of the
    sealed days, then their tails (`tails`: first hour, hour after, snapshot of each
    sealed day); the hour ranges of `open` from the events table alone."""

    files: list[Part]
    tails: list[tuple[int, int, str]]
    open: list[tuple[int, int]]


def plan(conn: psycopg.Connection[Any], copy: Copy, app_id: str, lo: int, hi: int) -> Plan:
    """The plan for hours [lo, hi), in the query's transaction (`conn`'s snapshot)."""
    if lo >= hi:
        return Plan([], [], [])
    first, last = columnar.day_of_hour(lo), columnar.day_of_hour(hi - 1)
    sealed: dict[int, SealedDay] = {}
    if copy.path.exists() and copy.source() == _value(conn, _SOURCE):
        deleted, app_deleted = _deletions(conn, app_id, first, last)
        sealed = {
            day: s
            for (_app, day), s in copy.days(app_id).items()
            if first <= day <= last
            and s.deleted == deleted.get(day, 0)
            and s.app_deleted == app_deleted
            and _usable(copy.root, s)
        }
    files: list[Part] = []
    tails: list[tuple[int, int, str]] = []
    outside: list[tuple[int, int]] = []
    for day in range(first, last + 1):
        span = (max(lo, day * HOURS_PER_DAY), min(hi, (day + 1) * HOURS_PER_DAY))
        s = sealed.get(day)
        if s is None:
            outside.append(span)
        else:
            files.extend(Part.of(copy.root, entry) for entry in s.files)
            tails.append((*span, s.snap))
    return Plan(files, tails, columnar._ranges(outside))


def tail(columns: str, typed: str) -> str:
    """SELECT `columns` (of `e`) of the events of app %(app)s with %(lo_ms)s <= ts <
    %(hi_ms)s, `typed` ("AND ..." or ""), that the snapshot of their sealed day did not
    see: the days are %(t_lo)s, %(t_hi)s, %(t_snap)s (arrays, see `tail_params`)."""
    return (
        f"SELECT {columns} FROM events e JOIN unnest(%(t_lo)s::bigint[], %(t_hi)s::bigint[],"
        " %(t_from)s::bigint[], %(t_snap)s::text[]) AS d(lo, hi, pos, snap)"
        " ON e.hour >= d.lo AND e.hour < d.hi"
        " WHERE e.app_id = %(app)s AND e.pos >= %(t_pos)s AND e.ts >= %(lo_ms)s"
        f" AND e.ts < %(hi_ms)s {typed} AND CASE WHEN e.pos >= d.pos THEN NOT"
        f" pg_visible_in_snapshot((e.pos >> {RANK_BITS})::text::xid8, d.snap::pg_snapshot)"
        " ELSE false END"
    )


def _first_position(snap: str) -> int:
    """The first position of the snapshot's xmin: events before it were all stored by
    transactions that it sees as completed."""
    return int(snap.split(":", 1)[0]) << RANK_BITS


def tail_params(tails: list[tuple[int, int, str]]) -> dict[str, Any]:
    starts = [_first_position(snap) for _lo, _hi, snap in tails]
    return {
        "t_lo": [lo for lo, _hi, _snap in tails],
        "t_hi": [hi for _lo, hi, _snap in tails],
        "t_from": starts,
        "t_snap": [snap for _lo, _hi, snap in tails],
        "t_pos": min(starts, default=0),
    }


class Numbering:
    """columnar.Numbering, of a collector's copy: the numbers its files carry, below 0 for
    endpoints it has not numbered; their users from PostgreSQL, in the query's snapshot."""

    def __init__(self, conn: psycopg.Connection[Any], copy: Copy, app_id: str) -> None:
        self.conn = conn
        self.copy = copy
        self.app_id = app_id
        self._numbers: Numbers | None = None
        self.fresh: dict[str, int] = {}
        self._users: dict[str, str] | None = None

    def _known(self) -> Numbers:
        if self._numbers is None:
            self._numbers = self.copy.numbers(self.app_id)
        return self._numbers

    def of(self, endpoint_id: str) -> int:
        n = self._known().known.get(endpoint_id)
        if n is None:
            n = self.fresh.get(endpoint_id)
            if n is None:
                n = self.fresh[endpoint_id] = -1 - len(self.fresh)
        return n

    def users(self) -> Users:
        """Read after the rows that `of` numbered. No version: a user map is made for
        each query (PostgreSQL says nothing when an endpoint's user changes)."""
        return Users(self.app_id, None, self._known().top, self._numbered, self._fresh)

    def _user_of(self) -> dict[str, str]:
        if self._users is None:
            self._users = dict(
                self.conn.execute(
                    "SELECT endpoint_id, user_id FROM endpoints WHERE app_id = %s"
                    " AND user_id IS NOT NULL",
                    (self.app_id,),
                ).fetchall()
            )
        return self._users

    def _numbered(self, after: int) -> Iterator[tuple[int, str]]:
        known = self._known().known
        for endpoint_id, user_id in self._user_of().items():
            n = known.get(endpoint_id)
            if n is not None and n > after:
                yield n, user_id

    def _fresh(self) -> Iterator[tuple[int, str]]:
        users = self._user_of()
        for endpoint_id, n in self.fresh.items():
            user_id = users.get(endpoint_id)
            if user_id is not None:
                yield n, user_id


# -- the sealer's work ----------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What a sealer's transaction sees: its snapshot, and the database's identity."""

    snap: str
    source: str


def snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """The first statement of a sealer's repeatable-read transaction."""
    row = conn.execute(f"SELECT pg_current_snapshot()::text, ({_SOURCE})").fetchone()
    assert row is not None
    return Snapshot(str(row[0]), str(row[1]))


def check_source(copy: Copy, seen: Snapshot) -> None:
    """Start the copy again if it is of another database than the one seen."""
    if copy.source() != seen.source:
        copy.reset(seen.source)


def days_with_events(conn: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    """(app, UTC day) of every day with events, the latest first: one seek per day."""
    found = []
    for (app_id,) in conn.execute("SELECT id FROM apps ORDER BY id").fetchall():
        found += [
            (app_id, int(day))
            for (day,) in conn.execute(
                "WITH RECURSIVE d(day) AS (SELECT floor((SELECT min(hour) FROM events"
                f" WHERE app_id = %(app)s) / {HOURS_PER_DAY}.0)::bigint UNION ALL SELECT"
                " floor((SELECT min(hour) FROM events WHERE app_id = %(app)s"
                f" AND hour >= (d.day + 1) * {HOURS_PER_DAY}) / {HOURS_PER_DAY}.0)::bigint"
                " FROM d WHERE d.day IS NOT NULL)"
                " SELECT day FROM d WHERE day IS NOT NULL",
                {"app": app_id},
            )
        ]
    return sorted(found, key=lambda key: (-key[1], key[0]))


def _copy_rows(
    conn: psycopg.Connection[Any],
    copy: Copy,
    app_id: str,
    day: int,
    offset: int,
    since: str | None,
) -> list[Any] | None:
    """Copy the events of one day that this transaction sees (with `since`, only those
    that snapshot did not) into a new file; its entry, None if there are none. Their rids
    are numbers from `offset` on: unique within the day."""
    where: sql.Composable = sql.SQL("")
    if since is not None:
        where = sql.SQL(
            " AND pos >= {start} AND NOT pg_visible_in_snapshot((pos >> {bits})::text::xid8,"
            " {snap}::pg_snapshot)"
        ).format(
            start=sql.Literal(_first_position(since)),
            bits=sql.Literal(RANK_BITS),
            snap=sql.Literal(since),
        )
    query = sql.SQL(
        "COPY (SELECT {offset} + row_number() OVER (), NULL::bigint, endpoint_id, event_type,"
        " ts, convert_from(body, 'UTF8') FROM events WHERE app_id = {app} AND hour >= {lo}"
        " AND hour < {hi}{where}) TO STDOUT (FORMAT csv, QUOTE E'\\x01', FORCE_QUOTE *)"
    ).format(
        offset=sql.Literal(offset),
        app=sql.Literal(app_id),
        lo=sql.Literal(day * HOURS_PER_DAY),
        hi=sql.Literal((day + 1) * HOURS_PER_DAY),
        where=where,
    )
    copy.root.mkdir(parents=True, exist_ok=True)
    path = copy.root / f".{secrets.token_hex(8)}.csv"
    duck = columnar._duck()
    try:
        size = 0
        with path.open("wb") as file, conn.cursor().copy(query) as stream:
            for data in stream:
                file.write(data)
                size += len(data)
        if not size:
            return None
        duck.execute(
            "CREATE OR REPLACE TEMP TABLE raw AS SELECT rid, endpoint_id, event_type, ts, body"
            f" FROM read_csv({columnar._literal(str(path))}, header = false,"
            f" columns = {columnar._CSV_COLUMNS}, quote = '\x01', escape = '\x01',"
            " auto_detect = false)"
        )
        ids = [e for (e,) in duck.execute("SELECT DISTINCT endpoint_id FROM raw").fetchall()]
        numbers = copy.number(app_id, ids)
        duck.execute(
            "CREATE OR REPLACE TEMP TABLE num AS SELECT unnest($1::VARCHAR[]) AS endpoint_id,"
            " unnest($2::BIGINT[]) AS n",
            [list(numbers), list(numbers.values())],
        )
        # Sorted while the rows are narrow (see columnar._to_parquet).
        duck.execute(
            "CREATE OR REPLACE TEMP TABLE batch AS SELECT r.rid, u.n AS ep, r.endpoint_id,"
            " r.event_type, r.ts, r.body FROM raw r JOIN num u ON u.endpoint_id = r.endpoint_id"
            " ORDER BY r.event_type, ep, r.ts"
        )
        name = f"{secrets.token_hex(6)}"
        return columnar.batch_to_parquet(copy.root, columnar.day_folder(app_id, day), name)
    finally:
        duck.execute("DROP TABLE IF EXISTS raw")
        duck.execute("DROP TABLE IF EXISTS num")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _discard(copy: Copy, entries: Iterable[list[Any]]) -> None:
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            (copy.root / entry[0]).unlink()


def seal_day(conn: psycopg.Connection[Any], copy: Copy, app_id: str, day: int) -> int:
    """Copy the events of one day into one file that will be its only one (a day not
    sealed yet, or sealed across a deletion); return how many. Run in a repeatable-read
    transaction of its own."""
    seen = snapshot(conn)
    check_source(copy, seen)
    before = copy.days(app_id).get((app_id, day))
    deleted, app_deleted = _deletions(conn, app_id, day, day)
    entry = _copy_rows(conn, copy, app_id, day, 0, None)
    files = [] if entry is None else [entry]
    rows = 0 if entry is None else _rows_of(copy, entry)
    after = SealedDay(files, seen.snap, deleted.get(day, 0), app_deleted, rows)
    if not copy.commit(app_id, day, None if before is None else before.files, after):
        _discard(copy, files)
        return 0
    return rows


def refresh(conn: psycopg.Connection[Any], copy: Copy, most_files: int) -> int:
    """Bring every sealed day to this transaction's snapshot: a day sealed across a
    deletion is not sealed any more (`seal_day` copies it again); the events a day's
    snapshot did not see go into a new file of it; a day of more than `most_files` files
    has them merged into one. Return how many days changed."""
    seen = snapshot(conn)
    check_source(copy, seen)
    days = copy.days()
    if not days:
        return 0
    counts: dict[tuple[str, int], int] = {}
    for app_id, day, count in conn.execute(
        "SELECT app_id, day, count FROM events_deleted WHERE app_id = ANY(%s)",
        (sorted({app_id for app_id, _ in days}),),
    ):
        counts[(app_id, int(day))] = int(count)
    keys = list(days)
    tails = [(days[k].snap, k) for k in keys]
    late: set[tuple[str, int]] = set()
    if tails:
        starts = [_first_position(snap) for snap, _k in tails]
        for app_id, day in conn.execute(
            "SELECT DISTINCT e.app_id, floor(e.hour / %(per)s::numeric)::bigint FROM events e"
            " JOIN unnest(%(apps)s::text[],"
            " %(lo)s::bigint[], %(hi)s::bigint[], %(from)s::bigint[], %(snap)s::text[])"
            " AS d(app, lo, hi, pos, snap) ON e.app_id = d.app AND e.hour >= d.lo"
            " AND e.hour < d.hi WHERE e.pos >= %(first)s AND CASE WHEN e.pos >= d.pos THEN NOT"
            f" pg_visible_in_snapshot((e.pos >> {RANK_BITS})::text::xid8, d.snap::pg_snapshot)"
            " ELSE false END",
            {
                "per": HOURS_PER_DAY,
                "apps": [app_id for _s, (app_id, _d) in tails],
                "lo": [day * HOURS_PER_DAY for _s, (_a, day) in tails],
                "hi": [(day + 1) * HOURS_PER_DAY for _s, (_a, day) in tails],
                "from": starts,
                "snap": [snap for snap, _k in tails],
                "first": min(starts),
            },
        ):
            late.add((app_id, int(day)))
    changes: list[tuple[str, int, list[Any] | None, SealedDay | None]] = []
    written: dict[tuple[str, int], list[list[Any]]] = {}
    try:
        for (app_id, day), sealed in days.items():
            if (
                sealed.deleted != counts.get((app_id, day), 0)
                or sealed.app_deleted != counts.get((app_id, APP_DAY), 0)
                or not _usable(copy.root, sealed)
            ):
                changes.append((app_id, day, sealed.files, None))
                continue
            files, rows = list(sealed.files), sealed.rows
            if (app_id, day) in late:
                entry = _copy_rows(conn, copy, app_id, day, sealed.rows, sealed.snap)
                if entry is not None:
                    written.setdefault((app_id, day), []).append(entry)
                    files.append(entry)
                    rows += _rows_of(copy, entry)
            if len(files) > most_files:
                entry = columnar.merged(
                    copy.root, columnar.day_folder(app_id, day), f"m{secrets.token_hex(6)}", files
                )
                written.setdefault((app_id, day), []).append(entry)
                files = [entry]
            after = SealedDay(files, seen.snap, sealed.deleted, sealed.app_deleted, rows)
            changes.append((app_id, day, sealed.files, after))
        refused = copy.commit_many(changes)
    except BaseException:
        _discard(copy, [entry for entries in written.values() for entry in entries])
        raise
    for key in refused:
        _discard(copy, written.get(key, []))
    return sum(
        1
        for app_id, day, _before, after in changes
        if (app_id, day) not in refused and (after is None or (app_id, day) in written)
    )


def _rows_of(copy: Copy, entry: list[Any]) -> int:
    """The events in the file of `entry`."""
    path = columnar._literal(str(copy.root / entry[0]))
    found = columnar._duck().execute(f"SELECT count(*) FROM read_parquet({path})").fetchall()
    return int(found[0][0])
