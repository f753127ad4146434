"""Run one step the way every caller does: `tunesmith step` (so each `dvc repro` stage), the
flow's Prefect tasks and the tests' end-to-end runs all come through `run_step`."""

from __future__ import annotations

import importlib
from typing import Any

from tunesmith import logged as L
from tunesmith.config import Config
from tunesmith.errors import EnvironmentProblem, TunesmithError
from tunesmith.steps import STEPS, output_dir


def run_step(cfg: Config, step: str) -> Any:
    """Run `step` on `cfg` inside the pipeline's MLflow run and log what it returned.

    The step function narrows `cfg` to what it declared (tunesmith.steps.narrowed). Its
    result's `logged` record is written next to its output and logged to the run. An
    exception ends the run FAILED (tunesmith.tracking.pipeline_run), the last step's
    success ends it FINISHED; a failure that carries a record (a failed validation's
    report) logs it first.
    """
    from tunesmith import preflight
    from tunesmith.training.launch import inside_worker, node_rank

    # Under a hand-run `torchrun --nnodes N ... tunesmith step train` each worker trains
    # itself (is_launched), whatever its node.
    if not inside_worker() and (node := node_rank(cfg.train)) > 0:
        return _on_other_node(cfg, step, node)
    preflight.check(cfg)  # a missing base model or QLoRA on CPU: before the step, no run
    try:
        return _run(cfg, step)
    except TunesmithError:
        raise
    except Exception as exc:
        if not _store_failure(exc):
            raise
        from tunesmith.tracking import tracking_uri

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EnvironmentProblem(
            f"MLflow store {tracking_uri(cfg)} is unreachable or read-only ({first}); "
            f"step {step}: its outputs on disk are kept, nothing was registered") from None


def _on_other_node(cfg: Config, step: str, node: int) -> Any:
    """Node `node` > 0 of a multi-node training (train.nodes, PET_NODE_RANK): this node's
    workers only, on node 0's request (tunesmith.training.launch.join). Node 0's step holds
    global rank 0, writes `models/NAME/` and logs the pipeline's MLflow run; here no run is
    opened and no record is written, so a project folder shared between the nodes keeps
    node 0's."""
    from tunesmith.errors import ConfigError
    from tunesmith.training.launch import join

    if step != "train":
        raise ConfigError(
            f"PET_NODE_RANK={node} with train.nodes={cfg.train.nodes}: node {node} runs only "
            f"`tunesmith step train`; node 0 runs the pipeline (step {step} refused)")
    return join(cfg.train)


def _store_failure(exc: BaseException) -> bool:
    """An error of the MLflow store (a closed port, a read-only SQLite file), not of a step."""
    from mlflow.exceptions import MlflowException

    if "database is locked" in str(exc):
        return False  # a concurrent run's SQLite write: transient, the flow retries it
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return isinstance(exc, MlflowException) or bool(
        names & {"ConnectionError", "OperationalError", "MaxRetryError", "ReadTimeout"})


def _run(cfg: Config, step: str) -> Any:
    from tunesmith import tracking

    func = getattr(importlib.import_module(f"tunesmith.tasks.{step}"), step)
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
