"""Push latency across collectors on one PostgreSQL database (the preview).

Starts four ``homing-collector serve`` processes on one PostgreSQL database: A and B
LISTEN for queued pushes (the default), C and D poll for them (HOMING_PG_LISTEN=0). Then,
round after round, one push at a time with SendMessages, it times how long a push takes
from the call to its arrival on a push stream:

- single node: sent through A to a stream held by A (the peer: no other process involved);
- A -> B: sent through A to a stream held by B, which learns of it by LISTEN/NOTIFY;
- C -> D: the same between the polling nodes.

The scenarios take turns within each round, so a noisy machine weighs on all alike, each
push after a random pause (so as not to keep in step with the polling nodes' checks). It
prints p50 and p99 of each, and the SendMessages round trip alone (the floor under all of
them). The target: A -> B p50 <= 100 ms.

The database: --db-url names one (it must be empty or a Homing one: the collectors
migrate it); else a throwaway cluster is started with initdb and pg_ctl, as the tests do
(tests/pg.py), and removed afterwards. Run from the repository's root:

    python bench/pg_nodes.py [--rounds 200] [--db-url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import serve

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _read(url: str, app_id: str, endpoint_id: str, token: str, arrivals: queue.Queue[float],
          ready: threading.Event) -> None:  # fmt: skip
    """Hold a push stream; put the time each push arrives in `arrivals`."""
    with httpx.Client(timeout=None) as client, client.stream(
        "GET", f"{url}/v1/apps/{app_id}/endpoints/{endpoint_id}/stream",
        headers={"Authorization": f"Bearer {token}"},
    ) as response:  # fmt: skip
        for line in response.iter_lines():
            if line.startswith(":"):
                ready.set()  # a heartbeat: the stream is registered
            elif line == "event: push":
                arrivals.put(time.perf_counter())


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"


def _bench(url: str, rounds: int, workdir: Path) -> None:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        nodes: dict[str, str] = {}
        for name, env in (("A", {}), ("B", {}), ("C", {"HOMING_PG_LISTEN": "0"}),
                          ("D", {"HOMING_PG_LISTEN": "0"})):  # fmt: skip
            env = {"HOMING_PUSH_HEARTBEAT": "0.2", **env}
            process, nodes[name] = serve.start(url, workdir / f"{name}.log", "--no-access-log",
                                               env=env)  # fmt: skip
            processes.append(process)
        made = subprocess.run(
            [sys.executable, "-m", "homing_collector", "--db", url, "apps", "create", "bench",
             "--json"],
            check=True, capture_output=True, text=True, env=_env(), timeout=60,
        )  # fmt: skip
        app = json.loads(made.stdout)
        app_id, admin, ingest = app["application_id"], app["admin"]["token"], app["ingest"]["token"]
        scenarios = {"single node (A -> A)": ("A", "A"), "A -> B (LISTEN)": ("A", "B"),
                     "C -> D (polling)": ("C", "D")}  # fmt: skip
        sender = httpx.Client(headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        arrivals: dict[str, queue.Queue[float]] = {}
        for index, (label, (_, receiver)) in enumerate(scenarios.items()):
            endpoint_id = f"device-{index}"
            sender.put(f"{nodes['A']}/v1/apps/{app_id}/endpoints/{endpoint_id}",
                       json={"ChannelType": "CUSTOM"}).raise_for_status()  # fmt: skip
            arrivals[label] = queue.Queue()
            ready = threading.Event()
            threading.Thread(
                target=_read, daemon=True,
                args=(nodes[receiver], app_id, endpoint_id, ingest, arrivals[label], ready),
            ).start()  # fmt: skip
            if not ready.wait(START_TIMEOUT):
                raise RuntimeError(f"no push stream on {receiver}")
        latencies: dict[str, list[float]] = {label: [] for label in scenarios}
        send_times: list[float] = []
        message = {"DefaultPushNotificationMessage": {"Title": "bench", "Body": "latency"}}
        for _ in range(rounds):
            for index, (label, (source, _)) in enumerate(scenarios.items()):
                body: dict[str, Any] = {
                    "Endpoints": {f"device-{index}": {}}, "MessageConfiguration": message,
                }  # fmt: skip
                # At a random phase of the polling nodes' 0.1 s checks, not locked to it.
                time.sleep(random.uniform(0, 0.1))
                started = time.perf_counter()
                answer = sender.post(f"{nodes[source]}/v1/apps/{app_id}/messages", json=body)
                send_times.append(time.perf_counter() - started)
                answer.raise_for_status()
                latencies[label].append(arrivals[label].get(timeout=10) - started)
        sender.close()
        print(f"push delivery latency, {rounds} pushes each, SendMessages call to arrival:")
        for label, values in latencies.items():
            print(f"  {label:<22} {_percentiles(values)}")
        print(f"  {'SendMessages answer':<22} {_percentiles(send_times)}   (the floor)")
        p50 = statistics.median(latencies["A -> B (LISTEN)"]) * 1000
        print(f"target A -> B p50 <= 100 ms: {'met' if p50 <= 100 else 'NOT met'} ({p50:.1f} ms)")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="pushes per scenario")
    parser.add_argument("--db-url", help="a PostgreSQL database to use (default: a throwaway one)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.pg import throwaway_database

    if args.rounds < 1:
        raise SystemExit("--rounds must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="homing-bench-"))
    try:
        with throwaway_database(args.db_url) as (url, _):
            _bench(url, args.rounds, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
