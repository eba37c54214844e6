"""JSON for the SDK: orjson when it can be imported, else the standard library's json.

python-for-android and kivy-ios build only pure-Python packages (or those with a
recipe), so an app packaged for a phone has no orjson. The fallback writes the same
bytes as orjson and refuses what orjson refuses, with the same exception classes:

- compact, UTF-8, nothing escaped but ``"``, ``\\`` and control characters;
- floats as orjson writes them (``1e-05`` is ``0.00001``, ``1e-07`` is ``1e-7``), and
  NaN and the infinities as ``null``;
- a lone surrogate, a key that is not a string, or an int beyond 64 bits raises
  `JSONEncodeError` (a TypeError);
- reading, ``NaN``, ``Infinity``, a number too big for a float, a lone surrogate, or
  bytes that are not UTF-8 raise `JSONDecodeError` (a ValueError); an integer beyond 64
  bits is read as a float.

Every SDK module takes JSON from here, never from orjson or json directly.
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
from collections.abc import Callable
from typing import Any

__all__ = ["FAST", "JSONDecodeError", "JSONEncodeError", "dumps", "dumps_sorted", "loads"]

try:
    import orjson
except ImportError:  # pragma: no cover - the run without orjson covers it
    orjson = None  # type: ignore[assignment]

_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1  # orjson writes u64 too
_MAX_DEPTH = 254  # orjson refuses nesting deeper than this


def _unsupported(value: Any) -> Any:
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _encoder(sort_keys: bool) -> Callable[[Any], str]:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the _json accelerator
        return json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=True, sort_keys=sort_keys
        ).encode
    # The C encoder, made once: JSONEncoder.encode() makes a new one per call, which costs
    # more than encoding a small event. No circular-reference markers: _refuse() has
    # already refused anything nested deeper than orjson allows.
    encode = make(None, _unsupported, json.encoder.encode_basestring, None, ":", ",",
                  sort_keys, False, True)  # fmt: skip
    return lambda value: "".join(encode(value, 0))


_compact = _encoder(sort_keys=False)
_sorted = _encoder(sort_keys=True)
# Outside strings, only floats differ from what json writes: orjson writes an exponent of
# -5 as a plain decimal and the others without a leading zero, and NaN and the infinities
# as null. The strings are matched too, so that nothing inside one is ever touched.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|(-?)(\d+(?:\.\d+)?)e-0(\d)|-?Infinity|NaN')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _FallbackEncodeError(TypeError):
    # What orjson.JSONEncodeError is: a TypeError.
    pass


def _refuse(value: Any, depth: int = 0) -> None:
    # What orjson refuses and json would write: non-string keys and ints beyond 64 bits.
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return
    if depth > _MAX_DEPTH:
        raise _FallbackEncodeError("Recursion limit reached")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _FallbackEncodeError("Dict key must be str")
            _refuse(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _refuse(item, depth + 1)
    elif isinstance(value, int) and not _MIN_INT <= value <= _MAX_INT:
        raise _FallbackEncodeError("Integer exceeds 64-bit range")


def _fix_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if token[0] == '"':
        return token
    if token[-1] == "N" or token[-1] == "y":  # NaN, Infinity, -Infinity
        return "null"
    sign, mantissa, digit = match.group(1), match.group(2), match.group(3)
    if digit == "5":
        return f"{sign}0.0000{mantissa.replace('.', '')}"
    return f"{sign}{mantissa}e-{digit}"


def _encode(value: Any, encode: Callable[[Any], str]) -> bytes:
    _refuse(value)
    try:
        text = encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _FallbackEncodeError(str(exc)) from None
    if "e-0" in text or "NaN" in text or "Infinity" in text:
        text = _TOKENS.sub(_fix_token, text)
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise _FallbackEncodeError("str is not valid UTF-8: surrogates not allowed") from None


def py_dumps(value: Any) -> bytes:
    """orjson.dumps(value) written with the standard library."""
    return _encode(value, _compact)


def py_dumps_sorted(value: Any) -> bytes:
    """orjson.dumps(value, option=orjson.OPT_SORT_KEYS) written with the standard library."""
    return _encode(value, _sorted)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError("number is infinity when parsed as double")
    return number


def _parse_int(text: str) -> int | float:
    number = int(text)
    return number if _MIN_INT <= number <= _MAX_INT else float(text)


_decoder = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_parse_float, parse_int=_parse_int
)


def py_loads(data: bytes | bytearray | memoryview | str) -> Any:
    """orjson.loads(data) read with the standard library."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode()
        if not text.isascii():
            text.encode()  # a str holding a lone surrogate: orjson refuses it
        value = _decoder.decode(text)
    except json.JSONDecodeError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeError is a ValueError
        raise json.JSONDecodeError(str(exc), data if isinstance(data, str) else "", 0) from None
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value, text)
    return value


def _check_strings(value: Any, text: str) -> None:
    # A pair of escapes makes one character; a lone one leaves a surrogate in a string.
    strings: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            strings.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    for string in strings:
        try:
            string.encode()
        except UnicodeEncodeError:
            raise json.JSONDecodeError("lone surrogate in string", text, 0) from None


FAST = orjson is not None

dumps: Callable[[Any], bytes]
dumps_sorted: Callable[[Any], bytes]
loads: Callable[[bytes | bytearray | memoryview | str], Any]
JSONDecodeError: type[ValueError]
JSONEncodeError: type[TypeError]

if orjson is not None:
    # The functions themselves, not wrappers: the collector's speed depends on them.
    dumps = orjson.dumps
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    JSONEncodeError = orjson.JSONEncodeError

    def _orjson_sorted(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    dumps_sorted = _orjson_sorted

else:  # pragma: no cover - the run without orjson covers it
    dumps = py_dumps
    dumps_sorted = py_dumps_sorted
    loads = py_loads
    JSONDecodeError = json.JSONDecodeError
    JSONEncodeError = _FallbackEncodeError
