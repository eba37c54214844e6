"""Settings: command-line flags > HOMING_* environment variables > defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("homing-collector")) / "homing.db"


@dataclass(frozen=True)
class Settings:
    db_path: Path
    host: str = "127.0.0.1"
    port: int = 8080
    # SQLite's synchronous pragma. NORMAL survives a killed process, FULL a lost power supply.
    synchronous: str = "NORMAL"
    # Writes waiting for the disk before new ones are answered 429 with Retry-After.
    max_pending_writes: int = 4096
    # Seconds that in-flight requests get to finish on SIGTERM.
    shutdown_timeout: float = 30.0
    # Adds a route that parses PutEvents bodies without storing them, for benchmarks.
    bench_routes: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **flags: object) -> Settings:
        """Build settings from flags that were given (not None), then the environment."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "db_path": Path(env["HOMING_DB"]) if env.get("HOMING_DB") else default_db_path(),
        }
        for name, kind in (("host", str), ("port", int), ("synchronous", str)):
            raw = env.get(f"HOMING_{name.upper()}")
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ValueError(
                        f"HOMING_{name.upper()}={raw!r} is not a valid {name}"
                    ) from None
        for name, value in flags.items():
            if value is not None:
                values[name] = Path(str(value)) if name == "db_path" else value
        return cls(**values)  # type: ignore[arg-type]
