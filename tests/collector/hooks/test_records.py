"""Stored events as Pinpoint event-stream records, and records read back as events."""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from homing.wire import WireError, format_timestamp
from homing_collector.hooks import records as records_module
from homing_collector.hooks.records import (
    Imported,
    Records,
    content_id,
    from_record,
    to_record,
)

APP = "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"
ENDPOINT = {
    "ChannelType": "GCM",
    "Address": "token-1",
    "EndpointStatus": "ACTIVE",
    "OptOut": "NONE",
    "Demographic": {
        "AppVersion": "1.0",
        "Locale": "en_US",
        "Make": "generic web browser",
        "Model": "Unknown",
        "Platform": "android",
        "PlatformVersion": "10.10",
    },
}
SESSION_STOP = {
    "EventType": "_session.stop",
    "Timestamp": "2017-02-24T22:03:22.507Z",
    "AppPackageName": "main.page",
    "AppTitle": "title",
    "AppVersionCode": "1",
    "SdkName": "aws-sdk-mobile-analytics-js",
    "ClientSdkVersion": "0.9.1:2.4.8",
    "Session": {
        "Id": "f549dea9-1090-945d-c3d1-e4967example",
        "StartTimestamp": "2017-02-24T21:53:22.531Z",
        "StopTimestamp": "2017-02-24T22:03:22.507Z",
        "Duration": 599976,
    },
}


def test_an_app_event_matches_pinpoints_documented_record() -> None:
    # The values of Pinpoint's own example (event-streams-data-app), less Cognito's ids.
    record = to_record(APP, "client-1", "ev-1", SESSION_STOP, ENDPOINT, 1487973803515)
    assert record == {
        "event_type": "_session.stop",
        "event_timestamp": 1487973802507,
        "arrival_timestamp": 1487973803515,
        "event_version": "3.1",
        "application": {
            "app_id": APP,
            "package_name": "main.page",
            "title": "title",
            "version_name": "1.0",
            "version_code": "1",
            "sdk": {"name": "aws-sdk-mobile-analytics-js", "version": "0.9.1:2.4.8"},
        },
        "client": {"client_id": "client-1"},
        "device": {
            "locale": {"code": "en_US", "country": "US", "language": "en"},
            "make": "generic web browser",
            "model": "Unknown",
            "platform": {"name": "android", "version": "10.10"},
        },
        "session": {
            "session_id": "f549dea9-1090-945d-c3d1-e4967example",
            "start_timestamp": 1487973202531,
            "stop_timestamp": 1487973802507,
        },
        "attributes": {},
        "metrics": {},
        "endpoint": ENDPOINT,
        "event_id": "ev-1",
    }


def test_a_campaign_event_carries_its_endpoint_as_a_json_string() -> None:
    event = {
        "EventType": "_campaign.send",
        "Timestamp": "2019-07-02T23:18:17.426Z",
        "Attributes": {
            "treatment_id": "0",
            "campaign_activity_id": "act",
            "delivery_type": "CUSTOM",
            "campaign_id": "camp",
            "campaign_send_status": "SUCCESS",
        },
    }
    record = to_record(APP, "client-1", "ev-2", event, ENDPOINT, 1562109497494)
    assert "endpoint" not in record
    assert orjson.loads(record["client_context"]["custom"]["endpoint"]) == ENDPOINT
    assert record["application"] == {"app_id": APP, "version_name": "1.0", "sdk": {}}
    assert record["session"] == {}
    assert record["attributes"]["delivery_type"] == "CUSTOM"
    back = from_record(orjson.loads(orjson.dumps(record)))
    assert back == Imported("client-1", "ev-2", event, ENDPOINT)


def test_an_event_without_endpoint_keeps_empty_objects_like_pinpoint() -> None:
    event = {"EventType": "Played", "Timestamp": "2026-01-01T00:00:00.000Z"}
    record = to_record(APP, "c", "e", event, None, 0)
    assert record["device"] == {"platform": {}}
    assert record["application"] == {"app_id": APP, "sdk": {}}
    assert "endpoint" not in record and "client_context" not in record
    assert from_record(record) == Imported("c", "e", event, None)


def test_a_record_without_endpoint_gives_the_demographics_its_device_shows() -> None:
    record = to_record(APP, "client-1", "ev-1", SESSION_STOP, ENDPOINT, 1487973803515)
    del record["endpoint"]
    back = from_record(record)
    assert back.endpoint == {"Demographic": ENDPOINT["Demographic"]}


def test_a_pinpoint_record_without_event_id_gets_a_stable_one() -> None:
    record = to_record(APP, "client-1", "x", SESSION_STOP, ENDPOINT, 1)
    del record["event_id"]
    first = from_record(record).event_id
    assert first == from_record(orjson.loads(orjson.dumps(record))).event_id
    assert first == content_id(dict(reversed(record.items())))  # key order does not matter
    record["arrival_timestamp"] += 1
    assert from_record(record).event_id != first


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("client"), "client.client_id"),
        (lambda r: r.update(client={"client_id": ""}), "client.client_id"),
        (lambda r: r.update(client={"client_id": "a/b"}), "client.client_id"),
        (lambda r: r.update(client="c"), "client"),
        (lambda r: r.pop("event_timestamp"), "event_timestamp"),
        (lambda r: r.update(event_timestamp="2020"), "event_timestamp"),
        (lambda r: r.update(event_timestamp=10**20), "event_timestamp"),
        (lambda r: r.update(event_timestamp=True), "event_timestamp"),
        (lambda r: r.pop("event_type"), "EventType"),
        (lambda r: r.update(attributes={"k": 5}), "Attributes.k"),
        (lambda r: r.update(metrics={"m": "x"}), "Metrics.m"),
        (lambda r: r.update(metrics=[]), "metrics"),
        (lambda r: r["session"].update(stop_timestamp=0), "session.stop_timestamp"),
        (lambda r: r["session"].pop("start_timestamp"), "session.start_timestamp"),
        (lambda r: r["session"].pop("session_id"), "Session.Id"),
        (lambda r: r.update(endpoint=[]), "endpoint"),
        (lambda r: r.update(event_id=""), "event_id"),
        (lambda r: r["application"].update(sdk="x"), "application.sdk"),
    ],
)
def test_a_bad_record_names_its_field(change: Any, field: str) -> None:
    record = to_record(APP, "client-1", "ev-1", SESSION_STOP, ENDPOINT, 1)
    change(record)
    with pytest.raises(WireError) as caught:
        from_record(record)
    assert caught.value.field == field, caught.value


def test_a_record_must_be_an_object() -> None:
    with pytest.raises(WireError, match="record: must be a JSON object, not list"):
        from_record([])


def test_a_bad_campaign_endpoint_string_is_refused() -> None:
    record = {
        "event_type": "_campaign.send",
        "event_timestamp": 1,
        "client": {"client_id": "c"},
        "client_context": {"custom": {"endpoint": "{not json"}},
    }
    with pytest.raises(WireError, match=r"client_context\.custom\.endpoint"):
        from_record(record)


def test_records_of_a_batch_are_those_of_to_record_even_as_an_endpoint_changes() -> None:
    # Records makes what a record takes from an endpoint once per endpoint: an endpoint
    # given anew (changed, or gone) must not get the device of the one before.
    moved = {**ENDPOINT, "Demographic": {**ENDPOINT["Demographic"], "Locale": "fr-FR"}}
    campaign = {**SESSION_STOP, "EventType": "_campaign.send"}
    calls = [
        ("client-1", SESSION_STOP, ENDPOINT),
        ("client-1", campaign, ENDPOINT),
        ("client-2", SESSION_STOP, ENDPOINT),
        ("client-1", SESSION_STOP, moved),
        ("client-1", SESSION_STOP, None),
        ("client-1", SESSION_STOP, ENDPOINT),
    ]
    make = Records(APP).make
    made = [orjson.dumps(make(c, "ev-1", e, p, 7)) for c, e, p in calls]
    assert made == [orjson.dumps(to_record(APP, c, "ev-1", e, p, 7)) for c, e, p in calls]
    assert orjson.loads(made[3])["device"]["locale"]["country"] == "FR"
    assert "device" in orjson.loads(made[4]) and "endpoint" not in orjson.loads(made[4])


def test_records_of_a_batch_share_a_session_only_when_it_is_the_same() -> None:
    # Records reads a session's timestamps once for the events of the session: another
    # id, start or stop (the session's end comes later) is another session.
    session = SESSION_STOP["Session"]
    open_session = {"Id": session["Id"], "StartTimestamp": session["StartTimestamp"]}
    later = {**session, "StopTimestamp": "2017-02-24T22:13:22.507Z"}
    other = {**session, "Id": "another"}
    moved = {**session, "StartTimestamp": "2017-02-24T21:53:22.000Z"}
    sessions = [open_session, session, later, other, open_session, moved, session, None]
    events = [{**SESSION_STOP, "Session": s} if s else {"EventType": "a", "Timestamp":
              SESSION_STOP["Timestamp"]} for s in sessions]  # fmt: skip
    make = Records(APP).make
    made = [make("client-1", f"ev-{n}", e, ENDPOINT, 7) for n, e in enumerate(events)]
    assert made == [to_record(APP, "client-1", f"ev-{n}", e, ENDPOINT, 7)
                    for n, e in enumerate(events)]  # fmt: skip
    assert [r["session"].get("stop_timestamp") for r in made] == [
        None, 1487973802507, 1487974402507, 1487973802507, None, 1487973802507,
        1487973802507, None,
    ]  # fmt: skip
    assert made[5]["session"]["start_timestamp"] == 1487973202000


def test_a_records_line_is_its_record_as_json_even_as_endpoints_and_sessions_change() -> None:
    # `line` splices parts it encoded once per endpoint, application and session: each must
    # be the one of this call, not of the call before.
    moved = {**ENDPOINT, "Demographic": {**ENDPOINT["Demographic"], "Locale": "fr-FR"}}
    campaign = {**SESSION_STOP, "EventType": "_campaign.send"}
    other_app = {**SESSION_STOP, "AppTitle": "other", "SdkName": None, "AppVersionCode": None}
    open_session = {
        **SESSION_STOP,
        "Session": {"Id": "s", "StartTimestamp": "2017-02-24T21:53:22.531Z"},
    }
    later = {
        **SESSION_STOP,
        "Session": {**SESSION_STOP["Session"], "StopTimestamp": "2017-02-24T22:13:22.507Z"},
    }
    bare = {
        "EventType": "a",
        "Timestamp": SESSION_STOP["Timestamp"],
        "Attributes": {"k": '\u2028"'},
    }
    calls = [
        ("client-1", SESSION_STOP, ENDPOINT),
        ("client-1", campaign, ENDPOINT),
        ("client-2", SESSION_STOP, ENDPOINT),
        ("client-1", other_app, ENDPOINT),
        ("client-1", SESSION_STOP, moved),
        ("client-1", campaign, None),
        ("client-1", open_session, ENDPOINT),
        ("client-1", later, ENDPOINT),
        ("client-1", SESSION_STOP, ENDPOINT),
        ("client-3", bare, {"ChannelType": "GCM"}),
        ("client-3", {**bare, "AppVersionCode": ["unhashable"]}, {"ChannelType": "GCM"}),
    ]  # fmt: skip
    records, lines = Records(APP), Records(APP)
    for n, (client, event, endpoint) in enumerate(calls):
        record = records.make(client, f"ev-{n}", event, endpoint, 7 + n)
        assert lines.line(client, f"ev-{n}", event, endpoint, 7 + n) == orjson.dumps(record) + b"\n"


# -- the round trip -----------------------------------------------------------------------

KEY = st.text(string.ascii_letters + string.digits + "_.", min_size=1, max_size=50)
TEXT = st.text(max_size=60)
MOMENT = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(timezone.utc)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "EventType": draw(st.text(min_size=1, max_size=50)),
        "Timestamp": format_timestamp(draw(MOMENT)),
    }
    attributes = draw(st.dictionaries(KEY, st.text(max_size=200), max_size=10))
    metrics = draw(
        st.dictionaries(KEY, st.floats(allow_nan=False, allow_infinity=False), max_size=10)
    )
    if attributes:
        event["Attributes"] = attributes
    if metrics:
        event["Metrics"] = metrics
    for name in ("AppPackageName", "AppTitle", "AppVersionCode", "SdkName", "ClientSdkVersion"):
        if draw(st.booleans()):
            event[name] = draw(st.text(string.printable, max_size=40))
    if draw(st.booleans()):
        start = draw(MOMENT)
        session: dict[str, Any] = {
            "Id": draw(st.text(string.ascii_letters + string.digits + "-", min_size=1)),
            "StartTimestamp": format_timestamp(start),
        }
        if draw(st.booleans()):
            duration = draw(st.integers(0, 10**9))
            session["StopTimestamp"] = format_timestamp(start + timedelta(milliseconds=duration))
            session["Duration"] = duration
        event["Session"] = session
    return event


ENDPOINTS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"ChannelType": st.just("GCM")},
        optional={
            "Demographic": st.fixed_dictionaries(
                {},
                optional={
                    name: st.text(string.printable, min_size=1, max_size=20)
                    for name in ("AppVersion", "Locale", "Make", "Model", "Platform")
                },
            ),
            "Attributes": st.dictionaries(KEY, st.lists(TEXT, min_size=1, max_size=3)),
        },
    ),
)
IDS = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=64)


@given(
    event=events(),
    endpoint=ENDPOINTS,
    endpoint_id=IDS,
    event_id=IDS,
    arrival=st.integers(0, 2**42),
)
def test_event_to_record_to_event_is_the_identity(
    event: dict[str, Any],
    endpoint: dict[str, Any] | None,
    endpoint_id: str,
    event_id: str,
    arrival: int,
) -> None:
    record = to_record(APP, endpoint_id, event_id, event, endpoint, arrival)
    wire = orjson.loads(orjson.dumps(record))  # as a receiver or an archive holds it
    assert wire["arrival_timestamp"] == arrival
    assert from_record(wire) == Imported(endpoint_id, event_id, event, endpoint)


@given(
    batch=st.lists(st.tuples(st.sampled_from(["c-1", "c-2"]), events(), ENDPOINTS), max_size=6),
    arrival=st.integers(0, 2**42),
)
def test_a_records_line_is_its_record_as_json(
    batch: list[tuple[str, dict[str, Any], dict[str, Any] | None]], arrival: int
) -> None:
    records, lines = Records(APP), Records(APP)
    for n, (endpoint_id, event, endpoint) in enumerate(batch):
        record = records.make(endpoint_id, f"ev-{n}", event, endpoint, arrival)
        assert lines.line(endpoint_id, f"ev-{n}", event, endpoint, arrival) == (
            orjson.dumps(record) + b"\n"
        )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
VALID = to_record(APP, "client-1", "ev-1", SESSION_STOP, ENDPOINT, 1487973803515)


@given(
    path=st.sampled_from(
        [
            (),
            ("client",),
            ("client", "client_id"),
            ("event_type",),
            ("event_timestamp",),
            ("application",),
            ("application", "sdk"),
            ("application", "sdk", "name"),
            ("application", "title"),
            ("device",),
            ("device", "locale"),
            ("session",),
            ("session", "session_id"),
            ("session", "start_timestamp"),
            ("session", "stop_timestamp"),
            ("attributes",),
            ("metrics",),
            ("endpoint",),
            ("client_context",),
            ("client_context", "custom"),
            ("client_context", "custom", "endpoint"),
            ("event_id",),
        ]
    ),
    value=JSON,
)
def test_any_damage_to_a_record_is_refused_by_name_never_crashes(
    path: tuple[str, ...], value: Any
) -> None:
    record = orjson.loads(orjson.dumps(VALID))
    if path:
        parent = record
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
        parent[path[-1]] = value
    else:
        record = value
    try:
        back = from_record(record)
    except WireError as exc:
        assert exc.field
    else:
        assert back.endpoint_id and back.event_id


# -- stored_ndjson: the lines of stored rows -----------------------------------------------


def _lines_by_line(
    rows: list[tuple[int, str, str, int, bytes | str]], endpoints: dict[str, Any]
) -> tuple[list[bytes], list[str]]:
    """What stored_ndjson must give: `line` of each row's body read whole, and the event
    ids of the rows `line` cannot make."""
    records = Records(APP)
    lines, failed = [], []
    for _, endpoint_id, event_id, arrival, body in rows:
        try:
            event = orjson.loads(body)
            lines.append(
                records.line(endpoint_id, event_id, event, endpoints[endpoint_id], arrival)
            )
        except Exception:
            failed.append(event_id)
    return lines, failed


def _stored_ndjson(
    rows: list[tuple[int, str, str, int, bytes | str]], endpoints: dict[str, Any]
) -> tuple[list[bytes], list[str]]:
    failed: list[str] = []
    ndjson = Records(APP).stored_ndjson(rows, endpoints, failed.append)
    assert ndjson.endswith(b"\n") or not ndjson
    return [line + b"\n" for line in ndjson.split(b"\n")[:-1]], failed


# Values that JSON spells in more than one way, or that Python takes as false.
ODD = st.sampled_from(
    [None, False, True, 0, 0.0, -0.0, "", [], {}, "0", [0], {"": None}, 2**63 - 1, -(2**63),
     2**64 - 1, 1e16, 1.5e-7, 123456789.123, "\u2028\u2029", '"\\/\n\t\x00\x1f\x7f', "é😀",
     {"k": "\u00e9\ud7ff\ue000"}, {"m": 1e308}]
)  # fmt: skip
# JSON that orjson writes: its integers fit in 64 bits.
STORED_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)  # fmt: skip
TIMESTAMPS = st.sampled_from(
    [
        "2017-02-24T22:03:22.507Z",
        "1970-01-01T00:00:00.000Z",
        "2017-02-24T22:03:59.999Z",
        "2017-02-24T22:03:22Z",
        "2017-02-24T22:03:22.5Z",
        "2017-02-24T22:03:22.507123Z",
        "2017-02-24T22:03:22.507+01:00",
        "2017-02-24 22:03:22.507Z",
        "2017-02-24T22:03:60.000Z",
        "2017-02-24T22:03:2a.507Z",
        "2017-02-24T22:03:22.507z",
        "2017-02-24T22:03:22.507",
        "2017-02-24T22:03:",
        "2017-13-24T22:03:22.507Z",
        "not a time",
        "",
    ]
)


@st.composite
def stored_events(draw: st.DrawFn) -> dict[str, Any]:
    """events(), some with other timestamps, odd values or fields left out."""
    event = draw(events())
    if draw(st.booleans()):
        event["Timestamp"] = draw(TIMESTAMPS)
    for name in ("Attributes", "Metrics", "Session", "AppVersionCode", "SdkName", "EventType"):
        if draw(st.integers(0, 5)) == 0:
            event[name] = draw(ODD | STORED_JSON)
        elif draw(st.integers(0, 9)) == 0:
            event.pop(name, None)
    if draw(st.booleans()):
        event["EventType"] = "_campaign." + str(event.get("EventType"))
    return event


@given(
    batch=st.lists(
        st.tuples(st.sampled_from(["c-1", "c-2", "c-3"]), stored_events(), IDS), max_size=8
    ),
    endpoints=st.tuples(ENDPOINTS, ENDPOINTS, ENDPOINTS),
    arrival=st.integers(0, 2**42),
)
def test_stored_ndjson_is_the_lines_of_the_stored_events(
    batch: list[tuple[str, dict[str, Any], str]],
    endpoints: tuple[dict[str, Any] | None, ...],
    arrival: int,
) -> None:
    by_id = dict(zip(["c-1", "c-2", "c-3"], endpoints, strict=True))
    rows = [
        (n, endpoint_id, event_id, arrival + n, orjson.dumps(event))
        for n, (endpoint_id, event, event_id) in enumerate(batch)
    ]
    assert _stored_ndjson(rows, by_id) == _lines_by_line(rows, by_id)


def test_stored_ndjson_matches_line_byte_for_byte_on_a_batch_of_odd_events() -> None:
    campaign = {**SESSION_STOP, "EventType": "_campaign.send", "Attributes": {"campaign_id": "c"}}
    odd = {
        "EventType": 'a "quoted"\n\\ type \u2028 é',
        "Timestamp": "2017-02-24T22:03:22.507+02:00",
        "Attributes": {"ünïcode": "😀\x00\x1f", "empty": ""},
        "Metrics": {"big": 2**64 - 1, "small": -(2**63), "float": 1e16, "tiny": 5e-324},
        "Session": {"Id": "s", "StartTimestamp": "2017-02-24T21:53:22Z"},
    }
    empty = {"EventType": "e", "Timestamp": "2017-02-24T22:03:22.507Z", "Attributes": {},
             "Metrics": None, "Session": {}, "AppTitle": None}  # fmt: skip
    rows = [
        (1, "c-1", "ev-1", 7, orjson.dumps(SESSION_STOP)),
        (2, "c-1", "ev-2", 8, orjson.dumps(campaign)),
        (3, "c-2", "ev-3", 9, orjson.dumps(odd)),
        (4, "c-2", "ev-4", 10, orjson.dumps(empty)),
        (5, "c-3", "ev-5", 11, orjson.dumps(campaign)),
        (6, "c-1", "ev-6", 12, orjson.dumps(SESSION_STOP)),
    ]
    endpoints = {"c-1": ENDPOINT, "c-2": {"ChannelType": "GCM"}, "c-3": None}
    lines, failed = _stored_ndjson(rows, endpoints)
    assert (lines, failed) == _lines_by_line(rows, endpoints)
    assert not failed
    assert [orjson.loads(line)["event_id"] for line in lines] == [f"ev-{n}" for n in range(1, 7)]
    record = orjson.loads(lines[0])
    assert record == to_record(APP, "c-1", "ev-1", SESSION_STOP, ENDPOINT, 7)
    assert orjson.loads(lines[1])["client_context"] == {
        "custom": {"endpoint": orjson.dumps(ENDPOINT).decode()}
    }
    assert orjson.loads(lines[3])["metrics"] == {} and orjson.loads(lines[3])["session"] == {}


def test_stored_ndjson_skips_the_rows_line_cannot_make_and_name_them() -> None:
    rows = [
        (1, "c-1", "ev-1", 7, orjson.dumps(SESSION_STOP)),
        (2, "c-1", "ev-2", 7, b"{not json"),
        (3, "c-1", "ev-3", 7, orjson.dumps({"Timestamp": SESSION_STOP["Timestamp"]})),
        (4, "c-1", "ev-4", 7, orjson.dumps({**SESSION_STOP, "Timestamp": "yesterday"})),
        (5, "c-1", "ev-5", 7, orjson.dumps({**SESSION_STOP, "Session": {"Id": "s"}})),
        (6, "c-1", "ev-6", 7, orjson.dumps([SESSION_STOP])),
        (7, "c-1", "ev-7", 7, orjson.dumps(SESSION_STOP)),
        # Not UTF-8, where a record takes it whole, and where it takes nothing.
        (8, "c-1", "ev-8", 7, orjson.dumps({**SESSION_STOP, "Attributes": {"k": "\x00"}})),
        (9, "c-1", "ev-9", 7, orjson.dumps(SESSION_STOP).replace(b'"_session', b'"\xff_session')),
        (10, "c-1", "ev-10", 7, orjson.dumps(SESSION_STOP)[:-1] + b',"Other":"\xed\xa0\x80"}'),
        (11, "c-1", "ev-11", 7, orjson.dumps({**SESSION_STOP, "Attributes": {"k": "é"}})),
    ]
    rows[7] = (*rows[7][:4], rows[7][4].replace(b"\\u0000", b"\xc3\x28"))
    lines, failed = _stored_ndjson(rows, {"c-1": ENDPOINT})
    assert (lines, failed) == _lines_by_line(rows, {"c-1": ENDPOINT})
    assert failed == ["ev-2", "ev-3", "ev-4", "ev-5", "ev-6", "ev-8", "ev-9", "ev-10"]
    assert len(lines) == 3


def test_a_line_that_cannot_be_written_is_left_out_and_named() -> None:
    # An id no JSON writer takes (a lone surrogate): its line alone is left out.
    rows = [
        (1, "c-1", "ev-1", 7, orjson.dumps(SESSION_STOP)),
        (2, "c-1", "ev-\ud800", 7, orjson.dumps(SESSION_STOP)),
        (3, "c-1", "ev-3", 7, orjson.dumps(SESSION_STOP)),
    ]
    assert _stored_ndjson(rows, {"c-1": ENDPOINT}) == _lines_by_line(rows, {"c-1": ENDPOINT})
    assert _stored_ndjson(rows, {"c-1": ENDPOINT})[1] == ["ev-\ud800"]


def test_a_body_in_another_spelling_of_json_makes_the_same_record() -> None:
    # orjson writes no whitespace; a body with some, from another writer, is still read:
    # with a newline, by `line` (the same bytes); without, to the same JSON.
    spaced = orjson.dumps(SESSION_STOP, option=orjson.OPT_INDENT_2)
    inline = spaced.replace(b"\n", b" ")
    text = orjson.dumps(SESSION_STOP).decode()  # as a TEXT column would give it
    rows = [
        (1, "c-1", "ev-1", 7, spaced),
        (2, "c-1", "ev-2", 7, inline),
        (3, "c-1", "ev-3", 7, text),
    ]
    lines, failed = _stored_ndjson(rows, {"c-1": ENDPOINT})
    expected, _ = _lines_by_line(rows, {"c-1": ENDPOINT})
    assert not failed and lines[0] == expected[0] and lines[2] == expected[2]
    assert [line.count(b"\n") for line in lines] == [1, 1, 1]
    assert [orjson.loads(line) for line in lines] == [orjson.loads(line) for line in expected]


def test_a_minute_is_read_once_across_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stream's batches mostly share their minutes: formatted_ms reads each once, not
    # once a batch, and the records stay those of to_record.
    read: list[str] = []
    real = records_module.formatted_ms

    def counted(timestamp: str) -> int | None:
        read.append(timestamp)
        return real(timestamp)

    monkeypatch.setattr(records_module, "formatted_ms", counted)
    monkeypatch.setattr(records_module, "_MINUTES", {})
    minute = "2031-05-06T07:08:"
    events = [{**SESSION_STOP, "Timestamp": f"{minute}{n + 1:02d}.{n:03d}Z"} for n in range(6)]
    rows = [(n, "c-1", f"ev-{n}", 7, orjson.dumps(event)) for n, event in enumerate(events)]
    first, _ = _stored_ndjson(rows[:3], {"c-1": ENDPOINT})
    second, _ = _stored_ndjson(rows[3:], {"c-1": ENDPOINT})
    assert [t for t in read if t.startswith(minute)].count(f"{minute}00.000Z") == 1
    assert [orjson.loads(line) for line in first + second] == [
        to_record(APP, "c-1", f"ev-{n}", event, ENDPOINT, 7) for n, event in enumerate(events)
    ]
