"""CPU of one outgoing webhook call: hooks/http11.py (the outbox's calls) beside httpx
(hooks/delivery.py, the FILTER hooks' calls), on the same receiver.

Each call is a signed POST of a custom channel's JSON payload (about 1 KB) to a
receiver on loopback that reads it and answers 200; the receiver runs in another
process, so the figure is the caller's CPU alone, per call, the best of a few passes.

    python bench/webhook_calls.py [--calls 2000] [--passes 3] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time

import httpx

from homing_collector.hooks import delivery, http11
from homing_collector.hooks.signing import SigningKeys, new_secret

HOST = "127.0.0.1"


def _receive(port: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, HOST, 0)
        port.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


async def _pass(call: object, calls: int, concurrency: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            result = await call()  # type: ignore[operator]
            assert result.outcome is delivery.Outcome.DELIVERED, result

    started = time.process_time()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    return time.process_time() - started


async def _bench(args: argparse.Namespace, port: int) -> None:
    url = f"http://{HOST}:{port}/custom"
    keys = SigningKeys(new_secret())
    body = delivery.Body(b'{"Endpoints":{' + b'"x":1,' * 150 + b'"y":2}}')
    light = http11.Client()
    heavy = httpx.AsyncClient(trust_env=False)
    clients = {
        "http11": lambda: http11.attempt(light, url, "msg_1", body, keys, now=time.time()),
        "httpx": lambda: delivery.attempt(heavy, url, "msg_1", body, keys, now=time.time()),
    }
    best = dict.fromkeys(clients, float("inf"))
    for _ in range(args.passes):
        for name, call in clients.items():
            await _pass(call, 50, args.concurrency)  # connections open, code warm
            cpu = await _pass(call, args.calls, args.concurrency)
            best[name] = min(best[name], cpu)
    for name, cpu in best.items():
        print(f"{name:7} {1e6 * cpu / args.calls:6.0f} us of CPU a call (best of {args.passes})")
    print(f"http11 / httpx: {best['http11'] / best['httpx']:.0%}")
    await light.aclose()
    await heavy.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls a pass")
    parser.add_argument("--passes", type=int, default=3, help="passes; the best is shown")
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight")
    args = parser.parse_args()
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    receiver = multiprocessing.Process(target=_receive, args=(queue,), daemon=True)
    receiver.start()
    try:
        asyncio.run(_bench(args, queue.get(timeout=10)))
    finally:
        receiver.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
