"""A throwaway PostgreSQL cluster for the tests, started with Debian's initdb and pg_ctl.

The cluster lives in a temporary directory (its unix socket too), listens on a free
loopback port, and is stopped and removed when the session ends. Each test that asks for
`postgres_url` gets a database of its own, made for it and dropped after it.

PostgreSQL refuses to run as root, which CI is: then the directory belongs to the
`postgres` system user, and initdb and pg_ctl run as that user through `runuser`.
Without the server binaries (scripts/install puts them there) the tests are skipped with
the reason, except when CI is set: CI must run them, so there they fail instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

_USER = "homing"  # the cluster's superuser, trusted on loopback and the socket
_SYSTEM_USER = "postgres"  # who runs the server when the tests run as root
_names = itertools.count()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def _bindir() -> Path | None:
    """The newest installed server's bin directory, which holds initdb and pg_ctl."""
    found = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
        if (path.parent / "initdb").exists()
    ]
    if found:
        return max(found, key=lambda bindir: int(bindir.parent.name))
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    bindir: Path
    directory: Path
    port: int
    as_user: str | None  # run the server as this system user (we are root), or as us

    def run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.as_user is not None:
            command = ["runuser", "-u", self.as_user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)

    def init(self) -> None:
        self.run("initdb", "-D", str(self.directory / "data"), "-U", _USER, "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip

    def start(self) -> None:
        data = self.directory / "data"
        # fsync off: a test cluster need not survive a power cut, and it is much faster.
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self.run("pg_ctl", "-D", str(data), "-l", str(self.directory / "server.log"),
                 "-o", options, "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "stop")

    def url(self, database: str) -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    @property
    def postmaster_pid(self) -> int:
        """The server's main process, parent of every backend."""
        return int((self.directory / "data" / "postmaster.pid").read_text().split()[0])


def start_cluster() -> Cluster:
    bindir = _bindir()
    if bindir is None:
        _unavailable(
            "initdb and pg_ctl are not installed; scripts/install installs Debian's postgresql"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable('psycopg is not installed; pip install -e ".[test]"')
    as_user = None
    directory = Path(tempfile.mkdtemp(prefix="homing-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            shutil.rmtree(directory)
            _unavailable(f"running as root, and there is no {_SYSTEM_USER!r} user to run as")
        os.chown(directory, account.pw_uid, account.pw_gid)
        as_user = _SYSTEM_USER
    cluster = Cluster(bindir, directory, _free_port(), as_user)
    try:
        cluster.init()
        for attempt in range(3):
            try:
                cluster.start()
                break
            except subprocess.CalledProcessError:
                # Most likely another process took the free port first: take another.
                if attempt == 2:
                    raise
                cluster.port = _free_port()
    except subprocess.CalledProcessError as exc:
        log = directory / "server.log"
        detail = log.read_text() if log.exists() else ""
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"{exc.cmd} failed:\n{exc.stderr}\n{detail}") from exc
    return cluster


@contextlib.contextmanager
def throwaway_database(url: str | None = None) -> Iterator[tuple[str, Cluster | None]]:
    """For the benches: `url` as given, or else a new database on a cluster started for
    the occasion, which is stopped and removed afterwards. The cluster comes too (None
    for a given URL), for a bench that measures its server."""
    if url:
        yield url, None
        return
    cluster = start_cluster()
    try:
        yield create_database(cluster), cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of our own for the whole session."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)


def create_database(cluster: Cluster) -> str:
    """A new, empty database on the cluster; return its URL."""
    import psycopg

    name = f"test_{os.getpid()}_{next(_names)}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.url(name)


def drop_database(cluster: Cluster, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh database, dropped after the test."""
    url = create_database(postgres_cluster)
    yield url
    drop_database(postgres_cluster, url)
