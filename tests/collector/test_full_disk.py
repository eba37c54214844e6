"""A full disk, on a real (small) filesystem: writes are answered 503 with Retry-After and
roll back whole, reads and /healthz are served, nothing acknowledged is lost, and the
collector writes again by itself once space is freed."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.collector.traffic import Key, acknowledged_keys, new_batch, stored_events
from tests.conftest import LiveCollector

DISK = "4m"  # room for the schema and a few megabytes of events
BALLAST_BYTES = 1 << 20  # taken up first, freed later: the space an operator frees


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        message = (
            f"cannot mount a {DISK} tmpfs to fill ({result.stderr.strip() or 'mount failed'}); "
            "this test needs root, or CAP_SYS_ADMIN"
        )
        if os.environ.get("CI"):
            pytest.fail(message)  # CI runs as root: it must run this test
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def test_a_full_disk_refuses_writes_with_503_and_recovers_once_space_is_freed(
    small_disk: Path, start_collector: Callable[..., LiveCollector]
) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(os.urandom(BALLAST_BYTES))
    live = start_collector(small_disk / "collector.db")
    app = live.create_app("full-disk")
    ingest = {"Authorization": f"Bearer {app.ingest.token}"}
    admin = {"Authorization": f"Bearer {app.admin.token}"}
    events_url = f"{live.url}/v1/apps/{app.id}/events"
    acknowledged: list[Key] = []

    # Fill the disk: each batch is about 25 KB of events.
    refused = None
    with httpx.Client(timeout=30) as client:
        for serial in range(2_000):
            body, keys = new_batch([f"device-{serial % 7}"], 100, serial)
            response = client.post(events_url, json=body, headers=ingest)
            if response.status_code != 202:
                refused = (response, body, keys)
                break
            acknowledged += acknowledged_keys(response, keys)
        assert refused is not None, "the disk never filled up"
        response, body, keys = refused
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) > 0
        assert "disk is full" in response.json()["Message"]

        # Reads and the health check are still served, and say why writes fail.
        health = client.get(f"{live.url}/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and "disk is full" in health.json()["reason"]
        endpoint = client.get(
            f"{events_url.removesuffix('/events')}/endpoints/device-0", headers=admin
        )
        assert endpoint.status_code == 200, endpoint.text
        # Writes outside PutEvents, which another writer commits, are refused alike once
        # they need space (the WAL may still have room for a few, in frames it reuses).
        profile = {f"a{n}": ["x" * 90] for n in range(10)}  # about 1 KB
        for batch in range(50):
            items = [{"Id": f"profile-{batch}-{n}", "Attributes": profile} for n in range(100)]
            update = client.put(
                f"{events_url.removesuffix('/events')}/endpoints", json={"Item": items},
                headers=ingest,
            )  # fmt: skip
            if update.status_code != 202:
                break
        assert update.status_code == 503 and "disk is full" in update.text, update.text
        # The refused batch was rolled back whole.
        assert not set(keys) & stored_events(live.db, app.id).keys()

        # An operator frees space; the same batch, sent again, goes in. No restart.
        ballast.unlink()
        deadline = time.monotonic() + 30
        while True:
            response = client.post(events_url, json=body, headers=ingest)
            if response.status_code == 202:
                break
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, "still refused 30 s after space was freed"
            time.sleep(0.2)
        acknowledged += acknowledged_keys(response, keys)
        assert client.get(f"{live.url}/healthz").json() == {"status": "ok"}

    assert live.process is not None and live.process.poll() is None  # it never stopped
    stored = stored_events(live.db, app.id)
    missing = set(acknowledged) - stored.keys()
    assert not missing, f"{len(missing)} acknowledged events were lost, e.g. {sorted(missing)[:3]}"
    assert set(stored.values()) == {1}, "an event is stored more than once"
