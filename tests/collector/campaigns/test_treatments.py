"""Treatments and holdout: the split over 2,000 endpoints within binomial error, sticky
across calls, and the sum rule."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from homing_collector.campaigns.treatments import HOLDOUT, assign, check_sizes, position

ENDPOINTS = [f"endpoint-{i:04d}" for i in range(2000)]


def within_binomial_error(count: int, n: int, percent: int) -> bool:
    p = percent / 100
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))  # four standard deviations


def test_a_20_percent_holdout_ab_split_over_2000_endpoints() -> None:
    split = Counter(assign("ab", e, holdout_percent=20, sizes=[30, 10]) for e in ENDPOINTS)
    assert set(split) == {HOLDOUT, "0", "1", "2"}
    for treatment, percent in [(HOLDOUT, 20), ("0", 40), ("1", 30), ("2", 10)]:
        assert within_binomial_error(split[treatment], 2000, percent), (treatment, split)


def test_assignment_is_sticky_and_depends_on_the_campaign() -> None:
    first = [assign("ab", e, holdout_percent=20, sizes=[40]) for e in ENDPOINTS]
    again = [assign("ab", e, holdout_percent=20, sizes=[40]) for e in ENDPOINTS]
    other = [assign("cd", e, holdout_percent=20, sizes=[40]) for e in ENDPOINTS]
    assert first == again
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 500


def test_growing_the_holdout_only_moves_endpoints_into_it() -> None:
    before = {e: assign("ab", e, holdout_percent=10) for e in ENDPOINTS}
    after = {e: assign("ab", e, holdout_percent=20) for e in ENDPOINTS}
    moved = [e for e in ENDPOINTS if before[e] != after[e]]
    assert moved and all(before[e] == "0" and after[e] is HOLDOUT for e in moved)


def test_no_holdout_and_no_treatments_is_everyone_in_treatment_0() -> None:
    assert {assign("std", e) for e in ENDPOINTS} == {"0"}
    assert {assign("all", e, holdout_percent=100) for e in ENDPOINTS} == {HOLDOUT}


def test_positions_spread_over_the_scale() -> None:
    tenths = Counter(position("ab", e) // 1000 for e in ENDPOINTS)
    assert len(tenths) == 10 and all(within_binomial_error(c, 2000, 10) for c in tenths.values())


@pytest.mark.parametrize(
    ("holdout", "sizes", "message"),
    [
        (50, [30, 30], "is 110; it must be at most 100"),
        (0, [20, 20, 20, 20, 20], "5 given; a campaign has at most 5 treatments"),
    ],
)
def test_sizes_must_add_up(holdout: int, sizes: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_sizes(holdout, sizes)
    check_sizes(20, [40, 40])  # treatment 0 may get nothing
