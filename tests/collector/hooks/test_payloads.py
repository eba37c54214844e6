"""Pinpoint's custom channel and FILTER hook payloads, and a filter hook on loopback."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from homing_collector.hooks.errors import HookConfigError, HookResponseError
from homing_collector.hooks.filtering import filter_endpoints
from homing_collector.hooks.payloads import (
    MAX_ENDPOINTS_PER_CALL,
    CampaignHook,
    CampaignRun,
    batches,
    check_campaign_hook,
    check_target,
    check_web_url,
    custom_delivery_payload,
    filter_request,
    parse_filter_response,
)
from homing_collector.hooks.registry import Hooks, Registry
from homing_collector.hooks.signing import SigningKeys, new_secret
from tests.collector.hooks.receiver import Answer, always, serving

RUN = CampaignRun("app1", "camp1", "act1", 1_586_372_416.843)


def endpoint(n: int) -> dict[str, Any]:
    return {
        "ChannelType": "EMAIL",
        "Address": f"user{n}@example.com",
        "EndpointStatus": "ACTIVE",
        "OptOut": "NONE",
        "Attributes": {"CohortId": [str(n % 100)]},
    }


ENDPOINTS = {f"ep{n}": endpoint(n) for n in range(4)}


def test_the_custom_channel_payload_is_pinpoints() -> None:
    payload = custom_delivery_payload(RUN, '{"kind":"welcome"}', ENDPOINTS)
    assert payload == {
        "Message": {},
        "Data": '{"kind":"welcome"}',
        "ApplicationId": "app1",
        "CampaignId": "camp1",
        "TreatmentId": "0",
        "ActivityId": "act1",
        "ScheduledTime": "2020-04-08T19:00:16.843Z",
        "Endpoints": ENDPOINTS,
    }


def test_the_filter_request_carries_the_message_configuration() -> None:
    config = {"DefaultMessage": {"Body": "Hello {{User.UserAttributes.Name}}"}}
    run = CampaignRun("app1", "camp1", "act1", 0.0, treatment_id="2")
    payload = filter_request(run, config, ENDPOINTS)
    assert payload["MessageConfiguration"] == config
    assert payload["TreatmentId"] == "2"
    assert payload["ScheduledTime"] == "1970-01-01T00:00:00.000Z"
    assert payload["Endpoints"] == ENDPOINTS
    assert "Message" not in payload and "Data" not in payload


@pytest.mark.parametrize("count", [0, 1, 49, 50, 51, 100, 101, 237])
def test_batches_hold_at_most_50_and_keep_every_endpoint_once(count: int) -> None:
    items = ((f"ep{n}", endpoint(n)) for n in range(count))
    got = list(batches(items))
    assert all(1 <= len(batch) <= MAX_ENDPOINTS_PER_CALL for batch in got)
    assert [key for batch in got for key in batch] == [f"ep{n}" for n in range(count)]
    assert len(got) == -(-count // MAX_ENDPOINTS_PER_CALL)


def test_a_call_of_more_than_50_endpoints_is_refused() -> None:
    many = {f"ep{n}": endpoint(n) for n in range(51)}
    with pytest.raises(ValueError, match="at most 50"):
        custom_delivery_payload(RUN, "{}", many)
    with pytest.raises(ValueError, match="at most 50"):
        filter_request(RUN, {}, many)
    with pytest.raises(ValueError, match="size"):
        list(batches(many.items(), size=51))


def test_a_filter_answer_keeps_and_changes_endpoints() -> None:
    changed = {**ENDPOINTS["ep1"], "BodyOverride": "Hi!", "Attributes": {"Tier": ["gold"]}}
    kept = parse_filter_response(orjson.dumps({"ep1": changed}), ENDPOINTS)
    assert kept == {"ep1": changed}
    assert parse_filter_response(b"{}", ENDPOINTS) == {}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "not JSON"),
        (b"<html>Bad gateway</html>", "not JSON"),
        (b'{"ep1": ', "not JSON"),
        (b"[]", "is a JSON list"),
        (b'"ok"', "is a JSON str"),
        (b'{"ep1": "yes"}', "Endpoints.ep1: must be an endpoint definition"),
        (b'{"stranger": {}}', "Endpoints.stranger: was not in the batch sent"),
        (b'{"ep1": {"TitleOverride": 5}}', "Endpoints.ep1.TitleOverride: must be a string"),
        (
            orjson.dumps({"ep1": {"Attributes": {"big": ["x" * 16000]}}}),
            "Endpoints.ep1: would be",
        ),
    ],
)
def test_an_unusable_filter_answer_fails_the_batch(answer: bytes, message: str) -> None:
    with pytest.raises(HookResponseError, match=message):
        parse_filter_response(answer, ENDPOINTS)


def test_lambda_function_name_is_refused_with_the_way_out() -> None:
    with pytest.raises(HookConfigError) as caught:
        check_campaign_hook({"LambdaFunctionName": "my-filter", "Mode": "FILTER"})
    assert caught.value.field == "Hook.LambdaFunctionName"
    assert "set WebUrl" in str(caught.value)
    with pytest.raises(HookConfigError, match=r"^CampaignHook.LambdaFunctionName: .*WebUrl"):
        check_campaign_hook(
            {"LambdaFunctionName": "arn:aws:lambda:us-east-1:1:function:f"}, "CampaignHook"
        )


def test_a_campaign_hook_is_checked() -> None:
    assert check_campaign_hook(None) is None
    assert check_campaign_hook({}) is None
    assert check_campaign_hook({"Mode": "FILTER", "WebUrl": "https://hooks.example/f"}) == (
        CampaignHook("FILTER", "https://hooks.example/f")
    )
    assert check_campaign_hook({"Mode": "DELIVERY", "WebUrl": "http://127.0.0.1:9/d"}) == (
        CampaignHook("DELIVERY", "http://127.0.0.1:9/d")
    )
    with pytest.raises(HookConfigError, match=r"Hook.Mode: must be one of FILTER, DELIVERY"):
        check_campaign_hook({"Mode": "SEND", "WebUrl": "https://hooks.example/f"})
    with pytest.raises(HookConfigError, match=r"Hook.WebUrl: is required"):
        check_campaign_hook({"Mode": "FILTER"})
    with pytest.raises(HookConfigError, match="Hook: must be an object"):
        check_campaign_hook("https://hooks.example/f")


@pytest.mark.parametrize(
    ("url", "allow_http", "ok"),
    [
        ("https://hooks.example/f?x=1", False, True),
        ("http://127.0.0.1:8080/f", False, True),
        ("http://localhost/f", False, True),
        ("http://[::1]:8080/f", False, True),
        ("http://hooks.example/f", False, False),
        ("http://hooks.example/f", True, True),
        ("ftp://hooks.example/f", True, False),
        ("my-lambda-function", False, False),
        ("https://", False, False),
        ("https://[bad/f", False, False),
        (None, False, False),
    ],
)
def test_web_urls(url: str, allow_http: bool, ok: bool) -> None:
    if ok:
        assert check_web_url(url, "WebUrl", allow_http=allow_http) == url
    else:
        with pytest.raises(HookConfigError, match="WebUrl: must"):
            check_web_url(url, "WebUrl", allow_http=allow_http)


def _keep_even_and_rewrite(_n: int, body: bytes) -> Answer:
    request = orjson.loads(body)
    kept = {
        endpoint_id: {**definition, "BodyOverride": f"Hello {definition['Address']}"}
        for endpoint_id, definition in request["Endpoints"].items()
        if int(endpoint_id.removeprefix("ep")) % 2 == 0
    }
    return Answer(200, (("content-type", "application/json"),), body=orjson.dumps(kept))


def run_filter(url: str, keys: SigningKeys, endpoints: dict[str, Any]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return await filter_endpoints(
                client, url, keys, RUN, {"DefaultMessage": {"Body": "x"}}, endpoints, timeout=5
            )

    return asyncio.run(main())


def test_a_filter_hook_on_loopback_drops_half_and_rewrites() -> None:
    keys = SigningKeys(new_secret())
    with serving(_keep_even_and_rewrite) as (receiver,):
        kept = run_filter(receiver.url, keys, ENDPOINTS)
    assert kept == {
        "ep0": {**ENDPOINTS["ep0"], "BodyOverride": "Hello user0@example.com"},
        "ep2": {**ENDPOINTS["ep2"], "BodyOverride": "Hello user2@example.com"},
    }
    (got,) = receiver.received
    request = Webhook(keys.current).verify(got.body, got.headers)
    assert request["Endpoints"] == ENDPOINTS
    assert request["MessageConfiguration"] == {"DefaultMessage": {"Body": "x"}}


def test_a_filter_hook_gets_three_attempts() -> None:
    with (
        serving(always(Answer(503, body=b"busy"))) as (receiver,),
        pytest.raises(HookResponseError, match=r"after 3 attempt\(s\): 503: busy"),
    ):
        run_filter(receiver.url, SigningKeys(new_secret()), ENDPOINTS)
    assert len(receiver.received) == 3
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 1


def test_a_filter_hook_refusing_fails_at_once() -> None:
    with (
        serving(always(Answer(403, body=b"no"))) as (receiver,),
        pytest.raises(HookResponseError, match=r"after 1 attempt\(s\): 403: no"),
    ):
        run_filter(receiver.url, SigningKeys(new_secret()), ENDPOINTS)


def test_an_undecodable_filter_answer_fails_the_batch() -> None:
    with (
        serving(always(Answer(200, body=b"OK"))) as (receiver,),
        pytest.raises(HookResponseError, match="not JSON"),
    ):
        run_filter(receiver.url, SigningKeys(new_secret()), ENDPOINTS)
    assert len(receiver.received) == 1  # a bad answer is not retried


def test_scheduled_time_takes_a_datetime_too() -> None:
    run = CampaignRun("a", "c", "x", datetime.fromtimestamp(time.time(), timezone.utc))
    assert run.fields()["ScheduledTime"].endswith("Z")


@given(st.binary(max_size=200) | st.builds(orjson.dumps, st.dictionaries(st.text(), st.none())))
def test_any_filter_answer_is_kept_or_refused_with_a_reason(answer: bytes) -> None:
    try:
        kept = parse_filter_response(answer, ENDPOINTS)
    except HookResponseError as exc:
        assert str(exc)
    else:
        assert set(kept) <= set(ENDPOINTS)


def named_registry(*names: str) -> Registry:
    registry = Registry()
    for name in names:
        registry.add(Hooks(filter=print, custom_delivery=print, name=name))
    return registry


def test_a_hook_url_names_a_registered_hook_of_its_kind() -> None:
    registry = Registry()
    registry.add(Hooks(filter=print, name="crm"))
    assert check_target("hook:crm", "Hook.WebUrl", "filter", registry=registry) == "hook:crm"
    with pytest.raises(HookConfigError, match=r"no custom_delivery hook named 'crm'.* at all"):
        check_target("hook:crm", "F", "custom_delivery", registry=registry)
    with pytest.raises(HookConfigError, match="no filter hook is registered at all"):
        check_target("hook:crm", "F", "filter", registry=Registry())
    # No registry: a stored campaign's name, looked up when written; its form still counts.
    assert check_target("hook:gone", "F", "filter") == "hook:gone"
    with pytest.raises(HookConfigError, match="a hook's name"):
        check_target("hook://gone", "F", "filter")
    hook = check_campaign_hook({"Mode": "FILTER", "WebUrl": "hook:crm"}, registry=registry)
    assert hook == CampaignHook("FILTER", "hook:crm")
    with pytest.raises(HookConfigError) as caught:  # DELIVERY mode names a custom delivery
        check_campaign_hook({"Mode": "DELIVERY", "WebUrl": "hook:crm"}, registry=registry)
    assert caught.value.field == "Hook.WebUrl"
    # A URL that is neither says both forms.
    with pytest.raises(HookConfigError, match=r"https:// URL.*; or hook:NAME"):
        check_target("crm", "F", "filter", registry=registry)


@given(st.text(max_size=220))
def test_any_hook_name_is_found_or_refused_with_a_reason(name: str) -> None:
    well_formed = (
        0 < len(name) <= 200 and name.isascii() and name.isprintable() and not any(
            c in name for c in " /")
    )  # fmt: skip
    registry = named_registry(name) if well_formed else Registry()
    url = f"hook:{name}"
    if well_formed:
        assert check_target(url, "F", "filter", registry=registry) == url
        assert check_target(url, "F", "custom_delivery", registry=registry) == url
    else:
        with pytest.raises(HookConfigError, match="a hook's name after the colon") as caught:
            check_target(url, "F", "filter", registry=registry)
        assert caught.value.field == "F"
