"""A stored segment's endpoints, resolved through SQLiteStorage on a real file, against
the brute-force evaluator of test_segments over the same generated endpoints."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homing_collector.campaigns.resolve import (
    SegmentResolutionError,
    segment_endpoints,
    segment_predicate,
)
from homing_collector.campaigns.shapes import WriteSegmentRequest
from homing_collector.storage.base import (
    AppRecord,
    Endpoint,
    EndpointUpdate,
    SegmentRecord,
    SegmentReference,
    SegmentReferenceError,
)
from homing_collector.storage.sqlite import SQLiteStorage
from tests.collector.campaigns.test_segments import (
    NOW,
    bf_segment,
    dimensions,
    draw_population,
)

T = TypeVar("T")
APP = "resolve-app"
SOURCES = ("s1", "s2", "s3")


def keep(endpoint_id: str, stored: Endpoint | None, update: Endpoint) -> Endpoint:
    # The generated endpoint as it is, EffectiveDate included (the collector's merge
    # would stamp the time of writing).
    return update


def run(scenario: Callable[[SQLiteStorage], Awaitable[T]]) -> T:
    async def main() -> T:
        with tempfile.TemporaryDirectory() as folder:
            storage = SQLiteStorage(Path(folder) / "homing.db")
            await storage.start()
            try:
                await storage.create_app(AppRecord(APP, "resolve", "2026-12-06T00:00:00Z"))
                return await scenario(storage)
            finally:
                await storage.close()

    return asyncio.run(main())


async def store_endpoints(storage: SQLiteStorage, population: list[dict[str, Any]]) -> None:
    updates = [
        EndpointUpdate(e["Id"], {k: v for k, v in e.items() if k != "Id"}) for e in population
    ]
    await storage.update_endpoints(APP, updates, merge=keep, max_user_endpoints=15)


def refs_of(request: dict[str, Any]) -> list[SegmentReference]:
    groups = request.get("SegmentGroups", {}).get("Groups", [])
    return [
        SegmentReference(f"g{g}s{s}", ref["Id"], ref.get("Version"))
        for g, group in enumerate(groups)
        for s, ref in enumerate(group.get("SourceSegments", []))
    ]


async def create(storage: SQLiteStorage, request: dict[str, Any]) -> str:
    segment_id = uuid.uuid4().hex
    record = SegmentRecord(
        APP, segment_id, 1, "2026-12-06T00:00:00Z", "2026-12-06T00:00:00Z",
        msgspec.json.encode(request).decode(),
    )  # fmt: skip
    await storage.create_segment(record, refs_of(request))
    return segment_id


async def update(storage: SQLiteStorage, segment_id: str, request: dict[str, Any]) -> None:
    stored = await storage.update_segment(
        APP, segment_id, msgspec.json.encode(request).decode(), "2026-12-06T01:00:00Z",
        refs_of(request),
    )  # fmt: skip
    assert stored is not None


async def members(storage: SQLiteStorage, segment_id: str, chunk: int = 37) -> list[str]:
    found = segment_endpoints(storage, APP, segment_id, now=NOW, chunk=chunk)
    return [endpoint["Id"] async for endpoint in found]


def based_on(segment_id: str, version: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"Id": segment_id}
    if version is not None:
        ref["Version"] = version
    return {"SegmentGroups": {"Groups": [{"SourceSegments": [ref]}]}}


def groups_over_sources() -> st.SearchStrategy[dict[str, Any]]:
    """Groups that each name at least one source: what this test is about."""
    combine = st.sampled_from(["ALL", "ANY", "NONE"])
    reference = st.tuples(st.sampled_from(SOURCES), st.sampled_from([1, None]))
    group = st.fixed_dictionaries(
        {"SourceSegments": st.lists(reference, min_size=1, max_size=3)},
        optional={
            "Dimensions": st.lists(dimensions(), max_size=2),
            "SourceType": combine,
            "Type": combine,
        },
    )
    return st.fixed_dictionaries(
        {"Groups": st.lists(group, min_size=1, max_size=3)}, optional={"Include": combine}
    )


def with_refs(segment: dict[str, Any], name: Callable[[str, int | None], str]) -> dict[str, Any]:
    """`segment` with each drawn (source, version) pair as a reference named by `name`."""
    out = copy.deepcopy(segment)
    for group in out.get("SegmentGroups", {}).get("Groups", []):
        if "SourceSegments" in group:
            group["SourceSegments"] = [
                {"Id": name(source, version), **({"Version": version} if version else {})}
                for source, version in group["SourceSegments"]
            ]
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_stored_segments_resolve_as_brute_force_says(data: st.DataObject) -> None:
    population = draw_population(data)
    # A few hundred endpoints: the drawn ones, and copies of them under other ids, so
    # that the walk crosses several chunks.
    population += [{**e, "Id": f"{e['Id']}-copy{n}"} for n in range(12) for e in population]
    sources = {name: (data.draw(dimensions(1, 2)), data.draw(dimensions(1, 2))) for name in SOURCES}
    segment = data.draw(
        st.fixed_dictionaries(
            {"SegmentGroups": groups_over_sources()}, optional={"Dimensions": dimensions()}
        )
    )
    # Brute force: each source's version 1 holds the first dimensions, version 2 (its
    # latest) the second.
    members_of = {
        f"{name}@{version}": {
            e["Id"] for e in population if bf_segment({"Dimensions": dims[version - 1]}, e, {})
        }
        for name, dims in sources.items()
        for version in (1, 2)
    }
    expected = sorted(
        e["Id"]
        for e in population
        if bf_segment(with_refs(segment, lambda s, v: f"{s}@{v or 2}"), e, members_of)
    )

    async def scenario(storage: SQLiteStorage) -> list[str]:
        await store_endpoints(storage, population)
        ids = {}
        for name, (first, latest) in sources.items():
            ids[name] = await create(storage, {"Dimensions": first})
            await update(storage, ids[name], {"Dimensions": latest})
        request = with_refs(segment, lambda s, v: ids[s])
        msgspec.convert(request, WriteSegmentRequest)  # a request the collector takes
        return await members(storage, await create(storage, request))

    assert run(scenario) == expected


def test_sources_resolve_through_several_levels_and_pinned_versions() -> None:
    population = [
        {"Id": f"e{i}", "Demographic": {"Platform": ["ios", "android"][i % 2]},
         "Metrics": {"score": float(i)}}
        for i in range(300)
    ]  # fmt: skip

    async def scenario(storage: SQLiteStorage) -> tuple[list[str], list[str]]:
        await store_endpoints(storage, population)
        ios = await create(
            storage, {"Dimensions": {"Demographic": {"Platform": {"Values": ["ios"]}}}}
        )
        high = await create(
            storage,
            {"Dimensions": {"Metrics": {"score": {"ComparisonOperator": "GREATER_THAN",
                                                  "Value": 100}}}, **based_on(ios)},
        )  # fmt: skip
        top = await create(storage, based_on(high))
        before = await members(storage, top)
        # The source's latest version changes what `top` holds, as it names no version...
        await update(
            storage, ios, {"Dimensions": {"Demographic": {"Platform": {"Values": ["android"]}}}}
        )
        return before, await members(storage, top)  # fmt: skip

    before, after = run(scenario)
    assert before == sorted(f"e{i}" for i in range(101, 300) if i % 2 == 0)
    assert after == sorted(f"e{i}" for i in range(101, 300) if i % 2 == 1)


def test_a_pinned_version_keeps_its_definition() -> None:
    population = [{"Id": f"e{i}", "Metrics": {"n": float(i)}} for i in range(10)]

    async def scenario(storage: SQLiteStorage) -> list[str]:
        await store_endpoints(storage, population)
        low = {"Metrics": {"n": {"ComparisonOperator": "LESS_THAN", "Value": 3}}}
        source = await create(storage, {"Dimensions": low})
        await update(storage, source, {})  # version 2: everyone
        pinned = await create(
            storage, based_on(source, 1)
        )  # fmt: skip
        return await members(storage, pinned, chunk=4)

    assert run(scenario) == ["e0", "e1", "e2"]


def test_references_to_missing_segments_and_cycles_are_refused() -> None:
    async def scenario(storage: SQLiteStorage) -> list[str]:
        errors = []
        a = await create(storage, {})
        b = await create(storage, based_on(a))
        for request in (
            based_on("nope"),
            based_on(a, 2),
            based_on(a),  # itself
            based_on(b),  # b is on a
        ):
            with pytest.raises(SegmentReferenceError) as info:
                await update(storage, a, request)
            errors.append(str(info.value))
        # Based on an older version of itself: no cycle, so it is taken.
        await update(
            storage,
            a,
            based_on(a, 1),
        )
        stored = await storage.get_segment(APP, a)
        assert stored is not None and stored.version == 2
        return errors  # fmt: skip

    errors = run(scenario)
    assert errors[0].startswith("g0s0.Id: segment nope does not exist")
    assert errors[1].startswith("g0s0.Version: segment ")
    assert errors[2].startswith("g0s0.Id: a segment cannot be based on its own latest")
    assert errors[3].startswith("g0s0.Id: segment ") and "cycle" in errors[3]


def test_resolution_stops_at_a_cycle_or_a_missing_source(tmp_path: Path) -> None:
    async def scenario(storage: SQLiteStorage) -> list[str]:
        a = await create(storage, {})
        b = await create(storage, based_on(a))
        c = await create(storage, based_on(b))
        # A cycle the API refuses, written behind its back, as a damaged database might hold.
        with sqlite3.connect(storage.path) as db:
            db.execute(
                "UPDATE segment_versions SET request = ? WHERE segment_id = ?",
                (msgspec.json.encode(based_on(c)).decode(), a),
            )  # fmt: skip
        db.close()
        messages = []
        with pytest.raises(SegmentResolutionError) as info:
            await segment_predicate(storage, APP, c, now=NOW)
        messages.append(str(info.value))
        await storage.delete_segment(APP, a)
        with pytest.raises(SegmentResolutionError) as info:
            await segment_predicate(storage, APP, b, now=NOW)
        messages.append(str(info.value))
        return messages

    cycle, missing = run(scenario)
    assert "based on itself" in cycle
    assert missing.endswith("does not exist")


def test_deleting_an_app_deletes_its_segments_and_settings() -> None:
    async def scenario(storage: SQLiteStorage) -> list[int]:
        a = await create(storage, {})
        await update(storage, a, {})
        await storage.update_app_settings(APP, {"Limits": {"Daily": 1}}, "2026-12-06T00:00:00Z")
        await storage.delete_app(APP)
        with sqlite3.connect(storage.path) as db:
            counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("segments", "segment_versions", "app_settings")]  # fmt: skip
        db.close()
        return counts

    assert run(scenario) == [0, 0, 0]
