"""Homing Shop: a small Kivy app that records what its user does with the Homing SDK.

Buttons record events with attributes and metrics, a switch limits uploads to Wi-Fi, a
label shows what is queued and sent, and an inbox shows silent pushes as they arrive.

    export HOMING_URL=http://127.0.0.1:8080
    export HOMING_APP_ID=...            # printed by `homing-collector apps create`
    export HOMING_INGEST_TOKEN=...      # the ingest key's bearer token, hm_ingest_...
    python samples/kivy_app/main.py

On a phone there is no environment to set: put the three settings in a `homing.json`
beside this file ({"HOMING_URL": ..., "HOMING_APP_ID": ..., "HOMING_INGEST_TOKEN": ...}),
which buildozer packages with the app. See README.md here for the Android build.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.lang import Builder
from kivy.properties import NumericProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout

import homing
import homing.kivy

SETTINGS = ("HOMING_URL", "HOMING_APP_ID", "HOMING_INGEST_TOKEN")
PRODUCTS = {"coffee": 2.50, "bagel": 1.80, "juice": 3.20, "muffin": 2.10}

Builder.load_string("""
#:import dp kivy.metrics.dp
<ShopButton@Button>:
    halign: "center"
    font_size: "17sp"
    background_normal: ""
    background_color: 0.16, 0.45, 0.62, 1

<Shop>:
    orientation: "vertical"
    padding: dp(16)
    spacing: dp(10)
    canvas.before:
        Color:
            rgba: 0.97, 0.96, 0.93, 1
        Rectangle:
            pos: self.pos
            size: self.size
    Label:
        text: "Homing Shop"
        font_size: "26sp"
        bold: True
        color: 0.13, 0.2, 0.3, 1
        size_hint_y: None
        height: dp(44)
    GridLayout:
        cols: 2
        spacing: dp(8)
        size_hint_y: None
        height: dp(140)
        ShopButton:
            id: buy_coffee
            text: "Coffee\\n2.50"
            on_release: app.buy("coffee")
        ShopButton:
            id: buy_bagel
            text: "Bagel\\n1.80"
            on_release: app.buy("bagel")
        ShopButton:
            id: buy_juice
            text: "Juice\\n3.20"
            on_release: app.buy("juice")
        ShopButton:
            id: buy_muffin
            text: "Muffin\\n2.10"
            on_release: app.buy("muffin")
    Button:
        id: cart
        text: "View cart (%d)" % app.cart_items
        size_hint_y: None
        height: dp(44)
        background_normal: ""
        background_color: 0.85, 0.5, 0.2, 1
        on_release: app.view_cart()
    BoxLayout:
        size_hint_y: None
        height: dp(40)
        Label:
            text: "Upload on Wi-Fi only"
            color: 0.13, 0.2, 0.3, 1
        Switch:
            id: wifi_only
            on_active: app.set_wifi_only(self.active)
    Label:
        id: sync
        text: app.sync_text
        color: 0.3, 0.35, 0.4, 1
        size_hint_y: None
        height: dp(32)
    Label:
        text: "Inbox"
        bold: True
        color: 0.13, 0.2, 0.3, 1
        size_hint_y: None
        height: dp(28)
    Label:
        id: inbox
        text: app.inbox_text
        color: 0.1, 0.4, 0.2, 1
        text_size: self.size
        halign: "center"
        valign: "top"
""")


class Shop(BoxLayout):
    pass


class ShopApp(App):
    sync_text = StringProperty("not synced yet")
    inbox_text = StringProperty("(no messages)")
    cart_items = NumericProperty(0)

    def __init__(self, settings: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.wifi_only = homing.kivy.WifiOnly()
        self.analytics = homing.Analytics(
            settings["HOMING_APP_ID"],
            settings["HOMING_URL"],
            settings["HOMING_INGEST_TOKEN"],
            app_title="Homing Shop",
            app_version_code="1.0.0",
            network_policy=self.wifi_only,
            flush_interval=10.0,
            push=True,
        )
        # Sessions follow on_start, on_pause, on_resume and on_stop from here on.
        self.homing = homing.kivy.bind(self, self.analytics)
        self.homing.bind(stats=self.show_sync_state)
        # Called on Kivy's main thread, so the handler may touch widgets.
        self.homing.on_silent_push(self.show_in_inbox)
        self.homing.on_push(self.show_in_inbox)

    def build(self) -> Shop:
        self.title = "Homing Shop"
        return Shop()

    def buy(self, item: str) -> None:
        self.cart_items += 1
        self.analytics.record_event(
            "Item Bought",
            attributes={"item": item, "screen": "shop"},
            metrics={"price": PRODUCTS[item], "quantity": 1},
        )

    def view_cart(self) -> None:
        self.analytics.record_event("Cart Viewed", metrics={"items": self.cart_items})

    def set_wifi_only(self, active: bool) -> None:
        self.wifi_only.enabled = active
        self.analytics.record_event(
            "Setting Changed", attributes={"wifi_only": "on" if active else "off"}
        )

    def show_sync_state(self, _binding: Any, stats: homing.Stats | None) -> None:
        if stats is None:
            return
        state = f"queued {stats.queued} · sent {stats.sent}"
        self.sync_text = f"{state} · {stats.last_error}" if stats.last_error else state

    def show_in_inbox(self, message: homing.PushMessage) -> None:
        shown = message.title or ", ".join(f"{k}: {v}" for k, v in sorted(message.data.items()))
        old = "" if self.inbox_text == "(no messages)" else self.inbox_text
        self.inbox_text = "\n".join(line for line in (shown, old) if line)


def read_settings(environ: dict[str, str]) -> dict[str, str]:
    found = {name: environ[name] for name in SETTINGS if environ.get(name)}
    packaged = Path(__file__).with_name("homing.json")
    if len(found) < len(SETTINGS) and packaged.exists():
        found = {**json.loads(packaged.read_text()), **found}
    missing = [name for name in SETTINGS if not found.get(name)]
    if missing:
        raise SystemExit(f"kivy_app: set {', '.join(missing)} (or put them in {packaged})")
    return found


def main() -> None:
    ShopApp(read_settings(dict(os.environ))).run()


if __name__ == "__main__":
    sys.exit(main())
