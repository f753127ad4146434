"""Environment defaults for every way into tunesmith: the `tunesmith` command (and so DVC's
stages) and the `flows` package a Prefect worker imports for a deployed retrain.

A worker runs `tunesmith.flows.retrain:retrain` in its own Python process without going through the
command line, so defaults set only in `tunesmith.cli.main` left a scheduled retrain with
MLflow's telemetry on and its INFO lines in the flow log. Explicit settings always win
(`setdefault`). Set before MLflow, transformers or tokenizers are imported, as they read
some of these at import.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # nothing downloads unless a hub id is named
    "TOKENIZERS_PARALLELISM": "false",
    # transformers' "Loading weights" / "Writing model shards" bars on every load and save
    # (a dozen per run, torn across Prefect's log lines); training keeps its one bar.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # MLflow's "Downloading artifacts" bar on each model load in evaluate, register and
    # predict: 4-8 redraws of a sub-second download, in flow logs as `\r` frames.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Every step opens the pipeline's MLflow run; its INFO lines (system-metrics thread
    # start/stop, DB setup: 4+ per step) would bury the one-line error contract.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # An unreachable tracking server fails in ~10 s, not after MLflow's default 7 retries
    # with exponential backoff (~2 minutes) and 120 s timeouts.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow 3 sends usage telemetry (an installation id written to ~/.config/mlflow/, a
    # config fetched from its servers, two threads) unless told not to; it reads DO_NOT_TRACK
    # only as "true", not Prefect's "1". An offline tool sends nothing.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def apply() -> None:
    """Set each default the environment does not already set."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
