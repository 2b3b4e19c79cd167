"""Progress lines for long steps: rows done, rows/s and ETA on stderr, silent with --quiet."""

from __future__ import annotations

import sys
import time


class Progress:
    """Throttled progress reporter; prints at most twice a second, and only for steps that take a while."""

    def __init__(self, label: str, total: int | None = None, unit: str = "rows", quiet: bool = False):
        self.label = label
        self.total = total
        self.unit = unit
        self.quiet = quiet
        self.done = 0
        self.start = time.monotonic()
        self._last = self.start
        self._printed = False
        self._printed_at = -1
        self._tty = sys.stderr.isatty()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        # Stay silent for the first two seconds so quick steps print nothing; then twice a second
        # on a terminal and every ten seconds into a log.
        interval = 0.5 if self._tty else 10.0
        if self.quiet or now - self.start < 2.0 or now - self._last < interval:
            return
        self._last = now
        self._emit(now)

    def _emit(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        text = f"  {self.label}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,}"
        text += f" {self.unit} ({rate:,.0f} {self.unit}/s"
        if self.total and rate > 0:
            eta = max(self.total - self.done, 0) / rate
            text += f", ETA {int(eta // 60)}:{int(eta % 60):02d}"
        text += ")"
        end = "\r" if self._tty else "\n"
        sys.stderr.write(text.ljust(78) + end)
        sys.stderr.flush()
        self._printed = True
        self._printed_at = self.done

    def close(self) -> None:
        if self._printed and not self.quiet and self._printed_at != self.done:
            self._emit(time.monotonic())
            if self._tty:
                sys.stderr.write("\n")
