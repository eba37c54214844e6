"""The docs are tested where they show code.

README's commands and examples, every curl example in docs/, the boto3 sample, every
`homing-collector` command the docs mention, the API tables and the links all run or
are checked against the code and a live collector.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore import xform_name

from homing import limits
from homing_collector.cli import _parser
from homing_collector.routes import OPERATIONS
from tests.conftest import App, LiveCollector

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SAMPLE = ROOT / "samples" / "boto3_backend.py"
# Examples in the docs address the collector at its default address; tests swap in theirs.
DOC_URL = "http://127.0.0.1:8080"

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$", re.M)


def code_blocks(markdown: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(markdown) if lang == language]


def section(markdown: str, title: str) -> str:
    """The text under the heading `title`, up to the next heading of the same level or above."""
    # Blank out code, keeping offsets, so that a "#" in a code block is not a heading.
    prose = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), markdown)
    for match in HEADING.finditer(prose):
        if match.group(2) == title:
            level = len(match.group(1))
            end = len(markdown)
            for later in HEADING.finditer(prose, match.end()):
                if len(later.group(1)) <= level:
                    end = later.start()
                    break
            return markdown[match.end() : end]
    raise AssertionError(f"no heading {title!r}")


def client_env(collector: LiveCollector, app: App) -> dict[str, str]:
    """The variables that the docs and the sample tell readers to set."""
    return {
        "HOMING_URL": collector.url,
        "HOMING_APP_ID": app.id,
        "HOMING_INGEST_TOKEN": app.ingest.token,
        "HOMING_ADMIN_TOKEN": app.admin.token,
        "HOMING_ACCESS_KEY_ID": app.admin.access_key_id,
        "HOMING_SECRET_ACCESS_KEY": app.admin.secret_access_key,
    }


def stored_events(collector: LiveCollector, app_id: str) -> set[tuple[str, str]]:
    """(endpoint id, event id) of every event the collector has stored for `app_id`."""
    rows = collector.query("SELECT endpoint_id, event_id FROM events WHERE app_id = ?", app_id)
    return {(endpoint_id, event_id) for endpoint_id, event_id in rows}


def run_shell(command: str, collector: LiveCollector, app: App) -> tuple[int, str]:
    """Run a shell example against `collector`; return the HTTP status and the body."""
    assert DOC_URL in command, f"examples must address {DOC_URL}:\n{command}"
    result = subprocess.run(
        ["bash", "-eu", "-o", "pipefail", "-c", command.replace(DOC_URL, collector.url)],
        env={**os.environ, **client_env(collector, app)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{command}\nexited {result.returncode}\n{result.stderr}"
    # `curl -i` prints the status line and headers, a blank line, then the body.
    heads = list(re.finditer(r"^HTTP/[\d.]+ (\d{3})[^\n]*\n", result.stdout, re.M))
    assert heads, f"no HTTP status line; examples use curl -i:\n{result.stdout}"
    _, _, body = result.stdout[heads[-1].start() :].partition("\n\n")  # text mode: \n
    return int(heads[-1].group(1)), body


def event_statuses(answer: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {
        (endpoint_id, event_id): status["StatusCode"]
        for endpoint_id, item in answer["Results"].items()
        for event_id, status in item["EventsItemResponse"].items()
    }


needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("bash") is None,
    reason="curl and bash are needed to run the docs' shell examples",
)


# -- README ------------------------------------------------------------------------------


def test_readme_test_command_is_what_ci_runs() -> None:
    blocks = code_blocks(section(README.read_text(), "Run the tests"), "bash")
    assert len(blocks) == 1, "'Run the tests' must hold exactly one bash block"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    last = [line for line in ci_lines if line and not line.startswith("#")][-1]
    assert blocks[0].strip() == last


def test_readme_collector_command_installs_and_serves() -> None:
    blocks = code_blocks(section(README.read_text(), "Run the collector"), "bash")
    assert len(blocks) == 1, "'Run the collector' must hold exactly one bash block"
    steps = [step.strip() for step in blocks[0].strip().split("&&")]
    assert steps == [
        "python3 -m venv .venv",
        '.venv/bin/pip install -e ".[collector]"',
        ".venv/bin/homing-collector apps create my-app",
        ".venv/bin/homing-collector serve",
    ]


def test_readme_boto3_example_runs(
    collector: LiveCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    (example,) = code_blocks(section(README.read_text(), "Use boto3"), "python")
    assert DOC_URL in example
    app = collector.create_app("readme-boto3")
    for name, value in client_env(collector, app).items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(example.replace(DOC_URL, collector.url), str(README), "exec"), namespace)

    statuses = event_statuses(namespace["result"]["EventsResponse"])
    assert statuses and set(statuses.values()) == {202}, statuses
    assert stored_events(collector, app.id) == set(statuses)
    endpoint = namespace["endpoint"]["EndpointResponse"]
    assert endpoint["ApplicationId"] == app.id
    assert endpoint["Id"] in {endpoint_id for endpoint_id, _ in statuses}


@needs_curl
def test_readme_curl_example_runs(collector: LiveCollector) -> None:
    (example,) = code_blocks(section(README.read_text(), "Send events with curl"), "bash")
    assert "Authorization: Bearer $HOMING_INGEST_TOKEN" in example
    app = collector.create_app("readme-curl")
    status, body = run_shell(example, collector, app)
    assert status == 202
    statuses = event_statuses(json.loads(body))
    assert statuses and set(statuses.values()) == {202}, statuses
    assert stored_events(collector, app.id) == set(statuses)


# -- docs/ -------------------------------------------------------------------------------

CURL_DOCS = [
    doc for doc in DOCS if any("curl " in block for block in code_blocks(doc.read_text(), "bash"))
]


def test_the_quickstart_shows_curl() -> None:
    assert ROOT / "docs" / "quickstart.md" in CURL_DOCS


@needs_curl
@pytest.mark.parametrize("doc", CURL_DOCS, ids=[doc.name for doc in CURL_DOCS])
def test_docs_curl_examples_run(collector: LiveCollector, doc: Path) -> None:
    """Every bash block with curl runs, in order, against one fresh application."""
    app = collector.create_app(doc.stem)
    accepted: set[tuple[str, str]] = set()
    for example in code_blocks(doc.read_text(), "bash"):
        if "curl " not in example:
            continue
        status, body = run_shell(example, collector, app)
        assert 200 <= status < 300, f"{example}\nanswered {status}: {body}"
        if re.search(r"/events(?!tream)", example):  # PutEvents, not an event stream
            statuses = event_statuses(json.loads(body))
            assert statuses, body
            accepted |= {key for key, code in statuses.items() if code == 202}
    assert accepted <= stored_events(collector, app.id)


# -- the sample --------------------------------------------------------------------------


SAMPLE_SETTINGS = (
    "HOMING_URL",
    "HOMING_APP_ID",
    "HOMING_ACCESS_KEY_ID",
    "HOMING_SECRET_ACCESS_KEY",
)


def _sample_settings(collector: LiveCollector, app: App) -> dict[str, str]:
    env = client_env(collector, app)
    return {name: env[name] for name in SAMPLE_SETTINGS}


def _run_sample(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOMING_")}
    return subprocess.run(
        [sys.executable, str(SAMPLE), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("given_as", ["environment", "flags"])
def test_boto3_sample_runs(collector: LiveCollector, given_as: str) -> None:
    app = collector.create_app("sample")
    settings = _sample_settings(collector, app)
    if given_as == "environment":
        result = _run_sample([], settings)
    else:
        flags = [f"--{name[len('HOMING_') :].lower().replace('_', '-')}" for name in settings]
        args = [f"{flag}={value}" for flag, value in zip(flags, settings.values(), strict=True)]
        result = _run_sample(args, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Event order-1: 202" in result.stdout
    assert "Event order-3: 400" in result.stdout  # rejected on purpose

    admin = collector.client(app.admin)
    user = admin.get_user_endpoints(ApplicationId=app.id, UserId="sample-user")
    (endpoint,) = user["EndpointsResponse"]["Item"]
    assert endpoint["Attributes"]["plan"] == ["pro"]
    assert stored_events(collector, app.id) == {
        (endpoint["Id"], "order-1"),
        (endpoint["Id"], "order-2"),
    }


def test_boto3_sample_fails_with_a_wrong_secret(collector: LiveCollector) -> None:
    app = collector.create_app("sample-wrong-secret")
    settings = _sample_settings(collector, app)
    settings["HOMING_SECRET_ACCESS_KEY"] = "not-the-secret"
    result = _run_sample([], settings)
    assert result.returncode == 1
    assert "ForbiddenException" in result.stderr


# -- homing-collector commands in the docs ------------------------------------------------


def _cli_tree(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    tree = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                tree.update(_cli_tree(sub, (*path, name)))
    return tree


CLI = _cli_tree(_parser())
MENTION = re.compile(r"(?<![\w.-])homing-collector(?![\w.-])((?:[ \t]+[^\s`|&;)#]+)*)")


def cli_mentions(markdown: str) -> set[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(command path, flags) of each `homing-collector ...` in code spans and code blocks."""
    code = [body for _, body in FENCE.findall(markdown)]
    code += re.findall(r"`([^`\n]+)`", FENCE.sub("", markdown))
    found = set()
    for text in code:
        for match in MENTION.finditer(text.replace("\\|", "|")):
            tokens = match.group(1).split()
            path: list[str] = []
            while tokens:
                if tokens[0] == "--db":
                    tokens = tokens[2:]
                elif tokens[0].startswith("--db="):
                    tokens = tokens[1:]
                elif re.fullmatch(r"[a-z][a-z-]*", tokens[0]) and any(
                    len(p) > len(path) and p[: len(path)] == tuple(path) for p in CLI
                ):
                    path.append(tokens.pop(0))  # an unknown word here fails its --help
                else:
                    break
            flags = re.findall(r"--[a-z][a-z-]*", match.group(1))
            found.add((tuple(path), tuple(sorted(set(flags) - {"--db"}))))
    return found


def _mention_id(mention: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return " ".join(("homing-collector", *mention[0], *mention[1]))


COLLECTOR_MD = ROOT / "docs" / "collector.md"
MENTIONS = sorted(
    {m for doc in [README, *DOCS] for m in cli_mentions(doc.read_text())}, key=_mention_id
)


@pytest.mark.parametrize("mention", MENTIONS, ids=[_mention_id(m) for m in MENTIONS])
def test_every_documented_command_exists(
    mention: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    path, flags = mention
    result = subprocess.run(
        [sys.executable, "-m", "homing_collector", *path, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" ".join(("usage: homing-collector", *path)))
    for flag in flags:
        assert flag in result.stdout, f"{_mention_id(mention)}: {flag} is not an option"


def test_collector_md_names_every_command_and_option() -> None:
    text = COLLECTOR_MD.read_text()
    documented = {path for path, _ in cli_mentions(text)}
    for path, parser in CLI.items():
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert path in documented, f"homing-collector {' '.join(path)} is not documented"
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    assert re.search(rf"(?<![\w-]){option}(?![\w-])", text), option
    options = {o for parser in CLI.values() for a in parser._actions for o in a.option_strings}
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", text):
        assert flag in options, f"collector.md names {flag}, which no command has"


# -- docs/api.md and docs/pinpoint-migration.md against the code ---------------------------


def table_rows(markdown: str) -> list[list[str]]:
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|") and not re.fullmatch(r"[|\s:-]+", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_api_md_lists_every_operation_as_routed() -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("pinpoint")
    operations = section((ROOT / "docs" / "api.md").read_text(), "Operations")
    rows = {row[0]: row for row in table_rows(operations) if len(row) == 6}
    rows.pop("Operation")
    assert set(rows) == {op.name for op in OPERATIONS}
    for op in OPERATIONS:
        path = re.sub(r"{(\w+)}", lambda m: "{" + m.group(1).replace("_", "-") + "}", op.path)
        _, method, http_method, doc_path, role, status = rows[op.name]
        assert (http_method, doc_path, role, status) == (
            op.method, f"`{path}`", op.role, str(op.status),
        ), op.name  # fmt: skip
        if op.name in model.operation_names:
            http = model.operation_model(op.name).http
            assert (http["method"], http["requestUri"], http["responseCode"]) == (
                op.method, path, op.status,
            ), f"{op.name} differs from Pinpoint"  # fmt: skip
            assert method == f"`{xform_name(op.name)}`"
        else:
            assert method == "—"


def test_migration_guide_lists_exactly_the_pinpoint_operations_served() -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("pinpoint")
    served = {f"`{xform_name(op.name)}`" for op in OPERATIONS if op.name in model.operation_names}
    guide = section((ROOT / "docs" / "pinpoint-migration.md").read_text(), "What maps one to one")
    listed = {row[0] for row in table_rows(guide)} - {"boto3 method"}
    assert listed == served
    intro = (ROOT / "docs" / "pinpoint-migration.md").read_text().split("\n\n")[2]
    assert f"Homing serves {len(served)} of the" in intro, intro


def test_api_md_lists_every_limit_with_its_value() -> None:
    rows = table_rows(section((ROOT / "docs" / "api.md").read_text(), "Limits"))
    names = {name for name in vars(limits) if name.isupper()}
    by_name = {row[2].strip("`"): row for row in rows if len(row) == 3}
    assert names <= set(by_name), names - set(by_name)
    for name in names:
        value = getattr(limits, name)
        assert str(value) in by_name[name][1] or f"{value:,}" in by_name[name][1], name


# -- links --------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("doc", [README, *DOCS], ids=[d.name for d in [README, *DOCS]])
def test_relative_links_resolve(doc: Path) -> None:
    prose = FENCE.sub("", doc.read_text())
    links = re.findall(r"\]\(([^)\s]+)\)", prose)
    if doc == README:
        assert any("docs/" in link for link in links), "README must link to docs/"
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        assert path.exists(), f"{doc.name}: {link} points to nothing"
        if anchor:
            headings = HEADING.findall(FENCE.sub("", path.read_text()))
            assert anchor in {_slug(title) for _, title in headings}, f"{doc.name}: {link}"
