"""Requests checked against the route table's msgspec models, the ones the OpenAPI
document is generated from; a breach is a 400 that names the field."""

from __future__ import annotations

import re
from typing import Any, get_origin

import msgspec
from starlette.datastructures import QueryParams

from homing.wire import NUL_RULE
from homing_collector.errors import PinpointError, bad_request
from homing_collector.models.types import PATTERNS

_AT = re.compile(r"^(?P<rule>.*) - at `(?P<where>[^`]*)`(?: in `(?P<outer>[^`]*)`)?$", re.S)
_REGEX = re.compile(r"`str` matching regex '.*?' - at", re.S)
_MISSING = re.compile(r"Object missing required field `([^`]*)`")
_INDEX = re.compile(r"\[\d+\]$")


def _field(path: str) -> str:
    return path.removeprefix("$").removeprefix(".")


def _error(exc: msgspec.ValidationError) -> PinpointError:
    message = str(exc)
    for pattern, said in PATTERNS.items():
        message = message.replace(f"`str` matching regex {pattern!r}", said)
    # A pattern without a name: the OpenAPI document gives it.
    message = _REGEX.sub("a string of the form the OpenAPI document gives - at", message)
    match = _AT.match(message)
    rule, where = (match["rule"], _field(match["where"])) if match else (message, "")
    missing = _MISSING.fullmatch(rule)
    if missing:
        name = f"{where}.{missing[1]}" if where else missing[1]
        return bad_request(f"{name}: is required")
    if match is None:
        return bad_request(message)
    rule = rule[:1].lower() + rule[1:]
    if match["outer"] is not None:  # "key" in `$.Endpoints`: a key of that object
        where, rule = _field(match["outer"]), f"a key: {rule}"
    return bad_request(f"{where}: {rule}" if where else rule)


def check_query_no_nul(params: QueryParams) -> None:
    for name, value in params.multi_items():
        if "\x00" in value or "\x00" in name:
            raise bad_request(f"{name}: {NUL_RULE}")


def check_body(payload: Any, model: Any) -> None:
    """Raise 400 unless `payload` is a `model`."""
    try:
        msgspec.convert(payload, model)
    except msgspec.ValidationError as exc:
        raise _error(exc) from None


def check_query(params: QueryParams, model: Any) -> Any:
    """The query parameters as `model` (a Struct); list fields take repeated parameters."""
    data: dict[str, Any] = {}
    for field in msgspec.structs.fields(model):
        name = field.encode_name
        if name not in params:
            continue
        is_list = get_origin(_unwrap(field.type)) is list
        data[name] = params.getlist(name) if is_list else params[name]
    try:
        return msgspec.convert(data, model, strict=False)
    except msgspec.ValidationError as exc:
        error = _error(exc)
        # A repeated parameter is named as such, not by its place.
        name, _, rule = error.message.partition(": ")
        raise bad_request(f"{_INDEX.sub('', name)}: {rule}") from None


def _unwrap(kind: Any) -> Any:
    """`list[X]` from `list[X] | None` or `Annotated[list[X], ...]`."""
    for _ in range(3):
        args = getattr(kind, "__args__", ())
        if get_origin(kind) is list:
            return kind
        if hasattr(kind, "__metadata__"):  # Annotated
            kind = kind.__origin__
        elif args:
            kind = next((a for a in args if a is not type(None)), kind)
        else:
            return kind
    return kind
