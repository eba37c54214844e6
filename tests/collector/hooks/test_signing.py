"""Signatures checked by the receivers' side of the standardwebhooks package itself."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from homing_collector.hooks.errors import SecretError
from homing_collector.hooks.signing import (
    SigningKeys,
    check_secret,
    new_message_id,
    new_secret,
)

BODY = b'{"type":"campaign.custom","data":{"n":1}}'


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_a_new_secret_is_whsec_base64_of_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert check_secret(first) == base64.b64decode(first.removeprefix("whsec_"))


def test_the_receiver_verifies_and_gets_the_body() -> None:
    keys = SigningKeys(new_secret())
    headers = keys.headers(new_message_id(), now(), BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    assert Webhook(keys.current).verify(BODY, headers) == {
        "type": "campaign.custom",
        "data": {"n": 1},
    }


def test_during_a_rotation_each_secret_verifies_alone() -> None:
    old = SigningKeys(new_secret())
    rotating = old.rotate()
    assert rotating.previous == old.current
    assert rotating.current != old.current
    headers = rotating.headers("msg_rotation", now(), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old.current).verify(BODY, headers)
    Webhook(rotating.current).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)

    done = rotating.end_rotation()
    after = done.headers("msg_after", now(), BODY)
    Webhook(rotating.current).verify(BODY, after)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(old.current).verify(BODY, after)


def test_a_tampered_body_fails() -> None:
    keys = SigningKeys(new_secret()).rotate()
    headers = keys.headers("msg_tamper", now(), BODY)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(keys.current).verify(BODY.replace(b"1", b"2"), headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(keys.current).verify(BODY, {**headers, "webhook-id": "msg_other"})


def test_a_stale_timestamp_fails() -> None:
    keys = SigningKeys(new_secret())
    headers = keys.headers("msg_stale", now() - timedelta(minutes=10), BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(keys.current).verify(BODY, headers)


def test_an_aware_time_in_another_zone_signs_the_same_instant() -> None:
    keys = SigningKeys(new_secret())
    moment = now()
    elsewhere = moment.astimezone(timezone(timedelta(hours=-7)))
    assert keys.headers("msg_tz", elsewhere, BODY) == keys.headers("msg_tz", moment, BODY)
    Webhook(keys.current).verify(BODY, keys.headers("msg_tz", elsewhere, BODY))


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SigningKeys(new_secret()).headers("msg_naive", datetime.now(), BODY)


@pytest.mark.parametrize("msg_id", ["", "msg.1"])
def test_a_message_id_must_be_non_empty_and_dotless(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook-id"):
        SigningKeys(new_secret()).headers(msg_id, now(), BODY)


@pytest.mark.parametrize(
    ("secret", "rule"),
    [
        ("abc", "starting with 'whsec_'"),
        ("whsec_!!!notbase64", "must be base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "holds 5 bytes"),
    ],
)
def test_a_bad_secret_names_the_rule(secret: str, rule: str) -> None:
    with pytest.raises(SecretError, match=rule):
        SigningKeys(secret)
    with pytest.raises(SecretError, match="previous"):
        SigningKeys(new_secret(), previous=secret)


def test_message_ids_are_unique_and_dotless() -> None:
    ids = {new_message_id() for _ in range(100)}
    assert len(ids) == 100
    assert not any("." in i for i in ids)
