"""CPU of a live collector's processes per stored event, for a fixed load, with an event
stream, and with an event stream and a webhook campaign, beside the same store without.

On a small shared machine the throughput ratios of collector_ingest.py swing with what
the rest of the machine does; the CPU that a fixed load costs swings much less. Each case
starts ``serve`` on a fresh SQLite file (as collector_ingest.py does, with its receiver
and its campaign), waits until its processes (the event-stream one too) have started and
are idle, so that what starting them costs is not counted, sends the same number of
PutEvents batches of 100 events, then waits until the receiver has every record and the
collector is idle, and prints the CPU seconds of the collector, its events writer and its
event-stream process per 1,000 stored events (the waiting included: the stream and the
outbox work then too), and the custom channel calls made. "Idle" is for longer than the
sealer waits between two looks for work, so that work the collector defers (the columnar
copy, checkpoints) counts in each case. The cases alternate over ``--rounds``.

    python bench/collector_cpu.py [--batches 600] [--rounds 2] [--kinds stored,stream]
        [--clients 16] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import collector_ingest as ingest

from homing_collector.sealer import INTERVAL as SEAL_INTERVAL

CATCH_UP_TIMEOUT = 120.0  # seconds for the stream and the outbox to catch up
IDLE = 0.05  # CPU seconds a second, at most, of a collector whose work is done


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes(pid: int) -> dict[str, float]:
    """CPU seconds of the collector (its workers too, with --workers) and of each of the
    children it started, by role."""
    found: dict[str, float] = {}
    pending = [pid]
    while pending:
        process = pending.pop()
        try:
            command = Path(f"/proc/{process}/cmdline").read_bytes()
            cpu = _cpu(process)
            children = [
                int(child)
                for task in Path(f"/proc/{process}/task").iterdir()
                for child in (task / "children").read_text().split()
            ]
        except OSError:  # it ended meanwhile
            continue
        role = (
            "stream" if b"stream_process" in command
            else "columnar copy" if b"columnar_process" in command
            else "events writer" if b"events_process" in command
            else "collector"
        )  # fmt: skip
        found[role] = found.get(role, 0.0) + cpu
        pending.extend(children)
    return found


async def _quiet(pid: int, span: float, *, stream: bool) -> dict[str, float]:
    """The CPU seconds of `_processes` once the event-stream process (if `stream`) runs
    and every process has been idle for `span` seconds, or after CATCH_UP_TIMEOUT."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    mark = time.monotonic()
    since = last = _processes(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = _processes(pid)
        if (stream and "stream" not in now) or sum(now.values()) - sum(last.values()) >= IDLE:
            mark, since = time.monotonic(), now  # busy: the span starts again
        elif time.monotonic() - mark >= span:
            return since
        last = now
    return last


async def _case(kind: str, bodies: list[bytes], workdir: Path, args: argparse.Namespace) -> str:
    db = workdir / f"{kind}.db"
    created = subprocess.run(
        [sys.executable, "-m", "homing_collector", "--db", str(db), "apps", "create", "bench",
         "--json"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    app = json.loads(created.stdout)
    extra = ["--workers", str(args.workers)] if args.workers > 1 else []
    process, port = ingest._start_server(sys.executable, db, workdir / "server.log", extra)
    receiver = ingest.StreamReceiver()
    try:
        await ingest._wait_healthy(port)
        await receiver.start()
        if kind != "stored":
            url = f"http://{ingest.HOST}:{receiver.port}/"
            await ingest._put_event_stream(port, app["application_id"], app["admin"]["token"], url)
        if kind == "campaign":
            await ingest._create_event_campaign(
                port, app["application_id"], app["admin"]["token"], url + "custom"
            )
        # Starting a process (its imports: a quarter of a second) is no event's work.
        before = await _quiet(process.pid, 1.0, stream=kind != "stored")
        _figures, counters = await ingest._run_case(
            ports=[port], server_pids=[process.pid], db_cpu=ingest._no_cpu,
            path=f"/v1/apps/{app['application_id']}/events",
            token=app["ingest"]["token"], gzip=False, bodies=iter(bodies), clients=args.clients,
            warmup=0, duration=600, stored=True,
        )  # fmt: skip
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while kind != "stored" and receiver.records < counters.accepted:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        # The sealer looks for work every SEAL_INTERVAL: a shorter quiet would count the
        # columnar copy in some cases and not in others, by the phase of its steps.
        after = await _quiet(process.pid, SEAL_INTERVAL + 1.0, stream=False)
    finally:
        ingest._stop_server(process)
        await receiver.close()
    for path in workdir.glob(db.name + "*"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    per_k = {role: 1e6 * (after[role] - before.get(role, 0.0)) / counters.accepted
             for role in after}  # fmt: skip
    roles = "  ".join(f"{role} {ms:5.1f}" for role, ms in per_k.items())
    return (
        f"{kind:9} {counters.accepted:>8,} events  CPU ms per 1,000: {sum(per_k.values()):6.1f}"
        f"  ({roles});  {receiver.records:,} records, {receiver.custom_calls:,} custom calls"
    )


async def _bench(args: argparse.Namespace) -> None:
    kinds = args.kinds.split(",")
    pool = ingest.make_batches(7, args.batches * args.rounds * len(kinds), gzip=False)
    print(
        f"{args.batches} batches of {ingest.EVENTS_PER_BATCH} events a case, {args.clients}"
        f" clients, {args.workers} worker(s)"
    )
    with tempfile.TemporaryDirectory(prefix="homing-cpu-") as workdir:
        for round_ in range(args.rounds):
            for n, kind in enumerate(kinds):
                start = (round_ * len(kinds) + n) * args.batches
                line = await _case(kind, pool[start : start + args.batches], Path(workdir), args)
                print(f"round {round_}  {line}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=600, help="batches of 100 a case")
    parser.add_argument("--rounds", type=int, default=2, help="times each case runs, in turn")
    parser.add_argument(
        "--kinds", default="stored,stream,campaign", help="the cases to run, comma-separated"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers")
    asyncio.run(_bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
