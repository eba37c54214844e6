"""Progress of a long command, on stderr: a bar redrawn in place on a terminal, else a
plain line every few seconds (a log file or a pipe gets no control characters)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


class Progress:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        every: float = 0.2,
        plain_every: float = 10.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every if self.tty else plain_every
        self._last = time.monotonic()
        self._drawn = False

    def update(self, text: str, fraction: float | None = None, *, force: bool = False) -> None:
        """Show `text`, with a bar if `fraction` (0 to 1) is known; at most every so often."""
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        if not self.tty:
            print(text, file=self.stream, flush=True)
            return
        if fraction is not None:
            filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
            text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} {text}"
        print(f"\r\x1b[K{text}", end="", file=self.stream, flush=True)
        self._drawn = True

    def message(self, line: str) -> None:
        """Print a line of its own, above the bar."""
        self._clear()
        print(line, file=self.stream)

    def done(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._drawn:
            print("\r\x1b[K", end="", file=self.stream)
            self._drawn = False
