from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from homing_collector.cli import _parser
from homing_collector.cli import main as cli_main
from tests.conftest import run_cli


def _commands(parser: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(_parser())
    assert ("serve",) in commands and ("apps", "create") in commands
    assert ("keys", "revoke") in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: homing-collector"), command
        # migrate-db names its two databases with --from and --to instead.
        assert ("--db" in out) != (command == ("migrate-db",)), command


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "homing_collector", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "serve" in result.stdout


def test_apps_create_json_is_exactly_one_object(tmp_path: Path) -> None:
    out = run_cli("--db", str(tmp_path / "a.db"), "apps", "create", "My App", "--json")
    data = json.loads(out)
    assert out.strip().count("\n") == 0
    assert set(data) == {"application_id", "name", "ingest", "admin"}
    assert data["name"] == "My App"
    for role in ("ingest", "admin"):
        assert set(data[role]) == {"access_key_id", "secret_access_key", "token"}
        assert all(isinstance(v, str) and v for v in data[role].values())
    assert data["ingest"]["token"] != data["admin"]["token"]


def test_db_from_flag_env_or_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMING_DB", str(tmp_path / "env.db"))
    run_cli("apps", "create", "from-env")
    assert (tmp_path / "env.db").exists()
    run_cli("apps", "create", "from-flag", "--db", str(tmp_path / "flag.db"))
    assert "from-flag" in run_cli("--db", str(tmp_path / "flag.db"), "apps", "list")
    assert "from-flag" not in run_cli("apps", "list")
    monkeypatch.delenv("HOMING_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    run_cli("apps", "create", "default")
    assert list((tmp_path / "xdg").rglob("homing.db"))


def test_apps_list_and_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "a.db")
    first = json.loads(run_cli("--db", db, "apps", "create", "one", "--json"))
    json.loads(run_cli("--db", db, "apps", "create", "two", "--json"))
    listed = json.loads(run_cli("--db", db, "apps", "list", "--json"))
    assert sorted(a["name"] for a in listed) == ["one", "two"]
    run_cli("--db", db, "apps", "delete", first["application_id"])
    listed = json.loads(run_cli("--db", db, "apps", "list", "--json"))
    assert [a["name"] for a in listed] == ["two"]
    assert cli_main(["--db", db, "apps", "delete", first["application_id"]]) == 1
    assert "no application" in capsys.readouterr().err
    keys = json.loads(run_cli("--db", db, "keys", "list", "--json"))
    assert all(k["application_id"] != first["application_id"] for k in keys)


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "k.db")
    app = json.loads(run_cli("--db", db, "apps", "create", "k", "--json"))
    admin = json.loads(
        run_cli("--db", db, "keys", "create", "--app", app["application_id"], "--role", "admin",
                "--json")
    )  # fmt: skip
    root = json.loads(run_cli("--db", db, "keys", "create", "--root", "--json"))
    assert admin["role"] == "admin" and root["role"] == "root" and root["application_id"] is None
    listed = json.loads(run_cli("--db", db, "keys", "list", "--json"))
    assert len(listed) == 4
    assert all("secret" not in json.dumps(k) for k in listed)
    run_cli("--db", db, "keys", "revoke", admin["access_key_id"])
    listed = {
        k["access_key_id"]: k for k in json.loads(run_cli("--db", db, "keys", "list", "--json"))
    }
    assert listed[admin["access_key_id"]]["revoked_at"]
    assert listed[root["access_key_id"]]["revoked_at"] is None
    assert cli_main(["--db", db, "keys", "revoke", admin["access_key_id"]]) == 1
    assert cli_main(["--db", db, "keys", "create", "--app", "nope"]) == 1
    assert cli_main(["--db", db, "keys", "create"]) == 1
    capsys.readouterr()


def test_secrets_at_rest(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "s.db"
    app = json.loads(run_cli("--db", str(db), "apps", "create", "s", "--json"))
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert app["admin"]["token"] not in dump and app["ingest"]["token"] not in dump


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_reports_a_port_in_use(tmp_path: Path, workers: str) -> None:
    import socket

    with socket.socket() as taken:
        # As another `serve --workers` holds it: its sockets share the port with any other
        # that asks to (SO_REUSEPORT), which must not let this one in beside it.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "homing_collector", "--db", str(tmp_path / "p.db"), "serve",
             "--port", str(port), "--workers", workers],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("mysql://db.example/homing", "mysql: URLs name no database"),
        ("redis://db.example/0", "redis: URLs name no database"),
    ],
)
def test_a_database_url_is_refused_rather_than_taken_for_a_folder(
    tmp_path: Path, given: str, error: str
) -> None:
    for args, env in (((("--db", given)), {}), ((), {"HOMING_DB": given})):
        result = subprocess.run(
            [sys.executable, "-m", "homing_collector", *args, "apps", "list"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env={**os.environ, **env},
        )  # fmt: skip
        assert result.returncode == 2 and error in result.stderr, result.stderr
        # It names what is accepted instead, and where the URL came from.
        assert "give the path of a SQLite file, a sqlite: URL or a postgresql:// URL" in (
            result.stderr
        )
        assert ("(from --db)" if args else "(from HOMING_DB=") in result.stderr
        assert list(tmp_path.iterdir()) == []  # no folder named after the scheme


def test_a_postgresql_url_without_its_driver_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from homing_collector import cli

    monkeypatch.setattr(cli, "_postgres_installed", lambda: False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--db", "postgresql://homing:secret@db.example/homing", "apps", "list"])
    assert exit_.value.code == 2
    said = capsys.readouterr().err
    assert "pip install 'homing[collector,postgres]'" in said
    assert "postgresql://homing@db.example/homing" in said and "secret" not in said
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_url_names_the_file(tmp_path: Path) -> None:
    run_cli("apps", "create", "by-url", "--db", f"sqlite://{tmp_path / 'url.db'}")
    assert "by-url" in run_cli("--db", str(tmp_path / "url.db"), "apps", "list")


@pytest.mark.parametrize("command", [["apps", "list"], ["serve", "--port", "0"]])
@pytest.mark.parametrize("where", ["not a database", "no such directory"])
def test_a_database_that_cannot_be_opened_is_one_line(
    tmp_path: Path, command: list[str], where: str
) -> None:
    if where == "not a database":
        db = tmp_path / "notes.txt"
        db.write_text("these are not the droids\n" * 100)
    else:
        db = Path("/proc/self/no-such-dir/homing.db")  # cannot be made, even by root
    result = subprocess.run(
        [sys.executable, "-m", "homing_collector", "--db", str(db), *command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"homing-collector: cannot open the database {db}: ")
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_demo_links_the_dashboard_where_serve_will_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMING_PORT", "9123")
    out = run_cli("--db", str(tmp_path / "d.db"), "demo", "--devices", "5", "--days", "3",
                  "--json")  # fmt: skip
    assert json.loads(out)["dashboard"].startswith("http://127.0.0.1:9123/dashboard?app=")


def test_without_the_collector_extra_the_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from homing_collector import _entry

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    assert _entry.main() == 1
    err = capsys.readouterr().err
    assert "uvicorn not installed" in err and "pip install 'homing[collector]'" in err
