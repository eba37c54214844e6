"""E2E helpers: the SDK against a live collector, in this process or in children."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import LiveCollector

ROOT = Path(__file__).resolve().parents[2]

# Run at the top of every child script: logging to stderr for the test's failure output.
CHILD_PRELUDE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import homing
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def collector_events(collector: LiveCollector, app_id: str) -> list[tuple[str, str]]:
    """(event_id, event_type) of every event the collector holds for the app."""
    rows = collector.query("SELECT event_id, event_type FROM events WHERE app_id = ?", app_id)
    return [(str(a), str(b)) for a, b in rows]


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(script), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
