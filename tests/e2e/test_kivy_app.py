"""samples/kivy_app runs for real, in an SDL2 window on Xvfb, against a live collector.

tests/e2e/kivy_driver.py drives the app through Kivy's own event dispatch (button
presses, on_pause, on_resume, stop) and sends a silent push with boto3; this test checks
what reached the collector. The window's screenshot is saved as
test-artifacts/kivy_app.png. scripts/install installs Xvfb and the GL libraries on
Debian; elsewhere, without Xvfb, the test is skipped.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveCollector
from tests.e2e.test_samples import rows

pytest.importorskip("kivy", reason="kivy is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DRIVER = ROOT / "tests" / "e2e" / "kivy_driver.py"


@pytest.fixture
def display(tmp_path: Path) -> Iterator[str]:
    """A virtual X screen of its own: Xvfb picks a free display number and tells it."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed: run scripts/install (apt-get install xvfb on Debian)")
    read_end, write_end = os.pipe()
    log = tmp_path / "xvfb.log"
    with log.open("wb") as errors:
        server = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1024x768x24", "-nolisten",
             "tcp"],
            pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        number = os.read(read_end, 16).decode().strip() if ready else ""
        os.close(read_end)
        if not number.isdigit():
            server.kill()
            server.wait(10)
            raise RuntimeError(f"Xvfb did not start: {log.read_text(errors='replace')[-2000:]}")
        yield f":{number}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def admin_get(collector: LiveCollector, token: str, path: str, **params: Any) -> Any:
    response = httpx.get(
        f"{collector.url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.timeout(180)
def test_the_kivy_app_records_sessions_and_shows_a_silent_push(
    collector: LiveCollector, display: str, tmp_path: Path
) -> None:
    app = collector.create_app("kivy-sample")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HOMING_", "KIVY_"))},
        "DISPLAY": display,
        "KIVY_HOME": str(tmp_path / "kivy"),  # Kivy's config and logs, not the real home's
        "KIVY_NO_ARGS": "1",
        "XDG_DATA_HOME": str(tmp_path / "xdg"),  # the SDK's default data dir
        "HOMING_URL": collector.url,
        "HOMING_APP_ID": app.id,
        "HOMING_INGEST_TOKEN": app.ingest.token,
        "KIVY_DRIVER_ADMIN": f"{app.admin.access_key_id}:{app.admin.secret_access_key}",
    }
    result = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path / "kivy_app.png")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads(lines[-1])
    assert "error" not in report, report

    # The window, as the user saw it at the end: saved for people to look at.
    shot = Path(report["screenshot"])
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "kivy_app.png")
    assert png_size(shot) == (420, 640)
    assert shot.stat().st_size > 5000  # a drawn screen, not a blank one

    # The silent push went out through boto3 and came back in the inbox label.
    assert report["push_status"] == "SUCCESSFUL"
    assert report["inbox"] == "offer: bagels-2-for-1"
    assert report["sync"].startswith("queued ") and " · sent " in report["sync"]
    # on_stop closed the Analytics after its last upload: nothing waits.
    assert report["closed"] and report["queued"] == 0 and report["last_error"] is None

    # The events and their attributes, read through the collector's API.
    bought = admin_get(
        collector, app.admin.token, f"/v1/apps/{app.id}/analytics/events",
        event_type="Item Bought", breakdown="item",
    )  # fmt: skip
    assert {(b["value"], b["count"]) for b in bought["breakdown"]} == {
        ("coffee", 1), ("bagel", 1), ("juice", 1)
    }  # fmt: skip
    price = next(m for m in bought["metrics"] if m["name"] == "price")
    assert price["count"] == 3 and price["sum"] == pytest.approx(2.5 + 1.8 + 3.2)
    switched = admin_get(
        collector, app.admin.token, f"/v1/apps/{app.id}/analytics/events",
        event_type="Setting Changed", breakdown="wifi_only",
    )  # fmt: skip
    assert {(b["value"], b["count"]) for b in switched["breakdown"]} == {("on", 1), ("off", 1)}

    # Sessions: the first paused, resumed within 5 s (continued), paused again; the
    # resume after 6 s stopped it at its pause and started a second one.
    stored = rows(collector, app.id)
    assert len({row["endpoint_id"] for row in stored}) == 1
    assert stored[0]["endpoint_id"] == report["endpoint_id"]
    events = [json.loads(row["body"]) for row in stored]  # type: ignore[arg-type]
    sessions: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event["EventType"].startswith("_session."):
            sessions.setdefault(event["Session"]["Id"], []).append(event)
    assert len(sessions) == 2, sessions
    first, second = sorted(sessions.values(), key=lambda s: str(s[0]["Session"]["StartTimestamp"]))
    assert [e["EventType"] for e in first] == [
        "_session.start", "_session.pause", "_session.resume", "_session.pause", "_session.stop"
    ]  # fmt: skip
    assert [e["EventType"] for e in second] == ["_session.start", "_session.stop"]
    stamps = [e["Timestamp"] for e in first]
    assert stamps == sorted(stamps)
    assert first[-1]["Session"]["StopTimestamp"] == first[-2]["Timestamp"]  # stopped at its pause
    assert first[-1]["Session"]["Duration"] >= 2000
    assert second[0]["Timestamp"] >= first[-2]["Timestamp"]
    # Every purchase happened in the first session.
    first_id = first[0]["Session"]["Id"]
    purchases = [e for e in events if e["EventType"] == "Item Bought"]
    assert [e["Session"]["Id"] for e in purchases] == [first_id] * 3
    assert {e["Attributes"]["screen"] for e in purchases} == {"shop"}
    assert sorted(e["Metrics"]["quantity"] for e in purchases) == [1, 1, 1]
