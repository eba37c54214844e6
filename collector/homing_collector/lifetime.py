"""Processes that do not outlive the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import os


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
