"""Event filters: each dimension, the sender kinds, the time window, and the index against
a plain scan of every filter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from homing_collector.campaigns.campaign_shapes import Schedule
from homing_collector.campaigns.criteria import attribute_test, event_attribute_test
from homing_collector.campaigns.event_filter import (
    CompiledFilter,
    FilterIndex,
    compile_campaign_filter,
    compile_filter,
)
from homing_collector.campaigns.shapes import AttributeDimension, CampaignEventFilter

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def compiled(campaign_id: str, raw: dict[str, Any], **window: Any) -> CompiledFilter:
    return compile_filter(campaign_id, msgspec.convert(raw, CampaignEventFilter), **window)


def endpoint_filter(dimensions: dict[str, Any]) -> dict[str, Any]:
    return {"FilterType": "ENDPOINT", "Dimensions": dimensions}


PURCHASE = {
    "EventType": "Purchase",
    "Timestamp": "2026-12-06T12:00:00.000Z",
    "Attributes": {"plan": "pro-yearly", "store": "web"},
    "Metrics": {"amount": 49.0},
}


def test_type_attributes_and_metrics_must_all_hold() -> None:
    f = compiled(
        "c",
        endpoint_filter(
            {
                "EventType": {"Values": ["Purchase", "Refund"]},
                "Attributes": {"plan": {"AttributeType": "CONTAINS", "Values": ["pro"]}},
                "Metrics": {"amount": {"ComparisonOperator": "GREATER_THAN_OR_EQUAL", "Value": 49}},
            }
        ),
    )
    assert f.matches(PURCHASE)
    assert not f.matches({**PURCHASE, "EventType": "View"})
    assert not f.matches({**PURCHASE, "Attributes": {"plan": "free"}})
    assert not f.matches({**PURCHASE, "Metrics": {"amount": 48.99}})
    assert not f.matches({"EventType": "Purchase"})  # neither the attribute nor the metric


def test_exclusive_event_type_and_no_event_type() -> None:
    not_sessions = compiled(
        "x",
        endpoint_filter(
            {"EventType": {"DimensionType": "EXCLUSIVE", "Values": ["_session.start"]}}
        ),
    )
    anything = compiled("a", endpoint_filter({}))
    index = FilterIndex([not_sessions, anything])
    assert sorted(index.match(PURCHASE)) == ["a", "x"]
    assert index.match({"EventType": "_session.start"}) == ["a"]


def test_an_apps_events_meet_only_endpoint_filters() -> None:
    server = compiled(
        "s", {"FilterType": "SYSTEM", "Dimensions": {"EventType": {"Values": ["Purchase"]}}}
    )
    app = compiled("e", endpoint_filter({"EventType": {"Values": ["Purchase"]}}))
    index = FilterIndex([server, app])
    assert index.match(PURCHASE) == ["e"]
    assert sorted(index.match(PURCHASE, from_admin=True)) == ["e", "s"]


def test_time_window_includes_both_ends() -> None:
    f = compiled(
        "w",
        endpoint_filter({"EventType": {"Values": ["Purchase"]}}),
        start=T0,
        end=T0 + timedelta(hours=1),
    )
    index = FilterIndex([f])
    assert index.match(PURCHASE, at=T0) == ["w"]
    assert index.match(PURCHASE, at=T0 + timedelta(hours=1)) == ["w"]
    assert index.match(PURCHASE, at=T0 - timedelta(milliseconds=1)) == []
    assert index.match(PURCHASE, at=T0 + timedelta(hours=1, milliseconds=1)) == []


def test_a_campaigns_window_is_its_schedule() -> None:
    schedule = msgspec.convert(
        {
            "StartTime": "IMMEDIATE",
            "EndTime": "2026-12-07T00:00:00Z",
            "Frequency": "EVENT",
            "EventFilter": endpoint_filter({"EventType": {"Values": ["Purchase"]}}),
        },
        Schedule,
    )
    f = compile_campaign_filter("c", schedule, created=T0)
    assert f is not None and (f.start, f.end) == (T0, datetime(2026, 12, 7, tzinfo=timezone.utc))
    daily = msgspec.convert({"StartTime": "IMMEDIATE", "Frequency": "DAILY"}, Schedule)
    assert compile_campaign_filter("d", daily, created=T0) is None


def test_candidates_are_only_the_filters_of_that_type() -> None:
    filters = [
        compiled(f"c{i}", endpoint_filter({"EventType": {"Values": [f"type{i % 5}"]}}))
        for i in range(25)
    ]
    index = FilterIndex(filters)
    assert index.size == 25
    assert [f.campaign_id for f in index.candidates("type3")] == ["c3", "c8", "c13", "c18", "c23"]
    assert index.candidates("Purchase") == ()


TYPES = ["Purchase", "View", "_session.start"]
filter_raw = st.fixed_dictionaries(
    {
        "FilterType": st.sampled_from(["ENDPOINT", "SYSTEM"]),
        "Dimensions": st.fixed_dictionaries(
            {},
            optional={
                "EventType": st.fixed_dictionaries(
                    {"Values": st.lists(st.sampled_from(TYPES), min_size=1, max_size=2)},
                    optional={"DimensionType": st.sampled_from(["INCLUSIVE", "EXCLUSIVE"])},
                ),
                "Attributes": st.dictionaries(
                    st.sampled_from(["plan", "store"]),
                    st.fixed_dictionaries(
                        {"Values": st.lists(st.sampled_from(["pro", "web", "free"]), min_size=1)},
                        optional={
                            "AttributeType": st.sampled_from(["INCLUSIVE", "EXCLUSIVE", "CONTAINS"])
                        },
                    ),
                    max_size=1,
                ),
                "Metrics": st.dictionaries(
                    st.just("amount"),
                    st.fixed_dictionaries(
                        {
                            "ComparisonOperator": st.sampled_from(
                                ["GREATER_THAN", "LESS_THAN", "EQUAL"]
                            ),
                            "Value": st.sampled_from([1.0, 49.0]),
                        }
                    ),
                    max_size=1,
                ),
            },
        ),
    }
)
event_raw = st.fixed_dictionaries(
    {"EventType": st.sampled_from(TYPES)},
    optional={
        "Attributes": st.dictionaries(
            st.sampled_from(["plan", "store"]), st.sampled_from(["pro-yearly", "web", "free"])
        ),
        "Metrics": st.dictionaries(st.just("amount"), st.sampled_from([1.0, 49.0, 100.0])),
    },
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(filter_raw, max_size=8), st.lists(event_raw, min_size=1, max_size=10), st.booleans()
)
def test_the_index_finds_what_a_scan_of_every_filter_finds(
    raws: list[dict[str, Any]], events: list[dict[str, Any]], from_admin: bool
) -> None:
    filters = [compiled(f"c{i}", raw) for i, raw in enumerate(raws)]
    index = FilterIndex(filters)
    for event in events:
        scanned = [
            f.campaign_id
            for f in filters
            if (from_admin or f.filter_type == "ENDPOINT") and f.matches(event)
        ]
        assert sorted(index.match(event, from_admin=from_admin)) == sorted(scanned)
        # An event whose candidates test its type alone is matched unparsed, the same.
        if index.plain(event["EventType"], from_admin=from_admin):
            at = T0 + timedelta(minutes=1)
            unparsed = index.match_plain(event["EventType"], at, from_admin=from_admin)
            assert unparsed == index.match(event, from_admin=from_admin, at=at)
        # The pre-filter of a batch lets go only events that no filter can match.
        types = index.event_types(from_admin=from_admin)
        if types is not None and event["EventType"] not in types:
            assert scanned == []


def test_only_a_type_whose_filters_test_nothing_else_is_matched_unparsed() -> None:
    purchase = compiled("p", endpoint_filter({"EventType": {"Values": ["Purchase"]}}))
    view = compiled(
        "v",
        endpoint_filter({"EventType": {"Values": ["View"]},
                         "Attributes": {"plan": {"Values": ["pro"]}}}),
    )  # fmt: skip
    index = FilterIndex([purchase, view])
    assert index.plain("Purchase") and not index.plain("View")
    assert index.match_plain("Purchase", T0) == ["p"]
    # A filter of any type that tests more makes no type plain.
    exclusive = compiled(
        "x", endpoint_filter({"EventType": {"DimensionType": "EXCLUSIVE", "Values": ["View"]}})
    )
    assert not FilterIndex([purchase, exclusive]).plain("Purchase")
    assert FilterIndex([purchase, compiled("a", endpoint_filter({}))]).plain("Purchase")
    later = compiled("l", endpoint_filter({"EventType": {"Values": ["Purchase"]}}),
                     start=T0 + timedelta(hours=1))  # fmt: skip
    assert FilterIndex([purchase, later]).match_plain("Purchase", T0) == ["p"]


def test_a_batch_is_pre_filtered_by_the_types_the_filters_name() -> None:
    server = compiled(
        "s", {"FilterType": "SYSTEM", "Dimensions": {"EventType": {"Values": ["Refund"]}}}
    )
    app = compiled("e", endpoint_filter({"EventType": {"Values": ["Purchase", "View"]}}))
    assert FilterIndex([server, app]).event_types() == {"Purchase", "View"}
    assert FilterIndex([server, app]).event_types(from_admin=True) == {"Purchase", "View", "Refund"}
    exclusive = compiled(
        "x", endpoint_filter({"EventType": {"DimensionType": "EXCLUSIVE", "Values": ["View"]}})
    )
    assert FilterIndex([app, exclusive]).event_types() is None  # any type but View
    assert FilterIndex([server, compiled("a", endpoint_filter({}))]).event_types() is None
    assert FilterIndex([server]).event_types() == frozenset()


WORDS = ["pro", "pro-yearly", "web", "", "2026-01-01", "2026-01-01T10:00:00Z", "2026-02-01"]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        ["INCLUSIVE", "EXCLUSIVE", "CONTAINS", "BEFORE", "AFTER", "ON", "BETWEEN", None]
    ),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
    st.one_of(st.none(), st.sampled_from(WORDS), st.integers()),
)
def test_the_event_fast_path_agrees_with_the_list_form(
    operator: str | None, values: list[str], value: object
) -> None:
    dates = sorted({v for v in values if v.startswith("2026")})
    if operator in ("BEFORE", "AFTER", "ON"):
        values = dates or ["2026-01-01"]
    if operator == "BETWEEN":
        values = [dates[0], dates[-1]] if dates else ["2026-01-01", "2026-02-01"]
    raw: dict[str, Any] = {"Values": values}
    if operator is not None:
        raw["AttributeType"] = operator
    dimension = msgspec.convert(raw, AttributeDimension)
    assert event_attribute_test(dimension)(value) == attribute_test(dimension)(value)
