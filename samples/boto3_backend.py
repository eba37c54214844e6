"""A backend that talks to Homing with boto3, the way it talked to Amazon Pinpoint.

It registers an endpoint, sends a small batch of events, prints the result of each event,
reads the endpoint back and lists the endpoints of its user. Give it an admin key: an
ingest key may send events but not read endpoints.

    export HOMING_URL=http://127.0.0.1:8080
    export HOMING_APP_ID=...              # printed by `homing-collector apps create`
    export HOMING_ACCESS_KEY_ID=...       # the admin key's access key id
    export HOMING_SECRET_ACCESS_KEY=...   # and its secret access key
    python samples/boto3_backend.py

Each setting can also be given as a flag (--url, --app-id, --access-key-id,
--secret-access-key); a flag wins over the environment. Prefer the environment for the
secret: command lines are visible to other users of the machine.

It exits 0 when every event that should be accepted was, and 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

SETTINGS = {
    "url": "HOMING_URL",
    "app_id": "HOMING_APP_ID",
    "access_key_id": "HOMING_ACCESS_KEY_ID",
    "secret_access_key": "HOMING_SECRET_ACCESS_KEY",
}

# This one breaks a limit on purpose (attribute values are at most 200 characters), to
# show that a bad event is answered 400 on its own while the rest of the batch is stored.
REJECTED_ON_PURPOSE = "order-3"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Register an endpoint and send events to Homing with boto3."
    )
    for name, variable in SETTINGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=os.environ.get(variable),
            help=f"default: ${variable}",
        )
    parser.add_argument("--user-id", default="sample-user", help="the user to attach")
    args = parser.parse_args(argv)
    missing = [
        f"--{n.replace('_', '-')} or ${v}" for n, v in SETTINGS.items() if not getattr(args, n)
    ]
    if missing:
        parser.error("missing " + ", ".join(missing))
    return args


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run(args: argparse.Namespace) -> int:
    # boto3 signs with AWS Signature Version 4; Homing accepts any region name.
    pinpoint: Any = boto3.client(
        "pinpoint",
        endpoint_url=args.url,
        region_name="us-east-1",
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
    )
    app_id: str = args.app_id
    endpoint_id = f"backend-{uuid.uuid4()}"

    pinpoint.update_endpoint(
        ApplicationId=app_id,
        EndpointId=endpoint_id,
        EndpointRequest={
            "ChannelType": "CUSTOM",
            "Address": endpoint_id,
            "Attributes": {"plan": ["pro"], "interests": ["books", "music"]},
            "Demographic": {"Platform": "linux", "Locale": "en_GB"},
            "User": {"UserId": args.user_id, "UserAttributes": {"tier": ["gold"]}},
        },
    )
    print(f"Registered endpoint {endpoint_id} for user {args.user_id}")

    events = {
        "order-1": {
            "EventType": "order.placed",
            "Timestamp": now(),
            "Attributes": {"currency": "EUR"},
            "Metrics": {"amount": 42.5, "items": 3},
        },
        "order-2": {"EventType": "order.shipped", "Timestamp": now()},
        REJECTED_ON_PURPOSE: {
            "EventType": "order.note",
            "Timestamp": now(),
            "Attributes": {"note": "x" * 201},
        },
    }
    response = pinpoint.put_events(
        ApplicationId=app_id,
        EventsRequest={"BatchItem": {endpoint_id: {"Endpoint": {}, "Events": events}}},
    )
    # The request is answered 202 as a whole; each event has its own status, 202 or 400.
    item = response["EventsResponse"]["Results"][endpoint_id]
    endpoint_status = item["EndpointItemResponse"]
    print(f"Endpoint: {endpoint_status['StatusCode']} {endpoint_status['Message']}")
    ok = endpoint_status["StatusCode"] == 202
    for event_id, status in item["EventsItemResponse"].items():
        print(f"Event {event_id}: {status['StatusCode']} {status['Message']}")
        expected = 400 if event_id == REJECTED_ON_PURPOSE else 202
        ok = ok and status["StatusCode"] == expected

    endpoint = pinpoint.get_endpoint(ApplicationId=app_id, EndpointId=endpoint_id)
    stored = endpoint["EndpointResponse"]
    print(
        f"Read back: {stored['Id']} channel={stored['ChannelType']} "
        f"cohort={stored['CohortId']} attributes={stored['Attributes']}"
    )

    user = pinpoint.get_user_endpoints(ApplicationId=app_id, UserId=args.user_id)
    ids = [e["Id"] for e in user["EndpointsResponse"]["Item"]]
    print(f"User {args.user_id} has {len(ids)} endpoint(s): {', '.join(ids)}")
    return 0 if ok and endpoint_id in ids else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"Homing said {error.get('Code')}: {error.get('Message')}", file=sys.stderr)
    except BotoCoreError as exc:
        print(f"Could not reach Homing at {args.url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
