"""One dimension's test, compiled: SetDimension, AttributeDimension and MetricDimension.

Segments and event filters share these. Each compiles once into a closure, so a campaign
run or an event pays only the comparisons. Semantics follow the model's text
(botocore `pinpoint` 2016-12-01, AttributeDimension.AttributeType and siblings):

- Several `Values` are alternatives (OR), as Pinpoint's console describes its criteria.
- Comparisons are exact and case-sensitive, CONTAINS included (the console's example:
  "ew" matches "New York City").
- An attribute holds a list of values (endpoints) or one string (events); the criterion
  holds when any of the values meets it, except EXCLUSIVE, which holds when none is
  among `Values`. Homing's decision where Pinpoint is silent: a missing attribute or
  field meets EXCLUSIVE and fails every other operator, and a value that is not an
  ISO-8601 time fails BEFORE, AFTER, ON and BETWEEN.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from homing.wire import WireError, parse_timestamp

from .shapes import AttributeDimension, MetricDimension, SetDimension, date_value

# A test of one value read from an endpoint or an event: None when it is missing.
Test = Callable[[object], bool]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GREATER_THAN": operator.gt,
    "LESS_THAN": operator.lt,
    "GREATER_THAN_OR_EQUAL": operator.ge,
    "LESS_THAN_OR_EQUAL": operator.le,
    "EQUAL": operator.eq,
}


def set_test(dimension: SetDimension) -> Test:
    """A test of one field's value (a platform, a channel, an event type) against a set."""
    values = frozenset(dimension.Values)
    if dimension.DimensionType == "EXCLUSIVE":
        return lambda value: not (isinstance(value, str) and value in values)
    return lambda value: isinstance(value, str) and value in values


def attribute_test(dimension: AttributeDimension) -> Test:
    """A test of an attribute: a list of strings (an endpoint's), one string (an event's),
    or None when the attribute is missing."""
    test = _attribute_test(dimension)

    def values_test(values: object) -> bool:
        if type(values) is list:
            # Stored attributes are lists of strings (check_endpoint); should one hold
            # anything else, that is left out rather than compared.
            try:
                return test(values)
            except TypeError:
                return test([v for v in values if type(v) is str])
        if type(values) is str:
            return test((values,))
        return test(())

    return values_test


def event_attribute_test(dimension: AttributeDimension) -> Test:
    """A test of one event attribute: a string, or None when the event lacks it. Events are
    matched one by one as they arrive, so the common operators skip the list form."""
    kind = dimension.AttributeType or "INCLUSIVE"
    if kind == "INCLUSIVE":
        wanted = frozenset(dimension.Values)
        return lambda value: isinstance(value, str) and value in wanted
    if kind == "EXCLUSIVE":
        unwanted = frozenset(dimension.Values)
        return lambda value: not (isinstance(value, str) and value in unwanted)
    if kind == "CONTAINS" and len(dimension.Values) == 1:
        part = dimension.Values[0]
        return lambda value: isinstance(value, str) and part in value
    return attribute_test(dimension)


def _attribute_test(dimension: AttributeDimension) -> Callable[[Sequence[str]], bool]:
    kind = dimension.AttributeType or "INCLUSIVE"
    if kind in ("INCLUSIVE", "EXCLUSIVE"):
        wanted = frozenset(dimension.Values)
        if kind == "EXCLUSIVE":
            return lambda values: not values or wanted.isdisjoint(values)
        return lambda values: bool(values) and not wanted.isdisjoint(values)
    if kind == "CONTAINS":
        parts = tuple(dimension.Values)
        return lambda values: bool(values) and any(p in v for v in values for p in parts)
    bounds = [date_value(value) for value in dimension.Values]
    earliest, latest = min(bounds), max(bounds)
    # "Time is ignored" for ON: the same calendar day, in UTC.
    days = frozenset(b.astimezone(timezone.utc).date() for b in bounds)

    def meets(moment: datetime) -> bool:
        if kind == "BEFORE":
            return moment < latest
        if kind == "AFTER":
            return moment > earliest
        if kind == "ON":
            return moment.astimezone(timezone.utc).date() in days
        # BETWEEN, both ends included; the shape checked there are two, in order.
        return earliest <= moment <= latest

    return lambda values: any(_meets(meets, v) for v in values)


def metric_test(dimension: MetricDimension) -> Test:
    """A test of a metric's value."""
    compare = _COMPARE[dimension.ComparisonOperator]
    bound = dimension.Value

    def test(value: object) -> bool:
        # type() and not isinstance(): a bool is not a metric.
        if type(value) is float or type(value) is int:
            return compare(value, bound)
        return False

    return test


def _meets(test: Callable[[datetime], bool], value: str) -> bool:
    try:
        moment = parse_timestamp(value)
    except WireError:
        return False
    return test(moment)
