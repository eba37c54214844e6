"""Processes that do not outlive the process that started them, the background tasks
they run, and the names they hold leases under."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import socket


def end_with_parent(parent: int, signum: int) -> None:
    """Ask the kernel to send this process `signum` when its parent dies, even by SIGKILL
    (Linux: PR_SET_PDEATHSIG; elsewhere this does nothing); exit now if `parent`, the
    process that started this one, is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signum)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit(0)


def alive(pid: object) -> bool:
    """Whether a process `pid` exists (on this host)."""
    if type(pid) is not int:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True


def holder_name() -> str:
    """This process's name as the holder of a lease in the database: host, pid (that of
    a forked worker is only known once it runs) and a random tag, so that a pid used
    again is not taken for the holder it replaced."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds have passed; whether it was set.

    Not `asyncio.wait_for(event.wait(), timeout)`: before Python 3.12, wait_for returns
    when the task waiting is cancelled just as the event is set, and the cancellation is
    lost. A background loop stopped by cancelling it (`stop`) then runs on, and whoever
    waits for it to end waits forever; asyncio.wait raises the CancelledError."""
    waiting = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait((waiting,), timeout=timeout)
    finally:
        waiting.cancel()
    return bool(done)


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task, if there is one, and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
