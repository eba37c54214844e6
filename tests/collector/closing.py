"""Closing a background loop at the moment it is woken: the cancellation must end it."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Woken(Protocol):
    def wake(self) -> None: ...

    async def close(self) -> None: ...


async def check_closes_as_woken(worker: Woken, name: str) -> None:
    """Wake `worker` and close it in the same step of the event loop. Before Python 3.12,
    a loop waiting with `asyncio.wait_for` lost the cancellation then, went on, and close()
    waited for it forever."""

    async def close_as_woken() -> None:
        worker.wake()
        await worker.close()

    closing = asyncio.ensure_future(close_as_woken())
    done, _ = await asyncio.wait((closing,), timeout=30)  # not a speed: it never ends
    assert done, f"close() is still waiting for the {name}'s loop"
    closing.result()
