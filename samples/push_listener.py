"""A device that listens for pushes from Homing and prints them.

It registers its endpoint (linked to a user, if given), keeps the push stream open, and
prints each push as it arrives: visible ones with their title and body, silent ones with
their data. It stops after --count pushes, after --seconds, or on SIGTERM or Ctrl-C.

    export HOMING_URL=http://127.0.0.1:8080
    export HOMING_APP_ID=...            # printed by `homing-collector apps create`
    export HOMING_INGEST_TOKEN=...      # the ingest key's bearer token, hm_ingest_...
    python samples/push_listener.py --user alice --count 3

Then send it a push from the backend, with the admin key, e.g. with boto3's
`send_users_messages` to user "alice" (see samples/boto3_backend.py for a client).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import homing

SETTINGS = {
    "collector_url": "HOMING_URL",
    "app_id": "HOMING_APP_ID",
    "api_key": "HOMING_INGEST_TOKEN",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print the pushes Homing sends this device.")
    for name, variable in SETTINGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=os.environ.get(variable),
            help=f"default: ${variable}",
        )
    parser.add_argument("--user", help="link this device to a user id")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after (0: never)")
    parser.add_argument("--data-dir", help="where the SDK keeps its state (default: user dir)")
    args = parser.parse_args(argv)
    missing = [
        f"--{n.replace('_', '-')} or ${v}" for n, v in SETTINGS.items() if not getattr(args, n)
    ]
    if missing:
        parser.error("missing " + ", ".join(missing))
    if args.count < 0 or args.seconds < 0:
        parser.error("--count and --seconds must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        analytics = homing.Analytics(
            args.app_id, args.collector_url, args.api_key, data_dir=args.data_dir
        )
    except homing.ConfigurationError as exc:
        print(f"push_listener: {exc}", file=sys.stderr)
        return 2
    received = 0
    lock = threading.Lock()

    def count() -> None:
        nonlocal received
        with lock:
            received += 1
            if args.count and received >= args.count:
                stop.set()

    @analytics.on_push
    def show(message: homing.PushMessage) -> None:
        print(f"push: {message.title or ''} | {message.body or ''}", flush=True)
        count()

    @analytics.on_silent_push
    def apply(message: homing.PushMessage) -> None:
        data = ", ".join(f"{key}={value}" for key, value in sorted(message.data.items()))
        print(f"silent: {data}", flush=True)
        count()

    try:
        if args.user:
            analytics.identify(args.user)
        analytics.flush(timeout=10)  # the collector knows the endpoint before any send
        analytics.push.start()
        print(f"listening as endpoint {analytics.endpoint_id}", flush=True)
        stop.wait(args.seconds or None)
    finally:
        analytics.close()
    print(f"received {received} pushes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
