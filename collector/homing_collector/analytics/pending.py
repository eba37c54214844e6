"""The rollups' pending entries: what a transaction that stores events adds to them,
kept to be folded in later, many entries at once (storage/analytics_sqlite/pending.py,
storage/analytics_pg/pending.py).

An entry is one application's `Summary` (analytics/rollups.py) with the user key that
each endpoint active in it had when its events were stored, in MessagePack (unlike JSON,
it holds a sum that overflowed to infinity). Both backends keep entries alike, so that
`migrate-db` copies SQLite's entries into PostgreSQL, which folds them.

The summary part is encoded where the summary is made (the collector, while it checks
a batch), the user keys where they are read (the writer): `entry` joins the two without
decoding the summary again. The collector hands the writer a `Staged` pair, the summary
part and the endpoints whose user keys the entry needs.
"""

from __future__ import annotations

from typing import Any

import msgspec

from homing_collector.analytics.rollups import Summary

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode

_PARTS = 6  # a summary's parts; an entry adds the user keys, after them
# MessagePack: an array of 7 (a fixarray), where the parts are an array of 6
_ENTRY_HEAD = bytes([0x90 | (_PARTS + 1)])

# (the summary's parts, encoded; the endpoints active in it, whose user keys it needs)
Staged = tuple[bytes, list[str]]


def encode_summary(summary: Summary) -> Staged:
    """A summary's parts, encoded, and the endpoints active in it."""
    data = _encode(
        (
            [(endpoint_id, list(hours)) for endpoint_id, hours in summary.hours.items()],
            [(*key, count) for key, count in summary.counts.items()],
            [(*key, *agg) for key, agg in summary.metrics.items()],
            [(*key, *got) for key, got in summary.revenue.items()],
            [(*key, *span) for key, span in summary.sessions.items()],
            summary.opens,
        )
    )
    return data, list(summary.hours)


def entry(parts: bytes, users: dict[str, str]) -> bytes:
    """An entry: a summary's encoded parts (`encode_summary`) and the user key of each
    endpoint active in it; as `encode` makes it, byte for byte."""
    return _ENTRY_HEAD + parts[1:] + _encode(users)


def encode(summary: Summary, users: dict[str, str]) -> bytes:
    """An entry: a summary and the user key of each endpoint active in it."""
    return entry(encode_summary(summary)[0], users)


def parts(data: bytes) -> list[Any]:
    """An entry's parts as rows: [hours, counts, metrics, revenue, sessions, opens, user
    keys], each but the last a list of lists (rollups.combine_entries adds them up)."""
    found: list[Any] = _decode(data)
    return found


def decode(data: bytes) -> tuple[Summary, dict[str, str]]:
    """An entry's summary and user keys."""
    hours, counts, metrics, revenue, sessions, opens, users = _decode(data)
    summary = Summary()
    summary.hours = {endpoint_id: set(seen) for endpoint_id, seen in hours}
    summary.counts = {(hour, event_type): count for hour, event_type, count in counts}
    summary.metrics = {(row[0], row[1], row[2]): row[3:] for row in metrics}
    summary.revenue = {(hour, currency): [n, amount] for hour, currency, n, amount in revenue}
    summary.sessions = {(row[0], row[1]): row[2:] for row in sessions}
    summary.opens = [tuple(row) for row in opens]
    return summary, users
