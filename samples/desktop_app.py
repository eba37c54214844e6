"""A small desktop app that records a session and a few events with the Homing SDK.

It pretends to be a document editor: it opens a session, opens a few documents, is
minimised and restored, saves, and closes cleanly, which makes one last upload.

    export HOMING_URL=http://127.0.0.1:8080
    export HOMING_APP_ID=...            # printed by `homing-collector apps create`
    export HOMING_INGEST_TOKEN=...      # the ingest key's bearer token, hm_ingest_...
    python samples/desktop_app.py --documents 3

Each setting can also be given as a flag (--collector-url, --app-id, --api-key); a flag
wins over the environment. Events that cannot be sent now (the collector is down, say)
stay on disk and go on the next run. It exits 0 when everything was sent, 1 when some
events wait for the next run, and 2 for a bad setting.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Sequence

import homing

SETTINGS = {
    "collector_url": "HOMING_URL",
    "app_id": "HOMING_APP_ID",
    "api_key": "HOMING_INGEST_TOKEN",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Record a session and events with Homing.")
    for name, variable in SETTINGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=os.environ.get(variable),
            help=f"default: ${variable}",
        )
    parser.add_argument("--documents", type=int, default=3, help="documents to open (3)")
    parser.add_argument(
        "--data-dir", help="where the SDK keeps its queue (default: the user data dir)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the SDK does")
    args = parser.parse_args(argv)
    missing = [
        f"--{n.replace('_', '-')} or ${v}" for n, v in SETTINGS.items() if not getattr(args, n)
    ]
    if missing:
        parser.error("missing " + ", ".join(missing))
    return args


def use_the_app(analytics: homing.Analytics, documents: int) -> None:
    analytics.record_event("App Opened")
    for number in range(1, documents + 1):
        analytics.record_event(
            "Document Opened",
            attributes={"format": random.choice(["odt", "md", "txt"])},
            metrics={"pages": random.randint(1, 40), "number": number},
        )
    # Minimised and restored within the resume window: the session goes on.
    analytics.pause_session()
    analytics.resume_session()
    analytics.record_event("Document Saved", metrics={"seconds_editing": 42.5})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        analytics = homing.Analytics(
            args.app_id,
            args.collector_url,
            args.api_key,
            data_dir=args.data_dir,
            app_title="Homing desktop sample",
            app_version_code="1.0.0",
        )
    except homing.ConfigurationError as exc:
        print(f"desktop_app: {exc}", file=sys.stderr)
        return 2
    try:
        with analytics.session():
            use_the_app(analytics, args.documents)
    finally:
        # One last upload, bounded by shutdown_timeout; the rest waits on disk.
        result = analytics.close()
    stats = analytics.stats()
    print(f"sent {stats.sent} events, rejected {stats.rejected}, {result.remaining} wait")
    if result.error:
        print(f"desktop_app: not everything was sent: {result.error}", file=sys.stderr)
    return 0 if result.remaining == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
