"""The SDK installed without orjson, as python-for-android and kivy-ios install it.

A fresh venv gets `pip install --no-deps homing` and then httpx, platformdirs, sqlitedict
and tenacity, and no orjson. samples/desktop_app.py runs from it against a live
collector; the same sample then runs from the test venv, with orjson. Both runs use the
same random seed, so the events must match byte for byte once the fields that depend on
the time of the run (timestamps, session ids and durations) are set aside.

The venv is also what python-for-android installs from the Kivy sample's requirements
line: every package in it must be named there, and each must be pure Python.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveCollector
from tests.e2e.test_samples import rows, sample_env

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "desktop_app.py"
# Seeded once the SDK is imported: what its imports draw from `random` depends on the
# venv (httpx imports rich where it is installed, and rich draws a number).
SEEDED = (
    "import random, runpy, sys, homing; homing.Analytics; random.seed(16); "
    "sys.argv = [sys.argv[1], *sys.argv[2:]]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
RUN_DEPENDENT = ("Timestamp", "Session")
BUILDOZER_SPEC = ROOT / "samples" / "kivy_app" / "buildozer.spec"
RECIPES = {"python3", "kivy", "pyjnius", "sqlite3"}  # python-for-android builds these


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def android_requirements() -> set[str]:
    spec = configparser.ConfigParser()
    spec.read(BUILDOZER_SPEC)
    return {normalized(name.strip()) for name in spec["app"]["requirements"].split(",")}


def installed(venv: Path) -> dict[str, bool]:
    """Each distribution in the venv (but pip's own) and whether it is pure Python."""
    (site,) = venv.glob("lib/python3*/site-packages")
    found = {}
    for info in site.glob("*.dist-info"):
        name = normalized(info.name.split("-")[0])
        if name not in ("pip", "setuptools"):
            found[name] = "Root-Is-Purelib: true" in (info / "WHEEL").read_text()
    return found


def pip(venv: Path, *args: str) -> None:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def without_run_fields(body: Any) -> bytes:
    event = json.loads(body)
    for name in RUN_DEPENDENT:
        event.pop(name, None)
    return json.dumps(event, sort_keys=True, ensure_ascii=False).encode()


def run_sample(python: Path, collector: LiveCollector, tmp: Path, name: str) -> list[bytes]:
    app = collector.create_app(name)
    result = subprocess.run(
        [str(python), "-c", SEEDED, str(SAMPLE), "--collector-url", collector.url,
         "--app-id", app.id, "--api-key", app.ingest.token, "--documents", "3",
         "--data-dir", str(tmp / name)],
        cwd=tmp, env=sample_env(tmp), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent 9 events, rejected 0, 0 wait" in result.stdout
    stored = rows(collector, app.id)
    assert len(stored) == 9
    # Sorted: events recorded in the same millisecond have no order at the collector.
    return sorted(without_run_fields(row["body"]) for row in stored)


@pytest.mark.timeout(600)
def test_an_install_without_orjson_uploads_the_same_events(
    collector: LiveCollector, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip(venv, "--no-deps", str(ROOT))
    pip(venv, "httpx", "platformdirs", "sqlitedict", "tenacity")
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [str(python), "-c", "import homing._json as j; print(j.FAST); import orjson"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.stdout.strip() == "False" and "No module named 'orjson'" in probe.stderr
    where = subprocess.run(
        [str(python), "-c", "import homing; print(homing.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the installed wheel, not ours

    # The Android requirements line names exactly this, and all of it is pure Python.
    packages = installed(venv)
    assert set(packages) == android_requirements() - RECIPES
    assert all(packages.values()), packages

    fallback = run_sample(python, collector, tmp_path, "no-orjson")
    fast = run_sample(Path(sys.executable), collector, tmp_path, "orjson")
    assert fallback == fast
    kinds = [json.loads(body)["EventType"] for body in fast]
    assert kinds.count("Document Opened") == 3 and "_session.resume" in kinds
