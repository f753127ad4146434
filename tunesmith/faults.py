"""Named points where tests kill this process (SIGKILL) or raise, to check what a fault
there leaves behind. `TUNESMITH_KILL_AT=<point>` arms one kill, `TUNESMITH_FAIL_AT=<point>`
one raised error (with `TUNESMITH_FAULT_RANK=R` either only in the distributed worker of
that rank); unset (everywhere but those tests) a point costs one environment lookup. The points
are listed in POINTS and TRAIN_POINTS."""

from __future__ import annotations

import os
import signal

# register, in the order it talks to MLflow (tasks/register.py)
POINTS = ("register.logged", "register.created", "register.described",
          "register.challenger")
# train_model: before the model loads, after each checkpoint save (tests/test_launch.py)
TRAIN_POINTS = ("train.start", "train.saved")


def point(name: str) -> None:
    """SIGKILL this process here if `TUNESMITH_KILL_AT` names this point; raise
    EnvironmentProblem if `TUNESMITH_FAIL_AT` does."""
    rank = os.environ.get("TUNESMITH_FAULT_RANK")
    if rank is not None and rank != os.environ.get("RANK"):
        return
    if os.environ.get("TUNESMITH_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("TUNESMITH_FAIL_AT") == name:
        from tunesmith.errors import EnvironmentProblem

        raise EnvironmentProblem(f"injected fault at {name}")
