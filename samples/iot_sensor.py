"""A temperature sensor that reports to Homing, uploading only over unmetered links.

It reads a (fake) temperature every few seconds and records each reading as an event.
Readings are kept on disk while the device is offline or on cellular data, and go in
batches once it is on Wi-Fi or Ethernet again. SIGTERM or Ctrl-C stops it cleanly.

    export HOMING_URL=http://127.0.0.1:8080
    export HOMING_APP_ID=...            # printed by `homing-collector apps create`
    export HOMING_INGEST_TOKEN=...      # the ingest key's bearer token, hm_ingest_...
    python samples/iot_sensor.py --count 10 --interval 5

Each setting can also be given as a flag (--collector-url, --app-id, --api-key). On a
device behind a VPN, add --allow-unknown-links: the SDK cannot tell what a tunnel runs
over, and by default it does not upload over a link it cannot classify.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import homing

SETTINGS = {
    "collector_url": "HOMING_URL",
    "app_id": "HOMING_APP_ID",
    "api_key": "HOMING_INGEST_TOKEN",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Report fake temperatures to Homing.")
    for name, variable in SETTINGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=os.environ.get(variable),
            help=f"default: ${variable}",
        )
    parser.add_argument("--count", type=int, default=10, help="readings to take (10)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between (5)")
    parser.add_argument("--sensor-id", default="greenhouse-1", help="sent with every reading")
    parser.add_argument(
        "--allow-unknown-links",
        action="store_true",
        help="also upload over links the SDK cannot classify, such as a VPN",
    )
    parser.add_argument(
        "--data-dir", help="where the SDK keeps its queue (default: the user data dir)"
    )
    args = parser.parse_args(argv)
    missing = [
        f"--{n.replace('_', '-')} or ${v}" for n, v in SETTINGS.items() if not getattr(args, n)
    ]
    if missing:
        parser.error("missing " + ", ".join(missing))
    if args.count < 1 or args.interval < 0:
        parser.error("--count must be at least 1 and --interval at least 0")
    return args


def read_temperature(started: float) -> float:
    # A slow daily swing plus sensor noise; a real device would read its hardware here.
    hours = (time.time() - started) / 3600
    return round(21.0 + 3.0 * math.sin(hours / 24 * 2 * math.pi) + random.gauss(0, 0.2), 2)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("homing").setLevel(logging.INFO)  # failed uploads and retries
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    policy = homing.NetworkPolicy(
        "unmetered", unknown="allow" if args.allow_unknown_links else "deny"
    )
    try:
        analytics = homing.Analytics(
            args.app_id,
            args.collector_url,
            args.api_key,
            data_dir=args.data_dir,
            network_policy=policy,
            app_package_name="org.example.sensor",
            app_version_code="1",
        )
    except homing.ConfigurationError as exc:
        print(f"iot_sensor: {exc}", file=sys.stderr)
        return 2
    analytics.set_global_attribute("sensor", args.sensor_id)
    link = policy.describe()
    print(f"uploading over {link.interface or 'no link'} ({link.kind}): {policy.allows()}")
    started = time.time()
    taken = 0
    try:
        while taken < args.count and not stop.is_set():
            celsius = read_temperature(started)
            analytics.record_event("Temperature Read", metrics={"celsius": celsius})
            taken += 1
            print(f"reading {taken}: {celsius} °C", flush=True)
            if taken < args.count:
                stop.wait(args.interval)  # returns at once on SIGTERM or Ctrl-C
    finally:
        result = analytics.close()  # one last upload, bounded by shutdown_timeout
    sent = analytics.stats().sent
    print(f"took {taken} readings; sent {sent} events, {result.remaining} kept for later")
    return 0


if __name__ == "__main__":
    sys.exit(main())
