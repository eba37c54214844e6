"""Rollups of the stored events, kept from what each transaction that stores events adds.

Everything is bucketed by the UTC hour of the event's Timestamp (when it happened, not
when it arrived), so a day in any time zone with a whole-hour offset is a run of buckets.
For the rows it has just inserted (never a duplicate), the transaction that stores them
appends the `Summary` of each batch, which the collector made while it checked the
events (or `summarize` makes of the rows), as a pending entry (analytics/pending.py);
the folds add many entries up at once (`apply_entries`, on both backends; `apply` and
`apply_summaries` add at once). The storage's delete jobs fold first, then call
`remove_endpoint` and `remove_app`. Each call adds up in Python first and then writes
with a few batched upserts (storage/analytics_sqlite/rollups.py, or
analytics_pg/rollups.py): the fewer statements, the faster ingestion.

Tables (migration 3):

- an_active(app_id, kind, hour, key): who was active in an hour. kind 0 is an endpoint
  (key = endpoint id), kind 1 a user (key = "u:" + UserId, or "e:" + endpoint id for an
  endpoint without a user);
- an_subjects(app_id, kind, key, first_hour, last_hour): when each was first and last active;
- an_cover(app_id, kind, span, hour, delta): distinct active counts over windows (cover.py);
- an_counts(app_id, hour, event_type, count);
- an_metrics(app_id, hour, event_type, name, count, sum, min, max);
- an_revenue(app_id, hour, currency, purchases, amount);
- an_sessions(app_id, endpoint_id, session_id, start_ms, stop_ms): one row per session id;
- an_visits, an_visit_hours, an_visit_lengths: sessions after the 5-second rule (visits.py);
- an_user_keys(app_id, endpoint_id, key) (migration 5): the "u:" keys an endpoint's
  activity may have been counted under before its user changed (see `user_changed`);
- an_opens(app_id, endpoint_id, ts, campaign_id) (migration 17): the notification opens
  (opens.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from homing import limits
from homing.wire import WireError, formatted_ms, parse_timestamp
from homing_collector.analytics import cohorts, cover, opens, visits
from homing_collector.analytics.days import HOUR_MS
from homing_collector.campaigns.delivery import CAMPAIGN_SEND
from homing_collector.storage.analytics_backend import Connection, statements

ENDPOINT, USER = 0, 1
PURCHASE = "_monetization.purchase"
UNKNOWN_CURRENCY = "UNKNOWN"

# (app_id, endpoint_id, event_id, event_type, ts, arrival, session_id, body): the columns
# of the events table, as the writer inserts them.
Row = Sequence[Any]


_SKEW_MS = limits.MAX_FUTURE_SKEW_SECONDS * 1000  # how far ahead an event may be stamped


def add_sums(a: float, b: float) -> float:
    """a + b, or 0 where that is no number. Metric values may be any finite float, so a sum
    can overflow to +inf or -inf, and +inf + -inf is NaN, which SQLite would store as NULL
    and refuse: an indeterminate sum counts as 0 instead of failing the batch. The SQL
    upserts do the same with `coalesce(..., 0)`."""
    total = a + b
    return 0.0 if total != total else total


class _Batch:
    """What a set of events adds to the rollups."""

    __slots__ = ("counts", "hours", "metrics", "opens", "revenue", "sessions")

    def __init__(self) -> None:
        self.hours: dict[tuple[str, int, str], set[int]] = {}  # (app, kind, key) -> hours
        self.counts: dict[tuple[str, int, str], int] = {}
        self.metrics: dict[tuple[str, int, str, str], list[float]] = {}
        self.revenue: dict[tuple[str, int, str], list[float]] = {}
        self.sessions: dict[tuple[str, str, str], list[int]] = {}
        self.opens: list[opens.Open] = []


# Events the collector records for an endpoint, not the endpoint's own doing: counted by
# type, but no sign that anyone was active (nor a new user, nor a retained one).
NOT_ACTIVITY = frozenset({CAMPAIGN_SEND})
_OPENED = opens.OPENED


class Summary:
    """What one application's events add to the rollups, before the database is read.

    The collector fills one for each PutEvents batch while it checks the events, when
    each is parsed anyway, and hands it to the writer beside the rows: the writer then
    need not parse every body again. `aggregate` fills them from stored rows. Summaries
    add up: one of two batches equals the sum of each one's.
    """

    __slots__ = ("_starts", "counts", "hours", "metrics", "opens", "revenue", "sessions")

    def __init__(self) -> None:
        self.hours: dict[str, set[int]] = {}  # endpoint id -> hours with an event
        self.counts: dict[tuple[int, str], int] = {}  # (hour, event type)
        self.metrics: dict[tuple[int, str, str], list[float]] = {}  # (hour, type, name)
        self.revenue: dict[tuple[int, str], list[float]] = {}  # (hour, currency)
        self.sessions: dict[tuple[str, str], list[int]] = {}  # (endpoint, session id)
        self.opens: list[tuple[str, int, str | None]] = []  # (endpoint, ts, campaign id)
        self._starts: dict[str, int | None] = {}  # StartTimestamp text -> parsed, in ms

    def __getstate__(self) -> tuple[Any, ...]:
        return self.hours, self.counts, self.metrics, self.revenue, self.sessions, self.opens

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.hours, self.counts, self.metrics, self.revenue, self.sessions, self.opens = state
        self._starts = {}

    def add(
        self,
        endpoint_id: str,
        event_type: str,
        ts: int,
        session_id: str | None,
        event: dict[str, Any],
    ) -> None:
        """Add one stored event: `ts` is when it happened, as stored, and `event` its body
        (checked)."""
        self.add_all(endpoint_id, ((event_type, ts, session_id, event),))

    def add_all(
        self,
        endpoint_id: str,
        events: Iterable[tuple[str, int, str | None, dict[str, Any]]],
    ) -> None:
        """Add stored events of one endpoint, each (event type, ts, session id, body) as
        `add` takes them. This runs for every event ingested, so the code is kept tight:
        what each event needs is looked up once for them all, and the hours and session
        spans are gathered for this endpoint alone, then added once."""
        counts, metrics, revenue = self.counts, self.metrics, self.revenue
        count_of, metric_of = counts.get, metrics.get
        starts = self._starts
        start_of = starts.get
        seen: set[int] = set()
        add_hour = seen.add
        spans: dict[str, list[int]] = {}  # session id -> [start, stop]
        span_of = spans.get
        for event_type, ts, session_id, event in events:
            hour = ts // HOUR_MS
            ckey = (hour, event_type)
            counts[ckey] = count_of(ckey, 0) + 1
            if event_type in NOT_ACTIVITY:
                continue
            add_hour(hour)
            values = event.get("Metrics")
            if values:
                for name, number in values.items():
                    value = float(number)  # an integer past 2**63 would not fit SQLite's
                    mkey = (hour, event_type, name)
                    agg = metric_of(mkey)
                    if agg is None:
                        metrics[mkey] = [1, value, value, value]
                    else:
                        agg[0] += 1
                        agg[1] += value  # finite + finite or +-inf: never NaN
                        if value < agg[2]:
                            agg[2] = value
                        if value > agg[3]:
                            agg[3] = value
            if session_id is not None:
                # A session runs from its StartTimestamp to its StopTimestamp, or to its
                # last event while it has none (an event's own time stands in for either).
                session = event["Session"]
                text = session.get("StartTimestamp")
                parsed: Any = start_of(text, _UNPARSED)
                if parsed is _UNPARSED:
                    parsed = starts[text] = _parse_ms(text)
                start = ts if parsed is None else parsed
                stop = ts
                if "StopTimestamp" in session:
                    parsed = _parse_ms(session["StopTimestamp"])
                    if parsed is not None:
                        stop = parsed
                if start > ts or stop > ts + _SKEW_MS:  # rare: a clock that was set wrong
                    if _parse_ms(event.get("Timestamp")) != ts:
                        # The event was too far ahead and is stored as arriving: so is its
                        # session, on the same day as the event, not days ahead of it.
                        start = stop = ts
                    elif stop < start:  # stamped before its session began (clock set back)
                        stop = start
                span = span_of(session_id)
                if span is None:
                    spans[session_id] = [start, stop]
                else:  # as `widen` does, without a call for every event
                    if start < span[0]:
                        span[0] = start
                    if stop > span[1]:
                        span[1] = stop
            if event_type == PURCHASE:
                currency = (event.get("Attributes") or {}).get("_currency") or UNKNOWN_CURRENCY
                m = values or {}
                amount = float(m.get("_item_price", 0.0)) * float(m.get("_quantity", 1.0))
                rkey = (hour, currency)
                got = revenue.get(rkey)
                if got is None:
                    revenue[rkey] = [1, amount]
                else:
                    got[0] += 1
                    got[1] = add_sums(got[1], amount)  # amounts can be +inf and -inf
            elif event_type == _OPENED:
                campaign_id = (event.get("Attributes") or {}).get("campaign_id")
                self.opens.append((endpoint_id, ts, campaign_id))
        if seen:
            known = self.hours.get(endpoint_id)
            if known is None:
                self.hours[endpoint_id] = seen
            else:
                known |= seen
        if spans:
            sessions = self.sessions
            for session_id, (start, stop) in spans.items():
                skey = (endpoint_id, session_id)
                span = sessions.get(skey)
                if span is None:
                    sessions[skey] = [start, stop]
                else:
                    widen(span, start, stop)


_UNPARSED = object()  # Summary._starts' answer for a StartTimestamp not parsed yet


def widen(span: list[int], start: int, stop: int) -> None:
    """Widen a session's [start, stop] to take in another span of it."""
    if start < span[0]:
        span[0] = start
    if stop > span[1]:
        span[1] = stop


def user_key(endpoint_id: str, user_id: str | None) -> str:
    return "e:" + endpoint_id if user_id is None else "u:" + user_id


def _users(conn: Connection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The user key of each (app, endpoint), as the endpoints table says now."""
    wanted = list(set(pairs))
    found: dict[tuple[str, str], str | None] = {}
    for app_id, endpoint_id, user_id in statements(conn).rollups.users_of(conn, wanted):
        found[(app_id, endpoint_id)] = user_id
    return {pair: user_key(pair[1], found.get(pair)) for pair in wanted}


def _parse_ms(value: Any) -> int | None:
    """A timestamp in ms, or None for one that is missing or does not parse."""
    if type(value) is str:
        exact = formatted_ms(value)
        if exact is not None:
            # The number the parse below gives, through datetime.timestamp()'s float
            # (a millisecond short, now and then): rollups kept before stay comparable.
            return int(exact * 1000 / 1_000_000 * 1000)
    try:
        return int(parse_timestamp(value).timestamp() * 1000)
    except WireError:
        return None


def summarize(rows: Iterable[Row]) -> list[tuple[str, Summary]]:
    """Stored rows as one summary per application (each body parsed once)."""
    summaries: dict[str, Summary] = {}
    loads = orjson.loads
    for app_id, endpoint_id, _event_id, event_type, ts, _arrival, session_id, body in rows:
        summary = summaries.get(app_id)
        if summary is None:
            summary = summaries[app_id] = Summary()
        summary.add(endpoint_id, event_type, ts, session_id, loads(body))
    return list(summaries.items())


def combine(summaries: Iterable[tuple[str, Summary]], users: dict[tuple[str, str], str]) -> _Batch:
    """Add up summaries; `users` holds the user key of each (app, endpoint) in them."""
    batch = _Batch()
    counts, metrics = batch.counts, batch.metrics
    revenue, sessions = batch.revenue, batch.sessions
    endpoint_hours: dict[tuple[str, str], set[int]] = {}
    for app_id, summary in summaries:
        for endpoint_id, seen in summary.hours.items():
            ekey = (app_id, endpoint_id)
            known = endpoint_hours.get(ekey)
            endpoint_hours[ekey] = set(seen) if known is None else known | seen
        for (hour, event_type), count in summary.counts.items():
            ckey = (app_id, hour, event_type)
            counts[ckey] = counts.get(ckey, 0) + count
        for (hour, event_type, name), agg in summary.metrics.items():
            mkey = (app_id, hour, event_type, name)
            got = metrics.get(mkey)
            if got is None:
                metrics[mkey] = list(agg)
            else:
                got[0] += agg[0]
                got[1] = add_sums(got[1], agg[1])
                got[2] = min(got[2], agg[2])
                got[3] = max(got[3], agg[3])
        for (hour, currency), (purchases, amount) in summary.revenue.items():
            rkey = (app_id, hour, currency)
            had = revenue.get(rkey)
            if had is None:
                revenue[rkey] = [purchases, amount]
            else:
                had[0] += purchases
                had[1] = add_sums(had[1], amount)
        batch.opens.extend((app_id, *row) for row in summary.opens)
        for (endpoint_id, session_id), (start, stop) in summary.sessions.items():
            skey = (app_id, endpoint_id, session_id)
            span = sessions.get(skey)
            if span is None:
                sessions[skey] = [start, stop]
            else:
                widen(span, start, stop)
    _add_hours(batch, endpoint_hours, users)
    return batch


def combine_entries(entries: Iterable[tuple[str, Sequence[Any]]]) -> _Batch:
    """Add up pending entries as analytics/pending.py's `parts` decodes them, each
    (application, (hours, counts, metrics, revenue, sessions, opens, user keys)), as
    `combine` adds up their summaries: from their rows, without a Summary of each. No
    endpoint may have two user keys among them."""
    batch = _Batch()
    counts, metrics = batch.counts, batch.metrics
    revenue, sessions, opened = batch.revenue, batch.sessions, batch.opens
    count_of, metric_of = counts.get, metrics.get
    endpoint_hours: dict[tuple[str, str], set[int]] = {}
    users: dict[tuple[str, str], str] = {}
    for app_id, (hours, counted, measured, paid, spans, opens_, keys) in entries:
        for endpoint_id, seen in hours:
            ekey = (app_id, endpoint_id)
            known = endpoint_hours.get(ekey)
            if known is None:
                endpoint_hours[ekey] = set(seen)
            else:
                known.update(seen)
            users[ekey] = keys[endpoint_id]
        for hour, event_type, count in counted:
            ckey = (app_id, hour, event_type)
            counts[ckey] = count_of(ckey, 0) + count
        for hour, event_type, name, n, total, low, high in measured:
            mkey = (app_id, hour, event_type, name)
            got = metric_of(mkey)
            if got is None:
                metrics[mkey] = [n, total, low, high]
            else:
                got[0] += n
                total += got[1]  # add_sums, written out: this runs for every entry's rows
                got[1] = 0.0 if total != total else total
                if low < got[2]:
                    got[2] = low
                if high > got[3]:
                    got[3] = high
        for hour, currency, purchases, amount in paid:
            rkey = (app_id, hour, currency)
            had = revenue.get(rkey)
            if had is None:
                revenue[rkey] = [purchases, amount]
            else:
                had[0] += purchases
                had[1] = add_sums(had[1], amount)
        opened.extend((app_id, *row) for row in opens_)
        for endpoint_id, session_id, start, stop in spans:
            skey = (app_id, endpoint_id, session_id)
            span = sessions.get(skey)
            if span is None:
                sessions[skey] = [start, stop]
            else:
                widen(span, start, stop)
    _add_hours(batch, endpoint_hours, users)
    return batch


def _add_hours(
    batch: _Batch,
    endpoint_hours: dict[tuple[str, str], set[int]],
    users: dict[tuple[str, str], str],
) -> None:
    """The hours each endpoint was active in, and each of their users: a user's are those
    of all its endpoints."""
    active = batch.hours
    for (app_id, endpoint_id), seen in endpoint_hours.items():
        active[(app_id, ENDPOINT, endpoint_id)] = seen
        ukey = (app_id, USER, users[(app_id, endpoint_id)])
        known = active.get(ukey)
        active[ukey] = set(seen) if known is None else known | seen


def aggregate(rows: Sequence[Row], users: dict[tuple[str, str], str]) -> _Batch:
    """Add up stored rows; `users` holds the user key of each (app, endpoint) in them."""
    return combine(summarize(rows), users)


def _activity(conn: Connection, hours: dict[tuple[str, int, str], set[int]]) -> None:
    """Record who was active when, and the coverage deltas of the hours that are new."""
    subjects = list(hours)
    statements(conn).rollups.lock_subjects(conn, subjects)  # what is read stays so
    known: dict[tuple[str, int, str], tuple[int, int]] = {}  # -> (first, last hour)
    for app_id, kind, key, first, last in statements(conn).rollups.subject_spans(conn, subjects):
        known[(app_id, kind, key)] = (first, last)
    deltas: cover.Deltas = {}
    retention: cohorts.Deltas = {}
    late: list[tuple[str, int, str]] = []
    for subject, seen in hours.items():
        app_id, kind, key = subject
        span = known.get(subject)
        ordered = sorted(seen)
        if span is None:  # never seen before
            cover.add_new_hours(deltas, app_id, kind, ordered, [])
            cohorts.add_all(retention, app_id, kind, ordered[0], ordered, 1)
            continue
        if ordered[0] < span[0]:
            # An hour before the first one: the subject moves to an earlier cohort.
            old = statements(conn).rollups.active_hours(
                conn, app_id, kind, key, span[0] + cohorts.HORIZON
            )
            cohorts.add_all(retention, app_id, kind, span[0], old, -1)
            cohorts.add_all(retention, app_id, kind, ordered[0], {*old, *ordered}, 1)
        if ordered[0] >= span[1]:  # the usual case: nothing after these hours yet
            added = cover.add_new_hours(deltas, app_id, kind, ordered, [span[1]])
            for h, below, above in added:
                cohorts.add_hour(retention, app_id, kind, span[0], h, below, above)
        else:
            late.append(subject)
    if late:
        # Hours before the last known one: read what is around them (only hours within
        # the longest window matter).
        around: dict[tuple[str, int, str], list[int]] = {subject: [] for subject in late}
        ranges = [
            (*subject, min(hours[subject]) - cover.MAX_SPAN, max(hours[subject]) + cover.MAX_SPAN)
            for subject in late
        ]
        for app_id, kind, key, hour in statements(conn).rollups.active_near(conn, ranges):
            around[(app_id, kind, key)].append(hour)
        for subject, near in around.items():
            near.sort()
            app_id, kind, _key = subject
            ordered = sorted(hours[subject])
            added = cover.add_new_hours(deltas, app_id, kind, ordered, near)
            first = known[subject][0]
            if ordered[0] >= first:  # else the cohort was recomputed whole above
                for h, below, above in added:
                    cohorts.add_hour(retention, app_id, kind, first, h, below, above)
    statements(conn).rollups.add_activity(
        conn,
        [(app_id, kind, hour, key) for (app_id, kind, key), seen in hours.items()
         for hour in seen],
        [(*subject, min(seen), max(seen)) for subject, seen in hours.items()],
    )  # fmt: skip
    cover.write(conn, deltas)
    cohorts.write(conn, retention)


def apply(conn: Connection, rows: Sequence[Row]) -> None:
    """Add newly stored events to the rollups, inside the caller's transaction."""
    if rows:
        apply_summaries(conn, summarize(rows))


def apply_summaries(conn: Connection, summaries: Sequence[tuple[str, Summary]]) -> None:
    """Add the summaries of newly stored events, inside the caller's transaction."""
    if not summaries:
        return
    pairs = {(app_id, endpoint_id) for app_id, s in summaries for endpoint_id in s.hours}
    _apply(conn, summaries, _users(conn, pairs))


def apply_entries(conn: Connection, entries: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Add pending entries, as analytics/pending.py's `parts` decodes them: made at
    ingest and kept since, each endpoint's activity counts under the user it had then.
    Entries are added up together while no endpoint has two users among them."""
    start = 0
    users: dict[tuple[str, str], str] = {}
    for i, (app_id, parts) in enumerate(entries):
        keys: dict[str, str] = parts[6]
        if any(users.get((app_id, e), key) != key for e, key in keys.items()):
            _write(conn, combine_entries(entries[start:i]))
            start, users = i, {}
        for e, key in keys.items():
            users[(app_id, e)] = key
    if start < len(entries):
        _write(conn, combine_entries(entries[start:]))


def _apply(
    conn: Connection, summaries: Sequence[tuple[str, Summary]], users: dict[tuple[str, str], str]
) -> None:
    _write(conn, combine(summaries, users))


def _write(conn: Connection, batch: _Batch) -> None:
    """Add what `batch` adds up to the rollups."""
    _activity(conn, batch.hours)
    statements(conn).rollups.add_counts(
        conn, [(*key, count) for key, count in batch.counts.items()]
    )
    if batch.metrics:
        statements(conn).rollups.add_metrics(
            conn, [(*key, *agg) for key, agg in batch.metrics.items()]
        )
    if batch.sessions:
        visits.update(conn, batch.sessions)
        statements(conn).rollups.add_sessions(
            conn, [(*key, *span) for key, span in batch.sessions.items()]
        )
    if batch.opens:
        opens.write(conn, batch.opens)
    if batch.revenue:
        statements(conn).rollups.add_revenue(
            conn, [(*key, *got) for key, got in batch.revenue.items()]
        )


def remove_endpoint(conn: Connection, app_id: str, endpoint_id: str, user_id: str | None) -> None:
    """Take an endpoint's events out of the rollups. Call before its events are deleted,
    after its row in `endpoints` is (the user's other endpoints are read from there)."""
    rows = statements(conn).rollups.endpoint_events(conn, app_id, endpoint_id)
    if rows:
        users = {(app_id, endpoint_id): user_key(endpoint_id, user_id)}
        _subtract(conn, app_id, endpoint_id, aggregate(rows, users))
    statements(conn).rollups.remove_sessions(conn, app_id, endpoint_id)
    opens.remove_endpoint(conn, app_id, endpoint_id)
    visits.remove_endpoint(conn, app_id, endpoint_id)
    _forget_subject(conn, app_id, ENDPOINT, endpoint_id)
    _regroup_users(conn, app_id, endpoint_id, user_key(endpoint_id, user_id))


def user_changed(conn: Connection, app_id: str, endpoint_id: str, old_user_id: str) -> None:
    """Note that an endpoint had `old_user_id` until now. Its activity so far stays counted
    under that user; were the endpoint deleted, that user is counted again without it.
    ("e:" keys need no note: only their own endpoint is ever counted under them.)"""
    statements(conn).rollups.note_user_key(
        conn, app_id, endpoint_id, user_key(endpoint_id, old_user_id)
    )


def _regroup_users(conn: Connection, app_id: str, deleted: str, key: str) -> None:
    """Count again, by the users the endpoints have now, every user the deleted endpoint's
    activity may have been counted under, and every user sharing an endpoint with those.

    An endpoint's hours are counted under the user it had when its events came in: "e:"
    and its id before a login, then one "u:" key per UserId it had. Forgetting only its
    current user would leave it counted under the earlier ones. So: take the keys it was
    counted under (its "e:" key, its current one, those noted by `user_changed`), the
    remaining endpoints counted under any of them (by their current user or a note), and
    those endpoints' own keys, until no new one turns up; forget them all, and count each
    of those endpoints' hours under its current user. Their notes are then void."""
    keys = {"e:" + deleted, key}
    keys.update(statements(conn).rollups.noted_keys(conn, app_id, deleted))
    current: dict[str, str] = {}  # a remaining endpoint -> its user key now
    pending = list(keys)
    while pending:
        found = _counted_under(conn, app_id, pending.pop())
        found.pop(deleted, None)
        for endpoint_id, now in found.items():
            if endpoint_id in current:
                continue
            current[endpoint_id] = now
            noted = statements(conn).rollups.noted_keys(conn, app_id, endpoint_id)
            for other in ("e:" + endpoint_id, now, *noted):
                if other not in keys:
                    keys.add(other)
                    pending.append(other)
    for forgotten in sorted(keys):
        _forget_subject(conn, app_id, USER, forgotten)
    regrouped: dict[tuple[str, int, str], set[int]] = {}
    for endpoint_id, now in current.items():
        hours = regrouped.setdefault((app_id, USER, now), set())
        hours.update(statements(conn).rollups.active_hours(conn, app_id, ENDPOINT, endpoint_id))
    regrouped = {subject: hours for subject, hours in regrouped.items() if hours}
    if regrouped:
        _activity(conn, regrouped)
    statements(conn).rollups.forget_notes(conn, app_id, (deleted, *current))


def _counted_under(conn: Connection, app_id: str, key: str) -> dict[str, str]:
    """The endpoints whose activity may be counted under user `key`, each with its user
    key now: those it is the key of now, and those noted under it."""
    found: dict[str, str] = {}
    if key.startswith("e:"):
        rows = statements(conn).rollups.endpoint_users(conn, app_id, endpoint_id=key[2:])
    else:
        rows = statements(conn).rollups.endpoint_users(conn, app_id, user_id=key[2:])
    rows += statements(conn).rollups.noted_under(conn, app_id, key)
    for endpoint_id, user_id in rows:
        found[endpoint_id] = user_key(endpoint_id, user_id)
    return found


def _forget_subject(conn: Connection, app_id: str, kind: int, key: str) -> None:
    statements(conn).rollups.lock_subjects(conn, [(app_id, kind, key)])
    hours = statements(conn).rollups.forget_subject(conn, app_id, kind, key)
    deltas: cover.Deltas = {}
    cover.add_all(deltas, app_id, kind, sorted(hours), -1)
    cover.write(conn, deltas)
    if hours:
        retention: cohorts.Deltas = {}
        cohorts.add_all(retention, app_id, kind, min(hours), hours, -1)
        cohorts.write(conn, retention)
    statements(conn).rollups.forget_span(conn, app_id, kind, key)


def _subtract(conn: Connection, app_id: str, endpoint_id: str, batch: _Batch) -> None:
    statements(conn).rollups.subtract_counts(
        conn, app_id, [(count, *key) for key, count in batch.counts.items()]
    )
    if batch.revenue:
        statements(conn).rollups.subtract_revenue(
            conn, app_id, [(got[0], got[1], *key) for key, got in batch.revenue.items()]
        )
    if batch.metrics:
        _recompute_metrics(conn, app_id, endpoint_id, batch)


def _recompute_metrics(conn: Connection, app_id: str, endpoint_id: str, batch: _Batch) -> None:
    """Count and sum subtract; a minimum or maximum does not. Where the removed events held
    a bucket's minimum or maximum, the bucket is computed again from the events that
    remain, which means reading the stored events of those hours."""
    removed = batch.metrics
    stored: dict[tuple[str, int, str, str], tuple[float, float]] = {}
    for app, hour, event_type, name, low, high in statements(conn).rollups.metric_extremes(
        conn, list(removed)
    ):
        stored[(app, hour, event_type, name)] = (low, high)
    again = []
    subtract = []
    for key, (count, total, low, high) in removed.items():
        have = stored.get(key)
        if have is not None and have[0] < low and high < have[1]:
            subtract.append((count, total, *key))  # the extremes belong to others
        else:
            again.append(key)
    statements(conn).rollups.subtract_metrics(conn, subtract)
    if not again:
        return
    statements(conn).rollups.forget_metrics(conn, again)
    hours = sorted({key[1] for key in again})
    types = sorted({key[2] for key in again})
    remaining = statements(conn).rollups.events_besides(conn, app_id, hours, types, endpoint_id)
    users = {(row[0], row[1]): "" for row in remaining}
    recomputed = aggregate(remaining, users).metrics
    statements(conn).rollups.insert_metrics(
        conn, [(*key, *recomputed[key]) for key in again if key in recomputed]
    )


def remove_app(conn: Connection, app_id: str) -> None:
    statements(conn).rollups.remove_app(conn, app_id)


def iter_rows(values: Sequence[Any], width: int) -> list[Row]:
    """The writer's flat list of column values, as rows."""
    columns = iter(values)
    return list(zip(*[columns] * width, strict=False))


KEY_WIDTH = 5  # a row's (app, endpoint, event id, type, Timestamp): what stores it once


def new_rows(values: Sequence[Any], width: int, new: set[tuple[Any, ...]]) -> list[Row]:
    """The rows whose (app, endpoint, event id, type, Timestamp) is in `new`, the first of
    each only."""
    fresh = set(new)
    rows = []
    for row in iter_rows(values, width):
        key = row[:KEY_WIDTH]
        if key in fresh:
            fresh.remove(key)
            rows.append(row)
    return rows
