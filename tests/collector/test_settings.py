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
    push = Settings.from_env(
        {"HOMING_PUSH_QUEUE_LIMIT": "7", "HOMING_PUSH_HEARTBEAT": "0.5",
         "HOMING_PUSH_DEFAULT_TTL": "60"}
    )  # fmt: skip
    assert (push.push_queue_limit, push.push_heartbeat, push.push_default_ttl) == (7, 0.5, 60)
    assert Settings.from_env({"HOMING_TRIGGER_WINDOW": "0.5"}).trigger_window == 0.5
    defaults = Settings.from_env({})
    assert (defaults.push_queue_limit, defaults.push_heartbeat, defaults.push_default_ttl) == (
        100, 20.0, 2_419_200,
    )  # fmt: skip
    assert Settings.from_env({}).rollups is True
    assert Settings.from_env({"HOMING_ROLLUPS": "0"}).rollups is False
    assert Settings.from_env({"HOMING_ROLLUPS": "on"}).rollups is True
    assert Settings.from_env({}).import_dir is None
    imports = Settings.from_env({"HOMING_IMPORT_DIR": str(tmp_path)})
    assert imports.import_dir == tmp_path
    assert (
        Settings.from_env({"HOMING_IMPORT_DIR": "/x"}, import_dir=tmp_path).import_dir == tmp_path
    )


@pytest.mark.parametrize(
    ("env", "rule"),
    [
        ({"HOMING_SYNCHRONOUS": "off"}, "synchronous"),
        ({"HOMING_PORT": "eighty"}, "port"),
        ({"HOMING_PORT": "70000"}, "port"),
        ({"HOMING_WORKERS": "0"}, "workers"),
        ({"HOMING_MAX_PENDING_WRITES": "0"}, "max_pending_writes"),
        ({"HOMING_SHUTDOWN_TIMEOUT": "-1"}, "shutdown_timeout"),
        ({"HOMING_SHUTDOWN_TIMEOUT": "nan"}, "shutdown_timeout"),
        ({"HOMING_SHUTDOWN_TIMEOUT": "inf"}, "shutdown_timeout"),
        ({"HOMING_PUSH_QUEUE_LIMIT": "0"}, "push_queue_limit"),
        ({"HOMING_PUSH_QUEUE_LIMIT": "many"}, "push_queue_limit"),
        ({"HOMING_PUSH_HEARTBEAT": "0"}, "push_heartbeat"),
        ({"HOMING_PUSH_HEARTBEAT": "nan"}, "push_heartbeat"),
        ({"HOMING_PUSH_DEFAULT_TTL": "2419201"}, "push_default_ttl"),
        ({"HOMING_ROLLUPS": "maybe"}, "rollups"),
        ({"HOMING_IMPORT_DIR": "/no/such/directory"}, "import_dir"),
        ({"HOMING_TRIGGER_WINDOW": "6"}, "trigger_window"),
        ({"HOMING_TRIGGER_WINDOW": "-1"}, "trigger_window"),
        ({"HOMING_PG_LISTEN": "maybe"}, "pg_listen"),
    ],
)
def test_bad_settings_name_the_rule_and_the_variable(env: dict[str, str], rule: str) -> None:
    [(variable, raw)] = env.items()
    with pytest.raises(ValueError) as info:
        Settings.from_env(env)
    assert rule in str(info.value) and f"{variable}={raw!r}" in str(info.value), info.value


def test_a_postgresql_url_selects_postgresql() -> None:
    url = "postgresql://homing:secret@db.example/homing"
    settings = Settings.from_env({"HOMING_DB": url})
    assert settings.db_url == url and settings.pg_listen is True
    assert settings.database == "postgresql://homing@db.example/homing"  # no password
    polling = Settings.from_env({"HOMING_PG_LISTEN": "0"}, db_path="postgres://db.example/h")
    assert polling.db_url == "postgres://db.example/h" and polling.pg_listen is False
    assert Settings.from_env({}).db_url is None  # SQLite by default
    assert Settings.from_env({"HOMING_DB": "sqlite:///x/y.db"}).db_url is None


def test_a_bad_flag_is_named_as_the_flag() -> None:
    with pytest.raises(ValueError, match=r"workers must be from 1 to 64, not 0 \(from --workers\)"):
        Settings.from_env({"HOMING_WORKERS": "2"}, workers=0)


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


def test_each_postgresql_database_has_a_columnar_directory_of_its_own(tmp_path: Path) -> None:
    one = Settings.from_env({"HOMING_DB": "postgresql://db1/homing"})
    two = Settings.from_env({"HOMING_DB": "postgresql://db2/homing"})
    assert one.columnar_directory is not None and two.columnar_directory is not None
    assert one.columnar_directory.parent == two.columnar_directory.parent
    assert one.columnar_directory != two.columnar_directory
    given = Settings.from_env(
        {"HOMING_DB": "postgresql://db1/homing", "HOMING_COLUMNAR_DIR": str(tmp_path)}
    )
    assert given.columnar_directory == tmp_path
    flag = Settings.from_env({"HOMING_DB": "postgresql://db1/homing"}, columnar_dir=tmp_path / "f")
    assert flag.columnar_directory == tmp_path / "f"
    assert Settings.from_env({"HOMING_DB": str(tmp_path / "homing.db")}).columnar_directory is None
