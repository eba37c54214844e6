"""Runs samples/kivy_app for real and drives it through Kivy's own event dispatch.

Started by tests/e2e/test_kivy_app.py in a child process, with DISPLAY on a virtual
screen, HOMING_URL, HOMING_APP_ID and HOMING_INGEST_TOKEN for the app, and
KIVY_DRIVER_ADMIN ("access key id:secret") for the boto3 client that sends the push.

    python tests/e2e/kivy_driver.py SCREENSHOT_BASE

The scenario: two purchases and a switch flipped on and off; a pause; a resume 2 s
later (the session goes on); a purchase; a pause; a resume 6 s later (a new session);
a silent push sent with boto3, read back from the inbox label on the main thread; a
screenshot; and a stop. The last line printed is a JSON report.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kivy.config import Config

Config.set("graphics", "width", "420")
Config.set("graphics", "height", "640")
Config.set("graphics", "resizable", "0")

from kivy.clock import Clock  # noqa: E402
from kivy.core.window import Window  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "samples" / "kivy_app"))

import main as sample  # noqa: E402

OFFER = "bagels-2-for-1"
DEADLINE = 45.0  # seconds for the whole scenario; the test's own timeout is above it


def send_silent_push(app_id: str, endpoint_id: str) -> str:
    import boto3
    from botocore.config import Config as BotoConfig

    key_id, _, secret = os.environ["KIVY_DRIVER_ADMIN"].partition(":")
    client = boto3.client(
        "pinpoint",
        endpoint_url=os.environ["HOMING_URL"],
        region_name="eu-west-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=BotoConfig(retries={"max_attempts": 1}),
    )
    answer = client.send_messages(
        ApplicationId=app_id,
        MessageRequest={
            "Endpoints": {endpoint_id: {}},
            "MessageConfiguration": {
                "DefaultPushNotificationMessage": {"SilentPush": True, "Data": {"offer": OFFER}}
            },
        },
    )
    return str(answer["MessageResponse"]["EndpointResult"][endpoint_id]["DeliveryStatus"])


class Driver:
    def __init__(self, app: sample.ShopApp, screenshot_base: str) -> None:
        self.app = app
        self.screenshot_base = screenshot_base
        self.report: dict[str, Any] = {"steps": []}
        self.started = time.monotonic()
        self.steps = self.scenario()

    def log(self, step: str) -> None:
        self.report["steps"].append([round(time.monotonic() - self.started, 2), step])

    def next(self, *_: Any) -> None:
        try:
            delay = next(self.steps)
        except StopIteration:
            return
        except Exception as exc:
            self.report["error"] = f"{type(exc).__name__}: {exc}"
            self.app.stop()
            return
        Clock.schedule_once(self.next, delay)

    def scenario(self) -> Iterator[float]:
        ids = self.app.root.ids
        ids.buy_coffee.trigger_action(0.05)
        ids.buy_bagel.trigger_action(0.05)
        self.log("bought coffee and bagel")
        yield 0.3
        ids.wifi_only.active = True
        ids.wifi_only.active = False
        ids.cart.trigger_action(0.05)
        self.log("switch on and off, cart viewed")
        yield 0.3
        self.app.dispatch("on_pause")
        self.log("paused")
        yield 2.0
        self.app.dispatch("on_resume")
        self.log("resumed after 2 s")
        yield 0.3
        ids.buy_juice.trigger_action(0.05)
        self.log("bought juice")
        yield 0.3
        self.app.dispatch("on_pause")
        self.log("paused")
        yield 6.0
        self.app.dispatch("on_resume")
        self.log("resumed after 6 s")
        yield 0.3
        sent: dict[str, str] = {}
        sender = threading.Thread(
            target=lambda: sent.update(
                status=send_silent_push(self.app.analytics.app_id, self.app.analytics.endpoint_id)
            ),
            daemon=True,
        )
        sender.start()
        self.log("push sent")
        # Polled on the main thread, through the widget tree, as a user would see it.
        while OFFER not in ids.inbox.text:
            if time.monotonic() - self.started > DEADLINE:
                raise TimeoutError(f"the push never reached the inbox: {ids.inbox.text!r}")
            yield 0.2
        self.report["push_status"] = sent.get("status")
        self.report["inbox"] = ids.inbox.text
        self.log("push shown")
        yield 1.2  # a stats refresh, and a frame drawn with the new text
        self.report["sync"] = ids.sync.text
        self.report["screenshot"] = Window.screenshot(name=self.screenshot_base)
        self.log("screenshot")
        yield 0.1
        self.app.stop()


def main() -> int:
    app = sample.ShopApp(sample.read_settings(dict(os.environ)))
    driver = Driver(app, sys.argv[1])

    def begin(*_: Any) -> None:
        # Returns None: a callback that returns something true would stop Kivy's dispatch
        # of on_start before the SDK's binding saw it.
        Clock.schedule_once(driver.next, 0.5)

    app.bind(on_start=begin)

    def give_up(_dt: float) -> None:
        driver.report["error"] = "the scenario did not finish in time"
        app.stop()

    watchdog = Clock.schedule_once(give_up, DEADLINE + 10)
    app.run()
    watchdog.cancel()
    stats = app.analytics.stats()
    driver.report.update(
        endpoint_id=app.analytics.endpoint_id,
        queued=stats.queued,
        sent=stats.sent,
        last_error=stats.last_error,
        closed=app.analytics._closed,
    )
    print(json.dumps(driver.report))
    return 0 if "error" not in driver.report else 1


if __name__ == "__main__":
    sys.exit(main())
