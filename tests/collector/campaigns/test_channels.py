"""How a custom channel's sends are split into calls of at most 50 distinct endpoints."""

from __future__ import annotations

import random

from homing_collector.campaigns.channels import unique_batches


def batched(items: list[str]) -> list[list[str]]:
    return list(unique_batches(items, lambda item: item.split(":")[0]))


def test_the_nth_send_of_each_endpoint_goes_in_the_nth_call() -> None:
    # Two events of each endpoint, in one PutEvents call each: two calls, not six.
    items = ["a:1", "a:2", "b:1", "b:2", "c:1", "c:2"]
    assert batched(items) == [["a:1", "b:1", "c:1"], ["a:2", "b:2", "c:2"]]


def test_a_call_takes_50_endpoints_at_most() -> None:
    items = [f"e{i}:1" for i in range(120)] + ["e0:2"]
    assert [len(batch) for batch in batched(items)] == [50, 50, 21]
    assert batched(items)[2][-1] == "e0:2"  # the first call with room that lacks e0


def test_one_endpoint_sent_three_times_takes_three_calls() -> None:
    assert batched(["a:1", "a:2", "a:3"]) == [["a:1"], ["a:2"], ["a:3"]]


def first_with_room(items: list[str]) -> list[list[str]]:
    """The rule itself, with no shortcut: each item in the first batch of 50 or fewer
    after the last one that took its key."""
    batches: list[list[str]] = []
    last: dict[str, int] = {}
    for item in items:
        key = item.split(":")[0]
        at = last.get(key, -1) + 1
        while at < len(batches) and len(batches[at]) == 50:
            at += 1
        if at == len(batches):
            batches.append([])
        batches[at].append(item)
        last[key] = at
    return batches


def test_batches_follow_the_rule_whatever_the_mix_of_repeated_endpoints() -> None:
    rng = random.Random(7)
    for size in (1, 49, 50, 51, 120, 400, 1000):
        for spread in (1, 3, 40, 2000):
            items = [f"e{rng.randrange(spread)}:{n}" for n in range(size)]
            assert batched(items) == first_with_room(items), (size, spread)
