from __future__ import annotations

from pathlib import Path

import pytest

from homing_collector.cli import main as cli_main
from homing_collector.metrics import Metrics
from homing_collector.settings import Settings


def test_flags_beat_environment_beats_defaults(tmp_path: Path) -> None:
    env = {"HOMING_DB": str(tmp_path / "env.db"), "HOMING_PORT": "9000", "HOMING_HOST": "::1"}
    settings = Settings.from_env(env, port=9100, db_path=None)
    assert settings.port == 9100 and settings.host == "::1"
    assert settings.db_path == tmp_path / "env.db"
    assert Settings.from_env({}).port == 8080
    assert Settings.from_env({}).rollups is True
    assert Settings.from_env({"HOMING_ROLLUPS": "0"}).rollups is False
    assert Settings.from_env({"HOMING_ROLLUPS": "on"}).rollups is True


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"HOMING_SYNCHRONOUS": "off"}, "synchronous"),
        ({"HOMING_PORT": "eighty"}, "HOMING_PORT"),
        ({"HOMING_PORT": "70000"}, "port"),
        ({"HOMING_MAX_PENDING_WRITES": "0"}, "max_pending_writes"),
        ({"HOMING_SHUTDOWN_TIMEOUT": "-1"}, "shutdown_timeout"),
        ({"HOMING_ROLLUPS": "maybe"}, "HOMING_ROLLUPS"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Settings.from_env(env)


def test_server_variables_do_not_break_other_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOMING_PORT", "not-a-port")
    assert cli_main(["--db", str(tmp_path / "x.db"), "apps", "list"]) == 0
    with pytest.raises(SystemExit) as info:
        cli_main(["--db", str(tmp_path / "x.db"), "serve"])
    assert info.value.code == 2
    assert "HOMING_PORT" in capsys.readouterr().err


def test_metrics_fold_unknown_methods() -> None:
    metrics = Metrics()
    for i in range(50):
        metrics.observe("/healthz", f"AAA{i}", 405, 0.001)
    metrics.observe("/healthz", "GET", 200, 0.001)
    text = metrics.render()
    assert 'method="other",status="405"} 50' in text
    assert "AAA" not in text
