"""The columnar copy of events: Parquet files of sealed days that DuckDB reads (issue 13).

SQLite stays the source of truth; the copy is derived, and deleting its directory loses
nothing (the sealer makes it again). The copy of database `x.db` is in `x.db-columnar/`,
beside SQLite's own `x.db-wal`: `<app>/<yyyy-mm-dd>/<name>.parquet`, one folder per
application and UTC day of the events' Timestamp.

What is copied is said in the database, in the same transactions as the events:
- `columnar_state.watermark` is an events rowid. SQLite gives a new row a rowid above
  every one in the table, so rows past the watermark are those that arrived since.
- A row of `columnar_days` is a sealed day of an application: its files hold exactly the
  events of that day whose rowid is at most the watermark. A day without a row is read
  from the events table alone.
- Whatever deletes events unseals the days it deleted from (`events_deleted`) and counts
  one more generation; a copy made across a deletion does not commit. If the events with
  the largest rowids went, their rowids come again (see outbox.events_deleted): the
  watermark moves back to the largest rowid left, which holds since every row past it was
  deleted, from a day that is no longer sealed.

A query (see `plan`) reads, in one SQLite transaction, the watermark and the sealed days of
its range: DuckDB reads their files; SQLite reads the events of the range's other days, and
the events of its sealed days that arrived past the watermark (the tail). So an answer is
right at every moment, whatever the sealer has done.

Each file has an endpoint number (`ep`) beside each endpoint id: `columnar_endpoints`
gives each endpoint of an application a number from 1 up, in the transaction that commits
the first file that holds it, and never changes or reuses it. Beside it is the endpoint's
user, which triggers on `endpoints` keep equal to the endpoint's (migration 19). A file's
name says its layout (LAYOUT, as `<name>.l3.parquet`; the first layout's names have none),
so that a version before it still reads the files after it; a day with a file of a layout
that a query cannot read (READABLE) is read from the events table until the sealer has
copied it again, and a day of files of an earlier layout that it can read is read from
them until then (see `plan` and `unsealed_days`).

Files are written under a temporary name, synced and renamed; a file that no row names
(a crash before the commit, or a day rewritten) is deleted by the sealer after a while,
which leaves queries that read the files just replaced the time to finish.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from homing_collector.storage import events as events_sql

if TYPE_CHECKING:
    import duckdb

    from homing_collector.analytics.params import EventFilters, Step

HOURS_PER_DAY = 24
EPOCH = date(1970, 1, 1)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_OPERATORS = frozenset((">=", "<=", "!=", ">", "<", "="))
# The layout of the files: 2 added the endpoint number (ep); 3 has the same columns, in
# the encodings of Parquet 2 (see _write_parquet).
LAYOUT = 3
_SUFFIX = f".l{LAYOUT}.parquet"
# The layouts a query reads: those that have every column of this one.
READABLE = (2, 3)
# The bits of a key of _walk_levels: a BIGINT's, but for its sign.
_KEY_BITS = 63
_CSV_COLUMNS = (
    "{'rid': 'BIGINT', 'ep': 'BIGINT', 'endpoint_id': 'VARCHAR', 'event_type': 'VARCHAR',"
    " 'ts': 'BIGINT', 'body': 'VARCHAR'}"
)


def directory(db_path: str | os.PathLike[str]) -> Path:
    """Where the columnar copy of the database at `db_path` lives."""
    path = Path(db_path)
    return path.with_name(path.name + "-columnar")


def available() -> bool:
    """Whether DuckDB can be imported (it comes with `homing[collector]`)."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


_local = threading.local()


def _duck() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB connection."""
    conn: duckdb.DuckDBPyConnection | None = getattr(_local, "duck", None)
    if conn is None:
        import duckdb

        conn = duckdb.connect(":memory:")
        _local.duck = conn
    return conn


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Part:
    """One Parquet file of a sealed day: attribute i of `attributes` is its column a<i>,
    metric j of `metrics` its column m<j>. (Columns by position, not by name: DuckDB's
    names are not case-sensitive, attribute names are.)"""

    path: Path
    attributes: list[str]
    metrics: list[str]

    @classmethod
    def of(cls, root: Path, entry: list[Any]) -> Part:
        name, attributes, metrics = entry
        return cls(root / name, list(attributes), list(metrics))


def _current(entry: list[Any]) -> bool:
    """Whether the file of an entry is of this LAYOUT."""
    return str(entry[0]).endswith(_SUFFIX)


def _readable(entry: list[Any]) -> bool:
    """Whether a query reads the file of an entry (see READABLE)."""
    return any(str(entry[0]).endswith(f".l{layout}.parquet") for layout in READABLE)


def _select(part: Part, columns: str, attributes: Sequence[str], metrics: Sequence[str]) -> str:
    """SELECT `columns` of one file, then attribute i of `attributes` as a<i> and metric j
    of `metrics` as m<j> (NULL where the file has none)."""
    having_a = {name: i for i, name in enumerate(part.attributes)}
    having_m = {name: j for j, name in enumerate(part.metrics)}
    out = [columns]
    for i, name in enumerate(attributes):
        out.append(f"a{having_a[name]} AS a{i}" if name in having_a else f"NULL::VARCHAR AS a{i}")
    for j, name in enumerate(metrics):
        out.append(f"m{having_m[name]} AS m{j}" if name in having_m else f"NULL::DOUBLE AS m{j}")
    return f"SELECT {', '.join(out)} FROM read_parquet({_literal(str(part.path))})"


def _union(
    parts: Sequence[Part], columns: str, attributes: Sequence[str], metrics: Sequence[str]
) -> str:
    return "(" + " UNION ALL ".join(_select(p, columns, attributes, metrics) for p in parts) + ")"


def day_of_hour(hour: int) -> int:
    return hour // HOURS_PER_DAY


# -- state, in SQLite -----------------------------------------------------------------


def events_deleted(conn: sqlite3.Connection, app_id: str, days: Iterable[int] | None) -> None:
    """After events of `app_id` were deleted from `days` (None: any day), in the same
    transaction: those days are read from the events table until sealed again."""
    if days is None:
        conn.execute("DELETE FROM columnar_days WHERE app_id = ?", (app_id,))
    else:
        conn.executemany(
            "DELETE FROM columnar_days WHERE app_id = ? AND day = ?",
            [(app_id, day) for day in sorted(set(days))],
        )
    conn.execute(
        "UPDATE columnar_state SET generation = generation + 1,"
        " watermark = min(watermark, (SELECT coalesce(max(rowid), 0) FROM events))"
    )


def app_deleted(conn: sqlite3.Connection, app_id: str) -> None:
    """After every event of `app_id` was deleted, with the application: its endpoint
    numbers go too (a copy numbering more of them does not commit, see `events_deleted`)."""
    conn.execute("DELETE FROM columnar_endpoints WHERE app_id = ?", (app_id,))
    events_deleted(conn, app_id, None)


def expired(conn: sqlite3.Connection, app_id: str, before_hour: int) -> None:
    """After the events of `app_id` in hours before `before_hour` were deleted."""
    days = [
        day
        for (day,) in conn.execute(
            "SELECT day FROM columnar_days WHERE app_id = ? AND day <= ?",
            (app_id, day_of_hour(before_hour - 1)),
        )
    ]
    events_deleted(conn, app_id, days)


def _state(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT watermark, generation FROM columnar_state WHERE id = 0").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so that what is read agrees (unless one is open already)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


# -- what a query reads ---------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Where the events of hours [lo, hi) of one application are read from."""

    watermark: int
    files: list[Part]  # of the sealed days
    sealed: list[tuple[int, int]]  # hour ranges of sealed days: files, then the tail
    open: list[tuple[int, int]]  # hour ranges read from the events table alone


def _ranges(hours: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in hours:
        if lo >= hi:
            continue
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def plan(conn: sqlite3.Connection, root: Path, app_id: str, lo: int, hi: int) -> Plan:
    """The plan for hours [lo, hi); call it inside `snapshot`, with the reads it plans."""
    watermark, _ = _state(conn)
    if lo >= hi:
        return Plan(watermark, [], [], [])
    first, last = day_of_hour(lo), day_of_hour(hi - 1)
    sealed: dict[int, list[list[Any]]] = {
        int(day): orjson.loads(files)
        for day, files in conn.execute(
            "SELECT day, files FROM columnar_days WHERE app_id = ? AND day >= ? AND day <= ?",
            (app_id, first, last),
        )
    }
    inside: list[tuple[int, int]] = []
    outside: list[tuple[int, int]] = []
    files: list[Part] = []
    for day in range(first, last + 1):
        span = (max(lo, day * HOURS_PER_DAY), min(hi, (day + 1) * HOURS_PER_DAY))
        # A day whose files are gone (a directory deleted, a database restored without
        # it) or of a layout not READABLE is read from SQLite until the sealer copies it
        # again.
        if day in sealed and all(
            _readable(entry) and (root / entry[0]).exists() for entry in sealed[day]
        ):
            inside.append(span)
            files.extend(Part.of(root, entry) for entry in sealed[day])
        else:
            outside.append(span)
    return Plan(watermark, files, _ranges(inside), _ranges(outside))


def tail(columns: str, types: Sequence[str], spans: int) -> tuple[str, dict[str, object]]:
    """SELECT `columns` (of `e`) of app :app's events past rowid :watermark with
    :lo_ms <= ts < :hi_ms, in the hour ranges :s<i>_lo to :s<i>_hi (i < `spans`); of
    `types` if any are given. The rowid leads the search: the tail is small, whatever
    the range holds. Returns the SQL, which may go on with "AND ...", and the types'
    parameters."""
    params: dict[str, object] = {f"type{i}": t for i, t in enumerate(types)}
    typed = f" AND e.event_type IN ({', '.join(f':type{i}' for i in range(len(types)))})"
    within = " OR ".join(f"(e.hour >= :s{i}_lo AND e.hour < :s{i}_hi)" for i in range(spans))
    return (
        f"SELECT {columns} FROM events e NOT INDEXED WHERE e.rowid > :watermark"
        f" AND e.app_id = :app AND e.ts >= :lo_ms AND e.ts < :hi_ms AND ({within or 'false'})"
        + (typed if types else ""),
        params,
    )


def tail_params(p: Plan) -> dict[str, object]:
    params: dict[str, object] = {"watermark": p.watermark}
    for i, (lo, hi) in enumerate(p.sealed):
        params[f"s{i}_lo"], params[f"s{i}_hi"] = lo, hi
    return params


class Numbering:
    """The endpoint numbers of one application for one query, inside its `snapshot`:
    those the sealer gave, which the files of the plan carry, and numbers below 0 for the
    endpoints it has not numbered yet (created since, or whose events it has not copied)."""

    def __init__(self, conn: sqlite3.Connection, app_id: str) -> None:
        self.conn = conn
        self.app_id = app_id
        self.known: dict[str, int] = {}
        self.fresh: dict[str, int] = {}

    def of(self, endpoint_id: str) -> int:
        n = self.known.get(endpoint_id)
        if n is None:
            row = self.conn.execute(
                "SELECT n FROM columnar_endpoints WHERE app_id = ? AND endpoint_id = ?",
                (self.app_id, endpoint_id),
            ).fetchone()
            if row is None:
                n = self.fresh[endpoint_id] = -1 - len(self.fresh)
            else:
                n = int(row[0])
            self.known[endpoint_id] = n
        return n

    def users(self) -> Users:
        """The users of the app's endpoints, for a funnel by users (see `Users`)."""
        (top,) = self.conn.execute(
            "SELECT coalesce(max(n), 0) FROM columnar_endpoints WHERE app_id = ?", (self.app_id,)
        ).fetchone()
        try:
            (version,) = self.conn.execute(
                "SELECT users_version FROM columnar_state WHERE id = 0"
            ).fetchone()
        except sqlite3.OperationalError:  # a database before migration 20, read-only
            version = None
        return Users(self.app_id, version, int(top), self._numbered_users, self._fresh_users)

    def _numbered_users(self, after: int) -> Iterator[tuple[int, str]]:
        if after:  # the few numbered since, through the index of numbers
            yield from self.conn.execute(
                "SELECT n, user_id FROM columnar_endpoints WHERE app_id = ? AND n > ?"
                " AND user_id IS NOT NULL",
                (self.app_id, after),
            )
            return
        # One narrow read in the order of the table: through the endpoints' index of
        # users, each endpoint cost a seek of its number (2.8 us, and
        # bench/analytics_queries.py has 246,000 at 50M events).
        yield from self.conn.execute(
            "SELECT n, user_id FROM columnar_endpoints WHERE app_id = ? AND user_id IS NOT NULL",
            (self.app_id,),
        )

    def _fresh_users(self) -> Iterator[tuple[int, str]]:
        for endpoint_id, n in self.fresh.items():
            row = self.conn.execute(
                "SELECT user_id FROM endpoints WHERE app_id = ? AND endpoint_id = ?",
                (self.app_id, endpoint_id),
            ).fetchone()
            if row is not None and row[0] is not None:
                yield n, row[0]


@dataclass(frozen=True)
class Users:
    """(endpoint number, user id) of each endpoint of an application that has a user and
    a number, read inside the query's `snapshot`: `numbered(after)` those the sealer
    numbered above `after`, from columnar_endpoints, which holds each one's user
    (migration 19); `fresh()` those `Numbering.of` numbered for the query, to read after
    them.

    `version` is columnar_state.users_version, which changes whenever a numbered endpoint
    changes users or its number goes (migration 20), and `top` the largest number: a
    funnel keeps what `numbered` read, per application, across queries while the version
    stays the same, and reads the numbers above the largest it has when there are more
    (None: it reads them all each time)."""

    app_id: str
    version: int | None
    top: int
    numbered: Callable[[int], Iterable[tuple[int, str]]]
    fresh: Callable[[], Iterable[tuple[int, str]]]


# -- DuckDB over the files ------------------------------------------------------------


@dataclass
class Counted:
    """What `count_events` found: per (UTC hour, type), per breakdown value, per metric
    [count, sum, min, max]."""

    hours: list[tuple[int, str, int]] = field(default_factory=list)
    breakdown: list[tuple[str | None, int]] = field(default_factory=list)
    metrics: list[tuple[str, int, float, float, float]] = field(default_factory=list)


def count_events(files: Sequence[Part], lo_ms: int, hi_ms: int, f: EventFilters) -> Counted:
    """Count the events of `files` with lo_ms <= ts < hi_ms that pass `f`."""
    got = Counted()
    if not files:
        return got
    attributes = list(dict.fromkeys([name for name, _ in (*f.include, *f.exclude)]
                                    + ([f.breakdown] if f.breakdown else [])))  # fmt: skip
    column = {name: f"a{i}" for i, name in enumerate(attributes)}
    carried = sorted({name for p in files for name in p.metrics})
    metrics = carried + sorted({m.name for m in f.metrics} - set(carried))
    metric = {name: f"m{j}" for j, name in enumerate(metrics)}
    params: list[Any] = [lo_ms, hi_ms]
    where = ["ts >= ?", "ts < ?"]
    if f.event_types:
        where.append(f"event_type IN ({', '.join('?' * len(f.event_types))})")
        params.extend(f.event_types)
    for name, values in f.include:
        where.append(f"{column[name]} IN ({', '.join('?' * len(values))})")
        params.extend(sorted(values))
    for name, values in f.exclude:
        where.append(f"NOT coalesce({column[name]} IN ({', '.join('?' * len(values))}), false)")
        params.extend(sorted(values))
    for m in f.metrics:
        if m.op not in _OPERATORS:  # each is SQL as it is
            raise ValueError(f"metric: no operator {m.op!r}")
        where.append(f"coalesce({metric[m.name]} {m.op} ?, false)")
        params.append(m.value)
    value = column[f.breakdown] if f.breakdown else "NULL::VARCHAR"
    source = f"{_union(files, 'event_type, ts', attributes, metrics)} WHERE {' AND '.join(where)}"
    duck = _duck()
    # Two scans, each a GROUP BY that keeps nothing but its sums: reading the files twice
    # costs less than keeping what passes the filters in a table.
    by_value: dict[str | None, int] = {}
    for hour, event_type, found, count in duck.execute(
        f"SELECT floor(ts / {events_sql.HOUR_MS})::BIGINT, event_type, {value}, count(*)"
        f" FROM {source} GROUP BY ALL",
        params,
    ).fetchall():
        got.hours.append((int(hour), event_type, int(count)))
        by_value[found] = by_value.get(found, 0) + int(count)
    if f.breakdown:
        got.breakdown = list(by_value.items())
    if carried and got.hours:
        aggregates = ", ".join(
            f"count(m{j}), sum(m{j}), min(m{j}), max(m{j})" for j in range(len(carried))
        )
        row = duck.execute(f"SELECT {aggregates} FROM {source}", params).fetchone()
        assert row is not None
        for j, name in enumerate(carried):
            count, total, low, high = row[4 * j : 4 * j + 4]
            if count:
                got.metrics.append((name, int(count), total, low, high))
    return got


def _rows_csv(rows: Iterable[Sequence[Any]]) -> tuple[Path, int]:
    """`rows` as a new CSV file of the system's temporary directory, and its size: a query
    writes nothing beside the copy, which may be read-only (a database read as it is)."""
    with tempfile.NamedTemporaryFile(
        "w", newline="", prefix="homing-q", suffix=".csv", delete=False
    ) as file:
        try:
            csv.writer(file).writerows(rows)  # one loop in C, none per row in Python
            size = file.tell()
        except BaseException:
            file.close()
            os.unlink(file.name)
            raise
    return Path(file.name), size


_USER_COLUMNS = "{'ep': 'BIGINT', 'user_id': 'VARCHAR'}"
# Maps of endpoint numbers to users kept by each thread's DuckDB connection, the latest
# used last: at 50M events, reading one took a funnel by users 215 ms
# (bench/analytics_queries.py), and a dashboard asks the same application again.
_USER_MAPS = 4


def _user_map(
    duck: duckdb.DuckDBPyConnection, users: Users, copy: Path, temporary: list[Path]
) -> tuple[str, int]:
    """A table (ep, user_id, subj) of every endpoint number from 1 to `users.top`, and
    the number of users: the subject (subj) of an endpoint with a user is its user's
    number, from 1 up, that of one without its number negated. Kept across queries of the
    copy at `copy` while `users.version` stays the same, and given the endpoints numbered
    since.

    Every number has a row (those gone too), and the numbers are dense: DuckDB joins the
    events of the files with it as with an array (a perfect hash join, which it makes of
    an inner join on keys whose range it knows from both sides' statistics).
    bench/analytics_queries.py at 10M events, 1.9M events of the steps: 5 ms of CPU,
    where numbering the events' endpoints in a table of their own and joining the events
    with it took 70 ms, and a left join with the endpoints that have a user 100 ms."""
    kept: dict[tuple[str, str], _Kept] = _local.__dict__.setdefault("maps", {})
    key = (str(copy), users.app_id)
    found = kept.pop(key, None)
    if found is not None and (found.version != users.version or found.top > users.top):
        duck.execute(f"DROP TABLE {found.table}")
        found = None
    if found is None:
        table = "um" if users.version is None else f"um_{secrets.token_hex(6)}"
        duck.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} (ep BIGINT, user_id VARCHAR, subj BIGINT)"
        )
        found = _Kept(users.version, 0, table, 0)
    if found.top < users.top:
        # Those numbered since: their users may have numbers already, or be new.
        path, size = _rows_csv(users.numbered(found.top))
        temporary.append(path)
        uids = found.uids
        try:
            duck.execute(
                "CREATE OR REPLACE TEMP TABLE un AS SELECT * FROM"
                f" read_csv({_literal(str(path))}, header = false, columns = {_USER_COLUMNS},"
                " quote = '\"', escape = '\"', force_not_null = ['user_id'],"
                " auto_detect = false)"
                if size
                else "CREATE OR REPLACE TEMP TABLE un (ep BIGINT, user_id VARCHAR)"
            )
            # A user new to the map is numbered after the others; numbered by a hash of
            # the names rather than their order (at 50M events, 58 ms of CPU beside 96
            # for 246,000 endpoints, bench/analytics_queries.py's).
            duck.execute(
                f"INSERT INTO {found.table} SELECT e.i, c.user_id, CASE WHEN c.user_id IS NULL"
                f" THEN -e.i ELSE coalesce(k.subj, {uids} + n.i) END"
                f" FROM range({found.top + 1}, {users.top + 1}) e(i)"
                " LEFT JOIN un c ON c.ep = e.i LEFT JOIN (SELECT DISTINCT user_id, subj"
                f" FROM {found.table} WHERE user_id IN (SELECT user_id FROM un)) k"
                " ON k.user_id = c.user_id LEFT JOIN (SELECT user_id, row_number()"
                " OVER () AS i FROM (SELECT DISTINCT user_id FROM un)) n"
                " ON n.user_id = c.user_id"
            )
            (uids,) = duck.execute(
                f"SELECT coalesce(max(subj), 0) FROM {found.table} WHERE subj > 0"
            ).fetchall()[0]
        except BaseException:
            duck.execute(f"DROP TABLE {found.table}")
            raise
        finally:
            duck.execute("DROP TABLE IF EXISTS un")
        found = _Kept(found.version, users.top, found.table, int(uids))
    if users.version is not None:
        kept[key] = found
        while len(kept) > _USER_MAPS:
            duck.execute(f"DROP TABLE {kept.pop(next(iter(kept))).table}")
    return found.table, found.uids


@dataclass(frozen=True)
class _Kept:
    """A map of `_user_map`: as of `version` and endpoint numbers up to `top`, in `table`,
    its users numbered 1 to `uids`."""

    version: int | None
    top: int
    table: str
    uids: int


_MORE_COLUMNS = "{'ep': 'BIGINT', 'ts': 'BIGINT', 'm': 'BIGINT', 'rid': 'BIGINT'}"


def funnel_depths(
    files: Sequence[Part],
    lo_ms: int,
    hi_ms: int,
    steps: Sequence[Step],
    window_ms: int,
    more: Iterable[tuple[int, int, int, int]],
    users: Users | None,
    copy: Path,
) -> dict[int, int]:
    """How many subjects reached each depth (1 to len(steps)) of the funnel, at best.

    The events are those of `files` (of the columnar copy at `copy`) with
    lo_ms <= ts < hi_ms that match a step, and `more`, as (endpoint number, Timestamp,
    steps matched as bits, events rowid), numbered as the files are (see `Numbering`).
    A subject is an endpoint, or with `users`, the user of an endpoint that has one;
    `users` is read after `more`.

    This is queries.funnel's walk, said in SQL: see `_walk_levels` and `_walk_asof`.
    (As temporary tables: the same queries over CTEs took DuckDB a hundred times
    longer.)"""
    n = len(steps)
    attributes = list(dict.fromkeys(name for step in steps for name, _ in step.attributes))
    column = {name: f"a{i}" for i, name in enumerate(attributes)}
    types = sorted({step.event_type for step in steps})
    # Steps of n types: no event matches two of them, and the walk by levels needs no
    # rowids (a fifth of what the table holds). Else the events tell.
    apart = len(types) == n
    rid = "" if apart else ", rid"
    # The events that match a step, as one OR of the steps' tests: DuckDB tests the types
    # as it reads the files, and the attributes of the events of those types only
    # (bench/analytics_queries.py at 10M events: the read of the files took a fifth less
    # CPU than with the steps' bits made of every event of the types, then tested). Of n
    # types, an event's type names its step; else the bits of the steps it matches.
    matches, tested = [], []
    for step in steps:
        tests = ["event_type = ?"]
        tested.append(step.event_type)
        for name, value in step.attributes:
            tests.append(f"{column[name]} = ?")
            tested.append(value)
        matches.append(f"({' AND '.join(tests)})")
    if apart:
        m = "CASE event_type" + "".join(f" WHEN ? THEN {1 << k}" for k in range(n)) + " END"
        params: list[Any] = [step.event_type for step in steps]
    else:
        m = " | ".join(f"(CASE WHEN {test} THEN {1 << k} ELSE 0 END)"
                       for k, test in enumerate(matches))  # fmt: skip
        params = list(tested)
    params += [lo_ms, hi_ms, *tested]
    temporary: list[Path] = []
    tables = ["s", "f", "um", "r", "rk", "x"]
    tables += [f"{t}{k}" for k in range(1, n) for t in ("c", "l")]
    duck = _duck()
    # No table of the walk depends on the order of its rows: DuckDB may then write them
    # from both threads at once (bench/analytics_queries.py at 10M events: a fifth less
    # wall time for the read of the files and for each level's join, the same CPU). The
    # sealer, which may use this thread's connection next, relies on that order.
    duck.execute("SET preserve_insertion_order = false")
    try:
        extra, size = _rows_csv(more)
        temporary.append(extra)
        rows = (
            f"(SELECT * FROM read_csv({_literal(str(extra))}, header = false,"
            f" columns = {_MORE_COLUMNS}, quote = '\"', escape = '\"', auto_detect = false)"
            " WHERE m != 0)"
        )
        read = (
            f"(SELECT ep, ts, {m} AS m, rid FROM"
            f" {_union(files, 'ep, ts, event_type, rid', attributes, [])} WHERE ts >= ?"
            f" AND ts < ? AND ({' OR '.join(matches)}))"
        )
        if users is None:  # the endpoint numbers are the subjects
            sources = [f"SELECT ep AS subj, ts AS t, m{rid} FROM {s}"
                       for s, there in ((read, files), (rows, size)) if there]  # fmt: skip
        else:
            # A user is a number from 1 up, an endpoint without one a number below 0:
            # the events of the files joined with the map of every numbered endpoint.
            # (A read_parquet per file, as _union has them: over a list of files, DuckDB
            # knows no range of their numbers, and made a hash join of 180 ms of it.)
            mapped, uids = _user_map(duck, users, copy, temporary)
            sources = []
            if files:
                sources.append(
                    f"SELECT u.subj, e.ts AS t, e.m{rid} FROM {read} e"
                    f" JOIN {mapped} u ON u.ep = e.ep"
                )
            if size:
                fresh, fresh_size = _rows_csv(users.fresh())
                temporary.append(fresh)
                # Endpoints not numbered yet: their users may have numbered endpoints too,
                # or be new; one without a user is below the numbered ones.
                duck.execute(
                    "CREATE OR REPLACE TEMP TABLE f AS SELECT * FROM"
                    f" read_csv({_literal(str(fresh))}, header = false,"
                    f" columns = {_USER_COLUMNS}, quote = '\"', escape = '\"',"
                    " force_not_null = ['user_id'], auto_detect = false)"
                    if fresh_size
                    else "CREATE OR REPLACE TEMP TABLE f (ep BIGINT, user_id VARCHAR)"
                )
                duck.execute(
                    "CREATE OR REPLACE TEMP TABLE s AS SELECT f.ep, coalesce(k.subj,"
                    f" {uids} + dense_rank() OVER (ORDER BY f.user_id)) AS subj FROM f"
                    f" LEFT JOIN (SELECT DISTINCT user_id, subj FROM {mapped}"
                    " WHERE user_id IN (SELECT user_id FROM f)) k ON k.user_id = f.user_id"
                )
                sources.append(
                    f"SELECT coalesce(u.subj, s.subj, e.ep - {users.top}) AS subj, e.ts AS t,"
                    f" e.m{rid} FROM {rows} e LEFT JOIN {mapped} u ON u.ep = e.ep"
                    " LEFT JOIN s ON s.ep = e.ep"
                )
        if not sources:
            return {}
        duck.execute(
            f"CREATE OR REPLACE TEMP TABLE r AS {' UNION ALL '.join(sources)}",
            params if files else [],
        )
        if not apart:
            (shared,) = duck.execute("SELECT count(*) FROM r WHERE m & (m - 1) != 0").fetchall()[0]
            apart = not shared
        walk = _walk_levels if apart else _walk_asof
        return {int(best): int(count) for best, count in walk(duck, n, int(window_ms))}
    finally:
        duck.execute("RESET preserve_insertion_order")
        for table in tables:
            duck.execute(f"DROP TABLE IF EXISTS {table}")
        for path in temporary:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _walk_levels(duck: duckdb.DuckDBPyConnection, n: int, window_ms: int) -> list[Any]:
    """(depth, subjects) of the events of table r (subj, t, m) when none matches two
    steps: one ASOF join per step after the first, where `_walk_asof` joins every start
    down each step.

    The walk from a start reaches step k within the window if and only if some events
    s < e2 < ... < ek, of steps 1 to k in the order of queries.funnel's walk, have ek
    within the window of s: the walk's own events are such a chain, and the walk's k-th
    step is never after the ek of any chain from the same start (each is the first of
    its step after the one before), so it is within the window whenever ek is. When no
    event matches two steps, events of one moment go in the order of their steps, so
    "before" is "at the same moment or earlier". So l<k> holds each event of step k+1
    that a chain reaches within the window, with the latest start (v) of those chains:
    that of the last event of step k in l<k-1> (the starts themselves for k = 1) at its
    moment or before, if in the window. (The v of the events of a level never decreases
    with their moments, so the last one has the latest.) The subjects of l<k> are some
    of those of l<k-1>, so a subject's depth is the last level that holds it.

    The joins are on one number, the subject and the moment as (subject << bits) +
    moment: an event of another subject is then at least 2**bits - (the moments' span)
    apart, more than the window (bench/analytics_queries.py: a third less DuckDB work
    than joining on the subject and then on the moment)."""
    row = duck.execute("SELECT min(subj), max(subj), min(t), max(t) FROM r").fetchone()
    if row is None or row[0] is None:
        return []
    subj0, subj1, t0, t1 = (int(v) for v in row)
    bits = (t1 - t0 + window_ms + 1).bit_length()
    fits = bits < _KEY_BITS and subj1 - subj0 + 1 < 1 << (_KEY_BITS - bits)
    kind = "BIGINT" if fits else "HUGEINT"

    def keys(step: int) -> str:
        return (
            f"SELECT ((subj - {subj0})::{kind} << {bits}) + (t - {t0}) AS k FROM r"
            f" WHERE m = {1 << step}"
        )

    def level(k: int, carriers: str) -> str:
        return (
            f"SELECT e.k, c.v FROM ({keys(k)}) e ASOF JOIN ({carriers}) c ON c.k <= e.k"
            f" WHERE e.k - c.v <= {window_ms}"
        )

    carriers = f"SELECT k, k AS v FROM ({keys(0)})"
    for k in range(1, n - 1):
        duck.execute(f"CREATE OR REPLACE TEMP TABLE l{k} AS {level(k, carriers)}")
        carriers = f"SELECT k, v FROM l{k}"
    # The last level is counted as it is made, in the statement that counts the others
    # (which DuckDB may count while it makes it).
    counted = ", ".join(
        ["(SELECT count(DISTINCT subj) FROM r WHERE m = 1)"]
        + [f"(SELECT count(DISTINCT k >> {bits}) FROM l{k})" for k in range(1, n - 1)]
        + [f"(SELECT count(DISTINCT k >> {bits}) FROM ({level(n - 1, carriers)}))"]
    )
    reached = [int(c) for c in duck.execute(f"SELECT {counted}").fetchall()[0]] + [0]
    return [(k + 1, reached[k] - reached[k + 1]) for k in range(n) if reached[k] > reached[k + 1]]


def _walk_asof(duck: duckdb.DuckDBPyConnection, n: int, window_ms: int) -> list[Any]:
    """(depth, subjects) of the events of table r (subj, t, m, rid), whatever steps each
    matches. A subject's events go in the order (Timestamp, lowest step matched, steps
    matched, rowid), one number each (`key`, in table rk). From a start i (an event of
    step 1 at t0), step 2 is the first event from the first key of t0 on, step k+1 the
    first after step k, that matches that step and is not i itself; the depth counts the
    steps found within the window of t0. Each "first after" is an ASOF join of the starts
    with the events of that step."""
    lowest = "CASE" + "".join(f" WHEN m & {1 << k} != 0 THEN {k}" for k in range(n)) + " END"
    # Timestamp, lowest step, steps and rowid as one HUGEINT: the rowid takes 48 bits,
    # the steps 10 (MAX_STEPS), the lowest step 4.
    duck.execute(
        "CREATE OR REPLACE TEMP TABLE rk AS SELECT subj, t, m, (t::HUGEINT << 64)"
        f" + (({lowest})::HUGEINT << 60) + (m::HUGEINT << 48) + rid AS key FROM r"
    )
    # c1: each start, and the first event of step 2 from its moment on, not itself.
    first = (
        "SELECT s.subj, s.ki, s.t0, b.key AS p1 FROM (SELECT subj, key AS ki, t AS t0,"
        " t::HUGEINT << 64 AS lo FROM rk WHERE m & 1 != 0) s ASOF LEFT JOIN"
        " (SELECT subj, key FROM rk WHERE m & 2 != 0) b ON s.subj = b.subj AND b.key >= s.lo"
    )
    for k in range(1, n):
        steps_before = ", ".join(f"c.p{j}" for j in range(1, k))
        carried = f"c.subj, c.ki, c.t0{', ' + steps_before if steps_before else ''}"
        found = first if k == 1 else (
            f"SELECT {carried}, b.key AS p{k} FROM c{k - 1} c ASOF LEFT JOIN"
            f" (SELECT subj, key FROM rk WHERE m & {1 << k} != 0) b"
            f" ON c.subj = b.subj AND b.key >= c.p{k - 1} + 1"
        )  # fmt: skip
        duck.execute(f"CREATE OR REPLACE TEMP TABLE c{k} AS {found}")
        # Where that is the start itself (only a start that matches this step too),
        # the next one after it. (Keys are unique: one per event.)
        both = 1 | 1 << k
        (starts,) = duck.execute(f"SELECT count(*) FROM rk WHERE m & {both} = {both}").fetchall()[0]
        if not starts:
            continue
        duck.execute(
            f"CREATE OR REPLACE TEMP TABLE x AS SELECT f.ki, b.key FROM"
            f" (SELECT subj, ki FROM c{k} WHERE p{k} = ki) f ASOF LEFT JOIN"
            f" (SELECT subj, key FROM rk WHERE m & {1 << k} != 0) b"
            f" ON f.subj = b.subj AND b.key >= f.ki + 1"
        )
        duck.execute(
            f"UPDATE c{k} SET p{k} = x.key FROM x WHERE c{k}.ki = x.ki AND c{k}.p{k} = x.ki"
        )
    depth = " + ".join(
        f"(CASE WHEN (p{k} >> 64) - t0 <= {window_ms} THEN 1 ELSE 0 END)" for k in range(1, n)
    )
    return duck.execute(
        f"SELECT best, count(*) FROM (SELECT subj, max(1 + {depth}) AS best FROM c{n - 1}"
        " GROUP BY subj) GROUP BY best"
    ).fetchall()


# -- the sealer's work ----------------------------------------------------------------


@dataclass
class Sealed:
    """A copy made from one snapshot, to commit (see `commit`) or throw away."""

    watermark: int  # as the snapshot had it
    generation: int
    new_watermark: int
    # (app, day) -> (the files the day had, None if not sealed; the files it will have),
    # each file as its entry: [name, attribute names, metric names] (see Part)
    days: dict[tuple[str, int], tuple[list[Any] | None, list[Any]]] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    rows: int = 0
    # app -> (its largest endpoint number as the snapshot had it; numbers given since)
    numbers: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)

    def discard(self) -> None:
        for path in self.written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def day_folder(app_id: str, day: int) -> str:
    app = app_id if _SAFE_NAME.fullmatch(app_id) else "x" + app_id.encode().hex()[:120]
    return f"{app}/{EPOCH + timedelta(days=day)}"


def _sealed_days(conn: sqlite3.Connection) -> dict[tuple[str, int], list[Any]]:
    return {
        (app_id, int(day)): orjson.loads(files)
        for app_id, day, files in conn.execute("SELECT app_id, day, files FROM columnar_days")
    }


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet(select: str, final: Path, *, ordered: bool = False) -> None:
    """COPY `select` into `final`, written under a temporary name, synced and renamed;
    `ordered`: its rows come in the files' order already (event type, endpoint, moment).

    In the encodings of Parquet 2 (LAYOUT 3): the moments, in order within each endpoint's
    events of a type, are kept as deltas (DELTA_BINARY_PACKED), where Parquet 1 kept
    8 bytes each. bench/analytics_queries.py at 10M events: a funnel over 30 days took
    14% less CPU (its read of the files a quarter less), and the files 23% less room; the
    sealer wrote them in about the same CPU."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_suffix(".tmp")
    try:
        copy = (
            f"COPY ({select}{'' if ordered else ' ORDER BY event_type, ep, ts'})"
            f" TO {_literal(str(temporary))} (FORMAT parquet"
        )
        try:
            _duck().execute(f"{copy}, PARQUET_VERSION V2)")
        except Exception as e:  # a DuckDB without the option: Parquet 1, read alike
            if "PARQUET_VERSION" not in str(e).upper():
                raise
            _duck().execute(f"{copy})")
        _sync(temporary)
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _sync(final.parent)


def _to_parquet(root: Path, folder: str, csv_path: Path, name: str) -> list[Any]:
    """The CSV of events as a new Parquet file of `folder`, each attribute and metric a
    column of its own (bench/analytics_queries.py: filtering on a column of its own was
    ten times faster than on a MAP of them); return its entry for columnar_days."""
    duck = _duck()
    # Sorted while the rows are narrow, not once each name is a column: bench/columnar_seal.py
    # measured half the sealer's CPU per event for this and the struct below together.
    # A table keeps the order its rows were inserted in.
    duck.execute(
        "CREATE OR REPLACE TEMP TABLE batch AS SELECT rid, ep, endpoint_id, event_type, ts,"
        f" body FROM read_csv({_literal(str(csv_path))}, header = false,"
        f" columns = {_CSV_COLUMNS}, quote = '{_QUOTE}', escape = '{_QUOTE}',"
        " auto_detect = false) ORDER BY event_type, ep, ts"
    )
    return batch_to_parquet(root, folder, name)


def batch_to_parquet(root: Path, folder: str, name: str) -> list[Any]:
    """The rows of this thread's DuckDB table `batch` (rid, ep, endpoint_id, event_type,
    ts, body), in the files' order, as a new Parquet file of `folder`, then dropped; return
    its entry (see `_to_parquet`)."""
    final = root / folder / f"{name}{_SUFFIX}"
    duck = _duck()
    try:
        attributes, metrics = (
            [key for (key,) in duck.execute(
                f"SELECT DISTINCT unnest(json_keys(body, '$.{part}')) FROM batch ORDER BY 1"
            ).fetchall()]
            for part in ("Attributes", "Metrics")
        )  # fmt: skip
        columns = ["rid", "ep", "endpoint_id", "event_type", "ts"]
        if _fold_apart(attributes) and _fold_apart(metrics):
            # Each body parsed once, into a struct of the names found: a name is then one
            # field, not a search of a MAP per column. Its fields match names as they are
            # spelt, but two fields may not differ in case alone: the MAP below for those.
            shape = {
                part: dict.fromkeys(keys, kind)
                for part, keys, kind in (
                    ("Attributes", attributes, "VARCHAR"), ("Metrics", metrics, "DOUBLE")
                )
                if keys
            }  # fmt: skip
            source = "batch"
            if shape:
                source = (
                    "(SELECT rid, ep, endpoint_id, event_type, ts, json_transform(body,"
                    f" {_literal(orjson.dumps(shape).decode())}) AS j FROM batch)"
                )
            columns += [f"j.Attributes[{_literal(k)}] AS a{i}" for i, k in enumerate(attributes)]
            columns += [f"j.Metrics[{_literal(k)}] AS m{j}" for j, k in enumerate(metrics)]
        else:
            source = (
                "(SELECT rid, ep, endpoint_id, event_type, ts,"
                " CAST(json_extract(body, '$.Attributes') AS MAP(VARCHAR, VARCHAR)) AS a,"
                " CAST(json_extract(body, '$.Metrics') AS MAP(VARCHAR, DOUBLE)) AS m"
                " FROM batch)"
            )
            columns += [f"map_extract(a, {_literal(k)})[1] AS a{i}"
                        for i, k in enumerate(attributes)]  # fmt: skip
            columns += [f"map_extract(m, {_literal(k)})[1] AS m{j}"
                        for j, k in enumerate(metrics)]  # fmt: skip
        _write_parquet(f"SELECT {', '.join(columns)} FROM {source}", final, ordered=True)
    finally:
        duck.execute("DROP TABLE IF EXISTS batch")
    return [str(final.relative_to(root)), attributes, metrics]


def _fold_apart(names: list[str]) -> bool:
    """Whether no two of `names` differ in case alone (DuckDB's struct fields may not)."""
    return len({name.lower() for name in names}) == len(names)


class _Writer:
    """Rows of one day into a CSV file, then into Parquet. SQLite writes each row as a
    line (see _LINE): less than half the CPU of the csv module's (bench/columnar_seal.py),
    and most of it out of the GIL that the collector's event loop needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.csv_path = root / f".{secrets.token_hex(8)}.csv"
        self.file = self.csv_path.open("w", encoding="utf-8", newline="")
        self.rows = 0

    def add(self, cursor: sqlite3.Cursor, sealed: Sealed, app_id: str) -> None:
        """Write the rows of `cursor`, which selects _LINE from _NUMBERED."""
        while batch := cursor.fetchmany(10_000):
            lines = [line if new is None else _number(cursor.connection, sealed, app_id, new,
                                                       line) for new, line in batch]  # fmt: skip
            self.file.write("\n".join(lines))
            self.file.write("\n")
            self.rows += len(lines)

    def finish(self, folder: str, name: str) -> list[Any]:
        self.file.close()
        try:
            return _to_parquet(self.root, folder, self.csv_path, name)
        finally:
            self.csv_path.unlink()

    def abandon(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.csv_path.unlink()


# The CSV lines' quote: a JSON text has none (it escapes every control character), so
# a body, all quotes in JSON, goes through unchanged. bench/columnar_seal.py: 15% less
# CPU per event copied than '"', which a body holds dozens of, each written and read twice.
_QUOTE = "\x01"


def _quoted(column: str) -> str:
    return f"char(1) || replace({column}, char(1), char(1, 1)) || char(1)"


# A row as a CSV line of _CSV_COLUMNS (every text quoted), and the endpoint's id if it has
# no number yet (the line then has none either: see _number).
_LINE = (
    "CASE WHEN c.n IS NULL THEN e.endpoint_id END,"
    " e.rowid || ',' || coalesce(c.n, '') || ',' || "
    + " || ',' || ".join(
        (_quoted("e.endpoint_id"), _quoted("e.event_type"), "e.ts",
         _quoted("CAST(e.body AS TEXT)"))
    )
)  # fmt: skip
_NUMBERED = (
    "events e LEFT JOIN columnar_endpoints c"
    " ON c.app_id = e.app_id AND c.endpoint_id = e.endpoint_id"
)


def _number(
    conn: sqlite3.Connection, sealed: Sealed, app_id: str, endpoint_id: str, line: str
) -> str:
    """`line`, of an endpoint without a number, with a new one given."""
    if app_id not in sealed.numbers:
        (top,) = conn.execute(
            "SELECT coalesce(max(n), 0) FROM columnar_endpoints WHERE app_id = ?", (app_id,)
        ).fetchone()
        sealed.numbers[app_id] = (int(top), {})
    top, given = sealed.numbers[app_id]
    n = given.setdefault(endpoint_id, top + len(given) + 1)
    rowid, _, rest = line.partition(",,")  # the rowid has digits only
    return f"{rowid},{n},{rest}"


def append(conn: sqlite3.Connection, root: Path, limit: int) -> Sealed | None:
    """Copy the events past the watermark (at most `limit` of them) into new files of
    their sealed days; those of days not sealed are read from the table until their day is
    (see `rebuild`). None when nothing arrived."""
    root.mkdir(parents=True, exist_ok=True)
    with snapshot(conn):
        watermark, generation = _state(conn)
        (top,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()
        if top <= watermark:
            return None
        upto = min(int(top), watermark + limit)
        sealed = Sealed(watermark, generation, upto)
        days = _sealed_days(conn)
        writers: dict[tuple[str, int], _Writer] = {}
        try:
            if days:
                found = conn.execute(
                    "SELECT DISTINCT app_id, hour FROM events WHERE rowid > ? AND rowid <= ?",
                    (watermark, upto),
                ).fetchall()
                keys = {(app_id, day_of_hour(hour)) for app_id, hour in found}
                for app_id, day in sorted(keys & days.keys()):
                    writer = writers[(app_id, day)] = _Writer(root)
                    # "+": by rowid, not by the hours of the whole day in events_key.
                    cursor = conn.execute(
                        f"SELECT {_LINE} FROM {_NUMBERED} WHERE e.rowid > ? AND e.rowid <= ?"
                        " AND +e.app_id = ? AND +e.hour >= ? AND +e.hour < ?",
                        (watermark, upto, app_id, day * HOURS_PER_DAY,
                         (day + 1) * HOURS_PER_DAY),
                    )  # fmt: skip
                    writer.add(cursor, sealed, app_id)
            name = f"{upto:015d}-{secrets.token_hex(4)}"
            for key, writer in writers.items():
                entry = writer.finish(day_folder(*key), name)
                sealed.written.append(root / entry[0])
                sealed.rows += writer.rows
                before = days[key]
                sealed.days[key] = (before, [*before, entry])
        except BaseException:
            for writer in writers.values():
                writer.abandon()
            sealed.discard()
            raise
    return sealed


def unsealed_days(conn: sqlite3.Connection, root: Path) -> list[tuple[str, int]]:
    """(app, UTC day) of every day that has events and is not sealed, or whose files are
    gone or of an earlier layout, the latest first: a dashboard asks for the last days.
    Days that queries read from files of an earlier layout (READABLE) come after the
    others, which queries read from the events table. One seek per application and hour
    with events."""
    days = _sealed_days(conn)
    found: set[tuple[str, int]] = set()
    outdated: set[tuple[str, int]] = set()
    for key, files in days.items():
        if not all(_readable(e) and (root / e[0]).exists() for e in files):
            found.add(key)
        elif not all(_current(e) for e in files):
            outdated.add(key)
    apps = conn.execute(
        "WITH RECURSIVE a(app) AS (SELECT min(app_id) FROM events UNION ALL"
        " SELECT (SELECT min(app_id) FROM events WHERE app_id > a.app) FROM a"
        " WHERE a.app IS NOT NULL) SELECT app FROM a WHERE app IS NOT NULL"
    ).fetchall()
    for (app_id,) in apps:
        for (hour,) in conn.execute(events_sql.hours_with_events(), {"app": app_id}).fetchall():
            key = (app_id, day_of_hour(hour))
            if key not in days:
                found.add(key)
    return sorted(found, key=lambda key: (-key[1], key[0])) + sorted(
        outdated, key=lambda key: (-key[1], key[0])
    )


def rebuild(conn: sqlite3.Connection, root: Path, app_id: str, day: int) -> Sealed:
    """Copy the events of one day up to the watermark into one file that will be the
    day's only one: the first copy of a day, or a day unsealed by a deletion."""
    root.mkdir(parents=True, exist_ok=True)
    with snapshot(conn):
        watermark, generation = _state(conn)
        sealed = Sealed(watermark, generation, watermark)
        row = conn.execute(
            "SELECT files FROM columnar_days WHERE app_id = ? AND day = ?", (app_id, day)
        ).fetchone()
        before = orjson.loads(row[0]) if row else None
        writer = _Writer(root)
        try:
            cursor = conn.execute(
                f"SELECT {_LINE} FROM {_NUMBERED} WHERE e.app_id = ? AND e.hour >= ?"
                " AND e.hour < ? AND e.rowid <= ?",
                (app_id, day * HOURS_PER_DAY, (day + 1) * HOURS_PER_DAY, watermark),
            )
            writer.add(cursor, sealed, app_id)
            files = []
            if writer.rows:
                entry = writer.finish(day_folder(app_id, day), f"{watermark:015d}-r"
                                      f"{secrets.token_hex(4)}")  # fmt: skip
                sealed.written.append(root / entry[0])
                files.append(entry)
            else:
                writer.abandon()
        except BaseException:
            writer.abandon()
            sealed.discard()
            raise
        sealed.rows = writer.rows
        sealed.days[(app_id, day)] = (before, files)
    return sealed


def crowded_days(conn: sqlite3.Connection, most: int) -> list[tuple[str, int, list[Any]]]:
    """Sealed days of more than `most` files, to merge (those of an earlier layout are
    copied again instead, see `unsealed_days`)."""
    return [
        (app_id, day, files)
        for (app_id, day), files in _sealed_days(conn).items()
        if len(files) > most and all(_current(entry) for entry in files)
    ]


def merge(conn: sqlite3.Connection, root: Path, app_id: str, day: int, files: list[Any]) -> Sealed:
    """The files of a day as one, read from the files alone."""
    with snapshot(conn):
        watermark, generation = _state(conn)
    sealed = Sealed(watermark, generation, watermark)
    entry = merged(root, day_folder(app_id, day), f"{watermark:015d}-m{secrets.token_hex(4)}",
                   files)  # fmt: skip
    sealed.written.append(root / entry[0])
    sealed.days[(app_id, day)] = (files, [entry])
    return sealed


def merged(root: Path, folder: str, name: str, files: list[Any]) -> list[Any]:
    """The files of `files` (entries, see Part) as one new file of `folder`; its entry."""
    parts = [Part.of(root, entry) for entry in files]
    attributes = sorted({name for p in parts for name in p.attributes})
    metrics = sorted({name for p in parts for name in p.metrics})
    final = root / folder / f"{name}{_SUFFIX}"
    columns = ", ".join(
        ["rid", "ep", "endpoint_id", "event_type", "ts"]
        + [f"a{i}" for i in range(len(attributes))]
        + [f"m{j}" for j in range(len(metrics))]
    )
    every = _union(parts, "rid, ep, endpoint_id, event_type, ts", attributes, metrics)
    _write_parquet(f"SELECT {columns} FROM {every}", final)
    return [str(final.relative_to(root)), attributes, metrics]


def commit(conn: sqlite3.Connection, sealed: Sealed) -> bool:
    """Register what `sealed` wrote, in the writer's transaction, if nothing changed since
    its snapshot: no deletion, no other copy. False: throw it away."""
    watermark, generation = _state(conn)
    if (watermark, generation) != (sealed.watermark, sealed.generation):
        return False
    for (app_id, day), (before, _after) in sealed.days.items():
        row = conn.execute(
            "SELECT files FROM columnar_days WHERE app_id = ? AND day = ?", (app_id, day)
        ).fetchone()
        if (orjson.loads(row[0]) if row else None) != before:
            return False
    for app_id, (top, _given) in sealed.numbers.items():
        (now,) = conn.execute(
            "SELECT coalesce(max(n), 0) FROM columnar_endpoints WHERE app_id = ?", (app_id,)
        ).fetchone()
        if now != top:  # another copy numbered endpoints since
            return False
    conn.executemany(
        "INSERT INTO columnar_endpoints (app_id, endpoint_id, n, user_id) VALUES (?1, ?2, ?3,"
        " (SELECT user_id FROM endpoints WHERE app_id = ?1 AND endpoint_id = ?2))",
        [
            (app_id, endpoint_id, n)
            for app_id, (_top, given) in sealed.numbers.items()
            for endpoint_id, n in given.items()
        ],
    )
    conn.executemany(
        "INSERT INTO columnar_days (app_id, day, files) VALUES (?, ?, ?)"
        " ON CONFLICT (app_id, day) DO UPDATE SET files = excluded.files",
        [
            (app_id, day, orjson.dumps(after).decode())
            for (app_id, day), (_before, after) in sealed.days.items()
        ],
    )
    conn.execute("UPDATE columnar_state SET watermark = ? WHERE id = 0", (sealed.new_watermark,))
    return True


def registered(conn: sqlite3.Connection) -> set[str]:
    """Every file that a sealed day names."""
    with snapshot(conn):
        return {entry[0] for files in _sealed_days(conn).values() for entry in files}


def unregistered(root: Path, names: set[str]) -> list[Path]:
    """Files of the copy that no sealed day names."""
    if not root.is_dir():
        return []
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and str(path.relative_to(root)) not in names
    ]
