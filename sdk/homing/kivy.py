"""Kivy apps: an `Analytics` bound to a Kivy `App`'s lifecycle, push handlers on Kivy's
main thread, and the upload state as Kivy properties.

Kivy is imported by `bind()` only: the SDK never depends on it, and ``import homing.kivy``
works without it. `WifiOnly` needs no Kivy at all.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from homing._exceptions import ConfigurationError
from homing._network import NetworkPolicy

if TYPE_CHECKING:
    from homing._client import Analytics
    from homing.push import PushMessage

__all__ = ["WifiOnly", "bind"]

logger = logging.getLogger("homing")


class WifiOnly:
    """A network policy the app can switch at run time, e.g. from a settings switch.

    Off, uploads go over any link; on, only over an unmetered one (Wi-Fi, Ethernet), as
    ``NetworkPolicy("unmetered")`` decides: under python-for-android it asks Android's
    ConnectivityManager through pyjnius.

    Example::

        wifi_only = homing.kivy.WifiOnly()
        analytics = homing.Analytics(app_id, url, token, network_policy=wifi_only)
        wifi_only.enabled = True  # the user turned "Wi-Fi only" on
    """

    def __init__(self, enabled: bool = False, *, unknown: str = "deny") -> None:
        self.enabled = enabled
        self.policy = NetworkPolicy("unmetered", unknown=unknown)

    def __call__(self) -> bool:
        return not self.enabled or self.policy.allows()

    def __repr__(self) -> str:
        return f"WifiOnly(enabled={self.enabled!r})"


def bind(
    app: Any,
    analytics: Analytics,
    *,
    pause_flush_timeout: float | None = None,
    stats_interval: float = 1.0,
) -> Any:
    """Bind `analytics` to the Kivy `app`; return a `KivyBinding` (a Kivy EventDispatcher).

    - ``on_start`` starts a session;
    - ``on_pause`` pauses it and starts an upload in the background, bounded by
      `pause_flush_timeout` (the Analytics' ``shutdown_timeout`` by default), since a
      mobile OS may kill a paused app;
    - ``on_resume`` resumes it: within the resume window (5 s) the session goes on;
    - ``on_stop`` stops it and closes the Analytics.

    The binding's Kivy properties ``stats`` (a `homing.Stats`), ``queued``, ``sent`` and
    ``last_error`` follow ``analytics.stats()``, refreshed every `stats_interval` seconds
    on the main thread. Handlers registered with ``binding.on_push`` and
    ``binding.on_silent_push`` run on Kivy's main thread, where widgets may be touched.

    Example::

        class ShopApp(App):
            def build(self):
                self.analytics = homing.Analytics(app_id, url, token, push=True)
                self.homing = homing.kivy.bind(self, self.analytics)
                self.homing.on_silent_push(lambda message: show(message.data))
                ...
    """
    try:
        binding_class = _binding_class()
    except ImportError as exc:
        raise ConfigurationError(
            f"homing.kivy.bind needs Kivy ({exc}); pip install kivy, or list kivy in "
            "buildozer.spec's requirements"
        ) from None
    if not callable(getattr(app, "bind", None)) or not hasattr(app, "on_pause"):
        raise ConfigurationError(f"bind() takes a kivy.app.App, not {type(app).__name__}")
    if pause_flush_timeout is None:
        pause_flush_timeout = analytics.shutdown_timeout
    if not isinstance(pause_flush_timeout, (int, float)) or pause_flush_timeout < 0:
        raise ConfigurationError("pause_flush_timeout must be a number of seconds, 0 or more")
    if not isinstance(stats_interval, (int, float)) or stats_interval <= 0:
        raise ConfigurationError("stats_interval must be a positive number of seconds")
    return binding_class(app, analytics, float(pause_flush_timeout), float(stats_interval))


def _guarded(what: str, call: Callable[[], Any]) -> None:
    # A lifecycle callback runs in Kivy's main loop: an exception there ends the app.
    try:
        call()
    except Exception:
        logger.exception("homing: %s failed", what)


@functools.cache
def _binding_class() -> type[Any]:
    from kivy.clock import Clock
    from kivy.event import EventDispatcher
    from kivy.properties import NumericProperty, ObjectProperty, StringProperty

    class KivyBinding(EventDispatcher):  # type: ignore[misc]
        stats = ObjectProperty(None, allownone=True)
        queued = NumericProperty(0)
        sent = NumericProperty(0)
        last_error = StringProperty("")

        def __init__(
            self, app: Any, analytics: Analytics, pause_flush_timeout: float, interval: float
        ) -> None:
            super().__init__()
            self.app = app
            self.analytics = analytics
            self.pause_flush_timeout = pause_flush_timeout
            self._interval = interval
            self._ticker: Any = None
            self._flusher: threading.Thread | None = None
            app.bind(
                on_start=self._on_start,
                on_pause=self._on_pause,
                on_resume=self._on_resume,
                on_stop=self._on_stop,
            )

        # Each handler returns None, so that the app's own on_pause and the rest still
        # run (Kivy stops at a bound callback that returns True).

        def _on_start(self, *_: Any) -> None:
            _guarded("starting the session", self.analytics.start_session)
            if self._ticker is None:
                self._ticker = Clock.schedule_interval(self.refresh, self._interval)
            self.refresh()

        def _on_pause(self, *_: Any) -> None:
            self.analytics.push.foreground = False
            _guarded("pausing the session", self.analytics.pause_session)
            flusher = self._flusher
            if flusher is None or not flusher.is_alive():
                # Not on the main thread: the OS gives a paused app little time, and the
                # UI must not freeze while the network is slow.
                self._flusher = threading.Thread(
                    target=self._flush, name="homing-kivy-pause", daemon=True
                )
                self._flusher.start()

        def _flush(self) -> None:
            _guarded("the upload on pause", lambda: self.analytics.flush(self.pause_flush_timeout))
            Clock.schedule_once(self.refresh, 0)

        def _on_resume(self, *_: Any) -> None:
            self.analytics.push.foreground = True
            _guarded("resuming the session", self.analytics.resume_session)
            self.refresh()

        def _on_stop(self, *_: Any) -> None:
            if self._ticker is not None:
                self._ticker.cancel()
                self._ticker = None
            _guarded("closing the Analytics", self.analytics.close)
            self.refresh()

        def refresh(self, *_: Any) -> None:
            """Read ``analytics.stats()`` into the properties now (on the main thread)."""
            try:
                stats = self.analytics.stats()
            except Exception:
                logger.exception("homing: reading the stats failed")
                return
            self.stats = stats
            self.queued = stats.queued
            self.sent = stats.sent
            self.last_error = stats.last_error or ""

        def on_push(self, handler: Callable[[PushMessage], Any]) -> Callable[..., Any]:
            """Call `handler(message)` on Kivy's main thread for every visible push."""
            self.analytics.on_push(self._on_main_thread(handler))
            return handler

        def on_silent_push(self, handler: Callable[[PushMessage], Any]) -> Callable[..., Any]:
            """Call `handler(message)` on Kivy's main thread for every silent push."""
            self.analytics.on_silent_push(self._on_main_thread(handler))
            return handler

        def _on_main_thread(
            self, handler: Callable[[PushMessage], Any]
        ) -> Callable[[PushMessage], None]:
            if not callable(handler):
                raise ConfigurationError("a push handler must be a callable taking a message")
            name = getattr(handler, "__name__", repr(handler))

            def relay(message: PushMessage) -> None:
                Clock.schedule_once(
                    lambda _dt: _guarded(f"the push handler {name}", lambda: handler(message)),
                    0,
                )

            relay.__name__ = name
            return relay

    return KivyBinding
