"""Segment membership against a brute-force evaluator written plainly here, over generated
endpoints and segments covering every dimension type, operator and group combinator."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homing_collector.campaigns.segments import compile_segment, distance_km, member_of
from homing_collector.campaigns.shapes import WriteSegmentRequest

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)

PLATFORMS = ["ios", "android", "linux"]
CHANNELS = ["GCM", "APNS", "SMS"]
COUNTRIES = ["FR", "US", "DE"]
MAKES = ["apple", "google", "lg"]
VERSIONS = ["1.0", "1.1", "2.0"]
WORDS = ["New York", "ew", "York", "pro", "free"]
DATES = ["2026-01-01", "2026-01-01T12:00:00Z", "2026-03-15T08:30:00Z", "2026-06-30T23:59:59Z"]
ATTRIBUTE_VALUES = WORDS + DATES + ["not a date"]
NAMES = ["a", "b"]
NUMBERS = [0.0, 1.0, 2.5, 3.0]
# Cities whose pairwise distances are far from every range below, so that two distance
# formulas cannot disagree at a boundary.
CITIES = [
    (48.8566, 2.3522),  # Paris
    (48.9, 2.4),  # next to Paris, ~6 km
    (51.5074, -0.1278),  # London, ~344 km from Paris
    (52.52, 13.405),  # Berlin
    (40.7128, -74.006),  # New York
    (-33.8688, 151.2093),  # Sydney
]
RANGES = [1.0, 10.0, 400.0, 1000.0, 6000.0, 20000.0]


# ---- the brute-force evaluator: Pinpoint's rules, one by one, over the raw JSON ----


def bf_date(text: str) -> datetime | None:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return None


def bf_set(dim: dict[str, Any], value: Any) -> bool:
    found = value in dim["Values"]
    if dim.get("DimensionType") == "EXCLUSIVE":
        return not found
    return found


def bf_attribute(dim: dict[str, Any], values: list[str] | None) -> bool:
    op = dim.get("AttributeType", "INCLUSIVE")
    values = values or []
    if op == "INCLUSIVE":
        return any(v in dim["Values"] for v in values)
    if op == "EXCLUSIVE":
        return all(v not in dim["Values"] for v in values)
    if op == "CONTAINS":
        return any(c in v for v in values for c in dim["Values"])
    times = [bf_date(v) for v in values]
    bounds = [bf_date(c) for c in dim["Values"]]
    for t in times:
        if t is None:
            continue
        for b in bounds:
            assert b is not None
            if op == "BEFORE" and t < b:
                return True
            if op == "AFTER" and t > b:
                return True
            if op == "ON" and t.date() == b.date():
                return True
        if op == "BETWEEN" and bounds[0] <= t <= bounds[1]:  # type: ignore[operator]
            return True
    return False


def bf_metric(dim: dict[str, Any], value: float | None) -> bool:
    if value is None:
        return False
    op, bound = dim["ComparisonOperator"], dim["Value"]
    if op == "GREATER_THAN":
        return value > bound
    if op == "LESS_THAN":
        return value < bound
    if op == "GREATER_THAN_OR_EQUAL":
        return value >= bound
    if op == "LESS_THAN_OR_EQUAL":
        return value <= bound
    return value == bound


def bf_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    # The spherical law of cosines: a different formula from the haversine under test.
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dl = math.radians(b[1] - a[1])
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return 6371.0088 * math.acos(max(-1.0, min(1.0, c)))


def bf_dimensions(dims: dict[str, Any], e: dict[str, Any]) -> bool:
    demographic = e.get("Demographic", {})
    location = e.get("Location", {})
    for name, dim in dims.get("Demographic", {}).items():
        value = e.get("ChannelType") if name == "Channel" else demographic.get(name)
        if not bf_set(dim, value):
            return False
    country = dims.get("Location", {}).get("Country")
    if country is not None and not bf_set(country, location.get("Country")):
        return False
    if "GPSPoint" in dims.get("Location", {}):
        gps = dims["Location"]["GPSPoint"]
        if "Latitude" not in location:
            return False
        here = (location["Latitude"], location["Longitude"])
        there = (gps["Coordinates"]["Latitude"], gps["Coordinates"]["Longitude"])
        if bf_km(here, there) > gps.get("RangeInKilometers", 100.0):
            return False
    if "Behavior" in dims:
        recency = dims["Behavior"]["Recency"]
        hours = {"HR_24": 24, "DAY_7": 7 * 24, "DAY_14": 14 * 24, "DAY_30": 30 * 24}
        seen = bf_date(e["EffectiveDate"]) if "EffectiveDate" in e else None
        active = seen is not None and NOW - seen <= timedelta(hours=hours[recency["Duration"]])
        if active != (recency["RecencyType"] == "ACTIVE"):
            return False
    for name, dim in dims.get("Attributes", {}).items():
        if not bf_attribute(dim, e.get("Attributes", {}).get(name)):
            return False
    for name, dim in dims.get("UserAttributes", {}).items():
        if not bf_attribute(dim, e.get("User", {}).get("UserAttributes", {}).get(name)):
            return False
    for name, dim in dims.get("Metrics", {}).items():
        if not bf_metric(dim, e.get("Metrics", {}).get(name)):
            return False
    return True


def bf_combine(how: str, results: list[bool]) -> bool:
    if how == "ALL":
        return all(results)
    if how == "ANY":
        return any(results)
    return not any(results)


def bf_segment(segment: dict[str, Any], e: dict[str, Any], sources: dict[str, set[str]]) -> bool:
    if "Dimensions" in segment and not bf_dimensions(segment["Dimensions"], e):
        return False
    groups = segment.get("SegmentGroups", {}).get("Groups", [])
    if not groups:
        return True
    results = []
    for group in groups:
        ok = True
        refs = group.get("SourceSegments", [])
        if refs:
            ok = bf_combine(
                group.get("SourceType", "ANY"), [e["Id"] in sources[r["Id"]] for r in refs]
            )
        dims = group.get("Dimensions", [])
        if dims:
            ok = ok and bf_combine(group.get("Type", "ALL"), [bf_dimensions(d, e) for d in dims])
        results.append(ok)
    return bf_combine(segment["SegmentGroups"].get("Include", "ALL"), results)


# ---- generators ----


def set_dimension(pool: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"Values": st.lists(st.sampled_from(pool), min_size=1, max_size=3)},
        optional={"DimensionType": st.sampled_from(["INCLUSIVE", "EXCLUSIVE"])},
    )


def attribute_dimension() -> st.SearchStrategy[dict[str, Any]]:
    words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)
    dates = st.lists(st.sampled_from(DATES), min_size=1, max_size=2)
    return st.one_of(
        st.fixed_dictionaries(
            {"Values": words},
            optional={"AttributeType": st.sampled_from(["INCLUSIVE", "EXCLUSIVE", "CONTAINS"])},
        ),
        st.fixed_dictionaries(
            {"AttributeType": st.sampled_from(["BEFORE", "AFTER", "ON"]), "Values": dates}
        ),
        st.lists(st.sampled_from(DATES), min_size=2, max_size=2).map(
            lambda pair: {"AttributeType": "BETWEEN", "Values": sorted(pair, key=bf_date)}  # type: ignore[arg-type,return-value]
        ),
    )


def metric_dimension() -> st.SearchStrategy[dict[str, Any]]:
    operators = [
        "GREATER_THAN",
        "LESS_THAN",
        "GREATER_THAN_OR_EQUAL",
        "LESS_THAN_OR_EQUAL",
        "EQUAL",
    ]
    return st.fixed_dictionaries(
        {"ComparisonOperator": st.sampled_from(operators), "Value": st.sampled_from(NUMBERS)}
    )


def dimensions(min_size: int = 0, max_size: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """A SegmentDimensions of up to three criteria: more would AND to nobody."""
    demographic = [
        ("AppVersion", VERSIONS),
        ("Channel", CHANNELS),
        ("DeviceType", ["phone", "tablet"]),
        ("Make", MAKES),
        ("Model", ["m1", "m2"]),
        ("Platform", PLATFORMS),
    ]
    gps = st.fixed_dictionaries(
        {
            "Coordinates": st.sampled_from(CITIES).map(
                lambda c: {"Latitude": c[0], "Longitude": c[1]}
            )
        },
        optional={"RangeInKilometers": st.sampled_from(RANGES)},
    )
    recency = st.fixed_dictionaries(
        {
            "Duration": st.sampled_from(["HR_24", "DAY_7", "DAY_14", "DAY_30"]),
            "RecencyType": st.sampled_from(["ACTIVE", "INACTIVE"]),
        }
    )
    name = st.sampled_from(NAMES)
    criterion = st.one_of(
        st.one_of(
            *[
                st.tuples(st.just("Demographic"), st.just(n), set_dimension(p))
                for n, p in demographic
            ]
        ),
        st.tuples(st.just("Location"), st.just("Country"), set_dimension(COUNTRIES)),
        st.tuples(st.just("Location"), st.just("GPSPoint"), gps),
        st.tuples(st.just("Behavior"), st.just("Recency"), recency),
        st.tuples(st.just("Attributes"), name, attribute_dimension()),
        st.tuples(st.just("UserAttributes"), name, attribute_dimension()),
        st.tuples(st.just("Metrics"), name, metric_dimension()),
    )

    def build(criteria: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, key, dim in criteria:
            out.setdefault(kind, {})[key] = dim
        return out

    return st.lists(criterion, min_size=min_size, max_size=max_size).map(build)


def endpoints() -> st.SearchStrategy[dict[str, Any]]:
    attributes = st.dictionaries(
        st.sampled_from(NAMES),
        st.lists(st.sampled_from(ATTRIBUTE_VALUES), min_size=1, max_size=3),
        min_size=1,
    )
    # Hours ago, away from the 24 h, 7, 14 and 30 day edges by at least one hour.
    ages = st.sampled_from(
        [0, 1, 23, 25, 24 * 7 - 1, 24 * 7 + 1, 24 * 14 - 1, 24 * 15, 24 * 29, 24 * 31, -3]
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "ChannelType": st.sampled_from(CHANNELS),
            "Demographic": st.fixed_dictionaries(
                {},
                optional={
                    "AppVersion": st.sampled_from(VERSIONS),
                    "DeviceType": st.sampled_from(["phone", "tablet"]),
                    "Make": st.sampled_from(MAKES),
                    "Model": st.sampled_from(["m1", "m2"]),
                    "Platform": st.sampled_from(PLATFORMS),
                },
            ),
            "Location": st.fixed_dictionaries(
                {},
                optional={
                    "Country": st.sampled_from(COUNTRIES),
                    "Latitude": st.just(0.0),  # replaced with a city below
                },
            ),
            "Attributes": attributes,
            "User": st.fixed_dictionaries({"UserAttributes": attributes}),
            "Metrics": st.dictionaries(
                st.sampled_from(NAMES), st.sampled_from(NUMBERS), min_size=1
            ),
            "EffectiveDate": ages.map(
                lambda h: (NOW - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
        },
    )


def groups() -> st.SearchStrategy[dict[str, Any]]:
    combine = st.sampled_from(["ALL", "ANY", "NONE"])
    group = st.fixed_dictionaries(
        {},
        optional={
            "Dimensions": st.lists(dimensions(), max_size=3),
            "SourceSegments": st.lists(
                st.sampled_from(["s1", "s2", "s3"]).map(lambda i: {"Id": i, "Version": 1}),
                max_size=3,
            ),
            "SourceType": combine,
            "Type": combine,
        },
    )
    return st.fixed_dictionaries(
        {}, optional={"Groups": st.lists(group, max_size=3), "Include": combine}
    )


def draw_population(data: st.DataObject) -> list[dict[str, Any]]:
    population = data.draw(st.lists(endpoints(), min_size=1, max_size=25))
    for i, e in enumerate(population):
        e["Id"] = f"e{i}"
        if "Latitude" in e.get("Location", {}):
            city = data.draw(st.sampled_from(CITIES))
            e["Location"]["Latitude"], e["Location"]["Longitude"] = city
    return population


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_one_criterion_matches_brute_force(data: st.DataObject) -> None:
    population = draw_population(data)
    segment = {"Dimensions": data.draw(dimensions(min_size=1, max_size=1))}
    shape = msgspec.convert(segment, WriteSegmentRequest)
    predicate = compile_segment(shape.Dimensions, now=NOW)
    for e in population:
        assert predicate(e) == bf_segment(segment, e, {}), (segment, e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_membership_matches_brute_force(data: st.DataObject) -> None:
    population = draw_population(data)
    ids = [e["Id"] for e in population]
    sources = {name: data.draw(st.sets(st.sampled_from(ids))) for name in ("s1", "s2", "s3")}
    segment = data.draw(
        st.fixed_dictionaries({}, optional={"Dimensions": dimensions(), "SegmentGroups": groups()})
    )
    shape = msgspec.convert(segment, WriteSegmentRequest)
    asked: list[tuple[str, int | None]] = []

    def lookup(segment_id: str, version: int | None) -> Any:
        asked.append((segment_id, version))
        return member_of(sources[segment_id])

    predicate = compile_segment(shape.Dimensions, shape.SegmentGroups, now=NOW, sources=lookup)
    for e in population:
        assert predicate(e) == bf_segment(segment, e, sources), (segment, e)
    for segment_id, version in asked:
        assert segment_id in sources and version == 1


# ---- the documented rules, one example each ----


def member(dimensions: dict[str, Any], endpoint: dict[str, Any]) -> bool:
    shape = msgspec.convert({"Dimensions": dimensions}, WriteSegmentRequest)
    return compile_segment(shape.Dimensions, now=NOW)(endpoint)


def test_channel_reads_channel_type() -> None:
    dims = {"Demographic": {"Channel": {"Values": ["APNS"]}}}
    assert member(dims, {"ChannelType": "APNS"})
    assert not member(dims, {"ChannelType": "GCM", "Demographic": {"Channel": "APNS"}})


def test_exclusive_keeps_endpoints_without_the_field() -> None:
    dims = {"Demographic": {"Platform": {"DimensionType": "EXCLUSIVE", "Values": ["ios"]}}}
    assert member(dims, {})
    assert not member(dims, {"Demographic": {"Platform": "ios"}})


@pytest.mark.parametrize(
    ("operator", "values", "attribute", "expected"),
    [
        ("CONTAINS", ["ew"], ["New York City"], True),
        ("CONTAINS", ["EW"], ["New York City"], False),
        ("BEFORE", ["2026-02-01T00:00:00Z"], ["2026-01-31T23:59:59Z"], True),
        ("BEFORE", ["2026-02-01T00:00:00Z"], ["2026-02-01T00:00:00Z"], False),
        ("AFTER", ["2026-02-01"], ["2026-02-01T00:00:01Z"], True),
        ("ON", ["2026-02-01T18:00:00Z"], ["2026-02-01T01:00:00Z"], True),
        ("ON", ["2026-02-01T18:00:00Z"], ["2026-02-01T01:00:00+02:00"], False),
        ("BETWEEN", ["2026-01-01", "2026-02-01"], ["2026-02-01T00:00:00Z"], True),
        ("BETWEEN", ["2026-01-01", "2026-02-01"], ["2026-02-01T00:00:01Z"], False),
        ("AFTER", ["2026-01-01"], ["tomorrow"], False),
        ("INCLUSIVE", ["gold", "silver"], ["bronze", "silver"], True),
        ("EXCLUSIVE", ["gold", "silver"], ["bronze", "silver"], False),
    ],
)
def test_attribute_operators(
    operator: str, values: list[str], attribute: list[str], expected: bool
) -> None:
    dims = {"UserAttributes": {"x": {"AttributeType": operator, "Values": values}}}
    assert member(dims, {"User": {"UserAttributes": {"x": attribute}}}) is expected


def test_recency_reads_effective_date_against_now() -> None:
    dims = {"Behavior": {"Recency": {"Duration": "HR_24", "RecencyType": "ACTIVE"}}}
    assert member(dims, {"EffectiveDate": "2026-12-05T12:00:00.000Z"})  # exactly 24 h
    assert not member(dims, {"EffectiveDate": "2026-12-05T11:59:59.999Z"})
    assert not member(dims, {})
    inactive = {"Behavior": {"Recency": {"Duration": "HR_24", "RecencyType": "INACTIVE"}}}
    assert member(inactive, {})


def test_gps_range_and_its_default() -> None:
    paris = {"Coordinates": {"Latitude": 48.8566, "Longitude": 2.3522}}
    london = {"Location": {"Latitude": 51.5074, "Longitude": -0.1278}}
    assert 340 < distance_km(48.8566, 2.3522, 51.5074, -0.1278) < 345
    assert member({"Location": {"GPSPoint": {**paris, "RangeInKilometers": 350}}}, london)
    assert not member({"Location": {"GPSPoint": {**paris, "RangeInKilometers": 340}}}, london)
    assert not member({"Location": {"GPSPoint": paris}}, london)  # 100 km
    assert not member({"Location": {"GPSPoint": paris}}, {})


def test_source_segments_need_a_lookup() -> None:
    shape = msgspec.convert(
        {"SegmentGroups": {"Groups": [{"SourceSegments": [{"Id": "s1"}]}]}}, WriteSegmentRequest
    )
    with pytest.raises(ValueError, match="no lookup"):
        compile_segment(shape.Dimensions, shape.SegmentGroups, now=NOW)


def test_values_of_the_wrong_type_are_left_out_not_compared() -> None:
    odd = {"Attributes": {"x": [1, ["pro"], "pro"]}, "Metrics": {"m": True, "n": "3"}}
    assert member({"Attributes": {"x": {"Values": ["pro"]}}}, odd)
    assert member({"Attributes": {"x": {"AttributeType": "CONTAINS", "Values": ["pr"]}}}, odd)
    assert not member(
        {"Attributes": {"x": {"AttributeType": "AFTER", "Values": ["2026-01-01"]}}}, odd
    )
    assert not member({"Metrics": {"m": {"ComparisonOperator": "EQUAL", "Value": 1}}}, odd)
    assert not member({"Metrics": {"n": {"ComparisonOperator": "EQUAL", "Value": 3}}}, odd)
    assert member(
        {"Demographic": {"Platform": {"DimensionType": "EXCLUSIVE", "Values": ["x"]}}},
        {"Demographic": "ios"},
    )
