"""Webhook delivery against real receivers on loopback: outcomes, retries, dead letters,
410, and one slow receiver never holding back another."""

from __future__ import annotations

import asyncio
import gzip
import random
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from homing_collector.hooks import compression
from homing_collector.hooks.delivery import (
    MAX_ANSWER_BYTES,
    Attempt,
    Outcome,
    attempt,
    classify,
    json_body,
    ndjson_gzip_body,
)
from homing_collector.hooks.dispatch import Destination, Dispatcher, Message, State
from homing_collector.hooks.retry import RetryPolicy, parse_retry_after
from homing_collector.hooks.signing import SigningKeys, new_message_id, new_secret
from tests.collector.hooks.receiver import Answer, Receiver, always, free_port, serving

T = TypeVar("T")


class FakeClock:
    """Time that passes only when the dispatcher sleeps; starts at the real time, so
    signatures made early in a test still verify."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def run(make: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx.AsyncClient() as client:
            return await make(client)

    return asyncio.run(main())


def destination(receiver: Receiver, concurrency: int = 4) -> Destination:
    return Destination(receiver.url, receiver.url, SigningKeys(new_secret()), concurrency)


def message(n: int = 0) -> Message:
    return Message(new_message_id(), json_body({"n": n}))


# -- classification and schedule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (301, Outcome.FAILED),
        (400, Outcome.FAILED),
        (401, Outcome.FAILED),
        (404, Outcome.FAILED),
        (408, Outcome.RETRY),
        (410, Outcome.GONE),
        (413, Outcome.FAILED),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
    ],
)
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status).outcome is outcome


def test_retry_after_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    # 2027-01-15T08:00:00Z is Unix time 1,800,000,000.
    assert parse_retry_after("Fri, 15 Jan 2027 08:00:00 GMT", now - 3600) == 3600.0
    date = "Sun, 06 Dec 2026 22:00:30 GMT"
    base = parse_retry_after(date, 0.0)
    assert base is not None
    assert parse_retry_after(date, base - 30) == 30.0
    assert parse_retry_after(date, base + 30) == 0.0  # a date already past: go now
    for unreadable in (None, "", "soon", "-5", "1.5", "Sun, 99 Foo 2026"):
        assert parse_retry_after(unreadable, now) is None


def test_the_schedule_grows_to_its_cap_and_stops_at_the_budget() -> None:
    policy = RetryPolicy(jitter=0)
    delays = [policy.delay(n) for n in range(1, 14)]
    assert delays[:4] == [5, 10, 20, 40]
    assert delays[-1] == 7200
    assert delays == sorted(delays)
    start, now, retries = 0.0, 0.0, 0
    while True:
        at = policy.next_attempt(retry=retries + 1, first_attempt_at=start, now=now)
        if at is None:
            break
        retries += 1
        now = at
    assert 24 * 3600 - 7200 < now <= 24 * 3600
    assert 15 <= retries <= 25


@given(retry=st.integers(1, 5000), seed=st.integers(0, 2**32))
def test_a_delay_stays_within_its_jitter(retry: int, seed: int) -> None:
    policy = RetryPolicy()
    base = min(policy.first_delay * policy.factor ** min(retry - 1, 64), policy.max_delay)
    delay = policy.delay(retry, random.Random(seed))
    assert base * (1 - policy.jitter) <= delay <= base * (1 + policy.jitter)


def test_retry_after_longer_than_the_schedule_wins_and_can_exhaust_the_budget() -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.next_attempt(retry=1, first_attempt_at=0, now=0, retry_after=300) == 300
    assert policy.next_attempt(retry=1, first_attempt_at=0, now=0, retry_after=1) == 5
    assert policy.next_attempt(retry=1, first_attempt_at=0, now=0, retry_after=2 * 86400) is None


@pytest.mark.parametrize(
    "options",
    [{"first_delay": 0}, {"max_delay": 1, "first_delay": 2}, {"factor": 0.5}, {"jitter": 1}],
)
def test_a_bad_policy_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**options)


# -- one attempt against a real receiver -----------------------------------------------------


def test_a_delivery_verifies_at_the_receiver() -> None:
    with serving(always(Answer(204))) as (receiver,):
        target = destination(receiver)
        sent = message(7)
        result = run(
            lambda c: attempt(
                c, target.url, sent.id, sent.body, target.keys, now=time.time(), timeout=5
            )
        )
    assert result == Attempt(Outcome.DELIVERED, 204)
    (got,) = receiver.received
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == sent.id
    assert Webhook(target.keys.current).verify(got.body, got.headers) == {"n": 7}


class _Looked:
    """A finder that only notes the modules the import system searched for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        self.names.append(name)


def test_a_webhook_call_searches_for_no_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpcore imports sniffio at every lock and request; when it is not installed, each
    # failed import searched sys.path again: a third of a call's CPU.
    looked = _Looked()
    monkeypatch.setattr(sys, "meta_path", [looked, *sys.meta_path])
    with serving(always(Answer(200))) as (receiver,):
        keys = SigningKeys(new_secret())

        async def calls(client: httpx.AsyncClient) -> list[Attempt]:
            return [
                await attempt(
                    client, receiver.url, f"msg_{n}", json_body({}), keys, now=time.time()
                )
                for n in range(3)
            ]

        results = run(calls)
    assert {r.outcome for r in results} == {Outcome.DELIVERED}
    assert "sniffio" not in looked.names


def test_the_stream_compresses_with_isa_l_into_standard_gzip() -> None:
    # The collector extra installs isal: its gzip takes a sixth of zlib's CPU per record
    # (hooks/compression.py); what it makes, zlib (any receiver) reads.
    assert compression.ACCELERATED
    lines = b"".join(b'{"event_type":"a","n":%d}\n' % n for n in range(5000))
    packed = compression.gzip_fast(lines)
    assert gzip.decompress(packed) == lines
    assert zlib.decompress(packed, 31) == lines
    assert len(packed) < len(lines) // 10


def test_a_gzip_ndjson_batch_is_signed_as_sent() -> None:
    records = [{"event_type": "a", "n": n} for n in range(3)]
    body = ndjson_gzip_body(records)
    assert body == ndjson_gzip_body(records)  # a retry sends the very same bytes
    with serving(always(Answer(200))) as (receiver,):
        keys = SigningKeys(new_secret())
        result = run(lambda c: attempt(c, receiver.url, "msg_batch", body, keys, now=time.time()))
    assert result.outcome is Outcome.DELIVERED
    (got,) = receiver.received
    assert got.headers["content-encoding"] == "gzip"
    assert got.headers["content-type"] == "application/x-ndjson"
    Webhook(keys.current).verify(got.body, got.headers, json_parse=False)
    lines = gzip.decompress(got.body).splitlines()
    assert [orjson.loads(line) for line in lines] == records


def test_a_429_reports_its_retry_after() -> None:
    answer = Answer(429, (("retry-after", "120"),), body=b"slow down")
    with serving(always(answer)) as (receiver,):
        sent = message()
        result = run(
            lambda c: attempt(
                c, receiver.url, sent.id, sent.body, SigningKeys(new_secret()), now=time.time()
            )
        )
    assert result == Attempt(Outcome.RETRY, 429, 120.0, "429: slow down")


def test_a_timeout_is_retried() -> None:
    with serving(always(Answer(200, delay=1))) as (receiver,):
        sent = message()
        result = run(
            lambda c: attempt(
                c,
                receiver.url,
                sent.id,
                sent.body,
                SigningKeys(new_secret()),
                now=time.time(),
                timeout=0.2,
            )
        )
    assert result.outcome is Outcome.RETRY
    assert result.status is None
    assert "timed out after 0.2 s" in result.error


def test_the_timeout_bounds_the_whole_answer_not_each_read() -> None:
    with serving(always(Answer(200, body=b"x" * 20, drip=0.1))) as (receiver,):
        sent = message()
        result = run(
            lambda c: attempt(
                c,
                receiver.url,
                sent.id,
                sent.body,
                SigningKeys(new_secret()),
                now=time.time(),
                timeout=0.5,
            )
        )
    assert result.outcome is Outcome.RETRY
    assert "timed out after 0.5 s" in result.error


def test_an_oversized_answer_fails() -> None:
    with serving(always(Answer(200, body=b"[" + b" " * MAX_ANSWER_BYTES + b"]"))) as (receiver,):
        sent = message()
        result = run(
            lambda c: attempt(
                c, receiver.url, sent.id, sent.body, SigningKeys(new_secret()), now=time.time()
            )
        )
    assert result.outcome is Outcome.FAILED
    assert result.error == f"the answer is over {MAX_ANSWER_BYTES} bytes, the limit"


def test_an_error_answer_is_kept_short() -> None:
    with serving(always(Answer(500, body=b"e" * 100_000))) as (receiver,):
        sent = message()
        result = run(
            lambda c: attempt(
                c, receiver.url, sent.id, sent.body, SigningKeys(new_secret()), now=time.time()
            )
        )
    assert result.outcome is Outcome.RETRY
    assert result.error == "500: " + "e" * 200


def test_a_refused_connection_is_retried() -> None:
    sent = message()
    result = run(
        lambda c: attempt(
            c,
            f"http://127.0.0.1:{free_port()}/hook",
            sent.id,
            sent.body,
            SigningKeys(new_secret()),
            now=time.time(),
        )
    )
    assert result.outcome is Outcome.RETRY
    assert result.status is None
    assert "ConnectError" in result.error


# -- the dispatcher: retries, dead letters, 410, isolation -------------------------------------


def test_503_then_200_arrives_once_with_one_webhook_id() -> None:
    clock = FakeClock()
    script = lambda n, _body: Answer(503 if n < 3 else 200)  # noqa: E731
    with serving(script) as (receiver,):
        target = destination(receiver)
        sent = message(1)
        report = run(lambda c: Dispatcher(c, clock=clock, sleep=clock.sleep).deliver(target, sent))
    assert report.state is State.DELIVERED
    assert [a.status for a in report.attempts] == [503, 503, 503, 200]
    assert len(clock.sleeps) == 3
    assert {got.headers["webhook-id"] for got in receiver.received} == {sent.id}
    for got in receiver.received:
        assert Webhook(target.keys.current).verify(got.body, got.headers) == {"n": 1}


def test_always_500_is_dead_lettered_after_the_budget() -> None:
    clock = FakeClock()
    policy = RetryPolicy()
    with serving(always(Answer(500, body=b"boom"))) as (receiver,):
        target = destination(receiver)
        start = clock.now
        report = run(
            lambda c: Dispatcher(c, policy=policy, clock=clock, sleep=clock.sleep).deliver(
                target, message()
            )
        )
    assert report.state is State.DEAD
    assert len(report.attempts) == len(receiver.received) == len(clock.sleeps) + 1
    assert all(a.status == 500 and a.error == "500: boom" for a in report.attempts)
    # The last attempt fell within the budget; one more wait would have passed it.
    elapsed = report.finished_at - start
    assert policy.budget - policy.max_delay * (1 + policy.jitter) < elapsed <= policy.budget
    assert clock.sleeps[:3] == sorted(clock.sleeps[:3])


def test_retry_after_is_honoured_by_the_dispatcher() -> None:
    clock = FakeClock()
    script = lambda n, _body: Answer(429, (("retry-after", "600"),)) if n == 0 else Answer(200)  # noqa: E731
    with serving(script) as (receiver,):
        report = run(
            lambda c: Dispatcher(c, clock=clock, sleep=clock.sleep).deliver(
                destination(receiver), message()
            )
        )
    assert report.state is State.DELIVERED
    assert clock.sleeps == [600.0]


def test_410_disables_the_destination() -> None:
    clock = FakeClock()
    with serving(always(Answer(410))) as (receiver,):
        target = destination(receiver)

        async def scenario(client: httpx.AsyncClient) -> tuple[list[State], set[str]]:
            dispatcher = Dispatcher(client, clock=clock, sleep=clock.sleep)
            first = await dispatcher.deliver(target, message(1))
            second = await dispatcher.deliver(target, message(2))
            return [first.state, second.state], dispatcher.disabled

        states, disabled = run(scenario)
    assert states == [State.GONE, State.GONE]
    assert disabled == {target.id}
    assert len(receiver.received) == 1  # the second message was never sent
    assert clock.sleeps == []


def test_another_4xx_fails_at_once() -> None:
    clock = FakeClock()
    with serving(always(Answer(404, body=b"no such hook"))) as (receiver,):
        report = run(
            lambda c: Dispatcher(c, clock=clock, sleep=clock.sleep).deliver(
                destination(receiver), message()
            )
        )
    assert report.state is State.FAILED
    assert [a.error for a in report.attempts] == ["404: no such hook"]
    assert clock.sleeps == []


def test_a_slow_receiver_does_not_hold_back_a_fast_one() -> None:
    # A second's wait: the fast receiver's six answers fit in it even on a loaded machine.
    with serving(always(Answer(200, delay=1.0)), always(Answer(200))) as (slow, fast):
        slow_target = destination(slow, concurrency=2)
        fast_target = destination(fast, concurrency=2)
        # The slow destination's messages come first in the work list.
        work = [(slow_target, message(n)) for n in range(4)]
        work += [(fast_target, message(n)) for n in range(6)]
        reports = run(lambda c: Dispatcher(c).deliver_all(work))
    assert [r.state for r in reports] == [State.DELIVERED] * 10
    assert (len(slow.received), len(fast.received)) == (4, 6)
    assert max(got.at for got in fast.received) < min(got.at for got in slow.received)
    assert slow.max_in_flight == 2  # its bound, and no more
