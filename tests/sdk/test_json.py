"""homing._json: the standard-library fallback writes orjson's bytes and raises its errors.

The SDK's suite also runs once more, in a child, with orjson made unimportable: that is
how an app packaged by python-for-android or kivy-ios runs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homing import _json, limits
from homing._events import EventBuilder

orjson = pytest.importorskip("orjson", reason="the comparisons need orjson itself")

ROOT = Path(__file__).resolve().parents[2]

# Anything JSON-like, including what orjson refuses: lone surrogates, ints past 64 bits,
# NaN and the infinities, and keys that are not strings.
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text()
)
_KEYS = st.text() | st.integers() | st.none()
ANY_VALUE = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner) | st.tuples(inner) | st.dictionaries(_KEYS, inner),
    max_leaves=25,
)
_NAMES = st.text(min_size=1, max_size=limits.MAX_EVENT_KEY_LENGTH).filter(
    lambda s: s.encode(errors="ignore").decode() == s
)
_VALUES = st.text(max_size=limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH).filter(
    lambda s: s.encode(errors="ignore").decode() == s
)
_METRICS = st.floats(allow_nan=False, allow_infinity=False) | st.integers(
    min_value=-(2**63), max_value=2**63 - 1
)


def outcome(dump: Any, value: Any) -> bytes | type[BaseException]:
    try:
        result: bytes = dump(value)
    except Exception as exc:
        # orjson's JSONEncodeError is a TypeError, and so must the fallback's be.
        return TypeError if isinstance(exc, TypeError) else type(exc)
    return result


@settings(max_examples=400, deadline=None)
@given(
    event_type=_NAMES,
    attributes=st.dictionaries(_NAMES, _VALUES, max_size=20),
    metrics=st.dictionaries(_NAMES, _METRICS, max_size=20),
    timestamp=st.floats(min_value=0, max_value=4_000_000_000),
)
def test_events_are_written_byte_for_byte_as_orjson_writes_them(
    event_type: str, attributes: dict[str, str], metrics: dict[str, float], timestamp: float
) -> None:
    builder = EventBuilder(app_title="Shop", app_version_code="1.0")
    session = {"Id": "abcd1234-20260101-000000000", "StartTimestamp": "2026-01-01T00:00:00.000Z"}
    try:
        _, event = builder.build(event_type, attributes, metrics, timestamp, session)
    except ValueError:
        return  # over the key limit: never stored, never written
    assert _json.py_dumps(event) == orjson.dumps(event)


@settings(max_examples=300, deadline=None)
@given(
    attributes=st.dictionaries(_NAMES, st.lists(_VALUES, max_size=3), max_size=10),
    metrics=st.dictionaries(_NAMES, _METRICS, max_size=10),
    latitude=st.floats(min_value=-90, max_value=90),
    user=st.dictionaries(_NAMES, st.lists(_VALUES, max_size=2), max_size=3),
)
def test_endpoints_are_written_byte_for_byte_as_orjson_writes_them(
    attributes: dict[str, list[str]],
    metrics: dict[str, float],
    latitude: float,
    user: dict[str, list[str]],
) -> None:
    endpoint = {
        "ChannelType": "CUSTOM",
        "Attributes": attributes,
        "Metrics": metrics,
        "Location": {"Latitude": latitude, "Longitude": -0.0, "City": "Lyon"},
        "User": {"UserId": "u-1", "UserAttributes": user},
        "Demographic": {"Platform": "Linux", "Timezone": "Europe/Paris"},
    }
    assert _json.py_dumps(endpoint) == orjson.dumps(endpoint)
    assert _json.py_dumps_sorted(endpoint) == orjson.dumps(endpoint, option=orjson.OPT_SORT_KEYS)


@settings(max_examples=1500, deadline=None)
@given(ANY_VALUE)
def test_any_value_gives_the_same_bytes_or_the_same_error(value: Any) -> None:
    assert outcome(_json.py_dumps, value) == outcome(orjson.dumps, value)


@pytest.mark.parametrize(
    "value",
    [
        1e-05, -2.5e-05, 1.5e-07, 1e-09, 1e-10, 1e16, 1e22, 5e-324, -0.0, 0.0001,
        float("nan"), float("inf"), -float("inf"), [float("nan"), "NaN", "1e-05"],
        {"k": 1e-06, "1e-06": "e-0", 'q"e-05': 2e-05}, "\x00\x1f\x7f\u2028\u2029\"\\/",
        "\U0001f600", "\ud800", {"a": "\udfff"}, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
        {1: "int key"}, {None: 1}, (1, 2), True, None,
    ],
)  # fmt: skip
def test_edge_values(value: Any) -> None:
    assert outcome(_json.py_dumps, value) == outcome(orjson.dumps, value)


@pytest.mark.parametrize("depth", [254, 255, 1000])
@pytest.mark.parametrize("container", ["list", "dict"])
def test_nesting_is_refused_where_orjson_refuses_it(depth: int, container: str) -> None:
    value: Any = 1
    for _ in range(depth):
        value = [value] if container == "list" else {"k": value}
    assert outcome(_json.py_dumps, value) == outcome(orjson.dumps, value)


def test_an_interpreter_without_the_c_accelerator_writes_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    for sort_keys, option in ((False, 0), (True, orjson.OPT_SORT_KEYS)):
        encode = _json._encoder(sort_keys)
        for value in ({"b": [1e-05, float("nan"), "é\u2028"], "a": 2**63}, "x", 1.5e-07):
            fixed = _json._TOKENS.sub(_json._fix_token, encode(value)).encode()
            assert fixed == orjson.dumps(value, option=option)


def read_outcome(load: Any, text: str | bytes) -> bytes | str:
    try:
        value = load(text)
    except ValueError:  # orjson's JSONDecodeError, json's JSONDecodeError
        return "refused"
    return bytes(orjson.dumps(value))


@pytest.mark.parametrize(
    "text",
    [
        "NaN", "-Infinity", "[Infinity]", "1e999", "-1E400", "[1e-400]", '"\\ud800"',
        '"\\uDBFF"', '"\\ud83d\\ude00"', "18446744073709551615", "18446744073709551616",
        "-9223372036854775809", "\ufeff[]", "[1,]", "01", "1.", ".5", "", " 1 ",
        '{"a":1,"a":2}', '"\x1f"', '"\x7f"', '"\ud800"', b'"\xed\xa0\x80"', b"\xff",
        b'{"Results": {}}', '{"x": [1, 2.5, "\\u00e9", null, true]}',
    ],
)  # fmt: skip
def test_reading_edge_cases(text: str | bytes) -> None:
    assert read_outcome(_json.py_loads, text) == read_outcome(orjson.loads, text)


@settings(max_examples=1000, deadline=None)
@given(st.text() | ANY_VALUE.map(lambda v: json.dumps(v, default=str, allow_nan=True)))
def test_any_text_reads_the_same_or_is_refused_by_both(text: str) -> None:
    assert read_outcome(_json.py_loads, text) == read_outcome(orjson.loads, text)


def test_the_fallback_raises_the_exception_classes_callers_catch() -> None:
    with pytest.raises(TypeError, match="surrogates"):
        _json.py_dumps({"a": "\ud800"})
    with pytest.raises(json.JSONDecodeError):
        _json.py_loads(b"NaN")
    # With orjson installed the SDK uses orjson itself, not a wrapper around it.
    assert _json.FAST and _json.dumps is orjson.dumps and _json.loads is orjson.loads
    assert issubclass(_json.JSONDecodeError, ValueError)


@pytest.mark.timeout(900)
def test_the_sdk_suite_passes_without_orjson() -> None:
    # A child interpreter in which `import orjson` fails, as on a phone. The two tests
    # that compare the SDK's merge with the collector's need the collector, which needs
    # orjson; this file compares with orjson itself and skips there.
    script = (
        "import sys; sys.modules['orjson'] = None\n"
        "import pytest\n"
        "code = pytest.main(sys.argv[1:])\n"
        "import homing._json\n"
        "print('json:', 'orjson' if homing._json.FAST else 'fallback')\n"
        "sys.exit(code)\n"
    )
    # Short: the network tests bind AF_UNIX sockets under it, whose paths are limited.
    basetemp = tempfile.mkdtemp(prefix="homing-nj-")
    args = [
        "tests/sdk", "-q", "-x", "-p", "no:cacheprovider", "--basetemp", basetemp,
        # tests/conftest.py imports the collector, which needs orjson: not loaded here.
        "--confcutdir", "tests/sdk",
        "-k", "not as_the_collector_does and not the_collectors_size_limit",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=ROOT, capture_output=True, text=True, timeout=850, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(basetemp, ignore_errors=True)
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "json: fallback", tail
    summary = lines[-2]
    assert " passed" in summary and "failed" not in summary, tail
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 300, summary  # the suite ran, not a handful of it
