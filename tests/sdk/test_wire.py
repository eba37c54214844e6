"""The shared wire contract: validators and timestamps."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homing import limits
from homing.wire import (
    WireError,
    check_endpoint,
    check_event,
    check_formatted_event,
    format_timestamp,
    formatted_ms,
    parse_timestamp,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=60), children, max_size=5)
    ),
    max_leaves=30,
)


def valid_event() -> dict[str, Any]:
    return {"EventType": "Item Bought", "Timestamp": "2026-11-28T10:00:00.000Z"}


@given(json_values)
def test_check_event_only_raises_wire_errors(value: Any) -> None:
    try:
        check_event(value)
    except WireError as exc:
        assert exc.rule and str(exc)


@given(st.dictionaries(
    st.sampled_from(["EventType", "Timestamp", "Attributes", "Metrics", "Session", "AppTitle"]),
    json_values,
))  # fmt: skip
def test_check_event_near_valid_shapes(extra: dict[str, Any]) -> None:
    event = {**valid_event(), **extra}
    try:
        check_event(event)
    except WireError as exc:
        assert exc.field.split(".")[0] in extra, (exc.field, extra)


@given(
    st.dictionaries(
        st.sampled_from(["EventType", "Attributes", "Metrics", "AppTitle", "SdkName"]), json_values
    ),
    st.none() | st.dictionaries(st.sampled_from(["Id", "Duration"]), json_values),
)
def test_a_formatted_event_is_checked_as_any_other(
    extra: dict[str, Any], session: dict[str, Any] | None
) -> None:
    # check_formatted_event leaves out only the parsing of times its caller wrote itself.
    event = {**valid_event(), **extra}
    if session is not None:
        event["Session"] = {**session, "StartTimestamp": "2026-11-28T09:59:00.000Z"}
    try:
        check_event(event)
    except WireError as exc:
        with pytest.raises(WireError) as info:
            check_formatted_event(event)
        assert str(info.value) == str(exc)
    else:
        check_formatted_event(event)


@given(st.dictionaries(
    st.sampled_from(["Address", "Attributes", "Metrics", "ChannelType", "Demographic",
                     "Location", "User", "OptOut", "EndpointStatus", "EffectiveDate"]),
    json_values,
))  # fmt: skip
def test_check_endpoint_only_raises_wire_errors(endpoint: dict[str, Any]) -> None:
    try:
        check_endpoint(endpoint)
    except WireError as exc:
        assert exc.field.startswith("Endpoint.")


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_metrics_must_be_finite(value: float) -> None:
    event = {**valid_event(), "Metrics": {"m": value}}
    if math.isfinite(value):
        check_event(event)
    else:
        with pytest.raises(WireError, match="finite"):
            check_event(event)


@pytest.mark.parametrize(
    ("event", "field", "words"),
    [
        ({"Attributes": {"k" * 51: "v"}}, "Attributes", ["51", "50"]),
        ({"Attributes": {"k": "v" * 201}}, "Attributes.k", ["201", "200"]),
        ({"Attributes": {"k": 1}}, "Attributes.k", ["string"]),
        ({"Attributes": {f"k{i}": "v" for i in range(41)}}, "Attributes", ["41", "40"]),
        ({"Metrics": {"m": True}}, "Metrics.m", ["number", "boolean"]),
        ({"EventType": "e" * 51}, "EventType", ["51", "50"]),
        ({"Timestamp": "28/11/2026"}, "Timestamp", ["ISO-8601"]),
        ({"Session": {"StartTimestamp": "2026-11-28T10:00:00Z"}}, "Session.Id", ["non-empty"]),
        ({"Session": {"Id": "s"}}, "Session.StartTimestamp", ["required"]),
        ({"Session": {"Id": "s", "StartTimestamp": "2026-11-28T10:00:00Z", "Duration": -1}},
         "Session.Duration", ["0 or more"]),
    ],
)  # fmt: skip
def test_each_rule_names_field_and_limit(
    event: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(WireError) as info:
        check_event({**valid_event(), **event})
    assert info.value.field == field
    for word in words:
        assert word in str(info.value)


def test_limits_at_the_edge_are_accepted() -> None:
    check_event({
        **valid_event(),
        "EventType": "e" * limits.MAX_EVENT_TYPE_LENGTH,
        "Attributes": {f"{i:0>50}": "v" * 200 for i in range(20)},
        "Metrics": {f"m{i}": i for i in range(20)},
    })  # fmt: skip


def test_timestamps() -> None:
    assert parse_timestamp("2026-11-28T10:00:00.123Z") == datetime(
        2026, 11, 28, 10, 0, 0, 123000, tzinfo=timezone.utc
    )
    assert parse_timestamp("2026-11-28T12:00:00+02:00") == datetime(
        2026, 11, 28, 10, tzinfo=timezone.utc
    )
    assert parse_timestamp("2026-11-28T10:00:00").tzinfo == timezone.utc
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)) == (
        "2026-01-02T03:04:05.678Z"
    )
    for bad in ("", "now", "2026-13-01T00:00:00Z", 20261128):
        with pytest.raises(WireError):
            parse_timestamp(bad)


@given(st.datetimes(timezones=st.just(timezone.utc)))
def test_format_then_parse_round_trips_to_the_millisecond(moment: datetime) -> None:
    parsed = parse_timestamp(format_timestamp(moment))
    assert parsed == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"EventType": "Tap\ud800"}, "EventType"),
        ({"Attributes": {"plan": "pro\ud800"}}, "Attributes.plan"),
        ({"Attributes": {"pl\udcff": "pro"}}, "Attributes"),
        ({"Metrics": {"n\ud800": 1}}, "Metrics"),
        ({"AppTitle": "T\udc80"}, "AppTitle"),
        ({"Session": {"Id": "s\ud800", "StartTimestamp": "2026-11-28T10:00:00Z"}}, "Session.Id"),
    ],
)
def test_a_string_that_is_not_utf_8_is_refused_by_name(event: dict[str, Any], field: str) -> None:
    # A lone surrogate (os.fsdecode makes them of undecodable bytes) cannot go into JSON.
    with pytest.raises(WireError) as raised:
        check_event({**valid_event(), **event})
    assert raised.value.field == field
    assert "surrogate" in raised.value.rule


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"Address": "a\ud800"}, "Endpoint.Address"),
        ({"Attributes": {"x": ["\ud800"]}}, "Endpoint.Attributes.x"),
        ({"Attributes": {"\ud800": ["x"]}}, "Endpoint.Attributes"),
        ({"Metrics": {"\ud800": 1}}, "Endpoint.Metrics"),
        ({"Demographic": {"Model": "\ud800"}}, "Endpoint.Demographic.Model"),
        ({"User": {"UserId": "u\ud800"}}, "Endpoint.User.UserId"),
        ({"User": {"UserAttributes": {"x": ["\ud800"]}}}, "Endpoint.User.UserAttributes.x"),
    ],
)
def test_an_endpoint_string_that_is_not_utf_8_is_refused_by_name(
    endpoint: dict[str, Any], field: str
) -> None:
    with pytest.raises(WireError) as raised:
        check_endpoint(endpoint)
    assert raised.value.field == field
    assert "surrogate" in raised.value.rule


def test_text_beyond_ascii_is_accepted() -> None:
    check_event({**valid_event(), "EventType": "Café ☕", "Attributes": {"clé": "été 🎉"}})
    check_endpoint({"Address": "tête", "Attributes": {"intérêts": ["vélo"]}})


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@given(st.datetimes(timezones=st.just(timezone.utc)))
def test_formatted_ms_reads_format_timestamps_form_exactly(moment: datetime) -> None:
    text = format_timestamp(moment)
    assert formatted_ms(text) == (parse_timestamp(text) - EPOCH) // timedelta(milliseconds=1)


@given(st.text(alphabet="0123456789-:T.Zz+ W", min_size=20, max_size=26))
def test_formatted_ms_reads_nothing_else_wrong(text: str) -> None:
    ms = formatted_ms(text)
    if ms is not None:
        assert ms == (parse_timestamp(text) - EPOCH) // timedelta(milliseconds=1)


@pytest.mark.parametrize("seconds", ["60", "61", "99"])
def test_formatted_ms_reads_no_second_past_59(seconds: str) -> None:
    text = f"2026-11-28T17:50:{seconds}.000Z"
    assert formatted_ms(text) is None
    with pytest.raises(WireError):
        parse_timestamp(text)
