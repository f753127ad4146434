"""The retrain flow: ingest -> clean -> validate -> tokenize -> train -> evaluate -> register.

No step logic lives here: each Prefect task runs the step through the same
`tasks.runner.run_step` that `tunesmith step` (so `dvc.yaml`) and the tests use. This
module adds what orchestration is for: retries on the
steps that touch the outside world, a training timeout, skipping steps whose inputs are
unchanged (a Prefect cache keyed by `tunesmith.fingerprint.step_key`), one retrain per
dataset at a time, and artifacts a reviewer reads in the Prefect UI.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext
from prefect.states import Failed

from tunesmith import gcpolicy, preflight, tracking
from tunesmith.config import Config, dataset_names, find_root, load_config
from tunesmith.errors import TunesmithError, ValidationFailed
from tunesmith.fingerprint import output_present, step_key
from tunesmith.flows.artifacts import (
    publish_eval,
    publish_register,
    publish_validation,
    tag_mlflow_run,
)
from tunesmith.flows.lock import dataset_lock
from tunesmith.steps import STEPS

GX_MODULE = "great_expectations.expectations"  # what tunesmith.validation.suites imports


@dataclass
class RetrainSummary:
    dataset: str
    status: str  # "completed", "skipped (locked)" or "failed: ..."
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    # What the step's declaration says it reads, resolved now (tunesmith.fingerprint).
    return step_key(parameters["cfg"], parameters["step"])


def _retry_only_transient(task, task_run, state) -> bool:
    """Bad data or config is not transient: retrying it only delays the failure."""
    try:
        state.result()
    except TunesmithError:
        return False
    except Exception:
        return True
    return False


def make_step_task(step: str, cfg: Config):
    """The Prefect task for one step, with the retry/timeout policy that step needs."""
    flow_opts = cfg.flow
    outside_world = step in ("ingest", "evaluate", "register")  # URL fetch, MLflow calls
    return task(
        _step_body,
        name=step,
        task_run_name=f"{step}-{cfg.name}",
        cache_key_fn=_cache_key,
        persist_result=True,
        retries=flow_opts.retries if outside_world else 0,
        retry_delay_seconds=[flow_opts.retry_delay_s * 2**i for i in range(flow_opts.retries)],
        retry_condition_fn=_retry_only_transient,
        timeout_seconds=flow_opts.train_timeout_s if step == "train" else None,
        # Refresh instead of reusing a cached result when the output was deleted.
        refresh_cache=not output_present(cfg, step),
    )


def _step_body(step: str, cfg: Config) -> Any:
    """Run the step; a user error (bad data, config, environment) ends the task Failed with
    its one line as the message, not a traceback (Prefect logs the traceback of a raise)."""
    from tunesmith.tasks.runner import run_step

    get_run_logger().info("running %s for %s", step, cfg.name)
    try:
        return run_step(cfg, step)
    except TunesmithError as exc:
        return Failed(message=str(exc), data=exc)


@flow(name="retrain", log_prints=True, validate_parameters=True)
def retrain(dataset: str, overrides: list[str] | None = None) -> RetrainSummary:
    """Retrain one dataset end to end; a worse model never replaces the champion."""
    logger = get_run_logger()
    started = time.perf_counter()
    try:
        cfg = load_config(dataset, overrides=overrides or [])  # bad override: before any task
        preflight.check(cfg)  # a missing base model, QLoRA on CPU: before ingest
    except TunesmithError as exc:
        return Failed(message=str(exc), data=exc)
    summary = RetrainSummary(dataset=dataset, status="completed")
    # A deployed run's worker process does not come through `tunesmith.cli.main`.
    with gcpolicy.pipeline_thresholds(), dataset_lock(cfg) as acquired:
        if not acquired:
            logger.warning("another retrain of %s is running; skipping this one", dataset)
            summary.status = "skipped (locked)"
            return summary
        tracking.close_stale(cfg)
        earlier_run = tracking.recorded_run(cfg).get("run_id")  # close_stale ended it
        previous = None  # each task waits for the one before: Prefect's graph shows the order
        for step in STEPS:
            state = make_step_task(step, cfg)(
                step, cfg, return_state=True, wait_for=[previous] if previous else None)
            previous = state
            opened = tracking.recorded_run(cfg).get("run_id")
            if opened not in (earlier_run, None):
                earlier_run = _tag_with_this_flow_run(cfg, opened)  # once: the first step that ran
            if state.name == "Cached":
                summary.cached.append(step)
            else:
                summary.ran.append(step)
            try:
                result = state.result()
            except BaseException as exc:
                # E.g. a train timeout that killed the task outside the run's own error path.
                tracking.finish(cfg, "FAILED")
                if isinstance(exc, ValidationFailed):
                    publish_validation(cfg, failed=True)
                if isinstance(exc, TunesmithError):  # the flow run fails on its one line
                    return Failed(message=f"{step}: {exc}", data=exc)
                raise
            summary.results[step] = result
            _publish(step, cfg, result)
    summary.seconds = round(time.perf_counter() - started, 2)
    logger.info("%s: ran %s, reused %s in %.1fs", dataset, summary.ran or "nothing",
                summary.cached or "nothing", summary.seconds)
    return summary


def _tag_with_this_flow_run(cfg: Config, run_id: str) -> str:
    """Tag the MLflow run the steps opened with this flow run; returns that run's id."""
    from prefect.runtime import flow_run

    try:
        tag_mlflow_run(cfg, run_id, flow_run.id, flow_run.name, flow_run.ui_url)
    except Exception as exc:  # noqa: BLE001 - a tag is not worth failing a retrain for
        get_run_logger().warning("could not tag the MLflow run with this flow run: %s", exc)
    return run_id


def _publish(step: str, cfg: Config, result: Any) -> None:
    if step == "validate":
        publish_validation(cfg, failed=False)
    elif step == "evaluate":
        publish_eval(cfg)
    elif step == "register":
        publish_register(cfg, result)


@flow(name="retrain-all", log_prints=True)
def retrain_all(overrides: list[str] | None = None) -> list[RetrainSummary]:
    """Retrain every dataset independently: one dataset's bad data doesn't stop the others."""
    logger = get_run_logger()
    summaries = []
    for name in dataset_names(find_root()):
        state = retrain(name, overrides, return_state=True)
        try:
            summaries.append(state.result())
        except Exception as exc:  # noqa: BLE001 - reported per dataset, run continues
            logger.error("%s failed: %s", name, exc)
            summaries.append(RetrainSummary(dataset=name, status=f"failed: {exc}"))
    return summaries


def open_tracking(dataset: str | None, overrides: list[str]) -> None:
    """Import MLflow and open the dataset's tracking store (every dataset's, given None).

    `tunesmith run` calls this while Prefect's temporary API boots in its own process: the
    ~3 s it takes would otherwise land in the first step. Bad names/overrides, and for one
    dataset what preflight knows (QLoRA on CPU, a missing base model), raise here with the
    same one-line error `run_from_cli` gives: 2.6 s instead of 15.5 s, which waiting for
    the API to finish booting took.
    """
    names = [dataset] if dataset else dataset_names(find_root())
    for name in names:
        try:
            cfg = load_config(name, overrides=overrides)
            if dataset:
                preflight.check(cfg)
        except TunesmithError:
            if dataset:
                raise
            continue  # with --all, that dataset's own flow run reports it
        try:
            tracking.configure(cfg)
        except Exception:  # noqa: BLE001 - a warm-up: the first step reports it in context
            pass


def import_validation_in_background() -> threading.Thread:
    """Import Great Expectations in a daemon thread; `tunesmith run` calls it as the API boots.

    Importing GX takes ~1.8 s, all of it on the way to the validate step. The main thread
    spends about a second waiting for the temporary API and for the flow run's first API
    calls, and this thread imports in those waits: the validate step started 1.4-1.9 s
    sooner. A run with nothing to validate does not wait for it (a daemon thread; no-op
    `tunesmith run` stayed at ~5.8 s). Two threads importing one package at once can
    deadlock; the ~1,160 modules GX adds share no package with the ~155 this process imports
    between here and validate (mlflow, prefect, pandas, pyarrow, git, rich, anyio; checked
    on the SST-2 flow), which is why only GX is imported here, not torch.
    """
    thread = threading.Thread(target=importlib.import_module, args=(GX_MODULE,),
                              name="import-great-expectations", daemon=True)
    thread.start()
    return thread


def verdict_lines(summary: RetrainSummary) -> list[str]:
    """The register step's verdict block (tunesmith.verdict), or a line saying why none."""
    register = summary.results.get("register")
    if register is None:
        return [] if summary.status.startswith("skipped") else \
            [f"{summary.dataset}: nothing registered (the run stopped before register)"]
    shown = list(getattr(register, "verdict", None) or [])
    if shown and "register" in summary.cached:
        shown[0] += " [unchanged since the last run: register was reused]"
    return shown


def run_from_cli(dataset: str | None, all_: bool, overrides: list[str]) -> int:
    """`tunesmith run`: run the flow(s), print one line per dataset, return the exit code."""
    if all_:
        summaries = retrain_all(overrides)
    else:
        # A bad name or override, a missing base model, QLoRA on CPU: one line, no flow run.
        preflight.check(load_config(dataset, overrides=overrides))
        summaries = [retrain(dataset, overrides)]
    for s in summaries:
        print(f"{s.dataset}: {s.status}; ran {', '.join(s.ran) or 'nothing'}; "
              f"reused {', '.join(s.cached) or 'nothing'} ({s.seconds:.1f}s)")
        for line in verdict_lines(s):
            print(line)
    return 0 if all(not s.status.startswith("failed") for s in summaries) else 1
