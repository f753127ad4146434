"""One retrain per dataset at a time, across processes on this machine (an flock)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from tunesmith.config import Config


@contextmanager
def dataset_lock(cfg: Config) -> Iterator[bool]:
    """Yield True while holding the dataset's lock, False at once if another run holds it.

    A second trigger is skipped rather than queued: the run holding the lock already
    trains on the newest data. Workers on several machines need a Prefect global
    concurrency limit instead (docs/orchestration.md).
    """
    cfg.dirs.state.mkdir(parents=True, exist_ok=True)
    with (cfg.dirs.state / "retrain.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
