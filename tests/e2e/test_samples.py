"""The samples run as their users would run them, against a live collector."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import homing
from tests.conftest import LiveCollector
from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def rows(collector: LiveCollector, app_id: str) -> list[dict[str, object]]:
    names = (
        "app_id",
        "endpoint_id",
        "event_id",
        "event_type",
        "ts",
        "arrival",
        "session_id",
        "body",
    )
    found = collector.query(
        f"SELECT {', '.join(names)} FROM events WHERE app_id = ? ORDER BY ts, event_type", app_id
    )
    return [dict(zip(names, row, strict=True)) for row in found]


def sample_env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOMING_")}
    # The SDK's default data dir follows XDG_DATA_HOME: keep it out of the real home.
    return {**base, "XDG_DATA_HOME": str(tmp_path / "xdg")}


def run(
    sample: str, args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SAMPLES / sample), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("given_as", ["flags", "environment"])
def test_desktop_app_records_a_session_and_its_events(
    collector: LiveCollector, tmp_path: Path, given_as: str
) -> None:
    app = collector.create_app("desktop-sample")
    env = sample_env(tmp_path)
    settings = {"HOMING_URL": collector.url, "HOMING_APP_ID": app.id,
                "HOMING_INGEST_TOKEN": app.ingest.token}  # fmt: skip
    if given_as == "flags":
        args = ["--collector-url", collector.url, "--app-id", app.id, "--api-key",
                app.ingest.token]  # fmt: skip
    else:
        args, env = [], {**env, **settings}
    result = run("desktop_app.py", [*args, "--documents", "2"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent 8 events, rejected 0, 0 wait" in result.stdout

    stored = rows(collector, app.id)
    kinds = sorted(str(row["event_type"]) for row in stored)
    assert kinds == sorted(["_session.start", "App Opened", "Document Opened",
                            "Document Opened", "_session.pause", "_session.resume",
                            "Document Saved", "_session.stop"])  # fmt: skip
    # One endpoint, one session, and every event of it inside that session.
    assert len({row["endpoint_id"] for row in stored}) == 1
    assert len({row["session_id"] for row in stored}) == 1 and stored[0]["session_id"]
    assert len({row["event_id"] for row in stored}) == 8
    # With no --data-dir the SDK used its default, which follows XDG_DATA_HOME.
    queue = tmp_path / "xdg" / "homing" / app.id / "events.sqlite3"
    assert queue.exists()


def test_desktop_app_keeps_the_events_when_the_collector_is_down(
    collector: LiveCollector, tmp_path: Path
) -> None:
    app = collector.create_app("desktop-offline")
    env = sample_env(tmp_path)
    common = ["--app-id", app.id, "--api-key", app.ingest.token,
              "--data-dir", str(tmp_path / "sdk")]  # fmt: skip
    nobody = f"http://127.0.0.1:{free_port()}"
    down = run("desktop_app.py", ["--collector-url", nobody, *common, "--documents", "0"], env)
    assert down.returncode == 1, down.stdout + down.stderr
    assert "0 events, rejected 0, 6 wait" in down.stdout
    assert rows(collector, app.id) == []
    # The next run sends what the first one kept, with its own events.
    up = run("desktop_app.py", ["--collector-url", collector.url, *common, "--documents", "0"],
             env)  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    assert len(rows(collector, app.id)) == 6 + 6


def test_desktop_app_explains_a_missing_setting(tmp_path: Path) -> None:
    result = run("desktop_app.py", ["--app-id", "a"], {"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 2
    assert "--collector-url or $HOMING_URL" in result.stderr
    assert "--api-key or $HOMING_INGEST_TOKEN" in result.stderr


def test_iot_sensor_reports_each_reading(collector: LiveCollector, tmp_path: Path) -> None:
    app = collector.create_app("sensor-sample")
    env = sample_env(tmp_path)
    args = ["--collector-url", collector.url, "--app-id", app.id, "--api-key",
            app.ingest.token, "--count", "4", "--interval", "0.05", "--sensor-id", "s-7",
            "--data-dir", str(tmp_path / "sdk")]  # fmt: skip
    result = run("iot_sensor.py", args, env)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = rows(collector, app.id)
    if homing.NetworkPolicy("unmetered").allows():
        assert "took 4 readings; sent 4 events, 0 kept for later" in result.stdout
        assert [row["event_type"] for row in stored] == ["Temperature Read"] * 4
        for row in stored:
            body = str(row["body"])
            assert '"sensor":"s-7"' in body.replace(" ", "") and "celsius" in body
    else:  # a metered or unknown link here: the readings wait on disk
        assert "took 4 readings; sent 0 events, 4 kept for later" in result.stdout
        assert stored == []


def test_iot_sensor_stops_cleanly_on_sigterm(collector: LiveCollector, tmp_path: Path) -> None:
    app = collector.create_app("sensor-sigterm")
    env = sample_env(tmp_path)
    process = subprocess.Popen(
        [sys.executable, str(SAMPLES / "iot_sensor.py"), "--collector-url", collector.url,
         "--app-id", app.id, "--api-key", app.ingest.token, "--count", "1000",
         "--interval", "60", "--allow-unknown-links", "--data-dir", str(tmp_path / "sdk")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        while line and not line.startswith("reading 1:"):
            line = process.stdout.readline()
        assert line.startswith("reading 1:"), process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGTERM)  # it is now waiting 60 s for the next reading
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "took 1 readings; sent 1 events, 0 kept for later" in out
    assert [row["event_type"] for row in rows(collector, app.id)] == ["Temperature Read"]
