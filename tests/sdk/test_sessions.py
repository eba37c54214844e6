from __future__ import annotations

import contextlib
import doctest
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import homing._sessions
from homing._exceptions import ConfigurationError
from homing._sessions import Sessions
from homing.wire import check_event, format_timestamp

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20.000Z
ENDPOINT = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
ID_RE = re.compile(r"^[\w]{8}-\d{8}-\d{9}$")

Recorded = tuple[str, dict[str, Any], float]


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingState(dict[str, Any]):
    """A dict that counts writes, to see what reaches the (real, sqlite) state."""

    writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> list[Recorded]:
    return []


@pytest.fixture
def state() -> CountingState:
    return CountingState()


@pytest.fixture
def make_sessions(
    clock: FakeClock, events: list[Recorded], state: CountingState
) -> Callable[..., Sessions]:
    """A factory: make_sessions(**overrides) -> Sessions on the fake clock, list and dict."""

    def make(**overrides: Any) -> Sessions:
        options: dict[str, Any] = {
            "record": lambda kind, session, ts: events.append((kind, session, ts)),
            "state": state,
            "clock": clock,
            "id_prefix": ENDPOINT,
        }
        options.update(overrides)
        return Sessions(**options)

    return make


@pytest.fixture
def sessions(make_sessions: Callable[..., Sessions]) -> Sessions:
    return make_sessions()


def kinds(events: list[Recorded]) -> list[str]:
    return [kind for kind, _, _ in events]


def iso(seconds: float) -> str:
    return format_timestamp(seconds)


def assert_valid_on_the_wire(events: list[Recorded]) -> None:
    for kind, session, ts in events:
        check_event({"EventType": kind, "Timestamp": iso(ts), "Session": session})


# -- start, ids and the Session object ---------------------------------------------------


def test_start_records_a_session_with_a_pinpoint_style_id(
    sessions: Sessions, events: list[Recorded]
) -> None:
    sessions.start()

    assert events == [
        (
            "_session.start",
            {"Id": "e82c3301-20231114-221320000", "StartTimestamp": iso(T0)},
            T0,
        )
    ]
    assert sessions.current() == events[0][1]


@pytest.mark.parametrize(
    ("prefix", "key"),
    [(ENDPOINT, "e82c3301"), ("abc", "_____abc"), ("", "________"), ("12345678", "12345678")],
)
def test_id_keeps_the_last_8_characters_of_the_prefix_padded_in_front(
    make_sessions: Callable[..., Sessions],
    clock: FakeClock,
    events: list[Recorded],
    prefix: str,
    key: str,
) -> None:
    clock.now = T0 + 0.123
    make_sessions(id_prefix=prefix).start()
    session_id = events[0][1]["Id"]
    assert session_id == f"{key}-20231114-221320123"
    assert ID_RE.match(session_id)


def test_millisecond_timestamps_do_not_lose_a_millisecond_to_float_rounding(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    clock.now = 1_700_000_000.123  # 1700000000.12299990654 as a float
    sessions.start()
    assert events[0][1]["StartTimestamp"] == "2023-11-14T22:13:20.123Z"
    assert events[0][1]["Id"].endswith("-221320123")


# -- the resume window --------------------------------------------------------------------


@pytest.mark.parametrize("gap", [0.0, 4.9, 5.0])
def test_a_resume_within_the_window_continues_the_session(
    sessions: Sessions, clock: FakeClock, events: list[Recorded], gap: float
) -> None:
    sessions.start()
    clock.advance(10)
    sessions.pause()
    clock.advance(gap)
    sessions.resume()

    assert kinds(events) == ["_session.start", "_session.pause", "_session.resume"]
    session_id = events[0][1]["Id"]
    assert {session["Id"] for _, session, _ in events} == {session_id}
    assert events[2] == (
        "_session.resume",
        {"Id": session_id, "StartTimestamp": iso(T0)},
        T0 + 10 + gap,
    )
    assert sessions.current() == {"Id": session_id, "StartTimestamp": iso(T0)}


def test_a_resume_after_the_window_stops_at_the_pause_time_and_starts_anew(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    sessions.start()
    clock.advance(10)
    sessions.pause()
    clock.advance(5.1)
    sessions.resume()

    assert kinds(events) == [
        "_session.start", "_session.pause", "_session.stop", "_session.start",
    ]  # fmt: skip
    old_id = events[0][1]["Id"]
    assert events[2] == (
        "_session.stop",
        {
            "Id": old_id,
            "StartTimestamp": iso(T0),
            "StopTimestamp": iso(T0 + 10),
            "Duration": 10_000,
        },
        T0 + 10,
    )
    _, new_session, new_ts = events[3]
    assert new_session == {"Id": "e82c3301-20231114-221335100", "StartTimestamp": iso(T0 + 15.1)}
    assert new_session["Id"] != old_id
    assert new_ts == pytest.approx(T0 + 15.1)
    assert sessions.current() == new_session
    assert_valid_on_the_wire(events)


def test_the_resume_window_is_configurable(
    make_sessions: Callable[..., Sessions], clock: FakeClock, events: list[Recorded]
) -> None:
    sessions = make_sessions(resume_window=30)
    sessions.start()
    sessions.pause()
    clock.advance(29)
    sessions.resume()
    assert kinds(events)[-1] == "_session.resume"

    sessions.pause()
    clock.advance(31)
    sessions.resume()
    assert kinds(events)[-2:] == ["_session.stop", "_session.start"]


def test_a_negative_resume_window_is_a_configuration_error(
    make_sessions: Callable[..., Sessions],
) -> None:
    with pytest.raises(ConfigurationError, match="resume_window"):
        make_sessions(resume_window=-1)


# -- Duration ------------------------------------------------------------------------------


def test_pause_events_carry_stop_timestamp_and_duration(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    sessions.start()
    clock.advance(7.25)
    sessions.pause()

    assert events[1] == (
        "_session.pause",
        {
            "Id": events[0][1]["Id"],
            "StartTimestamp": iso(T0),
            "StopTimestamp": iso(T0 + 7.25),
            "Duration": 7250,
        },
        T0 + 7.25,
    )
    assert sessions.current() is None
    assert_valid_on_the_wire(events)


def test_duration_runs_from_start_to_stop_as_pinpoint_computes_it(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    # Pinpoint (Session.getSessionDuration on Android, PinpointSession.duration on iOS)
    # measures stop - start; a short pause that was resumed stays inside the session.
    sessions.start()
    clock.advance(10)
    sessions.pause()
    clock.advance(3)
    sessions.resume()
    clock.advance(7)
    sessions.stop()

    kind, session, ts = events[-1]
    assert kind == "_session.stop"
    assert session["StopTimestamp"] == iso(T0 + 20)
    assert session["Duration"] == 20_000
    assert ts == T0 + 20
    assert_valid_on_the_wire(events)


def test_time_in_the_background_past_the_window_is_never_counted(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    sessions.start()
    clock.advance(10)
    sessions.pause()
    clock.advance(3600)
    sessions.stop()  # a stop while paused ends the session at the pause

    assert events[-1][1]["StopTimestamp"] == iso(T0 + 10)
    assert events[-1][1]["Duration"] == 10_000
    assert events[-1][2] == T0 + 10


def test_duration_is_never_negative_when_the_clock_goes_back(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    sessions.start()
    clock.advance(-60)
    sessions.stop()
    assert events[-1][1]["Duration"] == 0


def test_duration_is_capped_to_what_the_wire_accepts(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    sessions.start()
    clock.advance(30 * 24 * 3600)
    sessions.stop()
    assert events[-1][1]["Duration"] == 2**31 - 1
    assert_valid_on_the_wire(events)


# -- events carry the session ---------------------------------------------------------------


def test_current_is_the_session_for_events_recorded_inside_it(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    assert sessions.current() is None
    sessions.start()
    current = sessions.current()
    assert current == {"Id": events[0][1]["Id"], "StartTimestamp": iso(T0)}

    assert current is not None
    current["Id"] = "changed by the caller"
    assert sessions.current() == events[0][1]

    sessions.pause()
    assert sessions.current() is None
    sessions.resume()
    assert sessions.current() == events[0][1]
    sessions.stop()
    assert sessions.current() is None


# -- persistence and crash recovery ---------------------------------------------------------


def test_every_transition_is_persisted(
    sessions: Sessions, clock: FakeClock, state: CountingState
) -> None:
    sessions.start()
    assert state["session"]["paused_ms"] is None
    clock.advance(2)
    sessions.pause()
    assert state["session"]["paused_ms"] == int(T0 * 1000) + 2000
    sessions.resume()
    assert state["session"]["paused_ms"] is None
    sessions.stop()
    assert "session" not in state


def test_touch_persists_at_most_once_a_second(
    sessions: Sessions, clock: FakeClock, state: CountingState
) -> None:
    sessions.start()
    writes = state.writes
    for tenth in range(1, 51):
        clock.now = T0 + tenth / 10
        sessions.touch()
    assert state.writes - writes == 5
    assert state["session"]["last_activity_ms"] == int(T0 * 1000) + 5000


def test_touch_without_an_active_session_does_nothing(
    sessions: Sessions, clock: FakeClock, state: CountingState
) -> None:
    sessions.touch()
    assert state.writes == 0
    sessions.start()
    sessions.pause()
    saved = dict(state["session"])
    clock.advance(3)
    sessions.touch()
    assert state["session"] == saved


def test_recover_closes_a_crashed_session_at_its_last_activity(
    make_sessions: Callable[..., Sessions],
    clock: FakeClock,
    events: list[Recorded],
    state: CountingState,
) -> None:
    crashed = make_sessions()
    crashed.start()
    clock.advance(3)
    crashed.touch()  # persisted
    clock.advance(0.5)
    crashed.touch()  # within the second: kept in memory only, lost in the crash
    del crashed

    clock.advance(3600)
    events.clear()
    restarted = make_sessions()
    assert restarted.current() is None
    restarted.recover()

    assert len(events) == 1
    kind, session, ts = events[0]
    assert kind == "_session.stop"
    assert session["StartTimestamp"] == iso(T0)
    assert session["StopTimestamp"] == iso(T0 + 3)
    assert session["Duration"] == 3000
    assert ts == T0 + 3
    assert "session" not in state

    restarted.recover()
    assert len(events) == 1


def test_recover_closes_a_paused_session_at_the_pause_time(
    make_sessions: Callable[..., Sessions],
    clock: FakeClock,
    events: list[Recorded],
) -> None:
    crashed = make_sessions()
    crashed.start()
    clock.advance(4)
    crashed.touch()
    clock.advance(2)
    crashed.pause()
    clock.advance(600)

    events.clear()
    make_sessions().recover()
    assert events[0][1]["StopTimestamp"] == iso(T0 + 6)
    assert events[0][1]["Duration"] == 6000


def test_start_closes_a_crashed_session_even_without_recover(
    make_sessions: Callable[..., Sessions],
    clock: FakeClock,
    events: list[Recorded],
) -> None:
    make_sessions().start()
    clock.advance(100)

    make_sessions().start()
    assert kinds(events) == ["_session.start", "_session.stop", "_session.start"]
    assert events[1][1]["Duration"] == 0
    assert events[1][1]["Id"] == events[0][1]["Id"]


def test_recover_leaves_the_live_session_of_this_process_alone(
    sessions: Sessions, events: list[Recorded]
) -> None:
    sessions.start()
    sessions.recover()
    assert kinds(events) == ["_session.start"]
    assert sessions.current() is not None


def test_recover_drops_an_unreadable_saved_session(
    make_sessions: Callable[..., Sessions],
    events: list[Recorded],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state: dict[str, Any] = {"session": {"id": "x", "start_ms": "yesterday"}, "other": 1}
    with caplog.at_level(logging.WARNING, logger="homing"):
        make_sessions(state=state).recover()
    assert events == []
    assert state == {"other": 1}
    assert "unreadable saved session" in caplog.text


def test_state_in_sqlitedict_survives_a_new_instance(
    tmp_path: Path, clock: FakeClock, events: list[Recorded]
) -> None:
    sqlitedict = pytest.importorskip("sqlitedict")
    orjson = pytest.importorskip("orjson")

    def open_state() -> contextlib.closing[Any]:
        return contextlib.closing(
            sqlitedict.SqliteDict(
                str(tmp_path / "state.sqlite"),
                autocommit=True,
                encode=orjson.dumps,
                decode=orjson.loads,
            )
        )

    def record(kind: str, session: dict[str, Any], ts: float) -> None:
        events.append((kind, session, ts))

    with open_state() as state:
        first = Sessions(record=record, state=state, clock=clock, id_prefix=ENDPOINT)
        first.start()
        clock.advance(2)
        first.touch()
        clock.advance(1)
        first.pause()

    clock.advance(60)
    with open_state() as state:
        assert state["session"]["paused_ms"] == int(T0 * 1000) + 3000
        Sessions(record=record, state=state, clock=clock, id_prefix=ENDPOINT).recover()
        assert "session" not in state

    assert kinds(events) == ["_session.start", "_session.pause", "_session.stop"]
    assert events[2][1] == {
        "Id": events[0][1]["Id"],
        "StartTimestamp": iso(T0),
        "StopTimestamp": iso(T0 + 3),
        "Duration": 3000,
    }


# -- invalid transitions never raise ------------------------------------------------------


def test_pause_and_stop_without_a_session_are_no_ops(
    sessions: Sessions, events: list[Recorded], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="homing"):
        sessions.pause()
        sessions.stop()
    assert events == []
    assert "no active session" in caplog.text


def test_resume_without_a_session_starts_one(sessions: Sessions, events: list[Recorded]) -> None:
    sessions.resume()
    assert kinds(events) == ["_session.start"]
    assert sessions.current() == events[0][1]


def test_resume_while_active_and_pause_while_paused_are_no_ops(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    sessions.start()
    sessions.resume()
    sessions.pause()
    clock.advance(1)
    sessions.pause()
    assert kinds(events) == ["_session.start", "_session.pause"]


def test_start_while_active_stops_the_old_session_first(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    sessions.start()
    clock.advance(4)
    sessions.start()
    assert kinds(events) == ["_session.start", "_session.stop", "_session.start"]
    assert events[1][1]["Duration"] == 4000
    assert events[1][1]["Id"] != events[2][1]["Id"]
    assert sessions.current() == events[2][1]


def test_start_while_paused_stops_the_old_session_at_the_pause(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    sessions.start()
    clock.advance(4)
    sessions.pause()
    clock.advance(1)
    sessions.start()
    assert kinds(events)[-2:] == ["_session.stop", "_session.start"]
    assert events[-2][1]["StopTimestamp"] == iso(T0 + 4)


def test_a_failing_record_function_does_not_break_the_state_machine(
    make_sessions: Callable[..., Sessions], caplog: pytest.LogCaptureFixture
) -> None:
    def record(kind: str, session: dict[str, Any], ts: float) -> None:
        raise OSError("disk full")

    sessions = make_sessions(record=record)
    with caplog.at_level(logging.ERROR, logger="homing"):
        sessions.start()
        sessions.pause()
        sessions.resume()
        sessions.stop()
    assert sessions.current() is None
    assert "could not record _session.start" in caplog.text


def test_a_record_function_may_call_back_into_sessions(
    make_sessions: Callable[..., Sessions], events: list[Recorded]
) -> None:
    # The facade touches on every recorded event, session events included.
    holder: list[Sessions] = []

    def record(kind: str, session: dict[str, Any], ts: float) -> None:
        holder[0].touch()
        holder[0].current()
        events.append((kind, session, ts))

    holder.append(make_sessions(record=record))
    holder[0].start()
    holder[0].stop()
    assert kinds(events) == ["_session.start", "_session.stop"]


# -- the context manager -------------------------------------------------------------------


def test_session_context_manager_starts_and_stops(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    with sessions.session():
        assert sessions.current() is not None
        clock.advance(2)
    assert kinds(events) == ["_session.start", "_session.stop"]
    assert events[1][1]["Duration"] == 2000
    assert sessions.current() is None


def test_session_context_manager_stops_on_error(sessions: Sessions, events: list[Recorded]) -> None:
    with pytest.raises(RuntimeError), sessions.session():
        raise RuntimeError("app failure")
    assert kinds(events) == ["_session.start", "_session.stop"]


# -- threads -------------------------------------------------------------------------------


def test_touch_and_current_from_many_threads_during_transitions(
    sessions: Sessions, clock: FakeClock, events: list[Recorded]
) -> None:
    seen: list[dict[str, Any] | None] = []
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(2000):
                sessions.touch()
                seen.append(sessions.current())
        except BaseException as exc:  # pragma: no cover - only on failure
            errors.append(exc)

    workers = [threading.Thread(target=hammer, daemon=True) for _ in range(8)]
    for worker in workers:
        worker.start()
    cycles = 0
    while cycles < 50 or (any(w.is_alive() for w in workers) and cycles < 20_000):
        clock.now = T0 + cycles / 100  # a new session id each cycle
        sessions.start()
        sessions.pause()
        sessions.resume()
        sessions.stop()
        cycles += 1
    for worker in workers:
        worker.join(timeout=10)
    assert not any(worker.is_alive() for worker in workers)
    assert errors == []

    cycle = ["_session.start", "_session.pause", "_session.resume", "_session.stop"]
    assert kinds(events) == cycle * cycles
    started = {session["Id"]: session for kind, session, _ in events if kind == "_session.start"}
    assert len(started) == cycles
    assert len(seen) == 8 * 2000
    for current in seen:
        assert current is None or started[current["Id"]] == current


# -- the docstring example ------------------------------------------------------------------


def test_docstring_example_runs() -> None:
    result = doctest.testmod(homing._sessions, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_after_fork_in_child_frees_a_lock_that_another_thread_held(
    sessions: Sessions, events: list[Recorded]
) -> None:
    # What a forked child sees: the lock is held by a thread that will never release it.
    # (The real fork is in tests/sdk/test_client.py; this shows the method alone.)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sessions._lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        sessions.after_fork_in_child()
        worker = threading.Thread(target=sessions.start)  # another thread: fails, not hangs
        worker.start()
        worker.join(10)
        assert not worker.is_alive(), "start() waited on the old lock"
    finally:
        release.set()
        holder.join()
    assert kinds(events) == ["_session.start"]


def test_a_forked_child_leaves_the_inherited_session_and_its_saved_state_alone(
    sessions: Sessions, events: list[Recorded], state: CountingState, clock: FakeClock
) -> None:
    sessions.start()
    inherited = sessions.current()
    saved = dict(state)
    sessions.after_fork_in_child()
    # The child's events carry the parent's session...
    assert sessions.current() == inherited
    clock.advance(5)
    sessions.touch()
    # ...but it is the parent's to pause or stop, and the saved state is the parent's.
    sessions.stop()
    sessions.start()  # the child's own session: no stop for the parent's, no recovery
    sessions.stop()
    assert kinds(events) == ["_session.start", "_session.start", "_session.stop"]
    assert events[2][1]["Id"] == events[1][1]["Id"] != inherited["Id"]  # type: ignore[index]
    assert dict(state) == saved
