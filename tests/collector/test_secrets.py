"""Secrets at rest: secret access keys sealed with a key file, and the commands that seal,
rotate and open them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from homing_collector import sealing
from homing_collector.auth import generate_key
from homing_collector.cli import main as cli_main
from homing_collector.sealing import SecretsKey, SecretsKeyError
from tests.conftest import App, Credentials, LiveCollector, run_cli


def new_key_file(path: Path) -> Path:
    run_cli("secrets", "new-key", str(path))
    return path


def create_app(db: Path, *options: str) -> App:
    data = json.loads(run_cli("--db", str(db), "apps", "create", "sealed", "--json", *options))
    return App(data["application_id"], Credentials(**data["ingest"]), Credentials(**data["admin"]))


def stored_secrets(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT access_key_id, secret FROM keys").fetchall())


def raw_bytes(db: Path) -> bytes:
    """The database as a copy would take it: the file and its WAL, if any."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in a child process; return its exit code and stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "homing_collector", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return result.returncode, result.stderr


def serve_fails(db: Path, *options: str) -> str:
    """Start `serve`, which must refuse to; return what it said."""
    code, stderr = cli("--db", str(db), "serve", "--port", "0", *options)
    assert code == 1, stderr
    return stderr


def signed_get(collector: LiveCollector, creds: Credentials, app_id: str) -> str:
    return str(collector.client(creds).get_app(ApplicationId=app_id)["ApplicationResponse"]["Id"])


# -- the format --------------------------------------------------------------------------


def test_a_sealed_secret_opens_with_its_key_and_its_key_id_only() -> None:
    key, other = SecretsKey(os.urandom(32)), SecretsKey(os.urandom(32))
    stored = key.seal("S3CRET", "HMA1")
    assert stored.startswith("v1:") and "S3CRET" not in stored
    assert key.seal("S3CRET", "HMA1") != stored  # a fresh nonce each time
    assert key.open(stored, "HMA1") == "S3CRET"
    with pytest.raises(SecretsKeyError, match="does not open"):
        other.open(stored, "HMA1")
    with pytest.raises(SecretsKeyError, match="does not open"):
        key.open(stored, "HMA2")  # copied onto another key's row
    with pytest.raises(SecretsKeyError, match="does not open"):
        key.open(stored[:-4] + "AAA=", "HMA1")
    with pytest.raises(SecretsKeyError, match="format 'v9'"):
        key.open("v9:" + stored[3:], "HMA1")
    with pytest.raises(SecretsKeyError, match="no secrets key file"):
        sealing.reveal(stored, "HMA1", None)
    assert sealing.reveal("clear", "HMA1", None) == sealing.reveal("clear", "HMA1", key)


def test_generated_secrets_never_look_sealed() -> None:
    assert not any(sealing.is_sealed(generate_key("ingest", "a").secret) for _ in range(500))


def test_a_key_file_holds_32_bytes_in_base64_or_hex(tmp_path: Path) -> None:
    raw = os.urandom(32)
    sealed = SecretsKey(raw).seal("x", "id")
    for name, text in (("b64", base64.b64encode(raw).decode()), ("hex", raw.hex())):
        path = tmp_path / name
        path.write_text(f"  {text}\n")
        path.chmod(0o600)
        assert SecretsKey.load(path).open(sealed, "id") == "x"
    for bad in ("", "short", base64.b64encode(os.urandom(16)).decode(), "zz" * 32):
        (tmp_path / "bad").write_text(bad)
        (tmp_path / "bad").chmod(0o600)
        with pytest.raises(SecretsKeyError, match="must hold 32 random bytes"):
            SecretsKey.load(tmp_path / "bad")
    with pytest.raises(SecretsKeyError, match="cannot read"):
        SecretsKey.load(tmp_path / "missing")


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_key_file_that_others_may_read_is_refused(tmp_path: Path) -> None:
    path = new_key_file(tmp_path / "key")
    assert path.stat().st_mode & 0o777 == 0o600
    for mode in (0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(SecretsKeyError, match=f"mode 0{mode:o}.*chmod 600"):
            SecretsKey.load(path)
    assert cli("secrets", "new-key", str(path))[0] == 1  # never overwrites


# -- a live collector ----------------------------------------------------------------------


def test_with_the_key_file_a_copied_database_holds_no_usable_secret(
    tmp_path: Path, start_collector: Callable[..., LiveCollector]
) -> None:
    key = new_key_file(tmp_path / "secrets.key")
    db = tmp_path / "collector.db"
    app = create_app(db, "--secrets-key-file", str(key))
    collector = start_collector(db, "--secrets-key-file", str(key))
    # Keys made over HTTP are sealed too.
    made = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/keys", json={"Role": "admin"},
        headers={"Authorization": f"Bearer {app.admin.token}"},
    ).json()  # fmt: skip
    extra = Credentials(made["AccessKeyId"], made["SecretAccessKey"], made["Token"])

    for creds in (app.admin, extra):
        assert signed_get(collector, creds, app.id) == app.id  # SigV4, opened in memory
        bearer = {"Authorization": f"Bearer {creds.token}"}
        assert httpx.get(f"{collector.url}/v1/apps/{app.id}", headers=bearer).status_code == 200
    wrong = Credentials(app.admin.access_key_id, "x" * 40, "")
    with pytest.raises(ClientError) as refused:
        collector.client(wrong).get_app(ApplicationId=app.id)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    collector.stop()
    copy = tmp_path / "elsewhere" / "copy.db"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    data = raw_bytes(db) + raw_bytes(copy)
    stored = stored_secrets(copy)
    for creds in (app.ingest, app.admin, extra):
        assert creds.secret_access_key.encode() not in data
        assert sealing.is_sealed(stored[creds.access_key_id])
        with pytest.raises(SecretsKeyError):
            sealing.reveal(stored[creds.access_key_id], creds.access_key_id, None)
    # The copy is of no use to a collector without the key file: it refuses to start.
    assert "give the secrets key file" in serve_fails(copy)


def test_a_wrong_key_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    key, other = new_key_file(tmp_path / "a.key"), new_key_file(tmp_path / "b.key")
    db = tmp_path / "collector.db"
    create_app(db, "--secrets-key-file", str(key))
    assert "does not open with" in serve_fails(db, "--secrets-key-file", str(other))
    # Nor may a command add a key sealed with another key file, or one in clear.
    code, stderr = cli(
        "--db", str(db), "keys", "create", "--root", "--secrets-key-file", str(other)
    )
    assert code == 1 and "does not open with" in stderr
    code, stderr = cli("--db", str(db), "apps", "create", "clear")
    assert code == 1 and "--secrets-key-file or HOMING_SECRETS_KEY_FILE" in stderr
    assert len(stored_secrets(db)) == 2


def test_encrypt_then_rotate_then_decrypt(
    tmp_path: Path, start_collector: Callable[..., LiveCollector]
) -> None:
    old, new = new_key_file(tmp_path / "old.key"), new_key_file(tmp_path / "new.key")
    db = tmp_path / "collector.db"
    app = create_app(db)  # in clear, as before key files
    root = json.loads(run_cli("--db", str(db), "keys", "create", "--root", "--json"))
    assert app.admin.secret_access_key in stored_secrets(db).values()

    assert "Sealed 3 of 3" in run_cli("--db", str(db), "secrets", "encrypt",
                                      "--secrets-key-file", str(old))  # fmt: skip
    sealed = stored_secrets(db)
    assert all(sealing.is_sealed(s) for s in sealed.values())
    assert app.admin.secret_access_key.encode() not in raw_bytes(db)
    run_cli("--db", str(db), "secrets", "encrypt", "--secrets-key-file", str(old))
    assert stored_secrets(db) == sealed  # a second run changes nothing

    run_cli("--db", str(db), "secrets", "rotate", "--secrets-key-file", str(old),
            "--new-key-file", str(new))  # fmt: skip
    rotated = stored_secrets(db)
    assert rotated.keys() == sealed.keys() and not set(rotated.values()) & set(sealed.values())
    old_key = SecretsKey.load(old)
    for access_key_id, stored in rotated.items():
        with pytest.raises(SecretsKeyError):
            old_key.open(stored, access_key_id)
    assert "does not open with" in serve_fails(db, "--secrets-key-file", str(old))

    collector = start_collector(db, "--secrets-key-file", str(new))
    assert signed_get(collector, app.admin, app.id) == app.id
    root_creds = Credentials(root["access_key_id"], root["secret_access_key"], root["token"])
    assert signed_get(collector, root_creds, app.id) == app.id
    collector.stop()

    # Decrypting needs the key that sealed them, and stores them in clear all at once.
    code, stderr = cli("--db", str(db), "secrets", "decrypt", "--secrets-key-file", str(old))
    assert code == 1 and "does not open with" in stderr
    assert stored_secrets(db) == rotated  # the failed run changed nothing
    run_cli("--db", str(db), "secrets", "decrypt", "--secrets-key-file", str(new))
    assert stored_secrets(db)[app.admin.access_key_id] == app.admin.secret_access_key
    collector = start_collector(db)
    assert signed_get(collector, app.admin, app.id) == app.id


def test_the_environment_names_the_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key_file(tmp_path / "secrets.key")
    db = tmp_path / "collector.db"
    monkeypatch.setenv("HOMING_SECRETS_KEY_FILE", str(key))
    app = create_app(db)
    assert sealing.is_sealed(stored_secrets(db)[app.ingest.access_key_id])
    monkeypatch.delenv("HOMING_SECRETS_KEY_FILE")
    assert cli_main(["--db", str(db), "secrets", "encrypt"]) == 1  # needs the key file


def test_signed_requests_wait_while_the_collector_cannot_open_a_secret(
    tmp_path: Path, start_collector: Callable[..., LiveCollector]
) -> None:
    # Rotating under a running collector: its SigV4 checks answer 503 with Retry-After (a
    # retry succeeds once it restarts with the new key file), never a 500; bearer tokens,
    # stored as hashes, keep working.
    old, new = new_key_file(tmp_path / "old.key"), new_key_file(tmp_path / "new.key")
    db = tmp_path / "collector.db"
    app = create_app(db, "--secrets-key-file", str(old))
    collector = start_collector(db, "--secrets-key-file", str(old))
    assert signed_get(collector, app.admin, app.id) == app.id
    run_cli("--db", str(db), "secrets", "rotate", "--secrets-key-file", str(old),
            "--new-key-file", str(new))  # fmt: skip
    with pytest.raises(ClientError) as refused:
        signed_get(collector, app.admin, app.id)
    meta = refused.value.response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 503 and meta["HTTPHeaders"]["retry-after"] == "30"
    bearer = {"Authorization": f"Bearer {app.admin.token}"}
    assert httpx.get(f"{collector.url}/v1/apps/{app.id}", headers=bearer).status_code == 200


def test_every_worker_opens_the_secrets(
    tmp_path: Path, start_collector: Callable[..., LiveCollector]
) -> None:
    key = new_key_file(tmp_path / "secrets.key")
    db = tmp_path / "collector.db"
    app = create_app(db, "--secrets-key-file", str(key))
    collector = start_collector(db, "--workers", "2", "--secrets-key-file", str(key))
    client = collector.client(app.ingest)
    for n in range(8):  # new connections, which the kernel spreads over the workers
        event = {"EventType": "sealed", "Timestamp": "2026-11-28T10:00:00.000Z"}
        batch = {"ep": {"Endpoint": {}, "Events": {f"e{n}": event}}}
        answer = client.put_events(ApplicationId=app.id, EventsRequest={"BatchItem": batch})
        statuses = answer["EventsResponse"]["Results"]["ep"]["EventsItemResponse"]
        assert statuses[f"e{n}"]["StatusCode"] == 202
        client.close()
        client = collector.client(app.ingest)
