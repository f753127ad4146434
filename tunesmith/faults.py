"""Named points where tests kill this process (SIGKILL), raise, or pause it, to check what a
fault there leaves behind or to line several processes up without timing them.

- `TUNESMITH_KILL_AT=<point>` arms one SIGKILL there.
- `TUNESMITH_FAIL_AT=<point>` one raised error (EnvironmentProblem).
- `TUNESMITH_PAUSE_AT=<point>` with `TUNESMITH_PAUSE_DIR=<dir>` a barrier: at the point the
  process writes `<dir>/<point>.paused` (atomically; it holds the pid), then waits, polling
  every 0.05 s, until `<dir>/<point>.release` exists, and goes on (it removes nothing, so
  every later pass through that point goes straight on). A test waits for the `.paused`
  file, does what needs the process stopped right there (another run meets its lock, a
  SIGKILL lands after a known checkpoint), then creates the `.release` file or kills it.
  A pause comes before a kill or fail armed at the same point.

With `TUNESMITH_FAULT_RANK=R` any of them acts only in the distributed worker of that rank.
Unset (everywhere but those tests) a point costs a few environment lookups and touches no
file. The points are listed in POINTS and TRAIN_POINTS.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

# register, in the order it talks to MLflow (tasks/register.py)
POINTS = ("register.logged", "register.created", "register.described",
          "register.challenger")
# train_model: before the model loads (inside the flow's dataset lock), after each
# checkpoint save (tests/test_launch.py, tests/test_faults.py)
TRAIN_POINTS = ("train.start", "train.saved")
PAUSE_POLL_S = 0.05


def point(name: str) -> None:
    """Pause here if `TUNESMITH_PAUSE_AT` names this point; then SIGKILL this process if
    `TUNESMITH_KILL_AT` does; raise EnvironmentProblem if `TUNESMITH_FAIL_AT` does."""
    environ = os.environ
    rank = environ.get("TUNESMITH_FAULT_RANK")
    if rank is not None and rank != environ.get("RANK"):
        return
    if environ.get("TUNESMITH_PAUSE_AT") == name:
        pause(name)
    if environ.get("TUNESMITH_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if environ.get("TUNESMITH_FAIL_AT") == name:
        from tunesmith.errors import EnvironmentProblem

        raise EnvironmentProblem(f"injected fault at {name}")


def pause(name: str) -> None:
    """Write `<TUNESMITH_PAUSE_DIR>/<name>.paused` (this pid) and wait for `<name>.release`."""
    folder = os.environ.get("TUNESMITH_PAUSE_DIR")
    if not folder:
        from tunesmith.errors import EnvironmentProblem

        raise EnvironmentProblem(f"TUNESMITH_PAUSE_AT={name} needs TUNESMITH_PAUSE_DIR")
    folder_path = Path(folder)
    folder_path.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    partial = folder_path / f".{name}.paused.{pid}"
    partial.write_text(f"{pid}\n", encoding="utf-8")
    os.replace(partial, folder_path / f"{name}.paused")  # a reader sees all of it or nothing
    release = folder_path / f"{name}.release"
    while not release.exists():
        time.sleep(PAUSE_POLL_S)
