"""Named points where tests/test_faults.py kills this process (SIGKILL), to check what a
kill there leaves behind. `TUNESMITH_KILL_AT=<point>` arms one point; unset (everywhere but
those tests) a point costs one environment lookup. The points are listed in POINTS."""

from __future__ import annotations

import os
import signal

# register, in the order it talks to MLflow (tasks/register.py)
POINTS = ("register.logged", "register.created", "register.described",
          "register.challenger")


def point(name: str) -> None:
    """SIGKILL this process here if `TUNESMITH_KILL_AT` names this point."""
    if os.environ.get("TUNESMITH_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
