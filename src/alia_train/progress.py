"""The one progress display: a line redrawn in place in a terminal, plain lines in logs.

Used by training (training/metrics.py's Console: one line per logged step) and by data jobs
(`alia-data tokenize`: bytes done, documents, tokens, speed). In a terminal each update returns
to the start of the line and clears it ("\\r" + ESC[K); in a log file or under a batch system
(not a TTY) every update is a line of its own, so logs stay readable with `less` and `grep`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_REDRAW = "\r\033[K"


def human(n: float, unit: str = "") -> str:
    """1234567 -> "1.2M" (decimal prefixes)."""
    for suffix in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 1000:
            return f"{n:.1f}{suffix}{unit}" if suffix else f"{n:.0f}{unit}"
        n /= 1000
    return f"{n:.1f}E{unit}"


def is_live(stream: TextIO, mode: str = "auto") -> bool:
    """Redraw in place? "progress": yes, "plain": no, "auto": when `stream` is a terminal."""
    return mode == "progress" or (mode == "auto" and stream.isatty())


class ProgressLine:
    """Shows a status line: redrawn in place when `live`, else appended as a line.

    `every_s`: the least time between two lines that `due()` lets through (a terminal can take
    a redraw twice a second; a log file wants a line now and then)."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None, every_s: float = 0.0) -> None:
        self.stream = stream or sys.stderr
        self.live = is_live(self.stream) if live is None else live
        self.every_s = every_s
        self._last: float | None = None

    def due(self, force: bool = False) -> bool:
        """Whether a line should be shown now (and, if so, counts it as shown)."""
        now = time.monotonic()
        if not force and self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        return True

    def show(self, line: str) -> None:
        self.stream.write(_REDRAW + line if self.live else line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own, above the live line (which the next `show` redraws)."""
        if self.live:
            self.stream.write(_REDRAW)
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


class ByteProgress:
    """Progress of a job that reads `total_bytes` of input: percent, counts, speed, time left."""

    def __init__(self, label: str, total_bytes: int, stream: TextIO | None = None, enabled: bool = True,
                 log_interval: float = 30.0) -> None:
        self.label = label
        self.total = max(1, total_bytes)
        self.enabled = enabled
        self.line = ProgressLine(stream)
        self.line.every_s = 0.5 if self.line.live else log_interval
        self.line.due()  # the first line after one interval
        self.start = time.monotonic()

    def update(self, done_bytes: float, docs: int, tokens: int, text_bytes: int, force: bool = False) -> None:
        if not self.enabled or not self.line.due(force):
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        frac = min(1.0, done_bytes / self.total)
        eta = (elapsed / frac - elapsed) if frac > 0 else float("nan")
        self.line.show(
            f"{self.label} {100 * frac:5.1f}% | {human(docs)} docs | {human(tokens)} tokens | "
            f"{human(text_bytes / elapsed, 'B/s')} | {elapsed:.0f}s elapsed"
            + (f", ~{eta:.0f}s left" if frac < 1 and eta == eta else "")
        )

    def close(self) -> None:
        if self.enabled:
            self.line.close()
