"""The events of one PutEvents entry checked in C, when every one is valid and common.

`homing.wire.check_event` judges each event in Python and names the field and the rule
it breaks. Most entries break none, so they are first converted, all at once, to the
structs below, which msgspec checks with the same rules, and each is then read without a
datetime. Any doubt (a rule broken, a timestamp in another form) returns None, and the
caller judges the entry with check_event as before: its answers, and what it stores, do
not depend on which path ran.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson
from msgspec import Meta, Struct

from homing import limits

_MAX_FLOAT = sys.float_info.max

# The rules of homing.wire._check_event; a key or a value that is not valid UTF-8 (a lone
# surrogate) makes orjson.dumps fail, and the entry is judged again there.
_Key = Annotated[str, Meta(min_length=1, max_length=limits.MAX_EVENT_KEY_LENGTH)]
_Value = Annotated[str, Meta(max_length=limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH)]
_Number = (
    Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
    | Annotated[float, Meta(ge=-_MAX_FLOAT, le=_MAX_FLOAT)]  # finite
)
_Plain = Annotated[str, Meta(max_length=limits.MAX_PLAIN_STRING_LENGTH)]


class _Session(Struct):
    Id: Annotated[str, Meta(min_length=1, max_length=limits.MAX_ID_LENGTH)]
    StartTimestamp: datetime
    StopTimestamp: datetime | None = None
    Duration: Annotated[int, Meta(ge=0, lt=2**31)] | None = None


class _Event(Struct):
    EventType: Annotated[str, Meta(min_length=1, max_length=limits.MAX_EVENT_TYPE_LENGTH)]
    Timestamp: datetime
    # Each alone within the limit of keys of both together.
    Attributes: Annotated[dict[_Key, _Value], Meta(max_length=limits.MAX_EVENT_KEYS)] | None = None
    Metrics: Annotated[dict[_Key, _Number], Meta(max_length=limits.MAX_EVENT_KEYS)] | None = None
    Session: _Session | None = None
    AppPackageName: _Plain | None = None
    AppTitle: _Plain | None = None
    AppVersionCode: _Plain | None = None
    SdkName: _Plain | None = None
    ClientSdkVersion: _Plain | None = None


_EVENTS = dict[Annotated[str, Meta(min_length=1, max_length=limits.MAX_ID_LENGTH)], _Event]
_MAX_KEYS = limits.MAX_EVENT_KEYS
_BACKSLASH = ord("\\")


def check_common(
    events: dict[str, Any],
) -> list[tuple[str, str, int, str | None, bytes]] | None:
    """(event id, event type, timestamp in ms, session id, body) of each event in
    `events` (an entry's Events), if each is valid in the common form; else None."""
    try:
        typed = msgspec.convert(events, _EVENTS)
    except msgspec.ValidationError:
        return None
    checked = []
    starts: set[str] = set()  # the Session.StartTimestamps seen: the events share a few
    dumps = orjson.dumps
    # msgspec keeps the order of the keys: each Struct is beside the dict it was made of.
    for (event_id, event), raw in zip(typed.items(), events.values(), strict=True):
        # _common_time, inline: this runs for every event ingested.
        text = raw["Timestamp"]
        if len(text) != 24 or text[23] != "Z" or not event_id.isprintable():
            return None
        attributes, metrics = event.Attributes, event.Metrics
        if (
            attributes is not None
            and metrics is not None
            and len(attributes) + len(metrics) > _MAX_KEYS
        ):
            return None
        session = event.Session
        session_id = None
        if session is not None:
            session_id = session.Id
            if not session_id.isprintable():
                return None
            times = raw["Session"]
            start = times["StartTimestamp"]
            if start not in starts:
                if not _common_time(start):
                    return None
                starts.add(start)
            if session.StopTimestamp is not None and not (
                _common_time(times["StopTimestamp"])
                and session.StopTimestamp >= session.StartTimestamp
            ):
                return None
        try:
            body = dumps(raw)
        except orjson.JSONEncodeError:
            return None
        # A NUL, maybe: the Python check refuses one, naming it. orjson writes a backslash
        # only in an escape, and most bodies have none: find(int) is a memchr, where
        # `bytes in body` first tries its needle as an int, raising and clearing an error.
        if body.find(_BACKSLASH) >= 0 and b"\\u0000" in body:
            return None
        # As check_events computes it from parse_timestamp, to the last float bit.
        checked.append(
            (event_id, event.EventType, int(event.Timestamp.timestamp() * 1000), session_id, body)
        )
    return checked


def _common_time(text: str) -> bool:
    """Whether `text`, which msgspec read as a datetime, is in format_timestamp's form
    (24 characters, milliseconds and "Z"), which homing.wire.parse_timestamp reads the
    same. In others they may differ: msgspec rounds a seventh digit, Python drops it."""
    return len(text) == 24 and text[23] == "Z"
