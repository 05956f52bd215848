"""Progress display for long data jobs: a live line on a terminal, periodic lines in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 1000:
            return f"{n:.1f}{suffix}{unit}" if suffix else f"{n:.0f}{unit}"
        n /= 1000
    return f"{n:.1f}E{unit}"


class Progress:
    def __init__(self, total_bytes: int, stream: TextIO | None = None, enabled: bool = True,
                 log_interval: float = 30.0) -> None:
        self.total = max(1, total_bytes)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.interval = 0.5 if self.tty else log_interval
        self.start = time.monotonic()
        self._last = self.start

    def update(self, done_bytes: float, docs: int, tokens: int, text_bytes: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        frac = min(1.0, done_bytes / self.total)
        eta = (elapsed / frac - elapsed) if frac > 0 else float("nan")
        line = (
            f"tokenize {100 * frac:5.1f}% | {human(docs)} docs | {human(tokens)} tokens | "
            f"{human(text_bytes / elapsed, 'B/s')} | {elapsed:.0f}s elapsed"
            + (f", ~{eta:.0f}s left" if frac < 1 and eta == eta else "")
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
