"""`Analytics.record_event()` latency, persisted, beside posthog-python and analytics-python.

Each SDK records the same event (a name, one string and one number) N times in this
process; every call is timed on its own. Ours commits each event to SQLite before it
returns. The peers keep events in memory: posthog-python with ``send=False`` and
Segment's analytics-python with ``send=False`` (both skip their queue), and again with
a real in-memory queue whose consumer points at a dead loopback port. No SDK can reach
the internet: every host is 127.0.0.1 and no upload happens while measuring.

Ours runs with orjson and with the standard library's json in its place (the fallback
that an app packaged by python-for-android or kivy-ios runs), in alternating rounds, so
that what the fallback costs is measured in the same run.

Then: the import time of ``homing`` (and of ``homing.Analytics``, which pulls in httpx),
and the memory and disk used with 1,000,000 events queued (cap raised for it).

    pip install posthog segment-analytics-python   # into the venv, never into pyproject
    python bench/sdk_record.py [--events 20000] [--queued 1000000]
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, nothing leaves the machine
ATTRIBUTES = {"item": "XYZ"}
METRICS = {"price": 1.99}


def summary(samples: list[int], total_ns: int) -> dict[str, float]:
    n = len(samples)
    samples.sort()
    return {
        "p50": samples[n // 2] / 1000,
        "p99": samples[int(n * 0.99)] / 1000,
        "mean": statistics.fmean(samples) / 1000,
        "per_s": n / (total_ns / 1e9),
    }


def timed(call: Callable[[], Any], n: int, samples: list[int]) -> int:
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(n):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return clock() - started


def measure(call: Callable[[], Any], n: int, warmup: int = 500) -> dict[str, float]:
    for _ in range(warmup):
        call()
    gc.collect()
    samples: list[int] = []
    return summary(samples, timed(call, n, samples))


def measure_json_pair(
    call: Callable[[], Any], n: int, rounds: int = 10
) -> tuple[dict[str, float], dict[str, float]]:
    """`call` with orjson and with the stdlib fallback, in alternating rounds, so that a
    neighbour's load or the file's growth weighs on both alike."""
    from homing import _json

    fast = (_json.dumps, _json.loads, _json.dumps_sorted)
    slow = (_json.py_dumps, _json.py_loads, _json.py_dumps_sorted)
    found: dict[bool, tuple[list[int], list[int]]] = {True: ([], [0]), False: ([], [0])}
    for _ in range(500):
        call()
    try:
        for _ in range(rounds):
            for use_orjson in (True, False):
                # What homing._json picks when orjson cannot be imported; every SDK
                # module looks the functions up there at call time.
                _json.dumps, _json.loads, _json.dumps_sorted = fast if use_orjson else slow
                gc.collect()
                samples, total = found[use_orjson]
                total[0] += timed(call, n // rounds, samples)
    finally:
        _json.dumps, _json.loads, _json.dumps_sorted = fast
    return summary(*_flat(found[True])), summary(*_flat(found[False]))


def _flat(found: tuple[list[int], list[int]]) -> tuple[list[int], int]:
    return found[0], found[1][0]


def homing_case(data_dir: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    import homing

    analytics = homing.Analytics(
        "bench", DEAD, "hm_ingest_bench", data_dir=data_dir,
        network_policy=lambda: False, flush_interval=3600,
        max_storage_bytes=256 * 1024 * 1024, shutdown_timeout=0.1,
    )  # fmt: skip

    def call() -> None:
        analytics.record_event("Item Bought", attributes=ATTRIBUTES, metrics=METRICS)

    return call, analytics.close


def posthog_case(send: bool) -> tuple[Callable[[], None], Callable[[], None]] | None:
    try:
        from posthog import Posthog
    except ImportError:
        return None
    client = Posthog(
        "phc_bench", host=DEAD, send=send, max_queue_size=10**7, flush_interval=3600,
        flush_at=10**7, enable_exception_autocapture=False,
    )  # fmt: skip
    props = {**ATTRIBUTES, **METRICS}

    def call() -> None:
        client.capture("Item Bought", distinct_id="u1", properties=props)

    def close() -> None:
        client.send = False  # drop what is queued: the dead host must not be retried
        for consumer in getattr(client, "consumers", None) or []:
            consumer.running = False

    return call, close


def segment_case(send: bool) -> tuple[Callable[[], None], Callable[[], None]] | None:
    try:
        from segment.analytics import Client
    except ImportError:
        return None
    client = Client(
        "bench", host=DEAD, send=send, max_queue_size=10**7, upload_size=10**7,
        upload_interval=3600, max_retries=0,
    )  # fmt: skip
    props = {**ATTRIBUTES, **METRICS}

    def call() -> None:
        client.track(user_id="u1", event="Item Bought", properties=props)

    def close() -> None:
        # Its atexit hook joins a consumer that waits upload_interval (an hour) for more.
        atexit.unregister(client.join)
        for consumer in getattr(client, "consumers", None) or []:
            consumer.running = False

    return call, close


def encode_cost(n: int = 20_000) -> str:
    from homing import _json
    from homing._events import EventBuilder

    _, event = EventBuilder().build("Item Bought", ATTRIBUTES, METRICS, time.time(), None)
    found = []
    for name, dump in (("orjson", _json.dumps), ("stdlib", _json.py_dumps)):
        best = min(measure(lambda dump=dump: dump(event), n)["p50"] for _ in range(3))
        found.append(f"{name} {best:.2f} µs")
    return ", ".join(found)


def import_time(statement: str, runs: int = 5) -> float:
    code = f"import time; t=time.perf_counter(); {statement}; print(time.perf_counter()-t)"
    best = min(
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(runs)
    )  # fmt: skip
    return best * 1000


QUEUED = """
import os, resource, sys, time, tracemalloc
from pathlib import Path
n, data_dir = int(sys.argv[1]), Path(sys.argv[2])
tracemalloc.start()
import homing
analytics = homing.Analytics("bench", "http://127.0.0.1:9", "hm_ingest_bench",
    data_dir=data_dir, network_policy=lambda: False, flush_interval=3600,
    max_storage_bytes=4 * 1024**3, shutdown_timeout=0.1)
t = time.perf_counter()
for i in range(n):
    analytics.record_event("Item Bought", attributes={"item": "XYZ"}, metrics={"price": 1.99})
elapsed = time.perf_counter() - t
current, peak = tracemalloc.get_traced_memory()
rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]
queued = analytics.stats().queued
analytics.close()
disk = sum(p.stat().st_size for p in data_dir.iterdir())
print(queued, elapsed, current, peak, int(rss) * 1024,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, disk)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--queued", type=int, default=1_000_000)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.disable(logging.WARNING)

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        call, close = homing_case(Path(tmp) / "h")
        fast, slow = measure_json_pair(call, args.events)
        close()
        results["homing record_event (SQLite, committed)"] = fast
        results["homing record_event, stdlib json (no orjson)"] = slow
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("posthog capture (send=False)", lambda: posthog_case(False)),
            ("posthog capture (queue, no consumer reach)", lambda: posthog_case(True)),
            ("analytics-python track (send=False)", lambda: segment_case(False)),
            ("analytics-python track (in-memory queue)", lambda: segment_case(True)),
        ]
        for name, make in cases:
            made = make()
            if made is None:
                print(f"{name}: not installed (pip install posthog segment-analytics-python)")
                continue
            call, close = made
            results[name] = measure(call, args.events)
            close()

    print(f"\nrecord latency, {args.events} events each (µs), Python {sys.version.split()[0]}")
    print(f"{'':46} {'p50':>8} {'p99':>8} {'mean':>8} {'events/s':>10}")
    for name, r in results.items():
        print(f"{name:46} {r['p50']:8.1f} {r['p99']:8.1f} {r['mean']:8.1f} {r['per_s']:10.0f}")
    ours = results["homing record_event (SQLite, committed)"]
    print("\nratios (peer p50 / homing p50; > 1 means homing is faster):")
    for name, r in results.items():
        if not name.startswith("homing"):
            print(
                f"  {name:44} p50 x{r['p50'] / ours['p50']:.2f}  p99 x{r['p99'] / ours['p99']:.2f}"
            )

    slow = results["homing record_event, stdlib json (no orjson)"]
    print(
        f"\nthe json fallback costs {slow['p50'] - ours['p50']:+.1f} µs per record_event at p50 "
        f"(x{slow['p50'] / ours['p50']:.2f})"
    )
    track = results.get("analytics-python track (in-memory queue)")
    if track is not None:
        for name, r in (("with orjson", ours), ("without orjson", slow)):
            print(
                f"  homing {name:15} p50 = x{r['p50'] / track['p50']:.2f} analytics-python track()"
            )
    print(f"  one event encoded: {encode_cost()}")

    print("\nimport time (best of 5, fresh interpreter):")
    for statement in ("import homing", "import homing; homing.Analytics",
                      "import posthog", "import segment.analytics"):  # fmt: skip
        try:
            print(f"  {statement:36} {import_time(statement):7.1f} ms")
        except subprocess.CalledProcessError:
            print(f"  {statement:36} not installed")

    print(f"\n{args.queued:,} events queued (cap raised to 4 GiB; the default is 5 MiB):")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(QUEUED), str(args.queued), tmp],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    queued, elapsed, current, peak, rss, maxrss, disk = (float(x) for x in out)
    mib = 1024 * 1024
    print(f"  queued {queued:,.0f} in {elapsed:.1f} s under tracemalloc")
    print(f"  Python heap (tracemalloc): {current / mib:.1f} MiB now, {peak / mib:.1f} MiB peak")
    print(f"  RSS {rss / mib:.1f} MiB (max {maxrss / mib:.1f} MiB); on disk {disk / mib:.1f} MiB "
          f"({disk / queued:.0f} bytes/event)")  # fmt: skip


if __name__ == "__main__":
    main()
