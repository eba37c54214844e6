"""The simulation: who installs the app, what they do, and when it reaches the collector."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from homing._sessions import _session_id  # sessions named as the SDK names them
from homing.wire import format_timestamp
from homing_collector.campaigns.delivery import CAMPAIGN_SEND
from homing_collector.campaigns.treatments import assign
from homing_collector.demo.shop import (
    AB_CAMPAIGN,
    APP_PACKAGE,
    APP_TITLE,
    APP_VERSIONS,
    CAMPAIGNS,
    CATEGORIES,
    COUNTRIES,
    EVENT_CAMPAIGN,
    PAYMENTS,
    PLATFORMS,
    PRICES,
    SCREENS,
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_MAX_EVENTS_PER_BATCH = 100  # PutEvents' limit


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 500
    days: int = 60
    seed: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= 1_000_000:
            raise ValueError(f"devices: is {self.devices}; it must be from 1 to 1000000")
        if not 1 <= self.days <= 366:
            raise ValueError(f"days: is {self.days}; it must be from 1 to 366")


@dataclass
class PushMessage:
    """One push the demo's campaigns sent: a row for the push gateway's table."""

    endpoint_id: str
    message_id: str
    campaign_id: str
    created_ms: int
    expires_ms: int
    delivered_ms: int | None


@dataclass
class DemoSummary:
    devices: int = 0
    users: int = 0
    events: int = 0
    batches: int = 0
    late_events: int = 0  # arrived more than a day after they happened
    purchases: int = 0
    pushes_sent: int = 0
    pushes_delivered: int = 0
    pushes_stored: bool = False
    first_day: str = ""
    last_day: str = ""
    # The stored campaigns: name -> campaign id.
    campaigns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredCampaign:
    """A campaign the demo stores, with what the simulation sent for it."""

    id: str
    activity_id: str
    name: str
    start_ms: int  # the A/B campaign's run; when the event campaign started


# (what it belongs to: "push" or "session", when in ms, the event)
_Timed = tuple[str, int, dict[str, Any]]


@dataclass
class _Device:
    endpoint_id: str
    endpoint: dict[str, Any]
    user_id: str | None
    install_day: int
    engagement: float
    churn_day: int
    late: bool
    push: bool
    country: tuple[Any, ...]
    last_active: int = -1
    reminded_day: int = -1  # the last day the event campaign sent to it
    uploads: list[tuple[int, list[_Timed]]] = field(default_factory=list)


def _pick(rng: random.Random, weighted: list[Any]) -> Any:
    return rng.choices(weighted, weights=[item[1] for item in weighted])[0]


def _hex_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _Simulation:
    def __init__(self, options: DemoOptions, *, last_day: date, now_ms: int) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.now_ms = now_ms
        self.first_day = last_day - timedelta(days=options.days - 1)
        midnight = datetime(self.first_day.year, self.first_day.month, self.first_day.day)
        self.start_ms = int(midnight.replace(tzinfo=timezone.utc).timestamp() * 1000)
        self.summary = DemoSummary(
            first_day=self.first_day.isoformat(), last_day=last_day.isoformat()
        )
        self.pushes: list[PushMessage] = []
        # Campaign and activity ids: from their own generator, so the traffic stays the same.
        ids = random.Random(options.seed * 1_000_003 + 14)
        last = options.days - 1
        ab_name, ab_before, ab_hour = AB_CAMPAIGN[:3]
        self.ab = StoredCampaign(
            f"{ids.getrandbits(128):032x}", f"{ids.getrandbits(128):032x}", ab_name,
            self.start_ms + (last - ab_before) * DAY_MS + ab_hour * HOUR_MS,
        )  # fmt: skip
        event_name, _type, event_before = EVENT_CAMPAIGN[:3]
        self.event = StoredCampaign(
            f"{ids.getrandbits(128):032x}", f"{ids.getrandbits(128):032x}", event_name,
            self.start_ms + max(0, last - event_before) * DAY_MS,
        )  # fmt: skip
        self.summary.campaigns = {c.name: c.id for c in (self.ab, self.event)}
        self.devices = self._devices()

    # -- who ----------------------------------------------------------------------------

    def _devices(self) -> list[_Device]:
        rng, days = self.rng, self.options.days
        devices: list[_Device] = []
        users = 0
        while len(devices) < self.options.devices:
            # Seven in ten devices belong to a signed-in user, some users have two or three.
            signed_in = rng.random() < 0.7
            count = rng.choices([1, 2, 3], weights=[70, 22, 8])[0] if signed_in else 1
            count = min(count, self.options.devices - len(devices))
            user_id = f"user-{users + 1:05d}" if signed_in else None
            users += signed_in
            country = _pick(rng, COUNTRIES)
            # Somewhat more installs later in the range: the app is growing.
            install = min(days - 1, int(days * rng.random() ** 0.8))
            for n in range(count):
                later = install + (rng.randrange(0, 10) if n else 0)
                devices.append(self._device(user_id, country, min(later, days - 1)))
        return devices

    def _device(self, user_id: str | None, country: tuple[Any, ...], install: int) -> _Device:
        rng = self.rng
        endpoint_id = _hex_id(rng)
        platform, _, channel, versions, models = _pick(rng, PLATFORMS)
        make, model = rng.choice(models)
        locale = rng.choice(country[2])
        push = channel != "CUSTOM" and rng.random() < 0.8
        endpoint: dict[str, Any] = {
            "ChannelType": channel,
            "Address": rng.getrandbits(256).to_bytes(32, "big").hex(),
            "OptOut": "NONE" if push else "ALL",
            "Demographic": {
                "AppVersion": _pick(rng, APP_VERSIONS)[0],
                "Locale": locale,
                "Make": make,
                "Model": model,
                "Platform": platform,
                "PlatformVersion": rng.choice(versions),
                "Timezone": country[3],
            },
            "Location": {"Country": country[0]},
            "Attributes": {"plan": [rng.choices(["free", "plus"], weights=[80, 20])[0]]},
        }
        if user_id is not None:
            endpoint["User"] = {"UserId": user_id}
        engagement = 0.35 + 1.3 * rng.random() ** 1.5
        return _Device(
            endpoint_id=endpoint_id,
            endpoint=endpoint,
            user_id=user_id,
            install_day=install,
            engagement=engagement,
            # Three in ten try the app once and hardly come back.
            churn_day=install + (0 if rng.random() < 0.3 else int(rng.expovariate(1 / 40))),
            late=rng.random() < 0.12,
            push=push,
            country=country,
        )

    # -- what they do -------------------------------------------------------------------

    def run(self) -> None:
        campaign_days = {
            self.options.days - 1 - before: (campaign_id, hour, rate)
            for campaign_id, before, hour, rate in CAMPAIGNS
            if before < self.options.days
        }
        for device in self.devices:
            days: list[list[_Timed]] = []
            for day in range(device.install_day, self.options.days):
                events = self._day(device, day, campaign_days.get(day))
                if events:
                    days.append(events)
            self._upload(device, days)
        # A device counts once it has sent something.
        sending = [device for device in self.devices if device.uploads]
        self.summary.devices = len(sending)
        self.summary.users = len({d.user_id for d in sending if d.user_id is not None})

    def _active(self, device: _Device, day: int) -> bool:
        age = day - device.install_day
        if age == 0:
            return True
        if day > device.churn_day:
            return self.rng.random() < 0.02  # a churned device still comes back, rarely
        chance = (0.16 + 0.5 * math.exp(-age / 5)) * device.engagement
        weekday = (self.first_day + timedelta(days=day)).weekday()
        if weekday >= 5:
            chance *= 1.2
        return self.rng.random() < min(chance, 0.95)

    def _day(
        self, device: _Device, day: int, campaign: tuple[str, int, float] | None
    ) -> list[_Timed]:
        rng = self.rng
        day_ms = self.start_ms + day * DAY_MS
        events: list[_Timed] = []
        # A campaign goes to the devices that take pushes and were seen in the last three
        # days, but for a holdout of one in five.
        recent = device.last_active >= day - 3
        if campaign is not None and device.push and recent and rng.random() >= 0.2:
            events += self._campaign(device, day_ms, *campaign)
        if day_ms <= self.ab.start_ms < day_ms + DAY_MS and device.push and recent:
            events += self._ab_campaign(device)
        if self._active(device, day):
            device.last_active = day
            sessions = 1 + (rng.random() < 0.45 * device.engagement) + (rng.random() < 0.15)
            # Today has only the hours until now; the first day must have a session.
            latest = min(23.9, (self.now_ms - day_ms) / 3_600_000 - 0.5)
            # Evenings are busiest; a late session may run past midnight.
            hours = sorted(min(23.9, max(0.0, rng.gauss(18, 4.5))) for _ in range(sessions))
            free_ms = 0  # the next session starts after the last one stopped
            for hour in hours:
                if day == device.install_day:
                    hour = min(hour, latest)
                start_ms = day_ms + int(hour * 3_600_000) - rng.randrange(0, 900_000)
                start_ms = max(start_ms, day_ms, free_ms)
                session = self._session(device, start_ms)
                free_ms = session[-1][1] + rng.randrange(600_000, 3_600_000)
                events += session
                reminder = self._event_campaign(device, day, session)
                if reminder:
                    events += reminder
                    free_ms = max(free_ms, reminder[-1][1] + rng.randrange(600_000, 3_600_000))
        return [item for item in events if item[1] <= self.now_ms]

    def _campaign(
        self, device: _Device, day_ms: int, campaign_id: str, hour: int, open_rate: float
    ) -> list[_Timed]:
        sent_ms = day_ms + hour * 3_600_000 + self.rng.randrange(0, 600_000)
        return self._send(device, sent_ms, campaign_id, f"{campaign_id}-activity-1", "0", open_rate)

    def _ab_campaign(self, device: _Device) -> list[_Timed]:
        """The A/B campaign: the endpoint's treatment as the scheduler assigns it."""
        _name, _before, _hour, holdout, treatments = AB_CAMPAIGN
        sizes = [size for _n, size, _rate in treatments if size is not None]
        treatment = assign(self.ab.id, device.endpoint_id, holdout_percent=holdout, sizes=sizes)
        if treatment is None:
            return []  # TREATMENT_HOLDOUT
        open_rate = treatments[int(treatment)][2]
        sent_ms = self.ab.start_ms + self.rng.randrange(0, 120_000)
        return self._send(device, sent_ms, self.ab.id, self.ab.activity_id, treatment, open_rate)

    def _event_campaign(self, device: _Device, day: int, session: list[_Timed]) -> list[_Timed]:
        """The event campaign's message after the session's first cart.add, if any."""
        _name, event_type, _before, open_rate = EVENT_CAMPAIGN
        if not device.push or device.reminded_day == day:
            return []  # not a push device, or Limits.Daily reached
        trigger = next(
            (at for _k, at, e in session
             if e["EventType"] == event_type and at >= self.event.start_ms),
            None,
        )  # fmt: skip
        if trigger is None:
            return []
        device.reminded_day = day
        sent_ms = trigger + self.rng.randrange(150, 2_000)
        return self._send(
            device, sent_ms, self.event.id, self.event.activity_id, "0", open_rate,
            foreground=True, opens_after_ms=session[-1][1],
        )  # fmt: skip

    def _send(
        self,
        device: _Device,
        sent_ms: int,
        campaign_id: str,
        activity_id: str,
        treatment: str,
        open_rate: float,
        *,
        foreground: bool = False,
        opens_after_ms: int = 0,
    ) -> list[_Timed]:
        """One message: the push, the collector's `_campaign.send`, the SDK's receipt and,
        perhaps, an open that starts a session."""
        rng = self.rng
        if sent_ms > self.now_ms:
            return []
        attributes = {
            "campaign_id": campaign_id,
            "campaign_activity_id": activity_id,
            "treatment_id": treatment,
        }
        message_id = _hex_id(rng)
        send = self._event(CAMPAIGN_SEND, sent_ms, {
            **attributes, "delivery_type": "PUSH", "campaign_send_status": "SUCCESS",
            "message_id": message_id,
        })  # fmt: skip
        device.uploads.append((sent_ms, [("send", sent_ms, send)]))  # the collector's own
        churned = device.churn_day < (sent_ms - self.start_ms) // DAY_MS
        delivered = rng.random() < (0.6 if churned else 0.93)
        delivered_ms: int | None = sent_ms + rng.randrange(500, 90_000)
        if not delivered or delivered_ms > self.now_ms:  # type: ignore[operator]
            delivered_ms = None
        self.pushes.append(
            PushMessage(
                device.endpoint_id, message_id, campaign_id, sent_ms, sent_ms + DAY_MS,
                delivered_ms,
            )
        )  # fmt: skip
        self.summary.pushes_sent += 1
        if delivered_ms is None:
            return []
        self.summary.pushes_delivered += 1
        kind = "_campaign.received_background" if rng.random() < 0.85 else (
            "_campaign.received_foreground"
        )  # fmt: skip
        if foreground:
            kind = "_campaign.received_foreground"
        events: list[_Timed] = [("push", delivered_ms, self._event(kind, delivered_ms, attributes))]
        if rng.random() < open_rate * (0.5 if churned else 1.0):
            opened_ms = max(delivered_ms, opens_after_ms) + rng.randrange(5_000, 3_600_000)
            events += self._session(device, opened_ms, opened=attributes)
        return events

    def _session(
        self, device: _Device, start_ms: int, *, opened: dict[str, str] | None = None
    ) -> list[_Timed]:
        rng = self.rng
        session_id = _session_id(device.endpoint_id, start_ms)
        start_iso = format_timestamp(start_ms / 1000)
        session = {"Id": session_id, "StartTimestamp": start_iso}
        at = start_ms
        out = [(at, self._event("_session.start", at, session=session))]

        def step(event_type: str, attributes: dict[str, str], metrics: dict[str, float]) -> None:
            nonlocal at
            at += rng.randrange(2_000, 45_000)
            out.append((at, self._event(event_type, at, attributes, metrics, session)))

        if opened is not None:
            step("_campaign.opened_notification", opened, {})
        for _ in range(rng.randrange(1, 5)):
            step("screen.view", {"screen": rng.choice(SCREENS)},
                 {"load_ms": round(rng.lognormvariate(5.2, 0.5))})  # fmt: skip
        category = rng.choices(CATEGORIES, weights=[30, 22, 15, 14, 11, 8])[0]
        if rng.random() < 0.4:
            step("search", {"category": category}, {"results": rng.randrange(0, 60)})
        if rng.random() < 0.6 + (0.15 if opened else 0):
            price = PRICES[category]
            product = f"{category}-{rng.randrange(1, 40):03d}"
            step("product.view", {"category": category, "product_id": product},
                 {"price": price})  # fmt: skip
            if rng.random() < 0.38:
                quantity = rng.choices([1, 2, 3], weights=[80, 15, 5])[0]
                step("cart.add", {"category": category, "product_id": product},
                     {"quantity": quantity, "price": price})  # fmt: skip
                if rng.random() < 0.62:
                    step("checkout.start", {"payment": rng.choice(PAYMENTS)},
                         {"items": quantity, "total": round(quantity * price, 2)})  # fmt: skip
                    if rng.random() < 0.72:
                        store = {"APNS": "AppStore", "GCM": "GooglePlay"}.get(
                            device.endpoint["ChannelType"], "Web"
                        )
                        step("_monetization.purchase",
                             {"_currency": device.country[4], "_product_id": product,
                              "_store": store},
                             {"_item_price": price, "_quantity": quantity})  # fmt: skip
        if rng.random() < 0.05:
            step("share", {"channel": rng.choice(["messages", "mail", "social"])}, {})
        # Session length: a few minutes, now and then much longer.
        stop_ms = max(at + 1_000, start_ms + int(rng.lognormvariate(11.8, 0.8)))
        closing = {**session, "StopTimestamp": format_timestamp(stop_ms / 1000),
                   "Duration": stop_ms - start_ms}  # fmt: skip
        out.append((stop_ms, self._event("_session.stop", stop_ms, session=closing)))
        return [("session", at_ms, event) for at_ms, event in out]

    def _event(
        self,
        event_type: str,
        at_ms: int,
        attributes: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        session: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "EventType": event_type,
            "Timestamp": format_timestamp(at_ms / 1000),
            "AppPackageName": APP_PACKAGE,
            "AppTitle": APP_TITLE,
            "SdkName": "homing-python",
            "ClientSdkVersion": "0.1.0",
        }
        if attributes:
            event["Attributes"] = attributes
        if metrics:
            event["Metrics"] = metrics
        if session is not None:
            event["Session"] = session
        return event

    # -- when it arrives ----------------------------------------------------------------

    def _upload(self, device: _Device, days: list[list[_Timed]]) -> None:
        """Group a device's events into uploads, each at the moment it reaches the collector.

        The SDK flushes at the end of a session; a device that is offline holds its events
        for days and then sends them all at once.
        """
        rng = self.rng
        held: list[_Timed] = []
        held_until = 0
        for events in days:
            events.sort(key=lambda item: item[1])
            last_ms = events[-1][1]
            if held and last_ms >= held_until:  # back online
                self._late(device, held_until, held)
                held = []
            if held:  # still offline
                held += events
                continue
            if device.late and rng.random() < 0.4:
                held_until = last_ms + rng.randrange(1, 7) * DAY_MS + rng.randrange(DAY_MS)
                held = list(events)
                continue
            for kind in ("push", "session"):
                part = [item for item in events if item[0] == kind]
                if part:
                    device.uploads.append((part[-1][1] + rng.randrange(200, 60_000), part))
        if held:
            self._late(device, held_until, held)

    def _late(self, device: _Device, arrival_ms: int, events: list[_Timed]) -> None:
        device.uploads.append((min(arrival_ms, self.now_ms), events))

    def batches(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(arrival ms, PutEvents body), in the order they reach the collector."""
        uploads = [
            (min(arrival, self.now_ms), n, device, events)
            for n, device in enumerate(self.devices)
            for arrival, events in device.uploads
        ]
        uploads.sort(key=lambda item: (item[0], item[1]))
        rng = random.Random(self.options.seed + 1)
        for arrival, _, device, events in uploads:
            for start in range(0, len(events), _MAX_EVENTS_PER_BATCH):
                chunk = events[start : start + _MAX_EVENTS_PER_BATCH]
                body = {
                    "BatchItem": {
                        device.endpoint_id: {
                            "Endpoint": device.endpoint,
                            "Events": {f"{rng.getrandbits(128):032x}": e for _, _, e in chunk},
                        }
                    }
                }
                self.summary.events += len(chunk)
                self.summary.late_events += sum(arrival - at > DAY_MS for _, at, _ in chunk)
                self.summary.purchases += sum(
                    event["EventType"] == "_monetization.purchase" for _, _, event in chunk
                )
                self.summary.batches += 1
                yield arrival, body


def simulate(
    options: DemoOptions, *, last_day: date, now_ms: int
) -> tuple[list[tuple[int, dict[str, Any]]], list[PushMessage], DemoSummary]:
    """The demo's PutEvents bodies with their arrival times, its pushes, and a summary."""
    batches, pushes, summary, _campaigns = simulate_with_campaigns(
        options, last_day=last_day, now_ms=now_ms
    )
    return batches, pushes, summary


def simulate_with_campaigns(
    options: DemoOptions, *, last_day: date, now_ms: int
) -> tuple[
    list[tuple[int, dict[str, Any]]],
    list[PushMessage],
    DemoSummary,
    tuple[StoredCampaign, StoredCampaign],
]:
    """As `simulate`, with the A/B and the event campaign to store."""
    simulation = _Simulation(options, last_day=last_day, now_ms=now_ms)
    simulation.run()
    batches = list(simulation.batches())
    campaigns = (simulation.ab, simulation.event)
    return batches, simulation.pushes, simulation.summary, campaigns
