"""The events of a PutEvents entry checked in C (event_check) or one by one in Python
(homing.wire.check_event): for any body, the same statuses, messages, rows and rollups."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from homing import limits
from homing_collector import ingest
from homing_collector.body import parse_json
from homing_collector.errors import PinpointError
from homing_collector.event_check import check_common
from tests.collector.test_fuzz import encoded, moments, numbers

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc).timestamp()
DIFFERENTIAL = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)

# Times in format_timestamp's form, mostly, and in every form near it.
millis = moments.map(lambda d: d.isoformat(timespec="milliseconds") + "Z")
times = st.one_of(
    millis,
    millis,
    millis.map(lambda t: t[:-1] + "z"),
    millis.map(lambda t: t[:10] + " " + t[11:]),
    millis.map(lambda t: t[:10] + "x" + t[11:]),
    moments.map(lambda d: d.isoformat(timespec="microseconds") + "9Z"),  # a 7th digit
    moments.map(lambda d: d.isoformat(timespec="seconds") + "Z"),
    moments.map(lambda d: d.isoformat(timespec="milliseconds") + "+01:00"),
    moments.map(lambda d: d.isoformat(timespec="milliseconds")),  # no offset: UTC
    st.sampled_from(
        [
            "0000-01-01T00:00:00.000Z",
            "2026-02-30T10:00:00.000Z",
            "2026-11-28T24:00:00.000Z",
            "2026-11-28T10:00:60.000Z",
            "2026-11-28T10:00:00,000Z",
            "2026-11-28T10:00:00.000Z\n",
            "2026-11-28T10:00:0\uff10.000Z",
            "9999-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00.000Z",
        ]
    ),
)
# Any JSON, small: wrong types in any place.
json_junk: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=3), children, max_size=2)
    ),
    max_leaves=4,
)
key = st.text("abcé😀", min_size=1, max_size=3)
odd_keys = ("", "\x00", "\u202e", "\ud800", "k" * 50, "k" * 51)
value = st.text(max_size=8) | st.sampled_from(["v" * 200, "é" * 200])
odd_values = ("v" * 201, "\ud800", 5)
odd_ids = ("", "a/b", "x" * 256, "x" * 257, "\x07", "\ud800")
number = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
odd_numbers = (True, math.inf, -math.inf, math.nan, "1", 2**63, -(2**63) - 1, 2**64, 1e308)


def requests(rare: int | None) -> st.SearchStrategy[Any]:
    """PutEvents bodies in which each value is valid but one time in about `rare`, or
    always (the times in other forms too, sometimes)."""

    def near(valid: st.SearchStrategy[Any], *odd: Any) -> st.SearchStrategy[Any]:
        if rare is None:
            return valid
        choices = [valid] * rare + [st.sampled_from([None, *odd]), json_junk]
        return st.sampled_from(choices).flatmap(lambda strategy: strategy)

    def near_key(valid: st.SearchStrategy[str], *odd: str) -> st.SearchStrategy[str]:
        if rare is None:
            return valid
        return st.sampled_from([valid] * rare + [st.sampled_from(odd)]).flatmap(lambda k: k)

    time = st.sampled_from([millis] * (rare or 10) + [times]).flatmap(lambda strategy: strategy)
    session = st.fixed_dictionaries(
        {"Id": near(st.uuids().map(str), "", "x" * 257, "\n", 5), "StartTimestamp": near(time)},
        optional={
            "StopTimestamp": near(time),
            "Duration": near(st.integers(0, 2**31 - 1), -1, 2**31, True, 1.5),
        },
    )
    event = st.fixed_dictionaries(
        {
            "EventType": near(st.sampled_from(["click", "_session.start", "x" * 50]), "", "y" * 51),
            "Timestamp": near(time),
        },
        optional={
            "Attributes": near(
                st.dictionaries(near_key(key, *odd_keys), near(value, *odd_values), max_size=22)
            ),
            "Metrics": near(
                st.dictionaries(near_key(key, *odd_keys), near(number, *odd_numbers), max_size=22)
            ),
            "Session": near(session),
            "AppPackageName": near(st.text(max_size=8), "p" * 1025, 1),
            "AppTitle": near(st.text(max_size=8), "t" * 1024, "\ud800"),
            "AppVersionCode": near(st.sampled_from(["142", "é"])),
            "SdkName": near(st.just("homing-python")),
            "ClientSdkVersion": near(st.just("0.1.0")),
            "Unknown": json_junk,
        },
    )
    entry = st.fixed_dictionaries(
        {
            "Events": near(
                st.dictionaries(
                    near_key(st.uuids().map(str), *odd_ids), near(event), min_size=1, max_size=6
                ),
                {},
            )
        },
        optional={"Endpoint": near(st.just({"ChannelType": "GCM"}))},
    )
    return near(
        st.fixed_dictionaries(
            {
                "BatchItem": st.dictionaries(
                    st.uuids().map(str) | st.sampled_from(["", "a/b", "\x07"]),
                    near(entry),
                    min_size=1,
                    max_size=3,
                )
            }
        )
    )


ODD_TIMES = [
    "2026-11-28T10:00:00.9999999Z",  # msgspec rounds up a second, Python truncates
    "2026-11-28T10:00:00.000+01:00",
    "2026-11-28T10:00:00.000",
    "2026-02-30T10:00:00.000Z",
    "2026-11-28T10:00:60.000Z",
    "2026-11-28 10:00:00.000Z",
    "0000-01-01T00:00:00.000Z",
    "",
    5,
    None,
]
# One rule broken, or a value in a form the C path leaves to Python: (field, values).
ODD: list[tuple[tuple[str, ...], list[Any]]] = [
    (("EventType",), ["", "y" * 51, "\ud800", 5, None]),
    (("Timestamp",), ODD_TIMES),
    (("Session",), [None, {}, [], 5, {"Id": "s"}]),
    (("Session", "Id"), ["", "\n", "\u2028", "x" * 257, "\ud800", 5, None]),
    (("Session", "StartTimestamp"), ODD_TIMES),
    (("Session", "StopTimestamp"), [*ODD_TIMES, "2000-01-01T00:00:00.000Z"]),
    (
        ("Session", "StartTimestamp", "StopTimestamp"),
        [
            ("2026-11-28T10:00:00.000", "2026-11-28T10:00:01.000Z"),  # naive and aware
            ("2026-11-28T10:00:00.9999999Z", "2026-11-28T10:00:01.000Z"),
            ("2026-11-28T10:00:00.0000009Z", "2026-11-28T10:00:00.000Z"),
        ],
    ),
    (("Session", "Duration"), [-1, 2**31, True, 1.5, 2**31 - 1]),
    (
        ("Attributes",),
        [
            {f"a{n}": "v" for n in range(41)},
            {"": "v"},
            {"k" * 51: "v"},
            {"\ud800": "v"},
            {"a": "v" * 201},
            {"a": "é" * 201},
            {"a": "\ud800"},
            {"a": 5},
            [],
            "a",
        ],
    ),
    (
        ("Metrics",),
        [
            {f"m{n}": 1 for n in range(41)},
            {"m": True},
            {"m": 2**63},
            {"m": -(2**63) - 1},
            {"m": 2**63 - 1},
            {"m": math.inf},
            {"m": math.nan},
            {"m": "1"},
            {"": 1},
            {"\ud800": 1.5},
        ],
    ),
    (("Attributes+Metrics",), [(20, 21), (20, 20)]),  # 40 keys in all at most
    (("AppTitle",), ["t" * 1025, "t" * 1024, "\ud800", 5]),
    (("Unknown",), [2**64, "\ud800", math.inf, {"\ud800": 1}]),
    (("id",), ["", "a/b", "x" * 256, "x" * 257, "\x07", "\ud800"]),
]


def with_odd(payload: Any, entry: int, event: int, field: tuple[str, ...], value: Any) -> Any:
    """`payload` with one value of one event (by their places) set to `value`."""
    item = list(payload["BatchItem"].values())[entry]
    events = item["Events"]
    event_id = list(events)[event]
    body = events[event_id]
    if field == ("id",):
        item["Events"] = {value if key == event_id else key: one for key, one in events.items()}
    elif field == ("Attributes+Metrics",):
        body["Attributes"] = {f"a{n}": "v" for n in range(value[0])}
        body["Metrics"] = {f"m{n}": n for n in range(value[1])}
    elif len(field) > 1:
        session = body.setdefault(
            "Session", {"Id": "s", "StartTimestamp": "2026-11-28T10:00:00.000Z"}
        )
        for name, one in zip(field[1:], value if len(field) > 2 else [value], strict=True):
            session[name] = one
    else:
        body[field[0]] = value
    return payload


@st.composite
def one_odd(draw: st.DrawFn) -> Any:
    """A valid PutEvents body in which one event breaks one rule (or is in a form the C
    path does not cover)."""
    payload = draw(requests(None))
    entry = draw(st.integers(0, len(payload["BatchItem"]) - 1))
    events = list(payload["BatchItem"].values())[entry]["Events"]
    event = draw(st.integers(0, len(events) - 1))
    field, values = draw(st.sampled_from(ODD))
    return with_odd(payload, entry, event, field, draw(st.sampled_from(values)))


@contextmanager
def in_python() -> Iterator[None]:
    """check_events as it was: every event judged by homing.wire.check_event."""
    with mock.patch.object(ingest, "check_common", lambda events: None):
        yield


def both(payload: Any, body_size: int) -> tuple[Any, Any]:
    """What check_events makes of `payload`, with and without the C path: its results
    (in order), updates, rows, count of rejected events and rollups, or what it raised."""
    found = []
    for path in (nullcontext(), in_python()):
        try:
            with path:
                checked = ingest.check_events(payload, body_size=body_size, now=NOW, summarize=True)
        except PinpointError as exc:
            found.append(("refused", exc.status_code, exc.message))
            continue
        except (TypeError, ValueError) as exc:  # a value that JSON cannot carry
            found.append(("raised", type(exc), str(exc)))
            continue
        assert checked.summary is not None
        found.append(
            (
                repr(checked.results),
                checked.updates,
                checked.rows,
                checked.rejected,
                checked.summary.__getstate__(),
            )
        )
    return found[0], found[1]


def _judged_in_c(payload: Any) -> int:
    items = payload.get("BatchItem") if type(payload) is dict else None
    if type(items) is not dict:
        return 0
    return sum(
        1
        for item in items.values()
        if type(item) is dict
        and type(item.get("Events")) is dict
        and item["Events"]
        and check_common(item["Events"]) is not None
    )


@DIFFERENTIAL
@given(requests(None) | one_odd() | requests(20), st.booleans(), st.data())
def test_both_paths_answer_and_store_the_same(payload: Any, over_json: bool, data: Any) -> None:
    if over_json:  # as the collector receives it: through parse_json
        body = data.draw(encoded(payload))
        try:
            payload = parse_json(body)
        except PinpointError:
            return
        size = len(body)
    else:  # as given in Python (the demo does), lone surrogates and infinities included
        size = data.draw(st.sampled_from([100, limits.MAX_REQUEST_BYTES]))
    judged = _judged_in_c(payload)
    event("entries judged in C: " + ("some" if judged else "none"))
    fast, slow = both(payload, size)
    assert fast == slow


def test_a_batch_as_the_sdk_sends_it_is_judged_in_c() -> None:
    start = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
    events = {
        f"event-{n}": {
            "EventType": "screen.viewed",
            "Timestamp": (start + timedelta(seconds=n, milliseconds=7)).isoformat(
                timespec="milliseconds"
            )[:-6]
            + "Z",
            "Attributes": {"screen": "home", "é": "ü"},
            "Metrics": {"ms": 12.5, "count": 3},
            "Session": {"Id": "s-1", "StartTimestamp": "2026-12-07T08:59:00.000Z"},
            "AppPackageName": "com.example.shop",
            "SdkName": "homing-python",
        }
        for n in range(100)
    }
    checked = check_common(events)
    assert checked is not None
    assert [row[0] for row in checked] == list(events)
    first = checked[0]
    assert first[1:4] == ("screen.viewed", int(start.timestamp() * 1000) + 7, "s-1")
    assert first[4] == orjson.dumps(events["event-0"])
    fast, slow = both({"BatchItem": {"device-1": {"Events": events}}}, 100_000)
    assert fast == slow


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Timestamp", "2026-12-07T09:00:00.1234567Z"),
        ("Timestamp", "2026-12-07T09:00:00.123+00:00"),
        ("Metrics", {"m": 2**63}),
        ("Metrics", {"m": True}),
        ("Attributes", {"k" * 51: "v"}),
        ("Attributes", {f"k{n}": "v" for n in range(41)}),
        ("AppTitle", "\ud800"),
        ("AppTitle", "a\x00b"),
        ("Attributes", {"quoted": 'say "hi"', "k": "\x00"}),  # a NUL beside other escapes
        ("Session", {"Id": "s", "StartTimestamp": "2026-12-07T09:00:00.000Z",
                     "StopTimestamp": "2026-12-07T08:00:00.000Z"}),
    ],
)  # fmt: skip
def test_what_the_c_path_does_not_cover_goes_to_python(field: str, value: Any) -> None:
    event = {"EventType": "a", "Timestamp": "2026-12-07T09:00:00.000Z", field: value}
    assert check_common({"e": event}) is None


def test_more_keys_than_the_limit_in_attributes_and_metrics_together_go_to_python() -> None:
    half = limits.MAX_EVENT_KEYS // 2
    event = {
        "EventType": "a",
        "Timestamp": "2026-12-07T09:00:00.000Z",
        "Attributes": {f"a{n}": "v" for n in range(half)},
        "Metrics": {f"m{n}": 1 for n in range(limits.MAX_EVENT_KEYS - half)},
    }
    assert check_common({"e": event}) is not None
    event["Metrics"][f"m{limits.MAX_EVENT_KEYS}"] = 1
    assert check_common({"e": event}) is None


def test_escapes_without_a_nul_stay_in_c() -> None:
    event = {
        "EventType": "a",
        "Timestamp": "2026-12-07T09:00:00.000Z",
        "Attributes": {"quoted": 'say "hi"', "path": "C:\\x", "lines": "a\nb\u0001"},
    }
    checked = check_common({"e": event})
    assert checked is not None
    assert checked[0][4] == orjson.dumps(event)


def _sdk_batch() -> dict[str, Any]:
    events = {
        f"event-{n}": {
            "EventType": "screen.viewed",
            "Timestamp": f"2026-11-28T10:00:0{n}.250Z",
            "Attributes": {"screen": "home"},
            "Metrics": {"ms": 12.5},
            "Session": {"Id": "s-1", "StartTimestamp": "2026-11-28T09:59:00.000Z"},
        }
        for n in range(3)
    }
    return {"BatchItem": {"device-1": {"Events": events}, "device-2": {"Events": {}}}}


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in ODD for value in values],
    ids=lambda value: repr(value)[:30],
)
def test_each_odd_value_is_answered_as_in_python(field: tuple[str, ...], value: Any) -> None:
    for place in range(3):
        payload = with_odd(_sdk_batch(), 0, place, field, value)
        fast, slow = both(payload, limits.MAX_REQUEST_BYTES)
        assert fast == slow
