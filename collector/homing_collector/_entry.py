"""The `homing-collector` command's entry point, which imports nothing the SDK lacks:
`pip install homing` without its `collector` extra installs the command too, and then it
says what to install instead of failing with a traceback."""

from __future__ import annotations

import importlib.util
import sys

_NEEDS = ("starlette", "uvicorn")


def main() -> int:
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"homing-collector: {' and '.join(missing)} not installed; the collector needs "
            "the collector extra: pip install 'homing[collector]'",
            file=sys.stderr,
        )
        return 1
    from homing_collector.cli import main as run

    return run()
