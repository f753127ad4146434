"""Defaults for running Prefect embedded: project-local home, quiet, no telemetry."""

from __future__ import annotations

import os
from pathlib import Path


def configure(root: Path) -> None:
    """Set Prefect's environment before it is imported; explicit user settings win.

    Without PREFECT_API_URL, Prefect runs an ephemeral API on SQLite under `.prefect/`.
    """
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    # The 20 s default timed out on a loaded 2-core machine (bench/noop_rerun.py).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
