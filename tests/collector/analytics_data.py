"""Seeded, generated app data for the analytics tests, and the raw events it makes.

Devices with and without users, sessions that run past midnight, sessions that restart
within 5 seconds of the last one's stop, custom events with attributes and metrics,
purchases in two currencies, notification opens, devices that upload days late, and
batches sent twice.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

BASE = datetime(2026, 9, 1, tzinfo=timezone.utc)  # day 0 of the data
DAYS = 60


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class Device:
    endpoint_id: str
    user_id: str | None
    profile: dict[str, Any]
    late: bool  # uploads everything at the end, days after it happened


@dataclass
class Event:
    endpoint_id: str
    event_id: str
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body["EventType"])

    @property
    def ts(self) -> int:
        return ms(datetime.fromisoformat(self.body["Timestamp"].replace("Z", "+00:00")))


@dataclass
class Data:
    devices: list[Device]
    events: list[Event] = field(default_factory=list)  # in the order they are uploaded
    resent: list[Event] = field(default_factory=list)  # sent a second time


PLATFORMS = [("android", "14", "Google", "Pixel 8"), ("ios", "17.4", "Apple", "iPhone15,2"),
             ("linux", "6.8", "Raspberry Pi", "4B")]  # fmt: skip
SCREENS = ["home", "shop", "cart", "profile"]


def generate(seed: int = 7, devices: int = 24) -> Data:
    rng = random.Random(seed)
    users = [f"user-{i}" for i in range(devices // 2)]
    made: list[Device] = []
    for i in range(devices):
        platform, version, make, model = rng.choice(PLATFORMS)
        profile: dict[str, Any] = {
            "ChannelType": "CUSTOM",
            "Demographic": {
                "Platform": platform, "PlatformVersion": version, "Make": make, "Model": model,
                "AppVersion": rng.choice(["1.0", "1.1"]), "Locale": rng.choice(["en_US", "de_DE"]),
            },
            "Location": {"Country": rng.choice(["US", "DE", "JP"])},
            "Attributes": {"plan": [rng.choice(["free", "pro"])]},
        }  # fmt: skip
        if i == 3:
            del profile["Location"]  # no country
        # Two devices share a user; a third of them have none.
        user = None if i % 3 == 2 else users[i // 2]
        if user is not None:
            profile["User"] = {"UserId": user}
        made.append(Device(str(uuid.UUID(int=rng.getrandbits(128))), user, profile, i % 7 == 5))
    data = Data(made)
    late: list[Event] = []
    for device in made:
        joined = rng.randrange(0, DAYS - 5)
        day = joined
        while day < DAYS:
            # A late device sends its last few days first; the rest arrives at the end.
            out = late if device.late and day < DAYS - 4 else data.events
            for _ in range(rng.choice([1, 1, 2])):
                start = BASE + timedelta(days=day, seconds=rng.randrange(0, 86400))
                if rng.random() < 0.15:  # runs past midnight UTC
                    start = BASE + timedelta(days=day + 1, seconds=-rng.randrange(60, 900))
                stop = _session(rng, device, start, out)
                if rng.random() < 0.2:  # a restart within 5 s: the same session
                    _session(rng, device, stop + timedelta(seconds=rng.uniform(0.5, 4.5)), out)
                elif rng.random() < 0.1:  # a restart just after 5 s: a new session
                    _session(rng, device, stop + timedelta(seconds=rng.uniform(5.5, 9)), out)
            day += rng.choice([1, 1, 2, 3, 5, 8])
    data.events.sort(key=lambda e: e.body["Timestamp"])
    data.events.extend(late)  # uploaded after everything else
    data.resent = rng.sample(data.events, 40)
    return data


def _event(
    device: Device, event_type: str, at: datetime, session: dict[str, Any], **extra: Any
) -> Event:
    body: dict[str, Any] = {"EventType": event_type, "Timestamp": iso(at), "Session": session}
    body.update(extra)
    return Event(device.endpoint_id, str(uuid.uuid4()), body)


def _session(rng: random.Random, device: Device, start: datetime, out: list[Event]) -> datetime:
    sid = f"{device.endpoint_id[-8:]}-{start:%Y%m%d-%H%M%S}{start.microsecond // 1000:03d}"
    opening = {"Id": sid, "StartTimestamp": iso(start)}
    out.append(_event(device, "_session.start", start, opening))
    t = start
    if rng.random() < 0.1:
        out.append(
            _event(device, "_campaign.opened_notification", start + timedelta(seconds=1), opening,
                   Attributes={"campaign_id": rng.choice(["spring", "autumn"]),
                               "campaign_activity_id": "a1", "treatment_id": "0"})
        )  # fmt: skip
    for _ in range(rng.randrange(1, 7)):
        t += timedelta(seconds=rng.uniform(1, 240))
        kind = rng.random()
        if kind < 0.5:
            out.append(
                _event(device, "screen.view", t, opening,
                       Attributes={"screen": rng.choice(SCREENS)},
                       Metrics={"load_ms": round(rng.uniform(10, 900), 1)})
            )  # fmt: skip
        elif kind < 0.8:
            attributes = {"level": rng.choice(["forest", "cave", "sky"])}
            if rng.random() < 0.2:
                del attributes["level"]
            out.append(
                _event(device, "level.complete", t, opening, Attributes=attributes,
                       Metrics={"score": float(rng.randrange(0, 1000)),
                                "stars": float(rng.randrange(0, 4))})
            )  # fmt: skip
        else:
            attributes = {"_product_id": rng.choice(["gems", "coins"])}
            if rng.random() < 0.9:
                attributes["_currency"] = rng.choice(["USD", "EUR"])
            metrics = {"_item_price": rng.choice([0.99, 4.99, 9.99])}
            if rng.random() < 0.5:
                metrics["_quantity"] = float(rng.randrange(1, 4))
            out.append(
                _event(device, "_monetization.purchase", t, opening, Attributes=attributes,
                       Metrics=metrics)
            )  # fmt: skip
    stop = t + timedelta(seconds=rng.uniform(1, 30))
    closing = {**opening, "StopTimestamp": iso(stop), "Duration": ms(stop) - ms(start)}
    out.append(_event(device, "_session.stop", stop, closing))
    return stop


def batches(events: list[Event], devices: dict[str, Device]) -> list[dict[str, Any]]:
    """PutEvents bodies of up to 100 events, each endpoint with its profile."""
    bodies = []
    for i in range(0, len(events), 100):
        items: dict[str, Any] = {}
        for event in events[i : i + 100]:
            item = items.setdefault(
                event.endpoint_id,
                {"Endpoint": devices[event.endpoint_id].profile, "Events": {}},
            )
            item["Events"][event.event_id] = event.body
        bodies.append({"BatchItem": items})
    return bodies
