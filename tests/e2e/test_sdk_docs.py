"""docs/sdk.md and README's SDK example run against a live collector, as written.

Every python block in docs/sdk.md is a complete program. Each runs in a fresh namespace
with the environment the docs tell readers to set, against its own application; the
event types it records must then be in the collector's database. The options table and
the exception tree are checked against the code.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import homing
from tests.collector.test_docs import DOC_URL, HEADING, code_blocks, section, table_rows
from tests.conftest import LiveCollector

ROOT = Path(__file__).resolve().parents[2]
SDK_MD = ROOT / "docs" / "sdk.md"
README = ROOT / "README.md"
RECORDED = re.compile(r"""record_event\(\s*["']([^"']+)["']""")


def _heading_of(markdown: str, block: str) -> str:
    before = markdown[: markdown.index(block)]
    return HEADING.findall(before)[-1][1]


SDK_BLOCKS = code_blocks(SDK_MD.read_text(), "python")
SDK_IDS = [f"{i}-{_heading_of(SDK_MD.read_text(), b)}" for i, b in enumerate(SDK_BLOCKS)]


def stored_types(collector: LiveCollector, app_id: str) -> list[str]:
    rows = collector.query("SELECT event_type FROM events WHERE app_id = ?", app_id)
    return sorted(str(kind) for (kind,) in rows)


@pytest.fixture
def reader_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """What a reader's shell has, minus their home: the SDK's data dir goes to tmp_path."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # The logging example configures logging: give the next test what this one found.
    root = logging.getLogger()
    homing_logger = logging.getLogger("homing")
    saved = (root.level, list(root.handlers), homing_logger.level)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    homing_logger.setLevel(saved[2])


def run_example(
    example: str, collector: LiveCollector, monkeypatch: pytest.MonkeyPatch, origin: str
) -> tuple[str, dict[str, Any]]:
    """Run `example` against a new application; return the app id and its namespace."""
    app = collector.create_app("sdk-docs")
    monkeypatch.setenv("HOMING_APP_ID", app.id)
    monkeypatch.setenv("HOMING_INGEST_TOKEN", app.ingest.token)
    namespace: dict[str, Any] = {"__name__": "sdk_docs_example"}
    exec(compile(example.replace(DOC_URL, collector.url), origin, "exec"), namespace)
    opened = [value for value in namespace.values() if isinstance(value, homing.Analytics)]
    for analytics in opened:
        # Examples close what they open: a reader copies that too.
        assert analytics._closed, f"{origin}: an Analytics is left open"
    return app.id, namespace


def test_every_python_block_in_sdk_md_is_found() -> None:
    assert len(SDK_BLOCKS) >= 7
    for block in SDK_BLOCKS:
        assert "homing.Analytics(" in block or "logging" in block, block
        if "homing.Analytics(" in block:
            assert DOC_URL in block, f"examples must address {DOC_URL}:\n{block}"


@pytest.mark.usefixtures("reader_env")
@pytest.mark.parametrize("example", SDK_BLOCKS, ids=SDK_IDS)
def test_sdk_md_examples_run(
    collector: LiveCollector, monkeypatch: pytest.MonkeyPatch, example: str
) -> None:
    app_id, _ = run_example(example, collector, monkeypatch, str(SDK_MD))
    expected = set(RECORDED.findall(example))
    if "session()" in example or "start_session()" in example:
        expected |= {"_session.start", "_session.stop"}
    if "pause_session()" in example:
        expected |= {"_session.pause", "_session.resume"}
    if "network_policy=" in example and not homing.NetworkPolicy("unmetered").allows():
        expected = set()  # this machine's link is metered or unknown: the events wait
    assert expected <= set(stored_types(collector, app_id))


@pytest.mark.usefixtures("reader_env")
def test_sdk_md_examples_say_what_they_print(
    collector: LiveCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The comments after print() in "Flush, close and stats" and "Events" are true.
    (stats_example,) = code_blocks(section(SDK_MD.read_text(), "Flush, close and stats"), "python")
    run_example(stats_example, collector, monkeypatch, str(SDK_MD))
    assert capsys.readouterr().out.splitlines()[0] == "1 0 None"
    (events_example,) = code_blocks(section(SDK_MD.read_text(), "Events"), "python")
    run_example(events_example, collector, monkeypatch, str(SDK_MD))
    assert capsys.readouterr().out == "Attributes.level must be a string, not a number\n"
    (profile_example,) = code_blocks(section(SDK_MD.read_text(), "The endpoint profile"), "python")
    run_example(profile_example, collector, monkeypatch, str(SDK_MD))
    assert capsys.readouterr().out == "{'interests': ['hiking']}\n"


@pytest.mark.usefixtures("reader_env")
def test_readme_sdk_example_runs(collector: LiveCollector, monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = code_blocks(section(README.read_text(), "Use the Python SDK"), "python")
    app_id, _ = run_example(example, collector, monkeypatch, str(README))
    assert stored_types(collector, app_id) == ["Item Bought", "_session.start", "_session.stop"]


def test_the_options_table_matches_the_constructor() -> None:
    rows = table_rows(section(SDK_MD.read_text(), "Options"))
    documented = {row[0].strip("`"): row[1] for row in rows[1:]}
    parameters = inspect.signature(homing.Analytics.__init__).parameters.values()
    options = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    assert set(documented) == set(options)
    for name, default in options.items():
        if default is time.time:
            shown = "time.time"
        elif isinstance(default, str):
            shown = f'"{default}"'
        else:
            shown = repr(default)
        assert documented[name] == f"`{shown}`", name


def test_the_exception_tree_is_the_code() -> None:
    tree = code_blocks(section(SDK_MD.read_text(), "Exceptions"), "text")[0]
    assert "└── homing.HomingError" in tree
    for name in ("InvalidEventError", "InvalidEndpointError", "ConfigurationError"):
        error = getattr(homing, name)
        assert issubclass(error, homing.HomingError) and issubclass(error, ValueError)
        assert f"homing.{name} (also ValueError)" in tree
    errors = {n for n in homing.__all__ if isinstance(getattr(homing, n), type)
              and issubclass(getattr(homing, n), BaseException)}  # fmt: skip
    assert errors == {"HomingError", "InvalidEventError", "InvalidEndpointError",
                      "ConfigurationError"}  # fmt: skip
