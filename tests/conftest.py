"""Shared fixtures: real collectors on loopback, real SQLite files in tmp_path, and a
PostgreSQL cluster of the tests' own (tests/pg.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from homing_collector.cli import main as cli_main

# The backends every test of the `collector` fixture runs on.
BACKENDS = ["sqlite", "postgresql"]

# A throwaway PostgreSQL server, for the tests of the PostgreSQL storage.
pytest_plugins = ["tests.pg"]

# In CI every property test draws the same examples on every run, so that a red run can be
# run again and a green one is not luck; a developer's runs keep drawing new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def run_cli(*args: str) -> str:
    """Run `homing-collector ARGS` in this process; return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(list(args))
    assert code == 0, f"homing-collector {' '.join(args)} exited {code}"
    return out.getvalue()


@dataclass
class Credentials:
    access_key_id: str
    secret_access_key: str
    token: str


@dataclass
class App:
    id: str
    ingest: Credentials
    admin: Credentials


@dataclass
class LiveCollector:
    """`homing-collector serve` in a child process, on a free loopback port.

    On the SQLite file `db`, or on the database `db_url` names (a postgresql:// URL; then
    `db` only names the log, `db` with .log): several may share that one."""

    db: Path
    db_url: str = ""
    url: str = ""
    process: subprocess.Popen[str] | None = None
    extra_args: tuple[str, ...] = ()
    new_session: bool = False  # a process group of its own, as a terminal or service gives
    log: Path | None = None
    _apps: list[App] = field(default_factory=list)

    @property
    def database(self) -> str:
        return self.db_url or str(self.db)

    def start(self) -> LiveCollector:
        return self.launch().wait_ready()

    def launch(self) -> LiveCollector:
        """Start the process; wait_ready() waits for it to listen."""
        self.log = self.db.with_suffix(".log")
        stderr = self.log.open("a")
        # On PostgreSQL, its own columnar copy beside its log, not in the user's cache.
        env = {"HOMING_COLUMNAR_DIR": str(self.db.with_suffix(".columnar")), **os.environ}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "homing_collector", "--db", self.database, "serve",
             "--port", "0", *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**env, "PYTHONUNBUFFERED": "1"},
            start_new_session=self.new_session,
        )  # fmt: skip
        stderr.close()
        return self

    def wait_ready(self) -> LiveCollector:
        assert self.process is not None and self.process.stdout is not None
        assert self.log is not None
        line = self.process.stdout.readline()
        if "listening on " not in line:
            self.process.kill()
            raise RuntimeError(f"collector did not start: {line!r}\n{self.log.read_text()}")
        self.url = line.split("listening on ")[1].split()[0]
        return self

    def create_app(self, name: str = "test") -> App:
        data = json.loads(self.cli("apps", "create", name, "--json"))
        app = App(
            data["application_id"], Credentials(**data["ingest"]), Credentials(**data["admin"])
        )
        self._apps.append(app)
        return app

    def root_key(self) -> Credentials:
        data = json.loads(self.cli("keys", "create", "--root", "--json"))
        return Credentials(data["access_key_id"], data["secret_access_key"], data["token"])

    def cli(self, *args: str) -> str:
        """Run `homing-collector --db DATABASE ARGS` in this process."""
        return run_cli("--db", self.database, *args)

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """The rows of `statement` (with ? marks) on the collector's database, whichever
        backend holds it: the tables the tests read have the same columns on both."""
        return sql(self, statement, params)

    def client(
        self, creds: Credentials, region: str = "eu-west-1", *, validate: bool = True
    ) -> Any:
        """A boto3 pinpoint client; validate=False lets it send what its model forbids."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "pinpoint",
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            config=Config(retries={"max_attempts": 1}, parameter_validation=validate),
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        return code


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run the module's start_collector tests on each backend"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_backends"
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The backend that start_collector starts on: SQLite, or each of BACKENDS in a module
    marked `pytestmark = pytest.mark.both_backends`."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def start_collector(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., LiveCollector]]:
    """A factory: start_collector(db=None, *extra_args) -> a running LiveCollector. On
    PostgreSQL, each `db` path names a database of its own, made at its first start, so
    that a collector started again on a path finds what the last one stored."""
    started: list[LiveCollector] = []
    databases: dict[Path, str] = {}
    cluster: Any = None
    if backend == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
    from tests.pg import create_database, drop_database

    def start(db: Path | None = None, *extra_args: str) -> LiveCollector:
        path = db or tmp_path / "collector.db"
        url = ""
        if cluster is not None:
            url = databases.get(path) or databases.setdefault(path, create_database(cluster))
        collector = LiveCollector(path, db_url=url, extra_args=extra_args)
        started.append(collector.start())
        return collector

    yield start
    for collector in started:
        with contextlib.suppress(Exception):
            collector.stop(signal.SIGKILL, timeout=10)
    for url in databases.values():
        drop_database(cluster, url)


@contextlib.contextmanager
def live_on(
    backend: str, request: pytest.FixtureRequest, directory: Path
) -> Iterator[LiveCollector]:
    """A started LiveCollector on `backend`: a SQLite file in `directory`, or a fresh
    database of the tests' PostgreSQL cluster, dropped after."""
    directory.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        live = LiveCollector(directory / "collector.db").start()
        try:
            yield live
        finally:
            live.stop()
        return
    from tests.pg import create_database, drop_database

    cluster = request.getfixturevalue("postgres_cluster")
    url = create_database(cluster)
    live = LiveCollector(directory / "collector.db", db_url=url).start()
    try:
        yield live
    finally:
        live.stop()
        drop_database(cluster, url)


def sql(live: LiveCollector, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on `live`'s database (written with ? marks) and commit it;
    return its rows."""
    if not live.db_url:
        with contextlib.closing(sqlite3.connect(live.db, timeout=30)) as db:
            rows = db.execute(statement, params).fetchall()
            db.commit()
            return rows
    import psycopg

    with psycopg.connect(live.db_url, autocommit=True) as conn:
        cursor = conn.execute(statement.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description is not None else []


@pytest.fixture(scope="module", params=BACKENDS)
def collector(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveCollector]:
    """One collector shared by a test module, once on each backend: a SQLite file, and a
    fresh database of the tests' PostgreSQL cluster (tests/pg.py)."""
    with live_on(request.param, request, tmp_path_factory.mktemp("collector")) as live:
        yield live
