"""Run one step the way every caller does: `tunesmith step` (so each `dvc repro` stage), the
flow's Prefect tasks and the tests' end-to-end runs all come through `run_step`."""

from __future__ import annotations

import importlib
from typing import Any

from tunesmith import logged as L
from tunesmith.config import Config
from tunesmith.steps import STEPS, output_dir


def run_step(cfg: Config, step: str) -> Any:
    """Run `step` on `cfg` inside the pipeline's MLflow run and log what it returned.

    The step function narrows `cfg` to what it declared (tunesmith.steps.narrowed). Its
    result's `logged` record is written next to its output and logged to the run. An
    exception ends the run FAILED (tunesmith.tracking.pipeline_run), the last step's
    success ends it FINISHED; a failure that carries a record (a failed validation's
    report) logs it first.
    """
    from tunesmith import tracking

    func = getattr(importlib.import_module(f"tasks.{step}"), step)
    with tracking.pipeline_run(cfg, step, closes=step == STEPS[-1]) as run:
        try:
            result = func(cfg)
        except Exception as exc:
            if (record := getattr(exc, "logged", None)) is not None:
                run.log(record)
            raise
        folder = output_dir(cfg, step)
        if folder is not None and folder.is_dir():
            L.write(result.logged, folder)
        run.log(result.logged)
    return result
