"""Decode a request body into a shape, with errors that name the field and the rule.

msgspec reports ``Expected `int` <= 100 - at `$.Limits.Daily` ``; a map's key shows as
``[...]``. `decode` names the key too, and raises `WireError("Limits.Daily", "must be
<= 100")`, the error every other collector check raises.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from homing.wire import WireError

T = TypeVar("T")

_PATH = re.compile(r"^(?P<rule>.*) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")
_EXPECTED = re.compile(r"^Expected `([^`]+)`(.*)$")
_GOT = re.compile(r"^, got `([^`]+)`$")
_NAMED_RULE = re.compile(r"^([A-Za-z]+): (.*)$", re.DOTALL)


def decode(body: bytes | str, shape: type[T]) -> T:
    """Decode JSON `body` into `shape`, or raise `WireError` naming the field and the rule.

    >>> from homing_collector.campaigns.shapes import SetDimension
    >>> decode(b'{"Values": ["ios"], "DimensionType": "SOMETIMES"}', SetDimension)
    Traceback (most recent call last):
    ...
    homing.wire.WireError: DimensionType: 'SOMETIMES' is not one of EXCLUSIVE, INCLUSIVE
    """
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise WireError("", f"the body is not valid JSON ({exc})") from None
    return convert(raw, shape)


def convert(raw: Any, shape: type[T]) -> T:
    """Like `decode`, from an already decoded JSON value."""
    try:
        return msgspec.convert(raw, shape)
    except msgspec.ValidationError as exc:
        raise _wire_error(str(exc), raw, shape) from None


def _wire_error(message: str, raw: Any, shape: type[Any]) -> WireError:
    match = _PATH.match(message)
    rule, path = (match["rule"], match["path"]) if match else (message, "")
    names: list[str] = []
    info: mi.Type | None = mi.type_info(shape)
    for step in _STEP.finditer(path):
        name, index = step.group(1), step.group(2)
        info = _strip(_unwrap(info))
        if name is not None:
            names.append(name)
            raw = raw.get(name) if isinstance(raw, dict) else None
            info = _field_type(info, name)
        elif index == "...":
            key = _failing_key(raw, info)
            names.append(key)
            raw = raw.get(key) if isinstance(raw, dict) else None
            info = info.value_type if isinstance(info, mi.DictType) else None
        else:
            names[-1:] = [f"{names[-1] if names else ''}[{index}]"]
            raw = raw[int(index)] if isinstance(raw, list) and int(index) < len(raw) else None
            info = info.item_type if isinstance(info, (mi.ListType, mi.VarTupleType)) else None
    if match and match["key"]:
        return WireError(".".join(names), f"each name {_rule(rule, None)}")
    missing = _MISSING.match(rule)
    if missing:
        return WireError(".".join([*names, missing[1]]), "is required")
    named = _NAMED_RULE.match(rule)
    if named:
        # A rule from __post_init__ names the member it is about: "Values: ...".
        return WireError(".".join([*names, named[1]]), named[2])
    return WireError(".".join(names), _rule(rule, info))


def _rule(rule: str, info: mi.Type | None) -> str:
    if isinstance(info, mi.UnionType):
        info = _unwrap(info)
    if isinstance(info, mi.Metadata):
        described = (info.extra_json_schema or {}).get("description")
        if "matching regex" in rule and described:
            return f"must be {described}"
        info = info.type
    if rule.startswith("Invalid enum value") and isinstance(info, mi.LiteralType):
        value = rule.removeprefix("Invalid enum value ")
        return f"{value} is not one of {', '.join(sorted(map(str, info.values)))}"
    expected = _EXPECTED.match(rule)
    if expected:
        kind = expected[1].removesuffix(" | null")
        got = _GOT.match(expected[2])
        if got:
            return f"must be {_KINDS.get(kind, kind)}, not {_KINDS.get(got[1], got[1])}"
        return f"must be {_KINDS.get(kind, kind)}{expected[2]}"
    return rule


_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _unwrap(info: mi.Type | None) -> mi.Type | None:
    """`X | None` -> `X`; `Annotated` constraints are already on the inner type."""
    if isinstance(info, mi.UnionType):
        rest = [t for t in info.types if not isinstance(t, mi.NoneType)]
        info = rest[0] if len(rest) == 1 else info
    return info


def _strip(info: mi.Type | None) -> mi.Type | None:
    return info.type if isinstance(info, mi.Metadata) else info


def _field_type(info: mi.Type | None, name: str) -> mi.Type | None:
    if isinstance(info, mi.StructType):
        for field in info.fields:
            if field.encode_name == name:
                return field.type
    return None


def _failing_key(raw: Any, info: mi.Type | None) -> str:
    """msgspec does not say which key of a map failed: try each value against its type."""
    if not isinstance(raw, dict):
        return "[...]"
    value_type = _strip(_unwrap(info.value_type)) if isinstance(info, mi.DictType) else None
    if isinstance(value_type, mi.StructType):
        for key, value in raw.items():
            try:
                msgspec.convert(value, value_type.cls)
            except msgspec.ValidationError:
                return str(key)
    return "[...]"
