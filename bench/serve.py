"""Start ``homing-collector serve`` for a bench: on loopback, on a free port, its stderr
in a log file. Its first line on stdout says where it listens.

    from serve import start
    process, url = start(db, log, "--no-access-log", env={"HOMING_PG_LISTEN": "0"})
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT = 60.0
LISTENING = b"listening on "


def start(
    db: Path | str,
    log: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
    timeout: float = START_TIMEOUT,
) -> tuple[subprocess.Popen[bytes], str]:
    """The collector's process on `db` and its base URL (``http://127.0.0.1:PORT``), once
    it listens; `extra` goes after ``serve``. Raises RuntimeError, with the log, if it
    has not said so within `timeout` seconds."""
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [python, "-m", "homing_collector", "--db", str(db), "serve", "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            piece = os.read(process.stdout.fileno(), 4096)
            if not piece:
                break
            line += piece
    if LISTENING not in line:
        stop(process)
        raise RuntimeError(f"the collector did not start: {line!r}\n{log.read_text()}")
    return process, line.split(LISTENING)[1].split()[0].decode()


def port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
