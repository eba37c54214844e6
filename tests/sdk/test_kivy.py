"""homing.kivy: the lifecycle binding, handlers on the main thread, and the Android paths.

Kivy's App, EventDispatcher and Clock work without a window: the App is never run here,
its events are dispatched as Kivy's loop would dispatch them, and Clock.tick() plays the
main loop's part. tests/e2e/test_kivy_app.py runs the real app in a window.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import homing
import homing.kivy
from tests.sdk.conftest import FakeClock, FakeCollector
from tests.sdk.test_network import (
    CELLULAR,
    WIFI,
    ConnectivityManager,
    NetworkCapabilities,
    fake_autoclass,
)

# Before Kivy's first import: no command-line parsing, its config out of the real home,
# and Python's logging left as it is.
os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kivy-home-"))
os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
kivy_app = pytest.importorskip("kivy.app", reason="kivy is in the test extra")
from kivy.clock import Clock  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class ShopApp(kivy_app.App):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.own_pauses = 0

    def on_pause(self) -> bool:
        self.own_pauses += 1
        return True


@pytest.fixture
def bound(
    make_analytics: Callable[..., homing.Analytics],
) -> Iterator[tuple[ShopApp, homing.Analytics, Any]]:
    app = ShopApp()
    analytics = make_analytics(shutdown_timeout=1.0)
    binding = homing.kivy.bind(app, analytics, stats_interval=60)
    yield app, analytics, binding
    if binding._ticker is not None:
        binding._ticker.cancel()


def session_events(fake: FakeCollector, analytics: homing.Analytics) -> list[tuple[str, str]]:
    analytics.flush(5)
    return [
        (e["EventType"], e["Session"]["Id"])
        for e in fake.events()
        if e["EventType"].startswith("_session.")
    ]


def wait_for_pause_upload(binding: Any) -> None:
    assert binding._flusher is not None
    binding._flusher.join(10)
    assert not binding._flusher.is_alive()


def test_the_lifecycle_drives_the_sessions(
    bound: tuple[ShopApp, homing.Analytics, Any], clock: FakeClock, fake: FakeCollector
) -> None:
    app, analytics, binding = bound
    app.dispatch("on_start")
    analytics.record_event("Item Bought", attributes={"item": "coffee"})
    clock.advance(10)
    # Kivy's own on_pause still runs, and its answer (keep the app) is what Kivy gets.
    assert app.dispatch("on_pause") is True
    assert app.own_pauses == 1
    assert analytics.push.foreground is False
    wait_for_pause_upload(binding)
    # The upload on pause sent what was recorded, without a flush by the app.
    assert [e["EventType"] for e in fake.events()] == [
        "_session.start", "Item Bought", "_session.pause"
    ]  # fmt: skip
    clock.advance(2)
    app.dispatch("on_resume")
    assert analytics.push.foreground is True
    clock.advance(1)
    app.dispatch("on_pause")
    wait_for_pause_upload(binding)
    clock.advance(6)
    app.dispatch("on_resume")
    app.dispatch("on_stop")
    assert analytics._closed
    kinds = [kind for kind, _ in session_events(fake, analytics)]
    assert kinds == [
        "_session.start", "_session.pause", "_session.resume", "_session.pause",
        "_session.stop", "_session.start", "_session.stop",
    ]  # fmt: skip
    ids = [session for _, session in session_events(fake, analytics)]
    assert len(set(ids[:5])) == 1 and len(set(ids[5:])) == 1 and ids[0] != ids[5]


def test_the_stats_properties_follow_the_analytics(
    bound: tuple[ShopApp, homing.Analytics, Any],
) -> None:
    app, analytics, binding = bound
    seen: list[int] = []
    binding.bind(queued=lambda _binding, value: seen.append(value))
    app.dispatch("on_start")
    analytics.record_event("One")
    analytics.record_event("Two")
    binding.refresh()
    assert binding.queued == 3 and binding.stats.queued == 3  # with _session.start
    analytics.flush(5)
    binding.refresh()
    assert (binding.queued, binding.sent, binding.last_error) == (0, 3, "")
    assert seen == [1, 3, 0]


def test_push_handlers_run_on_the_main_thread(
    bound: tuple[ShopApp, homing.Analytics, Any], caplog: pytest.LogCaptureFixture
) -> None:
    _app, analytics, binding = bound
    calls: list[tuple[str, str]] = []

    @binding.on_silent_push
    def show(message: homing.PushMessage) -> None:
        calls.append((threading.current_thread().name, message.data["offer"]))

    def broken(message: homing.PushMessage) -> None:
        raise RuntimeError("a bug in the app's handler")

    binding.on_silent_push(broken)
    payload = {"pinpoint.notification.silentPush": "1", "offer": "bagels"}
    # The push receiver's thread, or an FCM library's, delivers the message...
    receiver = threading.Thread(
        target=analytics.push.handle_payload, args=(payload,), kwargs={"message_id": "m1"}
    )
    receiver.start()
    receiver.join()
    assert calls == []  # ...and the handler waits for Kivy's main loop
    Clock.tick()
    assert calls == [(threading.main_thread().name, "bagels")]
    # A handler that raises is logged: it must not end the app's main loop.
    assert "the push handler broken failed" in caplog.text


def test_bind_checks_what_it_is_given(make_analytics: Callable[..., homing.Analytics]) -> None:
    analytics = make_analytics()
    with pytest.raises(homing.ConfigurationError, match=r"kivy\.app\.App"):
        homing.kivy.bind(object(), analytics)
    with pytest.raises(homing.ConfigurationError, match="stats_interval"):
        homing.kivy.bind(ShopApp(), analytics, stats_interval=0)
    binding = homing.kivy.bind(ShopApp(), analytics)
    with pytest.raises(homing.ConfigurationError, match="callable"):
        binding.on_push("not a function")


def test_without_kivy_the_sdk_imports_and_bind_says_what_to_install() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["kivy"] = None
        import homing, homing.kivy
        assert homing.kivy.WifiOnly()()  # needs no Kivy
        try:
            homing.kivy.bind(object(), None)
        except homing.ConfigurationError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "pip install kivy" in result.stdout and "buildozer.spec" in result.stdout


@pytest.mark.parametrize(
    ("manager", "enabled", "allowed"),
    [
        (ConnectivityManager(NetworkCapabilities(WIFI), False, "wlan0"), True, True),
        (ConnectivityManager(NetworkCapabilities(CELLULAR), True, "rmnet0"), True, False),
        (ConnectivityManager(NetworkCapabilities(CELLULAR), True, "rmnet0"), False, True),
    ],
)
def test_wifi_only_asks_android_through_pyjnius(
    monkeypatch: pytest.MonkeyPatch, manager: ConnectivityManager, enabled: bool, allowed: bool
) -> None:
    monkeypatch.setenv("ANDROID_ARGUMENT", "/data/user/0/org.example.shop/files/app")
    monkeypatch.setitem(sys.modules, "jnius", SimpleNamespace(autoclass=fake_autoclass(manager)))
    wifi_only = homing.kivy.WifiOnly(enabled)
    assert wifi_only() is allowed
    if enabled:
        assert wifi_only.policy.describe().source == "android"


# A python-for-android process as platformdirs sees one: ANDROID_DATA and ANDROID_ROOT
# set, no SHELL, and pyjnius answering for the activity's context.
FAKE_JNIUS = """
import os

class JavaException(Exception):
    pass

class File:
    def __init__(self, path):
        self.path = path
    def getParentFile(self):
        return File(os.path.dirname(self.path))
    def getAbsolutePath(self):
        return self.path

class Context:
    def getFilesDir(self):
        return File(os.path.join(os.environ["FAKE_APP_FOLDER"], "files"))

class PythonActivity:
    mActivity = Context()

def autoclass(name):
    if name == "org.kivy.android.PythonActivity":
        return PythonActivity
    if name == "android.content.Context":  # where platformdirs before 4.3 looked
        return Context()
    raise JavaException(name)
"""


def test_on_android_the_files_go_to_the_apps_private_directory(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "jnius.py").write_text(FAKE_JNIUS)
    folder = tmp_path / "data" / "user" / "0" / "org.example.shop"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SHELL", "PREFIX", "XDG_DATA_HOME") and not key.startswith("HOMING_")
    }
    env.update(
        ANDROID_DATA="/data",
        ANDROID_ROOT="/system",
        ANDROID_ARGUMENT=str(folder / "files" / "app"),
        FAKE_APP_FOLDER=str(folder),
        PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT / "sdk")]),
    )
    script = textwrap.dedent(
        """
        import homing
        analytics = homing.Analytics("shop", "http://127.0.0.1:9", "hm_ingest_x",
                                     shutdown_timeout=0)
        analytics.record_event("Opened")
        print(analytics._store.path)
        print(analytics._state.path)
        analytics.close()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    store, state = (Path(line) for line in result.stdout.split())
    private = folder / "files"
    assert store.is_relative_to(private) and state.is_relative_to(private), result.stdout
    assert store.name == "events.sqlite3" and store.exists() and state.exists()


# The Kivy section of docs/sdk.md and the sample's README show code from the sample,
# which tests/e2e/test_kivy_app.py runs in a window.

SAMPLE_DIR = ROOT / "samples" / "kivy_app"


def fenced(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", markdown, re.M | re.S)


def test_the_docs_binding_example_is_the_samples_code() -> None:
    section = (ROOT / "docs" / "sdk.md").read_text().split("## Kivy apps", 1)[1]
    (example,) = fenced(section.split("\n## ", 1)[0].split("### Push handlers")[0], "py")
    assert example in (SAMPLE_DIR / "main.py").read_text()


def test_the_requirements_line_is_buildozer_specs() -> None:
    spec = configparser.ConfigParser()
    spec.read(SAMPLE_DIR / "buildozer.spec")
    line = f"requirements = {spec['app']['requirements']}\n"
    assert "orjson" not in line
    for doc in (ROOT / "docs" / "sdk.md", SAMPLE_DIR / "README.md"):
        assert line in fenced(doc.read_text(), "ini"), doc


def test_the_readmes_firebase_callback_reaches_a_main_thread_handler(
    bound: tuple[ShopApp, homing.Analytics, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, analytics, binding = bound
    app.analytics = analytics
    monkeypatch.setattr(kivy_app.App, "_running_app", app)
    shown: list[dict[str, Any]] = []
    binding.on_silent_push(lambda message: shown.append(message.data))
    (callback,) = fenced((SAMPLE_DIR / "README.md").read_text(), "py")
    namespace: dict[str, Any] = {"App": kivy_app.App}
    exec(callback, namespace)
    silent = {"pinpoint.notification.silentPush": "1", "pinpoint.jsonBody": '{"offer": "x"}'}
    namespace["on_fcm_message"](silent, "0:1700000000%abc")
    namespace["on_fcm_message"](silent, "0:1700000000%abc")  # FCM delivered it twice
    Clock.tick()
    assert shown == [{"offer": "x"}]
