"""Callbacks for the kill-and-resume tests of `generations` (imported by name in a CLI subprocess).

`kill_once` SIGKILLs its own process the first time generation $TRUST_KILL_AT of schedule
$TRUST_KILL_SCHEDULE is about to be fitted, i.e. right after the previous generation's checkpoint
was written; a marker file ($TRUST_KILL_MARKER) makes the resumed run go through. The config,
and so the step's fingerprint and checkpoint key, is the same for the killed and the resumed run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def kill_once(generation, schedule, **_):
    marker = Path(os.environ["TRUST_KILL_MARKER"])
    if (generation == int(os.environ["TRUST_KILL_AT"]) and schedule == os.environ["TRUST_KILL_SCHEDULE"]
            and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return None


IMPORTED_MARKER = os.environ.get("TRUST_IMPORT_MARKER")
if IMPORTED_MARKER:
    Path(IMPORTED_MARKER).touch()  # lets a test see that validating a config imported nothing
