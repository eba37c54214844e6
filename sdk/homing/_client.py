"""`homing.Analytics`: the facade that wires events, store, state, sessions and uploader."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import os
import re
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import platformdirs

from homing import _json
from homing._endpoint import Endpoint
from homing._events import EventBuilder, check_attribute, check_metric
from homing._exceptions import ConfigurationError, InvalidEndpointError, InvalidEventError
from homing._network import NetworkPolicy, coerce_policy
from homing._push import Handler, Push
from homing._sessions import Sessions
from homing._state import State, TableView
from homing._store import Store
from homing._types import Clock, FlushResult, Stats
from homing._uploader import Counters, Uploader
from homing.wire import WireError, check_event, check_id

logger = logging.getLogger("homing")

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_OPEN: weakref.WeakSet[Analytics] = weakref.WeakSet()


class Analytics:
    """Records events offline-first and uploads them to a Homing collector in batches.

    Example::

        analytics = homing.Analytics("e6f1...", "https://collector.example", "hm_ingest_...")
        analytics.record_event("Item Bought", attributes={"item": "XYZ"}, metrics={"price": 1.99})
        with analytics.session():
            ...
        analytics.close()  # one last flush, bounded by shutdown_timeout
    """

    def __init__(
        self,
        app_id: str,
        collector_url: str,
        api_key: str,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        flush_interval: float = 60.0,
        network_policy: str | Callable[[], bool] | NetworkPolicy = "any",
        max_storage_bytes: int = 5 * 1024 * 1024,
        shutdown_timeout: float = 2.0,
        app_package_name: str | None = None,
        app_title: str | None = None,
        app_version_code: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = time.time,
        session_resume_window: float = 5.0,
        push: bool = False,
        notifier: Handler | None = None,
    ) -> None:
        _check_config(app_id, api_key, flush_interval, max_storage_bytes, shutdown_timeout)
        url = _check_url(collector_url)
        self.app_id = app_id
        self.shutdown_timeout = shutdown_timeout
        self._clock = clock
        self._closed = False
        self._left: int | None = None  # what the store held when close() released it
        self._pending = 0
        self._dropped: dict[str, int] = {}
        policy = coerce_policy(network_policy)
        try:
            self._events = EventBuilder(
                app_package_name=app_package_name,
                app_title=app_title,
                app_version_code=app_version_code,
            )
        except InvalidEventError as exc:
            raise ConfigurationError(str(exc)) from None
        if data_dir is None:
            folder = app_id if _SAFE_NAME.fullmatch(app_id) else _digest(app_id)
            data_dir = Path(platformdirs.user_data_dir("homing")) / folder
        directory = Path(data_dir)
        self._store = Store(directory / "events.sqlite3", max_bytes=max_storage_bytes, clock=clock)
        self._state = State(directory / "state.sqlite3")
        self._endpoint = Endpoint(
            TableView(self._state, "endpoint"), app_id=app_id, app_version_code=app_version_code
        )
        self._counters = Counters()
        app_url = f"{url}/v1/apps/{quote(app_id, safe='')}"
        endpoint_url = f"{app_url}/endpoints/{quote(self._endpoint.id, safe='')}"
        self._uploader = Uploader(
            store=self._store,
            url=f"{app_url}/events",
            endpoint=self._endpoint,
            endpoint_url=endpoint_url,
            api_key=api_key,
            endpoint_id=self._endpoint.id,
            profile=lambda: self._endpoint.outgoing(self._clock()),
            policy=policy,
            flush_interval=flush_interval,
            clock=clock,
            transport=transport,
            counters=self._counters,
        )
        self._sessions = Sessions(
            record=self._record_session_event,
            state=TableView(self._state, "session"),
            clock=clock,
            resume_window=session_resume_window,
            id_prefix=self._endpoint.id,
        )
        if notifier is not None and not callable(notifier):
            raise ConfigurationError("notifier must be a callable taking a homing.PushMessage")
        self.push = Push(
            stream_url=f"{endpoint_url}/stream",
            acks_url=f"{endpoint_url}/stream/acks",
            api_key=api_key,
            state=TableView(self._state, "push"),
            policy=policy,
            record=self._record_push_event,
            transport=transport,
            notifier=notifier,
        )
        _OPEN.add(self)
        self._sessions.recover()
        if not self._store.is_empty():
            self._uploader.start()  # leftovers from the last run go at the first interval
        if push and notifier is not None:
            self.push.start()
        elif push:
            self.push.autostart = True

    # -- events -------------------------------------------------------------------------

    def record_event(
        self,
        event_type: str,
        attributes: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Validate and store one event; it is on disk when this returns.

        Raises `homing.InvalidEventError` if the event breaks the wire contract.

        Example::

            analytics.record_event("Level Up", attributes={"level": "3"}, metrics={"xp": 120})
        """
        self._sessions.touch()
        event_id, event = self._events.build(
            event_type, attributes, metrics, self._clock(), self._sessions.current()
        )
        self._put(event_id, event)

    def _record_session_event(
        self, event_type: str, session: dict[str, Any], timestamp: float
    ) -> None:
        event_id, event = self._events.build(event_type, None, None, timestamp, session)
        self._put(event_id, event)
        if event_type == "_session.start" and not self._closed:
            # As Pinpoint's SDKs do: the profile goes to the collector at each session start.
            self._endpoint.touch(timestamp)
            self._uploader.notify_endpoint()
            self._uploader.start()

    def _record_push_event(self, event_type: str, attributes: dict[str, str]) -> None:
        event_id, event = self._events.build(
            event_type, attributes, None, self._clock(), self._sessions.current()
        )
        self._put(event_id, event)

    # -- the endpoint -------------------------------------------------------------------

    @property
    def endpoint_id(self) -> str:
        """This installation's endpoint id: a UUID kept in the data directory."""
        return self._endpoint.id

    def endpoint_profile(self) -> dict[str, Any]:
        """The profile as the collector gets it (what the device tells and what the app set).

        Example: ``analytics.endpoint_profile()["Demographic"]["Platform"]``
        """
        return self._endpoint.profile(self._clock())

    def update_endpoint(
        self,
        *,
        user_id: str | None = None,
        user_attributes: Mapping[str, str | list[str] | None] | None = None,
        attributes: Mapping[str, str | list[str] | None] | None = None,
        metrics: Mapping[str, float] | None = None,
        address: str | None = None,
        channel_type: str | None = None,
        opt_out: bool | str | None = None,
        location: Mapping[str, str | float] | None = None,
        demographic: Mapping[str, str] | None = None,
    ) -> None:
        """Merge into the endpoint profile; it is on disk when this returns.

        A given attribute, metric or field replaces that one and the rest are kept; an
        attribute set to ``[]`` or None is removed. Raises `homing.InvalidEndpointError`
        if the profile would break a limit. The profile goes to the collector in the
        background, once for any number of updates made meanwhile.

        Example::

            analytics.update_endpoint(
                attributes={"interests": ["cooking", "cycling"]},
                metrics={"purchases": 3},
                location={"Country": "FR", "City": "Lyon"},
                opt_out=False,
            )
        """
        if self._closed:
            self._drop("closed", "homing: Analytics is closed; endpoint update dropped")
            return
        self._endpoint.update(
            self._clock(),
            user_id=user_id,
            user_attributes=user_attributes,
            attributes=attributes,
            metrics=metrics,
            address=address,
            channel_type=channel_type,
            opt_out=opt_out,
            location=location,
            demographic=demographic,
        )
        self._uploader.notify_endpoint()
        self._uploader.start()

    def identify(self, user_id: str, **user_attributes: str | list[str]) -> None:
        """Link this endpoint to a user, with optional user attributes.

        Example::

            analytics.identify("user-42", plan="pro", teams=["red", "blue"])
        """
        if not isinstance(user_id, str):
            raise InvalidEndpointError(
                "User.UserId", f"must be a string, not {type(user_id).__name__}"
            )
        self.update_endpoint(user_id=user_id, user_attributes=user_attributes or None)

    def on_push(self, handler: Handler) -> Handler:
        """Register a handler for visible pushes; a decorator or a plain call.

        Example::

            @analytics.on_push
            def show(message: homing.PushMessage) -> None:
                print(message.title, message.body)
        """
        return self.push.on_push(handler)

    def on_silent_push(self, handler: Handler) -> Handler:
        """Register a handler for silent pushes, which are never displayed.

        Example::

            @analytics.on_silent_push
            def apply(message: homing.PushMessage) -> None:
                settings.update(message.data)
        """
        return self.push.on_silent_push(handler)

    def _put(self, event_id: str, event: dict[str, Any]) -> None:
        if self._closed:
            self._drop("closed", "homing: Analytics is closed; event %s dropped", event_id)
            return
        try:
            stored = self._store.put(event_id, _json.dumps(event))
        except sqlite3.Error as exc:
            self._drop("store_error", "homing: cannot store event %s: %s", event_id, exc)
            self._counters.last_error = f"store: {exc}"
            return
        if not stored:  # close() released the store after the check above
            self._drop("closed", "homing: Analytics is closed; event %s dropped", event_id)
            return
        self._pending += 1
        if self._pending >= 100:
            self._pending = 0
            self._uploader.notify()
        self._uploader.start()

    def _drop(self, reason: str, message: str, *args: object) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        logger.warning(message, *args)

    # -- global attributes and metrics --------------------------------------------------

    def set_global_attribute(self, key: str, value: str) -> None:
        """Add an attribute to every event recorded from now on (the event's own wins).

        Example::

            analytics.set_global_attribute("plan", "pro")
        """
        check_attribute(key, value)
        _check_alone({"Attributes": {key: value}})
        self._events.global_attributes = {**self._events.global_attributes, key: value}

    def remove_global_attribute(self, key: str) -> None:
        """Stop adding `key` to events. Example: ``analytics.remove_global_attribute("plan")``."""
        attributes = dict(self._events.global_attributes)
        attributes.pop(key, None)
        self._events.global_attributes = attributes

    def set_global_metric(self, key: str, value: float) -> None:
        """Add a metric to every event recorded from now on (the event's own wins).

        Example::

            analytics.set_global_metric("build", 42)
        """
        check_metric(key, value)
        _check_alone({"Metrics": {key: value}})
        self._events.global_metrics = {**self._events.global_metrics, key: value}

    def remove_global_metric(self, key: str) -> None:
        """Stop adding `key` to events. Example: ``analytics.remove_global_metric("build")``."""
        metrics = dict(self._events.global_metrics)
        metrics.pop(key, None)
        self._events.global_metrics = metrics

    # -- sessions -----------------------------------------------------------------------

    # After close() the session calls do nothing: close() stopped the session, and the
    # state file is released for good.

    def start_session(self) -> None:
        """Start a session (stopping any open one). Example: ``analytics.start_session()``."""
        if not self._closed:
            self._sessions.start()

    def pause_session(self) -> None:
        """Pause the session, e.g. when the app goes to the background."""
        if not self._closed:
            self._sessions.pause()

    def resume_session(self) -> None:
        """Resume: within the resume window the session continues, else a new one starts."""
        if not self._closed:
            self._sessions.resume()

    def stop_session(self) -> None:
        """Stop the session. Example: ``analytics.stop_session()``."""
        if not self._closed:
            self._sessions.stop()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """A session around a block.

        Example::

            with analytics.session():
                analytics.record_event("Play")
        """
        self.start_session()
        try:
            yield
        finally:
            self.stop_session()

    # -- upload, stats, close -----------------------------------------------------------

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Upload what is waiting now, in the calling thread; never raises on network errors.

        Example::

            result = analytics.flush(timeout=5)
            print(result.sent, result.remaining)
        """
        if self._closed:
            return FlushResult(remaining=self._queued()[0], error="closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._uploader.drain(deadline)

    def stats(self) -> Stats:
        """Counters since creation. Example: ``analytics.stats().dropped``."""
        queued, store_dropped = self._queued()
        dropped: dict[str, int] = {}
        for source in (store_dropped, self._counters.dropped, self._dropped):
            for reason, count in source.items():
                dropped[reason] = dropped.get(reason, 0) + count
        return Stats(
            queued=queued,
            sent=self._counters.sent,
            rejected=self._counters.rejected,
            dropped=dropped,
            last_error=self._counters.last_error,
        )

    def close(self) -> FlushResult:
        """Stop any session, make one last upload within `shutdown_timeout`, release files.

        What is not sent stays on disk for the next launch. Example::

            with homing.Analytics(app_id, url, key) as analytics:
                analytics.record_event("Start")
        """
        if self._closed:
            return FlushResult(error="closed")
        self._sessions.stop()
        self._closed = True
        _OPEN.discard(self)
        try:
            self.push.stop(min(self.shutdown_timeout, 1.0))
        except Exception:
            logger.exception("homing: stopping the push receiver failed")
        try:
            result = self._uploader.close(self.shutdown_timeout)
        except Exception as exc:
            logger.exception("homing: the last upload failed")
            result = FlushResult(error=repr(exc))
        self._left = self._queued()[0]
        self._store.close()
        self._state.close()
        return result

    def _queued(self) -> tuple[int, dict[str, int]]:
        # After close() the store's connection is gone: asking it would raise into the app.
        if self._left is not None:
            return self._left, dict(self._store.dropped)
        try:
            return self._store.counts()
        except sqlite3.Error:
            return -1, dict(self._store.dropped)

    def __enter__(self) -> Analytics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        self._sessions.after_fork_in_child()
        self._store.after_fork_in_child()
        self._state.after_fork_in_child()
        self._uploader.after_fork_in_child()
        self.push.after_fork_in_child()


def _check_config(
    app_id: object,
    api_key: object,
    flush_interval: object,
    max_storage_bytes: object,
    shutdown_timeout: object,
) -> None:
    try:
        check_id(app_id, "app_id")
    except WireError as exc:
        raise ConfigurationError(f"{exc}; pass the application id the collector gave") from None
    if type(api_key) is not str or not api_key or not api_key.isprintable():
        raise ConfigurationError("api_key must be an ingest key's token, e.g. hm_ingest_...")
    for name, value in (("flush_interval", flush_interval), ("shutdown_timeout", shutdown_timeout)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigurationError(f"{name} must be a number of seconds")
        if not math.isfinite(value) or value < 0 or (name == "flush_interval" and value == 0):
            raise ConfigurationError(f"{name} must be a positive number of seconds, not {value}")
    if type(max_storage_bytes) is not int or max_storage_bytes < 64 * 1024:
        raise ConfigurationError("max_storage_bytes must be an int of at least 65536")


def _check_url(url: object) -> str:
    try:
        parsed = httpx.URL(url)  # type: ignore[arg-type]
    except (TypeError, httpx.InvalidURL):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(
            f"collector_url {url!r} must be an http:// or https:// URL, e.g. https://collector.example"
        )
    return str(url).rstrip("/")


def _check_alone(fields: dict[str, Any]) -> None:
    try:
        check_event({"EventType": "global", "Timestamp": "2026-01-01T00:00:00.000Z", **fields})
    except WireError as exc:
        raise InvalidEventError(exc.field, exc.rule) from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _close_all() -> None:
    for analytics in list(_OPEN):
        try:
            analytics.close()
        except Exception:
            logger.exception("homing: closing at exit failed")


def _after_fork_in_child() -> None:
    for analytics in list(_OPEN):
        analytics._after_fork_in_child()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
