"""Whatever a client sends to the ingest routes, the collector never answers 5xx.

The app runs in-process (Starlette's TestClient, lifespan included) on a real SQLite file.
Bodies are fully random JSON, random bytes, truncated or gzip-declared garbage, and
"near-valid" Pinpoint shapes with a random value in any field, so the validators' deep
paths run too.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import sqlite3
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from homing.wire import CHANNEL_TYPES, DEMOGRAPHIC_FIELDS
from homing_collector.app import create_app
from homing_collector.settings import Settings
from tests.conftest import run_cli

with warnings.catch_warnings():
    # Starlette asks for httpx2, which the test extra does not install; httpx still works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

# The machine may be shared and slow: generating these bodies is legitimately heavy.
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Target:
    client: TestClient
    db: sqlite3.Connection
    app_id: str
    token: str

    def send(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        response: httpx.Response = self.client.request(
            method,
            f"/v1/apps/{self.app_id}{path}",
            content=body,
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
        )
        return response


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    created = json.loads(run_cli("--db", str(path), "apps", "create", "fuzz", "--json"))
    app = create_app(Settings(db_path=path))
    # Unhandled errors come back as 500 answers, which the tests check, not as exceptions.
    with TestClient(app, raise_server_exceptions=False) as client:
        db = sqlite3.connect(path)
        try:
            yield Target(client, db, created["application_id"], created["admin"]["token"])
        finally:
            db.close()


# -- values ---------------------------------------------------------------------------------


def weighted(*choices: tuple[st.SearchStrategy[Any], int]) -> st.SearchStrategy[Any]:
    """One of `choices`, each as often as its weight; shrinks towards the first."""
    # st.one_of drops a repeated strategy, so repeating one would not weight it.
    return st.sampled_from([s for s, weight in choices for _ in range(weight)]).flatmap(
        lambda strategy: strategy
    )


text = weighted(
    (st.text(max_size=12), 4),
    (st.sampled_from(
        ["", " ", "\x00", "\u202e", "é", "😀", "a" * 51, "b" * 201, "c" * 1025, "d" * 5000]
    ), 1),
)  # fmt: skip
huge_numbers = st.sampled_from(
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**64 + 1, -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324,
     -0.0, 0.0]
)  # fmt: skip
numbers = st.integers() | st.floats(allow_nan=False, allow_infinity=False) | huge_numbers
# Junk that is still JSON, for the validators to reject: a wrong type, a huge number (1e999
# included), a lone surrogate (escaped, as JSON allows).
json_junk: st.SearchStrategy[Any] = st.recursive(
    weighted(
        (st.none() | st.booleans() | numbers | text, 20),
        (st.sampled_from([math.inf, -math.inf, "\ud800"]), 1),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
# Also what no JSON parser should take: NaN, and lone surrogates sent as bytes (not UTF-8).
any_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | numbers | text | st.sampled_from([math.nan, math.inf, "\ud800"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right shape, sometimes anything at all."""
    return weighted((valid, 7), (json_junk, 1))


def shape(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """An object with Pinpoint's fields (any of which may be missing) plus unknown ones."""
    fields = st.fixed_dictionaries(
        {name: maybe(value) for name, value in required.items()},
        optional={name: maybe(value) for name, value in optional.items()},
    )
    missing = st.fixed_dictionaries(
        {}, optional={name: maybe(value) for name, value in {**required, **optional}.items()}
    )
    extra = weighted((st.just({}), 3), (st.dictionaries(text, json_junk, max_size=2), 1))
    return st.builds(
        lambda known, unknown: {**unknown, **known}, weighted((fields, 5), (missing, 1)), extra
    )


ids = st.uuids().map(str) | st.sampled_from(["a", "endpoint-1", "x" * 256, "x" * 257]) | text
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
timestamps = st.one_of(
    moments.map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), moments, offsets),
    moments.map(datetime.isoformat),
    st.sampled_from(
        [
            "2026-11-28T10:00:00.000Z",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-23:59",
            "2026-11-28T24:00:00Z",
            "2026-02-30T10:00:00Z",
            "Z",
            "2026W01",
            "now",
            "",
        ]
    ),
    text,
)
short_keys = text | st.text("abc", min_size=1, max_size=3)
strings = text | st.text(max_size=1100)

pinpoint_event = shape(
    {"EventType": st.sampled_from(["click", "_session.start", "x" * 50, "y" * 51]) | text,
     "Timestamp": timestamps},
    {
        "Attributes": st.dictionaries(short_keys, maybe(strings), max_size=42),
        "Metrics": st.dictionaries(short_keys, maybe(numbers), max_size=42),
        "Session": shape(
            {"Id": ids, "StartTimestamp": timestamps},
            {"StopTimestamp": timestamps,
             "Duration": st.integers(-1, 2**31) | huge_numbers},
        ),
        **{name: strings for name in
           ("AppPackageName", "AppTitle", "AppVersionCode", "SdkName", "ClientSdkVersion")},
    },
)  # fmt: skip

attribute_values = st.lists(maybe(strings), max_size=52)
endpoint_fields: dict[str, st.SearchStrategy[Any]] = {
    "Address": strings,
    "Attributes": st.dictionaries(short_keys, maybe(attribute_values), max_size=3),
    "ChannelType": st.sampled_from(sorted(CHANNEL_TYPES)) | text,
    "Demographic": shape(
        {},
        {name: strings for name in DEMOGRAPHIC_FIELDS},
    ),
    "EffectiveDate": timestamps,
    "EndpointStatus": st.sampled_from(["ACTIVE", "INACTIVE"]) | text,
    "Location": shape(
        {},
        {
            "City": strings,
            "Country": strings,
            "PostalCode": strings,
            "Region": strings,
            "Latitude": st.floats(-91, 91) | numbers,
            "Longitude": st.floats(-181, 181) | numbers,
        },
    ),
    "Metrics": st.dictionaries(short_keys, maybe(numbers), max_size=3),
    "OptOut": st.sampled_from(["ALL", "NONE"]) | text,
    "RequestId": strings,
    "User": shape(
        {},
        {
            "UserId": ids,
            "UserAttributes": st.dictionaries(short_keys, maybe(attribute_values), max_size=3),
        },
    ),
}
pinpoint_endpoint = shape({}, endpoint_fields)
batch_item = shape(
    {"Events": st.dictionaries(ids, maybe(pinpoint_event), min_size=1, max_size=4)},
    {"Endpoint": pinpoint_endpoint},
)
events_request = shape(
    {"BatchItem": st.dictionaries(ids, maybe(batch_item), min_size=1, max_size=3)}, {}
)
endpoints_request = shape(
    {"Item": st.lists(maybe(shape({"Id": ids}, endpoint_fields)), max_size=4)}, {}
)


_INFINITY = "\x00inf\x00"


def _mark_infinities(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return _INFINITY if value > 0 else "-" + _INFINITY
    if isinstance(value, dict):
        return {key: _mark_infinities(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mark_infinities(item) for item in value]
    return value


@st.composite
def encoded(draw: st.DrawFn, value: Any) -> bytes:
    """`value` as JSON bytes, the way a careless client might write it."""
    # The standard library writes NaN, Infinity and integers of any size, which orjson won't.
    # An infinity mostly goes out as 1e999 instead: valid JSON that no 64-bit float holds.
    value = _mark_infinities(value)
    data = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.none() | st.just(1)),
    )
    data = data.replace('"-\\u0000inf\\u0000"', "-1e999").replace('"\\u0000inf\\u0000"', "1e999")
    return data.encode("utf-8", "surrogatepass")


def to_lenient(value: Any, data: bytes) -> bytes:
    """Put a number out of a float's range first: the collector then parses the body again
    with the standard library's more lenient parser."""
    return re.sub(rb"^(\s*{)(?=\s*\")", rb'\1"~": 1e999, ', data)


def bodies(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, bytes]]:
    """(the value or None, its bytes): near-valid shapes, random JSON, and broken bytes."""
    whole = valid.flatmap(lambda v: encoded(v).map(lambda data: (v, data)))
    lenient = whole.map(lambda pair: (pair[0], to_lenient(pair[0], pair[1])))
    garbage = st.one_of(
        any_json.flatmap(encoded),
        st.binary(max_size=64),
        st.sampled_from([b"", b" ", b"null", b"{", b"[]", b'{"BatchItem": ', b"\xff\xfe{}"]),
        st.tuples(valid.flatmap(encoded), st.floats(0, 1)).map(
            lambda pair: pair[0][: int(len(pair[0]) * pair[1])]  # truncated
        ),
        st.integers(1, 1100).map(lambda depth: b"[" * depth + b"]" * depth),
    )
    return weighted((whole, 3), (lenient, 1), (garbage.map(lambda data: (None, data)), 1))


encodings = st.sampled_from(["gzip", "deflate", "x-gzip", "br", "gzip, gzip", ""])
# 5 KB that inflate to 5 MB, past the 4 MB limit.
GZIP_BOMB = gzip.compress(b" " * (5 * 1024 * 1024))


@st.composite
def compressed(draw: st.DrawFn, data: bytes) -> tuple[bytes, dict[str, str]]:
    """`data` sent plainly, compressed, mislabelled or cut short."""
    how = draw(
        st.sampled_from(["plain"] * 4 + ["gzip", "deflate", "raw deflate", "garbage", "bomb"])
    )
    if how == "plain":
        return data, {}
    if how == "bomb":
        return GZIP_BOMB, {"Content-Encoding": "gzip"}
    if how == "garbage":
        return draw(st.binary(max_size=64)), {"Content-Encoding": draw(encodings)}
    if how == "gzip":
        packed = gzip.compress(data)
    elif how == "deflate":
        packed = zlib.compress(data)
    else:
        squeezer = zlib.compressobj(wbits=-15)
        packed = squeezer.compress(data) + squeezer.flush()
    if draw(st.booleans()):
        packed = packed[: draw(st.integers(0, len(packed)))]
    encoding = "gzip" if how == "gzip" else "deflate"
    return packed, {"Content-Encoding": draw(st.sampled_from([encoding, encoding.upper()]))}


# -- checks ---------------------------------------------------------------------------------


def assert_well_formed(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("Message"), str), body
        assert body["Message"].strip(), body
        error_type = response.headers.get("x-amzn-ErrorType", "")
        assert error_type.endswith("Exception"), response.headers
        assert response.headers.get("x-amzn-RequestId"), response.headers


def assert_every_event_answered(target: Target, sent: Any, answer: dict[str, Any]) -> None:
    if type(sent) is not dict or type(sent.get("BatchItem")) is not dict:
        return
    results = answer["Results"]
    for endpoint_id, item in sent["BatchItem"].items():
        result = results[endpoint_id]
        assert result["EndpointItemResponse"]["StatusCode"] in (202, 400), result
        assert result["EndpointItemResponse"]["Message"], result
        if type(item) is not dict or type(item.get("Events")) is not dict:
            continue
        statuses = result["EventsItemResponse"]
        assert set(statuses) == set(item["Events"]), (statuses, item)
        for event_id, status in statuses.items():
            assert status["StatusCode"] in (202, 400), status
            assert isinstance(status["Message"], str) and status["Message"].strip(), status
            if status["StatusCode"] == 202:
                # Stored, once: the table's key (endpoint, event id, type, Timestamp)
                # holds it once; the same id with another type or Timestamp is another
                # event.
                stored = target.db.execute(
                    "SELECT count(*) FROM events WHERE app_id = ? AND endpoint_id = ?"
                    " AND event_id = ? AND event_type = ?",
                    (target.app_id, endpoint_id, event_id, item["Events"][event_id]["EventType"]),
                ).fetchone()
                assert stored >= (1,), (endpoint_id, event_id)


# -- tests ----------------------------------------------------------------------------------


@FUZZ
@given(body=bodies(events_request), wrapping=st.data())
def test_put_events_never_fails(
    target: Target, body: tuple[Any, bytes], wrapping: st.DataObject
) -> None:
    value, data = body
    payload, headers = wrapping.draw(compressed(data))
    response = target.send("POST", "/events", payload, headers)
    event(f"HTTP {response.status_code}")
    assert_well_formed(response)
    if response.status_code == 202:
        assert_every_event_answered(target, value, response.json())
        answers = response.json()["Results"].values()
        stored = any(
            status["StatusCode"] == 202
            for answer in answers
            for status in answer["EventsItemResponse"].values()
        )
        event(f"some event stored: {stored}")


@FUZZ
@given(
    endpoint_id=ids.filter(bool).map(lambda i: quote(i, safe="", errors="surrogatepass")),
    body=bodies(pinpoint_endpoint),
    wrapping=st.data(),
)
def test_update_endpoint_never_fails(
    target: Target, endpoint_id: str, body: tuple[Any, bytes], wrapping: st.DataObject
) -> None:
    payload, headers = wrapping.draw(compressed(body[1]))
    response = target.send("PUT", f"/endpoints/{endpoint_id}", payload, headers)
    event(f"HTTP {response.status_code}")
    assert_well_formed(response)
    if response.status_code == 202:
        assert response.json()["Message"] == "Accepted"


@FUZZ
@given(body=bodies(endpoints_request), wrapping=st.data())
def test_update_endpoints_batch_never_fails(
    target: Target, body: tuple[Any, bytes], wrapping: st.DataObject
) -> None:
    payload, headers = wrapping.draw(compressed(body[1]))
    response = target.send("PUT", "/endpoints", payload, headers)
    event(f"HTTP {response.status_code}")
    assert_well_formed(response)
    if response.status_code == 202:
        assert response.json()["Message"] == "Accepted"


string_map = st.dictionaries(short_keys, maybe(strings), max_size=4)
push_message = shape({}, {
    "Title": strings, "Body": strings, "Url": strings, "Data": string_map,
    "Action": st.sampled_from(["OPEN_APP", "DEEP_LINK", "URL"]) | text,
    "SilentPush": st.booleans(), "TimeToLive": st.integers(-5, 3_000_000) | huge_numbers,
})  # fmt: skip
message_configuration = shape({}, {
    "DefaultPushNotificationMessage": push_message, "GCMMessage": push_message,
    "APNSMessage": push_message,
})  # fmt: skip
send_configuration = shape(
    {}, {"TitleOverride": strings, "BodyOverride": strings, "Context": string_map}
)
send_targets = st.dictionaries(ids, maybe(send_configuration), max_size=5)
message_request = shape(
    {"MessageConfiguration": message_configuration, "Endpoints": send_targets},
    {"Context": string_map, "TraceId": text},
)
users_message_request = shape(
    {"MessageConfiguration": message_configuration, "Users": send_targets},
    {"Context": string_map, "TraceId": text},
)
# Well-typed requests too, so that most examples get past validation to the sending.
well_typed_push = st.fixed_dictionaries({}, optional={
    "Title": strings, "Body": strings, "Url": strings,
    "Data": st.dictionaries(short_keys, strings, max_size=4),
    "Action": st.sampled_from(["OPEN_APP", "DEEP_LINK", "URL"]), "SilentPush": st.booleans(),
    "TimeToLive": st.integers(0, 2_419_200),
})  # fmt: skip
well_typed_targets = st.dictionaries(
    st.sampled_from(["a", "endpoint-1", "e", "x" * 256]) | st.uuids().map(str),
    st.none() | st.fixed_dictionaries({}, optional={"TitleOverride": strings,
                                                   "BodyOverride": strings}),
    min_size=1, max_size=5,
)  # fmt: skip


def well_typed(targets: str) -> st.SearchStrategy[tuple[Any, bytes]]:
    request = st.fixed_dictionaries({
        targets: well_typed_targets,
        "MessageConfiguration": st.fixed_dictionaries(
            {"GCMMessage": well_typed_push},
            optional={"DefaultPushNotificationMessage": well_typed_push,
                      "APNSMessage": well_typed_push},
        ),
    }, optional={"Context": st.dictionaries(
        st.sampled_from(["campaign_id", "treatment_id", "k"]), strings, max_size=3)})  # fmt: skip
    return request.flatmap(lambda v: encoded(v).map(lambda data: (v, data)))


SEND_FUZZ = settings(FUZZ, max_examples=150)
DELIVERY_STATUSES = {"SUCCESSFUL", "TEMPORARY_FAILURE", "PERMANENT_FAILURE", "OPT_OUT", "DUPLICATE"}


@SEND_FUZZ
@given(body=bodies(message_request) | well_typed("Endpoints"))
def test_send_messages_never_fails(target: Target, body: tuple[Any, bytes]) -> None:
    value, data = body
    response = target.send("POST", "/messages", data)
    event(f"HTTP {response.status_code}")
    assert_well_formed(response)
    if response.status_code == 200 and value is not None:
        results = response.json()["EndpointResult"]
        assert set(results) == set(value["Endpoints"])
        assert {r["DeliveryStatus"] for r in results.values()} <= DELIVERY_STATUSES


@SEND_FUZZ
@given(body=bodies(users_message_request) | well_typed("Users"))
def test_send_users_messages_never_fails(target: Target, body: tuple[Any, bytes]) -> None:
    value, data = body
    response = target.send("POST", "/users-messages", data)
    event(f"HTTP {response.status_code}")
    assert_well_formed(response)
    if response.status_code == 200 and value is not None:
        assert set(response.json()["Result"]) == set(value["Users"])


@SEND_FUZZ
@given(
    endpoint_id=ids.filter(bool).map(lambda i: quote(i, safe="", errors="surrogatepass")),
    body=bodies(shape({"MessageIds": st.lists(maybe(ids), max_size=102)}, {})),
)
def test_push_acks_never_fail(target: Target, endpoint_id: str, body: tuple[Any, bytes]) -> None:
    response = target.send("POST", f"/endpoints/{endpoint_id}/stream/acks", body[1])
    event(f"HTTP {response.status_code}")
    assert_well_formed(response)
    if response.status_code == 202:
        assert response.json()["Acknowledged"] == 0


TS = '"Timestamp": "2026-11-28T10:00:00.000Z"'


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/events", '{"x": 1e999, "BatchItem": {"e": {"Events": {"1": '
                     '{"EventType": "a\\ud800", ' + TS + "}}}}}", id="event-surrogate"),
        pytest.param("POST", "/events", '{"x": 1e999, "BatchItem": {"e": {"Events": {"1": '
                     '{"EventType": "a", "Big": 18446744073709551616, ' + TS + "}}}}}",
                     id="event-big-int"),
        pytest.param("POST", "/events", '{"x": 1e999, "BatchItem": {"e": {"Events": {}, '
                     '"Endpoint": {"Demographic": {"Big": -9223372036854775809}}}}}',
                     id="events-endpoint-big-int"),
        pytest.param("PUT", "/endpoints/e",
                     '{"x": 1e999, "Location": {"Big": 18446744073709551616}}',
                     id="endpoint-big-int"),
        pytest.param("PUT", "/endpoints/e", '{"x": 1e999, "Address": "\\ud800"}',
                     id="endpoint-surrogate"),
        pytest.param("PUT", "/endpoints",
                     '{"x": 1e999, "Item": [{"Id": "e", "Address": "\\udfff"}]}',
                     id="endpoints-batch-surrogate"),
    ],
)  # fmt: skip
def test_lenient_parser_refuses_what_orjson_cannot_write(
    target: Target, method: str, path: str, body: str
) -> None:
    response = target.send(method, path, body.encode())
    assert_well_formed(response)
