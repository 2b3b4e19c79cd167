"""Progress of long steps on stderr: a tqdm bar on a terminal, plain timestamped lines in a log.

Stages update it as work happens (per training batch in table stages, per model batch inside
embedding), so a slow model step is never silent for minutes. Quick steps print nothing: the bar
appears after two seconds. `notice` is the one-line message for one-off set-up work (distilling a
model, building a cache) that would otherwise look like a hang.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def notice(message: str, quiet: bool = False) -> None:
    """One line on stderr (timestamped when stderr is not a terminal)."""
    if quiet:
        return
    prefix = "" if sys.stderr.isatty() else f"{_stamp()}  "
    sys.stderr.write(f"{prefix}{message}\n")
    sys.stderr.flush()


class Progress:
    """Rows (or other units) done, rate and ETA; silent with quiet, and for the first two seconds."""

    def __init__(self, label: str, total: int | None = None, unit: str = "rows", quiet: bool = False):
        self.label = label
        self.total = total
        self.unit = unit
        self.quiet = quiet
        self.done = 0
        self.start = time.monotonic()
        self._last = self.start
        self._printed_at = -1
        self._bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"  {label}", unit=f" {unit}", unit_scale=True, file=sys.stderr,
                             mininterval=0.5, delay=2.0, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        # A log gets a line every ten seconds, after the first two (quick steps print nothing).
        if self.quiet or now - self.start < 2.0 or now - self._last < 10.0:
            return
        self._last = now
        self._line(now)

    def _line(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        text = f"{_stamp()}  {self.label}: {self.done:,}" + (f"/{self.total:,}" if self.total else "")
        text += f" {self.unit} ({rate:,.0f} {self.unit}/s"
        if self.total and rate > 0:
            eta = max(self.total - self.done, 0) / rate
            text += f", ETA {int(eta // 60)}:{int(eta % 60):02d}"
        sys.stderr.write(text + ")\n")
        sys.stderr.flush()
        self._printed_at = self.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._printed_at >= 0 and not self.quiet and self._printed_at != self.done:
            self._line(time.monotonic())
