"""What the console gets: progress bars on a terminal only.

A progress bar redraws itself with carriage returns; in a file, a CI log or a Prefect flow
log (stderr is not a terminal there) every redraw is kept, and a 60-step training run left
~120 `\\r` frames torn across the flow's log lines. Off a terminal, training prints its one
line per epoch (tunesmith.training.callbacks.EpochLog) and nothing else. Standard library
only: the training core imports it on an accelerator machine.
"""

from __future__ import annotations

import sys


def progress_bars() -> bool:
    """True when stderr is a terminal, where a redrawn bar reads as one line."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None)) and stream.isatty()
