"""Homing's keys API: an app's keys over HTTP, for its admin key or a root key."""

from __future__ import annotations

import httpx
import pytest

from homing_collector.auth import generate_key
from tests.conftest import App, LiveCollector


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def app(collector: LiveCollector) -> App:
    return collector.create_app("keys")


def test_root_creates_an_app_and_its_keys_over_http(collector: LiveCollector) -> None:
    root = collector.root_key()
    created = httpx.post(
        f"{collector.url}/v1/apps", json={"Name": "over-http"}, headers=bearer(root.token)
    )
    assert created.status_code == 201
    app_id = created.json()["Id"]
    response = httpx.post(
        f"{collector.url}/v1/apps/{app_id}/keys",
        json={"Role": "ingest"},
        headers=bearer(root.token),
    )
    assert response.status_code == 201
    key = response.json()
    assert key["Role"] == "ingest" and key["ApplicationId"] == app_id
    assert key["SecretAccessKey"] and key["Token"] and key["RevokedDate"] is None
    batch = {"BatchItem": {"ep": {"Endpoint": {}, "Events": {
        "e": {"EventType": "hello", "Timestamp": "2026-11-28T10:00:00Z"}}}}}  # fmt: skip
    sent = httpx.post(
        f"{collector.url}/v1/apps/{app_id}/events", json=batch, headers=bearer(key["Token"])
    )
    assert sent.status_code == 202
    assert sent.json()["Results"]["ep"]["EventsItemResponse"]["e"]["StatusCode"] == 202
    signed = collector.client(
        type(root)(key["AccessKeyId"], key["SecretAccessKey"], key["Token"])
    ).put_events(ApplicationId=app_id, EventsRequest=batch)
    assert signed["ResponseMetadata"]["HTTPStatusCode"] == 202


def test_admin_lists_and_revokes_its_keys(collector: LiveCollector, app: App) -> None:
    url = f"{collector.url}/v1/apps/{app.id}/keys"
    listed = httpx.get(url, headers=bearer(app.admin.token))
    assert listed.status_code == 200
    items = {k["AccessKeyId"]: k for k in listed.json()["Item"]}
    assert set(items) >= {app.ingest.access_key_id, app.admin.access_key_id}
    assert all("SecretAccessKey" not in k and "Token" not in k for k in items.values())

    extra = httpx.post(url, json={"Role": "ingest"}, headers=bearer(app.admin.token)).json()
    revoked = httpx.delete(f"{url}/{extra['AccessKeyId']}", headers=bearer(app.admin.token))
    assert revoked.status_code == 200 and revoked.json()["RevokedDate"]
    answer = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/events",
        json={"BatchItem": {}},
        headers=bearer(extra["Token"]),
    )
    assert answer.status_code == 403 and "revoked" in answer.json()["Message"]


def test_keys_api_refuses_bad_input_and_other_apps(collector: LiveCollector, app: App) -> None:
    url = f"{collector.url}/v1/apps/{app.id}/keys"
    for body in ({}, {"Role": "root"}, {"Role": 1}, []):
        response = httpx.post(url, json=body, headers=bearer(app.admin.token))
        assert response.status_code == 400 and "Role" in response.json()["Message"]
    assert httpx.get(url, headers=bearer(app.ingest.token)).status_code == 403
    other = collector.create_app("someone-else")
    assert httpx.get(url, headers=bearer(other.admin.token)).status_code == 403
    response = httpx.delete(f"{url}/{other.admin.access_key_id}", headers=bearer(app.admin.token))
    assert response.status_code == 404
    assert (
        httpx.get(
            f"{collector.url}/v1/apps/{other.id}", headers=bearer(other.admin.token)
        ).status_code
        == 200
    )  # the other app's key was not revoked


def test_secrets_are_safe_on_a_command_line() -> None:
    # A secret that starts with "-" is taken for an option by argparse and the aws CLI.
    secrets = [generate_key("ingest", "app").record.secret for _ in range(2000)]
    assert all(len(secret) == 40 and secret.isalnum() and secret.isascii() for secret in secrets)
    assert len(set(secrets)) == len(secrets)
