"""Sessions as Amazon Pinpoint's mobile SDKs define them: start, pause, resume, stop."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeGuard

from homing._exceptions import ConfigurationError
from homing._types import Clock
from homing.wire import format_timestamp

__all__ = ["RecordFn", "Sessions"]

logger = logging.getLogger("homing")

RecordFn = Callable[[str, dict[str, Any], float], None]

START = "_session.start"
STOP = "_session.stop"
PAUSE = "_session.pause"
RESUME = "_session.resume"

_STATE_KEY = "session"
_TOUCH_PERSIST_MS = 1000
# Session.Duration is an int32 on the wire; a kiosk left running for 25 days must not
# produce an event that fails validation.
_MAX_DURATION_MS = 2**31 - 1


@dataclass
class _Session:
    id: str
    start_ms: int
    start_iso: str
    last_activity_ms: int
    paused_ms: int | None = None

    def to_state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "start_ms": self.start_ms,
            "last_activity_ms": self.last_activity_ms,
            "paused_ms": self.paused_ms,
        }

    @classmethod
    def from_state(cls, raw: Any) -> _Session | None:
        if not isinstance(raw, dict):
            return None
        sid, start = raw.get("id"), raw.get("start_ms")
        last, paused = raw.get("last_activity_ms"), raw.get("paused_ms")
        if not (isinstance(sid, str) and sid and _is_ms(start) and _is_ms(last)):
            return None
        if paused is not None and not _is_ms(paused):
            return None
        return cls(sid, start, _iso(start), last, paused)


class Sessions:
    """Pinpoint-style sessions: records `_session.start/pause/resume/stop` events.

    A resume within `resume_window` seconds of a pause continues the session; a later
    one stops it at the pause time and starts a new one. Durations are milliseconds
    from start to stop, as Pinpoint's SDKs compute them. A session a crash left open
    is closed by `recover()` at its last known activity time.

    Example::

        >>> events = []
        >>> now = [1_700_000_000.0]
        >>> sessions = Sessions(
        ...     record=lambda kind, session, ts: events.append((kind, session)),
        ...     state={}, clock=lambda: now[0], id_prefix="0f8e5a1c-endpoint")
        >>> with sessions.session():
        ...     now[0] += 12.5
        >>> [kind for kind, _ in events]
        ['_session.start', '_session.stop']
        >>> events[1][1]["Id"], events[1][1]["Duration"]
        ('endpoint-20231114-221320000', 12500)
    """

    def __init__(
        self,
        *,
        record: RecordFn,
        state: MutableMapping[str, Any],
        clock: Clock = time.time,
        resume_window: float = 5.0,
        id_prefix: str = "",
    ) -> None:
        if resume_window < 0:
            raise ConfigurationError(
                f"resume_window is {resume_window!r}; it must be 0 seconds or more (default 5.0)"
            )
        self._record = record
        self._state = state
        self._clock = clock
        self._window_ms = round(resume_window * 1000)
        self._id_prefix = id_prefix
        # Reentrant because `record` may call back into touch() or current() (the facade
        # touches on every recorded event); events are recorded under the lock so their
        # order always matches the order of the transitions.
        self._lock = threading.RLock()
        self._session: _Session | None = None
        self._persisted_activity_ms = 0
        # In a forked child: the session it inherited, and whether the saved session
        # state (shared with the parent) is off limits.
        self._inherited: _Session | None = None
        self._forked = False

    def after_fork_in_child(self) -> None:
        # A lock that another thread held at fork() stays held in the child forever, as
        # its owner did not come along: the child needs a lock of its own. The session
        # itself is kept, so the child's events carry the session the parent had; but it
        # is the parent's to pause and stop, and the saved state is the parent's too.
        self._lock = threading.RLock()
        self._inherited = self._session
        self._forked = True

    def _let_go_locked(self) -> None:
        # A child stops carrying the parent's session without ending it.
        if self._session is not None and self._session is self._inherited:
            self._session = None

    def start(self) -> None:
        with self._lock:
            self._let_go_locked()
            now = self._now_ms()
            if self._session is not None:
                self._stop_locked(now)
            else:
                self._recover_locked()
            self._start_locked(now)

    def pause(self) -> None:
        with self._lock:
            self._let_go_locked()
            session = self._session
            if session is None or session.paused_ms is not None:
                logger.debug("session pause ignored: no active session")
                return
            now = self._now_ms()
            session.paused_ms = session.last_activity_ms = now
            self._persist(session)
            self._emit(PAUSE, _closing_dict(session, now), now)

    def resume(self) -> None:
        with self._lock:
            if self._session is not None and self._session.paused_ms is not None:
                self._let_go_locked()
            now = self._now_ms()
            session = self._session
            if session is None:
                logger.debug("session resume with no session: starting a new one")
                self._recover_locked()
                self._start_locked(now)
            elif session.paused_ms is None:
                logger.debug("session resume ignored: the session is not paused")
            elif now - session.paused_ms <= self._window_ms:
                session.paused_ms = None
                session.last_activity_ms = now
                self._persist(session)
                self._emit(RESUME, _open_dict(session), now)
            else:
                self._stop_locked(now)
                self._start_locked(now)

    def stop(self) -> None:
        with self._lock:
            self._let_go_locked()
            if self._session is None:
                logger.debug("session stop ignored: no session")
                return
            self._stop_locked(self._now_ms())

    def touch(self) -> None:
        with self._lock:
            session = self._session
            if session is None or session.paused_ms is not None:
                return
            now = self._now_ms()
            session.last_activity_ms = now
            # Every event touches; writing sqlite each time would double the I/O of
            # recording, and a crash loses at most a second of session length.
            if now - self._persisted_activity_ms >= _TOUCH_PERSIST_MS:
                self._persist(session)

    def recover(self) -> None:
        with self._lock:
            if self._session is None:
                self._recover_locked()

    def current(self) -> dict[str, Any] | None:
        with self._lock:
            session = self._session
            if session is None or session.paused_ms is not None:
                return None
            return _open_dict(session)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    def _start_locked(self, now: int) -> None:
        session = _Session(_session_id(self._id_prefix, now), now, _iso(now), now)
        self._session = session
        self._persist(session)
        self._emit(START, _open_dict(session), now)

    def _stop_locked(self, now: int) -> None:
        session = self._session
        assert session is not None
        # A paused session ended when it was paused: the time spent in the background
        # is not part of it (Pinpoint's executeStop keeps the pause time).
        stop = session.paused_ms if session.paused_ms is not None else now
        self._session = None
        # Event first, then forget: a crash in between records a duplicate stop at the
        # next launch (same Id, easy to drop) rather than losing the session's Duration.
        self._emit(STOP, _closing_dict(session, stop), stop)
        self._forget()

    def _recover_locked(self) -> None:
        if self._forked:
            return  # a saved session is the parent's, which may well be running
        try:
            raw = self._state.get(_STATE_KEY)
        except Exception:
            logger.warning("could not read the saved session", exc_info=True)
            return
        if raw is None:
            return
        orphan = _Session.from_state(raw)
        if orphan is None:
            logger.warning("dropping an unreadable saved session: %r", raw)
            self._forget()
            return
        stop = orphan.paused_ms if orphan.paused_ms is not None else orphan.last_activity_ms
        logger.info("closing session %s left open by the previous run", orphan.id)
        self._emit(STOP, _closing_dict(orphan, stop), stop)
        self._forget()

    def _emit(self, event_type: str, session: dict[str, Any], at_ms: int) -> None:
        try:
            self._record(event_type, session, at_ms / 1000)
        except Exception:
            # A failed session event must not leave the state machine half-moved.
            logger.exception("could not record %s", event_type)

    def _persist(self, session: _Session) -> None:
        if self._forked:
            return
        try:
            self._state[_STATE_KEY] = session.to_state()
        except Exception:
            logger.warning("could not save the session state", exc_info=True)
        self._persisted_activity_ms = session.last_activity_ms

    def _forget(self) -> None:
        if self._forked:
            return
        try:
            self._state.pop(_STATE_KEY, None)
        except Exception:
            logger.warning("could not clear the saved session", exc_info=True)

    def _now_ms(self) -> int:
        # Rounded to the microsecond first, then floored, exactly as format_timestamp
        # turns the same clock reading into an event Timestamp.
        return round(self._clock() * 1_000_000) // 1000


def _open_dict(session: _Session) -> dict[str, Any]:
    return {"Id": session.id, "StartTimestamp": session.start_iso}


def _closing_dict(session: _Session, stop_ms: int) -> dict[str, Any]:
    # A clock set back during the session (NTP) would put the stop before the start,
    # which the wire contract refuses: the session then ends where it began.
    stop_ms = max(stop_ms, session.start_ms)
    return {
        "Id": session.id,
        "StartTimestamp": session.start_iso,
        "StopTimestamp": _iso(stop_ms),
        # Wall-clock time from start to stop, pauses included, as Pinpoint's Android
        # and iOS SDKs compute it; 0 if the clock went backwards.
        "Duration": min(max(stop_ms - session.start_ms, 0), _MAX_DURATION_MS),
    }


def _session_id(prefix: str, start_ms: int) -> str:
    # Pinpoint's Android SDK: the unique id trimmed to its last 8 characters (or
    # front-padded with "_"), then the UTC start time as yyyyMMdd-HHmmssSSS.
    return f"{prefix[-8:].rjust(8, '_')}-{_utc(start_ms):%Y%m%d-%H%M%S}{start_ms % 1000:03d}"


def _iso(ms: int) -> str:
    return format_timestamp(_utc(ms))


def _utc(ms: int) -> datetime:
    # Built from integer milliseconds: a float round trip could turn .123 into .122.
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=millis * 1000)


def _is_ms(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0
