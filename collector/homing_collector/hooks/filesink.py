"""An event stream's file sink: records appended to hourly NDJSON files.

A batch for `file:///var/lib/homing/streams` lands in
`/var/lib/homing/streams/<application id>/YYYY-MM-DD-HH.ndjson`, one record a line, the
hour being the UTC hour of each record's `arrival_timestamp`. The files are what
`import pinpoint-events` reads back. A batch is written and flushed to disk before it
counts as delivered; a crash in between writes it again (at least once: the records'
`event_id` tells the copies apart).
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import orjson

from homing_collector.hooks.delivery import Body


def directory(url: str) -> Path:
    """The directory a `file://` destination names."""
    return Path(unquote(urlsplit(url).path))


def write(url: str, app_id: str, body: Body) -> None:
    """Append the batch's records to the application's hourly files; raises OSError."""
    data = gzip.decompress(body.content) if body.content_encoding == "gzip" else body.content
    by_hour: dict[str, list[bytes]] = {}
    for line in data.splitlines():
        if not line.strip():
            continue
        arrival = orjson.loads(line).get("arrival_timestamp", 0)
        hour = time.strftime("%Y-%m-%d-%H", time.gmtime(int(arrival) // 1000))
        by_hour.setdefault(hour, []).append(line + b"\n")
    folder = directory(url) / app_id
    folder.mkdir(parents=True, exist_ok=True)
    for hour, lines in sorted(by_hour.items()):
        with open(folder / f"{hour}.ndjson", "ab") as file:
            file.write(b"".join(lines))
            file.flush()
            os.fsync(file.fileno())
