"""cohorts.add_all against its definition, phase by phase."""

from __future__ import annotations

import random

from homing_collector.analytics import cohorts


def by_definition(first: int, hours: list[int], sign: int) -> cohorts.Deltas:
    """What a subject first active at `first` adds: in each phase, +sign on every day after
    its cohort day that it is active on (within DAYS), and +sign at minus the first one."""
    deltas: cohorts.Deltas = {}
    for p in cohorts.PHASES:
        cohort = (first - p) // 24
        after = cohorts.offsets(cohort, {(h - p) // 24 for h in hours if h > first})
        for k in after:
            deltas[("app", 0, p, cohort, k)] = sign
        if after:
            deltas[("app", 0, p, cohort, -min(after))] = sign
    return deltas


def test_add_all_adds_what_each_phase_sees() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        first = rng.randint(-50_000, 500_000)
        gaps = [
            rng.choice([1, 2, 23, 24, 25, 47, 48, 700, 743, 744, 767, 768, 769, 2000])
            if rng.random() < 0.5 else rng.randint(-30, 800)
            for _ in range(rng.randint(0, 5))
        ]  # fmt: skip
        hours = [first, *(first + gap for gap in gaps if gap >= 0)]
        sign = rng.choice([1, -1])
        found: cohorts.Deltas = {}
        cohorts.add_all(found, "app", 0, first, hours, sign)
        assert found == by_definition(first, hours, sign), (first, hours)
