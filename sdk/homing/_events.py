"""Building and validating events at the call site, before they reach the store."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from typing import Any

from homing import limits
from homing._exceptions import InvalidEventError
from homing._types import Event
from homing._version import __version__
from homing.wire import WireError, check_event, format_timestamp

SDK_NAME = "homing-python"


def _bad_key(key: object) -> str:
    return f"keys must be strings, not {type(key).__name__}"


def _check_key(key: object, field: str) -> str:
    if type(key) is not str:
        raise InvalidEventError(field, _bad_key(key))
    return key


def check_attribute(key: object, value: object) -> None:
    # Python-type checks that JSON-shaped validation cannot see (e.g. a non-str key).
    _check_key(key, "Attributes")
    if type(value) is not str:
        raise InvalidEventError(
            f"Attributes.{key}", f"must be a string, not {type(value).__name__}; use str(value)"
        )
    if len(value) > limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH:
        raise InvalidEventError(
            f"Attributes.{key}",
            f"value is {len(value)} characters; "
            f"the limit is {limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH}",
        )


def check_metric(key: object, value: object) -> None:
    _check_key(key, "Metrics")
    # bool is an int subclass: True would silently become 1.0 on the wire.
    if type(value) is bool or not isinstance(value, (int, float)):
        raise InvalidEventError(
            f"Metrics.{key}", f"must be an int or a float, not {type(value).__name__}"
        )


class EventBuilder:
    # Holds what every event carries (app fields, global attributes and metrics).

    def __init__(
        self,
        *,
        app_package_name: str | None = None,
        app_title: str | None = None,
        app_version_code: str | None = None,
    ) -> None:
        self.global_attributes: dict[str, str] = {}
        self.global_metrics: dict[str, float] = {}
        self._base: dict[str, str] = {}
        for name, value in (
            ("AppPackageName", app_package_name),
            ("AppTitle", app_title),
            ("AppVersionCode", app_version_code),
        ):
            if value is not None:
                self._base[name] = value
        self._base["SdkName"] = SDK_NAME
        self._base["ClientSdkVersion"] = __version__
        try:
            check_event({"EventType": "x", "Timestamp": "2026-01-01T00:00:00Z", **self._base})
        except WireError as exc:
            raise InvalidEventError(exc.field, exc.rule) from None

    def build(
        self,
        event_type: object,
        attributes: Mapping[str, str] | None,
        metrics: Mapping[str, float] | None,
        timestamp: float,
        session: dict[str, Any] | None = None,
    ) -> tuple[str, Event]:
        # Return (event id, event); raise InvalidEventError if it breaks the contract.
        if type(event_type) is not str:
            raise InvalidEventError(
                "EventType", f"must be a string, not {type(event_type).__name__}"
            )
        event: Event = {"EventType": event_type, "Timestamp": _timestamp(timestamp)}
        merged_attributes = _merge(self.global_attributes, attributes, "Attributes")
        if merged_attributes:
            for key in merged_attributes:
                if type(key) is not str:
                    raise InvalidEventError("Attributes", _bad_key(key))
            event["Attributes"] = merged_attributes
        merged_metrics = _merge(self.global_metrics, metrics, "Metrics")
        if merged_metrics:
            for key, value in merged_metrics.items():
                check_metric(key, value)
            event["Metrics"] = merged_metrics
        if session is not None:
            event["Session"] = session
        event.update(self._base)
        try:
            check_event(event)
        except WireError as exc:
            raise InvalidEventError(exc.field, exc.rule) from None
        return _event_id(timestamp), event


_RAND_B = (1 << 62) - 1
# The SDK's own generator, seeded from the OS: drawing from the module's would shift the
# sequence of an app that seeds `random` for its own use (a game, a simulation, a test),
# and give that app the same event ids on every run. A forked child seeds it anew, as
# `random` does its own, so that two processes never share a sequence.
_random = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_random.seed)


def _event_id(moment: float) -> str:
    # A version 7 UUID (RFC 9562): the event's time in milliseconds, then 74 random bits.
    # The collector deduplicates on (endpoint id, event id), so its index keeps each
    # endpoint's ids together: ids that grow with time are added at the end of the
    # endpoint's run, where random ones land all over it, and the pages a batch rewrites
    # grow with the endpoint's history. getrandbits is 5x faster than uuid.
    r = _random.getrandbits(74)
    value = (
        (int(moment * 1000) & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version
        | (r >> 62) << 64
        | 0b10 << 62  # variant
        | (r & _RAND_B)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_second = -1
_prefix = ""


def _timestamp(moment: float) -> str:
    # format_timestamp's output, with the date and time formatted once per second.
    global _second, _prefix
    if moment < 0:
        return format_timestamp(moment)
    # Rounded as datetime.fromtimestamp rounds, so both give the same millisecond.
    fraction, whole = math.modf(moment)
    micros = round(fraction * 1e6)
    second = int(whole) + micros // 1_000_000
    millis = micros % 1_000_000 // 1000
    if second != _second:
        _prefix = format_timestamp(second)[:-5]
        _second = second
    return f"{_prefix}.{millis:03d}Z"


def _merge(
    globals_: Mapping[str, Any], own: Mapping[str, Any] | None, field: str
) -> dict[str, Any]:
    if own is None:
        return dict(globals_)
    if not isinstance(own, Mapping):
        raise InvalidEventError(field, f"must be a mapping, not {type(own).__name__}")
    if not globals_:
        return dict(own)
    merged = dict(globals_)
    merged.update(own)  # the event's own values win
    return merged
