from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import homing
from homing import limits
from homing._events import SDK_NAME, EventBuilder
from homing.wire import check_event


def build(builder: EventBuilder | None = None, **kwargs: Any) -> dict[str, Any]:
    builder = builder or EventBuilder()
    _, event = builder.build(
        kwargs.pop("event_type", "Item Bought"),
        kwargs.pop("attributes", None),
        kwargs.pop("metrics", None),
        1_790_000_000.5,
    )
    return event


def test_an_event_carries_the_app_and_sdk_fields() -> None:
    builder = EventBuilder(app_package_name="com.example", app_title="Ex", app_version_code="7")
    event_id, event = builder.build("Item Bought", {"item": "XYZ"}, {"price": 1.99}, 1.5)
    assert len(event_id) == 36
    assert event == {
        "EventType": "Item Bought",
        "Timestamp": "1970-01-01T00:00:01.500Z",
        "Attributes": {"item": "XYZ"},
        "Metrics": {"price": 1.99},
        "AppPackageName": "com.example",
        "AppTitle": "Ex",
        "AppVersionCode": "7",
        "SdkName": SDK_NAME,
        "ClientSdkVersion": homing.__version__,
    }


def test_event_ids_are_unique() -> None:
    builder = EventBuilder()
    ids = {builder.build("e", None, None, 0.0)[0] for _ in range(1000)}
    assert len(ids) == 1000


def test_event_ids_are_version_7_uuids_that_grow_with_the_events_time() -> None:
    # The collector's dedup index keeps each endpoint's event ids together: ids that
    # grow with time are added at the end of the endpoint's run, not all over it.
    builder = EventBuilder()
    moments = [1_790_000_000.0 + step * 0.001 for step in range(2000)]
    ids = [builder.build("e", None, None, moment)[0] for moment in moments]
    for event_id, moment in zip(ids, moments, strict=True):
        parsed = uuid.UUID(event_id)
        assert str(parsed) == event_id
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert parsed.int >> 80 == int(moment * 1000)  # Unix time in milliseconds
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_global_values_are_merged_and_the_event_wins() -> None:
    builder = EventBuilder()
    builder.global_attributes = {"plan": "pro", "colour": "red"}
    builder.global_metrics = {"build": 42}
    event = build(builder, attributes={"colour": "blue"}, metrics={"build": 43, "x": 1.0})
    assert event["Attributes"] == {"plan": "pro", "colour": "blue"}
    assert event["Metrics"] == {"build": 43, "x": 1.0}


def test_the_callers_mapping_is_not_modified() -> None:
    builder = EventBuilder()
    builder.global_attributes = {"plan": "pro"}
    mine = {"item": "a"}
    build(builder, attributes=mine)
    assert mine == {"item": "a"}


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"event_type": ""}, "EventType", "non-empty"),
        ({"event_type": 3}, "EventType", "must be a string"),
        ({"event_type": "x" * 51}, "EventType", "the limit is 50"),
        ({"attributes": {"k": 1}}, "Attributes.k", "must be a string, not a number"),
        ({"attributes": {1: "v"}}, "Attributes", "keys must be strings"),
        ({"attributes": {"k": "v" * 201}}, "Attributes.k", "the limit is 200"),
        ({"attributes": {"k" * 51: "v"}}, "Attributes", "the limit is 50"),
        ({"attributes": ["k"]}, "Attributes", "must be a mapping"),
        ({"metrics": {"m": True}}, "Metrics.m", "not bool"),
        ({"metrics": {"m": "1"}}, "Metrics.m", "not str"),
        ({"metrics": {"m": float("nan")}}, "Metrics.m", "finite"),
        ({"metrics": {2: 1.0}}, "Metrics", "keys must be strings"),
        (
            {
                "attributes": {f"a{i}": "v" for i in range(30)},
                "metrics": {f"m{i}": 1 for i in range(11)},
            },
            "Attributes",
            "the limit is 40",
        ),
    ],
)
def test_invalid_events_raise_naming_the_field_and_the_limit(
    kwargs: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(homing.InvalidEventError) as caught:
        build(**kwargs)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert str(caught.value).startswith(field)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, homing.HomingError)


def test_globals_count_towards_the_key_limit() -> None:
    builder = EventBuilder()
    builder.global_attributes = {f"g{i}": "v" for i in range(40)}
    with pytest.raises(homing.InvalidEventError, match="the limit is 40"):
        build(builder, attributes={"one": "more"})


def test_an_invalid_app_field_is_refused_up_front() -> None:
    with pytest.raises(homing.InvalidEventError, match="AppTitle"):
        EventBuilder(app_title="t" * 2000)


keys = st.text(min_size=1, max_size=limits.MAX_EVENT_KEY_LENGTH)


@given(
    event_type=st.text(min_size=1, max_size=limits.MAX_EVENT_TYPE_LENGTH),
    attributes=st.dictionaries(keys, st.text(max_size=200), max_size=20),
    metrics=st.dictionaries(
        keys,
        st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
        max_size=20,
    ),
)
def test_whatever_the_builder_accepts_the_collector_accepts(
    event_type: str, attributes: dict[str, str], metrics: dict[str, float]
) -> None:
    try:
        _, event = EventBuilder().build(event_type, attributes, metrics, 1_790_000_000.0)
    except homing.InvalidEventError:
        return
    check_event(event)


def test_event_ids_leave_the_apps_random_sequence_alone() -> None:
    # An app that seeds `random` for its own use gets the same numbers with or without the
    # SDK, and the SDK's event ids do not repeat from one such run to the next.
    import random

    builder = EventBuilder()
    random.seed(16)
    expected = [random.random() for _ in range(3)]
    random.seed(16)
    first = [builder.build("a", None, None, 1.5)[0] for _ in range(3)]
    got = [random.random() for _ in range(3)]
    random.seed(16)
    second = [builder.build("a", None, None, 1.5)[0] for _ in range(3)]
    assert got == expected
    assert not set(first) & set(second)
