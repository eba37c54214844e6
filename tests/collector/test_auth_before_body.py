"""Credentials are checked from the headers, before the body is read: a client with none
(or a bad one) cannot make the collector read, or inflate, a large body."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import App, LiveCollector

BIG = 4 * 1024 * 1024  # the request size limit, announced and never sent
EVENTS = "/v1/apps/{application_id}/events"


def _series(text: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


def headers_only(url: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """Send a request's headers and no body byte; return the answer's status and head,
    once the collector has answered and closed the connection."""
    parts = urlsplit(url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        received = b""
        while True:  # socket.timeout fails the test: the collector waited for the body
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert json.loads(body)["Message"], body
    return int(status_line.split()[1]), "\n".join(header_lines).lower()


def stale_sigv4(access_key_id: str) -> dict[str, str]:
    signed_at = datetime.now(timezone.utc) - timedelta(hours=1)
    amz_date = signed_at.strftime("%Y%m%dT%H%M%SZ")
    return {
        "X-Amz-Date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key_id}/{amz_date[:8]}/"
        "eu-west-1/mobiletargeting/aws4_request, SignedHeaders=host;x-amz-date, "
        "Signature=" + "0" * 64,
    }


def fresh_sigv4(access_key_id: str, service: str = "mobiletargeting") -> dict[str, str]:
    amz_date = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return {
        "X-Amz-Date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key_id}/{amz_date[:8]}/"
        f"eu-west-1/{service}/aws4_request, SignedHeaders=host;x-amz-date, "
        "Signature=" + "0" * 64,
    }


def test_refusals_come_before_the_body(start_collector: Callable[..., LiveCollector]) -> None:
    collector = start_collector()  # its own, so that /metrics counts these requests only
    app: App = collector.create_app("before-body")
    revoked = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/keys",
        json={"Role": "ingest"},
        headers={"Authorization": f"Bearer {app.admin.token}"},
    ).json()
    assert httpx.delete(
        f"{collector.url}/v1/apps/{app.id}/keys/{revoked['AccessKeyId']}",
        headers={"Authorization": f"Bearer {app.admin.token}"},
    ).is_success
    json_body = {"Content-Type": "application/json", "Content-Length": str(BIG)}
    gzip_body = {**json_body, "Content-Encoding": "gzip"}
    events = f"/v1/apps/{app.id}/events"
    cases = [
        ("no credential", events, json_body, "Missing credentials"),
        ("no credential, gzip", events, gzip_body, "Missing credentials"),
        ("unknown token", events, {**json_body, "Authorization": "Bearer hm_x"}, "not valid"),
        ("revoked key", events,
         {**gzip_body, "Authorization": f"Bearer {revoked['Token']}"}, "revoked"),
        ("unknown key id", events, {**json_body, **fresh_sigv4("HMINOSUCHKEY")}, "not exist"),
        ("wrong service", events,
         {**json_body, **fresh_sigv4(app.ingest.access_key_id, "s3")}, "mobiletargeting"),
        ("stale date", events, {**gzip_body, **stale_sigv4(app.ingest.access_key_id)}, "skew"),
        ("ingest key, admin route", f"/v1/apps/{app.id}/messages",
         {**json_body, "Authorization": f"Bearer {app.ingest.token}"}, "admin key"),
        ("another app's key", f"/v1/apps/{collector.create_app('other').id}/events",
         {**gzip_body, "Authorization": f"Bearer {app.ingest.token}"}, "may not call"),
    ]  # fmt: skip
    for name, path, headers, _ in cases:
        status, head = headers_only(collector.url, "POST", path, headers)
        assert status == 403, name
        assert "connection: close" in head, name
        assert "x-amzn-errortype: forbiddenexception" in head, name

    series = _series(httpx.get(f"{collector.url}/metrics").text)
    for route in (EVENTS, "/v1/apps/{application_id}/messages"):
        assert series[f'homing_request_body_bytes_total{{route="{route}"}}'] == 0
        assert series[f'homing_requests_total{{route="{route}",method="POST",status="403"}}'] > 0

    # The counter counts: a request that authenticates has its body read, as sent.
    batch = gzip.compress(json.dumps({"BatchItem": {}}).encode())
    sent = httpx.post(
        f"{collector.url}{events}",
        content=batch,
        headers={"Authorization": f"Bearer {app.ingest.token}", "Content-Encoding": "gzip"},
    )
    assert sent.status_code == 202
    series = _series(httpx.get(f"{collector.url}/metrics").text)
    assert series[f'homing_request_body_bytes_total{{route="{EVENTS}"}}'] == len(batch)


@pytest.mark.parametrize("length", ["0", None])
def test_a_refusal_without_a_body_keeps_the_connection(
    collector: LiveCollector, length: str | None
) -> None:
    with httpx.Client() as client:
        headers = {"Content-Length": length} if length else {}
        first = client.get(f"{collector.url}/v1/apps", headers=headers)
        assert first.status_code == 403 and "connection" not in first.headers
        assert client.get(f"{collector.url}/healthz").status_code == 200
