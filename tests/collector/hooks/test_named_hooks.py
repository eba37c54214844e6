"""Campaigns name their in-process hooks: `hook:NAME` as a FILTER hook's `WebUrl` (or the
settings' `CampaignHook`) asks the filter hook of that name, and as a `DeliveryUri` the
outbox hands the custom channel's calls to the custom_delivery hook of that name, at
least once, retried and dead-lettered like a webhook's. On a collector made by
create_app(hooks=...) and served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from homing_collector import Hooks
from homing_collector.hooks.outbox import Outbox
from homing_collector.hooks.registry import Registry
from homing_collector.hooks.retry import RetryPolicy
from homing_collector.hooks.runner import HookRunner
from homing_collector.metrics import Metrics
from homing_collector.storage.base import NewDelivery
from tests.collector.hooks.receiver import Answer, always
from tests.collector.hooks.receiver import serving as receiving
from tests.collector.hooks.test_campaign_hooks import (
    add_endpoints,
    create,
    custom_campaign,
    linux_segment,
    metrics_of,
)
from tests.collector.hooks.test_event_stream import send_events as stream_events
from tests.collector.hooks.test_inprocess_hooks import metric, new_app, serving, wait_for
from tests.collector.hooks.test_outbox import APP, open_storage, until_true
from tests.collector.test_campaign_runs import send_events, wait_for_activity
from tests.conftest import App, LiveCollector

FAST = RetryPolicy(first_delay=0.05, max_delay=0.2, budget=60, jitter=0)
SHORT = RetryPolicy(first_delay=0.05, max_delay=0.1, budget=0.6, jitter=0)


def admin_of(db: Path, url: str, app: App) -> Any:
    """A boto3 client of the app's admin key, for the collector at `url`."""
    return LiveCollector(db, url=url).client(app.admin)


class Recorder:
    """A custom_delivery hook that keeps the payloads it took; `failures` calls raise
    first (None: every call raises)."""

    def __init__(self, failures: int | None = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.taken: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self.calls += 1
            if self.failures is None or self.calls <= self.failures:
                raise ConnectionError(f"smtp is down (call {self.calls})")
            self.taken.append(payload)

    def endpoints(self) -> Counter[str]:
        with self._lock:
            return Counter(e for payload in self.taken for e in payload["Endpoints"])


class KeepEven:
    """A filter hook: keeps the endpoints whose number is even and greets them anew."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(request)
        return {
            endpoint_id: {**endpoint, "Attributes": {"Greeting": [f"hi {endpoint_id}"]}}
            for endpoint_id, endpoint in request["Endpoints"].items()
            if int(endpoint_id.rsplit("-", 1)[1]) % 2 == 0
        }


def dead_letters(url: str, app: App) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{url}/v1/apps/{app.id}/hooks/dead-letters",
        headers={"Authorization": f"Bearer {app.admin.token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["Item"]  # type: ignore[no-any-return]


def test_a_campaign_names_its_filter_and_its_custom_delivery(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    keep, deliver = KeepEven(), Recorder()
    with serving(db, Hooks(filter=keep, custom_delivery=deliver, name="crm")) as url:
        admin = admin_of(db, url, app)
        custom = add_endpoints(admin, app, 120, "CUSTOM", "cust")
        kept = [e for e in custom if int(e[-4:]) % 2 == 0]
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            "hook:crm", ["CUSTOM"], Hook={"Mode": "FILTER", "WebUrl": "hook:crm"}))  # fmt: skip
        activity = wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(lambda: sum(deliver.endpoints().values()) >= len(kept))
        time.sleep(0.5)  # nothing more comes
        assert metric(url, 'homing_hook_calls_total{hook="filter",name="crm"}') == len(keep.asked)
        assert dead_letters(url, app) == []
    assert deliver.endpoints() == Counter(dict.fromkeys(kept, 1))
    assert Counter(e for r in keep.asked for e in r["Endpoints"]) == Counter(
        dict.fromkeys(custom, 1)
    )
    for request in keep.asked:
        assert len(request["Endpoints"]) <= 50
        assert request["MessageConfiguration"] == {"CustomMessage": {"Data": campaign[
            "MessageConfiguration"]["CustomMessage"]["Data"]}}  # fmt: skip
        assert request["CampaignId"] == campaign["Id"] and request["ActivityId"] == activity["Id"]
    for payload in deliver.taken:
        assert len(payload["Endpoints"]) <= 50
        assert payload["ApplicationId"] == app.id and payload["CampaignId"] == campaign["Id"]
        for endpoint_id, endpoint in payload["Endpoints"].items():
            assert endpoint["Attributes"] == {"Greeting": [f"hi {endpoint_id}"]}
    assert metrics_of(activity) == {
        "ENDPOINT_PRODUCED": len(custom),
        "FILTERED_OUT_BY_HOOK": len(custom) - len(kept),
    }
    assert len(send_events(LiveCollector(db), app.id)) == len(kept)


def test_the_settings_campaign_hook_names_the_filter_of_a_campaign_without_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    keep, deliver = KeepEven(), Recorder()
    hooks = [Hooks(filter=keep, name="crm"), Hooks(custom_delivery=deliver, name="mailer")]
    with serving(db, hooks) as url:
        admin = admin_of(db, url, app)
        custom = add_endpoints(admin, app, 10, "CUSTOM", "cust")
        admin.update_application_settings(
            ApplicationId=app.id,
            WriteApplicationSettingsRequest={
                "CampaignHook": {"Mode": "FILTER", "WebUrl": "hook:crm"}
            },
        )
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            "hook:mailer", ["CUSTOM"]))  # fmt: skip
        activity = wait_for_activity(admin, app, campaign["Id"])
        kept = [e for e in custom if int(e[-4:]) % 2 == 0]
        assert wait_for(lambda: sum(deliver.endpoints().values()) >= len(kept))
    assert deliver.endpoints() == Counter(dict.fromkeys(kept, 1))
    assert len(keep.asked) == 1
    assert metrics_of(activity)["FILTERED_OUT_BY_HOOK"] == len(custom) - len(kept)


def test_a_failing_filter_fails_its_batch(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    deliver = Recorder()

    def broken(request: dict[str, Any]) -> Any:
        raise RuntimeError("the CRM is down")

    with serving(db, Hooks(filter=broken, custom_delivery=deliver, name="crm")) as url:
        admin = admin_of(db, url, app)
        custom = add_endpoints(admin, app, 60, "CUSTOM", "cust")
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            "hook:crm", ["CUSTOM"], Hook={"Mode": "FILTER", "WebUrl": "hook:crm"}))  # fmt: skip
        activity = wait_for_activity(admin, app, campaign["Id"])
        assert metric(url, 'homing_hook_errors_total{hook="filter",name="crm"}') == 2
    assert metrics_of(activity) == {
        "ENDPOINT_PRODUCED": len(custom),
        "FILTER_HOOK_FAILED": len(custom),
    }
    assert deliver.calls == 0


def test_a_custom_delivery_that_raises_is_retried_through_the_outbox(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    deliver = Recorder(failures=2)
    with serving(db, Hooks(custom_delivery=deliver, name="mailer"), policy=FAST) as url:
        admin = admin_of(db, url, app)
        custom = add_endpoints(admin, app, 120, "CUSTOM", "cust")
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            "hook:mailer", ["CUSTOM"]))  # fmt: skip
        wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(lambda: sum(deliver.endpoints().values()) >= len(custom))
        time.sleep(0.5)
        assert dead_letters(url, app) == []
        assert metric(url, 'homing_hook_errors_total{hook="custom_delivery",name="mailer"}') == 2
        assert metric(url, 'homing_hook_attempts_total{destination="hook:mailer"}') == 5
    assert deliver.endpoints() == Counter(dict.fromkeys(custom, 1))
    assert len(deliver.taken) == 3 and deliver.calls == 5


def test_beside_an_event_stream_the_collector_still_makes_the_hook_calls(
    tmp_path: Path,
) -> None:
    """While an event stream runs, its process makes the outbox's webhook deliveries; the
    calls to an in-process hook stay with the collector's process, which has the hook."""
    db = tmp_path / "collector.db"
    app = new_app(db)
    deliver = Recorder()
    with (
        receiving(always(Answer(200))) as (receiver,),
        serving(db, Hooks(custom_delivery=deliver, name="mailer")) as url,
    ):
        admin = admin_of(db, url, app)
        admin.put_event_stream(
            ApplicationId=app.id,
            WriteEventStream={"DestinationStreamArn": receiver.url, "RoleArn": "ignored"},
        )
        # The stream's records arrive: its process runs (only it makes them).
        live = LiveCollector(db, url=url)
        stream_events(live.url, app, 100)
        assert wait_for(lambda: len(receiver.received) >= 1)
        custom = add_endpoints(admin, app, 120, "CUSTOM", "cust")
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            "hook:mailer", ["CUSTOM"]))  # fmt: skip
        wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(lambda: sum(deliver.endpoints().values()) >= len(custom))
        attempts = f'homing_hook_attempts_total{{destination="{receiver.url}"}}'
        assert wait_for(lambda: attempts in httpx.get(f"{url}/metrics").text)
        time.sleep(0.5)  # nothing more comes
        assert dead_letters(url, app) == []
        assert metric(url, 'homing_hook_attempts_total{destination="hook:mailer"}') == 3
    assert deliver.endpoints() == Counter(dict.fromkeys(custom, 1))


def test_a_custom_delivery_that_always_raises_is_dead_lettered_and_replayed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    deliver = Recorder(failures=None)
    with serving(db, Hooks(custom_delivery=deliver, name="mailer"), policy=SHORT) as url:
        admin = admin_of(db, url, app)
        custom = add_endpoints(admin, app, 60, "CUSTOM", "cust")
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            "hook:mailer", ["CUSTOM"]))  # fmt: skip
        wait_for_activity(admin, app, campaign["Id"])
        assert wait_for(lambda: len(dead_letters(url, app)) == 2)
        dead = dead_letters(url, app)
        assert {d["Destination"] for d in dead} == {"hook:mailer"}
        for letter in dead:
            assert letter["Attempts"] >= 2
            assert "smtp is down" in letter["LastError"], letter
            assert "retry budget" in letter["LastError"], letter
        assert deliver.taken == []

        deliver.failures = 0  # the mail server is back
        replayed = httpx.post(
            f"{url}/v1/apps/{app.id}/hooks/dead-letters/replay",
            headers={"Authorization": f"Bearer {app.admin.token}"},
        )
        assert replayed.status_code == 200, replayed.text
        assert wait_for(lambda: sum(deliver.endpoints().values()) >= len(custom))
        assert dead_letters(url, app) == []
    assert deliver.endpoints() == Counter(dict.fromkeys(custom, 1))


def test_a_delivery_to_a_hook_this_process_lacks_is_retried_then_dead(tmp_path: Path) -> None:
    """A plugin uninstalled since its campaign ran: its calls wait in the outbox, and end
    as dead letters that say why, to be replayed once it is back."""

    async def scenario() -> None:
        storage = await open_storage(tmp_path / "hooks.db")
        registry = Registry()
        registry.add(Hooks(custom_delivery=lambda payload: None, name="other"))
        runner = HookRunner(registry, Metrics())
        outbox = Outbox(storage, Metrics(), policy=SHORT, poll_interval=0.01, hooks=runner)
        await outbox.start()
        try:
            body = orjson.dumps({"Endpoints": {"e": {}}})
            await storage.enqueue_deliveries(
                [NewDelivery("msg_0", APP, "hook:gone", body, "application/json")], time.time()
            )
            outbox.wake()

            async def dead() -> bool:
                return bool(await storage.dead_letters(APP, after=0, limit=10))

            await until_true(dead)
            [letter] = await storage.dead_letters(APP, after=0, limit=10)
        finally:
            await outbox.close()
            await runner.close()
            await storage.close()
        assert letter.attempts >= 2
        assert letter.last_error is not None
        assert "no custom_delivery hook named 'gone'" in letter.last_error, letter.last_error
        assert "'other'" in letter.last_error

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("field", "request_"),
    [
        ("Hook.WebUrl", {"Hook": {"Mode": "FILTER", "WebUrl": "hook:nope"}}),
        ("Hook.WebUrl", {"Hook": {"Mode": "FILTER", "WebUrl": "hook:mailer"}}),  # not a filter
        ("Hook.WebUrl", {"Hook": {"Mode": "DELIVERY", "WebUrl": "hook:crm"}}),  # not a delivery
        ("CustomDeliveryConfiguration.DeliveryUri", custom_campaign("hook:nope", ["CUSTOM"])),
        ("CustomDeliveryConfiguration.DeliveryUri", custom_campaign("hook:crm", ["CUSTOM"])),
        ("AdditionalTreatments[0].CustomDeliveryConfiguration.DeliveryUri",
         {"AdditionalTreatments": [{"SizePercent": 10, "CustomDeliveryConfiguration": {
             "DeliveryUri": "hook:nope"}}]}),
    ],
)  # fmt: skip
def test_a_hook_name_no_hook_answers_to_is_a_400_naming_the_field(
    tmp_path: Path, field: str, request_: dict[str, Any]
) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    hooks = [Hooks(filter=KeepEven(), name="crm"), Hooks(custom_delivery=Recorder(), name="mailer")]
    with serving(db, hooks) as url:
        admin = admin_of(db, url, app)
        segment_id = linux_segment(admin, app)
        body = {"MessageConfiguration": {"DefaultMessage": {"Title": "t", "Body": "b"}}, **request_}
        with pytest.raises(admin.exceptions.BadRequestException) as caught:
            create(admin, app, segment_id, **body)
    message = caught.value.response["Error"]["Message"]
    assert message.startswith(f"{field}: "), message
    kind = "filter" if field == "Hook.WebUrl" and "FILTER" in str(request_) else "custom_delivery"
    registered = "'crm'" if kind == "filter" else "'mailer'"
    assert f"no {kind} hook named" in message and registered in message, message
    assert "homing_collector.hooks" in message and "create_app(hooks=" in message, message


@pytest.mark.parametrize(
    ("web_url", "rule"),
    [
        ("hook:nope", "no filter hook is registered"),
        ("hook:", "a hook's name"),
        ("hook://crm", "a hook's name"),
        ("hook:c rm", "a hook's name"),
    ],
)
def test_a_settings_hook_name_is_checked_when_written(
    tmp_path: Path, web_url: str, rule: str
) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    with serving(db, Hooks(custom_delivery=Recorder(), name="mailer")) as url:
        admin = admin_of(db, url, app)
        with pytest.raises(admin.exceptions.BadRequestException) as caught:
            admin.update_application_settings(
                ApplicationId=app.id,
                WriteApplicationSettingsRequest={
                    "CampaignHook": {"Mode": "FILTER", "WebUrl": web_url}
                },
            )
        settings = admin.get_application_settings(ApplicationId=app.id)
    message = caught.value.response["Error"]["Message"]
    assert message.startswith("CampaignHook.WebUrl: ") and rule in message, message
    assert settings["ApplicationSettingsResource"]["CampaignHook"] == {}


def test_a_campaign_whose_hook_is_gone_can_still_be_paused(tmp_path: Path) -> None:
    """Names are looked up when they are written: an update that leaves them as stored
    pauses a campaign whose plugin was uninstalled since; one that gives them again is
    checked."""
    db = tmp_path / "collector.db"
    app = new_app(db)
    with serving(db, Hooks(filter=KeepEven(), custom_delivery=Recorder(), name="crm")) as url:
        admin = admin_of(db, url, app)
        hook = {"Mode": "FILTER", "WebUrl": "hook:crm"}
        campaign = create(admin, app, linux_segment(admin, app), **custom_campaign(
            "hook:crm", ["CUSTOM"], Hook=hook, IsPaused=True))  # fmt: skip
    with serving(db) as url:  # the plugin is gone
        admin = admin_of(db, url, app)
        updated = admin.update_campaign(
            ApplicationId=app.id, CampaignId=campaign["Id"],
            WriteCampaignRequest={"IsPaused": True, "Name": "on hold"},
        )["CampaignResponse"]  # fmt: skip
        assert updated["Name"] == "on hold" and updated["Hook"] == hook
        with pytest.raises(admin.exceptions.BadRequestException) as caught:
            admin.update_campaign(
                ApplicationId=app.id, CampaignId=campaign["Id"],
                WriteCampaignRequest={"Hook": hook},
            )  # fmt: skip
    message = caught.value.response["Error"]["Message"]
    assert message.startswith("Hook.WebUrl: no filter hook named 'crm'"), message
