"""Refusing before the body: how long an anonymous request that announces 4 MiB waits for
its 403 when it sends only its headers.

Starts ``homing-collector serve`` on loopback with a fresh SQLite file. Each round opens
a new connection, sends the headers of a PutEvents that announces a 4 MiB body (plain,
then gzip) and no body byte, and times until the 403 has arrived and the collector has
closed the connection. The peer, measured in the same run: ``GET /healthz`` on a new
connection, the cheapest request the collector answers. Last, it reads
``homing_request_body_bytes_total`` for the PutEvents route, which must be 0.

    python bench/refuse_before_body.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

import serve

HOST = "127.0.0.1"
ANNOUNCED = 4 * 1024 * 1024


def _exchange(port: int, head: str) -> tuple[float, bytes]:
    """Send `head` on a new connection; the time until the answer is whole and the
    connection closed (or, for a kept-alive answer, its body read), and the answer."""
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(head.encode())
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            top, _, body = received.partition(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in top.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                None,
            )  # fmt: skip
            kept_alive = b"connection: close" not in top.lower()
            if kept_alive and length is not None and len(body) >= length:
                break
    return time.perf_counter() - started, received


def _report(name: str, seconds: list[float]) -> None:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    print(f"{name:<44} p50 {statistics.median(ordered) * 1000:7.2f} ms"
          f"   p99 {p99 * 1000:7.2f} ms   max {ordered[-1] * 1000:7.2f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="homing-refuse-"))
    process, url = serve.start(folder / "collector.db", folder / "collector.log", "--no-access-log")
    port = serve.port(url)
    try:
        path = "/v1/apps/0123456789abcdef0123456789abcdef/events"
        base = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        heads = {
            "403, headers only, 4 MiB announced": base + f"Content-Length: {ANNOUNCED}\r\n\r\n",
            "403, headers only, 4 MiB gzip announced": base
            + f"Content-Length: {ANNOUNCED}\r\nContent-Encoding: gzip\r\n\r\n",
            "peer: GET /healthz, new connection": f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
        }
        timings: dict[str, list[float]] = {name: [] for name in heads}
        for _ in range(args.rounds):  # interleaved, so that load on the machine hits all
            for name, head in heads.items():
                seconds, answer = _exchange(port, head)
                expected = b" 200 " if name.startswith("peer") else b" 403 "
                assert expected in answer.split(b"\r\n", 1)[0], answer[:200]
                timings[name].append(seconds)
        print(f"{args.rounds} rounds, {os.cpu_count()} CPUs")
        for name, times in timings.items():
            _report(name, times)
        _, metrics = _exchange(port, f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
        series = 'homing_request_body_bytes_total{route="/v1/apps/{application_id}/events"}'
        for line in metrics.decode().splitlines():
            if line.startswith(series):
                print(f"body bytes read for those requests: {line.rsplit(' ', 1)[1]}")
    finally:
        serve.stop(process)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
