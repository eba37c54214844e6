"""The wire contract: Amazon Pinpoint's event and endpoint shapes, and their validation.

The SDK validates at the call site and the collector validates what arrives; both use
the checks below so the rules cannot drift apart. A violation raises `WireError`, whose
message names the field and the rule, e.g. ``Attributes.colour: value is 201 characters;
the limit is 200``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from datetime import datetime, timedelta, timezone
from typing import Any

from homing import _json, limits

__all__ = [
    "CHANNEL_TYPES",
    "DEMOGRAPHIC_FIELDS",
    "ENDPOINT_STATUSES",
    "MAX_PUSH_SEQ",
    "NUL_RULE",
    "OPT_OUT_VALUES",
    "WireError",
    "check_endpoint",
    "check_endpoint_size",
    "check_event",
    "check_formatted_event",
    "check_id",
    "check_url_id",
    "cohort_id",
    "format_timestamp",
    "formatted_ms",
    "merge_map",
    "new_endpoint",
    "nul_at",
    "parse_timestamp",
    "push_seq",
    "whole_number",
]

CHANNEL_TYPES = frozenset(
    {
        "PUSH", "GCM", "APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX",
        "ADM", "SMS", "VOICE", "EMAIL", "BAIDU", "CUSTOM", "IN_APP",
    }
)  # fmt: skip
ENDPOINT_STATUSES = frozenset({"ACTIVE", "INACTIVE"})
OPT_OUT_VALUES = frozenset({"ALL", "NONE"})

_EVENT_STRINGS = ("AppPackageName", "AppTitle", "AppVersionCode", "SdkName", "ClientSdkVersion")
DEMOGRAPHIC_FIELDS = (
    "AppVersion", "Locale", "Make", "Model", "ModelVersion", "Platform", "PlatformVersion",
    "Timezone",
)  # fmt: skip
_LOCATION_STRINGS = ("City", "Country", "PostalCode", "Region")
_MAX_PLAIN_STRING = limits.MAX_PLAIN_STRING_LENGTH
# JSON cannot carry a lone surrogate: the SDK would fail to encode the event. The checks
# below test str.isascii() first, which costs nothing, and encode only the rest.
_NOT_UTF8 = (
    "holds a lone surrogate, which is not valid UTF-8 (os.fsdecode makes them of "
    "undecodable bytes; decode those with errors='replace')"
)


class WireError(ValueError):
    """A value breaks the wire contract. `field` is a dotted path, `rule` what it broke."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}" if field else rule)
        self.field = field
        self.rule = rule


NUL_RULE = "must not contain the NUL character (U+0000)"


def nul_at(value: Any, path: str = "") -> str | None:
    """Where `value` (parsed JSON) holds a NUL character, in a key or a string: its path
    (`a.b.0`), or None. No stored text may hold one (PostgreSQL's text cannot), so the
    collector refuses what would store one, on every backend alike."""
    if type(value) is str:
        return (path or "body") if "\x00" in value else None
    if type(value) is dict:
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return here
            found = nul_at(item, here)
            if found is not None:
                return found
    elif type(value) is list:
        for index, item in enumerate(value):
            found = nul_at(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def parse_timestamp(value: object, field: str = "Timestamp") -> datetime:
    """Parse an ISO-8601 timestamp; one without an offset is taken as UTC."""
    if not isinstance(value, str):
        raise WireError(field, f"must be an ISO-8601 string, not {_kind(value)}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise WireError(
            field, f"{value[:40]!r} is not an ISO-8601 timestamp such as 2026-11-28T17:50:41.123Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def format_timestamp(moment: datetime | float) -> str:
    """ISO-8601 in UTC with milliseconds, as Pinpoint writes it: 2026-11-28T17:50:41.123Z."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    m = moment.astimezone(timezone.utc)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond // 1000:03d}Z"
    )


def formatted_ms(value: str) -> int | None:
    """The milliseconds since 1970 of a timestamp in `format_timestamp`'s form, read
    without a datetime; None for any other form (`parse_timestamp` reads those).

    >>> formatted_ms("1970-01-02T00:01:02.003Z")
    86462003
    """
    if (
        len(value) == 24
        and value[4] == value[7] == "-"
        and value[10] == "T"
        and value[13] == value[16] == ":"
        and value[19:24:4] == ".Z"
    ):
        rest = value[17:19] + value[20:23]  # seconds and milliseconds: "41123"
        if rest.isascii() and rest.isdigit() and rest < "6":  # no second 60 or more
            minute = _minute_ms(value[:17])
            if minute is not None:
                return minute + int(rest)
    return None


@functools.lru_cache(maxsize=1024)
def _minute_ms(minute: str) -> int | None:
    # "2026-11-28T17:50:" in ms: events come in time order, so a minute serves many.
    try:
        moment = parse_timestamp(minute + "00Z")
    except WireError:
        return None
    return (moment - _EPOCH) // _MS


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def cohort_id(endpoint_id: str) -> str:
    """A stable number from "0" to "99", for splitting endpoints into groups."""
    digest = hashlib.sha256(endpoint_id.encode()).digest()
    return str(int.from_bytes(digest[:4], "big") % 100)


def new_endpoint(app_id: str, endpoint_id: str, now: str) -> dict[str, Any]:
    """What the collector stores for an endpoint before its first update merges in."""
    return {
        "ApplicationId": app_id,
        "Id": endpoint_id,
        "CohortId": cohort_id(endpoint_id),
        "CreationDate": now,
        "EndpointStatus": "ACTIVE",
        "OptOut": "NONE",
    }


def check_endpoint_size(endpoint: dict[str, Any]) -> int:
    """The size of an endpoint as stored (its JSON, with the fields the collector adds);
    raise if it is over the limit. The SDK checks with the same rule, so what it accepts
    the collector accepts too."""
    size = len(_json.dumps(endpoint))
    if size > limits.MAX_ENDPOINT_BYTES:
        raise WireError(
            "Endpoint", f"would be {size} bytes; the limit is {limits.MAX_ENDPOINT_BYTES} bytes"
        )
    return size


def merge_map(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """An endpoint map after an update: given names replace theirs, the rest are kept,
    and a name given as None or [] is removed (how an attribute is cleared)."""
    merged = dict(old or {})
    for key, value in new.items():
        if value is None or value == []:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def whole_number(raw: str | None, max_digits: int = 18) -> int | None:
    """`raw` as an int if it is 1 to `max_digits` ASCII digits, else None.

    str.isdigit() alone is not enough: it is true for "²", which int() refuses, and for
    "٣" (Arabic-Indic three), which int() reads though no client means it. The length
    bound keeps int() within its 4,300-digit limit and the value within 64 bits.
    """
    if raw is None or not 1 <= len(raw) <= max_digits:
        return None
    if not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


MAX_PUSH_SEQ = 2**63 - 1  # a push message's number: SQLite's largest integer


def push_seq(raw: str | None) -> int | None:
    """A push message's number as a stream's `id:` and Last-Event-ID carry it, else None."""
    seq = whole_number(raw, max_digits=19)
    return seq if seq is not None and seq <= MAX_PUSH_SEQ else None


def check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise WireError(field, "must be a non-empty string")
    if len(value) > limits.MAX_ID_LENGTH:
        raise WireError(field, f"is {len(value)} characters; the limit is {limits.MAX_ID_LENGTH}")
    _check_utf8(value, field)
    if not value.isprintable():
        raise WireError(field, "must not contain control characters")
    return value


def check_url_id(value: object, field: str) -> str:
    """An endpoint or user id: as any id, and without "/". GetEndpoint, DeleteEndpoint,
    GetUserEndpoints and the rest take it as one segment of their path, so an id with "/"
    could be stored but never read, updated or deleted. (Event and session ids never go
    in a URL; they may hold "/".)"""
    checked = check_id(value, field)
    if "/" in checked:
        raise WireError(field, 'must not contain "/": the id is part of the URL of its routes')
    return checked


def check_event(event: object, field: str = "") -> datetime:
    """Check one Pinpoint `Event`; return its parsed `Timestamp`.

    >>> check_event({"EventType": "Item Bought", "Timestamp": "2026-11-28T10:00:00.000Z"}).year
    2026
    """
    timestamp = _check_event(event, field, parse_times=True)
    assert timestamp is not None
    return timestamp


def check_formatted_event(event: dict[str, Any]) -> None:
    """Check an event whose `Timestamp` and `Session` times the caller wrote itself, in
    `format_timestamp`'s form, from numbers it checked (and a `StopTimestamp` not before
    its `StartTimestamp`): as `check_event`, but those are not parsed back.

    >>> check_formatted_event({"EventType": "Played", "Timestamp": "2026-11-28T10:00:00.000Z"})
    """
    _check_event(event, "", parse_times=False)


def _check_event(event: object, field: str, *, parse_times: bool) -> datetime | None:
    prefix = f"{field}." if field else ""
    if type(event) is not dict:
        raise WireError(field or "Event", f"must be an object, not {_kind(event)}")
    event_type = event.get("EventType")
    if type(event_type) is not str or not event_type:
        raise WireError(prefix + "EventType", "is required and must be a non-empty string")
    if len(event_type) > limits.MAX_EVENT_TYPE_LENGTH:
        raise WireError(
            prefix + "EventType",
            f"is {len(event_type)} characters; the limit is {limits.MAX_EVENT_TYPE_LENGTH}",
        )
    _check_utf8(event_type, prefix + "EventType")
    if "Timestamp" not in event:
        raise WireError(prefix + "Timestamp", "is required")
    timestamp = parse_timestamp(event["Timestamp"], prefix + "Timestamp") if parse_times else None

    keys = 0
    attributes = event.get("Attributes")
    if attributes is not None:
        if type(attributes) is not dict:
            raise WireError(prefix + "Attributes", f"must be an object, not {_kind(attributes)}")
        # The collector checks every event it receives, so the loops below test the rule
        # inline and call a helper, or build a field name, only to raise.
        for key, value in attributes.items():
            if not key or len(key) > limits.MAX_EVENT_KEY_LENGTH or not key.isascii():
                _check_event_key(key, prefix + "Attributes")
            if (
                type(value) is str
                and len(value) <= limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH
                and (value.isascii() or _is_utf8(value))
            ):
                continue
            if type(value) is not str:
                raise WireError(
                    f"{prefix}Attributes.{key}", f"must be a string, not {_kind(value)}"
                )
            if len(value) <= limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH:
                raise WireError(f"{prefix}Attributes.{key}", _NOT_UTF8)
            raise WireError(
                f"{prefix}Attributes.{key}",
                f"value is {len(value)} characters; "
                f"the limit is {limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH}",
            )
        keys = len(attributes)
    metrics = event.get("Metrics")
    if metrics is not None:
        _check_metrics(metrics, prefix + "Metrics", _check_event_key, limits.MAX_EVENT_KEY_LENGTH)
        keys += len(metrics)
    if keys > limits.MAX_EVENT_KEYS:
        raise WireError(
            prefix + "Attributes",
            f"the event has {keys} attribute and metric keys; "
            f"the limit is {limits.MAX_EVENT_KEYS} in all",
        )

    session = event.get("Session")
    if session is not None:
        _check_session(session, prefix + "Session", parse_times)
    for name in _EVENT_STRINGS:
        value = event.get(name)
        if value is not None and (
            type(value) is not str or len(value) > _MAX_PLAIN_STRING or not value.isascii()
        ):
            _check_plain_string(value, prefix + name)
    return timestamp


def check_endpoint(endpoint: object, field: str = "Endpoint") -> dict[str, Any]:
    """Check a Pinpoint endpoint request (`EndpointRequest`, `PublicEndpoint`, a batch item)."""
    if type(endpoint) is not dict:
        raise WireError(field, f"must be an object, not {_kind(endpoint)}")
    prefix = f"{field}." if field else ""
    for name in ("Address", "RequestId"):
        if endpoint.get(name) is not None:
            _check_plain_string(endpoint[name], prefix + name)
    if endpoint.get("Attributes") is not None:
        _check_endpoint_attributes(endpoint["Attributes"], prefix + "Attributes")
    if endpoint.get("Metrics") is not None:
        for key in endpoint["Metrics"] if type(endpoint["Metrics"]) is dict else ():
            if "\x00" in key:
                raise WireError(f"{prefix}Metrics.{key}", NUL_RULE)
        _check_metrics(
            endpoint["Metrics"],
            prefix + "Metrics",
            _check_endpoint_attribute_name,
            limits.MAX_ENDPOINT_ATTRIBUTE_NAME_LENGTH,
        )
    _check_enum(endpoint.get("ChannelType"), CHANNEL_TYPES, prefix + "ChannelType")
    _check_enum(endpoint.get("EndpointStatus"), ENDPOINT_STATUSES, prefix + "EndpointStatus")
    _check_enum(endpoint.get("OptOut"), OPT_OUT_VALUES, prefix + "OptOut")
    if endpoint.get("EffectiveDate") is not None:
        parse_timestamp(endpoint["EffectiveDate"], prefix + "EffectiveDate")

    demographic = endpoint.get("Demographic")
    if demographic is not None:
        _check_object(demographic, prefix + "Demographic")
        for name in DEMOGRAPHIC_FIELDS:
            if demographic.get(name) is not None:
                _check_plain_string(demographic[name], f"{prefix}Demographic.{name}")
    location = endpoint.get("Location")
    if location is not None:
        _check_object(location, prefix + "Location")
        for name in _LOCATION_STRINGS:
            if location.get(name) is not None:
                _check_plain_string(location[name], f"{prefix}Location.{name}")
        for name, bound in (("Latitude", 90.0), ("Longitude", 180.0)):
            value = location.get(name)
            if value is None:
                continue
            _check_number(value, f"{prefix}Location.{name}")
            if not -bound <= value <= bound:
                raise WireError(
                    f"{prefix}Location.{name}", f"must be between -{bound:g} and {bound:g}"
                )
    user = endpoint.get("User")
    if user is not None:
        _check_object(user, prefix + "User")
        if user.get("UserId") is not None:
            check_url_id(user["UserId"], prefix + "User.UserId")
        if user.get("UserAttributes") is not None:
            _check_endpoint_attributes(user["UserAttributes"], prefix + "User.UserAttributes")
    return endpoint


def _check_event_key(key: str, field: str) -> None:
    if not key:
        raise WireError(field, "keys must not be empty")
    if len(key) > limits.MAX_EVENT_KEY_LENGTH:
        raise WireError(
            field,
            f"key {key[:60]!r} is {len(key)} characters; "
            f"the limit is {limits.MAX_EVENT_KEY_LENGTH}",
        )
    if not _is_utf8(key):
        raise WireError(field, f"key {key[:60]!r} {_NOT_UTF8}")


def _check_endpoint_attribute_name(key: str, field: str) -> None:
    if not key:
        raise WireError(field, "names must not be empty")
    if len(key) > limits.MAX_ENDPOINT_ATTRIBUTE_NAME_LENGTH:
        raise WireError(
            field,
            f"name {key[:60]!r} is {len(key)} characters; "
            f"the limit is {limits.MAX_ENDPOINT_ATTRIBUTE_NAME_LENGTH}",
        )
    if not _is_utf8(key):
        raise WireError(field, f"name {key[:60]!r} {_NOT_UTF8}")
    if "\x00" in key:
        raise WireError(f"{field}.{key}", NUL_RULE)


def _check_metrics(metrics: object, field: str, check_key: Any, key_limit: int) -> None:
    """`check_key` raises for a key that is empty or longer than `key_limit`."""
    if type(metrics) is not dict:
        raise WireError(field, f"must be an object, not {_kind(metrics)}")
    for key, value in metrics.items():
        if not key or len(key) > key_limit or not key.isascii():
            check_key(key, field)
        kind = type(value)
        if kind is float:
            if math.isfinite(value):
                continue
        elif kind is int and -(2**63) <= value < 2**63:
            continue
        _check_number(value, f"{field}.{key}")


def _check_number(value: object, field: str) -> None:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise WireError(field, "must be a finite number")
    elif kind is not int:
        raise WireError(field, f"must be a number, not {_kind(value)}")
    elif not -(2**63) <= value < 2**63:  # type: ignore[operator]
        raise WireError(field, "must fit in a 64-bit float")


def _check_endpoint_attributes(attributes: object, field: str) -> None:
    if type(attributes) is not dict:
        raise WireError(field, f"must be an object, not {_kind(attributes)}")
    for name, values in attributes.items():
        _check_endpoint_attribute_name(name, field)
        if type(values) is not list:
            raise WireError(f"{field}.{name}", f"must be a list of strings, not {_kind(values)}")
        if len(values) > limits.MAX_ENDPOINT_ATTRIBUTE_VALUES:
            raise WireError(
                f"{field}.{name}",
                f"has {len(values)} values; the limit is {limits.MAX_ENDPOINT_ATTRIBUTE_VALUES}",
            )
        for index, value in enumerate(values):
            if type(value) is not str:
                raise WireError(f"{field}.{name}", f"values must be strings, not {_kind(value)}")
            if len(value) > limits.MAX_ENDPOINT_ATTRIBUTE_VALUE_LENGTH:
                raise WireError(
                    f"{field}.{name}",
                    f"a value is {len(value)} characters; "
                    f"the limit is {limits.MAX_ENDPOINT_ATTRIBUTE_VALUE_LENGTH}",
                )
            _check_utf8(value, f"{field}.{name}")
            if "\x00" in value:
                raise WireError(f"{field}.{name}.{index}", NUL_RULE)


_last_session_start: list[str | None] = [None]  # the last Session.StartTimestamp that parsed


def _check_session(session: object, field: str, parse_times: bool) -> None:
    _check_object(session, field)
    assert isinstance(session, dict)
    session_id = session.get("Id")
    if not (
        type(session_id) is str
        and 0 < len(session_id) <= limits.MAX_ID_LENGTH
        and session_id.isprintable()
    ):
        check_id(session_id, field + ".Id")
    if "StartTimestamp" not in session:
        raise WireError(field + ".StartTimestamp", "is required")
    start = session["StartTimestamp"]
    # Every event of a session carries the same start: parse each new one only.
    if parse_times and (type(start) is not str or start != _last_session_start[0]):
        parse_timestamp(start, field + ".StartTimestamp")
        _last_session_start[0] = start
    if parse_times and session.get("StopTimestamp") is not None:
        stop = parse_timestamp(session["StopTimestamp"], field + ".StopTimestamp")
        if stop < parse_timestamp(start, field + ".StartTimestamp"):
            raise WireError(field + ".StopTimestamp", "must not be before StartTimestamp")
    duration = session.get("Duration")
    if duration is not None and (type(duration) is not int or not 0 <= duration < 2**31):
        raise WireError(field + ".Duration", "must be a whole number of milliseconds, 0 or more")


def _check_enum(value: object, allowed: frozenset[str], field: str) -> None:
    if value is not None and (type(value) is not str or value not in allowed):
        raise WireError(field, f"must be one of {', '.join(sorted(allowed))}")


def _check_object(value: object, field: str) -> None:
    if type(value) is not dict:
        raise WireError(field, f"must be an object, not {_kind(value)}")


def _check_plain_string(value: object, field: str) -> None:
    if type(value) is not str:
        raise WireError(field, f"must be a string, not {_kind(value)}")
    if len(value) > _MAX_PLAIN_STRING:
        raise WireError(field, f"is {len(value)} characters; the limit is {_MAX_PLAIN_STRING}")
    _check_utf8(value, field)
    if "\x00" in value:
        raise WireError(field, NUL_RULE)


def _is_utf8(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_utf8(value: str, field: str) -> None:
    if not _is_utf8(value):
        raise WireError(field, _NOT_UTF8)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean", int: "a number", float: "a number", str: "a string",
        list: "a list", dict: "an object",
    }.get(type(value), type(value).__name__)  # fmt: skip
